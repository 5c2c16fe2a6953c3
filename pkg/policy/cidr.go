package policy

import (
	"encoding/binary"
	"net"
	"slices"
)

// prefix is an IPv4 CIDR as a number and a prefix length.
type prefix struct {
	addr uint32 // network address (host bits zero)
	bits int    // prefix length 0..32
}

func (p prefix) mask() uint32 {
	if p.bits == 0 {
		return 0
	}
	return ^uint32(0) << (32 - p.bits)
}

// contains reports whether q lies within p.
func (p prefix) contains(q prefix) bool {
	return q.bits >= p.bits && q.addr&p.mask() == p.addr
}

func (p prefix) ipNet() *net.IPNet {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, p.addr)
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(p.bits, 32)}
}

// toPrefix converts an IPv4 net.IPNet (host bits are cleared); ok is false
// for anything that is not IPv4.
func toPrefix(n *net.IPNet) (prefix, bool) {
	ip4 := n.IP.To4()
	ones, bits := n.Mask.Size()
	if ip4 == nil || (bits != 32 && bits != 128) || (bits == 128 && ones < 96) {
		return prefix{}, false
	}
	if bits == 128 {
		ones -= 96
	}
	p := prefix{bits: ones}
	p.addr = binary.BigEndian.Uint32(ip4) & p.mask()
	return p, true
}

// subtractCIDRs returns base minus every CIDR in except as disjoint CIDRs,
// sorted by address. Exceptions outside base are ignored; overlapping
// exceptions are fine. Only IPv4 is handled: non-IPv4 exceptions are
// ignored, a non-IPv4 base yields nil.
func subtractCIDRs(base *net.IPNet, except []*net.IPNet) []*net.IPNet {
	b, ok := toPrefix(base)
	if !ok {
		return nil
	}
	blocks := []prefix{b}
	for _, en := range except {
		e, ok := toPrefix(en)
		if !ok {
			continue
		}
		var next []prefix
		for _, blk := range blocks {
			switch {
			case e.contains(blk):
				// removed entirely
			case blk.contains(e):
				next = append(next, splitAround(blk, e)...)
			default:
				next = append(next, blk) // disjoint (CIDRs nest or are disjoint)
			}
		}
		blocks = next
	}
	slices.SortFunc(blocks, func(x, y prefix) int {
		if x.addr != y.addr {
			if x.addr < y.addr {
				return -1
			}
			return 1
		}
		return x.bits - y.bits
	})
	out := make([]*net.IPNet, len(blocks))
	for i, p := range blocks {
		out[i] = p.ipNet()
	}
	return out
}

// splitAround returns blk minus e (e strictly inside blk) as the siblings
// of e's ancestors below blk: one CIDR per prefix length blk.bits+1 ..
// e.bits.
func splitAround(blk, e prefix) []prefix {
	out := make([]prefix, 0, e.bits-blk.bits)
	for l := blk.bits + 1; l <= e.bits; l++ {
		anc := prefix{bits: l}
		anc.addr = e.addr & anc.mask()
		sib := prefix{addr: anc.addr ^ (1 << (32 - l)), bits: l}
		out = append(out, sib)
	}
	return out
}
