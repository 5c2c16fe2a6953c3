package pipeline

import (
	"errors"
	"fmt"
	"net"
)

// IPv6 between nodes. A peer with PodCIDRv6 and GatewayIPv6 set gets one
// more flow (an IPv6-only peer, without PodCIDR, this one alone, plus the
// reply flow of an IPv6 node IP: peer_ipv6underlay.go): the ipv6 twin of
// its L3Forwarding route, which tunnels IPv6
// for the peer's IPv6 pod CIDR exactly as IPv4 (source MAC the local
// gateway's, destination MAC GlobalVirtualMAC, hop limit decremented,
// the tunnel destination the peer's node IP, of whichever family the
// underlay is: Geneve carries the inner Ethernet frame whatever its
// EtherType).
//
// Not twinned:
//   - the ARP responder for the peer's gateway IP: an NA built inside OVS
//     needs nd_reserved and nd_options_type, which neither pkg/openflow nor
//     libOpenflow v0.15.0 know. The node kernel's route to the peer's IPv6
//     pod CIDR goes via the peer's gateway IPv6 (onlink) instead, with a
//     permanent neighbour entry gateway IPv6 → GlobalVirtualMAC on the
//     local gateway that the Node controller writes and removes with the
//     peer (pkg/agent, nodes.go). Its NS for that address would otherwise
//     be dropped in ARPResponder (no owner of the nd_target).
//   - the replies to the peer's node IP over an IPv4 underlay: the node
//     IP is IPv4 (an IPv6 node IP: peer_ipv6underlay.go).
//
// The receiving side needs no per-peer flow: the tunnel port's Classifier
// flow matches no protocol, and each local pod's IPv6 has its
// "dl_dst=GlobalVirtualMAC" L3 flow (podIPv6Flows, ipv6.go), the
// gateway's IPv6 a base one.

// validateIPv6 checks the optional IPv6 half of a peer.
func (n PeerNode) validateIPv6() error {
	switch {
	case n.PodCIDRv6 == nil && n.GatewayIPv6 == nil:
		return nil
	case n.PodCIDRv6 == nil || n.GatewayIPv6 == nil:
		return fmt.Errorf("pipeline: peer %s: IPv6 pod CIDR and gateway IPv6 must be set together", n.Name)
	case n.PodCIDRv6.IP.To4() != nil || len(n.PodCIDRv6.Mask) != net.IPv6len:
		return fmt.Errorf("pipeline: peer %s: IPv6 pod CIDR %v is not an IPv6 prefix", n.Name, n.PodCIDRv6)
	case n.GatewayIPv6.To4() != nil || n.GatewayIPv6.To16() == nil || !n.PodCIDRv6.Contains(n.GatewayIPv6):
		return fmt.Errorf("pipeline: peer %s: gateway IPv6 %v must be an IPv6 address in IPv6 pod CIDR %v", n.Name, n.GatewayIPv6, n.PodCIDRv6)
	}
	return nil
}

// checkPeerIPv6 checks a peer's IPv6 half against the local pipeline: it
// needs the IPv6 configuration and may not overlap the local IPv6 pod CIDR.
func (p *Pipeline) checkPeerIPv6(peer PeerNode) error {
	if peer.PodCIDRv6 == nil {
		return nil
	}
	if !p.ipv6Enabled() {
		return errors.New("pipeline: peer " + peer.Name + ": has IPv6 pod CIDR " + peer.PodCIDRv6.String() +
			" but this node's pipeline has no IPv6 configuration (Config.GatewayIPv6, Config.PodCIDRv6)")
	}
	if overlaps(peer.PodCIDRv6, p.cfg.PodCIDRv6) {
		return fmt.Errorf("pipeline: peer %s: IPv6 pod CIDR %v overlaps this node's %v", peer.Name, peer.PodCIDRv6, p.cfg.PodCIDRv6)
	}
	return nil
}

// IPv6Enabled reports whether the pipeline has its IPv6 configuration
// (Config.GatewayIPv6, Config.PodCIDRv6), i.e. whether peers may carry
// IPv6 pod CIDRs.
func (p *Pipeline) IPv6Enabled() bool { return p.ipv6Enabled() }

// IPv4Enabled reports whether the pipeline has its IPv4 configuration
// (Config.GatewayIP, Config.PodCIDR), i.e. whether peers may carry IPv4
// pod CIDRs; false on an IPv6-only node.
func (p *Pipeline) IPv4Enabled() bool { return p.ipv4Enabled() }
