# Shared by hack/k8s-build.sh, hack/e2e-build.sh and hack/coredns-build.sh
# (source it; it defines functions only): the protocol of a build cached
# outside the repository in $dir/bin.
#
# The callers set dir and GO and define die(), log() and a function that
# succeeds when everything is already built in $dir/bin.

# cache_begin WHAT HAVE: check that $GO and flock are there. If HAVE
# succeeds, print $dir/bin and exit 0 (nothing to do). Otherwise take the
# build lock $dir/.lock (a concurrent build of the same cache waits here),
# check HAVE again (that build may have finished it), export the build
# environment and set bin ($dir/bin), tmp (a new $dir/bin.tmp.XXXXXX, removed
# when the script exits: the caller renames it to $bin when the build is
# complete, so a half-finished build is never mistaken for a cached one) and
# start (seconds since the epoch).
cache_begin() {
  local what=$1 have=$2
  command -v "$GO" >/dev/null || die "'$GO' not found in PATH"
  command -v flock >/dev/null || die "flock not found in PATH (Debian package util-linux)"
  bin="$dir/bin"
  if "$have"; then
    log "$what already built in $bin"
    echo "$bin"
    exit 0
  fi
  mkdir -p "$dir" || die "cannot create cache directory $dir (set WEIR_CACHE to a writable directory)"
  exec 9>"$dir/.lock"
  log "waiting for the build lock $dir/.lock"
  flock 9 || die "cannot lock $dir/.lock"
  if "$have"; then # built by a concurrent run while we waited
    log "$what already built in $bin"
    echo "$bin"
    exit 0
  fi
  export GOTOOLCHAIN=${GOTOOLCHAIN:-local} GOFLAGS=${GOFLAGS:--buildvcs=false} CGO_ENABLED=0
  export GOWORK=off
  tmp=$(mktemp -d "$dir/bin.tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  start=$(date +%s)
}
