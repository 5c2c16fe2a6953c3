#!/bin/sh
# ovs-healthy.sh: liveness check of the weir-ovs container. Succeeds when both
# ovsdb-server and ovs-vswitchd answer on their control sockets within
# OVS_HEALTH_TIMEOUT seconds (default 5).
set -eu
timeout="${OVS_HEALTH_TIMEOUT:-5}"
for daemon in ovsdb-server ovs-vswitchd; do
	if ! ovs-appctl --timeout="$timeout" -t "$daemon" version >/dev/null; then
		echo "ovs-healthy: $daemon does not answer" >&2
		exit 1
	fi
done
