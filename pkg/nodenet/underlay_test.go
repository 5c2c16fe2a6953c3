package nodenet_test

import (
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/test/netnstest"
	"github.com/weirnet/weir/test/testctx"
)

// The underlay's IPv6 test addresses: the node's, the remote namespace's
// (both on ul0 of underlayNode), and the gateway of the IPv6 default route
// (nobody answers for it; only the route matters).
const (
	underlayNodeIPv6   = "fd00:192:0:2::1"
	underlayRemoteIPv6 = "fd00:192:0:2::2"
	underlayGwIPv6     = "fd00:192:0:2::fe"
)

// addRemoteIPv6 gives the remote namespace of underlayNode its IPv6
// address (nodad: usable at once).
func addRemoteIPv6(t *testing.T, remote string) {
	t.Helper()
	nsRun(t, remote, "ip", "-6", "addr", "add", underlayRemoteIPv6+"/64", "dev", "ul0", "nodad")
}

// pingNoDup pings dst from namespace ns and fails on duplicate answers
// (both the NIC and the bridge answering); ping itself fails the test when
// no answer comes.
func pingNoDup(t *testing.T, ns string, args ...string) {
	t.Helper()
	out := nsRun(t, ns, append([]string{"ping", "-n", "-c", "2", "-i", "0.2", "-W", "1"}, args...)...)
	if strings.Contains(out, "DUP!") {
		t.Errorf("duplicate answers: both the NIC and the bridge answer:\n%s", out)
	}
}

// TestUnderlaySetupTeardown moves a node's underlay addresses and routes
// onto br-phy and back, each step twice, and checks the node stays
// reachable from a remote namespace with exactly one answer per ping (the
// NIC itself must no longer answer). IPv4-only: only IPv4 moves (the NIC's
// link-local IPv6 address stays and nothing IPv6 is recorded). Dual-stack:
// the global IPv6 address and the IPv6 gateway routes move too, added
// without DAD, and IPv6 works both ways over br-phy; a route learnt from a
// router advertisement (proto ra) stays on the NIC; br-phy comes up
// without DAD, its link-local address usable at once. IPv6-only (a NIC
// without any IPv4 address, its default route IPv6): the IPv6 part alone
// moves, Underlay.Addrs is empty and the record holds no IPv4 keys.
func TestUnderlaySetupTeardown(t *testing.T) {
	for _, tc := range []struct {
		name   string
		v4, v6 bool
	}{
		{name: "IPv4", v4: true},
		{name: "dual-stack", v4: true, v6: true},
		{name: "IPv6-only", v6: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, db, remote := underlayNode(t)
			node := in.NetNS

			if tc.v4 {
				nsRun(t, node, "ip", "addr", "add", "192.0.2.1/24", "dev", "ul0")
			}
			if tc.v6 {
				nsRun(t, node, "ip", "-6", "addr", "add", underlayNodeIPv6+"/64", "dev", "ul0", "nodad")
				addRemoteIPv6(t, remote)
			}
			nsRun(t, node, "ip", "link", "set", "ul0", "up")
			if tc.v4 {
				nsRun(t, node, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.254")
			}
			if tc.v6 {
				nsRun(t, node, "ip", "-6", "route", "add", "default", "via", underlayGwIPv6)
				nsRun(t, node, "ip", "-6", "route", "add", "2001:db8:99::/48", "via", "fe80::1", "dev", "ul0")
				nsRun(t, node, "ip", "-6", "route", "add", "2001:db8:77::/48", "via", "fe80::1", "dev", "ul0", "proto", "ra")
			}
			nicMAC := strings.Fields(nsRun(t, node, "cat", "/sys/class/net/ul0/address"))[0]

			cfg := nodenet.UnderlayConfig{OVSDB: db, NIC: "ul0"}
			ping := func(t *testing.T) {
				t.Helper()
				if tc.v4 {
					pingNoDup(t, remote, "192.0.2.1")
				}
				if tc.v6 {
					pingNoDup(t, remote, "-6", underlayNodeIPv6)
					pingNoDup(t, node, "-6", underlayRemoteIPv6)
				}
			}
			addrs := func(family, dev, scope string) string {
				return strings.TrimSpace(nsRun(t, node, "ip", family, "-o", "addr", "show", "dev", dev, "scope", scope))
			}
			route6 := func(dst string) string {
				return strings.TrimSpace(nsRun(t, node, "ip", "-6", "route", "show", dst))
			}

			for i := range 2 {
				var u *nodenet.Underlay
				netnstest.MustDo(t, node, func() (err error) {
					u, err = nodenet.SetupUnderlay(testctx.Timeout(t, callTimeout), cfg)
					return err
				})
				if u.MTU != 1500 || u.Bridge != "br-phy" {
					t.Fatalf("setup #%d: %+v", i+1, u)
				}
				rec := in.MustVsctl(t, "get", "Port", "ul0", "external_ids")
				if tc.v4 {
					if len(u.Addrs) != 1 || u.Addrs[0].String() != "192.0.2.1/24" {
						t.Fatalf("setup #%d: IPv4 addresses %v", i+1, u.Addrs)
					}
					if got := addrs("-4", "br-phy", "global"); !strings.Contains(got, "192.0.2.1/24") {
						t.Errorf("br-phy lacks the address: %q", got)
					}
					if got := nsRun(t, node, "ip", "route", "show", "198.51.100.0/24"); !strings.Contains(got, "dev br-phy") {
						t.Errorf("route not moved to br-phy: %q", got)
					}
				} else {
					if len(u.Addrs) != 0 || strings.Contains(rec, nodenet.KeyUnderlayAddrs+"=") || strings.Contains(rec, nodenet.KeyUnderlayRoutes+"=") {
						t.Errorf("IPv6-only NIC: IPv4 addresses %v, record %s", u.Addrs, rec)
					}
					if got := addrs("-4", "br-phy", "global"); got != "" {
						t.Errorf("br-phy has IPv4 addresses: %s", got)
					}
				}
				if got := addrs("-4", "ul0", "global"); got != "" {
					t.Errorf("ul0 keeps an address: %s", got)
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
				if got := addrs("-6", "ul0", "link"); !strings.Contains(got, "fe80::") {
					t.Errorf("ul0 lost its link-local address: %q", got)
				}
				// On an IPv6 underlay br-phy comes up without DAD, so its
				// link-local address (the source of WarmTunnelNeighbor's
				// solicitations) is usable at once; IPv4-only, untouched.
				wantDAD := map[bool]string{false: "1", true: "0"}[tc.v6]
				if got := strings.TrimSpace(nsRun(t, node, "sysctl", "-n", "net.ipv6.conf.br-phy.accept_dad")); got != wantDAD {
					t.Errorf("br-phy accept_dad=%s, want %s", got, wantDAD)
				}
				if got := addrs("-6", "br-phy", "link"); tc.v6 && (!strings.Contains(got, "fe80::") || strings.Contains(got, "tentative")) {
					t.Errorf("br-phy's link-local address right after set-up: %q", got)
				}
				if !tc.v6 {
					if len(u.Addrs6) != 0 || strings.Contains(rec, nodenet.KeyUnderlayAddrs6) || strings.Contains(rec, nodenet.KeyUnderlayRoutes6) {
						t.Errorf("IPv4-only NIC: IPv6 addresses %v, record %s", u.Addrs6, rec)
					}
				} else {
					if len(u.Addrs6) != 1 || u.Addrs6[0].String() != underlayNodeIPv6+"/64" {
						t.Errorf("setup #%d: IPv6 addresses %v", i+1, u.Addrs6)
					}
					if got := addrs("-6", "ul0", "global"); got != "" {
						t.Errorf("ul0 keeps an IPv6 address: %s", got)
					}
					// nodad, and so never tentative, not even right after the move.
					if got := addrs("-6", "br-phy", "global"); !strings.Contains(got, underlayNodeIPv6+"/64") ||
						!strings.Contains(got, "nodad") || strings.Contains(got, "tentative") {
						t.Errorf("br-phy's IPv6 address: %q", got)
					}
					if got := route6("default"); !strings.Contains(got, "via "+underlayGwIPv6+" dev br-phy") || strings.Contains(got, "ul0") {
						t.Errorf("IPv6 default route not moved to br-phy: %q", got)
					}
					if got := route6("2001:db8:99::/48"); !strings.Contains(got, "via fe80::1 dev br-phy") || strings.Contains(got, "ul0") {
						t.Errorf("IPv6 route through a link-local gateway not moved: %q", got)
					}
					if got := route6("2001:db8:77::/48"); !strings.Contains(got, "dev ul0 proto ra") || strings.Contains(got, "br-phy") {
						t.Errorf("the proto ra route must stay on ul0: %q", got)
					}
					for _, want := range []string{nodenet.KeyUnderlayAddrs6 + `="` + underlayNodeIPv6 + `/64"`, underlayGwIPv6} {
						if !strings.Contains(rec, want) {
							t.Errorf("OVSDB record lacks %s: %s", want, rec)
						}
					}
					if strings.Contains(rec, "2001:db8:77::") {
						t.Errorf("OVSDB record holds the proto ra route: %s", rec)
					}
				}
				ping(t)
				if got := nsRun(t, node, "nft", "list", "table", "netdev", "weir_underlay"); !strings.Contains(got, `device "ul0"`) ||
					!strings.Contains(got, "policy drop") {
					t.Errorf("ingress drop missing:\n%s", got)
				}
			}

			for range 2 {
				netnstest.MustDo(t, node, func() error { return nodenet.TeardownUnderlay(testctx.Timeout(t, callTimeout), cfg) })
				if tc.v4 {
					if got := addrs("-4", "ul0", "global"); !strings.Contains(got, "192.0.2.1/24") {
						t.Errorf("ul0 did not get its address back: %q", got)
					}
					if got := nsRun(t, node, "ip", "route", "show", "198.51.100.0/24"); !strings.Contains(got, "via 192.0.2.254 dev ul0") {
						t.Errorf("route not moved back to ul0: %q", got)
					}
				} else if got := addrs("-4", "ul0", "global"); got != "" {
					t.Errorf("ul0 got an IPv4 address it never had: %q", got)
				}
				if tc.v6 {
					if got := addrs("-6", "ul0", "global"); !strings.Contains(got, underlayNodeIPv6+"/64") || strings.Contains(got, "tentative") {
						t.Errorf("ul0 did not get its IPv6 address back: %q", got)
					}
					if got := route6("default"); !strings.Contains(got, "via "+underlayGwIPv6+" dev ul0") {
						t.Errorf("IPv6 default route not moved back to ul0: %q", got)
					}
					if got := route6("2001:db8:99::/48"); !strings.Contains(got, "via fe80::1 dev ul0") {
						t.Errorf("IPv6 route not moved back to ul0: %q", got)
					}
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
			for _, bad := range []struct {
				cfg  nodenet.UnderlayConfig
				want string
			}{
				{nodenet.UnderlayConfig{NIC: "ul0"}, "OVSDB client is required"},
				{nodenet.UnderlayConfig{OVSDB: db}, "NIC is required"},
				{nodenet.UnderlayConfig{OVSDB: db, NIC: "br-phy"}, "both named"},
				{nodenet.UnderlayConfig{OVSDB: db, NIC: "nope0"}, "underlay NIC nope0"},
			} {
				netnstest.MustDo(t, node, func() error {
					if _, err := nodenet.SetupUnderlay(testctx.Timeout(t, callTimeout), bad.cfg); err == nil || !strings.Contains(err.Error(), bad.want) {
						t.Errorf("SetupUnderlay(%+v): got %v, want an error containing %q", bad.cfg, err, bad.want)
					}
					return nil
				})
			}
		})
	}
}
