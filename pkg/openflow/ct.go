package openflow

import (
	"fmt"
	"net"
	"strings"

	"antrea.io/libOpenflow/openflow15"
)

// NATKind says what a ct(nat) does.
type NATKind uint8

// NAT kinds: restore an existing connection's NAT, or set up SNAT/DNAT.
const (
	NATRestore NATKind = iota // plain "nat": apply the NAT of the connection
	NATSource
	NATDest
)

// NAT describes ct(nat(...)). For NATSource/NATDest, IPMin is required;
// IPMax and the port range are optional.
type NAT struct {
	Kind             NATKind
	IPMin, IPMax     net.IP
	PortMin, PortMax uint16
}

// CTAction is the ct() action: send the packet through conntrack in a zone,
// optionally committing the connection, applying NAT, running exec actions
// (set ct_mark/ct_label) and recirculating to a table.
type CTAction struct {
	Commit bool
	Zone   uint16
	// Table, if set, recirculates the packet to that table after conntrack.
	Table *uint8
	NAT   *NAT
	// Exec actions may only set ct_mark and ct_label (see SetCTMark).
	Exec []Action
}

// CT returns a ct() action in zone that recirculates to table.
func CT(zone uint16, table uint8) *CTAction { return &CTAction{Zone: zone, Table: &table} }

// CTCommit returns ct(commit,zone=zone) with the given exec actions.
func CTCommit(zone uint16, exec ...Action) *CTAction {
	return &CTAction{Commit: true, Zone: zone, Exec: exec}
}

// WithNAT returns a copy of the action that also applies nat.
func (a *CTAction) WithNAT(n NAT) *CTAction {
	c := *a
	c.NAT = &n
	return &c
}

// SetCTMark is the exec action ct_mark = value under mask.
func SetCTMark(value, mask uint32) Action {
	return maskedSetField{FieldCtMark, putBE(uint64(value&mask), 4), putBE(uint64(mask), 4)}
}

// SetCTLabel is the exec action ct_label = value under mask.
func SetCTLabel(value, mask [16]byte) Action {
	for i := range value {
		value[i] &= mask[i]
	}
	return maskedSetField{FieldCtLabel, value[:], mask[:]}
}

func (a *CTAction) validate() error {
	for _, e := range a.Exec {
		ms, ok := e.(maskedSetField)
		if !ok || (ms.field != FieldCtMark && ms.field != FieldCtLabel) {
			return fmt.Errorf("ct: exec may only set ct_mark or ct_label")
		}
		if !a.Commit {
			return fmt.Errorf("ct: exec needs commit")
		}
	}
	if n := a.NAT; n != nil && n.Kind != NATRestore {
		if n.IPMin.To4() == nil && n.IPMin.To16() == nil {
			return fmt.Errorf("ct: nat needs an IP address")
		}
		if n.IPMax != nil && (n.IPMin.To4() == nil) != (n.IPMax.To4() == nil) {
			return fmt.Errorf("ct: nat range mixes IPv4 and IPv6")
		}
	}
	return nil
}

func (a *CTAction) encode() (openflow15.Action, error) {
	ct := openflow15.NewNXActionConnTrack().ZoneImm(a.Zone)
	if a.Commit {
		ct.Commit()
	}
	if a.Table != nil {
		ct.Table(*a.Table)
	}
	var sub []openflow15.Action
	if a.NAT != nil {
		nat, err := a.NAT.encode()
		if err != nil {
			return nil, err
		}
		sub = append(sub, nat)
	}
	for _, e := range a.Exec {
		oa, err := e.encode()
		if err != nil {
			return nil, err
		}
		sub = append(sub, oa)
	}
	ct.AddAction(sub...)
	return ct, nil
}

func (n *NAT) encode() (openflow15.Action, error) {
	nat := openflow15.NewNXActionCTNAT()
	switch n.Kind {
	case NATRestore:
		return nat, nil
	case NATSource:
		if err := nat.SetSNAT(); err != nil {
			return nil, err
		}
	case NATDest:
		if err := nat.SetDNAT(); err != nil {
			return nil, err
		}
	}
	if v4 := n.IPMin.To4(); v4 != nil {
		nat.SetRangeIPv4Min(v4)
		if n.IPMax != nil {
			nat.SetRangeIPv4Max(n.IPMax.To4())
		}
	} else {
		nat.SetRangeIPv6Min(n.IPMin.To16())
		if n.IPMax != nil {
			nat.SetRangeIPv6Max(n.IPMax.To16())
		}
	}
	if n.PortMin != 0 {
		// libOpenflow v0.15.0 dereferences the maximum whenever the minimum
		// is set, so always send both (OVS prints one port if they match).
		lo, hi := n.PortMin, max(n.PortMax, n.PortMin)
		nat.SetRangeProtoMin(&lo)
		nat.SetRangeProtoMax(&hi)
	}
	return nat, nil
}

func (a *CTAction) render(b *strings.Builder, r *Renderer) {
	var parts []string
	if a.Commit {
		parts = append(parts, "commit")
	}
	if a.Table != nil {
		parts = append(parts, "table="+r.table(*a.Table))
	}
	parts = append(parts, fmt.Sprintf("zone=%d", a.Zone))
	if a.NAT != nil {
		parts = append(parts, a.NAT.render())
	}
	if len(a.Exec) > 0 {
		var e strings.Builder
		e.WriteString("exec(")
		for i, x := range a.Exec {
			if i > 0 {
				e.WriteByte(',')
			}
			x.render(&e, r)
		}
		e.WriteString(")")
		parts = append(parts, e.String())
	}
	b.WriteString("ct(" + strings.Join(parts, ",") + ")")
}

func (n *NAT) render() string {
	if n.Kind == NATRestore {
		return "nat"
	}
	var b strings.Builder
	if n.Kind == NATSource {
		b.WriteString("nat(src=")
	} else {
		b.WriteString("nat(dst=")
	}
	v6 := n.IPMin.To4() == nil
	ip := func(x net.IP) {
		if v6 {
			b.WriteString("[" + x.String() + "]")
		} else {
			b.WriteString(x.String())
		}
	}
	ip(n.IPMin)
	if n.IPMax != nil && !n.IPMax.Equal(n.IPMin) {
		b.WriteByte('-')
		ip(n.IPMax)
	}
	if n.PortMin != 0 {
		fmt.Fprintf(&b, ":%d", n.PortMin)
		if n.PortMax != 0 && n.PortMax != n.PortMin {
			fmt.Fprintf(&b, "-%d", n.PortMax)
		}
	}
	b.WriteString(")")
	return b.String()
}

// maskedSetField is set_field:value/mask->field (used inside ct exec).
type maskedSetField struct {
	field       Field
	value, mask []byte
}

func (a maskedSetField) validate() error { return nil }

func (a maskedSetField) encode() (openflow15.Action, error) {
	mf, err := encodeMatch(matchEntry{a.field, a.value, a.mask})
	if err != nil {
		return nil, err
	}
	return openflow15.NewActionSetField(*mf), nil
}

func (a maskedSetField) render(b *strings.Builder, _ *Renderer) {
	b.WriteString("set_field:")
	b.WriteString(formatValue(fieldTable[a.field], a.value, a.mask))
	b.WriteString("->")
	b.WriteString(fieldTable[a.field].set)
}
