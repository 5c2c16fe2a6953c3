#!/bin/sh
# start-ovs.sh: entrypoint of the weir-ovs image. Runs ovsdb-server and
# ovs-vswitchd in the foreground of this container:
#   1. creates the configuration database from the schema if it is missing
#      (or converts it after an OVS upgrade),
#   2. starts ovsdb-server on punix:$OVS_RUNDIR/db.sock,
#   3. sets other_config:flow-restore-wait=true, so that a restarted
#      ovs-vswitchd keeps forwarding nothing new until the weir agent has
#      installed its flows again (the agent clears the flag),
#   4. starts ovs-vswitchd,
#   5. waits; on SIGTERM/SIGINT it stops both daemons with `ovs-appctl exit`
#      (ports and bridges stay in the database for the next start) and exits 0.
#      If either daemon dies, the other is stopped and the script exits 1,
#      so the container restarts.
# The datapath type (netdev or system) is chosen by the agent per bridge.
#
# Environment: OVS_RUNDIR [/var/run/openvswitch], OVS_DBDIR [/etc/openvswitch],
# OVS_LOGDIR [/var/log/openvswitch] (OVS itself reads them too),
# OVS_LOG_LEVEL [info] for console and file logs.
set -eu

export OVS_RUNDIR="${OVS_RUNDIR:-/var/run/openvswitch}"
export OVS_DBDIR="${OVS_DBDIR:-/etc/openvswitch}"
export OVS_LOGDIR="${OVS_LOGDIR:-/var/log/openvswitch}"
level="${OVS_LOG_LEVEL:-info}"
db="$OVS_DBDIR/conf.db"
schema=/usr/share/openvswitch/vswitch.ovsschema

log() { echo "start-ovs: $*" >&2; }

mkdir -p "$OVS_RUNDIR" "$OVS_DBDIR" "$OVS_LOGDIR"

if [ ! -s "$db" ]; then
	log "creating $db"
	ovsdb-tool create "$db" "$schema"
elif [ "$(ovsdb-tool needs-conversion "$db" "$schema")" = yes ]; then
	log "converting $db to the current schema"
	ovsdb-tool convert "$db" "$schema"
fi

db_pid=""
vs_pid=""
stopping=0

stop() {
	stopping=1
	if [ -n "$vs_pid" ] && kill -0 "$vs_pid" 2>/dev/null; then
		log "stopping ovs-vswitchd"
		ovs-appctl --timeout=10 -t ovs-vswitchd exit || kill -TERM "$vs_pid" 2>/dev/null || true
	fi
	if [ -n "$db_pid" ] && kill -0 "$db_pid" 2>/dev/null; then
		log "stopping ovsdb-server"
		ovs-appctl --timeout=10 -t ovsdb-server exit || kill -TERM "$db_pid" 2>/dev/null || true
	fi
	for pid in $vs_pid $db_pid; do
		wait "$pid" 2>/dev/null || true
	done
}

on_signal() {
	log "signal received"
	stopping=1
}
trap on_signal TERM INT

log "starting ovsdb-server"
ovsdb-server "$db" \
	--remote="punix:$OVS_RUNDIR/db.sock" \
	--remote=db:Open_vSwitch,Open_vSwitch,manager_options \
	--pidfile --log-file="$OVS_LOGDIR/ovsdb-server.log" \
	-vconsole:"$level" -vfile:"$level" -vsyslog:off &
db_pid=$!

i=0
until [ -S "$OVS_RUNDIR/db.sock" ] && ovs-appctl --timeout=1 -t ovsdb-server version >/dev/null 2>&1; do
	i=$((i + 1))
	if [ "$i" -gt 300 ] || ! kill -0 "$db_pid" 2>/dev/null; then
		log "ovsdb-server did not come up"
		stop
		exit 1
	fi
	sleep 0.1
done

ovs-vsctl --no-wait init
ovs-vsctl --no-wait set Open_vSwitch . other_config:flow-restore-wait=true
log "flow-restore-wait=true (the agent clears it after installing its flows)"

log "starting ovs-vswitchd"
ovs-vswitchd "unix:$OVS_RUNDIR/db.sock" \
	--pidfile --log-file="$OVS_LOGDIR/ovs-vswitchd.log" \
	-vconsole:"$level" -vfile:"$level" -vsyslog:off &
vs_pid=$!

while [ "$stopping" = 0 ] && kill -0 "$db_pid" 2>/dev/null && kill -0 "$vs_pid" 2>/dev/null; do
	sleep 1 &
	wait $! || true
done

if [ "$stopping" = 1 ]; then
	stop
	log "stopped"
	exit 0
fi
log "a daemon exited unexpectedly; stopping the other"
stop
exit 1
