package pipeline

import (
	"testing"

	"github.com/weirnet/weir/pkg/openflow"
)

// TestRegisterLayout checks the register layout of registers.go: every
// field lies inside its 32-bit register, fields sharing a register do not
// overlap (a load into one would clobber the other), every mark's field is
// a declared field and its value fits that field, marks of one field are
// distinct, and the flow builder accepts every mark as match and load.
func TestRegisterLayout(t *testing.T) {
	fields := map[regField]bool{}
	for _, f := range regFields {
		if f.reg < 0 || f.reg > 15 || f.start < 0 || f.start > f.end || f.end > 31 {
			t.Errorf("field %v: not bits of one of reg0..reg15", f)
		}
		if fields[f] {
			t.Errorf("field %v listed twice", f)
		}
		fields[f] = true
	}
	for i, a := range regFields {
		for _, b := range regFields[i+1:] {
			if a.reg == b.reg && a.start <= b.end && b.start <= a.end {
				t.Errorf("fields %v and %v overlap", a, b)
			}
		}
	}
	values := map[regMark]bool{}
	for _, m := range regMarks {
		if !fields[m.field] {
			t.Errorf("mark %v: field %v is not in regFields", m, m.field)
		}
		if m.value>>m.field.width() != 0 {
			t.Errorf("mark %v: value does not fit %d bits", m, m.field.width())
		}
		if values[m] {
			t.Errorf("mark %v listed twice (two marks of one field share a value)", m)
		}
		values[m] = true
		if _, err := openflow.NewFlow(0, 1).MatchRegBits(m.match()).LoadReg(m.load()).GotoTable(1).Done(); err != nil {
			t.Errorf("mark %v: %v", m, err)
		}
	}
	// The layout docs/pipeline.md describes.
	for _, tc := range []struct {
		got  string
		want string
	}{
		{sourceGatewayMark.String(), "reg0[0..3]=0x1"},
		{sourceTunnelMark.String(), "reg0[0..3]=0x2"},
		{sourcePodMark.String(), "reg0[0..3]=0x3"},
		{outputFoundMark.String(), "reg0[16..16]=0x1"},
		{outPortField.String(), "reg1"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
}
