package ovsdb

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	libovsdb "github.com/ovn-org/libovsdb/ovsdb"
)

var (
	// ErrClosed is returned by every call made after Close.
	ErrClosed = errors.New("ovsdb: client closed")

	// ErrNotConnected is returned when a call's context ended while the
	// Client was waiting for ovsdb-server to come back, or when the
	// connection dropped in the middle of a transaction too often. The
	// Client keeps reconnecting meanwhile.
	ErrNotConnected = errors.New("ovsdb: not connected to ovsdb-server")

	// ErrInvalidArgument is returned, wrapped with the details, for
	// arguments that can never work (bad names, out-of-range ofports,
	// malformed MAC addresses, ...). Nothing is written to the database.
	ErrInvalidArgument = errors.New("ovsdb: invalid argument")

	// ErrBridgeNotFound is returned, wrapped with the bridge name, by calls
	// that need an existing bridge.
	ErrBridgeNotFound = errors.New("ovsdb: bridge not found")

	// ErrPortNotFound is returned, wrapped with the port name, by calls that
	// need an existing port.
	ErrPortNotFound = errors.New("ovsdb: port not found")

	// ErrPortConflict is returned, wrapped with the details, when a port of
	// the requested name exists but cannot be taken over: it belongs to
	// another bridge or has several interfaces (a bond).
	ErrPortConflict = errors.New("ovsdb: port name already in use")

	// ErrOFPortTimeout is returned, wrapped in an OFPortError, when
	// ovs-vswitchd neither assigned an OpenFlow port to a new interface nor
	// reported an error in time (typically because ovs-vswitchd is not
	// running).
	ErrOFPortTimeout = errors.New("timed out waiting for ovs-vswitchd to assign an ofport")

	// ErrVersionUnknown is returned by OVSVersion when Open_vSwitch.ovs_version
	// is not set (it is written by the startup script ovs-ctl, not by
	// ovs-vswitchd itself).
	ErrVersionUnknown = errors.New("ovsdb: Open_vSwitch.ovs_version is not set")
)

// OFPortError reports that ovs-vswitchd did not bring an interface up as an
// OpenFlow port: it wrote an error into Interface.error (and ofport -1), it
// assigned a different port number than the one requested, or it did not
// answer in time (then Unwrap returns ErrOFPortTimeout). The rows the failed
// call created have been removed when this error is returned.
type OFPortError struct {
	// Bridge and Port name the port that failed.
	Bridge string
	Port   string
	// OFPort is the ofport ovs-vswitchd wrote: -1 when it failed to open the
	// interface, the assigned number when it differs from Requested, 0 when
	// it wrote nothing.
	OFPort int
	// Requested is the ofport_request that was set, 0 if none.
	Requested int
	// Reason is Interface.error as written by ovs-vswitchd, for example
	// "could not open network device foo (No such device)", or a
	// description of the mismatch.
	Reason string

	err error // ErrOFPortTimeout or nil
}

func (e *OFPortError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ovsdb: port %s on bridge %s got no OpenFlow port", e.Port, e.Bridge)
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(e.Reason)
	}
	return b.String()
}

// Unwrap returns ErrOFPortTimeout for a timeout, nil otherwise.
func (e *OFPortError) Unwrap() error { return e.err }

// transactionError turns the per-operation errors of a committed-but-failed
// transaction into one error. Each libovsdb error (for example
// *libovsdb.ConstraintViolation) stays reachable with errors.As.
func transactionError(res []libovsdb.OperationResult, ops []libovsdb.Operation) error {
	opErrs, err := libovsdb.CheckOperationResults(res, ops)
	if err == nil {
		return nil
	}
	if len(opErrs) == 0 {
		// Commit-level error (e.g. a unique index violated by the final
		// state), or a malformed reply.
		return err
	}
	errs := make([]error, 0, len(opErrs))
	for _, e := range opErrs {
		if op := e.Operation(); op != nil {
			errs = append(errs, fmt.Errorf("%s on table %s: %w", op.Op, op.Table, e))
		} else {
			errs = append(errs, e)
		}
	}
	return errors.Join(errs...)
}

// errTornRead reports rows of the replica that contradict each other, as
// happens when a read spans an update being applied: libovsdb updates the
// tables of one notification one after the other, without a snapshot for
// readers. Reading again after the update resolves it.
var errTornRead = errors.New("ovsdb: replica changed while being read")

// isRetriable reports whether a failed change should be rebuilt from the
// replica and retried: the connection dropped (the transaction may or may
// not have committed; every change of this package is idempotent), a
// concurrent writer created a row with the same unique name first, or the
// replica was read in the middle of an update.
// connectionLost reports whether err says the connection to ovsdb-server
// broke under a call.
func connectionLost(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

func isRetriable(err error) bool {
	var cv *libovsdb.ConstraintViolation
	return errors.Is(err, ErrNotConnected) || errors.Is(err, errTornRead) || errors.As(err, &cv)
}
