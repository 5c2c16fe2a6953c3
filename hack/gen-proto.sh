#!/usr/bin/env bash
# Regenerates the Go code of Weir's protobuf APIs (pkg/apis/**/*.proto) with
# pinned generators, so the checked-in *.pb.go files are reproducible.
#
# Installs, if missing or at another version:
#   - protoc-gen-go and protoc-gen-go-grpc into <repo>/bin/tools (go install);
#   - protoc from Debian's protobuf-compiler package (apt-get; needs root).
# Usage: hack/gen-proto.sh   (or: make proto)
set -euo pipefail

# Keep in step with google.golang.org/protobuf in go.mod.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.1

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/bin/tools"
GO="${GO:-go}"

# install_tool NAME PACKAGE VERSION: go install PACKAGE@VERSION into $tools
# unless $tools/NAME already reports VERSION.
install_tool() {
  local name=$1 pkg=$2 version=$3
  if [[ -x "$tools/$name" ]] && "$tools/$name" --version 2>/dev/null | grep -qF "${version#v}"; then
    return
  fi
  echo "gen-proto: installing $pkg@$version into bin/tools"
  GOBIN="$tools" "$GO" install "$pkg@$version"
}

mkdir -p "$tools"
install_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
install_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

if ! command -v protoc >/dev/null; then
  echo "gen-proto: installing protoc (Debian package protobuf-compiler)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q protobuf-compiler >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q protobuf-compiler >/dev/null; }
fi

cd "$root"
mapfile -t protos < <(find pkg/apis -name '*.proto' | sort)
if [[ ${#protos[@]} -eq 0 ]]; then
  echo "gen-proto: no .proto files under pkg/apis"
  exit 0
fi
for proto in "${protos[@]}"; do
  echo "gen-proto: $proto"
  # paths=source_relative writes the .pb.go files next to their .proto.
  PATH="$tools:$PATH" protoc -I . \
    --go_out=. --go_opt=paths=source_relative \
    --go-grpc_out=. --go-grpc_opt=paths=source_relative \
    "$proto"
done
