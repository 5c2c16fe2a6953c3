package nodenet

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocolWeir is the rtnetlink protocol ("proto" in `ip route`) of
// the kernel routes Weir installs to its peers' pod CIDRs. It marks them
// as Weir's, so that the agent can garbage-collect the routes of Nodes
// deleted while it was down without touching routes anyone else put on
// the gateway. 87 (0x57, "W") is not in iproute2's rt_protos list nor
// used by the routing daemons and CNIs we know of (Calico uses 80, BIRD
// 12, zebra 11).
const RouteProtocolWeir netlink.RouteProtocol = 87

// Weir releases before the protocol was set left the same routes with the
// kernel's default protocol for netlink requests without one, "boot" (3);
// isPeerRoute recognises those too, precisely: on the gateway, main table,
// with a next hop that is the first address of the destination (a peer's
// gateway IP, as Weir always routes) and the onlink flag. A route an
// administrator adds by hand with `ip route add` also gets proto boot, but
// hardly one with exactly that next hop and onlink on Weir's gateway.

// EnsurePeerRoute makes the node route a peer's pod CIDR into OVS:
// "peerPodCIDR via peerGatewayIP dev gatewayIfName onlink proto 87". The next hop is
// the peer's gateway IP, which is not on any local subnet (hence onlink):
// the kernel ARPs for it on the gateway, the pipeline answers with the
// global virtual MAC, and the L3 flow of the peer tunnels the packet. It is
// idempotent, and replaces a route to the same CIDR with another next hop
// (or an unmarked legacy one).
func EnsurePeerRoute(gatewayIfName string, peerPodCIDR *net.IPNet, peerGatewayIP net.IP) error {
	if peerPodCIDR == nil || peerPodCIDR.IP.To4() == nil {
		return fmt.Errorf("nodenet: peer route: IPv4 pod CIDR is required, got %v", peerPodCIDR)
	}
	if peerGatewayIP.To4() == nil || !peerPodCIDR.Contains(peerGatewayIP) {
		return fmt.Errorf("nodenet: peer route to %v: gateway %v must be an IPv4 address in it", peerPodCIDR, peerGatewayIP)
	}
	link, err := netlink.LinkByName(gatewayIfName)
	if err != nil {
		return fmt.Errorf("nodenet: peer route to %v: gateway interface %s: %w", peerPodCIDR, gatewayIfName, err)
	}
	r := peerRoute(link.Attrs().Index, peerPodCIDR)
	r.Gw = peerGatewayIP.To4()
	r.Flags = int(netlink.FLAG_ONLINK)
	r.Protocol = RouteProtocolWeir
	if hasRoute(netlink.FAMILY_V4, r) {
		return nil
	}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("nodenet: adding route %v via %v dev %s onlink proto %d: %w", peerPodCIDR, peerGatewayIP, gatewayIfName,
			RouteProtocolWeir, err)
	}
	return nil
}

// hasRoute reports whether the main table already holds want exactly
// (destination, device, next hop, protocol, onlink). Re-writing an
// identical route is not free: the kernel announces it on netlink like
// any change, and ovs-vswitchd listens to route announcements. An agent
// restart re-ensures every peer's route, and while it did so a Geneve
// packet arriving at the restarting node was now and then not
// decapsulated but handed to the kernel (one datagram in 4 of 14 runs of
// TestFaultAgentRestartUnderTraffic, seen with tcpdump; that the route
// write is the trigger is not proven). Skipping unchanged routes removes
// these writes. A failed lookup reports false: the route is then written.
func hasRoute(family int, want *netlink.Route) bool {
	routes, err := netlink.RouteListFiltered(family, want, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
	if err != nil {
		return false
	}
	for _, r := range routes {
		if r.Gw.Equal(want.Gw) && r.Protocol == want.Protocol && r.Flags&int(netlink.FLAG_ONLINK) == want.Flags&int(netlink.FLAG_ONLINK) &&
			len(r.MultiPath) == 0 {
			return true
		}
	}
	return false
}

// DeletePeerRoute removes the route to a peer's pod CIDR through the
// gateway, marked or legacy. A route (or gateway interface) that is already gone is not an
// error.
func DeletePeerRoute(gatewayIfName string, peerPodCIDR *net.IPNet) error {
	if peerPodCIDR == nil || peerPodCIDR.IP.To4() == nil {
		return fmt.Errorf("nodenet: delete peer route: IPv4 pod CIDR is required, got %v", peerPodCIDR)
	}
	link, err := netlink.LinkByName(gatewayIfName)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil // the route went with the interface
		}
		return fmt.Errorf("nodenet: delete route to %v: gateway interface %s: %w", peerPodCIDR, gatewayIfName, err)
	}
	if err := netlink.RouteDel(peerRoute(link.Attrs().Index, peerPodCIDR)); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("nodenet: deleting route %v dev %s: %w", peerPodCIDR, gatewayIfName, err)
	}
	return nil
}

// PeerRoute is a kernel route of Weir's to a peer's pod CIDR.
type PeerRoute struct {
	Dst *net.IPNet
	Via net.IP // the peer's gateway IP
}

// ListPeerRoutes returns the peer routes Weir owns on gateway
// gatewayIfName: marked ones and legacy ones (isPeerRoute). A missing
// gateway has none.
func ListPeerRoutes(gatewayIfName string) ([]PeerRoute, error) {
	link, err := netlink.LinkByName(gatewayIfName)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil, nil
		}
		return nil, fmt.Errorf("nodenet: listing peer routes: gateway interface %s: %w", gatewayIfName, err)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("nodenet: listing routes on gateway %s: %w", gatewayIfName, err)
	}
	var out []PeerRoute
	for _, r := range routes {
		if isPeerRoute(r) {
			out = append(out, PeerRoute{Dst: r.Dst, Via: r.Gw})
		}
	}
	return out, nil
}

// isPeerRoute reports whether r (a main-table route on the gateway) is a
// peer route of Weir's: marked, or legacy (see RouteProtocolWeir).
func isPeerRoute(r netlink.Route) bool {
	if r.Dst == nil || r.Dst.IP.To4() == nil || len(r.MultiPath) > 0 {
		return false
	}
	if r.Protocol == RouteProtocolWeir {
		return true
	}
	if r.Protocol != unix.RTPROT_BOOT || r.Flags&int(netlink.FLAG_ONLINK) == 0 || r.Gw == nil {
		return false
	}
	ones, _ := r.Dst.Mask.Size()
	if ones >= 31 {
		return false // no room for a gateway address
	}
	first := ipv4Net(r.Dst).IP
	first = net.IPv4(first[0], first[1], first[2], first[3]+1)
	return r.Gw.Equal(first)
}

// peerRoute returns the key of a peer route: main table, destination and
// device.
func peerRoute(linkIndex int, dst *net.IPNet) *netlink.Route {
	return &netlink.Route{LinkIndex: linkIndex, Dst: ipv4Net(dst), Table: unix.RT_TABLE_MAIN}
}

// ipv4Net returns n in 4-byte form, host bits cleared.
func ipv4Net(n *net.IPNet) *net.IPNet {
	mask := n.Mask
	if ones, bits := mask.Size(); bits == 8*net.IPv6len {
		mask = net.CIDRMask(ones-96, 32)
	}
	return &net.IPNet{IP: n.IP.To4().Mask(mask), Mask: mask}
}
