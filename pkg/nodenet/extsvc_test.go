package nodenet_test

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/test/netnstest"
)

// TestExternalServices: the nftables table of InstallExternalServices in a
// real kernel (a netns): the NodePort DNATs per family and protocol (in
// prerouting and, for the node's own connections, output), the SNATs of
// the Cluster-policy frontends (and of the node's own connections to
// Local ones), the source ranges of LB frontends (masked, of the
// frontend's family only; none left drops every external client), replaced as a whole on the
// next install, removed twice; refusals. (The packets' way through these
// rules into OVS is pkg/pipeline's TestProxyNodePortFromOutside.)
func TestExternalServices(t *testing.T) {
	ns := netnstest.New(t, "weir-nn").Name
	es := nodenet.ExternalServices{GatewayName: "gw0",
		GatewayIP: netip.MustParseAddr("10.20.0.1"), GatewayIPv6: netip.MustParseAddr("fd00:20::1"),
		NodePortIP: nodenet.ServiceNextHopIPv4, NodePortIPv6: nodenet.ServiceNextHopIPv6,
		Rules: []nodenet.ExternalServiceRule{
			{Protocol: "tcp", Port: 30080, SNAT: true},
			{Protocol: "tcp", Port: 30082, SNAT: true},
			{Protocol: "udp", Port: 30053, SNAT: true},
			{Protocol: "tcp", Port: 30081},
			{IPv6: true, Protocol: "tcp", Port: 30080, SNAT: true},
			{IP: netip.MustParseAddr("198.51.100.7"), Protocol: "tcp", Port: 80, SNAT: true},
			{IP: netip.MustParseAddr("198.51.100.8"), Protocol: "tcp", Port: 80},
			{IP: netip.MustParseAddr("2001:db8::7"), Protocol: "sctp", Port: 80, SNAT: true},
		},
		SourceRanges: []nodenet.SourceRangeRule{
			{IP: netip.MustParseAddr("203.0.113.9"), Protocol: "tcp", Port: 80,
				Allowed: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.18.0.1/16"), netip.MustParsePrefix("2001:db8::/32")}},
			{IP: netip.MustParseAddr("203.0.113.10"), Protocol: "udp", Port: 53, Allowed: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}},
		}}
	list := func() string {
		out, _ := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "weir_extsvc").CombinedOutput()
		return string(out)
	}
	for range 2 {
		netnstest.MustDo(t, ns, func() error { return nodenet.InstallExternalServices(context.Background(), es) })
	}
	got := list()
	for _, want := range []string{
		`iifname != { "lo", "gw0" } meta nfproto ipv4 fib daddr type local tcp dport { 30080, 30082 } dnat ip to 169.254.0.252`,
		`iifname != { "lo", "gw0" } meta nfproto ipv4 fib daddr type local tcp dport 30081 dnat ip to 169.254.0.252`,
		`iifname != { "lo", "gw0" } meta nfproto ipv4 fib daddr type local udp dport 30053 dnat ip to 169.254.0.252`,
		`iifname != { "lo", "gw0" } meta nfproto ipv6 fib daddr type local tcp dport 30080 dnat ip6 to fc00::aabb:ccdd:eefe`,
		`iifname != "gw0" oifname "gw0" ip daddr 169.254.0.252 tcp dport { 30080, 30082 } snat ip to 10.20.0.1`,
		`type filter hook prerouting priority mangle; policy accept;`,
		`iifname != { "lo", "gw0" } ip daddr 203.0.113.9 tcp dport 80 ip saddr != { 192.0.2.0/24, 198.18.0.0/16 } drop`,
		`iifname != { "lo", "gw0" } ip daddr 203.0.113.10 udp dport 53 drop`,
		`fib daddr type local ip daddr != 127.0.0.0/8 tcp dport { 30080, 30082 } dnat ip to 169.254.0.252`,
		`fib daddr type local ip6 daddr != ::1 tcp dport 30080 dnat ip6 to fc00::aabb:ccdd:eefe`,
		`oifname "gw0" ip daddr 169.254.0.252 fib saddr type local ip saddr != 10.20.0.1 tcp dport 30081 snat ip to 10.20.0.1`,
		`iifname != "gw0" oifname "gw0" ip daddr 169.254.0.252 udp dport 30053 snat ip to 10.20.0.1`,
		`iifname != "gw0" oifname "gw0" ip6 daddr fc00::aabb:ccdd:eefe tcp dport 30080 snat ip6 to fd00:20::1`,
		`iifname != "gw0" oifname "gw0" ip daddr . meta l4proto . th dport { 198.51.100.7 . tcp . 80 } snat ip to 10.20.0.1`,
		`iifname != "gw0" oifname "gw0" ip6 daddr . meta l4proto . th dport { 2001:db8::7 . sctp . 80 } snat ip6 to fd00:20::1`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	// Policy Local: no SNAT of external clients (30081, 198.51.100.8),
	// only of the node's own connections from another local address.
	if strings.Contains(got, "iifname != \"gw0\" oifname \"gw0\" ip daddr 169.254.0.252 tcp dport 30081") || strings.Contains(got, "198.51.100.8") {
		t.Errorf("a Local-policy frontend is SNATed:\n%s", got)
	}
	if n := strings.Count(got, "snat"); n != 6 {
		t.Errorf("%d SNAT rules, want 6:\n%s", n, got)
	}
	// The next install replaces everything.
	es.Rules = es.Rules[:1]
	netnstest.MustDo(t, ns, func() error { return nodenet.InstallExternalServices(context.Background(), es) })
	if got := list(); strings.Contains(got, "30053") || strings.Contains(got, "198.51.100.7") || !strings.Contains(got, "30080") {
		t.Errorf("after the second install:\n%s", got)
	}
	for range 2 {
		netnstest.MustDo(t, ns, func() error { return nodenet.RemoveExternalServices(context.Background()) })
	}
	if got := list(); strings.Contains(got, "table inet weir_extsvc {") {
		t.Errorf("table left after removal:\n%s", got)
	}

	for _, tc := range []struct {
		name string
		es   nodenet.ExternalServices
		want string
	}{
		{"no gateway", nodenet.ExternalServices{}, "gateway name is required"},
		{"protocol", nodenet.ExternalServices{GatewayName: "gw0", Rules: []nodenet.ExternalServiceRule{{Protocol: "icmp", Port: 1}}}, "not tcp, udp or sctp"},
		{"no port", nodenet.ExternalServices{GatewayName: "gw0", Rules: []nodenet.ExternalServiceRule{{Protocol: "tcp"}}}, "without a port"},
		{"source range protocol", nodenet.ExternalServices{GatewayName: "gw0", SourceRanges: []nodenet.SourceRangeRule{{IP: netip.MustParseAddr("203.0.113.9"), Protocol: "gre", Port: 1}}}, "not tcp, udp or sctp"},
		{"source range port", nodenet.ExternalServices{GatewayName: "gw0", SourceRanges: []nodenet.SourceRangeRule{{IP: netip.MustParseAddr("203.0.113.9"), Protocol: "tcp"}}}, "need a plain address and a port"},
		{"no SNAT source", nodenet.ExternalServices{GatewayName: "gw0", NodePortIP: nodenet.ServiceNextHopIPv4,
			Rules: []nodenet.ExternalServiceRule{{Protocol: "tcp", Port: 30080, SNAT: true}}}, "needs the gateway's IPv4 address"},
		{"no NodePort address", nodenet.ExternalServices{GatewayName: "gw0", GatewayIPv6: netip.MustParseAddr("fd00:20::1"),
			Rules: []nodenet.ExternalServiceRule{{IPv6: true, Protocol: "tcp", Port: 30080}}}, "needs the IPv6 NodePort address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			netnstest.MustDo(t, ns, func() error {
				if err := nodenet.InstallExternalServices(context.Background(), tc.es); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("got %v, want an error containing %q", err, tc.want)
				}
				return nil
			})
		})
	}
}
