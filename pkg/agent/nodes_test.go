package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"

	"github.com/weirnet/weir/pkg/pipeline"
)

// fakeOverlay records what the Node controller asks of the pipeline and
// the node's routes.
type fakeOverlay struct {
	mu      sync.Mutex
	peers   map[string]pipeline.PeerNode
	routes  map[string]string // pod CIDR -> gateway IP
	warmed  []string
	log     []string
	failAdd map[string]int // node -> AddPeer calls left to fail
	// silent makes WarmTunnelNeighbor wait until its context ends, as for
	// a peer that never answers ARP.
	silent bool
	// ipv6 is what IPv6Enabled reports: the local pipeline is dual-stack.
	ipv6 bool
}

func (f *fakeOverlay) IPv6Enabled() bool { return f.ipv6 }

func newFakeOverlay() *fakeOverlay {
	return &fakeOverlay{peers: map[string]pipeline.PeerNode{}, routes: map[string]string{}, failAdd: map[string]int{}}
}

func (f *fakeOverlay) AddPeer(_ context.Context, p pipeline.PeerNode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAdd[p.Name] > 0 {
		f.failAdd[p.Name]--
		f.log = append(f.log, "add-failed "+p.Name)
		return errors.New("injected failure")
	}
	f.peers[p.Name] = p
	f.log = append(f.log, "add "+p.Name)
	return nil
}

func (f *fakeOverlay) DeletePeer(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.peers, name)
	f.log = append(f.log, "delete "+name)
	return nil
}

func (f *fakeOverlay) EnsurePeerRoute(gw string, cidr *net.IPNet, gwIP net.IP) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[cidr.String()] = gwIP.String() + " dev " + gw
	return nil
}

func (f *fakeOverlay) DeletePeerRoute(_ string, cidr *net.IPNet) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.routes, cidr.String())
	return nil
}

func (f *fakeOverlay) Peers() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.peers))
}

func (f *fakeOverlay) PruneNeighbours(string) (int, error) { return 0, nil }

func (f *fakeOverlay) ListPeerRoutes(string) ([]*net.IPNet, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*net.IPNet
	for cidr := range f.routes {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func (f *fakeOverlay) WarmTunnelNeighbor(ctx context.Context, bridge string, ip net.IP) error {
	if f.silent {
		<-ctx.Done()
		return ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.warmed = append(f.warmed, bridge+"/"+ip.String())
	return nil
}

// state renders peers and routes, sorted, for comparison.
func (f *fakeOverlay) state() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, p := range f.peers {
		line := fmt.Sprintf("peer %s %s %s %s", p.Name, p.PodCIDR, p.NodeIP, p.GatewayIP)
		if p.PodCIDRv6 != nil {
			line += fmt.Sprintf(" %s %s", p.PodCIDRv6, p.GatewayIPv6)
		}
		out = append(out, line)
	}
	for cidr, via := range f.routes {
		out = append(out, fmt.Sprintf("route %s via %s", cidr, via))
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

// waitState waits up to 10 s for state() to be state, and fails the test
// naming what was awaited if it is not.
func (f *fakeOverlay) waitState(t *testing.T, what, state string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.state() != state {
		if time.Now().After(deadline) {
			t.Fatalf("%s: state\n  %s\nwant\n  %s", what, f.state(), state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testNode(name, cidr, ip string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: cidr}}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name},
			{Type: corev1.NodeInternalIP, Address: ip}}
	}
	return n
}

// TestNodeController drives the controller with a fake clientset through
// add, update, change of pod CIDR and node IP, delete, a failing pipeline
// and unusable Nodes.
func TestNodeController(t *testing.T) {
	client := fake.NewClientset(
		testNode("local", "10.50.0.0/24", "192.0.2.10"),
		testNode("b", "10.50.1.0/24", "192.0.2.11"),
		testNode("c", "10.50.2.0/24", ""), // no InternalIP yet
		testNode("d", "", "192.0.2.13"),   // no pod CIDR yet
	)
	f := newFakeOverlay()
	f.failAdd["e"] = 2
	nc, err := NewNodeController(NodeControllerConfig{Client: client, LocalNode: "local", Pipeline: f, Routes: f,
		GatewayName: "gw0", UnderlayBridge: "br-phy", Logger: ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(4)))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer background(ctx, nc.Run)() // stops it and waits
	nodes := client.CoreV1().Nodes()
	want := func(what, state string) { t.Helper(); f.waitState(t, what, state) }
	update := func(n *corev1.Node) {
		t.Helper()
		if _, err := nodes.Update(context.Background(), n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	want("initial sync", "peer b 10.50.1.0/24 192.0.2.11 10.50.1.1; route 10.50.1.0/24 via 10.50.1.1 dev gw0")
	if got := nc.Peers(); !slices.Equal(got, []string{"b"}) {
		t.Errorf("Peers() = %v", got)
	}

	update(testNode("c", "10.50.2.0/24", "192.0.2.12"))
	want("c got an InternalIP", "peer b 10.50.1.0/24 192.0.2.11 10.50.1.1; peer c 10.50.2.0/24 192.0.2.12 10.50.2.1; "+
		"route 10.50.1.0/24 via 10.50.1.1 dev gw0; route 10.50.2.0/24 via 10.50.2.1 dev gw0")

	update(testNode("b", "10.50.11.0/24", "192.0.2.21"))
	want("b's pod CIDR and IP changed", "peer b 10.50.11.0/24 192.0.2.21 10.50.11.1; peer c 10.50.2.0/24 192.0.2.12 10.50.2.1; "+
		"route 10.50.11.0/24 via 10.50.11.1 dev gw0; route 10.50.2.0/24 via 10.50.2.1 dev gw0")

	if err := nodes.Delete(context.Background(), "c", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	update(testNode("d", "10.50.3.0/24", "192.0.2.13"))
	want("c deleted, d complete", "peer b 10.50.11.0/24 192.0.2.21 10.50.11.1; peer d 10.50.3.0/24 192.0.2.13 10.50.3.1; "+
		"route 10.50.11.0/24 via 10.50.11.1 dev gw0; route 10.50.3.0/24 via 10.50.3.1 dev gw0")

	// A failing AddPeer is retried with backoff until it succeeds.
	if _, err := nodes.Create(context.Background(), testNode("e", "10.50.4.0/24", "192.0.2.14"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("e added after two failures", "peer b 10.50.11.0/24 192.0.2.21 10.50.11.1; peer d 10.50.3.0/24 192.0.2.13 10.50.3.1; "+
		"peer e 10.50.4.0/24 192.0.2.14 10.50.4.1; "+
		"route 10.50.11.0/24 via 10.50.11.1 dev gw0; route 10.50.3.0/24 via 10.50.3.1 dev gw0; route 10.50.4.0/24 via 10.50.4.1 dev gw0")

	// A peer that loses its pod CIDR, or gets a malformed one, is removed.
	update(testNode("d", "", "192.0.2.13"))
	update(testNode("e", "not-a-cidr", "192.0.2.14"))
	want("d and e unusable", "peer b 10.50.11.0/24 192.0.2.21 10.50.11.1; route 10.50.11.0/24 via 10.50.11.1 dev gw0")

	f.mu.Lock()
	defer f.mu.Unlock()
	if n := strings.Count(strings.Join(f.log, ","), "add-failed e"); n != 2 {
		t.Errorf("AddPeer for e failed %d times, want 2: %v", n, f.log)
	}
	for _, w := range []string{"br-phy/192.0.2.11", "br-phy/192.0.2.21", "br-phy/192.0.2.12"} {
		if !slices.Contains(f.warmed, w) {
			t.Errorf("tunnel neighbour %s not warmed: %v", w, f.warmed)
		}
	}
	for _, w := range f.warmed {
		if strings.HasSuffix(w, "/192.0.2.10") {
			t.Errorf("the local node was warmed as a peer: %v", f.warmed)
		}
	}
}

// TestSilentPeersDoNotDelaySync: peers that never answer ARP (each warm-up
// runs into warmTimeout) do not hold back the initial sync, and Run still
// returns promptly. Before warm-ups left the workers, 40 such Nodes took
// 40 s (2 workers × 2 s each); issue 12 measured 100 s with 100.
func TestSilentPeersDoNotDelaySync(t *testing.T) {
	var objs []runtime.Object
	for i := range 40 {
		objs = append(objs, testNode(fmt.Sprintf("n%d", i), fmt.Sprintf("10.51.%d.0/24", i), fmt.Sprintf("192.0.2.%d", 100+i)))
	}
	client := fake.NewClientset(objs...)
	f := newFakeOverlay()
	f.silent = true
	nc, err := NewNodeController(NodeControllerConfig{Client: client, LocalNode: "local", Pipeline: f, Routes: f,
		GatewayName: "gw0", UnderlayBridge: "br-phy", Logger: ktesting.NewLogger(t, ktesting.NewConfig())})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop := background(ctx, nc.Run)
	start := time.Now()
	syncCtx, syncCancel := context.WithTimeout(ctx, warmTimeout)
	defer syncCancel()
	if err := nc.WaitForInitialSync(syncCtx); err != nil {
		t.Fatalf("initial sync of 40 silent peers not done within one warm-up timeout (%v): %v", warmTimeout, err)
	}
	if got := len(nc.Peers()); got != 40 {
		t.Errorf("%d peers installed, want 40", got)
	}
	t.Logf("initial sync of 40 silent peers took %v", time.Since(start).Round(time.Millisecond))
	cancel()
	stopped := time.Now()
	stop()
	if d := time.Since(stopped); d > time.Second {
		t.Errorf("Run took %v to return after its context ended, with warm-ups pending", d)
	}
}

func TestPeerFromNode(t *testing.T) {
	tests := []struct {
		node       *corev1.Node
		want       string
		wantReason string
		wantErr    string
	}{
		{testNode("a", "10.1.0.0/16", "192.0.2.1"), "a 10.1.0.0/16 192.0.2.1 10.1.0.1", "", ""},
		{testNode("a", "10.1.2.0/24", ""), "", "no IPv4 InternalIP", ""},
		{testNode("a", "", "192.0.2.1"), "", "no IPv4 pod CIDR", ""},
		// An IPv6-only Node is no peer of an IPv4 node (nodes_ipv6only_test.go).
		{testNode("a", "fd00::/64", "192.0.2.1"), "", "no IPv4 pod CIDR", ""},
		{testNode("a", "10.1.2.0/24", "fd00::1"), "", "no IPv4 InternalIP", ""},
	}
	for _, tc := range tests {
		p, reason, err := peerFromNode(tc.node, localNet{ipv4: true})
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%+v: got %v, want error containing %q", tc.node.Spec, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v: %v", tc.node.Spec, err)
			continue
		}
		if tc.wantReason != "" {
			if !strings.Contains(reason, tc.wantReason) {
				t.Errorf("%+v: reason %q, want %q", tc.node.Spec, reason, tc.wantReason)
			}
			continue
		}
		if got := fmt.Sprintf("%s %s %s %s", p.Name, p.PodCIDR, p.NodeIP, p.GatewayIP); got != tc.want {
			t.Errorf("got %s, want %s", got, tc.want)
		}
	}
}

// TestNodeControllerGarbage starts the controller on a node where an
// earlier run left the route of a Node deleted while the agent was down
// and the current round's flows of a peer whose Node vanished, next to a
// current peer and a Node that is not a peer yet. After the initial sync
// the garbage must go and nothing else.
func TestNodeControllerGarbage(t *testing.T) {
	client := fake.NewClientset(
		testNode("local", "10.61.0.0/24", "192.0.2.10"),
		testNode("b", "10.61.1.0/24", "192.0.2.11"),
		testNode("c", "10.61.2.0/24", ""), // not a peer yet: its route is left alone
	)
	f := newFakeOverlay()
	f.routes["10.61.9.0/24"] = "10.61.9.1 dev gw0" // Node deleted while the agent was down
	f.routes["10.61.2.0/24"] = "10.61.2.1 dev gw0"
	_, vanished, _ := net.ParseCIDR("10.61.8.0/24")
	f.peers["vanished"] = pipeline.PeerNode{Name: "vanished", PodCIDR: vanished, NodeIP: net.ParseIP("192.0.2.18"),
		GatewayIP: net.ParseIP("10.61.8.1")}
	nc, err := NewNodeController(NodeControllerConfig{Client: client, LocalNode: "local", Pipeline: f, Routes: f,
		GatewayName: "gw0", Logger: ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	defer background(ctx, nc.Run)() // stops it and waits
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := nc.WaitForGarbageCollection(wctx); err != nil {
		t.Fatal(err)
	}
	want := "peer b 10.61.1.0/24 192.0.2.11 10.61.1.1; route 10.61.1.0/24 via 10.61.1.1 dev gw0; " +
		"route 10.61.2.0/24 via 10.61.2.1 dev gw0"
	for f.state() != want {
		if wctx.Err() != nil {
			t.Fatalf("state after the garbage collection\n  %s\nwant\n  %s", f.state(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("garbage of deleted Nodes removed %s after the controller started", time.Since(start).Round(time.Millisecond))
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Contains(f.log, "delete vanished") {
		t.Errorf("the vanished peer's flows were not deleted through the pipeline: %v", f.log)
	}
}
