package nodenet_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/agent"
	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/test/netnstest"
	"github.com/weirnet/weir/test/oftest"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

func TestMain(m *testing.M) {
	openflow.RouteLibraryLogs(klog.Background())
	os.Exit(m.Run())
}

// Port numbers and names on every simulated node.
const (
	tunnelOFPort  = 1
	gatewayOFPort = 2
	gatewayName   = "gw0"
	tunnelName    = "tun0"
	nicName       = "ul0" // the underlay NIC, one end of a veth pair between the nodes
)

// simNode is one simulated node: a private OVS in its own network
// namespace, with br-int, gateway, Geneve port, underlay on br-phy and the
// pipeline.
type simNode struct {
	name    string
	ovs     *ovstest.Instance
	db      *ovsdb.Client
	sw      *openflow.Switch
	pipe    *pipeline.Pipeline
	podCIDR *net.IPNet
	gwIP    net.IP
	gwMAC   net.HardwareAddr
	nodeIP  net.IP
	podMTU  int
	pods    []*ovstest.Pod
	podIfs  []pipeline.PodInterface
	// podCIDRv6 and gwIPv6 are set on a dual-stack node (startDualStackNode).
	podCIDRv6 *net.IPNet
	gwIPv6    net.IP
	// ipv6Underlay: the tunnel endpoints (nodeIP) are the nodes' IPv6
	// underlay addresses (joinNodes), and the pod MTU leaves room for the
	// outer IPv6 header.
	ipv6Underlay bool
}

// underlayFamily is one of the underlays the overlay tests run over.
type underlayFamily struct {
	name string
	ipv6 bool
}

var underlays = []underlayFamily{{"IPv4", false}, {"IPv6", true}}

// overhead is what Geneve adds on n's underlay.
func (n *simNode) overhead() int {
	if n.ipv6Underlay {
		return nodenet.GeneveOverheadIPv6
	}
	return nodenet.GeneveOverhead
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func mustExec(t *testing.T, in *ovstest.Instance, ns string, args ...string) string {
	t.Helper()
	out, err := in.Exec(ns, args[0], args[1:]...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// startNode starts node name's OVS and OVSDB client; the rest of its set-up
// needs the underlay NIC (setUp).
func startNode(t *testing.T, name, cidr, gwMAC string, opts ...ovstest.Option) *simNode {
	t.Helper()
	_, podCIDR, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC(gwMAC)
	n := &simNode{name: name, ovs: ovstest.Start(t, opts...), podCIDR: podCIDR, gwMAC: mac}
	n.gwIP = slices.Clone(podCIDR.IP.To4())
	n.gwIP[3]++
	n.db = connectDB(t, n.ovs)
	return n
}

// setUp builds the node as the agent would: underlay first (it gives the
// MTU), then br-int with the gateway and Geneve ports, then the pipeline.
func (n *simNode) setUp(t *testing.T) {
	t.Helper()
	ctx := testctx.Timeout(t, callTimeout)
	var u *nodenet.Underlay
	netnstest.MustDo(t, n.ovs.NetNS, func() (err error) {
		u, err = nodenet.SetupUnderlay(ctx, nodenet.UnderlayConfig{OVSDB: n.db, NIC: nicName})
		return err
	})
	n.podMTU = nodenet.PodMTUFor(u.MTU, n.ipv6Underlay)
	if n.ipv6Underlay {
		// An IPv6-only underlay (joinNodes gives ul0 no IPv4 address), so
		// nothing can use an IPv4 underlay: the overlay must work over
		// IPv6 alone.
		if len(u.Addrs6) == 0 || len(u.Addrs) != 0 {
			t.Fatalf("%s: SetupUnderlay of an IPv6-only NIC: IPv4 %v, IPv6 %v on %s", n.name, u.Addrs, u.Addrs6, u.Bridge)
		}
		n.nodeIP = u.Addrs6[0].IP
	} else {
		n.nodeIP = u.Addrs[0].IP
	}

	if _, err := n.db.EnsureBridge(ctx, ovsdb.BridgeConfig{Name: "br-int", DatapathType: ovsdb.DatapathNetdev}); err != nil {
		t.Fatal(err)
	}
	if err := n.db.SetFlowTableNames(ctx, "br-int", pipeline.TableNames()); err != nil {
		t.Fatal(err)
	}
	if _, err := n.db.EnsureGenevePort(ctx, "br-int", tunnelName, ovsdb.PortOptions{OFPortRequest: tunnelOFPort,
		ExternalIDs: map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypeTunnel}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.db.EnsureInternalPort(ctx, "br-int", gatewayName, ovsdb.PortOptions{OFPortRequest: gatewayOFPort,
		MAC: n.gwMAC.String(), MTU: n.podMTU, ExternalIDs: map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypeGateway}}); err != nil {
		t.Fatal(err)
	}
	ones, _ := n.podCIDR.Mask.Size()
	mustExec(t, n.ovs, "", "ip", "addr", "replace", fmt.Sprintf("%s/%d", n.gwIP, ones), "dev", gatewayName)
	mustExec(t, n.ovs, "", "ip", "link", "set", gatewayName, "mtu", strconv.Itoa(n.podMTU), "up")

	if n.podCIDRv6 != nil {
		ones6, _ := n.podCIDRv6.Mask.Size()
		mustExec(t, n.ovs, "", "ip", "-6", "addr", "replace", fmt.Sprintf("%s/%d", n.gwIPv6, ones6), "dev", gatewayName, "nodad")
	}

	n.sw = oftest.Switch(t, n.ovs, "br-int")
	var err error
	if n.pipe, err = pipeline.New(n.sw, pipeline.Config{GatewayOFPort: gatewayOFPort, GatewayMAC: n.gwMAC, GatewayIP: n.gwIP,
		TunnelOFPort: tunnelOFPort, PodCIDR: n.podCIDR, GatewayIPv6: n.gwIPv6, PodCIDRv6: n.podCIDRv6,
		CTZone: 65520, Round: 1}); err != nil {
		t.Fatal(err)
	}
	if err := n.pipe.InstallBase(ctx); err != nil {
		t.Fatal(err)
	}
}

// addPod attaches a pod with the overlay MTU and a default route via the
// local gateway, and installs its flows.
func (n *simNode) addPod(t *testing.T, name string, host byte, ofport int) *ovstest.Pod {
	t.Helper()
	ip := slices.Clone(n.podCIDR.IP.To4())
	ip[3] = host
	mac := net.HardwareAddr{0x02, 0x00, ip[0], ip[1], ip[2], ip[3]}
	ones, _ := n.podCIDR.Mask.Size()
	p := n.ovs.AddPod(t, "br-int", name, fmt.Sprintf("%s/%d", ip, ones), mac.String(), ofport)
	n.setPodMTU(t, p, n.podMTU)
	mustPodExec(t, p, "ip", "route", "add", "default", "via", n.gwIP.String())
	pi := pipeline.PodInterface{Key: name, OFPort: uint32(ofport), IPs: []netip.Addr{netip.MustParseAddr(ip.String())}, MAC: mac}
	if err := n.pipe.AddPod(testctx.Timeout(t, callTimeout), pi); err != nil {
		t.Fatal(err)
	}
	n.pods = append(n.pods, p)
	n.podIfs = append(n.podIfs, pi)
	return p
}

func (n *simNode) setPodMTU(t *testing.T, p *ovstest.Pod, mtu int) {
	t.Helper()
	mustPodExec(t, p, "ip", "link", "set", "eth0", "mtu", strconv.Itoa(mtu))
	mustExec(t, n.ovs, "", "ip", "link", "set", p.HostIf, "mtu", strconv.Itoa(mtu))
}

func (n *simNode) peer() pipeline.PeerNode {
	return pipeline.PeerNode{Name: n.name, PodCIDR: n.podCIDR, NodeIP: n.nodeIP, GatewayIP: n.gwIP,
		PodCIDRv6: n.podCIDRv6, GatewayIPv6: n.gwIPv6}
}

// connect makes peer reachable from n: pipeline flows and the node route.
func (n *simNode) connect(t *testing.T, peer *simNode) {
	t.Helper()
	if err := n.pipe.AddPeer(testctx.Timeout(t, callTimeout), peer.peer()); err != nil {
		t.Fatal(err)
	}
	netnstest.MustDo(t, n.ovs.NetNS, func() error { return nodenet.EnsurePeerRoute(gatewayName, peer.podCIDR, peer.gwIP) })
}

// wantFlows renders every flow the pipeline should have installed, as
// ovs-ofctl prints them, sorted.
func (n *simNode) wantFlows(t *testing.T) []string {
	t.Helper()
	var want []*openflow.Flow
	base, err := n.pipe.BaseFlows()
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, base...)
	for i, pi := range n.podIfs {
		flows, err := n.pipe.PodFlows(pi, openflow.MakeCookie(1, pipeline.CategoryPod, uint64(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, flows...)
	}
	var out []string
	for _, f := range want {
		out = append(out, f.String())
	}
	return out
}

// peerFlowStats reads back the flows of category peer.
func (n *simNode) peerFlowStats(t *testing.T) []openflow.FlowStats {
	t.Helper()
	st, err := n.sw.DumpFlows(testctx.Timeout(t, callTimeout), openflow.FlowFilter{Cookie: uint64(openflow.MakeCookie(0, pipeline.CategoryPeer, 0)),
		CookieMask: openflow.CookieCategoryMask})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// twoNodes starts node1 (pods 10.10.1.0/24) and node2 (10.10.2.0/24) and
// sets them up with an underlay between them: ul0, a veth pair between the
// two node namespaces (192.0.2.1 and 192.0.2.2), created there directly so
// nothing is in the root namespace; deleting either namespace deletes it.
func twoNodes(t *testing.T) (*simNode, *simNode) {
	t.Helper()
	return twoNodesOver(t, false)
}

// twoNodesOver is twoNodes over an IPv4 or (ipv6Underlay) an IPv6 underlay
// (see joinNodes).
func twoNodesOver(t *testing.T, ipv6Underlay bool) (*simNode, *simNode) {
	t.Helper()
	n1 := startNode(t, "node1", "10.10.1.0/24", "02:00:0a:0a:01:01")
	n2 := startNode(t, "node2", "10.10.2.0/24", "02:00:0a:0a:02:01")
	n1.ipv6Underlay, n2.ipv6Underlay = ipv6Underlay, ipv6Underlay
	joinNodes(t, n1, n2)
	return n1, n2
}

// joinNodes connects two started nodes by the underlay veth pair ul0
// (192.0.2.1 and 192.0.2.2) and sets them up (see twoNodes). On an IPv6
// underlay ul0 gets 2001:db8:6::1 and ::2 instead (/64, no DAD: the address
// only moves to br-phy, see nodenet.SetupUnderlay), and no IPv4 address:
// they are the tunnel endpoints (setUp).
func joinNodes(t *testing.T, n1, n2 *simNode) {
	t.Helper()
	mustRun(t, "ip", "link", "add", nicName, "netns", n1.ovs.NetNS, "type", "veth", "peer", "name", nicName, "netns", n2.ovs.NetNS)
	for i, n := range []*simNode{n1, n2} {
		if n.ipv6Underlay {
			mustExec(t, n.ovs, "", "ip", "-6", "addr", "add", fmt.Sprintf("2001:db8:6::%d/64", i+1), "dev", nicName, "nodad")
		} else {
			mustExec(t, n.ovs, "", "ip", "addr", "add", fmt.Sprintf("192.0.2.%d/24", i+1), "dev", nicName)
		}
		mustExec(t, n.ovs, "", "ip", "link", "set", nicName, "up")
		n.setUp(t)
	}
}

// peerNodes makes n1 and n2 reachable from each other (peer flows and
// routes) and warms OVS's tunnel neighbour cache both ways.
func peerNodes(t *testing.T, n1, n2 *simNode) {
	t.Helper()
	n1.connect(t, n2)
	n2.connect(t, n1)
	warmTunnelNeighbors(t, n1, n2)
}

// warmTunnelNeighbors makes each node's OVS learn the other's underlay MAC
// before the first tunnelled packet needs it, as the agent does
// (nodenet.WarmTunnelNeighbor: ARP over an IPv4 underlay, Neighbor
// Discovery over an IPv6 one), and checks that OVS's tunnel neighbour
// cache then holds the peer: the kernel's entry being reachable means the
// reply crossed br-phy, where OVS snoops it.
func warmTunnelNeighbors(t *testing.T, n1, n2 *simNode) {
	t.Helper()
	for _, pair := range [][2]*simNode{{n1, n2}, {n2, n1}} {
		n, peer := pair[0], pair[1]
		began := time.Now()
		netnstest.MustDo(t, n.ovs.NetNS, func() error {
			return nodenet.WarmTunnelNeighbor(testctx.Timeout(t, callTimeout), nodenet.DefaultUnderlayBridge, peer.nodeIP)
		})
		t.Logf("%s: tunnel neighbour %v warmed in %v", n.name, peer.nodeIP, time.Since(began).Round(time.Microsecond))
		// OVS handles the snooped reply in its own thread, a moment after
		// the kernel has it.
		deadline := time.Now().Add(2 * time.Second)
		for !strings.Contains(n.ovs.MustAppctl(t, "tnl/neigh/show"), peer.nodeIP.String()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: OVS's tunnel neighbour cache did not learn %v:\n%s", n.name, peer.nodeIP, n.ovs.MustAppctl(t, "tnl/neigh/show"))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func mustPodExec(t *testing.T, p *ovstest.Pod, args ...string) string {
	t.Helper()
	out, err := p.Exec(args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

var rttRe = regexp.MustCompile(`rtt min/avg/max/mdev = ([0-9.]+)/([0-9.]+)/([0-9.]+)`)

// TestOverlay wires two simulated nodes (each its own OVS, userspace
// datapath) with Weir's Geneve overlay, built from the same pieces the agent
// uses — pkg/ovsdb ports, nodenet underlay and routes, pipeline pod and peer
// flows — and proves pod-to-pod, node-to-pod and TCP across nodes, the MTU,
// Geneve on the wire, and that deleting a peer cuts it off, over an IPv4
// underlay and again over an IPv6 one (IPv4 pods, the tunnel between the
// nodes' IPv6 addresses, no IPv4 address on the underlay at all; the TCP
// rates of both are compared at the end). Afterwards nothing of it is left
// in the root namespace.
func TestOverlay(t *testing.T) {
	var namespaces []string
	tcpMbps := map[string]float64{}
	for _, ul := range underlays {
		name := "two nodes"
		if ul.ipv6 {
			name = "two nodes, IPv6 underlay"
		}
		t.Run(name, func(t *testing.T) {
			began := time.Now()
			n1, n2 := twoNodesOver(t, ul.ipv6)
			p11 := n1.addPod(t, "p11", 2, 3)
			p12 := n1.addPod(t, "p12", 3, 4)
			p21 := n2.addPod(t, "p21", 2, 3)
			namespaces = append(namespaces, n1.ovs.NetNS, n2.ovs.NetNS, p11.NetNS, p12.NetNS, p21.NetNS)

			peerNodes(t, n1, n2)
			t.Logf("two nodes up in %v: underlay %v / %v, pod MTU %d", time.Since(began).Round(time.Millisecond), n1.nodeIP, n2.nodeIP, n1.podMTU)
			if out := n1.ovs.MustAppctl(t, "tnl/neigh/show"); !strings.Contains(out, n2.nodeIP.String()) {
				t.Errorf("OVS's tunnel neighbour cache lacks %v after warming:\n%s", n2.nodeIP, out)
			}

			t.Run("switch holds exactly the rendered flows", func(t *testing.T) {
				for _, n := range []*simNode{n1, n2} {
					peer := n2
					if n == n2 {
						peer = n1
					}
					checkSwitchFlows(t, n, peer)
				}
			})

			t.Run("pod to pod across nodes", func(t *testing.T) {
				for _, c := range []struct {
					from *ovstest.Pod
					to   string
				}{{p11, p21.IP}, {p12, p21.IP}, {p21, p11.IP}, {p21, p12.IP}, {p11, p12.IP}} {
					if err := c.from.Ping(c.to, 2); err != nil {
						t.Errorf("%s -> %s: %v", c.from.Name, c.to, err)
					}
				}
				out := mustPodExec(t, p11, "ping", "-n", "-c", "10", "-i", "0.05", "-W", "1", p21.IP)
				if m := rttRe.FindStringSubmatch(out); m != nil {
					t.Logf("cross-node RTT p11 -> p21: min/avg/max %s/%s/%s ms", m[1], m[2], m[3])
				}
				out = mustPodExec(t, p11, "ping", "-n", "-c", "10", "-i", "0.05", "-W", "1", p12.IP)
				if m := rttRe.FindStringSubmatch(out); m != nil {
					t.Logf("same-node RTT p11 -> p12: min/avg/max %s/%s/%s ms", m[1], m[2], m[3])
				}
			})

			t.Run("nodes reach remote pods and gateways", func(t *testing.T) {
				for _, c := range []struct {
					from *simNode
					to   string
				}{{n1, p21.IP}, {n2, p11.IP}, {n1, n2.gwIP.String()}} {
					if out, err := c.from.ovs.Exec("", "ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", c.to); err != nil {
						t.Errorf("node %s -> %s: %v\n%s", c.from.name, c.to, err, out)
					}
				}
				if err := p21.Ping(n1.gwIP.String(), 2); err != nil {
					t.Errorf("p21 -> node1's gateway: %v", err)
				}
			})

			// A peer's host sending from its node IP (a process bound to it):
			// the request arrives through the tunnel, and the pod's replies to
			// the node IP must go back the same way (the peer's reply flow,
			// ct_mark 0x2), not into this node's kernel.
			t.Run("peer host from its node IP to a pod", func(t *testing.T) {
				if n2.nodeIP.To4() == nil {
					t.Skip("IPv4 pods cannot answer an IPv6 node IP; TestOverlayDualStack covers the IPv6 node IP")
				}
				replies := func() uint64 {
					for _, st := range n1.peerFlowStats(t) {
						if st.Flow.Table == pipeline.L3Forwarding && strings.Contains(st.Flow.String(), "nw_dst="+n2.nodeIP.String()) {
							return st.Packets
						}
					}
					t.Fatalf("%s has no reply flow for %s's node IP %v", n1.name, n2.name, n2.nodeIP)
					return 0
				}
				before := replies()
				if out, err := n2.ovs.Exec("", "ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", "-I", n2.nodeIP.String(), p11.IP); err != nil {
					t.Errorf("node %s from %v -> %s: %v\n%s", n2.name, n2.nodeIP, p11.IP, err, out)
				}
				n1.ovs.MustAppctl(t, "revalidator/wait") // datapath flow stats reach the OpenFlow flows
				if got := replies() - before; got < 2 {
					t.Errorf("the reply flow to %v counted %d packets for 2 echo replies", n2.nodeIP, got)
				}
			})

			t.Run("TCP across nodes", func(t *testing.T) {
				mbps, runs := medianIperfMbps(t, p11, p21, p21.IP)
				t.Logf("TCP p11 -> p21 across nodes, %s underlay (iperf3 -t 1, %d runs): median %.0f Mbit/s, runs %.0f", ul.name, iperfRuns, mbps, runs)
				if mbps <= 0 {
					t.Error("no TCP throughput")
				}
				tcpMbps[ul.name] = mbps
			})

			t.Run("MTU", func(t *testing.T) {
				payload := n1.podMTU - 28 // IPv4 + ICMP headers
				dfPing := func(size, count int) error {
					out, err := p11.Exec("ping", "-n", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "1", "-M", "do", "-s", strconv.Itoa(size), p21.IP)
					if err != nil {
						return fmt.Errorf("%w\n%s", err, out)
					}
					return nil
				}
				if err := dfPing(payload, 2); err != nil {
					t.Fatalf("DF ping with %d bytes (pod MTU %d) failed: %v", payload, n1.podMTU, err)
				}
				t.Logf("max DF ping across nodes: %d bytes payload = %d bytes IP = pod MTU; %d on the %s underlay", payload, n1.podMTU, n1.podMTU+n1.overhead(), ul.name)
				// One byte more cannot leave the pod...
				if err := dfPing(payload+1, 1); err == nil {
					t.Error("a DF ping one byte over the pod MTU got through")
				}
				// ...and with both pods' MTU raised by one, the underlay cannot
				// carry it, until its MTU is raised by one too: the overhead is
				// exactly GeneveOverhead (GeneveOverheadIPv6 on an IPv6 underlay).
				checkExactOverhead(t, n1, n2, p11, p21, payload, "IPv4", dfPing)
			})

			t.Run("Geneve on the underlay", func(t *testing.T) {
				out := captureGeneve(t, n1, func() { _ = p11.Ping(p21.IP, 2) })
				t.Logf("tcpdump on node1's %s:\n%s", nicName, out)
				if !strings.Contains(out, "Geneve") || !strings.Contains(out, n2.nodeIP.String()+".6081") {
					t.Errorf("no Geneve to %v:6081 seen on the underlay:\n%s", n2.nodeIP, out)
				}
				if outer := map[bool]string{false: "IP ", true: "IP6 "}[ul.ipv6] + n1.nodeIP.String() + "."; !strings.Contains(out, outer) {
					t.Errorf("no Geneve from %q on the %s underlay:\n%s", outer, ul.name, out)
				}
				for _, st := range n1.peerFlowStats(t) {
					if st.Flow.Table == pipeline.L3Forwarding && strings.Contains(st.Flow.String(), "nw_dst="+n2.podCIDR.String()) && st.Packets == 0 {
						t.Errorf("the tunnel flow counted no packets: %s", st.Flow)
					}
				}
			})

			t.Run("DeletePeer cuts the peer off", func(t *testing.T) {
				ctx := testctx.Timeout(t, callTimeout)
				if err := n1.pipe.DeletePeer(ctx, n2.name); err != nil {
					t.Fatal(err)
				}
				netnstest.MustDo(t, n1.ovs.NetNS, func() error { return nodenet.DeletePeerRoute(gatewayName, n2.podCIDR) })
				netnstest.MustDo(t, n1.ovs.NetNS, func() error { return nodenet.DeletePeerRoute(gatewayName, n2.podCIDR) }) // idempotent
				if st := n1.peerFlowStats(t); len(st) != 0 {
					t.Errorf("%d peer flows left after DeletePeer", len(st))
				}
				if got, want := n1.ovs.DumpFlows(t, "br-int"), n1.wantFlows(t); len(got) != len(want) {
					t.Errorf("node1 holds %d flows after DeletePeer, want %d (base + pods)", len(got), len(want))
				}
				if err := p11.Ping(p21.IP, 1); err == nil {
					t.Error("p11 still reaches p21 after DeletePeer")
				}
				if err := p21.Ping(p11.IP, 1); err == nil {
					t.Error("p21 still gets replies from p11 after node1 deleted node2")
				}
				if out := mustExec(t, n1.ovs, "", "ip", "route", "show", n2.podCIDR.String()); strings.TrimSpace(out) != "" {
					t.Errorf("route to %v still there: %s", n2.podCIDR, out)
				}
				// And back.
				n1.connect(t, n2)
				if err := p11.Ping(p21.IP, 2); err != nil {
					t.Errorf("after re-adding the peer: %v", err)
				}
			})
			t.Logf("overlay test body took %v", time.Since(began).Round(time.Millisecond))
		})
	}
	if a, b := tcpMbps["IPv4"], tcpMbps["IPv6"]; a > 0 && b > 0 {
		t.Logf("TCP across nodes, IPv6 underlay / IPv4 underlay (median of %d iperf3 -t 1 each, this run): %.0f / %.0f Mbit/s = %.2f",
			iperfRuns, b, a, b/a)
	}

	if len(namespaces) == 0 {
		return // skipped or failed early; ovstest cleaned up anyway
	}
	out := mustRun(t, "ip", "netns", "list")
	for _, ns := range namespaces {
		if regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(ns) + `\b`).MatchString(out) {
			t.Errorf("netns %s still exists after the test", ns)
		}
	}
	links := mustRun(t, "ip", "-o", "link", "show")
	for _, name := range []string{nicName, "br-phy", "br-int", gatewayName, tunnelName, "v-p11", "v-p12", "v-p21"} {
		if regexp.MustCompile(`(?m)^\d+: ` + regexp.QuoteMeta(name) + `[@:]`).MatchString(links) {
			t.Errorf("interface %s left in the root namespace", name)
		}
	}
}

// captureGeneve runs tcpdump for Geneve (UDP 6081) on node n's underlay NIC
// while traffic runs, and returns what it printed.
func captureGeneve(t *testing.T, n *simNode, traffic func()) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.ovs.NetNS,
		"tcpdump", "-l", "-nn", "-c", "2", "-i", nicName, "udp", "port", "6081")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() { // wait until it listens
		if strings.Contains(sc.Text(), "listening on") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	traffic()
	if err := cmd.Wait(); err != nil {
		t.Errorf("tcpdump: %v", err)
	}
	return stdout.String()
}

// twoDualStackNodes is twoNodesOver with IPv6 pod CIDRs beside the IPv4
// ones (node1 fd00:10:1::/64, node2 fd00:10:2::/64, gateways ::1; IPv6 kept
// on in the pods), over an IPv4 or (ipv6Underlay) an IPv6 underlay.
func twoDualStackNodes(t *testing.T, ipv6Underlay bool) (*simNode, *simNode) {
	t.Helper()
	n1 := startNode(t, "node1", "10.10.1.0/24", "02:00:0a:0a:01:01", ovstest.WithPodIPv6())
	n2 := startNode(t, "node2", "10.10.2.0/24", "02:00:0a:0a:02:01", ovstest.WithPodIPv6())
	for i, n := range []*simNode{n1, n2} {
		_, n.podCIDRv6, _ = net.ParseCIDR(fmt.Sprintf("fd00:10:%d::/64", i+1))
		n.gwIPv6 = net.ParseIP(fmt.Sprintf("fd00:10:%d::1", i+1))
		n.ipv6Underlay = ipv6Underlay
	}
	joinNodes(t, n1, n2)
	return n1, n2
}

// addDualStackPod is addPod with an IPv6 address beside the IPv4 one
// (<IPv6 CIDR>::<host>, no DAD) and a default IPv6 route via the gateway.
// It returns the pod and its IPv6 address.
func (n *simNode) addDualStackPod(t *testing.T, name string, host byte, ofport int) (*ovstest.Pod, string) {
	t.Helper()
	ip := slices.Clone(n.podCIDR.IP.To4())
	ip[3] = host
	ip6 := slices.Clone(n.podCIDRv6.IP.To16())
	ip6[15] = host
	mac := net.HardwareAddr{0x02, 0x00, ip[0], ip[1], ip[2], ip[3]}
	ones, _ := n.podCIDR.Mask.Size()
	ones6, _ := n.podCIDRv6.Mask.Size()
	p := n.ovs.AddPod(t, "br-int", name, fmt.Sprintf("%s/%d", ip, ones), mac.String(), ofport)
	n.setPodMTU(t, p, n.podMTU)
	mustPodExec(t, p, "ip", "route", "add", "default", "via", n.gwIP.String())
	mustPodExec(t, p, "ip", "-6", "addr", "add", fmt.Sprintf("%s/%d", ip6, ones6), "dev", "eth0", "nodad")
	mustPodExec(t, p, "ip", "-6", "route", "add", "default", "via", n.gwIPv6.String())
	pi := pipeline.PodInterface{Key: name, OFPort: uint32(ofport), MAC: mac,
		IPs: []netip.Addr{netip.MustParseAddr(ip.String()), netip.MustParseAddr(net.IP(ip6).String())}}
	if err := n.pipe.AddPod(testctx.Timeout(t, callTimeout), pi); err != nil {
		t.Fatal(err)
	}
	n.pods = append(n.pods, p)
	n.podIfs = append(n.podIfs, pi)
	return p, net.IP(ip6).String()
}

// connectDualStack makes dual-stack peer reachable from n as the agent's
// Node controller does: pipeline flows, then the route of each family
// through the agent's PeerRoutes (the IPv6 one with its permanent
// neighbour entry for the peer's gateway IPv6).
func (n *simNode) connectDualStack(t *testing.T, peer *simNode) {
	t.Helper()
	if err := n.pipe.AddPeer(testctx.Timeout(t, callTimeout), peer.peer()); err != nil {
		t.Fatal(err)
	}
	netnstest.MustDo(t, n.ovs.NetNS, func() error {
		r := agent.NodenetRoutes{}
		if err := r.EnsurePeerRoute(gatewayName, peer.podCIDR, peer.gwIP); err != nil {
			return err
		}
		return r.EnsurePeerRoute(gatewayName, peer.podCIDRv6, peer.gwIPv6)
	})
}

func ping6(p *ovstest.Pod, dst string, args ...string) (string, error) {
	return p.Exec(append([]string{"ping", "-6", "-n", "-c", "2", "-W", "1", "-i", "0.2"}, append(args, dst)...)...)
}

// iperfMbps runs iperf3 for one second from client to server's address
// addr (either family) and returns the received rate.
func iperfMbps(t *testing.T, client, server *ovstest.Pod, addr string) float64 {
	t.Helper()
	mustPodExec(t, server, "iperf3", "-s", "-1", "-D", "-B", addr)
	var out string
	var err error
	for range 30 { // until the daemon listens
		if out, err = client.Exec("iperf3", "-c", addr, "-t", "1", "-J"); err == nil || !strings.Contains(out, "refused") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("iperf3 to %s: %v\n%s", addr, err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	i := strings.Index(out, "{")
	if i < 0 {
		t.Fatalf("iperf3 printed no JSON:\n%s", out)
	}
	if err := json.Unmarshal([]byte(out[i:]), &res); err != nil {
		t.Fatalf("iperf3 output: %v\n%s", err, out)
	}
	return res.End.SumReceived.BitsPerSecond / 1e6
}

// iperfRuns is how often medianIperfMbps measures: one iperf3 second
// varies by ±15% and more on this shared machine.
const iperfRuns = 3

// medianIperfMbps runs iperfMbps iperfRuns times and returns the median
// and every run.
func medianIperfMbps(t *testing.T, client, server *ovstest.Pod, addr string) (float64, []float64) {
	t.Helper()
	var runs []float64
	for range iperfRuns {
		runs = append(runs, iperfMbps(t, client, server, addr))
	}
	sorted := slices.Sorted(slices.Values(runs))
	return sorted[len(sorted)/2], runs
}

// TestOverlayDualStack: IPv6 pod traffic over the Geneve underlay, once
// over an IPv4 and once over an IPv6 underlay. Two dual-stack nodes peer
// with IPv6 pod CIDRs; the switch holds exactly the rendered flows; pods
// reach each other across nodes over IPv6 (ICMPv6 and TCP) and still over
// IPv4; nodes reach remote pods over IPv6; over the IPv6 underlay a peer's
// host reaches a pod from its IPv6 node IP; the largest IPv6 packet is the
// pod MTU (underlay MTU - 50 over IPv4, - 70 over IPv6: the overhead is the
// outer header's, whatever the inner family); Geneve on the wire carries
// IPv6, inside outer IPv4 or IPv6; deleting the peer removes its IPv6 route
// and neighbour and cuts IPv6 off.
func TestOverlayDualStack(t *testing.T) {
	tcpMbps := map[string]float64{}
	for _, ul := range underlays {
		t.Run(ul.name+" underlay", func(t *testing.T) {
			began := time.Now()
			n1, n2 := twoDualStackNodes(t, ul.ipv6)
			p11, p11v6 := n1.addDualStackPod(t, "p11", 2, 3)
			p21, p21v6 := n2.addDualStackPod(t, "p21", 2, 3)
			n1.connectDualStack(t, n2)
			n2.connectDualStack(t, n1)
			warmTunnelNeighbors(t, n1, n2)
			t.Logf("two dual-stack nodes up in %v, %s underlay %v / %v, pod MTU %d", time.Since(began).Round(time.Millisecond),
				ul.name, n1.nodeIP, n2.nodeIP, n1.podMTU)

			t.Run("switch holds exactly the rendered flows", func(t *testing.T) {
				for _, c := range [][2]*simNode{{n1, n2}, {n2, n1}} {
					n, peer := c[0], c[1]
					checkSwitchFlows(t, n, peer)
				}
			})

			t.Run("node routes", func(t *testing.T) {
				if got := mustExec(t, n1.ovs, "", "ip", "-6", "route", "show", n2.podCIDRv6.String()); !strings.Contains(got, "via "+n2.gwIPv6.String()+" dev gw0 proto 87") {
					t.Errorf("node1's IPv6 route to node2's pods: %q", got)
				}
				if got := mustExec(t, n1.ovs, "", "ip", "-6", "neigh", "show", n2.gwIPv6.String(), "dev", gatewayName); !strings.Contains(got, pipeline.GlobalVirtualMAC+" PERMANENT") {
					t.Errorf("node1's neighbour entry for node2's gateway IPv6: %q", got)
				}
				var routes []*net.IPNet
				netnstest.MustDo(t, n1.ovs.NetNS, func() (err error) { routes, err = agent.NodenetRoutes{}.ListPeerRoutes(gatewayName); return err })
				if got, want := fmt.Sprint(routes), fmt.Sprintf("[%s %s]", n2.podCIDR, n2.podCIDRv6); got != want {
					t.Errorf("ListPeerRoutes = %s, want %s", got, want)
				}
			})

			t.Run("pod to pod across nodes", func(t *testing.T) {
				for _, c := range []struct {
					from *ovstest.Pod
					to   string
				}{{p11, p21v6}, {p21, p11v6}} {
					if out, err := ping6(c.from, c.to); err != nil {
						t.Errorf("%s -> %s: %v\n%s", c.from.Name, c.to, err, out)
					}
				}
				for _, c := range []struct {
					from *ovstest.Pod
					to   string
				}{{p11, p21.IP}, {p21, p11.IP}} {
					if err := c.from.Ping(c.to, 2); err != nil {
						t.Errorf("IPv4 %s -> %s: %v", c.from.Name, c.to, err)
					}
				}
				out := mustPodExec(t, p11, "ping", "-6", "-n", "-c", "10", "-i", "0.05", "-W", "1", p21v6)
				if m := rttRe.FindStringSubmatch(out); m != nil {
					t.Logf("cross-node IPv6 RTT p11 -> p21: min/avg/max %s/%s/%s ms", m[1], m[2], m[3])
				}
				// The hop limit is decremented once (by the sending node).
				if !strings.Contains(out, "ttl=63") {
					t.Errorf("IPv6 echo replies across nodes do not carry hop limit 63:\n%s", out)
				}
			})

			t.Run("nodes reach remote pods and gateways over IPv6", func(t *testing.T) {
				for _, c := range []struct {
					from *simNode
					to   string
				}{{n1, p21v6}, {n2, p11v6}, {n1, n2.gwIPv6.String()}} {
					if out, err := c.from.ovs.Exec("", "ping", "-6", "-n", "-c", "2", "-i", "0.2", "-W", "1", c.to); err != nil {
						t.Errorf("node %s -> %s: %v\n%s", c.from.name, c.to, err, out)
					}
				}
				if out, err := ping6(p21, n1.gwIPv6.String()); err != nil {
					t.Errorf("p21 -> node1's gateway IPv6: %v\n%s", err, out)
				}
			})

			// A peer's host sending from its IPv6 node IP (a process bound
			// to it; on an IPv6 underlay status.hostIP is IPv6): the pod's
			// replies go back through the tunnel by the peer's ipv6 reply
			// flow (pipeline/peer_ipv6underlay.go), and on the peer to its
			// gateway by the base tunnel Service-reply flow. Over the IPv4
			// underlay the node IP is IPv4 and the IPv4 test covers it.
			t.Run("peer host from its IPv6 node IP to a pod", func(t *testing.T) {
				if !ul.ipv6 {
					t.Skip("the node IP is IPv4: TestOverlay covers it")
				}
				replyFlow := func() openflow.FlowStats {
					for _, st := range n1.peerFlowStats(t) {
						if st.Flow.Table == pipeline.L3Forwarding && strings.Contains(st.Flow.String(), "ipv6_dst="+n2.nodeIP.String()) {
							return st
						}
					}
					t.Fatalf("%s has no reply flow for %s's node IP %v", n1.name, n2.name, n2.nodeIP)
					return openflow.FlowStats{}
				}
				ping := func() (string, error) {
					return n2.ovs.Exec("", "ping", "-6", "-n", "-c", "2", "-i", "0.2", "-W", "1", "-I", n2.nodeIP.String(), p11v6)
				}
				before := replyFlow().Packets
				if out, err := ping(); err != nil {
					t.Errorf("node %s from %v -> %s: %v\n%s", n2.name, n2.nodeIP, p11v6, err, out)
				}
				n1.ovs.MustAppctl(t, "revalidator/wait")
				if got := replyFlow().Packets - before; got < 2 {
					t.Errorf("the reply flow to %v counted %d packets for 2 echo replies", n2.nodeIP, got)
				}
				// Without the flow the replies take node1's kernel and are
				// lost: the flow is what makes it work.
				f := replyFlow().Flow
				n1.ovs.MustOfctl(t, "-O", "OpenFlow15", "--strict", "del-flows", "br-int", fmt.Sprintf("table=%d,%s", f.Table, f.Match()))
				if out, err := ping(); err == nil {
					t.Errorf("node %s from %v -> %s answered without the reply flow:\n%s", n2.name, n2.nodeIP, p11v6, out)
				}
				if err := n1.pipe.DeletePeer(testctx.Timeout(t, callTimeout), n2.name); err != nil {
					t.Fatal(err)
				}
				n1.connectDualStack(t, n2)
				if out, err := ping(); err != nil {
					t.Errorf("after re-adding the peer: %v\n%s", err, out)
				}
			})

			t.Run("TCP over IPv6 across nodes", func(t *testing.T) {
				mbps, runs := medianIperfMbps(t, p11, p21, p21v6)
				t.Logf("TCP over IPv6 p11 -> p21 across nodes, %s underlay (iperf3 -t 1, %d runs): median %.0f Mbit/s, runs %.0f", ul.name, iperfRuns, mbps, runs)
				if mbps <= 0 {
					t.Error("no TCP throughput over IPv6")
				}
				tcpMbps[ul.name] = mbps
			})

			t.Run("MTU", func(t *testing.T) {
				payload := n1.podMTU - 48 // IPv6 header 40 + ICMPv6 8
				dfPing := func(size, count int) error {
					out, err := p11.Exec("ping", "-6", "-n", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "1", "-M", "do", "-s", strconv.Itoa(size), p21v6)
					if err != nil {
						return fmt.Errorf("%w\n%s", err, out)
					}
					return nil
				}
				if err := dfPing(payload, 2); err != nil {
					t.Fatalf("DF ping -6 with %d bytes (pod MTU %d) failed: %v", payload, n1.podMTU, err)
				}
				t.Logf("max DF ping -6 across nodes: %d bytes payload = %d bytes IPv6 = pod MTU; %d on the %s underlay", payload, n1.podMTU,
					n1.podMTU+n1.overhead(), ul.name)
				if err := dfPing(payload+1, 1); err == nil {
					t.Error("a DF ping -6 one byte over the pod MTU got through")
				}
				// With both pods' MTU one higher the underlay cannot carry the
				// packet, until its MTU is one higher too: the overhead for inner
				// IPv6 is the underlay's, exactly (GeneveOverhead over IPv4,
				// GeneveOverheadIPv6 over IPv6).
				checkExactOverhead(t, n1, n2, p11, p21, payload, "IPv6", dfPing)
			})

			t.Run("Geneve on the underlay carries IPv6", func(t *testing.T) {
				out := captureGeneve(t, n1, func() { _, _ = ping6(p11, p21v6) })
				t.Logf("tcpdump on node1's %s:\n%s", nicName, out)
				if !strings.Contains(out, n2.nodeIP.String()+".6081") || !strings.Contains(out, "IP6 "+p11v6+" > "+p21v6) {
					t.Errorf("no IPv6 in Geneve to %v:6081 seen on the underlay:\n%s", n2.nodeIP, out)
				}
				if outer := map[bool]string{false: "IP ", true: "IP6 "}[ul.ipv6] + n1.nodeIP.String() + "."; !strings.Contains(out, outer) {
					t.Errorf("no Geneve from %q on the %s underlay:\n%s", outer, ul.name, out)
				}
			})

			t.Run("deleting the peer removes its IPv6 route and neighbour", func(t *testing.T) {
				if err := n1.pipe.DeletePeer(testctx.Timeout(t, callTimeout), n2.name); err != nil {
					t.Fatal(err)
				}
				netnstest.MustDo(t, n1.ovs.NetNS, func() error {
					r := agent.NodenetRoutes{}
					if err := r.DeletePeerRoute(gatewayName, n2.podCIDR); err != nil {
						return err
					}
					return r.DeletePeerRoute(gatewayName, n2.podCIDRv6)
				})
				if out := mustExec(t, n1.ovs, "", "ip", "-6", "route", "show", n2.podCIDRv6.String()); strings.TrimSpace(out) != "" {
					t.Errorf("IPv6 route to %v still there: %s", n2.podCIDRv6, out)
				}
				if out := mustExec(t, n1.ovs, "", "ip", "-6", "neigh", "show", n2.gwIPv6.String(), "dev", gatewayName); strings.TrimSpace(out) != "" {
					t.Errorf("neighbour entry for %v still there: %s", n2.gwIPv6, out)
				}
				if out, err := ping6(p11, p21v6); err == nil {
					t.Errorf("p11 still reaches p21 over IPv6 after DeletePeer:\n%s", out)
				}
				n1.connectDualStack(t, n2)
				if out, err := ping6(p11, p21v6); err != nil {
					t.Errorf("after re-adding the peer: %v\n%s", err, out)
				}
			})
			t.Logf("dual-stack overlay test took %v", time.Since(began).Round(time.Millisecond))
		})
	}
	if a, b := tcpMbps["IPv4"], tcpMbps["IPv6"]; a > 0 && b > 0 {
		t.Logf("TCP over IPv6 across nodes, IPv6 underlay / IPv4 underlay (median of %d iperf3 -t 1 each, this run): %.0f / %.0f Mbit/s = %.2f",
			iperfRuns, b, a, b/a)
	}
}

// checkSwitchFlows checks that n's bridge holds exactly the flows its
// pipeline renders, with peer installed, and that CheckPeer agrees.
func checkSwitchFlows(t *testing.T, n, peer *simNode) {
	t.Helper()
	want := n.wantFlows(t)
	pf, err := n.pipe.PeerFlows(peer.peer(), openflow.MakeCookie(1, pipeline.CategoryPeer, 1))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range pf {
		want = append(want, f.String())
	}
	slices.Sort(want)
	if got := n.ovs.DumpFlows(t, "br-int"); !slices.Equal(got, want) {
		t.Errorf("%s: switch flows differ from the rendered ones:\n--- switch\n%s\n--- rendered\n%s",
			n.name, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err := n.pipe.CheckPeer(testctx.Timeout(t, callTimeout), peer.name); err != nil {
		t.Error(err)
	}
}

// checkExactOverhead raises both pods' MTU by one: a DF packet of
// payload+1 bytes (dfPing, of family) must then not cross the underlay,
// and must once the underlay's MTU is one higher too, so the overhead is
// exactly the underlay's (GeneveOverhead, or GeneveOverheadIPv6 on an IPv6
// underlay). It restores the MTUs at cleanup.
func checkExactOverhead(t *testing.T, n1, n2 *simNode, p1, p2 *ovstest.Pod, payload int, family string, dfPing func(payload, count int) error) {
	t.Helper()
	setUnderlayMTU := func(mtu int) {
		for _, n := range []*simNode{n1, n2} {
			mustExec(t, n.ovs, "", "ip", "link", "set", nicName, "mtu", strconv.Itoa(mtu))
		}
	}
	n1.setPodMTU(t, p1, n1.podMTU+1)
	n2.setPodMTU(t, p2, n2.podMTU+1)
	t.Cleanup(func() {
		setUnderlayMTU(n1.podMTU + n1.overhead())
		n1.setPodMTU(t, p1, n1.podMTU)
		n2.setPodMTU(t, p2, n2.podMTU)
	})
	if err := dfPing(payload+1, 1); err == nil {
		t.Errorf("a %d-byte %s packet crossed a %d-byte underlay with %d bytes of Geneve overhead",
			n1.podMTU+1, family, n1.podMTU+n1.overhead(), n1.overhead())
	}
	// OVS drops it silently (no ICMP "fragmentation needed" to the pod),
	// logging why.
	if b, err := os.ReadFile(n1.ovs.Dir + "/ovs-vswitchd.log"); err == nil {
		if m := regexp.MustCompile(`.*error sending .* on ` + nicName + `: Message too long`).Find(b); m != nil {
			t.Logf("node1 ovs-vswitchd: %s", m)
		}
	}
	setUnderlayMTU(n1.podMTU + n1.overhead() + 1)
	if err := dfPing(payload+1, 2); err != nil {
		t.Errorf("a %d-byte %s packet did not cross a %d-byte underlay: %v", n1.podMTU+1, family, n1.podMTU+n1.overhead()+1, err)
	}
}
