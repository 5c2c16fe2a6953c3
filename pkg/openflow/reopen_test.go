package openflow_test

import (
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/test/testctx"
)

// TestReopenSameBridge opens and closes a Switch on one bridge repeatedly in
// one process: ofnet's process-wide switch table must not hand a new Switch
// the previous one's session.
func TestReopenSameBridge(t *testing.T) {
	ovs, sw := newBridge(t)
	sw.Close()
	for i := 0; i < 5; i++ {
		s, err := openflow.Open(openflow.Config{MgmtSocket: ovs.MgmtSocket("br-int"), RetryInterval: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.WaitReady(testctx.Timeout(t, callTimeout)); err != nil {
			t.Fatalf("open #%d: %v", i+2, err)
		}
		if err := s.Barrier(testctx.Timeout(t, callTimeout)); err != nil {
			t.Fatalf("open #%d: barrier: %v", i+2, err)
		}
		s.Close()
		s.Close() // idempotent
	}
}
