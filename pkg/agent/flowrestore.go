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
	attempts, err := retryWithBackoff(ctx, flowRestoreRetryBase, flowRestoreRetryMax, time.Time{}, db.ClearFlowRestoreWait,
		func(err error, attempt int, retryIn time.Duration) {
			log.Error(err, "Clearing flow-restore-wait failed; retrying", "attempt", attempt, "retryIn", retryIn)
		})
	if err == nil {
		log.Info("Flows restored; cleared flow-restore-wait", "attempts", attempts)
	}
}

// retryWithBackoff calls f until it succeeds, ctx ends or (if deadline is
// not zero) deadline has passed, sleeping base, 2·base, ... up to max
// between attempts and reporting each failure that will be retried to
// onRetry. It returns the number of attempts and the last error (nil on
// success, ctx.Err() if ctx ended).
func retryWithBackoff(ctx context.Context, base, max time.Duration, deadline time.Time, f func(context.Context) error,
	onRetry func(err error, attempt int, retryIn time.Duration)) (int, error) {
	delay := base
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil {
			return attempt, nil
		}
		if ctx.Err() != nil {
			return attempt, ctx.Err()
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return attempt, err
		}
		onRetry(err, attempt, delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return attempt, ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, max)
	}
}
