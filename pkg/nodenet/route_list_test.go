package nodenet_test

import (
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/test/netnstest"
)

// TestListPeerRoutes checks on a real kernel (a scratch netns) that
// peer routes are installed with RouteProtocolWeir, that ListPeerRoutes
// finds them and the legacy unmarked routes of older releases, and only
// those (not routes others put on the gateway), and that DeletePeerRoute
// removes marked and legacy routes alike.
func TestListPeerRoutes(t *testing.T) {
	ns := netnstest.New(t, "weir-nn").Name
	nsRun(t, ns, "ip", "link", "add", "gw0", "type", "veth", "peer", "name", "gw0p")
	nsRun(t, ns, "ip", "link", "add", "other0", "type", "veth", "peer", "name", "other0p")
	for _, l := range []string{"gw0", "gw0p", "other0", "other0p"} {
		nsRun(t, ns, "ip", "link", "set", l, "up")
	}
	nsRun(t, ns, "ip", "addr", "add", "10.72.0.1/24", "dev", "gw0")
	nsRun(t, ns, "ip", "addr", "add", "192.0.2.1/24", "dev", "other0")
	// Legacy Weir route (no protocol: the kernel records boot).
	nsRun(t, ns, "ip", "route", "add", "10.72.5.0/24", "via", "10.72.5.1", "dev", "gw0", "onlink")
	// Not Weir's: another protocol, another next hop, another device.
	nsRun(t, ns, "ip", "route", "add", "10.72.6.0/24", "via", "10.72.6.1", "dev", "gw0", "onlink", "proto", "static")
	nsRun(t, ns, "ip", "route", "add", "10.72.7.0/24", "via", "10.72.7.9", "dev", "gw0", "onlink")
	nsRun(t, ns, "ip", "route", "add", "10.72.8.0/24", "via", "10.72.8.1", "dev", "other0", "onlink")

	_, marked, _ := net.ParseCIDR("10.72.1.0/24")
	list := func() []string {
		var got []string
		netnstest.MustDo(t, ns, func() error {
			dsts, err := nodenet.ListPeerRoutes("gw0")
			for _, d := range dsts {
				got = append(got, d.Dst.String()+" via "+d.Via.String())
			}
			return err
		})
		slices.Sort(got)
		return got
	}
	netnstest.MustDo(t, ns, func() error { return nodenet.EnsurePeerRoute("gw0", marked, net.ParseIP("10.72.1.1")) })
	if got := nsRun(t, ns, "ip", "route", "show", "10.72.1.0/24"); !strings.Contains(got, "proto 87") {
		t.Errorf("peer route %q has no proto 87", strings.TrimSpace(got))
	}
	if got, want := list(), []string{"10.72.1.0/24 via 10.72.1.1", "10.72.5.0/24 via 10.72.5.1"}; !slices.Equal(got, want) {
		t.Fatalf("ListPeerRoutes = %v, want %v", got, want)
	}
	// EnsurePeerRoute over a legacy route marks it.
	_, legacy, _ := net.ParseCIDR("10.72.5.0/24")
	netnstest.MustDo(t, ns, func() error { return nodenet.EnsurePeerRoute("gw0", legacy, net.ParseIP("10.72.5.1")) })
	if got := nsRun(t, ns, "ip", "route", "show", "10.72.5.0/24"); !strings.Contains(got, "proto 87") ||
		strings.Count(strings.TrimSpace(got), "\n") != 0 {
		t.Errorf("legacy route after EnsurePeerRoute: %q, want one route with proto 87", got)
	}
	for _, c := range []*net.IPNet{marked, legacy} {
		for range 2 { // idempotent
			netnstest.MustDo(t, ns, func() error { return nodenet.DeletePeerRoute("gw0", c) })
		}
	}
	if got := list(); len(got) != 0 {
		t.Fatalf("ListPeerRoutes after the deletes = %v, want none", got)
	}
	for _, dst := range []string{"10.72.6.0/24", "10.72.7.0/24", "10.72.8.0/24"} {
		if got := nsRun(t, ns, "ip", "route", "show", dst); strings.TrimSpace(got) == "" {
			t.Errorf("the route to %s, not Weir's, is gone", dst)
		}
	}
	netnstest.MustDo(t, ns, func() error {
		dsts, err := nodenet.ListPeerRoutes("no-such-gw")
		if len(dsts) != 0 {
			t.Errorf("routes of a missing gateway: %v", dsts)
		}
		return err
	})
}
