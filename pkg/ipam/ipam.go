// Package ipam owns IP address management for a node's pod CIDR
// (Node.spec.podCIDR): which pod owns which address, which addresses are
// reserved, and the durable record of both.
//
// An Allocator hands out addresses of one CIDR to opaque owner keys (the CNI
// server uses the container id plus the interface name). It reserves the
// network address, the IPv4 broadcast address and the gateway, which is
// always the first usable address (.1 in an IPv4 /24) and is exposed by
// Gateway. Allocation is idempotent per owner and round-robin: the search for
// a free address starts after the most recently allocated one, like the CNI
// host-local plugin, so an address that was just released is not handed out
// again until the rest of the range has been used. That keeps stale ARP
// entries and conntrack state of a deleted pod from hitting its successor.
//
// Every change is written to a Store before it becomes visible, so an agent
// restart never hands out an address twice. FileStore keeps all allocations of
// a node in one JSON file replaced atomically (temp file, fsync, rename, fsync
// of the directory); MemStore is for tests. A corrupt file is never silently
// reset: FileStore moves it aside (<path>.corrupt-<time>), logs a warning and
// starts empty, for the caller to rebuild from its authoritative record.
// Restore replaces the allocations wholesale, for an agent that rebuilds its
// state from the ports' OVSDB external_ids at start.
//
// The allocator works on netip.Addr internally and supports IPv4 and IPv6
// CIDRs: for IPv6 only the subnet-router anycast address (the all-zeros host
// part) and the gateway are reserved. An Allocator serves one family; a node
// has one per pod CIDR: one IPv4 or one IPv6 Allocator on a single-family
// node, one of each on a dual-stack node.
//
// An Allocator is safe for concurrent use.
package ipam

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
)

// ErrExhausted is returned (wrapped, with the CIDR in the message) by Allocate
// when every usable address of the CIDR is allocated. Test with errors.Is.
var ErrExhausted = errors.New("no free address")

// Allocator hands out the addresses of one CIDR. Create it with New.
type Allocator struct {
	prefix  netip.Prefix // masked
	gateway netip.Addr
	first   netip.Addr // first address a pod may get
	last    netip.Addr // last address a pod may get
	size    uint64     // number of addresses in [first, last], saturated
	store   Store

	mu      sync.Mutex
	byOwner map[string]netip.Addr
	byAddr  map[netip.Addr]string
	recent  netip.Addr // most recently allocated address; invalid if none
}

// New returns an Allocator for cidr whose state is loaded from, and saved to,
// store. It fails if cidr is too small to hold the gateway and one pod (IPv4
// /31 and /32, IPv6 /127 and /128), or if the stored state does not fit cidr
// (for example after the node's pod CIDR changed).
func New(cidr *net.IPNet, store Store) (*Allocator, error) {
	if cidr == nil {
		return nil, errors.New("ipam: nil CIDR")
	}
	if store == nil {
		return nil, errors.New("ipam: nil store")
	}
	prefix, err := prefixFromIPNet(cidr)
	if err != nil {
		return nil, err
	}
	a := &Allocator{
		prefix:  prefix,
		store:   store,
		byOwner: make(map[string]netip.Addr),
		byAddr:  make(map[netip.Addr]string),
	}
	hostBits := prefix.Addr().BitLen() - prefix.Bits()
	network := prefix.Addr()
	// Reserved: network address and gateway; for IPv4 also the broadcast.
	reserved := uint64(2)
	a.last = lastAddr(prefix)
	if network.Is4() {
		reserved = 3
		a.last = a.last.Prev()
	}
	if hostBits >= 64 {
		a.size = math.MaxUint64
	} else {
		total := uint64(1) << hostBits
		if total <= reserved {
			what := "the network address, the gateway"
			if network.Is4() {
				what += ", the broadcast address"
			}
			return nil, fmt.Errorf("ipam: CIDR %s is too small: it must hold %s and at least one pod", prefix, what)
		}
		a.size = total - reserved
	}
	a.gateway = gatewayOf(prefix)
	a.first = a.gateway.Next()

	snap, err := store.Load()
	if err != nil {
		return nil, fmt.Errorf("ipam: loading state for %s: %w", prefix, err)
	}
	byOwner, byAddr, err := a.validate(snap.Allocations)
	if err != nil {
		return nil, fmt.Errorf("ipam: stored state does not fit %s: %w", prefix, err)
	}
	a.byOwner, a.byAddr = byOwner, byAddr
	if r, ok := toAddr(snap.LastAllocated); ok && a.usable(r) {
		a.recent = r
	}
	return a, nil
}

// CIDR returns the CIDR the allocator manages.
func (a *Allocator) CIDR() *net.IPNet {
	return &net.IPNet{
		IP:   net.IP(a.prefix.Addr().AsSlice()),
		Mask: net.CIDRMask(a.prefix.Bits(), a.prefix.Addr().BitLen()),
	}
}

// Gateway returns the gateway address: the first usable address of the CIDR.
// It is never handed to a pod.
func (a *Allocator) Gateway() net.IP { return toIP(a.gateway) }

// GatewayOf returns the gateway address of a node whose pod CIDR is cidr:
// its first usable address (.1 of an IPv4 /24, ::1 of an IPv6 prefix). It is
// the one place the rule lives: the local node's Allocator and the peers'
// routes (the Node controller) both use it. Nil for a malformed CIDR.
func GatewayOf(cidr *net.IPNet) net.IP {
	if cidr == nil {
		return nil
	}
	prefix, err := prefixFromIPNet(cidr)
	if err != nil {
		return nil
	}
	return toIP(gatewayOf(prefix))
}

func gatewayOf(prefix netip.Prefix) netip.Addr { return prefix.Masked().Addr().Next() }

// Size returns how many addresses pods can get in total (the CIDR less the
// reserved addresses), saturated at math.MaxUint64 for huge IPv6 ranges.
func (a *Allocator) Size() uint64 { return a.size }

// Allocate returns the address of owner, allocating one if owner has none.
// Allocating for an owner that already has an address returns that address
// and changes nothing. When the CIDR is full the error wraps ErrExhausted.
// The new allocation is saved to the store before Allocate returns it; if
// saving fails, nothing is allocated.
func (a *Allocator) Allocate(owner string) (net.IP, error) {
	if owner == "" {
		return nil, errors.New("ipam: allocate: empty owner")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if addr, ok := a.byOwner[owner]; ok {
		return toIP(addr), nil
	}
	if uint64(len(a.byOwner)) >= a.size {
		return nil, fmt.Errorf("ipam: allocate for %q: %w in %s (%d of %d addresses in use)",
			owner, ErrExhausted, a.prefix, len(a.byOwner), a.size)
	}
	// Every allocated address is in [first, last] and fewer than size are
	// allocated, so this loop finds a free address within size steps.
	cand := a.after(a.recent)
	for {
		if _, used := a.byAddr[cand]; !used {
			break
		}
		cand = a.after(cand)
	}
	prevRecent := a.recent
	a.byOwner[owner] = cand
	a.byAddr[cand] = owner
	a.recent = cand
	if err := a.saveLocked(); err != nil {
		delete(a.byOwner, owner)
		delete(a.byAddr, cand)
		a.recent = prevRecent
		return nil, fmt.Errorf("ipam: allocate %s for %q: %w", cand, owner, err)
	}
	return toIP(cand), nil
}

// Release frees the address of owner. Releasing an owner without an address
// is not an error. If saving the change fails, the address stays allocated
// and the error is returned, so the caller can retry.
func (a *Allocator) Release(owner string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	addr, ok := a.byOwner[owner]
	if !ok {
		return nil
	}
	delete(a.byOwner, owner)
	delete(a.byAddr, addr)
	if err := a.saveLocked(); err != nil {
		a.byOwner[owner] = addr
		a.byAddr[addr] = owner
		return fmt.Errorf("ipam: release %s of %q: %w", addr, owner, err)
	}
	return nil
}

// Lookup returns the address of owner, if it has one.
func (a *Allocator) Lookup(owner string) (net.IP, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	addr, ok := a.byOwner[owner]
	if !ok {
		return nil, false
	}
	return toIP(addr), true
}

// List returns a copy of all allocations, owner to address.
func (a *Allocator) List() map[string]net.IP {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]net.IP, len(a.byOwner))
	for o, addr := range a.byOwner {
		out[o] = toIP(addr)
	}
	return out
}

// Restore replaces all allocations with allocs (owner to address), for an
// agent that rebuilds its state from an authoritative record such as the
// external_ids of its OVS ports. Every address must be a usable address of
// the CIDR (not the network, gateway or broadcast address) and owned by one
// owner only; otherwise Restore changes nothing and returns an error naming
// every offending entry. The round-robin position is kept if it is still
// usable. The new state is saved before Restore returns.
func (a *Allocator) Restore(allocs map[string]net.IP) error {
	byOwner, byAddr, err := a.validate(allocs)
	if err != nil {
		return fmt.Errorf("ipam: restore into %s: %w", a.prefix, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	oldOwner, oldAddr := a.byOwner, a.byAddr
	a.byOwner, a.byAddr = byOwner, byAddr
	if err := a.saveLocked(); err != nil {
		a.byOwner, a.byAddr = oldOwner, oldAddr
		return fmt.Errorf("ipam: restore into %s: %w", a.prefix, err)
	}
	return nil
}

// validate checks allocations against the CIDR and builds the two indexes.
func (a *Allocator) validate(allocs map[string]net.IP) (map[string]netip.Addr, map[netip.Addr]string, error) {
	byOwner := make(map[string]netip.Addr, len(allocs))
	byAddr := make(map[netip.Addr]string, len(allocs))
	owners := make([]string, 0, len(allocs))
	for o := range allocs {
		owners = append(owners, o)
	}
	sort.Strings(owners) // deterministic messages and duplicate detection
	var problems []string
	for _, o := range owners {
		ip := allocs[o]
		addr, ok := toAddr(ip)
		switch {
		case o == "":
			problems = append(problems, fmt.Sprintf("empty owner for %s", ip))
		case !ok:
			problems = append(problems, fmt.Sprintf("%q: invalid address %q", o, ip))
		case !a.prefix.Contains(addr):
			problems = append(problems, fmt.Sprintf("%q: %s is outside %s", o, addr, a.prefix))
		case !a.usable(addr):
			problems = append(problems, fmt.Sprintf("%q: %s is reserved (%s)", o, addr, a.reservedName(addr)))
		default:
			if prev, dup := byAddr[addr]; dup {
				problems = append(problems, fmt.Sprintf("%s is claimed by both %q and %q", addr, prev, o))
				continue
			}
			byOwner[o] = addr
			byAddr[addr] = o
		}
	}
	if len(problems) > 0 {
		return nil, nil, fmt.Errorf("%d invalid allocation(s): %s", len(problems), strings.Join(problems, "; "))
	}
	return byOwner, byAddr, nil
}

func (a *Allocator) saveLocked() error {
	snap := Snapshot{
		CIDR:        a.prefix.String(),
		Allocations: make(map[string]net.IP, len(a.byOwner)),
	}
	if a.recent.IsValid() {
		snap.LastAllocated = toIP(a.recent)
	}
	for o, addr := range a.byOwner {
		snap.Allocations[o] = toIP(addr)
	}
	if err := a.store.Save(snap); err != nil {
		return fmt.Errorf("saving state: %w", err)
	}
	return nil
}

// usable reports whether addr may be given to a pod.
func (a *Allocator) usable(addr netip.Addr) bool {
	return a.prefix.Contains(addr) && addr.Compare(a.first) >= 0 && addr.Compare(a.last) <= 0
}

func (a *Allocator) reservedName(addr netip.Addr) string {
	switch {
	case addr == a.prefix.Addr():
		return "network address"
	case addr == a.gateway:
		return "gateway"
	default:
		return "broadcast address"
	}
}

// after returns the usable address following addr, wrapping around; for an
// invalid or unusable addr it returns the first usable address.
func (a *Allocator) after(addr netip.Addr) netip.Addr {
	if !addr.IsValid() || !a.usable(addr) || addr == a.last {
		return a.first
	}
	return addr.Next()
}

func prefixFromIPNet(n *net.IPNet) (netip.Prefix, error) {
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, fmt.Errorf("ipam: CIDR %s has a non-canonical mask", n)
	}
	addr, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("ipam: CIDR %s has an invalid address", n)
	}
	if bits == 32 {
		addr = addr.Unmap()
		if !addr.Is4() {
			return netip.Prefix{}, fmt.Errorf("ipam: CIDR %s mixes an IPv6 address with an IPv4 mask", n)
		}
	} else if addr.Is4In6() || addr.Is4() {
		// A 128-bit mask on an IPv4 address: use the IPv4 view.
		addr = addr.Unmap()
		if ones < 96 {
			return netip.Prefix{}, fmt.Errorf("ipam: CIDR %s: invalid mask for an IPv4 address", n)
		}
		ones -= 96
	}
	p, err := addr.Prefix(ones)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("ipam: CIDR %s: %w", n, err)
	}
	return p, nil
}

// lastAddr returns the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	addr, _ := netip.AddrFromSlice(b)
	return addr
}

func toAddr(ip net.IP) (netip.Addr, bool) {
	if ip == nil {
		return netip.Addr{}, false
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	addr, ok := netip.AddrFromSlice(ip)
	return addr, ok
}

func toIP(addr netip.Addr) net.IP { return net.IP(addr.AsSlice()) }
