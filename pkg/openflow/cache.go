package openflow

import (
	"context"
	"encoding/binary"
	"fmt"
	"iter"
	"maps"
	"slices"
	"sync"

	"antrea.io/libOpenflow/openflow15"
)

// FlowCache remembers, per owner, the flows installed through the Switch,
// as their encoded flow_mod ADD messages (no libOpenflow objects are kept:
// those cost kilobytes per flow). It is what gets replayed after
// ovs-vswitchd restarts. Owners are opaque strings ("pod/ns/name",
// "policy/uid/rule", ...) chosen by the layer above.
type FlowCache struct {
	mu     sync.Mutex
	owners map[string]map[string][]byte // owner -> Flow.Key() -> message
	// inDoubt holds the ADD messages, by Flow.Key(), of flows a change
	// tried to add whose bundle commit went unanswered (outcome unknown):
	// they may be on the switch without being cached. The next replay
	// deletes those no owner caches.
	inDoubt map[string][]byte

	// groups holds each owner's groups by ID (groupcache.go), groupOwner
	// the owner of each cached group ID.
	groups     map[string]map[uint32]*cachedGroup
	groupOwner map[uint32]string
	// groupRefs counts, per group ID, the cached flows whose actions use
	// the group, so a sync cannot delete a group under a cached flow.
	groupRefs map[uint32]int
	// groupsInDoubt holds the IDs of groups a change tried to add whose
	// commit went unanswered; the next replay deletes those not cached.
	groupsInDoubt map[uint32]struct{}
	// groupPending holds the IDs of groups a sync in flight adds, and for
	// which owner.
	groupPending map[uint32]string
}

// NewFlowCache returns an empty cache.
func NewFlowCache() *FlowCache {
	return &FlowCache{
		owners:        map[string]map[string][]byte{},
		inDoubt:       map[string][]byte{},
		groups:        map[string]map[uint32]*cachedGroup{},
		groupOwner:    map[uint32]string{},
		groupRefs:     map[uint32]int{},
		groupsInDoubt: map[uint32]struct{}{},
		groupPending:  map[uint32]string{},
	}
}

// Owners returns the owners with cached flows or groups, sorted.
func (c *FlowCache) Owners() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	owners := slices.Collect(maps.Keys(c.owners))
	for o := range c.groups {
		if _, ok := c.owners[o]; !ok {
			owners = append(owners, o)
		}
	}
	slices.Sort(owners)
	return owners
}

// Len returns the number of cached flows.
func (c *FlowCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, fl := range c.owners {
		n += len(fl)
	}
	return n
}

// OwnerLen returns the number of flows cached for owner.
func (c *FlowCache) OwnerLen(owner string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.owners[owner])
}

// TableLens returns the number of cached flows per OpenFlow table. It
// reads the table ID from the cached messages, so it costs no round trip.
func (c *FlowCache) TableLens() map[uint8]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[uint8]int{}
	for _, fl := range c.owners {
		for _, m := range fl {
			if len(m) > flowModTableOffset {
				out[m[flowModTableOffset]]++
			}
		}
	}
	return out
}

// flowModTableOffset is the offset of table_id in an OpenFlow 1.5
// flow_mod: header (8), cookie (8), cookie_mask (8).
const flowModTableOffset = 24

// replaySet returns every cached message, and a DELETE_STRICT for each
// flow in doubt that no owner caches.
func (c *FlowCache) replaySet() (adds, dels [][]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, fl := range c.owners {
		n += len(fl)
	}
	adds = make([][]byte, 0, n)
	for _, fl := range c.owners {
		for _, m := range fl {
			adds = append(adds, m)
		}
	}
	if len(c.inDoubt) == 0 {
		return adds, nil
	}
	cached := make(map[string]struct{}, n)
	for _, fl := range c.owners {
		for k := range fl {
			cached[k] = struct{}{}
		}
	}
	for k, add := range c.inDoubt {
		if _, ok := cached[k]; !ok {
			dels = append(dels, deleteStrictFrom(add))
		}
	}
	return adds, dels
}

// markInDoubt records adds (Flow.Key() -> ADD message) of a change whose
// outcome is unknown.
func (c *FlowCache) markInDoubt(adds map[string][]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	maps.Copy(c.inDoubt, adds)
}

// settleLocked forgets the doubt about keys a later change has settled
// (added and cached, or deleted, with OVS's answer).
func (c *FlowCache) settleLocked(keys iter.Seq[string]) {
	if len(c.inDoubt) == 0 {
		return
	}
	for k := range keys {
		delete(c.inDoubt, k)
	}
}

// InDoubt returns the number of flows whose addition went unanswered and
// that the next replay removes unless an owner caches them.
func (c *FlowCache) InDoubt() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.inDoubt)
}

// deleteStrictFrom turns a cached flow_mod ADD into a DELETE_STRICT for the
// same table, priority and match: same header fields, instructions cut off.
func deleteStrictFrom(add []byte) []byte {
	const fixed = 48 // ofp_flow_mod up to the match
	matchLen := int(binary.BigEndian.Uint16(add[fixed+2:]))
	end := fixed + (matchLen+7)/8*8
	del := append([]byte(nil), add[:end]...)
	del[25] = openflow15.FC_DELETE_STRICT
	binary.BigEndian.PutUint16(del[2:], uint16(end))
	return del
}

// Install adds flows for owner atomically and caches them. Flows with the
// same Key as an owner's cached flow replace it.
func (s *Switch) Install(ctx context.Context, owner string, flows ...*Flow) error {
	ops := make([]FlowOp, len(flows))
	for i, f := range flows {
		ops[i] = Add(f)
	}
	enc := make([][]byte, len(flows))
	s.mutate.RLock()
	defer s.mutate.RUnlock()
	if res, err := s.apply(ctx, ops, func(i int, msg []byte) { enc[i] = msg }); err != nil {
		if res == unknown {
			doubt := make(map[string][]byte, len(flows))
			for i, f := range flows {
				doubt[f.Key()] = enc[i]
			}
			s.cache.markInDoubt(doubt)
		}
		return fmt.Errorf("installing flows of %s: %w", owner, err)
	}
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	fl := s.cache.owners[owner]
	if fl == nil {
		fl = make(map[string][]byte, len(flows))
		s.cache.owners[owner] = fl
	}
	for i, f := range flows {
		k := f.Key()
		if old, ok := fl[k]; ok {
			flowModGroups(old, s.cache.unrefLocked)
		}
		fl[k] = enc[i]
		flowModGroups(enc[i], s.cache.refLocked)
	}
	s.cache.settleLocked(func(yield func(string) bool) {
		for _, f := range flows {
			if !yield(f.Key()) {
				return
			}
		}
	})
	return nil
}

// Sync makes owner's flows exactly flows, in one atomic bundle: flows no
// longer wanted are deleted, new or changed ones added, unchanged ones left
// alone (their counters keep counting). The owner's groups are left alone
// (see SyncGroupsAndFlows).
func (s *Switch) Sync(ctx context.Context, owner string, flows ...*Flow) error {
	w, err := encodeOwnerWant(flows, false, nil)
	if err != nil {
		return fmt.Errorf("syncing flows of %s: %w", owner, err)
	}
	if err := s.syncOwners(ctx, map[string]*ownerWant{owner: w}); err != nil {
		return fmt.Errorf("syncing flows of %s: %w", owner, err)
	}
	return nil
}

// SyncOwners is Sync for several owners in ONE atomic bundle: each owner's
// flows become exactly owners[owner] (an empty or nil list removes the
// owner's flows); owners not in the map are left alone, and so are the
// groups of all owners. All deletions precede all additions in the bundle,
// so a flow may move from one owner to another in the same call. Either
// every change is applied or none is.
func (s *Switch) SyncOwners(ctx context.Context, owners map[string][]*Flow) error {
	want := make(map[string]*ownerWant, len(owners))
	for owner, flows := range owners {
		w, err := encodeOwnerWant(flows, false, nil)
		if err != nil {
			return fmt.Errorf("syncing flows of %s: %w", owner, err)
		}
		want[owner] = w
	}
	if err := s.syncOwners(ctx, want); err != nil {
		return fmt.Errorf("syncing flows of %d owners: %w", len(owners), err)
	}
	return nil
}

// OwnerState is everything one owner holds on the switch: its groups and
// its flows.
type OwnerState struct {
	Groups []*Group
	Flows  []*Flow
}

// SyncGroupsAndFlows makes owner's groups exactly groups and its flows
// exactly flows, in one atomic bundle (see SyncOwnerStates).
func (s *Switch) SyncGroupsAndFlows(ctx context.Context, owner string, groups []*Group, flows ...*Flow) error {
	return s.SyncOwnerStates(ctx, map[string]OwnerState{owner: {Groups: groups, Flows: flows}})
}

// SyncOwnerStates makes each owner's groups and flows exactly
// owners[owner], for all owners in ONE atomic bundle (an empty state
// uninstalls the owner); owners not in the map are left alone. Either every
// change is applied or none is, and no packet sees a partial state.
//
// Only differences are sent. A group new to the cache is added (OVS's
// ADD_OR_MOD, so a group left with the same ID by an earlier agent run is
// taken over); a changed group is modified in place (OFPGC_MODIFY), never
// deleted and re-added: OVS deletes the flows that use a deleted group, and
// connections that conntrack already DNATed keep flowing because their
// packets no longer pass the group. An unchanged group is not touched. In
// the bundle, added and modified groups come first, then flow deletions,
// flow additions, and last the deleted groups, so every flow finds its
// group and no group disappears under a flow still using it.
//
// A group ID belongs to one owner: a group whose ID another owner holds
// (and does not give up in the same call) is an error, as is deleting a
// group that cached flows of other owners (or the owner's remaining flows)
// still use. A group may move from one owner to another in one call.
//
// OVS restarts a group's counters when it modifies the group; the Switch
// reads them just before such a change and carries them over (see
// DumpGroups).
func (s *Switch) SyncOwnerStates(ctx context.Context, owners map[string]OwnerState) error {
	want := make(map[string]*ownerWant, len(owners))
	for owner, st := range owners {
		w, err := encodeOwnerWant(st.Flows, true, st.Groups)
		if err != nil {
			return fmt.Errorf("syncing %s: %w", owner, err)
		}
		want[owner] = w
	}
	if err := s.syncOwners(ctx, want); err != nil {
		if len(owners) == 1 {
			for owner := range owners {
				return fmt.Errorf("syncing groups and flows of %s: %w", owner, err)
			}
		}
		return fmt.Errorf("syncing groups and flows of %d owners: %w", len(owners), err)
	}
	return nil
}

// Uninstall deletes all of owner's cached flows and groups atomically.
func (s *Switch) Uninstall(ctx context.Context, owner string) error {
	if err := s.syncOwners(ctx, map[string]*ownerWant{owner: {setGroups: true}}); err != nil {
		return fmt.Errorf("uninstalling %s: %w", owner, err)
	}
	return nil
}

// ownerWant is what a sync makes one owner hold.
type ownerWant struct {
	flows map[string][]byte // Flow.Key() -> ADD message
	byKey map[string]*Flow
	// setGroups: the owner's groups become groups (otherwise they are
	// left alone).
	setGroups bool
	groups    map[uint32]*Group
	groupMsgs map[uint32][]byte // ADD_OR_MOD group_mods
}

func encodeOwnerWant(flows []*Flow, setGroups bool, groups []*Group) (*ownerWant, error) {
	w := &ownerWant{
		flows:     make(map[string][]byte, len(flows)),
		byKey:     make(map[string]*Flow, len(flows)),
		setGroups: setGroups,
	}
	for _, f := range flows {
		data, err := f.Encode()
		if err != nil {
			return nil, err
		}
		k := f.Key()
		w.flows[k], w.byKey[k] = data, f
	}
	if len(groups) > 0 {
		w.groups = make(map[uint32]*Group, len(groups))
		w.groupMsgs = make(map[uint32][]byte, len(groups))
	}
	for _, g := range groups {
		if g == nil {
			return nil, fmt.Errorf("nil group")
		}
		if _, dup := w.groups[g.ID]; dup {
			return nil, fmt.Errorf("group %d given twice", g.ID)
		}
		w.groups[g.ID], w.groupMsgs[g.ID] = g, g.groupMod(groupCmdAddOrMod)
	}
	return w, nil
}

// groupChange is one group a sync adds, modifies or deletes.
type groupChange struct {
	id    uint32
	owner string       // the owner after the change ("" when deleted)
	msg   []byte       // the new ADD_OR_MOD group_mod (nil when deleted)
	group *Group       // nil when deleted, or moved between owners unchanged
	old   *cachedGroup // nil when added
}

// syncOwners is the one diff-and-bundle behind Sync, SyncOwners,
// SyncOwnerStates and Uninstall.
func (s *Switch) syncOwners(ctx context.Context, want map[string]*ownerWant) error {
	owners := slices.Sorted(maps.Keys(want))
	// The group IDs the owners that set their groups will hold.
	claimed := map[uint32]string{}
	for _, owner := range owners {
		w := want[owner]
		for id := range w.groups {
			if other, dup := claimed[id]; dup {
				return fmt.Errorf("group %d wanted by both %s and %s", id, other, owner)
			}
			claimed[id] = owner
		}
	}
	s.mutate.RLock()
	defer s.mutate.RUnlock()

	c := s.cache
	c.mu.Lock()
	var gAdds, gMods, gDels []groupChange
	for _, id := range slices.Sorted(maps.Keys(claimed)) {
		owner := claimed[id]
		cur, held := c.groupOwner[id]
		if held && cur != owner {
			if w := want[cur]; w == nil || !w.setGroups {
				c.mu.Unlock()
				return fmt.Errorf("group %d of %s: the ID belongs to %s", id, owner, cur)
			}
		}
		if other, busy := c.groupPending[id]; busy {
			c.mu.Unlock()
			return fmt.Errorf("group %d of %s: a concurrent sync is adding it for %s", id, owner, other)
		}
		ch := groupChange{id: id, owner: owner, msg: want[owner].groupMsgs[id], group: want[owner].groups[id]}
		switch {
		case !held:
			gAdds = append(gAdds, ch)
		default:
			ch.old = c.groups[cur][id]
			if string(ch.old.msg) != string(ch.msg) {
				gMods = append(gMods, ch)
			} else if cur != owner {
				gMods = append(gMods, groupChange{id: id, owner: owner, msg: ch.msg, old: ch.old}) // a move: cache only
			}
		}
	}
	for _, owner := range owners {
		if !want[owner].setGroups {
			continue
		}
		for _, id := range slices.Sorted(maps.Keys(c.groups[owner])) {
			if _, kept := claimed[id]; !kept {
				gDels = append(gDels, groupChange{id: id, old: c.groups[owner][id]})
			}
		}
	}

	// Flows to delete, by key (nil: deleted by two owners). A flow that
	// one owner deletes and another adds byte for byte the same only moves:
	// it stays on the switch untouched and keeps its counters.
	deleted := map[string][]byte{}
	for _, owner := range owners {
		w := want[owner].flows
		for k, old := range c.owners[owner] {
			if _, ok := w[k]; !ok {
				if _, twice := deleted[k]; twice {
					deleted[k] = nil
				} else {
					deleted[k] = old
				}
			}
		}
	}
	var adds []FlowOp
	added := map[string][]byte{}
	moved := map[string]bool{}
	refDelta := map[uint32]int{}
	for _, owner := range owners {
		have := c.owners[owner]
		for k, data := range want[owner].flows {
			old, ok := have[k]
			if ok && string(old) == string(data) {
				continue
			}
			if d := deleted[k]; d != nil && string(d) == string(data) && !moved[k] {
				moved[k] = true
				continue
			}
			adds = append(adds, FlowOp{Kind: OpAdd, Flow: want[owner].byKey[k], encoded: data})
			added[k] = data
			flowModGroups(data, func(id uint32) { refDelta[id]++ })
			if ok {
				flowModGroups(old, func(id uint32) { refDelta[id]-- })
			}
		}
	}
	var dels []FlowOp
	var touched []string
	for _, owner := range owners {
		w := want[owner].flows
		for k, old := range c.owners[owner] {
			if _, ok := w[k]; ok {
				continue
			}
			if moved[k] && string(old) == string(deleted[k]) {
				delete(moved, k) // the one move of k is done
				continue
			}
			dels = append(dels, rawOp(OpDelete, deleteStrictFrom(old)))
			touched = append(touched, k)
			flowModGroups(old, func(id uint32) { refDelta[id]-- })
		}
	}
	for _, d := range gDels {
		if n := c.groupRefs[d.id] + refDelta[d.id]; n > 0 {
			owner := c.groupOwner[d.id]
			c.mu.Unlock()
			return fmt.Errorf("deleting group %d of %s: %d cached flows still use it (OVS would delete them with it)", d.id, owner, n)
		}
	}
	// The new IDs are reserved until this sync ends, so a concurrent one
	// cannot add them for another owner.
	for _, g := range gAdds {
		c.groupPending[g.id] = g.owner
	}
	c.mu.Unlock()
	if len(gAdds) > 0 {
		defer func() {
			c.mu.Lock()
			for _, g := range gAdds {
				delete(c.groupPending, g.id)
			}
			c.mu.Unlock()
		}()
	}

	// The counters of the groups about to be modified, to carry over.
	var counters map[uint32]groupCounters
	if ids := modifiedIDs(gMods); len(ids) > 0 {
		var err error
		if counters, err = s.groupCounters(ctx, ids); err != nil {
			return fmt.Errorf("reading the counters of the groups to modify: %w", err)
		}
	}

	ops := make([]FlowOp, 0, len(gAdds)+len(gMods)+len(dels)+len(adds)+len(gDels))
	for _, g := range gAdds {
		ops = append(ops, FlowOp{Kind: OpGroupAdd, Group: g.group, encodedGroup: g.msg})
	}
	for _, g := range gMods {
		if g.group == nil {
			continue // moved, unchanged
		}
		ops = append(ops, FlowOp{Kind: OpGroupModify, Group: g.group, encodedGroup: withGroupCommand(g.msg, openflow15.OFPGC_MODIFY)})
	}
	ops = append(ops, dels...)
	ops = append(ops, adds...)
	for _, g := range gDels {
		ops = append(ops, FlowOp{Kind: OpGroupDelete, GroupID: g.id})
	}
	if len(ops) > 0 {
		if res, err := s.apply(ctx, ops, nil); err != nil {
			if res == unknown {
				c.markInDoubt(added)
				c.markGroupsInDoubt(gAdds)
			}
			return err
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	for owner, w := range want {
		if len(w.flows) == 0 {
			delete(c.owners, owner)
		} else {
			c.owners[owner] = w.flows
		}
	}
	for id, d := range refDelta {
		if n := c.groupRefs[id] + d; n > 0 {
			c.groupRefs[id] = n
		} else {
			delete(c.groupRefs, id)
		}
	}
	for _, d := range gDels {
		c.removeGroupLocked(d.id)
	}
	for _, g := range gAdds {
		c.putGroupLocked(g.owner, g.id, &cachedGroup{msg: g.msg})
	}
	for _, g := range gMods {
		cg := &cachedGroup{msg: g.msg, carry: g.old.carry}
		if g.group != nil {
			var sw *groupCounters
			if cnt, ok := counters[g.id]; ok {
				sw = &cnt
			}
			cg.carry = carryOver(g.old, sw, g.msg)
		}
		c.removeGroupLocked(g.id)
		c.putGroupLocked(g.owner, g.id, cg)
	}
	c.settleLocked(slices.Values(touched))
	c.settleLocked(maps.Keys(added))
	c.settleGroupsLocked(gAdds, gMods, gDels)
	return nil
}

// rawOp is an op whose message is already encoded (no Flow attached).
func rawOp(kind OpKind, msg []byte) FlowOp {
	return FlowOp{Kind: kind, encoded: msg}
}

// replayBatch bounds one replay bundle so a huge cache does not become one
// multi-hundred-megabyte transaction.
const replayBatch = 20000

// replayCache makes the switch hold what the cache holds: it re-adds every
// cached group (ADD_OR_MOD) and then every cached flow, in atomic batches,
// so each flow finds the groups it uses; then it deletes the flows and
// groups in doubt (added by a change whose commit went unanswered) that no
// owner caches. The caller holds s.mutate exclusively, so the cache cannot
// change meanwhile: a change that lands between reading the cache and
// sending a batch would otherwise be undone by the batch (a deleted flow
// re-added, as an orphan).
//
// Flows and groups changed with Apply or ApplyUnbundled are not the
// cache's; they are neither re-added nor deleted here (the agent's deletion
// of an earlier run's cookie rounds is the only such change today).
func (s *Switch) replayCache(ctx context.Context) (res replayCounts, err error) {
	if res.groups, err = s.replayGroups(ctx); err != nil {
		return res, err
	}
	adds, dels := s.cache.replaySet()
	for lo := 0; lo < len(adds); lo += replayBatch {
		hi := min(lo+replayBatch, len(adds))
		ops := make([]FlowOp, 0, hi-lo)
		for _, m := range adds[lo:hi] {
			ops = append(ops, rawOp(OpAdd, m))
		}
		if _, err := s.apply(ctx, ops, nil); err != nil {
			return res, err
		}
		res.added = hi
	}
	for lo := 0; lo < len(dels); lo += replayBatch {
		hi := min(lo+replayBatch, len(dels))
		ops := make([]FlowOp, 0, hi-lo)
		for _, m := range dels[lo:hi] {
			ops = append(ops, rawOp(OpDelete, m))
		}
		if _, err := s.apply(ctx, ops, nil); err != nil {
			return res, err
		}
		res.removed = hi
	}
	if res.removedGroups, err = s.replayDeleteGroupsInDoubt(ctx); err != nil {
		return res, err
	}
	// Every doubt is settled: the flows and groups are cached, or gone.
	s.cache.mu.Lock()
	clear(s.cache.inDoubt)
	clear(s.cache.groupsInDoubt)
	s.cache.mu.Unlock()
	return res, nil
}

// replayCounts is what a replay sent.
type replayCounts struct {
	groups, added, removed, removedGroups int
}
