package openflow

import (
	"bytes"
	"encoding/binary"
	"net"
	"slices"
	"strings"
	"testing"

	"antrea.io/libOpenflow/openflow15"
	"antrea.io/libOpenflow/util"
)

// groupCatalogCase is a group built with the builder and the text
// `ovs-ofctl -O OpenFlow15 dump-groups` prints for it. The unit test checks
// the renderer against want, the integration test (TestGroupCatalogOnRealSwitch)
// that ovs-vswitchd prints the same.
type groupCatalogCase struct {
	name  string
	build *GroupBuilder
	want  string
}

// groupCatalog covers every group type, selection method and kind of
// bucket action the proxy needs. Its groups use group 1 (the integration
// test creates it) and tables 2 and 3.
func groupCatalog() []groupCatalogCase {
	ip := net.ParseIP
	table := uint8(2)
	dnat := func(ep string, port uint16) Action {
		return &CTAction{Commit: true, Zone: 65521, Table: &table, NAT: &NAT{Kind: NATDest, IPMin: ip(ep), PortMin: port}}
	}
	return []groupCatalogCase{
		{"select ct dnat buckets", NewGroup(10, GroupSelect).
			Bucket(100, dnat("10.0.0.11", 8080)).Bucket(100, dnat("10.0.0.12", 8080)).Bucket(1, dnat("10.0.0.13", 8080)),
			"group_id=10,type=select,bucket=bucket_id:0,weight:100,actions=ct(commit,table=2,zone=65521,nat(dst=10.0.0.11:8080))," +
				"bucket=bucket_id:1,weight:100,actions=ct(commit,table=2,zone=65521,nat(dst=10.0.0.12:8080))," +
				"bucket=bucket_id:2,actions=ct(commit,table=2,zone=65521,nat(dst=10.0.0.13:8080))"},
		{"select ipv6 dnat", NewGroup(11, GroupSelect).Bucket(1, dnat("fd00:10::11", 80)),
			"group_id=11,type=select,bucket=bucket_id:0,actions=ct(commit,table=2,zone=65521,nat(dst=[fd00:10::11]:80))"},
		{"weight zero, registers and resubmit", NewGroup(12, GroupSelect).
			Bucket(0, Load(Reg(3, 0, 31), 0x0a00000b), Load(Reg(4, 0, 15), 8080), Resubmit(3)).
			Bucket(65535, SetIPField(FieldIPv4Dst, ip("10.0.0.12")), Resubmit(3)),
			"group_id=12,type=select,bucket=bucket_id:0,weight:0,actions=set_field:0xa00000b->reg3,set_field:0x1f90/0xffff->reg4,resubmit(,3)," +
				"bucket=bucket_id:1,weight:65535,actions=set_field:10.0.0.12->ip_dst,resubmit(,3)"},
		{"dp_hash with param", NewGroup(13, GroupSelect).DPHash(1<<32).Bucket(1, Output(1)).Bucket(1, Output(2)),
			"group_id=13,type=select,selection_method=dp_hash,selection_method_param=4294967296,bucket=bucket_id:0,actions=output:1,bucket=bucket_id:1,actions=output:2"},
		{"hash one field", NewGroup(14, GroupSelect).Hash(0, FieldIPv4Src).Bucket(1, Output(1)),
			"group_id=14,type=select,selection_method=hash,fields=ip_src,bucket=bucket_id:0,actions=output:1"},
		{"hash 5-tuple, given out of order", NewGroup(15, GroupSelect).Hash(7, FieldTCPDst, FieldIPv4Dst, FieldIPProto, FieldTCPSrc, FieldIPv4Src).Bucket(2, Output(1)),
			"group_id=15,type=select,selection_method=hash,selection_method_param=7,fields(ip_src,ip_dst,nw_proto,tcp_src,tcp_dst),bucket=bucket_id:0,weight:2,actions=output:1"},
		{"hash ipv6 and macs", NewGroup(16, GroupSelect).Hash(0, FieldIPv6Dst, FieldEthSrc, FieldUDPSrc).Bucket(1, Output(1)),
			"group_id=16,type=select,selection_method=hash,fields(eth_src,ipv6_dst,udp_src),bucket=bucket_id:0,actions=output:1"},
		{"hash without fields", NewGroup(17, GroupSelect).Hash(0).Bucket(1, Output(1)),
			"group_id=17,type=select,selection_method=hash,bucket=bucket_id:0,actions=output:1"},
		{"empty select group", NewGroup(18, GroupSelect),
			"group_id=18,type=select"},
		{"bucket without actions", NewGroup(19, GroupSelect).Bucket(1).Bucket(1, Output(2)),
			"group_id=19,type=select,bucket=bucket_id:0,actions=drop,bucket=bucket_id:1,actions=output:2"},
		{"all", NewGroup(20, GroupAll).Bucket(0, Output(1)).Bucket(0, Output(2)).Bucket(0, GroupAction(1)),
			"group_id=20,type=all,bucket=bucket_id:0,actions=output:1,bucket=bucket_id:1,actions=output:2,bucket=bucket_id:2,actions=group:1"},
		{"indirect", NewGroup(21, GroupIndirect).Bucket(0, SetField(FieldEthDst, mustMAC("02:00:00:00:00:05")), Output(3)),
			"group_id=21,type=indirect,bucket=bucket_id:0,actions=set_field:02:00:00:00:00:05->eth_dst,output:3"},
		{"ct exec in a bucket", NewGroup(22, GroupSelect).Bucket(1, CTCommit(1, SetCTMark(0x10, 0xf0)), Resubmit(2)),
			"group_id=22,type=select,bucket=bucket_id:0,actions=ct(commit,zone=1,exec(set_field:0x10/0xf0->ct_mark)),resubmit(,2)"},
		{"largest ID", NewGroup(MaxGroupID, GroupIndirect).Bucket(0, Output(1)),
			"group_id=4294967040,type=indirect,bucket=bucket_id:0,actions=output:1"},
	}
}

func TestRenderGroupCatalog(t *testing.T) {
	for _, c := range groupCatalog() {
		t.Run(c.name, func(t *testing.T) {
			g, err := c.build.Done()
			if err != nil {
				t.Fatal(err)
			}
			if got := g.String(); got != c.want {
				t.Errorf("render\n got: %s\nwant: %s", got, c.want)
			}
		})
	}
}

// libOpenflowGroupMod builds g with libOpenflow's types.
func libOpenflowGroupMod(t *testing.T, g *Group, command uint16) *openflow15.GroupMod {
	t.Helper()
	gm := openflow15.NewGroupMod()
	gm.Header.Xid = 0
	gm.Command, gm.Type, gm.GroupId = command, uint8(g.Type), g.ID
	gm.CommandBucketId = openflow15.OFPG_BUCKET_ALL
	for i, b := range g.buckets {
		bkt := openflow15.NewBucket(uint32(i))
		for _, a := range b.Actions {
			oa, err := a.encode()
			if err != nil {
				t.Fatal(err)
			}
			bkt.AddAction(oa)
		}
		if g.Type == GroupSelect {
			bkt.AddProperty(openflow15.NewGroupBucketPropWeight(b.Weight))
		}
		gm.AddBucket(*bkt)
	}
	if g.method != SelectDefault {
		var fields []openflow15.MatchField
		for _, f := range g.hashFields {
			mf, err := openflow15.FindFieldHeaderByName(fieldTable[f].oxm, false)
			if err != nil {
				t.Fatal(err)
			}
			w := fieldTable[f].width
			mf.Value = &openflow15.ByteArrayField{Data: bytes.Repeat([]byte{0xff}, w), Length: uint8(w)}
			mf.Length = uint8(w)
			fields = append(fields, *mf)
		}
		gm.Properties = []util.Message{openflow15.NewNTRSelectionMethod(openflow15.NTRSelectionMethodType(g.method.String()), g.methodParam, fields...)}
	}
	return gm
}

// TestGroupEncodeMatchesLibOpenflow checks the group_mod encoder against
// libOpenflow's GroupMod marshalling for every catalog group.
func TestGroupEncodeMatchesLibOpenflow(t *testing.T) {
	for _, c := range groupCatalog() {
		g := c.build.MustDone()
		for _, cmd := range []uint16{groupCmdAddOrMod, openflow15.OFPGC_MODIFY, openflow15.OFPGC_ADD} {
			want, err := libOpenflowGroupMod(t, g, cmd).MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			got := g.groupMod(cmd)
			if !bytes.Equal(got, want) {
				t.Errorf("%s command %#x:\n got %x\nwant %x", c.name, cmd, got, want)
			}
		}
	}
	want, err := func() ([]byte, error) {
		gm := openflow15.NewGroupMod()
		gm.Header.Xid = 0
		gm.Command, gm.GroupId = openflow15.OFPGC_DELETE, 7
		return gm.MarshalBinary()
	}()
	if err != nil {
		t.Fatal(err)
	}
	if got := groupDelete(7); !bytes.Equal(got, want) {
		t.Errorf("delete:\n got %x\nwant %x", got, want)
	}
}

// dnatBuckets returns a select group builder with n buckets of
// ct(commit,table=3,zone=1,nat(dst=10.1.x.y:80)).
func dnatBuckets(id uint32, n int) *GroupBuilder {
	b := NewGroup(id, GroupSelect)
	table := uint8(3)
	for i := range n {
		b.Bucket(1, &CTAction{Commit: true, Zone: 1, Table: &table,
			NAT: &NAT{Kind: NATDest, IPMin: net.IPv4(10, 1, byte(i>>8), byte(i)), PortMin: 80}})
	}
	return b
}

// TestGroupSizeLimit: a group as large as MaxGroupLen allows is built and
// its length is what it encodes to; one bucket more is refused by Done
// (ovs-vswitchd 3.1 cannot describe a group over 64 KiB).
func TestGroupSizeLimit(t *testing.T) {
	g := dnatBuckets(5, 1).MustDone()
	per := g.Len() - groupModFixedLen
	n := (MaxGroupLen - groupModFixedLen) / per
	g, err := dnatBuckets(5, n).Done()
	if err != nil {
		t.Fatalf("%d buckets of %d bytes: %v", n, per, err)
	}
	if m := g.groupMod(groupCmdAddOrMod); len(m) != g.Len() || int(binary.BigEndian.Uint16(m[2:])) != len(m) {
		t.Fatalf("Len() %d, group_mod of %d bytes, header says %d", g.Len(), len(m), binary.BigEndian.Uint16(m[2:]))
	}
	if keys := bucketKeys(g.groupMod(groupCmdAddOrMod)); len(keys) != n {
		t.Fatalf("%d bucket keys, want %d", len(keys), n)
	}
	t.Logf("%d ct(commit,table,zone,nat(dst=IPv4:port)) buckets of %d bytes fit in MaxGroupLen (%d bytes)", n, per, MaxGroupLen)
	if _, err := dnatBuckets(5, n+1).Done(); err == nil || !strings.Contains(err.Error(), "MaxGroupLen") {
		t.Fatalf("%d buckets: want the size error, got %v", n+1, err)
	}
}

func TestGroupBuilderErrors(t *testing.T) {
	tests := []struct {
		name, want string
		b          *GroupBuilder
	}{
		{"ID above OFPG_MAX", "above OFPG_MAX", NewGroup(MaxGroupID+1, GroupSelect)},
		{"indirect with two buckets", "exactly one bucket", NewGroup(1, GroupIndirect).Bucket(0, Output(1)).Bucket(0, Output(2))},
		{"indirect without bucket", "exactly one bucket", NewGroup(1, GroupIndirect)},
		{"weight in an all group", "weight 3 in a all group", NewGroup(1, GroupAll).Bucket(3, Output(1))},
		{"selection method of an all group", "needs a select group", NewGroup(1, GroupAll).DPHash(0)},
		{"fast failover", "not all, select or indirect", NewGroup(1, GroupType(openflow15.GT_FF))},
		{"hash on a field that is no header", "not a header field", NewGroup(1, GroupSelect).Hash(0, FieldReg0)},
		{"hash field twice", "ip_src twice", NewGroup(1, GroupSelect).Hash(0, FieldIPv4Src, FieldIPv4Src)},
		{"nil action", "bucket 1: nil action", NewGroup(1, GroupSelect).Bucket(1, Output(1)).Bucket(1, nil)},
		{"invalid action", "bucket 0: output: invalid port", NewGroup(1, GroupSelect).Bucket(1, Output(0))},
		{"conjunction", "conjunction", NewGroup(1, GroupSelect).Bucket(1, Conjunction(1, 1, 2))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, err := tc.b.Done()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Done() = %v, %v; want an error containing %q", g, err, tc.want)
			}
		})
	}
}

// TestFlowModGroups: the group references of an encoded flow are found,
// whatever else the flow does.
func TestFlowModGroups(t *testing.T) {
	tests := []struct {
		name string
		b    *FlowBuilder
		want []uint32
	}{
		{"no group", NewFlow(1, 10).MatchInPort(1).Output(2), nil},
		{"group only", NewFlow(1, 10).MatchInPort(1).Group(7), []uint32{7}},
		{"among other actions and goto", NewFlow(1, 10).MatchProtocol(ProtocolTCP).MatchDstPort(80).LoadReg(1, 0, 15, 3).
			CT(CTCommit(1, SetCTMark(1, 1))).Group(8).Group(9).GotoTable(4), []uint32{8, 9}},
		{"drop", NewFlow(1, 10).MatchInPort(1).Drop(), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := tc.b.MustDone().Encode()
			if err != nil {
				t.Fatal(err)
			}
			var got []uint32
			flowModGroups(msg, func(id uint32) { got = append(got, id) })
			if !slices.Equal(got, tc.want) {
				t.Fatalf("groups %v, want %v", got, tc.want)
			}
		})
	}
}

// TestCarryOver: a modify carries the group's counts, and each bucket's to
// the new bucket with the same actions (wherever it sits, whatever its
// weight); a changed or new bucket starts from zero.
func TestCarryOver(t *testing.T) {
	a, b, c, d := Output(1), Output(2), Output(3), Output(4)
	old := &cachedGroup{msg: NewGroup(1, GroupSelect).Bucket(1, a).Bucket(1, b).Bucket(1, c).MustDone().groupMod(groupCmdAddOrMod)}
	old.carry = &groupCarry{total: counter{100, 1000}, buckets: map[string]counter{bucketKeys(old.msg)[0]: {100, 1000}}}
	sw := &groupCounters{total: counter{6, 60}, buckets: []counter{{1, 10}, {2, 20}, {3, 30}}}
	// b moves to the front with another weight, c is replaced by d.
	next := NewGroup(1, GroupSelect).Bucket(5, b).Bucket(1, a).Bucket(1, d).MustDone().groupMod(groupCmdAddOrMod)
	got := carryOver(old, sw, next)
	keys := bucketKeys(next)
	if got.total != (counter{106, 1060}) {
		t.Errorf("group carries %v, want {106 1060}", got.total)
	}
	for i, want := range []counter{{2, 20}, {101, 1010}, {}} {
		if got.buckets[keys[i]] != want {
			t.Errorf("new bucket %d carries %v, want %v", i, got.buckets[keys[i]], want)
		}
	}
	if len(got.buckets) != 2 {
		t.Errorf("%d buckets carried, want 2", len(got.buckets))
	}
	// Switch counters that do not fit the cached group carry only the total.
	got = carryOver(&cachedGroup{msg: old.msg}, &groupCounters{total: counter{4, 40}, buckets: []counter{{4, 40}}}, next)
	if got.total != (counter{4, 40}) || got.buckets != nil {
		t.Errorf("mismatched buckets: carried %+v, want only the total {4 40}", got)
	}
	// Nothing counted: nothing carried.
	if got := carryOver(&cachedGroup{msg: old.msg}, nil, next); got != nil {
		t.Errorf("carried %+v with nothing counted", got)
	}
	// Two buckets with the same actions keep their counts apart.
	twin := NewGroup(1, GroupSelect).Bucket(1, a).Bucket(1, a).MustDone().groupMod(groupCmdAddOrMod)
	got = carryOver(&cachedGroup{msg: twin}, &groupCounters{buckets: []counter{{1, 1}, {2, 2}}}, twin)
	tk := bucketKeys(twin)
	if tk[0] == tk[1] || got.buckets[tk[0]] != (counter{1, 1}) || got.buckets[tk[1]] != (counter{2, 2}) {
		t.Errorf("twin buckets carried %v", got.buckets)
	}
}
