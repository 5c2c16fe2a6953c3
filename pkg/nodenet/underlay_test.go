package nodenet_test

import (
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/test/netnstest"
	"github.com/weirnet/weir/test/testctx"
)

// TestUnderlaySetupTeardown moves a node's underlay address and routes onto
// br-phy and back, each step twice, and checks the node stays reachable
// from a remote namespace with exactly one answer per ping (the NIC itself
// must no longer answer).
func TestUnderlaySetupTeardown(t *testing.T) {
	in, db, remote := underlayNode(t)
	node := in.NetNS

	nsRun(t, node, "ip", "addr", "add", "192.0.2.1/24", "dev", "ul0")
	nsRun(t, node, "ip", "link", "set", "ul0", "up")
	nsRun(t, node, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.254")
	nicMAC := strings.Fields(nsRun(t, node, "cat", "/sys/class/net/ul0/address"))[0]

	cfg := nodenet.UnderlayConfig{OVSDB: db, NIC: "ul0"}
	ping := func(t *testing.T) {
		t.Helper()
		out := nsRun(t, remote, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", "192.0.2.1")
		if strings.Contains(out, "DUP!") {
			t.Errorf("duplicate answers: both the NIC and the bridge answer:\n%s", out)
		}
	}
	addrs := func(dev string) string {
		return strings.TrimSpace(nsRun(t, node, "ip", "-4", "-o", "addr", "show", "dev", dev, "scope", "global"))
	}

	for i := range 2 {
		var u *nodenet.Underlay
		netnstest.MustDo(t, node, func() (err error) {
			u, err = nodenet.SetupUnderlay(testctx.Timeout(t, callTimeout), cfg)
			return err
		})
		if len(u.Addrs) != 1 || u.Addrs[0].String() != "192.0.2.1/24" || u.MTU != 1500 || u.Bridge != "br-phy" {
			t.Fatalf("setup #%d: %+v", i+1, u)
		}
		if got := addrs("ul0"); got != "" {
			t.Errorf("ul0 keeps an address: %s", got)
		}
		if got := addrs("br-phy"); !strings.Contains(got, "192.0.2.1/24") {
			t.Errorf("br-phy lacks the address: %q", got)
		}
		if got := nsRun(t, node, "ip", "route", "show", "198.51.100.0/24"); !strings.Contains(got, "dev br-phy") {
			t.Errorf("route not moved to br-phy: %q", got)
		}
		if got := strings.TrimSpace(in.MustVsctl(t, "get", "Bridge", "br-phy", "fail_mode")); got != "standalone" {
			t.Errorf("br-phy fail_mode %s", got)
		}
		if got := strings.TrimSpace(in.MustVsctl(t, "port-to-br", "ul0")); got != "br-phy" {
			t.Errorf("ul0 is on bridge %q", got)
		}
		if got := strings.TrimSpace(in.MustVsctl(t, "get", "Port", "ul0", "external_ids:weir-type")); got != `"uplink"` && got != "uplink" {
			t.Errorf("ul0 weir-type %s", got)
		}
		if got := strings.Fields(nsRun(t, node, "cat", "/sys/class/net/br-phy/address"))[0]; got != nicMAC {
			t.Errorf("br-phy MAC %s, want the NIC's %s", got, nicMAC)
		}
		ping(t)
		if got := nsRun(t, node, "nft", "list", "table", "netdev", "weir_underlay"); !strings.Contains(got, `device "ul0"`) ||
			!strings.Contains(got, "policy drop") {
			t.Errorf("ingress drop missing:\n%s", got)
		}
	}

	for range 2 {
		netnstest.MustDo(t, node, func() error { return nodenet.TeardownUnderlay(testctx.Timeout(t, callTimeout), cfg) })
		if got := addrs("ul0"); !strings.Contains(got, "192.0.2.1/24") {
			t.Errorf("ul0 did not get its address back: %q", got)
		}
		if got := nsRun(t, node, "ip", "route", "show", "198.51.100.0/24"); !strings.Contains(got, "via 192.0.2.254 dev ul0") {
			t.Errorf("route not moved back to ul0: %q", got)
		}
		if _, err := in.Vsctl("br-exists", "br-phy"); err == nil {
			t.Error("br-phy still exists")
		}
		if out, err := in.Exec("", "nft", "list", "table", "netdev", "weir_underlay"); err == nil {
			t.Errorf("ingress drop table still there:\n%s", out)
		}
		ping(t)
	}

	// Bad configurations.
	for _, tc := range []struct {
		cfg  nodenet.UnderlayConfig
		want string
	}{
		{nodenet.UnderlayConfig{NIC: "ul0"}, "OVSDB client is required"},
		{nodenet.UnderlayConfig{OVSDB: db}, "NIC is required"},
		{nodenet.UnderlayConfig{OVSDB: db, NIC: "br-phy"}, "both named"},
		{nodenet.UnderlayConfig{OVSDB: db, NIC: "nope0"}, "underlay NIC nope0"},
	} {
		netnstest.MustDo(t, node, func() error {
			if _, err := nodenet.SetupUnderlay(testctx.Timeout(t, callTimeout), tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("SetupUnderlay(%+v): got %v, want an error containing %q", tc.cfg, err, tc.want)
			}
			return nil
		})
	}
}
