package nodenet_test

import (
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/test/netnstest"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

// callTimeout bounds a call that reaches OVS: the OVSDB client and the
// OpenFlow switch wait for a lost connection without end (see test/testctx).
const callTimeout = time.Minute

// connectDB connects an OVSDB client to in, closed at cleanup.
func connectDB(t *testing.T, in *ovstest.Instance) *ovsdb.Client {
	t.Helper()
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(1)))
	db, err := ovsdb.Connect(testctx.Timeout(t, callTimeout), in.DBSocket(), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// underlayNode starts a node (a private OVS) whose underlay NIC ul0, not
// yet configured, is a veth to ul0 in a remote namespace that holds
// 192.0.2.2/24; it returns the node's OVS, an OVSDB client for it and the
// remote namespace's name.
func underlayNode(t *testing.T) (*ovstest.Instance, *ovsdb.Client, string) {
	t.Helper()
	in := ovstest.Start(t)
	remote := netnstest.New(t, "weir-nn").Name
	db := connectDB(t, in)
	mustRun(t, "ip", "link", "add", "ul0", "netns", in.NetNS, "type", "veth", "peer", "name", "ul0", "netns", remote)
	nsRun(t, remote, "ip", "addr", "add", "192.0.2.2/24", "dev", "ul0")
	nsRun(t, remote, "ip", "link", "set", "ul0", "up")
	return in, db, remote
}

// nsRun runs a command in namespace ns and fails the test on error.
func nsRun(t *testing.T, ns string, args ...string) string {
	t.Helper()
	return mustRun(t, "ip", append([]string{"netns", "exec", ns}, args...)...)
}
