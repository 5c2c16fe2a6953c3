package nodenet_test

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/test/netnstest"
)

// TestServiceReject: a "pod" namespace sends through the node's gateway-
// named interface to the Service CIDRs, which the node routes into a dummy
// veth whose peer is down (nothing answers there). Without the rules a TCP connection times
// out; with them it is refused at once (RST), UDP gets port unreachable
// (a connected socket reads ECONNREFUSED), over IPv4 and IPv6, while an
// address outside the Service CIDRs, and the Service CIDR reached through
// another interface, still time out. Removing the table restores the
// timeout.
func TestServiceReject(t *testing.T) {
	node := netnstest.New(t, "weir-nn").Name
	pod, other := netnstest.New(t, "weir-nn").Name, netnstest.New(t, "weir-nn").Name
	nsRun(t, node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	nsRun(t, node, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
	// The sink: a veth whose peer stays down, so what the node sends
	// there vanishes without an answer (no dummy device on this kernel);
	// its next hops have permanent neighbour entries, so no failed
	// resolution answers with host unreachable either.
	nsRun(t, node, "ip", "link", "add", "sink0", "type", "veth", "peer", "name", "sink1")
	nsRun(t, node, "ip", "addr", "add", "10.7.0.1/24", "dev", "sink0")
	nsRun(t, node, "ip", "-6", "addr", "add", "fd00:7::1/64", "dev", "sink0", "nodad")
	nsRun(t, node, "ip", "link", "set", "sink0", "up")
	nsRun(t, node, "ip", "neigh", "replace", "10.7.0.2", "lladdr", "02:00:00:00:07:02", "dev", "sink0", "nud", "permanent")
	nsRun(t, node, "ip", "-6", "neigh", "replace", "fd00:7::2", "lladdr", "02:00:00:00:07:02", "dev", "sink0", "nud", "permanent")
	nsRun(t, node, "ip", "route", "add", "10.96.0.0/12", "via", "10.7.0.2", "dev", "sink0", "onlink")
	nsRun(t, node, "ip", "route", "add", "10.200.0.0/16", "via", "10.7.0.2", "dev", "sink0", "onlink")
	nsRun(t, node, "ip", "-6", "route", "add", "fd00:96::/112", "via", "fd00:7::2", "dev", "sink0", "onlink")
	for i, p := range []struct{ ns, hostIf, node, ip, node6, ip6 string }{
		{pod, "gw-t", "10.9.0.1/24", "10.9.0.2/24", "fd00:9::1/64", "fd00:9::2/64"},
		{other, "eth-o", "10.8.0.1/24", "10.8.0.2/24", "fd00:8::1/64", "fd00:8::2/64"},
	} {
		mustRun(t, "ip", "link", "add", p.hostIf, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
		nsRun(t, node, "ip", "addr", "add", p.node, "dev", p.hostIf)
		nsRun(t, node, "ip", "-6", "addr", "add", p.node6, "dev", p.hostIf, "nodad")
		nsRun(t, node, "ip", "link", "set", p.hostIf, "up")
		nsRun(t, p.ns, "ip", "addr", "add", p.ip, "dev", "eth0")
		nsRun(t, p.ns, "ip", "-6", "addr", "add", p.ip6, "dev", "eth0", "nodad")
		nsRun(t, p.ns, "ip", "link", "set", "eth0", "up")
		gw, gw6 := []string{"10.9.0.1", "10.8.0.1"}[i], []string{"fd00:9::1", "fd00:8::1"}[i]
		nsRun(t, p.ns, "ip", "route", "add", "default", "via", gw)
		nsRun(t, p.ns, "ip", "-6", "route", "add", "default", "via", gw6)
	}
	const (
		timeout = "timeout"
		refused = "refused"
	)
	tcp := func(ns, addr string) string {
		var err error
		netnstest.MustDo(t, ns, func() error {
			var c net.Conn
			c, err = net.DialTimeout("tcp", addr, 700*time.Millisecond)
			if c != nil {
				c.Close()
			}
			return nil
		})
		return outcome(t, err)
	}
	udp := func(ns, addr string) string {
		var err error
		netnstest.MustDo(t, ns, func() error {
			c, derr := net.Dial("udp", addr)
			if derr != nil {
				return derr
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(700 * time.Millisecond))
			if _, err = c.Write([]byte("x")); err == nil {
				_, err = c.Read(make([]byte, 16))
			}
			return nil
		})
		return outcome(t, err)
	}
	cases := []struct {
		name, ns, addr string
		udp            bool
		withRule       string
	}{
		{"TCP to the IPv4 Service CIDR", pod, "10.96.0.10:80", false, refused},
		{"UDP to the IPv4 Service CIDR", pod, "10.96.0.10:53", true, refused},
		{"TCP to the IPv6 Service CIDR", pod, "[fd00:96::10]:80", false, refused},
		{"UDP to the IPv6 Service CIDR", pod, "[fd00:96::10]:53", true, refused},
		{"TCP outside the Service CIDRs", pod, "10.200.0.10:80", false, timeout},
		{"TCP from another interface", other, "10.96.0.10:80", false, timeout},
	}
	check := func(step string, withRule bool) {
		for _, c := range cases {
			want := timeout
			if withRule {
				want = c.withRule
			}
			got := ""
			if c.udp {
				got = udp(c.ns, c.addr)
			} else {
				got = tcp(c.ns, c.addr)
			}
			if got != want {
				t.Errorf("%s: %s: %s, want %s", step, c.name, got, want)
			}
		}
	}
	check("no rules", false)
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd00:96::/112")}
	for _, step := range []string{"installed", "installed again"} {
		netnstest.MustDo(t, node, func() error { return nodenet.InstallServiceReject(t.Context(), "gw-t", cidrs) })
		check(step, true)
	}
	netnstest.MustDo(t, node, func() error { return nodenet.RemoveServiceReject(t.Context()) })
	check("removed", false)
	netnstest.MustDo(t, node, func() error { return nodenet.RemoveServiceReject(t.Context()) })

	if err := nodenet.InstallServiceReject(t.Context(), "", cidrs); err == nil {
		t.Error("no gateway name accepted")
	}
}

// outcome classifies a dial or read error: refused (RST or port
// unreachable), timeout, or a test failure for anything else.
func outcome(t *testing.T, err error) string {
	t.Helper()
	var ne net.Error
	switch {
	case err == nil:
		t.Errorf("something answered")
		return "answered"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	t.Errorf("unexpected error: %v", err)
	return err.Error()
}
