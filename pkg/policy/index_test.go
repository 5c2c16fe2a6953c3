package policy

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weirnet/weir/pkg/pipeline"
)

// randWorld generates random Pods, Namespaces and NetworkPolicies over a
// small universe of names and labels, so that changes keep moving pods in
// and out of selectors, local pods appear and disappear, and namespaces
// gain and lose the labels the policies select.
type randWorld struct {
	rng  *rand.Rand
	nss  map[string]*corev1.Namespace
	pods map[string]*corev1.Pod // by namespace/name
	port map[string]uint32      // local pods' OpenFlow ports
	nps  map[string]*networkingv1.NetworkPolicy
}

const (
	randNamespaces = 4
	randPodsPerNS  = 8
	randPolsPerNS  = 4
)

func (w *randWorld) pick(s ...string) string { return s[w.rng.IntN(len(s))] }

func (w *randWorld) labels(keys map[string][]string) map[string]string {
	l := map[string]string{}
	for k, vs := range keys {
		if w.rng.IntN(4) > 0 {
			l[k] = vs[w.rng.IntN(len(vs))]
		}
	}
	return l
}

func (w *randWorld) randNamespace(i int) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("n%d", i),
		Labels: w.labels(map[string][]string{"team": {"x", "y"}, "env": {"prod", "dev"}})}}
}

// randPod is pod j of namespace i: its IP and OpenFlow port follow from
// (i, j), everything else is random.
func (w *randWorld) randPod(i, j int) (*corev1.Pod, uint32) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("n%d", i), Name: fmt.Sprintf("p%d", j),
		Labels: w.labels(map[string][]string{"app": {"a", "b", "c"}, "tier": {"web", "db"}})},
		Spec:   corev1.PodSpec{NodeName: "other"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.1.%d.%d", i, j+1)}}
	var ofport uint32
	switch r := w.rng.IntN(20); {
	case r < 6:
		pod.Spec.NodeName = testNode
		ofport = uint32(10 + i*randPodsPerNS + j)
	case r < 7:
		pod.Spec.NodeName = testNode // local, not attached yet
	case r < 8:
		pod.Status.PodIP = "" // no address yet
	case r < 9:
		pod.Spec.HostNetwork = true
	case r < 10:
		pod.Status.Phase = corev1.PodSucceeded
	}
	var ports []corev1.ContainerPort
	switch w.rng.IntN(3) {
	case 0:
		ports = append(ports, corev1.ContainerPort{Name: "http", ContainerPort: 80})
	case 1:
		ports = append(ports, corev1.ContainerPort{Name: "http", ContainerPort: 8080},
			corev1.ContainerPort{Name: "dns", Protocol: corev1.ProtocolUDP, ContainerPort: 53})
	}
	pod.Spec.Containers = []corev1.Container{{Name: "c", Ports: ports}}
	return pod, ofport
}

func (w *randWorld) randSelector(keys map[string][]string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{}
	switch w.rng.IntN(4) {
	case 0: // everything
	case 1:
		s.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpNotIn,
			Values: []string{"db"}}}
	default:
		s.MatchLabels = w.labels(keys)
	}
	return s
}

func (w *randWorld) randPeers() []networkingv1.NetworkPolicyPeer {
	if w.rng.IntN(5) == 0 {
		return nil // every peer
	}
	podKeys := map[string][]string{"app": {"a", "b", "c"}, "tier": {"web", "db"}}
	nsKeys := map[string][]string{"team": {"x", "y"}, "env": {"prod"}}
	var peers []networkingv1.NetworkPolicyPeer
	for range 1 + w.rng.IntN(2) {
		switch w.rng.IntN(4) {
		case 0:
			peers = append(peers, networkingv1.NetworkPolicyPeer{PodSelector: w.randSelector(podKeys)})
		case 1:
			peers = append(peers, networkingv1.NetworkPolicyPeer{NamespaceSelector: w.randSelector(nsKeys)})
		case 2:
			peers = append(peers, networkingv1.NetworkPolicyPeer{NamespaceSelector: w.randSelector(nsKeys),
				PodSelector: w.randSelector(podKeys)})
		default:
			peers = append(peers, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8",
				Except: []string{"10.1.1.0/24"}}})
		}
	}
	return peers
}

func (w *randWorld) randPorts() []networkingv1.NetworkPolicyPort {
	var ports []networkingv1.NetworkPolicyPort
	for range w.rng.IntN(3) {
		switch w.rng.IntN(3) {
		case 0:
			ports = append(ports, port("TCP", 80))
		case 1:
			ports = append(ports, port("TCP", "http"))
		default:
			ports = append(ports, port("UDP", "dns"))
		}
	}
	return ports
}

func (w *randWorld) randPolicy(i, k int) *networkingv1.NetworkPolicy {
	spec := networkingv1.NetworkPolicySpec{PodSelector: *w.randSelector(map[string][]string{"app": {"a", "b"}})}
	switch w.rng.IntN(4) {
	case 0:
		spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 1:
		spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	case 2:
		spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	}
	for range w.rng.IntN(3) {
		spec.Ingress = append(spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: w.randPeers(), Ports: w.randPorts()})
	}
	for range w.rng.IntN(3) {
		spec.Egress = append(spec.Egress, networkingv1.NetworkPolicyEgressRule{To: w.randPeers(), Ports: w.randPorts()})
	}
	return policy(fmt.Sprintf("n%d", i), fmt.Sprintf("q%d", k), spec)
}

// step applies one random change to w and m and describes it.
func (w *randWorld) step(t *testing.T, m *Model) string {
	i, j := w.rng.IntN(randNamespaces), w.rng.IntN(randPodsPerNS)
	switch r := w.rng.IntN(100); {
	case r < 45:
		pod, ofport := w.randPod(i, j)
		key := pod.Namespace + "/" + pod.Name
		w.pods[key], w.port[key] = pod, ofport
		m.SetPod(key, pod, ofport)
		return fmt.Sprintf("set pod %s labels %v node %s ofport %d", key, pod.Labels, pod.Spec.NodeName, ofport)
	case r < 55:
		key := fmt.Sprintf("n%d/p%d", i, j)
		delete(w.pods, key)
		m.SetPod(key, nil, 0)
		return "delete pod " + key
	case r < 70:
		ns := w.randNamespace(i)
		w.nss[ns.Name] = ns
		m.SetNamespace(ns.Name, ns)
		return fmt.Sprintf("set namespace %s labels %v", ns.Name, ns.Labels)
	case r < 75:
		name := fmt.Sprintf("n%d", i)
		delete(w.nss, name)
		m.SetNamespace(name, nil)
		return "delete namespace " + name
	case r < 93:
		np := w.randPolicy(i, w.rng.IntN(randPolsPerNS))
		key := np.Namespace + "/" + np.Name
		w.nps[key] = np
		if err := m.SetPolicy(key, np); err != nil {
			t.Fatal(err)
		}
		return "set policy " + key
	default:
		key := fmt.Sprintf("n%d/q%d", i, w.rng.IntN(randPolsPerNS))
		delete(w.nps, key)
		if err := m.SetPolicy(key, nil); err != nil {
			t.Fatal(err)
		}
		return "delete policy " + key
	}
}

// fresh builds a new model from w's current objects, fed in a random
// order, and computes everything at once: the brute-force reference.
func (w *randWorld) fresh(t *testing.T) *Model {
	type op func(m *Model)
	var ops []op
	for _, name := range slices.Sorted(maps.Keys(w.nss)) {
		ns := w.nss[name]
		ops = append(ops, func(m *Model) { m.SetNamespace(name, ns) })
	}
	for _, key := range slices.Sorted(maps.Keys(w.pods)) {
		pod, ofport := w.pods[key], w.port[key]
		ops = append(ops, func(m *Model) { m.SetPod(key, pod, ofport) })
	}
	for _, key := range slices.Sorted(maps.Keys(w.nps)) {
		np := w.nps[key]
		ops = append(ops, func(m *Model) {
			if err := m.SetPolicy(key, np); err != nil {
				t.Fatal(err)
			}
		})
	}
	w.rng.Shuffle(len(ops), func(a, b int) { ops[a], ops[b] = ops[b], ops[a] })
	m := NewModel(testNode)
	for _, o := range ops {
		o(m)
	}
	plan, err := m.Compute()
	if err != nil {
		t.Fatal(err)
	}
	m.Commit(plan)
	return m
}

// realizedRules renders m's realized rules by rule key (IDs left out:
// they depend on history).
func realizedRules(m *Model) map[string]string {
	out := map[string]string{}
	for pk, res := range m.realized {
		for rk, r := range res.rules {
			out[pk+" "+rk] = renderRule(r)
		}
	}
	return out
}

// bruteResolve is resolvePeers by scanning every pod with peerMatches.
func bruteResolve(m *Model, cp *compiledPolicy, r *compiledRule) []string {
	var out []string
	for key, p := range m.pods {
		if !p.eligible() {
			continue
		}
		for i := range r.peers {
			if m.peerMatches(cp, &r.peers[i], p) {
				out = append(out, key)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// checkIndexed compares m (fed incrementally) with a brute-force
// recompute of the same objects: rules by key, isolation, isolation
// index, rule count, the realizer's copy, and every rule's peer
// resolution.
func checkIndexed(t *testing.T, w *randWorld, m *Model, f *fakeRealizer) {
	t.Helper()
	ref := w.fresh(t)
	got, want := realizedRules(m), realizedRules(ref)
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("rule %s: indexed model has %q, brute force %q", k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Fatalf("rule %s: indexed model has %q, brute force nothing", k, v)
		}
	}
	if m.Rules() != ref.Rules() {
		t.Fatalf("Rules() %d, brute force %d", m.Rules(), ref.Rules())
	}
	if g, r := renderIsolation(*m.isolation), renderIsolation(*ref.isolation); g != r {
		t.Fatalf("isolation %s, brute force %s", g, r)
	}
	if g, r := renderIsolation(f.isolation), renderIsolation(*ref.isolation); g != r {
		t.Fatalf("realized isolation %s, brute force %s", g, r)
	}
	gi, ri := m.IsolationIndex(), ref.IsolationIndex()
	for _, d := range []pipeline.Direction{pipeline.Ingress, pipeline.Egress} {
		if !maps.EqualFunc(gi[d], ri[d], slices.Equal) {
			t.Fatalf("%s isolation index %v, brute force %v", d, gi[d], ri[d])
		}
	}
	// The realizer holds exactly the model's rules, by ID.
	byID := map[uint32]string{}
	for _, res := range m.realized {
		for _, r := range res.rules {
			byID[r.ID] = renderRule(r)
		}
	}
	if len(byID) != len(f.rules) {
		t.Fatalf("realizer has %d rules, model %d", len(f.rules), len(byID))
	}
	for id, r := range f.rules {
		if byID[id] != renderRule(r) {
			t.Fatalf("realizer rule %d = %q, model %q", id, renderRule(r), byID[id])
		}
	}
	for _, cp := range m.policies {
		for i := range cp.rules {
			r := &cp.rules[i]
			if r.peers == nil {
				continue
			}
			pods, _ := m.resolvePeers(cp, r)
			var keys []string
			for _, p := range pods {
				keys = append(keys, p.key())
			}
			slices.Sort(keys)
			if b := bruteResolve(m, cp, r); !slices.Equal(keys, b) {
				t.Fatalf("policy %s rule %d resolves to %v, brute force %v", cp.key, i, keys, b)
			}
		}
	}
}

// TestIndexedModelDifferential feeds random sequences of pod, namespace
// and policy changes (and deletions) into one model, realizing after
// random batches, and checks after each realization that the indexed,
// incremental model equals a brute-force recompute of the same objects.
// A forced full recompute (MarkAllDirty) must then change no rule.
func TestIndexedModelDifferential(t *testing.T) {
	seeds, steps := 60, 150
	if testing.Short() {
		seeds = 10
	}
	for seed := range seeds {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			w := &randWorld{rng: rand.New(rand.NewPCG(uint64(seed), 12)), nss: map[string]*corev1.Namespace{},
				pods: map[string]*corev1.Pod{}, port: map[string]uint32{}, nps: map[string]*networkingv1.NetworkPolicy{}}
			m, f := NewModel(testNode), newFakeRealizer(t)
			realize := func() *Plan {
				plan, err := m.Compute()
				if err != nil {
					t.Fatal(err)
				}
				if !plan.Empty() {
					if err := f.ApplyPolicy(context.Background(), plan.Change); err != nil {
						t.Fatal(err)
					}
				}
				m.Commit(plan)
				return plan
			}
			var batch []string
			for s := range steps {
				batch = append(batch, w.step(t, m))
				if w.rng.IntN(3) > 0 && s < steps-1 {
					continue
				}
				realize()
				if m.Dirty() != 0 {
					t.Fatalf("%d policies dirty after commit", m.Dirty())
				}
				t.Run(fmt.Sprintf("step%d", s), func(t *testing.T) {
					defer func() {
						if t.Failed() {
							t.Logf("changes since the last check:\n%s", strings.Join(batch, "\n"))
						}
					}()
					checkIndexed(t, w, m, f)
				})
				if t.Failed() {
					return
				}
				batch = batch[:0]
				if w.rng.IntN(10) == 0 {
					m.MarkAllDirty()
					if plan := realize(); len(plan.Change.Upsert)+len(plan.Change.Delete) != 0 {
						t.Fatalf("full recompute after step %d changed rules: %d upserts, %d deletes", s,
							len(plan.Change.Upsert), len(plan.Change.Delete))
					}
				}
			}
			if m.Rules() == 0 && len(w.nps) > 0 {
				t.Logf("seed %d ends with %d policies and no rules", seed, len(w.nps))
			}
		})
	}
}
