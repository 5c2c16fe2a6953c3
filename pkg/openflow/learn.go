package openflow

import (
	"fmt"
	"strconv"
	"strings"

	"antrea.io/libOpenflow/openflow15"
)

// Learn is OVS's learn() action (the Nicira extension NXAST_LEARN): when a
// packet executes it, ovs-vswitchd adds (or refreshes) a flow in Table
// built from Specs, with values taken from the packet or given here. The
// learned flow's matches come from the match specs in order, its actions
// are the load specs (as set_field) and output specs in order.
//
// Priority is sent as given, 0 included: OVS's default of 0x8000 applies to
// ovs-ofctl's text syntax only. Timeouts of 0 mean permanent, as in a
// flow_mod. DeleteLearned removes the learned flows together with the flow
// holding the action (OVS ties them to it), which keeps an owner's delete
// from leaving learned flows behind.
type Learn struct {
	Table          uint8
	Priority       uint16
	Cookie         uint64
	IdleTimeout    uint16
	HardTimeout    uint16
	FinIdleTimeout uint16 // idle timeout once the packet that refreshed the flow had TCP FIN or RST
	FinHardTimeout uint16
	SendFlowRem    bool // the learned flow sends flow_removed to controllers
	DeleteLearned  bool
	Specs          []LearnSpec
}

// learnKind is what a LearnSpec does in the learned flow.
type learnKind uint8

const (
	learnMatch  learnKind = iota // the learned flow matches dst
	learnLoad                    // the learned flow loads into dst
	learnOutput                  // the learned flow outputs to the port in src
)

// LearnSpec is one entry of a learn action's template: a match, load or
// output of the learned flow, with its value from a packet field (src) or
// an immediate value (imm, big-endian, ceil(bits/8) bytes).
type LearnSpec struct {
	kind learnKind
	src  Subfield
	dst  Subfield
	imm  []byte // nil: the value is read from src
	bad  string // set by a constructor whose value did not fit
}

// immSpec builds an immediate spec of value for dst, remembering a value
// too wide for dst (putBE would silently cut it).
func immSpec(kind learnKind, dst Subfield, value uint64) LearnSpec {
	s := LearnSpec{kind: kind, dst: dst, imm: putBE(value, (dst.nBits()+7)/8)}
	if n := dst.nBits(); n > 0 && n < 64 && value>>n != 0 {
		s.bad = fmt.Sprintf("value %#x does not fit in %d bits", value, n)
	}
	return s
}

// LearnMatch makes the learned flow match f with the value f has in the
// packet (ovs-ofctl: "NXM_OF_IP_SRC[]").
func LearnMatch(f Subfield) LearnSpec { return LearnSpec{kind: learnMatch, src: f, dst: f} }

// LearnMatchFrom makes the learned flow match dst with the packet's value
// of src, which has the same width (ovs-ofctl: "NXM_OF_IP_DST[]=NXM_OF_IP_SRC[]"):
// a flow learned from a request that will match the replies.
func LearnMatchFrom(dst, src Subfield) LearnSpec {
	return LearnSpec{kind: learnMatch, src: src, dst: dst}
}

// LearnMatchValue makes the learned flow match dst with value, e.g.
// LearnMatchValue(Whole(FieldEthType), 0x800). It is also how the learned
// flow gets the prerequisites of later match fields (eth_type before
// nw_src, nw_proto before tp_dst): OVS checks them against the immediate
// matches that come earlier in Specs.
func LearnMatchValue(dst Subfield, value uint64) LearnSpec { return immSpec(learnMatch, dst, value) }

// LearnMatchBytes is LearnMatchValue for values wider than 64 bits (an
// IPv6 address: LearnMatchBytes(Whole(FieldIPv6Dst), ip.To16())); value is
// big-endian and ceil(bits/8) bytes long.
func LearnMatchBytes(dst Subfield, value []byte) LearnSpec {
	return LearnSpec{kind: learnMatch, dst: dst, imm: append([]byte{}, value...)}
}

// LearnLoad makes the learned flow load the packet's value of src into dst
// (ovs-ofctl: "load:NXM_NX_REG3[]->NXM_NX_REG3[]").
func LearnLoad(src, dst Subfield) LearnSpec { return LearnSpec{kind: learnLoad, src: src, dst: dst} }

// LearnLoadValue makes the learned flow load value into dst
// (ovs-ofctl: "load:0x50->NXM_NX_REG4[0..15]").
func LearnLoadValue(dst Subfield, value uint64) LearnSpec { return immSpec(learnLoad, dst, value) }

// LearnOutput makes the learned flow output to the port number that src
// holds in the packet (ovs-ofctl: "output:NXM_OF_IN_PORT[]").
func LearnOutput(src Subfield) LearnSpec { return LearnSpec{kind: learnOutput, src: src} }

type learnAction struct{ l Learn }

// LearnAction returns the learn() action for l (the Specs are copied).
func LearnAction(l Learn) Action {
	l.Specs = append([]LearnSpec(nil), l.Specs...)
	return learnAction{l}
}

// Learn appends a learn() action.
func (b *FlowBuilder) Learn(l Learn) *FlowBuilder { return b.Action(LearnAction(l)) }

// nBits is the spec's width: its destination's, or for output its source's.
func (s LearnSpec) nBits() int {
	if s.kind == learnOutput {
		return s.src.nBits()
	}
	return s.dst.nBits()
}

// learnPrereq is what the learned flow must already match, through
// earlier immediate matches, before it may match or load f (OVS's
// learn_check runs mf_check_src/mf_check_dst against those alone).
func learnPrereq(f Field) (ethTypes []uint16, proto uint8) {
	ip := []uint16{ethTypeIPv4, ethTypeIPv6}
	switch f {
	case FieldIPv4Src, FieldIPv4Dst:
		return []uint16{ethTypeIPv4}, 0
	case FieldIPv6Src, FieldIPv6Dst:
		return []uint16{ethTypeIPv6}, 0
	case FieldArpSpa, FieldArpTpa, FieldArpOp, FieldArpSha, FieldArpTha:
		return []uint16{ethTypeARP}, 0
	case FieldIPProto:
		return ip, 0
	case FieldTCPSrc, FieldTCPDst:
		return ip, 6
	case FieldUDPSrc, FieldUDPDst:
		return ip, 17
	case FieldSCTPSrc, FieldSCTPDst:
		return ip, 132
	case FieldICMPType, FieldICMPCode:
		return []uint16{ethTypeIPv4}, 1
	case FieldICMPv6Type, FieldICMPv6Code, FieldNDTarget, FieldNDSll, FieldNDTll:
		return []uint16{ethTypeIPv6}, 58
	}
	return nil, 0
}

func (a learnAction) validate() error {
	l := a.l
	if l.Table == 0xff {
		return fmt.Errorf("learn: table 255 is not a table")
	}
	var ethType uint16
	var proto uint8
	haveEthType, haveProto := false, false
	for i, s := range l.Specs {
		if err := s.validate(); err != nil {
			return fmt.Errorf("learn spec %d: %w", i+1, err)
		}
		if s.kind == learnOutput {
			continue
		}
		ets, p := learnPrereq(s.dst.Field)
		if len(ets) > 0 {
			ok := false
			for _, et := range ets {
				ok = ok || (haveEthType && et == ethType)
			}
			if !ok || (p != 0 && (!haveProto || proto != p)) {
				return fmt.Errorf("learn spec %d: %s needs an earlier immediate match on its prerequisites (eth_type %s%s)",
					i+1, fieldTable[s.dst.Field].nxm, formatEthTypes(ets), formatProto(p))
			}
		}
		if s.kind == learnMatch && s.imm != nil && s.dst.Start == 0 && s.dst.nBits() == fieldTable[s.dst.Field].width*8 {
			switch s.dst.Field {
			case FieldEthType:
				ethType, haveEthType = uint16(beUint(s.imm)), true
			case FieldIPProto:
				proto, haveProto = uint8(beUint(s.imm)), true
			}
		}
	}
	return nil
}

func formatEthTypes(ets []uint16) string {
	var parts []string
	for _, et := range ets {
		parts = append(parts, cHex(uint64(et)))
	}
	return strings.Join(parts, " or ")
}

func formatProto(p uint8) string {
	if p == 0 {
		return ""
	}
	return ", nw_proto " + strconv.Itoa(int(p))
}

func (s LearnSpec) validate() error {
	if s.bad != "" {
		return fmt.Errorf("%s", s.bad)
	}
	switch s.kind {
	case learnMatch, learnLoad:
		if err := s.dst.validate(); err != nil {
			return err
		}
		if s.imm == nil {
			if err := s.src.validate(); err != nil {
				return err
			}
			if s.src.nBits() != s.dst.nBits() {
				return fmt.Errorf("source has %d bits, destination %d", s.src.nBits(), s.dst.nBits())
			}
		} else {
			if len(s.imm) != (s.dst.nBits()+7)/8 {
				return fmt.Errorf("value has %d bytes, %d bits need %d", len(s.imm), s.dst.nBits(), (s.dst.nBits()+7)/8)
			}
			if extra := len(s.imm)*8 - s.dst.nBits(); extra > 0 && s.imm[0]>>(8-extra) != 0 {
				return fmt.Errorf("value %s does not fit in %d bits", hexBytes(s.imm), s.dst.nBits())
			}
		}
		if s.kind == learnLoad {
			switch s.dst.Field {
			case FieldEthType, FieldIPProto, FieldCtState, FieldCtZone, FieldConjID:
				return fmt.Errorf("load into read-only %s", fieldTable[s.dst.Field].nxm)
			}
		}
	case learnOutput:
		if err := s.src.validate(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown spec kind %d", s.kind)
	}
	return nil
}

func (a learnAction) encode() (openflow15.Action, error) {
	l := a.l
	act := openflow15.NewNXActionLearn()
	act.IdleTimeout = l.IdleTimeout
	act.HardTimeout = l.HardTimeout
	act.Priority = l.Priority
	act.Cookie = l.Cookie
	act.TableID = l.Table
	act.FinIdleTimeout = l.FinIdleTimeout
	act.FinHardTimeout = l.FinHardTimeout
	if l.SendFlowRem {
		act.Flags |= openflow15.NX_LEARN_F_SEND_FLOW_REM
	}
	if l.DeleteLearned {
		act.Flags |= openflow15.NX_LEARN_F_DELETE_LEARNED
	}
	for _, s := range l.Specs {
		spec, err := s.encode()
		if err != nil {
			return nil, err
		}
		act.LearnSpecs = append(act.LearnSpecs, spec)
	}
	act.Length = act.Len()
	return act, nil
}

func (s LearnSpec) encode() (*openflow15.NXLearnSpec, error) {
	n := uint16(s.nBits())
	spec := &openflow15.NXLearnSpec{Header: &openflow15.NXLearnSpecHeader{
		Src:    s.imm != nil,
		Dst:    s.kind == learnLoad,
		Output: s.kind == learnOutput,
		NBits:  n,
		Length: 2,
	}}
	if s.imm != nil {
		// The wire holds the value right-aligned in 16-bit units.
		v := make([]byte, 2*((int(n)+15)/16))
		copy(v[len(v)-len(s.imm):], s.imm)
		spec.SrcValue = v
	} else {
		h, err := s.src.header()
		if err != nil {
			return nil, err
		}
		spec.SrcField = &openflow15.NXLearnSpecField{Field: h, Ofs: uint16(s.src.Start)}
	}
	if s.kind != learnOutput {
		h, err := s.dst.header()
		if err != nil {
			return nil, err
		}
		spec.DstField = &openflow15.NXLearnSpecField{Field: h, Ofs: uint16(s.dst.Start)}
	}
	return spec, nil
}

// render prints the action as OVS 3.1's learn_format (lib/learn.c) does.
func (a learnAction) render(b *strings.Builder, r *Renderer) {
	l := a.l
	b.WriteString("learn(table=")
	b.WriteString(r.table(l.Table))
	if l.IdleTimeout != 0 {
		b.WriteString(",idle_timeout=" + strconv.Itoa(int(l.IdleTimeout)))
	}
	if l.HardTimeout != 0 {
		b.WriteString(",hard_timeout=" + strconv.Itoa(int(l.HardTimeout)))
	}
	if l.FinIdleTimeout != 0 {
		b.WriteString(",fin_idle_timeout=" + strconv.Itoa(int(l.FinIdleTimeout)))
	}
	if l.FinHardTimeout != 0 {
		b.WriteString(",fin_hard_timeout=" + strconv.Itoa(int(l.FinHardTimeout)))
	}
	if l.Priority != 0x8000 {
		b.WriteString(",priority=" + strconv.Itoa(int(l.Priority)))
	}
	if l.SendFlowRem {
		b.WriteString(",send_flow_rem")
	}
	if l.DeleteLearned {
		b.WriteString(",delete_learned")
	}
	if l.Cookie != 0 {
		b.WriteString(",cookie=0x" + strconv.FormatUint(l.Cookie, 16))
	}
	for _, s := range l.Specs {
		b.WriteByte(',')
		s.render(b, r)
	}
	b.WriteByte(')')
}

func (s LearnSpec) render(b *strings.Builder, r *Renderer) {
	switch {
	case s.kind == learnMatch && s.imm != nil:
		info := fieldTable[s.dst.Field]
		if s.dst.Start == 0 && s.dst.nBits() == info.width*8 {
			// A whole field prints by its name and value, as in a match.
			if s.dst.Field == FieldInPort {
				b.WriteString("in_port_oxm=")
				b.WriteString(r.port(uint32(beUint(s.imm))))
			} else {
				b.WriteString(info.set)
				b.WriteByte('=')
				b.WriteString(formatValue(info, s.imm, nil))
			}
			return
		}
		renderLearnSub(b, s.dst)
		b.WriteByte('=')
		b.WriteString(hexBytes(s.imm))
	case s.kind == learnMatch:
		renderLearnSub(b, s.dst)
		if s.src.Field != s.dst.Field || s.src.Start != s.dst.Start {
			b.WriteByte('=')
			renderLearnSub(b, s.src)
		}
	case s.kind == learnLoad:
		b.WriteString("load:")
		if s.imm != nil {
			b.WriteString(hexBytes(s.imm))
		} else {
			renderLearnSub(b, s.src)
		}
		b.WriteString("->")
		renderLearnSub(b, s.dst)
	case s.kind == learnOutput:
		b.WriteString("output:")
		renderLearnSub(b, s.src)
	}
}

// renderLearnSub prints a spec's subfield. in_port is the one field whose
// OVS name depends on its encoding: the builder's 32-bit OXM_OF_IN_PORT is
// OVS's in_port_oxm, which prints as such (NXM_OF_IN_PORT is 16 bits).
func renderLearnSub(b *strings.Builder, sf Subfield) {
	if sf.Field != FieldInPort {
		sf.render(b)
		return
	}
	var t strings.Builder
	sf.render(&t)
	b.WriteString("OXM_OF_IN_PORT" + strings.TrimPrefix(t.String(), fieldTable[FieldInPort].nxm))
}

// hexBytes prints big-endian bytes as OVS's ds_put_hex: "0x" and the value
// without leading zeros, "0" for zero.
func hexBytes(v []byte) string {
	var b strings.Builder
	for _, x := range v {
		if b.Len() == 0 {
			if x == 0 {
				continue
			}
			b.WriteString("0x" + strconv.FormatUint(uint64(x), 16))
			continue
		}
		fmt.Fprintf(&b, "%02x", x)
	}
	if b.Len() == 0 {
		return "0"
	}
	return b.String()
}
