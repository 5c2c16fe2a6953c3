package ovsdb_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

// testTimeout bounds every call a test makes: the client waits for a lost
// server without end (see test/testctx).
const testTimeout = 30 * time.Second

// connect connects a Client to in, logging to t, and closes it at cleanup.
func connect(t testing.TB, in *ovstest.Instance, opts ...ovsdb.Option) *ovsdb.Client {
	t.Helper()
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))
	c, err := ovsdb.Connect(testctx.Timeout(t, testTimeout), in.DBSocket(), logger, opts...)
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
	uuid, err := c.EnsureBridge(testctx.Timeout(t, testTimeout), ovsdb.BridgeConfig{Name: name, DatapathType: ovsdb.DatapathNetdev})
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
