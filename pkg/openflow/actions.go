package openflow

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"antrea.io/libOpenflow/openflow15"
)

// Action is one OpenFlow action. Each knows how to encode itself with
// libOpenflow types and how ovs-ofctl prints it.
type Action interface {
	encode() (openflow15.Action, error)
	render(b *strings.Builder, r *Renderer)
	validate() error
}

// Subfield is bits Start..End (inclusive) of a field, as in OVS's
// NXM_NX_REG0[0..15] syntax. A zero-value range (0,0) on a field means "the
// whole field" only when built with Whole.
type Subfield struct {
	Field      Field
	Start, End int
}

// Whole returns the subfield covering all bits of f.
func Whole(f Field) Subfield { return Subfield{f, 0, fieldTable[f].width*8 - 1} }

// Reg returns bits start..end of register reg.
func Reg(reg, start, end int) Subfield { return Subfield{FieldReg0 + Field(reg), start, end} }

func (s Subfield) nBits() int { return s.End - s.Start + 1 }

func (s Subfield) validate() error {
	if s.Field >= numFields {
		return fmt.Errorf("unknown field %d", s.Field)
	}
	if _, err := bitMask(s.Start, s.End, fieldTable[s.Field].width*8); err != nil {
		return fmt.Errorf("%s: %w", fieldTable[s.Field].nxm, err)
	}
	return nil
}

// ofsNbits is the NXM encoding of a bit range: offset<<6 | (nbits-1).
func (s Subfield) ofsNbits() uint16 { return uint16(s.Start)<<6 | uint16(s.nBits()-1) }

func (s Subfield) header() (*openflow15.MatchField, error) {
	return openflow15.FindFieldHeaderByName(fieldTable[s.Field].oxm, false)
}

func (s Subfield) render(b *strings.Builder) {
	b.WriteString(fieldTable[s.Field].nxm)
	switch {
	case s.Start == 0 && s.nBits() == fieldTable[s.Field].width*8:
		b.WriteString("[]")
	case s.nBits() == 1:
		fmt.Fprintf(b, "[%d]", s.Start)
	default:
		fmt.Fprintf(b, "[%d..%d]", s.Start, s.End)
	}
}

// --- output ---

type outputAction struct{ port uint32 }

// Output sends the packet to port (a number or PortNormal, PortInPort, ...).
func Output(port uint32) Action { return outputAction{port} }

func (a outputAction) validate() error {
	if a.port == 0 || (a.port > 0xffffff00 && a.port != PortInPort && a.port != PortNormal &&
		a.port != PortController && a.port != PortLocal) {
		return fmt.Errorf("output: invalid port %d", a.port)
	}
	return nil
}

func (a outputAction) encode() (openflow15.Action, error) {
	o := openflow15.NewActionOutput(a.port)
	if a.port == PortController {
		o.MaxLen = 0xffff
	}
	return o, nil
}

func (a outputAction) render(b *strings.Builder, r *Renderer) {
	switch a.port {
	case PortController:
		b.WriteString("CONTROLLER:65535")
	case PortNormal, PortInPort, PortLocal:
		b.WriteString(formatPort(a.port))
	default:
		b.WriteString("output:")
		b.WriteString(r.port(a.port))
	}
}

type outputFieldAction struct{ src Subfield }

// OutputField sends the packet to the port number held in src.
func OutputField(src Subfield) Action { return outputFieldAction{src} }

func (a outputFieldAction) validate() error { return a.src.validate() }

func (a outputFieldAction) encode() (openflow15.Action, error) {
	h, err := a.src.header()
	if err != nil {
		return nil, err
	}
	return openflow15.NewOutputFromField(h, a.src.ofsNbits()), nil
}

func (a outputFieldAction) render(b *strings.Builder, _ *Renderer) {
	b.WriteString("output:")
	a.src.render(b)
}

// --- set_field / load / move ---

type setFieldAction struct {
	field Field
	value []byte
}

// SetField sets a whole field. value must be the field's width in bytes.
func SetField(f Field, value []byte) Action {
	return setFieldAction{f, append([]byte(nil), value...)}
}

// SetIPField sets an IP address field: an IPv4 one (ip_src, ip_dst,
// tun_dst, arp_spa, ...) from an IPv4 address, an IPv6 one (ipv6_src,
// tun_ipv6_dst, ...) from an IPv6 address. A family that does not fit the
// field fails validation (wrong width).
func SetIPField(f Field, ip net.IP) Action {
	if v4 := ip.To4(); v4 != nil {
		return SetField(f, v4)
	}
	return SetField(f, ip.To16())
}

func (a setFieldAction) validate() error {
	if a.field >= numFields {
		return fmt.Errorf("set_field: unknown field %d", a.field)
	}
	if w := fieldTable[a.field].width; len(a.value) != w {
		return fmt.Errorf("set_field %s: value has %d bytes, field has %d", fieldTable[a.field].set, len(a.value), w)
	}
	switch a.field {
	case FieldEthType, FieldIPProto, FieldCtState, FieldCtZone, FieldConjID, FieldInPort:
		return fmt.Errorf("set_field: %s is read-only", fieldTable[a.field].name)
	}
	return nil
}

func (a setFieldAction) encode() (openflow15.Action, error) {
	mf, err := encodeMatch(matchEntry{field: a.field, value: a.value})
	if err != nil {
		return nil, err
	}
	return openflow15.NewActionSetField(*mf), nil
}

func (a setFieldAction) render(b *strings.Builder, _ *Renderer) {
	b.WriteString("set_field:")
	info := fieldTable[a.field]
	switch info.format {
	case fmtDecimal, fmtL4Port:
		b.WriteString(strconv.FormatUint(beUint(a.value), 10))
	default:
		b.WriteString(formatValue(info, a.value, nil))
	}
	b.WriteString("->")
	b.WriteString(info.set)
}

type loadAction struct {
	dst   Subfield
	value uint64
}

// Load writes value into the bits of dst. In OpenFlow 1.5 OVS takes this as
// a (masked) set_field, and prints it that way.
func Load(dst Subfield, value uint64) Action { return loadAction{dst, value} }

func (a loadAction) validate() error {
	if err := a.dst.validate(); err != nil {
		return fmt.Errorf("load: %w", err)
	}
	if fieldTable[a.dst.Field].width > 8 {
		return fmt.Errorf("load: %s is wider than 64 bits", fieldTable[a.dst.Field].nxm)
	}
	if a.dst.nBits() < 64 && a.value>>a.dst.nBits() != 0 {
		return fmt.Errorf("load: value %#x does not fit in %d bits", a.value, a.dst.nBits())
	}
	return nil
}

// asSetField returns the equivalent set_field (mask nil for the whole field).
func (a loadAction) asSetField() maskedSetField {
	w := fieldTable[a.dst.Field].width
	mask, _ := bitMask(a.dst.Start, a.dst.End, w*8)
	ms := maskedSetField{field: a.dst.Field, value: putBE(a.value<<a.dst.Start, w)}
	if a.dst.nBits() != w*8 {
		ms.mask = putBE(mask, w)
	}
	return ms
}

func (a loadAction) encode() (openflow15.Action, error) { return a.asSetField().encode() }

func (a loadAction) render(b *strings.Builder, r *Renderer) { a.asSetField().render(b, r) }

type moveAction struct{ src, dst Subfield }

// Move copies src to dst; both must have the same width.
func Move(src, dst Subfield) Action { return moveAction{src, dst} }

func (a moveAction) validate() error {
	if err := a.src.validate(); err != nil {
		return fmt.Errorf("move: %w", err)
	}
	if err := a.dst.validate(); err != nil {
		return fmt.Errorf("move: %w", err)
	}
	if a.src.nBits() != a.dst.nBits() {
		return fmt.Errorf("move: source has %d bits, destination %d", a.src.nBits(), a.dst.nBits())
	}
	return nil
}

// encode uses OpenFlow 1.5's copy_field: OVS 3.1 refuses NXAST_REG_MOVE in
// OpenFlow 1.5 messages.
func (a moveAction) encode() (openflow15.Action, error) {
	src, err := openflow15.FindOxmIdByName(fieldTable[a.src.Field].oxm, false)
	if err != nil {
		return nil, err
	}
	dst, err := openflow15.FindOxmIdByName(fieldTable[a.dst.Field].oxm, false)
	if err != nil {
		return nil, err
	}
	return openflow15.NewActionCopyField(uint16(a.src.nBits()), uint16(a.src.Start), uint16(a.dst.Start), *src, *dst), nil
}

func (a moveAction) render(b *strings.Builder, _ *Renderer) {
	b.WriteString("move:")
	a.src.render(b)
	b.WriteString("->")
	a.dst.render(b)
}

// --- control flow ---

type resubmitAction struct{ table uint8 }

// Resubmit looks the packet up in table and then continues here.
func Resubmit(table uint8) Action { return resubmitAction{table} }

func (a resubmitAction) validate() error { return nil }

func (a resubmitAction) encode() (openflow15.Action, error) {
	return openflow15.NewNXActionResubmitTableAction(openflow15.OFPP_IN_PORT, a.table), nil
}

func (a resubmitAction) render(b *strings.Builder, r *Renderer) {
	b.WriteString("resubmit(,")
	b.WriteString(r.table(a.table))
	b.WriteString(")")
}

type conjunctionAction struct {
	id             uint32
	clause, nClaus uint8
}

// Conjunction marks the flow as clause (1-based) of nClauses of conjunction id.
func Conjunction(id uint32, clause, nClauses uint8) Action {
	return conjunctionAction{id, clause, nClauses}
}

func (a conjunctionAction) validate() error {
	if a.nClaus < 2 || a.nClaus > 64 || a.clause < 1 || a.clause > a.nClaus {
		return fmt.Errorf("conjunction(%d,%d/%d): need 1 <= clause <= n_clauses, 2 <= n_clauses <= 64", a.id, a.clause, a.nClaus)
	}
	return nil
}

func (a conjunctionAction) encode() (openflow15.Action, error) {
	return openflow15.NewNXActionConjunction(a.clause-1, a.nClaus, a.id), nil
}

func (a conjunctionAction) render(b *strings.Builder, _ *Renderer) {
	fmt.Fprintf(b, "conjunction(%d,%d/%d)", a.id, a.clause, a.nClaus)
}

type decTTLAction struct{}

// DecTTL decrements the IP TTL; OVS drops the packet when it reaches zero.
func DecTTL() Action { return decTTLAction{} }

func (decTTLAction) validate() error { return nil }

// encode uses OpenFlow's dec_nw_ttl: OVS 3.1 refuses NXAST_DEC_TTL in
// OpenFlow 1.5 messages.
func (decTTLAction) encode() (openflow15.Action, error) { return openflow15.NewActionDecNwTtl(), nil }

func (decTTLAction) render(b *strings.Builder, _ *Renderer) { b.WriteString("dec_ttl") }

type groupAction struct{ id uint32 }

// GroupAction sends the packet to group id (in a flow or a bucket).
func GroupAction(id uint32) Action { return groupAction{id} }

func (groupAction) validate() error { return nil }

func (a groupAction) encode() (openflow15.Action, error) { return openflow15.NewActionGroup(a.id), nil }

func (a groupAction) render(b *strings.Builder, _ *Renderer) { fmt.Fprintf(b, "group:%d", a.id) }

type meterAction struct{ id uint32 }

// Meter applies meter id (OpenFlow 1.5 meter action).
func Meter(id uint32) Action { return meterAction{id} }

func (meterAction) validate() error { return nil }

func (a meterAction) encode() (openflow15.Action, error) { return openflow15.NewActionMeter(a.id), nil }

func (a meterAction) render(b *strings.Builder, _ *Renderer) { fmt.Fprintf(b, "meter:%d", a.id) }

type noteAction struct{ data []byte }

// Note attaches opaque bytes to the flow.
func Note(data []byte) Action { return noteAction{append([]byte(nil), data...)} }

func (noteAction) validate() error { return nil }

func (a noteAction) encode() (openflow15.Action, error) {
	n := openflow15.NewNXActionNote()
	// The action is 10 header bytes + note, padded to 8; OVS keeps the
	// padding as part of the note, so pad here to print what we send.
	n.Note = append([]byte(nil), a.paddedNote()...)
	n.Length = n.Len()
	return n, nil
}

func (a noteAction) paddedNote() []byte {
	total := 8 * ((10 + len(a.data) + 7) / 8)
	return append(append([]byte(nil), a.data...), make([]byte, total-10-len(a.data))...)
}

func (a noteAction) render(b *strings.Builder, _ *Renderer) {
	b.WriteString("note:")
	for i, x := range a.paddedNote() {
		if i > 0 {
			b.WriteByte('.')
		}
		fmt.Fprintf(b, "%02x", x)
	}
}

type controllerAction struct{ userdata []byte }

// Controller sends the packet to the controller (packet-in). With userdata
// the NXAST_CONTROLLER2 form carries it to the packet-in handler.
func Controller(userdata []byte) Action { return controllerAction{append([]byte(nil), userdata...)} }

func (controllerAction) validate() error { return nil }

func (a controllerAction) encode() (openflow15.Action, error) {
	if len(a.userdata) == 0 {
		return outputAction{PortController}.encode()
	}
	c := openflow15.NewNXActionController2()
	c.AddUserdata(a.userdata)
	return c, nil
}

func (a controllerAction) render(b *strings.Builder, r *Renderer) {
	if len(a.userdata) == 0 {
		outputAction{PortController}.render(b, r)
		return
	}
	b.WriteString("controller(userdata=")
	for i, x := range a.userdata {
		if i > 0 {
			b.WriteByte('.')
		}
		fmt.Fprintf(b, "%02x", x)
	}
	b.WriteString(")")
}
