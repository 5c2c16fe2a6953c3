package ovsdb_test

import (
	"context"
	"errors"
	"maps"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

func TestConnect(t *testing.T) {
	t.Parallel()
	in, c := startNode(t)
	ctx := testctx.Timeout(t, testTimeout)

	if v := c.SchemaVersion(); v == "" {
		t.Error("SchemaVersion is empty")
	}
	// ovstest starts the daemons directly: nobody wrote ovs_version.
	if v, err := c.OVSVersion(ctx); !errors.Is(err, ovsdb.ErrVersionUnknown) {
		t.Errorf("OVSVersion before ovs-ctl would set it = %q, %v; want ErrVersionUnknown", v, err)
	}
	// As ovs-ctl does. Sync makes the Client see another client's change.
	in.MustVsctl(t, "set", "Open_vSwitch", ".", "ovs_version=3.1.0")
	if err := c.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if v, err := c.OVSVersion(ctx); err != nil || v != "3.1.0" {
		t.Errorf("OVSVersion = %q, %v; want 3.1.0", v, err)
	}
}

func TestConnectErrors(t *testing.T) {
	t.Parallel()
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))
	missing := filepath.Join(t.TempDir(), "missing.sock")
	tests := []struct {
		name     string
		endpoint string
		timeout  time.Duration
		want     error
	}{
		{"no scheme", "/var/run/openvswitch/db.sock", time.Second, ovsdb.ErrInvalidArgument},
		{"ssl not supported", "ssl:127.0.0.1:6640", time.Second, ovsdb.ErrInvalidArgument},
		{"tcp without port", "tcp:127.0.0.1", time.Second, ovsdb.ErrInvalidArgument},
		{"empty unix path", "unix:", time.Second, ovsdb.ErrInvalidArgument},
		// Connect keeps retrying a socket nobody listens on until ctx ends.
		{"nobody listening", "unix:" + missing, 300 * time.Millisecond, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			c, err := ovsdb.Connect(ctx, tt.endpoint, logger)
			if err == nil {
				c.Close()
				t.Fatalf("Connect(%q) succeeded", tt.endpoint)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Connect(%q) = %v, want an error wrapping %v", tt.endpoint, err, tt.want)
			}
		})
	}
}

// TestConnectWaitsForServer starts the Client before ovsdb-server, as an
// agent may at node boot.
func TestConnectWaitsForServer(t *testing.T) {
	t.Parallel()
	in := ovstest.Start(t)
	in.KillOVSDBServer(t, syscall.SIGTERM)
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))
	type result struct {
		c   *ovsdb.Client
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ovsdb.Connect(testctx.Timeout(t, testTimeout), in.DBSocket(), logger)
		done <- result{c, err}
	}()
	time.Sleep(300 * time.Millisecond)
	in.StartOVSDBServer(t)
	r := <-done
	if r.err != nil {
		t.Fatalf("Connect while ovsdb-server starts: %v", r.err)
	}
	defer r.c.Close()
	ensureNetdevBridge(t, r.c, "br-int")
}

func TestEnsureBridge(t *testing.T) {
	t.Parallel()
	in, c := startNode(t)
	ctx := testctx.Timeout(t, testTimeout)

	cfg := ovsdb.BridgeConfig{
		Name:         "br-int",
		DatapathType: ovsdb.DatapathNetdev,
		DatapathID:   "000000000000ABCD",
		HWAddr:       "02:00:00:AA:BB:CC",
		ExternalIDs:  map[string]string{"weir-owner": "agent"},
	}
	uuid1, err := c.EnsureBridge(ctx, cfg)
	if err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	uuid2, err := c.EnsureBridge(ctx, cfg)
	if err != nil {
		t.Fatalf("EnsureBridge again: %v", err)
	}
	if uuid1 != uuid2 {
		t.Errorf("EnsureBridge twice returned %s then %s, want the same bridge", uuid1, uuid2)
	}
	if got := in.MustVsctl(t, "list-br"); strings.Fields(got)[0] != "br-int" || len(strings.Fields(got)) != 1 {
		t.Errorf("ovs-vsctl list-br = %q, want just br-int", got)
	}
	want := map[string]string{
		"_uuid":                    uuid1,
		"datapath_type":            "netdev",
		"fail_mode":                "secure",
		"protocols":                "[OpenFlow10, OpenFlow13, OpenFlow14, OpenFlow15]",
		"other_config:datapath-id": "000000000000abcd",
		"other_config:hwaddr":      "02:00:00:aa:bb:cc",
		"external_ids:weir-owner":  "agent",
		"datapath_id":              "000000000000abcd", // what ovs-vswitchd applied
	}
	for col, w := range want {
		if got := vsctlGet(t, in, "Bridge", "br-int", col); got != w {
			t.Errorf("Bridge br-int %s = %s, want %s", col, got, w)
		}
	}
	// The bridge is up: its local port has ofport LOCAL and the OpenFlow
	// management socket answers.
	if got := vsctlGet(t, in, "Interface", "br-int", "ofport"); got != "65534" {
		t.Errorf("local port ofport = %s, want 65534", got)
	}
	if out := in.MustOfctl(t, "-O", "OpenFlow15", "show", "br-int"); !strings.Contains(out, "dpid:000000000000abcd") {
		t.Errorf("ovs-ofctl show br-int does not show the datapath ID:\n%s", out)
	}

	// Reconcile: another DPID, no hwaddr, an extra external ID; keys set by
	// others survive.
	in.MustVsctl(t, "set", "Bridge", "br-int", "other_config:mac-aging-time=60", "external_ids:other=x", "fail_mode=standalone")
	if err := c.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	cfg.DatapathID = "00000000000000ef"
	cfg.HWAddr = ""
	cfg.ExternalIDs = map[string]string{"weir-owner": "agent2"}
	if uuid3, err := c.EnsureBridge(ctx, cfg); err != nil || uuid3 != uuid1 {
		t.Fatalf("EnsureBridge with a changed config = %s, %v; want %s, nil", uuid3, err, uuid1)
	}
	got := in.MustVsctl(t, "get", "Bridge", "br-int", "other_config")
	for _, w := range []string{`datapath-id="00000000000000ef"`, `mac-aging-time="60"`} {
		if !strings.Contains(got, w) {
			t.Errorf("other_config = %s, want it to contain %s", got, w)
		}
	}
	if strings.Contains(got, "hwaddr") {
		t.Errorf("other_config = %s, want hwaddr removed", got)
	}
	if got := in.MustVsctl(t, "get", "Bridge", "br-int", "external_ids"); strings.TrimSpace(got) != `{other=x, weir-owner=agent2}` {
		t.Errorf("external_ids = %s, want {other=x, weir-owner=agent2}", got)
	}
	if got := vsctlGet(t, in, "Bridge", "br-int", "fail_mode"); got != "secure" {
		t.Errorf("fail_mode = %s after reconcile, want secure", got)
	}

	if err := c.DeleteBridge(ctx, "br-int"); err != nil {
		t.Fatalf("DeleteBridge: %v", err)
	}
	if err := c.DeleteBridge(ctx, "br-int"); err != nil {
		t.Fatalf("DeleteBridge of a deleted bridge: %v", err)
	}
	if got := strings.TrimSpace(in.MustVsctl(t, "list-br")); got != "" {
		t.Errorf("bridges after DeleteBridge: %q", got)
	}
	if got := strings.TrimSpace(in.MustVsctl(t, "--columns=name", "list", "Interface")); got != "" {
		t.Errorf("interfaces left after DeleteBridge: %q", got)
	}
}

func TestEnsureBridgeInvalid(t *testing.T) {
	t.Parallel()
	_, c := startNode(t)
	tests := []struct {
		name string
		cfg  ovsdb.BridgeConfig
	}{
		{"empty name", ovsdb.BridgeConfig{}},
		{"name too long", ovsdb.BridgeConfig{Name: "br-0123456789abc"}},
		{"name with slash", ovsdb.BridgeConfig{Name: "br/int"}},
		{"unknown datapath", ovsdb.BridgeConfig{Name: "br-int", DatapathType: "dpdk"}},
		{"short datapath ID", ovsdb.BridgeConfig{Name: "br-int", DatapathID: "abcd"}},
		{"datapath ID not hex", ovsdb.BridgeConfig{Name: "br-int", DatapathID: "000000000000abcg"}},
		{"bad hwaddr", ovsdb.BridgeConfig{Name: "br-int", HWAddr: "02:00:00:00:00"}},
		{"EUI-64 hwaddr", ovsdb.BridgeConfig{Name: "br-int", HWAddr: "02:00:00:00:00:00:00:01"}},
		{"empty external ID key", ovsdb.BridgeConfig{Name: "br-int", ExternalIDs: map[string]string{"": "x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.EnsureBridge(testctx.Timeout(t, testTimeout), tt.cfg); !errors.Is(err, ovsdb.ErrInvalidArgument) {
				t.Fatalf("EnsureBridge(%+v) = %v, want ErrInvalidArgument", tt.cfg, err)
			}
		})
	}
}

// TestEnsureBridgeSystemDatapath checks that a bridge ovs-vswitchd cannot
// create (no openvswitch kernel module on the test machine) fails with
// ovs-vswitchd's error and is rolled back.
func TestEnsureBridgeSystemDatapath(t *testing.T) {
	t.Parallel()
	in, c := startNode(t, ovsdb.WithOFPortTimeout(2*time.Second))
	if _, err := c.EnsureBridge(testctx.Timeout(t, testTimeout), ovsdb.BridgeConfig{Name: "br-sys"}); err == nil {
		t.Skip("the system datapath works here (openvswitch kernel module loaded)")
	} else {
		t.Logf("EnsureBridge(system datapath): %v", err)
		if _, ok := errorsAs[*ovsdb.OFPortError](err); !ok {
			t.Errorf("EnsureBridge error %v is not an *OFPortError", err)
		}
	}
	if got := strings.TrimSpace(in.MustVsctl(t, "list-br")); got != "" {
		t.Errorf("bridges after a failed EnsureBridge: %q, want none", got)
	}
}

func TestSetFlowTableNames(t *testing.T) {
	t.Parallel()
	in, c := startNode(t)
	ctx := testctx.Timeout(t, testTimeout)
	ensureNetdevBridge(t, c, "br-int")

	names := map[uint8]string{0: "Classifier", 1: "SpoofGuard", 3: "ConntrackZone"}
	if err := c.SetFlowTableNames(ctx, "br-int", names); err != nil {
		t.Fatalf("SetFlowTableNames: %v", err)
	}
	before := in.MustVsctl(t, "get", "Bridge", "br-int", "flow_tables")
	if err := c.SetFlowTableNames(ctx, "br-int", names); err != nil {
		t.Fatalf("SetFlowTableNames again: %v", err)
	}
	if after := in.MustVsctl(t, "get", "Bridge", "br-int", "flow_tables"); after != before {
		t.Errorf("flow_tables changed by an identical SetFlowTableNames: %s -> %s", before, after)
	}

	in.MustOfctl(t, "-O", "OpenFlow15", "add-flow", "br-int", "table=3,priority=1,actions=drop")
	out := in.MustOfctl(t, "-O", "OpenFlow15", "--names", "dump-flows", "br-int")
	if !strings.Contains(out, "table=ConntrackZone") {
		t.Errorf("dump-flows --names does not show table=ConntrackZone:\n%s", out)
	}
	// ovs-ofctl resolves the names on input too.
	in.MustOfctl(t, "-O", "OpenFlow15", "--names", "add-flow", "br-int", "table=SpoofGuard,priority=2,actions=drop")
	if out := in.MustOfctl(t, "-O", "OpenFlow15", "dump-flows", "br-int", "table=1"); !strings.Contains(out, "priority=2") {
		t.Errorf("flow added to table=SpoofGuard is not in table 1:\n%s", out)
	}

	// Replace the whole map: table 3 loses its name, table 0 is renamed.
	if err := c.SetFlowTableNames(ctx, "br-int", map[uint8]string{0: "Start", 1: "SpoofGuard"}); err != nil {
		t.Fatalf("SetFlowTableNames with a new map: %v", err)
	}
	out = in.MustOfctl(t, "-O", "OpenFlow15", "--names", "dump-flows", "br-int")
	if strings.Contains(out, "ConntrackZone") || !strings.Contains(out, "table=3") {
		t.Errorf("after renaming, dump-flows --names still names table 3:\n%s", out)
	}
	if got := strings.Fields(in.MustVsctl(t, "--bare", "--columns=name", "list", "Flow_Table")); !sameElements(got, []string{"Start", "SpoofGuard"}) {
		t.Errorf("Flow_Table names = %v, want [Start SpoofGuard] (unreferenced rows collected)", got)
	}

	if err := c.SetFlowTableNames(ctx, "br-int", nil); err != nil {
		t.Fatalf("SetFlowTableNames(nil): %v", err)
	}
	if got := vsctlGet(t, in, "Bridge", "br-int", "flow_tables"); got != "{}" {
		t.Errorf("flow_tables after clearing = %s, want {}", got)
	}

	tests := []struct {
		name   string
		bridge string
		names  map[uint8]string
		want   error
	}{
		{"missing bridge", "br-none", map[uint8]string{0: "A"}, ovsdb.ErrBridgeNotFound},
		{"table 255", "br-int", map[uint8]string{255: "All"}, ovsdb.ErrInvalidArgument},
		{"numeric name", "br-int", map[uint8]string{0: "10"}, ovsdb.ErrInvalidArgument},
		{"name with blank", "br-int", map[uint8]string{0: "Conntrack Zone"}, ovsdb.ErrInvalidArgument},
		{"duplicate name", "br-int", map[uint8]string{0: "A", 1: "A"}, ovsdb.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.SetFlowTableNames(testctx.Timeout(t, testTimeout), tt.bridge, tt.names); !errors.Is(err, tt.want) {
				t.Fatalf("SetFlowTableNames(%s, %v) = %v, want %v", tt.bridge, tt.names, err, tt.want)
			}
		})
	}
}

func TestEnsureInternalPort(t *testing.T) {
	t.Parallel()
	in, c := startNode(t)
	ctx := testctx.Timeout(t, testTimeout)
	ensureNetdevBridge(t, c, "br-int")

	opts := ovsdb.PortOptions{
		OFPortRequest: 2,
		MAC:           "02:00:0A:00:00:01",
		MTU:           1450,
		ExternalIDs:   map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypeGateway},
	}
	for i := range 2 { // the second call is a no-op
		ofport, err := c.EnsureInternalPort(ctx, "br-int", "weir-gw0", opts)
		if err != nil {
			t.Fatalf("EnsureInternalPort #%d: %v", i+1, err)
		}
		if ofport != 2 {
			t.Fatalf("EnsureInternalPort #%d = ofport %d, want the requested 2", i+1, ofport)
		}
	}
	checks := map[string]string{
		"type":           "internal",
		"ofport":         "2",
		"ofport_request": "2",
		"mac_in_use":     "02:00:0a:00:00:01",
		"mtu":            "1450",
	}
	for col, want := range checks {
		if got := vsctlGet(t, in, "Interface", "weir-gw0", col); got != want {
			t.Errorf("Interface weir-gw0 %s = %s, want %s", col, got, want)
		}
	}
	if got := vsctlGet(t, in, "Port", "weir-gw0", "external_ids:weir-type"); got != "gateway" {
		t.Errorf("Port weir-gw0 external_ids:weir-type = %s, want gateway", got)
	}
	if out, err := in.Exec("", "ip", "-o", "link", "show", "weir-gw0"); err != nil || !strings.Contains(out, "mtu 1450") {
		t.Errorf("ip link show weir-gw0 in the node namespace: %v\n%s", err, out)
	}

	// Changing the requested ofport replaces the port.
	opts.OFPortRequest = 7
	if ofport, err := c.EnsureInternalPort(ctx, "br-int", "weir-gw0", opts); err != nil || ofport != 7 {
		t.Fatalf("EnsureInternalPort with ofport request 7 = %d, %v; want 7", ofport, err)
	}
	// Changing the MAC, MTU and external IDs updates it in place.
	opts.MAC = "02:00:0a:00:00:02"
	opts.MTU = 1400
	opts.ExternalIDs = map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypeGateway, "extra": "1"}
	uuidBefore := vsctlGet(t, in, "Interface", "weir-gw0", "_uuid")
	if ofport, err := c.EnsureInternalPort(ctx, "br-int", "weir-gw0", opts); err != nil || ofport != 7 {
		t.Fatalf("EnsureInternalPort with MTU 1400 = %d, %v; want 7", ofport, err)
	}
	if got := vsctlGet(t, in, "Interface", "weir-gw0", "_uuid"); got != uuidBefore {
		t.Errorf("Interface row replaced (%s -> %s) for an MTU change", uuidBefore, got)
	}
	if got := vsctlGet(t, in, "Interface", "weir-gw0", "mtu_request"); got != "1400" {
		t.Errorf("mtu_request = %s, want 1400", got)
	}
	// The call returns once the new MAC is in use.
	if got := vsctlGet(t, in, "Interface", "weir-gw0", "mac_in_use"); got != "02:00:0a:00:00:02" {
		t.Errorf("mac_in_use = %s right after EnsureInternalPort, want 02:00:0a:00:00:02", got)
	}
	if p, err := c.GetPort(ctx, "br-int", "weir-gw0"); err != nil || p.MAC != "02:00:0a:00:00:02" {
		t.Errorf("GetPort = %+v, %v; want MAC 02:00:0a:00:00:02", p, err)
	}
	if got := vsctlGet(t, in, "Port", "weir-gw0", "external_ids:extra"); got != "1" {
		t.Errorf("external_ids:extra = %s, want 1", got)
	}

	// An ofport that is taken: ovs-vswitchd assigns another one, the call
	// fails and leaves nothing behind.
	_, err := c.EnsureInternalPort(ctx, "br-int", "weir-x", ovsdb.PortOptions{OFPortRequest: 7})
	perr, ok := errorsAs[*ovsdb.OFPortError](err)
	if !ok {
		t.Fatalf("EnsureInternalPort with a taken ofport = %v, want an *OFPortError", err)
	}
	if perr.Requested != 7 || perr.OFPort <= 0 || perr.OFPort == 7 {
		t.Errorf("OFPortError = %+v, want Requested 7 and another assigned port", perr)
	}
	if got := portNames(t, in, "br-int"); !slices.Equal(got, []string{"weir-gw0"}) {
		t.Errorf("ports after the failed EnsureInternalPort: %v, want [weir-gw0]", got)
	}
}

func TestAddPort(t *testing.T) {
	t.Parallel()
	in, c := startNode(t)
	ctx := testctx.Timeout(t, testTimeout)
	ensureNetdevBridge(t, c, "br-int")
	gwOFPort, err := c.EnsureInternalPort(ctx, "br-int", "weir-gw0", ovsdb.PortOptions{
		ExternalIDs: map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypeGateway},
	})
	if err != nil {
		t.Fatalf("EnsureInternalPort: %v", err)
	}

	addVeth(t, in, "vpod1")
	ids := map[string]string{
		ovsdb.KeyWeirType:              ovsdb.WeirTypePod,
		interfacestore.KeyPodNamespace: "default",
		interfacestore.KeyPodName:      "web-1",
		interfacestore.KeyContainerID:  "0123456789abcdef",
		interfacestore.KeyIfName:       "eth0",
		interfacestore.KeyIP:           "10.10.0.5",
		interfacestore.KeyMAC:          "02:00:0a:0a:00:05",
		interfacestore.KeyNetNS:        "/var/run/netns/cni-1234",
	}
	ofport, err := c.AddPort(ctx, "br-int", "vpod1", ovsdb.PortOptions{OFPortRequest: 10, ExternalIDs: ids})
	if err != nil {
		t.Fatalf("AddPort: %v", err)
	}
	if ofport != 10 {
		t.Errorf("AddPort = ofport %d, want 10", ofport)
	}
	// Idempotent for the same name.
	if again, err := c.AddPort(ctx, "br-int", "vpod1", ovsdb.PortOptions{OFPortRequest: 10, ExternalIDs: ids}); err != nil || again != ofport {
		t.Errorf("AddPort again = %d, %v; want %d", again, err, ofport)
	}
	if got := portNames(t, in, "br-int"); !slices.Equal(got, []string{"vpod1", "weir-gw0"}) {
		t.Errorf("ovs-vsctl list-ports = %v, want [vpod1 weir-gw0]", got)
	}

	ports, err := c.ListPorts(ctx, "br-int")
	if err != nil {
		t.Fatalf("ListPorts: %v", err)
	}
	wantPorts := []struct {
		name, typ string
		ofport    int
		ids       map[string]string
	}{
		{"br-int", "internal", 65534, nil},
		{"vpod1", "", 10, ids},
		{"weir-gw0", "internal", gwOFPort, map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypeGateway}},
	}
	if len(ports) != len(wantPorts) {
		t.Fatalf("ListPorts = %+v, want %d ports", ports, len(wantPorts))
	}
	for i, w := range wantPorts {
		p := ports[i]
		if p.Name != w.name || p.Type != w.typ || p.OFPort != w.ofport || !maps.Equal(p.ExternalIDs, w.ids) || p.Error != "" {
			t.Errorf("ListPorts[%d] = %+v, want name %s type %q ofport %d external_ids %v", i, p, w.name, w.typ, w.ofport, w.ids)
		}
		if p.MAC == "" || p.UUID == "" || p.InterfaceUUID == "" {
			t.Errorf("ListPorts[%d] = %+v: MAC or UUIDs missing", i, p)
		}
	}
	hostMAC := strings.TrimSpace(vsctlGet(t, in, "Interface", "vpod1", "mac_in_use"))
	if ports[1].MAC != hostMAC {
		t.Errorf("ListPorts MAC of vpod1 = %s, want mac_in_use %s", ports[1].MAC, hostMAC)
	}

	// GetPort and SetPortExternalIDs.
	ids2 := maps.Clone(ids)
	ids2[interfacestore.KeyIP] = "10.10.0.5,fd00::5"
	if err := c.SetPortExternalIDs(ctx, "br-int", "vpod1", ids2); err != nil {
		t.Fatalf("SetPortExternalIDs: %v", err)
	}
	p, err := c.GetPort(ctx, "br-int", "vpod1")
	if err != nil {
		t.Fatalf("GetPort: %v", err)
	}
	if !maps.Equal(p.ExternalIDs, ids2) || p.OFPort != 10 {
		t.Errorf("GetPort = %+v, want ofport 10 and external_ids %v", p, ids2)
	}
	if got := vsctlGet(t, in, "Port", "vpod1", "external_ids:ip"); got != "10.10.0.5,fd00::5" {
		t.Errorf("ovs-vsctl external_ids:ip = %s", got)
	}
	for _, tt := range []struct {
		bridge, port string
		want         error
	}{
		{"br-int", "nope", ovsdb.ErrPortNotFound},
		{"br-none", "vpod1", ovsdb.ErrBridgeNotFound},
	} {
		if _, err := c.GetPort(ctx, tt.bridge, tt.port); !errors.Is(err, tt.want) {
			t.Errorf("GetPort(%s, %s) = %v, want %v", tt.bridge, tt.port, err, tt.want)
		}
		if err := c.SetPortExternalIDs(ctx, tt.bridge, tt.port, ids); !errors.Is(err, tt.want) {
			t.Errorf("SetPortExternalIDs(%s, %s) = %v, want %v", tt.bridge, tt.port, err, tt.want)
		}
	}
}

func TestAddPortMissingDevice(t *testing.T) {
	t.Parallel()
	in, c := startNode(t)
	ctx := testctx.Timeout(t, testTimeout)
	ensureNetdevBridge(t, c, "br-int")

	began := time.Now()
	_, err := c.AddPort(ctx, "br-int", "nosuchdev", ovsdb.PortOptions{
		ExternalIDs: map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypePod},
	})
	elapsed := time.Since(began)
	perr, ok := errorsAs[*ovsdb.OFPortError](err)
	if !ok {
		t.Fatalf("AddPort of a missing device = %v, want an *OFPortError", err)
	}
	t.Logf("AddPort of a missing device failed after %v: %v", elapsed, err)
	if !strings.Contains(perr.Reason, "could not open network device nosuchdev") || perr.OFPort != -1 {
		t.Errorf("OFPortError = %+v, want ofport -1 and ovs-vswitchd's 'could not open network device' text", perr)
	}
	if errors.Is(err, ovsdb.ErrOFPortTimeout) {
		t.Errorf("AddPort of a missing device timed out instead of failing fast: %v", err)
	}
	if elapsed > 3*time.Second {
		t.Errorf("AddPort of a missing device took %v, want it to fail fast", elapsed)
	}
	if got := strings.TrimSpace(in.MustVsctl(t, "--bare", "--columns=name", "find", "Port", "name=nosuchdev")); got != "" {
		t.Errorf("Port row left behind: %q", got)
	}
	if got := strings.TrimSpace(in.MustVsctl(t, "--bare", "--columns=name", "find", "Interface", "name=nosuchdev")); got != "" {
		t.Errorf("Interface row left behind: %q", got)
	}

	// Once the device exists, the same call works.
	addVeth(t, in, "nosuchdev")
	if ofport, err := c.AddPort(ctx, "br-int", "nosuchdev", ovsdb.PortOptions{}); err != nil || ofport <= 0 {
		t.Fatalf("AddPort after creating the device = %d, %v", ofport, err)
	}

	// A port left failed by someone else is replaced by AddPort.
	in.MustVsctl(t, "add-port", "br-int", "ghost")
	if got := vsctlGet(t, in, "Interface", "ghost", "ofport"); got != "-1" {
		t.Fatalf("ovs-vsctl add-port of a missing device: ofport %s, want -1", got)
	}
	addVeth(t, in, "ghost")
	if err := c.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if ofport, err := c.AddPort(ctx, "br-int", "ghost", ovsdb.PortOptions{}); err != nil || ofport <= 0 {
		t.Fatalf("AddPort over a failed port = %d, %v", ofport, err)
	}
}

func TestPortErrors(t *testing.T) {
	t.Parallel()
	in, c := startNode(t)
	ctx := testctx.Timeout(t, testTimeout)
	ensureNetdevBridge(t, c, "br-int")
	ensureNetdevBridge(t, c, "br-phy")
	if _, err := c.EnsureInternalPort(ctx, "br-phy", "uplink0", ovsdb.PortOptions{}); err != nil {
		t.Fatalf("EnsureInternalPort: %v", err)
	}

	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"port on another bridge", func() error {
			_, err := c.EnsureInternalPort(ctx, "br-int", "uplink0", ovsdb.PortOptions{})
			return err
		}, ovsdb.ErrPortConflict},
		{"missing bridge", func() error {
			_, err := c.AddPort(ctx, "br-none", "x", ovsdb.PortOptions{})
			return err
		}, ovsdb.ErrBridgeNotFound},
		{"list ports of a missing bridge", func() error {
			_, err := c.ListPorts(ctx, "br-none")
			return err
		}, ovsdb.ErrBridgeNotFound},
		{"MAC on a veth", func() error {
			_, err := c.AddPort(ctx, "br-int", "x", ovsdb.PortOptions{MAC: "02:00:00:00:00:01"})
			return err
		}, ovsdb.ErrInvalidArgument},
		{"MAC on a tunnel", func() error {
			_, err := c.EnsureGenevePort(ctx, "br-int", "x", ovsdb.PortOptions{MAC: "02:00:00:00:00:01"})
			return err
		}, ovsdb.ErrInvalidArgument},
		{"bad MAC", func() error {
			_, err := c.EnsureInternalPort(ctx, "br-int", "x", ovsdb.PortOptions{MAC: "02:00:00:00:00"})
			return err
		}, ovsdb.ErrInvalidArgument},
		{"multicast MAC", func() error {
			_, err := c.EnsureInternalPort(ctx, "br-int", "x", ovsdb.PortOptions{MAC: "03:00:00:00:00:01"})
			return err
		}, ovsdb.ErrInvalidArgument},
		{"ofport request too high", func() error {
			_, err := c.EnsureInternalPort(ctx, "br-int", "x", ovsdb.PortOptions{OFPortRequest: 0xff00})
			return err
		}, ovsdb.ErrInvalidArgument},
		{"negative ofport request", func() error {
			_, err := c.EnsureInternalPort(ctx, "br-int", "x", ovsdb.PortOptions{OFPortRequest: -1})
			return err
		}, ovsdb.ErrInvalidArgument},
		{"MTU out of range", func() error {
			_, err := c.EnsureInternalPort(ctx, "br-int", "x", ovsdb.PortOptions{MTU: 70000})
			return err
		}, ovsdb.ErrInvalidArgument},
		{"name too long", func() error {
			_, err := c.AddPort(ctx, "br-int", "veth0123456789ab", ovsdb.PortOptions{})
			return err
		}, ovsdb.ErrInvalidArgument},
		{"empty name", func() error { return c.DeletePort(ctx, "br-int", "") }, ovsdb.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want an error wrapping %v", err, tt.want)
			}
		})
	}
	if got := portNames(t, in, "br-int"); len(got) != 0 {
		t.Errorf("ports on br-int after failed calls: %v", got)
	}
	if got := portNames(t, in, "br-phy"); !slices.Equal(got, []string{"uplink0"}) {
		t.Errorf("ports on br-phy: %v, want [uplink0]", got)
	}
}

func TestDeletePort(t *testing.T) {
	t.Parallel()
	in, c := startNode(t)
	ctx := testctx.Timeout(t, testTimeout)
	ensureNetdevBridge(t, c, "br-int")
	ensureNetdevBridge(t, c, "br-phy")
	if _, err := c.EnsureInternalPort(ctx, "br-int", "p1", ovsdb.PortOptions{}); err != nil {
		t.Fatalf("EnsureInternalPort: %v", err)
	}
	if _, err := c.EnsureInternalPort(ctx, "br-phy", "p2", ovsdb.PortOptions{}); err != nil {
		t.Fatalf("EnsureInternalPort: %v", err)
	}

	tests := []struct {
		name, bridge, port string
	}{
		{"existing port", "br-int", "p1"},
		{"already deleted", "br-int", "p1"},
		{"never existed", "br-int", "p9"},
		{"missing bridge", "br-none", "p1"},
		{"port on another bridge is left alone", "br-int", "p2"},
	}
	for _, tt := range tests {
		if err := c.DeletePort(ctx, tt.bridge, tt.port); err != nil {
			t.Errorf("%s: DeletePort(%s, %s) = %v", tt.name, tt.bridge, tt.port, err)
		}
	}
	if got := portNames(t, in, "br-int"); len(got) != 0 {
		t.Errorf("ports on br-int: %v, want none", got)
	}
	if got := strings.TrimSpace(in.MustVsctl(t, "--bare", "--columns=name", "find", "Interface", "name=p1")); got != "" {
		t.Errorf("Interface p1 left behind: %q", got)
	}
	if got := portNames(t, in, "br-phy"); !slices.Equal(got, []string{"p2"}) {
		t.Errorf("ports on br-phy: %v, want [p2]", got)
	}
	// DeletePort does not wait for ovs-vswitchd to remove the netdev;
	// WaitApplied does.
	if err := c.WaitApplied(ctx); err != nil {
		t.Fatalf("WaitApplied: %v", err)
	}
	if out, err := in.Exec("", "ip", "link", "show", "p1"); err == nil {
		t.Errorf("internal port p1 still exists as a netdev after WaitApplied:\n%s", out)
	}
}

func TestEnsureGenevePort(t *testing.T) {
	t.Parallel()
	in, c := startNode(t)
	ctx := testctx.Timeout(t, testTimeout)
	ensureNetdevBridge(t, c, "br-int")

	ids := map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypeTunnel}
	for i := range 2 {
		ofport, err := c.EnsureGenevePort(ctx, "br-int", "weir-tun0", ovsdb.PortOptions{OFPortRequest: 1, ExternalIDs: ids})
		if err != nil || ofport != 1 {
			t.Fatalf("EnsureGenevePort #%d = %d, %v; want 1", i+1, ofport, err)
		}
	}
	if got := vsctlGet(t, in, "Interface", "weir-tun0", "type"); got != "geneve" {
		t.Errorf("type = %s, want geneve", got)
	}
	if got := vsctlGet(t, in, "Interface", "weir-tun0", "options"); got != `{csum="true", key=flow, remote_ip=flow}` {
		t.Errorf("options = %s, want {csum=\"true\", key=flow, remote_ip=flow}", got)
	}
	if got := vsctlGet(t, in, "Interface", "weir-tun0", "error"); got != "[]" {
		t.Errorf("error = %s, want none", got)
	}
	// The options are reconciled: someone else's change is undone.
	in.MustVsctl(t, "set", "Interface", "weir-tun0", "options:csum=false")
	if err := c.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if p, err := c.GetPort(ctx, "br-int", "weir-tun0"); err != nil || p.Options["csum"] != "false" {
		t.Fatalf("GetPort after ovs-vsctl and Sync = %+v, %v; want options:csum=false", p, err)
	}
	if _, err := c.EnsureGenevePort(ctx, "br-int", "weir-tun0", ovsdb.PortOptions{OFPortRequest: 1, ExternalIDs: ids}); err != nil {
		t.Fatalf("EnsureGenevePort: %v", err)
	}
	if got := vsctlGet(t, in, "Interface", "weir-tun0", "options:csum"); got != "true" {
		t.Errorf("options:csum = %s after reconcile, want true", got)
	}
	out := in.MustOfctl(t, "-O", "OpenFlow15", "show", "br-int")
	if !strings.Contains(out, "1(weir-tun0)") {
		t.Errorf("ovs-ofctl show br-int lacks 1(weir-tun0):\n%s", out)
	}
}

// TestReconnect restarts ovsdb-server under a connected Client, with a
// transaction waiting during the outage.
func TestReconnect(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			in, c := startNode(t)
			ctx := testctx.Timeout(t, testTimeout)
			ensureNetdevBridge(t, c, "br-int")
			if _, err := c.EnsureInternalPort(ctx, "br-int", "before", ovsdb.PortOptions{}); err != nil {
				t.Fatalf("EnsureInternalPort before the restart: %v", err)
			}

			in.KillOVSDBServer(t, sig)
			// A call made during the outage waits for the server.
			done := make(chan error, 1)
			go func() {
				_, err := c.EnsureInternalPort(ctx, "br-int", "during", ovsdb.PortOptions{})
				done <- err
			}()
			time.Sleep(200 * time.Millisecond)
			select {
			case err := <-done:
				t.Fatalf("EnsureInternalPort returned %v while ovsdb-server was down", err)
			default:
			}
			// A call whose context ends during the outage says so.
			shortCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			_, err := c.ListPorts(shortCtx, "br-int")
			cancel()
			if !errors.Is(err, ovsdb.ErrNotConnected) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("ListPorts during the outage = %v, want ErrNotConnected and DeadlineExceeded", err)
			}

			if c.Connected() {
				t.Error("Connected() = true while ovsdb-server is down")
			}
			// So is WaitApplied.
			shortCtx, cancel = context.WithTimeout(ctx, 100*time.Millisecond)
			err = c.WaitApplied(shortCtx)
			cancel()
			if !errors.Is(err, ovsdb.ErrNotConnected) {
				t.Errorf("WaitApplied during the outage = %v, want ErrNotConnected", err)
			}
			began := time.Now()
			in.StartOVSDBServer(t)
			if err := <-done; err != nil {
				t.Fatalf("EnsureInternalPort across the restart: %v", err)
			}
			t.Logf("call made during the outage completed %v after the restart", time.Since(began))

			if !c.Connected() {
				t.Error("Connected() = false after a call succeeded across the restart")
			}
			if _, err := c.EnsureInternalPort(ctx, "br-int", "after", ovsdb.PortOptions{}); err != nil {
				t.Fatalf("EnsureInternalPort after the restart: %v", err)
			}
			ports, err := c.ListPorts(ctx, "br-int")
			if err != nil {
				t.Fatalf("ListPorts after the restart: %v", err)
			}
			var names []string
			for _, p := range ports {
				if p.OFPort <= 0 {
					t.Errorf("port %+v has no ofport", p)
				}
				names = append(names, p.Name)
			}
			if want := []string{"after", "before", "br-int", "during"}; !slices.Equal(names, want) {
				t.Errorf("ListPorts after the restart = %v, want %v", names, want)
			}
			if err := c.DeletePort(ctx, "br-int", "before"); err != nil {
				t.Fatalf("DeletePort after the restart: %v", err)
			}
			if got := portNames(t, in, "br-int"); !slices.Equal(got, []string{"after", "during"}) {
				t.Errorf("ovs-vsctl list-ports = %v, want [after during]", got)
			}
		})
	}
}

// TestClose checks that calls fail after Close, also when Close comes during
// an outage, and that libovsdb's reconnect goroutine ends.
//
// Not parallel: it inspects the goroutines of the whole test binary, and runs
// before any parallel test starts.
func TestClose(t *testing.T) {
	tests := []struct {
		name   string
		outage bool
	}{
		{"connected", false},
		{"during outage", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := ovstest.Start(t)
			logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))
			c, err := ovsdb.Connect(testctx.Timeout(t, testTimeout), in.DBSocket(), logger)
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			ensureNetdevBridge(t, c, "br-int")
			pending := make(chan error, 1)
			if tt.outage {
				in.KillOVSDBServer(t, syscall.SIGKILL)
				// Let libovsdb notice and start reconnecting.
				time.Sleep(200 * time.Millisecond)
				// A call waiting for the server (with no deadline)
				// ends at Close.
				go func() {
					_, err := c.EnsureInternalPort(context.Background(), "br-int", "p", ovsdb.PortOptions{})
					pending <- err
				}()
				time.Sleep(50 * time.Millisecond)
			} else {
				pending <- ovsdb.ErrClosed
			}
			c.Close()
			select {
			case err := <-pending:
				if !errors.Is(err, ovsdb.ErrClosed) {
					t.Errorf("call pending at Close returned %v, want ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("call pending at Close did not return")
			}
			c.Close() // idempotent
			if c.Connected() {
				t.Error("Connected() = true after Close")
			}
			ctx := testctx.Timeout(t, testTimeout)
			if _, err := c.ListPorts(ctx, "br-int"); !errors.Is(err, ovsdb.ErrClosed) {
				t.Errorf("ListPorts after Close = %v, want ErrClosed", err)
			}
			if _, err := c.EnsureInternalPort(ctx, "br-int", "p", ovsdb.PortOptions{}); !errors.Is(err, ovsdb.ErrClosed) {
				t.Errorf("EnsureInternalPort after Close = %v, want ErrClosed", err)
			}
			if tt.outage {
				in.StartOVSDBServer(t)
			}
			eventually(t, 10*time.Second, "libovsdb's goroutines to end", func() error {
				if stacks := libovsdbGoroutines(); stacks != "" {
					return errors.New("still running:\n" + stacks)
				}
				return nil
			})
		})
	}
}

// libovsdbGoroutines returns the stacks of goroutines running libovsdb's
// connection handling, "" if there are none. Tests running in parallel have
// clients of their own, so this is only meaningful in tests that do not run
// in parallel with others.
func libovsdbGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "libovsdb/client.(*ovsdbClient).handleDisconnectNotification") ||
			strings.Contains(g, "libovsdb/client.(*ovsdbClient).handleClientErrors") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

func sameElements(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestConcurrentEnsure runs the same and different port changes from two
// Clients at once: racing creations of one name must all succeed (the loser
// of the unique-name race retries and finds the winner's port).
func TestConcurrentEnsure(t *testing.T) {
	t.Parallel()
	in, c1 := startNode(t)
	c2 := connect(t, in)
	ctx := testctx.Timeout(t, testTimeout)
	ensureNetdevBridge(t, c1, "br-int")

	const workers = 8
	type result struct {
		shared, own int
		err         error
	}
	results := make(chan result, workers)
	for i := range workers {
		c := c1
		if i%2 == 1 {
			c = c2
		}
		go func() {
			var r result
			r.shared, r.err = c.EnsureInternalPort(ctx, "br-int", "shared", ovsdb.PortOptions{
				ExternalIDs: map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypeGateway},
			})
			if r.err == nil {
				r.own, r.err = c.EnsureInternalPort(ctx, "br-int", "own"+strconv.Itoa(i), ovsdb.PortOptions{})
			}
			results <- r
		}()
	}
	shared := map[int]bool{}
	own := map[int]bool{}
	for range workers {
		r := <-results
		if r.err != nil {
			t.Errorf("EnsureInternalPort: %v", r.err)
			continue
		}
		shared[r.shared] = true
		own[r.own] = true
	}
	if len(shared) != 1 {
		t.Errorf("racing EnsureInternalPort calls for one port returned ofports %v, want one", shared)
	}
	if len(own) != workers {
		t.Errorf("EnsureInternalPort for %d ports returned %d distinct ofports", workers, len(own))
	}
	if got := portNames(t, in, "br-int"); len(got) != workers+1 {
		t.Errorf("ports on br-int: %v, want %d", got, workers+1)
	}
}
