package ovsdb

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ovn-org/libovsdb/client"
	"github.com/ovn-org/libovsdb/model"
	libovsdb "github.com/ovn-org/libovsdb/ovsdb"

	"github.com/weirnet/weir/pkg/ovsdb/vswitchd"
)

// Interface types (Interface.type) this package creates.
const (
	// InterfaceTypeSystem is an existing network device (a veth, a NIC).
	InterfaceTypeSystem = ""
	// InterfaceTypeInternal is a port ovs-vswitchd creates as a network
	// device of its own (the gateway, a bridge's local port).
	InterfaceTypeInternal = "internal"
	// InterfaceTypeGeneve is a Geneve tunnel port.
	InterfaceTypeGeneve = "geneve"
)

// geneveOptions are the Interface.options of the flow-based Geneve port:
// the remote endpoint and VNI are set per packet by the OpenFlow pipeline.
var geneveOptions = map[string]string{
	"remote_ip": "flow",
	"key":       "flow",
	"csum":      "true",
}

// Limits of the ofport_request column (the schema's: OpenFlow ports
// 1..0xfeff) and of Linux interface names.
const (
	minOFPortRequest = 1
	maxOFPortRequest = 0xfeff
	maxIfNameLen     = 15
)

// ifNameRe matches names acceptable as Linux interface names (IFNAMSIZ-1
// characters, no '/', ':' or whitespace), and therefore as OVS port names.
var ifNameRe = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// PortOptions are the optional settings of a port.
type PortOptions struct {
	// OFPortRequest asks for this OpenFlow port number (ofport_request,
	// 1..65279). If ovs-vswitchd assigns another number (because the
	// requested one is taken), the call fails with an *OFPortError.
	// 0 lets ovs-vswitchd choose.
	OFPortRequest int
	// MAC sets the MAC address of an internal port (Interface.mac); the
	// call returns once it is in use. ovs-vswitchd ignores it for other
	// port types, so it is rejected for them.
	MAC string
	// MTU requests an MTU for the interface (Interface.mtu_request); 0
	// leaves it alone.
	MTU int
	// ExternalIDs are written to the Port row's external_ids, replacing
	// what was there (see the Key* constants).
	ExternalIDs map[string]string
	// KeepQdiscs gives the port a QoS of type linux-noop (created with the
	// port, in the same transaction, and deleted with it), so that
	// ovs-vswitchd leaves the interface's qdiscs alone. Without a QoS,
	// ovs-vswitchd deletes the root qdisc of an interface it adds (measured
	// on OVS 3.1: a tbf set up before the port was gone after it), which
	// would undo the shaping of pod bandwidth. An existing port without a
	// QoS gets one; a port's other QoS is left as it is.
	KeepQdiscs bool
}

// QoSTypeNoop is the QoS type with which ovs-vswitchd does not touch an
// interface's traffic control configuration.
const QoSTypeNoop = "linux-noop"

// keyQoSPort marks the QoS rows KeepQdiscs creates (external_ids), with the
// port's name: QoS rows are roots in the schema, so deleting the port does
// not delete its QoS, and deletePortOps deletes only the rows marked so.
const keyQoSPort = "weir-port"

// PortInfo describes a port of a bridge as read from the database.
type PortInfo struct {
	// Name is the port (and interface) name.
	Name string
	// UUID is the Port row's UUID, InterfaceUUID its Interface row's.
	UUID          string
	InterfaceUUID string
	// Type is the Interface type: InterfaceTypeSystem (""),
	// InterfaceTypeInternal, InterfaceTypeGeneve, ...
	Type string
	// OFPort is the OpenFlow port number: 0 until ovs-vswitchd assigned
	// one, -1 if it could not open the interface (see Error).
	OFPort int
	// MAC is the interface's MAC address in use (mac_in_use), "" if
	// unknown.
	MAC string
	// ExternalIDs are the Port row's external_ids.
	ExternalIDs map[string]string
	// Options are the Interface options (e.g. a tunnel's remote_ip).
	Options map[string]string
	// Error is Interface.error, "" when all is well.
	Error string
}

// portSpec is what ensurePort needs to create or reconcile a port.
type portSpec struct {
	bridge  string
	name    string
	ifType  string
	options map[string]string // Interface.options
	opts    PortOptions
}

// EnsureInternalPort creates an internal port (for example the gateway),
// or reconciles an existing port of that name on bridge, and returns its
// OpenFlow port number once ovs-vswitchd has assigned it.
//
// Creating, and replacing a port that must change type, ofport request or
// that ovs-vswitchd failed to open, is one transaction; other differences
// (MAC, MTU, external_ids) are updated in place. If ovs-vswitchd cannot bring
// the port up, the call removes the port it created and returns an
// *OFPortError. A port of that name on another bridge is an ErrPortConflict.
func (c *Client) EnsureInternalPort(ctx context.Context, bridge, name string, opts PortOptions) (int, error) {
	return c.ensurePort(ctx, portSpec{bridge: bridge, name: name, ifType: InterfaceTypeInternal, opts: opts})
}

// AddPort attaches the existing network device name (for example the host
// end of a pod's veth) to bridge and returns its OpenFlow port number once
// ovs-vswitchd has assigned it. It is idempotent: for a port of that name
// already on bridge it reconciles the options and returns the port number.
//
// If the device does not exist, ovs-vswitchd reports "could not open network
// device <name> (No such device)"; AddPort then removes the port again and
// returns an *OFPortError carrying that text.
func (c *Client) AddPort(ctx context.Context, bridge, name string, opts PortOptions) (int, error) {
	if opts.MAC != "" {
		return -1, fmt.Errorf("%w: port %s: MAC can only be set on internal ports; record it in ExternalIDs",
			ErrInvalidArgument, name)
	}
	return c.ensurePort(ctx, portSpec{bridge: bridge, name: name, ifType: InterfaceTypeSystem, opts: opts})
}

// EnsureGenevePort creates (or reconciles) a flow-based Geneve tunnel port:
// options remote_ip=flow, key=flow and csum=true, so the pipeline sets the
// remote endpoint and VNI per packet. It returns the OpenFlow port number.
func (c *Client) EnsureGenevePort(ctx context.Context, bridge, name string, opts PortOptions) (int, error) {
	if opts.MAC != "" {
		return -1, fmt.Errorf("%w: port %s: MAC can only be set on internal ports", ErrInvalidArgument, name)
	}
	return c.ensurePort(ctx, portSpec{bridge: bridge, name: name, ifType: InterfaceTypeGeneve, options: geneveOptions, opts: opts})
}

func (c *Client) ensurePort(ctx context.Context, spec portSpec) (int, error) {
	if err := spec.validate(); err != nil {
		return -1, err
	}
	what := fmt.Sprintf("ensure port %s on bridge %s", spec.name, spec.bridge)
	ofport := -1
	err := c.retry(ctx, what, func() error {
		ifaceUUID, created, err := c.ensurePortRows(ctx, what, spec)
		if err != nil {
			return err
		}
		ofport, err = c.waitOFPort(ctx, spec.bridge, spec.name, ifaceUUID, spec.opts.OFPortRequest, deref(spec.desiredInterface("").MAC))
		if err != nil && created {
			err = errors.Join(err, c.rollback(ctx, what, func(rctx context.Context) error {
				return c.deletePort(rctx, spec.bridge, spec.name)
			}))
		}
		return err
	})
	if err != nil {
		return -1, err
	}
	return ofport, nil
}

func (s portSpec) validate() error {
	if err := checkIfName("bridge", s.bridge); err != nil {
		return err
	}
	if err := checkIfName("port", s.name); err != nil {
		return err
	}
	o := s.opts
	if o.OFPortRequest != 0 && (o.OFPortRequest < minOFPortRequest || o.OFPortRequest > maxOFPortRequest) {
		return fmt.Errorf("%w: port %s: ofport request %d out of range %d..%d",
			ErrInvalidArgument, s.name, o.OFPortRequest, minOFPortRequest, maxOFPortRequest)
	}
	if o.MTU < 0 || o.MTU > 65535 {
		return fmt.Errorf("%w: port %s: MTU %d out of range", ErrInvalidArgument, s.name, o.MTU)
	}
	if o.MAC != "" {
		if _, err := parseUnicastMAC(o.MAC); err != nil {
			return fmt.Errorf("%w: port %s: %w", ErrInvalidArgument, s.name, err)
		}
	}
	if err := checkExternalIDs(o.ExternalIDs); err != nil {
		return fmt.Errorf("port %s: %w", s.name, err)
	}
	return nil
}

// desiredInterface returns the Interface row spec wants, with UUID uuid.
func (s portSpec) desiredInterface(uuid string) *vswitchd.Interface {
	iface := &vswitchd.Interface{UUID: uuid, Name: s.name, Type: s.ifType, Options: s.options}
	if s.opts.OFPortRequest != 0 {
		iface.OfportRequest = ptr(s.opts.OFPortRequest)
	}
	if s.opts.MAC != "" {
		mac, _ := parseUnicastMAC(s.opts.MAC) // validated
		iface.MAC = &mac
	}
	if s.opts.MTU != 0 {
		iface.MTURequest = ptr(s.opts.MTU)
	}
	return iface
}

// ensurePortRows runs one transaction that makes the Port and Interface rows
// of spec exist as wanted. It returns the Interface UUID to wait on and
// whether the rows were created (so a failure must remove them).
func (c *Client) ensurePortRows(ctx context.Context, what string, spec portSpec) (string, bool, error) {
	// Port before bridge: see checkPortBridge.
	cur, err := c.getPortRows(ctx, spec.name)
	if err != nil && !errors.Is(err, ErrPortNotFound) {
		return "", false, err
	}
	br, err := c.getBridge(ctx, spec.bridge)
	if err != nil {
		return "", false, err
	}
	var ops []libovsdb.Operation
	if cur != nil {
		onBridge, err := c.checkPortBridge(ctx, br, cur)
		if err != nil {
			return "", false, err
		}
		if !onBridge {
			return "", false, fmt.Errorf("%w: port %s belongs to another bridge than %s", ErrPortConflict, spec.name, spec.bridge)
		}
		if len(cur.ifaces) != 1 {
			return "", false, fmt.Errorf("%w: port %s on bridge %s has %d interfaces", ErrPortConflict, spec.name, spec.bridge, len(cur.ifaces))
		}
		iface := cur.ifaces[0]
		reason := mustReplace(iface, spec)
		if reason == "" {
			ops, err = c.updatePortOps(cur.port, iface, spec)
			if err != nil {
				return "", false, fmt.Errorf("ovsdb: %s: %w", what, err)
			}
			if _, err := c.transact(ctx, what, ops); err != nil {
				return "", false, err
			}
			if len(ops) > 0 {
				c.log.V(2).Info("Reconciled port", "bridge", spec.bridge, "port", spec.name, "operations", len(ops))
			}
			return iface.UUID, false, nil
		}
		// Delete and create in the same transaction.
		c.log.V(2).Info("Replacing port", "bridge", spec.bridge, "port", spec.name, "reason", reason)
		ops, err = c.deletePortOps(br.UUID, cur)
		if err != nil {
			return "", false, fmt.Errorf("ovsdb: %s: %w", what, err)
		}
	}

	iface := spec.desiredInterface("newiface")
	port := &vswitchd.Port{UUID: "newport", Name: spec.name, Interfaces: []string{iface.UUID}, ExternalIDs: spec.opts.ExternalIDs}
	rows := []model.Model{iface}
	if spec.opts.KeepQdiscs {
		q := noopQoS("newqos", spec.name)
		port.QOS = &q.UUID
		rows = append(rows, q)
	}
	create, err := c.db.Create(append(rows, port)...)
	if err != nil {
		return "", false, fmt.Errorf("ovsdb: %s: %w", what, err)
	}
	ifaceIdx := len(ops)
	ops = append(ops, create...)
	brRow := &vswitchd.Bridge{UUID: br.UUID}
	mut, err := c.db.Where(brRow).Mutate(brRow, model.Mutation{
		Field: &brRow.Ports, Mutator: libovsdb.MutateOperationInsert, Value: []string{port.UUID},
	})
	if err != nil {
		return "", false, fmt.Errorf("ovsdb: %s: %w", what, err)
	}
	ops = append(ops, mut...)
	res, err := c.transact(ctx, what, ops)
	if err != nil {
		return "", false, err
	}
	c.log.V(2).Info("Created port", "bridge", spec.bridge, "port", spec.name, "type", spec.ifType)
	return res[ifaceIdx].UUID.GoUUID, true, nil
}

// mustReplace returns why the existing interface cannot be reconciled in
// place with spec, or "" if it can.
func mustReplace(iface *vswitchd.Interface, spec portSpec) string {
	switch {
	case iface.Type != spec.ifType:
		return fmt.Sprintf("type %q, want %q", iface.Type, spec.ifType)
	case deref(iface.OfportRequest) != spec.opts.OFPortRequest:
		// ovs-vswitchd would renumber the port in place; recreating it
		// lets the wait below see the new number.
		return fmt.Sprintf("ofport request %d, want %d", deref(iface.OfportRequest), spec.opts.OFPortRequest)
	case deref(iface.Ofport) < 0 || deref(iface.Error) != "":
		// ovs-vswitchd retries a failed interface only when it is
		// reconfigured; recreating it is the dependable way.
		return fmt.Sprintf("ovs-vswitchd failed to open it: %q", deref(iface.Error))
	}
	return ""
}

// updatePortOps returns the operations reconciling an existing port in place
// (no operations if it is as wanted).
func (c *Client) updatePortOps(port *vswitchd.Port, iface *vswitchd.Interface, spec portSpec) ([]libovsdb.Operation, error) {
	var ops []libovsdb.Operation
	want := spec.desiredInterface(iface.UUID)
	var fields []any
	if !equalPtr(iface.MAC, want.MAC) {
		fields = append(fields, &want.MAC)
	}
	if !equalPtr(iface.MTURequest, want.MTURequest) {
		fields = append(fields, &want.MTURequest)
	}
	if !maps.Equal(iface.Options, want.Options) {
		fields = append(fields, &want.Options)
	}
	if len(fields) > 0 {
		op, err := c.db.Where(want).Update(want, fields...)
		if err != nil {
			return nil, err
		}
		ops = append(ops, op...)
	}
	if !maps.Equal(port.ExternalIDs, spec.opts.ExternalIDs) {
		p := &vswitchd.Port{UUID: port.UUID, ExternalIDs: spec.opts.ExternalIDs}
		op, err := c.db.Where(p).Update(p, &p.ExternalIDs)
		if err != nil {
			return nil, err
		}
		ops = append(ops, op...)
	}
	if spec.opts.KeepQdiscs && port.QOS == nil {
		q := noopQoS("newqos", spec.name)
		create, err := c.db.Create(q)
		if err != nil {
			return nil, err
		}
		ops = append(ops, create...)
		p := &vswitchd.Port{UUID: port.UUID, QOS: &q.UUID}
		op, err := c.db.Where(p).Update(p, &p.QOS)
		if err != nil {
			return nil, err
		}
		ops = append(ops, op...)
	}
	return ops, nil
}

// noopQoS is the QoS row of KeepQdiscs for port name, with UUID uuid.
func noopQoS(uuid, name string) *vswitchd.QoS {
	return &vswitchd.QoS{UUID: uuid, Type: QoSTypeNoop, ExternalIDs: map[string]string{keyQoSPort: name}}
}

// DeletePort removes port name from bridge: the Port and its Interface rows,
// in one transaction. A port (or bridge) that does not exist is not an
// error; neither is a port of that name on another bridge, which is left
// alone. It returns once the transaction committed; ovs-vswitchd detaches
// the port (and removes an internal port's network device) right after.
func (c *Client) DeletePort(ctx context.Context, bridge, name string) error {
	if err := checkIfName("bridge", bridge); err != nil {
		return err
	}
	if err := checkIfName("port", name); err != nil {
		return err
	}
	return c.retry(ctx, fmt.Sprintf("delete port %s from bridge %s", name, bridge), func() error {
		return c.deletePort(ctx, bridge, name)
	})
}

func (c *Client) deletePort(ctx context.Context, bridge, name string) error {
	what := fmt.Sprintf("delete port %s from bridge %s", name, bridge)
	cur, err := c.getPortRows(ctx, name)
	if errors.Is(err, ErrPortNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	br, err := c.getBridge(ctx, bridge)
	if errors.Is(err, ErrBridgeNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if onBridge, err := c.checkPortBridge(ctx, br, cur); err != nil || !onBridge {
		return err
	}
	ops, err := c.deletePortOps(br.UUID, cur)
	if err != nil {
		return fmt.Errorf("ovsdb: %s: %w", what, err)
	}
	if _, err := c.transact(ctx, what, ops); err != nil {
		return err
	}
	c.log.V(2).Info("Deleted port", "bridge", bridge, "port", name)
	return nil
}

// deletePortOps returns the operations removing cur from the bridge with
// UUID brUUID and deleting its rows.
func (c *Client) deletePortOps(brUUID string, cur *portRows) ([]libovsdb.Operation, error) {
	brRow := &vswitchd.Bridge{UUID: brUUID}
	ops, err := c.db.Where(brRow).Mutate(brRow, model.Mutation{
		Field: &brRow.Ports, Mutator: libovsdb.MutateOperationDelete, Value: []string{cur.port.UUID},
	})
	if err != nil {
		return nil, err
	}
	del, err := c.db.Where(&vswitchd.Port{UUID: cur.port.UUID}).Delete()
	if err != nil {
		return nil, err
	}
	ops = append(ops, del...)
	if q := cur.port.QOS; q != nil && c.ownQoS(*q, cur.port.Name) {
		del, err := c.db.Where(&vswitchd.QoS{UUID: *q}).Delete()
		if err != nil {
			return nil, err
		}
		ops = append(ops, del...)
	}
	for _, iface := range cur.ifaces {
		del, err := c.db.Where(&vswitchd.Interface{UUID: iface.UUID}).Delete()
		if err != nil {
			return nil, err
		}
		ops = append(ops, del...)
	}
	return ops, nil
}

// ownQoS reports whether QoS row uuid is the one KeepQdiscs created for
// port name.
func (c *Client) ownQoS(uuid, name string) bool {
	q := &vswitchd.QoS{UUID: uuid}
	if err := c.db.Get(context.Background(), q); err != nil {
		return false
	}
	return q.Type == QoSTypeNoop && q.ExternalIDs[keyQoSPort] == name
}

// SetPortExternalIDs replaces the external_ids of port name on bridge.
func (c *Client) SetPortExternalIDs(ctx context.Context, bridge, name string, ids map[string]string) error {
	if err := checkExternalIDs(ids); err != nil {
		return fmt.Errorf("port %s: %w", name, err)
	}
	what := fmt.Sprintf("set external_ids of port %s on bridge %s", name, bridge)
	return c.retry(ctx, what, func() error {
		cur, err := c.portOnBridge(ctx, bridge, name)
		if err != nil {
			return err
		}
		if maps.Equal(cur.port.ExternalIDs, ids) {
			return nil
		}
		p := &vswitchd.Port{UUID: cur.port.UUID, ExternalIDs: ids}
		ops, err := c.db.Where(p).Update(p, &p.ExternalIDs)
		if err != nil {
			return fmt.Errorf("ovsdb: %s: %w", what, err)
		}
		_, err = c.transact(ctx, what, ops)
		return err
	})
}

// GetPort returns port name of bridge, or an error wrapping ErrPortNotFound
// (or ErrBridgeNotFound).
func (c *Client) GetPort(ctx context.Context, bridge, name string) (PortInfo, error) {
	var info PortInfo
	err := c.retry(ctx, fmt.Sprintf("get port %s of bridge %s", name, bridge), func() error {
		cur, err := c.portOnBridge(ctx, bridge, name)
		if err != nil {
			return err
		}
		info = cur.info()
		return nil
	})
	return info, err
}

// ListPorts returns every port of bridge, its local port included, sorted by
// name.
func (c *Client) ListPorts(ctx context.Context, bridge string) ([]PortInfo, error) {
	if err := c.ready(ctx); err != nil {
		return nil, fmt.Errorf("ovsdb: list ports of bridge %s: %w", bridge, err)
	}
	br, err := c.getBridge(ctx, bridge)
	if err != nil {
		return nil, err
	}
	out := make([]PortInfo, 0, len(br.Ports))
	for _, uuid := range br.Ports {
		port := &vswitchd.Port{UUID: uuid}
		if err := c.db.Get(ctx, port); err != nil {
			if errors.Is(err, client.ErrNotFound) {
				continue // deleted concurrently
			}
			return nil, fmt.Errorf("ovsdb: list ports of bridge %s: %w", bridge, err)
		}
		rows, err := c.interfacesOf(ctx, port)
		if err != nil {
			return nil, fmt.Errorf("ovsdb: list ports of bridge %s: %w", bridge, err)
		}
		out = append(out, rows.info())
	}
	slices.SortFunc(out, func(a, b PortInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// portRows are a Port row and its Interface rows from the replica.
type portRows struct {
	port   *vswitchd.Port
	ifaces []*vswitchd.Interface
}

func (r *portRows) info() PortInfo {
	p := PortInfo{Name: r.port.Name, UUID: r.port.UUID, ExternalIDs: maps.Clone(r.port.ExternalIDs)}
	if len(r.ifaces) > 0 {
		iface := r.ifaces[0]
		p.InterfaceUUID = iface.UUID
		p.Type = iface.Type
		p.OFPort = deref(iface.Ofport)
		p.MAC = deref(iface.MACInUse)
		p.Options = maps.Clone(iface.Options)
		p.Error = deref(iface.Error)
	}
	return p
}

// getPortRows returns the port named name and its interfaces, or an error
// wrapping ErrPortNotFound.
func (c *Client) getPortRows(ctx context.Context, name string) (*portRows, error) {
	port := &vswitchd.Port{Name: name}
	if err := c.db.Get(ctx, port); err != nil {
		if errors.Is(err, client.ErrNotFound) {
			return nil, fmt.Errorf("%w: %s", ErrPortNotFound, name)
		}
		return nil, fmt.Errorf("ovsdb: read port %s: %w", name, err)
	}
	return c.interfacesOf(ctx, port)
}

func (c *Client) interfacesOf(ctx context.Context, port *vswitchd.Port) (*portRows, error) {
	rows := &portRows{port: port}
	for _, uuid := range port.Interfaces {
		iface := &vswitchd.Interface{UUID: uuid}
		if err := c.db.Get(ctx, iface); err != nil {
			if errors.Is(err, client.ErrNotFound) {
				continue
			}
			return nil, fmt.Errorf("ovsdb: read interface of port %s: %w", port.Name, err)
		}
		rows.ifaces = append(rows.ifaces, iface)
	}
	return rows, nil
}

// portOnBridge returns port name if it is on bridge, or an error wrapping
// ErrBridgeNotFound or ErrPortNotFound.
func (c *Client) portOnBridge(ctx context.Context, bridge, name string) (*portRows, error) {
	cur, err := c.getPortRows(ctx, name)
	if errors.Is(err, ErrPortNotFound) {
		// Say which is missing, the port or the bridge.
		if _, berr := c.getBridge(ctx, bridge); berr != nil {
			return nil, berr
		}
	}
	if err != nil {
		return nil, err
	}
	br, err := c.getBridge(ctx, bridge)
	if err != nil {
		return nil, err
	}
	onBridge, err := c.checkPortBridge(ctx, br, cur)
	if err != nil {
		return nil, err
	}
	if !onBridge {
		return nil, fmt.Errorf("%w: %s on bridge %s", ErrPortNotFound, name, bridge)
	}
	return cur, nil
}

// checkPortBridge reports whether the port cur is on br, both read from the
// replica, port first. libovsdb applies an update table by table with no
// snapshot for readers, so a bridge read just before an update that adds
// the port may not list it yet. A Port row always belongs to a bridge (OVSDB
// garbage collects unreferenced ports), so a port that no bridge, or the
// bridge itself when read again, claims is such a torn read: checkPortBridge
// then returns errTornRead, which makes the caller retry.
func (c *Client) checkPortBridge(ctx context.Context, br *vswitchd.Bridge, cur *portRows) (bool, error) {
	if slices.Contains(br.Ports, cur.port.UUID) {
		return true, nil
	}
	var bridges []vswitchd.Bridge
	if err := c.db.List(ctx, &bridges); err != nil {
		return false, fmt.Errorf("ovsdb: list bridges: %w", err)
	}
	for _, other := range bridges {
		if slices.Contains(other.Ports, cur.port.UUID) {
			if other.UUID == br.UUID {
				return false, errTornRead
			}
			return false, nil
		}
	}
	return false, errTornRead
}

// waitOFPort waits until ovs-vswitchd has assigned an OpenFlow port to the
// Interface row ifaceUUID (port name of bridge) and returns it. want, if not
// 0, is the number that must be assigned; wantMAC, if not "", the MAC address
// that must be in use (ovs-vswitchd applies Interface.mac after assigning the
// ofport, and reports it in a later transaction). It fails with an
// *OFPortError when ovs-vswitchd reports an error, assigns another number, or
// is not done within the ofport timeout.
func (c *Client) waitOFPort(ctx context.Context, bridge, name, ifaceUUID string, want int, wantMAC string) (int, error) {
	began := time.Now()
	wctx, cancel := context.WithTimeout(ctx, c.cfg.ofportTimeout)
	defer cancel()
	var last vswitchd.Interface
	var ofport int
	err := c.waitFor(wctx, func() (bool, error) {
		iface := &vswitchd.Interface{UUID: ifaceUUID}
		if err := c.db.Get(wctx, iface); err != nil {
			if errors.Is(err, client.ErrNotFound) {
				return false, nil // not in the replica yet, or replaced
			}
			return false, fmt.Errorf("ovsdb: read interface %s: %w", name, err)
		}
		last = *iface
		ofport = deref(iface.Ofport)
		switch {
		case ofport > 0 && want != 0 && ofport != want:
			return false, &OFPortError{Bridge: bridge, Port: name, OFPort: ofport, Requested: want,
				Reason: fmt.Sprintf("ovs-vswitchd assigned ofport %d instead of the requested %d (is it in use?)", ofport, want)}
		case ofport > 0:
			return wantMAC == "" || deref(iface.MACInUse) == wantMAC, nil
		case ofport < 0 || deref(iface.Error) != "":
			return false, &OFPortError{Bridge: bridge, Port: name, OFPort: ofport, Requested: want, Reason: deref(iface.Error)}
		}
		return false, nil
	})
	if err == nil {
		c.log.V(3).Info("Port is up", "bridge", bridge, "port", name, "ofport", ofport, "duration", time.Since(began))
		return ofport, nil
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		// Our own timeout, not the caller's.
		reason := fmt.Sprintf("%v after %v", ErrOFPortTimeout, c.cfg.ofportTimeout)
		if deref(last.Ofport) > 0 {
			reason = fmt.Sprintf("MAC %s not in use after %v (in use: %q)", wantMAC, c.cfg.ofportTimeout, deref(last.MACInUse))
		}
		return -1, &OFPortError{Bridge: bridge, Port: name, OFPort: deref(last.Ofport), Requested: want,
			Reason: reason, err: ErrOFPortTimeout}
	}
	if ctx.Err() != nil {
		return -1, fmt.Errorf("ovsdb: waiting for the ofport of port %s on bridge %s: %w", name, bridge, ctx.Err())
	}
	return -1, err
}

// checkIfName validates a bridge or port name: a Linux interface name.
func checkIfName(kind, name string) error {
	if name == "" || len(name) > maxIfNameLen || !ifNameRe.MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("%w: %s name %q: want 1-%d letters, digits, '_', '.' or '-'", ErrInvalidArgument, kind, name, maxIfNameLen)
	}
	return nil
}

// checkExternalIDs rejects empty keys.
func checkExternalIDs(ids map[string]string) error {
	for k := range ids {
		if k == "" {
			return fmt.Errorf("%w: external_ids: empty key", ErrInvalidArgument)
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// deref returns *p, or the zero value for nil.
func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func equalPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
