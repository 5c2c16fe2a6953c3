package nodenet

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EnsurePeerRoute makes the node route a peer's pod CIDR into OVS:
// "peerPodCIDR via peerGatewayIP dev gatewayIfName onlink". The next hop is
// the peer's gateway IP, which is not on any local subnet (hence onlink):
// the kernel ARPs for it on the gateway, the pipeline answers with the
// global virtual MAC, and the L3 flow of the peer tunnels the packet. It is
// idempotent, and replaces a route to the same CIDR with another next hop.
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
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("nodenet: adding route %v via %v dev %s onlink: %w", peerPodCIDR, peerGatewayIP, gatewayIfName, err)
	}
	return nil
}

// DeletePeerRoute removes the route to a peer's pod CIDR through the
// gateway. A route (or gateway interface) that is already gone is not an
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
