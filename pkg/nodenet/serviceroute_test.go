package nodenet_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/test/netnstest"
)

// TestServiceRoutes: the Service CIDRs of both families are routed into
// the gateway through the virtual next hops with the gateway's addresses
// as source, the next hops pinned to the gateway MAC; the kernel then
// picks the gateway address as the source of a connection to a ClusterIP
// (ip route get); idempotent; a changed CIDR replaces the old route; the
// peer route listing (the agent's garbage collection) does not see them;
// removal leaves no route and no neighbour entry; refusals.
func TestServiceRoutes(t *testing.T) {
	ns := netnstest.New(t, "weir-nn").Name
	nsRun(t, ns, "ip", "link", "add", "gw0", "type", "veth", "peer", "name", "gw0p")
	nsRun(t, ns, "ip", "link", "set", "gw0p", "up")
	nsRun(t, ns, "ip", "link", "set", "gw0", "address", "02:00:0a:14:00:01")
	nsRun(t, ns, "ip", "addr", "add", "10.20.0.1/24", "dev", "gw0")
	nsRun(t, ns, "ip", "-6", "addr", "add", "fd00:20::1/64", "dev", "gw0", "nodad")
	nsRun(t, ns, "ip", "link", "set", "gw0", "up")
	// Another address the kernel would otherwise prefer as source.
	nsRun(t, ns, "ip", "link", "add", "eth9", "type", "veth", "peer", "name", "eth9p")
	nsRun(t, ns, "ip", "addr", "add", "192.168.9.10/24", "dev", "eth9")
	nsRun(t, ns, "ip", "link", "set", "eth9", "up")
	nsRun(t, ns, "ip", "link", "set", "eth9p", "up")
	nsRun(t, ns, "ip", "route", "add", "default", "via", "192.168.9.1")
	mac, _ := net.ParseMAC("02:00:0a:14:00:01")
	routes := []nodenet.ServiceRoute{
		{CIDR: netip.MustParsePrefix("10.96.0.0/12"), Src: netip.MustParseAddr("10.20.0.1")},
		{CIDR: netip.MustParsePrefix("fd00:96::/112"), Src: netip.MustParseAddr("fd00:20::1")},
	}
	show := func(args ...string) string {
		return strings.TrimSpace(nsRun(t, ns, append([]string{"ip"}, args...)...))
	}
	for range 2 {
		netnstest.MustDo(t, ns, func() error { return nodenet.EnsureServiceRoutes("gw0", routes, mac) })
	}
	for _, c := range []struct{ got, want string }{
		{show("route", "show", "10.96.0.0/12"), "10.96.0.0/12 via 169.254.0.252 dev gw0 proto 88 src 10.20.0.1 onlink"},
		{show("-6", "route", "show", "fd00:96::/112"), "fd00:96::/112 via fc00::aabb:ccdd:eefe dev gw0 proto 88 src fd00:20::1 metric 1024 onlink pref medium"},
		{show("neigh", "show", "169.254.0.252"), "169.254.0.252 dev gw0 lladdr 02:00:0a:14:00:01 PERMANENT"},
		{show("-6", "neigh", "show", "fc00::aabb:ccdd:eefe"), "fc00::aabb:ccdd:eefe dev gw0 lladdr 02:00:0a:14:00:01 PERMANENT"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	// The kernel's choice for a connection to a ClusterIP.
	if got := show("route", "get", "10.96.0.10"); !strings.Contains(got, "via 169.254.0.252 dev gw0 src 10.20.0.1") {
		t.Errorf("route get 10.96.0.10 = %q, want via 169.254.0.252 dev gw0 src 10.20.0.1", got)
	}
	if got := show("-6", "route", "get", "fd00:96::10"); !strings.Contains(got, "via fc00::aabb:ccdd:eefe dev gw0") || !strings.Contains(got, "src fd00:20::1") {
		t.Errorf("route get fd00:96::10 = %q, want via fc00::aabb:ccdd:eefe dev gw0 src fd00:20::1", got)
	}
	// Not peer routes: the agent's stale-peer garbage collection must
	// not see them.
	netnstest.MustDo(t, ns, func() error {
		v4, err := nodenet.ListPeerRoutes("gw0")
		if err != nil {
			return err
		}
		v6, err := nodenet.ListPeerRoutesV6("gw0")
		if err != nil {
			return err
		}
		if len(v4)+len(v6) != 0 {
			t.Errorf("peer routes listed %v %v, want none", v4, v6)
		}
		return nil
	})
	// A changed IPv4 CIDR replaces the old route; the IPv6 one, no longer
	// given, goes with its neighbour entry.
	routes2 := []nodenet.ServiceRoute{{CIDR: netip.MustParsePrefix("10.100.0.0/16"), Src: netip.MustParseAddr("10.20.0.1")}}
	netnstest.MustDo(t, ns, func() error { return nodenet.EnsureServiceRoutes("gw0", routes2, mac) })
	if got, want := show("route", "show", "proto", "88")+"|"+show("route", "show", "10.100.0.0/16"), "10.100.0.0/16 via 169.254.0.252 dev gw0 src 10.20.0.1 onlink|10.100.0.0/16 via 169.254.0.252 dev gw0 proto 88 src 10.20.0.1 onlink"; got != want {
		t.Errorf("after the change: %q, want %q", got, want)
	}
	if got := show("-6", "route", "show", "proto", "88") + show("-6", "neigh", "show", "fc00::aabb:ccdd:eefe"); got != "" {
		t.Errorf("IPv6 route or neighbour left: %q", got)
	}
	netnstest.MustDo(t, ns, func() error {
		got, err := nodenet.ListServiceRoutes("gw0", netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(got) != 1 || got[0] != netip.MustParsePrefix("10.100.0.0/16") {
			t.Errorf("ListServiceRoutes = %v, want [10.100.0.0/16]", got)
		}
		return nil
	})
	for range 2 {
		netnstest.MustDo(t, ns, func() error { return nodenet.RemoveServiceRoutes("gw0") })
	}
	if got := show("route", "show", "proto", "88") + show("neigh", "show", "169.254.0.252"); got != "" {
		t.Errorf("left after removal: %q", got)
	}
	netnstest.MustDo(t, ns, func() error { return nodenet.RemoveServiceRoutes("no-such-gw") })

	for _, tc := range []struct {
		name string
		r    nodenet.ServiceRoute
		gw   string
		want string
	}{
		{"mixed family", nodenet.ServiceRoute{CIDR: netip.MustParsePrefix("10.96.0.0/12"), Src: netip.MustParseAddr("fd00:20::1")}, "gw0", "other family"},
		{"no source", nodenet.ServiceRoute{CIDR: netip.MustParsePrefix("10.96.0.0/12")}, "gw0", "both are required"},
		{"mapped", nodenet.ServiceRoute{CIDR: netip.MustParsePrefix("::ffff:10.96.0.0/108"), Src: netip.MustParseAddr("::ffff:10.20.0.1")}, "gw0", "IPv4-mapped"},
		{"no gateway", routes[0], "nope", "gateway interface nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			netnstest.MustDo(t, ns, func() error {
				if err := nodenet.EnsureServiceRoutes(tc.gw, []nodenet.ServiceRoute{tc.r}, mac); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("got %v, want an error containing %q", err, tc.want)
				}
				return nil
			})
		})
	}
}
