package openflow

import (
	"fmt"
	"net"
	"sort"

	"antrea.io/libOpenflow/openflow15"
)

// Protocol is a shorthand for an (eth_type, ip_proto) pair, printed by
// ovs-ofctl as a single keyword ("ip", "tcp", "arp", ...).
type Protocol uint8

// Protocols the builder understands.
const (
	ProtocolIP Protocol = iota + 1
	ProtocolIPv6
	ProtocolARP
	ProtocolTCP
	ProtocolUDP
	ProtocolSCTP
	ProtocolICMP
	ProtocolTCPv6
	ProtocolUDPv6
	ProtocolSCTPv6
	ProtocolICMPv6
)

const (
	ethTypeIPv4 = 0x0800
	ethTypeIPv6 = 0x86dd
	ethTypeARP  = 0x0806
)

type protoInfo struct {
	keyword string
	ethType uint16
	ipProto uint8 // 0: none
}

var protocols = map[Protocol]protoInfo{
	ProtocolIP:     {"ip", ethTypeIPv4, 0},
	ProtocolIPv6:   {"ipv6", ethTypeIPv6, 0},
	ProtocolARP:    {"arp", ethTypeARP, 0},
	ProtocolTCP:    {"tcp", ethTypeIPv4, 6},
	ProtocolUDP:    {"udp", ethTypeIPv4, 17},
	ProtocolSCTP:   {"sctp", ethTypeIPv4, 132},
	ProtocolICMP:   {"icmp", ethTypeIPv4, 1},
	ProtocolTCPv6:  {"tcp6", ethTypeIPv6, 6},
	ProtocolUDPv6:  {"udp6", ethTypeIPv6, 17},
	ProtocolSCTPv6: {"sctp6", ethTypeIPv6, 132},
	ProtocolICMPv6: {"icmp6", ethTypeIPv6, 58},
}

// matchEntry is one field of a match: value and optional mask (nil = exact).
type matchEntry struct {
	field Field
	value []byte
	mask  []byte
}

// Flow is one OpenFlow flow entry: where it lives (table, priority), who
// owns it (cookie), what it matches and what it does. Build flows with
// NewFlow; a built Flow is immutable and safe to share.
type Flow struct {
	Table       uint8
	Priority    uint16
	Cookie      uint64
	IdleTimeout uint16
	HardTimeout uint16

	matches   []matchEntry // sorted by Field
	actions   []Action
	gotoTable int // -1: none
}

// FlowBuilder composes a Flow fluently. Methods named Match* add match
// fields; the others append actions in order. The first invalid argument is
// remembered and returned by Done, so a chain never panics.
type FlowBuilder struct {
	f   Flow
	err error
}

// NewFlow starts a flow in table with the given priority.
func NewFlow(table uint8, priority uint16) *FlowBuilder {
	return &FlowBuilder{f: Flow{Table: table, Priority: priority, gotoTable: -1}}
}

func (b *FlowBuilder) fail(format string, args ...any) *FlowBuilder {
	if b.err == nil {
		b.err = fmt.Errorf(format, args...)
	}
	return b
}

// Done returns the built flow, or the first error met while building.
func (b *FlowBuilder) Done() (*Flow, error) {
	if b.err != nil {
		return nil, fmt.Errorf("building flow for table %d priority %d: %w", b.f.Table, b.f.Priority, b.err)
	}
	f := b.f
	f.matches = append([]matchEntry(nil), b.f.matches...)
	sort.SliceStable(f.matches, func(i, j int) bool { return f.matches[i].field < f.matches[j].field })
	f.actions = append([]Action(nil), b.f.actions...)
	return &f, nil
}

// MustDone is Done for flows built from constants, where an error is a bug.
func (b *FlowBuilder) MustDone() *Flow {
	f, err := b.Done()
	if err != nil {
		panic(err)
	}
	return f
}

// Cookie sets the flow's cookie (see CookieAllocator).
func (b *FlowBuilder) Cookie(c uint64) *FlowBuilder { b.f.Cookie = c; return b }

// IdleTimeout sets the idle timeout in seconds.
func (b *FlowBuilder) IdleTimeout(s uint16) *FlowBuilder { b.f.IdleTimeout = s; return b }

// HardTimeout sets the hard timeout in seconds.
func (b *FlowBuilder) HardTimeout(s uint16) *FlowBuilder { b.f.HardTimeout = s; return b }

func (b *FlowBuilder) match(f Field, value, mask []byte) *FlowBuilder {
	for i := range b.f.matches {
		if b.f.matches[i].field == f {
			b.f.matches[i] = matchEntry{f, value, mask}
			return b
		}
	}
	b.f.matches = append(b.f.matches, matchEntry{f, value, mask})
	return b
}

func (b *FlowBuilder) matchUint(f Field, v uint64) *FlowBuilder {
	return b.match(f, putBE(v, fieldTable[f].width), nil)
}

func (b *FlowBuilder) matchUintMasked(f Field, v, m uint64) *FlowBuilder {
	w := fieldTable[f].width
	return b.match(f, putBE(v&m, w), putBE(m, w))
}

// MatchInPort matches the ingress OpenFlow port.
func (b *FlowBuilder) MatchInPort(port uint32) *FlowBuilder {
	return b.matchUint(FieldInPort, uint64(port))
}

// MatchProtocol matches eth_type (and ip_proto) of a protocol shorthand.
func (b *FlowBuilder) MatchProtocol(p Protocol) *FlowBuilder {
	info, ok := protocols[p]
	if !ok {
		return b.fail("unknown protocol %d", p)
	}
	b.matchUint(FieldEthType, uint64(info.ethType))
	if info.ipProto != 0 {
		b.matchUint(FieldIPProto, uint64(info.ipProto))
	}
	return b
}

// MatchEthType matches a raw eth_type.
func (b *FlowBuilder) MatchEthType(t uint16) *FlowBuilder {
	return b.matchUint(FieldEthType, uint64(t))
}

// MatchIPProto matches a raw ip_proto; an IP eth_type must be matched too.
func (b *FlowBuilder) MatchIPProto(p uint8) *FlowBuilder { return b.matchUint(FieldIPProto, uint64(p)) }

func (b *FlowBuilder) matchMAC(f Field, mac net.HardwareAddr, mask net.HardwareAddr) *FlowBuilder {
	if len(mac) != 6 || (mask != nil && len(mask) != 6) {
		return b.fail("%s: MAC address must be 6 bytes, got %q", fieldTable[f].name, mac.String())
	}
	return b.match(f, append([]byte(nil), mac...), append([]byte(nil), mask...))
}

// MatchEthSrc matches the Ethernet source address.
func (b *FlowBuilder) MatchEthSrc(mac net.HardwareAddr) *FlowBuilder {
	return b.matchMAC(FieldEthSrc, mac, nil)
}

// MatchEthDst matches the Ethernet destination address.
func (b *FlowBuilder) MatchEthDst(mac net.HardwareAddr) *FlowBuilder {
	return b.matchMAC(FieldEthDst, mac, nil)
}

// MatchEthDstMasked matches the Ethernet destination under a mask.
func (b *FlowBuilder) MatchEthDstMasked(mac, mask net.HardwareAddr) *FlowBuilder {
	return b.matchMAC(FieldEthDst, mac, mask)
}

// noField stands for "no field of this address family".
const noField = numFields

func (b *FlowBuilder) matchIP(f4, f6 Field, ip net.IP, mask net.IPMask) *FlowBuilder {
	if v4 := ip.To4(); v4 != nil && f4 != noField {
		if mask != nil && len(mask) == 16 {
			mask = mask[12:]
		}
		if mask != nil && len(mask) != 4 {
			return b.fail("%s: IPv4 mask %v has %d bytes", fieldTable[f4].name, mask, len(mask))
		}
		if mask != nil {
			return b.match(f4, v4.Mask(mask), []byte(mask))
		}
		return b.match(f4, append([]byte(nil), v4...), nil)
	}
	if v6 := ip.To16(); v6 != nil && f6 != noField {
		if mask != nil && len(mask) != 16 {
			return b.fail("%s: IPv6 mask %v has %d bytes", fieldTable[f6].name, mask, len(mask))
		}
		if mask != nil {
			return b.match(f6, v6.Mask(mask), []byte(mask))
		}
		return b.match(f6, append([]byte(nil), v6...), nil)
	}
	return b.fail("invalid IP address %q", ip.String())
}

// MatchSrcIP matches the IPv4 or IPv6 source address (by the address family).
func (b *FlowBuilder) MatchSrcIP(ip net.IP) *FlowBuilder {
	return b.matchIP(FieldIPv4Src, FieldIPv6Src, ip, nil)
}

// MatchDstIP matches the IPv4 or IPv6 destination address.
func (b *FlowBuilder) MatchDstIP(ip net.IP) *FlowBuilder {
	return b.matchIP(FieldIPv4Dst, FieldIPv6Dst, ip, nil)
}

// MatchSrcNet matches an IPv4 or IPv6 source prefix.
func (b *FlowBuilder) MatchSrcNet(n *net.IPNet) *FlowBuilder {
	if n == nil {
		return b.fail("nil source network")
	}
	return b.matchIP(FieldIPv4Src, FieldIPv6Src, n.IP, n.Mask)
}

// MatchDstNet matches an IPv4 or IPv6 destination prefix.
func (b *FlowBuilder) MatchDstNet(n *net.IPNet) *FlowBuilder {
	if n == nil {
		return b.fail("nil destination network")
	}
	return b.matchIP(FieldIPv4Dst, FieldIPv6Dst, n.IP, n.Mask)
}

// MatchARPOp matches the ARP opcode (1 request, 2 reply).
func (b *FlowBuilder) MatchARPOp(op uint16) *FlowBuilder { return b.matchUint(FieldArpOp, uint64(op)) }

// MatchARPSpa matches the ARP sender protocol address.
func (b *FlowBuilder) MatchARPSpa(ip net.IP) *FlowBuilder {
	return b.matchIP(FieldArpSpa, noField, ip, nil)
}

// MatchARPTpa matches the ARP target protocol address.
func (b *FlowBuilder) MatchARPTpa(ip net.IP) *FlowBuilder {
	return b.matchIP(FieldArpTpa, noField, ip, nil)
}

// MatchARPSha matches the ARP sender hardware address.
func (b *FlowBuilder) MatchARPSha(mac net.HardwareAddr) *FlowBuilder {
	return b.matchMAC(FieldArpSha, mac, nil)
}

// MatchARPTha matches the ARP target hardware address.
func (b *FlowBuilder) MatchARPTha(mac net.HardwareAddr) *FlowBuilder {
	return b.matchMAC(FieldArpTha, mac, nil)
}

// l4Fields returns the src/dst port fields for the flow's protocol.
func (b *FlowBuilder) l4Fields() (Field, Field, bool) {
	for _, m := range b.f.matches {
		if m.field == FieldIPProto {
			switch m.value[0] {
			case 6:
				return FieldTCPSrc, FieldTCPDst, true
			case 17:
				return FieldUDPSrc, FieldUDPDst, true
			case 132:
				return FieldSCTPSrc, FieldSCTPDst, true
			}
		}
	}
	return 0, 0, false
}

// MatchSrcPort matches the TCP/UDP/SCTP source port; call MatchProtocol first.
func (b *FlowBuilder) MatchSrcPort(port uint16) *FlowBuilder {
	src, _, ok := b.l4Fields()
	if !ok {
		return b.fail("source port %d needs MatchProtocol(tcp|udp|sctp) first", port)
	}
	return b.matchUint(src, uint64(port))
}

// MatchDstPort matches the TCP/UDP/SCTP destination port; call MatchProtocol first.
func (b *FlowBuilder) MatchDstPort(port uint16) *FlowBuilder {
	_, dst, ok := b.l4Fields()
	if !ok {
		return b.fail("destination port %d needs MatchProtocol(tcp|udp|sctp) first", port)
	}
	return b.matchUint(dst, uint64(port))
}

// MatchDstPortMasked matches destination ports value/mask (one block of a
// port range; see PortRangeMasks).
func (b *FlowBuilder) MatchDstPortMasked(port, mask uint16) *FlowBuilder {
	_, dst, ok := b.l4Fields()
	if !ok {
		return b.fail("destination port %d/%#x needs MatchProtocol(tcp|udp|sctp) first", port, mask)
	}
	return b.matchUintMasked(dst, uint64(port), uint64(mask))
}

// MatchICMPType matches the ICMP (v4 or v6, by protocol) type.
func (b *FlowBuilder) MatchICMPType(t uint8) *FlowBuilder {
	if b.isIPv6() {
		return b.matchUint(FieldICMPv6Type, uint64(t))
	}
	return b.matchUint(FieldICMPType, uint64(t))
}

// MatchICMPCode matches the ICMP (v4 or v6, by protocol) code.
func (b *FlowBuilder) MatchICMPCode(c uint8) *FlowBuilder {
	if b.isIPv6() {
		return b.matchUint(FieldICMPv6Code, uint64(c))
	}
	return b.matchUint(FieldICMPCode, uint64(c))
}

// ICMPv6 Neighbor Discovery message types whose fields the ND matches need.
const (
	icmpv6NeighborSolicitation  = 135
	icmpv6NeighborAdvertisement = 136
)

// MatchNDTarget matches the target address of a Neighbor Solicitation or
// Advertisement; call MatchProtocol(ProtocolICMPv6) and MatchICMPType(135
// or 136) first (OVS refuses nd_target otherwise).
func (b *FlowBuilder) MatchNDTarget(ip net.IP) *FlowBuilder {
	if !b.hasICMPv6Type(icmpv6NeighborSolicitation, icmpv6NeighborAdvertisement) {
		return b.fail("nd_target %v needs icmp6 with icmp_type 135 or 136 first", ip)
	}
	if ip.To4() != nil || ip.To16() == nil {
		return b.fail("nd_target %v is not an IPv6 address", ip)
	}
	return b.match(FieldNDTarget, append([]byte(nil), ip.To16()...), nil)
}

// MatchNDSll matches the source link-layer address option of a Neighbor
// Solicitation (icmp_type 135 first).
func (b *FlowBuilder) MatchNDSll(mac net.HardwareAddr) *FlowBuilder {
	if !b.hasICMPv6Type(icmpv6NeighborSolicitation) {
		return b.fail("nd_sll %v needs icmp6 with icmp_type 135 first", mac)
	}
	return b.matchMAC(FieldNDSll, mac, nil)
}

// MatchNDTll matches the target link-layer address option of a Neighbor
// Advertisement (icmp_type 136 first).
func (b *FlowBuilder) MatchNDTll(mac net.HardwareAddr) *FlowBuilder {
	if !b.hasICMPv6Type(icmpv6NeighborAdvertisement) {
		return b.fail("nd_tll %v needs icmp6 with icmp_type 136 first", mac)
	}
	return b.matchMAC(FieldNDTll, mac, nil)
}

// hasICMPv6Type reports whether the flow matches one of the ICMPv6 types.
func (b *FlowBuilder) hasICMPv6Type(types ...uint8) bool {
	for _, m := range b.f.matches {
		if m.field == FieldICMPv6Type && len(m.value) == 1 {
			for _, t := range types {
				if m.value[0] == t {
					return true
				}
			}
		}
	}
	return false
}

func (b *FlowBuilder) isIPv6() bool {
	for _, m := range b.f.matches {
		if m.field == FieldEthType {
			return beUint(m.value) == ethTypeIPv6
		}
	}
	return false
}

// MatchTunID matches the tunnel ID (Geneve VNI).
func (b *FlowBuilder) MatchTunID(id uint64) *FlowBuilder { return b.matchUint(FieldTunID, id) }

// MatchTunDst matches the tunnel's outer destination: tun_dst for an IPv4
// address, tun_ipv6_dst for an IPv6 one (a tunnel over an IPv6 underlay).
func (b *FlowBuilder) MatchTunDst(ip net.IP) *FlowBuilder {
	return b.matchIP(FieldTunDst, FieldTunIPv6Dst, ip, nil)
}

// MatchTunSrc matches the tunnel's outer source: tun_src for an IPv4
// address, tun_ipv6_src for an IPv6 one.
func (b *FlowBuilder) MatchTunSrc(ip net.IP) *FlowBuilder {
	return b.matchIP(FieldTunSrc, FieldTunIPv6Src, ip, nil)
}

// MatchReg matches the whole 32-bit register reg.
func (b *FlowBuilder) MatchReg(reg int, value uint32) *FlowBuilder {
	if reg < 0 || reg > 15 {
		return b.fail("register %d out of range 0..15", reg)
	}
	return b.matchUint(FieldReg0+Field(reg), uint64(value))
}

// MatchRegBits matches value in bits start..end (inclusive) of register reg.
// Several MatchRegBits on one register combine.
func (b *FlowBuilder) MatchRegBits(reg int, start, end int, value uint32) *FlowBuilder {
	if reg < 0 || reg > 15 {
		return b.fail("register %d out of range 0..15", reg)
	}
	mask, err := bitMask(start, end, 32)
	if err != nil {
		return b.fail("reg%d: %w", reg, err)
	}
	if uint64(value)<<start&^mask != 0 {
		return b.fail("reg%d[%d..%d]: value %#x does not fit", reg, start, end, value)
	}
	f := FieldReg0 + Field(reg)
	v, m := uint64(value)<<start, mask
	for _, e := range b.f.matches {
		if e.field == f { // combine with bits matched earlier
			old, oldMask := beUint(e.value), uint64(0xffffffff)
			if e.mask != nil {
				oldMask = beUint(e.mask)
			}
			v, m = v|old&^mask, m|oldMask
		}
	}
	if m == 0xffffffff {
		return b.matchUint(f, v)
	}
	return b.matchUintMasked(f, v, m)
}

// CTState is a conntrack state match: bits set and bits required clear.
type CTState struct{ set, clear uint32 }

// Conntrack state bits, in OVS's order.
const (
	ctNew uint32 = 1 << iota
	ctEst
	ctRel
	ctRpl
	ctInv
	ctTrk
)

func (s CTState) with(bit uint32, on bool) CTState {
	if on {
		s.set |= bit
		s.clear &^= bit
	} else {
		s.clear |= bit
		s.set &^= bit
	}
	return s
}

// New, Est, Rel, Rpl, Inv and Trk require (true) or forbid (false) a state bit.
func (s CTState) New(on bool) CTState { return s.with(ctNew, on) }

// Est: see New.
func (s CTState) Est(on bool) CTState { return s.with(ctEst, on) }

// Rel: see New.
func (s CTState) Rel(on bool) CTState { return s.with(ctRel, on) }

// Rpl: see New.
func (s CTState) Rpl(on bool) CTState { return s.with(ctRpl, on) }

// Inv: see New.
func (s CTState) Inv(on bool) CTState { return s.with(ctInv, on) }

// Trk: see New.
func (s CTState) Trk(on bool) CTState { return s.with(ctTrk, on) }

// MatchCTState matches conntrack state bits.
func (b *FlowBuilder) MatchCTState(s CTState) *FlowBuilder {
	if s.set|s.clear == 0 {
		return b.fail("empty ct_state match")
	}
	return b.matchUintMasked(FieldCtState, uint64(s.set), uint64(s.set|s.clear))
}

// MatchCTZone matches the conntrack zone.
func (b *FlowBuilder) MatchCTZone(zone uint16) *FlowBuilder {
	return b.matchUint(FieldCtZone, uint64(zone))
}

// MatchCTMark matches ct_mark under mask (0xffffffff for exact).
func (b *FlowBuilder) MatchCTMark(mark, mask uint32) *FlowBuilder {
	if mask == 0xffffffff {
		return b.matchUint(FieldCtMark, uint64(mark))
	}
	return b.matchUintMasked(FieldCtMark, uint64(mark), uint64(mask))
}

// MatchCTLabel matches the 128-bit ct_label under mask; both big-endian.
func (b *FlowBuilder) MatchCTLabel(label, mask [16]byte) *FlowBuilder {
	if allOnes(mask[:]) {
		return b.match(FieldCtLabel, label[:], nil)
	}
	v := label
	for i := range v {
		v[i] &= mask[i]
	}
	return b.match(FieldCtLabel, v[:], mask[:])
}

// MatchConjID matches the conjunction ID set by a completed conjunction.
func (b *FlowBuilder) MatchConjID(id uint32) *FlowBuilder {
	return b.matchUint(FieldConjID, uint64(id))
}

// MatchPktMark matches the packet mark under mask.
func (b *FlowBuilder) MatchPktMark(mark, mask uint32) *FlowBuilder {
	if mask == 0xffffffff {
		return b.matchUint(FieldPktMark, uint64(mark))
	}
	return b.matchUintMasked(FieldPktMark, uint64(mark), uint64(mask))
}

// MatchMetadata matches the 64-bit pipeline metadata under mask.
func (b *FlowBuilder) MatchMetadata(v, mask uint64) *FlowBuilder {
	if mask == ^uint64(0) {
		return b.matchUint(FieldMetadata, v)
	}
	return b.matchUintMasked(FieldMetadata, v, mask)
}

// Action appends an action built elsewhere.
func (b *FlowBuilder) Action(a Action) *FlowBuilder {
	if a == nil {
		return b.fail("nil action")
	}
	if err := a.validate(); err != nil {
		return b.fail("%w", err)
	}
	b.f.actions = append(b.f.actions, a)
	return b
}

// Output sends the packet to an OpenFlow port.
func (b *FlowBuilder) Output(port uint32) *FlowBuilder { return b.Action(Output(port)) }

// OutputReg sends the packet to the port held in reg[start..end].
func (b *FlowBuilder) OutputReg(reg, start, end int) *FlowBuilder {
	return b.Action(OutputField(Subfield{FieldReg0 + Field(reg), start, end}))
}

// SetField sets a whole field to value (see the Set* helpers).
func (b *FlowBuilder) SetField(f Field, value []byte) *FlowBuilder {
	return b.Action(SetField(f, value))
}

// SetEthSrc rewrites the Ethernet source.
func (b *FlowBuilder) SetEthSrc(mac net.HardwareAddr) *FlowBuilder {
	return b.SetField(FieldEthSrc, mac)
}

// SetEthDst rewrites the Ethernet destination.
func (b *FlowBuilder) SetEthDst(mac net.HardwareAddr) *FlowBuilder {
	return b.SetField(FieldEthDst, mac)
}

// SetTunDst sets the tunnel's outer destination (flow-based tunnels) by
// the address family: tun_dst for an IPv4 address, tun_ipv6_dst for an
// IPv6 one. OVS keeps the two as separate fields and encapsulates over
// IPv6 when tun_ipv6_dst is set, so one call covers both underlays and an
// IPv4 address (also in its 16-byte form) gives exactly the IPv4 action.
func (b *FlowBuilder) SetTunDst(ip net.IP) *FlowBuilder {
	f, ok := tunDstField(ip)
	if !ok {
		return b.fail("set tunnel destination: invalid IP address %q", ip.String())
	}
	return b.Action(SetIPField(f, ip))
}

// tunDstField returns the tunnel destination field for ip's family.
func tunDstField(ip net.IP) (Field, bool) {
	switch {
	case ip.To4() != nil:
		return FieldTunDst, true
	case len(ip) == net.IPv6len:
		return FieldTunIPv6Dst, true
	}
	return 0, false
}

// SetTunID sets the tunnel ID (Geneve VNI).
func (b *FlowBuilder) SetTunID(id uint64) *FlowBuilder { return b.SetField(FieldTunID, putBE(id, 8)) }

// LoadReg loads value into reg[start..end].
func (b *FlowBuilder) LoadReg(reg, start, end int, value uint64) *FlowBuilder {
	return b.Action(Load(Subfield{FieldReg0 + Field(reg), start, end}, value))
}

// Load loads value into a subfield.
func (b *FlowBuilder) Load(dst Subfield, value uint64) *FlowBuilder {
	return b.Action(Load(dst, value))
}

// Move copies src into dst (same width).
func (b *FlowBuilder) Move(src, dst Subfield) *FlowBuilder { return b.Action(Move(src, dst)) }

// Resubmit searches table as if the packet entered it now, then continues.
func (b *FlowBuilder) Resubmit(table uint8) *FlowBuilder { return b.Action(Resubmit(table)) }

// CT sends the packet through conntrack (see CTAction).
func (b *FlowBuilder) CT(ct *CTAction) *FlowBuilder { return b.Action(ct) }

// Conjunction makes the flow one clause (1-based) of conjunction id.
func (b *FlowBuilder) Conjunction(id uint32, clause, nClauses uint8) *FlowBuilder {
	return b.Action(Conjunction(id, clause, nClauses))
}

// DecTTL decrements the IP TTL (drops at zero).
func (b *FlowBuilder) DecTTL() *FlowBuilder { return b.Action(DecTTL()) }

// Group sends the packet to a group.
func (b *FlowBuilder) Group(id uint32) *FlowBuilder { return b.Action(GroupAction(id)) }

// Meter applies a meter.
func (b *FlowBuilder) Meter(id uint32) *FlowBuilder { return b.Action(Meter(id)) }

// Note attaches opaque bytes (visible in dumps, no effect on packets).
func (b *FlowBuilder) Note(data []byte) *FlowBuilder { return b.Action(Note(data)) }

// Controller sends the packet to the controller, with optional userdata.
func (b *FlowBuilder) Controller(userdata []byte) *FlowBuilder { return b.Action(Controller(userdata)) }

// GotoTable continues the pipeline at table (must be after this flow's table).
func (b *FlowBuilder) GotoTable(table uint8) *FlowBuilder {
	if table <= b.f.Table {
		return b.fail("goto_table:%d from table %d: OpenFlow only jumps forward", table, b.f.Table)
	}
	b.f.gotoTable = int(table)
	return b
}

// Drop makes the drop explicit: a flow with no actions drops. It fails if
// actions were already added.
func (b *FlowBuilder) Drop() *FlowBuilder {
	if len(b.f.actions) > 0 || b.f.gotoTable >= 0 {
		return b.fail("drop flow already has actions")
	}
	return b
}

// bitMask returns the mask of bits start..end (inclusive) within width bits.
func bitMask(start, end, width int) (uint64, error) {
	if start < 0 || end < start || end >= width {
		return 0, fmt.Errorf("bit range [%d..%d] outside 0..%d", start, end, width-1)
	}
	n := end - start + 1
	if n == 64 {
		return ^uint64(0), nil
	}
	return ((uint64(1) << n) - 1) << start, nil
}

// FlowMod returns the flow as a libOpenflow flow_mod object with the given
// command (openflow15.FC_ADD, FC_MODIFY_STRICT, FC_DELETE_STRICT), for code
// that wants libOpenflow's types. The Switch itself sends the identical
// bytes from a direct encoder (appendFlowMod), which is much cheaper.
func (f *Flow) FlowMod(command uint8) (*openflow15.FlowMod, error) {
	fm := openflow15.NewFlowMod()
	fm.Command = command
	fm.TableId = f.Table
	fm.Priority = f.Priority
	fm.Cookie = f.Cookie
	if command != openflow15.FC_ADD {
		fm.CookieMask = 0 // strict commands identify the flow by match+priority
	}
	fm.IdleTimeout = f.IdleTimeout
	fm.HardTimeout = f.HardTimeout
	for _, m := range f.matches {
		mf, err := encodeMatch(m)
		if err != nil {
			return nil, err
		}
		fm.Match.AddField(*mf)
	}
	if command == openflow15.FC_DELETE || command == openflow15.FC_DELETE_STRICT {
		return fm, nil
	}
	if len(f.actions) > 0 {
		apply := openflow15.NewInstrApplyActions()
		for _, a := range f.actions {
			oa, err := a.encode()
			if err != nil {
				return nil, fmt.Errorf("encoding %s: %w", renderAction(a, nil), err)
			}
			if err := apply.AddAction(oa, false); err != nil {
				return nil, err
			}
		}
		fm.AddInstruction(apply)
	}
	if f.gotoTable >= 0 {
		fm.AddInstruction(openflow15.NewInstrGotoTable(uint8(f.gotoTable)))
	}
	return fm, nil
}

func encodeMatch(m matchEntry) (*openflow15.MatchField, error) {
	info := fieldTable[m.field]
	mf, err := openflow15.FindFieldHeaderByName(info.oxm, m.mask != nil)
	if err != nil {
		return nil, fmt.Errorf("field %s: %w", info.name, err)
	}
	mf.Value = &openflow15.ByteArrayField{Data: m.value, Length: uint8(len(m.value))}
	if m.mask != nil {
		mf.Mask = &openflow15.ByteArrayField{Data: m.mask, Length: uint8(len(m.mask))}
	}
	return mf, nil
}

// Encode returns the flow_mod ADD message bytes (xid 0), the compact form
// kept by the flow cache and sent in bundles.
func (f *Flow) Encode() ([]byte, error) { return f.appendFlowMod(nil, openflow15.FC_ADD) }

// Key identifies the flow within the switch: table, priority and match.
// Two flows with the same Key replace each other.
func (f *Flow) Key() string {
	buf := make([]byte, 0, 3+len(f.matches)*12)
	buf = append(buf, f.Table, byte(f.Priority>>8), byte(f.Priority))
	for _, m := range f.matches {
		buf = append(buf, byte(m.field), byte(len(m.value)))
		buf = append(buf, m.value...)
		buf = append(buf, byte(len(m.mask)))
		buf = append(buf, m.mask...)
	}
	return string(buf)
}
