package nodenet_test

import (
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/test/netnstest"
	"github.com/weirnet/weir/test/testctx"
)

// TestUnderlayVswitchdRestart sets up the underlay, then restarts
// ovs-vswitchd so that it deletes its devices: with the netdev datapath
// br-phy is a tap device of ovs-vswitchd, so it disappears with its
// addresses and routes and comes back empty, while the NIC has none
// either. SetupUnderlay must restore
// the addresses and routes from the OVSDB record; run again it changes
// nothing, and it keeps a route added on br-phy by hand in the record.
func TestUnderlayVswitchdRestart(t *testing.T) {
	in, db, remote := underlayNode(t)
	node := in.NetNS

	nsRun(t, node, "ip", "addr", "add", "192.0.2.1/24", "dev", "ul0")
	nsRun(t, node, "ip", "addr", "add", "203.0.113.1/28", "dev", "ul0")
	nsRun(t, node, "ip", "link", "set", "ul0", "up")
	nsRun(t, node, "ip", "route", "add", "default", "via", "192.0.2.254", "metric", "100")
	nsRun(t, node, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.254", "src", "192.0.2.1")
	cfg := nodenet.UnderlayConfig{OVSDB: db, NIC: "ul0"}

	setup := func(t *testing.T) *nodenet.Underlay {
		t.Helper()
		var u *nodenet.Underlay
		netnstest.MustDo(t, node, func() (err error) {
			u, err = nodenet.SetupUnderlay(testctx.Timeout(t, callTimeout), cfg)
			return err
		})
		return u
	}
	state := func() (addrs, routes string) {
		return strings.TrimSpace(nsRun(t, node, "ip", "-4", "-o", "addr", "show", "dev", "br-phy", "scope", "global")),
			strings.TrimSpace(nsRun(t, node, "ip", "-4", "route", "show", "dev", "br-phy"))
	}
	wantRoutes := []string{
		"default via 192.0.2.254 metric 100",
		"198.51.100.0/24 via 192.0.2.254 src 192.0.2.1",
		"192.0.2.0/24 proto kernel scope link src 192.0.2.1",
		"203.0.113.0/28 proto kernel scope link src 203.0.113.1",
	}
	check := func(t *testing.T, what string, extraRoutes ...string) {
		t.Helper()
		addrs, routes := state()
		for _, a := range []string{"192.0.2.1/24 brd 192.0.2.255", "203.0.113.1/28 brd 203.0.113.15"} {
			if !strings.Contains(addrs, a) {
				t.Errorf("%s: br-phy lacks %s:\n%s", what, a, addrs)
			}
		}
		for _, r := range append(wantRoutes, extraRoutes...) {
			if !strings.Contains(routes, r) {
				t.Errorf("%s: br-phy lacks route %q:\n%s", what, r, routes)
			}
		}
		if got := strings.TrimSpace(nsRun(t, node, "ip", "-4", "-o", "addr", "show", "dev", "ul0", "scope", "global")); got != "" {
			t.Errorf("%s: ul0 keeps an address: %s", what, got)
		}
		out := nsRun(t, remote, "ping", "-n", "-c", "1", "-W", "2", "192.0.2.1")
		if strings.Contains(out, "DUP!") {
			t.Errorf("%s: duplicate answers:\n%s", what, out)
		}
	}

	setup(t)
	check(t, "first set-up")
	rec := in.MustVsctl(t, "get", "Port", "ul0", "external_ids")
	for _, want := range []string{`weir-underlay-addrs="192.0.2.1/24,203.0.113.1/28"`, `weir-type=uplink`, `"dst\":\"198.51.100.0/24\"`} {
		if !strings.Contains(rec, want) {
			t.Errorf("OVSDB record lacks %s: %s", want, rec)
		}
	}

	for _, tc := range []struct {
		name       string
		handRoute  []string // added on br-phy after set-up, before the restart
		wantExtras []string
	}{
		{name: "restart"},
		{name: "restart keeps a route added by hand", handRoute: []string{"192.0.2.0/24", "10.99.0.0/16", "via", "192.0.2.253"},
			wantExtras: []string{"10.99.0.0/16 via 192.0.2.253"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.handRoute) > 0 {
				nsRun(t, node, append([]string{"ip", "route", "add"}, tc.handRoute[1:]...)...)
				setup(t) // an agent restart: records the route
			}
			// OVS 3.1 makes its tap devices persistent: a plain exit
			// (SIGTERM, SIGKILL, "ovs-appctl exit") leaves them with their
			// addresses. Deleting br-phy while ovs-vswitchd is down is what
			// "exit --cleanup" or a node reboot with the OVSDB file kept
			// does: the case to recover from.
			in.StopVswitchd(t)
			nsRun(t, node, "ip", "link", "delete", "br-phy")
			in.StartVswitchd(t)
			if addrs, _ := state(); addrs != "" {
				t.Fatalf("br-phy has addresses before the restore: %s", addrs)
			}
			began := time.Now()
			u := setup(t)
			t.Logf("addresses and routes restored in %v", time.Since(began).Round(time.Millisecond))
			if len(u.Addrs) != 2 || u.Addrs[0].String() != "192.0.2.1/24" {
				t.Errorf("underlay after restore: %+v", u.Addrs)
			}
			check(t, "after the restart", tc.wantExtras...)
			before := in.MustVsctl(t, "get", "Port", "ul0", "external_ids")
			setup(t)
			check(t, "set-up again", tc.wantExtras...)
			if after := in.MustVsctl(t, "get", "Port", "ul0", "external_ids"); after != before {
				t.Errorf("record changed by an idempotent set-up:\n%s\n%s", before, after)
			}
		})
	}

	// Without addresses anywhere and without a record, SetupUnderlay fails.
	netnstest.MustDo(t, node, func() error { return nodenet.TeardownUnderlay(testctx.Timeout(t, callTimeout), cfg) })
	nsRun(t, node, "ip", "addr", "flush", "dev", "ul0")
	netnstest.MustDo(t, node, func() error {
		if _, err := nodenet.SetupUnderlay(testctx.Timeout(t, callTimeout), cfg); err == nil || !strings.Contains(err.Error(), "no record") {
			t.Errorf("SetupUnderlay without any address: got %v, want an error about the missing record", err)
		}
		return nil
	})
}

// TestEnableIPv4Forwarding turns forwarding on in a fresh namespace: once
// reported as a change, then as none.
func TestEnableIPv4Forwarding(t *testing.T) {
	netns := netnstest.New(t, "weir-nn").Name
	nsRun(t, netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
	for i, want := range []bool{true, false} {
		netnstest.MustDo(t, netns, func() error {
			changed, err := nodenet.EnableIPv4Forwarding()
			if changed != want {
				t.Errorf("call %d: changed=%v, want %v", i+1, changed, want)
			}
			return err
		})
		if got := strings.TrimSpace(nsRun(t, netns, "sysctl", "-n", "net.ipv4.ip_forward")); got != "1" {
			t.Errorf("call %d: ip_forward=%s", i+1, got)
		}
	}
}

// TestEnableIPv6Forwarding: the IPv6 twin of TestEnableIPv4Forwarding.
func TestEnableIPv6Forwarding(t *testing.T) {
	netns := netnstest.New(t, "weir-nn6").Name
	nsRun(t, netns, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=0")
	for i, want := range []bool{true, false} {
		netnstest.MustDo(t, netns, func() error {
			changed, err := nodenet.EnableIPv6Forwarding()
			if changed != want {
				t.Errorf("call %d: changed=%v, want %v", i+1, changed, want)
			}
			return err
		})
		if got := strings.TrimSpace(nsRun(t, netns, "sysctl", "-n", "net.ipv6.conf.all.forwarding")); got != "1" {
			t.Errorf("call %d: forwarding=%s", i+1, got)
		}
	}
}
