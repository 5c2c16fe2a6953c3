package policy

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/pipeline"
)

// countingSwitch stands in for OVS under the real pipeline: it keeps the
// flows of every owner the pipeline syncs, so the flows a policy change
// composes can be counted without a switch.
type countingSwitch struct {
	mu     sync.Mutex
	owners map[string][]*openflow.Flow
}

func (s *countingSwitch) Sync(_ context.Context, owner string, flows ...*openflow.Flow) error {
	return s.SyncOwners(context.Background(), map[string][]*openflow.Flow{owner: flows})
}

func (s *countingSwitch) SyncOwners(_ context.Context, owners map[string][]*openflow.Flow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for o, fl := range owners {
		if len(fl) == 0 {
			delete(s.owners, o)
		} else {
			s.owners[o] = fl
		}
	}
	return nil
}

func (s *countingSwitch) Uninstall(_ context.Context, owner string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.owners, owner)
	return nil
}

func (s *countingSwitch) DumpFlows(context.Context, openflow.FlowFilter) ([]openflow.FlowStats, error) {
	return nil, nil
}

// policyFlows counts the flows of the policy owners ("policy/...").
func (s *countingSwitch) policyFlows() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for o, fl := range s.owners {
		if strings.HasPrefix(o, "policy/") {
			n += len(fl)
		}
	}
	return n
}

// Extreme-policy world: extremeTargets local pods (app=server in
// namespace "target") that every policy selects, and peer pods
// (app=client) spread over namespaces of 100 pods each.
const extremeTargets = 5

func extremePods(peers int) []tpod {
	var pods []tpod
	for i := range extremeTargets {
		pods = append(pods, tpod{ns: "target", name: fmt.Sprintf("server-%d", i), labels: "app=server",
			ip: fmt.Sprintf("10.10.0.%d", 10+i), local: true, ofport: uint32(10 + i)})
	}
	for i := range peers {
		pods = append(pods, tpod{ns: fmt.Sprintf("clients-%d", i/100), name: fmt.Sprintf("client-%d", i), labels: "app=client",
			ip: fmt.Sprintf("10.%d.%d.%d", 128+i/65536, i/256%256, i%256)})
	}
	return pods
}

func numPort(proto corev1.Protocol, from, to int) networkingv1.NetworkPolicyPort {
	p := intstr.FromInt32(int32(from))
	np := networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &p}
	if to != from {
		end := int32(to)
		np.EndPort = &end
	}
	return np
}

// extremeCase is one extreme NetworkPolicy. The flow bound is computed
// from the policy's inputs: per rule, one flow per applied-to pod, per
// peer CIDR left after the excepts (an ipBlock of prefix length b with E
// excepts leaves at most 1+E*(32-b) CIDRs; a pod peer is one /32), per
// tp_dst value/mask block (1 for a single port, at most 30 = 2*16-2 for a
// range), plus the rule's conj_id flow, plus one isolation drop per
// target and direction. That is the sum of the dimensions; their product
// (what a flow per combination would cost) is logged next to it.
type extremeCase struct {
	name    string
	peers   int // peer pods in the world
	dir     pipeline.Direction
	from    []networkingv1.NetworkPolicyPeer
	ports   []networkingv1.NetworkPolicyPort
	wantErr string // SetPolicy's error; the policy is then not realized
	// wantWarning: realized, with a warning containing it.
	wantWarning string
}

func (c extremeCase) policy() *networkingv1.NetworkPolicy {
	spec := networkingv1.NetworkPolicySpec{PodSelector: *sel("app=server")}
	if c.dir == pipeline.Egress {
		spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: c.from, Ports: c.ports}}
	} else {
		spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: c.from, Ports: c.ports}}
	}
	return policy("target", "extreme", spec)
}

// bounds returns the flow bound described at extremeCase, and the size of
// the peers x ports x pods product.
func (c extremeCase) bounds() (bound, product int) {
	peers := 0
	for _, p := range c.from {
		if p.IPBlock == nil {
			peers += c.peers // a pod selector selects at most every pod
			continue
		}
		_, base, err := net.ParseCIDR(p.IPBlock.CIDR)
		if err != nil || base.IP.To4() == nil {
			continue
		}
		ones, _ := base.Mask.Size()
		peers += 1 + len(p.IPBlock.Except)*(32-ones)
	}
	ports := 0
	for _, p := range c.ports {
		if p.EndPort != nil && *p.EndPort > p.Port.IntVal {
			ports += 2*16 - 2
		} else {
			ports++
		}
	}
	dims := extremeTargets + 1
	product = extremeTargets
	if c.from != nil {
		dims += peers
		product *= peers
	}
	if c.ports != nil {
		dims += ports
		product *= ports
	}
	return dims + extremeTargets, product
}

func ipBlockPeers(n int, cidr func(i int) string) []networkingv1.NetworkPolicyPeer {
	out := make([]networkingv1.NetworkPolicyPeer, n)
	for i := range out {
		out[i] = networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr(i)}}
	}
	return out
}

func manyPorts(n int, port func(i int) networkingv1.NetworkPolicyPort) []networkingv1.NetworkPolicyPort {
	out := make([]networkingv1.NetworkPolicyPort, n)
	for i := range out {
		out[i] = port(i)
	}
	return out
}

// excepts returns n distinct except CIDRs inside base, /bits each, evenly
// spaced over base (n <= the /bits slots of base): the spacing that
// fragments base the most, each except splitting its own share.
func excepts(n int, base string, bits int) []string {
	_, b, _ := net.ParseCIDR(base)
	ones, _ := b.Mask.Size()
	slots := 1 << (bits - ones)
	start := uint32(b.IP[0])<<24 | uint32(b.IP[1])<<16 | uint32(b.IP[2])<<8 | uint32(b.IP[3])
	out := make([]string, n)
	for i := range out {
		slot := uint32(i * slots / n)
		a := start + slot<<(32-bits)
		out[i] = fmt.Sprintf("%d.%d.%d.%d/%d", a>>24, a>>16&0xff, a>>8&0xff, a&0xff, bits)
	}
	return out
}

// TestExtremePolicies realizes NetworkPolicies with extreme values (1,000
// ports, an ipBlock with 1,000 excepts, 10,000 peers, and all of it at
// once) through the Model and the real pipeline (on countingSwitch): each
// is refused with a clear error or realized, and its flow count stays
// within the sum of its dimensions.
func TestExtremePolicies(t *testing.T) {
	tcp, udp, sctp := corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP
	protos := []corev1.Protocol{tcp, udp, sctp}
	clients := []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: sel("app=client")}}
	web := []networkingv1.NetworkPolicyPort{numPort(tcp, 80, 80), numPort(tcp, 443, 443)}
	tests := []extremeCase{
		{name: "1,000 ports", peers: 20, from: clients,
			ports: manyPorts(1000, func(i int) networkingv1.NetworkPolicyPort { return numPort(protos[i%3], 1000+i, 1000+i) })},
		{name: "1,000 port ranges", peers: 20, from: clients,
			ports: manyPorts(1000, func(i int) networkingv1.NetworkPolicyPort { return numPort(tcp, 1+i*60, 37+i*60) })},
		{name: "1,000 ports, one out of range", peers: 20, from: clients, wantErr: "port 70000-70000 out of range",
			ports: manyPorts(1000, func(i int) networkingv1.NetworkPolicyPort {
				if i == 500 {
					return numPort(tcp, 70000, 70000)
				}
				return numPort(tcp, 1000+i, 1000+i)
			})},
		{name: "ipBlock with 1,000 /32 excepts", from: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
			CIDR: "10.0.0.0/8", Except: excepts(1000, "10.0.0.0/8", 32)}}}, ports: web},
		// 10x the brief's size: subtractCIDRs was quadratic (41 s here).
		{name: "ipBlock with 10,000 /32 excepts", from: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
			CIDR: "10.0.0.0/8", Except: excepts(10000, "10.0.0.0/8", 32)}}}, ports: web},
		{name: "ipBlock with 1,000 /24 excepts", from: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
			CIDR: "172.16.0.0/12", Except: excepts(1000, "172.16.0.0/12", 24)}}}, ports: web},
		{name: "ipBlock with 1,000 excepts outside it", from: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
			CIDR: "192.168.0.0/16", Except: excepts(1000, "10.0.0.0/8", 32)}}}, ports: web},
		{name: "ipBlock with 1,000 excepts, one malformed", wantErr: `ipBlock except "10.0.0.0/40"`,
			from: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
				CIDR: "10.0.0.0/8", Except: append(excepts(999, "10.0.0.0/8", 32), "10.0.0.0/40")}}}},
		{name: "10,000 peer pods", peers: 10000, from: clients, ports: web},
		{name: "10,000 ipBlock peers (egress)", dir: pipeline.Egress,
			from:  ipBlockPeers(10000, func(i int) string { return fmt.Sprintf("172.%d.%d.%d/32", 16+i/65536, i/256%256, i%256) }),
			ports: []networkingv1.NetworkPolicyPort{numPort(udp, 53, 53)}},
		{name: "10,000 ipBlock peers, one IPv6",
			from: append(ipBlockPeers(9999, func(i int) string { return fmt.Sprintf("172.20.%d.%d/32", i/256, i%256) }),
				networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/64"}})},
		{name: "10,000 peer pods x 1,000 ports", peers: 10000, from: clients,
			ports: manyPorts(1000, func(i int) networkingv1.NetworkPolicyPort { return numPort(protos[i%3], 1000+i, 1000+i) })},
		{name: "10,000 ipBlock peers x 1,000 ports x ipBlock with 1,000 excepts", dir: pipeline.Egress,
			from: append(ipBlockPeers(10000, func(i int) string { return fmt.Sprintf("172.%d.%d.%d/32", 16+i/65536, i/256%256, i%256) }),
				networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: excepts(1000, "10.0.0.0/8", 32)}}),
			ports: manyPorts(1000, func(i int) networkingv1.NetworkPolicyPort { return numPort(tcp, 1000+i, 1000+i) })},
	}
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	_, cidr, _ := net.ParseCIDR("10.10.0.0/24")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewModel(testNode)
			for _, p := range extremePods(tc.peers) {
				m.SetNamespace(p.ns, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: p.ns}})
				m.SetPod(p.ns+"/"+p.name, p.pod(), p.ofport)
			}
			sw := &countingSwitch{owners: map[string][]*openflow.Flow{}}
			pipe, err := pipeline.New(sw, pipeline.Config{GatewayOFPort: 2, GatewayMAC: mac, GatewayIP: net.ParseIP("10.10.0.1"),
				PodCIDR: cidr, CTZone: 65520, Round: 1})
			if err != nil {
				t.Fatal(err)
			}

			start := time.Now()
			setErr := m.SetPolicy("target/extreme", tc.policy())
			if tc.wantErr != "" {
				if setErr == nil || !strings.Contains(setErr.Error(), tc.wantErr) {
					t.Fatalf("SetPolicy error = %v, want one containing %q", setErr, tc.wantErr)
				}
			} else if setErr != nil {
				t.Fatalf("SetPolicy: %v", setErr)
			}
			plan, err := m.Compute()
			if err != nil {
				t.Fatalf("Compute: %v", err)
			}
			compute := time.Since(start)
			// Far above the milliseconds these take, far below the
			// tens of seconds of a quadratic step (see subtractCIDRs).
			if compute > 10*time.Second {
				t.Fatalf("computing the policy took %v", compute)
			}
			start = time.Now()
			if err := pipe.ApplyPolicy(context.Background(), plan.Change); err != nil {
				m.Abort(plan)
				t.Fatalf("ApplyPolicy: %v", err)
			}
			apply := time.Since(start)
			m.Commit(plan)
			flows, err := pipe.PolicyFlows()
			if err != nil {
				t.Fatal(err)
			}
			if n := sw.policyFlows(); n != len(flows) {
				t.Fatalf("the switch got %d policy flows, the pipeline holds %d", n, len(flows))
			}

			if tc.wantErr != "" {
				// Refused: treated as deleted, so nothing is realized.
				if m.Rules() != 0 || len(flows) != 0 {
					t.Fatalf("a refused policy left %d rules and %d flows", m.Rules(), len(flows))
				}
				t.Logf("refused in %v: %v", compute, setErr)
				return
			}
			if w := strings.Join(plan.Warnings["target/extreme"], "; "); !strings.Contains(w, tc.wantWarning) ||
				(tc.wantWarning == "") != (w == "") {
				t.Fatalf("warnings %q, want %q", w, tc.wantWarning)
			}
			// Realized: one rule, applied to every target, with every
			// peer and port; exactly the sum of its dimensions in flows.
			ids := pipe.PolicyRules()
			if len(ids) != 1 || m.Rules() != 1 {
				t.Fatalf("%d rules in the pipeline, %d in the model; want 1", len(ids), m.Rules())
			}
			r, _ := pipe.PolicyRule(ids[0])
			if len(r.Pods) != extremeTargets {
				t.Fatalf("rule applies to %d pods, want %d", len(r.Pods), extremeTargets)
			}
			masks := 0
			for _, pr := range r.Ports {
				to := pr.To
				if to == 0 {
					to = pr.From
				}
				masks += len(pipeline.PortRangeMasks(pr.From, to))
			}
			if len(r.Ports) != len(tc.ports) {
				t.Fatalf("rule has %d port ranges, the policy %d", len(r.Ports), len(tc.ports))
			}
			// The pipeline here has no IPv6: IPv6 peers (the rule has
			// them) make no flows.
			var peers4 []*net.IPNet
			for _, p := range r.Peers {
				if p.IP.To4() != nil {
					peers4 = append(peers4, p)
				}
			}
			checkPeers(t, tc, peers4)
			iso := extremeTargets // one drop per target, in the policy's one direction
			if want := extremeTargets + len(peers4) + masks + 1 + iso; len(flows) != want {
				t.Fatalf("%d flows, want %d = %d pods + %d peer CIDRs + %d port blocks + 1 conj_id + %d isolation drops",
					len(flows), want, extremeTargets, len(peers4), masks, iso)
			}
			bound, product := tc.bounds()
			if len(flows) > bound {
				t.Fatalf("%d flows exceed the bound %d (sum of the dimensions)", len(flows), bound)
			}
			t.Logf("realized: %d flows (%d peer CIDRs, %d port blocks, %d pods), bound %d, product %d; compute %v, flows %v",
				len(flows), len(r.Peers), masks, extremeTargets, bound, product, compute, apply)
		})
	}
}

// checkPeers checks a realized rule's peers against the policy's: every
// selected pod's /32 for a pod selector; for ipBlocks, CIDRs that cover
// exactly the blocks minus the excepts (by address count, and no except
// address in any CIDR).
func checkPeers(t *testing.T, tc extremeCase, peers []*net.IPNet) {
	t.Helper()
	var wantAddrs uint64
	var except []*net.IPNet
	for _, p := range tc.from {
		if p.IPBlock == nil {
			wantAddrs += uint64(tc.peers)
			continue
		}
		_, base, _ := net.ParseCIDR(p.IPBlock.CIDR)
		if base.IP.To4() == nil {
			continue
		}
		ones, _ := base.Mask.Size()
		size := uint64(1) << (32 - ones)
		for _, e := range p.IPBlock.Except {
			_, en, _ := net.ParseCIDR(e)
			if base.Contains(en.IP) {
				eo, _ := en.Mask.Size()
				size -= uint64(1) << (32 - eo)
				except = append(except, en)
			}
		}
		wantAddrs += size
	}
	var got uint64
	starts := make([]uint32, len(peers)) // the peers are sorted and disjoint
	for i, p := range peers {
		ones, _ := p.Mask.Size()
		got += uint64(1) << (32 - ones)
		starts[i] = binary.BigEndian.Uint32(p.IP.To4())
		if i > 0 && starts[i] <= starts[i-1] {
			t.Fatalf("peers not sorted: %s after %s", p, peers[i-1])
		}
	}
	for _, e := range except {
		// The peer starting at or before e, and the one after it, are the
		// only ones that can overlap e.
		i, found := slices.BinarySearch(starts, binary.BigEndian.Uint32(e.IP.To4()))
		if found {
			t.Fatalf("peer %s overlaps except %s", peers[i], e)
		}
		for _, j := range []int{i - 1, i} {
			if j >= 0 && j < len(peers) && (peers[j].Contains(e.IP) || e.Contains(peers[j].IP)) {
				t.Fatalf("peer %s overlaps except %s", peers[j], e)
			}
		}
	}
	if got != wantAddrs {
		t.Fatalf("peers cover %d addresses, the policy allows %d", got, wantAddrs)
	}
}
