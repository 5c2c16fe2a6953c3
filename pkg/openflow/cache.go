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
}

// NewFlowCache returns an empty cache.
func NewFlowCache() *FlowCache {
	return &FlowCache{owners: map[string]map[string][]byte{}, inDoubt: map[string][]byte{}}
}

// Owners returns the owners with cached flows, sorted.
func (c *FlowCache) Owners() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.owners))
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
		fl[f.Key()] = enc[i]
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
// alone (their counters keep counting).
func (s *Switch) Sync(ctx context.Context, owner string, flows ...*Flow) error {
	want := make(map[string][]byte, len(flows))
	byKey := make(map[string]*Flow, len(flows))
	for _, f := range flows {
		data, err := f.Encode()
		if err != nil {
			return fmt.Errorf("syncing flows of %s: %w", owner, err)
		}
		k := f.Key()
		want[k], byKey[k] = data, f
	}
	s.mutate.RLock()
	defer s.mutate.RUnlock()
	s.cache.mu.Lock()
	have := s.cache.owners[owner]
	var ops []FlowOp
	var touched []string
	for k, old := range have {
		if _, ok := want[k]; !ok {
			ops = append(ops, rawOp(OpDelete, deleteStrictFrom(old)))
			touched = append(touched, k)
		}
	}
	adds := map[string][]byte{}
	for k, data := range want {
		if old, ok := have[k]; !ok || string(old) != string(data) {
			ops = append(ops, FlowOp{Kind: OpAdd, Flow: byKey[k], encoded: data})
			adds[k] = data
		}
	}
	s.cache.mu.Unlock()
	if res, err := s.apply(ctx, ops, nil); err != nil {
		if res == unknown {
			s.cache.markInDoubt(adds)
		}
		return fmt.Errorf("syncing flows of %s: %w", owner, err)
	}
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	if len(want) == 0 {
		delete(s.cache.owners, owner)
	} else {
		s.cache.owners[owner] = want
	}
	s.cache.settleLocked(slices.Values(touched))
	s.cache.settleLocked(maps.Keys(adds))
	return nil
}

// SyncOwners is Sync for several owners in ONE atomic bundle: each owner's
// flows become exactly owners[owner] (an empty or nil list uninstalls the
// owner); owners not in the map are left alone. All deletions precede all
// additions in the bundle, so a flow may move from one owner to another in
// the same call. Either every change is applied or none is.
func (s *Switch) SyncOwners(ctx context.Context, owners map[string][]*Flow) error {
	want := make(map[string]map[string][]byte, len(owners))
	byKey := make(map[string]map[string]*Flow, len(owners))
	for owner, flows := range owners {
		w := make(map[string][]byte, len(flows))
		bk := make(map[string]*Flow, len(flows))
		for _, f := range flows {
			data, err := f.Encode()
			if err != nil {
				return fmt.Errorf("syncing flows of %s: %w", owner, err)
			}
			k := f.Key()
			w[k], bk[k] = data, f
		}
		want[owner], byKey[owner] = w, bk
	}
	var dels, adds []FlowOp
	var touched []string
	added := map[string][]byte{}
	s.mutate.RLock()
	defer s.mutate.RUnlock()
	s.cache.mu.Lock()
	for _, owner := range slices.Sorted(maps.Keys(want)) {
		have, w := s.cache.owners[owner], want[owner]
		for k, old := range have {
			if _, ok := w[k]; !ok {
				dels = append(dels, rawOp(OpDelete, deleteStrictFrom(old)))
				touched = append(touched, k)
			}
		}
		for k, data := range w {
			if old, ok := have[k]; !ok || string(old) != string(data) {
				adds = append(adds, FlowOp{Kind: OpAdd, Flow: byKey[owner][k], encoded: data})
				added[k] = data
			}
		}
	}
	s.cache.mu.Unlock()
	if ops := append(dels, adds...); len(ops) > 0 {
		if res, err := s.apply(ctx, ops, nil); err != nil {
			if res == unknown {
				s.cache.markInDoubt(added)
			}
			return fmt.Errorf("syncing flows of %d owners: %w", len(owners), err)
		}
	}
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	for owner, w := range want {
		if len(w) == 0 {
			delete(s.cache.owners, owner)
		} else {
			s.cache.owners[owner] = w
		}
	}
	s.cache.settleLocked(slices.Values(touched))
	s.cache.settleLocked(maps.Keys(added))
	return nil
}

// Uninstall deletes all of owner's cached flows atomically.
func (s *Switch) Uninstall(ctx context.Context, owner string) error {
	return s.Sync(ctx, owner)
}

// rawOp is an op whose message is already encoded (no Flow attached).
func rawOp(kind OpKind, msg []byte) FlowOp {
	return FlowOp{Kind: kind, encoded: msg}
}

// replayBatch bounds one replay bundle so a huge cache does not become one
// multi-hundred-megabyte transaction.
const replayBatch = 20000

// replayCache makes the switch hold what the cache holds: it re-adds every
// cached flow, in atomic batches, then deletes the flows in doubt (added by
// a change whose commit went unanswered) that no owner caches. The caller
// holds s.mutate exclusively, so the cache cannot change meanwhile: a
// change that lands between reading the cache and sending a batch would
// otherwise be undone by the batch (a deleted flow re-added, as an orphan).
//
// Flows changed with Apply or ApplyUnbundled are not the cache's; they are
// neither re-added nor deleted here (the agent's deletion of an earlier
// run's cookie rounds is the only such change today).
func (s *Switch) replayCache(ctx context.Context) (added, removed int, err error) {
	adds, dels := s.cache.replaySet()
	for lo := 0; lo < len(adds); lo += replayBatch {
		hi := min(lo+replayBatch, len(adds))
		ops := make([]FlowOp, 0, hi-lo)
		for _, m := range adds[lo:hi] {
			ops = append(ops, rawOp(OpAdd, m))
		}
		if _, err := s.apply(ctx, ops, nil); err != nil {
			return lo, 0, err
		}
	}
	for lo := 0; lo < len(dels); lo += replayBatch {
		hi := min(lo+replayBatch, len(dels))
		ops := make([]FlowOp, 0, hi-lo)
		for _, m := range dels[lo:hi] {
			ops = append(ops, rawOp(OpDelete, m))
		}
		if _, err := s.apply(ctx, ops, nil); err != nil {
			return len(adds), lo, err
		}
	}
	// Every doubt is settled: the flows are cached, or gone.
	s.cache.mu.Lock()
	clear(s.cache.inDoubt)
	s.cache.mu.Unlock()
	return len(adds), len(dels), nil
}
