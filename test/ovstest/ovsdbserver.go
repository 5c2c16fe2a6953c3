package ovstest

import (
	"fmt"
	"syscall"
	"testing"
)

// OVSDBServerPID returns the PID of the running ovsdb-server, or 0 if it is
// not running.
func (in *Instance) OVSDBServerPID() int {
	pid, err := readPIDFile(in.path(ovsdbComm + ".pid"))
	if err != nil || pid == 0 || !processRunning(pid, ovsdbComm) {
		return 0
	}
	return pid
}

// StopOVSDBServer stops ovsdb-server (SIGTERM, SIGKILL after 5s) and waits
// for it to exit. ovs-vswitchd keeps running (and keeps its flows); the
// database file stays, so StartOVSDBServer brings back the same contents.
func (in *Instance) StopOVSDBServer(t testing.TB) {
	t.Helper()
	if err := stopDaemon(in.path(ovsdbComm+".pid"), ovsdbComm); err != nil {
		t.Fatalf("ovstest: %v", err)
	}
}

// KillOVSDBServer sends sig to ovsdb-server and waits (up to 10s) until it
// has exited, to simulate a crash (SIGKILL) or an outside stop (SIGTERM).
// Unlike StopOVSDBServer it leaves the files as the server leaves them:
// after SIGKILL the pidfile and the socket stay, as after a crash.
// StartOVSDBServer starts it again.
func (in *Instance) KillOVSDBServer(t testing.TB, sig syscall.Signal) {
	t.Helper()
	pid := in.OVSDBServerPID()
	if pid == 0 {
		t.Fatalf("ovstest: kill ovsdb-server with %v: not running", sig)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("ovstest: kill ovsdb-server (pid %d) with %v: %v", pid, sig, err)
	}
	if !waitExit(pid, ovsdbComm, killTimeout) {
		t.Fatalf("ovstest: ovsdb-server (pid %d) still running %s after %v", pid, killTimeout, sig)
	}
}

// StartOVSDBServer starts ovsdb-server on the existing database after
// StopOVSDBServer, with the same sockets, and returns once it serves them.
func (in *Instance) StartOVSDBServer(t testing.TB) {
	t.Helper()
	if err := in.startOVSDBServer(); err != nil {
		t.Fatalf("ovstest: restart ovsdb-server: %v", err)
	}
}

func (in *Instance) startOVSDBServer() error {
	if pid := in.OVSDBServerPID(); pid != 0 {
		return fmt.Errorf("ovsdb-server already running as pid %d", pid)
	}
	return in.startDaemon(ovsdbComm, in.path("conf.db"),
		"--remote=punix:"+in.path("db.sock"),
		"--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
	)
}
