package openflow_test

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
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

// dumpGroups returns ovs-ofctl's groups on br-int (numbers), sorted.
func dumpGroups(t *testing.T, ovs *ovstest.Instance) []string {
	t.Helper()
	out := ovs.MustOfctl(t, "-O", "OpenFlow15", "--no-names", "dump-groups", "br-int")
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "OFPST_GROUP_DESC reply") {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	return lines
}

func requireGroups(t *testing.T, ovs *ovstest.Instance, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := dumpGroups(t, ovs); !slices.Equal(got, want) {
		t.Fatalf("groups on the switch:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

var groupStatsRE = regexp.MustCompile(`group_id=(\d+),duration=[\d.]+s,ref_count=(\d+),packet_count=(\d+),byte_count=(\d+)((?:,bucket\d+:packet_count=\d+,byte_count=\d+)*)`)
var bucketStatsRE = regexp.MustCompile(`bucket\d+:packet_count=(\d+),byte_count=(\d+)`)

// ofctlGroupPackets returns ovs-ofctl's packet counts of group id: the
// group's, then each bucket's (an oracle independent of DumpGroups'
// decoding, and of its carried counts).
func ofctlGroupPackets(t *testing.T, ovs *ovstest.Instance, id uint32) []uint64 {
	t.Helper()
	out := ovs.MustOfctl(t, "-O", "OpenFlow15", "dump-group-stats", "br-int", "group_id="+strconv.FormatUint(uint64(id), 10))
	m := groupStatsRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no stats of group %d in %q", id, out)
	}
	total, _ := strconv.ParseUint(m[3], 10, 64)
	counts := []uint64{total}
	for _, b := range bucketStatsRE.FindAllStringSubmatch(m[5], -1) {
		n, _ := strconv.ParseUint(b[1], 10, 64)
		counts = append(counts, n)
	}
	return counts
}

// packets returns DumpGroups' packet counts of group id, as
// ofctlGroupPackets does.
func groupPackets(t *testing.T, sw *openflow.Switch, id uint32) []uint64 {
	t.Helper()
	gs, err := sw.DumpGroups(testctx.Timeout(t, callTimeout), id)
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 1 || gs[0].ID != id {
		t.Fatalf("DumpGroups(%d) returned %+v", id, gs)
	}
	counts := []uint64{gs[0].Packets}
	for _, b := range gs[0].Buckets {
		counts = append(counts, b.Packets)
	}
	return counts
}

// testPacket is a UDP packet from 10.0.0.1 to 10.0.0.2.
const testPacket = "ffffffffffff02000000000108004500001c000100004011f7cc0a0000010a000002303930390008ef9d"

// packetOut sends n test packets from the controller with actions.
func packetOut(t *testing.T, ovs *ovstest.Instance, n int, actions string) {
	t.Helper()
	for range n {
		ovs.MustOfctl(t, "-O", "OpenFlow15", "packet-out", "br-int", "in_port=controller packet="+testPacket+" actions="+actions)
	}
}

// recorder is an Observer that keeps the bundles a Switch sent.
type recorder struct {
	mu      sync.Mutex
	bundles []int // messages per successful bundle
}

func (r *recorder) OpenFlowRequest(op string, messages int, _ time.Duration, err error) {
	if op == "bundle" && err == nil {
		r.mu.Lock()
		r.bundles = append(r.bundles, messages)
		r.mu.Unlock()
	}
}

func (r *recorder) OpenFlowReconnect() {}

// take returns the bundles recorded since the last call.
func (r *recorder) take() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.bundles
	r.bundles = nil
	return b
}

// TestGroupCatalogOnRealSwitch installs every catalog group, and a group
// too large for one message, and compares ovs-ofctl's dump and our own
// read-back with the renderer and the builder.
func TestGroupCatalogOnRealSwitch(t *testing.T) {
	ovs, sw := newBridge(t)
	ovs.MustOfctl(t, "-O", "OpenFlow15", "add-group", "br-int", "group_id=1,type=all,bucket=actions=output:1")
	var ops []openflow.FlowOp
	want := []string{"group_id=1,type=all,bucket=bucket_id:0,actions=output:1"}
	built := map[uint32]*openflow.Group{}
	for _, c := range openflow.ExportedGroupCatalog() {
		g, err := c.Build.Done()
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		ops = append(ops, openflow.AddGroup(g))
		want = append(want, c.Want)
		built[g.ID] = g
	}
	ctx := testctx.Timeout(t, callTimeout)
	if err := sw.Apply(ctx, ops); err != nil {
		t.Fatal(err)
	}
	requireGroups(t, ovs, want...)

	got, err := sw.DumpGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("DumpGroups returned %d groups, want %d", len(got), len(want))
	}
	for _, gs := range got {
		g := built[gs.ID]
		if g == nil {
			continue // group 1
		}
		m, _ := g.SelectionMethod()
		if gs.Type != g.Type || gs.Method != m.String() || len(gs.Buckets) != g.NumBuckets() {
			t.Errorf("group %d read back as type %s method %q with %d buckets, built %s %q %d", gs.ID, gs.Type, gs.Method,
				len(gs.Buckets), g.Type, m, g.NumBuckets())
			continue
		}
		for i, b := range g.Buckets() {
			if gs.Buckets[i].ID != uint32(i) || gs.Buckets[i].Weight != b.Weight {
				t.Errorf("group %d bucket %d read back as %+v, built weight %d", gs.ID, i, gs.Buckets[i], b.Weight)
			}
		}
	}

	// OVS 3.1 aborts describing a group over 64 KiB; one of MaxGroupLen
	// (IPv6 endpoints: the largest nat action) must dump fine.
	t.Run("largest group", func(t *testing.T) {
		build := func(n int) (*openflow.Group, error) {
			b := openflow.NewGroup(100, openflow.GroupSelect)
			table := uint8(2)
			for i := range n {
				b.Bucket(uint16(i%7+1), &openflow.CTAction{Commit: true, Zone: 1, Table: &table,
					NAT: &openflow.NAT{Kind: openflow.NATDest, IPMin: net.ParseIP(fmt.Sprintf("fd00:10::%x", i+1)), PortMin: 443}})
			}
			return b.Done()
		}
		n := 1
		for {
			if _, err := build(n + 1); err != nil {
				break
			}
			n++
		}
		g, err := build(n)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("largest group: %d IPv6 ct(nat) buckets, %d bytes", n, g.Len())
		if err := sw.Apply(ctx, []openflow.FlowOp{openflow.AddGroup(g)}); err != nil {
			t.Fatal(err)
		}
		gs, err := sw.DumpGroups(ctx, 100)
		if err != nil || len(gs) != 1 || len(gs[0].Buckets) != n {
			t.Fatalf("DumpGroups(100): %d groups, err %v; want one with %d buckets", len(gs), err, n)
		}
		var line string
		for _, l := range dumpGroups(t, ovs) {
			if strings.HasPrefix(l, "group_id=100,") {
				line = l
			}
		}
		if line != g.String() {
			t.Fatalf("group 100 on the switch (%d buckets) differs from the built one (%d buckets):\n%.300s...\n%.300s...",
				strings.Count(line, "bucket="), n, line, g.String())
		}
	})
}

// TestSyncGroupsAndFlows follows one owner's select group through the
// cache: installed with the flow that uses it in one bundle, a bucket
// modified in place (the flow and its counters survive, unlike with a
// delete and re-add), a rejected change that leaves everything as it was,
// an ID another owner holds, a group moving between owners, a deletion a
// cached flow forbids, and Uninstall.
func TestSyncGroupsAndFlows(t *testing.T) {
	ovs := ovstest.Start(t)
	ovs.AddBridge(t, "br-int")
	rec := &recorder{}
	sw := oftest.Open(t, openflow.Config{MgmtSocket: ovs.MgmtSocket("br-int"), RetryInterval: oftest.RetryInterval, Observer: rec})
	ctx := testctx.Timeout(t, callTimeout)
	ip := net.ParseIP
	table := uint8(2)
	dnat := func(ep string) openflow.Action {
		return &openflow.CTAction{Commit: true, Zone: 7, Table: &table, NAT: &openflow.NAT{Kind: openflow.NATDest, IPMin: ip(ep), PortMin: 8080}}
	}
	svc := func(eps ...string) *openflow.Group {
		b := openflow.NewGroup(10, openflow.GroupSelect)
		for _, ep := range eps {
			b.Bucket(100, dnat(ep))
		}
		return b.MustDone()
	}
	// Table 0 sends the VIP's packets (ours are UDP to 10.0.0.2) to group 10.
	flow := buildAll(t, openflow.NewFlow(0, 100).Cookie(0x10).MatchProtocol(openflow.ProtocolUDP).
		MatchDstIP(ip("10.0.0.2")).Group(10))[0]
	v1 := svc("10.0.1.1", "10.0.1.2", "10.0.1.3")
	rec.take()
	if err := sw.SyncGroupsAndFlows(ctx, "svc", []*openflow.Group{v1}, flow); err != nil {
		t.Fatal(err)
	}
	if b := rec.take(); !slices.Equal(b, []int{2}) {
		t.Errorf("bundles sent (messages each): %v, want one bundle of the group and the flow", b)
	}
	requireGroups(t, ovs, v1.String())
	if got := dumpFlows(t, ovs); !slices.Equal(got, []string{flow.String()}) {
		t.Fatalf("flows %q, want %q", got, flow.String())
	}
	if got := sw.Cache().OwnerGroups("svc"); !slices.Equal(got, []uint32{10}) {
		t.Fatalf("cached groups of svc: %v", got)
	}

	// Packets through the flow and the group count on both.
	packetOut(t, ovs, 3, "resubmit(,0)")
	flowPackets := func() uint64 {
		st, err := sw.DumpFlows(ctx, openflow.FlowFilter{Cookie: 0x10, CookieMask: ^uint64(0)})
		if err != nil || len(st) != 1 {
			t.Fatalf("flow stats: %v %v", st, err)
		}
		return st[0].Packets
	}
	if n := flowPackets(); n != 3 {
		t.Fatalf("flow counted %d packets, want 3", n)
	}
	before, err := sw.DumpGroups(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if before[0].Packets != 3 || before[0].FlowCount != 1 {
		t.Fatalf("group 10 before the modify: %+v, want 3 packets and 1 flow", before[0])
	}

	// One endpoint replaced: one group_mod MODIFY, nothing else. Had the
	// group been deleted and re-added, OVS would have deleted the flow.
	v2 := svc("10.0.1.1", "10.0.1.2", "10.0.1.4")
	if err := sw.SyncGroupsAndFlows(ctx, "svc", []*openflow.Group{v2}, flow); err != nil {
		t.Fatal(err)
	}
	if b := rec.take(); !slices.Equal(b, []int{1}) {
		t.Errorf("bundles sent for the modify: %v, want one bundle of one group_mod", b)
	}
	requireGroups(t, ovs, v2.String())
	if n := flowPackets(); n != 3 {
		t.Fatalf("after the modify the flow counts %d packets, want its 3 (it must not have been re-added)", n)
	}
	after, err := sw.DumpGroups(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if after[0].Duration < before[0].Duration || after[0].FlowCount != 1 {
		t.Errorf("after the modify group 10 has duration %v (was %v) and %d flows: not the same group", after[0].Duration,
			before[0].Duration, after[0].FlowCount)
	}
	// Unchanged: nothing is sent.
	if err := sw.SyncGroupsAndFlows(ctx, "svc", []*openflow.Group{v2}, flow); err != nil {
		t.Fatal(err)
	}
	if b := rec.take(); len(b) != 0 {
		t.Errorf("an unchanged sync sent bundles %v", b)
	}

	t.Run("rejected flow leaves the group", func(t *testing.T) {
		bad := buildAll(t, openflow.NewFlow(0, 90).Cookie(0x10).MatchInPort(5).Output(70000))[0]
		err := sw.SyncGroupsAndFlows(ctx, "svc", []*openflow.Group{svc("10.0.9.9")}, flow, bad)
		var oe *openflow.OVSError
		if !errors.As(err, &oe) || oe.Flow != bad {
			t.Fatalf("want the OVS error naming the bad flow, got %v", err)
		}
		requireGroups(t, ovs, v2.String())
		if got := dumpFlows(t, ovs); !slices.Equal(got, []string{flow.String()}) {
			t.Fatalf("flows %q after a rejected change", got)
		}
	})
	t.Run("rejected group leaves the flows", func(t *testing.T) {
		badGroup := openflow.NewGroup(10, openflow.GroupSelect).Bucket(1, openflow.Output(70000)).MustDone()
		extra := buildAll(t, openflow.NewFlow(0, 80).Cookie(0x10).MatchInPort(6).Output(1))[0]
		err := sw.SyncGroupsAndFlows(ctx, "svc", []*openflow.Group{badGroup}, flow, extra)
		var oe *openflow.OVSError
		if !errors.As(err, &oe) || oe.Group != badGroup {
			t.Fatalf("want the OVS error naming the bad group, got %v", err)
		}
		t.Logf("as the caller sees it: %v", err)
		requireGroups(t, ovs, v2.String())
		if got := dumpFlows(t, ovs); !slices.Equal(got, []string{flow.String()}) {
			t.Fatalf("flows %q after a rejected change", got)
		}
	})
	t.Run("ID of another owner", func(t *testing.T) {
		err := sw.SyncGroupsAndFlows(ctx, "other", []*openflow.Group{svc("10.0.2.1")})
		if err == nil || !strings.Contains(err.Error(), "belongs to svc") {
			t.Fatalf("want a collision error, got %v", err)
		}
		err = sw.SyncOwnerStates(ctx, map[string]openflow.OwnerState{
			"a": {Groups: []*openflow.Group{svc("10.0.2.1")}}, "b": {Groups: []*openflow.Group{svc("10.0.2.2")}}})
		if err == nil || !strings.Contains(err.Error(), "wanted by both") {
			t.Fatalf("want an error for two owners of one ID, got %v", err)
		}
		requireGroups(t, ovs, v2.String())
	})
	t.Run("group moves to another owner", func(t *testing.T) {
		if err := sw.SyncOwnerStates(ctx, map[string]openflow.OwnerState{
			"svc":   {},
			"other": {Groups: []*openflow.Group{v2}, Flows: []*openflow.Flow{flow}},
		}); err != nil {
			t.Fatal(err)
		}
		if b := rec.take(); len(b) != 0 {
			t.Errorf("moving unchanged state sent bundles %v", b)
		}
		if o, _ := sw.Cache().GroupOwner(10); o != "other" || sw.Cache().OwnerLen("svc") != 0 {
			t.Fatalf("group 10 belongs to %q, svc caches %d flows", o, sw.Cache().OwnerLen("svc"))
		}
		requireGroups(t, ovs, v2.String())
	})
	t.Run("a cached flow keeps its group", func(t *testing.T) {
		user := buildAll(t, openflow.NewFlow(1, 10).Cookie(0x20).MatchInPort(3).Group(10))[0]
		if err := sw.Sync(ctx, "user", user); err != nil {
			t.Fatal(err)
		}
		err := sw.Uninstall(ctx, "other")
		if err == nil || !strings.Contains(err.Error(), "1 cached flows still use it") {
			t.Fatalf("uninstalling a group a cached flow uses: want an error, got %v", err)
		}
		requireGroups(t, ovs, v2.String())
		if err := sw.Uninstall(ctx, "user"); err != nil {
			t.Fatal(err)
		}
	})
	if err := sw.Uninstall(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	requireGroups(t, ovs)
	if got := dumpFlows(t, ovs); len(got) != 0 {
		t.Fatalf("flows left after Uninstall: %q", got)
	}
	if n, owners := sw.Cache().GroupLen(), sw.Cache().Owners(); n != 0 || len(owners) != 0 {
		t.Fatalf("cache after Uninstall: %d groups, owners %v", n, owners)
	}
}

// TestGroupCountersCarriedOver: OVS 3.1 restarts every counter of a group
// it modifies (ovs-ofctl shows zeros right after the change); DumpGroups
// keeps the group's count and each unchanged bucket's, wherever the bucket
// moved, across a modify and a replay after a lost connection, and starts
// from zero after ovs-vswitchd restarts, as flow counters do.
func TestGroupCountersCarriedOver(t *testing.T) {
	ovs, sw := newBridge(t)
	ctx := testctx.Timeout(t, callTimeout)
	mark := func(v uint64) openflow.Action { return openflow.Load(openflow.Reg(1, 0, 31), v) }
	// An all group: every packet counts in every bucket, so the counts
	// are exact.
	group := func(vs ...uint64) *openflow.Group {
		b := openflow.NewGroup(30, openflow.GroupAll)
		for _, v := range vs {
			b.Bucket(0, mark(v))
		}
		return b.MustDone()
	}
	want := func(what string, ours, ofctl []uint64) {
		t.Helper()
		if got := groupPackets(t, sw, 30); !slices.Equal(got, ours) {
			t.Errorf("%s: DumpGroups counts %v (group, buckets), want %v", what, got, ours)
		}
		if got := ofctlGroupPackets(t, ovs, 30); ofctl != nil && !slices.Equal(got, ofctl) {
			t.Errorf("%s: ovs-ofctl counts %v, want %v", what, got, ofctl)
		}
	}
	if err := sw.SyncGroupsAndFlows(ctx, "o", []*openflow.Group{group(1, 2, 3)}); err != nil {
		t.Fatal(err)
	}
	packetOut(t, ovs, 5, "group:30")
	want("after 5 packets", []uint64{5, 5, 5, 5}, []uint64{5, 5, 5, 5})
	// Bucket 3 changes, 1 and 2 swap places.
	if err := sw.SyncGroupsAndFlows(ctx, "o", []*openflow.Group{group(2, 1, 4)}); err != nil {
		t.Fatal(err)
	}
	want("after the modify", []uint64{5, 5, 5, 0}, []uint64{0, 0, 0, 0})
	packetOut(t, ovs, 2, "group:30")
	want("after 2 more packets", []uint64{7, 7, 7, 2}, []uint64{2, 2, 2, 2})

	gen := sw.Generation()
	openflow.DropConnection(sw)
	if g := waitReconnected(t, sw, 30*time.Second); g <= gen {
		t.Fatalf("generation %d after the reconnect, was %d", g, gen)
	}
	want("after a replay on the same ovs-vswitchd", []uint64{7, 7, 7, 2}, []uint64{0, 0, 0, 0})
	packetOut(t, ovs, 1, "group:30")
	want("after one more packet", []uint64{8, 8, 8, 3}, []uint64{1, 1, 1, 1})

	reconnect(t, "vswitchd restarted", ovs, sw)
	waitReconnected(t, sw, 30*time.Second)
	want("after ovs-vswitchd restarted", []uint64{0, 0, 0, 0}, []uint64{0, 0, 0, 0})
}

// groupOwners returns owners svc-N, each with a select group of buckets
// buckets (ID first+N) and two flows using it.
func groupOwners(t testing.TB, first, n, buckets int) map[string]openflow.OwnerState {
	owners := map[string]openflow.OwnerState{}
	for o := range n {
		id := uint32(first + o)
		b := openflow.NewGroup(id, openflow.GroupSelect)
		table := uint8(3)
		for i := range buckets {
			b.Bucket(uint16(1+i%3), &openflow.CTAction{Commit: true, Zone: 9, Table: &table,
				NAT: &openflow.NAT{Kind: openflow.NATDest, IPMin: net.IPv4(10, 3, byte(o>>8), byte(o)), PortMin: uint16(8000 + i)}})
		}
		g, err := b.Done()
		if err != nil {
			t.Fatal(err)
		}
		vip := net.IPv4(10, 96, byte(id>>8), byte(id))
		cookie := uint64(openflow.MakeCookie(1, 5, uint64(id)))
		var flows []*openflow.Flow
		for _, p := range []openflow.Protocol{openflow.ProtocolTCP, openflow.ProtocolUDP} {
			f, err := openflow.NewFlow(2, 200).Cookie(cookie).MatchProtocol(p).MatchDstIP(vip).MatchDstPort(80).Group(id).Done()
			if err != nil {
				t.Fatal(err)
			}
			flows = append(flows, f)
		}
		owners["svc-"+strconv.Itoa(o)] = openflow.OwnerState{Groups: []*openflow.Group{g}, Flows: flows}
	}
	return owners
}

// requireGroupsConverged: the switch holds exactly the cached groups and
// flows (VerifyGroups, Verify, and ovs-ofctl's counts).
func requireGroupsConverged(t *testing.T, ovs *ovstest.Instance, sw *openflow.Switch, groups, flows int) {
	t.Helper()
	ds, err := sw.VerifyGroups(testctx.Timeout(t, callTimeout))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		t.Errorf("group discrepancy: %v", d)
	}
	if n := sw.Cache().GroupLen(); n != groups {
		t.Errorf("cache holds %d groups, want %d", n, groups)
	}
	if n := len(dumpGroups(t, ovs)); n != groups {
		t.Errorf("ovs-ofctl dump-groups shows %d groups, want %d", n, groups)
	}
	requireConverged(t, ovs, sw, flows)
}

// TestGroupReplay: after the connection drops or ovs-vswitchd restarts,
// the cached groups come back, before the flows that use them (OVS rejects
// a flow whose group does not exist, and the replay would keep failing).
func TestGroupReplay(t *testing.T) {
	testroot.Require(t, "runs a private ovs-vswitchd")
	owners := groupOwners(t, 1000, 300, 10)
	for _, how := range []string{"relay dropped", "vswitchd restarted"} {
		t.Run(how, func(t *testing.T) {
			ovs, sw := newBridge(t)
			ctx := testctx.Timeout(t, callTimeout)
			if err := sw.SyncOwnerStates(ctx, owners); err != nil {
				t.Fatal(err)
			}
			requireGroupsConverged(t, ovs, sw, 300, 600)
			gen := sw.Generation()
			start := time.Now()
			reconnect(t, how, ovs, sw)
			if g := waitReconnected(t, sw, 60*time.Second); g <= gen {
				t.Fatalf("generation %d, was %d", g, gen)
			}
			t.Logf("%s: replayed 300 groups of 10 buckets and 600 flows in %v", how, time.Since(start).Round(time.Millisecond))
			requireGroupsConverged(t, ovs, sw, 300, 600)
		})
	}
}

// TestGroupReplayRemovesUnansweredChanges: a change whose commit OVS
// applied but whose answer was lost leaves the cache as it was; the replay
// makes the switch equal the cache again: a group the change added is
// deleted, a group it modified gets its cached form back, a group it
// deleted comes back.
func TestGroupReplayRemovesUnansweredChanges(t *testing.T) {
	testroot.Require(t, "runs a private ovs-vswitchd")
	base := groupOwners(t, 1, 2, 3)
	a, b := base["svc-0"], base["svc-1"]
	changed := groupOwners(t, 1, 1, 4)["svc-0"] // group 1 with 4 buckets
	tests := []struct {
		name   string
		change map[string]openflow.OwnerState
		// groups on the switch right after the change (it did happen)
		onSwitch int
	}{
		{"adding an owner", map[string]openflow.OwnerState{"svc-1": b}, 2},
		{"modifying a group", map[string]openflow.OwnerState{"svc-0": changed}, 1},
		{"uninstalling", map[string]openflow.OwnerState{"svc-0": {}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ovs, sw := newBridge(t)
			ctx := testctx.Timeout(t, callTimeout)
			if err := sw.SyncOwnerStates(ctx, map[string]openflow.OwnerState{"svc-0": a}); err != nil {
				t.Fatal(err)
			}
			cachedForm := dumpGroups(t, ovs)
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
			if err := sw.SyncOwnerStates(ctx, tc.change); !errors.Is(err, openflow.ErrNotConnected) {
				t.Fatalf("change with its answer lost: want ErrNotConnected, got %v", err)
			}
			if n := len(dumpGroups(t, ovs)); sw.Generation() == gen && n != tc.onSwitch {
				t.Fatalf("after the unanswered change OVS has %d groups, want %d", n, tc.onSwitch)
			}
			if g := waitReconnected(t, sw, 30*time.Second); g <= gen {
				t.Fatalf("generation %d, was %d", g, gen)
			}
			if n := sw.Cache().GroupsInDoubt(); n != 0 {
				t.Errorf("%d groups still in doubt after the replay", n)
			}
			requireGroups(t, ovs, cachedForm...)
			requireGroupsConverged(t, ovs, sw, 1, 2)
		})
	}
}

// TestVerifyGroups: cached groups verify clean; a group added behind the
// cache's back is an orphan (and DeleteUncachedGroups removes it), one
// deleted behind its back is missing, one changed behind its back differs.
func TestVerifyGroups(t *testing.T) {
	ovs, sw := newBridge(t)
	ctx := testctx.Timeout(t, callTimeout)
	owners := groupOwners(t, 1, 3, 3)
	if err := sw.SyncOwnerStates(ctx, owners); err != nil {
		t.Fatal(err)
	}
	requireGroupsConverged(t, ovs, sw, 3, 6)
	ovs.MustOfctl(t, "-O", "OpenFlow15", "add-group", "br-int", "group_id=77,type=all,bucket=actions=output:1")
	ovs.MustOfctl(t, "-O", "OpenFlow15", "del-groups", "br-int", "group_id=2")
	ovs.MustOfctl(t, "-O", "OpenFlow15", "mod-group", "br-int", "group_id=3,type=select,bucket=weight:5,actions=output:1")
	got, err := sw.VerifyGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"differs group 3 owner=svc-2: 3 buckets, switch has 1",
		"missing group 2 owner=svc-1",
		"orphan group 77",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("VerifyGroups:\n got %v\nwant %v", got, want)
	}
	n, err := sw.DeleteUncachedGroups(ctx)
	if err != nil || n != 1 {
		t.Fatalf("DeleteUncachedGroups deleted %d groups, err %v; want 1", n, err)
	}
	for _, l := range dumpGroups(t, ovs) {
		if strings.HasPrefix(l, "group_id=77,") {
			t.Fatalf("group 77 still on the switch: %s", l)
		}
	}
}

// TestGroupIDConcurrentOwners: two owners syncing the same new group ID at
// the same time: exactly one gets it, every time, and the cache and the
// switch agree on which.
func TestGroupIDConcurrentOwners(t *testing.T) {
	ovs, sw := newBridge(t)
	ctx := testctx.Timeout(t, callTimeout)
	g := openflow.NewGroup(42, openflow.GroupSelect).Bucket(1, openflow.Output(1)).MustDone()
	for round := range 20 {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, owner := range []string{"a", "b"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = sw.SyncGroupsAndFlows(ctx, owner, []*openflow.Group{g})
			}()
		}
		wg.Wait()
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("round %d: a got %v, b got %v; want exactly one to get group 42", round, errs[0], errs[1])
		}
		winner := "a"
		if errs[0] != nil {
			winner = "b"
		}
		if o, _ := sw.Cache().GroupOwner(42); o != winner || len(sw.Cache().OwnerGroups("a"))+len(sw.Cache().OwnerGroups("b")) != 1 {
			t.Fatalf("round %d: %s won but the cache says group 42 is %q's (a has %v, b has %v)", round, winner, o,
				sw.Cache().OwnerGroups("a"), sw.Cache().OwnerGroups("b"))
		}
		requireGroups(t, ovs, g.String())
		if err := sw.Uninstall(ctx, winner); err != nil {
			t.Fatal(err)
		}
	}
}
