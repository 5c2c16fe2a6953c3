package ovsdb_test

import (
	"errors"
	"testing"

	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/test/testctx"
)

// TestBridgeFailMode creates a standalone bridge (the underlay bridge of the
// userspace datapath), reconciles it back to secure (the default), and
// rejects an unknown fail mode.
func TestBridgeFailMode(t *testing.T) {
	t.Parallel()
	in, c := startNode(t)
	ctx := testctx.Timeout(t, testTimeout)
	cfg := ovsdb.BridgeConfig{Name: "br-phy", DatapathType: ovsdb.DatapathNetdev, FailMode: ovsdb.FailModeStandalone}
	if _, err := c.EnsureBridge(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if got := vsctlGet(t, in, "Bridge", "br-phy", "fail_mode"); got != "standalone" {
		t.Errorf("fail_mode = %s, want standalone", got)
	}
	cfg.FailMode = ""
	if _, err := c.EnsureBridge(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if got := vsctlGet(t, in, "Bridge", "br-phy", "fail_mode"); got != "secure" {
		t.Errorf("fail_mode = %s after reconcile with the default, want secure", got)
	}
	cfg.FailMode = "open"
	if _, err := c.EnsureBridge(ctx, cfg); !errors.Is(err, ovsdb.ErrInvalidArgument) {
		t.Errorf("fail mode %q: got %v, want ErrInvalidArgument", cfg.FailMode, err)
	}
}
