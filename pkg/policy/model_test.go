package policy

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weirnet/weir/pkg/pipeline"
)

const testNode = "node1"

// fakeRealizer keeps the rules and isolation it was given and checks the
// invariants the pipeline relies on.
type fakeRealizer struct {
	mu        sync.Mutex
	t         testing.TB
	rules     map[uint32]pipeline.PolicyRule
	isolation pipeline.Isolation
	calls     int
	upserts   int
	deletes   int
	fail      error
	changes   chan pipeline.PolicyChange // if set, each change is sent here
}

func newFakeRealizer(t testing.TB) *fakeRealizer {
	return &fakeRealizer{t: t, rules: map[uint32]pipeline.PolicyRule{}}
}

func (f *fakeRealizer) ApplyPolicy(_ context.Context, c pipeline.PolicyChange) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	seen := map[uint32]bool{}
	for _, r := range c.Upsert {
		if r.ID == 0 || seen[r.ID] || len(r.Pods) == 0 || (r.Peers != nil && len(r.Peers) == 0) {
			return fmt.Errorf("fake realizer: bad upsert %+v", r)
		}
		seen[r.ID] = true
	}
	for _, id := range c.Delete {
		if _, ok := f.rules[id]; !ok || seen[id] {
			return fmt.Errorf("fake realizer: bad delete %d", id)
		}
	}
	for _, id := range c.Delete {
		delete(f.rules, id)
	}
	for _, r := range c.Upsert {
		f.rules[r.ID] = r
	}
	if c.Isolation != nil {
		f.isolation = *c.Isolation
	}
	f.calls++
	f.upserts += len(c.Upsert)
	f.deletes += len(c.Delete)
	if f.changes != nil {
		f.changes <- c
	}
	return nil
}

// render returns the realized rules as sorted strings:
// "name pods=[ofports] peers=[cidrs] ports=[proto:from-to]".
func (f *fakeRealizer) render() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.rules {
		out = append(out, renderRule(r))
	}
	sort.Strings(out)
	return out
}

func renderRule(r pipeline.PolicyRule) string {
	var pods, peers, ports []string
	for _, p := range r.Pods {
		pods = append(pods, fmt.Sprint(p.OFPort))
	}
	peerS := "any"
	if r.Peers != nil {
		for _, p := range r.Peers {
			peers = append(peers, p.String())
		}
		peerS = "[" + strings.Join(peers, " ") + "]"
	}
	portS := "any"
	if r.Ports != nil {
		for _, p := range r.Ports {
			ports = append(ports, fmt.Sprintf("%d:%d-%d", p.Protocol, p.From, p.To))
		}
		portS = "[" + strings.Join(ports, " ") + "]"
	}
	return fmt.Sprintf("%s pods=[%s] peers=%s ports=%s", r.Name, strings.Join(pods, " "), peerS, portS)
}

func renderIsolation(iso pipeline.Isolation) string {
	var in, eg []string
	for _, p := range iso.Ingress {
		in = append(in, fmt.Sprint(p.OFPort))
	}
	for _, p := range iso.Egress {
		eg = append(eg, fmt.Sprint(p.OFPort))
	}
	return fmt.Sprintf("in=[%s] eg=[%s]", strings.Join(in, " "), strings.Join(eg, " "))
}

// tpod describes a test pod: namespace/name, labels "k=v,...", IP, node
// ("" = other node), ofport (local), named ports "name:proto:port".
type tpod struct {
	ns, name, labels, ip string
	ip6                  string // IPv6 address beside ip (status.podIPs)
	local                bool
	ofport               uint32
	ports                []string
	hostNet              bool
	phase                corev1.PodPhase
}

func parseLabels(s string) map[string]string {
	if s == "" {
		return nil
	}
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func (p tpod) pod() *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name, Labels: parseLabels(p.labels)},
		Spec:   corev1.PodSpec{NodeName: "other", HostNetwork: p.hostNet},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.ip}}
	if p.phase != "" {
		pod.Status.Phase = p.phase
	}
	if p.ip6 != "" {
		if p.ip != "" {
			pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: p.ip})
		}
		pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: p.ip6})
		if p.ip == "" {
			pod.Status.PodIP = p.ip6
		}
	}
	if p.local {
		pod.Spec.NodeName = testNode
	}
	ct := corev1.Container{Name: "c"}
	for _, s := range p.ports {
		f := strings.Split(s, ":")
		var port int32
		fmt.Sscan(f[2], &port)
		ct.Ports = append(ct.Ports, corev1.ContainerPort{Name: f[0], Protocol: corev1.Protocol(f[1]), ContainerPort: port})
	}
	pod.Spec.Containers = []corev1.Container{ct}
	return pod
}

func sel(s string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: parseLabels(s)}
}

func port(proto string, p any) networkingv1.NetworkPolicyPort {
	pr := corev1.Protocol(proto)
	np := networkingv1.NetworkPolicyPort{Protocol: &pr}
	switch v := p.(type) {
	case int:
		x := intstr.FromInt32(int32(v))
		np.Port = &x
	case string:
		x := intstr.FromString(v)
		np.Port = &x
	case [2]int:
		x := intstr.FromInt32(int32(v[0]))
		end := int32(v[1])
		np.Port, np.EndPort = &x, &end
	}
	return np
}

func policy(ns, name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
		UID: types.UID("uid-" + ns + "-" + name)}, Spec: spec}
}

// world builds a model from namespaces ("name:labels"), pods and policies
// and realizes it into a fake.
type world struct {
	t testing.TB
	m *Model
	f *fakeRealizer
}

func newWorld(t testing.TB, nss []string, pods []tpod, nps []*networkingv1.NetworkPolicy) *world {
	w := &world{t: t, m: NewModel(testNode), f: newFakeRealizer(t)}
	for _, s := range nss {
		name, l, _ := strings.Cut(s, ":")
		w.m.SetNamespace(name, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: parseLabels(l)}})
	}
	for _, p := range pods {
		w.setPod(p)
	}
	for _, np := range nps {
		w.setPolicy(np)
	}
	w.flush()
	return w
}

func (w *world) setPod(p tpod) int {
	return w.m.SetPod(p.ns+"/"+p.name, p.pod(), p.ofport)
}

func (w *world) setPolicy(np *networkingv1.NetworkPolicy) {
	if err := w.m.SetPolicy(np.Namespace+"/"+np.Name, np); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) flush() *Plan {
	w.t.Helper()
	plan, err := w.m.Compute()
	if err != nil {
		w.t.Fatal(err)
	}
	if !plan.Empty() {
		if err := w.f.ApplyPolicy(context.Background(), plan.Change); err != nil {
			w.m.Abort(plan)
			w.t.Fatal(err)
		}
	}
	w.m.Commit(plan)
	return plan
}

var (
	basePods = []tpod{
		{ns: "a", name: "web1", labels: "app=web", ip: "10.0.0.1", local: true, ofport: 11, ports: []string{"http:TCP:80"}},
		{ns: "a", name: "web2", labels: "app=web", ip: "10.0.0.2", local: true, ofport: 12, ports: []string{"http:TCP:8080"}},
		{ns: "a", name: "db", labels: "app=db", ip: "10.0.0.3", local: true, ofport: 13, ports: []string{"sql:TCP:5432", "dns:UDP:53"}},
		{ns: "a", name: "remote", labels: "app=web", ip: "10.0.1.1", ports: []string{"http:TCP:81"}},
		{ns: "b", name: "client", labels: "role=client", ip: "10.0.1.2", ports: []string{"http:TCP:82"}},
		{ns: "b", name: "other", labels: "role=other", ip: "10.0.1.3"},
		{ns: "c", name: "client", labels: "role=client", ip: "10.0.1.4"},
		{ns: "a", name: "pending", labels: "app=web", local: true, ofport: 14},
		{ns: "a", name: "noport", labels: "app=web", ip: "10.0.0.5", local: true},
		{ns: "a", name: "done", labels: "app=web", ip: "10.0.0.6", local: true, ofport: 16, phase: corev1.PodSucceeded},
		{ns: "a", name: "hostnet", labels: "app=web", ip: "192.168.0.10", local: true, ofport: 17, hostNet: true},
		{ns: "b", name: "hostnet", labels: "role=client", ip: "192.168.0.11", hostNet: true},
		{ns: "b", name: "failed", labels: "role=client", ip: "10.0.1.9", phase: corev1.PodFailed},
	}
	baseNS = []string{"a:team=x", "b:team=y,env=prod", "c:team=y"}
)

func TestCompute(t *testing.T) {
	ingress := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egress := []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	both := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	tests := []struct {
		name  string
		nps   []*networkingv1.NetworkPolicy
		rules []string
		iso   string
	}{
		{"no policies", nil, nil, "in=[] eg=[]"},
		{"deny all ingress: empty podSelector, implied type", []*networkingv1.NetworkPolicy{
			policy("a", "deny", networkingv1.NetworkPolicySpec{})}, nil, "in=[11 12 13] eg=[]"},
		{"deny all egress", []*networkingv1.NetworkPolicy{
			policy("a", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: egress})}, nil, "in=[] eg=[11 12 13]"},
		{"implied egress type from egress rules", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"),
				Egress: []networkingv1.NetworkPolicyEgressRule{{}}})},
			[]string{"a/p/egress/0 pods=[13] peers=any ports=any"}, "in=[13] eg=[13]"},
		{"explicit ingress type ignores egress rules", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"), PolicyTypes: ingress,
				Egress: []networkingv1.NetworkPolicyEgressRule{{}}})}, nil, "in=[13] eg=[]"},
		{"allow all ingress (rule without from or ports)", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=web"),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{}}})},
			[]string{"a/p/ingress/0 pods=[11 12] peers=any ports=any"}, "in=[11 12] eg=[]"},
		{"podSelector peer in the policy's namespace", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: sel("app=web")}}}}})},
			[]string{"a/p/ingress/0 pods=[13] peers=[10.0.0.1/32 10.0.0.2/32 10.0.0.5/32 10.0.1.1/32] ports=any"},
			"in=[13] eg=[]"},
		{"namespaceSelector peer", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{NamespaceSelector: sel("team=y")}}}}})},
			[]string{"a/p/ingress/0 pods=[13] peers=[10.0.1.2/32 10.0.1.3/32 10.0.1.4/32] ports=any"}, "in=[13] eg=[]"},
		{"namespace and pod selector in one peer", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{NamespaceSelector: sel("env=prod"), PodSelector: sel("role=client")}}}}})},
			[]string{"a/p/ingress/0 pods=[13] peers=[10.0.1.2/32] ports=any"}, "in=[13] eg=[]"},
		{"two peers: union", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{NamespaceSelector: sel("env=prod"), PodSelector: sel("role=client")},
					{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: sel("role=client")}}}}})},
			[]string{"a/p/ingress/0 pods=[13] peers=[10.0.1.2/32 10.0.1.4/32] ports=any"}, "in=[13] eg=[]"},
		{"peer selecting nothing: no rule", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: sel("app=none")}}}}})}, nil, "in=[13] eg=[]"},
		{"ipBlocks with except, both families", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"), PolicyTypes: egress,
				Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{
					{IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/64", Except: []string{"fd00::/65", "fd00::c000:0:0:0/66"}}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "172.16.0.0/16", Except: []string{"172.16.0.0/17", "172.16.192.0/18"}}}}}}})},
			[]string{"a/p/egress/0 pods=[13] peers=[172.16.128.0/18 fd00::8000:0:0:0/66] ports=any"}, "in=[] eg=[13]"},
		{"only an IPv6 block", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"), PolicyTypes: egress,
				Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{
					{IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/64"}}}}}})},
			[]string{"a/p/egress/0 pods=[13] peers=[fd00::/64] ports=any"}, "in=[] eg=[13]"},
		{"IPv6 block excepted whole: rule matches nothing", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"), PolicyTypes: egress,
				Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{
					{IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/64", Except: []string{"fd00::/64"}}}}}}})},
			nil, "in=[] eg=[13]"},
		{"numeric ports, protocols, ranges, protocol only", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
					port("TCP", 5432), port("UDP", [2]int{1000, 2000}), port("SCTP", nil), port("TCP", 5432)}}}})},
			[]string{"a/p/ingress/0 pods=[13] peers=any ports=[6:5432-5432 17:1000-2000 132:0-0]"}, "in=[13] eg=[]"},
		{"ingress named port resolves per target pod", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=web"),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team=y"), PodSelector: sel("role=client")}},
					Ports: []networkingv1.NetworkPolicyPort{port("TCP", "http"), port("UDP", 53)}}}})},
			[]string{
				"a/p/ingress/0/0 pods=[11 12] peers=[10.0.1.2/32 10.0.1.4/32] ports=[17:53-53]",
				"a/p/ingress/0/1 pods=[11] peers=[10.0.1.2/32 10.0.1.4/32] ports=[6:80-80]",
				"a/p/ingress/0/2 pods=[12] peers=[10.0.1.2/32 10.0.1.4/32] ports=[6:8080-8080]",
			}, "in=[11 12] eg=[]"},
		{"named port with wrong protocol matches nothing", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=web"),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{port("UDP", "http")}}}})},
			nil, "in=[11 12] eg=[]"},
		{"egress named port resolves per peer pod; ipBlock gets numeric ports only", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"), PolicyTypes: egress,
				Egress: []networkingv1.NetworkPolicyEgressRule{{
					To: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app=web")},
						{IPBlock: &networkingv1.IPBlock{CIDR: "8.8.8.0/24"}}},
					Ports: []networkingv1.NetworkPolicyPort{port("TCP", "http"), port("TCP", 443)}}}})},
			[]string{
				"a/p/egress/0/0 pods=[13] peers=[8.8.8.0/24 10.0.0.1/32 10.0.0.2/32 10.0.0.5/32 10.0.1.1/32] ports=[6:443-443]",
				"a/p/egress/0/1 pods=[13] peers=[10.0.0.1/32] ports=[6:80-80]",
				"a/p/egress/0/2 pods=[13] peers=[10.0.0.2/32] ports=[6:8080-8080]",
				"a/p/egress/0/3 pods=[13] peers=[10.0.1.1/32] ports=[6:81-81]",
			}, "in=[] eg=[13]"},
		{"egress named port without to: every pod", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"), PolicyTypes: egress,
				Egress: []networkingv1.NetworkPolicyEgressRule{{
					Ports: []networkingv1.NetworkPolicyPort{port("TCP", "http")}}}})},
			[]string{
				"a/p/egress/0/0 pods=[13] peers=[10.0.0.1/32] ports=[6:80-80]",
				"a/p/egress/0/1 pods=[13] peers=[10.0.0.2/32] ports=[6:8080-8080]",
				"a/p/egress/0/2 pods=[13] peers=[10.0.1.1/32] ports=[6:81-81]",
				"a/p/egress/0/3 pods=[13] peers=[10.0.1.2/32] ports=[6:82-82]",
			}, "in=[] eg=[13]"},
		{"several policies on one pod: union; both types", []*networkingv1.NetworkPolicy{
			policy("a", "p1", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{port("TCP", 1)}}}}),
			policy("a", "p2", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"), PolicyTypes: both,
				Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{port("TCP", 2)}}}}),
			policy("b", "p3", networkingv1.NetworkPolicySpec{}), // no local pods in b
		},
			[]string{
				"a/p1/ingress/0 pods=[13] peers=any ports=[6:1-1]",
				"a/p2/ingress/0 pods=[13] peers=any ports=[6:2-2]",
			}, "in=[13] eg=[13]"},
		{"host network, terminated, IP-less and unattached pods are neither targets nor peers", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=web"),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{NamespaceSelector: &metav1.LabelSelector{}}}}}})},
			[]string{"a/p/ingress/0 pods=[11 12] peers=[10.0.0.1/32 10.0.0.2/32 10.0.0.3/32 10.0.0.5/32 10.0.1.1/32 " +
				"10.0.1.2/32 10.0.1.3/32 10.0.1.4/32] ports=any"}, "in=[11 12] eg=[]"},
		{"matchExpressions selector", []*networkingv1.NetworkPolicy{
			policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "app", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"web"}}}}})},
			nil, "in=[13] eg=[]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, baseNS, basePods, tc.nps)
			got := w.f.render()
			if !slices.Equal(got, tc.rules) {
				t.Errorf("rules:\n got %q\nwant %q", got, tc.rules)
			}
			if iso := renderIsolation(w.f.isolation); iso != tc.iso {
				t.Errorf("isolation %s, want %s", iso, tc.iso)
			}
			// A second computation without changes yields nothing.
			if plan := w.flush(); !plan.Empty() {
				t.Errorf("unchanged model produced %+v", plan.Change)
			}
			// Deleting every policy removes every rule and isolation.
			for _, np := range tc.nps {
				if err := w.m.SetPolicy(np.Namespace+"/"+np.Name, nil); err != nil {
					t.Fatal(err)
				}
			}
			w.flush()
			if len(w.f.rules) != 0 || renderIsolation(w.f.isolation) != "in=[] eg=[]" {
				t.Errorf("after deleting all policies: %v %s", w.f.render(), renderIsolation(w.f.isolation))
			}
		})
	}
}

func TestIPBlockExceptWarning(t *testing.T) {
	// An except of the other address family (the API server rejects it)
	// is ignored with one warning per ipBlock; IPv6 blocks themselves are
	// resolved, without warning.
	np := policy("a", "p", networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
		Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/64", Except: []string{"fd00::/65"}}},
			{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"fd00::/66", "10.0.0.0/9", "fd01::/64"}}}}}}})
	m := NewModel(testNode)
	if err := m.SetPolicy("a/p", np); err != nil {
		t.Fatal(err)
	}
	plan, err := m.Compute()
	if err != nil {
		t.Fatal(err)
	}
	if ws := plan.Warnings["a/p"]; len(ws) != 1 ||
		!strings.Contains(ws[0], "ipBlock 10.0.0.0/8: 2 except(s) of the other address family ignored: fd00::/66, fd01::/64") {
		t.Fatalf("warnings %q", plan.Warnings)
	}
	if ws := plan.Warnings["a/p"]; strings.Contains(ws[0], "10.0.0.0/9") {
		t.Fatalf("warnings %q", plan.Warnings)
	}
}

func TestIncremental(t *testing.T) {
	// Policies: p-web selects app=web in a, allows from role=client in
	// namespaces team=y; p-db selects app=db, allows from app=web in a;
	// p-b lives in b (no local pods); p-ns allows from namespace env=prod.
	nps := []*networkingv1.NetworkPolicy{
		policy("a", "p-web", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=web"),
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{NamespaceSelector: sel("team=y"), PodSelector: sel("role=client")}}}}}),
		policy("a", "p-db", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"),
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: sel("app=web")}}}}}),
		policy("b", "p-b", networkingv1.NetworkPolicySpec{}),
		policy("a", "p-ns", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"),
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{NamespaceSelector: sel("env=prod")}}}}}),
	}
	type step struct {
		name     string
		do       func(w *world) int // returns the number of policies marked
		marked   int
		upserts  int
		deletes  int
		isoSent  bool
		contains []string // rules that must be present afterwards
	}
	steps := []step{
		{name: "unrelated label change on a peer-less pod", do: func(w *world) int {
			return w.setPod(tpod{ns: "c", name: "client", labels: "role=client,x=1", ip: "10.0.1.4"})
		}, marked: 1, // p-web may include it (it's a client in team=y) but the result is unchanged
		},
		{name: "pod in a namespace nobody selects", do: func(w *world) int {
			return w.setPod(tpod{ns: "d", name: "x", labels: "role=client", ip: "10.0.2.1"})
		}},
		{name: "client leaves: p-web's rule shrinks", do: func(w *world) int {
			return w.setPod(tpod{ns: "c", name: "client", labels: "role=gone", ip: "10.0.1.4"})
		}, marked: 1, upserts: 1,
			contains: []string{"a/p-web/ingress/0 pods=[11 12] peers=[10.0.1.2/32] ports=any"}},
		{name: "web pod relabelled to db: targets and peers of p-web, p-db, p-ns change", do: func(w *world) int {
			return w.setPod(tpod{ns: "a", name: "web1", labels: "app=db", ip: "10.0.0.1", local: true, ofport: 11,
				ports: []string{"http:TCP:80"}})
		}, marked: 3, upserts: 3, isoSent: false, // ingress isolation stays {11,12,13}
			contains: []string{
				"a/p-web/ingress/0 pods=[12] peers=[10.0.1.2/32] ports=any",
				"a/p-db/ingress/0 pods=[11 13] peers=[10.0.0.2/32 10.0.0.5/32 10.0.1.1/32] ports=any",
				"a/p-ns/ingress/0 pods=[11 13] peers=[10.0.1.2/32 10.0.1.3/32] ports=any",
			}},
		{name: "namespace label change: only p-ns (and p-web) recomputed", do: func(w *world) int {
			return w.m.SetNamespace("c", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "c",
				Labels: map[string]string{"team": "y", "env": "prod"}}})
		}, marked: 2, upserts: 1,
			contains: []string{"a/p-ns/ingress/0 pods=[11 13] peers=[10.0.1.2/32 10.0.1.3/32 10.0.1.4/32] ports=any"}},
		{name: "local pod's port disappears: it leaves targets and isolation, stays a peer", do: func(w *world) int {
			return w.setPod(tpod{ns: "a", name: "web2", labels: "app=web", ip: "10.0.0.2", local: true,
				ports: []string{"http:TCP:8080"}})
		}, marked: 2, deletes: 1, isoSent: true},
		{name: "local pod's port appears again", do: func(w *world) int {
			return w.setPod(tpod{ns: "a", name: "web2", labels: "app=web", ip: "10.0.0.2", local: true, ofport: 12,
				ports: []string{"http:TCP:8080"}})
		}, marked: 2, upserts: 1, isoSent: true,
			contains: []string{"a/p-web/ingress/0 pods=[12] peers=[10.0.1.2/32] ports=any"}},
		{name: "policy deleted", do: func(w *world) int {
			if err := w.m.SetPolicy("a/p-ns", nil); err != nil {
				w.t.Fatal(err)
			}
			return 1
		}, marked: 1, deletes: 1},
		{name: "status-only change is ignored", do: func(w *world) int {
			return w.setPod(tpod{ns: "a", name: "web1", labels: "app=db", ip: "10.0.0.1", local: true, ofport: 11,
				ports: []string{"http:TCP:80"}})
		}},
	}
	w := newWorld(t, baseNS, basePods, nps)
	ids := map[string]uint32{}
	for _, r := range w.f.rules {
		ids[r.Name] = r.ID
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			w.t = t
			up, del := w.f.upserts, w.f.deletes
			if n := s.do(w); n != s.marked {
				t.Errorf("%d policies marked, want %d", n, s.marked)
			}
			plan := w.flush()
			if got := w.f.upserts - up; got != s.upserts {
				t.Errorf("%d upserts, want %d: %+v", got, s.upserts, plan.Change.Upsert)
			}
			if got := w.f.deletes - del; got != s.deletes {
				t.Errorf("%d deletes, want %d", got, s.deletes)
			}
			if (plan.Change.Isolation != nil) != s.isoSent {
				t.Errorf("isolation sent %v, want %v", plan.Change.Isolation != nil, s.isoSent)
			}
			rules := w.f.render()
			for _, c := range s.contains {
				if !slices.Contains(rules, c) {
					t.Errorf("missing rule %q in %q", c, rules)
				}
			}
			// Rules keep their IDs.
			for _, r := range w.f.rules {
				if id, ok := ids[r.Name]; ok && id != r.ID {
					t.Errorf("rule %s changed ID %d -> %d", r.Name, id, r.ID)
				}
			}
		})
	}
}

func TestAbortKeepsState(t *testing.T) {
	np := policy("a", "p", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{}}})
	w := newWorld(t, baseNS, basePods, nil)
	w.setPolicy(np)
	plan, err := w.m.Compute()
	if err != nil {
		t.Fatal(err)
	}
	w.m.Abort(plan)
	if w.m.Dirty() != 1 {
		t.Fatalf("dirty %d after abort, want 1", w.m.Dirty())
	}
	w.flush()
	if got := w.f.render(); len(got) != 1 || got[0] != "a/p/ingress/0 pods=[11 12 13] peers=any ports=any" {
		t.Fatalf("rules %q", got)
	}
	for _, r := range w.f.rules {
		if r.ID != 1 {
			t.Fatalf("rule ID %d, want 1 (the aborted allocation is reused)", r.ID)
		}
	}
}

func TestIDAllocator(t *testing.T) {
	a := idAllocator{next: 1}
	x, _ := a.get()
	y, _ := a.get()
	if x != 1 || y != 2 {
		t.Fatalf("got %d %d", x, y)
	}
	a.put(x)
	if z, _ := a.get(); z != 1 {
		t.Fatalf("freed ID not reused: %d", z)
	}
	a = idAllocator{next: 1 << 32}
	if _, err := a.get(); err == nil {
		t.Fatal("no error after 2^32-1 IDs")
	}
}

// TestIsolationIndex: the index names every policy isolating a pod per
// direction, including a default deny without rules, and follows changes.
func TestIsolationIndex(t *testing.T) {
	egress := []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	w := newWorld(t, baseNS, basePods, []*networkingv1.NetworkPolicy{
		policy("a", "deny-all", networkingv1.NetworkPolicySpec{}),
		policy("a", "allow-db", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"),
			Ingress: []networkingv1.NetworkPolicyIngressRule{{}}}),
		policy("a", "no-egress-web", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=web"), PolicyTypes: egress}),
	})
	tests := []struct {
		ofport uint32
		dir    pipeline.Direction
		want   []string
	}{
		{13, pipeline.Ingress, []string{"a/allow-db", "a/deny-all"}},
		{11, pipeline.Ingress, []string{"a/deny-all"}},
		{11, pipeline.Egress, []string{"a/no-egress-web"}},
		{13, pipeline.Egress, nil},
		{99, pipeline.Ingress, nil},
	}
	idx := w.m.IsolationIndex()
	for _, tt := range tests {
		if got := idx[tt.dir][tt.ofport]; !slices.Equal(got, tt.want) {
			t.Errorf("ofport %d %s: %v, want %v", tt.ofport, tt.dir, got, tt.want)
		}
	}
	w.m.SetPolicy("a/deny-all", nil)
	w.flush()
	if got := w.m.IsolationIndex()[pipeline.Ingress][11]; got != nil {
		t.Errorf("after deleting a/deny-all, ofport 11 ingress isolated by %v", got)
	}
}

// TestComputeDualStack: peer pods contribute both of their addresses;
// a pod with only an IPv6 address contributes that (IPv6-only pods take
// part as dual-stack ones do); a change of only the IPv6 address updates
// the rule.
func TestComputeDualStack(t *testing.T) {
	pods := []tpod{
		{ns: "a", name: "db", labels: "app=db", ip: "10.0.0.3", ip6: "fd00:10::3", local: true, ofport: 13},
		{ns: "a", name: "web", labels: "app=web", ip: "10.0.1.1", ip6: "fd00:10::1:1"},
		{ns: "a", name: "web4", labels: "app=web", ip: "10.0.1.2"},
		{ns: "a", name: "web6", labels: "app=web", ip6: "fd00:10::1:3"},
		{ns: "a", name: "mapped", labels: "app=web", ip: "10.0.1.4", ip6: "::ffff:10.0.1.4"},
	}
	np := policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"),
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app=web")}},
			Ports: []networkingv1.NetworkPolicyPort{port("TCP", 80)}}}})
	w := newWorld(t, []string{"a"}, pods, []*networkingv1.NetworkPolicy{np})
	want := []string{"a/p/ingress/0 pods=[13] peers=[10.0.1.1/32 10.0.1.2/32 10.0.1.4/32 fd00:10::1:1/128 fd00:10::1:3/128] ports=[6:80-80]"}
	if got := w.f.render(); !slices.Equal(got, want) {
		t.Fatalf("rules %q, want %q", got, want)
	}
	for _, r := range w.f.rules {
		for _, p := range r.Peers {
			if ones, bits := p.Mask.Size(); len(p.IP)*8 != bits || (bits == 128) != (p.IP.To4() == nil) || ones != bits {
				t.Fatalf("peer %v: IP %d bytes, mask %d/%d", p, len(p.IP), ones, bits)
			}
		}
	}
	// Only the IPv6 address changes: the rule follows.
	w.setPod(tpod{ns: "a", name: "web", labels: "app=web", ip: "10.0.1.1", ip6: "fd00:10::1:9"})
	w.flush()
	want = []string{"a/p/ingress/0 pods=[13] peers=[10.0.1.1/32 10.0.1.2/32 10.0.1.4/32 fd00:10::1:3/128 fd00:10::1:9/128] ports=[6:80-80]"}
	if got := w.f.render(); !slices.Equal(got, want) {
		t.Fatalf("after the IPv6 change: rules %q, want %q", got, want)
	}
	// Egress to web on its named port resolves on the peer with both IPs.
	np2 := policy("a", "e", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"),
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
		Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app=web")},
			{IPBlock: &networkingv1.IPBlock{CIDR: "fd00:20::/64", Except: []string{"fd00:20::/65"}}}}}}})
	w.setPolicy(np2)
	w.flush()
	want = append(want, "a/e/egress/0 pods=[13] peers=[10.0.1.1/32 10.0.1.2/32 10.0.1.4/32 fd00:10::1:3/128 fd00:10::1:9/128 fd00:20:0:0:8000::/65] ports=any")
	sort.Strings(want)
	if got := w.f.render(); !slices.Equal(got, want) {
		t.Fatalf("with the egress policy: rules %q, want %q", got, want)
	}
}

// TestComputeIPv6Only: on an IPv6-only node pods have only an IPv6
// address; they are targets (LocalPod with no IPv4, matched by port) and
// peers (their /128) as dual-stack pods are, and isolation covers them.
func TestComputeIPv6Only(t *testing.T) {
	pods := []tpod{
		{ns: "a", name: "db", labels: "app=db", ip6: "fd00:10::3", local: true, ofport: 13},
		{ns: "a", name: "web", labels: "app=web", ip6: "fd00:10::1:1"},
		{ns: "a", name: "web-local", labels: "app=web", ip6: "fd00:10::4", local: true, ofport: 14},
	}
	np := policy("a", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=db"),
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app=web")}},
			Ports: []networkingv1.NetworkPolicyPort{port("TCP", 80)}}}})
	w := newWorld(t, []string{"a"}, pods, []*networkingv1.NetworkPolicy{np})
	want := []string{"a/p/ingress/0 pods=[13] peers=[fd00:10::4/128 fd00:10::1:1/128] ports=[6:80-80]"}
	if got := w.f.render(); !slices.Equal(got, want) {
		t.Fatalf("rules %q, want %q", got, want)
	}
	for _, r := range w.f.rules {
		for _, p := range r.Pods {
			if p.IP != nil {
				t.Errorf("target %d: IPv4 %v, want none (an IPv6-only pod)", p.OFPort, p.IP)
			}
		}
	}
	if iso := renderIsolation(w.f.isolation); iso != "in=[13] eg=[]" {
		t.Errorf("isolation %s, want in=[13] eg=[]", iso)
	}
}
