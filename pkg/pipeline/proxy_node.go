package pipeline

import (
	"net"
	"net/netip"

	"github.com/weirnet/weir/pkg/openflow"
)

// The kube-proxy-free mode, node side (ProxyConfig.FromGateway): the
// node's own packets to a ClusterIP (host processes, hostNetwork pods; not
// kubelet probes, which go to pod IPs) are load-balanced in OVS as pods'
// are. The node routes the Service CIDRs into the gateway with the
// gateway's address as the preferred source (nodenet.EnsureServiceRoutes:
// "<Service CIDR> via <virtual next hop> dev <gateway> onlink src
// <gateway IP>"), so such a packet enters OVS from the gateway port with
// the gateway IP as its source and the virtual next hop's MAC as its
// destination. ServiceLB then has, per ClusterIP frontend, a second flow
// beside the pods' one: from the gateway (reg0 source gateway), +new, to
// the frontend → eth_dst := the gateway MAC, and the same group. The MAC
// rewrite makes the DNATed packet look like one a pod routed through the
// gateway, so L3Forwarding's routes take it to the endpoint: a local pod
// (its route rewrites the MACs) or a peer through the tunnel.
//
// Why the gateway IP and no SNAT: the endpoint's replies must come back to
// this node's OVS, un-DNATed there and handed to the gateway. A local
// endpoint replies to the gateway IP on its own subnet (gateway MAC);
// a remote one replies through its node's peer flows, which route this
// node's pod CIDR (holding the gateway IP) into the tunnel. Both arrive
// here as replies of a connection first seen from the gateway, committed
// with ctMarkFromGateway (service.go, ipv6.go), and the existing
// service-reply flows of L3Forwarding send them to the gateway after
// ConntrackZone's ct(nat) restored the ClusterIP as their source. The
// node IP as source would not do for a remote endpoint: its node would
// route the reply to the underlay, not back into the tunnel. Choosing the
// source in the route rather than with ct(nat(src)) in OVS keeps one NAT
// per connection (a second would need a zone of its own, as the hairpin
// SNAT has) and leaves the endpoint seeing a source it can reply to. A
// process that binds the node IP explicitly before connecting is not
// covered (docs/proxy.md, "Kube-proxy-free mode").
//
// Ingress policy: the node's traffic from the gateway IP passes it
// (prioPolicyNode), as kubelet probes do; Kubernetes never isolates a pod
// from its own node.
//
// Not DNATed: a ClusterIP without endpoints anywhere has no flow; the
// packet meets the gateway MAC in L2Forwarding, whose output to the
// gateway port is the port it came in by and so dropped: the node's
// client times out instead of being refused (kube-proxy answers it with a
// reject rule in output; OVS cannot build a TCP RST).

// gatewayFrontendFlow is ClusterIP frontend f at ip's ServiceLB flow for
// packets from the gateway (the node itself): to group id, or dropped
// without a group (endpoints elsewhere only).
func (p *Pipeline) gatewayFrontendFlow(cookie uint64, f ServiceFrontend, ip netip.Addr, v6 bool, group *openflow.Group, id uint32) *openflow.FlowBuilder {
	b := openflow.NewFlow(ServiceLB, prioServiceFrontend).Cookie(cookie).MatchProtocol(l4Protocol(f.Protocol, v6)).
		MatchRegBits(sourceGatewayMark.match()).MatchCTState(openflow.CTState{}.Trk(true).New(true)).
		MatchDstIP(net.IP(ip.AsSlice())).MatchDstPort(f.Port)
	if group == nil {
		return b.Drop()
	}
	return b.SetEthDst(p.cfg.GatewayMAC).Group(id)
}
