package pipeline

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/openflow"
)

func testDualStackPeer(t *testing.T) PeerNode {
	t.Helper()
	peer := testPeer(t)
	_, cidr6, err := net.ParseCIDR("fd00:10:11::/64")
	if err != nil {
		t.Fatal(err)
	}
	peer.PodCIDRv6, peer.GatewayIPv6 = cidr6, net.ParseIP("fd00:10:11::1")
	return peer
}

// TestDualStackPeerFlowsGolden: a dual-stack peer's flows are the IPv4
// peer's, unchanged and in the same order, followed by the IPv6 route into
// the tunnel (testdata/peer-dualstack.flows); an IPv4-only peer on a
// dual-stack node gets exactly the IPv4 flows.
func TestDualStackPeerFlowsGolden(t *testing.T) {
	p, err := New(nil, dualStackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	cookie := openflow.MakeCookie(1, CategoryPeer, 3)
	flows, err := p.PeerFlows(testDualStackPeer(t), cookie)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "peer-dualstack.flows", render(flows))
	flows4, err := p.PeerFlows(testPeer(t), cookie)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := render(flows), render(flows4); !strings.HasPrefix(got, want) || len(flows) != len(flows4)+1 {
		t.Errorf("dual-stack peer flows are not the IPv4 ones plus one:\n%s", got)
	}
	golden(t, "peer.flows", render(flows4))
}

func TestDualStackPeerValidation(t *testing.T) {
	tests := []struct {
		name   string
		ipv4   bool // local pipeline without IPv6
		mutate func(*PeerNode)
		want   string
	}{
		{"local pipeline IPv4 only", true, nil, "no IPv6 configuration"},
		{"CIDR without gateway", false, func(n *PeerNode) { n.GatewayIPv6 = nil }, "set together"},
		{"gateway without CIDR", false, func(n *PeerNode) { n.PodCIDRv6 = nil }, "set together"},
		{"IPv4 as IPv6 CIDR", false, func(n *PeerNode) { n.PodCIDRv6 = cidr(t, "10.10.9.0/24") }, "not an IPv6 prefix"},
		{"gateway outside CIDR", false, func(n *PeerNode) { n.GatewayIPv6 = net.ParseIP("fd00:99::1") }, "must be an IPv6 address in"},
		{"overlaps local IPv6 CIDR", false, func(n *PeerNode) {
			n.PodCIDRv6, n.GatewayIPv6 = cidr(t, "fd00:10::/32"), net.ParseIP("fd00:10::1")
		}, "overlaps this node's fd00:10:10::/64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := dualStackConfig(t)
			if tc.ipv4 {
				cfg = testConfig(t)
			}
			p, err := New(nil, cfg)
			if err != nil {
				t.Fatal(err)
			}
			peer := testDualStackPeer(t)
			if tc.mutate != nil {
				tc.mutate(&peer)
			}
			if _, err := p.PeerFlows(peer, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestAddDualStackPeer: peers may not overlap in either family; DeletePeer
// removes the IPv6 flow with the rest.
func TestAddDualStackPeer(t *testing.T) {
	sw := &fakeSwitch{owners: map[string][]*openflow.Flow{}}
	p, err := New(sw, dualStackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.AddPeer(ctx, testDualStackPeer(t)); err != nil {
		t.Fatal(err)
	}
	if got := sw.owners["peer/node2"]; len(got) != 4 || !strings.Contains(got[3].String(), "ipv6_dst=fd00:10:11::/64") {
		t.Fatalf("peer/node2 owns %v, want the 3 IPv4 flows and the IPv6 route", render(got))
	}
	other := testDualStackPeer(t)
	other.Name = "node3"
	_, other.PodCIDR, _ = net.ParseCIDR("10.10.2.0/24")
	other.GatewayIP = net.ParseIP("10.10.2.1")
	if err := p.AddPeer(ctx, other); err == nil || !strings.Contains(err.Error(), "overlaps peer node2's fd00:10:11::/64") {
		t.Fatalf("peer overlapping in IPv6: got %v", err)
	}
	other.PodCIDRv6, other.GatewayIPv6 = nil, nil // IPv4 only next to a dual-stack peer
	if err := p.AddPeer(ctx, other); err != nil {
		t.Fatal(err)
	}
	if got := sw.owners["peer/node3"]; len(got) != 3 {
		t.Errorf("IPv4-only peer owns %d flows, want 3", len(got))
	}
	if err := p.DeletePeer(ctx, "node2"); err != nil {
		t.Fatal(err)
	}
	if _, ok := sw.owners["peer/node2"]; ok {
		t.Error("peer/node2 still owns flows")
	}
}
