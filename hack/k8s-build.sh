#!/usr/bin/env bash
# Builds the Kubernetes binaries Weir's tests and local cluster run —
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
# kubectl and etcd — from the Go module proxy only (no git clones, no release tarballs),
# and caches the binaries outside the repository, keyed by version:
#
#   ${WEIR_CACHE:-/var/cache/weir}/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}/bin/
#
# If every binary is already there it prints one line and exits 0.
#
# Recipe (measured: cold build ~7-8 min on 2 cores, ~2.6 GB peak RSS):
#   - k8s.io/kubernetes is built inside a wrapper module whose go.mod replaces
#     every staging module (k8s.io/api, k8s.io/client-go, ...; `=> ./staging/...`
#     in kubernetes' own go.mod) by its published v0.X.Y version (shared with
#     hack/e2e-build.sh in hack/lib/k8s-module.sh);
#   - etcd (go.etcd.io/etcd/server/v3) gets its own wrapper module so that its
#     dependencies cannot move kube-apiserver's;
#   - CGO_ENABLED=0, -trimpath, version stamped with -ldflags -X like
#     kubernetes' hack/lib/version.sh does.
# Wrapper modules live in the cache directory too (src/). The binaries are
# built into a temporary directory and renamed into place, so a half-finished
# build is never mistaken for a cached one. Concurrent runs are serialised with
# flock(1).
#
# Env: K8S_VERSION (v1.37.2), ETCD_VERSION (v3.7.3), WEIR_CACHE (/var/cache/weir),
#      GO (go).
# Prints the bin directory on the last line of stdout.
# Usage: hack/k8s-build.sh
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.7.3}
CACHE=${WEIR_CACHE:-/var/cache/weir}
GO=${GO:-go}
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
BINARIES=("${K8S_CMDS[@]}" etcd)

die() { echo "k8s-build: error: $*" >&2; exit 1; }
log() { echo "k8s-build: $*" >&2; }
# shellcheck source=lib/k8s-module.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/k8s-module.sh"
# shellcheck source=lib/cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"

k8s_parse_version # K8S_MINOR, STAGING_VERSION (v1.37.2 -> v0.37.2)
[[ $ETCD_VERSION =~ ^v3\.[0-9]+\.[0-9]+$ ]] ||
  die "ETCD_VERSION must look like v3.N.M, got '$ETCD_VERSION'"

dir="$CACHE/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}"

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

cache_begin "${BINARIES[*]} (${K8S_VERSION}, etcd ${ETCD_VERSION})" have_all

# --- kube-apiserver, kubectl -------------------------------------------------
src="$dir/src/kubernetes"
k8s_wrapper_module "$src" weir-k8s-build $(printf "k8s.io/kubernetes/cmd/%s " "${K8S_CMDS[@]}")
cd "$src"

ld=$(k8s_ldflags)
log "building ${K8S_CMDS[*]} ${K8S_VERSION} (cold: ~10 min on 2 cores)"
# One go build for all commands parallelises best.
"$GO" build -trimpath -ldflags="$ld" -o "$tmp/" $(printf "k8s.io/kubernetes/cmd/%s " "${K8S_CMDS[@]}") ||
  die "go build of ${K8S_CMDS[*]} failed (wrapper module: $src)"

# --- etcd ----------------------------------------------------------------------
src="$dir/src/etcd"
mkdir -p "$src"
cd "$src"
if [[ ! -f go.mod ]] || ! grep -q "go.etcd.io/etcd/server/v3 ${ETCD_VERSION}\$" go.mod; then
  log "preparing wrapper module $src for go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"
  rm -f go.mod go.sum
  "$GO" mod init weir-etcd-build >/dev/null 2>&1 || die "go mod init failed in $src"
  if ! "$GO" get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}"; then
    rm -f go.mod go.sum
    die "go get go.etcd.io/etcd/server/v3@${ETCD_VERSION} failed in $src"
  fi
fi
log "building etcd ${ETCD_VERSION}"
"$GO" build -trimpath -ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}" \
  -o "$tmp/etcd" go.etcd.io/etcd/server/v3 ||
  die "go build of etcd failed (wrapper module: $src)"

# --- install ---------------------------------------------------------------------
for b in "${BINARIES[@]}"; do [[ -x "$tmp/$b" ]] || die "build produced no $b"; done
"$tmp/kube-apiserver" --version | grep -qF "$K8S_VERSION" ||
  die "kube-apiserver does not report version ${K8S_VERSION}"
chmod 0755 "$tmp"
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
log "built ${BINARIES[*]} in $(($(date +%s) - start))s into $bin"
echo "$bin"
