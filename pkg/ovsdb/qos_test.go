package ovsdb_test

import (
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/test/testctx"
)

// TestAddPortKeepQdiscs: a tbf set on a veth before it becomes a port is
// deleted by ovs-vswitchd unless the port has a linux-noop QoS, which
// KeepQdiscs creates with the port (and for an existing port), and which
// DeletePort deletes again; a QoS Weir did not create is left alone.
func TestAddPortKeepQdiscs(t *testing.T) {
	t.Parallel()
	in, c := startNode(t)
	ctx := testctx.Timeout(t, testTimeout)
	ensureNetdevBridge(t, c, "br-int")
	tbf := func(dev string) {
		t.Helper()
		if out, err := in.Exec("", "tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "tbf",
			"rate", "10mbit", "burst", "125000", "latency", "25ms"); err != nil {
			t.Fatalf("tc: %v: %s", err, out)
		}
	}
	qdisc := func(dev string) string {
		t.Helper()
		out, err := in.Exec("", "tc", "qdisc", "show", "dev", dev, "root")
		if err != nil {
			t.Fatalf("tc: %v: %s", err, out)
		}
		return out
	}
	qosRows := func() string {
		return strings.TrimSpace(in.MustVsctl(t, "--columns=type,external_ids", "--format=csv", "--no-headings", "list", "QoS"))
	}
	// AddPort returns once ovs-vswitchd assigned the ofport, which it does
	// in the same reconfiguration that applies (or clears) the QoS.

	for _, tc := range []struct {
		name    string
		keep    bool
		wantTBF bool
	}{
		{"without KeepQdiscs ovs-vswitchd deletes the tbf", false, false},
		{"with KeepQdiscs the tbf stays", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := "vq0"
			if tc.keep {
				dev = "vq1"
			}
			addVeth(t, in, dev)
			tbf(dev)
			if _, err := c.AddPort(ctx, "br-int", dev, ovsdb.PortOptions{KeepQdiscs: tc.keep}); err != nil {
				t.Fatalf("AddPort: %v", err)
			}
			if got := strings.Contains(qdisc(dev), "tbf"); got != tc.wantTBF {
				t.Fatalf("after AddPort(KeepQdiscs=%v) the root qdisc is %q, want tbf: %v", tc.keep, qdisc(dev), tc.wantTBF)
			}
		})
	}
	if got := qosRows(); got != `linux-noop,{weir-port=vq1}` {
		t.Fatalf("QoS rows %q, want one linux-noop for vq1", got)
	}
	// Idempotent: no second row.
	if _, err := c.AddPort(ctx, "br-int", "vq1", ovsdb.PortOptions{KeepQdiscs: true}); err != nil {
		t.Fatal(err)
	}
	// An existing port without a QoS gets one.
	if _, err := c.AddPort(ctx, "br-int", "vq0", ovsdb.PortOptions{KeepQdiscs: true}); err != nil {
		t.Fatal(err)
	}
	tbf("vq0")
	if !strings.Contains(qdisc("vq0"), "tbf") {
		t.Errorf("vq0 with its new QoS lost the tbf: %q", qdisc("vq0"))
	}
	if got := qosRows(); strings.Count(got, "linux-noop") != 2 {
		t.Fatalf("QoS rows %q, want two", got)
	}
	// A QoS of someone else's on another port is not Weir's to delete.
	addVeth(t, in, "vq2")
	if _, err := c.AddPort(ctx, "br-int", "vq2", ovsdb.PortOptions{}); err != nil {
		t.Fatal(err)
	}
	in.MustVsctl(t, "--", "set", "port", "vq2", "qos=@q", "--", "--id=@q", "create", "qos", "type=linux-noop")
	for _, p := range []string{"vq0", "vq1", "vq2"} {
		if err := c.DeletePort(ctx, "br-int", p); err != nil {
			t.Fatal(err)
		}
	}
	if got := qosRows(); got != "linux-noop,{}" {
		t.Fatalf("after DeletePort the QoS rows are %q, want only the one Weir did not create", got)
	}
}
