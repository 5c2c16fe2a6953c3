package nodenet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocolWeirService is the rtnetlink protocol of the Service CIDR
// routes (EnsureServiceRoutes). Not RouteProtocolWeir: every route of that
// protocol on the gateway is a peer route to the agent's garbage
// collection (ListPeerRoutes, ListPeerRoutesV6), which would delete the
// Service routes as routes of Nodes that no longer exist. 88 follows 87
// and is, like it, in no rt_protos list nor used by a routing daemon or
// CNI we know of.
const RouteProtocolWeirService netlink.RouteProtocol = 88

// The virtual next hops of the Service CIDR routes: addresses no pod,
// node or Service uses (link-local IPv4 beside the proxy's hairpin IP
// 169.254.0.253, and fc00::aabb:ccdd:eefe beside fc00::aabb:ccdd:eeff).
var (
	ServiceNextHopIPv4 = netip.MustParseAddr("169.254.0.252")
	ServiceNextHopIPv6 = netip.MustParseAddr("fc00::aabb:ccdd:eefe")
)

// ServiceRoute is one family's Service CIDR routed into the gateway.
type ServiceRoute struct {
	CIDR netip.Prefix
	// Src is the route's preferred source: the gateway's address of the
	// family, which endpoints on this and other nodes reply to through
	// OVS (pkg/pipeline, proxy_node.go).
	Src netip.Addr
}

// EnsureServiceRoutes makes the node send its own packets for the Service
// CIDRs into OVS, for Weir's proxy to DNAT (the kube-proxy-free mode):
// per route "<CIDR> via <ServiceNextHop of the family> dev <gateway>
// onlink src <Src> proto 88", and a permanent neighbour entry of the next
// hop to gatewayMAC. The next hop is virtual: nothing answers ARP or
// Neighbor Discovery for it, hence the pinned entry, and the pipeline
// handles the packets by their destination (the frontend), whatever their
// destination MAC. The gateway's own MAC is used rather than the pipeline's
// virtual MAC because the agent's neighbour pruning (PruneNeighboursV6)
// removes permanent entries to the virtual MAC that no peer route uses.
//
// It is idempotent and replaces routes to the same CIDRs; Weir's Service
// routes to other CIDRs (a changed configuration) are removed.
func EnsureServiceRoutes(gatewayName string, routes []ServiceRoute, gatewayMAC net.HardwareAddr) error {
	if len(gatewayMAC) != 6 {
		return fmt.Errorf("nodenet: service routes: gateway MAC %v is not an Ethernet address", gatewayMAC)
	}
	for _, r := range routes {
		switch {
		case !r.CIDR.IsValid() || !r.Src.IsValid():
			return fmt.Errorf("nodenet: service route %v src %v: both are required", r.CIDR, r.Src)
		case r.CIDR.Addr().Is4In6() || r.Src.Is4In6():
			return fmt.Errorf("nodenet: service route %v src %v: IPv4-mapped IPv6", r.CIDR, r.Src)
		case r.CIDR.Addr().Is4() != r.Src.Is4():
			return fmt.Errorf("nodenet: service route %v: source %v is of the other family", r.CIDR, r.Src)
		}
	}
	link, err := netlink.LinkByName(gatewayName)
	if err != nil {
		return fmt.Errorf("nodenet: service routes: gateway interface %s: %w", gatewayName, err)
	}
	idx := link.Attrs().Index
	keep := map[string]bool{}
	for _, r := range routes {
		fam, hop := netlink.FAMILY_V4, ServiceNextHopIPv4
		if r.CIDR.Addr().Is6() {
			fam, hop = netlink.FAMILY_V6, ServiceNextHopIPv6
		}
		// The neighbour first: a route whose next hop is unresolved
		// would have the kernel send ARP or NS nobody answers.
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: fam, State: netlink.NUD_PERMANENT,
			IP: net.IP(hop.AsSlice()), HardwareAddr: gatewayMAC}); err != nil {
			return fmt.Errorf("nodenet: neighbour %v lladdr %s dev %s permanent: %w", hop, gatewayMAC, gatewayName, err)
		}
		nr := serviceRoute(idx, r.CIDR)
		nr.Gw = net.IP(hop.AsSlice())
		nr.Src = net.IP(r.Src.AsSlice())
		nr.Flags = int(netlink.FLAG_ONLINK)
		nr.Protocol = RouteProtocolWeirService
		if err := netlink.RouteReplace(nr); err != nil {
			return fmt.Errorf("nodenet: adding route %v via %v dev %s onlink src %v proto %d: %w",
				r.CIDR.Masked(), hop, gatewayName, r.Src, RouteProtocolWeirService, err)
		}
		keep[r.CIDR.Masked().String()] = true
	}
	return removeServiceRoutes(idx, gatewayName, keep)
}

// RemoveServiceRoutes removes EnsureServiceRoutes' routes and neighbour
// entries from the gateway; a missing gateway or route is fine.
func RemoveServiceRoutes(gatewayName string) error {
	link, err := netlink.LinkByName(gatewayName)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil
		}
		return fmt.Errorf("nodenet: removing service routes: gateway interface %s: %w", gatewayName, err)
	}
	return removeServiceRoutes(link.Attrs().Index, gatewayName, nil)
}

// removeServiceRoutes deletes the Service routes on link idx whose
// destination is not in keep, then the next hops' neighbour entries of
// the families left without a route.
func removeServiceRoutes(idx int, gatewayName string, keep map[string]bool) error {
	var errs []error
	for _, fam := range []struct {
		family int
		hop    netip.Addr
	}{{netlink.FAMILY_V4, ServiceNextHopIPv4}, {netlink.FAMILY_V6, ServiceNextHopIPv6}} {
		routes, err := ListServiceRoutes(gatewayName, fam.family)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		left := 0
		for _, dst := range routes {
			if keep[dst.String()] {
				left++
				continue
			}
			if err := netlink.RouteDel(serviceRoute(idx, dst)); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("nodenet: deleting service route %v dev %s: %w", dst, gatewayName, err))
				left++
			}
		}
		if left > 0 {
			continue
		}
		err = netlink.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: fam.family, IP: net.IP(fam.hop.AsSlice())})
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("nodenet: deleting neighbour %v dev %s: %w", fam.hop, gatewayName, err))
		}
	}
	return errors.Join(errs...)
}

// ListServiceRoutes returns the destinations of the Service routes
// (protocol RouteProtocolWeirService) of family (netlink.FAMILY_V4 or
// FAMILY_V6) on the gateway, main table.
func ListServiceRoutes(gatewayName string, family int) ([]netip.Prefix, error) {
	link, err := netlink.LinkByName(gatewayName)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil, nil
		}
		return nil, fmt.Errorf("nodenet: listing service routes: gateway interface %s: %w", gatewayName, err)
	}
	routes, err := netlink.RouteListFiltered(family, &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("nodenet: listing routes on gateway %s: %w", gatewayName, err)
	}
	var out []netip.Prefix
	for _, r := range routes {
		if r.Protocol != RouteProtocolWeirService || r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), ones).Masked())
	}
	return out, nil
}

// serviceRoute is the key of a Service route: main table, destination,
// device.
func serviceRoute(idx int, dst netip.Prefix) *netlink.Route {
	dst = dst.Masked()
	bits := 32
	if dst.Addr().Is6() {
		bits = 128
	}
	return &netlink.Route{LinkIndex: idx, Table: unix.RT_TABLE_MAIN,
		Dst: &net.IPNet{IP: net.IP(dst.Addr().AsSlice()), Mask: net.CIDRMask(dst.Bits(), bits)}}
}
