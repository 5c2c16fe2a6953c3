package openflow

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"antrea.io/libOpenflow/openflow15"
)

// OpKind is what a FlowOp does to the switch.
type OpKind uint8

// Flow operations.
const (
	// OpAdd adds the flow, replacing one with the same table, priority and
	// match (counters restart).
	OpAdd OpKind = iota
	// OpModify replaces the actions of the flow with the same table,
	// priority and match, keeping its counters (adds it if missing).
	OpModify
	// OpDelete deletes the flow with the same table, priority and match.
	OpDelete
	// OpDeleteByCookie deletes every flow, in every table, whose cookie
	// matches Cookie under CookieMask.
	OpDeleteByCookie
	// OpGroupAdd adds Group, or replaces the buckets and properties of the
	// group with its ID (OVS's ADD_OR_MOD): flows using the group stay.
	OpGroupAdd
	// OpGroupModify replaces the group with Group's ID, which must exist
	// (OFPGMFC_UNKNOWN_GROUP otherwise); flows using it stay.
	OpGroupModify
	// OpGroupDelete deletes group GroupID (GroupIDAll: every group). OVS
	// also deletes every flow whose actions use a deleted group.
	OpGroupDelete
)

// FlowOp is one change sent to the switch: a flow_mod, or a group_mod
// (the OpGroup kinds).
type FlowOp struct {
	Kind OpKind
	Flow *Flow
	// Cookie and CookieMask select flows for OpDeleteByCookie.
	Cookie, CookieMask uint64
	// Group is the group of OpGroupAdd and OpGroupModify.
	Group *Group
	// GroupID is the group OpGroupDelete deletes.
	GroupID uint32
	// encoded, if set, is the op's message, already encoded (the cache's
	// ADD bytes, or a DELETE_STRICT derived from them).
	encoded []byte
	// encodedGroup, if set, is a group op's group_mod, already encoded
	// (the cache's).
	encodedGroup []byte
}

// Add, Modify and Delete build FlowOps.
func Add(f *Flow) FlowOp { return FlowOp{Kind: OpAdd, Flow: f} }

// Modify: see Add.
func Modify(f *Flow) FlowOp { return FlowOp{Kind: OpModify, Flow: f} }

// Delete: see Add.
func Delete(f *Flow) FlowOp { return FlowOp{Kind: OpDelete, Flow: f} }

// DeleteByCookie deletes all flows whose cookie matches cookie under mask.
func DeleteByCookie(cookie, mask uint64) FlowOp {
	return FlowOp{Kind: OpDeleteByCookie, Cookie: cookie, CookieMask: mask}
}

// AddGroup adds g, or replaces the group with g's ID (see OpGroupAdd).
func AddGroup(g *Group) FlowOp { return FlowOp{Kind: OpGroupAdd, Group: g} }

// ModifyGroup replaces the existing group with g's ID (see OpGroupModify).
func ModifyGroup(g *Group) FlowOp { return FlowOp{Kind: OpGroupModify, Group: g} }

// DeleteGroup deletes group id, GroupIDAll for all (see OpGroupDelete).
func DeleteGroup(id uint32) FlowOp { return FlowOp{Kind: OpGroupDelete, GroupID: id} }

func (op FlowOp) String() string {
	switch op.Kind {
	case OpAdd:
		return "flow_mod add"
	case OpModify:
		return "flow_mod modify_strict"
	case OpDelete:
		return "flow_mod delete_strict"
	case OpGroupAdd:
		return fmt.Sprintf("group_mod add_or_mod group_id=%d", op.groupID())
	case OpGroupModify:
		return fmt.Sprintf("group_mod modify group_id=%d", op.groupID())
	case OpGroupDelete:
		return fmt.Sprintf("group_mod delete group_id=%d", op.groupID())
	}
	return fmt.Sprintf("flow_mod delete cookie=%#x/%#x", op.Cookie, op.CookieMask)
}

func (op FlowOp) isGroup() bool {
	return op.Kind == OpGroupAdd || op.Kind == OpGroupModify || op.Kind == OpGroupDelete
}

func (op FlowOp) groupID() uint32 {
	switch {
	case op.Kind == OpGroupDelete:
		return op.GroupID
	case op.Group != nil:
		return op.Group.ID
	case len(op.encodedGroup) >= groupModFixedLen:
		return groupModID(op.encodedGroup)
	}
	return 0
}

// groupMsg returns a group op's group_mod.
func (op FlowOp) groupMsg() ([]byte, error) {
	if op.encodedGroup != nil {
		return op.encodedGroup, nil
	}
	switch op.Kind {
	case OpGroupDelete:
		return groupDelete(op.GroupID), nil
	case OpGroupAdd, OpGroupModify:
		if op.Group == nil {
			return nil, fmt.Errorf("%s: no group", op)
		}
		cmd := uint16(groupCmdAddOrMod)
		if op.Kind == OpGroupModify {
			cmd = openflow15.OFPGC_MODIFY
		}
		return op.Group.groupMod(cmd), nil
	}
	return nil, fmt.Errorf("%s is not a group op", op)
}

// appendTo appends the op's flow_mod or group_mod (xid 0) to buf.
func (op FlowOp) appendTo(buf []byte) ([]byte, error) {
	if op.isGroup() {
		m, err := op.groupMsg()
		return append(buf, m...), err
	}
	if op.encoded != nil {
		return append(buf, op.encoded...), nil
	}
	if op.Kind == OpDeleteByCookie {
		fm := openflow15.NewFlowMod()
		fm.Command = openflow15.FC_DELETE
		fm.TableId = openflow15.OFPTT_ALL
		fm.Cookie, fm.CookieMask = op.Cookie, op.CookieMask
		data, err := fm.MarshalBinary()
		return append(buf, data...), err
	}
	if op.Flow == nil {
		return nil, fmt.Errorf("%s: no flow", op)
	}
	cmd := uint8(openflow15.FC_ADD)
	switch op.Kind {
	case OpModify:
		cmd = openflow15.FC_MODIFY_STRICT
	case OpDelete:
		cmd = openflow15.FC_DELETE_STRICT
	}
	return op.Flow.appendFlowMod(buf, cmd)
}

const bundleFlags = openflow15.OFPBCT_ATOMIC | openflow15.OFPBCT_ORDERED

func bundleControl(bundleID uint32, typ uint16) []byte {
	b := make([]byte, 16)
	b[0], b[1] = openflow15.VERSION, openflow15.Type_BundleControl
	binary.BigEndian.PutUint16(b[2:], 16)
	binary.BigEndian.PutUint32(b[8:], bundleID)
	binary.BigEndian.PutUint16(b[12:], typ)
	binary.BigEndian.PutUint16(b[14:], bundleFlags)
	return b
}

// Apply applies ops atomically in one OpenFlow bundle: either every op
// takes effect or none does, and no packet sees a partial state. If OVS
// rejects an op, Apply returns that op's *OVSError (naming the flow).
//
// OVS validates each message as it is added to a bundle and may still
// commit the others, so Apply adds all messages, waits for a barrier, and
// commits only if none was rejected (otherwise it discards the bundle).
//
// Flows changed through Apply are not the flow cache's: a replay after a
// reconnect neither re-adds nor removes them (see Install and Sync).
func (s *Switch) Apply(ctx context.Context, ops []FlowOp) error {
	_, err := s.apply(ctx, ops, nil)
	return err
}

// outcome says what a failed bundle did to the switch.
type outcome uint8

const (
	// notApplied: the bundle was never committed, or OVS refused the
	// commit (an atomic bundle then changes nothing).
	notApplied outcome = iota
	// applied: OVS answered the commit without error.
	applied
	// unknown: the commit was sent but its answer never arrived (the
	// connection dropped, or RequestTimeout passed): OVS may have applied
	// the bundle or not. The flow cache treats the flows it added as in
	// doubt until the next replay (cache.go).
	unknown
)

// apply is Apply; keep, if set, receives each op's encoded message. It
// also reports whether the bundle took effect, for the flow cache.
func (s *Switch) apply(ctx context.Context, ops []FlowOp, keep func(i int, msg []byte)) (_ outcome, err error) {
	if len(ops) == 0 {
		return applied, nil
	}
	start := time.Now()
	defer func() { s.observe("bundle", len(ops), start, err) }()
	sn, err := s.newSender(len(ops) + 1)
	if err != nil {
		return notApplied, err
	}
	bundleID := sn.req.firstXid // unique while the request lives
	if err := sn.add("bundle open", nil, 0, appendRaw(bundleControl(bundleID, openflow15.OFPBCT_OPEN_REQUEST))); err != nil {
		sn.abort()
		return notApplied, err
	}
	for i, op := range ops {
		sn.nameGroup(op.Group)
		err := sn.add(op.String(), op.Flow, bundleID, func(buf []byte) ([]byte, error) {
			start := len(buf)
			buf, err := op.appendTo(buf)
			if err == nil && keep != nil {
				keep(i, append([]byte(nil), buf[start:]...))
			}
			return buf, err
		})
		if err != nil {
			sn.abort()
			return notApplied, fmt.Errorf("encoding %s: %w", op, err)
		}
	}
	// An open bundle that is never committed changes nothing: OVS discards
	// a connection's open bundles when it closes.
	req, err := sn.finish(ctx)
	if err != nil {
		return notApplied, err
	}
	if addErr := req.firstError(); addErr != nil {
		if _, err := s.roundTrip(ctx, "bundle discard", bundleControl(bundleID, openflow15.OFPBCT_DISCARD_REQUEST)); err != nil && !errors.Is(err, ErrNotConnected) {
			s.log.Error(err, "Discarding rejected bundle failed", "bundle", bundleID)
		}
		return notApplied, addErr
	}
	// A commit-time failure reports the failing inner message first (with
	// its own xid, which belongs to the add request), then the bundle's
	// OFPBFC_MSG_FAILED. Keep the add request listening until the commit is
	// answered so the culprit is named.
	s.mu.Lock()
	s.pending[req] = struct{}{}
	s.mu.Unlock()
	defer s.forget(req)
	// Once the commit is sent, its answer is waited for even if the
	// caller's context ends (bounded by RequestTimeout): a commit given up
	// on leaves the switch in an unknown state, which only a replay can
	// repair.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout)
	defer cancel()
	csn, err := s.newSender(1)
	if err != nil {
		return notApplied, err // nothing sent: the bundle dies with its connection
	}
	if err := csn.add("bundle commit", nil, 0, appendRaw(bundleControl(bundleID, openflow15.OFPBCT_COMMIT_REQUEST))); err != nil {
		csn.abort()
		return notApplied, err
	}
	commit, err := csn.finish(cctx)
	if err != nil {
		return unknown, err
	}
	if h := s.hooks.commitAnswered.Load(); h != nil {
		if err := (*h)(); err != nil {
			return unknown, err
		}
	}
	s.mu.Lock()
	inner := req.firstError()
	s.mu.Unlock()
	if inner != nil {
		return notApplied, inner
	}
	if err := commit.firstError(); err != nil {
		return notApplied, err
	}
	return applied, nil
}

// ApplyUnbundled sends ops as plain flow_mods followed by one barrier. It
// is not atomic; errors of all ops are joined. Useful where atomicity is not
// wanted and for comparison in benchmarks.
func (s *Switch) ApplyUnbundled(ctx context.Context, ops []FlowOp) (err error) {
	start := time.Now()
	defer func() { s.observe("flow_mods", len(ops), start, err) }()
	sn, err := s.newSender(len(ops))
	if err != nil {
		return err
	}
	for _, op := range ops {
		sn.nameGroup(op.Group)
		if err := sn.add(op.String(), op.Flow, 0, op.appendTo); err != nil {
			sn.abort()
			return fmt.Errorf("encoding %s: %w", op, err)
		}
	}
	req, err := sn.finish(ctx)
	if err != nil {
		return err
	}
	errs := make([]error, len(req.errs))
	for i, e := range req.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}
