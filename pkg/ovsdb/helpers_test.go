package ovsdb_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/test/ovstest"
)

// testTimeout bounds every call a test makes.
const testTimeout = 30 * time.Second

// testContext returns a context bounded by testTimeout and canceled at the
// end of the test.
func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// connect connects a Client to in, logging to t, and closes it at cleanup.
func connect(t testing.TB, in *ovstest.Instance, opts ...ovsdb.Option) *ovsdb.Client {
	t.Helper()
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))
	c, err := ovsdb.Connect(testContext(t), in.DBSocket(), logger, opts...)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// startNode starts a private OVS and connects a Client to it.
func startNode(t testing.TB, opts ...ovsdb.Option) (*ovstest.Instance, *ovsdb.Client) {
	t.Helper()
	in := ovstest.Start(t)
	return in, connect(t, in, opts...)
}

// ensureNetdevBridge creates bridge name with the userspace datapath.
func ensureNetdevBridge(t testing.TB, c *ovsdb.Client, name string) string {
	t.Helper()
	uuid, err := c.EnsureBridge(testContext(t), ovsdb.BridgeConfig{Name: name, DatapathType: ovsdb.DatapathNetdev})
	if err != nil {
		t.Fatalf("EnsureBridge(%s): %v", name, err)
	}
	return uuid
}

// vsctlGet returns `ovs-vsctl get table record column`, trimmed, with the
// quotes ovs-vsctl puts around strings removed.
func vsctlGet(t testing.TB, in *ovstest.Instance, table, record, column string) string {
	t.Helper()
	out := strings.TrimSpace(in.MustVsctl(t, "get", table, record, column))
	if unq, err := strconv.Unquote(out); err == nil {
		return unq
	}
	return out
}

// addVeth creates veth pair name <-> name+"p" in the instance's namespace,
// both up.
func addVeth(t testing.TB, in *ovstest.Instance, name string) {
	t.Helper()
	if out, err := in.Exec("", "ip", "link", "add", name, "type", "veth", "peer", "name", name+"p"); err != nil {
		t.Fatalf("create veth %s: %v\n%s", name, err, out)
	}
	for _, dev := range []string{name, name + "p"} {
		if out, err := in.Exec("", "ip", "link", "set", dev, "up"); err != nil {
			t.Fatalf("set %s up: %v\n%s", dev, err, out)
		}
	}
}

// portNames returns the names of the ports of bridge per ovs-vsctl, the
// bridge's local port excluded.
func portNames(t testing.TB, in *ovstest.Instance, bridge string) []string {
	t.Helper()
	return strings.Fields(in.MustVsctl(t, "list-ports", bridge))
}

// ovsdbServerArgs is the command line ovstest starts ovsdb-server with
// (test/ovstest/ovstest.go, start and startDaemon), so a restarted server
// serves the same database on the same socket.
func ovsdbServerArgs(in *ovstest.Instance) []string {
	p := func(name string) string { return filepath.Join(in.Dir, name) }
	return []string{
		"netns", "exec", in.NetNS, "ovsdb-server", p("conf.db"),
		"--remote=punix:" + p("db.sock"),
		"--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
		"--pidfile=" + p("ovsdb-server.pid"),
		"--unixctl=" + p("ovsdb-server.ctl"),
		"--log-file=" + p("ovsdb-server.log"),
		"--detach", "--no-chdir", "-vconsole:err",
	}
}

// stopOVSDBServer sends sig to the instance's ovsdb-server and waits until it
// has exited. The pidfile (and, after SIGKILL, the socket) stay behind, as
// after a crash.
func stopOVSDBServer(t testing.TB, in *ovstest.Instance, sig syscall.Signal) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(in.Dir, "ovsdb-server.pid"))
	if err != nil {
		t.Fatalf("read ovsdb-server pidfile: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("ovsdb-server pidfile: %v", err)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("kill ovsdb-server (pid %d) with %v: %v", pid, sig, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for processAlive(pid, "ovsdb-server") {
		if time.Now().After(deadline) {
			t.Fatalf("ovsdb-server (pid %d) still running 10s after %v", pid, sig)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startOVSDBServer starts the instance's ovsdb-server again with the
// command line ovstest used.
func startOVSDBServer(t testing.TB, in *ovstest.Instance) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", ovsdbServerArgs(in)...)
	cmd.Env = append(os.Environ(),
		"OVS_RUNDIR="+in.Dir, "OVS_DBDIR="+in.Dir, "OVS_LOGDIR="+in.Dir, "OVS_SYSCONFDIR="+in.Dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restart ovsdb-server: %v\n%s", err, out)
	}
}

// processAlive reports whether pid is a running (not zombie) process named
// comm.
func processAlive(pid int, comm string) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < lp || rp+2 >= len(s) || s[lp+1:rp] != comm {
		return false
	}
	return s[rp+2] != 'Z' && s[rp+2] != 'X'
}

// eventually polls check every 20ms until it returns nil or timeout passes,
// then fails the test with the last error.
func eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// errorsAs is errors.As returning the target, for table-driven checks.
func errorsAs[T error](err error) (T, bool) {
	var target T
	ok := errors.As(err, &target)
	return target, ok
}
