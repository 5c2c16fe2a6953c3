package main

// The images the upstream Kubernetes e2e network suites (`make
// conformance`, docs/conformance.md) run, under the exact name:tag of
// test/utils/image/manifest.go in k8s.io/kubernetes v1.37.2. There is no
// registry here, so they are built like Weir's own: Go programs compiled from
// the kubernetes module by hack/e2e-build.sh (--bin-dir points at its cache
// directory) plus Debian packages where upstream's Dockerfile installs
// Alpine or Debian ones. They are built only when named on the command line
// (`weir-image build e2e-agnhost ...`), never by a plain `make images`.
//
// Substitutes (upstream base -> here), which docs/conformance.md lists too:
//   - agnhost: Alpine with bind-tools, curl, netcat-openbsd, iproute2, iperf,
//     bash, socat -> Debian 12's packages of the same tools, so its `dig` and
//     getent use glibc, not musl (the DNS tests' "musl" prober runs glibc too);
//     dash as /bin/sh and busybox applets for the rest of Alpine's base;
//     CoreDNS v1.15.0 (all plugins) instead of 1.6.2 as /coredns. The fake
//     registry upstream also puts into it is left out (no network test uses it).
//   - busybox: the busybox:1.37.0 image -> Debian's busybox-static (1.35),
//     whose wget segfaults when given -T (agnhost has GNU wget for that).
//   - glibc-dns-testing: Debian bookworm-slim + dnsutils -> Debian 12's
//     bind9-dnsutils, libc-bin (getent), hostname, busybox applets.
//   - nginx: nginx:1.27-alpine -> Debian 12's nginx-light (1.22) with a
//     minimal configuration serving port 80.
//   - distroless-iptables: -> Debian 12's iptables (nft backend) and conntrack.
//   - pause:3.10.2: Weir's own pause (cmd/pause), as pause:3.10 already is.

// e2eRegistry is list.PromoterE2eRegistry of the manifest.
const e2eRegistry = "registry.k8s.io/e2e-test-images/"

// conformanceImageDefs returns the upstream e2e test images.
func conformanceImageDefs() []imageDef {
	return []imageDef{
		{
			name: "e2e-agnhost", repo: e2eRegistry + "agnhost", tag: "2.66.1",
			title: "agnhost (k8s.io/kubernetes/test/images/agnhost) on Debian packages, built by Weir",
			bins: []fileDef{
				{src: "agnhost", dst: "/agnhost", mode: 0o755},
				// DNS tests run their own server with `/coredns -conf ...`.
				{src: "coredns", dst: "/coredns", mode: 0o755},
			},
			// porter's default TLS certificate and key (CERT_FILE/KEY_FILE),
			// which upstream's Dockerfile adds from test/images/agnhost/porter.
			files: []fileDef{
				{src: "localhost.crt", dst: "/localhost.crt", mode: 0o644},
				{src: "localhost.key", dst: "/localhost.key", mode: 0o644},
			},
			// libc-bin: getent, which the DNS tests' /etc/hosts probes run.
			// dash as /bin/sh: Debian's busybox shell runs its own applets in
			// preference to the programs on PATH once /proc is mounted (as in
			// every container), so `sh -c "nc -u ..."` would get busybox's nc,
			// which has no -u (measured: every UDP Granular Check failed).
			// wget: GNU wget, because Debian busybox 1.35's wget segfaults
			// with -T (measured), which the Services tests pass it.
			debRoots: []string{"busybox-static", "dash", "bash", "bind9-dnsutils", "libc-bin", "curl", "wget", "netcat-openbsd",
				"iproute2", "iperf", "socat"},
			rootfs:  true,
			busybox: true,
			symlinks: map[string]string{
				// entrypoint-tester tests run the image with /agnhost-2.
				"/agnhost-2":  "agnhost",
				"/usr/bin/sh": "dash",
				// What netcat-openbsd's postinst does with update-alternatives.
				"/usr/bin/nc": "nc.openbsd",
			},
			checkLibs:  []string{"/usr/bin/", "/usr/sbin/"},
			entrypoint: []string{"/agnhost"},
			cmd:        []string{"pause"},
		},
		{
			name: "e2e-busybox", repo: e2eRegistry + "busybox", tag: "1.37.0-2",
			title:    "busybox (Debian busybox-static), built by Weir",
			debRoots: []string{"busybox-static"},
			rootfs:   true,
			busybox:  true,
			cmd:      []string{"sh"},
		},
		{
			name: "e2e-glibc-dns-testing", repo: e2eRegistry + "glibc-dns-testing", tag: "2.1.1",
			title: "glibc DNS testing image (Debian bind9-dnsutils, getent, hostname), built by Weir",
			// dash as /bin/sh like Debian (see agnhost): real hostname, not the applet.
			debRoots:  []string{"busybox-static", "dash", "bind9-dnsutils", "libc-bin", "hostname"},
			symlinks:  map[string]string{"/usr/bin/sh": "dash"},
			rootfs:    true,
			busybox:   true,
			checkLibs: []string{"/usr/bin/"},
			cmd:       []string{"sh"},
		},
		{
			name: "e2e-nginx", repo: e2eRegistry + "nginx", tag: "1.27.0-2",
			title:      "nginx (Debian nginx-light), built by Weir",
			debRoots:   []string{"nginx-light"},
			scripts:    []fileDef{{src: "e2e/nginx.conf", dst: "/etc/nginx/nginx.conf", mode: 0o644}},
			rootfs:     true,
			checkLibs:  []string{"/usr/sbin/nginx"},
			entrypoint: []string{"/usr/sbin/nginx"},
		},
		{
			name: "e2e-regression-issue-74839", repo: e2eRegistry + "regression-issue-74839", tag: "1.5",
			title:      "regression-issue-74839 (k8s.io/kubernetes/test/images/regression-issue-74839), built by Weir",
			bins:       []fileDef{{src: "regression-issue-74839", dst: "/regression-issue-74839", mode: 0o755}},
			entrypoint: []string{"/regression-issue-74839"},
		},
		{
			name: "e2e-distroless-iptables", repo: "registry.k8s.io/build-image/distroless-iptables", tag: "v0.9.9",
			title:    "iptables and conntrack (Debian packages), built by Weir",
			debRoots: []string{"busybox-static", "iptables", "conntrack"},
			// What iptables' postinst does with update-alternatives.
			symlinks: map[string]string{
				"/usr/sbin/iptables": "xtables-nft-multi", "/usr/sbin/iptables-save": "xtables-nft-multi",
				"/usr/sbin/iptables-restore": "xtables-nft-multi", "/usr/sbin/ip6tables": "xtables-nft-multi",
				"/usr/sbin/ip6tables-save": "xtables-nft-multi", "/usr/sbin/ip6tables-restore": "xtables-nft-multi",
			},
			rootfs:    true,
			busybox:   true,
			checkLibs: []string{"/usr/sbin/"},
		},
		{
			name: "e2e-pause", repo: "registry.k8s.io/pause", tag: "3.10.2",
			title:      "Pod sandbox (pause) built by Weir, under the e2e manifest's tag",
			bins:       []fileDef{{src: "pause", dst: "/pause", mode: 0o755}},
			entrypoint: []string{"/pause"},
		},
	}
}
