package policy

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/test/ovstest"
)

// Benchmark scale: 2,000 pods in 100 namespaces, 1,000 policies, 20 pods
// local to the node.
const (
	benchNamespaces = 100
	benchPodsPerNS  = 20
	benchPolicies   = 1000
	benchLocal      = 20
)

type benchWorld struct {
	nss  []*corev1.Namespace
	pods []*corev1.Pod
	nps  []*networkingv1.NetworkPolicy
	port map[string]uint32 // local pods' OpenFlow ports
}

// newBenchWorld builds the objects: namespace i has labels team=t<i%10>,
// env=<prod|dev>; pod j of namespace i has app=a<j%5>, tier=<j%3> and a
// named port "http" that differs between pods (8080+j%4); the first pod
// of the first 20 namespaces is local. Policy k lives in namespace k%100
// and mixes pod selectors, namespace selectors, ipBlocks with except,
// numeric, named and ranged ports, ingress and egress.
func newBenchWorld() *benchWorld {
	w := &benchWorld{port: map[string]uint32{}}
	for i := range benchNamespaces {
		env := "dev"
		if i%2 == 0 {
			env = "prod"
		}
		w.nss = append(w.nss, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns-%d", i),
			Labels: map[string]string{"team": fmt.Sprintf("t%d", i%10), "env": env}}})
		for j := range benchPodsPerNS {
			n := i*benchPodsPerNS + j
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%d", i), Name: fmt.Sprintf("pod-%d", j),
				Labels: map[string]string{"app": fmt.Sprintf("a%d", j%5), "tier": fmt.Sprintf("%d", j%3)}},
				Spec: corev1.PodSpec{NodeName: "other", Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{
					{Name: "http", ContainerPort: int32(8080 + j%4)}, {Name: "dns", Protocol: corev1.ProtocolUDP, ContainerPort: 53}}}}},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.%d.%d.%d", 1+n/65536, n/256%256, n%256)}}
			if j == 0 && i < benchLocal {
				pod.Spec.NodeName = testNode
				pod.Status.PodIP = fmt.Sprintf("10.10.0.%d", 10+i)
				w.port[pod.Namespace+"/"+pod.Name] = uint32(10 + i)
			}
			w.pods = append(w.pods, pod)
		}
	}
	for k := range benchPolicies {
		w.nps = append(w.nps, benchPolicy(k, fmt.Sprintf("np-%d", k)))
	}
	return w
}

func benchPolicy(k int, name string) *networkingv1.NetworkPolicy {
	ns := fmt.Sprintf("ns-%d", k%benchNamespaces)
	spec := networkingv1.NetworkPolicySpec{}
	if k%3 != 0 {
		spec.PodSelector = *sel(fmt.Sprintf("app=a%d", k%5))
	}
	from := []networkingv1.NetworkPolicyPeer{{PodSelector: sel(fmt.Sprintf("tier=%d", k%3))}}
	switch k % 4 {
	case 1:
		from = append(from, networkingv1.NetworkPolicyPeer{NamespaceSelector: sel(fmt.Sprintf("team=t%d", k%10))})
	case 2:
		from = append(from, networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("env=prod"), PodSelector: sel("app=a1")})
	case 3:
		from = append(from, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{
			CIDR: fmt.Sprintf("172.%d.0.0/16", 16+k%16), Except: []string{fmt.Sprintf("172.%d.%d.0/24", 16+k%16, k%256)}}})
	}
	ports := []networkingv1.NetworkPolicyPort{port("TCP", 80+k%10)}
	switch k % 5 {
	case 1:
		ports = append(ports, port("TCP", "http"))
	case 2:
		ports = append(ports, port("UDP", [2]int{10000, 10000 + k%1000}))
	case 3:
		ports = append(ports, port("UDP", "dns"), port("TCP", "http"))
	}
	spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: from, Ports: ports}}
	if k%2 == 0 {
		spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		spec.Egress = []networkingv1.NetworkPolicyEgressRule{
			{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel(fmt.Sprintf("team=t%d", (k+1)%10)),
				PodSelector: sel("tier=1")}}, Ports: []networkingv1.NetworkPolicyPort{port("TCP", "http")}},
			{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0",
				Except: []string{"10.0.0.0/8", "192.168.0.0/16"}}}}},
		}
	}
	np := policy(ns, name, spec)
	np.UID = types.UID(fmt.Sprintf("uid-%s-%d", name, time.Now().UnixNano()))
	return np
}

// load feeds every object into m.
func (w *benchWorld) load(tb testing.TB, m *Model) {
	for _, ns := range w.nss {
		m.SetNamespace(ns.Name, ns)
	}
	for _, p := range w.pods {
		m.SetPod(p.Namespace+"/"+p.Name, p, w.port[p.Namespace+"/"+p.Name])
	}
	for _, np := range w.nps {
		if err := m.SetPolicy(np.Namespace+"/"+np.Name, np); err != nil {
			tb.Fatal(err)
		}
	}
}

// benchPipeline starts a private OVS with br-int and the real pipeline.
func benchPipeline(b testing.TB) *pipeline.Pipeline {
	ovs := ovstest.Start(b)
	ovs.AddBridge(b, "br-int")
	sw, err := openflow.Open(openflow.Config{MgmtSocket: ovs.MgmtSocket("br-int"), RetryInterval: 50 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sw.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sw.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	_, cidr, _ := net.ParseCIDR("10.10.0.0/24")
	pipe, err := pipeline.New(sw, pipeline.Config{GatewayOFPort: 2, GatewayMAC: mac, GatewayIP: net.ParseIP("10.10.0.1"),
		PodCIDR: cidr, CTZone: 65520, Round: 1})
	if err != nil {
		b.Fatal(err)
	}
	if err := pipe.InstallBase(ctx); err != nil {
		b.Fatal(err)
	}
	return pipe
}

// realize computes m's pending change and applies it to r (nil: compute
// only).
func realize(tb testing.TB, m *Model, r Realizer) *Plan {
	plan, err := m.Compute()
	if err != nil {
		tb.Fatal(err)
	}
	if r != nil && !plan.Empty() {
		if err := r.ApplyPolicy(context.Background(), plan.Change); err != nil {
			tb.Fatal(err)
		}
	}
	m.Commit(plan)
	return plan
}

func heapInUse() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapInuse) / (1 << 20)
}

// clear removes everything m realized from r and empties m.
func clearAll(tb testing.TB, m *Model, r Realizer, w *benchWorld) {
	for _, np := range w.nps {
		_ = m.SetPolicy(np.Namespace+"/"+np.Name, nil)
	}
	realize(tb, m, r)
}

// BenchmarkPolicy measures, at the scale above, the full sync (compute
// only, and compute plus flow generation plus bundle install into a
// private OVS through the real pipeline), one pod label change and one
// policy add.
func BenchmarkPolicy(b *testing.B) {
	w := newBenchWorld()
	b.Run("FullSyncCompute", func(b *testing.B) {
		var rules int
		for b.Loop() {
			m := NewModel(testNode)
			w.load(b, m)
			realize(b, m, nil)
			rules = m.Rules()
		}
		b.ReportMetric(float64(rules), "rules")
	})
	pipe := benchPipeline(b)
	b.Run("FullSyncOVS", func(b *testing.B) {
		var rules, flows int
		var heap float64
		for b.Loop() {
			m := NewModel(testNode)
			w.load(b, m)
			realize(b, m, pipe)
			b.StopTimer()
			rules = m.Rules()
			fs, err := pipe.PolicyFlows()
			if err != nil {
				b.Fatal(err)
			}
			flows = len(fs)
			heap = heapInUse()
			clearAll(b, m, pipe, w)
			b.StartTimer()
		}
		b.ReportMetric(float64(rules), "rules")
		b.ReportMetric(float64(flows), "flows")
		b.ReportMetric(heap, "heapMiB")
	})
	// Incremental steps start from a synced world.
	m := NewModel(testNode)
	w.load(b, m)
	realize(b, m, pipe)
	b.Run("PodLabelChange", func(b *testing.B) {
		pod := w.pods[5].DeepCopy() // ns-0/pod-5: app=a0, tier=2
		i := 0
		var ups, dels int
		for b.Loop() {
			i++
			pod.Labels = map[string]string{"app": fmt.Sprintf("a%d", i%5), "tier": fmt.Sprintf("%d", i%3)}
			m.SetPod(pod.Namespace+"/"+pod.Name, pod, 0)
			plan := realize(b, m, pipe)
			ups += len(plan.Change.Upsert)
			dels += len(plan.Change.Delete)
		}
		b.ReportMetric(float64(ups)/float64(b.N), "upserts/op")
		b.ReportMetric(float64(dels)/float64(b.N), "deletes/op")
	})
	b.Run("LocalPodLabelChange", func(b *testing.B) {
		pod := w.pods[0].DeepCopy() // ns-0/pod-0, local
		ofport := w.port["ns-0/pod-0"]
		i := 0
		var ups, dels int
		for b.Loop() {
			i++
			pod.Labels = map[string]string{"app": fmt.Sprintf("a%d", i%5), "tier": fmt.Sprintf("%d", i%3)}
			m.SetPod(pod.Namespace+"/"+pod.Name, pod, ofport)
			plan := realize(b, m, pipe)
			ups += len(plan.Change.Upsert)
			dels += len(plan.Change.Delete)
		}
		b.ReportMetric(float64(ups)/float64(b.N), "upserts/op")
		b.ReportMetric(float64(dels)/float64(b.N), "deletes/op")
	})
	b.Run("PolicyAdd", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			np := benchPolicy(i*100, fmt.Sprintf("added-%d", i)) // in ns-0, which has a local pod
			key := np.Namespace + "/" + np.Name
			if err := m.SetPolicy(key, np); err != nil {
				b.Fatal(err)
			}
			realize(b, m, pipe)
			b.StopTimer()
			_ = m.SetPolicy(key, nil)
			realize(b, m, pipe)
			b.StartTimer()
		}
	})
	fs, err := pipe.PolicyFlows()
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("synced world: %d rules, %d policy flows, heap in use %.1f MiB", m.Rules(), len(fs), heapInUse())
}

// TestPipelineSync realizes the benchmark's world into the real pipeline
// on a private OVS, then a pod label change and a policy delete, and
// checks that the pipeline holds exactly the model's rules.
func TestPipelineSync(t *testing.T) {
	w := newBenchWorld()
	pipe := benchPipeline(t)
	m := NewModel(testNode)
	w.load(t, m)
	start := time.Now()
	realize(t, m, pipe)
	t.Logf("full sync of %d policies into %d rules: %v", len(w.nps), m.Rules(), time.Since(start))
	check := func(what string) {
		t.Helper()
		want := map[uint32]string{}
		for _, res := range m.realized {
			for _, r := range res.rules {
				want[r.ID] = renderRule(r)
			}
		}
		ids := pipe.PolicyRules()
		if len(ids) != len(want) {
			t.Fatalf("%s: pipeline has %d rules, model %d", what, len(ids), len(want))
		}
		for _, id := range ids {
			r, ok := pipe.PolicyRule(id)
			if !ok || renderRule(r) != want[id] {
				t.Fatalf("%s: pipeline rule %d = %s, model %s", what, id, renderRule(r), want[id])
			}
		}
	}
	check("full sync")
	if m.Rules() < 100 {
		t.Fatalf("only %d rules: the world does not exercise much", m.Rules())
	}
	pod := w.pods[0].DeepCopy()
	pod.Labels = map[string]string{"app": "a3", "tier": "1"}
	m.SetPod(pod.Namespace+"/"+pod.Name, pod, w.port["ns-0/pod-0"])
	plan := realize(t, m, pipe)
	if len(plan.Change.Upsert)+len(plan.Change.Delete) == 0 {
		t.Fatal("a local pod label change changed nothing")
	}
	check("label change")
	if err := m.SetPolicy("ns-0/np-0", nil); err != nil {
		t.Fatal(err)
	}
	realize(t, m, pipe)
	check("policy delete")
}

// scaleShape is issue 12's generated world as one agent sees it:
// namespaces scale-NNNN (team=team-<i%10>, env=prod|dev by parity) with
// 100 pods each (app=app-<j%10>, tier=web|db, named ports http:8080 and
// metrics:9090) spread over pods/30 remote nodes, 10 policies per
// namespace (the shape of test/scale's generator), and one local pod
// (app=app-0) in each of the first 5 namespaces.
type scaleShape struct {
	name       string
	namespaces int
}

const (
	scalePodsPerNS = 100
	scaleLocalNS   = 5
	scaleTeams     = 10
)

var scaleShapes = []scaleShape{
	{name: "S1", namespaces: 30},  // 3,000 pods, 300 policies
	{name: "S2", namespaces: 300}, // 30,000 pods, 3,000 policies
}

func scaleNS(i int) string { return fmt.Sprintf("scale-%04d", i) }

func scaleNamespace(i int, env string) *corev1.Namespace {
	if env == "" {
		env = "dev"
		if i%2 == 0 {
			env = "prod"
		}
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scaleNS(i), Labels: map[string]string{
		"team": fmt.Sprintf("team-%d", i%scaleTeams), "env": env, "weir.io/scale": "true"}}}
}

// scalePod is pod j of namespace i with app label app ("" = app-<j%10>).
func scalePod(s scaleShape, i, j int, app string) *corev1.Pod {
	if app == "" {
		app = fmt.Sprintf("app-%d", j%10)
	}
	tier := "web"
	if j%2 == 1 {
		tier = "db"
	}
	nodes := s.namespaces * scalePodsPerNS / 30
	n := i*scalePodsPerNS + j
	node := n % nodes
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: scaleNS(i), Name: fmt.Sprintf("p-%04d", j),
		Labels: map[string]string{"app": app, "tier": tier, "weir.io/scale": "true"}},
		Spec: corev1.PodSpec{NodeName: fmt.Sprintf("kwok-%04d", node), Containers: []corev1.Container{{Name: "app",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}}}}},
		// Node k's pods are in 10.160.0.0/24 + k.
		Status: corev1.PodStatus{Phase: corev1.PodRunning,
			PodIP: fmt.Sprintf("10.%d.%d.%d", 160+node/256, node%256, 2+n/nodes)}}
	if j == 0 && i < scaleLocalNS {
		pod.Spec.NodeName = testNode
		pod.Status.PodIP = fmt.Sprintf("10.10.0.%d", 10+i)
	}
	return pod
}

func scaleOFPort(pod *corev1.Pod) uint32 {
	if pod.Spec.NodeName != testNode {
		return 0
	}
	var i int
	fmt.Sscanf(pod.Namespace, "scale-%d", &i)
	return uint32(10 + i)
}

// scalePolicies are the 10 policies of namespace i: default deny ingress,
// app-k <- app-(k+1) on named port http (k < 6), app-0 <- app-1 pods of
// the namespaces of its team, port 9090 from 10.0.0.0/8 except
// 10.160.0.0/16, and app-0's egress to app-2 pods of env=prod namespaces
// on http plus UDP 53 anywhere.
func scalePolicies(i int) []*networkingv1.NetworkPolicy {
	ns := scaleNS(i)
	ingress := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	nps := []*networkingv1.NetworkPolicy{policy(ns, "default-deny-ingress", networkingv1.NetworkPolicySpec{PolicyTypes: ingress})}
	for k := range 6 {
		nps = append(nps, policy(ns, fmt.Sprintf("app-%d-from-app-%d", k, k+1), networkingv1.NetworkPolicySpec{
			PodSelector: *sel(fmt.Sprintf("app=app-%d", k)), PolicyTypes: ingress,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: sel(fmt.Sprintf("app=app-%d", k+1))}},
				Ports: []networkingv1.NetworkPolicyPort{port("TCP", "http")}}}}))
	}
	nps = append(nps,
		policy(ns, "ns-team", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=app-0"), PolicyTypes: ingress,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: sel(fmt.Sprintf("team=team-%d", i%scaleTeams)), PodSelector: sel("app=app-1")}}}}}),
		policy(ns, "ipblock", networkingv1.NetworkPolicySpec{PolicyTypes: ingress,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8",
					Except: []string{"10.160.0.0/16"}}}},
				Ports: []networkingv1.NetworkPolicyPort{port("TCP", 9090)}}}}),
		policy(ns, "egress-prod", networkingv1.NetworkPolicySpec{PodSelector: *sel("app=app-0"),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("env=prod"), PodSelector: sel("app=app-2")}},
					Ports: []networkingv1.NetworkPolicyPort{port("TCP", "http")}},
				{Ports: []networkingv1.NetworkPolicyPort{port("UDP", 53)}},
			}}))
	return nps
}

// loadScale feeds shape s into a new model, policies first: an agent's
// informers list the few policies and namespaces before the pods, the
// order in which each pod event meets every policy.
func loadScale(tb testing.TB, s scaleShape, pods []*corev1.Pod) *Model {
	m := NewModel(testNode)
	for i := range s.namespaces {
		for _, np := range scalePolicies(i) {
			if err := m.SetPolicy(np.Namespace+"/"+np.Name, np); err != nil {
				tb.Fatal(err)
			}
		}
	}
	for i := range s.namespaces {
		m.SetNamespace(scaleNS(i), scaleNamespace(i, ""))
	}
	for _, p := range pods {
		m.SetPod(p.Namespace+"/"+p.Name, p, scaleOFPort(p))
	}
	return m
}

// BenchmarkPolicyScale measures the model (computation only) at issue
// 12's S1 and S2 sizes: the full sync, and one change of each kind after
// it. Each change alternates between two states so every iteration does
// the same work.
func BenchmarkPolicyScale(b *testing.B) {
	for _, s := range scaleShapes {
		b.Run(s.name, func(b *testing.B) {
			var pods []*corev1.Pod
			for i := range s.namespaces {
				for j := range scalePodsPerNS {
					pods = append(pods, scalePod(s, i, j, ""))
				}
			}
			b.Run("FullSync", func(b *testing.B) {
				var rules int
				for b.Loop() {
					m := loadScale(b, s, pods)
					realize(b, m, nil)
					rules = m.Rules()
				}
				b.ReportMetric(float64(rules), "rules")
			})
			m := loadScale(b, s, pods)
			realize(b, m, nil)
			if m.Rules() == 0 {
				b.Fatal("the synced world has no rules")
			}
			// change runs set with the iteration number (set(0) is the
			// original state) and reports the average number of rules
			// upserted and deleted.
			change := func(b *testing.B, set func(i int)) {
				i := 0
				var ups, dels int
				for b.Loop() {
					i++
					set(i)
					plan := realize(b, m, nil)
					ups += len(plan.Change.Upsert)
					dels += len(plan.Change.Delete)
				}
				b.ReportMetric(float64(ups)/float64(b.N), "upserts/op")
				b.ReportMetric(float64(dels)/float64(b.N), "deletes/op")
				set(0) // the original state, for the next sub-benchmark
				realize(b, m, nil)
			}
			// scale-0010 is team-0 and prod: its app-1 pods are peers of
			// scale-0000's ns-team, its app-2 pods of every local
			// egress-prod.
			b.Run("RemotePodLabel", func(b *testing.B) {
				change(b, func(i int) {
					p := scalePod(s, 10, 1, fmt.Sprintf("app-%d", 1+i%2))
					m.SetPod(p.Namespace+"/"+p.Name, p, 0)
				})
			})
			b.Run("LocalPodLabel", func(b *testing.B) {
				change(b, func(i int) {
					p := scalePod(s, 0, 0, fmt.Sprintf("app-%d", i%2))
					m.SetPod(p.Namespace+"/"+p.Name, p, scaleOFPort(p))
				})
			})
			b.Run("NamespaceLabel", func(b *testing.B) {
				change(b, func(i int) {
					env := "prod"
					if i%2 == 1 {
						env = "dev"
					}
					m.SetNamespace(scaleNS(10), scaleNamespace(10, env))
				})
			})
			b.Run("PolicyAdd", func(b *testing.B) {
				i := 0
				for b.Loop() {
					i++
					np := policy(scaleNS(0), fmt.Sprintf("added-%d", i), networkingv1.NetworkPolicySpec{
						PodSelector: *sel("app=app-0"),
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("env=prod"), PodSelector: sel("tier=web")}},
							Ports: []networkingv1.NetworkPolicyPort{port("TCP", "http")}}}})
					key := np.Namespace + "/" + np.Name
					if err := m.SetPolicy(key, np); err != nil {
						b.Fatal(err)
					}
					realize(b, m, nil)
					b.StopTimer()
					_ = m.SetPolicy(key, nil)
					realize(b, m, nil)
					b.StartTimer()
				}
			})
			b.ReportMetric(float64(m.Rules()), "rules")
		})
	}
}
