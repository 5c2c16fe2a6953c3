package openflow

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	"antrea.io/libOpenflow/openflow15"
)

// cachedGroup is one cached group: its ADD_OR_MOD group_mod (the replay
// form; never modified, so shared) and the counters OVS dropped when it
// last modified the group.
type cachedGroup struct {
	msg   []byte
	carry *groupCarry // nil: nothing carried
}

// counter is a packet and byte count.
type counter struct{ packets, bytes uint64 }

func (c *counter) add(o counter) { c.packets += o.packets; c.bytes += o.bytes }

// groupCarry holds the counts a group had before OVS last reset them (a
// modify, or the ADD_OR_MOD of a replay): for the group, and for each
// bucket still in the group by its key (bucketKeys).
type groupCarry struct {
	total   counter
	buckets map[string]counter
}

// groupCounters is a group's counters as the switch reports them, buckets
// in bucket order.
type groupCounters struct {
	total   counter
	buckets []counter
}

// carryOver returns what a group whose cached form is old, and whose
// switch counters are sw (nil: not on the switch), carries once it is
// replaced by newMsg: the old carry plus the switch's counts, for the
// group and for each bucket of the new group with a bucket of the same
// actions in the old one.
func carryOver(old *cachedGroup, sw *groupCounters, newMsg []byte) *groupCarry {
	prev := old.carry
	c := &groupCarry{}
	if prev != nil {
		c.total = prev.total
	}
	if sw != nil {
		c.total.add(sw.total)
	}
	oldKeys := bucketKeys(old.msg)
	totals := make(map[string]counter, len(oldKeys))
	for i, k := range oldKeys {
		var t counter
		if prev != nil {
			t = prev.buckets[k]
		}
		// Counters of a group that differs from the cache (changed behind
		// its back) cannot be attributed to buckets.
		if sw != nil && len(sw.buckets) == len(oldKeys) {
			t.add(sw.buckets[i])
		}
		if t != (counter{}) {
			totals[k] = t
		}
	}
	for _, k := range bucketKeys(newMsg) {
		if t, ok := totals[k]; ok {
			if c.buckets == nil {
				c.buckets = map[string]counter{}
			}
			c.buckets[k] = t
		}
	}
	if c.total == (counter{}) && c.buckets == nil {
		return nil
	}
	return c
}

// modifiedIDs returns the IDs of the groups a sync modifies on the switch
// (a group that only moves between owners is not modified).
func modifiedIDs(mods []groupChange) []uint32 {
	var ids []uint32
	for _, g := range mods {
		if g.group != nil {
			ids = append(ids, g.id)
		}
	}
	return ids
}

// putGroupLocked caches group id for owner; c.mu is held.
func (c *FlowCache) putGroupLocked(owner string, id uint32, g *cachedGroup) {
	gs := c.groups[owner]
	if gs == nil {
		gs = map[uint32]*cachedGroup{}
		c.groups[owner] = gs
	}
	gs[id] = g
	c.groupOwner[id] = owner
}

// removeGroupLocked forgets group id; c.mu is held.
func (c *FlowCache) removeGroupLocked(id uint32) {
	owner, ok := c.groupOwner[id]
	if !ok {
		return
	}
	delete(c.groupOwner, id)
	delete(c.groups[owner], id)
	if len(c.groups[owner]) == 0 {
		delete(c.groups, owner)
	}
}

func (c *FlowCache) refLocked(id uint32) { c.groupRefs[id]++ }

func (c *FlowCache) unrefLocked(id uint32) {
	if c.groupRefs[id]--; c.groupRefs[id] <= 0 {
		delete(c.groupRefs, id)
	}
}

// markGroupsInDoubt records the groups a change with an unknown outcome
// tried to add.
func (c *FlowCache) markGroupsInDoubt(adds []groupChange) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range adds {
		c.groupsInDoubt[g.id] = struct{}{}
	}
}

// settleGroupsLocked forgets the doubt about groups a change has settled.
func (c *FlowCache) settleGroupsLocked(lists ...[]groupChange) {
	if len(c.groupsInDoubt) == 0 {
		return
	}
	for _, l := range lists {
		for _, g := range l {
			delete(c.groupsInDoubt, g.id)
		}
	}
}

// GroupLen returns the number of cached groups.
func (c *FlowCache) GroupLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.groupOwner)
}

// OwnerGroups returns the IDs of owner's cached groups, sorted.
func (c *FlowCache) OwnerGroups(owner string) []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.groups[owner]))
}

// GroupOwner returns the owner of cached group id.
func (c *FlowCache) GroupOwner(id uint32) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o, ok := c.groupOwner[id]
	return o, ok
}

// GroupsInDoubt returns the number of groups whose addition went
// unanswered and that the next replay deletes unless an owner caches them.
func (c *FlowCache) GroupsInDoubt() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.groupsInDoubt)
}

// groupSnapshot returns every cached group (id -> owner, group).
func (c *FlowCache) groupSnapshot() map[uint32]ownedGroup {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[uint32]ownedGroup, len(c.groupOwner))
	for owner, gs := range c.groups {
		for id, g := range gs {
			out[id] = ownedGroup{owner, g}
		}
	}
	return out
}

type ownedGroup struct {
	owner string
	g     *cachedGroup
}

// flowModGroups calls fn with the ID of every group the actions of an
// encoded flow_mod use (group actions in apply/write_actions).
func flowModGroups(msg []byte, fn func(id uint32)) {
	if len(msg) < flowModFixedLen+4 {
		return
	}
	matchLen := int(binary.BigEndian.Uint16(msg[flowModFixedLen+2:]))
	off := flowModFixedLen + (matchLen+7)/8*8
	for off+4 <= len(msg) {
		typ := binary.BigEndian.Uint16(msg[off:])
		end := off + int(binary.BigEndian.Uint16(msg[off+2:]))
		if end < off+4 || end > len(msg) {
			return
		}
		if typ == openflow15.InstrType_APPLY_ACTIONS || typ == openflow15.InstrType_WRITE_ACTIONS {
			for a := off + 8; a+4 <= end; {
				at := binary.BigEndian.Uint16(msg[a:])
				next := a + int(binary.BigEndian.Uint16(msg[a+2:]))
				if next < a+4 || next > end {
					break
				}
				if at == openflow15.ActionType_Group && next-a >= 8 {
					fn(binary.BigEndian.Uint32(msg[a+4:]))
				}
				a = next
			}
		}
		off = end
	}
}

// replayGroups re-adds every cached group (ADD_OR_MOD, in batches of
// replayBatch). ADD_OR_MOD restarts the counters of a group
// the switch still has (the connection dropped, ovs-vswitchd did not
// restart), so they are read first and carried over for each batch OVS
// applied; a group the switch lacks (it restarted) starts from zero, as
// its flows' counters do.
func (s *Switch) replayGroups(ctx context.Context) (int, error) {
	snap := s.cache.groupSnapshot()
	if len(snap) == 0 {
		return 0, nil
	}
	counters, err := s.groupCounters(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("reading group counters before the replay: %w", err)
	}
	ids := slices.Sorted(maps.Keys(snap))
	for lo := 0; lo < len(ids); lo += replayBatch {
		batch := ids[lo:min(lo+replayBatch, len(ids))]
		ops := make([]FlowOp, len(batch))
		for i, id := range batch {
			ops[i] = FlowOp{Kind: OpGroupAdd, encodedGroup: snap[id].g.msg}
		}
		if _, err := s.apply(ctx, ops, nil); err != nil {
			return lo, fmt.Errorf("replaying groups: %w", err)
		}
		s.cache.mu.Lock()
		for _, id := range batch {
			g := snap[id].g
			if sw, ok := counters[id]; ok {
				g.carry = carryOver(g, &sw, g.msg)
			} else {
				g.carry = nil
			}
		}
		s.cache.mu.Unlock()
	}
	return len(ids), nil
}

// replayDeleteGroupsInDoubt deletes the groups in doubt that no owner
// caches and no cached flow uses.
func (s *Switch) replayDeleteGroupsInDoubt(ctx context.Context) (int, error) {
	s.cache.mu.Lock()
	var ops []FlowOp
	for id := range s.cache.groupsInDoubt {
		if _, cached := s.cache.groupOwner[id]; !cached && s.cache.groupRefs[id] == 0 {
			ops = append(ops, DeleteGroup(id))
		}
	}
	s.cache.mu.Unlock()
	for lo := 0; lo < len(ops); lo += replayBatch {
		if _, err := s.apply(ctx, ops[lo:min(lo+replayBatch, len(ops))], nil); err != nil {
			return lo, fmt.Errorf("deleting groups in doubt: %w", err)
		}
	}
	return len(ops), nil
}
