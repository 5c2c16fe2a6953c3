// Package oftest opens Weir's OpenFlow switch (pkg/openflow) on a bridge
// of a private OVS (test/ovstest) for tests. It is a package of its own,
// not part of test/ovstest, so that ovstest stays free of pkg/openflow and
// pkg/openflow's own tests can keep using ovstest.
package oftest

import (
	"context"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/test/ovstest"
)

// ReadyTimeout bounds how long Open waits for the switch to connect.
const ReadyTimeout = 20 * time.Second

// RetryInterval is the reconnect interval Switch uses: short, so tests that
// restart ovs-vswitchd do not wait long for the reconnection.
const RetryInterval = 50 * time.Millisecond

// Switch opens a Switch on bridge of in with RetryInterval; see Open.
func Switch(t testing.TB, in *ovstest.Instance, bridge string) *openflow.Switch {
	t.Helper()
	return Open(t, openflow.Config{MgmtSocket: in.MgmtSocket(bridge), RetryInterval: RetryInterval})
}

// Open opens a Switch with cfg, closes it at t's cleanup and waits up to
// ReadyTimeout for it to be connected; a failure fails t.
func Open(t testing.TB, cfg openflow.Config) *openflow.Switch {
	t.Helper()
	sw, err := openflow.Open(cfg)
	if err != nil {
		t.Fatalf("oftest: open switch on %s: %v", cfg.MgmtSocket, err)
	}
	t.Cleanup(sw.Close)
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	if err := sw.WaitReady(ctx); err != nil {
		t.Fatalf("oftest: %v", err)
	}
	return sw
}
