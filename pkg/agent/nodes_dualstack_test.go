package agent

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"

	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/test/netnstest"
)

func dualStackNode(name, cidr, cidr6, ip string) *corev1.Node {
	n := testNode(name, cidr, ip)
	n.Spec.PodCIDRs = []string{cidr}
	if cidr6 != "" {
		n.Spec.PodCIDRs = append(n.Spec.PodCIDRs, cidr6)
	}
	return n
}

func TestPeerFromNodeDualStack(t *testing.T) {
	tests := []struct {
		node *corev1.Node
		ipv6 bool // the local node is dual-stack
		want string
	}{
		{dualStackNode("a", "10.1.2.0/24", "fd00:10:2::/64", "192.0.2.1"), true, "a 10.1.2.0/24 192.0.2.1 10.1.2.1 fd00:10:2::/64 fd00:10:2::1"},
		// An IPv4-only local node ignores the peer's IPv6 CIDR.
		{dualStackNode("a", "10.1.2.0/24", "fd00:10:2::/64", "192.0.2.1"), false, "a 10.1.2.0/24 192.0.2.1 10.1.2.1 <nil> <nil>"},
		// An IPv4-only peer of a dual-stack node is IPv4 only.
		{dualStackNode("a", "10.1.2.0/24", "", "192.0.2.1"), true, "a 10.1.2.0/24 192.0.2.1 10.1.2.1 <nil> <nil>"},
		// The families' order in spec.podCIDRs does not matter.
		{&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: corev1.NodeSpec{PodCIDR: "fd00:10:2::/64",
			PodCIDRs: []string{"fd00:10:2::/64", "10.1.2.0/24"}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "fd00::9"},
				{Type: corev1.NodeInternalIP, Address: "192.0.2.1"}}}},
			true, "a 10.1.2.0/24 192.0.2.1 10.1.2.1 fd00:10:2::/64 fd00:10:2::1"},
	}
	for _, tc := range tests {
		p, reason, err := peerFromNode(tc.node, localNet{ipv4: true, ipv6: tc.ipv6})
		if err != nil || reason != "" {
			t.Errorf("%v: %v %q", tc.node.Spec.PodCIDRs, err, reason)
			continue
		}
		var cidr6 any = p.PodCIDRv6
		if p.PodCIDRv6 == nil {
			cidr6 = "<nil>"
		}
		if got := fmt.Sprintf("%s %s %s %s %v %v", p.Name, p.PodCIDR, p.NodeIP, p.GatewayIP, cidr6, p.GatewayIPv6); got != tc.want {
			t.Errorf("ipv6=%v %v: got %s, want %s", tc.ipv6, tc.node.Spec.PodCIDRs, got, tc.want)
		}
	}
}

// TestNodeControllerDualStack: on a dual-stack node a dual-stack peer gets
// a route per family, an IPv4-only peer one; a changed IPv6 pod CIDR moves
// the IPv6 route, a deleted Node takes both; the garbage collection after
// the initial sync removes a stale IPv6 route and keeps a current Node's.
func TestNodeControllerDualStack(t *testing.T) {
	client := fake.NewClientset(
		dualStackNode("local", "10.70.0.0/24", "fd00:70::/64", "192.0.2.10"),
		dualStackNode("b", "10.70.1.0/24", "fd00:70:0:1::/64", "192.0.2.11"),
		dualStackNode("c", "10.70.2.0/24", "", "192.0.2.12"),
		dualStackNode("d", "10.70.3.0/24", "fd00:70:0:3::/64", ""), // not a peer yet: its routes stay
	)
	f := newFakeOverlay()
	f.ipv6 = true
	f.routes["fd00:70:0:9::/64"] = "fd00:70:0:9::1 dev gw0" // of a Node deleted while the agent was down
	f.routes["fd00:70:0:3::/64"] = "fd00:70:0:3::1 dev gw0"
	nc, err := NewNodeController(NodeControllerConfig{Client: client, LocalNode: "local", Pipeline: f, Routes: f,
		GatewayName: "gw0", Logger: ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(4)))})
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
		"peer b 10.70.1.0/24 192.0.2.11 10.70.1.1 fd00:70:0:1::/64 fd00:70:0:1::1; peer c 10.70.2.0/24 192.0.2.12 10.70.2.1; "+
			"route 10.70.1.0/24 via 10.70.1.1 dev gw0; route 10.70.2.0/24 via 10.70.2.1 dev gw0; "+
			"route fd00:70:0:1::/64 via fd00:70:0:1::1 dev gw0; route fd00:70:0:3::/64 via fd00:70:0:3::1 dev gw0")

	nodes := client.CoreV1().Nodes()
	if _, err := nodes.Update(context.Background(), dualStackNode("b", "10.70.1.0/24", "fd00:70:0:11::/64", "192.0.2.11"),
		metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("b's IPv6 pod CIDR changed",
		"peer b 10.70.1.0/24 192.0.2.11 10.70.1.1 fd00:70:0:11::/64 fd00:70:0:11::1; peer c 10.70.2.0/24 192.0.2.12 10.70.2.1; "+
			"route 10.70.1.0/24 via 10.70.1.1 dev gw0; route 10.70.2.0/24 via 10.70.2.1 dev gw0; "+
			"route fd00:70:0:11::/64 via fd00:70:0:11::1 dev gw0; route fd00:70:0:3::/64 via fd00:70:0:3::1 dev gw0")

	if _, err := nodes.Update(context.Background(), dualStackNode("b", "10.70.1.0/24", "", "192.0.2.11"),
		metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("b lost its IPv6 pod CIDR",
		"peer b 10.70.1.0/24 192.0.2.11 10.70.1.1; peer c 10.70.2.0/24 192.0.2.12 10.70.2.1; "+
			"route 10.70.1.0/24 via 10.70.1.1 dev gw0; route 10.70.2.0/24 via 10.70.2.1 dev gw0; "+
			"route fd00:70:0:3::/64 via fd00:70:0:3::1 dev gw0")

	if _, err := nodes.Update(context.Background(), dualStackNode("b", "10.70.1.0/24", "fd00:70:0:1::/64", "192.0.2.11"),
		metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := nodes.Delete(context.Background(), "c", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want("b dual-stack again, c deleted",
		"peer b 10.70.1.0/24 192.0.2.11 10.70.1.1 fd00:70:0:1::/64 fd00:70:0:1::1; "+
			"route 10.70.1.0/24 via 10.70.1.1 dev gw0; route fd00:70:0:1::/64 via fd00:70:0:1::1 dev gw0; "+
			"route fd00:70:0:3::/64 via fd00:70:0:3::1 dev gw0")
	if err := nodes.Delete(context.Background(), "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want("b deleted: both routes go", "route fd00:70:0:3::/64 via fd00:70:0:3::1 dev gw0")
}

// TestNodeControllerIPv4OnlyLocal: an IPv4-only node makes every peer IPv4
// only, and its garbage collection removes Weir's IPv6 peer routes (left
// by a dual-stack run).
func TestNodeControllerIPv4OnlyLocal(t *testing.T) {
	client := fake.NewClientset(
		testNode("local", "10.71.0.0/24", "192.0.2.10"),
		dualStackNode("b", "10.71.1.0/24", "fd00:71:0:1::/64", "192.0.2.11"),
	)
	f := newFakeOverlay()
	f.routes["fd00:71:0:1::/64"] = "fd00:71:0:1::1 dev gw0"
	nc, err := NewNodeController(NodeControllerConfig{Client: client, LocalNode: "local", Pipeline: f, Routes: f,
		GatewayName: "gw0", Logger: ktesting.NewLogger(t, ktesting.NewConfig())})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer background(ctx, nc.Run)()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := nc.WaitForGarbageCollection(wctx); err != nil {
		t.Fatal(err)
	}
	want := "peer b 10.71.1.0/24 192.0.2.11 10.71.1.1; route 10.71.1.0/24 via 10.71.1.1 dev gw0"
	for f.state() != want {
		if wctx.Err() != nil {
			t.Fatalf("state\n  %s\nwant\n  %s", f.state(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func nsOut(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %v: %v\n%s", ns, args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestNodenetRoutesDualStack runs the real PeerRoutes in a network
// namespace with a gateway gw0: an IPv6 peer route is
// "via <gateway IPv6> dev gw0 proto 87 onlink" with a permanent neighbour
// entry gateway IPv6 → GlobalVirtualMAC; ListPeerRoutes returns Weir's
// routes of both families and nothing else; DeletePeerRoute removes the
// IPv6 route and its neighbour, leaves foreign routes and neighbours alone
// and is idempotent.
func TestNodenetRoutesDualStack(t *testing.T) {
	ns := netnstest.New(t, "weir-agent").Name
	nsOut(t, ns, "link", "add", "gw0", "type", "veth", "peer", "name", "gw0p") // no dummy module here
	nsOut(t, ns, "link", "set", "gw0p", "up")
	nsOut(t, ns, "link", "set", "gw0", "up")
	nsOut(t, ns, "addr", "add", "10.72.0.1/24", "dev", "gw0")
	nsOut(t, ns, "-6", "addr", "add", "fd00:72::1/64", "dev", "gw0", "nodad")
	// Someone else's IPv6 route and neighbour on the gateway.
	nsOut(t, ns, "-6", "route", "add", "fd00:99::/64", "via", "fd00:99::1", "dev", "gw0", "onlink", "proto", "static")
	nsOut(t, ns, "-6", "neigh", "replace", "fd00:99::1", "lladdr", "02:00:00:00:99:01", "dev", "gw0", "nud", "permanent")

	_, v4, _ := net.ParseCIDR("10.72.1.0/24")
	_, v6, _ := net.ParseCIDR("fd00:72:0:1::/64")
	r := NodenetRoutes{}
	netnstest.MustDo(t, ns, func() error {
		if err := r.EnsurePeerRoute("gw0", v4, net.ParseIP("10.72.1.1")); err != nil {
			return err
		}
		for range 2 { // idempotent
			if err := r.EnsurePeerRoute("gw0", v6, net.ParseIP("fd00:72:0:1::1")); err != nil {
				return err
			}
		}
		return nil
	})
	if got := nsOut(t, ns, "-6", "route", "show", "fd00:72:0:1::/64"); !strings.Contains(got, "via fd00:72:0:1::1 dev gw0 proto 87") ||
		!strings.Contains(got, "onlink") {
		t.Errorf("IPv6 peer route: %q", got)
	}
	if got := nsOut(t, ns, "-6", "neigh", "show", "fd00:72:0:1::1", "dev", "gw0"); got != "fd00:72:0:1::1 lladdr "+pipeline.GlobalVirtualMAC+" PERMANENT" {
		t.Errorf("neighbour of the peer's gateway IPv6: %q", got)
	}
	// The kernel really sends to the virtual MAC through gw0.
	if got := nsOut(t, ns, "-6", "route", "get", "fd00:72:0:1::5"); !strings.Contains(got, "via fd00:72:0:1::1 dev gw0") {
		t.Errorf("route get: %q", got)
	}
	var listed []*net.IPNet
	netnstest.MustDo(t, ns, func() (err error) { listed, err = r.ListPeerRoutes("gw0"); return err })
	if got := fmt.Sprint(listed); got != "[10.72.1.0/24 fd00:72:0:1::/64]" {
		t.Errorf("ListPeerRoutes = %s, want Weir's route of each family", got)
	}
	netnstest.MustDo(t, ns, func() error {
		for range 2 { // idempotent
			if err := r.DeletePeerRoute("gw0", v6); err != nil {
				return err
			}
		}
		return nil
	})
	if got := nsOut(t, ns, "-6", "route", "show", "fd00:72:0:1::/64"); got != "" {
		t.Errorf("IPv6 peer route left: %q", got)
	}
	if got := nsOut(t, ns, "-6", "neigh", "show", "fd00:72:0:1::1", "dev", "gw0"); got != "" {
		t.Errorf("neighbour of the deleted peer left: %q", got)
	}
	if got := nsOut(t, ns, "-6", "route", "show", "fd00:99::/64"); !strings.Contains(got, "via fd00:99::1") {
		t.Errorf("foreign IPv6 route touched: %q", got)
	}
	if got := nsOut(t, ns, "-6", "neigh", "show", "fd00:99::1", "dev", "gw0"); !strings.Contains(got, "PERMANENT") {
		t.Errorf("foreign neighbour touched: %q", got)
	}
	netnstest.MustDo(t, ns, func() (err error) { listed, err = r.ListPeerRoutes("gw0"); return err })
	if got := fmt.Sprint(listed); got != "[10.72.1.0/24]" {
		t.Errorf("ListPeerRoutes after delete = %s", got)
	}
	// A route removed by hand leaves its pinned next hop; pruning removes
	// exactly that one (not a next hop still in use, not a foreign entry).
	_, v6b, _ := net.ParseCIDR("fd00:72:0:2::/64")
	netnstest.MustDo(t, ns, func() error {
		if err := r.EnsurePeerRoute("gw0", v6, net.ParseIP("fd00:72:0:1::1")); err != nil {
			return err
		}
		return r.EnsurePeerRoute("gw0", v6b, net.ParseIP("fd00:72:0:2::1"))
	})
	nsOut(t, ns, "-6", "route", "del", "fd00:72:0:1::/64")
	var pruned int
	for i := range 2 { // idempotent
		netnstest.MustDo(t, ns, func() (err error) { pruned, err = r.PruneNeighbours("gw0"); return err })
		if want := 1 - i; pruned != want {
			t.Errorf("PruneNeighbours (call %d) removed %d entries, want %d", i+1, pruned, want)
		}
	}
	if got := nsOut(t, ns, "-6", "neigh", "show", "fd00:72:0:1::1", "dev", "gw0"); got != "" {
		t.Errorf("orphaned next hop left: %q", got)
	}
	for _, ip := range []string{"fd00:72:0:2::1", "fd00:99::1"} {
		if got := nsOut(t, ns, "-6", "neigh", "show", ip, "dev", "gw0"); !strings.Contains(got, "PERMANENT") {
			t.Errorf("neighbour %s pruned although it is in use or foreign: %q", ip, got)
		}
	}
	netnstest.MustDo(t, ns, func() error { return r.DeletePeerRoute("gw0", v6b) })
	// Without the gateway there is nothing to delete or list.
	nsOut(t, ns, "link", "del", "gw0")
	netnstest.MustDo(t, ns, func() error {
		if err := r.DeletePeerRoute("gw0", v6); err != nil {
			return err
		}
		_, err := r.ListPeerRoutes("gw0")
		return err
	})
}
