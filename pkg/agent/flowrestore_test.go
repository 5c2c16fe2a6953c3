package agent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/test/testctx"
)

// TestFlowRestoreWaitAfterVswitchdRestart restarts ovs-vswitchd the way the
// OVS container does (other_config:flow-restore-wait=true set before it
// starts) under the agent's reconnect watcher, and checks that the key is
// removed, and only once the agent's flows are back.
func TestFlowRestoreWaitAfterVswitchdRestart(t *testing.T) {
	n := newCNINode(t, "10.67.0.0/24")
	sb := n.add(t, "ns", "p", "") // some pod flows besides the base ones
	before := n.ovs.DumpFlows(t, "br-int")
	if len(before) < 10 {
		t.Fatalf("only %d flows installed", len(before))
	}
	log := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))
	ctx, stop := context.WithCancel(testctx.Timeout(t, 2*time.Minute))
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchReconnects(ctx, n.sw, n.db, log)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})

	n.ovs.MustVsctl(t, "set", "Open_vSwitch", ".", "other_config:"+ovsdb.FlowRestoreWaitKey+"=true")
	n.ovs.StopVswitchd(t)
	n.ovs.StartVswitchd(t)
	restarted := time.Now()
	for {
		oc := n.ovs.MustVsctl(t, "get", "Open_vSwitch", ".", "other_config")
		if !strings.Contains(oc, ovsdb.FlowRestoreWaitKey) {
			break
		}
		if time.Since(restarted) > 30*time.Second {
			t.Fatalf("flow-restore-wait still set 30s after ovs-vswitchd restarted: %s", oc)
		}
		time.Sleep(20 * time.Millisecond)
	}
	after := n.ovs.DumpFlows(t, "br-int")
	t.Logf("flow-restore-wait cleared %s after ovs-vswitchd was up again", time.Since(restarted).Round(time.Millisecond))
	if !slices.Equal(before, after) {
		t.Fatalf("when flow-restore-wait was cleared the flows were not all back:\nbefore (%d):\n%s\nafter (%d):\n%s",
			len(before), strings.Join(before, "\n"), len(after), strings.Join(after, "\n"))
	}
	if got := n.state(t, sb); got != "attached" {
		t.Fatalf("pod after the restart is %q, want attached", got)
	}
}

// flakyClearer fails a given number of times before it succeeds.
type flakyClearer struct {
	mu    sync.Mutex
	fails int
	calls int
}

func (f *flakyClearer) ClearFlowRestoreWait(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= f.fails {
		return errors.New("injected: ovsdb-server unavailable")
	}
	return nil
}

func TestClearFlowRestoreWaitRetries(t *testing.T) {
	tests := []struct {
		name      string
		fails     int
		timeout   time.Duration
		wantCalls int
	}{
		{"first try", 0, time.Minute, 1},
		{"after failures", 3, time.Minute, 4},
		{"gives up with the context", 1000, 250 * time.Millisecond, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &flakyClearer{fails: tc.fails}
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			clearFlowRestoreWait(ctx, f, ktesting.NewLogger(t, ktesting.NewConfig()))
			f.mu.Lock()
			defer f.mu.Unlock()
			if tc.wantCalls >= 0 && f.calls != tc.wantCalls {
				t.Fatalf("%d calls, want %d", f.calls, tc.wantCalls)
			}
			if tc.wantCalls < 0 && (ctx.Err() == nil || f.calls < 2 || f.calls > 5) {
				t.Fatalf("returned after %d calls with ctx error %v; want 2-5 calls and an expired context", f.calls, ctx.Err())
			}
		})
	}
}
