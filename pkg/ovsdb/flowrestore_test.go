package ovsdb_test

import (
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/test/testctx"
)

// TestClearFlowRestoreWait sets other_config:flow-restore-wait with
// ovs-vsctl on a real ovsdb-server/ovs-vswitchd and checks that
// ClearFlowRestoreWait removes exactly that key, whatever its value, and
// is a no-op (twice) when it is absent.
func TestClearFlowRestoreWait(t *testing.T) {
	in, c := startNode(t)
	tests := []struct {
		name  string
		value string // "" leaves the key absent
	}{
		{"true", "true"},
		{"false", "false"},
		{"absent", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in.MustVsctl(t, "set", "Open_vSwitch", ".", "other_config:weir-keep=yes")
			if tc.value != "" {
				in.MustVsctl(t, "set", "Open_vSwitch", ".", "other_config:"+ovsdb.FlowRestoreWaitKey+"="+tc.value)
			} else {
				in.MustVsctl(t, "remove", "Open_vSwitch", ".", "other_config", ovsdb.FlowRestoreWaitKey)
			}
			for range 2 { // idempotent
				if err := c.ClearFlowRestoreWait(testctx.Timeout(t, testTimeout)); err != nil {
					t.Fatalf("ClearFlowRestoreWait: %v", err)
				}
				oc := in.MustVsctl(t, "get", "Open_vSwitch", ".", "other_config")
				if strings.Contains(oc, ovsdb.FlowRestoreWaitKey) {
					t.Fatalf("other_config still has %s: %s", ovsdb.FlowRestoreWaitKey, oc)
				}
				if !strings.Contains(oc, `weir-keep=yes`) {
					t.Fatalf("other_config lost an unrelated key: %s", oc)
				}
			}
		})
	}
}
