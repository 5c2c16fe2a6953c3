# Shared by hack/k8s-build.sh and hack/e2e-build.sh (source it; it defines
# functions only). Both build packages of k8s.io/kubernetes from the Go module
# proxy inside a wrapper module whose go.mod replaces every staging module
# (k8s.io/api, k8s.io/client-go, ...; `=> ./staging/...` in kubernetes' own
# go.mod) by its published v0.X.Y version, and stamp the version like
# kubernetes' hack/lib/version.sh does.
#
# The callers set K8S_VERSION and GO and define die() and log().

# k8s_parse_version sets K8S_MINOR and STAGING_VERSION from K8S_VERSION
# (v1.37.2 -> 37, v0.37.2).
k8s_parse_version() {
  [[ $K8S_VERSION =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] ||
    die "K8S_VERSION must look like v1.N.M, got '$K8S_VERSION'"
  K8S_MINOR=${BASH_REMATCH[1]}
  STAGING_VERSION="v0.${K8S_MINOR}.${BASH_REMATCH[2]}"
}

# k8s_wrapper_module [-t] DIR NAME PKG... makes DIR a module (NAME) that
# requires k8s.io/kubernetes ${K8S_VERSION} with the staging replaces and
# every go.sum entry needed to build PKG... (package paths without @version);
# with -t also their tests (go test -c). A wrapper that already builds the
# packages is left alone.
k8s_wrapper_module() {
  local t=() lt=()
  if [[ $1 == -t ]]; then
    t=(-t) lt=(-test)
    shift
  fi
  local src=$1 name=$2
  shift 2
  mkdir -p "$src"
  (
    cd "$src" || exit 1
    # go get records the requirement as "// indirect" (nothing imports it).
    if [[ -f go.mod ]] && grep -Eq "^[[:space:]]*k8s\.io/kubernetes ${K8S_VERSION}( // indirect)?\$" go.mod &&
      "$GO" list "${lt[@]}" -deps "$@" >/dev/null 2>&1; then
      exit 0
    fi
    log "preparing wrapper module $src for k8s.io/kubernetes ${K8S_VERSION} (staging ${STAGING_VERSION})"
    rm -f go.mod go.sum
    "$GO" mod init "$name" >/dev/null 2>&1 || die "go mod init failed in $src"
    local go_version
    go_version=$("$GO" env GOVERSION) || die "'$GO env GOVERSION' failed"
    "$GO" mod edit -go="${go_version#go}"
    local kgomod staging m
    kgomod=$("$GO" mod download -json "k8s.io/kubernetes@${K8S_VERSION}" |
      sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p') ||
      die "cannot download k8s.io/kubernetes@${K8S_VERSION} from the module proxy"
    [[ -f $kgomod ]] || die "no go.mod for k8s.io/kubernetes@${K8S_VERSION} (got '$kgomod')"
    staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$kgomod")
    [[ -n $staging ]] || die "found no staging replaces in $kgomod"
    for m in $staging; do
      "$GO" mod edit -replace="${m}=${m}@${STAGING_VERSION}"
    done
    # go get on the packages adds every go.sum entry the build needs.
    if ! "$GO" get "${t[@]}" $(printf "%s@${K8S_VERSION} " "$@"); then
      rm -f go.mod go.sum # do not leave a go.mod that looks complete
      die "go get k8s.io/kubernetes ${K8S_VERSION} failed in $src"
    fi
  ) || exit 1
}

# k8s_ldflags prints the -ldflags that stamp ${K8S_VERSION} into the binaries.
k8s_ldflags() {
  local ld="-s -w" p
  for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ld+=" -X ${p}.gitVersion=${K8S_VERSION} -X ${p}.gitMajor=1 -X ${p}.gitMinor=${K8S_MINOR}"
    ld+=" -X ${p}.gitTreeState=clean -X ${p}.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ld"
}
