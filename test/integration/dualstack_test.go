package integration

import (
	"strings"
	"syscall"
	"testing"
)

// TestDualStackPodNetworking runs the real agent with an IPv4 and an IPv6
// pod CIDR and attaches pods through libcni: each gets an address of each
// family, and pods, the gateway and the node reach each other over IPv6.
func TestDualStackPodNetworking(t *testing.T) {
	n := newDualStackNode(t, "10.21.0.0/24", "fd00:21::/64")
	a, b := n.mustAdd(t), n.mustAdd(t)
	ip6 := func(p *pod) string {
		t.Helper()
		for _, ip := range p.result.IPs {
			if ip.Address.IP.To4() == nil {
				return ip.Address.IP.String()
			}
		}
		t.Fatalf("result of %s has no IPv6 address: %+v", p.id, p.result.IPs)
		return ""
	}
	if len(a.result.IPs) != 2 || a.result.IPs[1].Gateway.String() != "fd00:21::1" {
		t.Fatalf("result IPs = %+v, want an IPv4 and an IPv6 address with gateway fd00:21::1", a.result.IPs)
	}
	var routes []string
	for _, r := range a.result.Routes {
		routes = append(routes, r.Dst.String()+" via "+r.GW.String())
	}
	if got := strings.Join(routes, ","); got != "0.0.0.0/0 via 10.21.0.1,::/0 via fd00:21::1" {
		t.Errorf("result routes = %s", got)
	}
	for _, pair := range [][2]*pod{{a, b}, {b, a}} {
		if err := ping(pair[0].ns, ip6(pair[1])); err != nil {
			t.Errorf("pod -> pod over IPv6: %v", err)
		}
		if err := ping(pair[0].ns, pair[1].ip); err != nil {
			t.Errorf("pod -> pod over IPv4: %v", err)
		}
	}
	if err := ping(a.ns, "fd00:21::1"); err != nil {
		t.Errorf("pod -> IPv6 gateway: %v", err)
	}
	if out, err := n.ovs.Exec("", "ping", "-c", "2", "-W", "1", "-i", "0.2", ip6(b)); err != nil {
		t.Errorf("node -> pod over IPv6: %v: %s", err, out)
	}
	if t.Failed() {
		t.FailNow() // iperf3 would only wait for its connect timeout
	}
	t.Run("tcp over IPv6", func(t *testing.T) {
		bps := iperf3(t, a.ns, b.ns, ip6(b), 1)
		t.Logf("TCP pod -> pod over IPv6 (same node, userspace datapath): %.0f Mbit/s", bps/1e6)
	})
	if err := n.check(t, a); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	// A restart keeps both addresses.
	n.stopAgent(t, syscall.SIGTERM)
	n.startAgent(t)
	if err := ping(a.ns, ip6(b)); err != nil {
		t.Errorf("after an agent restart: %v", err)
	}
	if err := n.check(t, b); err != nil {
		t.Errorf("CHECK after the restart: %v", err)
	}
	for _, p := range []*pod{a, b} {
		if err := n.del(t, p); err != nil {
			t.Errorf("DEL: %v", err)
		}
	}
	if ips := n.allocatedIPs(t); len(ips) != 0 {
		t.Errorf("IPs left after DEL: %v", ips)
	}
}
