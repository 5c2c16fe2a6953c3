package openflow

import (
	"encoding/hex"
	"net"
	"strings"
	"testing"
)

// TestLearnEncoding checks the wire form of a learn action against bytes
// laid out by hand from OVS's struct nx_action_learn and the learn spec
// header (include/openflow/nicira-ext.h, lib/ofp-actions.c): an immediate
// match, a match copied from a field, and an immediate load into a bit.
func TestLearnEncoding(t *testing.T) {
	a := LearnAction(Learn{Table: 14, IdleTimeout: 10, Priority: 200, Cookie: 5, DeleteLearned: true, Specs: []LearnSpec{
		LearnMatchValue(Whole(FieldEthType), 0x800),
		LearnMatch(Whole(FieldIPv4Src)),
		LearnLoadValue(Reg(0, 19, 19), 1),
	}})
	if err := a.validate(); err != nil {
		t.Fatal(err)
	}
	oa, err := a.encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := oa.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"ffff 0048 00002320 0010",          // experimenter action, 72 bytes, Nicira, NXAST_LEARN
		"000a 0000 00c8",                   // idle_timeout 10, hard_timeout 0, priority 200
		"0000000000000005",                 // cookie
		"0002 0e 00 0000 0000",             // flags delete_learned, table 14, pad, fin timeouts
		"2010 0800 80000a02 0000",          // immediate match, 16 bits: 0x0800 -> eth_type[0..]
		"0020 80001604 0000 80001604 0000", // field match, 32 bits: ip_src[0..] -> ip_src[0..]
		"2801 0001 00010004 0013",          // immediate load, 1 bit: 1 -> reg0[19]
		"000000000000",                     // padding to 8 bytes
	}, "")
	want = strings.ReplaceAll(want, " ", "")
	if h := hex.EncodeToString(got); h != want {
		t.Errorf("learn encoding\n got %s\nwant %s", h, want)
	}
}

func TestLearnValidation(t *testing.T) {
	eth4 := LearnMatchValue(Whole(FieldEthType), 0x800)
	eth6 := LearnMatchValue(Whole(FieldEthType), 0x86dd)
	tcp := LearnMatchValue(Whole(FieldIPProto), 6)
	tests := []struct {
		name    string
		learn   Learn
		wantErr string // "" means valid
	}{
		{"affinity shape", Learn{Table: 1, Specs: []LearnSpec{eth4, tcp, LearnMatch(Whole(FieldIPv4Src)), LearnMatch(Whole(FieldTCPDst)),
			LearnLoad(Whole(FieldIPv4Dst), Reg(3, 0, 31))}}, ""},
		{"ipv6 shape", Learn{Table: 1, Specs: []LearnSpec{eth6, LearnMatchValue(Whole(FieldIPProto), 17), LearnMatch(Whole(FieldIPv6Src)),
			LearnMatchBytes(Whole(FieldIPv6Dst), net.ParseIP("fd00::1").To16()), LearnMatch(Whole(FieldUDPDst))}}, ""},
		{"no specs", Learn{Table: 1}, ""},
		{"table 255", Learn{Table: 255}, "table 255"},
		{"ip_src without eth_type", Learn{Specs: []LearnSpec{LearnMatch(Whole(FieldIPv4Src))}}, "spec 1: NXM_OF_IP_SRC needs an earlier immediate match"},
		{"tp_dst without nw_proto", Learn{Specs: []LearnSpec{eth4, LearnMatch(Whole(FieldTCPDst))}}, "spec 2: NXM_OF_TCP_DST needs"},
		{"tp_dst with the wrong nw_proto", Learn{Specs: []LearnSpec{eth4, LearnMatchValue(Whole(FieldIPProto), 17), LearnMatch(Whole(FieldTCPDst))}}, "nw_proto 6"},
		{"ipv6_src after eth_type ip", Learn{Specs: []LearnSpec{eth4, LearnMatch(Whole(FieldIPv6Src))}}, "eth_type 0x86dd"},
		{"load into ip_dst needs the prerequisite too", Learn{Specs: []LearnSpec{LearnLoad(Reg(1, 0, 31), Whole(FieldIPv4Dst))}}, "spec 1: NXM_OF_IP_DST needs"},
		{"widths differ", Learn{Specs: []LearnSpec{LearnLoad(Reg(1, 0, 15), Reg(2, 0, 31))}}, "source has 16 bits, destination 32"},
		{"value too wide", Learn{Specs: []LearnSpec{LearnMatchValue(Reg(4, 0, 15), 0x10000)}}, "does not fit in 16 bits"},
		{"load value too wide", Learn{Specs: []LearnSpec{LearnLoadValue(Reg(0, 19, 19), 2)}}, "does not fit in 1 bits"},
		{"bytes of the wrong length", Learn{Specs: []LearnSpec{eth6, LearnMatchBytes(Whole(FieldIPv6Dst), net.ParseIP("10.0.0.1").To4())}}, "value has 4 bytes"},
		{"bytes too wide for the bits", Learn{Specs: []LearnSpec{LearnMatchBytes(Reg(1, 0, 11), []byte{0x10, 0})}}, "does not fit in 12 bits"},
		{"load into read-only eth_type", Learn{Specs: []LearnSpec{LearnLoadValue(Whole(FieldEthType), 0x800)}}, "read-only"},
		{"subfield beyond the field", Learn{Specs: []LearnSpec{LearnLoad(Reg(1, 20, 40), Reg(2, 0, 20))}}, "NXM_NX_REG1"},
		{"output", Learn{Specs: []LearnSpec{LearnOutput(Whole(FieldInPort))}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewFlow(0, 1).Learn(tc.learn).Done()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("accepted, want an error containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestLearnRenderTableName: the learn table prints by name when the
// renderer knows it, as ovs-ofctl --names does.
func TestLearnRenderTableName(t *testing.T) {
	f := NewFlow(1, 10).Learn(Learn{Table: 7, Priority: 5, Specs: []LearnSpec{LearnLoadValue(Reg(0, 0, 7), 0)}}).MustDone()
	r := &Renderer{TableName: func(n uint8) (string, bool) {
		return map[uint8]string{1: "ServiceLB", 7: "SessionAffinity"}[n], n == 1 || n == 7
	}}
	if got, want := r.Flow(f), "table=ServiceLB, priority=10 actions=learn(table=SessionAffinity,priority=5,load:0->NXM_NX_REG0[0..7])"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestLearnSpecsCopied: changing the caller's slice after building does
// not change the flow.
func TestLearnSpecsCopied(t *testing.T) {
	specs := []LearnSpec{LearnLoadValue(Reg(0, 0, 7), 1)}
	f := NewFlow(1, 10).Learn(Learn{Table: 2, Specs: specs}).MustDone()
	before := f.String()
	specs[0] = LearnLoadValue(Reg(0, 0, 7), 2)
	if after := f.String(); after != before {
		t.Errorf("flow changed with the caller's slice:\n%s\n%s", before, after)
	}
}
