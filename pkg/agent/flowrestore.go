package agent

import (
	"context"
	"time"

	"k8s.io/klog/v2"
)

// flowRestoreClearer removes OVS's flow-restore-wait (an *ovsdb.Client).
type flowRestoreClearer interface {
	ClearFlowRestoreWait(ctx context.Context) error
}

// Backoff of clearFlowRestoreWait's retries.
const (
	flowRestoreRetryBase = 100 * time.Millisecond
	flowRestoreRetryMax  = 5 * time.Second
)

// clearFlowRestoreWait tells ovs-vswitchd that the agent's flows are back
// (after an OpenFlow reconnect replayed them), retrying with backoff until
// it succeeds or ctx ends: while the key stays set, a restarted
// ovs-vswitchd forwards nothing.
func clearFlowRestoreWait(ctx context.Context, db flowRestoreClearer, log klog.Logger) {
	delay := flowRestoreRetryBase
	for attempt := 1; ; attempt++ {
		err := db.ClearFlowRestoreWait(ctx)
		if err == nil {
			log.Info("Flows restored; cleared flow-restore-wait", "attempts", attempt)
			return
		}
		if ctx.Err() != nil {
			return
		}
		log.Error(err, "Clearing flow-restore-wait failed; retrying", "attempt", attempt, "retryIn", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, flowRestoreRetryMax)
	}
}
