package pipeline

import (
	"context"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/openflow"
)

// ipv6OnlyConfig is dualStackConfig without the IPv4 half: the node of an
// IPv6-only cluster.
func ipv6OnlyConfig(t *testing.T) Config {
	t.Helper()
	cfg := dualStackConfig(t)
	cfg.GatewayIP, cfg.PodCIDR = nil, nil
	return cfg
}

// ipv6OnlyPod is dualStackPod without its IPv4 address.
func ipv6OnlyPod() PodInterface {
	pod := dualStackPod()
	pod.IPs = pod.IPs[1:]
	return pod
}

// ipv4Match finds a match on IPv4, or ARP for an address, in a rendered
// flow: the ip, tcp, udp, sctp or icmp protocol (not their IPv6 forms
// ipv6, tcp6, ...), nw_src/nw_dst or an arp_ field. The one ARP flow
// without an arp_ field is the family-neutral drop of all ARP.
var ipv4Match = regexp.MustCompile(`(^|[ ,])(ip|tcp|udp|sctp|icmp)(,| )|nw_(src|dst)=|arp_(op|spa|tpa|sha|tha)=`)

// lines splits rendered flows into lines.
func lines(s string) []string {
	if s = strings.TrimSuffix(s, "\n"); s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// withoutIPv4 returns the lines of flows that match no IPv4 or ARP.
func withoutIPv4(flows string) []string {
	return slices.DeleteFunc(lines(flows), ipv4Match.MatchString)
}

// TestIPv6OnlyFlows: on an IPv6-only node the base flows are the dual-stack
// ones without every flow that matches IPv4 or ARP for an address, in the
// same order (golden base-ipv6only.flows); ARP is dropped whatever asks.
// An IPv6-only pod's flows are the dual-stack pod's without its IPv4 and
// ARP flows (golden pod-ipv6only.flows), the same on a dual-stack node.
func TestIPv6OnlyFlows(t *testing.T) {
	p, err := New(nil, ipv6OnlyConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	dual, err := New(nil, dualStackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	base, err := p.BaseFlows()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "base-ipv6only.flows", render(base))
	dualBase := must(dual.BaseFlows())
	if got, want := lines(render(base)), withoutIPv4(render(dualBase)); !slices.Equal(got, want) {
		t.Errorf("IPv6-only base flows are not the dual-stack ones without IPv4:\n%s\nwant\n%s",
			strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// What was left out is IPv4 and nothing else: the neutral flows and
	// the ARP drop stay.
	for _, w := range []string{"table=ARPResponder, priority=1,arp actions=drop", "table=SpoofGuard, priority=0 actions=drop",
		"table=ConntrackZone, priority=0 actions=drop", "table=L2Forwarding, priority=200,dl_dst=02:00:0a:0a:00:01"} {
		if !strings.Contains(render(base), w) {
			t.Errorf("IPv6-only base flows lack %q", w)
		}
	}
	if n := len(lines(render(dualBase))) - len(base); n != 19 {
		t.Errorf("%d dual-stack base flows left out, want the 19 IPv4 ones", n)
	}

	cookie := openflow.MakeCookie(1, CategoryPod, 7)
	pod, err := p.PodFlows(ipv6OnlyPod(), cookie)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "pod-ipv6only.flows", render(pod))
	dualPod := must(dual.PodFlows(dualStackPod(), cookie))
	if got, want := lines(render(pod)), withoutIPv4(render(dualPod)); !slices.Equal(got, want) || len(pod) != len(dualPod)-5 {
		t.Errorf("IPv6-only pod flows are not the dual-stack pod's without its 5 IPv4 and ARP flows:\n%s", render(pod))
	}
	if same := must(dual.PodFlows(ipv6OnlyPod(), cookie)); render(same) != render(pod) {
		t.Errorf("IPv6-only pod on a dual-stack node:\n%s\nwant\n%s", render(same), render(pod))
	}

	// ARP: dropped whatever asks, the node included (a pod's ARP does not
	// even pass SpoofGuard: no pod flow there matches it).
	flows := append(base, pod...)
	for _, tpa := range []string{"10.10.0.1", "10.10.0.5"} {
		for _, reg0 := range []string{"0x1/0xf", "0x3/0xf"} {
			if got := arpVerdict(t, flows, map[string]string{"arp": "", "reg0": reg0, "dl_dst": "ff:ff:ff:ff:ff:ff", "arp_op": "1", "arp_tpa": tpa}); got != "drop" {
				t.Errorf("ARP from reg0=%s for %s: %q, want drop", reg0, tpa, got)
			}
		}
	}
	for _, f := range flows {
		if r := Renderer().Flow(f); f.Table == SpoofGuard && (ipv4Match.MatchString(r) || strings.Contains(r, "arp")) {
			t.Errorf("SpoofGuard lets IPv4 or ARP pass on an IPv6-only node: %s", Renderer().Flow(f))
		}
	}
}

func TestIPv6OnlyValidation(t *testing.T) {
	p, err := New(nil, ipv6OnlyConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	pod4 := dualStackPod()
	pod4.IPs = pod4.IPs[:1]
	for _, tc := range []struct {
		name string
		pod  PodInterface
		want string
	}{
		{"IPv4 pod", pod4, "has IPv4 address 10.10.0.5 but the pipeline has no IPv4 configuration"},
		{"dual-stack pod", dualStackPod(), "no IPv4 configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := p.PodFlows(tc.pod, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
		want string
	}{
		{"no family", func(c *Config) { c.GatewayIPv6, c.PodCIDRv6 = nil, nil }, "pipeline: a gateway address of at least one family is required"},
		{"IPv6 gateway without CIDR", func(c *Config) { c.PodCIDRv6 = nil }, "must be set together"},
		{"IPv4 pod CIDR alone", func(c *Config) { c.PodCIDR = cidr(t, "10.10.0.0/24") }, "needs the gateway IPv4 address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ipv6OnlyConfig(t)
			tc.cfg(&cfg)
			if _, err := New(nil, cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestIPv6OnlyServiceCIDRs: the IPv6 Service CIDR bypass exists on an
// IPv6-only node; an IPv4 Service CIDR there makes no flow (no pod has
// IPv4), as an IPv6 one makes none on an IPv4-only node.
func TestIPv6OnlyServiceCIDRs(t *testing.T) {
	cfg := ipv6OnlyConfig(t)
	cfg.ServiceCIDR, cfg.ServiceCIDRv6 = cidr(t, "10.96.0.0/16"), cidr(t, "fd00:10:96::/112")
	p, err := New(nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := render(must(p.BaseFlows()))
	if want := "table=EgressRule, priority=205,ipv6,reg0=0x3/0xf,ipv6_dst=fd00:10:96::/112 actions=goto_table:L3Forwarding"; !strings.Contains(base, want) {
		t.Errorf("no IPv6 Service CIDR bypass %q in\n%s", want, base)
	}
	if strings.Contains(base, "10.96.") {
		t.Errorf("IPv4 Service CIDR in the flows of an IPv6-only node:\n%s", base)
	}
	without := ipv6OnlyConfig(t)
	if got, want := lines(base), lines(render(must(must(New(nil, without)).BaseFlows()))); len(got) != len(want)+1 {
		t.Errorf("%d base flows with the Service CIDRs, want %d + the IPv6 bypass", len(got), len(want))
	}
}

// testIPv6OnlyPeer is an IPv6-only peer over an IPv6 underlay.
func testIPv6OnlyPeer(t *testing.T) PeerNode {
	t.Helper()
	peer := testDualStackPeer(t)
	peer.PodCIDR, peer.GatewayIP = nil, nil
	peer.NodeIP = net.ParseIP(ipv6UnderlayNodeIP)
	return peer
}

// TestIPv6OnlyPeerFlowsGolden: an IPv6-only peer over an IPv6 underlay has
// the dual-stack IPv6-underlay peer's flows without the IPv4 ones: its IPv6
// route into the tunnel (tun_ipv6_dst) and the IPv6 reply flow to its node
// IP (golden peer-ipv6only.flows), the same on an IPv6-only and a
// dual-stack node. Over an IPv4 underlay it has the route alone.
func TestIPv6OnlyPeerFlowsGolden(t *testing.T) {
	cookie := openflow.MakeCookie(1, CategoryPeer, 3)
	p, err := New(nil, ipv6OnlyConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	dual, err := New(nil, dualStackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	flows, err := p.PeerFlows(testIPv6OnlyPeer(t), cookie)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "peer-ipv6only.flows", render(flows))
	dualPeer := testDualStackPeer(t)
	dualPeer.NodeIP = net.ParseIP(ipv6UnderlayNodeIP)
	if got, want := lines(render(flows)), withoutIPv4(render(must(dual.PeerFlows(dualPeer, cookie)))); !slices.Equal(got, want) || len(got) != 2 {
		t.Errorf("IPv6-only peer flows are not the dual-stack peer's IPv6 ones:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if same := must(dual.PeerFlows(testIPv6OnlyPeer(t), cookie)); render(same) != render(flows) {
		t.Errorf("IPv6-only peer on a dual-stack node:\n%s", render(same))
	}

	over4 := testIPv6OnlyPeer(t)
	over4.NodeIP = net.ParseIP("192.0.2.2")
	got := render(must(p.PeerFlows(over4, cookie)))
	if want := strings.ReplaceAll(lines(render(flows))[0], ipv6UnderlayNodeIP+"->tun_ipv6_dst", "192.0.2.2->tun_dst") + "\n"; got != want {
		t.Errorf("IPv6-only peer over an IPv4 underlay:\n%s\nwant\n%s", got, want)
	}
}

func TestIPv6OnlyPeerValidation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    func(*testing.T) Config
		mutate func(*PeerNode)
		want   string
	}{
		{"IPv4 peer on an IPv6-only node", ipv6OnlyConfig, func(n *PeerNode) { *n = testPeer(t) }, "has IPv4 pod CIDR 10.10.1.0/24 but this node's pipeline has no IPv4 configuration"},
		{"dual-stack peer on an IPv6-only node", ipv6OnlyConfig, func(n *PeerNode) { *n = testDualStackPeer(t) }, "no IPv4 configuration"},
		{"IPv6-only peer on an IPv4-only node", testConfig, nil, "no IPv6 configuration"},
		{"no pod CIDR at all", ipv6OnlyConfig, func(n *PeerNode) { n.PodCIDRv6, n.GatewayIPv6 = nil, nil }, "a pod CIDR of at least one family is required"},
		{"overlaps the local IPv6 pod CIDR", ipv6OnlyConfig, func(n *PeerNode) {
			n.PodCIDRv6, n.GatewayIPv6 = cidr(t, "fd00:10:10::/64"), net.ParseIP("fd00:10:10::1")
		}, "overlaps this node's fd00:10:10::/64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(nil, tc.cfg(t))
			if err != nil {
				t.Fatal(err)
			}
			peer := testIPv6OnlyPeer(t)
			if tc.mutate != nil {
				tc.mutate(&peer)
			}
			if _, err := p.PeerFlows(peer, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestAddIPv6OnlyPeers: the overlap check between peers works per family
// with peers lacking one (nil CIDRs): on a dual-stack node an IPv6-only, an
// IPv4-only and a dual-stack peer live side by side, an IPv6-only peer
// overlapping another's IPv6 CIDR is refused; on an IPv6-only node two
// IPv6-only peers.
func TestAddIPv6OnlyPeers(t *testing.T) {
	ctx := context.Background()
	v6only := func(name, cidr6, gw6 string) PeerNode {
		peer := testIPv6OnlyPeer(t)
		peer.Name, peer.PodCIDRv6, peer.GatewayIPv6 = name, cidr(t, cidr6), net.ParseIP(gw6)
		return peer
	}
	v4only := testPeer(t)
	v4only.Name, v4only.PodCIDR, v4only.GatewayIP = "v4", cidr(t, "10.10.2.0/24"), net.ParseIP("10.10.2.1")

	sw := &fakeSwitch{owners: map[string][]*openflow.Flow{}}
	p, err := New(sw, dualStackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, peer := range []PeerNode{v6only("a", "fd00:10:21::/64", "fd00:10:21::1"), testDualStackPeer(t), v4only,
		v6only("b", "fd00:10:22::/64", "fd00:10:22::1")} {
		if err := p.AddPeer(ctx, peer); err != nil {
			t.Fatalf("AddPeer(%s): %v", peer.Name, err)
		}
	}
	if got := strings.Join(p.Peers(), ","); got != "a,b,node2,v4" {
		t.Errorf("Peers() = %s", got)
	}
	if n := len(sw.owners["peer/a"]); n != 2 {
		t.Errorf("IPv6-only peer a owns %d flows, want 2", n)
	}
	for _, c := range []struct {
		peer PeerNode
		want string
	}{
		{v6only("c", "fd00:10:21::/48", "fd00:10:21::1"), "pod CIDR fd00:10:21::/48 overlaps peer a's fd00:10:21::/64"},
		{v6only("d", "fd00:10:11::/64", "fd00:10:11::1"), "overlaps peer node2's fd00:10:11::/64"},
	} {
		if err := p.AddPeer(ctx, c.peer); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("AddPeer(%s): got %v, want %q", c.peer.Name, err, c.want)
		}
	}

	sw6 := &fakeSwitch{owners: map[string][]*openflow.Flow{}}
	p6, err := New(sw6, ipv6OnlyConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, peer := range []PeerNode{v6only("a", "fd00:10:21::/64", "fd00:10:21::1"), v6only("b", "fd00:10:22::/64", "fd00:10:22::1")} {
		if err := p6.AddPeer(ctx, peer); err != nil {
			t.Fatalf("IPv6-only node: AddPeer(%s): %v", peer.Name, err)
		}
	}
	if err := p6.CheckPeer(ctx, "a"); err == nil {
		t.Error("CheckPeer on a switch holding nothing succeeded")
	}
}

// IPv6-only local pods, as pkg/policy gives them: their IPv6 address, or
// no address at all, and their port.
var (
	podA6 = LocalPod{IP: net.ParseIP("fd00:10:10::5"), OFPort: 5}
	podB6 = LocalPod{IP: nil, OFPort: 6}
)

// TestPolicyFlowsIPv6Only: the rules of TestPolicyFlowsDualStack for
// IPv6-only pods on an IPv6-only node have the dual-stack flows without
// the IPv4 ones (goldens policy-*-ipv6only.flows): applied-to and default
// drops by port, IPv6 peers and ports; IPv4 peers make no flows. The base
// flows carry the policy generation in their ipv6 flows.
func TestPolicyFlowsIPv6Only(t *testing.T) {
	dualRules := func(a, b LocalPod) []PolicyChange {
		return []PolicyChange{
			{Upsert: []PolicyRule{{
				ID: 1, Name: "ns1/web/ingress/0", Direction: Ingress, Pods: []LocalPod{a, b},
				Peers: []*net.IPNet{cidr(t, "10.10.0.7/32"), cidr(t, "10.10.1.0/24"), cidr(t, "fd00:10:10::7/128"), cidr(t, "fd00:10:11::/64")},
				Ports: []PortRange{{Protocol: ProtocolTCP, From: 80}, {Protocol: ProtocolUDP, From: 8080, To: 8083}, {Protocol: ProtocolSCTP}},
			}}, Isolation: &Isolation{Ingress: []LocalPod{a, b}}},
			{Upsert: []PolicyRule{
				{ID: 2, Name: "ns1/db/egress/0", Direction: Egress, Pods: []LocalPod{a},
					Peers: []*net.IPNet{cidr(t, "fd00:20::8000:0:0:0/65")}, Ports: []PortRange{{Protocol: ProtocolTCP, From: 443}}},
				{ID: 3, Name: "ns1/all/egress/0", Direction: Egress, Pods: []LocalPod{b}},
			}, Isolation: &Isolation{Egress: []LocalPod{a, b}}},
		}
	}
	dualChanges, changes := dualRules(podA, podB), dualRules(podA6, podB6)
	for i, name := range []string{"policy-ingress-ipv6only.flows", "policy-egress-ipv6only.flows"} {
		t.Run(name, func(t *testing.T) {
			sw := &fakeSwitch{owners: map[string][]*openflow.Flow{}}
			p, err := New(sw, ipv6OnlyConfig(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.ApplyPolicy(context.Background(), changes[i]); err != nil {
				t.Fatal(err)
			}
			got := render(must(p.PolicyFlows()))
			golden(t, name, got)
			dual, err := New(&fakeSwitch{owners: map[string][]*openflow.Flow{}}, dualStackConfig(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := dual.ApplyPolicy(context.Background(), dualChanges[i]); err != nil {
				t.Fatal(err)
			}
			if want := withoutIPv4(render(must(dual.PolicyFlows()))); !slices.Equal(lines(got), want) {
				t.Errorf("IPv6-only policy flows are not the dual-stack ones without IPv4:\n%s\nwant\n%s", got, strings.Join(want, "\n"))
			}
			if sws := strings.Join(renderSwitch(sw, "policy/"), "\n"); sws != strings.Join(slices.Sorted(slices.Values(lines(got))), "\n") {
				t.Errorf("switch flows differ from PolicyFlows:\n%s\nvs\n%s", sws, got)
			}
			base := strings.Join(renderSwitch(sw, ownerBase), "\n")
			if want := "table=IngressRule, priority=200,ct_state=-new+trk,ct_mark=0x100/0xffffff00,ipv6 actions=goto_table:ConntrackCommit"; !strings.Contains(base, want) {
				t.Errorf("base flows after ApplyPolicy lack %q", want)
			}
			drops, err := p.IsolationDrops(context.Background())
			if err != nil || len(drops) != 2 {
				t.Errorf("IsolationDrops = %+v, %v; want one per isolated pod", drops, err)
			}
		})
	}
}

// TestPolicyIPv6OnlyPods: which flows a rule gets for IPv6-only pods on an
// IPv6-only and a dual-stack node, and the pods and isolations refused
// where their family is missing.
func TestPolicyIPv6OnlyPods(t *testing.T) {
	v4, v6 := cidr(t, "10.10.0.7/32"), cidr(t, "fd00:10:10::7/128")
	tcp80 := []PortRange{{Protocol: ProtocolTCP, From: 80}}
	for _, tc := range []struct {
		name string
		cfg  func(*testing.T) Config
		rule PolicyRule
		want []string // the rule's flows, rendered without cookie and table
	}{
		{"IPv4 peer only: nothing", ipv6OnlyConfig, PolicyRule{Direction: Ingress, Pods: []LocalPod{podA6}, Peers: []*net.IPNet{v4}, Ports: tcp80}, nil},
		{"IPv6 peer, ingress", ipv6OnlyConfig, PolicyRule{Direction: Ingress, Pods: []LocalPod{podA6}, Peers: []*net.IPNet{v4, v6}, Ports: tcp80}, []string{
			"priority=100,ipv6,ipv6_src=fd00:10:10::7 actions=conjunction(9,2/3)",
			"priority=100,ipv6,reg1=0x5 actions=conjunction(9,1/3)",
			"priority=100,tcp6,tp_dst=80 actions=conjunction(9,3/3)",
			"priority=100,conj_id=9 actions=goto_table:ConntrackCommit"}},
		{"any peer, egress (plain)", ipv6OnlyConfig, PolicyRule{Direction: Egress, Pods: []LocalPod{podB6}}, []string{
			"priority=110,ipv6,in_port=6 actions=goto_table:L3Forwarding"}},
		{"IPv6-only pod on a dual-stack node, any peer", dualStackConfig, PolicyRule{Direction: Egress, Pods: []LocalPod{podA6}, Ports: tcp80}, []string{
			"priority=100,tcp6,tp_dst=80 actions=conjunction(9,2/2)",
			"priority=100,ipv6,in_port=5 actions=conjunction(9,1/2)",
			"priority=100,conj_id=9 actions=goto_table:L3Forwarding"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(&fakeSwitch{owners: map[string][]*openflow.Flow{}}, tc.cfg(t))
			if err != nil {
				t.Fatal(err)
			}
			tc.rule.ID = 9
			if err := p.ApplyPolicy(context.Background(), PolicyChange{Upsert: []PolicyRule{tc.rule}}); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range lines(render(must(p.PolicyFlows()))) {
				_, rest, _ := strings.Cut(l, ", priority=")
				got = append(got, "priority="+rest)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("flows\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
	t.Run("isolation of an IPv6-only pod on a dual-stack node", func(t *testing.T) {
		p, err := New(&fakeSwitch{owners: map[string][]*openflow.Flow{}}, dualStackConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		// Beside podB, which has IPv4 (and so both families' drops).
		if err := p.ApplyPolicy(context.Background(), PolicyChange{Isolation: &Isolation{Ingress: []LocalPod{podA6, podB}, Egress: []LocalPod{podA6}}}); err != nil {
			t.Fatal(err)
		}
		want := []string{
			"cookie=0x104000000000000, table=EgressDefaultRule, priority=200,ipv6,in_port=5 actions=drop",
			"cookie=0x104000000000000, table=IngressDefaultRule, priority=200,ipv6,reg1=0x5 actions=drop",
			"cookie=0x104000000000000, table=IngressDefaultRule, priority=200,ip,reg1=0x6 actions=drop",
			"cookie=0x104000000000000, table=IngressDefaultRule, priority=200,ipv6,reg1=0x6 actions=drop",
		}
		if got := lines(render(must(p.PolicyFlows()))); !slices.Equal(got, want) {
			t.Errorf("isolation flows\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})

	for _, tc := range []struct {
		name   string
		cfg    func(*testing.T) Config
		change PolicyChange
		want   string
	}{
		{"IPv4 pod in a rule on an IPv6-only node", ipv6OnlyConfig,
			PolicyChange{Upsert: []PolicyRule{{ID: 1, Direction: Egress, Pods: []LocalPod{podA}}}}, "pod IP 10.10.0.5 is IPv4 but the pipeline has no IPv4 configuration"},
		{"IPv4 pod isolated on an IPv6-only node", ipv6OnlyConfig,
			PolicyChange{Isolation: &Isolation{Ingress: []LocalPod{podA}}}, "no IPv4 configuration"},
		{"IPv6-only pod in a rule on an IPv4-only node", testConfig,
			PolicyChange{Upsert: []PolicyRule{{ID: 1, Direction: Ingress, Pods: []LocalPod{podB6}}}}, "is not IPv4 and the pipeline has no IPv6 configuration"},
		{"IPv6-only pod isolated on an IPv4-only node", testConfig,
			PolicyChange{Isolation: &Isolation{Egress: []LocalPod{podA6}}}, "is not IPv4"},
		{"IPv6-only pod without port", ipv6OnlyConfig,
			PolicyChange{Upsert: []PolicyRule{{ID: 1, Direction: Ingress, Pods: []LocalPod{{IP: podA6.IP}}, Peers: []*net.IPNet{v4}}}}, "without OpenFlow port"},
		{"isolated pod without port", ipv6OnlyConfig,
			PolicyChange{Isolation: &Isolation{Egress: []LocalPod{{IP: podA6.IP}}}}, "needs a port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(&fakeSwitch{owners: map[string][]*openflow.Flow{}}, tc.cfg(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.ApplyPolicy(context.Background(), tc.change); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if p.PolicyGeneration() != 0 {
				t.Error("a refused change bumped the generation")
			}
		})
	}
}

// TestIPv6OnlyPodAddresses: PodInterface with netip addresses of one family.
func TestIPv6OnlyPodAddresses(t *testing.T) {
	pod := ipv6OnlyPod()
	if pod.IPv4() != nil || !pod.IPv6().Equal(net.ParseIP("fd00:10:10::5")) || pod.validate() != nil {
		t.Fatalf("IPv6-only pod: IPv4 %v, IPv6 %v, validate %v", pod.IPv4(), pod.IPv6(), pod.validate())
	}
	pod.IPs = []netip.Addr{netip.MustParseAddr("fd00:10:10::5"), netip.MustParseAddr("fd00:10:10::6")}
	if err := pod.validate(); err == nil || !strings.Contains(err.Error(), "at most one address per family") {
		t.Fatalf("two IPv6 addresses: %v", err)
	}
}
