package openflow_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/test/oftest"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

// benchFlows returns n distinct flows in a realistic mix, spread over the
// tables a Weir pipeline uses: per-pod IP forwarding with MAC rewrite,
// conjunction clauses on addresses and ports (policy), ct_state/register
// dispatch and conjunction action flows. All carry cookie.
func benchFlows(b testing.TB, n int, cookie uint64) []*openflow.Flow {
	flows := make([]*openflow.Flow, 0, n)
	gw, _ := net.ParseMAC("02:00:0a:00:00:01")
	for i := 0; len(flows) < n; i++ {
		ipA := net.IPv4(10, byte(10+i>>16), byte(i>>8), byte(i))
		var fb *openflow.FlowBuilder
		switch i % 5 {
		case 0: // L3 forwarding to a local pod
			fb = openflow.NewFlow(20, 200).MatchProtocol(openflow.ProtocolIP).MatchReg(0, uint32(i%4)).MatchDstIP(ipA).
				SetEthSrc(gw).SetEthDst(net.HardwareAddr{2, 0, byte(i >> 16), byte(i >> 8), byte(i), 1}).DecTTL().
				LoadReg(1, 0, 15, uint64(i%60000+1)).GotoTable(30)
		case 1: // policy: source address clause
			fb = openflow.NewFlow(40, 300).MatchProtocol(openflow.ProtocolIP).MatchSrcIP(ipA).
				Conjunction(uint32(1000+i%2000), 1, 3)
		case 2: // policy: destination port clause (port ranges are masked)
			fb = openflow.NewFlow(40, 300).MatchProtocol(openflow.ProtocolTCP).MatchDstIP(ipA).MatchDstPortMasked(uint16(1024+i%1024), 0xfffe).
				Conjunction(uint32(1000+i%2000), 3, 3)
		case 3: // ct_state + register dispatch with commit
			fb = openflow.NewFlow(50, 200).MatchProtocol(openflow.ProtocolIP).MatchCTState(openflow.CTState{}.Trk(true).New(true)).
				MatchReg(1, uint32(i)).CT(openflow.CTCommit(65520, openflow.SetCTMark(uint32(i&0xff), 0xff))).GotoTable(60)
		case 4: // conjunction action flow
			fb = openflow.NewFlow(40, 300).MatchConjID(uint32(i)).MatchProtocol(openflow.ProtocolIP).LoadReg(3, 0, 31, uint64(i)).GotoTable(50)
		}
		f, err := fb.Cookie(cookie).Done()
		if err != nil {
			b.Fatal(err)
		}
		flows = append(flows, f)
	}
	return flows
}

// cpuTimes returns user+system CPU of a process (from /proc) and of this
// process, so a benchmark can show where the time went.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func childrenCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFlowInstall installs 10k and 100k flows into a real bridge in one
// atomic bundle, side by side with `ovs-ofctl --bundle add-flows` of the
// same flows (rendered by our renderer) from a file. Metrics: flows/s, and
// CPU milliseconds spent in ovs-vswitchd vs the client (our process, or
// ovs-ofctl) per run.
func BenchmarkFlowInstall(b *testing.B) {
	ovs := ovstest.Start(b)
	ovs.AddBridge(b, "br-int")
	sw := oftest.Open(b, openflow.Config{MgmtSocket: ovs.MgmtSocket("br-int")})
	ctx := testctx.Timeout(b, benchTimeout)
	const cookie = 0xbe
	clear := func() {
		if err := sw.Apply(ctx, []openflow.FlowOp{openflow.DeleteByCookie(cookie, ^uint64(0))}); err != nil {
			b.Fatal(err)
		}
	}
	for _, n := range []int{10000, 100000} {
		flows := benchFlows(b, n, cookie)
		file := filepath.Join(b.TempDir(), "flows.txt")
		var text strings.Builder
		for _, f := range flows {
			text.WriteString(f.String())
			text.WriteByte('\n')
		}
		if err := os.WriteFile(file, []byte(text.String()), 0o600); err != nil {
			b.Fatal(err)
		}

		b.Run(fmt.Sprintf("weir/flows=%d", n), func(b *testing.B) {
			var vsCPU, ownCPU, elapsed time.Duration
			b.ReportAllocs()
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				ops := make([]openflow.FlowOp, len(flows))
				for j, f := range flows {
					ops[j] = openflow.Add(f)
				}
				v0, c0, t0 := procCPU(ovs.VswitchdPID()), selfCPU(), time.Now()
				b.StartTimer()
				if err := sw.Apply(ctx, ops); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				elapsed += time.Since(t0)
				vsCPU += procCPU(ovs.VswitchdPID()) - v0
				ownCPU += selfCPU() - c0
				clear()
			}
			report(b, n, elapsed, vsCPU, ownCPU)
		})
		b.Run(fmt.Sprintf("ovs-ofctl/flows=%d", n), func(b *testing.B) {
			var vsCPU, ofctlCPU, elapsed time.Duration
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				v0, c0, t0 := procCPU(ovs.VswitchdPID()), childrenCPU(), time.Now()
				b.StartTimer()
				out, err := ovs.Ofctl("-O", "OpenFlow15", "--bundle", "add-flows", "br-int", file)
				b.StopTimer()
				if err != nil {
					b.Fatalf("ovs-ofctl: %v: %s", err, out)
				}
				elapsed += time.Since(t0)
				vsCPU += procCPU(ovs.VswitchdPID()) - v0
				ofctlCPU += childrenCPU() - c0
				clear()
			}
			report(b, n, elapsed, vsCPU, ofctlCPU)
		})
	}
}

func report(b *testing.B, n int, elapsed, vsCPU, clientCPU time.Duration) {
	b.ReportMetric(float64(n)*float64(b.N)/elapsed.Seconds(), "flows/s")
	b.ReportMetric(float64(vsCPU.Milliseconds())/float64(b.N), "vswitchd-cpu-ms/op")
	b.ReportMetric(float64(clientCPU.Milliseconds())/float64(b.N), "client-cpu-ms/op")
}

// benchTimeout bounds a benchmark's calls into the Switch.
const benchTimeout = 20 * time.Minute

// BenchmarkFlowCacheMemory installs 100k flows under 1,000 owners through
// the real switch and reports the heap the flow cache keeps per flow.
func BenchmarkFlowCacheMemory(b *testing.B) {
	ovs := ovstest.Start(b)
	ovs.AddBridge(b, "br-int")
	sw := oftest.Open(b, openflow.Config{MgmtSocket: ovs.MgmtSocket("br-int")})
	ctx := testctx.Timeout(b, benchTimeout)
	const n, perOwner = 100000, 100
	flows := benchFlows(b, n, 0xca)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for o := 0; o < n/perOwner; o++ {
			if err := sw.Install(ctx, "owner-"+strconv.Itoa(o), flows[o*perOwner:(o+1)*perOwner]...); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if sw.Cache().Len() != n {
			b.Fatalf("cache holds %d flows, want %d", sw.Cache().Len(), n)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "cache-bytes/flow")
		b.StopTimer()
		for o := 0; o < n/perOwner; o++ {
			if err := sw.Uninstall(ctx, "owner-"+strconv.Itoa(o)); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
}

// benchGroups returns n select groups of buckets buckets each (IDs from
// 1), as a Service proxy builds them: bucket i DNATs to an endpoint with
// ct(commit,table,zone,nat(dst=IP:port)), weight 100.
func benchGroups(b testing.TB, n, buckets int) []*openflow.Group {
	groups := make([]*openflow.Group, n)
	table := uint8(30)
	for g := range n {
		gb := openflow.NewGroup(uint32(g+1), openflow.GroupSelect)
		for i := range buckets {
			ep := net.IPv4(10, byte(64+g>>16), byte(g>>8), byte(g))
			gb.Bucket(100, &openflow.CTAction{Commit: true, Zone: 65521, Table: &table,
				NAT: &openflow.NAT{Kind: openflow.NATDest, IPMin: ep, PortMin: uint16(8000 + i)}})
		}
		gr, err := gb.Done()
		if err != nil {
			b.Fatal(err)
		}
		groups[g] = gr
	}
	return groups
}

// BenchmarkGroupInstall installs 10,000 select groups of 10 ct(nat)
// buckets into a real bridge in one atomic bundle, three ways side by
// side: Apply (group_mods only), SyncOwnerStates (through the cache, one
// owner per group, as the proxy would), and `ovs-ofctl -O OpenFlow15
// --bundle add-groups` of the same groups (rendered by our renderer) from a
// file. Metrics: groups/s, and CPU milliseconds of ovs-vswitchd and of the
// client (our process, or ovs-ofctl) per run.
func BenchmarkGroupInstall(b *testing.B) {
	ovs := ovstest.Start(b)
	ovs.AddBridge(b, "br-int")
	sw := oftest.Open(b, openflow.Config{MgmtSocket: ovs.MgmtSocket("br-int")})
	ctx := testctx.Timeout(b, benchTimeout)
	const n, buckets = 10000, 10
	groups := benchGroups(b, n, buckets)
	clear := func() {
		if err := sw.Apply(ctx, []openflow.FlowOp{openflow.DeleteGroup(openflow.GroupIDAll)}); err != nil {
			b.Fatal(err)
		}
	}
	file := filepath.Join(b.TempDir(), "groups.txt")
	var text strings.Builder
	for _, g := range groups {
		text.WriteString(g.String())
		text.WriteByte('\n')
	}
	if err := os.WriteFile(file, []byte(text.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	name := fmt.Sprintf("groups=%d,buckets=%d", n, buckets)
	measure := func(b *testing.B, install func(), clientCPU func() time.Duration, undo func()) {
		var vsCPU, ownCPU, elapsed time.Duration
		b.ReportAllocs()
		b.StopTimer()
		for i := 0; i < b.N; i++ {
			v0, c0, t0 := procCPU(ovs.VswitchdPID()), clientCPU(), time.Now()
			b.StartTimer()
			install()
			b.StopTimer()
			elapsed += time.Since(t0)
			vsCPU += procCPU(ovs.VswitchdPID()) - v0
			ownCPU += clientCPU() - c0
			if got := countGroups(b, ovs); got != n {
				b.Fatalf("%d groups on the switch after the install, want %d", got, n)
			}
			undo()
		}
		b.ReportMetric(float64(n)*float64(b.N)/elapsed.Seconds(), "groups/s")
		b.ReportMetric(float64(vsCPU.Milliseconds())/float64(b.N), "vswitchd-cpu-ms/op")
		b.ReportMetric(float64(ownCPU.Milliseconds())/float64(b.N), "client-cpu-ms/op")
	}
	b.Run("weir/"+name, func(b *testing.B) {
		measure(b, func() {
			ops := make([]openflow.FlowOp, len(groups))
			for j, g := range groups {
				ops[j] = openflow.AddGroup(g)
			}
			if err := sw.Apply(ctx, ops); err != nil {
				b.Fatal(err)
			}
		}, selfCPU, clear)
	})
	b.Run("weir-sync/"+name, func(b *testing.B) {
		owners := make(map[string]openflow.OwnerState, n)
		empty := make(map[string]openflow.OwnerState, n)
		for j, g := range groups {
			o := "svc-" + strconv.Itoa(j)
			owners[o] = openflow.OwnerState{Groups: []*openflow.Group{g}}
			empty[o] = openflow.OwnerState{}
		}
		measure(b, func() {
			if err := sw.SyncOwnerStates(ctx, owners); err != nil {
				b.Fatal(err)
			}
		}, selfCPU, func() {
			if err := sw.SyncOwnerStates(ctx, empty); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("ovs-ofctl/"+name, func(b *testing.B) {
		measure(b, func() {
			if out, err := ovs.Ofctl("-O", "OpenFlow15", "--bundle", "add-groups", "br-int", file); err != nil {
				b.Fatalf("ovs-ofctl: %v: %s", err, out)
			}
		}, childrenCPU, clear)
	})
}

// countGroups is ovs-ofctl's group count on br-int (from dump-group-stats,
// whose lines are short).
func countGroups(b testing.TB, ovs *ovstest.Instance) int {
	b.Helper()
	out, err := ovs.Ofctl("-O", "OpenFlow15", "dump-group-stats", "br-int")
	if err != nil {
		b.Fatalf("ovs-ofctl dump-group-stats: %v", err)
	}
	return strings.Count(out, "group_id=")
}

// BenchmarkGroupModify is one endpoint change among 10,000 cached
// Services (it also reports the heap the cache keeps per group): one select group of 10 buckets gets one bucket replaced through
// SyncGroupsAndFlows (a read of its counters, then one bundle with one
// group_mod), beside `ovs-ofctl -O OpenFlow15 mod-group` of the same group
// (whose time is mostly starting ovs-ofctl).
func BenchmarkGroupModify(b *testing.B) {
	ovs := ovstest.Start(b)
	ovs.AddBridge(b, "br-int")
	sw := oftest.Open(b, openflow.Config{MgmtSocket: ovs.MgmtSocket("br-int")})
	ctx := testctx.Timeout(b, benchTimeout)
	const n, buckets = 10000, 10
	groups := benchGroups(b, n, buckets)
	owners := make(map[string]openflow.OwnerState, n)
	for j, g := range groups {
		owners["svc-"+strconv.Itoa(j)] = openflow.OwnerState{Groups: []*openflow.Group{g}}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := sw.SyncOwnerStates(ctx, owners); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	// What the cache keeps per group (the groups themselves were built
	// before): its encoded group_mod and the owner's entries.
	cachePerGroup := float64(after.HeapAlloc-before.HeapAlloc) / n
	// Two versions of group 5000 that differ in their last bucket.
	alt := benchGroups(b, n, buckets)[4999]
	table := uint8(30)
	gb := openflow.NewGroup(alt.ID, openflow.GroupSelect)
	for i, bk := range alt.Buckets() {
		if i == buckets-1 {
			bk.Actions = []openflow.Action{&openflow.CTAction{Commit: true, Zone: 65521, Table: &table,
				NAT: &openflow.NAT{Kind: openflow.NATDest, IPMin: net.IPv4(10, 200, 0, 1), PortMin: 9999}}}
		}
		gb.Bucket(bk.Weight, bk.Actions...)
	}
	versions := []*openflow.Group{gb.MustDone(), groups[4999]}
	b.Run("weir/sync-one-of-10000", func(b *testing.B) {
		b.ReportMetric(cachePerGroup, "cache-bytes/group")
		for i := 0; i < b.N; i++ {
			if err := sw.SyncGroupsAndFlows(ctx, "svc-4999", []*openflow.Group{versions[i%2]}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ovs-ofctl/mod-group-one-of-10000", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if out, err := ovs.Ofctl("-O", "OpenFlow15", "mod-group", "br-int", versions[i%2].String()); err != nil {
				b.Fatalf("ovs-ofctl: %v: %s", err, out)
			}
		}
	})
}
