package ovsdb

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strings"

	"github.com/ovn-org/libovsdb/client"
	"github.com/ovn-org/libovsdb/model"
	libovsdb "github.com/ovn-org/libovsdb/ovsdb"

	"github.com/weirnet/weir/pkg/ovsdb/vswitchd"
)

// Datapath types (Bridge.datapath_type).
const (
	// DatapathSystem is the kernel datapath, the production default.
	DatapathSystem = "system"
	// DatapathNetdev is the userspace datapath (tests, no kernel module).
	DatapathNetdev = "netdev"
)

// Fail modes (Bridge.fail_mode): what ovs-vswitchd does without a
// controller connection.
const (
	// FailModeSecure forwards only by the installed flows (the default):
	// Weir's integration bridge.
	FailModeSecure = "secure"
	// FailModeStandalone acts as a learning switch when no controller is
	// connected, which is always for a bridge nobody programs (br-phy,
	// the underlay bridge of the userspace datapath).
	FailModeStandalone = "standalone"
)

// OpenFlow versions enabled on every bridge EnsureBridge manages.
var bridgeProtocols = []vswitchd.BridgeProtocols{
	vswitchd.BridgeProtocolsOpenflow10,
	vswitchd.BridgeProtocolsOpenflow13,
	vswitchd.BridgeProtocolsOpenflow14,
	vswitchd.BridgeProtocolsOpenflow15,
}

// Bridge.other_config keys EnsureBridge manages.
const (
	otherConfigDatapathID = "datapath-id"
	otherConfigHWAddr     = "hwaddr"
)

// ofppLocal is the OpenFlow port number of a bridge's local port.
const ofppLocal = 0xfffe

// maxTableID is the highest OpenFlow table number (255 means "all tables").
const maxTableID = 254

// BridgeConfig is the desired state of a bridge.
type BridgeConfig struct {
	// Name is the bridge name, also the name of its local (internal) port:
	// at most 15 characters.
	Name string
	// DatapathType is DatapathSystem (the default when empty) or
	// DatapathNetdev.
	DatapathType string
	// FailMode is FailModeSecure (the default when empty) or
	// FailModeStandalone.
	FailMode string
	// DatapathID, if set, is the OpenFlow datapath ID as 16 hex digits
	// (other_config:datapath-id). When empty ovs-vswitchd derives one.
	DatapathID string
	// HWAddr, if set, is the MAC address of the bridge's local port
	// (other_config:hwaddr).
	HWAddr string
	// ExternalIDs are set on the Bridge row. Keys not listed here are left
	// alone on an existing bridge.
	ExternalIDs map[string]string
}

var (
	hex16Re     = regexp.MustCompile(`^[0-9a-fA-F]{16}$`)
	tableNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)
)

// normalize validates cfg and returns it with defaults applied and
// DatapathID and HWAddr in canonical lower-case form.
func (cfg BridgeConfig) normalize() (BridgeConfig, error) {
	if err := checkIfName("bridge", cfg.Name); err != nil {
		return cfg, err
	}
	switch cfg.DatapathType {
	case "":
		cfg.DatapathType = DatapathSystem
	case DatapathSystem, DatapathNetdev:
	default:
		return cfg, fmt.Errorf("%w: bridge %s: datapath type %q: want %q or %q",
			ErrInvalidArgument, cfg.Name, cfg.DatapathType, DatapathSystem, DatapathNetdev)
	}
	switch cfg.FailMode {
	case "":
		cfg.FailMode = FailModeSecure
	case FailModeSecure, FailModeStandalone:
	default:
		return cfg, fmt.Errorf("%w: bridge %s: fail mode %q: want %q or %q",
			ErrInvalidArgument, cfg.Name, cfg.FailMode, FailModeSecure, FailModeStandalone)
	}
	if cfg.DatapathID != "" {
		if !hex16Re.MatchString(cfg.DatapathID) {
			return cfg, fmt.Errorf("%w: bridge %s: datapath ID %q: want 16 hex digits",
				ErrInvalidArgument, cfg.Name, cfg.DatapathID)
		}
		cfg.DatapathID = strings.ToLower(cfg.DatapathID)
	}
	if cfg.HWAddr != "" {
		mac, err := parseUnicastMAC(cfg.HWAddr)
		if err != nil {
			return cfg, fmt.Errorf("%w: bridge %s: hwaddr: %w", ErrInvalidArgument, cfg.Name, err)
		}
		cfg.HWAddr = mac
	}
	if err := checkExternalIDs(cfg.ExternalIDs); err != nil {
		return cfg, fmt.Errorf("bridge %s: %w", cfg.Name, err)
	}
	return cfg, nil
}

// EnsureBridge creates the bridge described by cfg, or reconciles an
// existing bridge of that name with it, and returns the Bridge row's UUID.
// The bridge gets the fail mode asked for (secure by default) and OpenFlow
// 1.0 and 1.3-1.5;
// other_config:datapath-id and other_config:hwaddr are set when given and
// removed when not; the ExternalIDs given are set, others kept.
//
// A new bridge is created together with its local port in one transaction,
// and EnsureBridge waits until ovs-vswitchd has brought the local port up
// (ofport LOCAL). If ovs-vswitchd reports an error instead, or does not do so
// within the ofport timeout, the bridge is removed again and an *OFPortError
// is returned. (Without the openvswitch kernel module a system-datapath
// bridge never comes up and ovs-vswitchd writes no error: that is the
// timeout case.) An existing bridge is reconciled without waiting.
func (c *Client) EnsureBridge(ctx context.Context, cfg BridgeConfig) (string, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return "", err
	}
	what := "ensure bridge " + cfg.Name
	var uuid string
	err = c.retry(ctx, what, func() error {
		var newIface string
		var err error
		uuid, newIface, err = c.ensureBridge(ctx, what, cfg)
		if err != nil {
			return err
		}
		if newIface == "" { // reconciled, not created
			return nil
		}
		if _, err := c.waitOFPort(ctx, cfg.Name, cfg.Name, newIface, ofppLocal, ""); err != nil {
			return errors.Join(err, c.rollback(ctx, what, func(rctx context.Context) error {
				return c.deleteBridge(rctx, cfg.Name)
			}))
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return uuid, nil
}

// ensureBridge runs one attempt of EnsureBridge's transaction.
// For a new bridge it also returns the UUID of the local port's Interface row,
// "" otherwise.
func (c *Client) ensureBridge(ctx context.Context, what string, cfg BridgeConfig) (uuid, newIface string, err error) {
	root, err := c.rootUUID(ctx)
	if err != nil {
		return "", "", err
	}
	ovsRow := &vswitchd.OpenvSwitch{UUID: root}
	if err := c.db.Get(ctx, ovsRow); err != nil {
		return "", "", fmt.Errorf("ovsdb: %s: read Open_vSwitch: %w", what, err)
	}
	failMode := vswitchd.BridgeFailMode(cfg.FailMode)

	br, err := c.getBridge(ctx, cfg.Name)
	if errors.Is(err, ErrBridgeNotFound) {
		iface := &vswitchd.Interface{UUID: "newiface", Name: cfg.Name, Type: "internal"}
		port := &vswitchd.Port{UUID: "newport", Name: cfg.Name, Interfaces: []string{iface.UUID}}
		newBr := &vswitchd.Bridge{
			UUID:         "newbridge",
			Name:         cfg.Name,
			DatapathType: cfg.DatapathType,
			FailMode:     &failMode,
			Protocols:    bridgeProtocols,
			OtherConfig:  managedOtherConfig(cfg),
			ExternalIDs:  cfg.ExternalIDs,
			Ports:        []string{port.UUID},
		}
		ops, err := c.db.Create(iface, port, newBr)
		if err != nil {
			return "", "", fmt.Errorf("ovsdb: %s: %w", what, err)
		}
		mut, err := c.db.Where(ovsRow).Mutate(ovsRow, model.Mutation{
			Field: &ovsRow.Bridges, Mutator: libovsdb.MutateOperationInsert, Value: []string{newBr.UUID},
		})
		if err != nil {
			return "", "", fmt.Errorf("ovsdb: %s: %w", what, err)
		}
		ops = append(ops, mut...)
		res, err := c.transact(ctx, what, ops)
		if err != nil {
			return "", "", err
		}
		c.log.V(2).Info("Created bridge", "bridge", cfg.Name, "datapathType", cfg.DatapathType)
		return res[2].UUID.GoUUID, res[0].UUID.GoUUID, nil
	}
	if err != nil {
		return "", "", err
	}

	// Reconcile the existing bridge.
	var ops []libovsdb.Operation
	var fields []any
	upd := &vswitchd.Bridge{UUID: br.UUID}
	if br.DatapathType != cfg.DatapathType {
		upd.DatapathType = cfg.DatapathType
		fields = append(fields, &upd.DatapathType)
	}
	if br.FailMode == nil || *br.FailMode != failMode {
		upd.FailMode = &failMode
		fields = append(fields, &upd.FailMode)
	}
	if !sameSet(br.Protocols, bridgeProtocols) {
		upd.Protocols = bridgeProtocols
		fields = append(fields, &upd.Protocols)
	}
	if len(fields) > 0 {
		op, err := c.db.Where(upd).Update(upd, fields...)
		if err != nil {
			return "", "", fmt.Errorf("ovsdb: %s: %w", what, err)
		}
		ops = append(ops, op...)
	}
	// Map columns other writers may share are changed with mutations
	// (atomic on the server) rather than by rewriting the column read
	// from the replica. The OVSDB insert mutator never overwrites a key,
	// hence delete-then-insert.
	mutBr := &vswitchd.Bridge{UUID: br.UUID}
	var muts []model.Mutation
	if managed := managedOtherConfig(cfg); !maps.Equal(managed, pick(br.OtherConfig, otherConfigDatapathID, otherConfigHWAddr)) {
		muts = append(muts, model.Mutation{Field: &mutBr.OtherConfig, Mutator: libovsdb.MutateOperationDelete,
			Value: []string{otherConfigDatapathID, otherConfigHWAddr}})
		if len(managed) > 0 {
			muts = append(muts, model.Mutation{Field: &mutBr.OtherConfig, Mutator: libovsdb.MutateOperationInsert, Value: managed})
		}
	}
	if missing := missingKeys(br.ExternalIDs, cfg.ExternalIDs); len(missing) > 0 {
		muts = append(muts,
			model.Mutation{Field: &mutBr.ExternalIDs, Mutator: libovsdb.MutateOperationDelete, Value: slices.Sorted(maps.Keys(missing))},
			model.Mutation{Field: &mutBr.ExternalIDs, Mutator: libovsdb.MutateOperationInsert, Value: missing},
		)
	}
	if len(muts) > 0 {
		op, err := c.db.Where(mutBr).Mutate(mutBr, muts...)
		if err != nil {
			return "", "", fmt.Errorf("ovsdb: %s: %w", what, err)
		}
		ops = append(ops, op...)
	}
	if !slices.Contains(ovsRow.Bridges, br.UUID) {
		op, err := c.db.Where(ovsRow).Mutate(ovsRow, model.Mutation{
			Field: &ovsRow.Bridges, Mutator: libovsdb.MutateOperationInsert, Value: []string{br.UUID},
		})
		if err != nil {
			return "", "", fmt.Errorf("ovsdb: %s: %w", what, err)
		}
		ops = append(ops, op...)
	}
	if len(ops) > 0 {
		if _, err := c.transact(ctx, what, ops); err != nil {
			return "", "", err
		}
		c.log.V(2).Info("Reconciled bridge", "bridge", cfg.Name, "operations", len(ops))
	}
	return br.UUID, "", nil
}

// managedOtherConfig returns the other_config entries EnsureBridge manages,
// as cfg wants them.
func managedOtherConfig(cfg BridgeConfig) map[string]string {
	want := map[string]string{}
	if cfg.DatapathID != "" {
		want[otherConfigDatapathID] = cfg.DatapathID
	}
	if cfg.HWAddr != "" {
		want[otherConfigHWAddr] = cfg.HWAddr
	}
	return want
}

// pick returns the entries of m with the given keys.
func pick(m map[string]string, keys ...string) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

// missingKeys returns the entries of want that current lacks or holds with
// another value.
func missingKeys(current, want map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range want {
		if cv, ok := current[k]; !ok || cv != v {
			out[k] = v
		}
	}
	return out
}

// DeleteBridge deletes the bridge and, with it, its ports, interfaces and
// flow table names. A bridge that does not exist is not an error.
func (c *Client) DeleteBridge(ctx context.Context, name string) error {
	if err := checkIfName("bridge", name); err != nil {
		return err
	}
	return c.retry(ctx, "delete bridge "+name, func() error {
		return c.deleteBridge(ctx, name)
	})
}

func (c *Client) deleteBridge(ctx context.Context, name string) error {
	what := "delete bridge " + name
	br, err := c.getBridge(ctx, name)
	if errors.Is(err, ErrBridgeNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	root, err := c.rootUUID(ctx)
	if err != nil {
		return err
	}
	ovsRow := &vswitchd.OpenvSwitch{UUID: root}
	ops, err := c.db.Where(ovsRow).Mutate(ovsRow, model.Mutation{
		Field: &ovsRow.Bridges, Mutator: libovsdb.MutateOperationDelete, Value: []string{br.UUID},
	})
	if err != nil {
		return fmt.Errorf("ovsdb: %s: %w", what, err)
	}
	// Port, Interface and Flow_Table rows are garbage collected with the
	// last reference to them.
	del, err := c.db.Where(&vswitchd.Bridge{UUID: br.UUID}).Delete()
	if err != nil {
		return fmt.Errorf("ovsdb: %s: %w", what, err)
	}
	if _, err := c.transact(ctx, what, append(ops, del...)); err != nil {
		return err
	}
	c.log.V(2).Info("Deleted bridge", "bridge", name)
	return nil
}

// SetFlowTableNames names the bridge's OpenFlow tables: afterwards
// Bridge.flow_tables maps exactly the table numbers in names to Flow_Table
// rows carrying those names, so that for example
// `ovs-ofctl -O OpenFlow15 --names dump-flows` prints table=Classifier. An
// empty map removes all names. Rows already carrying the right name are
// kept; nothing is written when the names are already in place.
//
// Names must start with a letter or '_' and contain only letters, digits,
// '_', '.' and '-' (ovs-ofctl could not parse them back otherwise), and must
// be unique; table numbers go up to 254.
func (c *Client) SetFlowTableNames(ctx context.Context, bridge string, names map[uint8]string) error {
	if err := checkFlowTableNames(names); err != nil {
		return fmt.Errorf("bridge %s: %w", bridge, err)
	}
	what := "set flow table names of bridge " + bridge
	return c.retry(ctx, what, func() error {
		br, err := c.getBridge(ctx, bridge)
		if err != nil {
			return err
		}
		want := make(map[int]string, len(names))
		var rows []model.Model
		changed := len(br.FlowTables) != len(names)
		for id, name := range names {
			if uuid, ok := br.FlowTables[int(id)]; ok {
				ft := &vswitchd.FlowTable{UUID: uuid}
				if err := c.db.Get(ctx, ft); err == nil && ft.Name != nil && *ft.Name == name {
					want[int(id)] = uuid
					continue
				}
			}
			changed = true
			n := name
			ft := &vswitchd.FlowTable{UUID: fmt.Sprintf("table%d", id), Name: &n}
			rows = append(rows, ft)
			want[int(id)] = ft.UUID
		}
		if !changed {
			return nil
		}
		ops, err := c.db.Create(rows...)
		if err != nil {
			return fmt.Errorf("ovsdb: %s: %w", what, err)
		}
		upd := &vswitchd.Bridge{UUID: br.UUID, FlowTables: want}
		op, err := c.db.Where(upd).Update(upd, &upd.FlowTables)
		if err != nil {
			return fmt.Errorf("ovsdb: %s: %w", what, err)
		}
		// Replaced Flow_Table rows are garbage collected.
		if _, err := c.transact(ctx, what, append(ops, op...)); err != nil {
			return err
		}
		c.log.V(2).Info("Set flow table names", "bridge", bridge, "tables", len(names))
		return nil
	})
}

func checkFlowTableNames(names map[uint8]string) error {
	seen := make(map[string]uint8, len(names))
	for id, name := range names {
		if id > maxTableID {
			return fmt.Errorf("%w: flow table %d: table numbers go up to %d", ErrInvalidArgument, id, maxTableID)
		}
		if !tableNameRe.MatchString(name) {
			return fmt.Errorf("%w: flow table %d: name %q: want a letter or '_' followed by letters, digits, '_', '.' or '-'",
				ErrInvalidArgument, id, name)
		}
		if other, dup := seen[name]; dup {
			return fmt.Errorf("%w: flow tables %d and %d are both named %q", ErrInvalidArgument, min(id, other), max(id, other), name)
		}
		seen[name] = id
	}
	return nil
}

// getBridge returns the bridge named name from the replica.
func (c *Client) getBridge(ctx context.Context, name string) (*vswitchd.Bridge, error) {
	br := &vswitchd.Bridge{Name: name}
	if err := c.db.Get(ctx, br); err != nil {
		if errors.Is(err, client.ErrNotFound) {
			return nil, fmt.Errorf("%w: %s", ErrBridgeNotFound, name)
		}
		return nil, fmt.Errorf("ovsdb: read bridge %s: %w", name, err)
	}
	return br, nil
}

// parseUnicastMAC parses a 6-byte unicast MAC address (ovs-vswitchd refuses
// multicast and all-zero addresses) and returns it in canonical lower-case
// colon form, the form ovs-vswitchd reports in mac_in_use.
func parseUnicastMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return "", err
	}
	if len(hw) != 6 {
		return "", fmt.Errorf("%q is not a 6-byte Ethernet address", s)
	}
	if hw[0]&1 != 0 {
		return "", fmt.Errorf("%s is a multicast address", hw)
	}
	if slices.Equal(hw, make(net.HardwareAddr, 6)) {
		return "", fmt.Errorf("%s is the all-zero address", hw)
	}
	return hw.String(), nil
}

// sameSet reports whether a and b hold the same elements, ignoring order.
func sameSet[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
