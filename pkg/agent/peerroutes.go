package agent

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

// Peer routes are "CIDR via GW dev GATEWAY onlink proto 87" in the main
// table (nodenet.EnsurePeerRoute's shape, with the protocol added). Weir
// releases before the protocol was set left the same routes with the
// kernel's default protocol for netlink requests without one, "boot" (3);
// isPeerRoute recognises those too, precisely: on the gateway, main table,
// with a next hop that is the first address of the destination (a peer's
// gateway IP, as Weir always routes) and the onlink flag. A route an
// administrator adds by hand with `ip route add` also gets proto boot, but
// hardly one with exactly that next hop and onlink on Weir's gateway.

// EnsurePeerRoute installs (or replaces) the marked route to a peer's pod
// CIDR through the gateway; an unmarked legacy route to the same CIDR is
// replaced by it (same table, destination and metric).
func (NodenetRoutes) EnsurePeerRoute(gw string, cidr *net.IPNet, gwIP net.IP) error {
	if cidr == nil || cidr.IP.To4() == nil {
		return fmt.Errorf("peer route: IPv4 pod CIDR is required, got %v", cidr)
	}
	if gwIP.To4() == nil || !cidr.Contains(gwIP) {
		return fmt.Errorf("peer route to %v: gateway %v must be an IPv4 address in it", cidr, gwIP)
	}
	link, err := netlink.LinkByName(gw)
	if err != nil {
		return fmt.Errorf("peer route to %v: gateway interface %s: %w", cidr, gw, err)
	}
	r := peerRouteKey(link.Attrs().Index, cidr)
	r.Gw = gwIP.To4()
	r.Flags = int(netlink.FLAG_ONLINK)
	r.Protocol = RouteProtocolWeir
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("adding route %v via %v dev %s onlink proto %d: %w", cidr, gwIP, gw, RouteProtocolWeir, err)
	}
	return nil
}

// DeletePeerRoute removes the route to a peer's pod CIDR through the
// gateway, marked or legacy; one already gone (or whose gateway is gone)
// is not an error.
func (NodenetRoutes) DeletePeerRoute(gw string, cidr *net.IPNet) error {
	if cidr == nil || cidr.IP.To4() == nil {
		return fmt.Errorf("delete peer route: IPv4 pod CIDR is required, got %v", cidr)
	}
	link, err := netlink.LinkByName(gw)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil
		}
		return fmt.Errorf("delete route to %v: gateway interface %s: %w", cidr, gw, err)
	}
	if err := netlink.RouteDel(peerRouteKey(link.Attrs().Index, cidr)); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("deleting route %v dev %s: %w", cidr, gw, err)
	}
	return nil
}

// ListPeerRoutes returns the destinations of the peer routes Weir owns on
// gateway gw: marked ones and legacy ones (isPeerRoute). A missing gateway
// has none.
func (NodenetRoutes) ListPeerRoutes(gw string) ([]*net.IPNet, error) {
	link, err := netlink.LinkByName(gw)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing peer routes: gateway interface %s: %w", gw, err)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes on gateway %s: %w", gw, err)
	}
	var out []*net.IPNet
	for _, r := range routes {
		if isPeerRoute(r) {
			out = append(out, r.Dst)
		}
	}
	return out, nil
}

// isPeerRoute reports whether r (a main-table route on the gateway) is a
// peer route of Weir's: marked, or legacy (see above).
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
	if ones, _ := r.Dst.Mask.Size(); ones >= 31 {
		return false // no room for a gateway address
	}
	return r.Gw.Equal(firstIP(r.Dst))
}

// peerRouteKey returns what identifies a peer route: main table,
// destination (4-byte form, host bits cleared) and device.
func peerRouteKey(linkIndex int, dst *net.IPNet) *netlink.Route {
	mask := dst.Mask
	if ones, bits := mask.Size(); bits == 8*net.IPv6len {
		mask = net.CIDRMask(ones-96, 32)
	}
	return &netlink.Route{LinkIndex: linkIndex, Dst: &net.IPNet{IP: dst.IP.To4().Mask(mask), Mask: mask},
		Table: unix.RT_TABLE_MAIN}
}
