package main

// The local cluster's DNS server: CoreDNS built from the Go module proxy by
// hack/coredns-build.sh, whose cache directory --bin-dir points at
// (`weir-image build --bin-dir "$(hack/coredns-build.sh)" coredns`, as `make
// images` does). Built only when named, like the conformance images, because
// its binary is not in bin/. The tag is CoreDNS's version: it must match
// COREDNS_VERSION in hack/coredns-build.sh and localcluster.CoreDNSImage
// (pkg/localcluster tests check the three agree).

// corednsImageDef returns the CoreDNS image.
func corednsImageDef() imageDef {
	return imageDef{
		name: "coredns", repo: "weir-coredns", tag: "v1.15.0",
		title: "CoreDNS (kubernetes, cache, errors, health, ready, loop, reload, loadbalance, log plugins) built by Weir",
		bins:  []fileDef{{src: "coredns", dst: "/coredns", mode: 0o755}},
		// The Corefile comes from a ConfigMap mounted at /etc/coredns.
		entrypoint: []string{"/coredns"},
		cmd:        []string{"-conf", "/etc/coredns/Corefile"},
	}
}
