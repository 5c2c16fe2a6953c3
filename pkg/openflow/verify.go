package openflow

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"
)

// FlowDiscrepancy is one difference between the flow cache and the switch.
type FlowDiscrepancy struct {
	Kind     string // "missing" (in the cache, not on the switch) or "orphan" (on the switch, not in the cache)
	Owner    string // cache owner, for "missing"
	Table    uint8
	Priority uint16
	Cookie   uint64
	Match    string // human-readable match, e.g. "in_port=3,ip,nw_dst=10.244.1.5"
}

// Kinds of FlowDiscrepancy.
const (
	DiscrepancyMissing = "missing"
	DiscrepancyOrphan  = "orphan"
)

func (d FlowDiscrepancy) String() string {
	s := fmt.Sprintf("%s flow table=%d priority=%d cookie=%#x match=%q", d.Kind, d.Table, d.Priority, d.Cookie, d.Match)
	if d.Owner != "" {
		s += " owner=" + d.Owner
	}
	return s
}

// Verify compares the switch's flows with the cache, ignoring flows whose cookie round is not
// in rounds (nil = compare all).
//
// Flows are compared by table, priority, cookie and match, not by actions
// (flow stats carry no decoded actions). Both sides are decoded from their
// OXM TLVs and normalized the same way (fields sorted, all-ones masks
// dropped, value bits outside a mask cleared), because OVS reports a match
// in its own field order and encoding (registers as 64-bit xregs, tun_id as
// OXM_OF_TUNNEL_ID).
//
// Verify first waits (bounded by ctx) for the replay after a reconnect:
// during it the switch lacks cached flows on purpose. It then holds the
// cache still for one flow dump (Install, Sync and SyncOwners wait), so a
// change in flight cannot show as a discrepancy. Flows added with Apply are
// not the cache's and show as orphans; pass the rounds the cache uses to
// leave other rounds' flows out (an agent's previous run, until it deletes
// them).
func (s *Switch) Verify(ctx context.Context, rounds []uint8) ([]FlowDiscrepancy, error) {
	cached, stats, err := s.verifySnapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("verifying flows against the cache: %w", err)
	}
	wanted := func(cookie uint64) bool {
		return len(rounds) == 0 || slices.Contains(rounds, Cookie(cookie).Round())
	}
	type cachedFlow struct {
		f      *Flow
		owners []string
	}
	want := make(map[flowID]*cachedFlow)
	for owner, msgs := range cached {
		for _, m := range msgs {
			f, err := decodeFlowModMatch(m)
			if err != nil {
				return nil, fmt.Errorf("verifying flows: cached flow of %s: %w", owner, err)
			}
			if !wanted(f.Cookie) {
				continue
			}
			id := flowID{f.Key(), f.Cookie}
			if c := want[id]; c != nil {
				c.owners = append(c.owners, owner)
			} else {
				want[id] = &cachedFlow{f, []string{owner}}
			}
		}
	}
	have := make(map[flowID]*Flow, len(stats))
	for _, st := range stats {
		if wanted(st.Flow.Cookie) {
			normalizeMatches(st.Flow)
			have[flowID{st.Flow.Key(), st.Flow.Cookie}] = st.Flow
		}
	}
	// Only the discrepancies are rendered: rendering every flow would
	// double Verify's cost.
	var out []FlowDiscrepancy
	for id, c := range want {
		if _, ok := have[id]; ok {
			continue
		}
		for _, o := range c.owners {
			out = append(out, discrepancy(DiscrepancyMissing, o, c.f))
		}
	}
	for id, f := range have {
		if _, ok := want[id]; !ok {
			out = append(out, discrepancy(DiscrepancyOrphan, "", f))
		}
	}
	slices.SortFunc(out, func(a, b FlowDiscrepancy) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Table, b.Table), cmp.Compare(b.Priority, a.Priority),
			cmp.Compare(a.Cookie, b.Cookie), cmp.Compare(a.Match, b.Match), cmp.Compare(a.Owner, b.Owner))
	})
	return out, nil
}

// verifySnapshot returns the cache (owner -> ADD messages) and the
// switch's flows, read while no cache change runs and no replay is due.
func (s *Switch) verifySnapshot(ctx context.Context) (cached map[string][][]byte, stats []FlowStats, err error) {
	err = s.whileCacheStill(ctx, func() error {
		cached = s.cache.snapshot()
		stats, err = s.DumpFlows(ctx, FlowFilter{})
		return err
	})
	return cached, stats, err
}

// whileCacheStill runs fn once no replay is due and while no cache change
// runs (Install, Sync and the others wait for fn).
func (s *Switch) whileCacheStill(ctx context.Context, fn func() error) error {
	for {
		s.mu.Lock()
		done := s.replayDone
		s.mu.Unlock()
		select {
		case <-done:
		case <-s.done:
			return ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("waiting for the flow replay after a reconnect: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
			// A newer reconnect's replay supersedes the one awaited,
			// which then never completes: look again.
			continue
		}
		s.mutate.Lock()
		s.mu.Lock()
		again := s.replayDone != done // a reconnect came in between
		s.mu.Unlock()
		if again {
			s.mutate.Unlock()
			continue
		}
		err := fn()
		s.mutate.Unlock()
		return err
	}
}

// snapshot returns every owner's cached messages (which are never
// modified, so they are shared, not copied).
func (c *FlowCache) snapshot() map[string][][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string][][]byte, len(c.owners))
	for owner, fl := range c.owners {
		msgs := make([][]byte, 0, len(fl))
		for _, m := range fl {
			msgs = append(msgs, m)
		}
		out[owner] = msgs
	}
	return out
}

// flowID is what Verify compares: table, priority and normalized match
// (Flow.Key), and cookie.
type flowID struct {
	key    string
	cookie uint64
}

func discrepancy(kind, owner string, f *Flow) FlowDiscrepancy {
	return FlowDiscrepancy{Kind: kind, Owner: owner, Table: f.Table, Priority: f.Priority, Cookie: f.Cookie,
		Match: strings.Join((*Renderer)(nil).matchFields(nil, f), ",")}
}

// decodeFlowModMatch reads table, priority, cookie and match back from an
// encoded flow_mod (the cache's ADD messages), normalized like a flow-stats
// read-back.
func decodeFlowModMatch(msg []byte) (*Flow, error) {
	if len(msg) < flowModFixedLen+4 {
		return nil, fmt.Errorf("flow_mod of %d bytes is truncated", len(msg))
	}
	f := &Flow{
		Table:    msg[flowModTableOffset],
		Priority: binary.BigEndian.Uint16(msg[30:32]),
		Cookie:   binary.BigEndian.Uint64(msg[8:16]),
	}
	m := msg[flowModFixedLen:]
	matchLen := int(binary.BigEndian.Uint16(m[2:4]))
	if matchLen < 4 || matchLen > len(m) {
		return nil, fmt.Errorf("flow_mod: bad match length %d", matchLen)
	}
	if err := decodeOXMs(m[4:matchLen], f); err != nil {
		return nil, err
	}
	normalizeMatches(f)
	return f, nil
}

// normalizeMatches puts f's matches in the canonical form OVS keeps: sorted
// by field, no all-ones masks, no all-zero masks (a field matched on no
// bit is not matched), no value bits outside the mask.
func normalizeMatches(f *Flow) {
	out := f.matches[:0]
	for _, m := range f.matches {
		if m.mask != nil {
			if allOnes(m.mask) {
				m.mask = nil
			} else if !anyBit(m.mask) {
				continue
			} else {
				v := make([]byte, len(m.value))
				for i := range v {
					v[i] = m.value[i] & m.mask[i]
				}
				m.value = v
			}
		}
		out = append(out, m)
	}
	f.matches = out
	slices.SortStableFunc(f.matches, func(a, b matchEntry) int { return cmp.Compare(a.field, b.field) })
}

// anyBit reports whether b has a bit set (for masks wider than 64 bits).
func anyBit(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return true
		}
	}
	return false
}
