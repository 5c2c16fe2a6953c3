// Package testctx gives tests a context with a deadline, for calls that by
// design wait without one: the OVSDB client and the OpenFlow switch wait
// for a lost connection to come back, ovsdb.Connect for the server to
// start. Where nothing can wait like that, use t.Context().
//
// A deadline turns such a hang into a failure at the call, with every
// t.Cleanup run (daemons stopped, namespaces deleted); without one the
// test binary's -timeout panics and no cleanup runs.
package testctx

import (
	"context"
	"testing"
	"time"
)

// Timeout returns a context that ends after d, or at t's cleanup. Unlike
// t.Context(), which is canceled before any cleanup runs, it is still live
// in cleanups registered after this call (they run first), so a cleanup may
// use it to undo what the test did.
func Timeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
