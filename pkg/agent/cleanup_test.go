package agent

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"k8s.io/klog/v2/ktesting"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/test/ovstest"
)

// TestCleanup sets up what the agent installs on a netdev node (underlay on
// br-phy, SNAT, pod guard, br-int) and checks that Cleanup removes all of it
// and gives the NIC its address and default route back; a second Cleanup
// finds nothing to do and succeeds.
func TestCleanup(t *testing.T) {
	in := ovstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(1)))
	node := "/run/netns/" + in.NetNS
	sh := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"netns", "exec", in.NetNS}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
		return string(out)
	}
	sh("ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ul0p")
	sh("ip", "link", "set", "ul0p", "up")
	sh("ip", "addr", "add", "192.0.2.1/24", "dev", "ul0")
	sh("ip", "link", "set", "ul0", "up")
	sh("ip", "route", "add", "default", "via", "192.0.2.254")

	cfg := DefaultConfig()
	cfg.DatapathType, cfg.UnderlayInterface = ovsdb.DatapathNetdev, "ul0"
	cfg.OVSDBEndpoint = in.DBSocket()
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	err := ns.WithNetNSPath(node, func(ns.NetNS) error {
		db, err := ovsdb.Connect(ctx, cfg.OVSDBEndpoint, log)
		if err != nil {
			return err
		}
		defer db.Close()
		if _, err := nodenet.SetupUnderlay(ctx, nodenet.UnderlayConfig{OVSDB: db, NIC: "ul0"}); err != nil {
			return err
		}
		if _, err := db.EnsureBridge(ctx, ovsdb.BridgeConfig{Name: cfg.Bridge, DatapathType: cfg.DatapathType}); err != nil {
			return err
		}
		if err := nodenet.InstallPodGuard(ctx, cfg.GatewayName); err != nil {
			return err
		}
		_, cidr, _ := net.ParseCIDR("10.244.1.0/24")
		return nodenet.ReconcileSNAT(ctx, nodenet.SNATConfig{PodCIDR: cidr, GatewayName: cfg.GatewayName})
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sh("nft", "list", "tables"), "weir") || !strings.Contains(sh("ip", "-4", "addr", "show", "br-phy"), "192.0.2.1/24") {
		t.Fatal("set-up incomplete")
	}

	for i := 1; i <= 2; i++ {
		if err := ns.WithNetNSPath(node, func(ns.NetNS) error { return Cleanup(ctx, cfg, log) }); err != nil {
			t.Fatalf("cleanup #%d: %v", i, err)
		}
		if tables := sh("nft", "list", "tables"); strings.Contains(tables, "weir") {
			t.Errorf("cleanup #%d: nftables tables left: %s", i, tables)
		}
		if out := sh("ip", "-4", "addr", "show", "ul0"); !strings.Contains(out, "192.0.2.1/24") {
			t.Errorf("cleanup #%d: ul0 did not get its address back: %s", i, out)
		}
		if out := sh("ip", "route", "show", "default"); !strings.Contains(out, "via 192.0.2.254 dev ul0") {
			t.Errorf("cleanup #%d: default route not back on ul0: %q", i, out)
		}
		if brs := in.MustVsctl(t, "list-br"); strings.TrimSpace(brs) != "" {
			t.Errorf("cleanup #%d: bridges left: %s", i, brs)
		}
		if _, err := os.Stat(cfg.StateDir); !os.IsNotExist(err) {
			t.Errorf("cleanup #%d: state dir left (%v)", i, err)
		}
	}
}
