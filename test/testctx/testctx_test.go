package testctx_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/weirnet/weir/test/testctx"
)

func TestTimeout(t *testing.T) {
	t.Run("deadline", func(t *testing.T) {
		ctx := testctx.Timeout(t, 10*time.Millisecond)
		if _, ok := ctx.Deadline(); !ok {
			t.Fatal("no deadline")
		}
		<-ctx.Done()
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err = %v, want DeadlineExceeded", ctx.Err())
		}
	})
	var ctx context.Context
	t.Run("live in later cleanups, canceled at the end", func(t *testing.T) {
		ctx = testctx.Timeout(t, time.Minute)
		t.Cleanup(func() {
			if err := ctx.Err(); err != nil {
				t.Errorf("in a cleanup registered later: Err = %v, want nil", err)
			}
		})
	})
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("after the test: Err = %v, want Canceled", ctx.Err())
	}
}
