# Weir developer entry points. Run `make help` for the list of targets.

GO ?= go
# Narrow `make bench`, e.g. make bench BENCH_PKG=./pkg/openflow/ BENCH=FlowMod
BENCH_PKG ?= ./...
BENCH ?= .
# Nodes of the local cluster of `make run`.
NODES ?= 2

.DEFAULT_GOAL := help
.PHONY: help deps k8s-bins build images proto test soak bench scale lint run run-single stop clean conformance e2e e2e-smoke

help: ## List the targets.
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-9s %s\n", $$1, $$2}'

k8s-bins: ## Build (once; cached under /var/cache/weir) kube-apiserver, etcd and kubectl from the Go module proxy.
	hack/k8s-build.sh

deps: ## Install missing system packages (OVS, iproute2, nftables, ping, ...); needs root.
	hack/install-deps.sh

# cmd/cni-client is installed as /opt/cni/bin/weir, so `make build` names it bin/weir.
CNI_CLIENT := github.com/weirnet/weir/cmd/cni-client

# CGO_ENABLED=0: the binaries are static, so the same files run on the host and in the images.
build: ## Build every command under cmd/ into bin/ (cmd/cni-client as bin/weir), statically linked.
	@pkgs="$$(if [ -d cmd ]; then $(GO) list -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./cmd/... | grep -vx '$(CNI_CLIENT)'; fi)"; \
	mkdir -p bin; \
	if [ -n "$$pkgs" ]; then echo "CGO_ENABLED=0 $(GO) build -o bin/ $$pkgs" && CGO_ENABLED=0 $(GO) build -o bin/ $$pkgs || exit 1; fi; \
	echo "CGO_ENABLED=0 $(GO) build -o bin/weir ./cmd/cni-client" && CGO_ENABLED=0 $(GO) build -o bin/weir ./cmd/cni-client
	@# The container runtime's loopback plugin, which weir-local installs on its nodes.
	$(GO) build -o bin/cni-plugins/loopback github.com/containernetworking/plugins/plugins/main/loopback
	@# portmap (hostPort), chained after weir in the default conflist and shipped in the weir-agent image.
	CGO_ENABLED=0 $(GO) build -o bin/cni-plugins/portmap github.com/containernetworking/plugins/plugins/meta/portmap

images: build ## Build the container images (docker-archive tarballs) into bin/images/ without a Docker engine.
	bin/weir-image build --bin-dir bin --out-dir bin/images
	@# The local cluster's CoreDNS: built once from the Go module proxy and cached (hack/coredns-build.sh).
	bin/weir-image build --bin-dir "$$(hack/coredns-build.sh)" --out-dir bin/images coredns

proto: ## Regenerate the gRPC/protobuf Go code from pkg/apis/**/*.proto (pinned generators).
	hack/gen-proto.sh

test: deps k8s-bins ## Run all tests with the race detector (integration tests need root).
	$(GO) test -race -count=1 -timeout 20m ./...

# Long fault tests (docs/reliability.md): the TestSoak* tests and the long
# variants of the fault tests, which skip in `make test` (testroot.RequireSoak).
soak: deps k8s-bins images ## Run the long fault and soak tests (WEIR_SOAK=1; needs root; docs/reliability.md).
	WEIR_SOAK=1 $(GO) test -race -count=1 -timeout 80m ./test/... ./pkg/openflow/ ./pkg/agent/

bench: deps ## Run benchmarks (BENCH_PKG and BENCH narrow them).
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -timeout 30m $(BENCH_PKG)

lint: ## Check formatting (gofmt) and run go vet.
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed for:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

run: deps k8s-bins images ## Start a local 2-node Kubernetes cluster with Weir deployed by its DaemonSet, and demo pods (needs root; `make stop` removes it).
	bin/weir-local up --nodes $(NODES)
	bin/weir-local demo

# Scenario of `make scale` (docs/scale.md): S1, S2 or S3; SCALE_ARGS adds
# harness flags (e.g. SCALE_ARGS='-reps 20 -keep-cluster').
SCENARIO ?= S1
SCALE_ARGS ?=
scale: deps k8s-bins images ## Measure Weir agents against kwok-simulated nodes and pods (SCENARIO=S1|S2|S3; needs root; docs/scale.md).
	kwok="$$(hack/kwok-build.sh | tail -n 1)" && $(GO) build -o bin/weir-scale ./test/scale && \
	bin/weir-scale -scenario $(SCENARIO) -kwok-bin "$$kwok" $(SCALE_ARGS)

# Sets of `make conformance` (docs/conformance.md): a, b, c, d, e (comma-separated) or all;
# IP_FAMILY is the family of the cluster it starts (dual or ipv4; set e needs dual).
SET ?= all
IP_FAMILY ?= dual
conformance: deps k8s-bins images ## Run upstream Kubernetes e2e network suites (SET=a|b|c|d|e|all, IP_FAMILY=dual|ipv4) against a weir-local cluster; builds e2e.test once (needs root; docs/conformance.md).
	e2e="$$(hack/e2e-build.sh)" && bin/weir-conformance run --set $(SET) --ip-family $(IP_FAMILY) --e2e-bin "$$e2e"

# The e2e suite (test/e2e/README.md) alone, against a cluster of IP_FAMILY
# (dual, ipv4 or ipv6; the tests of a family the cluster lacks skip).
# E2E_RUN narrows it (a go test -run pattern), E2E_FLAGS adds go test flags
# (-v shows each test's skips and logs); e2e-smoke runs E2E_SMOKE.
E2E_RUN ?= .
# PROXY is the cluster's Service proxy: kube-proxy (the default) or coexist
# (Weir's proxy for pods' Service traffic; TestProxyCoexist runs only there).
PROXY ?= kube-proxy
E2E_FLAGS ?=
E2E_SMOKE := ^(TestClusterControlPlaneNode|TestClusterNoClusterRoutesInRootNetNS|TestClusterDNS|TestPodToPod|TestNodeToPods|TestHostNetworkPod|TestSNATToOutside|TestMaxSizePingAcrossNodes|TestClusterIPService|TestNetworkPolicy)$$
e2e: deps k8s-bins ## Run the e2e suite against a fresh weir-local cluster (IP_FAMILY=dual|ipv4|ipv6, PROXY=kube-proxy|coexist, E2E_RUN=pattern; needs root).
	WEIR_E2E_IP_FAMILY=$(IP_FAMILY) WEIR_E2E_PROXY=$(PROXY) $(GO) test -count=1 -timeout 45m $(E2E_FLAGS) -run '$(E2E_RUN)' ./test/e2e/
e2e-smoke: ## The e2e smoke set (pods, nodes, DNS, Services, SNAT, MTU, NetworkPolicy) against a cluster of IP_FAMILY (needs root).
	$(MAKE) e2e E2E_RUN='$(E2E_SMOKE)'

stop: ## Remove the local cluster of `make run` (every process, namespace, mount, cgroup and file).
	bin/weir-local down

run-single: deps build ## Without Kubernetes: a private OVS + ovs-agent, two pods attached through the weir CNI binary, ping, flows (Ctrl-C cleans up).
	bin/weir-demo --bin-dir bin

clean: ## Remove build output.
	rm -rf bin/
