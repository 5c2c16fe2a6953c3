package pipeline

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/weirnet/weir/pkg/openflow"
)

// Switch is what the pipeline needs from pkg/openflow (an *openflow.Switch).
type Switch interface {
	Sync(ctx context.Context, owner string, flows ...*openflow.Flow) error
	SyncOwners(ctx context.Context, owners map[string][]*openflow.Flow) error
	Uninstall(ctx context.Context, owner string) error
	DumpFlows(ctx context.Context, filter openflow.FlowFilter) ([]openflow.FlowStats, error)
}

// Config describes the node's fixed parts of the pipeline.
//
// The node serves IPv4 (GatewayIP and PodCIDR), IPv6 (GatewayIPv6 and
// PodCIDRv6) or both (dual-stack); at least one family is required. Each
// family's pair is set together or not at all. The flows of a family exist
// only with its configuration (docs/pipeline.md, "IPv6-only nodes").
type Config struct {
	// GatewayOFPort, GatewayMAC and GatewayIP describe the node's gateway
	// interface (an OVS internal port holding the pod CIDR's first IP).
	// GatewayIP is nil on an IPv6-only node.
	GatewayOFPort uint32
	GatewayMAC    net.HardwareAddr
	GatewayIP     net.IP
	// TunnelOFPort is the Geneve port, 0 if there is none yet.
	TunnelOFPort uint32
	// PodCIDR is the node's IPv4 pod subnet, nil on an IPv6-only node.
	PodCIDR *net.IPNet
	// GatewayIPv6 and PodCIDRv6, both set or both unset, turn on IPv6
	// (dual-stack, or IPv6-only without GatewayIP and PodCIDR): the
	// gateway's IPv6 address (also held by the gateway interface, whose
	// kernel is to answer Neighbor Discovery for it once ND is switched:
	// ipv6.go) and the node's IPv6 pod subnet, which must contain it.
	GatewayIPv6 net.IP
	PodCIDRv6   *net.IPNet
	// ServiceCIDR, if set, is the IPv4 ClusterIP range. A pod's packets to
	// it skip egress policy on their first pass (they leave through the
	// gateway to kube-proxy's DNAT); egress policy applies when they come
	// back from the gateway addressed to the endpoint (see policy.go).
	// Without the IPv4 configuration it makes no flow (no pod has IPv4).
	ServiceCIDR *net.IPNet
	// ServiceCIDRv6 is the IPv6 ClusterIP range, bypassed as ServiceCIDR
	// is for IPv4; without the IPv6 configuration it makes no flow.
	ServiceCIDRv6 *net.IPNet
	// CTZone is the conntrack zone of pod traffic.
	CTZone uint16
	// Round is the cookie round of this agent run.
	Round uint8
	// Proxy, if set, turns on Weir's own Service proxy for traffic from
	// local pods (proxy.go, ApplyServices); nil leaves Service traffic to
	// kube-proxy and the base flows exactly what they are without it.
	Proxy *ProxyConfig
}

func (c *Config) validate() error {
	switch {
	case c.GatewayOFPort == 0:
		return errors.New("pipeline: gateway OpenFlow port is required")
	case len(c.GatewayMAC) != 6:
		return errors.New("pipeline: gateway MAC is required")
	}
	if err := c.validateIPv4(); err != nil {
		return err
	}
	if err := c.validateIPv6(); err != nil {
		return err
	}
	if c.GatewayIP == nil && c.GatewayIPv6 == nil {
		return errors.New("pipeline: a gateway address of at least one family is required " +
			"(GatewayIP with PodCIDR, GatewayIPv6 with PodCIDRv6)")
	}
	return c.validateProxy()
}

// validateIPv4 checks the optional IPv4 half of the configuration.
func (c *Config) validateIPv4() error {
	if c.ServiceCIDR != nil {
		if c.ServiceCIDR.IP.To4() == nil {
			return fmt.Errorf("pipeline: Service CIDR %v is not an IPv4 prefix", c.ServiceCIDR)
		}
	}
	switch {
	case c.GatewayIP == nil && c.PodCIDR == nil:
		return nil // no IPv4 (an IPv6-only node)
	case c.GatewayIP == nil:
		return fmt.Errorf("pipeline: pod CIDR %v needs the gateway IPv4 address (GatewayIP)", c.PodCIDR)
	case c.GatewayIP.To4() == nil:
		return fmt.Errorf("pipeline: gateway IP %v is not an IPv4 address", c.GatewayIP)
	case c.PodCIDR == nil || !c.PodCIDR.Contains(c.GatewayIP):
		return fmt.Errorf("pipeline: pod CIDR %v must contain gateway IP %v", c.PodCIDR, c.GatewayIP)
	}
	return nil
}

// PodInterface is one local pod's attachment to the bridge.
type PodInterface struct {
	// Key identifies the attachment (container id + ifname).
	Key    string
	OFPort uint32
	// IPs are the pod's addresses, at most one per family.
	IPs []netip.Addr
	MAC net.HardwareAddr
}

// IPv4 returns the pod's IPv4 address as a net.IP (nil if it has none).
func (p PodInterface) IPv4() net.IP {
	for _, a := range p.IPs {
		if a.Is4() {
			return net.IP(a.AsSlice())
		}
	}
	return nil
}

// IPv6 returns the pod's IPv6 address as a net.IP (nil if it has none).
func (p PodInterface) IPv6() net.IP {
	for _, a := range p.IPs {
		if a.Is6() && !a.Is4In6() {
			return net.IP(a.AsSlice())
		}
	}
	return nil
}

// validate checks the pod on its own; PodFlows checks that the pipeline
// serves the families of its addresses.
func (p PodInterface) validate() error {
	switch {
	case p.Key == "":
		return errors.New("pipeline: pod interface key is required")
	case p.OFPort == 0:
		return fmt.Errorf("pipeline: pod %s: OpenFlow port is required", p.Key)
	case len(p.IPs) == 0:
		return fmt.Errorf("pipeline: pod %s: at least one IP address is required", p.Key)
	case len(p.MAC) != 6:
		return fmt.Errorf("pipeline: pod %s: MAC address is required", p.Key)
	}
	var n4, n6 int
	for _, a := range p.IPs {
		switch {
		case a.Is4():
			n4++
		case a.Is6() && !a.Is4In6():
			n6++
		default:
			return fmt.Errorf("pipeline: pod %s: invalid address %v", p.Key, a)
		}
	}
	if n4 > 1 || n6 > 1 {
		return fmt.Errorf("pipeline: pod %s: at most one address per family, got %v", p.Key, p.IPs)
	}
	return nil
}

// Pipeline composes and installs Weir's flows on one bridge.
type Pipeline struct {
	sw      Switch
	cfg     Config
	cookies *openflow.CookieAllocator

	mu    sync.Mutex
	pods  map[string]podState  // by Key
	peers map[string]peerState // by Name
	base  openflow.Cookie

	// peerMu serializes AddPeer and DeletePeer, so the overlap check and
	// the install of one peer cannot interleave with another's.
	peerMu sync.Mutex

	// policyMu serializes ApplyPolicy; policy is its state (policy.go),
	// read under mu.
	policyMu sync.Mutex
	policy   policyState

	// proxyMu serializes ApplyServices; svc is its state (proxy.go).
	proxyMu sync.Mutex
	svc     proxyState
}

type podState struct {
	pod    PodInterface
	cookie openflow.Cookie
}

const ownerBase = "base"

func podOwner(key string) string { return "pod/" + key }

// New returns a pipeline for cfg on sw. Nothing is installed until
// InstallBase.
func New(sw Switch, cfg Config) (*Pipeline, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &Pipeline{sw: sw, cfg: cfg, cookies: openflow.NewCookieAllocator(cfg.Round),
		pods: map[string]podState{}, peers: map[string]peerState{}, policy: newPolicyState(), svc: newProxyState()}
	c, err := p.cookies.New(CategoryBase)
	if err != nil {
		return nil, err
	}
	p.base = c
	return p, nil
}

// Renderer returns an openflow.Renderer that prints table names.
func Renderer() *openflow.Renderer { return &openflow.Renderer{TableName: TableName} }

// InstallBase installs (or re-syncs) the static part of the pipeline.
func (p *Pipeline) InstallBase(ctx context.Context) error {
	// Hold policyMu so that a concurrent ApplyPolicy cannot install a newer
	// policy generation that this sync would then roll back.
	p.policyMu.Lock()
	defer p.policyMu.Unlock()
	flows, err := p.BaseFlows()
	if err != nil {
		return err
	}
	if err := p.sw.Sync(ctx, ownerBase, flows...); err != nil {
		return fmt.Errorf("installing the base pipeline: %w", err)
	}
	return nil
}

// BaseFlows returns the static flows: the gateway and tunnel classifiers,
// the gateway's ARP responder and forwarding, conntrack, the hook tables'
// pass-through defaults, and output; with a tunnel port also the delivery of
// tunnelled traffic for the gateway IP; and the flows that send replies of
// connections from the gateway (kube-proxy's DNATed service traffic) back
// through the gateway (serviceFlows). The flows that match IPv4 or ARP for
// the gateway exist only with the IPv4 configuration, the IPv6 ones only
// with the IPv6 configuration (ipv6.go).
func (p *Pipeline) BaseFlows() ([]*openflow.Flow, error) {
	p.mu.Lock()
	gen := p.policy.generation
	p.mu.Unlock()
	return p.baseFlows(gen)
}

// baseFlows returns the base flows for policy generation gen (the ct_mark
// value that marks connections checked against the current policy).
func (p *Pipeline) baseFlows(gen uint32) ([]*openflow.Flow, error) {
	c := uint64(p.base)
	gwMAC, gwIP, zone := p.cfg.GatewayMAC, p.cfg.GatewayIP, p.cfg.CTZone
	nf := func(table uint8, prio uint16) *openflow.FlowBuilder { return openflow.NewFlow(table, prio).Cookie(c) }
	arp := openflow.ProtocolARP
	ip := openflow.ProtocolIP
	// v4 marks the flows of the IPv4 family: on an IPv6-only node (no
	// GatewayIP) they are left out, and the family-neutral flows keep the
	// places they have on an IPv4 or dual-stack node, whose flows and
	// their order do not change. (A left-out builder may carry the error
	// of its nil gateway IP; it is never built.)
	v4 := func(b *openflow.FlowBuilder) *openflow.FlowBuilder {
		if !p.ipv4Enabled() {
			return nil
		}
		return b
	}
	// With the proxy the pipeline passes through its tables and conntrack
	// applies NAT (proxyOn, proxy.go); without it these are the flows the
	// pipeline always had.
	afterARP, afterCTState, ctZone := ConntrackZone, EgressRule, p.conntrackZoneCT()
	if p.proxyOn() {
		afterARP, afterCTState = UnSNAT, ServiceLB
	}
	bs := []*openflow.FlowBuilder{
		// Classifier: mark the source; unknown ports are dropped.
		nf(Classifier, prioClassifierPort).MatchInPort(p.cfg.GatewayOFPort).LoadReg(sourceGatewayMark.load()).GotoTable(ARPResponder),
		nf(Classifier, prioMiss).Drop(),
		// SpoofGuard: only per-pod allow flows; anything else is dropped.
		nf(SpoofGuard, prioMiss).Drop(),
		// ARPResponder: pods asking for the gateway get the answer from
		// OVS; ARP for the gateway from elsewhere (replies to the node's own
		// requests) goes to the gateway port.
		v4(arpReply(nf(ARPResponder, prioARPRespond).MatchRegBits(sourcePodMark.match()), gwIP, gwMAC)),
		v4(nf(ARPResponder, prioARPForward).MatchProtocol(arp).MatchARPTpa(gwIP).Output(p.cfg.GatewayOFPort)),
		// A pod's ARP reply addressed to the gateway MAC goes to the
		// gateway whatever its target IP: the node's kernel asks with the
		// source address of the packet it is about to send (arp_announce
		// 0), e.g. the node IP when it answers a pod's connection to the
		// node IP or un-NATs a NodePort reply, and the reply's target is
		// then that address, not the gateway IP. SpoofGuard already holds
		// the reply's sender IP and MAC to the pod's own, so a pod can only
		// tell the node its own address. Above the per-pod target flows
		// (prioARPForward), so a reply to the gateway is never sent to a pod.
		v4(nf(ARPResponder, prioARPReplyToGateway).MatchRegBits(sourcePodMark.match()).
			MatchProtocol(arp).MatchARPOp(arpOpReply).MatchEthDst(gwMAC).Output(p.cfg.GatewayOFPort)),
		// Any other ARP is dropped; on an IPv6-only node all of it (a
		// pod's ARP does not even pass SpoofGuard there: PodFlows).
		nf(ARPResponder, prioARPDrop).MatchProtocol(arp).Drop(),
		nf(ARPResponder, prioMiss).GotoTable(afterARP),
		// Conntrack.
		v4(nf(ConntrackZone, prioConntrackZone).MatchProtocol(ip).CT(ctZone)),
		nf(ConntrackZone, prioMiss).Drop(),
		nf(ConntrackState, prioConntrackInvalid).MatchCTState(openflow.CTState{}.Trk(true).Inv(true)).Drop(),
		nf(ConntrackState, prioMiss).GotoTable(afterCTState),
		// Egress hooks: replies and related packets, and packets of
		// connections checked against the current policy generation, skip
		// policy (policy.go); everything else meets the rules.
		v4(nf(EgressRule, prioPolicyBypass).MatchProtocol(ip).MatchCTState(openflow.CTState{}.Trk(true).New(false).Rpl(true)).GotoTable(L3Forwarding)),
		v4(nf(EgressRule, prioPolicyBypass).MatchProtocol(ip).MatchCTState(openflow.CTState{}.Trk(true).New(false).Rel(true)).GotoTable(L3Forwarding)),
		v4(nf(EgressRule, prioPolicyCurrent).MatchProtocol(ip).MatchCTState(openflow.CTState{}.Trk(true).New(false)).
			MatchCTMark(gen<<ctMarkGenShift, ctMarkGenMask).GotoTable(L3Forwarding)),
		nf(EgressRule, prioMiss).GotoTable(EgressDefaultRule),
		nf(EgressDefaultRule, prioMiss).GotoTable(L3Forwarding),
		// L3Forwarding: per-pod routes are added with each pod.
		nf(L3Forwarding, prioMiss).GotoTable(L2Forwarding),
		// L2Forwarding: the gateway's MAC.
		nf(L2Forwarding, prioL2Forward).MatchEthDst(gwMAC).LoadReg(outPortField.load(uint64(p.cfg.GatewayOFPort))).
			LoadReg(outputFoundMark.load()).GotoTable(IngressRule),
		nf(L2Forwarding, prioMiss).GotoTable(IngressRule),
		// Ingress hooks, as egress; plus the node's own traffic to pods
		// (from the gateway port with the gateway IP as source: kubelet
		// probes), which policy never blocks.
		v4(nf(IngressRule, prioPolicyBypass).MatchProtocol(ip).MatchCTState(openflow.CTState{}.Trk(true).New(false).Rpl(true)).GotoTable(ConntrackCommit)),
		v4(nf(IngressRule, prioPolicyBypass).MatchProtocol(ip).MatchCTState(openflow.CTState{}.Trk(true).New(false).Rel(true)).GotoTable(ConntrackCommit)),
		v4(nf(IngressRule, prioPolicyNode).MatchProtocol(ip).MatchRegBits(sourceGatewayMark.match()).
			MatchSrcIP(gwIP).GotoTable(ConntrackCommit)),
		v4(nf(IngressRule, prioPolicyCurrent).MatchProtocol(ip).MatchCTState(openflow.CTState{}.Trk(true).New(false)).
			MatchCTMark(gen<<ctMarkGenShift, ctMarkGenMask).GotoTable(ConntrackCommit)),
		nf(IngressRule, prioMiss).GotoTable(IngressDefaultRule),
		nf(IngressDefaultRule, prioMiss).GotoTable(ConntrackCommit),
		// Commit new connections with the policy generation; re-commit
		// established ones checked again after a policy change (keeping
		// ct_mark bits 0..7: from gateway, from tunnel).
		v4(nf(ConntrackCommit, prioCommitNew).MatchProtocol(ip).MatchCTState(openflow.CTState{}.Trk(true).New(true)).
			CT(openflow.CTCommit(zone, openflow.SetCTMark(gen<<ctMarkGenShift, ctMarkGenMask))).GotoTable(Output)),
		v4(nf(ConntrackCommit, prioCommitCurrent).MatchProtocol(ip).MatchCTState(openflow.CTState{}.Trk(true).New(false).Rpl(false)).
			MatchCTMark(gen<<ctMarkGenShift, ctMarkGenMask).GotoTable(Output)),
		v4(nf(ConntrackCommit, prioRecommit).MatchProtocol(ip).MatchCTState(openflow.CTState{}.Trk(true).New(false).Est(true).Rpl(false)).
			CT(openflow.CTCommit(zone, openflow.SetCTMark(gen<<ctMarkGenShift, ctMarkGenMask))).GotoTable(Output)),
		nf(ConntrackCommit, prioMiss).GotoTable(Output),
		// Output to the chosen port; no port chosen means drop.
		nf(Output, prioOutput).MatchRegBits(outputFoundMark.match()).OutputReg(outPortField.bits()),
		nf(Output, prioMiss).Drop(),
	}
	if p.cfg.ServiceCIDR != nil && p.ipv4Enabled() {
		// A pod's packets to a ClusterIP: egress policy is applied after
		// kube-proxy's DNAT, when they come back from the gateway.
		bs = append(bs, nf(EgressRule, prioPolicyNode).MatchProtocol(ip).
			MatchRegBits(sourcePodMark.match()).
			MatchDstNet(p.cfg.ServiceCIDR).GotoTable(L3Forwarding))
	}
	if p.cfg.TunnelOFPort != 0 {
		bs = append(bs,
			// Traffic from other nodes carries no source to check: it goes
			// straight to conntrack.
			nf(Classifier, prioClassifierPort).MatchInPort(p.cfg.TunnelOFPort).
				LoadReg(sourceTunnelMark.load()).GotoTable(ConntrackZone),
			// Tunnelled traffic for this node's gateway IP (a remote pod
			// talking to this node): address it to the gateway port.
			v4(nf(L3Forwarding, prioL3Route).MatchProtocol(ip).MatchEthDst(globalVirtualMAC).MatchDstIP(gwIP).
				SetEthDst(gwMAC).GotoTable(L2Forwarding)),
		)
	}
	// Service replies back through the gateway (service.go).
	if p.ipv4Enabled() {
		bs = append(bs, p.serviceFlows(nf, gen)...)
	}
	// IPv6, if configured (ipv6.go); after every IPv4 flow, so an
	// IPv4-only node's flows are what they always were.
	if p.ipv6Enabled() {
		bs = append(bs, p.ipv6BaseFlows(nf, gen)...)
	}
	// The proxy's own base flows (proxy.go), last.
	if p.proxyOn() {
		bs = append(bs, p.proxyBaseFlows(nf)...)
	}
	return buildAll(slices.DeleteFunc(bs, func(b *openflow.FlowBuilder) bool { return b == nil }))
}

// ARP opcodes (arp_op).
const (
	arpOpRequest = 1
	arpOpReply   = 2
)

// arpReply completes b (an ARPResponder flow) to answer ARP requests for ip
// with mac: the request is turned into the reply in place and sent back out
// of the port it came in on.
func arpReply(b *openflow.FlowBuilder, ip net.IP, mac net.HardwareAddr) *openflow.FlowBuilder {
	return b.MatchProtocol(openflow.ProtocolARP).MatchARPOp(arpOpRequest).MatchARPTpa(ip).
		Move(openflow.Whole(openflow.FieldEthSrc), openflow.Whole(openflow.FieldEthDst)).
		SetEthSrc(mac).
		Load(openflow.Whole(openflow.FieldArpOp), arpOpReply).
		Move(openflow.Whole(openflow.FieldArpSha), openflow.Whole(openflow.FieldArpTha)).
		SetField(openflow.FieldArpSha, mac).
		Move(openflow.Whole(openflow.FieldArpSpa), openflow.Whole(openflow.FieldArpTpa)).
		Action(openflow.SetIPField(openflow.FieldArpSpa, ip)).
		Output(openflow.PortInPort)
}

func buildAll(bs []*openflow.FlowBuilder) ([]*openflow.Flow, error) {
	out := make([]*openflow.Flow, 0, len(bs))
	for _, b := range bs {
		f, err := b.Done()
		if err != nil {
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		out = append(out, f)
	}
	return out, nil
}

// PodFlows returns the flows of one local pod: classifier, spoof guard
// (IP+MAC, ARP sender), ARP forwarding by target, L3 route for traffic sent
// to the gateway MAC, and L2 forwarding to its port. With a tunnel port
// (Config.TunnelOFPort) there is one more: the L3 route for traffic from
// other nodes, which arrives addressed to GlobalVirtualMAC. A pod with an
// IPv6 address (which needs the IPv6 configuration) also gets its IPv6
// spoof guard and L3 route (podIPv6Flows in ipv6.go). A pod without an
// IPv4 address (an IPv6-only pod) gets only the family-neutral classifier
// and L2 flows and its IPv6 flows: its IPv4 and ARP meet SpoofGuard's drop.
// Each address's family must be configured in the pipeline.
func (p *Pipeline) PodFlows(pod PodInterface, cookie openflow.Cookie) ([]*openflow.Flow, error) {
	if err := pod.validate(); err != nil {
		return nil, err
	}
	ip, ip6 := pod.IPv4(), pod.IPv6()
	if ip != nil && !p.ipv4Enabled() {
		return nil, fmt.Errorf("pipeline: pod %s has IPv4 address %v but the pipeline has no IPv4 configuration", pod.Key, ip)
	}
	if ip6 != nil && !p.ipv6Enabled() {
		return nil, fmt.Errorf("pipeline: pod %s has IPv6 address %v but the pipeline has no IPv6 configuration", pod.Key, ip6)
	}
	c := uint64(cookie)
	nf := func(table uint8, prio uint16) *openflow.FlowBuilder { return openflow.NewFlow(table, prio).Cookie(c) }
	bs := []*openflow.FlowBuilder{
		nf(Classifier, prioClassifierPod).MatchInPort(pod.OFPort).
			LoadReg(sourcePodMark.load()).GotoTable(SpoofGuard),
	}
	if ip != nil {
		bs = append(bs,
			nf(SpoofGuard, prioSpoofGuardPod).MatchInPort(pod.OFPort).MatchProtocol(openflow.ProtocolIP).MatchEthSrc(pod.MAC).MatchSrcIP(ip).
				GotoTable(ARPResponder),
			nf(SpoofGuard, prioSpoofGuardPod).MatchInPort(pod.OFPort).MatchProtocol(openflow.ProtocolARP).MatchEthSrc(pod.MAC).MatchARPSpa(ip).MatchARPSha(pod.MAC).
				GotoTable(ARPResponder),
			nf(ARPResponder, prioARPForward).MatchProtocol(openflow.ProtocolARP).MatchARPTpa(ip).Output(pod.OFPort),
			nf(L3Forwarding, prioL3Route).MatchProtocol(openflow.ProtocolIP).MatchEthDst(p.cfg.GatewayMAC).MatchDstIP(ip).
				SetEthSrc(p.cfg.GatewayMAC).SetEthDst(pod.MAC).DecTTL().GotoTable(L2Forwarding))
	}
	bs = append(bs, nf(L2Forwarding, prioL2Forward).MatchEthDst(pod.MAC).LoadReg(outPortField.load(uint64(pod.OFPort))).
		LoadReg(outputFoundMark.load()).GotoTable(IngressRule))
	if ip != nil && p.cfg.TunnelOFPort != 0 {
		// From another node: the sending node already routed the packet
		// (and decremented its TTL); only the MACs are rewritten here.
		bs = append(bs, nf(L3Forwarding, prioL3Route).MatchProtocol(openflow.ProtocolIP).MatchEthDst(globalVirtualMAC).MatchDstIP(ip).
			SetEthSrc(p.cfg.GatewayMAC).SetEthDst(pod.MAC).GotoTable(L2Forwarding))
	}
	if ip6 != nil {
		bs = append(bs, p.podIPv6Flows(nf, pod, ip6)...)
	}
	return buildAll(bs)
}

// AddPod installs (or updates) the flows of a local pod, atomically.
func (p *Pipeline) AddPod(ctx context.Context, pod PodInterface) error {
	p.mu.Lock()
	st, ok := p.pods[pod.Key]
	p.mu.Unlock()
	cookie := st.cookie
	if !ok {
		var err error
		if cookie, err = p.cookies.New(CategoryPod); err != nil {
			return err
		}
	}
	flows, err := p.PodFlows(pod, cookie)
	if err != nil {
		return err
	}
	if err := p.sw.Sync(ctx, podOwner(pod.Key), flows...); err != nil {
		return fmt.Errorf("installing flows of pod %s: %w", pod.Key, err)
	}
	p.mu.Lock()
	p.pods[pod.Key] = podState{pod: pod, cookie: cookie}
	p.mu.Unlock()
	return nil
}

// DeletePod removes a pod's flows; deleting an unknown pod is not an error.
func (p *Pipeline) DeletePod(ctx context.Context, key string) error {
	if err := p.sw.Uninstall(ctx, podOwner(key)); err != nil {
		return fmt.Errorf("removing flows of pod %s: %w", key, err)
	}
	p.mu.Lock()
	delete(p.pods, key)
	p.mu.Unlock()
	return nil
}

// Pods returns the keys of the pods with installed flows, sorted.
func (p *Pipeline) Pods() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.pods))
}

// CheckPod verifies that the switch holds every flow of the pod, comparing
// what it reads back (table, priority, match) with what the pipeline wants.
func (p *Pipeline) CheckPod(ctx context.Context, key string) error {
	p.mu.Lock()
	st, ok := p.pods[key]
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("pod %s has no flows in the pipeline", key)
	}
	want, err := p.PodFlows(st.pod, st.cookie)
	if err != nil {
		return err
	}
	return p.checkFlows(ctx, "pod "+key, st.cookie, want)
}

// checkFlows verifies that the switch holds every flow of want under cookie
// (compared by table, priority and match); what names the owner in errors.
func (p *Pipeline) checkFlows(ctx context.Context, what string, cookie openflow.Cookie, want []*openflow.Flow) error {
	got, err := p.sw.DumpFlows(ctx, openflow.FlowFilter{Cookie: uint64(cookie), CookieMask: ^uint64(0)})
	if err != nil {
		return fmt.Errorf("reading flows of %s: %w", what, err)
	}
	have := map[string]bool{}
	for _, g := range got {
		have[g.Flow.Key()] = true
	}
	r := Renderer()
	for _, w := range want {
		if !have[w.Key()] {
			return fmt.Errorf("flow missing for %s: %s", what, r.Flow(w))
		}
	}
	return nil
}
