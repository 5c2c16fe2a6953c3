package agent

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/podnet"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

func TestPickRound(t *testing.T) {
	all := map[uint8]int{}
	for r := 1; r <= 255; r++ {
		all[uint8(r)] = 1
	}
	tests := []struct {
		name      string
		present   map[uint8]int
		latest    uint8
		want      uint8
		wantStale []uint8
		wantErr   error
	}{
		{name: "empty bridge", want: 1},
		{name: "one previous run", present: map[uint8]int{4: 30}, latest: 4, want: 5, wantStale: []uint8{4}},
		{name: "two restarts before the cleanup", present: map[uint8]int{4: 5, 5: 30}, latest: 5, want: 6,
			wantStale: []uint8{4, 5}},
		{name: "wrap-around skips 0", present: map[uint8]int{255: 30}, latest: 255, want: 1, wantStale: []uint8{255}},
		{name: "wrap-around skips present rounds", present: map[uint8]int{255: 30, 1: 3, 2: 3}, latest: 255, want: 3,
			wantStale: []uint8{1, 2, 255}},
		{name: "next round still has flows", present: map[uint8]int{7: 2, 6: 30}, latest: 6, want: 8,
			wantStale: []uint8{6, 7}},
		{name: "no base flows", present: map[uint8]int{1: 3, 9: 4}, want: 2, wantStale: []uint8{1, 9}},
		{name: "every round taken", present: all, latest: 9, wantErr: errNoFreeRound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := bridgeRounds{present: tc.present, latest: tc.latest}
			if b.present == nil {
				b.present = map[uint8]int{}
			}
			got, err := pickRound(b)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("pickRound error %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if got != tc.want {
				t.Fatalf("pickRound = %d, want %d", got, tc.want)
			}
			if b.present[got] != 0 {
				t.Fatalf("picked round %d has flows", got)
			}
			if stale := staleRounds(b, got); !slices.Equal(stale, tc.wantStale) {
				t.Fatalf("staleRounds = %v, want %v", stale, tc.wantStale)
			}
		})
	}
}

func TestTallyRounds(t *testing.T) {
	base := func(r uint8) uint64 { return uint64(openflow.MakeCookie(r, pipeline.CategoryBase, 1)) }
	peer := func(r uint8) uint64 { return uint64(openflow.MakeCookie(r, pipeline.CategoryPeer, 3)) }
	tests := []struct {
		name        string
		cookies     []uint64
		tables      []uint8
		wantPresent map[uint8]int
		wantLatest  uint8
	}{
		{"nothing", nil, nil, map[uint8]int{}, 0},
		{"cookie 0 is not a round", []uint64{0, 0}, []uint8{pipeline.Classifier, 5}, map[uint8]int{}, 0},
		{"base of the last run in Classifier",
			[]uint64{base(3), base(3), peer(2), base(2)},
			[]uint8{pipeline.Classifier, pipeline.Classifier, pipeline.L3Forwarding, pipeline.L3Forwarding},
			map[uint8]int{3: 2, 2: 2}, 3},
		{"disagreeing base flows: the most",
			[]uint64{base(7), base(8), base(8), peer(9)},
			[]uint8{pipeline.Classifier, pipeline.Classifier, pipeline.Classifier, pipeline.Classifier},
			map[uint8]int{7: 1, 8: 2, 9: 1}, 8},
		{"peer flows only", []uint64{peer(4)}, []uint8{pipeline.Classifier}, map[uint8]int{4: 1}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tallyRounds(tc.cookies, tc.tables)
			if fmt.Sprint(got.present) != fmt.Sprint(tc.wantPresent) || got.latest != tc.wantLatest {
				t.Fatalf("tallyRounds = %v latest %d, want %v latest %d", got.present, got.latest, tc.wantPresent, tc.wantLatest)
			}
		})
	}
}

// TestStaleRoundsAfterTwoRestarts runs three agent "runs" against one real
// OVS: the first two are killed before their initial sync (so neither
// removes anything), each leaving flows of a peer that is gone by the
// next run. The third run must choose a round none of them used, keep its
// own flows and a flow that is not Weir's (cookie 0), and remove every flow
// of both earlier rounds, including the first run's, which the agent used
// to leave behind for good (it deleted only the previous round).
func TestStaleRoundsAfterTwoRestarts(t *testing.T) {
	ovs := ovstest.Start(t)
	ctx := testctx.Timeout(t, 2*time.Minute)
	log := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))
	db, err := ovsdb.Connect(ctx, ovs.DBSocket(), log.WithName("ovsdb"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if _, err := db.EnsureBridge(ctx, ovsdb.BridgeConfig{Name: "br-int", DatapathType: ovsdb.DatapathNetdev}); err != nil {
		t.Fatal(err)
	}
	// Not Weir's: must survive every cleanup.
	ovs.MustOfctl(t, "-O", "OpenFlow15", "add-flow", "br-int", "table=250,priority=7,cookie=0,actions=drop")

	_, local, _ := net.ParseCIDR("10.71.0.0/24")
	gw := net.ParseIP("10.71.0.1").To4()
	peer := func(name string, i int) pipeline.PeerNode {
		_, cidr, _ := net.ParseCIDR(fmt.Sprintf("10.71.%d.0/24", i))
		return pipeline.PeerNode{Name: name, PodCIDR: cidr, NodeIP: net.IPv4(192, 0, 2, byte(i)).To4(),
			GatewayIP: net.IPv4(10, 71, byte(i), 1).To4()}
	}
	roundFlows := func(r uint8) int {
		return len(ovs.DumpFlows(t, "br-int", fmt.Sprintf("cookie=%#x/%#x", uint64(openflow.MakeCookie(r, 0, 0)),
			openflow.CookieRoundMask)))
	}
	// run starts an agent run: picks the round, installs the base pipeline
	// and the peers.
	run := func(peers ...pipeline.PeerNode) (*openflow.Switch, uint8) {
		t.Helper()
		sw, err := openflow.Open(openflow.Config{MgmtSocket: ovs.MgmtSocket("br-int"), RetryInterval: 50 * time.Millisecond,
			Logger: log.WithName("openflow")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sw.Close)
		if err := sw.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		br, err := readRounds(ctx, sw)
		if err != nil {
			t.Fatal(err)
		}
		round, err := pickRound(br)
		if err != nil {
			t.Fatal(err)
		}
		if br.present[round] != 0 || round == 0 {
			t.Fatalf("picked round %d, which is 0 or on the bridge (%v)", round, br.present)
		}
		pipe, err := pipeline.New(sw, pipeline.Config{GatewayOFPort: interfacestore.GatewayOFPort, GatewayMAC: podnet.MACFromIP(gw),
			GatewayIP: gw, PodCIDR: local, CTZone: 65520, TunnelOFPort: interfacestore.TunnelOFPort, Round: round})
		if err != nil {
			t.Fatal(err)
		}
		if err := pipe.InstallBase(ctx); err != nil {
			t.Fatal(err)
		}
		for _, p := range peers {
			if err := pipe.AddPeer(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("run with round %d (bridge had rounds %v, latest %d): %d flows of its own", round, br.rounds(), br.latest,
			roundFlows(round))
		return sw, round
	}

	// Run 1 and run 2 are killed before their initial sync.
	sw1, r1 := run(peer("live", 1), peer("gone1", 2))
	sw1.Close()
	sw2, r2 := run(peer("live", 1), peer("gone2", 3))
	sw2.Close()
	if r2 == r1 {
		t.Fatalf("run 2 reused round %d", r1)
	}
	if roundFlows(r1) == 0 || roundFlows(r2) == 0 {
		t.Fatalf("before the cleanup the bridge holds %d flows of round %d and %d of round %d; want some of both",
			roundFlows(r1), r1, roundFlows(r2), r2)
	}
	sw3, r3 := run(peer("live", 1))
	if r3 == r1 || r3 == r2 {
		t.Fatalf("run 3 picked round %d, in use by runs 1 (%d) or 2 (%d)", r3, r1, r2)
	}
	own := ovs.DumpFlows(t, "br-int", fmt.Sprintf("cookie=%#x/%#x", uint64(openflow.MakeCookie(r3, 0, 0)), openflow.CookieRoundMask))
	start := time.Now()
	if err := removeStaleFlows(ctx, sw3, r3, nil, log); err != nil {
		t.Fatal(err)
	}
	t.Logf("removed rounds %d and %d in %s", r1, r2, time.Since(start).Round(time.Millisecond))
	for _, r := range []uint8{r1, r2} {
		if n := roundFlows(r); n != 0 {
			t.Errorf("%d flows of round %d left after the cleanup", n, r)
		}
	}
	if after := ovs.DumpFlows(t, "br-int", fmt.Sprintf("cookie=%#x/%#x", uint64(openflow.MakeCookie(r3, 0, 0)),
		openflow.CookieRoundMask)); !slices.Equal(after, own) {
		t.Errorf("the current round's flows changed in the cleanup:\nbefore %q\nafter  %q", own, after)
	}
	if got := ovs.DumpFlows(t, "br-int", "table=250"); len(got) != 1 {
		t.Errorf("the cookie-0 flow not installed by Weir: %q, want it kept", got)
	}
	// The gone peers' flows are gone (their gateway IPs are in ARP
	// responder flows), the live one's are there.
	for ip, want := range map[string]bool{"10.71.1.1": true, "10.71.2.1": false, "10.71.3.1": false} {
		found := false
		for _, f := range ovs.DumpFlows(t, "br-int") {
			if mentionsIP(f, ip) {
				found = true
			}
		}
		if found != want {
			t.Errorf("flows for gateway %s present %v, want %v", ip, found, want)
		}
	}
	// A fourth run after a completed cleanup simply takes the next round.
	br, err := readRounds(ctx, sw3)
	if err != nil {
		t.Fatal(err)
	}
	if got := br.rounds(); !slices.Equal(got, []uint8{r3}) || br.latest != r3 {
		t.Errorf("after the cleanup the bridge has rounds %v (latest %d), want only %d", got, br.latest, r3)
	}
}

// mentionsIP reports whether flow f mentions ip as a whole field value.
func mentionsIP(f, ip string) bool {
	return regexp.MustCompile(`[=>,]` + regexp.QuoteMeta(ip) + `([^0-9.]|$)`).MatchString(f)
}
