package openflow

import (
	"strconv"
	"strings"
)

// Renderer prints flows in the syntax of `ovs-ofctl -O OpenFlow15
// --no-stats dump-flows`. TableName and PortName, when set, play the role
// of ovs-ofctl's --names: they return a name and true for known numbers.
// The zero Renderer prints numbers, like --no-names.
type Renderer struct {
	TableName func(uint8) (string, bool)
	PortName  func(uint32) (string, bool)
}

func (r *Renderer) table(t uint8) string {
	if r != nil && r.TableName != nil {
		if n, ok := r.TableName(t); ok {
			return n
		}
	}
	return strconv.Itoa(int(t))
}

func (r *Renderer) port(p uint32) string {
	if r != nil && r.PortName != nil {
		if n, ok := r.PortName(p); ok {
			return n
		}
	}
	return formatPort(p)
}

// String renders the flow with numbers only.
func (f *Flow) String() string { return (*Renderer)(nil).Flow(f) }

// Flow renders one flow: "cookie=0x1, table=2, priority=100,ip,nw_dst=10.0.0.1
// actions=output:3", omitting what ovs-ofctl omits (zero cookie, table 0
// without a name, default priority).
func (r *Renderer) Flow(f *Flow) string {
	var b strings.Builder
	if f.Cookie != 0 {
		b.WriteString("cookie=0x")
		b.WriteString(strconv.FormatUint(f.Cookie, 16))
		b.WriteString(", ")
	}
	if name := r.table(f.Table); f.Table != 0 || name != "0" {
		b.WriteString("table=")
		b.WriteString(name)
		b.WriteString(", ")
	}
	if f.IdleTimeout != 0 {
		b.WriteString("idle_timeout=" + strconv.Itoa(int(f.IdleTimeout)) + ", ")
	}
	if f.HardTimeout != 0 {
		b.WriteString("hard_timeout=" + strconv.Itoa(int(f.HardTimeout)) + ", ")
	}
	b.WriteString(r.Match(f))
	b.WriteString(" actions=")
	b.WriteString(r.Actions(f))
	return b.String()
}

// Match renders priority and match fields in ovs-ofctl's order.
func (r *Renderer) Match(f *Flow) string {
	var parts []string
	if f.Priority != 0x8000 {
		parts = append(parts, "priority="+strconv.Itoa(int(f.Priority)))
	}
	return strings.Join(r.matchFields(parts, f), ",")
}

// matchFields appends the rendered match fields (no priority) to parts.
func (r *Renderer) matchFields(parts []string, f *Flow) []string {
	var ethType uint64
	var ipProto uint64
	hasProto := false
	for _, m := range f.matches {
		switch m.field {
		case FieldEthType:
			ethType = beUint(m.value)
		case FieldIPProto:
			ipProto, hasProto = beUint(m.value), true
		}
	}
	// ovs-ofctl prints a known protocol keyword ("ip", "arp", ...) right
	// after the conntrack fields and before registers, tunnel, metadata and
	// in_port; an unknown eth_type prints as dl_type=0x.... after dl_dst.
	keyword, folded := "", false
	if ethType != 0 {
		keyword, folded = protocolKeyword(ethType, ipProto, hasProto)
	}
	known := keyword != "" && !strings.HasPrefix(keyword, "dl_type=")
	keywordDone := false
	for _, m := range f.matches {
		if known && !keywordDone && m.field >= FieldReg0 {
			parts = append(parts, keyword)
			keywordDone = true
		}
		switch m.field {
		case FieldEthType:
			if !known {
				parts = append(parts, keyword)
			}
			continue
		case FieldIPProto:
			if folded {
				continue
			}
		}
		info := fieldTable[m.field]
		name := info.name
		if m.field == FieldIPProto && ethType == ethTypeARP {
			name = "arp_op"
		}
		var v string
		if m.field == FieldInPort {
			v = r.port(uint32(beUint(m.value)))
		} else {
			v = formatValue(info, m.value, m.mask)
		}
		parts = append(parts, name+"="+v)
	}
	if known && !keywordDone {
		parts = append(parts, keyword)
	}
	return parts
}

// protocolKeyword returns the ovs-ofctl keyword for an eth_type (and
// ip_proto), and whether ip_proto was folded into it.
func protocolKeyword(ethType, ipProto uint64, hasProto bool) (string, bool) {
	if hasProto {
		for _, p := range protocols {
			if uint64(p.ethType) == ethType && p.ipProto != 0 && uint64(p.ipProto) == ipProto {
				return p.keyword, true
			}
		}
	}
	switch ethType {
	case ethTypeIPv4:
		return "ip", false
	case ethTypeIPv6:
		return "ipv6", false
	case ethTypeARP:
		return "arp", false
	}
	return "dl_type=" + cHex(ethType), false
}

// Actions renders the action list ("drop" when there is none).
func (r *Renderer) Actions(f *Flow) string {
	if len(f.actions) == 0 && f.gotoTable < 0 {
		return "drop"
	}
	var b strings.Builder
	for i, a := range f.actions {
		if i > 0 {
			b.WriteByte(',')
		}
		a.render(&b, r)
	}
	if f.gotoTable >= 0 {
		if len(f.actions) > 0 {
			b.WriteByte(',')
		}
		b.WriteString("goto_table:")
		b.WriteString(r.table(uint8(f.gotoTable)))
	}
	return b.String()
}

func renderAction(a Action, r *Renderer) string {
	var b strings.Builder
	a.render(&b, r)
	return b.String()
}

// Match renders the flow's priority and match fields.
func (f *Flow) Match() string { return (*Renderer)(nil).Match(f) }
