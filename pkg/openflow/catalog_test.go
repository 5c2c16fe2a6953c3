package openflow

import (
	"net"
	"testing"
)

// catalogCase is a flow built with the builder and the text ovs-ofctl
// prints for it (`-O OpenFlow15 --no-stats --no-names dump-flows`). The
// unit test checks our renderer against want; the integration test installs
// every flow into a real bridge and checks ovs-vswitchd prints the same.
type catalogCase struct {
	name  string
	build *FlowBuilder
	want  string
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// catalog covers every match and action of the builder. Table 0 is left to
// the integration test's own flows; cookies make each flow findable.
func catalog() []catalogCase {
	ip := net.ParseIP
	var label, labelMask [16]byte
	label[15], labelMask[15] = 0x12, 0xff
	return []catalogCase{
		{"in_port+output", NewFlow(1, 100).Cookie(0x1).MatchInPort(3).Output(4),
			"cookie=0x1, table=1, priority=100,in_port=3 actions=output:4"},
		{"eth addresses", NewFlow(1, 101).Cookie(0x2).MatchEthSrc(mustMAC("02:00:00:00:00:01")).MatchEthDst(mustMAC("02:00:00:00:00:02")).Output(PortNormal),
			"cookie=0x2, table=1, priority=101,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:02 actions=NORMAL"},
		{"eth dst masked", NewFlow(1, 102).Cookie(0x3).MatchEthDstMasked(mustMAC("01:00:00:00:00:00"), mustMAC("01:00:00:00:00:00")).Drop(),
			"cookie=0x3, table=1, priority=102,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=drop"},
		{"ipv4 src/dst", NewFlow(2, 200).Cookie(0x4).MatchProtocol(ProtocolIP).MatchSrcIP(ip("10.0.0.2")).MatchDstNet(mustCIDR("10.1.0.0/16")).DecTTL().GotoTable(5),
			"cookie=0x4, table=2, priority=200,ip,nw_src=10.0.0.2,nw_dst=10.1.0.0/16 actions=dec_ttl,goto_table:5"},
		{"ipv6", NewFlow(2, 201).Cookie(0x5).MatchProtocol(ProtocolIPv6).MatchSrcNet(mustCIDR("fd00::/64")).MatchDstIP(ip("fd00:1::5")).Output(2),
			"cookie=0x5, table=2, priority=201,ipv6,ipv6_src=fd00::/64,ipv6_dst=fd00:1::5 actions=output:2"},
		{"tcp ports", NewFlow(3, 300).Cookie(0x6).MatchProtocol(ProtocolTCP).MatchSrcPort(1234).MatchDstPort(80).Output(5),
			"cookie=0x6, table=3, priority=300,tcp,tp_src=1234,tp_dst=80 actions=output:5"},
		{"udp port range", NewFlow(3, 301).Cookie(0x7).MatchProtocol(ProtocolUDP).MatchDstPortMasked(0x400, 0xfc00).Output(5),
			"cookie=0x7, table=3, priority=301,udp,tp_dst=0x400/0xfc00 actions=output:5"},
		{"sctp", NewFlow(3, 302).Cookie(0x8).MatchProtocol(ProtocolSCTP).MatchDstPort(9).Output(5),
			"cookie=0x8, table=3, priority=302,sctp,tp_dst=9 actions=output:5"},
		{"icmp", NewFlow(3, 303).Cookie(0x9).MatchProtocol(ProtocolICMP).MatchICMPType(8).MatchICMPCode(0).Output(5),
			"cookie=0x9, table=3, priority=303,icmp,icmp_type=8,icmp_code=0 actions=output:5"},
		{"nd solicitation", NewFlow(3, 304).Cookie(0x7b).MatchProtocol(ProtocolICMPv6).MatchICMPType(135).MatchICMPCode(0).
			MatchNDTarget(ip("fd00::5")).MatchNDSll(mustMAC("02:00:00:00:00:02")).Output(5),
			"cookie=0x7b, table=3, priority=304,icmp6,icmp_type=135,icmp_code=0,nd_target=fd00::5,nd_sll=02:00:00:00:00:02 actions=output:5"},
		{"nd advertisement", NewFlow(3, 305).Cookie(0x7c).MatchInPort(3).MatchProtocol(ProtocolICMPv6).MatchICMPType(136).
			MatchNDTarget(ip("fd00::5")).MatchNDTll(mustMAC("02:00:00:00:00:05")).GotoTable(4),
			"cookie=0x7c, table=3, priority=305,icmp6,in_port=3,icmp_type=136,nd_target=fd00::5,nd_tll=02:00:00:00:00:05 actions=goto_table:4"},
		{"arp", NewFlow(4, 400).Cookie(0xa).MatchProtocol(ProtocolARP).MatchARPOp(1).MatchARPTpa(ip("10.0.0.1")).MatchARPSpa(ip("10.0.0.2")).MatchARPSha(mustMAC("02:00:00:00:00:02")).
			Move(Whole(FieldEthSrc), Whole(FieldEthDst)).SetEthSrc(mustMAC("02:00:00:00:00:ff")).Load(Whole(FieldArpOp), 2).
			Move(Whole(FieldArpSha), Whole(FieldArpTha)).SetField(FieldArpSha, mustMAC("02:00:00:00:00:ff")).
			Move(Whole(FieldArpSpa), Whole(FieldArpTpa)).Action(SetIPField(FieldArpSpa, ip("10.0.0.1"))).Output(PortInPort),
			"cookie=0xa, table=4, priority=400,arp,arp_spa=10.0.0.2,arp_tpa=10.0.0.1,arp_op=1,arp_sha=02:00:00:00:00:02 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:00:00:00:00:ff->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:02:00:00:00:00:ff->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.0.0.1->arp_spa,IN_PORT"},
		{"registers", NewFlow(5, 500).Cookie(0xb).MatchReg(0, 7).MatchRegBits(1, 0, 3, 2).MatchRegBits(1, 16, 16, 1).LoadReg(2, 0, 15, 0x64).LoadReg(3, 0, 31, 9).Move(Reg(2, 0, 15), Reg(4, 16, 31)).OutputReg(1, 0, 15),
			"cookie=0xb, table=5, priority=500,reg0=0x7,reg1=0x10002/0x1000f actions=set_field:0x64/0xffff->reg2,set_field:0x9->reg3,move:NXM_NX_REG2[0..15]->NXM_NX_REG4[16..31],output:NXM_NX_REG1[0..15]"},
		{"reg zero value", NewFlow(5, 501).Cookie(0xc).MatchRegBits(0, 4, 7, 0).Resubmit(6),
			"cookie=0xc, table=5, priority=501,reg0=0/0xf0 actions=resubmit(,6)"},
		{"tunnel", NewFlow(6, 600).Cookie(0xd).MatchTunID(0x64).MatchTunDst(ip("192.0.2.1")).MatchTunSrc(ip("192.0.2.2")).Output(3),
			"cookie=0xd, table=6, priority=600,tun_id=0x64,tun_src=192.0.2.2,tun_dst=192.0.2.1 actions=output:3"},
		{"set tunnel", NewFlow(6, 601).Cookie(0xe).MatchProtocol(ProtocolIP).MatchDstNet(mustCIDR("10.2.0.0/24")).SetTunDst(ip("192.0.2.9")).SetTunID(0).Output(1),
			"cookie=0xe, table=6, priority=601,ip,nw_dst=10.2.0.0/24 actions=set_field:192.0.2.9->tun_dst,set_field:0->tun_id,output:1"},
		// Tunnels over an IPv6 underlay: the same builder calls with IPv6
		// addresses choose tun_ipv6_src/tun_ipv6_dst.
		{"tunnel ipv6", NewFlow(6, 602).Cookie(0x24).MatchTunID(0x64).MatchTunDst(ip("2001:db8::1")).MatchTunSrc(ip("2001:db8::2")).Output(3),
			"cookie=0x24, table=6, priority=602,tun_id=0x64,tun_ipv6_src=2001:db8::2,tun_ipv6_dst=2001:db8::1 actions=output:3"},
		{"set tunnel ipv6", NewFlow(6, 603).Cookie(0x25).MatchProtocol(ProtocolIP).MatchDstNet(mustCIDR("10.3.0.0/24")).SetTunDst(ip("2001:db8::9")).Output(1),
			"cookie=0x25, table=6, priority=603,ip,nw_dst=10.3.0.0/24 actions=set_field:2001:db8::9->tun_ipv6_dst,output:1"},
		{"tun_ipv6_src after registers, before metadata and in_port", NewFlow(6, 604).Cookie(0x26).MatchInPort(1).MatchMetadata(0x1, 0xff).
			MatchProtocol(ProtocolIPv6).MatchRegBits(0, 0, 3, 2).MatchTunSrc(ip("fd00:192:0:2::2")).MatchCTState(CTState{}.Trk(true).Rpl(true)).
			SetEthDst(mustMAC("02:00:00:00:00:01")).GotoTable(7),
			"cookie=0x26, table=6, priority=604,ct_state=+rpl+trk,ipv6,reg0=0x2/0xf,tun_ipv6_src=fd00:192:0:2::2,metadata=0x1/0xff,in_port=1 actions=set_field:02:00:00:00:00:01->eth_dst,goto_table:7"},
		{"ct_state est", NewFlow(7, 700).Cookie(0xf).MatchProtocol(ProtocolIP).MatchCTState(CTState{}.Trk(true).Est(true).New(false)).GotoTable(9),
			"cookie=0xf, table=7, priority=700,ct_state=-new+est+trk,ip actions=goto_table:9"},
		{"ct_state inv", NewFlow(7, 701).Cookie(0x10).MatchCTState(CTState{}.Trk(true).Inv(true)).Drop(),
			"cookie=0x10, table=7, priority=701,ct_state=+inv+trk actions=drop"},
		{"ct zone mark label", NewFlow(7, 702).Cookie(0x11).MatchCTZone(65520).MatchCTMark(0x2, 0x2).MatchCTLabel(label, labelMask).MatchProtocol(ProtocolIP).Output(2),
			"cookie=0x11, table=7, priority=702,ct_zone=65520,ct_mark=0x2/0x2,ct_label=0x12/0xff,ip actions=output:2"},
		{"ct recirc", NewFlow(8, 800).Cookie(0x12).MatchProtocol(ProtocolIP).CT(CT(65520, 9)),
			"cookie=0x12, table=8, priority=800,ip actions=ct(table=9,zone=65520)"},
		{"ct commit exec", NewFlow(8, 801).Cookie(0x13).MatchProtocol(ProtocolIP).MatchCTState(CTState{}.Trk(true).New(true)).
			CT(CTCommit(65520, SetCTMark(0x1, 0xf), SetCTLabel(label, labelMask))).GotoTable(10),
			"cookie=0x13, table=8, priority=801,ct_state=+new+trk,ip actions=ct(commit,zone=65520,exec(set_field:0x1/0xf->ct_mark,set_field:0x12/0xff->ct_label)),goto_table:10"},
		{"ct nat restore", NewFlow(8, 802).Cookie(0x14).MatchProtocol(ProtocolIP).CT(CT(65521, 9).WithNAT(NAT{Kind: NATRestore})),
			"cookie=0x14, table=8, priority=802,ip actions=ct(table=9,zone=65521,nat)"},
		{"ct snat", NewFlow(8, 803).Cookie(0x15).MatchProtocol(ProtocolIP).CT(CTCommit(65521).WithNAT(NAT{Kind: NATSource, IPMin: ip("192.0.2.1"), IPMax: ip("192.0.2.4"), PortMin: 1000, PortMax: 2000})),
			"cookie=0x15, table=8, priority=803,ip actions=ct(commit,zone=65521,nat(src=192.0.2.1-192.0.2.4:1000-2000))"},
		{"ct dnat", NewFlow(8, 804).Cookie(0x16).MatchProtocol(ProtocolTCP).CT(CTCommit(65521).WithNAT(NAT{Kind: NATDest, IPMin: ip("10.0.0.5"), PortMin: 8080})),
			"cookie=0x16, table=8, priority=804,tcp actions=ct(commit,zone=65521,nat(dst=10.0.0.5:8080))"},
		{"conjunction clauses", NewFlow(9, 900).Cookie(0x17).MatchProtocol(ProtocolIP).MatchSrcIP(ip("10.0.0.5")).Conjunction(100, 1, 2).Conjunction(101, 1, 3),
			"cookie=0x17, table=9, priority=900,ip,nw_src=10.0.0.5 actions=conjunction(100,1/2),conjunction(101,1/3)"},
		{"conj_id", NewFlow(9, 901).Cookie(0x18).MatchConjID(100).MatchProtocol(ProtocolIP).GotoTable(10),
			"cookie=0x18, table=9, priority=901,conj_id=100,ip actions=goto_table:10"},
		{"pkt_mark metadata", NewFlow(10, 1000).Cookie(0x19).MatchPktMark(0x10, 0xf0).MatchMetadata(0x1, 0xff).Output(3),
			"cookie=0x19, table=10, priority=1000,pkt_mark=0x10/0xf0,metadata=0x1/0xff actions=output:3"},
		{"group meter note", NewFlow(10, 1001).Cookie(0x1a).MatchInPort(7).Meter(1).Note([]byte{0xab, 0xcd}).Group(1),
			"cookie=0x1a, table=10, priority=1001,in_port=7 actions=meter:1,note:ab.cd.00.00.00.00,group:1"},
		{"controller", NewFlow(10, 1002).Cookie(0x1b).MatchInPort(8).Controller(nil),
			"cookie=0x1b, table=10, priority=1002,in_port=8 actions=CONTROLLER:65535"},
		{"controller userdata", NewFlow(10, 1003).Cookie(0x1c).MatchInPort(9).Controller([]byte{1, 2}),
			"cookie=0x1c, table=10, priority=1003,in_port=9 actions=controller(userdata=01.02)"},
		{"timeouts default priority", NewFlow(11, 0x8000).Cookie(0x1d).IdleTimeout(60).HardTimeout(120).MatchInPort(3).Output(4),
			"cookie=0x1d, table=11, idle_timeout=60, hard_timeout=120, in_port=3 actions=output:4"},
		{"dl_type raw", NewFlow(11, 1).Cookie(0x1e).MatchEthType(0x88cc).Drop(),
			"cookie=0x1e, table=11, priority=1,dl_type=0x88cc actions=drop"},
		{"ip proto raw", NewFlow(11, 2).Cookie(0x1f).MatchProtocol(ProtocolIP).MatchIPProto(47).Drop(),
			"cookie=0x1f, table=11, priority=2,ip,nw_proto=47 actions=drop"},
		{"set ip", NewFlow(11, 3).Cookie(0x20).MatchProtocol(ProtocolIP).Action(SetIPField(FieldIPv4Dst, ip("10.0.0.9"))).Action(SetIPField(FieldIPv4Src, ip("10.0.0.8"))).Output(2),
			"cookie=0x20, table=11, priority=3,ip actions=set_field:10.0.0.9->ip_dst,set_field:10.0.0.8->ip_src,output:2"},
		{"protocol before regs, tunnel, metadata, in_port", NewFlow(12, 4).Cookie(0x21).MatchInPort(3).MatchProtocol(ProtocolTCP).MatchReg(2, 5).
			MatchTunID(7).MatchMetadata(0x10, 0xf0).MatchCTMark(1, 0xffffffff).MatchEthSrc(mustMAC("02:00:00:00:00:01")).MatchDstPort(22).Drop(),
			"cookie=0x21, table=12, priority=4,ct_mark=0x1,tcp,reg2=0x5,tun_id=0x7,metadata=0x10/0xf0,in_port=3,dl_src=02:00:00:00:00:01,tp_dst=22 actions=drop"},
		{"arp with register", NewFlow(12, 5).Cookie(0x22).MatchProtocol(ProtocolARP).MatchRegBits(0, 0, 3, 3).MatchARPTpa(ip("10.0.0.1")).Drop(),
			"cookie=0x22, table=12, priority=5,arp,reg0=0x3/0xf,arp_tpa=10.0.0.1 actions=drop"},
		{"unknown dl_type after dl_dst", NewFlow(12, 6).Cookie(0x23).MatchInPort(2).MatchEthType(0x88cc).MatchEthDst(mustMAC("01:80:c2:00:00:0e")).Drop(),
			"cookie=0x23, table=12, priority=6,in_port=2,dl_dst=01:80:c2:00:00:0e,dl_type=0x88cc actions=drop"},
		// learn(): the proxy's ClientIP session affinity (client address and
		// frontend copied from the packet, endpoint registers loaded), its
		// IPv6 twin, and the remaining spec kinds and options.
		{"learn affinity", NewFlow(13, 100).Cookie(0x27).MatchProtocol(ProtocolTCP).MatchCTState(CTState{}.Trk(true).New(true)).
			Learn(Learn{Table: 14, IdleTimeout: 10800, Priority: 200, Cookie: 0x500000000001, DeleteLearned: true, Specs: []LearnSpec{
				LearnMatchValue(Whole(FieldEthType), 0x800), LearnMatchValue(Whole(FieldIPProto), 6),
				LearnMatch(Whole(FieldIPv4Src)), LearnMatch(Whole(FieldIPv4Dst)), LearnMatch(Whole(FieldTCPDst)),
				LearnLoad(Whole(FieldReg0+3), Whole(FieldReg0+3)), LearnLoad(Reg(4, 0, 15), Reg(4, 0, 15)), LearnLoadValue(Reg(0, 19, 19), 1),
			}}).GotoTable(14),
			"cookie=0x27, table=13, priority=100,ct_state=+new+trk,tcp actions=learn(table=14,idle_timeout=10800,priority=200,delete_learned,cookie=0x500000000001,eth_type=0x800,nw_proto=6,NXM_OF_IP_SRC[],NXM_OF_IP_DST[],NXM_OF_TCP_DST[],load:NXM_NX_REG3[]->NXM_NX_REG3[],load:NXM_NX_REG4[0..15]->NXM_NX_REG4[0..15],load:0x1->NXM_NX_REG0[19]),goto_table:14"},
		{"learn affinity ipv6", NewFlow(13, 101).Cookie(0x28).MatchProtocol(ProtocolUDPv6).
			Learn(Learn{Table: 14, HardTimeout: 30, Priority: 0x8000, Specs: []LearnSpec{
				LearnMatchValue(Whole(FieldEthType), 0x86dd), LearnMatchValue(Whole(FieldIPProto), 17),
				LearnMatch(Whole(FieldIPv6Src)), LearnMatchBytes(Whole(FieldIPv6Dst), ip("fd00:10::1").To16()), LearnMatchValue(Whole(FieldUDPDst), 53),
				LearnLoad(Whole(FieldIPv6Src), Whole(FieldIPv6Dst)), LearnLoadValue(Whole(FieldUDPDst), 5353),
			}}).Output(3),
			"cookie=0x28, table=13, priority=101,udp6 actions=learn(table=14,hard_timeout=30,eth_type=0x86dd,nw_proto=17,NXM_NX_IPV6_SRC[],ipv6_dst=fd00:10::1,udp_dst=53,load:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],load:0x14e9->NXM_OF_UDP_DST[]),output:3"},
		{"learn reply, fin timeouts, output", NewFlow(13, 102).Cookie(0x29).MatchProtocol(ProtocolTCP).MatchInPort(4).
			Learn(Learn{Table: 15, IdleTimeout: 2, HardTimeout: 4, FinIdleTimeout: 1, FinHardTimeout: 3, Priority: 0, SendFlowRem: true, Specs: []LearnSpec{
				LearnMatchValue(Whole(FieldEthType), 0x800), LearnMatchValue(Reg(5, 8, 15), 0), LearnMatchValue(Reg(6, 0, 23), 0xabcd),
				LearnMatchFrom(Whole(FieldIPv4Dst), Whole(FieldIPv4Src)), LearnMatchFrom(Reg(1, 16, 31), Reg(2, 0, 15)),
				LearnMatchValue(Whole(FieldInPort), 4), LearnOutput(Whole(FieldInPort)),
			}}),
			"cookie=0x29, table=13, priority=102,tcp,in_port=4 actions=learn(table=15,idle_timeout=2,hard_timeout=4,fin_idle_timeout=1,fin_hard_timeout=3,priority=0,send_flow_rem,eth_type=0x800,NXM_NX_REG5[8..15]=0,NXM_NX_REG6[0..23]=0xabcd,NXM_OF_IP_DST[]=NXM_OF_IP_SRC[],NXM_NX_REG1[16..31]=NXM_NX_REG2[0..15],in_port_oxm=4,output:OXM_OF_IN_PORT[])"},
	}
}

func TestRenderCatalog(t *testing.T) {
	for _, c := range catalog() {
		t.Run(c.name, func(t *testing.T) {
			f, err := c.build.Done()
			if err != nil {
				t.Fatal(err)
			}
			if got := f.String(); got != c.want {
				t.Errorf("render\n got: %s\nwant: %s", got, c.want)
			}
		})
	}
}
