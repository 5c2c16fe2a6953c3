package policy

import (
	"context"
	"encoding/binary"
	"net"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/pipeline"
)

// Fuzz targets for the policy computation. Run one with e.g.
//
//	go test -run '^$' -fuzz '^FuzzSubtractCIDRs$' -fuzztime 60s ./pkg/policy/

// FuzzSubtractCIDRs: for any base and excepts, the result is sorted,
// disjoint, inside base, overlaps no except, and covers as many addresses
// as base less the union of the excepts: exactly base minus the excepts.
func FuzzSubtractCIDRs(f *testing.F) {
	for _, s := range [][2]string{
		{"10.0.0.0/8", ""},
		{"10.0.0.0/8", "10.1.2.3/32,10.200.0.0/16,10.200.3.0/24"},
		{"0.0.0.0/0", "128.0.0.0/1,0.0.0.0/32,255.255.255.255/32"},
		{"10.1.2.3/16", "10.0.0.0/8"},
		{"192.168.0.0/30", "192.168.0.2/32,192.168.0.2/31,10.0.0.0/8,fd00::/64"},
		{"::ffff:10.0.0.0/104", "::ffff:10.1.0.0/112,10.2.0.0/16"},
		{"fd00::/64", "fd00::/80"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, base, exceptList string) {
		_, b, err := net.ParseCIDR(base)
		if err != nil {
			return
		}
		var except []*net.IPNet
		for _, e := range strings.Split(exceptList, ",") {
			if _, en, err := net.ParseCIDR(e); err == nil {
				except = append(except, en)
			}
		}
		got := subtractCIDRs(b, except)
		bp, ok := toPrefix(b)
		if !ok {
			if got != nil {
				t.Fatalf("non-IPv4 base %s gave %v", b, got)
			}
			return
		}
		// The excepts that matter, as prefixes clipped to base.
		var ex []prefix
		for _, en := range except {
			e, ok := toPrefix(en)
			switch {
			case !ok:
			case e.contains(bp):
				ex = append(ex, bp)
			case bp.contains(e):
				ex = append(ex, e)
			}
		}
		slices.SortFunc(ex, comparePrefixes)
		// CIDRs nest or are disjoint: the union is the excepts not inside
		// an earlier (sorted) one.
		var union []prefix
		for _, e := range ex {
			if len(union) == 0 || !union[len(union)-1].contains(e) {
				union = append(union, e)
			}
		}
		size := func(p prefix) uint64 { return uint64(1) << (32 - p.bits) }
		want := size(bp)
		for _, e := range union {
			want -= size(e)
		}
		var covered uint64
		var prevEnd uint64
		for i, n := range got {
			p, ok := toPrefix(n)
			if !ok || len(n.IP) != 4 || !bp.contains(p) || p.addr != binary.BigEndian.Uint32(n.IP) {
				t.Fatalf("result %s is not a canonical IPv4 CIDR inside %s", n, b)
			}
			if i > 0 && uint64(p.addr) < prevEnd {
				t.Fatalf("result %s overlaps or precedes %s", n, got[i-1])
			}
			prevEnd = uint64(p.addr) + size(p)
			covered += size(p)
			for _, e := range union {
				if e.contains(p) || p.contains(e) {
					t.Fatalf("result %s overlaps except %s", n, e.ipNet())
				}
			}
		}
		if covered != want {
			t.Fatalf("%s minus %v: result %v covers %d addresses, want %d", b, except, got, covered, want)
		}
	})
}

// FuzzPolicyRealize compiles a fuzzed NetworkPolicy (protocol, port,
// endPort, named port, ipBlock with excepts, namespace and pod selectors,
// direction), computes it against a small world and realizes it through
// the real pipeline: SetPolicy refuses it with an error (and nothing is
// realized), or the pipeline accepts every rule the model produces and the
// flow count stays within the sum of the rules' dimensions.
func FuzzPolicyRealize(f *testing.F) {
	type seed struct {
		proto             string
		port, endPort     int32
		named             string
		cidr, except      string
		nsKey, nsVal      string
		podKey, podVal    string
		egress, noPeers   bool
		noPorts, allNames bool
	}
	for _, s := range []seed{
		{proto: "TCP", port: 80, podKey: "app", podVal: "client"},
		{proto: "UDP", port: 53, endPort: 60, named: "dns", cidr: "10.0.0.0/8", except: "10.128.0.0/16,10.1.2.3/32", egress: true},
		{proto: "SCTP", port: 1, endPort: 65535, nsKey: "team", nsVal: "x", podKey: "app", podVal: "client"},
		{proto: "ICMP", port: 80},
		{port: 0, endPort: 10, named: "http", cidr: "0.0.0.0/0", except: "0.0.0.0/0"},
		{port: 70000},
		{port: -1, endPort: -5},
		{port: 100, endPort: 50, cidr: "fd00::/64"},
		{named: "http", allNames: true, egress: true, noPeers: true},
		{nsKey: "bad key!", nsVal: "x"},
		{podKey: "app", podVal: "-bad-", noPorts: true},
		{cidr: "10.0.0.0/33"},
		{cidr: "10.0.0.0/8", except: "10.0.0.0/40"},
	} {
		f.Add(s.proto, s.port, s.endPort, s.named, s.cidr, s.except, s.nsKey, s.nsVal, s.podKey, s.podVal, s.egress, s.noPeers,
			s.noPorts, s.allNames)
	}
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	_, podCIDR, _ := net.ParseCIDR("10.10.0.0/24")
	f.Fuzz(func(t *testing.T, proto string, port, endPort int32, named, cidr, except, nsKey, nsVal, podKey, podVal string,
		egress, noPeers, noPorts, allNames bool) {
		m := NewModel(testNode)
		for i, p := range extremePods(30) {
			if i%2 == 0 {
				p.ports = []string{"http:TCP:8080", "dns:UDP:53"}
			} else {
				p.ports = []string{"http:TCP:9090"}
			}
			m.SetNamespace(p.ns, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: p.ns, Labels: map[string]string{"team": "x"}}})
			m.SetPod(p.ns+"/"+p.name, p.pod(), p.ofport)
		}
		var peers []networkingv1.NetworkPolicyPeer
		if !noPeers {
			if cidr != "" {
				blk := &networkingv1.IPBlock{CIDR: cidr}
				if except != "" {
					blk.Except = strings.Split(except, ",")
				}
				peers = append(peers, networkingv1.NetworkPolicyPeer{IPBlock: blk})
			}
			var pe networkingv1.NetworkPolicyPeer
			if nsKey != "" {
				pe.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{nsKey: nsVal}}
			}
			if podKey != "" {
				pe.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{podKey: podVal}}
			}
			if pe.NamespaceSelector != nil || pe.PodSelector != nil {
				peers = append(peers, pe)
			}
		}
		var ports []networkingv1.NetworkPolicyPort
		if !noPorts {
			pr := corev1.Protocol(proto)
			np := networkingv1.NetworkPolicyPort{}
			if proto != "" {
				np.Protocol = &pr
			}
			if port != 0 {
				p := intstr.FromInt32(port)
				np.Port = &p
			}
			if endPort != 0 {
				np.EndPort = &endPort
			}
			ports = append(ports, np)
			if named != "" {
				p := intstr.FromString(named)
				ports = append(ports, networkingv1.NetworkPolicyPort{Protocol: np.Protocol, Port: &p})
				if allNames {
					udp := corev1.ProtocolUDP
					ports = append(ports, networkingv1.NetworkPolicyPort{Protocol: &udp, Port: &p})
				}
			}
		}
		spec := networkingv1.NetworkPolicySpec{PodSelector: *sel("app=server")}
		if egress {
			spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
			spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: peers, Ports: ports}}
		} else {
			spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: peers, Ports: ports}}
		}
		setErr := m.SetPolicy("target/fuzz", policy("target", "fuzz", spec))
		if setErr != nil && !strings.Contains(setErr.Error(), "policy target/fuzz") {
			t.Fatalf("SetPolicy error %q does not name the policy", setErr)
		}
		plan, err := m.Compute()
		if err != nil {
			t.Fatalf("Compute: %v", err)
		}
		sw := &countingSwitch{owners: map[string][]*openflow.Flow{}}
		pipe, err := pipeline.New(sw, pipeline.Config{GatewayOFPort: 2, GatewayMAC: mac, GatewayIP: net.ParseIP("10.10.0.1"),
			PodCIDR: podCIDR, CTZone: 65520, Round: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := pipe.ApplyPolicy(context.Background(), plan.Change); err != nil {
			t.Fatalf("the pipeline refused the model's change for %+v: %v", spec, err)
		}
		m.Commit(plan)
		flows, err := pipe.PolicyFlows()
		if err != nil {
			t.Fatal(err)
		}
		if setErr != nil {
			if m.Rules() != 0 || len(flows) != 0 {
				t.Fatalf("refused policy (%v) left %d rules, %d flows", setErr, m.Rules(), len(flows))
			}
			return
		}
		// The bound of extremeCase, per rule: the sum of its dimensions.
		bound := len(plan.Change.Isolation.Ingress) + len(plan.Change.Isolation.Egress)
		for _, r := range plan.Change.Upsert {
			bound += len(r.Pods) + len(r.Peers) + 30*len(r.Ports) + 1
		}
		if len(flows) > bound {
			t.Fatalf("%d flows exceed the bound %d for %+v", len(flows), bound, plan.Change.Upsert)
		}
	})
}
