package agentapi

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
)

func ref(ns, name string) *agentv1.PodRef { return &agentv1.PodRef{Namespace: ns, Name: name} }

// TestBadInput: every malformed or unknown argument is a clear
// InvalidArgument or NotFound, never a panic.
func TestBadInput(t *testing.T) {
	f := newFixture()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"unknown table", func() error {
			_, err := f.srv.ListFlows(ctx, &agentv1.ListFlowsRequest{Table: "NoSuchTable"})
			return err
		}, codes.InvalidArgument, `unknown table "NoSuchTable"`},
		{"table out of range", func() error {
			_, err := f.srv.ListFlows(ctx, &agentv1.ListFlowsRequest{Table: "300"})
			return err
		}, codes.InvalidArgument, "unknown table"},
		{"flows of unknown pod", func() error {
			_, err := f.srv.ListFlows(ctx, &agentv1.ListFlowsRequest{Pod: ref("ns", "zz")})
			return err
		}, codes.NotFound, "pod ns/zz has no interface on this node"},
		{"flows of pod without name", func() error {
			_, err := f.srv.ListFlows(ctx, &agentv1.ListFlowsRequest{Pod: ref("ns", "")})
			return err
		}, codes.InvalidArgument, "pod name is required"},
		{"flows of unknown peer", func() error {
			_, err := f.srv.ListFlows(ctx, &agentv1.ListFlowsRequest{PeerNode: "node9"})
			return err
		}, codes.NotFound, `no peer node "node9"`},
		{"flows of unknown policy", func() error {
			_, err := f.srv.ListFlows(ctx, &agentv1.ListFlowsRequest{Policy: &agentv1.PolicyRef{Namespace: "ns", Name: "nope"}})
			return err
		}, codes.NotFound, "no realized rules of NetworkPolicy ns/nope"},
		{"flows of unknown rule", func() error {
			_, err := f.srv.ListFlows(ctx, &agentv1.ListFlowsRequest{Policy: &agentv1.PolicyRef{Namespace: "ns", Name: "allow-web",
				Rule: "egress/0"}})
			return err
		}, codes.NotFound, "rule egress/0"},
		{"unknown pod interfaces", func() error {
			_, err := f.srv.ListPodInterfaces(ctx, &agentv1.ListPodInterfacesRequest{Namespace: "ns", Pod: "zz"})
			return err
		}, codes.NotFound, "ns/zz"},
		{"trace malformed source IP", func() error {
			_, err := f.srv.Trace(ctx, &agentv1.TraceRequest{SourceIp: "10.0.0.300", DestinationPod: ref("ns", "b")})
			return err
		}, codes.InvalidArgument, `source IP "10.0.0.300" is not an IP address`},
		{"trace IPv6 from a pod without IPv6", func() error {
			_, err := f.srv.Trace(ctx, &agentv1.TraceRequest{SourcePod: ref("ns", "a"), DestinationIp: "fd00::1"})
			return err
		}, codes.FailedPrecondition, "pod ns/a has no IPv6 address"},
		{"trace mixed families", func() error {
			_, err := f.srv.Trace(ctx, &agentv1.TraceRequest{SourceIp: "fd00::9", DestinationIp: "192.0.2.7"})
			return err
		}, codes.InvalidArgument, "different IP families"},
		{"trace unknown source pod", func() error {
			_, err := f.srv.Trace(ctx, &agentv1.TraceRequest{SourcePod: ref("ns", "zz"), DestinationPod: ref("ns", "b")})
			return err
		}, codes.NotFound, "source: pod ns/zz"},
		{"trace without source", func() error {
			_, err := f.srv.Trace(ctx, &agentv1.TraceRequest{DestinationPod: ref("ns", "b")})
			return err
		}, codes.InvalidArgument, "a source (pod or IP) is required"},
		{"trace two sources", func() error {
			_, err := f.srv.Trace(ctx, &agentv1.TraceRequest{SourcePod: ref("ns", "a"), SourceIp: "10.10.0.3", DestinationPod: ref("ns", "b")})
			return err
		}, codes.InvalidArgument, "not both"},
		{"trace two destinations", func() error {
			_, err := f.srv.Trace(ctx, &agentv1.TraceRequest{SourcePod: ref("ns", "a"), DestinationPod: ref("ns", "b"), DestinationIp: "1.1.1.1"})
			return err
		}, codes.InvalidArgument, "exactly one destination"},
		{"trace unknown node", func() error {
			_, err := f.srv.Trace(ctx, &agentv1.TraceRequest{SourcePod: ref("ns", "a"), DestinationNode: "node9"})
			return err
		}, codes.NotFound, `no peer node "node9"`},
		{"trace bad protocol", func() error {
			_, err := f.srv.Trace(ctx, &agentv1.TraceRequest{SourcePod: ref("ns", "a"), DestinationPod: ref("ns", "b"), Protocol: "sctp"})
			return err
		}, codes.InvalidArgument, `protocol "sctp": want icmp, tcp or udp`},
		{"trace icmp with port", func() error {
			_, err := f.srv.Trace(ctx, &agentv1.TraceRequest{SourcePod: ref("ns", "a"), DestinationPod: ref("ns", "b"), DestinationPort: 80})
			return err
		}, codes.InvalidArgument, "ports need protocol tcp or udp"},
		{"trace port out of range", func() error {
			_, err := f.srv.Trace(ctx, &agentv1.TraceRequest{SourcePod: ref("ns", "a"), DestinationPod: ref("ns", "b"), Protocol: "tcp",
				DestinationPort: 70000})
			return err
		}, codes.InvalidArgument, "port out of range"},
		{"policies of unknown pod", func() error {
			_, err := f.srv.ListNetworkPolicies(ctx, &agentv1.ListNetworkPoliciesRequest{Pod: ref("ns", "zz")})
			return err
		}, codes.NotFound, "ns/zz"},
		{"watch interval too small", func() error {
			return f.srv.WatchPolicyVerdicts(&agentv1.WatchPolicyVerdictsRequest{IntervalMs: 10}, &fakeStream{ctx: ctx})
		}, codes.InvalidArgument, "below the minimum"},
		{"watch unknown policy", func() error {
			return f.srv.WatchPolicyVerdicts(&agentv1.WatchPolicyVerdictsRequest{Policy: &agentv1.PolicyRef{Name: "x"}}, &fakeStream{ctx: ctx})
		}, codes.NotFound, "default/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Errorf("got %v, want %v containing %q", err, tc.code, tc.msg)
			}
		})
	}
}

// A trace through the tunnel, as ovs-vswitchd 3.1 prints it (abridged):
// the peer flow sets tun_dst and the output port register.
const tunnelTrace = `Flow: icmp,in_port=3,vlan_tci=0x0000,dl_src=0a:58:0a:0a:00:03,dl_dst=02:00:0a:0a:00:01,nw_src=10.10.0.3,nw_dst=10.10.1.5

bridge("br-int")
----------------
 0. in_port=3, priority 190, cookie 0x102000000000001
    set_field:0x3/0xf->reg0
    goto_table:1
 4. ip, priority 200, cookie 0x101000000000001
    ct(table=5,zone=65520)
    drop
     -> A clone of the packet is forked to recirculate. The forked pipeline will be resumed at table 4.

Final flow: unchanged
Megaflow: recirc_id=0,eth,ip,in_port=3,nw_frag=no
Datapath actions: ct(zone=65520),recirc(0x1)

===============================================================================
recirc(0x1) - resume conntrack with ct_state=new|trk
===============================================================================

Flow: recirc_id=0x1,ct_state=new|trk,ct_zone=65520,eth,icmp,in_port=3

bridge("br-int")
----------------
    thaw
        Resuming from table 5
 8. ip,nw_src=10.10.0.3, priority 110, cookie 0x104000000000007
    goto_table:10
10. ip,nw_dst=10.10.1.0/24, priority 200, cookie 0x103000000000001
    set_field:02:00:0a:0a:00:01->eth_src
    set_field:aa:bb:cc:dd:ee:ff->eth_dst
    dec_ttl
    set_field:192.168.1.2->tun_dst
    set_field:0x1->reg1
    set_field:0x10000/0x10000->reg0
    goto_table:14
15. reg0=0x10000/0x10000, priority 200, cookie 0x101000000000001
    output:NXM_NX_REG1[]
     -> output port is 1

Final flow: recirc_id=0x1,eth,icmp,reg0=0x10003,reg1=0x1,tun_src=0.0.0.0,tun_dst=192.168.1.2,in_port=3
Megaflow: recirc_id=0x1,eth,ip,in_port=3,nw_dst=10.10.1.0/24
Datapath actions: set(tunnel(tun_id=0x0,dst=192.168.1.2,ttl=64,tp_dst=6081,flags(df|key))),2
`

// A trace through the tunnel over an IPv6 underlay, as ovs-vswitchd 3.1
// (userspace datapath) prints it (abridged): the peer flow sets
// tun_ipv6_dst; ovs-vswitchd routes the tunnel through br-phy, whose
// steps follow; the final flow carries the unset IPv4 tunnel fields too.
const tunnelTrace6 = `Flow: tcp6,in_port=4,dl_src=0a:58:0a:0a:00:04,dl_dst=02:00:0a:0a:00:01,ipv6_src=fd00:10:10::4,ipv6_dst=fd00:10:11::5

bridge("br-int")
----------------
 0. in_port=4, priority 190, cookie 0x102000000000001
    set_field:0x3/0xf->reg0
    goto_table:1
 4. ipv6, priority 200, cookie 0x101000000000001
    ct(table=5,zone=65520)
    drop
     -> A clone of the packet is forked to recirculate. The forked pipeline will be resumed at table 4.

Final flow: unchanged
Datapath actions: ct(zone=65520),recirc(0x1)

===============================================================================
recirc(0x1) - resume conntrack with ct_state=new|trk
===============================================================================

bridge("br-int")
----------------
    thaw
        Resuming from table 5
10. ipv6,ipv6_dst=fd00:10:11::/64, priority 200, cookie 0x103000000000001
    set_field:02:00:0a:0a:00:01->eth_src
    set_field:aa:bb:cc:dd:ee:ff->eth_dst
    dec_ttl
    set_field:2001:db8:2::2->tun_ipv6_dst
    set_field:0x1->reg1
    set_field:0x10000/0x10000->reg0
    goto_table:14
15. reg0=0x10000/0x10000, priority 200, cookie 0x101000000000001
    output:NXM_NX_REG1[]
     -> output port is 1
     -> output to native tunnel
     -> tunneling to 2001:db8:2::2 via br-phy
     -> tunneling from 12:62:b4:64:1e:48 2001:db8:2::1 to aa:55:aa:55:00:02 2001:db8:2::2

    bridge("br-phy")
    ----------------
     0. priority 0
        NORMAL
         -> no learned MAC for destination, flooding

Final flow: recirc_id=0x1,eth,tcp6,reg0=0x10003,reg1=0x1,tun_src=0.0.0.0,tun_dst=0.0.0.0,tun_ipv6_src=::,tun_ipv6_dst=2001:db8:2::2,tun_gbp_id=0,in_port=4
Megaflow: recirc_id=0x1,eth,tcp6,in_port=4,ipv6_dst=fd00:10:11::5
Datapath actions: set(eth(src=02:00:0a:0a:00:01,dst=aa:bb:cc:dd:ee:ff)),set(ipv6(hlimit=63)),ct(commit,zone=65520,mark=0/0xffffff00)
`

// tunnelTrace6NoRoute is tunnelTrace6 on a node without a route to the
// tunnel endpoint.
var tunnelTrace6NoRoute = tunnelTrace6[:strings.Index(tunnelTrace6, "     -> tunneling to")] + `     >> native tunnel routing failed

Final flow: recirc_id=0x1,eth,tcp6,reg0=0x10003,reg1=0x1,tun_src=0.0.0.0,tun_dst=0.0.0.0,tun_ipv6_src=::,tun_ipv6_dst=2001:db8:2::2,in_port=4
Datapath actions: set(eth(src=02:00:0a:0a:00:01,dst=aa:bb:cc:dd:ee:ff)),set(ipv6(hlimit=63)),ct(commit,zone=65520,mark=0/0xffffff00)
`

// TestTraceVerdictsIPv6Underlay parses canned traces through the tunnel
// over an IPv6 underlay: the verdict names the peer by its IPv6 node IP
// (tun_ipv6_dst), the underlay bridge's step names no pipeline table, and
// a routing failure of ovs-vswitchd is in the summary.
func TestTraceVerdictsIPv6Underlay(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		summary   string
	}{
		{"routed", tunnelTrace6, "tunneled to node node2 (2001:db8:2::2)"},
		{"no route", tunnelTrace6NoRoute, "tunneled to node node2 (2001:db8:2::2); but ovs-vswitchd did not send it: " +
			"native tunnel routing failed (check the underlay: ovs-appctl ovs/route/show, tnl/neigh/show)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture()
			_, cidr, _ := net.ParseCIDR("10.10.1.0/24")
			_, cidr6, _ := net.ParseCIDR("fd00:10:11::/64")
			f.srv.deps.Peers = fakePeers{{Name: "node2", PodCIDR: cidr, GatewayIP: net.ParseIP("10.10.1.1"), PodCIDRv6: cidr6,
				GatewayIPv6: net.ParseIP("fd00:10:11::1"), NodeIP: net.ParseIP("2001:db8:2::2")}}
			f.uctl.out = tc.out
			tr, err := f.srv.Trace(context.Background(), &agentv1.TraceRequest{SourcePod: ref("ns", "b"), DestinationIp: "fd00:10:11::5",
				Protocol: "tcp", DestinationPort: 80})
			if err != nil {
				t.Fatal(err)
			}
			if v := tr.Verdict; v.Kind != agentv1.TraceVerdict_TUNNEL || v.Node != "node2" || v.TunnelDst != "2001:db8:2::2" ||
				v.OutPortName != "tun0" || v.Summary != tc.summary {
				t.Errorf("verdict = %v, want TUNNEL to node2 (2001:db8:2::2), summary %q", v, tc.summary)
			}
			last := tr.Steps[len(tr.Steps)-1]
			if tc.name == "routed" && (len(tr.Steps) != 5 || last.TableId != 0 || last.TableName != "" || last.Note != "in bridge br-phy" ||
				!last.AfterRecirculation) {
				t.Errorf("steps = %v, want the last in bridge br-phy", tr.Steps)
			}
		})
	}
}

// TestTraceFlowsIPv6Only builds trace packets on an IPv6-only node (its
// pod CIDR and gateway IPv6, as the agent passes them in PodCIDR and
// GatewayIP; pods and the peer with IPv6 only, over an IPv6 underlay):
// traces without an address are IPv6, ICMPv6 echo requests use the
// ICMPv6 fields, and an IPv4 destination is refused.
func TestTraceFlowsIPv6Only(t *testing.T) {
	_, cidr, _ := net.ParseCIDR("fd00:10:10::/64")
	_, peerCIDR, _ := net.ParseCIDR("fd00:10:11::/64")
	gwMAC, _ := net.ParseMAC("02:00:0a:0a:00:01")
	macA, _ := net.ParseMAC("0a:58:00:00:00:03")
	macB, _ := net.ParseMAC("0a:58:00:00:00:04")
	uctl := &fakeUnixctl{out: "Datapath actions: drop\n"}
	pods := fakePods{
		{ContainerID: "ca", IfName: "eth0", PortName: "v-a", IPs: []netip.Addr{netip.MustParseAddr("fd00:10:10::3")}, MAC: macA, PodNamespace: "ns", PodName: "a"},
		{ContainerID: "cb", IfName: "eth0", PortName: "v-b", IPs: []netip.Addr{netip.MustParseAddr("fd00:10:10::4")}, MAC: macB, PodNamespace: "ns", PodName: "b"},
	}
	db := fakeOVSDB{ports: []ovsdb.PortInfo{{Name: "tun0", OFPort: 1}, {Name: "gw0", OFPort: 2}, {Name: "v-a", OFPort: 3}, {Name: "v-b", OFPort: 4}}}
	srv := New(Config{NodeName: "node1", Bridge: "br-int", PodCIDR: cidr, GatewayName: "gw0", GatewayIP: net.ParseIP("fd00:10:10::1"),
		GatewayMAC: gwMAC, GatewayOFPort: 2, TunnelOFPort: 1, Logger: klog.Background()},
		Deps{Switch: &fakeSwitch{}, Pipeline: &fakePipeline{}, Pods: pods, OVSDB: db, Unixctl: uctl,
			Peers: fakePeers{{Name: "node2", PodCIDRv6: peerCIDR, GatewayIPv6: net.ParseIP("fd00:10:11::1"), NodeIP: net.ParseIP("2001:db8:2::2")}}})
	for _, tc := range []struct {
		name string
		req  *agentv1.TraceRequest
		want string
	}{
		{"pod to pod", &agentv1.TraceRequest{SourcePod: ref("ns", "a"), DestinationPod: ref("ns", "b")},
			"in_port=3,icmp6,dl_src=0a:58:00:00:00:03,dl_dst=0a:58:00:00:00:04,ipv6_src=fd00:10:10::3,ipv6_dst=fd00:10:10::4,nw_ttl=64,icmpv6_type=128,icmpv6_code=0"},
		{"from peer pod", &agentv1.TraceRequest{SourceIp: "fd00:10:11::5", DestinationPod: ref("ns", "b"), Protocol: "tcp", SourcePort: 5, DestinationPort: 80},
			"in_port=1,tun_ipv6_src=2001:db8:2::2,tun_id=0,tcp6,dl_src=02:00:0a:0a:00:01,dl_dst=aa:bb:cc:dd:ee:ff,ipv6_src=fd00:10:11::5,ipv6_dst=fd00:10:10::4,nw_ttl=64,tcp_src=5,tcp_dst=80,tcp_flags=0x002"},
		{"from outside", &agentv1.TraceRequest{SourceIp: "2001:db8:9::9", DestinationPod: ref("ns", "b"), Protocol: "udp", DestinationPort: 53},
			"in_port=2,udp6,dl_src=02:00:0a:0a:00:01,dl_dst=0a:58:00:00:00:04,ipv6_src=2001:db8:9::9,ipv6_dst=fd00:10:10::4,nw_ttl=64,udp_src=40000,udp_dst=53"},
		{"to peer node", &agentv1.TraceRequest{SourcePod: ref("ns", "a"), DestinationNode: "node2"},
			"in_port=3,icmp6,dl_src=0a:58:00:00:00:03,dl_dst=02:00:0a:0a:00:01,ipv6_src=fd00:10:10::3,ipv6_dst=fd00:10:11::1,nw_ttl=64,icmpv6_type=128,icmpv6_code=0"},
		{"to this node", &agentv1.TraceRequest{SourcePod: ref("ns", "a"), DestinationNode: "node1"},
			"in_port=3,icmp6,dl_src=0a:58:00:00:00:03,dl_dst=02:00:0a:0a:00:01,ipv6_src=fd00:10:10::3,ipv6_dst=fd00:10:10::1,nw_ttl=64,icmpv6_type=128,icmpv6_code=0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := srv.Trace(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if tr.Flow != tc.want {
				t.Errorf("flow =\n%s\nwant\n%s", tr.Flow, tc.want)
			}
		})
	}
	_, err := srv.Trace(context.Background(), &agentv1.TraceRequest{SourcePod: ref("ns", "a"), DestinationIp: "10.10.1.5"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "pod ns/a has no IPv4 address") {
		t.Errorf("trace to IPv4 on an IPv6-only node: %v, want FailedPrecondition: pod ns/a has no IPv4 address", err)
	}
	info, err := srv.AgentInfo(context.Background(), &agentv1.AgentInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.PodCidr != "fd00:10:10::/64" || info.GatewayIp != "fd00:10:10::1" || len(info.PodCidrs) != 1 || len(info.GatewayIps) != 1 {
		t.Errorf("AgentInfo pod CIDR %s %v, gateway %s %v", info.PodCidr, info.PodCidrs, info.GatewayIp, info.GatewayIps)
	}
}

// TestTraceVerdicts parses canned ofproto/trace outputs: the tunnel verdict
// names the peer; a rule-cookie step names the rule; the trace flow
// addresses the gateway for routed traffic and the pod for pod-to-pod.
func TestTraceVerdicts(t *testing.T) {
	f := newFixture()
	f.pipe.rules[7] = pipeline.PolicyRule{ID: 7, Name: "ns/egress-out/egress/0", Direction: pipeline.Egress}
	f.uctl.out = tunnelTrace
	tr, err := f.srv.Trace(context.Background(), &agentv1.TraceRequest{SourcePod: ref("ns", "a"), DestinationIp: "10.10.1.5"})
	if err != nil {
		t.Fatal(err)
	}
	v := tr.Verdict
	if v.Kind != agentv1.TraceVerdict_TUNNEL || v.Node != "node2" || v.TunnelDst != "192.168.1.2" || v.OutPortName != "tun0" ||
		len(v.AllowedBy) != 1 || v.AllowedBy[0] != "ns/egress-out/egress/0" {
		t.Errorf("verdict = %v", v)
	}
	wantFlow := "in_port=3,icmp,dl_src=0a:58:0a:0a:00:03,dl_dst=02:00:0a:0a:00:01,nw_src=10.10.0.3,nw_dst=10.10.1.5,nw_ttl=64,icmp_type=8,icmp_code=0"
	if tr.Flow != wantFlow || f.uctl.args[len(f.uctl.args)-2] != "--ct-next" {
		t.Errorf("trace flow = %s (args %v), want %s with --ct-next", tr.Flow, f.uctl.args, wantFlow)
	}
	if len(tr.Steps) != 5 || tr.Steps[2].TableName != "EgressRule" || !tr.Steps[2].AfterRecirculation ||
		tr.Steps[2].Note != "allowed by policy rule ns/egress-out/egress/0" || tr.Steps[0].AfterRecirculation {
		t.Errorf("steps = %v", tr.Steps)
	}

	for _, tc := range []struct {
		name string
		req  *agentv1.TraceRequest
		want string
	}{
		{"pod to pod", &agentv1.TraceRequest{SourcePod: ref("ns", "a"), DestinationPod: ref("ns", "b"), Protocol: "udp", DestinationPort: 53},
			"in_port=3,udp,dl_src=0a:58:0a:0a:00:03,dl_dst=0a:58:0a:0a:00:04,nw_src=10.10.0.3,nw_dst=10.10.0.4,nw_ttl=64,udp_src=40000,udp_dst=53"},
		{"from peer pod", &agentv1.TraceRequest{SourceIp: "10.10.1.5", DestinationPod: ref("ns", "b"), Protocol: "tcp", SourcePort: 5, DestinationPort: 80},
			"in_port=1,tun_src=192.168.1.2,tun_id=0,tcp,dl_src=02:00:0a:0a:00:01,dl_dst=aa:bb:cc:dd:ee:ff,nw_src=10.10.1.5,nw_dst=10.10.0.4,nw_ttl=64,tcp_src=5,tcp_dst=80,tcp_flags=0x002"},
		{"from outside", &agentv1.TraceRequest{SourceIp: "8.8.8.8", DestinationPod: ref("ns", "b")},
			"in_port=2,icmp,dl_src=02:00:0a:0a:00:01,dl_dst=0a:58:0a:0a:00:04,nw_src=8.8.8.8,nw_dst=10.10.0.4,nw_ttl=64,icmp_type=8,icmp_code=0"},
		{"to node", &agentv1.TraceRequest{SourcePod: ref("ns", "a"), DestinationNode: "node2"},
			"in_port=3,icmp,dl_src=0a:58:0a:0a:00:03,dl_dst=02:00:0a:0a:00:01,nw_src=10.10.0.3,nw_dst=10.10.1.1,nw_ttl=64,icmp_type=8,icmp_code=0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.uctl.out = "Datapath actions: drop\n"
			tr, err := f.srv.Trace(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if tr.Flow != tc.want {
				t.Errorf("flow =\n%s\nwant\n%s", tr.Flow, tc.want)
			}
			if tr.Verdict.Kind != agentv1.TraceVerdict_DROP || tr.Verdict.DropReason != "no flow matched" {
				t.Errorf("verdict = %v", tr.Verdict)
			}
		})
	}
}

// TestWatchPolicyVerdicts streams counter deltas: nothing for the
// baseline, then one event per rule or isolation whose counters moved.
func TestWatchPolicyVerdicts(t *testing.T) {
	f := newFixture()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := &fakeStream{ctx: ctx, sent: make(chan struct{}, 1)}
	done := make(chan error, 1)
	f.pipe.setCounters(map[uint32]pipeline.Counters{7: {Packets: 10, Bytes: 1000}})
	f.pipe.setDropCounters(pipeline.Counters{Packets: 5, Bytes: 500})
	go func() {
		done <- f.srv.WatchPolicyVerdicts(&agentv1.WatchPolicyVerdictsRequest{IntervalMs: 100}, stream)
	}()
	time.Sleep(50 * time.Millisecond) // the baseline sample is taken at once
	f.pipe.setCounters(map[uint32]pipeline.Counters{7: {Packets: 13, Bytes: 1300}})
	f.pipe.setDropCounters(pipeline.Counters{Packets: 7, Bytes: 700})
	deadline := time.After(10 * time.Second)
	for {
		stream.mu.Lock()
		n := len(stream.evs)
		stream.mu.Unlock()
		if n >= 2 {
			break
		}
		select {
		case <-stream.sent:
		case <-deadline:
			t.Fatalf("got %d events, want 2", n)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	stream.mu.Lock()
	defer stream.mu.Unlock()
	var allowed, dropped *agentv1.PolicyVerdictEvent
	for _, ev := range stream.evs {
		switch ev.Kind {
		case agentv1.PolicyVerdictEvent_ALLOWED:
			allowed = ev
		case agentv1.PolicyVerdictEvent_DROPPED:
			dropped = ev
		}
	}
	if allowed == nil || allowed.NewPackets != 3 || allowed.NewBytes != 300 || allowed.TotalPackets != 13 ||
		allowed.Message != "rule ns/allow-web/ingress/0 allowed 3 new packets (300 bytes)" {
		t.Errorf("allowed event = %v", allowed)
	}
	if dropped == nil || dropped.NewPackets != 2 || dropped.Pod.Pod.GetName() != "b" ||
		dropped.Message != "pod ns/b dropped 2 ingress packets by isolation (200 bytes)" {
		t.Errorf("dropped event = %v", dropped)
	}
}

// TestDelta: counters that went down (re-installed flows) restart.
func TestDelta(t *testing.T) {
	for _, tc := range []struct{ cur, prev, want uint64 }{{5, 3, 2}, {3, 3, 0}, {2, 9, 2}} {
		if got := delta(tc.cur, tc.prev); got != tc.want {
			t.Errorf("delta(%d, %d) = %d, want %d", tc.cur, tc.prev, got, tc.want)
		}
	}
}

// TestAgentInfoFake: the OVS version falls back to unixctl "version".
func TestAgentInfoFake(t *testing.T) {
	f := newFixture()
	info, err := f.srv.AgentInfo(context.Background(), &agentv1.AgentInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.OvsVersion != "3.1.0" || info.LocalPodCount != 2 || !info.Ready || info.PolicyRuleCount != 1 ||
		len(info.PeerNodes) != 1 || info.Openflow.Generation != 3 {
		t.Errorf("AgentInfo = %v", info)
	}
}

// TestParseTraceBridges: steps nested under another bridge's header (the
// underlay bridge after native tunnelling) name no pipeline table and
// output to none of the main bridge's ports; a step indented less than
// that header is the main bridge's again.
func TestParseTraceBridges(t *testing.T) {
	out := `bridge("br-int")
----------------
10. ip, priority 200, cookie 0x103000000000001
    goto_table:15
15. reg0=0x10000/0x10000, priority 200, cookie 0x101000000000001
    output:1
     -> output to native tunnel

    bridge("br-phy")
    ----------------
     0. priority 0
        output:9
 5. priority 0, cookie 0x101000000000001
    drop
`
	tr := parseTrace(out, "br-int")
	var names []string
	for _, st := range tr.steps {
		names = append(names, st.TableName+"|"+st.Note)
	}
	want := []string{"L3Forwarding|", "Output|", "|in bridge br-phy", "ConntrackState|"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("steps (table|note) = %q, want %q", names, want)
	}
	if len(tr.outPorts) != 1 || tr.outPorts[0] != 1 {
		t.Errorf("output ports = %v, want [1] (br-phy's output:9 is not br-int's)", tr.outPorts)
	}
}
