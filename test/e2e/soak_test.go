package e2e

// Long fault tests (make soak: WEIR_SOAK=1): the API server and etcd down
// for 60 s, a rolling upgrade of the agent DaemonSet and back under
// traffic, and ten minutes of random churn and faults.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weirnet/weir/pkg/localcluster"
	"github.com/weirnet/weir/test/testroot"
)

// isolateRole is a policy that makes pods with role=ROLE accept nothing.
func isolateRole(ns, name, role string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": role}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
}

// firstIsolated probes target from `from` every 200 ms from now on and
// sends the time of the first probe that got no answer (or nothing after
// timeout).
func (s *suite) firstIsolated(from, target podRef, timeout time.Duration) <-chan time.Time {
	c := make(chan time.Time, 1)
	go func() {
		defer close(c)
		end := time.Now().Add(timeout)
		for time.Now().Before(end) {
			at := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := s.probeIn(ctx, from, "tcp", net.JoinHostPort(target.ip, "80"))
			cancel()
			if err != nil {
				c <- at
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	return c
}

// cniDirect runs the node's CNI binary (/opt/cni/bin/weir) as the runtime
// would, with the node's network configuration, for a made-up container in
// netns (a path in the node), and returns its output, error and duration.
func (s *suite) cniDirect(ctx context.Context, node, command, id, netns, podNS, podName string) (string, time.Duration, error) {
	raw, err := s.nodeExec(ctx, node, "sh", "-c", "cat /etc/cni/net.d/*.conflist")
	if err != nil {
		return "", 0, err
	}
	var list map[string]any
	if err := json.Unmarshal([]byte(raw), &list); err != nil {
		return "", 0, fmt.Errorf("the node's conflist: %w", err)
	}
	plugins, _ := list["plugins"].([]any)
	if len(plugins) == 0 {
		return "", 0, fmt.Errorf("the node's conflist has no plugins: %s", raw)
	}
	conf, _ := plugins[0].(map[string]any)
	conf["cniVersion"], conf["name"] = list["cniVersion"], list["name"]
	stdin, _ := json.Marshal(conf)
	cmd, err := localcluster.NodeExec(ctx, s.cfg, node, "env", "CNI_COMMAND="+command, "CNI_CONTAINERID="+id,
		"CNI_NETNS="+netns, "CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin",
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE="+podNS+";K8S_POD_NAME="+podName, "/opt/cni/bin/weir")
	if err != nil {
		return "", 0, err
	}
	cmd.Stdin = strings.NewReader(string(stdin))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), time.Since(start), err
}

// agentRestarts returns the restart counts of both weir-agent containers
// on the nodes.
func (s *suite) agentRestarts(ctx context.Context, t *testing.T, nodes ...int) map[string][2]int32 {
	t.Helper()
	m := map[string][2]int32{}
	for _, i := range nodes {
		p, err := s.agentPod(ctx, s.cfg.NodeName(i))
		if err != nil {
			t.Fatal(err)
		}
		_, a, _ := containerState(p, "ovs-agent")
		_, o, _ := containerState(p, "ovs")
		m[s.cfg.NodeName(i)] = [2]int32{a, o}
	}
	return m
}

// TestSoakAPIServerDown: kube-apiserver and etcd stop for 60 s. Existing
// traffic (TCP, 100/s UDP, same- and cross-node) goes on without loss and the
// isolated pod stays isolated throughout; a CNI ADD run directly on a node
// during the outage is recorded; a policy created 1 s before the outage and
// one created right after recovery are both in force within 5 s of
// recovery; no agent container restarts.
func TestSoakAPIServerDown(t *testing.T) {
	testroot.RequireSoak(t)
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	const outage = 60 * time.Second
	ns := newNamespace(ctx, t, s, "fault-api")
	pods := s.faultPods(ctx, t, ns,
		map[string]int{"cli": 1, "cli2": 2, "srv1": 1, "srv2": 2, "iso": 2, "late1": 2, "late2": 1},
		map[string]string{"cli": "cli", "cli2": "cli", "srv1": "srv", "srv2": "srv", "iso": "iso", "late1": "late1", "late2": "late2"})
	s.applyFaultPolicies(ctx, t, ns, pods["cli"], pods["iso"], pods["srv2"])
	for _, n := range []string{"late1", "late2"} {
		if _, err := s.probeIn(ctx, pods["cli"], "tcp", net.JoinHostPort(pods[n].ip, "80")); err != nil {
			t.Fatalf("%s does not answer before its policy: %v", n, err)
		}
	}
	before := s.agentRestarts(ctx, t, 1, 2)
	s.startEcho(t, pods["srv1"])
	s.startEcho(t, pods["srv2"])
	time.Sleep(300 * time.Millisecond)
	same := s.startStream(t, "same-node cli->srv1", pods["cli"], pods["srv1"])
	cross := s.startStream(t, "cross-node cli->srv2", pods["cli"], pods["srv2"])
	iso := s.startIsolationProbe([]podRef{pods["cli"], pods["cli2"]}, pods["iso"], pods["srv2"])

	// The CNI ADD's network namespace, made before the outage.
	node1 := s.cfg.NodeName(1)
	const ghostNetns, ghostID = "/run/netns/weir-fault-ghost", "faultghost000000000001"
	if _, err := s.nodeExec(ctx, node1, "ip", "netns", "add", "weir-fault-ghost"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c := context.Background()
		_, _, _ = s.cniDirect(c, node1, "DEL", ghostID, ghostNetns, ns, "ghost")
		_, _ = s.nodeExec(c, node1, "ip", "netns", "del", "weir-fault-ghost")
	})

	time.Sleep(2 * time.Second)
	if _, err := s.client.NetworkingV1().NetworkPolicies(ns).Create(ctx, isolateRole(ns, "isolate-late1", "late1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	late1Created := time.Now()
	late1 := s.firstIsolated(pods["cli"], pods["late1"], outage+30*time.Second)
	time.Sleep(time.Second)
	startCP, err := localcluster.StopControlPlane(s.cfg, "etcd", "kube-apiserver")
	if err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	restored := false
	t.Cleanup(func() {
		if !restored {
			if err := startCP(context.Background()); err != nil {
				t.Errorf("restarting the control plane: %v", err)
			}
		}
	})
	t.Logf("kube-apiserver and etcd stopped in %.1fs", time.Since(down).Seconds())
	if _, err := s.client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil {
		t.Fatal("the API server still answers after it was stopped")
	}

	time.Sleep(5 * time.Second)
	out, took, cniErr := s.cniDirect(ctx, node1, "ADD", ghostID, ghostNetns, ns, "ghost")
	t.Logf("CNI ADD on %s with the API server down: error %v after %.2fs; output: %s", node1, cniErr, took.Seconds(), out)

	time.Sleep(time.Until(down.Add(outage)))
	if err := startCP(ctx); err != nil {
		t.Fatal(err)
	}
	restored = true
	up := time.Now()
	t.Logf("API server down for %.1fs; ready again %.1fs after the restart began", up.Sub(down).Seconds(), time.Since(down.Add(outage)).Seconds())
	if _, err := s.client.NetworkingV1().NetworkPolicies(ns).Create(ctx, isolateRole(ns, "isolate-late2", "late2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	late2Created := time.Now()
	// Waited for long enough to measure how late it is, not only that it is.
	late2 := s.firstIsolated(pods["cli"], pods["late2"], 2*time.Minute)
	for _, c := range []struct {
		name    string
		created time.Time
		ch      <-chan time.Time
	}{{"policy created 1 s before the outage", late1Created, late1}, {"policy created right after recovery", late2Created, late2}} {
		at, ok := <-c.ch
		if !ok {
			t.Errorf("%s: not in force 2 min after recovery", c.name)
			continue
		}
		// Negative: in force before the API server came back.
		t.Logf("%s: in force %.1fs after it was created, %.1fs after recovery", c.name, at.Sub(c.created).Seconds(), at.Sub(up).Seconds())
		if at.Sub(up) > 5*time.Second {
			t.Errorf("%s: in force only %.1fs after recovery, want <= 5s", c.name, at.Sub(up).Seconds())
		}
	}
	time.Sleep(3 * time.Second)
	logStream(t, "API server outage", same)
	logStream(t, "API server outage", cross)
	logIsolation(t, "API server outage", iso)
	after := s.agentRestarts(ctx, t, 1, 2)
	for node, b := range before {
		t.Logf("%s: ovs-agent restarts %d -> %d, ovs %d -> %d", node, b[0], after[node][0], b[1], after[node][1])
		if after[node] != b {
			t.Errorf("%s: weir-agent containers restarted during the API outage", node)
		}
	}
	out, took, cniErr = s.cniDirect(ctx, node1, "DEL", ghostID, ghostNetns, ns, "ghost")
	t.Logf("CNI DEL of it after recovery: error %v after %.2fs; output: %s", cniErr, took.Seconds(), out)
}

// TestSoakAgentUpgrade: the DaemonSet rolls from weir-agent:dev with the
// cluster's configuration to weir-agent:upgrade (the same build under
// another tag, imported on every node) with a ConfigMap whose agent
// configuration has no serviceCIDR — a real option whose flow
// (pipeline.go: ClusterIP traffic skips egress policy) the new pipeline then
// lacks — and back, under traffic. Lost datagrams and broken TCP are
// counted; no new container may restart. Measured on the local cluster
// (netdev datapath): the rollout never completes — deleting node 1's old
// agent pod stops its ovs-vswitchd, which holds the node's underlay address
// on br-phy, so the node's kubelet cannot reach the API server to learn of
// the new pod ("no route to host", 0 of 3 pods updated after 4 min).
func TestSoakAgentUpgrade(t *testing.T) {
	testroot.RequireSoak(t)
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	ns := newNamespace(ctx, t, s, "fault-upgrade")
	pods := s.faultPods(ctx, t, ns,
		map[string]int{"cli": 1, "srv1": 1, "srv2": 2, "iso": 2},
		map[string]string{"cli": "cli", "srv1": "srv", "srv2": "srv", "iso": "iso"})
	s.applyFaultPolicies(ctx, t, ns, pods["cli"], pods["iso"], pods["srv2"])

	// The new image: the same build tagged weir-agent:upgrade on every node.
	nodes := []int{localcluster.ControlPlane, 1, 2}
	for _, i := range nodes {
		node := s.cfg.NodeName(i)
		refs, err := s.nodeExec(ctx, node, "ctr", "-a", "/run/containerd/containerd.sock", "-n", "k8s.io", "images", "ls", "-q")
		if err != nil {
			t.Fatal(err)
		}
		var src string
		for _, r := range strings.Fields(refs) {
			if strings.HasSuffix(r, "/weir-agent:dev") || r == "weir-agent:dev" {
				src = r
			}
		}
		if src == "" {
			t.Fatalf("no weir-agent:dev image on %s: %s", node, refs)
		}
		dst := strings.TrimSuffix(src, ":dev") + ":upgrade"
		if _, err := s.nodeExec(ctx, node, "ctr", "-a", "/run/containerd/containerd.sock", "-n", "k8s.io", "images", "tag", "--force", src, dst); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = s.nodeExec(context.Background(), node, "ctr", "-a", "/run/containerd/containerd.sock", "-n", "k8s.io", "images", "rm", dst)
		})
	}
	cms := s.client.CoreV1().ConfigMaps("kube-system")
	cm, err := cms.Get(ctx, "weir-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	up := cm.DeepCopy()
	up.ObjectMeta = metav1.ObjectMeta{Namespace: "kube-system", Name: "weir-config-upgrade"}
	changed := 0
	for k, v := range up.Data {
		var lines []string
		for _, l := range strings.Split(v, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "serviceCIDR:") {
				changed++
				l = `serviceCIDR: ""`
			}
			lines = append(lines, l)
		}
		up.Data[k] = strings.Join(lines, "\n")
	}
	if changed != 1 {
		t.Fatalf("weir-config has %d serviceCIDR lines, want 1: %v", changed, cm.Data)
	}
	if _, err := cms.Create(ctx, up, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cms.Delete(context.Background(), up.Name, metav1.DeleteOptions{}) })

	dss := s.client.AppsV1().DaemonSets("kube-system")
	ds, err := dss.Get(ctx, "weir-agent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	original := ds.Spec.Template.DeepCopy()
	upgraded := original.DeepCopy()
	for _, cs := range [][]corev1.Container{upgraded.Spec.InitContainers, upgraded.Spec.Containers} {
		for i := range cs {
			cs[i].Image = strings.Replace(cs[i].Image, "weir-agent:dev", "weir-agent:upgrade", 1)
		}
	}
	for i := range upgraded.Spec.Volumes {
		if v := upgraded.Spec.Volumes[i].ConfigMap; v != nil && v.Name == "weir-config" {
			v.Name = up.Name
		}
	}
	rolled := false
	t.Cleanup(func() {
		if !rolled {
			_ = s.rollDaemonSet(context.Background(), original, 5*time.Minute)
		}
	})

	serviceFlows := func() int {
		out, _ := s.nodeExec(ctx, s.cfg.NodeName(1), "ovs-ofctl", "-O", "OpenFlow15", "dump-flows", "br-int")
		return len(linesMatching(out, addrRE(s.cfg.PrimaryServiceCIDR())))
	}
	s.startEcho(t, pods["srv1"])
	s.startEcho(t, pods["srv2"])
	time.Sleep(300 * time.Millisecond)
	for _, step := range []struct {
		name     string
		template *corev1.PodTemplateSpec
		flows    bool // the serviceCIDR flow is there afterwards
	}{{"upgrade to weir-agent:upgrade without serviceCIDR", upgraded, false}, {"back to weir-agent:dev", original, true}} {
		before := serviceFlows()
		same := s.startStream(t, "same-node cli->srv1", pods["cli"], pods["srv1"])
		cross := s.startStream(t, "cross-node cli->srv2", pods["cli"], pods["srv2"])
		iso := s.startIsolationProbe([]podRef{pods["cli"]}, pods["iso"], pods["srv2"])
		time.Sleep(2 * time.Second)
		began := time.Now()
		if err := s.rollDaemonSet(ctx, step.template, 6*time.Minute); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		t.Logf("%s: rolled out on %d nodes in %.1fs", step.name, len(nodes), time.Since(began).Seconds())
		time.Sleep(3 * time.Second)
		logStream(t, step.name, same)
		logStream(t, step.name, cross)
		logIsolation(t, step.name, iso)
		afterFlows := serviceFlows()
		t.Logf("%s: flows matching %s on %s: %d before, %d after", step.name, s.cfg.ServiceCIDR, s.cfg.NodeName(1), before, afterFlows)
		if (afterFlows > 0) != step.flows {
			t.Errorf("%s: %d serviceCIDR flows afterwards; the pipeline did not change as configured", step.name, afterFlows)
		}
		for _, i := range nodes {
			p, err := s.agentPod(ctx, s.cfg.NodeName(i))
			if err != nil {
				t.Fatal(err)
			}
			for _, cs := range p.Status.ContainerStatuses {
				if cs.RestartCount != 0 {
					t.Errorf("%s: container %s of the new agent pod on %s restarted %d times", step.name, cs.Name, s.cfg.NodeName(i), cs.RestartCount)
				}
			}
		}
	}
	rolled = true
}

// rollDaemonSet sets the weir-agent DaemonSet's pod template and waits
// until every node runs an available pod of it.
func (s *suite) rollDaemonSet(ctx context.Context, tmpl *corev1.PodTemplateSpec, timeout time.Duration) error {
	dss := s.client.AppsV1().DaemonSets("kube-system")
	ds, err := dss.Get(ctx, "weir-agent", metav1.GetOptions{})
	if err != nil {
		return err
	}
	ds.Spec.Template = *tmpl.DeepCopy()
	if ds, err = dss.Update(ctx, ds, metav1.UpdateOptions{}); err != nil {
		return err
	}
	gen := ds.Generation
	return eventually(timeout, func() error {
		d, err := dss.Get(ctx, "weir-agent", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !rolledOut(d, gen) {
			return fmt.Errorf("DaemonSet weir-agent: generation %d observed %d, desired %d updated %d available %d; nodes not Ready: %v",
				gen, d.Status.ObservedGeneration, d.Status.DesiredNumberScheduled, d.Status.UpdatedNumberScheduled, d.Status.NumberAvailable,
				s.notReadyNodes(ctx))
		}
		return nil
	})
}

// notReadyNodes names the nodes whose Ready condition is not True (with
// the netdev datapath a node whose ovs container is gone loses its underlay
// address, and with it the API server).
func (s *suite) notReadyNodes(ctx context.Context) []string {
	l, err := s.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, n := range l.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
				out = append(out, n.Name)
			}
		}
	}
	return out
}

func rolledOut(d *appsv1.DaemonSet, gen int64) bool {
	st := d.Status
	return st.ObservedGeneration >= gen && st.UpdatedNumberScheduled == st.DesiredNumberScheduled &&
		st.NumberAvailable == st.DesiredNumberScheduled && st.NumberUnavailable == 0
}

// TestSoak10Min: ten minutes of random faults and churn — pods deleted and
// created with random roles, the two policies deleted and created again,
// ovs-agent and ovs containers killed, node 3 joining and leaving — then
// every (pod, pod) TCP probe must match the policy evaluator
// (policy_eval_test.go) and every node must hold exactly one IP, OVS port and
// veth per pod (and `weirctl audit` be clean where it exists). WEIR_SOAK_SEED
// replays a run's sequence of actions.
func TestSoak10Min(t *testing.T) {
	testroot.RequireSoak(t)
	s := need(t)
	const soakFor = 10 * time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), soakFor+10*time.Minute)
	defer cancel()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("WEIR_SOAK_SEED"); v != "" {
		fmt.Sscan(v, &seed)
	}
	t.Logf("seed %d (WEIR_SOAK_SEED replays it)", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	ns := newNamespace(ctx, t, s, "fault-soak")
	roles := []string{"cli", "srv", "iso", "other"}
	node3 := false
	t.Cleanup(func() {
		if node3 {
			_ = localcluster.RemoveNode(context.Background(), s.cfg, 3)
		}
	})
	nodes := func() []int {
		if node3 {
			return []int{1, 2, 3}
		}
		return []int{1, 2}
	}
	podsClient := s.client.CoreV1().Pods(ns)
	createPod := func(name string) error {
		ns3 := nodes()
		p := localcluster.TestServerPod(ns, name, s.cfg.NodeName(ns3[rng.IntN(len(ns3))]),
			map[string]string{"app": "fault", "role": roles[rng.IntN(len(roles))]})
		_, err := podsClient.Create(ctx, p, metav1.CreateOptions{})
		return err
	}
	const pool = 6
	for i := range pool {
		if err := createPod(fmt.Sprintf("p%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := localcluster.WaitPodsRunning(ctx, s.client, ns, "app=fault", pool, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	policies := faultPolicies(ns)
	for _, np := range policies {
		if _, err := s.client.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	counts := map[string]int{}
	var mu sync.Mutex
	act := func(kind string, f func() error) {
		err := f()
		mu.Lock()
		counts[kind]++
		mu.Unlock()
		if err != nil {
			t.Errorf("%s: %v", kind, err)
		}
	}
	kill := func(container string) error {
		ns := nodes()
		node := s.cfg.NodeName(ns[rng.IntN(len(ns))])
		p, err := s.agentPod(ctx, node)
		if err != nil {
			return err
		}
		id, restarts, _ := containerState(p, container)
		if err := s.killContainer(ctx, node, id); err != nil {
			return err
		}
		// A container killed again and again waits out kubelet's crash-loop
		// back-off (10 s doubling to 5 min): seen, the 6th restart of an
		// ovs-agent not within 2 min.
		return s.waitContainerRestarted(ctx, node, container, restarts, 6*time.Minute)
	}
	end := time.Now().Add(soakFor)
	for time.Now().Before(end) {
		switch k := rng.IntN(10); {
		case k < 4:
			act("pod churn", func() error {
				name := fmt.Sprintf("p%d", rng.IntN(pool))
				var zero int64
				if err := podsClient.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
					return err
				}
				if err := eventually(time.Minute, func() error {
					if _, err := podsClient.Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
						return fmt.Errorf("pod %s not gone yet (%v)", name, err)
					}
					return nil
				}); err != nil {
					return err
				}
				return createPod(name)
			})
		case k < 6:
			act("policy churn", func() error {
				np := policies[rng.IntN(len(policies))]
				if err := s.client.NetworkingV1().NetworkPolicies(ns).Delete(ctx, np.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					return err
				}
				time.Sleep(time.Duration(rng.IntN(3000)) * time.Millisecond)
				_, err := s.client.NetworkingV1().NetworkPolicies(ns).Create(ctx, np.DeepCopy(), metav1.CreateOptions{})
				return err
			})
		case k < 7:
			act("agent kill", func() error { return kill("ovs-agent") })
		case k < 8:
			act("ovs kill", func() error { return kill("ovs") })
		default:
			act("node join/leave", func() error {
				if node3 {
					// Its pods go with it; recreate them elsewhere.
					l, err := podsClient.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + s.cfg.NodeName(3)})
					if err != nil {
						return err
					}
					if err := localcluster.RemoveNode(ctx, s.cfg, 3); err != nil {
						return err
					}
					node3 = false
					var zero int64
					for _, p := range l.Items {
						_ = podsClient.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
						_ = eventually(time.Minute, func() error {
							if _, err := podsClient.Get(ctx, p.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
								return fmt.Errorf("pod %s not gone", p.Name)
							}
							return nil
						})
						if err := createPod(p.Name); err != nil {
							return err
						}
					}
					return nil
				}
				if err := localcluster.AddNode(ctx, s.cfg, 3); err != nil {
					return err
				}
				node3 = true
				return localcluster.WaitReady(ctx, s.cfg, 3, 2*time.Minute)
			})
		}
		time.Sleep(time.Duration(2000+rng.IntN(3000)) * time.Millisecond)
	}
	t.Logf("actions in %v: %v", soakFor, counts)

	// Settle, then compare every probe with the evaluator.
	running, err := localcluster.WaitPodsRunning(ctx, s.client, ns, "app=fault", pool, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	nps, err := s.client.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	model := &evalModel{Namespaces: map[string]map[string]string{ns: {"kubernetes.io/metadata.name": ns}}, Policies: nps.Items}
	refs := map[string]podRef{}
	// Probed over the primary family (status.podIP's).
	fam := s.primaryFamily()
	for _, p := range running {
		ep := evalPod{Namespace: ns, Name: p.Name, Labels: p.Labels, IP: p.Status.PodIP, Node: p.Spec.NodeName}
		if fam == corev1.IPv6Protocol {
			ep.IP, ep.IP6 = "", p.Status.PodIP
		}
		model.Pods = append(model.Pods, ep)
		if refs[p.Name], err = s.resolvePod(ctx, ns, p.Name); err != nil {
			t.Fatal(err)
		}
	}
	mismatches, cells := 0, 0
	for _, src := range model.Pods {
		for _, dst := range model.Pods {
			if src.Name == dst.Name {
				continue
			}
			want, err := model.allowed(fam, src, dst, corev1.ProtocolTCP, 80)
			if err != nil {
				t.Fatal(err)
			}
			// Give a cell that disagrees a few seconds: policy realization
			// is asynchronous.
			var got bool
			for try := 0; try < 10; try++ {
				_, perr := s.probeIn(ctx, refs[src.Name], "tcp", net.JoinHostPort(dst.addr(fam), "80"))
				if got = perr == nil; got == want {
					break
				}
				time.Sleep(500 * time.Millisecond)
			}
			cells++
			if got != want {
				mismatches++
				t.Errorf("%s (role %s) -> %s (role %s) tcp/80: answered %v, the evaluator says %v",
					src.Name, src.Labels["role"], dst.Name, dst.Labels["role"], got, want)
			}
		}
	}
	t.Logf("after the soak: %d of %d probes match the evaluator", cells-mismatches, cells)
	for _, i := range nodes() {
		node := s.cfg.NodeName(i)
		err := eventually(30*time.Second, func() error { return s.nodeResources(ctx, t, node).check(s.podIPsOn(ctx, t, node)) })
		t.Logf("after the soak on %s: %s", node, s.nodeResources(ctx, t, node).summary())
		if err != nil {
			t.Error(err)
		}
		s.audit(ctx, t, node)
	}
}
