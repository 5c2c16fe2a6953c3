package oftest_test

import (
	"testing"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/test/oftest"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

// TestSwitch opens a switch on a real bridge: it is ready, answers a
// barrier, and a second one can be opened after the first closed.
func TestSwitch(t *testing.T) {
	ovs := ovstest.Start(t)
	ovs.AddBridge(t, "br-int")
	t.Run("first", func(t *testing.T) {
		sw := oftest.Switch(t, ovs, "br-int")
		if sw.State() != openflow.StateReady {
			t.Fatalf("State() = %v after Switch, want ready", sw.State())
		}
		if err := sw.Barrier(testctx.Timeout(t, oftest.ReadyTimeout)); err != nil {
			t.Fatal(err)
		}
	})
	sw := oftest.Open(t, openflow.Config{MgmtSocket: ovs.MgmtSocket("br-int")})
	if err := sw.Barrier(testctx.Timeout(t, oftest.ReadyTimeout)); err != nil {
		t.Fatal(err)
	}
}
