#!/usr/bin/env bash
# Builds kwok (sigs.k8s.io/kwok), the simulator of Nodes and Pods that
# `make scale` runs against the local cluster (docs/scale.md), from the Go
# module proxy, and caches it outside the repository, keyed by version:
#
#   ${WEIR_CACHE:-/var/cache/weir}/kwok-${KWOK_VERSION}/bin/kwok
#   ${WEIR_CACHE:-/var/cache/weir}/kwok-${KWOK_VERSION}/bin/stages/*.yaml
#
# The stages (how kwok moves simulated Nodes and Pods through their
# lifecycle) are taken unchanged from the same module version: the node
# initialisation and lease heartbeat, and the fast pod stages (ready,
# complete, delete). kwok reads them with --config.
#
# Built into a temporary directory and renamed into place (hack/lib/cache.sh).
# Measured cold: 1 m 27 s, 117 MB binary.
#
# Env: KWOK_VERSION (v0.8.0), WEIR_CACHE (/var/cache/weir), GO (go).
# Prints the bin directory on the last line of stdout.
# Usage: hack/kwok-build.sh
set -euo pipefail

KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
CACHE=${WEIR_CACHE:-/var/cache/weir}
GO=${GO:-go}
STAGES=(node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml)

die() { echo "kwok-build: error: $*" >&2; exit 1; }
log() { echo "kwok-build: $*" >&2; }
# shellcheck source=lib/cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"

[[ $KWOK_VERSION =~ ^v0\.[0-9]+\.[0-9]+$ ]] || die "KWOK_VERSION must look like v0.N.M, got '$KWOK_VERSION'"
dir="$CACHE/kwok-${KWOK_VERSION}"

have_kwok() {
  [[ -x $bin/kwok ]] || return 1
  local s
  for s in "${STAGES[@]}"; do [[ -f $bin/stages/$(basename "$s") ]] || return 1; done
}

cache_begin "kwok ${KWOK_VERSION}" have_kwok
log "building kwok ${KWOK_VERSION} from the module proxy"
GOBIN="$tmp" "$GO" install -trimpath -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" ||
  die "go install sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION} failed"
moddir=$("$GO" mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -n $moddir && -d $moddir/kustomize/stage ]] || die "cannot find the kwok ${KWOK_VERSION} module source (stages)"
mkdir -p "$tmp/stages"
for s in "${STAGES[@]}"; do
  cp "$moddir/kustomize/stage/$s" "$tmp/stages/" || die "missing stage $s in $moddir"
done
v=$("$tmp/kwok" --version 2>&1) || die "kwok --version failed: $v"
[[ $v == *"${KWOK_VERSION#v}"* ]] || log "note: kwok --version says '$v'"
chmod 0755 "$tmp"
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
log "built kwok ${KWOK_VERSION} in $(($(date +%s) - start))s into $bin"
echo "$bin"
