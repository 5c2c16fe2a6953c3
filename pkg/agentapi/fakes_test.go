package agentapi

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/podnet"
)

type fakeSwitch struct {
	mu    sync.Mutex
	stats []openflow.FlowStats
}

func (f *fakeSwitch) DumpFlows(_ context.Context, filter openflow.FlowFilter) ([]openflow.FlowStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []openflow.FlowStats
	for _, s := range f.stats {
		if filter.Table == nil || *filter.Table == s.Flow.Table {
			out = append(out, s)
		}
	}
	return out, nil
}
func (f *fakeSwitch) State() openflow.State { return openflow.StateReady }
func (f *fakeSwitch) Generation() uint64    { return 3 }

func (f *fakeSwitch) set(stats ...openflow.FlowStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats = stats
}

type fakePipeline struct {
	mu       sync.Mutex
	rules    map[uint32]pipeline.PolicyRule
	counters map[uint32]pipeline.Counters
	policy   []*openflow.Flow
	drops    []pipeline.IsolationDrop
}

func (f *fakePipeline) IsolationDrops(context.Context) ([]pipeline.IsolationDrop, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.drops), nil
}

// setDropCounters sets the counters of every isolation drop.
func (f *fakePipeline) setDropCounters(c pipeline.Counters) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.drops {
		f.drops[i].Counters = c
	}
}

func (f *fakePipeline) BaseFlows() ([]*openflow.Flow, error) { return nil, nil }
func (f *fakePipeline) PodFlows(pipeline.PodInterface, openflow.Cookie) ([]*openflow.Flow, error) {
	return nil, nil
}
func (f *fakePipeline) PeerFlows(pipeline.PeerNode, openflow.Cookie) ([]*openflow.Flow, error) {
	return nil, nil
}
func (f *fakePipeline) PolicyFlows() ([]*openflow.Flow, error) { return f.policy, nil }
func (f *fakePipeline) PolicyRules() []uint32 {
	var ids []uint32
	for id := range f.rules {
		ids = append(ids, id)
	}
	return ids
}
func (f *fakePipeline) PolicyRule(id uint32) (pipeline.PolicyRule, bool) {
	r, ok := f.rules[id]
	return r, ok
}
func (f *fakePipeline) PolicyRuleStats(context.Context) (map[uint32]pipeline.Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[uint32]pipeline.Counters{}
	for k, v := range f.counters {
		out[k] = v
	}
	return out, nil
}
func (f *fakePipeline) PolicyRuleCookie(id uint32) openflow.Cookie {
	return openflow.MakeCookie(1, pipeline.CategoryPolicy, uint64(id))
}
func (f *fakePipeline) PolicyGeneration() uint32 { return 1 }

func (f *fakePipeline) setCounters(c map[uint32]pipeline.Counters) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counters = c
}

type fakePods []interfacestore.Interface

func (f fakePods) List() []interfacestore.Interface { return f }

type fakeOVSDB struct{ ports []ovsdb.PortInfo }

func (f fakeOVSDB) Connected() bool                            { return true }
func (f fakeOVSDB) OVSVersion(context.Context) (string, error) { return "", ovsdb.ErrVersionUnknown }
func (f fakeOVSDB) ListPorts(context.Context, string) ([]ovsdb.PortInfo, error) {
	return f.ports, nil
}

type fakePeers []pipeline.PeerNode

func (f fakePeers) PeerNodes() []pipeline.PeerNode { return f }

// fakeUnixctl answers ofproto/trace with a canned output and records the
// flow it was given.
type fakeUnixctl struct {
	out  string
	args []string
}

func (f *fakeUnixctl) Call(_ context.Context, cmd string, args ...string) (string, error) {
	f.args = append([]string{cmd}, args...)
	if cmd == "version" {
		return "ovs-vswitchd (Open vSwitch) 3.1.0\n", nil
	}
	return f.out, nil
}

// fakeStream collects the events of a server stream.
type fakeStream struct {
	grpc.ServerStream
	ctx  context.Context
	mu   sync.Mutex
	evs  []*agentv1.PolicyVerdictEvent
	sent chan struct{}
}

func (s *fakeStream) Context() context.Context { return s.ctx }
func (s *fakeStream) Send(ev *agentv1.PolicyVerdictEvent) error {
	s.mu.Lock()
	s.evs = append(s.evs, ev)
	s.mu.Unlock()
	select {
	case s.sent <- struct{}{}:
	default:
	}
	return nil
}

// fixture: node with pods a (10.10.0.3, ofport 3) and b (10.10.0.4 and
// fd00:10:10::4, ofport 4), gateway ofport 2, tunnel ofport 1, peer node2
// (10.10.1.0/24 and fd00:10:11::/64 at 192.168.1.2), rule 7
// "ns/allow-web/ingress/0" for b, and b ingress-isolated. The node's
// IPv6 pod CIDR is not configured (as before the agent passed it).
type fixture struct {
	srv  *Server
	sw   *fakeSwitch
	pipe *fakePipeline
	uctl *fakeUnixctl
}

func newFixture() *fixture {
	_, cidr, _ := net.ParseCIDR("10.10.0.0/24")
	_, peerCIDR, _ := net.ParseCIDR("10.10.1.0/24")
	_, peerCIDR6, _ := net.ParseCIDR("fd00:10:11::/64")
	gwMAC, _ := net.ParseMAC("02:00:0a:0a:00:01")
	bLocal := pipeline.LocalPod{IP: net.ParseIP("10.10.0.4"), OFPort: 4}
	iso := openflow.NewFlow(pipeline.IngressDefaultRule, 200).Cookie(uint64(openflow.MakeCookie(1, pipeline.CategoryPolicy, 0))).
		MatchProtocol(openflow.ProtocolIP).MatchReg(1, 4).Drop().MustDone()
	f := &fixture{sw: &fakeSwitch{}, uctl: &fakeUnixctl{}, pipe: &fakePipeline{
		rules: map[uint32]pipeline.PolicyRule{7: {ID: 7, Name: "ns/allow-web/ingress/0", Direction: pipeline.Ingress,
			Pods: []pipeline.LocalPod{bLocal}, Ports: []pipeline.PortRange{{Protocol: pipeline.ProtocolTCP, From: 80, To: 80}}}},
		counters: map[uint32]pipeline.Counters{7: {}},
		policy:   []*openflow.Flow{iso},
		drops:    []pipeline.IsolationDrop{{Direction: pipeline.Ingress, Pod: bLocal}},
	}}
	f.sw.set(openflow.FlowStats{Flow: iso})
	pods := fakePods{
		{ContainerID: "ca", IfName: "eth0", PortName: "v-a", IPs: []netip.Addr{netip.MustParseAddr("10.10.0.3")}, MAC: podnet.MACFromIP(net.ParseIP("10.10.0.3")), PodNamespace: "ns", PodName: "a"},
		{ContainerID: "cb", IfName: "eth0", PortName: "v-b", IPs: []netip.Addr{netip.MustParseAddr("10.10.0.4"), netip.MustParseAddr("fd00:10:10::4")},
			MAC: podnet.MACFromIP(net.ParseIP("10.10.0.4")), PodNamespace: "ns", PodName: "b"},
	}
	db := fakeOVSDB{ports: []ovsdb.PortInfo{{Name: "tun0", OFPort: 1}, {Name: "gw0", OFPort: 2}, {Name: "v-a", OFPort: 3},
		{Name: "v-b", OFPort: 4}}}
	f.srv = New(Config{NodeName: "node1", Bridge: "br-int", PodCIDR: cidr, GatewayName: "gw0", GatewayIP: net.ParseIP("10.10.0.1"),
		GatewayMAC: gwMAC, GatewayOFPort: 2, TunnelOFPort: 1, Logger: klog.Background()},
		Deps{Switch: f.sw, Pipeline: f.pipe, Pods: pods, OVSDB: db, Unixctl: f.uctl,
			Peers: fakePeers{{Name: "node2", PodCIDR: peerCIDR, NodeIP: net.ParseIP("192.168.1.2"), GatewayIP: net.ParseIP("10.10.1.1"),
				PodCIDRv6: peerCIDR6, GatewayIPv6: net.ParseIP("fd00:10:11::1")}}})
	return f
}
