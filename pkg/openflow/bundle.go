package openflow

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

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
)

// FlowOp is one change sent to the switch.
type FlowOp struct {
	Kind OpKind
	Flow *Flow
	// Cookie and CookieMask select flows for OpDeleteByCookie.
	Cookie, CookieMask uint64
	// encoded, if set, is the op's message, already encoded (the cache's
	// ADD bytes, or a DELETE_STRICT derived from them).
	encoded []byte
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

func (op FlowOp) String() string {
	switch op.Kind {
	case OpAdd:
		return "flow_mod add"
	case OpModify:
		return "flow_mod modify_strict"
	case OpDelete:
		return "flow_mod delete_strict"
	}
	return fmt.Sprintf("flow_mod delete cookie=%#x/%#x", op.Cookie, op.CookieMask)
}

// encode returns the op's flow_mod bytes (xid 0).
func (op FlowOp) encode() ([]byte, error) {
	if op.encoded != nil {
		return op.encoded, nil
	}
	if op.Kind == OpDeleteByCookie {
		fm := openflow15.NewFlowMod()
		fm.Command = openflow15.FC_DELETE
		fm.TableId = openflow15.OFPTT_ALL
		fm.Cookie, fm.CookieMask = op.Cookie, op.CookieMask
		return fm.MarshalBinary()
	}
	if op.Flow == nil {
		return nil, fmt.Errorf("%s: no flow", op)
	}
	if op.Kind == OpAdd {
		return op.Flow.Encode()
	}
	cmd := uint8(openflow15.FC_MODIFY_STRICT)
	if op.Kind == OpDelete {
		cmd = openflow15.FC_DELETE_STRICT
	}
	fm, err := op.Flow.FlowMod(cmd)
	if err != nil {
		return nil, err
	}
	return fm.MarshalBinary()
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

// appendBundleAdd appends an OFPT_BUNDLE_ADD_MESSAGE carrying inner; the
// inner message gets the same xid so errors OVS reports for it at commit
// time name the same request.
func appendBundleAdd(buf []byte, xid, bundleID uint32, inner []byte) []byte {
	start := len(buf)
	buf = append(buf, openflow15.VERSION, openflow15.Type_BundleAddMessage, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint16(buf[start+2:], uint16(16+len(inner)))
	binary.BigEndian.PutUint32(buf[start+4:], xid)
	binary.BigEndian.PutUint32(buf[start+8:], bundleID)
	binary.BigEndian.PutUint16(buf[start+14:], bundleFlags)
	inStart := len(buf)
	buf = append(buf, inner...)
	binary.BigEndian.PutUint32(buf[inStart+4:], xid)
	return buf
}

// maxMessageLen is OpenFlow's 16-bit message length limit.
const maxMessageLen = 0xffff - 16

// Apply applies ops atomically in one OpenFlow bundle: either every op
// takes effect or none does, and no packet sees a partial state. If OVS
// rejects an op, Apply returns that op's *OVSError (naming the flow).
//
// OVS validates each message as it is added to a bundle and may still
// commit the others, so Apply adds all messages, waits for a barrier, and
// commits only if none was rejected (otherwise it discards the bundle).
func (s *Switch) Apply(ctx context.Context, ops []FlowOp) error {
	if len(ops) == 0 {
		return nil
	}
	bundleID := s.allocXid() // any unique number; xids are unique
	msgs := make([]outMsg, 0, len(ops)+1)
	msgs = append(msgs, outMsg{data: bundleControl(bundleID, openflow15.OFPBCT_OPEN_REQUEST), op: "bundle open"})
	for _, op := range ops {
		data, err := op.encode()
		if err != nil {
			return fmt.Errorf("encoding %s: %w", op, err)
		}
		if len(data) > maxMessageLen {
			return fmt.Errorf("%s: message of %d bytes exceeds OpenFlow's limit", op, len(data))
		}
		msgs = append(msgs, outMsg{data: data, flow: op.Flow, op: op.String(), bundleID: bundleID})
	}
	req, err := s.roundTrip(ctx, msgs)
	if err != nil {
		return err
	}
	if addErr := req.firstError(); addErr != nil {
		if _, err := s.roundTrip(ctx, []outMsg{{data: bundleControl(bundleID, openflow15.OFPBCT_DISCARD_REQUEST), op: "bundle discard"}}); err != nil && !errors.Is(err, ErrNotConnected) {
			s.log.Error(err, "Discarding rejected bundle failed", "bundle", bundleID)
		}
		return addErr
	}
	req, err = s.roundTrip(ctx, []outMsg{{data: bundleControl(bundleID, openflow15.OFPBCT_COMMIT_REQUEST), op: "bundle commit"}})
	if err != nil {
		return err
	}
	// A commit-time failure reports the failing message first, then the
	// bundle's own OFPBFC_MSG_FAILED; the former names the flow.
	for _, e := range req.errs {
		if e.Flow != nil {
			return e
		}
	}
	return req.firstError()
}

// ApplyUnbundled sends ops as plain flow_mods followed by one barrier. It
// is not atomic; errors of all ops are joined. Useful where atomicity is not
// wanted and for comparison in benchmarks.
func (s *Switch) ApplyUnbundled(ctx context.Context, ops []FlowOp) error {
	msgs := make([]outMsg, 0, len(ops))
	for _, op := range ops {
		data, err := op.encode()
		if err != nil {
			return fmt.Errorf("encoding %s: %w", op, err)
		}
		msgs = append(msgs, outMsg{data: data, flow: op.Flow, op: op.String()})
	}
	req, err := s.roundTrip(ctx, msgs)
	if err != nil {
		return err
	}
	errs := make([]error, len(req.errs))
	for i, e := range req.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}
