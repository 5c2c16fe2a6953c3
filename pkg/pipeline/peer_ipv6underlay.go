package pipeline

import (
	"net"

	"github.com/weirnet/weir/pkg/openflow"
)

// An IPv6 underlay: the peer's NodeIP (the remote tunnel endpoint) is
// IPv6. Geneve then runs over IPv6 between the nodes and carries pod
// traffic of the nodes' families, IPv4, IPv6 (dual-stack) or IPv6 alone
// (an IPv6-only peer, without PodCIDR: its route and the reply flow
// below are all its flows), exactly as over IPv4: the peer's routes into the tunnel are the same flows with
// the tunnel destination in tun_ipv6_dst instead of tun_dst (SetTunDst
// chooses the field by the address's family). Nothing on the receiving
// side depends on the underlay's family: the tunnel port's Classifier flow
// matches the port, not the outer header, and tunnelled packets are
// recognised by their destination MAC (GlobalVirtualMAC). The local node's
// own endpoint is not in the flows at all: OVS picks the source address by
// its route to the peer, so the node must hold an IPv6 underlay address on
// the bridge its route to the peer leaves through (with the userspace
// datapath br-phy, docs/overlay.md).
//
// What matches the peer's node IP needs its ipv6 twin. That is only the
// reply flow of PeerFlows (a local pod's replies to the peer's host when it
// sent from its node IP through the tunnel). Its IPv4 form cannot be
// reused, nor twinned as it is:
//   - An IPv4 reply flow for an IPv6 node IP matches nothing, so an IPv6
//     node IP gets none: replies of IPv4 connections the peer's host opens
//     from an IPv4 address of its own are not covered (as replies to a
//     peer's other addresses are not over an IPv4 underlay: the pipeline
//     knows only the tunnel endpoint).
//   - The IPv4 flow requires ct_mark bit ctMarkFromTunnel, which a base
//     flow (service.go) sets on new IPv4 connections from the tunnel only;
//     IPv6 connections never carry it (ipv6.go has no twin: node IPs were
//     IPv4). The ipv6 twin instead requires ctMarkFromGateway clear. That
//     says the same thing: the reply comes from a local pod (reg0) to the
//     peer's node IP, so the connection's first packet came from that
//     address, and SpoofGuard lets no local pod send from it; a connection
//     that did not enter from the gateway (bit 0x1, set on every new IPv6
//     connection from the gateway) entered through the tunnel. Replies of
//     connections from the gateway (a NodePort DNAT on this node) keep
//     going to the gateway (prioL3ServiceReply, ct_mark=0x1/0x1): the two
//     matches are disjoint, not just ordered.
//   - On the peer, the reply arrives through the tunnel as the reply of a
//     connection that started at its gateway (bit 0x1) and goes to that
//     gateway, to the peer's kernel, by the base flow that does so for
//     IPv6 Service replies (ipv6.go, L3Forwarding prioL3ServiceReply,
//     reg0=tunnel): nothing per peer is needed there.
//
// The flow needs IPv6 pods on both nodes (the peer's PodCIDRv6, which
// needs the local IPv6 configuration): without them the peer's host cannot
// reach this node's pods over IPv6 at all.

// isTunnelIPv6 reports whether ip can be an IPv6 tunnel endpoint: a
// 16-byte address that is not IPv4-mapped, unicast and not link-local
// (a link-local endpoint would need a zone, which tun_ipv6_dst cannot
// carry) or unspecified.
func isTunnelIPv6(ip net.IP) bool {
	return len(ip) == net.IPv6len && ip.To4() == nil && !ip.IsUnspecified() && !ip.IsLoopback() &&
		!ip.IsMulticast() && !ip.IsLinkLocalUnicast()
}

// nodeIPv6Flows returns the flows for an IPv6 node IP (see above), after
// every other flow of the peer; nil for an IPv4 node IP or a peer without
// IPv6 pods.
func nodeIPv6Flows(peer PeerNode, nf func(table uint8, prio uint16) *openflow.FlowBuilder,
	toPeer func(*openflow.FlowBuilder) *openflow.FlowBuilder) []*openflow.FlowBuilder {
	if peer.NodeIP.To4() != nil || peer.PodCIDRv6 == nil {
		return nil
	}
	return []*openflow.FlowBuilder{
		// A local pod's replies to the peer's node IP, in connections
		// that came through the tunnel, go back into it.
		toPeer(nf(L3Forwarding, prioL3Route).MatchProtocol(openflow.ProtocolIPv6).
			MatchRegBits(sourcePodMark.match()).
			MatchCTState(openflow.CTState{}.Trk(true).Rpl(true)).
			MatchCTMark(0, ctMarkFromGatewayMask).
			MatchDstIP(peer.NodeIP)),
	}
}
