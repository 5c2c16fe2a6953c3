package openflow_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/test/testctx"
)

// TestSyncOwners changes several owners in one bundle: owners are
// replaced, emptied (uninstalled) or left alone, a flow moves between
// owners, and a change OVS rejects leaves switch and cache untouched.
func TestSyncOwners(t *testing.T) {
	ovs, sw := newBridge(t)
	f := func(prio uint16, port uint32, cookie uint64) *openflow.Flow {
		return buildAll(t, openflow.NewFlow(0, prio).Cookie(cookie).MatchInPort(port).Output(9))[0]
	}
	ctx := testctx.Timeout(t, callTimeout)
	if err := sw.Sync(ctx, "c", f(10, 30, 3)); err != nil {
		t.Fatal(err)
	}
	if err := sw.SyncOwners(ctx, map[string][]*openflow.Flow{
		"a": {f(10, 1, 1), f(10, 2, 1)},
		"b": {f(10, 3, 2)},
	}); err != nil {
		t.Fatal(err)
	}
	want := func(lines ...string) {
		t.Helper()
		got := dumpFlows(t, ovs)
		slices.Sort(lines)
		if !slices.Equal(got, lines) {
			t.Fatalf("flows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(lines, "\n"))
		}
	}
	const (
		a1 = "cookie=0x1, priority=10,in_port=1 actions=output:9"
		a2 = "cookie=0x1, priority=10,in_port=2 actions=output:9"
		b3 = "cookie=0x2, priority=10,in_port=3 actions=output:9"
		c  = "cookie=0x3, priority=10,in_port=30 actions=output:9"
	)
	want(a1, a2, b3, c)
	// a gives in_port=2 to b, b drops in_port=3: one bundle.
	if err := sw.SyncOwners(ctx, map[string][]*openflow.Flow{
		"a": {f(10, 1, 1)},
		"b": {f(10, 2, 2)},
	}); err != nil {
		t.Fatal(err)
	}
	want(a1, "cookie=0x2, priority=10,in_port=2 actions=output:9", c)
	// A flow OVS rejects (a group that does not exist) fails the whole
	// change.
	bad := buildAll(t, openflow.NewFlow(0, 10).Cookie(7).MatchInPort(4).Group(99))[0]
	err := sw.SyncOwners(ctx, map[string][]*openflow.Flow{"a": nil, "d": {bad}})
	if err == nil {
		t.Fatal("SyncOwners with a rejected flow succeeded")
	}
	want(a1, "cookie=0x2, priority=10,in_port=2 actions=output:9", c)
	if owners := sw.Cache().Owners(); !slices.Equal(owners, []string{"a", "b", "c"}) {
		t.Fatalf("cache owners %v after a failed change", owners)
	}
	// Emptying owners uninstalls them and drops them from the cache.
	if err := sw.SyncOwners(ctx, map[string][]*openflow.Flow{"a": nil, "b": {}}); err != nil {
		t.Fatal(err)
	}
	want(c)
	if owners := sw.Cache().Owners(); !slices.Equal(owners, []string{"c"}) {
		t.Fatalf("cache owners %v", owners)
	}
}
