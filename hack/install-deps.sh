#!/usr/bin/env bash
# Installs the Debian packages Weir's tests and benchmarks need, if missing.
# Idempotent and quiet: prints nothing when everything is already installed.
# Never starts the system Open vSwitch service: tests run private instances.
set -euo pipefail

# package:command[,command...] — a package counts as present when dpkg knows it
# as installed and each of its commands (if any) is in PATH. gcc and libc6-dev
# are for `go test -race` (cgo).
deps=(
  "openvswitch-switch:ovs-vswitchd,ovsdb-server,ovsdb-tool,ovs-vsctl,ovs-ofctl,ovs-appctl"
  "iproute2:ip"
  "nftables:nft"
  "ethtool:ethtool"
  "iptables:iptables"
  "tcpdump:tcpdump"
  "iperf3:iperf3"
  "iputils-ping:ping"
  "procps:sysctl"
  "gcc:gcc"
  "libc6-dev:"
  "containerd:containerd,ctr"
  "runc:runc"
)

# Debian keeps admin tools in sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

installed() {  # installed PACKAGE CMD[,CMD...]
  local pkg=$1 cmd
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || return 1
  for cmd in ${2//,/ }; do
    command -v "$cmd" >/dev/null 2>&1 || return 1
  done
}

missing=()
for dep in "${deps[@]}"; do
  installed "${dep%%:*}" "${dep#*:}" || missing+=("${dep%%:*}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi

log=$(mktemp)
policy=/usr/sbin/policy-rc.d
policy_ours=
cleanup() {
  rm -f "$log"
  if [ -n "$policy_ours" ]; then rm -f "$policy"; fi
}
trap cleanup EXIT

# Forbid maintainer scripts to start services (openvswitch-switch would start
# the system OVS, and there may be no init system to do it). An existing
# policy-rc.d is left as it is.
if [ ! -e "$policy" ]; then
  policy_ours=1
  printf '#!/bin/sh\n# Written by weir hack/install-deps.sh while it installs packages.\nexit 101\n' >"$policy"
  chmod 755 "$policy"
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq >"$log" 2>&1; then
  cat "$log" >&2
  echo "install-deps: apt-get update failed; could not install ${missing[*]}" >&2
  exit 1
fi
for pkg in "${missing[@]}"; do
  if ! apt-get install -y -qq --no-install-recommends "$pkg" >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-deps: apt-get install $pkg failed" >&2
    exit 1
  fi
done

still=()
for dep in "${deps[@]}"; do
  installed "${dep%%:*}" "${dep#*:}" || still+=("${dep%%:*}")
done
if [ ${#still[@]} -gt 0 ]; then
  echo "install-deps: installed but commands still missing for: ${still[*]}" >&2
  exit 1
fi
