package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/openflow"
)

// SyncOwners makes fakeSwitch (peer_test.go) a full Switch.
func (f *fakeSwitch) SyncOwners(_ context.Context, owners map[string][]*openflow.Flow) error {
	for o, fl := range owners {
		if len(fl) == 0 {
			delete(f.owners, o)
		} else {
			f.owners[o] = fl
		}
	}
	return nil
}

// failingSwitch rejects every SyncOwners.
type failingSwitch struct{ fakeSwitch }

func (f *failingSwitch) SyncOwners(context.Context, map[string][]*openflow.Flow) error {
	return errors.New("switch says no")
}

func TestPortRangeMasks(t *testing.T) {
	tests := []struct {
		from, to uint16
		want     string
	}{
		{80, 80, "80/0xffff"},
		{0, 65535, "0/0x0"},
		{1, 65535, "1/0xffff 2/0xfffe 4/0xfffc 8/0xfff8 16/0xfff0 32/0xffe0 64/0xffc0 128/0xff80 256/0xff00 512/0xfe00 1024/0xfc00 2048/0xf800 4096/0xf000 8192/0xe000 16384/0xc000 32768/0x8000"},
		{0, 0, "0/0xffff"},
		{65535, 65535, "65535/0xffff"},
		{8080, 8083, "8080/0xfffc"},
		{1000, 1999, "1000/0xfff8 1008/0xfff0 1024/0xfe00 1536/0xff00 1792/0xff80 1920/0xffc0 1984/0xfff0"},
		{32768, 65535, "32768/0x8000"},
		{0, 32767, "0/0x8000"},
		{5, 6, "5/0xffff 6/0xffff"},
		{65534, 65535, "65534/0xfffe"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d-%d", tc.from, tc.to), func(t *testing.T) {
			got := PortRangeMasks(tc.from, tc.to)
			var parts []string
			for _, m := range got {
				parts = append(parts, fmt.Sprintf("%d/%#x", m.Port, m.Mask))
			}
			if s := strings.Join(parts, " "); s != tc.want {
				t.Errorf("PortRangeMasks(%d, %d) = %s, want %s", tc.from, tc.to, s, tc.want)
			}
			// The blocks cover exactly from..to, each port once.
			for port := 0; port <= 65535; port++ {
				n := 0
				for _, m := range got {
					if uint16(port)&m.Mask == m.Port {
						n++
					}
				}
				in := port >= int(tc.from) && port <= int(tc.to)
				if in && n != 1 || !in && n != 0 {
					t.Fatalf("port %d matched by %d blocks (in range: %v)", port, n, in)
				}
			}
		})
	}
}

// TestPortRangeMasksMinimal checks the block count against the known
// worst case (2*16-2 blocks) over many ranges, and exact coverage of each.
func TestPortRangeMasksMinimal(t *testing.T) {
	for from := 0; from < 65536; from += 4093 {
		for to := from; to < 65536; to += 7919 {
			got := PortRangeMasks(uint16(from), uint16(to))
			if len(got) > 30 {
				t.Fatalf("%d-%d: %d blocks", from, to, len(got))
			}
			total := 0
			for _, m := range got {
				total += int(^m.Mask) + 1
				if m.Port&^m.Mask != 0 {
					t.Fatalf("%d-%d: block %v not aligned", from, to, m)
				}
			}
			if total != to-from+1 {
				t.Fatalf("%d-%d: blocks cover %d ports", from, to, total)
			}
		}
	}
}

func cidr(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newPolicyPipeline(t *testing.T) (*Pipeline, *fakeSwitch) {
	t.Helper()
	sw := &fakeSwitch{owners: map[string][]*openflow.Flow{}}
	p, err := New(sw, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	return p, sw
}

var (
	podA = LocalPod{IP: net.ParseIP("10.10.0.5"), OFPort: 5}
	podB = LocalPod{IP: net.ParseIP("10.10.0.6"), OFPort: 6}
)

// TestPolicyFlows renders the flows of a few rules and compares them with
// the reviewed goldens in testdata/.
func TestPolicyFlows(t *testing.T) {
	tests := []struct {
		name   string
		golden string
		change PolicyChange
	}{
		{"ingress from peers on a port", "policy-ingress.flows", PolicyChange{Upsert: []PolicyRule{{
			ID: 1, Name: "ns1/web/ingress/0", Direction: Ingress, Pods: []LocalPod{podA, podB},
			Peers: []*net.IPNet{cidr(t, "10.10.0.7/32"), cidr(t, "10.10.1.0/24")},
			Ports: []PortRange{{Protocol: ProtocolTCP, From: 80}, {Protocol: ProtocolUDP, From: 8080, To: 8083}},
		}}, Isolation: &Isolation{Ingress: []LocalPod{podA, podB}}}},
		{"egress to a CIDR, any port; egress allow-all", "policy-egress.flows", PolicyChange{Upsert: []PolicyRule{
			{ID: 2, Name: "ns1/db/egress/0", Direction: Egress, Pods: []LocalPod{podA}, Peers: []*net.IPNet{cidr(t, "192.168.0.0/16")}},
			{ID: 3, Name: "ns1/all/egress/0", Direction: Egress, Pods: []LocalPod{podB}},
		}, Isolation: &Isolation{Egress: []LocalPod{podA, podB}}}},
		{"shared clause flows", "policy-shared.flows", PolicyChange{Upsert: []PolicyRule{
			{ID: 4, Name: "ns1/a/ingress/0", Direction: Ingress, Pods: []LocalPod{podA}, Peers: []*net.IPNet{cidr(t, "10.10.0.7/32")}},
			{ID: 5, Name: "ns1/b/ingress/0", Direction: Ingress, Pods: []LocalPod{podA, podB}, Peers: []*net.IPNet{cidr(t, "10.10.0.7/32")},
				Ports: []PortRange{{Protocol: ProtocolSCTP}}},
		}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := newPolicyPipeline(t)
			if err := p.ApplyPolicy(context.Background(), tc.change); err != nil {
				t.Fatal(err)
			}
			flows, err := p.PolicyFlows()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.golden, render(flows))
		})
	}
}

// renderSwitch renders every flow the fake switch holds, sorted.
func renderSwitch(sw *fakeSwitch, prefix string) []string {
	var out []string
	r := Renderer()
	for o, fl := range sw.owners {
		if !strings.HasPrefix(o, prefix) {
			continue
		}
		for _, f := range fl {
			out = append(out, r.Flow(f))
		}
	}
	slices.Sort(out)
	return out
}

// TestPolicyMerging adds and removes rules sharing matches: the shared flow
// holds one conjunction action per user and disappears with the last one;
// the flows always equal PolicyFlows and a fresh pipeline's flows for the
// same rules.
func TestPolicyMerging(t *testing.T) {
	peer := []*net.IPNet{cidr(t, "10.10.0.7/32")}
	r1 := PolicyRule{ID: 1, Direction: Ingress, Pods: []LocalPod{podA}, Peers: peer}
	r2 := PolicyRule{ID: 2, Direction: Ingress, Pods: []LocalPod{podA, podB}, Peers: peer, Ports: []PortRange{{Protocol: ProtocolTCP, From: 80}}}
	r3 := PolicyRule{ID: 3, Direction: Ingress, Pods: []LocalPod{podA}}
	r4 := PolicyRule{ID: 4, Direction: Ingress, Pods: []LocalPod{podA}}
	steps := []struct {
		name   string
		change PolicyChange
		rules  []PolicyRule
		want   []string // substrings that must appear in the policy flows
		absent []string
	}{
		{"r1", PolicyChange{Upsert: []PolicyRule{r1}}, []PolicyRule{r1}, []string{
			"priority=100,ip,reg1=0x5 actions=conjunction(1,1/2)",
			"priority=100,ip,nw_src=10.10.0.7 actions=conjunction(1,2/2)",
			"priority=100,conj_id=1 actions=goto_table:ConntrackCommit"}, nil},
		{"r2 shares pod A and the peer", PolicyChange{Upsert: []PolicyRule{r2}}, []PolicyRule{r1, r2}, []string{
			"priority=100,ip,reg1=0x5 actions=conjunction(1,1/2),conjunction(2,1/3)",
			"priority=100,ip,reg1=0x6 actions=conjunction(2,1/3)",
			"priority=100,ip,nw_src=10.10.0.7 actions=conjunction(1,2/2),conjunction(2,2/3)",
			"priority=100,tcp,tp_dst=80 actions=conjunction(2,3/3)"}, nil},
		{"r3, r4: plain flows merged", PolicyChange{Upsert: []PolicyRule{r3, r4}}, []PolicyRule{r1, r2, r3, r4}, []string{
			"cookie=0x104000000000003, table=IngressRule, priority=110,ip,reg1=0x5 actions=goto_table:ConntrackCommit"}, nil},
		{"delete r1, r3", PolicyChange{Delete: []uint32{1, 3}}, []PolicyRule{r2, r4}, []string{
			"priority=100,ip,reg1=0x5 actions=conjunction(2,1/3)",
			"priority=100,ip,nw_src=10.10.0.7 actions=conjunction(2,2/3)",
			"cookie=0x104000000000004, table=IngressRule, priority=110,ip,reg1=0x5 actions=goto_table:ConntrackCommit"},
			[]string{"conj_id=1", "conjunction(1,"}},
		{"r2 updated: pod B only", PolicyChange{Upsert: []PolicyRule{{ID: 2, Direction: Ingress, Pods: []LocalPod{podB}, Peers: peer,
			Ports: []PortRange{{Protocol: ProtocolTCP, From: 80}}}}}, []PolicyRule{{ID: 2, Direction: Ingress, Pods: []LocalPod{podB}, Peers: peer,
			Ports: []PortRange{{Protocol: ProtocolTCP, From: 80}}}, r4}, []string{"priority=100,ip,reg1=0x6 actions=conjunction(2,1/3)"},
			[]string{"priority=100,ip,reg1=0x5"}},
		{"delete all", PolicyChange{Delete: []uint32{2, 4, 99}}, nil, nil, []string{"IngressRule"}},
	}
	p, sw := newPolicyPipeline(t)
	ctx := context.Background()
	for _, s := range steps {
		if err := p.ApplyPolicy(ctx, s.change); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got := renderSwitch(sw, "policy/")
		all := strings.Join(got, "\n")
		for _, w := range s.want {
			if !strings.Contains(all, w) {
				t.Errorf("%s: no flow %q in\n%s", s.name, w, all)
			}
		}
		for _, a := range s.absent {
			if strings.Contains(all, a) {
				t.Errorf("%s: %q still present in\n%s", s.name, a, all)
			}
		}
		flows, err := p.PolicyFlows()
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Split(strings.TrimSpace(render(flows)), "\n")
		if len(flows) == 0 {
			want = nil
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: switch holds\n%s\nPolicyFlows says\n%s", s.name, all, strings.Join(want, "\n"))
		}
		// A fresh pipeline given the same rules at once agrees.
		fresh, fsw := newPolicyPipeline(t)
		if err := fresh.ApplyPolicy(ctx, PolicyChange{Upsert: s.rules}); err != nil {
			t.Fatal(err)
		}
		if f := renderSwitch(fsw, "policy/"); !slices.Equal(f, got) {
			t.Errorf("%s: incremental flows\n%s\ndiffer from fresh\n%s", s.name, all, strings.Join(f, "\n"))
		}
		if ids := p.PolicyRules(); len(ids) != len(s.rules) {
			t.Errorf("%s: rules %v, want %d", s.name, ids, len(s.rules))
		}
	}
	if n := len(p.policy.matches); n != 0 {
		t.Errorf("%d match entries left after deleting every rule", n)
	}
}

func TestPolicyGenerationAndBase(t *testing.T) {
	p, sw := newPolicyPipeline(t)
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		if err := p.ApplyPolicy(ctx, PolicyChange{}); err != nil {
			t.Fatal(err)
		}
		if g := p.PolicyGeneration(); g != uint32(i) {
			t.Fatalf("generation %d after %d changes", g, i)
		}
	}
	base := strings.Join(renderSwitch(sw, ownerBase), "\n")
	for _, w := range []string{
		"table=EgressRule, priority=200,ct_state=-new+trk,ct_mark=0x300/0xffffff00,ip actions=goto_table:L3Forwarding",
		"table=IngressRule, priority=200,ct_state=-new+trk,ct_mark=0x300/0xffffff00,ip actions=goto_table:ConntrackCommit",
		"ct(commit,zone=65520,exec(set_field:0x300/0xffffff00->ct_mark))",
		"exec(set_field:0x301/0xffffff01->ct_mark)",
	} {
		if !strings.Contains(base, w) {
			t.Errorf("base flows lack %q:\n%s", w, base)
		}
	}
	p.policy.generation = maxGeneration
	if err := p.ApplyPolicy(ctx, PolicyChange{}); err != nil {
		t.Fatal(err)
	}
	if g := p.PolicyGeneration(); g != 1 {
		t.Fatalf("generation %d after wrapping, want 1", g)
	}
}

func TestPolicyValidationAndRollback(t *testing.T) {
	bad := []struct {
		name string
		rule PolicyRule
		want string
	}{
		{"zero ID", PolicyRule{Direction: Ingress, Pods: []LocalPod{podA}}, "reserved"},
		{"no direction", PolicyRule{ID: 1, Pods: []LocalPod{podA}}, "invalid direction"},
		{"nil peer", PolicyRule{ID: 1, Direction: Egress, Pods: []LocalPod{podA}, Peers: []*net.IPNet{nil}}, "not an IP network"},
		{"IPv6 peer with an IPv4 mask", PolicyRule{ID: 1, Direction: Egress, Pods: []LocalPod{podA},
			Peers: []*net.IPNet{{IP: net.ParseIP("fd00::"), Mask: net.CIDRMask(24, 32)}}}, "invalid peer mask"},
		{"bad protocol", PolicyRule{ID: 1, Direction: Egress, Pods: []LocalPod{podA}, Ports: []PortRange{{Protocol: 1}}}, "unsupported protocol"},
		{"reversed range", PolicyRule{ID: 1, Direction: Egress, Pods: []LocalPod{podA}, Ports: []PortRange{{Protocol: ProtocolTCP, From: 90, To: 80}}}, "empty"},
		{"ingress pod without port", PolicyRule{ID: 1, Direction: Ingress, Pods: []LocalPod{{IP: podA.IP}}}, "without OpenFlow port"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := newPolicyPipeline(t)
			err := p.ApplyPolicy(context.Background(), PolicyChange{Upsert: []PolicyRule{tc.rule}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if len(p.PolicyRules()) != 0 || p.PolicyGeneration() != 0 {
				t.Fatal("a rejected change left state behind")
			}
		})
	}
	t.Run("empty peers: no flows", func(t *testing.T) {
		p, sw := newPolicyPipeline(t)
		if err := p.ApplyPolicy(context.Background(), PolicyChange{Upsert: []PolicyRule{{ID: 7, Direction: Egress, Pods: []LocalPod{podA}, Peers: []*net.IPNet{}}}}); err != nil {
			t.Fatal(err)
		}
		if got := renderSwitch(sw, "policy/"); len(got) != 0 || !slices.Equal(p.PolicyRules(), []uint32{7}) {
			t.Fatalf("flows %v, rules %v", got, p.PolicyRules())
		}
	})
	t.Run("switch failure rolls back", func(t *testing.T) {
		sw := &failingSwitch{fakeSwitch{owners: map[string][]*openflow.Flow{}}}
		p, err := New(sw, testConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		// Seed state directly through a working switch first.
		p.sw = &sw.fakeSwitch
		r := PolicyRule{ID: 1, Direction: Ingress, Pods: []LocalPod{podA}, Peers: []*net.IPNet{cidr(t, "10.10.0.7/32")}}
		if err := p.ApplyPolicy(context.Background(), PolicyChange{Upsert: []PolicyRule{r}}); err != nil {
			t.Fatal(err)
		}
		before, _ := p.PolicyFlows()
		p.sw = sw
		err = p.ApplyPolicy(context.Background(), PolicyChange{Delete: []uint32{1},
			Upsert:    []PolicyRule{{ID: 2, Direction: Ingress, Pods: []LocalPod{podA}, Peers: []*net.IPNet{cidr(t, "10.10.0.8/32")}}},
			Isolation: &Isolation{Ingress: []LocalPod{podA}}})
		if err == nil {
			t.Fatal("ApplyPolicy succeeded on a failing switch")
		}
		after, _ := p.PolicyFlows()
		if render(before) != render(after) || p.PolicyGeneration() != 1 || !slices.Equal(p.PolicyRules(), []uint32{1}) {
			t.Fatalf("state changed by a failed change:\n%s\nvs\n%s", render(before), render(after))
		}
	})
}

// TestPolicyFlowCount: flows grow with pods + peers + ports, not their
// product.
func TestPolicyFlowCount(t *testing.T) {
	p, _ := newPolicyPipeline(t)
	r := PolicyRule{ID: 1, Direction: Ingress}
	for i := range 50 {
		r.Pods = append(r.Pods, LocalPod{IP: net.IPv4(10, 10, 0, byte(10+i)), OFPort: uint32(10 + i)})
		r.Peers = append(r.Peers, cidr(t, fmt.Sprintf("10.20.%d.0/24", i)))
		r.Ports = append(r.Ports, PortRange{Protocol: ProtocolTCP, From: uint16(1000 + i)})
	}
	if err := p.ApplyPolicy(context.Background(), PolicyChange{Upsert: []PolicyRule{r}}); err != nil {
		t.Fatal(err)
	}
	flows, _ := p.PolicyFlows()
	if len(flows) != 151 {
		t.Fatalf("%d flows for 50 pods, 50 peers, 50 ports, want 151", len(flows))
	}
}

// TestPolicyFlowsDualStack renders rules with IPv6 peers (and any peer) on
// a dual-stack pipeline: the IPv4 flows are those of TestPolicyFlows, the
// ipv6 twins join the same clauses (goldens policy-*-dualstack.flows).
func TestPolicyFlowsDualStack(t *testing.T) {
	tests := []struct {
		name   string
		golden string
		change PolicyChange
	}{
		{"ingress from IPv4 and IPv6 peers on ports", "policy-ingress-dualstack.flows", PolicyChange{Upsert: []PolicyRule{{
			ID: 1, Name: "ns1/web/ingress/0", Direction: Ingress, Pods: []LocalPod{podA, podB},
			Peers: []*net.IPNet{cidr(t, "10.10.0.7/32"), cidr(t, "10.10.1.0/24"), cidr(t, "fd00:10:10::7/128"), cidr(t, "fd00:10:11::/64")},
			Ports: []PortRange{{Protocol: ProtocolTCP, From: 80}, {Protocol: ProtocolUDP, From: 8080, To: 8083}, {Protocol: ProtocolSCTP}},
		}}, Isolation: &Isolation{Ingress: []LocalPod{podA, podB}}}},
		{"egress to an IPv6 block only; egress allow-all", "policy-egress-dualstack.flows", PolicyChange{Upsert: []PolicyRule{
			{ID: 2, Name: "ns1/db/egress/0", Direction: Egress, Pods: []LocalPod{podA},
				Peers: []*net.IPNet{cidr(t, "fd00:20::8000:0:0:0/65")}, Ports: []PortRange{{Protocol: ProtocolTCP, From: 443}}},
			{ID: 3, Name: "ns1/all/egress/0", Direction: Egress, Pods: []LocalPod{podB}},
		}, Isolation: &Isolation{Egress: []LocalPod{podA, podB}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sw := &fakeSwitch{owners: map[string][]*openflow.Flow{}}
			p, err := New(sw, dualStackConfig(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.ApplyPolicy(context.Background(), tc.change); err != nil {
				t.Fatal(err)
			}
			flows, err := p.PolicyFlows()
			if err != nil {
				t.Fatal(err)
			}
			got := render(flows)
			golden(t, tc.golden, got)
			// The same flows the switch got.
			if sw := strings.Join(renderSwitch(sw, "policy/"), "\n"); sw != strings.Join(slices.Sorted(slices.Values(strings.Split(strings.TrimSpace(got), "\n"))), "\n") {
				t.Fatalf("switch flows differ from PolicyFlows:\n%s\nvs\n%s", sw, got)
			}
		})
	}
}

// TestPolicyIPv6Families: which family's flows a rule gets, on an IPv4-only
// and a dual-stack pipeline; the IPv4 flows of a rule never change with
// IPv6 (same as on the IPv4-only pipeline).
func TestPolicyIPv6Families(t *testing.T) {
	v4, v6 := cidr(t, "10.10.0.7/32"), cidr(t, "fd00:10:10::7/128")
	tcp80 := []PortRange{{Protocol: ProtocolTCP, From: 80}}
	tests := []struct {
		name        string
		rule        PolicyRule
		ipv4Only    int // flows on the IPv4-only pipeline
		dual, dual6 int // flows on the dual-stack pipeline, of them IPv6
	}{
		{"IPv4 peer only", PolicyRule{Direction: Ingress, Pods: []LocalPod{podA}, Peers: []*net.IPNet{v4}, Ports: tcp80}, 4, 4, 0},
		{"IPv6 peer only", PolicyRule{Direction: Ingress, Pods: []LocalPod{podA}, Peers: []*net.IPNet{v6}, Ports: tcp80}, 0, 4, 3},
		{"both", PolicyRule{Direction: Egress, Pods: []LocalPod{podA}, Peers: []*net.IPNet{v4, v6}, Ports: tcp80}, 4, 7, 3},
		{"any peer", PolicyRule{Direction: Egress, Pods: []LocalPod{podA}, Ports: tcp80}, 3, 5, 2},
		{"any peer, any port (plain)", PolicyRule{Direction: Ingress, Pods: []LocalPod{podA}}, 1, 2, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.rule.ID = 9
			var v4Flows string
			for i, cfg := range []Config{testConfig(t), dualStackConfig(t)} {
				p, err := New(&fakeSwitch{owners: map[string][]*openflow.Flow{}}, cfg)
				if err != nil {
					t.Fatal(err)
				}
				if err := p.ApplyPolicy(context.Background(), PolicyChange{Upsert: []PolicyRule{tc.rule}}); err != nil {
					t.Fatal(err)
				}
				flows, _ := p.PolicyFlows()
				var n6 int
				var four []string
				for _, l := range strings.Split(strings.TrimSpace(render(flows)), "\n") {
					if l == "" {
						continue
					}
					if strings.Contains(l, "ipv6") || strings.Contains(l, "tcp6") {
						n6++
					} else {
						four = append(four, l)
					}
				}
				if i == 0 {
					if len(flows) != tc.ipv4Only || n6 != 0 {
						t.Fatalf("IPv4-only pipeline: %d flows (%d IPv6), want %d:\n%s", len(flows), n6, tc.ipv4Only, render(flows))
					}
					v4Flows = strings.Join(four, "\n")
					continue
				}
				if len(flows) != tc.dual || n6 != tc.dual6 {
					t.Fatalf("dual-stack pipeline: %d flows (%d IPv6), want %d (%d):\n%s", len(flows), n6, tc.dual, tc.dual6, render(flows))
				}
				if tc.ipv4Only > 0 && strings.Join(four, "\n") != v4Flows {
					t.Fatalf("IPv4 flows differ:\n%s\nvs\n%s", strings.Join(four, "\n"), v4Flows)
				}
			}
		})
	}
	t.Run("egress IPv6 needs the pod's port", func(t *testing.T) {
		p, err := New(&fakeSwitch{owners: map[string][]*openflow.Flow{}}, dualStackConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		r := PolicyRule{ID: 1, Direction: Egress, Pods: []LocalPod{{IP: podA.IP}}, Peers: []*net.IPNet{v6}}
		if err := p.ApplyPolicy(context.Background(), PolicyChange{Upsert: []PolicyRule{r}}); err == nil ||
			!strings.Contains(err.Error(), "without OpenFlow port") {
			t.Fatalf("got %v", err)
		}
	})
}

// TestPolicyMergingDualStack: rules of both families share clause flows;
// removing them in any order leaves the flows a fresh pipeline has for the
// rules left, and nothing at the end.
func TestPolicyMergingDualStack(t *testing.T) {
	v4, v6 := cidr(t, "10.10.0.7/32"), cidr(t, "fd00:10:10::7/128")
	tcp80 := []PortRange{{Protocol: ProtocolTCP, From: 80}}
	rules := []PolicyRule{
		{ID: 1, Direction: Ingress, Pods: []LocalPod{podA}, Peers: []*net.IPNet{v4}, Ports: tcp80},
		{ID: 2, Direction: Ingress, Pods: []LocalPod{podA, podB}, Peers: []*net.IPNet{v6}, Ports: tcp80},
		{ID: 3, Direction: Ingress, Pods: []LocalPod{podA}, Peers: []*net.IPNet{v4, v6}},
		{ID: 4, Direction: Ingress, Pods: []LocalPod{podB}},
		{ID: 5, Direction: Egress, Pods: []LocalPod{podA}, Peers: []*net.IPNet{v6}, Ports: tcp80},
		{ID: 6, Direction: Egress, Pods: []LocalPod{podA}, Ports: tcp80},
	}
	fresh := func(rs []PolicyRule) string {
		p, err := New(&fakeSwitch{owners: map[string][]*openflow.Flow{}}, dualStackConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) > 0 {
			if err := p.ApplyPolicy(context.Background(), PolicyChange{Upsert: rs}); err != nil {
				t.Fatal(err)
			}
		}
		f, _ := p.PolicyFlows()
		return render(f)
	}
	for _, order := range [][]int{{0, 1, 2, 3, 4, 5}, {5, 3, 1, 0, 2, 4}, {2, 4, 0, 5, 1, 3}} {
		sw := &fakeSwitch{owners: map[string][]*openflow.Flow{}}
		p, err := New(sw, dualStackConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			if err := p.ApplyPolicy(context.Background(), PolicyChange{Upsert: []PolicyRule{r}}); err != nil {
				t.Fatal(err)
			}
		}
		if got := fresh(rules); got != render(must(p.PolicyFlows())) {
			t.Fatalf("incremental != fresh:\n%s\nvs\n%s", render(must(p.PolicyFlows())), got)
		}
		left := slices.Clone(rules)
		for _, i := range order {
			if err := p.ApplyPolicy(context.Background(), PolicyChange{Delete: []uint32{rules[i].ID}}); err != nil {
				t.Fatal(err)
			}
			left = slices.DeleteFunc(left, func(r PolicyRule) bool { return r.ID == rules[i].ID })
			if got, want := render(must(p.PolicyFlows())), fresh(left); got != want {
				t.Fatalf("order %v, after deleting %d:\n%s\nwant\n%s", order, rules[i].ID, got, want)
			}
			sws := strings.Join(renderSwitch(sw, "policy/"), "\n")
			want := strings.Join(slices.Sorted(slices.Values(strings.Split(strings.TrimSpace(render(must(p.PolicyFlows()))), "\n"))), "\n")
			if sws != want && !(sws == "" && want == "") {
				t.Fatalf("order %v, after deleting %d: switch\n%s\nwant\n%s", order, rules[i].ID, sws, want)
			}
		}
		if n := len(p.policy.matches); n != 0 {
			t.Fatalf("%d matches left", n)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
