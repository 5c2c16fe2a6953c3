package openflow

import (
	"errors"
	"fmt"

	"antrea.io/ofnet/ofctrl"
)

// ErrNotConnected is returned when a request needs the switch while the
// OpenFlow connection is down (the Switch keeps reconnecting meanwhile).
var ErrNotConnected = errors.New("openflow: not connected to ovs-vswitchd")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("openflow: switch connection closed")

// OpenFlow error types (ofp_error_type) that callers commonly test for.
const (
	ErrTypeBadRequest     uint16 = 1
	ErrTypeBadAction      uint16 = 2
	ErrTypeBadInstruction uint16 = 3
	ErrTypeBadMatch       uint16 = 4
	ErrTypeFlowModFailed  uint16 = 5
	ErrTypeGroupModFailed uint16 = 6
	ErrTypeBundleFailed   uint16 = 17
	ErrTypeExperimenter   uint16 = 0xffff
)

var errorTypeNames = map[uint16]string{
	0: "OFPET_HELLO_FAILED", 1: "OFPET_BAD_REQUEST", 2: "OFPET_BAD_ACTION",
	3: "OFPET_BAD_INSTRUCTION", 4: "OFPET_BAD_MATCH", 5: "OFPET_FLOW_MOD_FAILED",
	6: "OFPET_GROUP_MOD_FAILED", 7: "OFPET_PORT_MOD_FAILED", 8: "OFPET_TABLE_MOD_FAILED",
	9: "OFPET_QUEUE_OP_FAILED", 10: "OFPET_SWITCH_CONFIG_FAILED", 11: "OFPET_ROLE_REQUEST_FAILED",
	12: "OFPET_METER_MOD_FAILED", 13: "OFPET_TABLE_FEATURES_FAILED", 14: "OFPET_BAD_PROPERTY",
	15: "OFPET_ASYNC_CONFIG_FAILED", 16: "OFPET_FLOW_MONITOR_FAILED", 17: "OFPET_BUNDLE_FAILED",
	0xffff: "OFPET_EXPERIMENTER",
}

// OVSError is an error message ovs-vswitchd sent back for one of our
// requests: the OpenFlow error type and code, OVS's name for them, and the
// flow (when the request was a flow_mod) that caused it.
type OVSError struct {
	Type uint16
	Code uint16
	// Experimenter is the vendor ID of an experimenter (Nicira) error.
	Experimenter uint32
	// Flow is the rejected flow, if the failing message was one.
	Flow *Flow
	// Group is the rejected group, if the failing message was a
	// group_mod built from one (a cached or deleted group has none: Op
	// names its ID).
	Group *Group
	// Op says what was being done ("flow_mod add", "bundle commit", ...).
	Op string
}

// maxErrorGroupLen bounds the rendered group in an OVSError's message.
const maxErrorGroupLen = 400

// TypeName is the ofp_error_type name, e.g. OFPET_BAD_ACTION.
func (e *OVSError) TypeName() string {
	if n, ok := errorTypeNames[e.Type]; ok {
		return n
	}
	return fmt.Sprintf("OFPET_%d", e.Type)
}

// CodeName is OVS's name for the code, e.g. OFPBAC_BAD_OUT_PORT, as far as
// ofnet's error table knows it.
func (e *OVSError) CodeName() string {
	return ofctrl.GetErrorMessage(e.Type, e.Code, e.Experimenter)
}

func (e *OVSError) Error() string {
	msg := fmt.Sprintf("ovs-vswitchd rejected %s: %s/%s (type %d, code %d)", e.Op, e.TypeName(), e.CodeName(), e.Type, e.Code)
	if e.Flow != nil {
		msg += ": " + e.Flow.String()
	}
	if e.Group != nil {
		g := e.Group.String()
		// A group of hundreds of buckets would drown the message.
		if len(g) > maxErrorGroupLen {
			g = g[:maxErrorGroupLen] + fmt.Sprintf("... (%d buckets)", e.Group.NumBuckets())
		}
		msg += ": " + g
	}
	return msg
}

// Is makes errors.Is(err, &OVSError{Type: t, Code: c}) match by type and code.
func (e *OVSError) Is(target error) bool {
	t, ok := target.(*OVSError)
	return ok && t.Type == e.Type && t.Code == e.Code
}

// IsOVSError reports whether err (or an error it wraps) is an OVS error of
// type typ and code.
func IsOVSError(err error, typ, code uint16) bool {
	return errors.Is(err, &OVSError{Type: typ, Code: code})
}
