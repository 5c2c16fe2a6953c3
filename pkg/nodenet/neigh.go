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
// resolves the address itself. OVS learns from ARP replies that cross its
// bridges, so the node's kernel is made to ARP for peerNodeIP on bridge:
// its neighbour entry there is deleted and resolution is started again
// (netlink NTF_USE, the equivalent of the kernel needing the entry to send
// a packet); the call returns once the kernel's entry is reachable, i.e.
// the reply has crossed the bridge. With the kernel datapath there is
// nothing to warm.
func WarmTunnelNeighbor(ctx context.Context, bridge string, peerNodeIP net.IP) error {
	ip := peerNodeIP.To4()
	if ip == nil {
		return fmt.Errorf("nodenet: warm tunnel neighbour: IPv4 address required, got %v", peerNodeIP)
	}
	link, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("nodenet: warm tunnel neighbour %v: %s: %w", ip, bridge, err)
	}
	n := &netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4, IP: ip}
	if err := netlink.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nodenet: flushing neighbour %v on %s: %w", ip, bridge, err)
	}
	use := *n
	use.Flags = netlink.NTF_USE
	if err := netlink.NeighSet(&use); err != nil {
		return fmt.Errorf("nodenet: resolving neighbour %v on %s: %w", ip, bridge, err)
	}
	for {
		state, err := neighState(link, ip)
		if err != nil {
			return err
		}
		switch {
		case state&(netlink.NUD_REACHABLE|netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0:
			return nil
		case state&netlink.NUD_FAILED != 0:
			return fmt.Errorf("nodenet: %v does not answer ARP on %s", ip, bridge)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodenet: waiting for %v to answer ARP on %s: %w", ip, bridge, ctx.Err())
		case <-time.After(neighPoll):
		}
	}
}

// neighState returns the NUD state of ip on link, 0 if there is no entry.
func neighState(link netlink.Link, ip net.IP) (int, error) {
	neighs, err := netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
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
