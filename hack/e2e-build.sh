#!/usr/bin/env bash
# Builds what `make conformance` runs, from the Go module proxy only, and
# caches it outside the repository, keyed by version:
#
#   ${WEIR_CACHE:-/var/cache/weir}/e2e-${K8S_VERSION}/bin/
#     e2e.test                 go test -c k8s.io/kubernetes/test/e2e
#     ginkgo                   the Ginkgo CLI at the version kubernetes pins
#                              (runs e2e.test in parallel and merges the JUnit report)
#     agnhost                  k8s.io/kubernetes/test/images/agnhost
#     regression-issue-74839   k8s.io/kubernetes/test/images/regression-issue-74839
#     localhost.crt, .key      porter's TLS pair from test/images/agnhost/porter, which
#                              upstream's agnhost Dockerfile adds to the image
#     coredns                  github.com/coredns/coredns ${COREDNS_VERSION} with all its
#                              plugins, as the release binary upstream's agnhost bundles
#                              (a DNS test runs /coredns with the hosts plugin)
#
# The test images are then assembled from these binaries and Debian packages
# by `weir-image build --bin-dir <that dir>` (see cmd/weir-image/conformance.go).
# If every binary is already there it prints one line and exits 0.
#
# Same recipe as hack/k8s-build.sh (shared part in hack/lib/k8s-module.sh): a
# wrapper module with the staging modules replaced by their published
# versions, CGO_ENABLED=0, -trimpath, version stamped with -ldflags. Its own
# wrapper module (src/ in the cache directory) so that a running k8s-build.sh
# is never disturbed. Built into a temporary directory and renamed into place;
# concurrent runs are serialised with flock(1). What is already there is
# kept (hard-linked into the new directory), so only missing parts are built.
#
# Measured (2 cores shared with other builds, load ~20): cold e2e.test 766s,
# the rest ~4 min; bin/ is ~190 MB.
#
# Env: K8S_VERSION (v1.37.2), COREDNS_VERSION (v1.15.0), WEIR_CACHE (/var/cache/weir), GO (go).
# Prints the bin directory on the last line of stdout.
# Usage: hack/e2e-build.sh
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
CACHE=${WEIR_CACHE:-/var/cache/weir}
GO=${GO:-go}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
BINARIES=(e2e.test ginkgo agnhost regression-issue-74839 coredns)
FILES=(localhost.crt localhost.key)

die() { echo "e2e-build: error: $*" >&2; exit 1; }
log() { echo "e2e-build: $*" >&2; }
# shellcheck source=lib/k8s-module.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/k8s-module.sh"
# shellcheck source=lib/cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"

k8s_parse_version

dir="$CACHE/e2e-${K8S_VERSION}"

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
  for b in "${FILES[@]}"; do [[ -f "$bin/$b" ]] || return 1; done
}

cache_begin "${BINARIES[*]} (${K8S_VERSION})" have_all

E2E=k8s.io/kubernetes/test/e2e
IMAGES=(k8s.io/kubernetes/test/images/agnhost k8s.io/kubernetes/test/images/regression-issue-74839)
# kubernetes builds the Ginkgo CLI from its vendor tree; its go.mod requires
# everything the CLI needs, so `go get` of it moves no version.
GINKGO=github.com/onsi/ginkgo/v2/ginkgo

src="$dir/src/kubernetes"
k8s_wrapper_module -t "$src" weir-e2e-build "$E2E" "${IMAGES[@]}"
cd "$src"
if ! "$GO" list "$GINKGO" >/dev/null 2>&1; then
  ginkgo_version=$("$GO" list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2) ||
    die "github.com/onsi/ginkgo/v2 is not in the build list of $src"
  "$GO" get "${GINKGO}@${ginkgo_version}" || die "go get ${GINKGO}@${ginkgo_version} failed in $src"
fi

for b in "${BINARIES[@]}" "${FILES[@]}"; do
  if [[ -f "$bin/$b" ]]; then ln "$bin/$b" "$tmp/$b"; fi
done
ld=$(k8s_ldflags)
if [[ ! -x "$tmp/e2e.test" ]]; then
  log "building e2e.test ${K8S_VERSION} (cold: ~10 min on 2 cores)"
  t0=$(date +%s)
  "$GO" test -c -trimpath -ldflags="$ld" -o "$tmp/e2e.test" "$E2E" ||
    die "go test -c $E2E failed (wrapper module: $src)"
  log "built e2e.test in $(($(date +%s) - t0))s"
fi
kdir=$("$GO" list -m -f '{{.Dir}}' k8s.io/kubernetes) || die "k8s.io/kubernetes is not in the build list of $src"
if [[ ! -x "$tmp/ginkgo" || ! -x "$tmp/regression-issue-74839" ]]; then
  log "building ginkgo and regression-issue-74839"
  "$GO" build -trimpath -ldflags="$ld" -o "$tmp/" "$GINKGO" "${IMAGES[1]}" ||
    die "go build of ginkgo/regression-issue-74839 failed (wrapper module: $src)"
fi
if [[ ! -x "$tmp/agnhost" ]]; then
  agnhost_version=$(<"$kdir/test/images/agnhost/VERSION") || die "no VERSION of agnhost in $kdir"
  log "building agnhost ${agnhost_version}"
  "$GO" build -trimpath -ldflags="$ld -X main.Version=${agnhost_version}" -o "$tmp/" "${IMAGES[0]}" ||
    die "go build of agnhost failed (wrapper module: $src)"
fi
for f in "${FILES[@]}"; do
  [[ -f "$tmp/$f" ]] || install -m 0644 "$kdir/test/images/agnhost/porter/$f" "$tmp/$f" ||
    die "no $f in $kdir/test/images/agnhost/porter"
done
if [[ ! -x "$tmp/coredns" ]]; then
  # Its own wrapper module: CoreDNS's dependencies must not move kubernetes'.
  csrc="$dir/src/coredns"
  mkdir -p "$csrc"
  cd "$csrc"
  if [[ ! -f go.mod ]] || ! grep -q "github.com/coredns/coredns ${COREDNS_VERSION}" go.mod; then
    log "preparing wrapper module $csrc for github.com/coredns/coredns ${COREDNS_VERSION}"
    rm -f go.mod go.sum
    "$GO" mod init weir-e2e-coredns >/dev/null 2>&1 || die "go mod init failed in $csrc"
    "$GO" get "github.com/coredns/coredns@${COREDNS_VERSION}" || {
      rm -f go.mod go.sum
      die "go get github.com/coredns/coredns@${COREDNS_VERSION} failed in $csrc"
    }
  fi
  log "building coredns ${COREDNS_VERSION}"
  "$GO" build -trimpath -ldflags="-s -w" -o "$tmp/coredns" github.com/coredns/coredns ||
    die "go build of coredns failed (wrapper module: $csrc)"
  cd "$src"
fi

for b in "${BINARIES[@]}"; do [[ -x "$tmp/$b" ]] || die "build produced no $b"; done
"$tmp/e2e.test" --help 2>&1 | grep -q -- '-ginkgo.focus' || die "e2e.test does not accept -ginkgo.focus"
chmod 0755 "$tmp"
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
log "built ${BINARIES[*]} in $(($(date +%s) - start))s into $bin"
echo "$bin"
