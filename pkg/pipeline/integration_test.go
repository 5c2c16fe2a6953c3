package pipeline_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
	"k8s.io/klog/v2"
)

func TestMain(m *testing.M) {
	openflow.RouteLibraryLogs(klog.Background())
	os.Exit(m.Run())
}

const gwMAC = "02:00:0a:0a:00:01"

type node struct {
	ovs  *ovstest.Instance
	sw   *openflow.Switch
	pipe *pipeline.Pipeline
}

// newNode starts a private OVS with br-int, a gateway internal port gw0
// (10.10.0.1/24, ofport 2) in the node namespace, and the base pipeline;
// opts adjust the pipeline's Config.
func newNode(t *testing.T, opts ...func(*pipeline.Config)) *node {
	t.Helper()
	return newNodeWith(t, nil, opts...)
}

// newNodeWith is newNode on an OVS started with ovsOpts.
func newNodeWith(t *testing.T, ovsOpts []ovstest.Option, opts ...func(*pipeline.Config)) *node {
	t.Helper()
	ovs := ovstest.Start(t, ovsOpts...)
	ovs.AddBridge(t, "br-int")
	ovs.MustVsctl(t, "add-port", "br-int", "gw0", "--", "set", "Interface", "gw0",
		"type=internal", "ofport_request=2", `mac="`+gwMAC+`"`)
	for _, args := range [][]string{
		{"ip", "addr", "add", "10.10.0.1/24", "dev", "gw0"},
		{"ip", "link", "set", "gw0", "up"},
	} {
		if out, err := ovs.Exec("", args[0], args[1:]...); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	sw, err := openflow.Open(openflow.Config{MgmtSocket: ovs.MgmtSocket("br-int"), RetryInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Close)
	if err := sw.WaitReady(testctx.Timeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC(gwMAC)
	_, cidr, _ := net.ParseCIDR("10.10.0.0/24")
	cfg := pipeline.Config{GatewayOFPort: 2, GatewayMAC: mac, GatewayIP: net.ParseIP("10.10.0.1"),
		PodCIDR: cidr, CTZone: 65520, Round: 1}
	for _, o := range opts {
		o(&cfg)
	}
	pipe, err := pipeline.New(sw, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := pipe.InstallBase(testctx.Timeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	return &node{ovs: ovs, sw: sw, pipe: pipe}
}

func (n *node) addPod(t *testing.T, name, ip, mac string, ofport int) *ovstest.Pod {
	t.Helper()
	p := n.ovs.AddPod(t, "br-int", name, ip+"/24", mac, ofport)
	hw, _ := net.ParseMAC(mac)
	if err := n.pipe.AddPod(testctx.Timeout(t, time.Minute), pipeline.PodInterface{Key: name, OFPort: uint32(ofport), IPs: []netip.Addr{netip.MustParseAddr(ip)}, MAC: hw}); err != nil {
		t.Fatal(err)
	}
	return p
}

func (n *node) dump(t *testing.T) []string { return n.ovs.DumpFlows(t, "br-int") }

// TestPodSwitching wires three pods to a real bridge through the pipeline:
// pods reach each other and the gateway (the node's kernel), the switch
// holds exactly the flows the pipeline rendered, spoofed IP or MAC traffic
// is dropped while honest traffic passes, and removed pods are unreachable.
func TestPodSwitching(t *testing.T) {
	n := newNode(t)
	p1 := n.addPod(t, "p1", "10.10.0.2", "02:00:0a:0a:00:02", 3)
	p2 := n.addPod(t, "p2", "10.10.0.3", "02:00:0a:0a:00:03", 4)
	p3 := n.addPod(t, "p3", "10.10.0.4", "02:00:0a:0a:00:04", 5)

	// The switch holds exactly what the pipeline renders.
	var want []string
	base, _ := n.pipe.BaseFlows()
	want = append(want, renderAll(base)...)
	for i, key := range n.pipe.Pods() {
		pods := []*ovstest.Pod{p1, p2, p3}
		hw, _ := net.ParseMAC(pods[i].MAC)
		flows, err := n.pipe.PodFlows(pipeline.PodInterface{Key: key, OFPort: uint32(pods[i].OFPort), IPs: []netip.Addr{netip.MustParseAddr(pods[i].IP)}, MAC: hw},
			openflow.MakeCookie(1, pipeline.CategoryPod, uint64(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, renderAll(flows)...)
	}
	for _, key := range n.pipe.Pods() {
		if err := n.pipe.CheckPod(testctx.Timeout(t, time.Minute), key); err != nil {
			t.Fatalf("CheckPod(%s): %v", key, err)
		}
	}
	if got := n.dump(t); len(got) != len(base)+3*6 {
		t.Fatalf("switch holds %d flows, want %d base + 18 pod flows:\n%s", len(got), len(base), strings.Join(got, "\n"))
	} else {
		have := map[string]bool{}
		for _, g := range got {
			have[g] = true
		}
		for _, w := range want {
			if !have[w] {
				t.Errorf("rendered flow not in the switch: %s", w)
			}
		}
	}

	for _, c := range []struct {
		from *ovstest.Pod
		to   string
	}{{p1, p2.IP}, {p2, p1.IP}, {p1, "10.10.0.1"}, {p3, p1.IP}} {
		if err := c.from.Ping(c.to, 2); err != nil {
			t.Errorf("%s -> %s: %v", c.from.Name, c.to, err)
		}
	}
	// The node (gateway) reaches a pod too.
	if out, err := n.ovs.Exec("", "ping", "-c", "2", "-W", "1", "-i", "0.2", p2.IP); err != nil {
		t.Errorf("node -> p2: %v: %s", err, out)
	}

	t.Run("spoofed source IP is dropped", func(t *testing.T) {
		mustPodExec(t, p3, "ip", "addr", "add", "10.10.0.99/24", "dev", "eth0")
		if _, err := p3.Exec("ping", "-c", "2", "-W", "1", "-I", "10.10.0.99", p1.IP); err == nil {
			t.Fatal("ping from a spoofed IP got through")
		}
		if _, err := p3.Exec("ping", "-c", "2", "-W", "1", "-I", p3.IP, p1.IP); err != nil {
			t.Fatalf("honest ping from the same pod failed: %v", err)
		}
		mustPodExec(t, p3, "ip", "addr", "del", "10.10.0.99/24", "dev", "eth0")
	})
	t.Run("spoofed source MAC is dropped", func(t *testing.T) {
		mustPodExec(t, p3, "ip", "link", "set", "eth0", "address", "02:00:0a:0a:00:99")
		mustPodExec(t, p3, "ip", "neigh", "flush", "dev", "eth0")
		if err := p3.Ping(p2.IP, 2); err == nil {
			t.Fatal("ping from a spoofed MAC got through")
		}
		mustPodExec(t, p3, "ip", "link", "set", "eth0", "address", "02:00:0a:0a:00:04")
		// p2 learnt nothing from the spoofed packets, so this works again.
		if err := p3.Ping(p2.IP, 2); err != nil {
			t.Fatalf("after restoring its MAC, p3 -> p2: %v", err)
		}
	})
	t.Run("deleted pod is unreachable and its flows are gone", func(t *testing.T) {
		if err := n.pipe.DeletePod(testctx.Timeout(t, time.Minute), "p2"); err != nil {
			t.Fatal(err)
		}
		if err := n.pipe.DeletePod(testctx.Timeout(t, time.Minute), "p2"); err != nil {
			t.Fatalf("second DeletePod: %v", err)
		}
		if err := n.pipe.CheckPod(testctx.Timeout(t, time.Minute), "p2"); err == nil {
			t.Fatal("CheckPod of a deleted pod succeeded")
		}
		if got := n.dump(t); len(got) != len(base)+2*6 {
			t.Fatalf("%d flows after deleting p2, want %d", len(got), len(base)+12)
		}
		if err := p1.Ping(p2.IP, 1); err == nil {
			t.Fatal("p1 still reaches the deleted pod p2")
		}
	})
}

func mustPodExec(t *testing.T, p *ovstest.Pod, args ...string) {
	t.Helper()
	if out, err := p.Exec(args...); err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
}

func renderAll(flows []*openflow.Flow) []string {
	out := make([]string, len(flows))
	for i, f := range flows {
		out[i] = f.String()
	}
	return out
}

// TestNodeSourcedARP: the node talks to a fresh pod from an address other
// than the gateway IP (its node IP, here 192.0.2.10 on lo).
// With arp_announce=0 on gw0 the kernel's ARP request carries that address
// as sender, so the pod's reply targets it rather than the gateway IP; the
// reply must still reach the gateway port, or the node never learns the
// pod's MAC and the first connection times out. With the reply flow
// deleted, the same first ping to another fresh pod fails: the test can
// tell.
func TestNodeSourcedARP(t *testing.T) {
	n := newNode(t)
	const nodeIP = "192.0.2.10"
	for _, args := range [][]string{
		{"ip", "addr", "add", nodeIP + "/32", "dev", "lo"},
		// The kernel's default, set explicitly: the source of an ARP
		// request is the source of the packet waiting for it.
		{"sysctl", "-q", "-w", "net.ipv4.conf.all.arp_announce=0", "net.ipv4.conf.gw0.arp_announce=0"},
	} {
		if out, err := n.ovs.Exec("", args[0], args[1:]...); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	firstPing := func(p *ovstest.Pod) error {
		// The way back to the node IP: the pod's default route.
		mustPodExec(t, p, "ip", "route", "add", "default", "via", "10.10.0.1")
		if out, err := n.ovs.Exec("", "ip", "neigh", "show", p.IP); err != nil || strings.TrimSpace(out) != "" {
			t.Fatalf("the node already has a neighbour entry for the fresh pod %s: %q, %v", p.IP, out, err)
		}
		out, err := n.ovs.Exec("", "ping", "-n", "-c", "1", "-W", "2", "-I", nodeIP, p.IP)
		if err != nil {
			return fmt.Errorf("first ping from the node IP %s to %s: %w: %s", nodeIP, p.IP, err, out)
		}
		return nil
	}
	p1 := n.addPod(t, "p1", "10.10.0.2", "02:00:0a:0a:00:02", 3)
	if err := firstPing(p1); err != nil {
		t.Fatal(err)
	}
	// The pod answered a request from the node IP, not the gateway IP.
	if out := mustPodExecOut(t, p1, "ip", "neigh", "show", nodeIP); !strings.Contains(out, gwMAC) {
		t.Errorf("pod p1 has no neighbour entry %s -> %s, so the request did not come from the node IP: %q", nodeIP, gwMAC, out)
	}

	n.ovs.MustOfctl(t, "-O", "OpenFlow15", "del-flows", "--strict", "br-int",
		"table=2,priority=195,arp,reg0=0x3/0xf,dl_dst="+gwMAC+",arp_op=2")
	n.ovs.MustAppctl(t, "revalidator/wait")
	p2 := n.addPod(t, "p2", "10.10.0.3", "02:00:0a:0a:00:03", 4)
	if err := firstPing(p2); err == nil {
		t.Error("without the ARP reply flow, the first ping from the node IP succeeded: the test cannot tell")
	}
}

func mustPodExecOut(t *testing.T, p *ovstest.Pod, args ...string) string {
	t.Helper()
	out, err := p.Exec(args...)
	if err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
	return out
}
