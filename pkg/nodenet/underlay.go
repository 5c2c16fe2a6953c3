package nodenet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weirnet/weir/pkg/ovsdb"
)

// DefaultUnderlayBridge is the OVS bridge that holds the underlay NIC with
// the userspace datapath.
const DefaultUnderlayBridge = "br-phy"

// linkWait bounds waiting for ovs-vswitchd to create a bridge's network
// device, linkPoll is the pause between looks.
const (
	linkWait = 10 * time.Second
	linkPoll = 20 * time.Millisecond
)

// OVSDB is what the underlay setup needs from pkg/ovsdb (an *ovsdb.Client).
type OVSDB interface {
	EnsureBridge(ctx context.Context, cfg ovsdb.BridgeConfig) (string, error)
	AddPort(ctx context.Context, bridge, name string, opts ovsdb.PortOptions) (int, error)
	GetPort(ctx context.Context, bridge, name string) (ovsdb.PortInfo, error)
	DeleteBridge(ctx context.Context, name string) error
}

// UnderlayConfig describes the underlay of a node running the userspace
// datapath.
type UnderlayConfig struct {
	// OVSDB is the client of the node's ovsdb-server.
	OVSDB OVSDB
	// NIC is the underlay network device (e.g. eth0). Its IPv4 and global
	// IPv6 addresses and its movable routes of both families move to
	// Bridge.
	NIC string
	// Bridge is the OVS bridge to create; DefaultUnderlayBridge if empty.
	Bridge string
}

func (c UnderlayConfig) withDefaults() (UnderlayConfig, error) {
	if c.Bridge == "" {
		c.Bridge = DefaultUnderlayBridge
	}
	switch {
	case c.OVSDB == nil:
		return c, errors.New("nodenet: underlay: an OVSDB client is required")
	case c.NIC == "":
		return c, errors.New("nodenet: underlay: the NIC is required")
	case c.NIC == c.Bridge:
		return c, fmt.Errorf("nodenet: underlay: NIC and bridge are both named %s", c.NIC)
	}
	return c, nil
}

// Underlay describes the node's underlay after SetupUnderlay.
type Underlay struct {
	// Bridge holds NIC and carries Addrs.
	Bridge, NIC string
	// Addrs are the node's IPv4 underlay addresses (on an IPv4 underlay
	// the first is the tunnel endpoint peers send to), empty on an
	// IPv6-only underlay.
	Addrs []*net.IPNet
	// Addrs6 are the node's global IPv6 underlay addresses (on an IPv6
	// underlay the first is the tunnel endpoint), empty on an IPv4-only
	// underlay. They move with the IPv4 ones because the kernel drops
	// every frame arriving on NIC: left there, they would be dead. At least
	// one of Addrs and Addrs6 is set.
	Addrs6 []*net.IPNet
	// MTU is the NIC's MTU; PodMTU(MTU) is what pods can use.
	MTU int
}

// SetupUnderlay prepares the underlay for Geneve with the userspace
// datapath. OVS's userspace tunnel code sends encapsulated packets out of
// the OVS bridge whose kernel route leads to the remote endpoint, and
// terminates packets addressed to an IP carried by an OVS bridge; so the
// node's underlay address must live on an OVS bridge that holds the NIC.
// SetupUnderlay, in this order:
//
//  1. creates Bridge (datapath netdev, fail_mode standalone: a learning
//     switch nobody programs; MAC = the NIC's, so the node keeps its
//     underlay MAC and peers' neighbour caches stay valid);
//  2. decides the underlay addresses and routes (see below) and records
//     them in OVSDB, in the external_ids of the NIC's Port row
//     (KeyUnderlayAddrs, KeyUnderlayRoutes; and weir-type=uplink), adding NIC
//     to Bridge if it is not there yet;
//  3. brings Bridge up and puts the addresses on it;
//  4. makes the kernel drop every frame arriving on NIC (nftables netdev
//     ingress, see installIngressDrop): OVS still reads them through its
//     AF_PACKET socket, but the kernel would otherwise answer ARP and IP on
//     the NIC as well as on Bridge;
//  5. removes the addresses from NIC and installs the routes on Bridge
//     (moving them off NIC).
//
// Addresses are the IPv4 ones and the global (scope universe) IPv6 ones,
// never link-local: every device has its own fe80::/64 address, and Bridge
// gets one from the NIC's MAC. IPv6 addresses are added to Bridge with
// IFA_F_NODAD: they only move between two devices of the node, so
// duplicate address detection would find nothing and only delay them by a
// second or more.
//
// Where the addresses come from, for each family on its own: the NIC's, if
// it has any (first set-up);
// else Bridge's (set up before: the agent restarted); else the OVSDB record
// (with the netdev datapath Bridge's device is a tap owned by ovs-vswitchd:
// when ovs-vswitchd exits, the device goes with its addresses and routes,
// and a restarted ovs-vswitchd recreates it empty; OVSDB, which outlives
// it, is the durable record). Per family, because a node set up before
// IPv6 moved has its IPv4 underlay on Bridge and its IPv6 one still on NIC:
// this moves the IPv6 part and keeps the IPv4 part. Either family may be
// missing: an IPv4-only, a dual-stack and an IPv6-only underlay (the
// tunnel endpoint then IPv6) all work; SetupUnderlay fails only when
// neither family has an address in any of the three places. The routes are
// the NIC's movable routes (see movableRoutes: default and other gateway
// routes) in the first case; in the
// others the record's, with those on Bridge added or winning (same
// table, destination, metric and TOS), so a route added by hand on Bridge
// is kept and one lost between a restore's address and route steps comes
// back.
//
// It is idempotent: run again (after an agent restart, or after
// ovs-vswitchd restarted and lost Bridge's device) it reconciles Bridge
// to the record. The node's underlay connectivity pauses for the few
// milliseconds between steps 3 and 5 of a first set-up.
func SetupUnderlay(ctx context.Context, cfg UnderlayConfig) (*Underlay, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	nic, err := netlink.LinkByName(cfg.NIC)
	if err != nil {
		return nil, fmt.Errorf("nodenet: underlay NIC %s: %w", cfg.NIC, err)
	}
	nicAddrs, err := ipv4Addrs(nic)
	if err != nil {
		return nil, err
	}
	nicRoutes, err := movableRoutes(nic)
	if err != nil {
		return nil, err
	}
	nicAddrs6, err := ipv6Addrs(nic)
	if err != nil {
		return nil, err
	}
	nicRoutes6, err := movableRoutes6(nic)
	if err != nil {
		return nil, err
	}
	rec, err := readUnderlayRecord(ctx, cfg)
	if err != nil {
		return nil, err
	}

	if _, err := cfg.OVSDB.EnsureBridge(ctx, ovsdb.BridgeConfig{
		Name: cfg.Bridge, DatapathType: ovsdb.DatapathNetdev, FailMode: ovsdb.FailModeStandalone,
		HWAddr: nic.Attrs().HardwareAddr.String(),
	}); err != nil {
		return nil, fmt.Errorf("nodenet: creating underlay bridge %s: %w", cfg.Bridge, err)
	}
	br, err := waitLink(ctx, cfg.Bridge)
	if err != nil {
		return nil, err
	}
	brAddrs, err := ipv4Addrs(br)
	if err != nil {
		return nil, err
	}
	brRoutes, err := movableRoutes(br)
	if err != nil {
		return nil, err
	}
	brAddrs6, err := ipv6Addrs(br)
	if err != nil {
		return nil, err
	}
	brRoutes6, err := movableRoutes6(br)
	if err != nil {
		return nil, err
	}

	// Each family on its own, from the first source that has an address
	// of it; a family without one anywhere keeps the record's routes (and
	// those on Bridge), if any, and has no addresses.
	var want underlayRecord
	want.Addrs, want.Routes = chooseFamily(nicAddrs, nicRoutes, brAddrs, brRoutes, rec.Addrs, rec.Routes)
	want.Addrs6, want.Routes6 = chooseFamily(nicAddrs6, nicRoutes6, brAddrs6, brRoutes6, rec.Addrs6, rec.Routes6)
	if len(want.Addrs) == 0 && len(want.Addrs6) == 0 {
		return nil, fmt.Errorf("nodenet: underlay: neither %s nor %s has an IPv4 or global IPv6 address, and OVSDB holds no record of one",
			cfg.NIC, cfg.Bridge)
	}
	ids, err := want.externalIDs()
	if err != nil {
		return nil, err
	}
	ids[ovsdb.KeyWeirType] = ovsdb.WeirTypeUplink
	if _, err := cfg.OVSDB.AddPort(ctx, cfg.Bridge, cfg.NIC, ovsdb.PortOptions{ExternalIDs: ids}); err != nil {
		return nil, fmt.Errorf("nodenet: adding underlay NIC %s to %s: %w", cfg.NIC, cfg.Bridge, err)
	}

	if err := netlink.LinkSetUp(nic); err != nil {
		return nil, fmt.Errorf("nodenet: bringing underlay NIC %s up: %w", cfg.NIC, err)
	}
	if len(want.Addrs6) > 0 {
		if err := skipLinkLocalDAD(cfg.Bridge); err != nil {
			return nil, err
		}
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("nodenet: bringing %s up: %w", cfg.Bridge, err)
	}
	toAdd := nicAddrs // keeps their broadcast addresses
	if len(toAdd) == 0 {
		toAdd = want.netlinkAddrs()
	}
	if err := addAddrs(br, slices.Concat(toAdd, want.netlinkAddrs6())); err != nil {
		return nil, err
	}
	if err := installIngressDrop(ctx, cfg.NIC); err != nil {
		return nil, err
	}
	if err := delAddrs(nic, slices.Concat(nicAddrs, nicAddrs6)); err != nil {
		return nil, err
	}
	routes, err := want.netlinkRoutes()
	if err != nil {
		return nil, err
	}
	routes6, err := want.netlinkRoutes6()
	if err != nil {
		return nil, err
	}
	// After the addresses: a gateway must be on a prefix of the new device.
	if err := moveRoutes(slices.Concat(routes, routes6), br); err != nil {
		return nil, err
	}

	addrs, err := ipv4Addrs(br)
	if err != nil {
		return nil, err
	}
	addrs6, err := ipv6Addrs(br)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 && len(addrs6) == 0 {
		return nil, fmt.Errorf("nodenet: underlay: %s has no IPv4 or global IPv6 address after set-up", cfg.Bridge)
	}
	u := &Underlay{Bridge: cfg.Bridge, NIC: cfg.NIC, MTU: nic.Attrs().MTU}
	for _, a := range addrs {
		u.Addrs = append(u.Addrs, a.IPNet)
	}
	for _, a := range addrs6 {
		u.Addrs6 = append(u.Addrs6, a.IPNet)
	}
	return u, nil
}

// chooseFamily decides one family's underlay addresses and routes (see
// SetupUnderlay): the NIC's addresses with its movable routes if it has
// addresses; else Bridge's addresses, or else the record's, with the
// record's routes merged with Bridge's. A family with no address anywhere
// gets no addresses and the record's and Bridge's routes (none on a node
// that never had that family).
func chooseFamily(nicAddrs []netlink.Addr, nicRoutes []netlink.Route, brAddrs []netlink.Addr, brRoutes []netlink.Route,
	recAddrs []*net.IPNet, recRoutes []RecordedRoute) ([]*net.IPNet, []RecordedRoute) {
	switch {
	case len(nicAddrs) > 0:
		return addrNets(nicAddrs), recordRoutes(nicRoutes)
	case len(brAddrs) > 0:
		return addrNets(brAddrs), mergeRoutes(recRoutes, recordRoutes(brRoutes))
	default:
		return recAddrs, mergeRoutes(recRoutes, recordRoutes(brRoutes))
	}
}

// skipLinkLocalDAD turns duplicate address detection off on bridge
// (net.ipv6.conf.<bridge>.accept_dad=0) of an IPv6 underlay, before the
// bridge goes up: the kernel's own link-local address on it is then usable
// at once rather than tentative for a second or two. The kernel sends the
// Neighbor Solicitations that WarmTunnelNeighbor starts from a link-local
// source, and while that is tentative it silently sends none. Nothing
// is lost: the bridge carries the NIC's MAC onto the NIC's link, where the
// node is already present, and the global addresses move with IFA_F_NODAD
// anyway. A bridge that is up already keeps its link-local address as it
// is (WarmTunnelNeighbor waits for it). A kernel without IPv6 has nothing
// to set.
func skipLinkLocalDAD(bridge string) error {
	if _, err := os.Stat("/proc/sys/net/ipv6"); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	_, err := setSysctl(filepath.Join("/proc/sys/net/ipv6/conf", bridge, "accept_dad"), "net.ipv6.conf."+bridge+".accept_dad", "0")
	return err
}

// readUnderlayRecord returns the record a previous SetupUnderlay left on
// the NIC's Port row; empty if there is no such port (or bridge) yet.
func readUnderlayRecord(ctx context.Context, cfg UnderlayConfig) (underlayRecord, error) {
	p, err := cfg.OVSDB.GetPort(ctx, cfg.Bridge, cfg.NIC)
	if errors.Is(err, ovsdb.ErrPortNotFound) || errors.Is(err, ovsdb.ErrBridgeNotFound) {
		return underlayRecord{}, nil
	}
	if err != nil {
		return underlayRecord{}, fmt.Errorf("nodenet: reading the underlay record of %s: %w", cfg.NIC, err)
	}
	return parseUnderlayRecord(p.ExternalIDs)
}

// TeardownUnderlay undoes SetupUnderlay: the addresses and routes on Bridge
// (IPv4 and IPv6, chosen as SetupUnderlay chooses them) go back to NIC, the
// ingress drop is removed and Bridge is deleted (which releases NIC).
// Running it when there is nothing to undo is not an error.
func TeardownUnderlay(ctx context.Context, cfg UnderlayConfig) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	var errs []error
	br, err := netlink.LinkByName(cfg.Bridge)
	switch {
	case errors.As(err, new(netlink.LinkNotFoundError)):
		br = nil
	case err != nil:
		return fmt.Errorf("nodenet: underlay bridge %s: %w", cfg.Bridge, err)
	}
	if err := removeIngressDrop(ctx); err != nil {
		errs = append(errs, err)
	}
	if br != nil {
		nic, err := netlink.LinkByName(cfg.NIC)
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("nodenet: underlay NIC %s: %w", cfg.NIC, err))...)
		}
		addrs, err := ipv4Addrs(br)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		routes, err := movableRoutes(br)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		addrs6, err := ipv6Addrs(br)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		routes6, err := movableRoutes6(br)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		addrs, routes = slices.Concat(addrs, addrs6), slices.Concat(routes, routes6)
		if err := addAddrs(nic, addrs); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if err := moveRoutes(routes, nic); err != nil {
			errs = append(errs, err)
		}
		if err := delAddrs(br, addrs); err != nil {
			errs = append(errs, err)
		}
	}
	if err := cfg.OVSDB.DeleteBridge(ctx, cfg.Bridge); err != nil {
		errs = append(errs, fmt.Errorf("nodenet: deleting underlay bridge %s: %w", cfg.Bridge, err))
	}
	return errors.Join(errs...)
}

// waitLink waits until ovs-vswitchd has created the network device name.
func waitLink(ctx context.Context, name string) (netlink.Link, error) {
	deadline := time.Now().Add(linkWait)
	for {
		link, err := netlink.LinkByName(name)
		if err == nil {
			return link, nil
		}
		if !errors.As(err, new(netlink.LinkNotFoundError)) || time.Now().After(deadline) {
			return nil, fmt.Errorf("nodenet: waiting for device %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("nodenet: waiting for device %s: %w", name, ctx.Err())
		case <-time.After(linkPoll):
		}
	}
}

// ipv4Addrs returns the global IPv4 addresses of link.
func ipv4Addrs(link netlink.Link) ([]netlink.Addr, error) {
	all, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("nodenet: listing addresses of %s: %w", link.Attrs().Name, err)
	}
	var out []netlink.Addr
	for _, a := range all {
		if a.Scope == unix.RT_SCOPE_UNIVERSE {
			out = append(out, a)
		}
	}
	return out, nil
}

// ipv6Addrs returns the global (scope universe) IPv6 addresses of link:
// not the link-local ones (each device has its own), not ::1 (host scope),
// and not one whose duplicate address detection failed (another host owns
// it; adding it elsewhere with IFA_F_NODAD would make it usable).
func ipv6Addrs(link netlink.Link) ([]netlink.Addr, error) {
	all, err := netlink.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		return nil, fmt.Errorf("nodenet: listing IPv6 addresses of %s: %w", link.Attrs().Name, err)
	}
	var out []netlink.Addr
	for _, a := range all {
		if a.Scope == unix.RT_SCOPE_UNIVERSE && a.Flags&unix.IFA_F_DADFAILED == 0 {
			out = append(out, a)
		}
	}
	return out, nil
}

// addAddrs puts addrs, in the kernel's listing order, on link (keeping
// prefix length and broadcast). The kernel lists IPv4 addresses oldest
// first but IPv6 ones newest first, so the IPv6 ones are added last to
// first: link then lists them in the same order as the device they come
// from, the record stays the same across moves, and source address
// selection, which keeps the first of equally good candidates, picks as
// before. IPv6 addresses get IFA_F_NODAD: they move from another device of
// this node, so they are no new addresses on the link, and with DAD they
// would stay tentative (unusable as a source, routes with them as source
// refused) for a second or more after each move.
func addAddrs(link netlink.Link, addrs []netlink.Addr) error {
	var v6 []netlink.Addr
	for _, a := range addrs {
		if a.IP.To4() == nil {
			v6 = append(v6, a)
			continue
		}
		if err := addAddr(link, &netlink.Addr{IPNet: a.IPNet, Broadcast: a.Broadcast}); err != nil {
			return err
		}
	}
	for _, a := range slices.Backward(v6) {
		if err := addAddr(link, &netlink.Addr{IPNet: a.IPNet, Flags: unix.IFA_F_NODAD}); err != nil {
			return err
		}
	}
	return nil
}

func addAddr(link netlink.Link, a *netlink.Addr) error {
	if err := netlink.AddrReplace(link, a); err != nil {
		return fmt.Errorf("nodenet: adding %s to %s: %w", a.IPNet, link.Attrs().Name, err)
	}
	return nil
}

// delAddrs removes addrs from link; an address already gone is fine.
func delAddrs(link netlink.Link, addrs []netlink.Addr) error {
	for _, a := range addrs {
		if err := netlink.AddrDel(link, &netlink.Addr{IPNet: a.IPNet}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("nodenet: removing %s from %s: %w", a.IPNet, link.Attrs().Name, err)
		}
	}
	return nil
}

// movableRoutes returns link's IPv4 routes in the main table that the
// kernel does not derive from an address (those come back by themselves
// with the address): default and other gateway routes.
func movableRoutes(link netlink.Link) ([]netlink.Route, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index},
		netlink.RT_FILTER_OIF)
	if err != nil {
		return nil, fmt.Errorf("nodenet: listing routes of %s: %w", link.Attrs().Name, err)
	}
	var out []netlink.Route
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL || len(r.MultiPath) > 0 {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// movableRoutes6 is the IPv6 twin of movableRoutes: link's IPv6 routes in
// the main table (the local table's local, anycast and multicast routes
// are the kernel's, per address and device) except those the kernel makes
// itself (proto kernel: prefix routes of addresses, fe80::/64) and those
// learnt from router advertisements (proto ra: they expire, and the kernel
// learns them again on whichever device accepts RAs; a copy would pin them
// forever). Multipath routes stay where they are, as with IPv4; so do
// non-unicast ones (multicast, and unreachable and the like, which the
// kernel puts on lo anyway).
func movableRoutes6(link netlink.Link) ([]netlink.Route, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{LinkIndex: link.Attrs().Index},
		netlink.RT_FILTER_OIF)
	if err != nil {
		return nil, fmt.Errorf("nodenet: listing IPv6 routes of %s: %w", link.Attrs().Name, err)
	}
	var out []netlink.Route
	for _, r := range routes {
		switch {
		case r.Protocol == unix.RTPROT_KERNEL, r.Protocol == unix.RTPROT_RA, len(r.MultiPath) > 0,
			r.Type != unix.RTN_UNICAST, r.Dst != nil && r.Dst.IP.IsMulticast():
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// moveRoutes installs routes on link, replacing the same routes on their
// old device (both families: a replace matches table, destination and
// metric, not the device).
func moveRoutes(routes []netlink.Route, link netlink.Link) error {
	for _, r := range routes {
		r.LinkIndex = link.Attrs().Index
		r.ILinkIndex = 0
		if r.Dst == nil {
			// netlink takes the family from Dst, Src or Gw only (not
			// Family): a default route through a device alone would go out
			// without one, so spell out the family's default destination.
			switch r.Family {
			case netlink.FAMILY_V4:
				r.Dst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
			case netlink.FAMILY_V6:
				r.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
			}
		}
		if err := netlink.RouteReplace(&r); err != nil {
			return fmt.Errorf("nodenet: moving route %s to %s: %w", r, link.Attrs().Name, err)
		}
	}
	return nil
}
