#!/bin/sh
# install-cni: installs the weir CNI binary, the reference portmap plugin
# (hostPort; chained after weir in the default conflist) and the network
# configuration on the node. Runs as an init container of the weir-agent
# DaemonSet with the host's CNI directories mounted under /host. Every file
# is replaced atomically (copy to a temporary file in the target directory, then rename),
# so kubelet and the container runtime never see a half-written file, and a
# running weir binary is never overwritten in place.
#
# Environment (defaults in brackets):
#   CNI_BIN_SRC        the CNI binary in this image [/opt/weir/bin/weir]
#   CNI_PORTMAP_SRC    the portmap plugin in this image [/opt/weir/bin/portmap]
#   CNI_CONFLIST_FILE  the network configuration, a mounted ConfigMap file
#                      [/etc/weir/weir.conflist]
#   HOST_ROOT          where the host's file system is mounted [/host]
#   CNI_BIN_DIR        [$HOST_ROOT/opt/cni/bin]
#   CNI_CONF_DIR       [$HOST_ROOT/etc/cni/net.d]
#   CNI_CONF_NAME      [10-weir.conflist]
set -eu

CNI_BIN_SRC="${CNI_BIN_SRC:-/opt/weir/bin/weir}"
CNI_PORTMAP_SRC="${CNI_PORTMAP_SRC:-/opt/weir/bin/portmap}"
CNI_CONFLIST_FILE="${CNI_CONFLIST_FILE:-/etc/weir/weir.conflist}"
HOST_ROOT="${HOST_ROOT:-/host}"
CNI_BIN_DIR="${CNI_BIN_DIR:-$HOST_ROOT/opt/cni/bin}"
CNI_CONF_DIR="${CNI_CONF_DIR:-$HOST_ROOT/etc/cni/net.d}"
CNI_CONF_NAME="${CNI_CONF_NAME:-10-weir.conflist}"

tmp=""
cleanup() {
	if [ -n "$tmp" ]; then rm -f "$tmp"; fi
}
trap cleanup EXIT

# install_atomic SRC DST MODE copies SRC to DST through a temporary file in
# DST's directory (same file system, so the final mv is a rename).
install_atomic() {
	tmp="$(dirname "$2")/.$(basename "$2").tmp.$$"
	cp "$1" "$tmp"
	chmod "$3" "$tmp"
	mv -f "$tmp" "$2"
	tmp=""
}

for bin in "$CNI_BIN_SRC" "$CNI_PORTMAP_SRC"; do
	if [ ! -x "$bin" ]; then
		echo "install-cni: CNI binary $bin is missing or not executable" >&2
		exit 1
	fi
done
if [ ! -s "$CNI_CONFLIST_FILE" ]; then
	echo "install-cni: network configuration $CNI_CONFLIST_FILE is missing or empty" >&2
	exit 1
fi

mkdir -p "$CNI_BIN_DIR" "$CNI_CONF_DIR"
install_atomic "$CNI_BIN_SRC" "$CNI_BIN_DIR/weir" 0755
echo "install-cni: installed $CNI_BIN_DIR/weir"
# Weir's portmap replaces one the node may have: the conflist was tested with
# this version (containernetworking/plugins as pinned in go.mod).
install_atomic "$CNI_PORTMAP_SRC" "$CNI_BIN_DIR/portmap" 0755
echo "install-cni: installed $CNI_BIN_DIR/portmap"
install_atomic "$CNI_CONFLIST_FILE" "$CNI_CONF_DIR/$CNI_CONF_NAME" 0644
echo "install-cni: installed $CNI_CONF_DIR/$CNI_CONF_NAME"
