package nodenet_test

import (
	"net"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/test/netnstest"
)

func TestPeerRoute(t *testing.T) {
	ns := netnstest.New(t, "weir-nn").Name
	// No dummy module here: a veth stands in for the gateway.
	nsRun(t, ns, "ip", "link", "add", "gw0", "type", "veth", "peer", "name", "gw0p")
	nsRun(t, ns, "ip", "link", "set", "gw0p", "up")
	nsRun(t, ns, "ip", "addr", "add", "10.20.0.1/24", "dev", "gw0")
	nsRun(t, ns, "ip", "link", "set", "gw0", "up")
	_, cidr, _ := net.ParseCIDR("10.20.1.0/24")
	route := func() string { return strings.TrimSpace(nsRun(t, ns, "ip", "route", "show", "10.20.1.0/24")) }

	for range 2 { // idempotent
		netnstest.MustDo(t, ns, func() error { return nodenet.EnsurePeerRoute("gw0", cidr, net.ParseIP("10.20.1.1")) })
	}
	if got, want := route(), "10.20.1.0/24 via 10.20.1.1 dev gw0 proto 87 onlink"; got != want {
		t.Errorf("route = %q, want %q", got, want)
	}
	// Another next hop replaces the route.
	netnstest.MustDo(t, ns, func() error { return nodenet.EnsurePeerRoute("gw0", cidr, net.ParseIP("10.20.1.254")) })
	if got, want := route(), "10.20.1.0/24 via 10.20.1.254 dev gw0 proto 87 onlink"; got != want {
		t.Errorf("route = %q, want %q", got, want)
	}
	for range 2 { // idempotent
		netnstest.MustDo(t, ns, func() error { return nodenet.DeletePeerRoute("gw0", cidr) })
	}
	if got := route(); got != "" {
		t.Errorf("route still there after delete: %q", got)
	}
	// Without the gateway the route is gone anyway.
	netnstest.MustDo(t, ns, func() error { return nodenet.DeletePeerRoute("no-such-gw", cidr) })

	for _, tc := range []struct {
		name string
		cidr string
		gw   string
		want string
	}{
		{"gateway outside CIDR", "10.20.1.0/24", "10.20.2.1", "must be an IPv4 address in it"},
		{"IPv6", "fd00::/64", "fd00::1", "IPv4 pod CIDR is required"},
		{"no gateway interface", "10.20.1.0/24", "10.20.1.1", "gateway interface nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, c, _ := net.ParseCIDR(tc.cidr)
			gwIf := "gw0"
			if strings.Contains(tc.want, "nope") {
				gwIf = "nope"
			}
			netnstest.MustDo(t, ns, func() error {
				if err := nodenet.EnsurePeerRoute(gwIf, c, net.ParseIP(tc.gw)); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("got %v, want an error containing %q", err, tc.want)
				}
				return nil
			})
		})
	}
}
