package nodenet

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weirnet/weir/pkg/ipam"
)

// IPv6 peer routes. The route to a peer's IPv6 pod CIDR is
// "cidr via <peer gateway IPv6> dev <gateway> onlink proto 87", like the
// IPv4 one; but where the pipeline answers ARP for the peer's gateway IPv4,
// it cannot answer Neighbor Discovery (OVS would need nd_reserved and
// nd_options_type to build an NA: pkg/pipeline/peer_ipv6.go), so the next
// hop gets a permanent neighbour entry on the gateway: peer gateway IPv6 →
// nextHopMAC (the pipeline's virtual MAC). It is written after the route
// and removed after it, so a neighbour entry without a route is always an
// orphan (its route was removed by someone else, e.g. by hand), which
// PruneNeighboursV6 removes. Only routes with Weir's protocol are Weir's
// (there were no unmarked IPv6 peer routes), and only permanent entries
// with nextHopMAC are removed, so nothing of anyone else's is touched.

// EnsurePeerRouteV6 installs the neighbour entry and the route.
func EnsurePeerRouteV6(gw string, cidr *net.IPNet, gwIP net.IP, nextHopMAC net.HardwareAddr) error {
	if gwIP.To4() != nil || gwIP.To16() == nil || !cidr.Contains(gwIP) {
		return fmt.Errorf("nodenet: peer route to %v: gateway %v must be an IPv6 address in it", cidr, gwIP)
	}
	link, err := netlink.LinkByName(gw)
	if err != nil {
		return fmt.Errorf("nodenet: peer route to %v: gateway interface %s: %w", cidr, gw, err)
	}
	r := peerRouteV6(link.Attrs().Index, cidr)
	r.Gw = gwIP.To16()
	r.Flags = int(netlink.FLAG_ONLINK)
	r.Protocol = RouteProtocolWeir
	// The route before the neighbour entry (the neighbour GC prunes
	// entries without a route); neither is re-written when already as
	// wanted (hasRoute says why).
	if !hasRoute(netlink.FAMILY_V6, r) {
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("adding route %v via %v dev %s onlink proto %d: %w", cidr, gwIP, gw, RouteProtocolWeir, err)
		}
	}
	if !hasPermanentNeigh(link.Attrs().Index, gwIP, nextHopMAC) {
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V6,
			State: netlink.NUD_PERMANENT, IP: gwIP, HardwareAddr: nextHopMAC}); err != nil {
			return fmt.Errorf("neighbour %v lladdr %s dev %s permanent: %w", gwIP, nextHopMAC, gw, err)
		}
	}
	return nil
}

// hasPermanentNeigh reports whether link holds a permanent neighbour
// entry for ip with mac (false if it cannot be read).
func hasPermanentNeigh(linkIndex int, ip net.IP, mac net.HardwareAddr) bool {
	neighs, err := netlink.NeighList(linkIndex, netlink.FAMILY_V6)
	if err != nil {
		return false
	}
	for _, n := range neighs {
		if n.IP.Equal(ip) && n.State&netlink.NUD_PERMANENT != 0 && bytes.Equal(n.HardwareAddr, mac) {
			return true
		}
	}
	return false
}

// DeletePeerRouteV6 removes the route to cidr and the neighbour entry of
// its next hop (the route's, else the CIDR's gateway address) if it is a
// permanent one to nextHopMAC. Both may be gone already, the gateway too.
func DeletePeerRouteV6(gw string, cidr *net.IPNet, nextHopMAC net.HardwareAddr) error {
	link, err := netlink.LinkByName(gw)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil
		}
		return fmt.Errorf("nodenet: delete route to %v: gateway interface %s: %w", cidr, gw, err)
	}
	key := peerRouteV6(link.Attrs().Index, cidr)
	via := ipam.GatewayOf(cidr)
	if routes, err := netlink.RouteListFiltered(netlink.FAMILY_V6, key,
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST); err == nil {
		for _, r := range routes {
			if r.Gw != nil {
				via = r.Gw
			}
		}
	}
	if err := netlink.RouteDel(key); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("deleting route %v dev %s: %w", cidr, gw, err)
	}
	if via == nil {
		return nil
	}
	neighs, err := netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V6)
	if err != nil {
		return fmt.Errorf("nodenet: listing IPv6 neighbours of %s: %w", gw, err)
	}
	for _, n := range neighs {
		if n.IP.Equal(via) && n.State&netlink.NUD_PERMANENT != 0 && n.HardwareAddr.String() == nextHopMAC.String() {
			if err := netlink.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("deleting neighbour %v dev %s: %w", via, gw, err)
			}
		}
	}
	return nil
}

// ListPeerRoutesV6 returns the destinations of Weir's IPv6 peer routes on
// the gateway (main table, protocol RouteProtocolWeir).
func ListPeerRoutesV6(gw string) ([]*net.IPNet, error) {
	link, err := netlink.LinkByName(gw)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil, nil
		}
		return nil, fmt.Errorf("nodenet: listing IPv6 peer routes: gateway interface %s: %w", gw, err)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V6,
		&netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("nodenet: listing IPv6 routes on gateway %s: %w", gw, err)
	}
	var out []*net.IPNet
	for _, r := range routes {
		if r.Protocol == RouteProtocolWeir && r.Dst != nil && r.Dst.IP.To4() == nil && len(r.MultiPath) == 0 {
			out = append(out, r.Dst)
		}
	}
	return out, nil
}

// PruneNeighboursV6 removes the permanent neighbour entries to nextHopMAC
// on the gateway that no Weir IPv6 route uses as its next hop any more
// (left when a peer route was removed outside Weir), and returns how many.
func PruneNeighboursV6(gw string, nextHopMAC net.HardwareAddr) (int, error) {
	link, err := netlink.LinkByName(gw)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return 0, nil
		}
		return 0, fmt.Errorf("nodenet: pruning IPv6 neighbours: gateway interface %s: %w", gw, err)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V6,
		&netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return 0, fmt.Errorf("nodenet: listing IPv6 routes on gateway %s: %w", gw, err)
	}
	used := map[string]bool{}
	for _, r := range routes {
		if r.Protocol == RouteProtocolWeir && r.Gw != nil {
			used[r.Gw.String()] = true
		}
	}
	neighs, err := netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V6)
	if err != nil {
		return 0, fmt.Errorf("nodenet: listing IPv6 neighbours of %s: %w", gw, err)
	}
	removed := 0
	for _, n := range neighs {
		if n.State&netlink.NUD_PERMANENT == 0 || n.HardwareAddr.String() != nextHopMAC.String() || used[n.IP.String()] {
			continue
		}
		if err := netlink.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
			return removed, fmt.Errorf("deleting neighbour %v dev %s: %w", n.IP, gw, err)
		}
		removed++
	}
	return removed, nil
}

func peerRouteV6(linkIndex int, dst *net.IPNet) *netlink.Route {
	return &netlink.Route{LinkIndex: linkIndex, Dst: &net.IPNet{IP: dst.IP.Mask(dst.Mask), Mask: dst.Mask}, Table: unix.RT_TABLE_MAIN}
}
