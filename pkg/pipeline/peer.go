package pipeline

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"

	"github.com/weirnet/weir/pkg/openflow"
)

// GlobalVirtualMAC is the destination MAC of every packet Weir sends through
// the Geneve tunnel, and the MAC the ARP responder gives for a peer node's
// gateway IP. Tunnelled packets are routed (the sending node rewrites the
// MACs), so the destination MAC carries no information about the receiver;
// one well-known, locally administered unicast MAC lets the receiving node
// tell "came through the overlay, route me" from "switched to this MAC"
// without knowing any remote MAC. The value is Antrea's, so packet captures
// read alike.
const GlobalVirtualMAC = "aa:bb:cc:dd:ee:ff"

var globalVirtualMAC = mustParseMAC(GlobalVirtualMAC)

func mustParseMAC(s string) net.HardwareAddr {
	mac, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return mac
}

// PeerNode is another node of the cluster, reached through the Geneve
// tunnel.
type PeerNode struct {
	// Name identifies the peer (the Kubernetes Node name).
	Name string
	// PodCIDR is the peer's IPv4 pod subnet; nil for an IPv6-only peer
	// (then PodCIDRv6 is set). It needs the local pipeline's IPv4
	// configuration.
	PodCIDR *net.IPNet
	// NodeIP is the peer's underlay address: the remote tunnel endpoint,
	// IPv4 or (an IPv6 underlay, peer_ipv6underlay.go) IPv6. Its family
	// is the underlay's, whatever families the pods have.
	NodeIP net.IP
	// GatewayIP is the peer's gateway address, the first IP of PodCIDR,
	// set with it. This node's kernel routes PodCIDR via it (on link,
	// through the local gateway), so the pipeline answers ARP for it.
	GatewayIP net.IP
	// PodCIDRv6 and GatewayIPv6, set together, are the peer's IPv6 pod
	// subnet and its gateway address in it (peer_ipv6.go); alone (no
	// PodCIDR) they describe an IPv6-only peer. They need the local
	// pipeline's IPv6 configuration. IPv6 pod traffic is tunnelled over
	// the same underlay as IPv4 (NodeIP, either family). A peer has a pod
	// CIDR of at least one family.
	PodCIDRv6   *net.IPNet
	GatewayIPv6 net.IP
}

func (n PeerNode) validate() error {
	switch {
	case n.Name == "":
		return errors.New("pipeline: peer node name is required")
	case n.PodCIDR == nil && n.PodCIDRv6 == nil:
		return fmt.Errorf("pipeline: peer %s: a pod CIDR of at least one family is required (PodCIDR, PodCIDRv6)", n.Name)
	case n.NodeIP == nil:
		return fmt.Errorf("pipeline: peer %s: node IP is required", n.Name)
	case n.NodeIP.To4() == nil && !isTunnelIPv6(n.NodeIP):
		return fmt.Errorf("pipeline: peer %s: node IP %v must be an IPv4 or a global unicast IPv6 address", n.Name, n.NodeIP)
	}
	if err := n.validateIPv4(); err != nil {
		return err
	}
	return n.validateIPv6()
}

// validateIPv4 checks the optional IPv4 half of a peer.
func (n PeerNode) validateIPv4() error {
	switch {
	case n.PodCIDR == nil && n.GatewayIP == nil:
		return nil // an IPv6-only peer
	case n.PodCIDR == nil:
		return fmt.Errorf("pipeline: peer %s: gateway IP %v needs an IPv4 pod CIDR", n.Name, n.GatewayIP)
	case n.PodCIDR.IP.To4() == nil:
		return fmt.Errorf("pipeline: peer %s: pod CIDR %v is not an IPv4 prefix", n.Name, n.PodCIDR)
	case n.GatewayIP == nil:
		return fmt.Errorf("pipeline: peer %s: pod CIDR %v needs the peer's gateway IP", n.Name, n.PodCIDR)
	case n.GatewayIP.To4() == nil || !n.PodCIDR.Contains(n.GatewayIP):
		return fmt.Errorf("pipeline: peer %s: gateway IP %v must be an IPv4 address in pod CIDR %v", n.Name, n.GatewayIP, n.PodCIDR)
	}
	return nil
}

type peerState struct {
	peer   PeerNode
	cookie openflow.Cookie
}

func peerOwner(name string) string { return "peer/" + name }

// overlaps reports whether two subnets share an address; a nil subnet (a
// family the node or peer does not have) overlaps nothing.
func overlaps(a, b *net.IPNet) bool {
	return a != nil && b != nil && (a.Contains(b.IP) || b.Contains(a.IP))
}

// PeerFlows returns the flows that make a peer node's pods reachable:
//
//   - L3Forwarding: IP for the peer's pod CIDR is routed into the tunnel:
//     source MAC the local gateway's, destination MAC GlobalVirtualMAC,
//     TTL decremented, tun_dst (tun_ipv6_dst for an IPv6 node IP) the
//     peer's node IP; the output port (the
//     tunnel) is chosen right there and the packet goes on to
//     ConntrackCommit, past L2Forwarding and the ingress policy tables:
//     ingress policy belongs to the node that holds the destination pod.
//   - ARPResponder: ARP requests for the peer's gateway IP (the next hop of
//     this node's route to the peer's pod CIDR) are answered with
//     GlobalVirtualMAC.
//   - L3Forwarding: a local pod's replies to the peer's node IP, in
//     connections that came in through the tunnel (ct_mark
//     ctMarkFromTunnel), go back into the tunnel to the peer. The peer's
//     host sends from its node IP when a process binds to it (a
//     hostNetwork pod serving on status.hostIP, a client bound to it); the
//     request reaches the pod through the tunnel, but without this flow
//     the reply would take this node's default route to the node IP: out
//     of the gateway, through this node's kernel, which drops it (a SYN-ACK
//     of a connection it never saw) or masquerades it. Measured on the
//     local cluster: the TCP connection from node 2's IP to a pod on node
//     1 timed out. Only for an IPv4 node IP; an IPv6 one has its own
//     flows (peer_ipv6underlay.go).
//
// These are the flows of the peer's IPv4 half; an IPv6-only peer (no
// PodCIDR) has none of them, only its IPv6 route into the tunnel and, over
// an IPv6 underlay, the IPv6 reply flow to its node IP (peer_ipv6.go,
// peer_ipv6underlay.go).
//
// It fails if the pipeline has no tunnel port, lacks the configuration of a
// family the peer has, or peer overlaps this node's pod CIDR of a family.
func (p *Pipeline) PeerFlows(peer PeerNode, cookie openflow.Cookie) ([]*openflow.Flow, error) {
	if err := peer.validate(); err != nil {
		return nil, err
	}
	if p.cfg.TunnelOFPort == 0 {
		return nil, fmt.Errorf("pipeline: peer %s: the pipeline has no tunnel port (Config.TunnelOFPort)", peer.Name)
	}
	if peer.PodCIDR != nil && !p.ipv4Enabled() {
		return nil, fmt.Errorf("pipeline: peer %s: has IPv4 pod CIDR %v but this node's pipeline has no IPv4 configuration (Config.GatewayIP, Config.PodCIDR)",
			peer.Name, peer.PodCIDR)
	}
	if overlaps(peer.PodCIDR, p.cfg.PodCIDR) {
		return nil, fmt.Errorf("pipeline: peer %s: pod CIDR %v overlaps this node's %v", peer.Name, peer.PodCIDR, p.cfg.PodCIDR)
	}
	if err := p.checkPeerIPv6(peer); err != nil {
		return nil, err
	}
	c := uint64(cookie)
	nf := func(table uint8, prio uint16) *openflow.FlowBuilder { return openflow.NewFlow(table, prio).Cookie(c) }
	toPeer := func(b *openflow.FlowBuilder) *openflow.FlowBuilder {
		return b.SetEthSrc(p.cfg.GatewayMAC).SetEthDst(globalVirtualMAC).DecTTL().SetTunDst(peer.NodeIP).
			LoadReg(outPortField.load(uint64(p.cfg.TunnelOFPort))).
			LoadReg(outputFoundMark.load()).
			GotoTable(ConntrackCommit)
	}
	var bs []*openflow.FlowBuilder
	if peer.PodCIDR != nil {
		bs = append(bs,
			arpReply(nf(ARPResponder, prioARPRespond), peer.GatewayIP, globalVirtualMAC),
			toPeer(nf(L3Forwarding, prioL3Route).MatchProtocol(openflow.ProtocolIP).MatchDstNet(peer.PodCIDR)))
	}
	if peer.PodCIDR != nil && peer.NodeIP.To4() != nil {
		// (An IPv6-only peer over an IPv4 underlay sends no IPv4 into the
		// tunnel, so there are no IPv4 replies to carry back.)
		bs = append(bs, toPeer(nf(L3Forwarding, prioL3Route).MatchProtocol(openflow.ProtocolIP).
			MatchRegBits(sourcePodMark.match()).
			MatchCTState(openflow.CTState{}.Trk(true).Rpl(true)).
			MatchCTMark(ctMarkFromTunnel, ctMarkFromTunnelMask).
			MatchDstIP(peer.NodeIP)))
	}
	// IPv6 after every IPv4 flow, so an IPv4-only peer's flows are what
	// they always were (peer_ipv6.go).
	if peer.PodCIDRv6 != nil {
		bs = append(bs, toPeer(nf(L3Forwarding, prioL3Route).MatchProtocol(openflow.ProtocolIPv6).MatchDstNet(peer.PodCIDRv6)))
	}
	return buildAll(append(bs, nodeIPv6Flows(peer, nf, toPeer)...))
}

// AddPeer installs (or updates, e.g. for a new node IP) the flows of a peer
// node, atomically. A peer whose pod CIDR overlaps another peer's of the
// same family is rejected.
func (p *Pipeline) AddPeer(ctx context.Context, peer PeerNode) error {
	p.peerMu.Lock()
	defer p.peerMu.Unlock()
	p.mu.Lock()
	st, ok := p.peers[peer.Name]
	var conflict string
	mine := peer.PodCIDR
	for name, other := range p.peers {
		if name != peer.Name && overlaps(peer.PodCIDR, other.peer.PodCIDR) {
			conflict = fmt.Sprintf("peer %s's %v", name, other.peer.PodCIDR)
			break
		}
		if name != peer.Name && overlaps(peer.PodCIDRv6, other.peer.PodCIDRv6) {
			conflict, mine = fmt.Sprintf("peer %s's %v", name, other.peer.PodCIDRv6), peer.PodCIDRv6
			break
		}
	}
	p.mu.Unlock()
	if conflict != "" {
		return fmt.Errorf("pipeline: peer %s: pod CIDR %v overlaps %s", peer.Name, mine, conflict)
	}
	cookie := st.cookie
	if !ok {
		var err error
		if cookie, err = p.cookies.New(CategoryPeer); err != nil {
			return err
		}
	}
	flows, err := p.PeerFlows(peer, cookie)
	if err != nil {
		return err
	}
	if err := p.sw.Sync(ctx, peerOwner(peer.Name), flows...); err != nil {
		return fmt.Errorf("installing flows of peer %s: %w", peer.Name, err)
	}
	p.mu.Lock()
	p.peers[peer.Name] = peerState{peer: peer, cookie: cookie}
	p.mu.Unlock()
	return nil
}

// DeletePeer removes a peer node's flows; deleting an unknown peer is not an
// error.
func (p *Pipeline) DeletePeer(ctx context.Context, name string) error {
	p.peerMu.Lock()
	defer p.peerMu.Unlock()
	if err := p.sw.Uninstall(ctx, peerOwner(name)); err != nil {
		return fmt.Errorf("removing flows of peer %s: %w", name, err)
	}
	p.mu.Lock()
	delete(p.peers, name)
	p.mu.Unlock()
	return nil
}

// Peers returns the names of the peers with installed flows, sorted.
func (p *Pipeline) Peers() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.peers))
}

// CheckPeer verifies that the switch holds every flow of the peer (see
// CheckPod).
func (p *Pipeline) CheckPeer(ctx context.Context, name string) error {
	p.mu.Lock()
	st, ok := p.peers[name]
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("peer %s has no flows in the pipeline", name)
	}
	want, err := p.PeerFlows(st.peer, st.cookie)
	if err != nil {
		return err
	}
	return p.checkFlows(ctx, "peer "+name, st.cookie, want)
}
