package pipeline

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/openflow"
)

// ipv6UnderlayNodeIP is the peer's node IP in the IPv6-underlay tests.
const ipv6UnderlayNodeIP = "2001:db8:2::2"

// TestIPv6UnderlayPeerFlowsGolden: a peer whose node IP is IPv6, on an
// IPv4-only and on a dual-stack pipeline (goldens peer-ipv6underlay.flows,
// peer-ipv6underlay-dualstack.flows). Its routes into the tunnel are the
// IPv4-underlay peer's with tun_ipv6_dst for tun_dst; the IPv4 reply flow to
// the node IP is gone, and a dual-stack peer has its ipv6 twin
// (peer_ipv6underlay.go) last.
func TestIPv6UnderlayPeerFlowsGolden(t *testing.T) {
	tests := []struct {
		name       string
		dualStack  bool
		golden     string
		nodeIPRest int // flows after the IPv4-underlay peer's, less its reply flow
	}{
		{"IPv4 pods", false, "peer-ipv6underlay.flows", 0},
		{"dual-stack pods", true, "peer-ipv6underlay-dualstack.flows", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, peer := testConfig(t), testPeer(t)
			if tc.dualStack {
				cfg, peer = dualStackConfig(t), testDualStackPeer(t)
			}
			p, err := New(nil, cfg)
			if err != nil {
				t.Fatal(err)
			}
			cookie := openflow.MakeCookie(1, CategoryPeer, 3)
			flows4, err := p.PeerFlows(peer, cookie)
			if err != nil {
				t.Fatal(err)
			}
			peer.NodeIP = net.ParseIP(ipv6UnderlayNodeIP)
			flows, err := p.PeerFlows(peer, cookie)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.golden, render(flows))

			// Derived from the IPv4-underlay flows: drop the reply flow
			// (the third), swap the tunnel destination.
			var want []string
			for i, line := range strings.Split(strings.TrimSuffix(render(flows4), "\n"), "\n") {
				if i != 2 {
					want = append(want, strings.ReplaceAll(line, "set_field:192.0.2.2->tun_dst", "set_field:"+ipv6UnderlayNodeIP+"->tun_ipv6_dst"))
				}
			}
			got := strings.Split(strings.TrimSuffix(render(flows), "\n"), "\n")
			if len(got) != len(want)+tc.nodeIPRest || strings.Join(got[:len(want)], "\n") != strings.Join(want, "\n") {
				t.Errorf("IPv6-underlay flows are not the IPv4-underlay ones with tun_ipv6_dst plus %d:\n%s", tc.nodeIPRest, strings.Join(got, "\n"))
			}
			if strings.Contains(render(flows), "tun_dst") || strings.Contains(render(flows), "nw_dst=192.0.2.2") {
				t.Errorf("IPv4 node IP left in the IPv6-underlay flows:\n%s", render(flows))
			}
		})
	}
}

func TestIPv6UnderlayPeerValidation(t *testing.T) {
	tests := []struct {
		nodeIP string
		ok     bool
	}{
		{ipv6UnderlayNodeIP, true},
		{"fd00:192:0:2::2", true},
		{"::ffff:192.0.2.2", true}, // IPv4-mapped: the IPv4 underlay
		{"fe80::2", false},
		{"ff02::2", false},
		{"::", false},
		{"::1", false},
	}
	for _, tc := range tests {
		t.Run(tc.nodeIP, func(t *testing.T) {
			p, err := New(nil, testConfig(t))
			if err != nil {
				t.Fatal(err)
			}
			peer := testPeer(t)
			peer.NodeIP = net.ParseIP(tc.nodeIP)
			_, err = p.PeerFlows(peer, 1)
			switch {
			case tc.ok && err != nil:
				t.Fatal(err)
			case !tc.ok && (err == nil || !strings.Contains(err.Error(), "must be an IPv4 or a global unicast IPv6 address")):
				t.Fatalf("got %v, want the node IP refused", err)
			}
		})
	}
}

// TestAddPeerUnderlayFamilyChange: a peer's node IP moving from IPv4 to
// IPv6 and back is an update under the same cookie, one Sync each.
func TestAddPeerUnderlayFamilyChange(t *testing.T) {
	sw := &fakeSwitch{owners: map[string][]*openflow.Flow{}}
	p, err := New(sw, dualStackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	peer := testDualStackPeer(t)
	for _, c := range []struct {
		nodeIP, want, notWant string
		n                     int
	}{
		{"192.0.2.2", "192.0.2.2->tun_dst", "tun_ipv6", 4},
		{ipv6UnderlayNodeIP, ipv6UnderlayNodeIP + "->tun_ipv6_dst", "tun_dst", 4},
		{"192.0.2.2", "192.0.2.2->tun_dst", "tun_ipv6", 4},
	} {
		peer.NodeIP = net.ParseIP(c.nodeIP)
		if err := p.AddPeer(ctx, peer); err != nil {
			t.Fatal(err)
		}
		got := sw.owners["peer/node2"]
		r := render(got)
		if len(got) != c.n || !strings.Contains(r, c.want) || strings.Contains(r, c.notWant) {
			t.Errorf("node IP %s: peer/node2 owns\n%s", c.nodeIP, r)
		}
		if got[0].Cookie != uint64(openflow.MakeCookie(1, CategoryPeer, 1)) {
			t.Errorf("node IP %s: cookie %#x", c.nodeIP, got[0].Cookie)
		}
	}
}
