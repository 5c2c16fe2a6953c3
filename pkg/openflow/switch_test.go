package openflow_test

import (
	"errors"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/test/oftest"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

func TestMain(m *testing.M) {
	openflow.RouteLibraryLogs(klog.Background())
	os.Exit(m.Run())
}

// newBridge starts a private OVS with bridge br-int and an open Switch.
func newBridge(t *testing.T) (*ovstest.Instance, *openflow.Switch) {
	t.Helper()
	ovs := ovstest.Start(t)
	ovs.AddBridge(t, "br-int")
	return ovs, oftest.Switch(t, ovs, "br-int")
}

// dumpFlows returns ovs-ofctl's flows on br-int (no stats, numbers), sorted.
func dumpFlows(t *testing.T, ovs *ovstest.Instance, args ...string) []string {
	t.Helper()
	return ovs.DumpFlows(t, "br-int", args...)
}

// callTimeout bounds a call into the Switch, which waits for a lost
// connection without end (see test/testctx).
const callTimeout = time.Minute

func buildAll(t *testing.T, bs ...*openflow.FlowBuilder) []*openflow.Flow {
	t.Helper()
	out := make([]*openflow.Flow, len(bs))
	for i, b := range bs {
		f, err := b.Done()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = f
	}
	return out
}

// TestCatalogOnRealSwitch installs every builder match/action into a real
// bridge and compares ovs-ofctl's dump, and our own flow-stats read-back,
// with the renderer.
func TestCatalogOnRealSwitch(t *testing.T) {
	ovs, sw := newBridge(t)
	// The group and meter actions need a group and a meter to exist.
	ovs.MustOfctl(t, "-O", "OpenFlow15", "add-group", "br-int", "group_id=1,type=all,bucket=actions=output:1")
	ovs.MustOfctl(t, "-O", "OpenFlow15", "add-meter", "br-int", "meter=1,pktps,band=type=drop,rate=100")

	cases := openflow.ExportedCatalog()
	var ops []openflow.FlowOp
	var want []string
	for _, c := range cases {
		f, err := c.Build.Done()
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		ops = append(ops, openflow.Add(f))
		want = append(want, f.String())
	}
	if err := sw.Apply(testctx.Timeout(t, callTimeout), ops); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	got := dumpFlows(t, ovs)
	sort.Strings(want)
	gotSet := map[string]bool{}
	for _, g := range got {
		gotSet[g] = true
	}
	wantSet := map[string]bool{}
	for _, w := range want {
		wantSet[w] = true
		if !gotSet[w] {
			t.Errorf("renderer says:   %s\n(not in ovs-ofctl dump)", w)
		}
	}
	for _, g := range got {
		if !wantSet[g] {
			t.Errorf("ovs-ofctl shows: %s\n(not rendered by us)", g)
		}
	}

	// Our own read-back (flow stats) must agree on table, cookie, match.
	stats, err := sw.DumpFlows(testctx.Timeout(t, callTimeout), openflow.FlowFilter{})
	if err != nil {
		t.Fatalf("DumpFlows: %v", err)
	}
	if len(stats) != len(cases) {
		t.Fatalf("DumpFlows returned %d flows, installed %d", len(stats), len(cases))
	}
	byCookie := map[uint64]string{}
	for _, c := range cases {
		f, _ := c.Build.Done()
		byCookie[f.Cookie] = f.Match()
	}
	for _, st := range stats {
		if w, ok := byCookie[st.Flow.Cookie]; !ok || st.Flow.Match() != w {
			t.Errorf("read-back cookie %#x table %d: match %q, want %q", st.Flow.Cookie, st.Flow.Table, st.Flow.Match(), w)
		}
	}
}

// TestBarrierAndTypedErrors: an invalid flow comes back to its caller as
// the OVS error; after Apply returns, a valid flow is visible to ovs-ofctl.
func TestBarrierAndTypedErrors(t *testing.T) {
	ovs, sw := newBridge(t)
	good := buildAll(t, openflow.NewFlow(0, 10).Cookie(0x77).MatchInPort(1).Output(2))[0]
	if err := sw.Apply(testctx.Timeout(t, callTimeout), []openflow.FlowOp{openflow.Add(good)}); err != nil {
		t.Fatal(err)
	}
	if got := dumpFlows(t, ovs, "cookie=0x77/-1"); len(got) != 1 || got[0] != good.String() {
		t.Fatalf("right after Apply, ovs-ofctl shows %q, want %q", got, good.String())
	}

	tests := []struct {
		name       string
		flow       *openflow.FlowBuilder
		typ, code  uint16
		typeName   string
		codeSubstr string
	}{
		{"output port beyond OFPP_MAX", openflow.NewFlow(0, 11).MatchInPort(1).Output(70000),
			openflow.ErrTypeBadAction, 4, "OFPET_BAD_ACTION", "OFPBAC_BAD_OUT_PORT"},
		{"nw_src without eth_type prerequisite", openflow.NewFlow(0, 12).MatchSrcIP([]byte{10, 0, 0, 1}).Output(1),
			openflow.ErrTypeBadMatch, 9, "OFPET_BAD_MATCH", "OFPBMC_BAD_PREREQ"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := buildAll(t, tc.flow)[0]
			err := sw.Apply(testctx.Timeout(t, callTimeout), []openflow.FlowOp{openflow.Add(f)})
			var oe *openflow.OVSError
			if !errors.As(err, &oe) {
				t.Fatalf("want *OVSError, got %v", err)
			}
			if oe.Type != tc.typ || oe.Code != tc.code || oe.TypeName() != tc.typeName || !strings.Contains(oe.CodeName(), tc.codeSubstr) {
				t.Fatalf("got %v (type %d code %d %s/%s)", err, oe.Type, oe.Code, oe.TypeName(), oe.CodeName())
			}
			if oe.Flow != f {
				t.Errorf("error names flow %v, want %v", oe.Flow, f)
			}
			if !openflow.IsOVSError(err, tc.typ, tc.code) {
				t.Errorf("IsOVSError false for %v", err)
			}
			t.Logf("error as the caller sees it: %v", err)
		})
	}
	// Unbundled flow_mods report errors the same way.
	bad := buildAll(t, openflow.NewFlow(0, 13).MatchInPort(1).Output(70000))[0]
	if err := sw.ApplyUnbundled(testctx.Timeout(t, callTimeout), []openflow.FlowOp{openflow.Add(bad)}); !openflow.IsOVSError(err, openflow.ErrTypeBadAction, 4) {
		t.Fatalf("ApplyUnbundled: want OFPBAC_BAD_OUT_PORT, got %v", err)
	}
	if err := sw.Barrier(testctx.Timeout(t, callTimeout)); err != nil {
		t.Fatal(err)
	}
	if got := dumpFlows(t, ovs); len(got) != 1 {
		t.Fatalf("only the good flow should be installed, got %q", got)
	}
}

// TestBundleAtomicity: a bundle with one invalid flow installs nothing.
func TestBundleAtomicity(t *testing.T) {
	ovs, sw := newBridge(t)
	var bs []*openflow.FlowBuilder
	for i := 0; i < 50; i++ {
		bs = append(bs, openflow.NewFlow(1, uint16(100+i)).Cookie(0x5).MatchInPort(uint32(i+1)).Output(2))
	}
	// The bad one sits in the middle.
	bs[25] = openflow.NewFlow(1, 125).Cookie(0x5).MatchInPort(26).Output(70000)
	flows := buildAll(t, bs...)
	ops := make([]openflow.FlowOp, len(flows))
	for i, f := range flows {
		ops[i] = openflow.Add(f)
	}
	err := sw.Apply(testctx.Timeout(t, callTimeout), ops)
	var oe *openflow.OVSError
	if !errors.As(err, &oe) || oe.Flow != flows[25] {
		t.Fatalf("want the OVS error for flow 25, got %v", err)
	}
	if got := dumpFlows(t, ovs); len(got) != 0 {
		t.Fatalf("atomic bundle with a bad flow installed %d flows: %q", len(got), got)
	}
	// Without the bad flow the same bundle installs all 49.
	ops = append(ops[:25], ops[26:]...)
	if err := sw.Apply(testctx.Timeout(t, callTimeout), ops); err != nil {
		t.Fatal(err)
	}
	if got := dumpFlows(t, ovs); len(got) != 49 {
		t.Fatalf("installed %d flows, want 49", len(got))
	}
}

// TestCacheSyncAndCookies: Install/Sync/Uninstall keep OVS equal to the
// cache; delete-by-cookie and read-back-by-cookie select one owner.
func TestCacheSyncAndCookies(t *testing.T) {
	ovs, sw := newBridge(t)
	alloc := openflow.NewCookieAllocator(3)
	cA, _ := alloc.New(1)
	cB, _ := alloc.New(1)
	flowsA := buildAll(t,
		openflow.NewFlow(2, 100).Cookie(uint64(cA)).MatchInPort(1).Output(2),
		openflow.NewFlow(2, 101).Cookie(uint64(cA)).MatchInPort(3).Output(2))
	flowsB := buildAll(t, openflow.NewFlow(2, 100).Cookie(uint64(cB)).MatchInPort(5).Output(6))
	ctx := testctx.Timeout(t, callTimeout)
	if err := sw.Install(ctx, "A", flowsA...); err != nil {
		t.Fatal(err)
	}
	if err := sw.Install(ctx, "B", flowsB...); err != nil {
		t.Fatal(err)
	}
	if n := len(dumpFlows(t, ovs)); n != 3 {
		t.Fatalf("%d flows, want 3", n)
	}
	st, err := sw.DumpFlows(ctx, openflow.FlowFilter{Cookie: uint64(cA), CookieMask: openflow.CookieOwnerMask})
	if err != nil || len(st) != 2 {
		t.Fatalf("read-back by cookie: %d flows, err %v", len(st), err)
	}
	// Sync A down to a changed single flow: one deleted, one replaced.
	newA := buildAll(t, openflow.NewFlow(2, 100).Cookie(uint64(cA)).MatchInPort(1).Output(7))
	if err := sw.Sync(ctx, "A", newA...); err != nil {
		t.Fatal(err)
	}
	got := dumpFlows(t, ovs, "table=2")
	want := []string{newA[0].String(), flowsB[0].String()}
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after Sync:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err := sw.Uninstall(ctx, "A"); err != nil {
		t.Fatal(err)
	}
	if sw.Cache().OwnerLen("A") != 0 || sw.Cache().Len() != 1 {
		t.Fatalf("cache after Uninstall: owners %v len %d", sw.Cache().Owners(), sw.Cache().Len())
	}
	if err := sw.Apply(ctx, []openflow.FlowOp{openflow.DeleteByCookie(uint64(cB), openflow.CookieOwnerMask)}); err != nil {
		t.Fatal(err)
	}
	if got := dumpFlows(t, ovs); len(got) != 0 {
		t.Fatalf("flows left: %q", got)
	}
}

// TestReconnectReplay kills ovs-vswitchd, keeps it down for more than ten
// dial attempts, restarts it, and expects the connection back by itself
// with every cached flow replayed.
func TestReconnectReplay(t *testing.T) {
	ovs, sw := newBridge(t)
	flows := buildAll(t,
		openflow.NewFlow(0, 10).Cookie(0x1).MatchInPort(1).Output(2),
		openflow.NewFlow(3, 20).Cookie(0x2).MatchProtocol(openflow.ProtocolIP).CT(openflow.CT(7, 4)))
	if err := sw.Install(testctx.Timeout(t, callTimeout), "owner", flows...); err != nil {
		t.Fatal(err)
	}
	before := dumpFlows(t, ovs)
	gen := sw.Generation()

	ovs.StopVswitchd(t)
	waitFor(t, 10*time.Second, "state connecting", func() bool { return sw.State() == openflow.StateConnecting })
	if err := sw.Apply(testctx.Timeout(t, callTimeout), []openflow.FlowOp{openflow.Add(flows[0])}); !errors.Is(err, openflow.ErrNotConnected) {
		t.Fatalf("Apply while disconnected: want ErrNotConnected, got %v", err)
	}
	// RetryInterval is 50ms: 1s down means ~20 failed dials, more than
	// ofnet's default limit of 10.
	time.Sleep(1 * time.Second)
	if f := sw.DialFailures(); f <= 10 {
		t.Fatalf("only %d failed dials while vswitchd was down, want > 10", f)
	}
	ovs.StartVswitchd(t)
	select {
	case g := <-sw.Reconnected():
		if g <= gen {
			t.Fatalf("generation %d after reconnect, was %d", g, gen)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no reconnect signal within 20s")
	}
	if after := dumpFlows(t, ovs); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("after replay:\n%s\nbefore:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
