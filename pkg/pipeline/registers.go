package pipeline

import "fmt"

// Registers carry what one table learned about a packet to the later
// tables: where it came from (Classifier) and which port it leaves by
// (L2Forwarding, or L3Forwarding for the tunnel). Each piece of state is a
// regField (bits of one register) and each value a flow sets or tests is a
// regMark, declared once below, so that a call site says what it means
// (sourcePodMark) instead of repeating (register, first bit, last bit,
// value) and the layout can be checked in one place (TestRegisterLayout).
//
// The methods return the argument lists of openflow.FlowBuilder's register
// methods, so flows keep their fluent chains and their order of matches and
// actions (which is part of the encoded flow):
//
//	b.MatchRegBits(sourcePodMark.match())
//	b.LoadReg(sourceGatewayMark.load())
//	b.LoadReg(outPortField.load(uint64(port)))
//	b.OutputReg(outPortField.bits())
//
// A mark's match and load return different value types (uint32, uint64),
// as MatchRegBits and LoadReg take them, so swapping them does not compile.

// regField is bits start..end (inclusive) of register reg (reg0..reg15).
type regField struct {
	reg, start, end int
}

// regMark is one value of a regField.
type regMark struct {
	field regField
	value uint64
}

// The pipeline's register layout; docs/pipeline.md describes it for
// readers of ovs-ofctl dumps.
var (
	// sourceField (reg0[0..3]): where the packet came from, set by
	// Classifier from the in_port. Later tables trust the gateway (the
	// node's own traffic, kube-proxy's DNATed service traffic), treat
	// tunnelled traffic as already checked by the sending node, and apply
	// pod rules only to pod traffic.
	sourceField       = regField{reg: 0, start: 0, end: 3}
	sourceGatewayMark = regMark{sourceField, 1}
	sourceTunnelMark  = regMark{sourceField, 2}
	sourcePodMark     = regMark{sourceField, 3}

	// outputFoundField (reg0[16]): an output port was chosen (outPortField
	// holds it). Output sends the packet only with this bit set, so a
	// packet whose destination no flow knows is dropped rather than sent
	// to port 0.
	outputFoundField = regField{reg: 0, start: 16, end: 16}
	outputFoundMark  = regMark{outputFoundField, 1}

	// hairpinField (reg0[17]): the packet was SNATed to the hairpin IP
	// (proxy.go), so its last ct() was the SNAT zone's and ConntrackCommit
	// must not commit it to the pod zone under its SNATed addresses.
	hairpinField = regField{reg: 0, start: 17, end: 17}
	hairpinMark  = regMark{hairpinField, 1}

	// outPortField (reg1): the chosen output port. IngressRule and
	// IngressDefaultRule match it to find the local pod a packet is for
	// (policy.go), which is why the port is chosen before the ingress
	// policy tables.
	outPortField = regField{reg: 1, start: 0, end: 31}
)

// regFields and regMarks list every field and mark above, for
// TestRegisterLayout: marks must fit their fields and fields sharing a
// register must not overlap. A new field or mark belongs in these lists.
var (
	regFields = []regField{sourceField, outputFoundField, hairpinField, outPortField}
	regMarks  = []regMark{sourceGatewayMark, sourceTunnelMark, sourcePodMark, outputFoundMark, hairpinMark}
)

// bits returns the field as OutputReg takes it.
func (f regField) bits() (reg, start, end int) { return f.reg, f.start, f.end }

// load returns the arguments of LoadReg that load v into the field.
func (f regField) load(v uint64) (reg, start, end int, value uint64) {
	return f.reg, f.start, f.end, v
}

// match returns the arguments of MatchRegBits that match v in the field.
// For a whole register (outPortField) MatchRegBits makes the same unmasked
// match as MatchReg.
func (f regField) match(v uint32) (reg, start, end int, value uint32) {
	return f.reg, f.start, f.end, v
}

// width is the field's size in bits.
func (f regField) width() int { return f.end - f.start + 1 }

// String prints the field in ovs-ofctl's subfield syntax.
func (f regField) String() string {
	if f.start == 0 && f.end == 31 {
		return fmt.Sprintf("reg%d", f.reg)
	}
	return fmt.Sprintf("reg%d[%d..%d]", f.reg, f.start, f.end)
}

// load returns the arguments of LoadReg that set the mark.
func (m regMark) load() (reg, start, end int, value uint64) { return m.field.load(m.value) }

// match returns the arguments of MatchRegBits that match the mark. Marks
// fit their field (TestRegisterLayout), so the value fits 32 bits.
func (m regMark) match() (reg, start, end int, value uint32) {
	return m.field.match(uint32(m.value))
}

// String prints the mark as field=value.
func (m regMark) String() string { return fmt.Sprintf("%v=%#x", m.field, m.value) }
