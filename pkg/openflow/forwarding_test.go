package openflow_test

import (
	"net"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/test/testctx"
)

// TestPipelineForwardsPing builds a small multi-table pipeline with
// conntrack and a conjunctive "policy" on a real bridge and sends real
// pings between two pod namespaces:
//
//	0: arp -> NORMAL; ip -> ct(zone=1, table=1)
//	1: +inv+trk -> drop; +est+trk -> goto 3; +new+trk -> goto 2
//	2: conjunction(10): nw_src=10.0.0.2 AND icmp -> ct(commit), goto 3; else drop
//	3: nw_dst -> output to the pod's port
//
// p1 may ping p2 (and the replies come back as established), p2 may not
// start a connection to p1.
func TestPipelineForwardsPing(t *testing.T) {
	ovs, sw := newBridge(t)
	p1 := ovs.AddPod(t, "br-int", "p1", "10.0.0.2/24", "02:00:0a:00:00:02", 1)
	p2 := ovs.AddPod(t, "br-int", "p2", "10.0.0.3/24", "02:00:0a:00:00:03", 2)

	const zone = 1
	ip := net.ParseIP
	policyCookie := uint64(openflow.MakeCookie(1, 2, 10))
	flows := buildAll(t,
		openflow.NewFlow(0, 200).MatchProtocol(openflow.ProtocolARP).Output(openflow.PortNormal),
		openflow.NewFlow(0, 100).MatchProtocol(openflow.ProtocolIP).CT(openflow.CT(zone, 1)),
		openflow.NewFlow(1, 200).MatchCTState(openflow.CTState{}.Trk(true).Inv(true)).Drop(),
		openflow.NewFlow(1, 190).MatchProtocol(openflow.ProtocolIP).MatchCTState(openflow.CTState{}.Trk(true).Est(true)).GotoTable(3),
		openflow.NewFlow(1, 180).MatchProtocol(openflow.ProtocolIP).MatchCTState(openflow.CTState{}.Trk(true).New(true)).GotoTable(2),
		openflow.NewFlow(2, 200).Cookie(policyCookie).MatchProtocol(openflow.ProtocolIP).MatchSrcIP(ip(p1.IP)).Conjunction(10, 1, 2),
		openflow.NewFlow(2, 200).Cookie(policyCookie).MatchProtocol(openflow.ProtocolICMP).Conjunction(10, 2, 2),
		openflow.NewFlow(2, 200).Cookie(policyCookie).MatchProtocol(openflow.ProtocolIP).MatchConjID(10).
			CT(openflow.CTCommit(zone, openflow.SetCTMark(0x1, 0x1))).GotoTable(3),
		openflow.NewFlow(2, 0).Drop(),
		openflow.NewFlow(3, 100).MatchProtocol(openflow.ProtocolIP).MatchDstIP(ip(p1.IP)).Output(uint32(p1.OFPort)),
		openflow.NewFlow(3, 100).MatchProtocol(openflow.ProtocolIP).MatchDstIP(ip(p2.IP)).Output(uint32(p2.OFPort)),
	)
	if err := sw.Install(testctx.Timeout(t, callTimeout), "demo", flows...); err != nil {
		t.Fatal(err)
	}
	if err := p1.Ping(p2.IP, 3); err != nil {
		t.Fatalf("p1 -> p2 allowed by the conjunction, but ping failed: %v\n%s", err, strings.Join(dumpFlows(t, ovs), "\n"))
	}
	if err := p2.Ping(p1.IP, 2); err == nil {
		t.Fatalf("p2 -> p1 should be dropped by the policy table, but ping succeeded")
	}

	// Counters read back through our flow stats. The three echo requests
	// share one ICMP id, so conntrack sees one connection: only the first
	// request is +new and crosses the conjunction; the other two requests
	// and the three replies are +est. p2's requests hit the drop flow.
	stats, err := sw.DumpFlows(testctx.Timeout(t, callTimeout), openflow.FlowFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var conjPackets, dropPackets, estPackets uint64
	for _, st := range stats {
		switch {
		case st.Flow.Table == 2 && strings.Contains(st.Flow.Match(), "conj_id=10"):
			conjPackets = st.Packets
		case st.Flow.Table == 2 && st.Flow.Priority == 0:
			dropPackets = st.Packets
		case st.Flow.Table == 1 && strings.Contains(st.Flow.Match(), "+est"):
			estPackets = st.Packets
		}
	}
	if conjPackets != 1 || dropPackets < 2 || estPackets < 5 {
		t.Fatalf("packets: conjunction %d (want 1), policy drop %d (want >= 2), established %d (want >= 5)",
			conjPackets, dropPackets, estPackets)
	}
	conntrack := ovs.MustAppctl(t, "dpctl/dump-conntrack")
	if !strings.Contains(conntrack, "src="+p1.IP+",dst="+p2.IP) || !strings.Contains(conntrack, "mark=1") {
		t.Fatalf("expected a committed p1->p2 connection with mark=1 in conntrack:\n%s", conntrack)
	}
}

func ptr[T any](v T) *T { return &v }
