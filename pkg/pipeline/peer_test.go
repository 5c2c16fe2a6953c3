package pipeline

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/openflow"
)

func testPeer(t *testing.T) PeerNode {
	t.Helper()
	_, cidr, err := net.ParseCIDR("10.10.1.0/24")
	if err != nil {
		t.Fatal(err)
	}
	return PeerNode{Name: "node2", PodCIDR: cidr, NodeIP: net.ParseIP("192.0.2.2"), GatewayIP: net.ParseIP("10.10.1.1")}
}

// TestPeerFlowsGolden renders a peer's flows in ovs-ofctl syntax and
// compares them with the reviewed text in testdata/peer.flows.
func TestPeerFlowsGolden(t *testing.T) {
	p, err := New(nil, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	flows, err := p.PeerFlows(testPeer(t), openflow.MakeCookie(1, CategoryPeer, 3))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "peer.flows", render(flows))
}

func TestPeerValidation(t *testing.T) {
	tests := []struct {
		name   string
		cfg    func(*Config)
		mutate func(*PeerNode)
		want   string
	}{
		{"no tunnel port", func(c *Config) { c.TunnelOFPort = 0 }, nil, "no tunnel port"},
		{"no name", nil, func(n *PeerNode) { n.Name = "" }, "name is required"},
		{"no pod CIDR", nil, func(n *PeerNode) { n.PodCIDR, n.GatewayIP = nil, nil }, "a pod CIDR of at least one family is required"},
		{"gateway IP without pod CIDR", nil, func(n *PeerNode) {
			n.PodCIDR, n.PodCIDRv6, n.GatewayIPv6 = nil, cidr(t, "fd00:10:11::/64"), net.ParseIP("fd00:10:11::1")
		}, "needs an IPv4 pod CIDR"},
		{"pod CIDR without gateway IP", nil, func(n *PeerNode) { n.GatewayIP = nil }, "needs the peer's gateway IP"},
		{"IPv6 pod CIDR", nil, func(n *PeerNode) { n.PodCIDR = cidr(t, "fd00::/64") }, "is not an IPv4 prefix"},
		{"no node IP", nil, func(n *PeerNode) { n.NodeIP = nil }, "node IP is required"},
		{"gateway outside CIDR", nil, func(n *PeerNode) { n.GatewayIP = net.ParseIP("10.10.9.1") }, "must be an IPv4 address in pod CIDR"},
		{"overlaps local CIDR", nil, func(n *PeerNode) {
			n.PodCIDR, n.GatewayIP = cidr(t, "10.10.0.0/16"), net.ParseIP("10.10.0.1")
		}, "overlaps this node's"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			p, err := New(nil, cfg)
			if err != nil {
				t.Fatal(err)
			}
			peer := testPeer(t)
			if tc.mutate != nil {
				tc.mutate(&peer)
			}
			if _, err := p.PeerFlows(peer, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// fakeSwitch records Sync and Uninstall calls per owner.
type fakeSwitch struct{ owners map[string][]*openflow.Flow }

func (f *fakeSwitch) Sync(_ context.Context, owner string, flows ...*openflow.Flow) error {
	f.owners[owner] = flows
	return nil
}

func (f *fakeSwitch) Uninstall(_ context.Context, owner string) error {
	delete(f.owners, owner)
	return nil
}

func (f *fakeSwitch) DumpFlows(context.Context, openflow.FlowFilter) ([]openflow.FlowStats, error) {
	return nil, nil
}

func TestAddDeletePeer(t *testing.T) {
	sw := &fakeSwitch{owners: map[string][]*openflow.Flow{}}
	p, err := New(sw, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	peer := testPeer(t)
	if err := p.AddPeer(ctx, peer); err != nil {
		t.Fatal(err)
	}
	first := sw.owners["peer/node2"]
	if len(first) != 3 {
		t.Fatalf("peer/node2 owns %d flows, want 3 (ARP, pod CIDR route, node IP replies)", len(first))
	}
	cookie := openflow.Cookie(first[0].Cookie)
	if cookie.Category() != CategoryPeer || cookie.Round() != 1 {
		t.Errorf("peer cookie %v, want category %d round 1", cookie, CategoryPeer)
	}

	// An update (new node IP) keeps the cookie.
	peer.NodeIP = net.ParseIP("192.0.2.22")
	if err := p.AddPeer(ctx, peer); err != nil {
		t.Fatal(err)
	}
	if got := sw.owners["peer/node2"]; got[0].Cookie != uint64(cookie) || !strings.Contains(got[1].String(), "192.0.2.22->tun_dst") {
		t.Errorf("after update: %v", render(got))
	}

	// Another peer may not overlap it; a distinct one gets its own cookie.
	other := testPeer(t)
	other.Name = "node3"
	if err := p.AddPeer(ctx, other); err == nil || !strings.Contains(err.Error(), "overlaps peer node2") {
		t.Fatalf("overlapping peer: got %v", err)
	}
	_, other.PodCIDR, _ = net.ParseCIDR("10.10.2.0/24")
	other.GatewayIP = net.ParseIP("10.10.2.1")
	if err := p.AddPeer(ctx, other); err != nil {
		t.Fatal(err)
	}
	if sw.owners["peer/node3"][0].Cookie == uint64(cookie) {
		t.Error("two peers share a cookie")
	}
	if got := p.Peers(); strings.Join(got, ",") != "node2,node3" {
		t.Errorf("Peers() = %v", got)
	}

	for range 2 { // deleting twice is fine
		if err := p.DeletePeer(ctx, "node2"); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := sw.owners["peer/node2"]; ok {
		t.Error("peer/node2 still owns flows")
	}
	if err := p.CheckPeer(ctx, "node2"); err == nil {
		t.Error("CheckPeer of a deleted peer succeeded")
	}
	if got := p.Peers(); strings.Join(got, ",") != "node3" {
		t.Errorf("Peers() after delete = %v", got)
	}
}
