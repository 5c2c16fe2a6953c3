package pipeline

import (
	"errors"
	"fmt"
	"net"

	"github.com/weirnet/weir/pkg/openflow"
)

// IPv6 (dual-stack). With Config.GatewayIPv6 and Config.PodCIDRv6 set, the
// pipeline carries IPv6 beside IPv4: every base flow that matches "ip" on
// the way through conntrack, policy bypass and commit has an "ipv6" twin,
// and a pod with an IPv6 address gets an IPv6 spoof guard and an L3 route
// for traffic sent to the gateway MAC. Same-subnet traffic between pods
// switches on the destination MAC in L2Forwarding, as for IPv4.
//
// IPv6-only: without Config.GatewayIP and Config.PodCIDR the base flows
// are the family-neutral ones (classifier, misses, the gateway MAC's L2
// flow, output, the drop of all ARP) and the IPv6 ones below; no flow
// matches IPv4 or answers ARP, so a pod's IPv4 and ARP meet SpoofGuard's
// drop and the node's IPv4 ConntrackZone's. A pod may then have an IPv6
// address only (PodFlows), as it may on a dual-stack node.
//
// Router Advertisements and Redirects from pods are dropped in SpoofGuard.
//
// Neighbor Discovery (the ARP of IPv6) is switched like ARP, never through
// conntrack. SpoofGuard lets a pod's Neighbor Solicitation pass only with
// the pod's MAC as source and as nd_sll, from the pod's IPv6 or a
// link-local address, and its Advertisement only for the pod's own IPv6
// (nd_target) with the pod's MAC (nd_tll); any other NS or NA from a pod is
// dropped. ARPResponder sends an NS to the owner of its nd_target (a pod,
// or the gateway port, whose kernel answers for the gateway's IPv6: OVS
// cannot build an NA, as it lacks nd_reserved and nd_options_type) and an
// NA to the owner of its destination MAC.

// ICMPv6 types the pipeline matches.
const (
	icmp6RouterAdvert   = 134
	icmp6NeighborSolict = 135
	icmp6NeighborAdvert = 136
	icmp6Redirect       = 137
)

func (c *Config) validateIPv6() error {
	switch {
	case c.ServiceCIDRv6 != nil && (c.ServiceCIDRv6.IP.To4() != nil || len(c.ServiceCIDRv6.Mask) != net.IPv6len):
		return fmt.Errorf("pipeline: IPv6 Service CIDR %v is not an IPv6 prefix", c.ServiceCIDRv6)
	case c.GatewayIPv6 == nil && c.PodCIDRv6 == nil:
		return nil
	case c.GatewayIPv6 == nil || c.PodCIDRv6 == nil:
		return errors.New("pipeline: gateway IPv6 address and IPv6 pod CIDR must be set together")
	case c.GatewayIPv6.To4() != nil || c.GatewayIPv6.To16() == nil:
		return fmt.Errorf("pipeline: gateway IPv6 address %v is not an IPv6 address", c.GatewayIPv6)
	case c.PodCIDRv6.IP.To4() != nil || len(c.PodCIDRv6.Mask) != net.IPv6len:
		return fmt.Errorf("pipeline: IPv6 pod CIDR %v is not an IPv6 prefix", c.PodCIDRv6)
	case !c.PodCIDRv6.Contains(c.GatewayIPv6):
		return fmt.Errorf("pipeline: IPv6 pod CIDR %v must contain gateway IPv6 address %v", c.PodCIDRv6, c.GatewayIPv6)
	}
	return nil
}

func (p *Pipeline) ipv6Enabled() bool { return p.cfg.GatewayIPv6 != nil }

// ipv4Enabled reports whether the pipeline has its IPv4 configuration
// (Config.GatewayIP, Config.PodCIDR); false on an IPv6-only node.
func (p *Pipeline) ipv4Enabled() bool { return p.cfg.GatewayIP != nil }

// ipv6BaseFlows returns the IPv6 base flows for policy generation gen: the
// ipv6 twins of the IPv4 base flows that match "ip" (conntrack zone, policy
// bypasses, the node's own traffic to pods, commit and re-commit, the
// service-reply mark and route), the drop of router-only ICMPv6 from pods
// and the drop of Neighbor Discovery before conntrack.
//
// The Service CIDR bypass is twinned by Config.ServiceCIDRv6. With a
// tunnel port, tunnelled IPv6 for the gateway's IPv6 goes to the gateway
// (the twin of the IPv4 base flow; peers: peer_ipv6.go).
//
// ICMPv6 errors (Packet Too Big, Destination Unreachable, Time Exceeded)
// about a tracked connection are +rel in conntrack and pass policy through
// the +rel bypasses, as ICMP errors do for IPv4.
func (p *Pipeline) ipv6BaseFlows(nf func(table uint8, prio uint16) *openflow.FlowBuilder, gen uint32) []*openflow.FlowBuilder {
	zone, gwMAC := p.cfg.CTZone, p.cfg.GatewayMAC
	ip6, icmp6 := openflow.ProtocolIPv6, openflow.ProtocolICMPv6
	st := openflow.CTState{}.Trk(true)
	genMark := gen << ctMarkGenShift
	bs := []*openflow.FlowBuilder{
		// SpoofGuard: only routers advertise routes and redirect; a pod
		// doing either could take over its neighbours' traffic.
		nf(SpoofGuard, prioSpoofGuardRouterOnly).MatchProtocol(icmp6).MatchICMPType(icmp6RouterAdvert).Drop(),
		nf(SpoofGuard, prioSpoofGuardRouterOnly).MatchProtocol(icmp6).MatchICMPType(icmp6Redirect).Drop(),
		// SpoofGuard: a pod's NS or NA that its own flows (prioSpoofGuardND)
		// did not take is forged.
		nf(SpoofGuard, prioSpoofGuardNDDrop).MatchRegBits(sourcePodMark.match()).MatchProtocol(icmp6).
			MatchICMPType(icmp6NeighborSolict).Drop(),
		nf(SpoofGuard, prioSpoofGuardNDDrop).MatchRegBits(sourcePodMark.match()).MatchProtocol(icmp6).
			MatchICMPType(icmp6NeighborAdvert).Drop(),
		// ARPResponder: Neighbor Discovery never enters conntrack. The
		// gateway's kernel answers for the gateway's IPv6; NAs to the
		// gateway MAC go to it.
		nf(ARPResponder, prioARPForward).MatchProtocol(icmp6).MatchICMPType(icmp6NeighborSolict).
			MatchNDTarget(p.cfg.GatewayIPv6).Output(p.cfg.GatewayOFPort),
		nf(ARPResponder, prioARPForward).MatchProtocol(icmp6).MatchICMPType(icmp6NeighborAdvert).
			MatchEthDst(gwMAC).Output(p.cfg.GatewayOFPort),
		nf(ARPResponder, prioNDDrop).MatchProtocol(icmp6).MatchICMPType(icmp6NeighborSolict).Drop(),
		nf(ARPResponder, prioNDDrop).MatchProtocol(icmp6).MatchICMPType(icmp6NeighborAdvert).Drop(),
		// Conntrack.
		nf(ConntrackZone, prioConntrackZone).MatchProtocol(ip6).CT(p.conntrackZoneCT()),
		// Egress hooks.
		nf(EgressRule, prioPolicyBypass).MatchProtocol(ip6).MatchCTState(st.New(false).Rpl(true)).GotoTable(L3Forwarding),
		nf(EgressRule, prioPolicyBypass).MatchProtocol(ip6).MatchCTState(st.New(false).Rel(true)).GotoTable(L3Forwarding),
		nf(EgressRule, prioPolicyCurrent).MatchProtocol(ip6).MatchCTState(st.New(false)).
			MatchCTMark(genMark, ctMarkGenMask).GotoTable(L3Forwarding),
		// Ingress hooks, with the node's own traffic from the gateway IPv6.
		nf(IngressRule, prioPolicyBypass).MatchProtocol(ip6).MatchCTState(st.New(false).Rpl(true)).GotoTable(ConntrackCommit),
		nf(IngressRule, prioPolicyBypass).MatchProtocol(ip6).MatchCTState(st.New(false).Rel(true)).GotoTable(ConntrackCommit),
		nf(IngressRule, prioPolicyNode).MatchProtocol(ip6).MatchRegBits(sourceGatewayMark.match()).
			MatchSrcIP(p.cfg.GatewayIPv6).GotoTable(ConntrackCommit),
		nf(IngressRule, prioPolicyCurrent).MatchProtocol(ip6).MatchCTState(st.New(false)).
			MatchCTMark(genMark, ctMarkGenMask).GotoTable(ConntrackCommit),
		// Commit and re-commit.
		nf(ConntrackCommit, prioCommitNew).MatchProtocol(ip6).MatchCTState(st.New(true)).
			CT(openflow.CTCommit(zone, openflow.SetCTMark(genMark, ctMarkGenMask))).GotoTable(Output),
		nf(ConntrackCommit, prioCommitCurrent).MatchProtocol(ip6).MatchCTState(st.New(false).Rpl(false)).
			MatchCTMark(genMark, ctMarkGenMask).GotoTable(Output),
		nf(ConntrackCommit, prioRecommit).MatchProtocol(ip6).MatchCTState(st.New(false).Est(true).Rpl(false)).
			CT(openflow.CTCommit(zone, openflow.SetCTMark(genMark, ctMarkGenMask))).GotoTable(Output),
		// Replies of connections from the gateway go back through it
		// (service.go).
		nf(ConntrackCommit, prioCommitMarked).MatchProtocol(ip6).MatchRegBits(sourceGatewayMark.match()).
			MatchCTState(st.New(true)).
			CT(openflow.CTCommit(zone, openflow.SetCTMark(ctMarkFromGateway|genMark, ctMarkFromGatewayMask|ctMarkGenMask))).GotoTable(Output),
		nf(L3Forwarding, prioL3ServiceReply).MatchProtocol(ip6).MatchRegBits(sourcePodMark.match()).
			MatchCTState(st.Rpl(true)).MatchCTMark(ctMarkFromGateway, ctMarkFromGatewayMask).
			SetEthDst(gwMAC).GotoTable(L2Forwarding),
	}
	if p.cfg.ServiceCIDRv6 != nil {
		// A pod's packets to an IPv6 ClusterIP, as for IPv4 (pipeline.go).
		bs = append(bs, nf(EgressRule, prioPolicyNode).MatchProtocol(ip6).
			MatchRegBits(sourcePodMark.match()).
			MatchDstNet(p.cfg.ServiceCIDRv6).GotoTable(L3Forwarding))
	}
	if p.cfg.TunnelOFPort != 0 {
		// Tunnelled IPv6 for this node's gateway IPv6 (a remote pod, or
		// the reply to a peer node that sent from its gateway IPv6): to
		// the gateway port (peer_ipv6.go).
		bs = append(bs, nf(L3Forwarding, prioL3Route).MatchProtocol(ip6).MatchEthDst(globalVirtualMAC).
			MatchDstIP(p.cfg.GatewayIPv6).SetEthDst(gwMAC).GotoTable(L2Forwarding),
			// Replies through the tunnel of connections from the gateway
			// (an IPv6 ClusterIP DNATed by this node's kube-proxy to an
			// endpoint on another node) go back to the gateway for the
			// kernel's un-DNAT, as service.go's IPv4 flow for the tunnel
			// does; without it the reply goes straight to the client pod
			// with the endpoint's address, and the client resets it.
			nf(L3Forwarding, prioL3ServiceReply).MatchProtocol(ip6).MatchRegBits(sourceTunnelMark.match()).
				MatchCTState(st.Rpl(true)).MatchCTMark(ctMarkFromGateway, ctMarkFromGatewayMask).
				SetEthDst(gwMAC).GotoTable(L2Forwarding))
	}
	return bs
}

// linkLocal is fe80::/10, the source of Neighbor Solicitations sent before
// (or instead of) a global address.
var linkLocal = &net.IPNet{IP: net.ParseIP("fe80::"), Mask: net.CIDRMask(10, 128)}

// podIPv6Flows returns the IPv6 flows of a local pod with address ip: its
// spoof guard (port, MAC and IPv6 source), its Neighbor Discovery guard and
// forwarding (see the package comment above), and its L3 route for packets
// sent to the gateway MAC (rewritten MACs, hop limit decremented: dec_ttl
// works on IPv6).
func (p *Pipeline) podIPv6Flows(nf func(table uint8, prio uint16) *openflow.FlowBuilder, pod PodInterface, ip net.IP) []*openflow.FlowBuilder {
	ip6, icmp6 := openflow.ProtocolIPv6, openflow.ProtocolICMPv6
	ns := func(b *openflow.FlowBuilder) *openflow.FlowBuilder {
		return b.MatchInPort(pod.OFPort).MatchProtocol(icmp6).MatchEthSrc(pod.MAC)
	}
	bs := []*openflow.FlowBuilder{
		nf(SpoofGuard, prioSpoofGuardPod).MatchInPort(pod.OFPort).MatchProtocol(ip6).MatchEthSrc(pod.MAC).MatchSrcIP(ip).
			GotoTable(ARPResponder),
		ns(nf(SpoofGuard, prioSpoofGuardND)).MatchSrcIP(ip).MatchICMPType(icmp6NeighborSolict).MatchNDSll(pod.MAC).
			GotoTable(ARPResponder),
		ns(nf(SpoofGuard, prioSpoofGuardND)).MatchSrcNet(linkLocal).MatchICMPType(icmp6NeighborSolict).MatchNDSll(pod.MAC).
			GotoTable(ARPResponder),
		ns(nf(SpoofGuard, prioSpoofGuardND)).MatchSrcIP(ip).MatchICMPType(icmp6NeighborAdvert).MatchNDTarget(ip).
			MatchNDTll(pod.MAC).GotoTable(ARPResponder),
		ns(nf(SpoofGuard, prioSpoofGuardND)).MatchSrcNet(linkLocal).MatchICMPType(icmp6NeighborAdvert).MatchNDTarget(ip).
			MatchNDTll(pod.MAC).GotoTable(ARPResponder),
		nf(ARPResponder, prioARPForward).MatchProtocol(icmp6).MatchICMPType(icmp6NeighborSolict).MatchNDTarget(ip).
			Output(pod.OFPort),
		nf(ARPResponder, prioARPForward).MatchProtocol(icmp6).MatchICMPType(icmp6NeighborAdvert).MatchEthDst(pod.MAC).
			Output(pod.OFPort),
		nf(L3Forwarding, prioL3Route).MatchProtocol(ip6).MatchEthDst(p.cfg.GatewayMAC).MatchDstIP(ip).
			SetEthSrc(p.cfg.GatewayMAC).SetEthDst(pod.MAC).DecTTL().GotoTable(L2Forwarding),
	}
	if p.cfg.TunnelOFPort != 0 {
		// From another node (peer_ipv6.go), the twin of the IPv4 flow in
		// PodFlows: the sending node routed it, only the MACs change.
		bs = append(bs, nf(L3Forwarding, prioL3Route).MatchProtocol(ip6).MatchEthDst(globalVirtualMAC).MatchDstIP(ip).
			SetEthSrc(p.cfg.GatewayMAC).SetEthDst(pod.MAC).GotoTable(L2Forwarding))
	}
	return bs
}
