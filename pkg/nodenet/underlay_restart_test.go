package nodenet_test

import (
	"slices"
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
// IPv4-only, the record holds no IPv6 keys (as before IPv6 support);
// dual-stack, the IPv6 addresses and routes come back from the record as
// well, and IPv6 works again over br-phy; IPv6-only, the record holds the
// IPv6 keys alone and the IPv6 part comes back as on a dual-stack node.
func TestUnderlayVswitchdRestart(t *testing.T) {
	for _, fam := range []struct {
		name   string
		v4, v6 bool
	}{
		{name: "IPv4", v4: true},
		{name: "dual-stack", v4: true, v6: true},
		{name: "IPv6-only", v6: true},
	} {
		t.Run(fam.name, func(t *testing.T) { testUnderlayVswitchdRestart(t, fam.v4, fam.v6) })
	}
}

func testUnderlayVswitchdRestart(t *testing.T, v4, v6 bool) {
	in, db, remote := underlayNode(t)
	node := in.NetNS

	if v4 {
		nsRun(t, node, "ip", "addr", "add", "192.0.2.1/24", "dev", "ul0")
		nsRun(t, node, "ip", "addr", "add", "203.0.113.1/28", "dev", "ul0")
	}
	if v6 {
		nsRun(t, node, "ip", "-6", "addr", "add", underlayNodeIPv6+"/64", "dev", "ul0", "nodad")
		nsRun(t, node, "ip", "-6", "addr", "add", "2001:db8:5::1/48", "dev", "ul0", "nodad")
		addRemoteIPv6(t, remote)
	}
	nsRun(t, node, "ip", "link", "set", "ul0", "up")
	if v4 {
		nsRun(t, node, "ip", "route", "add", "default", "via", "192.0.2.254", "metric", "100")
		nsRun(t, node, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.254", "src", "192.0.2.1")
	}
	if v6 {
		nsRun(t, node, "ip", "-6", "route", "add", "default", "via", underlayGwIPv6, "metric", "100")
		nsRun(t, node, "ip", "-6", "route", "add", "2001:db8:98::/48", "via", underlayGwIPv6, "src", "2001:db8:5::1")
		// A default route through the device alone: no address in it
		// tells netlink its family.
		nsRun(t, node, "ip", "-6", "route", "add", "default", "dev", "ul0", "metric", "2048")
	}
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
	state := func(family string) (addrs, routes string) {
		return strings.TrimSpace(nsRun(t, node, "ip", family, "-o", "addr", "show", "dev", "br-phy", "scope", "global")),
			strings.TrimSpace(nsRun(t, node, "ip", family, "route", "show", "dev", "br-phy"))
	}
	wantRoutes := []string{
		"default via 192.0.2.254 metric 100",
		"198.51.100.0/24 via 192.0.2.254 src 192.0.2.1",
		"192.0.2.0/24 proto kernel scope link src 192.0.2.1",
		"203.0.113.0/28 proto kernel scope link src 203.0.113.1",
	}
	wantAddrs6 := []string{underlayNodeIPv6 + "/64", "2001:db8:5::1/48"}
	wantRoutes6 := []string{
		"default via " + underlayGwIPv6 + " metric 100",
		"2001:db8:98::/48 via " + underlayGwIPv6 + " src 2001:db8:5::1 metric 1024",
		"default metric 2048",
		"fd00:192:0:2::/64 proto kernel metric 256",
		"2001:db8:5::/48 proto kernel metric 256",
	}
	check := func(t *testing.T, what string, extraRoutes, extraRoutes6 []string) {
		t.Helper()
		addrs, routes := state("-4")
		if v4 {
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
			out := nsRun(t, remote, "ping", "-n", "-c", "1", "-W", "2", "192.0.2.1")
			if strings.Contains(out, "DUP!") {
				t.Errorf("%s: duplicate answers:\n%s", what, out)
			}
		} else if addrs != "" || routes != "" {
			t.Errorf("%s: IPv6-only, yet br-phy has IPv4 addresses or routes:\n%s\n%s", what, addrs, routes)
		}
		if got := strings.TrimSpace(nsRun(t, node, "ip", "-4", "-o", "addr", "show", "dev", "ul0", "scope", "global")); got != "" {
			t.Errorf("%s: ul0 keeps an address: %s", what, got)
		}
		if !v6 {
			return
		}
		addrs6, routes6 := state("-6")
		for _, a := range wantAddrs6 {
			if !strings.Contains(addrs6, a) {
				t.Errorf("%s: br-phy lacks %s:\n%s", what, a, addrs6)
			}
		}
		if strings.Contains(addrs6, "tentative") {
			t.Errorf("%s: br-phy has tentative IPv6 addresses:\n%s", what, addrs6)
		}
		for _, r := range append(wantRoutes6, extraRoutes6...) {
			if !strings.Contains(routes6, r) {
				t.Errorf("%s: br-phy lacks IPv6 route %q:\n%s", what, r, routes6)
			}
		}
		if got := strings.TrimSpace(nsRun(t, node, "ip", "-6", "-o", "addr", "show", "dev", "ul0", "scope", "global")); got != "" {
			t.Errorf("%s: ul0 keeps an IPv6 address: %s", what, got)
		}
		if got := strings.TrimSpace(nsRun(t, node, "ip", "-6", "route", "show", "dev", "ul0")); strings.Contains(got, "via") ||
			strings.Contains(got, "default") {
			t.Errorf("%s: ul0 keeps movable IPv6 routes:\n%s", what, got)
		}
		pingNoDup(t, remote, "-6", underlayNodeIPv6)
		pingNoDup(t, node, "-6", underlayRemoteIPv6)
	}
	checkAddrs6 := func(t *testing.T, u *nodenet.Underlay) {
		t.Helper()
		var got []string
		for _, a := range u.Addrs6 {
			got = append(got, a.String())
		}
		slices.Sort(got)
		want := slices.Clone(wantAddrs6)
		if !v6 {
			want = nil
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("underlay IPv6 addresses %v, want %v", got, want)
		}
	}

	// The move keeps the order of the IPv6 addresses (the kernel lists them
	// newest first): the NIC's before is br-phy's after.
	globals6 := func(dev string) []string {
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(nsRun(t, node, "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "global")), "\n") {
			if f := strings.Fields(l); len(f) >= 4 {
				out = append(out, f[3])
			}
		}
		return out
	}
	nicOrder6 := globals6("ul0")
	u := setup(t)
	checkAddrs6(t, u)
	if got := globals6("br-phy"); !slices.Equal(got, nicOrder6) {
		t.Errorf("IPv6 addresses on br-phy in the order %v, on ul0 they were %v", got, nicOrder6)
	}
	check(t, "first set-up", nil, nil)
	rec := in.MustVsctl(t, "get", "Port", "ul0", "external_ids")
	if !strings.Contains(rec, `weir-type=uplink`) {
		t.Errorf("OVSDB record lacks weir-type=uplink: %s", rec)
	}
	if v4 {
		for _, want := range []string{`weir-underlay-addrs="192.0.2.1/24,203.0.113.1/28"`, `"dst\":\"198.51.100.0/24\"`} {
			if !strings.Contains(rec, want) {
				t.Errorf("OVSDB record lacks %s: %s", want, rec)
			}
		}
	} else if strings.Contains(rec, nodenet.KeyUnderlayAddrs+"=") || strings.Contains(rec, nodenet.KeyUnderlayRoutes+"=") {
		t.Errorf("IPv6-only record with IPv4 keys: %s", rec)
	}
	if v6 {
		for _, want := range append(wantAddrs6, `"dst\":\"2001:db8:98::/48\"`, nodenet.KeyUnderlayRoutes6) {
			if !strings.Contains(rec, want) {
				t.Errorf("OVSDB record lacks %s: %s", want, rec)
			}
		}
	} else if strings.Contains(rec, nodenet.KeyUnderlayAddrs6) || strings.Contains(rec, nodenet.KeyUnderlayRoutes6) {
		t.Errorf("IPv4-only record with IPv6 keys: %s", rec)
	}

	for _, tc := range []struct {
		name       string
		handRoute  []string // added on br-phy after set-up, before the restart
		wantExtras []string
		// handRoute6 and wantExtras6: the same for IPv6, dual-stack only.
		handRoute6  []string
		wantExtras6 []string
	}{
		{name: "restart"},
		{name: "restart keeps a route added by hand", handRoute: []string{"10.99.0.0/16", "via", "192.0.2.253"},
			wantExtras:  []string{"10.99.0.0/16 via 192.0.2.253"},
			handRoute6:  []string{"2001:db8:aa::/48", "via", "fd00:192:0:2::fd", "dev", "br-phy"},
			wantExtras6: []string{"2001:db8:aa::/48 via fd00:192:0:2::fd metric 1024"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !v4 {
				tc.handRoute, tc.wantExtras = nil, nil
			}
			if !v6 {
				tc.handRoute6, tc.wantExtras6 = nil, nil
			}
			if len(tc.handRoute) > 0 {
				nsRun(t, node, append([]string{"ip", "route", "add"}, tc.handRoute...)...)
			}
			if len(tc.handRoute6) > 0 {
				nsRun(t, node, append([]string{"ip", "-6", "route", "add"}, tc.handRoute6...)...)
			}
			if len(tc.handRoute)+len(tc.handRoute6) > 0 {
				setup(t) // an agent restart: records the routes
			}
			// OVS 3.1 makes its tap devices persistent: a plain exit
			// (SIGTERM, SIGKILL, "ovs-appctl exit") leaves them with their
			// addresses. Deleting br-phy while ovs-vswitchd is down is what
			// "exit --cleanup" or a node reboot with the OVSDB file kept
			// does: the case to recover from.
			in.StopVswitchd(t)
			nsRun(t, node, "ip", "link", "delete", "br-phy")
			in.StartVswitchd(t)
			if addrs, _ := state("-4"); addrs != "" {
				t.Fatalf("br-phy has addresses before the restore: %s", addrs)
			}
			if addrs, _ := state("-6"); addrs != "" {
				t.Fatalf("br-phy has IPv6 addresses before the restore: %s", addrs)
			}
			began := time.Now()
			u := setup(t)
			t.Logf("addresses and routes restored in %v", time.Since(began).Round(time.Millisecond))
			if v4 && (len(u.Addrs) != 2 || u.Addrs[0].String() != "192.0.2.1/24") || !v4 && len(u.Addrs) != 0 {
				t.Errorf("underlay IPv4 addresses after restore: %+v", u.Addrs)
			}
			checkAddrs6(t, u)
			check(t, "after the restart", tc.wantExtras, tc.wantExtras6)
			before := in.MustVsctl(t, "get", "Port", "ul0", "external_ids")
			setup(t)
			check(t, "set-up again", tc.wantExtras, tc.wantExtras6)
			if after := in.MustVsctl(t, "get", "Port", "ul0", "external_ids"); after != before {
				t.Errorf("record changed by an idempotent set-up:\n%s\n%s", before, after)
			}
		})
	}

	// Teardown gives both families back to ul0.
	netnstest.MustDo(t, node, func() error { return nodenet.TeardownUnderlay(testctx.Timeout(t, callTimeout), cfg) })
	if v4 {
		if got := nsRun(t, node, "ip", "-4", "-o", "addr", "show", "dev", "ul0", "scope", "global"); !strings.Contains(got, "192.0.2.1/24") ||
			!strings.Contains(got, "203.0.113.1/28") {
			t.Errorf("ul0 after teardown: %s", got)
		}
		if got := nsRun(t, node, "ip", "-4", "route", "show", "default"); !strings.Contains(got, "via 192.0.2.254 dev ul0") {
			t.Errorf("IPv4 default route after teardown: %q", got)
		}
	}
	if v6 {
		got := nsRun(t, node, "ip", "-6", "-o", "addr", "show", "dev", "ul0", "scope", "global")
		for _, a := range wantAddrs6 {
			if !strings.Contains(got, a) {
				t.Errorf("ul0 after teardown lacks %s: %s", a, got)
			}
		}
		if got := nsRun(t, node, "ip", "-6", "route", "show", "default"); !strings.Contains(got, "via "+underlayGwIPv6+" dev ul0 metric 100") ||
			!strings.Contains(got, "default dev ul0 metric 2048") {
			t.Errorf("IPv6 default routes after teardown: %q", got)
		}
		pingNoDup(t, node, "-6", underlayRemoteIPv6)
	}

	// Without an address of either family anywhere and without a record
	// (teardown deleted br-phy and with it the record), SetupUnderlay fails
	// and says why. Without IPv4 alone it still works: that is the
	// IPv6-only case above.
	nsRun(t, node, "ip", "-4", "addr", "flush", "dev", "ul0")
	nsRun(t, node, "ip", "-6", "addr", "flush", "dev", "ul0", "scope", "global")
	netnstest.MustDo(t, node, func() error {
		_, err := nodenet.SetupUnderlay(testctx.Timeout(t, callTimeout), cfg)
		if err == nil || !strings.Contains(err.Error(), "IPv4 or global IPv6 address") || !strings.Contains(err.Error(), "no record") {
			t.Errorf("SetupUnderlay without any address: got %v, want an error about the missing addresses and record", err)
		}
		return nil
	})
	// It fails before recording anything: ul0 is on no bridge.
	if out, err := in.Vsctl("port-to-br", "ul0"); err == nil {
		t.Errorf("a failed set-up added ul0 to bridge %s", out)
	}
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
