package openflow

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"antrea.io/libOpenflow/openflow15"
)

// GroupType is an OpenFlow group type.
type GroupType uint8

// Group types Weir builds. Fast-failover groups (liveness by watch port)
// are not offered: nothing in Weir needs them.
const (
	// GroupAll runs every bucket (a copy of the packet each).
	GroupAll GroupType = openflow15.GT_ALL
	// GroupSelect runs one bucket, chosen by a hash and the weights.
	GroupSelect GroupType = openflow15.GT_SELECT
	// GroupIndirect runs its one bucket.
	GroupIndirect GroupType = openflow15.GT_INDIRECT
)

func (t GroupType) String() string {
	switch t {
	case GroupAll:
		return "all"
	case GroupSelect:
		return "select"
	case GroupIndirect:
		return "indirect"
	case openflow15.GT_FF:
		return "ff"
	}
	return "unknown"
}

// Group IDs.
const (
	// MaxGroupID is the highest group ID a group may have (OFPG_MAX).
	MaxGroupID uint32 = openflow15.OFPG_MAX
	// GroupIDAll stands for every group in DeleteGroup (OFPG_ALL).
	GroupIDAll uint32 = openflow15.OFPG_ALL
)

// SelectionMethod says how a select group picks a bucket. It maps to
// OVS's selection_method group property (a Netronome extension that OVS
// accepts in OpenFlow 1.5 group_mods).
type SelectionMethod uint8

const (
	// SelectDefault sends no selection_method: OVS 3.1 then uses dp_hash
	// with a symmetric L3/L4 hash (5-tuple) when the weights can be
	// mapped onto at most 256 hash values, and falls back to "hash" over
	// its default fields otherwise.
	SelectDefault SelectionMethod = iota
	// SelectDPHash is selection_method=dp_hash: a hash the datapath
	// computes (the upper 32 bits of the parameter choose the algorithm,
	// 0 the 5-tuple, 1 its symmetric form; the lower 32 bits are the
	// basis). One datapath flow serves every connection.
	SelectDPHash
	// SelectHash is selection_method=hash over the given fields (with
	// none, OVS hashes MAC and IP addresses, VLAN, EtherType and L4
	// ports). The parameter is the hash basis. Each hashed field becomes
	// an exact match in the datapath flows, so hashing on the source port
	// costs one datapath flow per connection.
	SelectHash
)

func (m SelectionMethod) String() string {
	switch m {
	case SelectDPHash:
		return "dp_hash"
	case SelectHash:
		return "hash"
	}
	return ""
}

// hashFieldOK lists the fields a hash selection method may use: the packet
// header fields a Service's load balancing can hash on. Their Field order
// is also the order OVS prints them in (meta-flow.h's MFF order).
var hashFieldOK = map[Field]bool{
	FieldEthSrc: true, FieldEthDst: true,
	FieldIPv4Src: true, FieldIPv4Dst: true, FieldIPv6Src: true, FieldIPv6Dst: true,
	FieldIPProto: true,
	FieldTCPSrc:  true, FieldTCPDst: true, FieldUDPSrc: true, FieldUDPDst: true,
	FieldSCTPSrc: true, FieldSCTPDst: true,
}

// Bucket is one bucket of a group: its weight (select groups only; 0 in
// the others) and its actions. OpenFlow has no goto_table in a bucket: a
// bucket continues the pipeline with Resubmit or a recirculating CT
// (CTAction.Table), or ends it with Output or Group.
type Bucket struct {
	Weight  uint16
	Actions []Action
}

// Group is one OpenFlow group: ID, type, selection method and buckets.
// Build groups with NewGroup; a built Group is immutable and safe to share.
// Bucket i gets bucket ID i.
type Group struct {
	ID   uint32
	Type GroupType

	method      SelectionMethod
	methodParam uint64
	hashFields  []Field // sorted
	buckets     []Bucket
	// wire holds the encoded ofp15_bucket of each bucket, props the
	// encoded group properties: encoded once, by Done.
	wire  [][]byte
	props []byte
}

// GroupBuilder composes a Group fluently; like FlowBuilder it remembers the
// first invalid argument and Done returns it.
type GroupBuilder struct {
	g   Group
	err error
}

// NewGroup starts a group with a caller-chosen ID (at most MaxGroupID) of
// type t.
func NewGroup(id uint32, t GroupType) *GroupBuilder {
	return &GroupBuilder{g: Group{ID: id, Type: t}}
}

func (b *GroupBuilder) fail(format string, args ...any) *GroupBuilder {
	if b.err == nil {
		b.err = fmt.Errorf(format, args...)
	}
	return b
}

// DPHash selects buckets with selection_method=dp_hash and param (see
// SelectDPHash). Select groups only.
func (b *GroupBuilder) DPHash(param uint64) *GroupBuilder {
	b.g.method, b.g.methodParam, b.g.hashFields = SelectDPHash, param, nil
	return b
}

// Hash selects buckets with selection_method=hash over fields, whole
// fields only (see SelectHash). The flows that send packets to the group
// must match the fields' prerequisites (ip for ip_src, tcp for tcp_src).
// Select groups only.
func (b *GroupBuilder) Hash(param uint64, fields ...Field) *GroupBuilder {
	fs := slices.Clone(fields)
	slices.Sort(fs)
	for i, f := range fs {
		if !hashFieldOK[f] {
			return b.fail("selection_method=hash: field %d is not a header field Weir hashes on", f)
		}
		if i > 0 && fs[i-1] == f {
			return b.fail("selection_method=hash: field %s twice", fieldTable[f].set)
		}
	}
	b.g.method, b.g.methodParam, b.g.hashFields = SelectHash, param, fs
	return b
}

// Bucket appends a bucket with weight and actions. In select groups the
// weight is the bucket's share (OVS's default is 1); all and indirect
// groups take weight 0.
func (b *GroupBuilder) Bucket(weight uint16, actions ...Action) *GroupBuilder {
	for _, a := range actions {
		if a == nil {
			return b.fail("bucket %d: nil action", len(b.g.buckets))
		}
		if err := a.validate(); err != nil {
			return b.fail("bucket %d: %w", len(b.g.buckets), err)
		}
		if _, ok := a.(conjunctionAction); ok {
			return b.fail("bucket %d: conjunction is a flow's only kind of action, not a bucket's", len(b.g.buckets))
		}
	}
	b.g.buckets = append(b.g.buckets, Bucket{Weight: weight, Actions: slices.Clone(actions)})
	return b
}

// Done validates and encodes the group.
func (b *GroupBuilder) Done() (*Group, error) {
	g := b.g
	err := b.err
	if err == nil {
		err = g.check()
	}
	if err != nil {
		return nil, fmt.Errorf("building group %d: %w", g.ID, err)
	}
	g.buckets = slices.Clone(b.g.buckets)
	g.wire = make([][]byte, len(g.buckets))
	for i, bk := range g.buckets {
		w, err := g.encodeBucket(uint32(i), bk)
		if err != nil {
			return nil, fmt.Errorf("building group %d: bucket %d: %w", g.ID, i, err)
		}
		g.wire[i] = w
	}
	g.props = g.encodeProps()
	if n := g.Len(); n > MaxGroupLen {
		return nil, fmt.Errorf("building group %d: %d buckets take %d bytes, more than MaxGroupLen (%d): "+
			"ovs-vswitchd 3.1 aborts when asked to describe a group over 64 KiB; spread the buckets over several groups",
			g.ID, len(g.buckets), n, MaxGroupLen)
	}
	return &g, nil
}

// Len returns the size of the group's group_mod in bytes (see MaxGroupLen).
func (g *Group) Len() int {
	n := groupModFixedLen + len(g.props)
	for _, w := range g.wire {
		n += len(w)
	}
	return n
}

// MustDone is Done for groups built from constants, where an error is a bug.
func (b *GroupBuilder) MustDone() *Group {
	g, err := b.Done()
	if err != nil {
		panic(err)
	}
	return g
}

func (g *Group) check() error {
	if g.ID > MaxGroupID {
		return fmt.Errorf("group ID %#x is above OFPG_MAX", g.ID)
	}
	switch g.Type {
	case GroupAll, GroupSelect:
	case GroupIndirect:
		if len(g.buckets) != 1 {
			return fmt.Errorf("an indirect group has exactly one bucket, not %d", len(g.buckets))
		}
	default:
		return fmt.Errorf("group type %d is not all, select or indirect", g.Type)
	}
	if g.Type != GroupSelect {
		if g.method != SelectDefault {
			return fmt.Errorf("selection_method %s needs a select group, not %s", g.method, g.Type)
		}
		for i, bk := range g.buckets {
			if bk.Weight != 0 {
				return fmt.Errorf("bucket %d: weight %d in a %s group (only select groups weigh buckets)", i, bk.Weight, g.Type)
			}
		}
	}
	if uint64(len(g.buckets)) > uint64(openflow15.OFPG_BUCKET_MAX)+1 {
		return fmt.Errorf("%d buckets: bucket IDs end at OFPG_BUCKET_MAX", len(g.buckets))
	}
	return nil
}

// Buckets returns the group's buckets (bucket i has bucket ID i).
func (g *Group) Buckets() []Bucket { return slices.Clone(g.buckets) }

// NumBuckets returns the number of buckets.
func (g *Group) NumBuckets() int { return len(g.buckets) }

// SelectionMethod returns the selection method and its parameter.
func (g *Group) SelectionMethod() (SelectionMethod, uint64) { return g.method, g.methodParam }

// HashFields returns the fields of a SelectHash method, in OVS's order.
func (g *Group) HashFields() []Field { return slices.Clone(g.hashFields) }

// Group_mod layout (OpenFlow 1.5 ofp15_group_mod): header (8), command
// (2), type (1), pad (1), group_id (4), bucket_array_len (2), pad (2),
// command_bucket_id (4), buckets, properties.
const (
	groupModFixedLen = 24
	// Nicira's OFPGC_ADD_OR_MOD: add the group, or modify it if it exists
	// (OVS accepts it in OpenFlow 1.5 as well).
	groupCmdAddOrMod = 0x8000
	// weightPropLen is ofp_group_bucket_prop_weight: type, length,
	// weight, pad.
	weightPropLen = 8
	// bucketFixedLen is ofp15_bucket without actions and properties.
	bucketFixedLen = 8
)

// MaxGroupLen bounds a group's encoded size (its group_mod, see Len).
// OpenFlow carries a group in one message of at most 64 KiB, and OVS 3.1
// cannot describe a larger one: a group desc request (ovs-ofctl
// dump-groups, DumpGroups, VerifyGroups) for a group whose description
// exceeds 64 KiB makes ovs-vswitchd abort (assertion in
// ofpmp_postappend), although INSERT_BUCKET would let such a group be
// built. The margin below 64 KiB leaves room for OVS to re-encode actions
// a little longer than Weir sends them. 999 buckets of
// ct(commit,table,zone,nat(dst=IPv4:port)) fit (64 bytes each with the
// weight, TestGroupSizeLimit); a Service with more
// endpoints needs its buckets spread over several groups (a select group
// whose buckets send to groups, weighted by their sizes).
const MaxGroupLen = 64000

// encodeBucket returns the ofp15_bucket of bk with bucket ID id: select
// groups always carry the weight property, so a weight of 1 is sent, not
// implied.
func (g *Group) encodeBucket(id uint32, bk Bucket) ([]byte, error) {
	buf := make([]byte, bucketFixedLen, 64)
	for _, a := range bk.Actions {
		oa, err := a.encode()
		if err != nil {
			return nil, fmt.Errorf("encoding %s: %w", renderAction(a, nil), err)
		}
		data, err := oa.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("encoding %s: %w", renderAction(a, nil), err)
		}
		buf = append(buf, data...)
	}
	actionsLen := len(buf) - bucketFixedLen
	if g.Type == GroupSelect {
		buf = append(buf, 0, openflow15.GBPT_WEIGHT, 0, weightPropLen, byte(bk.Weight>>8), byte(bk.Weight), 0, 0)
	}
	binary.BigEndian.PutUint16(buf[0:], uint16(len(buf)))
	binary.BigEndian.PutUint16(buf[2:], uint16(actionsLen))
	binary.BigEndian.PutUint32(buf[4:], id)
	return buf, nil
}

// encodeProps returns the NTR selection_method property, if any:
// type 0xffff, length, experimenter NTR_VENDOR_ID, exp_type 1, pad (4),
// method name (16, NUL padded), param (8), the hash fields as OXM entries
// whose value is the mask (all ones: whole fields), padded to 8.
func (g *Group) encodeProps() []byte {
	if g.method == SelectDefault {
		return nil
	}
	p := make([]byte, 40, 40+len(g.hashFields)*20)
	binary.BigEndian.PutUint16(p[0:], openflow15.OFPGPT_EXPERIMENTER)
	binary.BigEndian.PutUint32(p[4:], openflow15.NTR_VENDOR_ID)
	binary.BigEndian.PutUint32(p[8:], openflow15.NTRT_SELECTION_METHOD)
	copy(p[16:32], g.method.String())
	binary.BigEndian.PutUint64(p[32:], g.methodParam)
	for _, f := range g.hashFields {
		hdr, w := oxmHeaders[f], fieldTable[f].width
		p = append(p, byte(hdr[0]>>8), byte(hdr[0]), byte(hdr[1])<<1, byte(w))
		for range w {
			p = append(p, 0xff)
		}
	}
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	for len(p)%8 != 0 {
		p = append(p, 0)
	}
	return p
}

// groupMod encodes the group as the group_mod that sets it with command
// (ADD_OR_MOD, MODIFY or ADD).
func (g *Group) groupMod(command uint16) []byte {
	m := make([]byte, groupModFixedLen, g.Len())
	m[0], m[1] = openflow15.VERSION, openflow15.Type_GroupMod
	binary.BigEndian.PutUint16(m[2:], uint16(cap(m)))
	binary.BigEndian.PutUint16(m[8:], command)
	m[10] = byte(g.Type)
	binary.BigEndian.PutUint32(m[12:], g.ID)
	binary.BigEndian.PutUint32(m[20:], openflow15.OFPG_BUCKET_ALL)
	for _, w := range g.wire {
		m = append(m, w...)
	}
	binary.BigEndian.PutUint16(m[16:], uint16(len(m)-groupModFixedLen))
	return append(m, g.props...)
}

// groupDelete returns the group_mod DELETE of group id (GroupIDAll: all).
func groupDelete(id uint32) []byte {
	m := make([]byte, groupModFixedLen)
	m[0], m[1] = openflow15.VERSION, openflow15.Type_GroupMod
	binary.BigEndian.PutUint16(m[2:], groupModFixedLen)
	binary.BigEndian.PutUint16(m[8:], openflow15.OFPGC_DELETE)
	binary.BigEndian.PutUint32(m[12:], id)
	binary.BigEndian.PutUint32(m[20:], openflow15.OFPG_BUCKET_ALL)
	return m
}

// withGroupCommand returns msg (a cached group_mod) with another command.
func withGroupCommand(msg []byte, command uint16) []byte {
	c := slices.Clone(msg)
	binary.BigEndian.PutUint16(c[8:], command)
	return c
}

// groupModID returns the group ID of an encoded group_mod.
func groupModID(msg []byte) uint32 { return binary.BigEndian.Uint32(msg[12:16]) }

// bucketKeys returns, for each bucket of a cached group (its group_mod),
// a key naming the bucket by its actions: the encoded action bytes, and the
// how-manieth bucket with those actions it is. A bucket keeps its key (and
// so its counters, see DumpGroups) when the buckets around it or its weight
// change.
func bucketKeys(msg []byte) []string {
	if len(msg) < groupModFixedLen {
		return nil
	}
	var keys []string
	seen := map[string]int{}
	b := msg[groupModFixedLen:]
	b = b[:min(len(b), int(binary.BigEndian.Uint16(msg[16:18])))]
	for len(b) >= bucketFixedLen {
		l := int(binary.BigEndian.Uint16(b[0:2]))
		al := int(binary.BigEndian.Uint16(b[2:4]))
		if l < bucketFixedLen || l > len(b) || bucketFixedLen+al > l {
			break
		}
		acts := string(b[bucketFixedLen : bucketFixedLen+al])
		keys = append(keys, acts+"\x00"+strconv.Itoa(seen[acts]))
		seen[acts]++
		b = b[l:]
	}
	return keys
}

// String renders the group with numbers only (see Renderer.Group).
func (g *Group) String() string { return (*Renderer)(nil).Group(g) }

// Group renders one group as `ovs-ofctl -O OpenFlow15 dump-groups` prints
// it: "group_id=1,type=select,bucket=bucket_id:0,weight:100,actions=...".
func (r *Renderer) Group(g *Group) string {
	var b strings.Builder
	b.WriteString("group_id=")
	b.WriteString(strconv.FormatUint(uint64(g.ID), 10))
	b.WriteString(",type=")
	b.WriteString(g.Type.String())
	if g.method != SelectDefault {
		b.WriteString(",selection_method=")
		b.WriteString(g.method.String())
		if g.methodParam != 0 {
			b.WriteString(",selection_method_param=")
			b.WriteString(strconv.FormatUint(g.methodParam, 10))
		}
		switch len(g.hashFields) {
		case 0:
		case 1:
			b.WriteString(",fields=")
			b.WriteString(fieldTable[g.hashFields[0]].set)
		default:
			b.WriteString(",fields(")
			for i, f := range g.hashFields {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(fieldTable[f].set)
			}
			b.WriteByte(')')
		}
	}
	for i, bk := range g.buckets {
		b.WriteString(",bucket=bucket_id:")
		b.WriteString(strconv.Itoa(i))
		b.WriteByte(',')
		// OVS omits the default weight: 1 in select groups, 0 elsewhere.
		if (g.Type == GroupSelect && bk.Weight != 1) || (g.Type != GroupSelect && bk.Weight != 0) {
			b.WriteString("weight:")
			b.WriteString(strconv.Itoa(int(bk.Weight)))
			b.WriteByte(',')
		}
		b.WriteString("actions=")
		if len(bk.Actions) == 0 {
			b.WriteString("drop")
		}
		for j, a := range bk.Actions {
			if j > 0 {
				b.WriteByte(',')
			}
			a.render(&b, r)
		}
	}
	return b.String()
}
