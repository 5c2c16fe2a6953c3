package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"
)

// ipv6OnlyNode is a Node of an IPv6-only cluster: one IPv6 pod CIDR and
// an IPv6 InternalIP (either may be "").
func ipv6OnlyNode(name, cidr6, ip6 string) *corev1.Node {
	n := testNode(name, cidr6, ip6)
	if cidr6 != "" {
		n.Spec.PodCIDRs = []string{cidr6}
	}
	return n
}

func TestPeerFromNodeIPv6Only(t *testing.T) {
	ipv6Only := localNet{ipv6: true, ipv6Underlay: true}
	dualOverIPv6 := localNet{ipv4: true, ipv6: true, ipv6Underlay: true}
	dual := dualStackNode("a", "10.1.2.0/24", "fd00:10:2::/64", "192.0.2.1")
	dual.Status.Addresses = append(dual.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "fd00:1::1"})
	tests := []struct {
		name       string
		node       *corev1.Node
		local      localNet
		want       string // name podCIDR nodeIP gatewayIP podCIDRv6 gatewayIPv6
		wantReason string
	}{
		{"IPv6-only peer", ipv6OnlyNode("a", "fd00:10:2::/64", "fd00:1::2"), ipv6Only,
			"a <nil> fd00:1::2 <nil> fd00:10:2::/64 fd00:10:2::1", ""},
		{"no IPv6 InternalIP yet", ipv6OnlyNode("a", "fd00:10:2::/64", ""), ipv6Only, "", "no IPv6 InternalIP"},
		{"IPv4 InternalIP only", ipv6OnlyNode("a", "fd00:10:2::/64", "192.0.2.1"), ipv6Only, "", "no IPv6 InternalIP"},
		{"no pod CIDR yet", ipv6OnlyNode("a", "", "fd00:1::2"), ipv6Only, "", "no IPv6 pod CIDR"},
		{"IPv4-only peer", testNode("a", "10.1.2.0/24", "fd00:1::2"), ipv6Only, "", "no IPv6 pod CIDR"},
		// A dual-stack peer of an IPv6-only node: its IPv6 part only.
		{"dual-stack peer", dual, ipv6Only, "a <nil> fd00:1::1 <nil> fd00:10:2::/64 fd00:10:2::1", ""},
		// A dual-stack node over an IPv6 underlay: both families, IPv6 endpoint.
		{"dual-stack over IPv6", dual, dualOverIPv6, "a 10.1.2.0/24 fd00:1::1 10.1.2.1 fd00:10:2::/64 fd00:10:2::1", ""},
		// The same peer over an IPv4 underlay, as before.
		{"dual-stack over IPv4", dual, localNet{ipv4: true, ipv6: true}, "a 10.1.2.0/24 192.0.2.1 10.1.2.1 fd00:10:2::/64 fd00:10:2::1", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, reason, err := peerFromNode(tc.node, tc.local)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantReason != "" {
				if !strings.Contains(reason, tc.wantReason) {
					t.Fatalf("reason %q, want %q (peer %+v)", reason, tc.wantReason, p)
				}
				return
			}
			if reason != "" {
				t.Fatalf("not a peer: %s", reason)
			}
			// A nil CIDR or IP prints as <nil>.
			got := fmt.Sprintf("%s %v %v %v %v %v", p.Name, p.PodCIDR, p.NodeIP, p.GatewayIP, p.PodCIDRv6, p.GatewayIPv6)
			if got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestNodeControllerIPv6Only: on an IPv6-only node over an IPv6 underlay,
// IPv6-only peers get one IPv6 route and their IPv6 InternalIP as the
// tunnel endpoint; an IPv4 route left over is removed by the garbage
// collection, which keeps no IPv4 CIDR of any Node; a Node without an IPv6
// InternalIP is no peer; a changed pod CIDR moves the route.
func TestNodeControllerIPv6Only(t *testing.T) {
	client := fake.NewClientset(
		ipv6OnlyNode("local", "fd00:70::/64", "fd00:1::10"),
		ipv6OnlyNode("b", "fd00:70:0:1::/64", "fd00:1::11"),
		ipv6OnlyNode("c", "fd00:70:0:2::/64", "192.0.2.12"), // no IPv6 InternalIP: no peer
		testNode("d", "10.70.3.0/24", "192.0.2.13"),         // IPv4-only: no peer
	)
	f := newFakeOverlay()
	f.ipv6 = true
	f.routes["10.70.3.0/24"] = "10.70.3.1 dev gw0"          // an IPv4 route of an earlier (dual-stack) life
	f.routes["fd00:70:0:9::/64"] = "fd00:70:0:9::1 dev gw0" // of a Node deleted while the agent was down
	nc, err := NewNodeController(NodeControllerConfig{Client: client, LocalNode: "local", Pipeline: f, Routes: f,
		IPv6Only: true, IPv6Underlay: true, GatewayName: "gw0",
		Logger: ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(4)))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer background(ctx, nc.Run)()
	want := func(what, state string) { t.Helper(); f.waitState(t, what, state) }
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := nc.WaitForGarbageCollection(wctx); err != nil {
		t.Fatal(err)
	}
	want("initial sync and garbage collection",
		"peer b <nil> fd00:1::11 <nil> fd00:70:0:1::/64 fd00:70:0:1::1; route fd00:70:0:1::/64 via fd00:70:0:1::1 dev gw0")

	nodes := client.CoreV1().Nodes()
	if _, err := nodes.Update(context.Background(), ipv6OnlyNode("c", "fd00:70:0:2::/64", "fd00:1::12"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes.Update(context.Background(), ipv6OnlyNode("b", "fd00:70:0:11::/64", "fd00:1::11"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("c got an IPv6 InternalIP, b's pod CIDR changed",
		"peer b <nil> fd00:1::11 <nil> fd00:70:0:11::/64 fd00:70:0:11::1; peer c <nil> fd00:1::12 <nil> fd00:70:0:2::/64 fd00:70:0:2::1; "+
			"route fd00:70:0:11::/64 via fd00:70:0:11::1 dev gw0; route fd00:70:0:2::/64 via fd00:70:0:2::1 dev gw0")
	if err := nodes.Delete(context.Background(), "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want("b deleted", "peer c <nil> fd00:1::12 <nil> fd00:70:0:2::/64 fd00:70:0:2::1; route fd00:70:0:2::/64 via fd00:70:0:2::1 dev gw0")
}
