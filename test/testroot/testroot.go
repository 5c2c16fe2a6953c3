// Package testroot decides what a test does when the machine cannot run
// it: tests that need root skip without it, unless WEIR_REQUIRE_ROOT=1
// (CI sets it), when they fail instead — a CI run as non-root must not pass
// with a third of the suite silently skipped. Long tests run only in
// `make soak` (WEIR_SOAK=1).
package testroot

import (
	"fmt"
	"os"
	"testing"
)

// Environment variables read by this package.
const (
	EnvRequireRoot = "WEIR_REQUIRE_ROOT"
	EnvSoak        = "WEIR_SOAK"
)

// Missing returns "" when the process runs as root, else a message saying
// why the test cannot run (why names what it needs root for) and whether
// it must fail (WEIR_REQUIRE_ROOT=1) rather than skip. For TestMain
// functions, which have no *testing.T.
func Missing(why string) (msg string, fail bool) {
	if os.Geteuid() == 0 {
		return "", false
	}
	fail = os.Getenv(EnvRequireRoot) == "1"
	if fail {
		return fmt.Sprintf("needs root: %s (%s=1: failing instead of skipping)", why, EnvRequireRoot), true
	}
	return "needs root: " + why, false
}

// Require skips t (or fails it, with WEIR_REQUIRE_ROOT=1) unless the
// process runs as root.
func Require(t testing.TB, why string) {
	t.Helper()
	msg, fail := Missing(why)
	switch {
	case msg == "":
	case fail:
		t.Fatal(msg)
	default:
		t.Skip(msg)
	}
}

// Soak reports whether long tests were asked for (WEIR_SOAK=1).
func Soak() bool { return os.Getenv(EnvSoak) == "1" }

// RequireSoak skips t unless WEIR_SOAK=1 (`make soak`).
func RequireSoak(t testing.TB) {
	t.Helper()
	if !Soak() {
		t.Skipf("long test: runs in `make soak` (%s=1)", EnvSoak)
	}
}
