package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/weirnet/weir/pkg/localcluster"
)

// changeTimeout bounds the wait for one change's flows; a miss is recorded
// as a failure of that repetition, not as a latency.
const changeTimeout = 15 * time.Second

// nodeMonitors are the flow and route monitors of one real worker.
type nodeMonitors struct {
	node   RealNode
	flows  *lineMonitor
	routes *lineMonitor
}

// latencyRun measures single changes from the API call (or, for a new pod,
// from its IP appearing in the API) to the flows present on every worker.
type latencyRun struct {
	c        kubernetes.Interface
	layout   Layout
	pods     *podWatch
	monitors []nodeMonitors
	log      func(string, ...any)
	// samples[node][kind]
	samples map[string]map[string][]float64
	misses  map[string]int // kind → repetitions whose flows never appeared
	// runID makes the names of created objects unique per run, so a run
	// against a kept cluster never trips over an interrupted run's leftovers.
	runID string
	// podNode is the kwok node of this run's new pods. A node of its own:
	// kwok keeps its IP pools in memory, and a kwok restarted against a kept
	// cluster handed out addresses of existing pods again (measured).
	podNode string
}

// maxReps bounds the repetitions: each new-node repetition takes the next
// /24 after extraCIDRBase, and the new pods' node the last one.
const maxReps = 250

// kwokIPTimeout bounds the wait for kwok to give a new pod its IP.
const kwokIPTimeout = 2 * time.Minute

// podNodeIndex is the /24 (after extraCIDRBase) and address index (after
// extraNodeIPNet) of the new pods' node.
const podNodeIndex = 255

// The change kinds, in report order.
const (
	kindPodLabel  = "pod label change"
	kindNewPod    = "new pod IP"
	kindNodeFlows = "new node (flows)"
	kindNodeRoute = "new node (route)"
	kindPolicy    = "policy added"
	kindNSLabel   = "namespace label change"
)

var changeKinds = []string{kindPodLabel, kindNewPod, kindNodeFlows, kindNodeRoute, kindPolicy, kindNSLabel}

func (r *latencyRun) record(node, kind string, d time.Duration) {
	if r.samples[node] == nil {
		r.samples[node] = map[string][]float64{}
	}
	r.samples[node][kind] = append(r.samples[node][kind], float64(d.Microseconds())/1000)
}

// observe waits on every worker for the event match accepts after marks,
// and records its latency from t0.
func (r *latencyRun) observe(kind string, t0 time.Time, marks []int, routes bool, match func(string) bool) {
	for i, m := range r.monitors {
		mon := m.flows
		if routes {
			mon = m.routes
		}
		at, err := mon.waitFor(marks[i], changeTimeout, kind, match)
		if err != nil {
			r.misses[kind]++
			r.log("%s: %v", kind, err)
			continue
		}
		r.record(m.node.Name, kind, at.Sub(t0))
	}
}

// settle waits (unmeasured) for the revert of a change to reach every
// worker, so the next repetition starts clean.
func (r *latencyRun) settle(marks []int, routes bool, match func(string) bool) {
	for i, m := range r.monitors {
		mon := m.flows
		if routes {
			mon = m.routes
		}
		_, _ = mon.waitFor(marks[i], changeTimeout, "revert", match)
	}
}

func (r *latencyRun) marks(routes bool) []int {
	out := make([]int, len(r.monitors))
	for i, m := range r.monitors {
		if routes {
			out[i] = m.routes.mark()
		} else {
			out[i] = m.flows.mark()
		}
	}
	return out
}

func labelPatch(key, value string) []byte {
	return fmt.Appendf(nil, `{"metadata":{"labels":{%q:%q}}}`, key, value)
}

// podLabel: a remote pod in an active namespace changes from app-5 (a peer
// of nothing that has local targets) to app-1 (a peer of app-0, whose pods
// are local), so its IP enters the flows of the app-0 policies.
func (r *latencyRun) podLabel(ctx context.Context, rep int) error {
	ns := nsName(rep % ActiveNamespaces)
	name := podName(5 + Apps*((rep/ActiveNamespaces)%(PodsPerNamespace/Apps)))
	ip, _ := r.pods.ip(ns + "/" + name)
	if ip == "" {
		return fmt.Errorf("pod %s/%s has no IP", ns, name)
	}
	marks, t0 := r.marks(false), time.Now()
	if _, err := r.c.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, labelPatch("app", "app-1"), metav1.PatchOptions{}); err != nil {
		return err
	}
	r.observe(kindPodLabel, t0, marks, false, flowEvent(ip, "ADDED", "MODIFIED"))
	marks = r.marks(false)
	if _, err := r.c.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, labelPatch("app", "app-5"), metav1.PatchOptions{}); err != nil {
		return err
	}
	r.settle(marks, false, flowEvent(ip, "DELETED", "MODIFIED"))
	return nil
}

// newPod: a kwok pod labelled app-1 is created in an active namespace; the
// latency runs from the moment its IP is in the API (kwok's status update).
func (r *latencyRun) newPod(ctx context.Context, rep int) error {
	ns := nsName(rep % ActiveNamespaces)
	name := fmt.Sprintf("lat-%s-%04d", r.runID, rep)
	node := r.podNode
	marks := r.marks(false)
	if _, err := r.c.CoreV1().Pods(ns).Create(ctx, kwokPod(ns, name, node, "app-1", 0), metav1.CreateOptions{}); err != nil {
		return err
	}
	// kwok's IP comes first; the latency runs from then. At S2 kwok
	// itself lags (30,000 pods took it 951 s), so its part may take long.
	ip, t0, err := r.pods.waitIP(ns+"/"+name, kwokIPTimeout)
	if err != nil {
		return err
	}
	r.observe(kindNewPod, t0, marks, false, flowEvent(ip, "ADDED", "MODIFIED"))
	marks = r.marks(false)
	zero := int64(0)
	if err := r.c.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		return err
	}
	r.settle(marks, false, flowEvent(ip, "DELETED", "MODIFIED"))
	return nil
}

// newNode: a kwok node joins; its tunnel flows (nw_dst its pod CIDR) and its
// route must appear on every worker.
func (r *latencyRun) newNode(ctx context.Context, rep int) error {
	name := fmt.Sprintf("kwok-lat-%s-%04d", r.runID, rep)
	cidr := nthPrefix(extraCIDRBase, rep)
	ip := nthNodeIP(extraNodeIPNet, rep)
	fm, rm, t0 := r.marks(false), r.marks(true), time.Now()
	if _, err := r.c.CoreV1().Nodes().Create(ctx, kwokNode(name, cidr, ip), metav1.CreateOptions{}); err != nil {
		return err
	}
	r.observe(kindNodeFlows, t0, fm, false, flowEvent(cidr.String(), "ADDED", "MODIFIED"))
	r.observe(kindNodeRoute, t0, rm, true, routeAdded(cidr.String()))
	fm = r.marks(false)
	if err := r.c.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return err
	}
	r.settle(fm, false, flowEvent(cidr.String(), "DELETED"))
	return nil
}

// policy: a policy for app-0 in an active namespace allows a new ipBlock.
func (r *latencyRun) policy(ctx context.Context, rep int) error {
	ns := nsName(rep % ActiveNamespaces)
	cidr := fmt.Sprintf("192.168.%d.0/24", rep%250)
	port := metrics
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("lat-%s-%04d", r.runID, rep), Labels: map[string]string{ScaleLabel: "true"}},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *appSelector("app-0"),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: cidr}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}}}},
	}
	marks, t0 := r.marks(false), time.Now()
	if _, err := r.c.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
		return err
	}
	r.observe(kindPolicy, t0, marks, false, flowEvent(cidr, "ADDED", "MODIFIED"))
	marks = r.marks(false)
	if err := r.c.NetworkingV1().NetworkPolicies(ns).Delete(ctx, np.Name, metav1.DeleteOptions{}); err != nil {
		return err
	}
	r.settle(marks, false, flowEvent(cidr, "DELETED", "MODIFIED"))
	return nil
}

// nsLabelCandidates are namespaces without local pods whose team is no
// active namespace's team, so relabelling one to an active namespace's team
// makes its app-1 pods peers of that namespace's ns-team policy.
func nsLabelCandidates(s Scenario) []int {
	var out []int
	for i := ActiveNamespaces; i < s.Namespaces; i++ {
		if i%Teams >= ActiveNamespaces {
			out = append(out, i)
		}
	}
	return out
}

func (r *latencyRun) nsLabel(ctx context.Context, rep int) error {
	cands := nsLabelCandidates(r.layout.Scenario)
	if len(cands) == 0 {
		return fmt.Errorf("no namespace to relabel in %s", r.layout.Scenario.Name)
	}
	i := cands[rep%len(cands)]
	ns, team := nsName(i), teamLabel(rep%ActiveNamespaces)
	ip, _ := r.pods.ip(ns + "/" + podName(1)) // app-1
	if ip == "" {
		return fmt.Errorf("pod %s/%s has no IP", ns, podName(1))
	}
	marks, t0 := r.marks(false), time.Now()
	if _, err := r.c.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, labelPatch("team", team), metav1.PatchOptions{}); err != nil {
		return err
	}
	r.observe(kindNSLabel, t0, marks, false, flowEvent(ip, "ADDED", "MODIFIED"))
	marks = r.marks(false)
	if _, err := r.c.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, labelPatch("team", teamLabel(i)), metav1.PatchOptions{}); err != nil {
		return err
	}
	r.settle(marks, false, flowEvent(ip, "DELETED", "MODIFIED"))
	return nil
}

// measureLatencies runs reps repetitions of every change kind.
func measureLatencies(ctx context.Context, env Env, layout Layout, pods *podWatch, reps int, log func(string, ...any)) (map[string][]Sample, map[string]int, error) {
	r := &latencyRun{c: env.Client, layout: layout, pods: pods, log: log,
		samples: map[string]map[string][]float64{}, misses: map[string]int{},
		runID: strconv.FormatInt(time.Now().Unix()%(36*36*36*36), 36)}
	for _, n := range env.Real {
		if !n.Worker {
			continue
		}
		fm, err := startFlowMonitor(ctx, env.Cfg, n.Name)
		if err != nil {
			return nil, nil, err
		}
		defer fm.stop()
		rm, err := startRouteMonitor(ctx, env.Cfg, n.Name)
		if err != nil {
			return nil, nil, err
		}
		defer rm.stop()
		r.monitors = append(r.monitors, nodeMonitors{node: n, flows: fm, routes: rm})
	}
	r.podNode = "kwok-pods-" + r.runID
	if _, err := env.Client.CoreV1().Nodes().Create(ctx, kwokNode(r.podNode, nthPrefix(extraCIDRBase, podNodeIndex),
		nthNodeIP(extraNodeIPNet, podNodeIndex)), metav1.CreateOptions{}); err != nil {
		return nil, nil, fmt.Errorf("creating the node of the new pods: %w", err)
	}
	defer func() {
		if err := env.Client.CoreV1().Nodes().Delete(context.WithoutCancel(ctx), r.podNode, metav1.DeleteOptions{}); err != nil {
			log("deleting node %s: %v", r.podNode, err)
		}
	}()
	if err := waitNodeReady(ctx, env.Client, r.podNode, kwokIPTimeout); err != nil {
		return nil, nil, err
	}
	time.Sleep(time.Second) // the monitors are connected
	for _, step := range []struct {
		kind string
		f    func(context.Context, int) error
	}{{kindPodLabel, r.podLabel}, {kindNewPod, r.newPod}, {kindNodeFlows, r.newNode}, {kindPolicy, r.policy}, {kindNSLabel, r.nsLabel}} {
		start := time.Now()
		for rep := 0; rep < reps; rep++ {
			if err := step.f(ctx, rep); err != nil {
				return nil, nil, fmt.Errorf("%s, repetition %d: %w", step.kind, rep, err)
			}
		}
		log("measured %d × %s in %.0fs", reps, step.kind, time.Since(start).Seconds())
	}
	out := map[string][]Sample{}
	for node, kinds := range r.samples {
		for _, k := range changeKinds {
			out[node] = append(out[node], Sample{Name: k, Ms: kinds[k]})
		}
	}
	return out, r.misses, nil
}

// agentPod finds the weir-agent pod of node and its ovs-agent container.
func agentContainer(ctx context.Context, c kubernetes.Interface, node string) (podName, containerID string, restarts int32, err error) {
	l, err := c.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=weir,app.kubernetes.io/component=agent",
		FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil {
		return "", "", 0, err
	}
	if len(l.Items) != 1 {
		return "", "", 0, fmt.Errorf("%d weir-agent pods on %s, want 1", len(l.Items), node)
	}
	p := l.Items[0]
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == "ovs-agent" {
			return p.Name, strings.TrimPrefix(cs.ContainerID, "containerd://"), cs.RestartCount, nil
		}
	}
	return "", "", 0, fmt.Errorf("no ovs-agent container status in %s", p.Name)
}

// fullSync kills node's agent (SIGKILL, as a crash), waits for the new
// process to report its initial sync, and returns that duration and the
// CPU seconds the new process used by then.
func fullSync(ctx context.Context, env Env, n RealNode) (syncSeconds, cpuSeconds float64, err error) {
	before, err := agentMetrics(ctx, n)
	if err != nil {
		return 0, 0, err
	}
	oldStart := before.value("process_start_time_seconds", nil)
	_, id, _, err := agentContainer(ctx, env.Client, n.Name)
	if err != nil {
		return 0, 0, err
	}
	cmd, err := localcluster.NodeExec(ctx, env.Cfg, n.Name, "ctr", "-a", "/run/containerd/containerd.sock", "-n", "k8s.io",
		"tasks", "kill", "-s", "SIGKILL", id)
	if err != nil {
		return 0, 0, err
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("killing the agent on %s: %v: %s", n.Name, err, out)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		m, err := agentMetrics(ctx, n)
		if err != nil || m.value("process_start_time_seconds", nil) == oldStart {
			continue
		}
		if s := m.value("weir_agent_initial_sync_seconds", nil); s > 0 {
			return s, m.value("process_cpu_seconds_total", nil), nil
		}
	}
	return 0, 0, fmt.Errorf("the agent on %s did not report weir_agent_initial_sync_seconds within 3 minutes of a restart", n.Name)
}

// churn updates rate pods per second (round robin over all generated pods,
// toggling a label no selector reads) for d, and returns the watch bytes each agent received per second and
// the API server's cost.
func churn(ctx context.Context, env Env, s Scenario, rate int, d time.Duration, log func(string, ...any)) (map[string]map[string]float64, APIServerResult, error) {
	type snap struct {
		agents map[string]metricSet
		api    metricSet
		at     time.Time
	}
	take := func() (snap, error) {
		sn := snap{agents: map[string]metricSet{}, at: time.Now()}
		for _, n := range env.Real {
			m, err := agentMetrics(ctx, n)
			if err != nil {
				return sn, err
			}
			sn.agents[n.Name] = m
		}
		m, err := apiServerMetrics(ctx, env.Client)
		sn.api = m
		return sn, err
	}
	before, err := take()
	if err != nil {
		return nil, APIServerResult{}, err
	}
	perNS := s.Pods / s.Namespaces
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(d)
	changes := 0
	for i := 0; time.Now().Before(end); i++ {
		select {
		case <-ctx.Done():
			return nil, APIServerResult{}, ctx.Err()
		case <-tick.C:
		}
		j := i % s.Pods
		value := "churned"
		if (i/s.Pods)%2 == 1 {
			value = "steady"
		}
		ns, name := nsName(j/perNS), podName(j%perNS)
		// A label no selector reads: the agent still receives (and
		// filters) every update, which is the cost measured here.
		if _, err := env.Client.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType,
			labelPatch("churn", value), metav1.PatchOptions{}); err != nil {
			return nil, APIServerResult{}, fmt.Errorf("churn: %w", err)
		}
		changes++
	}
	after, err := take()
	if err != nil {
		return nil, APIServerResult{}, err
	}
	secs := after.at.Sub(before.at).Seconds()
	log("churn: %d pod updates in %.0fs", changes, secs)
	out := map[string]map[string]float64{}
	for _, n := range env.Real {
		b, a := before.agents[n.Name].byLabel("weir_kube_received_bytes_total", "resource"), after.agents[n.Name].byLabel("weir_kube_received_bytes_total", "resource")
		out[n.Name] = map[string]float64{}
		for res, v := range a {
			out[n.Name][res] = (v - b[res]) / secs
		}
	}
	api := APIServerResult{
		RSSMiB:               after.api.value("process_resident_memory_bytes", nil) / mib,
		CPUSeconds:           after.api.value("process_cpu_seconds_total", nil) - before.api.value("process_cpu_seconds_total", nil),
		WatchEventsPerSecond: (after.api.count("apiserver_watch_events_sizes") - before.api.count("apiserver_watch_events_sizes")) / secs,
		WatchBytesPerSecond:  (after.api.value("apiserver_watch_events_sizes", nil) - before.api.value("apiserver_watch_events_sizes", nil)) / secs,
		ChurnSeconds:         secs,
	}
	return out, api, nil
}

// steadyState scrapes every agent's memory and ovs-vswitchd's, and counts
// flows.
func steadyState(ctx context.Context, env Env) ([]AgentResult, error) {
	var out []AgentResult
	for _, n := range env.Real {
		m, err := agentMetrics(ctx, n)
		if err != nil {
			return nil, err
		}
		per, total, err := flowsPerTable(ctx, env.Cfg, n.Name)
		if err != nil {
			return nil, err
		}
		ar := AgentResult{Node: n.Name, RSSMiB: m.value("process_resident_memory_bytes", nil) / mib,
			HeapMiB: m.value("go_memstats_heap_alloc_bytes", nil) / mib, FlowsPerTable: per, FlowsTotal: total}
		if pid, err := vswitchdPID(env.Cfg, n.Name); err == nil {
			ar.VswitchdRSSMiB = procRSSMiB(pid)
		}
		out = append(out, ar)
	}
	return out, nil
}

// waitAgentsIdle waits until no agent's policy flows changed for quiet:
// the flows of the load are in place.
func waitAgentsIdle(ctx context.Context, env Env, quiet, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := map[string]int{}
	stableSince := time.Now()
	for time.Now().Before(deadline) {
		changed := false
		for _, n := range env.Real {
			_, total, err := flowsPerTable(ctx, env.Cfg, n.Name)
			if err != nil {
				return err
			}
			if total != last[n.Name] {
				changed = true
				last[n.Name] = total
			}
		}
		if changed {
			stableSince = time.Now()
		} else if time.Since(stableSince) >= quiet {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	return fmt.Errorf("the agents' flows still changed after %v", timeout)
}

// realPodsRunning waits for the real test pods.
func realPodsRunning(ctx context.Context, c kubernetes.Interface, layout Layout, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, key := range layout.RealPods {
		ns, name, _ := strings.Cut(key, "/")
		for {
			p, err := c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("real pod %s not Running after %v", key, timeout)
			}
			time.Sleep(time.Second)
		}
	}
	return nil
}

// waitNodeReady waits until kwok reports node Ready (it assigns pod IPs
// only on nodes it has taken up).
func waitNodeReady(ctx context.Context, c kubernetes.Interface, node string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n, err := c.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err == nil {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s not Ready after %v (kwok): %v", node, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
