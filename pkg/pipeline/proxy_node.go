package pipeline

import (
	"errors"
	"fmt"
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

// Traffic from outside the node (the kube-proxy-free mode, continued):
// NodePort, ExternalIP and LoadBalancer packets arriving on the node's
// other interfaces are put into the gateway by the node's kernel
// (nodenet.InstallExternalServices): a NodePort's are DNATed to the
// family's virtual NodePort address (ProxyConfig.NodePortIP, port kept),
// an ExternalIP's or LB IP's are routed to the gateway unchanged; with
// externalTrafficPolicy Cluster the kernel also SNATs them to the gateway
// IP as they leave into the gateway. So, in OVS, they are exactly the
// node's own traffic of the first half (above): from the gateway, to a
// frontend, from the gateway IP, whose replies the service-reply flows
// return to the gateway, where the kernel's conntrack reverses its NAT.
// With policy Local the client's address stays and the endpoints are
// local, whose replies take the same way (ctMarkFromGateway).
//
// Why the SNAT is the kernel's and not OVS's: the packet goes through the
// kernel's conntrack anyway (the DNAT to the virtual address: a packet for
// the node's own address is delivered locally, and no route can send it
// to the gateway), and a second NAT of one connection in OVS would need
// a zone of its own, a register mark to skip the pod-zone commit and the
// un-SNAT of replies coming back through the tunnel, which the tunnel's
// classifier sends past UnSNAT. Done by the kernel, OVS needs one flow per
// frontend and nothing else.
//
// ServiceLB from the gateway, per NodePort frontend: dst = the virtual
// NodePort address of the family, per ExternalIP and LB frontend: its
// address, → eth_dst := gateway MAC and the
// ServicePort's group, or drop when the Service has endpoints elsewhere
// only. An LB frontend's source ranges are checked in the kernel, where
// the client's address is still seen (OVS sees the gateway IP after the
// SNAT); the node's own traffic to it is not restricted.
//
// A ServicePort with ExternalEndpoints (externalTrafficPolicy Local, or
// internalTrafficPolicy Local with eTP Cluster) gets a second select
// group over them, with an ID of its own from the run's counter, which
// its external frontends from the gateway use; pods keep using
// ClusterEndpoints for every frontend (kube-proxy's short circuit). With
// eTP Local the kernel does not SNAT (nodenet.ExternalServiceRule.SNAT
// false): the endpoints, all local, see the client and reply to it
// through the gateway (ctMarkFromGateway). The node's own traffic to a
// NodePort or external frontend (a host process connecting to its own
// node IP) is not DNATed into the gateway: the nft table has no output
// chain yet.

func (c *Config) validateNodeProxy() error {
	px := c.Proxy
	if !px.FromGateway {
		if px.NodePortIP.IsValid() || px.NodePortIPv6.IsValid() {
			return errors.New("pipeline: proxy NodePort addresses need FromGateway")
		}
		return nil
	}
	if c.GatewayIP != nil && !px.NodePortIP.Is4() {
		return fmt.Errorf("pipeline: proxy from the gateway needs an IPv4 NodePort address, got %v", px.NodePortIP)
	}
	if c.GatewayIP == nil && px.NodePortIP.IsValid() {
		return fmt.Errorf("pipeline: proxy IPv4 NodePort address %v on a node without IPv4", px.NodePortIP)
	}
	if c.GatewayIPv6 != nil && (!px.NodePortIPv6.Is6() || px.NodePortIPv6.Is4In6()) {
		return fmt.Errorf("pipeline: proxy from the gateway needs an IPv6 NodePort address, got %v", px.NodePortIPv6)
	}
	if c.GatewayIPv6 == nil && px.NodePortIPv6.IsValid() {
		return fmt.Errorf("pipeline: proxy IPv6 NodePort address %v on a node without IPv6", px.NodePortIPv6)
	}
	for _, a := range []netip.Addr{px.NodePortIP, px.NodePortIPv6} {
		if a.IsValid() && (a == px.HairpinIP || a == px.HairpinIPv6) {
			return fmt.Errorf("pipeline: proxy NodePort address %v is also the hairpin address", a)
		}
	}
	return nil
}

// externalFrontendFlows are the ServiceLB flows from the gateway of
// NodePort, ExternalIP or LoadBalancer frontend f of sp (see above), to
// group id (the ExternalEndpoints' when sp has them; nil: none).
func (p *Pipeline) externalFrontendFlows(sp ServicePort, cookie uint64, f ServiceFrontend, v6 bool, group *openflow.Group, id uint32) ([]*openflow.FlowBuilder, error) {
	if group == nil && !sp.HasEndpoints {
		return nil, nil
	}
	ip := f.IP
	if f.Kind == KindNodePort {
		ip = p.cfg.Proxy.NodePortIP
		if v6 {
			ip = p.cfg.Proxy.NodePortIPv6
		}
	}
	match := func(prio uint16) *openflow.FlowBuilder {
		return openflow.NewFlow(ServiceLB, prio).Cookie(cookie).MatchProtocol(l4Protocol(f.Protocol, v6)).
			MatchRegBits(sourceGatewayMark.match()).MatchCTState(openflow.CTState{}.Trk(true).New(true)).
			MatchDstIP(net.IP(ip.AsSlice())).MatchDstPort(f.Port)
	}
	action := func(b *openflow.FlowBuilder) *openflow.FlowBuilder {
		if group == nil {
			return b.Drop()
		}
		return b.SetEthDst(p.cfg.GatewayMAC).Group(id)
	}
	// An LB frontend's source ranges are checked by the node's kernel,
	// before its SNAT hides the client (nodenet.SourceRangeRule); what
	// comes from the gateway passed them, or is the node's own traffic.
	return []*openflow.FlowBuilder{action(match(prioServiceFrontend))}, nil
}

// ServicePortGroups is ServicePortFlows with the ID of the
// ExternalEndpoints' group (FromGateway): sp's groups, the
// ClusterEndpoints' first, and its ServiceLB flows.
func (p *Pipeline) ServicePortGroups(sp ServicePort, cookie openflow.Cookie, id, extID uint32) ([]*openflow.Group, []*openflow.Flow, error) {
	gs, f, _, err := p.servicePortFlows(sp, cookie, id, extID)
	return gs, f, err
}

// ServiceExternalGroupID returns the ID of the ExternalEndpoints' group of
// a realized ServicePort (FromGateway, once it had ExternalEndpoints).
func (p *Pipeline) ServiceExternalGroupID(key string) (uint32, bool) {
	p.proxyMu.Lock()
	defer p.proxyMu.Unlock()
	s, ok := p.svc.services[key]
	if !ok || s.extGroupID == 0 {
		return 0, false
	}
	return s.extGroupID, true
}
