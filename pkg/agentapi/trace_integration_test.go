package agentapi_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/agentapi"
	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/unixctl"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

// tunnelNode is a simulated node for traces through the tunnel: a private
// OVS with br-int, the gateway gw0 (ofport 2), the Geneve port tun0
// (ofport 1) and pods a (ofport 3) and b (ofport 4) as internal ports
// (ofproto/trace needs only the ports), the real pipeline of the node's
// families with the pods and the peer node2 installed, and the API over it.
type tunnelNode struct {
	ovs  *ovstest.Instance
	c    agentv1.AgentServiceClient
	peer pipeline.PeerNode
	sw   *openflow.Switch
	pipe *pipeline.Pipeline
}

// The addresses of the trace tests: the local node's pod CIDRs
// 10.10.0.0/24 and fd00:10:10::/64, node2's 10.10.1.0/24 and
// fd00:10:11::/64.
var (
	localV4 = netip.MustParsePrefix("10.10.0.0/24")
	localV6 = netip.MustParsePrefix("fd00:10:10::/64")
	peerV4  = netip.MustParsePrefix("10.10.1.0/24")
	peerV6  = netip.MustParsePrefix("fd00:10:11::/64")
)

// host returns the address with last byte n in p.
func host(p netip.Prefix, n byte) netip.Addr {
	b := p.Addr().AsSlice()
	b[len(b)-1] = n
	a, _ := netip.AddrFromSlice(b)
	return a
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func stdIP(a netip.Addr) net.IP { return a.AsSlice() }

// Families of a test node.
type families struct{ v4, v6 bool }

var (
	ipv4Only  = families{v4: true}
	dualStack = families{v4: true, v6: true}
	ipv6Only  = families{v6: true}
)

// underlayAddr returns the local underlay address (with its prefix
// length) for a peer node IP: 192.168.1.1/24 or 2001:db8:2::1/64.
func underlayAddr(nodeIP string) string {
	if strings.Contains(nodeIP, ":") {
		return "2001:db8:2::1/64"
	}
	return "192.168.1.1/24"
}

// newTunnelNode builds the node with the pod families fam (the peer's are
// the same); the peer's tunnel endpoint is nodeIP (the underlay's
// family). With underlay, the node has its underlay address on br-phy
// (so ovs-vswitchd routes the tunnel, as on a node with the userspace
// datapath) and knows the endpoint's MAC (tnl/neigh/set: the test sends no
// traffic to learn it); without, ovs-vswitchd has no route to the
// endpoint. The API gets the node's addresses as the agent passes them:
// the first family's pod CIDR and gateway in PodCIDR and GatewayIP (IPv6
// on an IPv6-only node), the IPv6 ones of a dual-stack node in PodCIDRv6
// and GatewayIPv6.
//
// With a proxy, the pipeline has px as its Config.Proxy and the API gets
// the proxy's sources (px.services for the model as applied).
func newTunnelNode(t *testing.T, fam families, nodeIP string, underlay bool, px ...*testProxy) *tunnelNode {
	t.Helper()
	ovs := ovstest.Start(t)
	ovs.AddBridge(t, "br-int")
	ovs.MustVsctl(t, "add-port", "br-int", "gw0", "--", "set", "Interface", "gw0", "type=internal", "ofport_request=2", `mac="`+gwMAC+`"`)
	ovs.MustVsctl(t, "add-port", "br-int", "tun0", "--", "set", "Interface", "tun0", "type=geneve", "ofport_request=1",
		"options:remote_ip=flow", "options:key=flow", "options:csum=true")
	for i, name := range []string{"v-a", "v-b"} {
		ovs.MustVsctl(t, "add-port", "br-int", name, "--", "set", "Interface", name, "type=internal", fmt.Sprintf("ofport_request=%d", 3+i))
	}
	if underlay {
		ovs.MustVsctl(t, "add-br", "br-phy", "--", "set", "Bridge", "br-phy", "datapath_type=netdev", "fail_mode=standalone")
		addr := []string{"addr", "add", underlayAddr(nodeIP), "dev", "br-phy"}
		if strings.Contains(nodeIP, ":") {
			addr = append(append([]string{"-6"}, addr...), "nodad")
		}
		for _, args := range [][]string{addr, {"link", "set", "br-phy", "up"}} {
			if out, err := ovs.Exec("", "ip", args...); err != nil {
				t.Fatalf("ip %v: %v: %s", args, err, out)
			}
		}
		ovs.MustAppctl(t, "tnl/neigh/set", "br-phy", nodeIP, "aa:55:aa:55:00:02")
	}
	sw, err := openflow.Open(openflow.Config{MgmtSocket: ovs.MgmtSocket("br-int"), RetryInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Close)
	ctx := testctx.Timeout(t, time.Minute)
	if err := sw.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC(gwMAC)
	pcfg := pipeline.Config{GatewayOFPort: 2, GatewayMAC: mac, TunnelOFPort: 1, CTZone: 65520, Round: 1}
	acfg := agentapi.Config{NodeName: "node1", Bridge: "br-int", DatapathType: "netdev", GatewayName: "gw0", GatewayMAC: mac,
		GatewayOFPort: 2, TunnelOFPort: 1, Logger: klog.Background()}
	peer := pipeline.PeerNode{Name: "node2", NodeIP: net.ParseIP(nodeIP)}
	if fam.v4 {
		pcfg.GatewayIP, pcfg.PodCIDR = stdIP(host(localV4, 1)), ipNet(localV4)
		acfg.PodCIDR, acfg.GatewayIP = ipNet(localV4), stdIP(host(localV4, 1))
		peer.PodCIDR, peer.GatewayIP = ipNet(peerV4), stdIP(host(peerV4, 1))
	}
	if fam.v6 {
		pcfg.GatewayIPv6, pcfg.PodCIDRv6 = stdIP(host(localV6, 1)), ipNet(localV6)
		if fam.v4 {
			acfg.PodCIDRv6, acfg.GatewayIPv6 = ipNet(localV6), stdIP(host(localV6, 1))
		} else {
			acfg.PodCIDR, acfg.GatewayIP = ipNet(localV6), stdIP(host(localV6, 1))
		}
		peer.PodCIDRv6, peer.GatewayIPv6 = ipNet(peerV6), stdIP(host(peerV6, 1))
	}
	if len(px) > 0 {
		pcfg.Proxy = &px[0].cfg
	}
	pipe, err := pipeline.New(sw, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := pipe.InstallBase(ctx); err != nil {
		t.Fatal(err)
	}
	var atts tunnelPods
	for i, name := range []string{"a", "b"} {
		n := byte(3 + i)
		var ips []netip.Addr
		if fam.v4 {
			ips = append(ips, host(localV4, n))
		}
		if fam.v6 {
			ips = append(ips, host(localV6, n))
		}
		hw, _ := net.ParseMAC(fmt.Sprintf("0a:58:0a:0a:00:%02x", n))
		if err := pipe.AddPod(ctx, pipeline.PodInterface{Key: name, OFPort: uint32(n), IPs: ips, MAC: hw}); err != nil {
			t.Fatal(err)
		}
		atts = append(atts, interfacestore.Interface{ContainerID: "c-" + name, IfName: "eth0", PortName: "v-" + name, IPs: ips, MAC: hw,
			PodNamespace: "ns", PodName: name})
	}
	if err := pipe.AddPeer(ctx, peer); err != nil {
		t.Fatal(err)
	}
	db, err := ovsdb.Connect(ctx, ovs.DBSocket(), klog.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.SetFlowTableNames(ctx, "br-int", pipeline.TableNames()); err != nil {
		t.Fatal(err)
	}
	n := &node{ovs: ovs, sw: sw, pipe: pipe, db: db}
	deps := agentapi.Deps{Switch: sw, Pipeline: pipe, Pods: atts, OVSDB: db, Peers: tunnelPeers{peer},
		Unixctl: unixctl.New(ovs.Dir, "ovs-vswitchd")}
	if len(px) > 0 {
		deps.Services, deps.ServiceGroups, deps.Groups = &px[0].services, pipe, sw
		deps.Audit.Groups = sw
	}
	c, _ := n.serve(t, acfg, deps)
	return &tunnelNode{ovs: ovs, c: c, peer: peer, sw: sw, pipe: pipe}
}

// testProxy is the proxy configuration of a test node and the model its
// test applied (the controller's Services()).
type testProxy struct {
	cfg      pipeline.ProxyConfig
	services servicesModel
}

type servicesModel []pipeline.ServicePort

func (m *servicesModel) Services() []pipeline.ServicePort { return *m }

// apply realizes sps on n's pipeline and makes them the model.
func (px *testProxy) apply(t *testing.T, n *tunnelNode, sps ...pipeline.ServicePort) {
	t.Helper()
	if err := n.pipe.ApplyServices(testctx.Timeout(t, time.Minute), sps, nil); err != nil {
		t.Fatalf("ApplyServices: %v", err)
	}
	px.services = append(px.services, sps...)
}

type tunnelPods []interfacestore.Interface

func (p tunnelPods) List() []interfacestore.Interface { return p }

type tunnelPeers []pipeline.PeerNode

func (p tunnelPeers) PeerNodes() []pipeline.PeerNode { return p }

// TestTraceThroughTunnel traces over a real bridge and pipeline between
// local pods and the pods and gateway of a peer node, table-driven over
// the underlay's family (the peer's node IP: tun_dst or tun_ipv6_dst) and
// the node's families (IPv4-only, dual-stack, IPv6-only): the verdict
// names the peer and its tunnel endpoint, and ovs-vswitchd really tunnels
// the packet through the underlay bridge (whose steps name no pipeline
// table); a packet from the peer's pods enters through the tunnel from
// that endpoint (tun_src or tun_ipv6_src); traces without an address pick
// IPv4 where both ends have it, else IPv6. Without an underlay route the
// verdict still names the peer and says that ovs-vswitchd did not send
// the packet.
func TestTraceThroughTunnel(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fam      families
		nodeIP   string
		underlay bool
	}{
		{"IPv4-only over an IPv4 underlay", ipv4Only, "192.168.1.2", true},
		{"dual-stack over an IPv4 underlay", dualStack, "192.168.1.2", true},
		{"dual-stack over an IPv6 underlay", dualStack, "2001:db8:2::2", true},
		{"IPv6-only over an IPv6 underlay", ipv6Only, "2001:db8:2::2", true},
		{"IPv6-only over an IPv4 underlay", ipv6Only, "192.168.1.2", true},
		{"IPv6-only, no route to the IPv6 endpoint", ipv6Only, "2001:db8:2::2", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTunnelNode(t, tc.fam, tc.nodeIP, tc.underlay)
			ctx := testctx.Timeout(t, time.Minute)
			trace := func(req *agentv1.TraceRequest) *agentv1.TraceResponse {
				t.Helper()
				tr, err := n.c.Trace(ctx, req)
				if err != nil {
					t.Fatalf("Trace(%v): %v", req, err)
				}
				return tr
			}
			// checkTunnel checks a trace into the tunnel to node2.
			checkTunnel := func(what string, tr *agentv1.TraceResponse) {
				t.Helper()
				v := tr.Verdict
				if v.Kind != agentv1.TraceVerdict_TUNNEL || v.Node != "node2" || v.TunnelDst != tc.nodeIP || v.OutPort != 1 ||
					v.OutPortName != "tun0" || !strings.HasPrefix(v.Summary, "tunneled to node node2 ("+tc.nodeIP+")") {
					t.Errorf("trace %s = %v (flow %s)\n%s", what, v, tr.Flow, tr.RawOutput)
				}
				if !tc.underlay {
					if !strings.Contains(v.Summary, "ovs-vswitchd did not send it: native tunnel routing failed") {
						t.Errorf("trace %s without an underlay route: summary %q lacks the routing failure", what, v.Summary)
					}
					return
				}
				if strings.Contains(v.Summary, "did not send") ||
					!strings.Contains(tr.RawOutput, "tunneling to "+tc.nodeIP+" via br-phy") {
					t.Errorf("trace %s: not tunnelled through br-phy (summary %q)\n%s", what, v.Summary, tr.RawOutput)
				}
				last := tr.Steps[len(tr.Steps)-1]
				if last.TableName != "" || last.Note != "in bridge br-phy" {
					t.Errorf("trace %s: the underlay bridge's step is %v, want no table name and a note naming br-phy", what, last)
				}
			}
			tunSrc := "tun_src="
			if strings.Contains(tc.nodeIP, ":") {
				tunSrc = "tun_ipv6_src="
			}
			type family struct {
				local, peer netip.Prefix
				dstField    string
			}
			var fams []family // the first family first
			if tc.fam.v4 {
				fams = append(fams, family{localV4, peerV4, "nw_dst="})
			}
			if tc.fam.v6 {
				fams = append(fams, family{localV6, peerV6, "ipv6_dst="})
			}
			for _, f := range fams {
				remote := host(f.peer, 5).String()
				checkTunnel("a -> "+remote, trace(&agentv1.TraceRequest{SourcePod: pod("a"), DestinationIp: remote, Protocol: "tcp",
					DestinationPort: 80}))
				tr := trace(&agentv1.TraceRequest{SourceIp: remote, DestinationPod: pod("b"), Protocol: "udp", DestinationPort: 53})
				if v := tr.Verdict; v.Kind != agentv1.TraceVerdict_OUTPUT || v.OutPort != 4 || v.Pod.GetName() != "b" ||
					!strings.HasPrefix(tr.Flow, "in_port=1,"+tunSrc+tc.nodeIP+",") ||
					!strings.Contains(tr.Flow, f.dstField+host(f.local, 4).String()) {
					t.Errorf("trace %s -> b = %v (flow %s)\n%s", remote, v, tr.Flow, tr.RawOutput)
				}
			}

			first := fams[0]
			tr := trace(&agentv1.TraceRequest{SourcePod: pod("a"), DestinationPod: pod("b")})
			if v := tr.Verdict; v.Kind != agentv1.TraceVerdict_OUTPUT || v.OutPort != 4 || v.Pod.GetName() != "b" ||
				!strings.Contains(tr.Flow, first.dstField+host(first.local, 4).String()) {
				t.Errorf("trace a -> b = %v (flow %s)\n%s", v, tr.Flow, tr.RawOutput)
			}
			tr = trace(&agentv1.TraceRequest{SourcePod: pod("a"), DestinationNode: "node2"})
			checkTunnel("a -> node/node2", tr)
			if !strings.Contains(tr.Flow, first.dstField+host(first.peer, 1).String()) {
				t.Errorf("trace a -> node/node2: flow %s, want the peer's gateway %s", tr.Flow, host(first.peer, 1))
			}

			info, err := n.c.AgentInfo(ctx, &agentv1.AgentInfoRequest{})
			if err != nil {
				t.Fatal(err)
			}
			var wantCIDRs, wantGWs []string
			for _, f := range fams {
				wantCIDRs, wantGWs = append(wantCIDRs, f.local.String()), append(wantGWs, host(f.local, 1).String())
			}
			if strings.Join(info.PodCidrs, ",") != strings.Join(wantCIDRs, ",") || info.PodCidr != wantCIDRs[0] ||
				strings.Join(info.GatewayIps, ",") != strings.Join(wantGWs, ",") || info.GatewayIp != wantGWs[0] {
				t.Errorf("AgentInfo pod CIDRs %v (%s), gateways %v (%s); want %v, %v", info.PodCidrs, info.PodCidr, info.GatewayIps,
					info.GatewayIp, wantCIDRs, wantGWs)
			}
			pods, err := n.c.ListPodInterfaces(ctx, &agentv1.ListPodInterfacesRequest{Pod: "b"})
			if err != nil {
				t.Fatal(err)
			}
			if len(pods.Interfaces) != 1 || pods.Interfaces[0].Ip != host(first.local, 4).String() {
				t.Errorf("ListPodInterfaces(b) = %v, want IP %s", pods.Interfaces, host(first.local, 4))
			}
		})
	}
}
