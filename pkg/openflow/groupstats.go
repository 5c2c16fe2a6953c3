package openflow

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"time"

	"antrea.io/libOpenflow/openflow15"
)

// GroupStats is one group as read back from the switch: its description
// and its counters.
type GroupStats struct {
	ID   uint32
	Type GroupType
	// Method is the selection_method OVS reports ("" when none was set).
	Method string
	// FlowCount is the number of flows whose actions use the group (OVS's
	// ref_count).
	FlowCount uint32
	Packets   uint64
	Bytes     uint64
	// Duration is the time since the group was added (a modify keeps it).
	Duration time.Duration
	// Buckets in bucket order.
	Buckets []BucketStats
}

// BucketStats is one bucket of a GroupStats.
type BucketStats struct {
	ID      uint32
	Weight  uint16
	Packets uint64
	Bytes   uint64
}

// Multipart types and the group multipart request (OpenFlow 1.5
// ofp_group_multipart_request: group_id, pad).
const (
	mpGroupStats     = openflow15.MultipartType_GroupStats
	mpGroupDesc      = openflow15.MultipartType_GroupDesc
	groupRequestLen  = 16 + 8
	groupStatsLen    = 40 // ofp13_group_stats without bucket counters
	bucketCounterLen = 16
	groupDescLen     = 16 // ofp15_group_desc_stats without buckets and properties
	mpReplyHeaderLen = 16
)

func groupRequest(mpType uint16, id uint32) []byte {
	m := make([]byte, groupRequestLen)
	m[0], m[1] = openflow15.VERSION, openflow15.Type_MultiPartRequest
	binary.BigEndian.PutUint16(m[2:], groupRequestLen)
	binary.BigEndian.PutUint16(m[8:], mpType)
	binary.BigEndian.PutUint32(m[16:], id)
	return m
}

// groupRequests returns a request of mpType for each of ids, or one for
// all groups when ids is empty.
func groupRequests(mpType uint16, ids []uint32) [][]byte {
	if len(ids) == 0 {
		return [][]byte{groupRequest(mpType, GroupIDAll)}
	}
	out := make([][]byte, len(ids))
	for i, id := range ids {
		out[i] = groupRequest(mpType, id)
	}
	return out
}

// DumpGroups reads groups (ids, or all when none is given) and their
// counters from the switch, sorted by ID; an ID the switch lacks is left
// out.
//
// The counters are the switch's plus what the Switch carried over: OVS 3.1
// restarts a group's counters (the group's and every bucket's) whenever it
// modifies the group, so a sync reads them just before it modifies a
// cached group and adds them back here — to the group, and to each bucket
// whose actions are unchanged (a bucket is known by its actions, whatever
// its position or weight). Packets counted in the instant between that
// read and the commit are lost. A replay after a reconnect carries the
// counts over the same way; after an ovs-vswitchd restart they start from
// zero, like flow counters.
func (s *Switch) DumpGroups(ctx context.Context, ids ...uint32) (_ []GroupStats, err error) {
	start := time.Now()
	defer func() { s.observe("group_stats", 0, start, err) }()
	msgs := append(groupRequests(mpGroupDesc, ids), groupRequests(mpGroupStats, ids)...)
	req, err := s.roundTrip(ctx, "group desc/stats request", msgs...)
	if err != nil {
		return nil, err
	}
	if err := req.firstError(); err != nil {
		return nil, err
	}
	descs := map[uint32]*GroupStats{}
	counters := map[uint32]groupCounters{}
	refs := map[uint32]uint32{}
	durations := map[uint32]time.Duration{}
	for _, raw := range req.replies {
		if len(raw) < mpReplyHeaderLen {
			return nil, fmt.Errorf("group stats: truncated multipart reply")
		}
		switch binary.BigEndian.Uint16(raw[8:10]) {
		case mpGroupDesc:
			if err := decodeGroupDescs(raw[mpReplyHeaderLen:], descs); err != nil {
				return nil, err
			}
		case mpGroupStats:
			if err := decodeGroupStats(raw[mpReplyHeaderLen:], counters, refs, durations); err != nil {
				return nil, err
			}
		}
	}
	// Carried counts, by bucket key of the cached group.
	s.cache.mu.Lock()
	for id, d := range descs {
		cg := s.cache.lookupGroupLocked(id)
		sw, ok := counters[id]
		if !ok {
			continue
		}
		d.Packets, d.Bytes = sw.total.packets, sw.total.bytes
		d.FlowCount, d.Duration = refs[id], durations[id]
		var keys []string
		if cg != nil && cg.carry != nil {
			d.Packets += cg.carry.total.packets
			d.Bytes += cg.carry.total.bytes
			keys = bucketKeys(cg.msg)
		}
		for i := range d.Buckets {
			if i < len(sw.buckets) {
				d.Buckets[i].Packets, d.Buckets[i].Bytes = sw.buckets[i].packets, sw.buckets[i].bytes
			}
			if len(keys) == len(d.Buckets) {
				c := cg.carry.buckets[keys[i]]
				d.Buckets[i].Packets += c.packets
				d.Buckets[i].Bytes += c.bytes
			}
		}
	}
	s.cache.mu.Unlock()
	out := make([]GroupStats, 0, len(descs))
	for _, id := range slices.Sorted(maps.Keys(descs)) {
		out = append(out, *descs[id])
	}
	return out, nil
}

// lookupGroupLocked returns cached group id, or nil; c.mu is held.
func (c *FlowCache) lookupGroupLocked(id uint32) *cachedGroup {
	owner, ok := c.groupOwner[id]
	if !ok {
		return nil
	}
	return c.groups[owner][id]
}

// groupCounters reads the switch's counters of groups ids (all when
// empty); groups the switch lacks are absent from the result.
func (s *Switch) groupCounters(ctx context.Context, ids []uint32) (map[uint32]groupCounters, error) {
	req, err := s.roundTrip(ctx, "group stats request", groupRequests(mpGroupStats, ids)...)
	if err != nil {
		return nil, err
	}
	if err := req.firstError(); err != nil {
		return nil, err
	}
	out := map[uint32]groupCounters{}
	for _, raw := range req.replies {
		if len(raw) < mpReplyHeaderLen {
			return nil, fmt.Errorf("group stats: truncated multipart reply")
		}
		if err := decodeGroupStats(raw[mpReplyHeaderLen:], out, nil, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// decodeGroupStats parses the body of an OFPMP_GROUP_STATS reply
// (ofp13_group_stats entries with their bucket counters).
func decodeGroupStats(body []byte, out map[uint32]groupCounters, refs map[uint32]uint32, durations map[uint32]time.Duration) error {
	for len(body) > 0 {
		if len(body) < groupStatsLen {
			return fmt.Errorf("group stats: truncated entry")
		}
		n := int(binary.BigEndian.Uint16(body[0:2]))
		if n < groupStatsLen || n > len(body) || (n-groupStatsLen)%bucketCounterLen != 0 {
			return fmt.Errorf("group stats: bad entry length %d", n)
		}
		e := body[:n]
		id := binary.BigEndian.Uint32(e[4:8])
		gc := groupCounters{total: counter{binary.BigEndian.Uint64(e[16:24]), binary.BigEndian.Uint64(e[24:32])}}
		for b := e[groupStatsLen:]; len(b) >= bucketCounterLen; b = b[bucketCounterLen:] {
			gc.buckets = append(gc.buckets, counter{binary.BigEndian.Uint64(b[0:8]), binary.BigEndian.Uint64(b[8:16])})
		}
		out[id] = gc
		if refs != nil {
			refs[id] = binary.BigEndian.Uint32(e[8:12])
		}
		if durations != nil {
			durations[id] = time.Duration(binary.BigEndian.Uint32(e[32:36]))*time.Second +
				time.Duration(binary.BigEndian.Uint32(e[36:40]))
		}
		body = body[n:]
	}
	return nil
}

// decodeGroupDescs parses the body of an OpenFlow 1.5 OFPMP_GROUP_DESC
// reply (ofp15_group_desc_stats: length, type, pad, group_id,
// bucket_list_len, pad, buckets, properties). Bucket actions are not
// decoded: IDs, weights, type and selection method are what tooling and
// VerifyGroups need.
func decodeGroupDescs(body []byte, out map[uint32]*GroupStats) error {
	for len(body) > 0 {
		if len(body) < groupDescLen {
			return fmt.Errorf("group desc: truncated entry")
		}
		n := int(binary.BigEndian.Uint16(body[0:2]))
		bucketsLen := int(binary.BigEndian.Uint16(body[8:10]))
		if n < groupDescLen || n > len(body) || groupDescLen+bucketsLen > n {
			return fmt.Errorf("group desc: bad entry length %d", n)
		}
		e := body[:n]
		gs := &GroupStats{ID: binary.BigEndian.Uint32(e[4:8]), Type: GroupType(e[2])}
		bs, err := decodeBuckets(e[groupDescLen : groupDescLen+bucketsLen])
		if err != nil {
			return fmt.Errorf("group desc of group %d: %w", gs.ID, err)
		}
		gs.Buckets = bs
		gs.Method = selectionMethodName(e[groupDescLen+bucketsLen:])
		out[gs.ID] = gs
		body = body[n:]
	}
	return nil
}

// decodeBuckets parses ofp15_buckets: ID and the weight property.
func decodeBuckets(b []byte) ([]BucketStats, error) {
	var out []BucketStats
	for len(b) > 0 {
		if len(b) < bucketFixedLen {
			return nil, fmt.Errorf("truncated bucket")
		}
		l := int(binary.BigEndian.Uint16(b[0:2]))
		al := int(binary.BigEndian.Uint16(b[2:4]))
		if l < bucketFixedLen || l > len(b) || bucketFixedLen+al > l {
			return nil, fmt.Errorf("bad bucket length %d", l)
		}
		bs := BucketStats{ID: binary.BigEndian.Uint32(b[4:8])}
		for p := b[bucketFixedLen+al : l]; len(p) >= 4; {
			pl := int(binary.BigEndian.Uint16(p[2:4]))
			if pl < 4 || pl > len(p) {
				break
			}
			if binary.BigEndian.Uint16(p[0:2]) == openflow15.GBPT_WEIGHT && pl >= 6 {
				bs.Weight = binary.BigEndian.Uint16(p[4:6])
			}
			p = p[(pl+7)/8*8:]
		}
		out = append(out, bs)
		b = b[l:]
	}
	return out, nil
}

// selectionMethodName returns the method of an NTR selection_method
// property among group properties, "" when there is none.
func selectionMethodName(props []byte) string {
	for len(props) >= 32 {
		pl := int(binary.BigEndian.Uint16(props[2:4]))
		if pl < 4 || pl > len(props) {
			return ""
		}
		if binary.BigEndian.Uint16(props[0:2]) == openflow15.OFPGPT_EXPERIMENTER &&
			binary.BigEndian.Uint32(props[4:8]) == openflow15.NTR_VENDOR_ID &&
			binary.BigEndian.Uint32(props[8:12]) == openflow15.NTRT_SELECTION_METHOD {
			name := props[16:32]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			return string(name)
		}
		props = props[(pl+7)/8*8:]
	}
	return ""
}

// GroupDiscrepancy is one difference between the cached groups and the
// switch's.
type GroupDiscrepancy struct {
	// Kind is DiscrepancyMissing (cached, not on the switch),
	// DiscrepancyOrphan (on the switch, not cached) or DiscrepancyDiffers.
	Kind  string
	Owner string // cache owner; "" for an orphan
	ID    uint32
	// Detail says what differs (for DiscrepancyDiffers).
	Detail string
}

// DiscrepancyDiffers is a group both sides have, in different forms.
const DiscrepancyDiffers = "differs"

func (d GroupDiscrepancy) String() string {
	s := fmt.Sprintf("%s group %d", d.Kind, d.ID)
	if d.Owner != "" {
		s += " owner=" + d.Owner
	}
	if d.Detail != "" {
		s += ": " + d.Detail
	}
	return s
}

// VerifyGroups compares the switch's groups with the cached ones: a
// cached group missing on the switch, a group no owner caches (one made
// with Apply or ovs-ofctl, or left by an earlier agent run), and a group
// whose type, selection method, bucket IDs or weights differ. Bucket
// actions are not compared (OVS re-encodes them in its own way). Like
// Verify it waits for a pending replay and holds the cache still for the
// dump.
func (s *Switch) VerifyGroups(ctx context.Context) ([]GroupDiscrepancy, error) {
	var cached map[uint32]ownedGroup
	var have []GroupStats
	err := s.whileCacheStill(ctx, func() error {
		cached = s.cache.groupSnapshot()
		var err error
		have, err = s.DumpGroups(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("verifying groups against the cache: %w", err)
	}
	var out []GroupDiscrepancy
	onSwitch := make(map[uint32]bool, len(have))
	for _, gs := range have {
		onSwitch[gs.ID] = true
		c, ok := cached[gs.ID]
		if !ok {
			out = append(out, GroupDiscrepancy{Kind: DiscrepancyOrphan, ID: gs.ID})
			continue
		}
		if d := groupDiff(c.g.msg, gs); d != "" {
			out = append(out, GroupDiscrepancy{Kind: DiscrepancyDiffers, Owner: c.owner, ID: gs.ID, Detail: d})
		}
	}
	for id, c := range cached {
		if !onSwitch[id] {
			out = append(out, GroupDiscrepancy{Kind: DiscrepancyMissing, Owner: c.owner, ID: id})
		}
	}
	slices.SortFunc(out, func(a, b GroupDiscrepancy) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// groupDiff says how the switch's group differs from the cached group_mod
// ("" if it does not, as far as a description without actions shows).
func groupDiff(msg []byte, gs GroupStats) string {
	if t := GroupType(msg[10]); t != gs.Type {
		return fmt.Sprintf("type %s, switch has %s", t, gs.Type)
	}
	n := groupModFixedLen + int(binary.BigEndian.Uint16(msg[16:18]))
	want, err := decodeBuckets(msg[groupModFixedLen:n])
	if err != nil {
		return "cached group does not decode: " + err.Error()
	}
	if m := selectionMethodName(msg[n:]); m != gs.Method {
		return fmt.Sprintf("selection_method %q, switch has %q", m, gs.Method)
	}
	if len(want) != len(gs.Buckets) {
		return fmt.Sprintf("%d buckets, switch has %d", len(want), len(gs.Buckets))
	}
	for i, b := range want {
		// Non-select groups carry no weight property; OVS reports none.
		if b.ID != gs.Buckets[i].ID || b.Weight != gs.Buckets[i].Weight {
			return fmt.Sprintf("bucket %d is bucket_id:%d,weight:%d, switch has bucket_id:%d,weight:%d",
				i, b.ID, b.Weight, gs.Buckets[i].ID, gs.Buckets[i].Weight)
		}
	}
	return ""
}

// DeleteUncachedGroups deletes, in one atomic bundle, every group on the
// switch that no owner caches, and returns how many it deleted. OVS also
// deletes the flows that use them. An agent calls it after a restart, once
// it has synced its groups and deleted the previous run's flows: groups
// carry no cookie round, so those the previous run left are found by being
// uncached. It holds the cache still meanwhile, so no sync in flight can
// lose a group it is adding.
func (s *Switch) DeleteUncachedGroups(ctx context.Context) (int, error) {
	var n int
	err := s.whileCacheStill(ctx, func() error {
		on, err := s.groupCounters(ctx, nil)
		if err != nil {
			return err
		}
		cached := s.cache.groupSnapshot()
		var ops []FlowOp
		for _, id := range slices.Sorted(maps.Keys(on)) {
			if _, ok := cached[id]; !ok {
				ops = append(ops, DeleteGroup(id))
			}
		}
		if _, err := s.apply(ctx, ops, nil); err != nil {
			return err
		}
		n = len(ops)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("deleting uncached groups: %w", err)
	}
	return n, nil
}
