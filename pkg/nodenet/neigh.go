package nodenet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// neighPoll is the pause between looks at the neighbour table.
const neighPoll = 10 * time.Millisecond

// WarmTunnelNeighbor makes OVS's userspace tunnel neighbour cache learn the
// MAC of a peer's underlay address before the first tunnelled packet needs
// it. Without it, OVS drops the first packet to a new peer while it
// resolves the address itself. OVS learns from the ARP replies and IPv6
// Neighbor Advertisements that cross its bridges, so the node's kernel is
// made to resolve peerNodeIP on bridge, by ARP for an IPv4 address and by
// Neighbor Discovery (a Neighbor Solicitation) for an IPv6 one: its
// neighbour entry there is deleted and resolution is started again
// (netlink NTF_USE, the equivalent of the kernel needing the entry to send
// a packet: it works alike for both families); the call returns once the
// kernel's entry is reachable, i.e. the reply has crossed the bridge. With
// the kernel datapath there is nothing to warm.
//
// For IPv6 the kernel sends a solicitation started this way (with no
// packet whose source it could take) from its link-local address on
// bridge, and silently sends none while that address is tentative
// (duplicate address detection, a second or two after the bridge came
// up); so WarmTunnelNeighbor first waits for it (SetupUnderlay turns DAD
// off on the bridge of an IPv6 underlay, so that it normally has nothing
// to wait for). A bridge without any link-local address (IPv6 off on it,
// or addr_gen_mode none) cannot be warmed over IPv6: that is an error.
func WarmTunnelNeighbor(ctx context.Context, bridge string, peerNodeIP net.IP) error {
	ip, family, proto := peerNodeIP.To4(), netlink.FAMILY_V4, "ARP"
	if ip == nil {
		ip, family, proto = peerNodeIP.To16(), netlink.FAMILY_V6, "Neighbor Discovery"
	}
	switch {
	case ip == nil:
		return fmt.Errorf("nodenet: warm tunnel neighbour: invalid IP address %v", peerNodeIP)
	case !ip.IsGlobalUnicast() && !ip.IsLinkLocalUnicast():
		// Multicast, unspecified, loopback: no neighbour to resolve.
		return fmt.Errorf("nodenet: warm tunnel neighbour: %v is no unicast address", ip)
	}
	link, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("nodenet: warm tunnel neighbour %v: %s: %w", ip, bridge, err)
	}
	if family == netlink.FAMILY_V6 {
		if err := waitLinkLocal(ctx, link); err != nil {
			return fmt.Errorf("nodenet: warm tunnel neighbour %v: %w", ip, err)
		}
	}
	n := &netlink.Neigh{LinkIndex: link.Attrs().Index, Family: family, IP: ip}
	if err := netlink.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nodenet: flushing neighbour %v on %s: %w", ip, bridge, err)
	}
	use := *n
	use.Flags = netlink.NTF_USE
	if err := netlink.NeighSet(&use); err != nil {
		return fmt.Errorf("nodenet: resolving neighbour %v on %s (%s): %w", ip, bridge, proto, err)
	}
	for {
		state, err := neighState(link, family, ip)
		if err != nil {
			return err
		}
		switch {
		case state&(netlink.NUD_REACHABLE|netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0:
			return nil
		case state&netlink.NUD_FAILED != 0:
			return fmt.Errorf("nodenet: %v does not answer %s on %s", ip, proto, bridge)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodenet: waiting for %v to answer %s on %s: %w", ip, proto, bridge, ctx.Err())
		case <-time.After(neighPoll):
		}
	}
}

// neighState returns the NUD state of ip (of family) on link, 0 if there
// is no entry.
func neighState(link netlink.Link, family int, ip net.IP) (int, error) {
	neighs, err := netlink.NeighList(link.Attrs().Index, family)
	if err != nil {
		return 0, fmt.Errorf("nodenet: listing neighbours of %s: %w", link.Attrs().Name, err)
	}
	for _, n := range neighs {
		if n.IP.Equal(ip) {
			return n.State, nil
		}
	}
	return 0, nil
}

// waitLinkLocal waits until link has a usable (not tentative, optimistic
// or DAD-failed) link-local IPv6 address, the source of the Neighbor
// Solicitations the kernel sends without a packet to resolve for.
func waitLinkLocal(ctx context.Context, link netlink.Link) error {
	const unusable = unix.IFA_F_TENTATIVE | unix.IFA_F_OPTIMISTIC | unix.IFA_F_DADFAILED
	name := link.Attrs().Name
	for {
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("listing IPv6 addresses of %s: %w", name, err)
		}
		pending := false
		for _, a := range addrs {
			if !a.IP.IsLinkLocalUnicast() {
				continue
			}
			if a.Flags&unusable == 0 {
				return nil
			}
			pending = pending || a.Flags&unix.IFA_F_DADFAILED == 0
		}
		if !pending {
			return fmt.Errorf("%s has no usable link-local IPv6 address, the source of the kernel's Neighbor Solicitations", name)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the link-local IPv6 address of %s to leave duplicate address detection: %w", name, ctx.Err())
		case <-time.After(neighPoll):
		}
	}
}
