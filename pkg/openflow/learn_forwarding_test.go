package openflow_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/test/oftest"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

// TestLearnOnRealSwitch sends real TCP SYNs between two pod namespaces
// through flows holding learn() actions, in the shape the proxy's ClientIP
// session affinity needs: the learned flow matches the client address and
// the frontend (address, protocol, port) copied from the packet and loads
// "the endpoint" (here the packet's destination address and port) into
// registers. It checks the learned flow ovs-vswitchd adds (table, cookie,
// priority, idle_timeout, match and actions, compared with the builder's
// rendering of the flow we expect), that a later packet hits it, that it
// expires after its idle timeout, and that delete_learned removes learned
// flows with the flow that learned them.
func TestLearnOnRealSwitch(t *testing.T) {
	ovs, sw := newBridge(t)
	p1 := ovs.AddPod(t, "br-int", "p1", "10.0.0.2/24", "02:00:0a:00:00:02", 1)
	p2 := ovs.AddPod(t, "br-int", "p2", "10.0.0.3/24", "02:00:0a:00:00:03", 2)
	ip := net.ParseIP

	const (
		affinityTable = 20
		idleTimeout   = 2
	)
	learnedCookie := uint64(openflow.MakeCookie(1, 5, 77))
	affinitySpecs := func() []openflow.LearnSpec {
		return []openflow.LearnSpec{
			openflow.LearnMatchValue(openflow.Whole(openflow.FieldEthType), 0x800),
			openflow.LearnMatchValue(openflow.Whole(openflow.FieldIPProto), 6),
			openflow.LearnMatch(openflow.Whole(openflow.FieldIPv4Src)),
			openflow.LearnMatch(openflow.Whole(openflow.FieldIPv4Dst)),
			openflow.LearnMatch(openflow.Whole(openflow.FieldTCPDst)),
			openflow.LearnLoad(openflow.Whole(openflow.FieldIPv4Dst), openflow.Reg(3, 0, 31)),
			openflow.LearnLoad(openflow.Whole(openflow.FieldTCPDst), openflow.Reg(4, 0, 15)),
			openflow.LearnLoadValue(openflow.Reg(0, 19, 19), 1),
		}
	}
	flows := buildAll(t,
		openflow.NewFlow(0, 0).Output(openflow.PortNormal),
		// Port 80: the affinity shape with an idle timeout. The lookup in
		// the learned table comes first, so a second connection hits the
		// flow the first one learned.
		openflow.NewFlow(0, 100).Cookie(0x1).MatchProtocol(openflow.ProtocolTCP).MatchDstIP(ip(p2.IP)).MatchDstPort(80).
			Resubmit(affinityTable).
			Learn(openflow.Learn{Table: affinityTable, IdleTimeout: idleTimeout, Priority: 100, Cookie: learnedCookie,
				DeleteLearned: true, Specs: affinitySpecs()}).
			Output(openflow.PortNormal),
		// Port 81: permanent learned flows, removed by delete_learned.
		openflow.NewFlow(0, 100).Cookie(0x2).MatchProtocol(openflow.ProtocolTCP).MatchDstIP(ip(p2.IP)).MatchDstPort(81).
			Learn(openflow.Learn{Table: affinityTable, Priority: 90, Cookie: learnedCookie + 1,
				DeleteLearned: true, Specs: affinitySpecs()}).
			Output(openflow.PortNormal),
	)
	if err := sw.Install(testctx.Timeout(t, callTimeout), "learn", flows...); err != nil {
		t.Fatal(err)
	}
	for _, f := range flows[1:] {
		if got := dumpFlows(t, ovs, fmt.Sprintf("cookie=%#x/-1", f.Cookie)); len(got) != 1 || got[0] != f.String() {
			t.Fatalf("learning flow: ovs-ofctl shows %q, want %q", got, f.String())
		}
	}

	dst := binary.BigEndian.Uint32(ip(p2.IP).To4())
	wantLearned := func(cookie uint64, priority, idle uint16, port uint16) string {
		return buildAll(t, openflow.NewFlow(affinityTable, priority).Cookie(cookie).IdleTimeout(idle).
			MatchProtocol(openflow.ProtocolTCP).MatchSrcIP(ip(p1.IP)).MatchDstIP(ip(p2.IP)).MatchDstPort(port).
			LoadReg(3, 0, 31, uint64(dst)).LoadReg(4, 0, 15, uint64(port)).Load(openflow.Reg(0, 19, 19), 1))[0].String()
	}

	// p2 has no listener: its kernel answers the SYN with a RST, which is
	// all the test needs (one packet through the learning flow).
	connect(t, p1, p2.IP, 80)
	want80 := wantLearned(learnedCookie, 100, idleTimeout, 80)
	if got := dumpFlows(t, ovs, fmt.Sprintf("table=%d", affinityTable)); len(got) != 1 || got[0] != want80 {
		t.Fatalf("learned table after one SYN:\n got %q\nwant [%q]", got, want80)
	}

	// A later connection hits the learned flow. The datapath's flow cache
	// carries the packet; its revalidator pushes the counters to the
	// OpenFlow flows about once a second, hence the polling.
	connect(t, p1, p2.IP, 80)
	last := time.Now()
	var hits uint64
	for deadline := time.Now().Add(5 * time.Second); hits == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		stats, err := sw.DumpFlows(testctx.Timeout(t, callTimeout), openflow.FlowFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range stats {
			if st.Flow.Table == affinityTable && st.Flow.Cookie == learnedCookie {
				hits = st.Packets
			}
		}
	}
	if hits < 1 {
		t.Fatalf("the second connection's SYN did not hit the learned flow within 5 s (n_packets %d)", hits)
	}

	// Expiry: the learned flow goes once idle for idle_timeout seconds
	// (OVS checks expiry about once a second). It must still be there
	// right after the last packet, and gone within a few seconds more.
	var gone time.Duration
	for deadline := last.Add(idleTimeout*time.Second + 8*time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if len(dumpFlows(t, ovs, fmt.Sprintf("table=%d", affinityTable))) == 0 {
			gone = time.Since(last)
			break
		}
	}
	if gone == 0 {
		t.Fatalf("learned flow still present %v after the last packet (idle_timeout=%d): %q",
			time.Since(last), idleTimeout, dumpFlows(t, ovs, fmt.Sprintf("table=%d", affinityTable)))
	}
	if gone < (idleTimeout-1)*time.Second {
		t.Fatalf("learned flow gone after %v, before its idle_timeout of %d s", gone, idleTimeout)
	}
	t.Logf("learned flow expired %v after the last packet (idle_timeout=%d)", gone.Round(10*time.Millisecond), idleTimeout)

	// delete_learned: a permanent learned flow goes with its learning flow.
	connect(t, p1, p2.IP, 81)
	want81 := wantLearned(learnedCookie+1, 90, 0, 81)
	if got := dumpFlows(t, ovs, fmt.Sprintf("table=%d", affinityTable)); len(got) != 1 || got[0] != want81 {
		t.Fatalf("learned table after a SYN to port 81:\n got %q\nwant [%q]", got, want81)
	}
	if err := sw.Apply(testctx.Timeout(t, callTimeout), []openflow.FlowOp{openflow.Delete(flows[2])}); err != nil {
		t.Fatal(err)
	}
	if got := dumpFlows(t, ovs, fmt.Sprintf("table=%d", affinityTable)); len(got) != 0 {
		t.Fatalf("delete_learned: learned flows left after deleting the learning flow: %q", got)
	}
}

// connect opens (and at once fails or closes) a TCP connection from pod to
// dst:port with bash's /dev/tcp; the outcome does not matter, the SYN does.
func connect(t *testing.T, pod *ovstest.Pod, dst string, port int) {
	t.Helper()
	out, err := pod.Exec("timeout", "3", "bash", "-c", fmt.Sprintf("echo > /dev/tcp/%s/%d", dst, port))
	if err != nil && !strings.Contains(out, "refused") {
		t.Fatalf("connect %s:%d from %s: expected the connection refused by a RST, got %v: %s", dst, port, pod.Name, err, out)
	}
}

// TestLearnIPv6OnRealSwitch: the IPv6 twin of the affinity learn, with real
// TCP over IPv6 between two pods; the learned flow is the builder's
// rendering of the expected one (hard_timeout, ipv6_src/ipv6_dst copied
// from the packet, the port loaded into a register).
func TestLearnIPv6OnRealSwitch(t *testing.T) {
	ovs := ovstest.Start(t, ovstest.WithPodIPv6())
	ovs.AddBridge(t, "br-int")
	sw := oftest.Switch(t, ovs, "br-int")
	p1 := ovs.AddPod(t, "br-int", "p1", "10.0.0.2/24", "02:00:0a:00:00:02", 1)
	p2 := ovs.AddPod(t, "br-int", "p2", "10.0.0.3/24", "02:00:0a:00:00:03", 2)
	// nodad: the address is usable at once (no tentative phase to wait out).
	const ip1, ip2 = "fd00:10::2", "fd00:10::3"
	for _, a := range []struct {
		pod *ovstest.Pod
		ip  string
	}{{p1, ip1}, {p2, ip2}} {
		if out, err := a.pod.Exec("ip", "addr", "add", a.ip+"/64", "dev", "eth0", "nodad"); err != nil {
			t.Fatalf("adding %s to %s: %v: %s", a.ip, a.pod.Name, err, out)
		}
	}
	ip := net.ParseIP
	const affinityTable = 20
	learnedCookie := uint64(openflow.MakeCookie(1, 5, 78))
	flows := buildAll(t,
		openflow.NewFlow(0, 0).Output(openflow.PortNormal),
		openflow.NewFlow(0, 100).Cookie(0x1).MatchProtocol(openflow.ProtocolTCPv6).MatchDstIP(ip(ip2)).MatchDstPort(80).
			Learn(openflow.Learn{Table: affinityTable, HardTimeout: 30, Priority: 100, Cookie: learnedCookie, DeleteLearned: true,
				Specs: []openflow.LearnSpec{
					openflow.LearnMatchValue(openflow.Whole(openflow.FieldEthType), 0x86dd),
					openflow.LearnMatchValue(openflow.Whole(openflow.FieldIPProto), 6),
					openflow.LearnMatch(openflow.Whole(openflow.FieldIPv6Src)),
					openflow.LearnMatch(openflow.Whole(openflow.FieldIPv6Dst)),
					openflow.LearnMatch(openflow.Whole(openflow.FieldTCPDst)),
					openflow.LearnLoad(openflow.Whole(openflow.FieldTCPDst), openflow.Reg(4, 0, 15)),
				}}).
			Output(openflow.PortNormal),
	)
	if err := sw.Install(testctx.Timeout(t, callTimeout), "learn6", flows...); err != nil {
		t.Fatal(err)
	}
	connect(t, p1, ip2, 80)
	want := buildAll(t, openflow.NewFlow(affinityTable, 100).Cookie(learnedCookie).HardTimeout(30).
		MatchProtocol(openflow.ProtocolTCPv6).MatchSrcIP(ip(ip1)).MatchDstIP(ip(ip2)).MatchDstPort(80).
		LoadReg(4, 0, 15, 80))[0].String()
	if got := dumpFlows(t, ovs, fmt.Sprintf("table=%d", affinityTable)); len(got) != 1 || got[0] != want {
		t.Fatalf("learned table after one IPv6 SYN:\n got %q\nwant [%q]", got, want)
	}
}
