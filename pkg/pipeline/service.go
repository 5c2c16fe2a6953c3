package pipeline

import "github.com/weirnet/weir/pkg/openflow"

// Service traffic (ClusterIP, NodePort) is load-balanced by the node's
// kube-proxy, not by OVS: a pod's packet for a ClusterIP follows the pod's
// default route to the gateway, the node's kernel DNATs it to an endpoint
// pod and routes it back into OVS through the gateway. The endpoint's
// replies must take the same way back, through the gateway into the node's
// kernel, which reverses the DNAT; delivered straight to the client they
// would carry the endpoint's address instead of the ClusterIP, and the
// client would reset the connection.
//
// So connections whose first packet entered OVS from the gateway are
// committed with ctMarkFromGateway, and in L3Forwarding the replies of such
// connections coming from a local pod or through the tunnel are sent to the
// gateway (destination MAC rewritten to the gateway's), ahead of the routes
// to pods and peers. The kernel then un-DNATs them and routes them to the
// client like any other packet. Replies of connections the node itself
// opened (the kernel talking to a pod) go to the gateway as before; the
// flows change nothing for them.

// The ct_mark bits set on connections first seen coming from the gateway
// and from the tunnel (see PeerFlows in peer.go).
const (
	ctMarkFromGateway     uint32 = 0x1
	ctMarkFromGatewayMask uint32 = 0x1
	ctMarkFromTunnel      uint32 = 0x2
	ctMarkFromTunnelMask  uint32 = 0x2
)

// serviceFlows returns the base flows of the "reply via the gateway" path:
// the marking commit in ConntrackCommit, and the L3Forwarding flows for
// replies from local pods and, with a tunnel port, from other nodes. They
// are IPv4 flows, installed with the IPv4 configuration only; the IPv6
// twins are in ipv6BaseFlows.
func (p *Pipeline) serviceFlows(nf func(table uint8, prio uint16) *openflow.FlowBuilder, gen uint32) []*openflow.FlowBuilder {
	zone, gwMAC := p.cfg.CTZone, p.cfg.GatewayMAC
	fromGatewayReply := func(source regMark) *openflow.FlowBuilder {
		return nf(L3Forwarding, prioL3ServiceReply).MatchProtocol(openflow.ProtocolIP).
			MatchRegBits(source.match()).
			MatchCTState(openflow.CTState{}.Trk(true).Rpl(true)).
			MatchCTMark(ctMarkFromGateway, ctMarkFromGatewayMask).
			SetEthDst(gwMAC).GotoTable(L2Forwarding)
	}
	bs := []*openflow.FlowBuilder{
		// New connections from the gateway are committed with the mark
		// (prioCommitMarked, above the plain commit).
		nf(ConntrackCommit, prioCommitMarked).MatchProtocol(openflow.ProtocolIP).
			MatchRegBits(sourceGatewayMark.match()).
			MatchCTState(openflow.CTState{}.Trk(true).New(true)).
			CT(openflow.CTCommit(zone, openflow.SetCTMark(ctMarkFromGateway|gen<<ctMarkGenShift, ctMarkFromGatewayMask|ctMarkGenMask))).GotoTable(Output),
		fromGatewayReply(sourcePodMark),
	}
	if p.cfg.TunnelOFPort != 0 {
		bs = append(bs, fromGatewayReply(sourceTunnelMark),
			// New connections from the tunnel are committed with their own
			// mark, so that a local pod's replies to a peer's node IP go
			// back into the tunnel (PeerFlows).
			nf(ConntrackCommit, prioCommitMarked).MatchProtocol(openflow.ProtocolIP).
				MatchRegBits(sourceTunnelMark.match()).
				MatchCTState(openflow.CTState{}.Trk(true).New(true)).
				CT(openflow.CTCommit(zone, openflow.SetCTMark(ctMarkFromTunnel|gen<<ctMarkGenShift, ctMarkFromTunnelMask|ctMarkGenMask))).GotoTable(Output))
	}
	return bs
}
