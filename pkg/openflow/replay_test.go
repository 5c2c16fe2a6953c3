package openflow_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/test/oftest"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
	"github.com/weirnet/weir/test/testroot"
)

// withCookie returns a copy of f with another cookie (a built Flow is
// immutable, so the copy shares its match and actions).
func withCookie(f *openflow.Flow, cookie uint64) *openflow.Flow {
	g := *f
	g.Cookie = cookie
	return &g
}

// ownerCookie is owner o's cookie in the replay tests (round 1).
func ownerCookie(o int) uint64 { return uint64(openflow.MakeCookie(1, 1, uint64(o+1))) }

// ownersOf splits flows into owners of perOwner flows named prefix-N,
// each with its own cookie (first numbers owners from).
func ownersOf(prefix string, first int, flows []*openflow.Flow, perOwner int) (map[string][]*openflow.Flow, []string) {
	owners := map[string][]*openflow.Flow{}
	var names []string
	for o := 0; o*perOwner < len(flows); o++ {
		name := prefix + "-" + strconv.Itoa(o)
		c := ownerCookie(first + o)
		for _, f := range flows[o*perOwner : min((o+1)*perOwner, len(flows))] {
			owners[name] = append(owners[name], withCookie(f, c))
		}
		names = append(names, name)
	}
	return owners, names
}

// until retries op (a cache change racing with a reconnect may fail with
// ErrNotConnected, or with a bundle opened on the old connection) until it
// succeeds or ctx ends; it returns the failures seen.
func until(ctx context.Context, op func() error) (failures int, err error) {
	for {
		err := op()
		if err == nil {
			return failures, nil
		}
		failures++
		select {
		case <-ctx.Done():
			return failures, fmt.Errorf("still failing when the test gave up: %w", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// switchFlowCount is ovs-ofctl's flow count on br-int: an oracle
// independent of this package's flow-stats decoding.
func switchFlowCount(t *testing.T, ovs *ovstest.Instance) int {
	t.Helper()
	out := ovs.MustOfctl(t, "-O", "OpenFlow15", "dump-aggregate", "br-int")
	m := regexp.MustCompile(`flow_count=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no flow_count in ovs-ofctl dump-aggregate output %q", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// reconnect forces a new connection generation the way the case says.
func reconnect(t *testing.T, how string, ovs *ovstest.Instance, sw *openflow.Switch) {
	t.Helper()
	switch how {
	case "relay dropped":
		openflow.DropConnection(sw)
	case "vswitchd restarted":
		ovs.StopVswitchd(t)
		ovs.StartVswitchd(t)
	default:
		t.Fatalf("unknown reconnect %q", how)
	}
}

// waitGeneration waits until the Switch has a connection newer than gen.
func waitGeneration(t *testing.T, sw *openflow.Switch, gen uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for sw.Generation() <= gen {
		if time.Now().After(deadline) {
			t.Fatalf("no new connection after generation %d within 30s", gen)
		}
		time.Sleep(time.Millisecond)
	}
}

func waitReconnected(t *testing.T, sw *openflow.Switch, d time.Duration) uint64 {
	t.Helper()
	select {
	case g := <-sw.Reconnected():
		return g
	case <-time.After(d):
		t.Fatalf("no Reconnected signal within %v", d)
		return 0
	}
}

// requireConverged checks that the switch holds exactly the cache: Verify
// finds nothing, and ovs-ofctl's flow count (an oracle independent of our
// flow-stats decoding) is the cache's length, which is want.
func requireConverged(t *testing.T, ovs *ovstest.Instance, sw *openflow.Switch, want int) {
	t.Helper()
	start := time.Now()
	ds, err := sw.Verify(testctx.Timeout(t, callTimeout), nil)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	t.Logf("Verify of %d cached flows took %v", sw.Cache().Len(), time.Since(start).Round(time.Millisecond))
	for i, d := range ds {
		if i == 10 {
			t.Errorf("... and %d more", len(ds)-10)
			break
		}
		t.Errorf("discrepancy: %v", d)
	}
	if got := sw.Cache().Len(); got != want {
		t.Errorf("cache holds %d flows, want %d", got, want)
	}
	if n := switchFlowCount(t, ovs); n != sw.Cache().Len() {
		t.Errorf("switch has %d flows (ovs-ofctl dump-aggregate), cache %d", n, sw.Cache().Len())
	}
}

// TestReplayConvergesUnderChanges caches 100,000 flows (1,000 owners),
// forces a reconnect and, while the cache is replayed, uninstalls 300
// owners, shrinks 100 and adds 100 new ones. Afterwards the switch must
// hold exactly the cache. Before replays were exclusive with cache changes,
// an Uninstall landing between the replay's read of the cache and the
// batch holding that owner's flows was undone by the batch (orphans).
func TestReplayConvergesUnderChanges(t *testing.T) {
	testroot.Require(t, "runs a private ovs-vswitchd")
	const (
		total, perOwner = 100000, 100
		uninstalled     = 300 // owners 0..299
		shrunk          = 100 // owners 300..399 keep half their flows
		added           = 100 // new owners of perOwner fresh flows
	)
	all := benchFlows(t, total+added*perOwner, 0)
	cached, names := ownersOf("owner", 0, all[:total], perOwner)
	fresh, freshNames := ownersOf("new", len(names), all[total:], perOwner)
	want := total - uninstalled*perOwner - shrunk*perOwner/2 + added*perOwner

	for _, how := range []string{"relay dropped", "vswitchd restarted"} {
		t.Run(how, func(t *testing.T) {
			ovs, sw := newBridge(t)
			ctx := testctx.Timeout(t, callTimeout)
			start := time.Now()
			if err := sw.SyncOwners(ctx, cached); err != nil {
				t.Fatal(err)
			}
			t.Logf("installed %d flows of %d owners in %v", sw.Cache().Len(), len(cached), time.Since(start).Round(time.Millisecond))

			gen := sw.Generation()
			reconnect(t, how, ovs, sw)
			waitGeneration(t, sw, gen)
			connected := time.Now()

			// The changes start as soon as the new connection is up, so
			// they run while the cache is replayed (or, now, wait for it).
			var wg sync.WaitGroup
			var failures, beforeSignal atomic.Int64
			var signalled atomic.Bool
			errs := make(chan error, 2)
			change := func(what string, op func() error) {
				n, err := until(ctx, op)
				failures.Add(int64(n))
				if err != nil {
					errs <- fmt.Errorf("%s: %w", what, err)
				}
				if !signalled.Load() {
					beforeSignal.Add(1)
				}
			}
			wg.Add(2)
			go func() {
				defer wg.Done()
				for _, name := range names[:uninstalled] {
					change("uninstall "+name, func() error { return sw.Uninstall(ctx, name) })
				}
			}()
			go func() {
				defer wg.Done()
				for i, name := range names[uninstalled : uninstalled+shrunk] {
					change("shrink "+name, func() error { return sw.Sync(ctx, name, cached[name][:perOwner/2]...) })
					fn := freshNames[i]
					change("sync "+fn, func() error { return sw.Sync(ctx, fn, fresh[fn]...) })
				}
			}()
			g := waitReconnected(t, sw, 90*time.Second)
			signalled.Store(true)
			replayed := time.Since(connected)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if g <= gen {
				t.Fatalf("Reconnected delivered generation %d, was %d before", g, gen)
			}
			t.Logf("replay of %d flows (%s) took %v; %d of %d changes completed before the Reconnected signal, %d attempts failed and were retried",
				total, how, replayed.Round(time.Millisecond), beforeSignal.Load(), uninstalled+2*shrunk, failures.Load())
			requireConverged(t, ovs, sw, want)
		})
	}
}

// TestReplayRemovesUnansweredChanges: a change whose bundle OVS committed
// but whose answer was lost with the connection leaves the cache as it was.
// The replay must then make the switch match the cache again: flows the
// change added are deleted unless an owner caches them (then the cached
// version is re-added), flows it deleted come back.
func TestReplayRemovesUnansweredChanges(t *testing.T) {
	testroot.Require(t, "runs a private ovs-vswitchd")
	base := benchFlows(t, 40, 0)
	a := base[:10]   // owner A's flows (cookie A)
	b := base[10:15] // fresh flows (cookie B)
	cA, cB := ownerCookie(0), ownerCookie(1)
	tests := []struct {
		name   string
		change func(ctx context.Context, sw *openflow.Switch) error
		// onSwitch is the flow count OVS holds right after the change
		// (the commit did happen), before the replay.
		onSwitch int
	}{
		{"Sync adding an owner", func(ctx context.Context, sw *openflow.Switch) error {
			return sw.Sync(ctx, "B", withCookies(b, cB)...)
		}, 15},
		{"Install", func(ctx context.Context, sw *openflow.Switch) error {
			return sw.Install(ctx, "B", withCookies(b, cB)...)
		}, 15},
		{"Sync shrinking an owner", func(ctx context.Context, sw *openflow.Switch) error {
			return sw.Sync(ctx, "A", withCookies(a[:4], cA)...)
		}, 4},
		{"SyncOwners moving a flow", func(ctx context.Context, sw *openflow.Switch) error {
			// B takes A's last flow (same table, priority, match; cookie
			// B) and adds its own.
			return sw.SyncOwners(ctx, map[string][]*openflow.Flow{
				"A": withCookies(a[:9], cA),
				"B": withCookies(append([]*openflow.Flow{a[9]}, b...), cB),
			})
		}, 15},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ovs, sw := newBridge(t)
			ctx := testctx.Timeout(t, callTimeout)
			if err := sw.Sync(ctx, "A", withCookies(a, cA)...); err != nil {
				t.Fatal(err)
			}
			gen := sw.Generation()
			var fired atomic.Bool
			openflow.SetCommitHook(sw, func() error {
				if fired.Swap(true) {
					return nil
				}
				openflow.DropConnection(sw)
				return openflow.ErrNotConnected
			})
			t.Cleanup(func() { openflow.SetCommitHook(sw, nil) })
			if err := tc.change(ctx, sw); !errors.Is(err, openflow.ErrNotConnected) {
				t.Fatalf("change with its answer lost: want ErrNotConnected, got %v", err)
			}
			// The change did take effect in OVS (checked before the new
			// connection's replay can have run; ovs-ofctl has its own).
			n := switchFlowCount(t, ovs)
			switch {
			case sw.Generation() != gen:
				t.Logf("reconnected before OVS's flows could be counted (%d)", n)
			case n != tc.onSwitch:
				t.Fatalf("after the unanswered change OVS has %d flows, want %d", n, tc.onSwitch)
			}
			if g := waitReconnected(t, sw, 30*time.Second); g <= gen {
				t.Fatalf("Reconnected delivered generation %d, was %d", g, gen)
			}
			if n := sw.Cache().InDoubt(); n != 0 {
				t.Errorf("%d flows still in doubt after the replay", n)
			}
			requireConverged(t, ovs, sw, 10)
		})
	}
}

func withCookies(flows []*openflow.Flow, cookie uint64) []*openflow.Flow {
	out := make([]*openflow.Flow, len(flows))
	for i, f := range flows {
		out[i] = withCookie(f, cookie)
	}
	return out
}

// TestReplayRetries: a failed replay is retried with backoff until it
// succeeds, and Reconnected delivers the generation only then; a replay
// whose connection dies is taken over by the next generation's, and the
// dead generation is never delivered.
func TestReplayRetries(t *testing.T) {
	testroot.Require(t, "runs a private ovs-vswitchd")
	injected := errors.New("injected replay failure")
	tests := []struct {
		name string
		// fail decides attempt's fate in the first replayed generation
		// (first); it may act on sw.
		fail func(sw *openflow.Switch, attempt int) error
		// attempts in the first generation; sameGen: the first generation
		// is the one delivered.
		attempts int
		sameGen  bool
		minWait  time.Duration
	}{
		{"three injected failures", func(_ *openflow.Switch, attempt int) error {
			if attempt <= 3 {
				return injected
			}
			return nil
		}, 4, true, 100*time.Millisecond + 200*time.Millisecond + 400*time.Millisecond},
		{"connection killed mid-replay", func(sw *openflow.Switch, attempt int) error {
			if attempt == 1 {
				openflow.DropConnection(sw) // the replay's bundles fail
			}
			return nil
		}, 0, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ovs, sw := newBridge(t)
			ctx := testctx.Timeout(t, callTimeout)
			cached, _ := ownersOf("owner", 0, benchFlows(t, 2000, 0), 100)
			if err := sw.SyncOwners(ctx, cached); err != nil {
				t.Fatal(err)
			}
			gen := sw.Generation()
			var mu sync.Mutex
			var first uint64
			var times []time.Time // of the first generation's attempts
			openflow.SetReplayHook(sw, func(g uint64, attempt int) error {
				mu.Lock()
				defer mu.Unlock()
				if first == 0 {
					first = g
				}
				if g != first {
					return nil
				}
				times = append(times, time.Now())
				return tc.fail(sw, attempt)
			})
			t.Cleanup(func() { openflow.SetReplayHook(sw, nil) })
			// A restart empties the switch: only a successful replay
			// brings the flows back.
			reconnect(t, "vswitchd restarted", ovs, sw)
			g := waitReconnected(t, sw, 40*time.Second)
			got := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if tc.sameGen && g != first {
				t.Errorf("Reconnected delivered generation %d, want %d (the retried one)", g, first)
			}
			if !tc.sameGen && g <= first {
				t.Errorf("Reconnected delivered generation %d, want one after %d (whose connection died)", g, first)
			}
			if g <= gen {
				t.Errorf("generation %d is not newer than %d", g, gen)
			}
			if tc.attempts > 0 && len(times) != tc.attempts {
				t.Errorf("%d replay attempts in generation %d, want %d", len(times), first, tc.attempts)
			}
			if len(times) > 0 {
				if waited := times[len(times)-1].Sub(times[0]); waited < tc.minWait {
					t.Errorf("attempts spread over %v, want >= %v of backoff", waited, tc.minWait)
				}
				if got.Before(times[len(times)-1]) {
					t.Errorf("Reconnected arrived before the last attempt")
				}
			}
			t.Logf("generation %d: %d attempts; delivered generation %d", first, len(times), g)
			select {
			case g2 := <-sw.Reconnected():
				t.Errorf("a second Reconnected signal (generation %d) for one reconnect", g2)
			default:
			}
			requireConverged(t, ovs, sw, 2000)
		})
	}
}

// TestVerify: the catalog (every match field the builder has) installed
// through the cache verifies clean, whatever order and encoding OVS
// reports the matches in; a flow added behind the cache's back is an
// orphan, a cached flow deleted behind its back is missing, and rounds
// select which flows count.
func TestVerify(t *testing.T) {
	testroot.Require(t, "runs a private ovs-vswitchd")
	ovs, sw := newBridge(t)
	ovs.MustOfctl(t, "-O", "OpenFlow15", "add-group", "br-int", "group_id=1,type=all,bucket=actions=output:1")
	ovs.MustOfctl(t, "-O", "OpenFlow15", "add-meter", "br-int", "meter=1,pktps,band=type=drop,rate=100")
	ctx := testctx.Timeout(t, callTimeout)
	var catalog []*openflow.Flow
	for _, c := range openflow.ExportedCatalog() {
		f, err := c.Build.Done()
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		catalog = append(catalog, withCookie(f, uint64(openflow.MakeCookie(1, 2, uint64(len(catalog)+1)))))
	}
	if err := sw.Install(ctx, "catalog", catalog...); err != nil {
		t.Fatal(err)
	}
	requireConverged(t, ovs, sw, len(catalog))

	orphan := buildAll(t, openflow.NewFlow(5, 77).Cookie(uint64(openflow.MakeCookie(9, 1, 1))).MatchInPort(3).
		MatchProtocol(openflow.ProtocolIP).MatchDstIP(net.IPv4(10, 244, 1, 5)).Output(1))[0]
	gone := catalog[0]
	if err := sw.Apply(ctx, []openflow.FlowOp{openflow.Add(orphan), openflow.Delete(gone)}); err != nil {
		t.Fatal(err)
	}
	wantOrphan := openflow.FlowDiscrepancy{Kind: "orphan", Table: 5, Priority: 77, Cookie: orphan.Cookie,
		Match: "ip,in_port=3,nw_dst=10.244.1.5"}
	goneMatch := regexp.MustCompile(`^priority=\d+,?`).ReplaceAllString(gone.Match(), "")
	wantMissing := openflow.FlowDiscrepancy{Kind: "missing", Owner: "catalog", Table: gone.Table, Priority: gone.Priority,
		Cookie: gone.Cookie, Match: goneMatch}
	tests := []struct {
		name   string
		rounds []uint8
		want   []openflow.FlowDiscrepancy
	}{
		{"all rounds", nil, []openflow.FlowDiscrepancy{wantMissing, wantOrphan}},
		{"the cache's round", []uint8{1}, []openflow.FlowDiscrepancy{wantMissing}},
		{"the orphan's round", []uint8{9}, []openflow.FlowDiscrepancy{wantOrphan}},
		{"another round", []uint8{4}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sw.Verify(ctx, tc.rounds)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("Verify(%v):\n got %v\nwant %v", tc.rounds, got, tc.want)
			}
		})
	}
}

// BenchmarkReplay measures the replay of 100,000 cached flows (1,000
// owners) after the relay connection is dropped: from the new connection
// to the Reconnected signal; and one Verify of them afterwards.
func BenchmarkReplay(b *testing.B) {
	testroot.Require(b, "runs a private ovs-vswitchd")
	ovs := ovstest.Start(b)
	ovs.AddBridge(b, "br-int")
	sw := oftest.Switch(b, ovs, "br-int")
	ctx := testctx.Timeout(b, benchTimeout)
	cached, _ := ownersOf("owner", 0, benchFlows(b, 100000, 0), 100)
	if err := sw.SyncOwners(ctx, cached); err != nil {
		b.Fatal(err)
	}
	var elapsed, vsCPU time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		gen := sw.Generation()
		openflow.DropConnection(sw)
		for sw.Generation() <= gen {
			time.Sleep(time.Millisecond)
		}
		t0, v0 := time.Now(), procCPU(ovs.VswitchdPID())
		select {
		case <-sw.Reconnected():
		case <-time.After(2 * time.Minute):
			b.Fatal("no replay within 2 minutes")
		}
		elapsed += time.Since(t0)
		vsCPU += procCPU(ovs.VswitchdPID()) - v0
	}
	b.StopTimer()
	t0 := time.Now()
	ds, err := sw.Verify(ctx, nil)
	if err != nil || len(ds) != 0 {
		b.Fatalf("Verify after the replays: %d discrepancies, err %v", len(ds), err)
	}
	b.ReportMetric(float64(time.Since(t0).Milliseconds()), "verify-ms")
	b.ReportMetric(float64(elapsed.Milliseconds())/float64(b.N), "replay-ms/op")
	b.ReportMetric(float64(vsCPU.Milliseconds())/float64(b.N), "vswitchd-cpu-ms/op")
}
