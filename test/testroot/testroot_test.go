package testroot

import (
	"os"
	"testing"
)

func TestMissing(t *testing.T) {
	root := os.Geteuid() == 0
	for _, tc := range []struct {
		name     string
		require  string
		wantFail bool
	}{
		{"default skips", "", false},
		{"required fails", "1", true},
		{"other value skips", "yes", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvRequireRoot, tc.require)
			msg, fail := Missing("testing")
			if root {
				if msg != "" || fail {
					t.Fatalf("as root: Missing = %q, %v; want \"\", false", msg, fail)
				}
				return
			}
			if msg == "" || fail != tc.wantFail {
				t.Fatalf("as non-root with %s=%q: Missing = %q, %v; want a message and fail=%v", EnvRequireRoot, tc.require, msg, fail, tc.wantFail)
			}
		})
	}
}

func TestSoak(t *testing.T) {
	t.Setenv(EnvSoak, "")
	if Soak() {
		t.Fatal("Soak() true without WEIR_SOAK")
	}
	t.Setenv(EnvSoak, "1")
	if !Soak() {
		t.Fatal("Soak() false with WEIR_SOAK=1")
	}
}
