package e2e

import (
	"context"
	"fmt"
	"maps"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weirnet/weir/pkg/localcluster"
)

// requireProxy skips t, saying why, unless the cluster runs the Service
// proxy mode want (WEIR_E2E_PROXY; make e2e PROXY=...).
func (s *suite) requireProxy(t *testing.T, want string) {
	t.Helper()
	if s.cfg.Proxy != want {
		t.Skipf("checks Weir's Service proxy in mode %s; the cluster runs --proxy %s (WEIR_E2E_PROXY=%s selects it)", want, s.cfg.Proxy, want)
	}
}

// proxyFixture is TestProxyCoexist's namespace: endpoints ep-a (node 1)
// and ep-b (node 2) of Service web, the client cli on node 1 (whose OVS
// does the load balancing), Service one of ep-a alone (hairpin) and
// Service none without endpoints.
type proxyFixture struct {
	ns             string
	epA, epB, cli  corev1.Pod
	web, one, none *corev1.Service
	node1          string
}

// The ports of the fixture's Services and of the test servers behind them.
const (
	proxyTCPPort, proxyUDPPort = 8080, 8081
	serverTCPPort, serverUDP   = 80, 81
)

func (s *suite) newProxyFixture(ctx context.Context, t *testing.T) *proxyFixture {
	t.Helper()
	f := &proxyFixture{ns: newNamespace(ctx, t, s, "proxy-e2e"), node1: s.cfg.NodeName(1)}
	for name, p := range map[string]struct {
		node   int
		labels map[string]string
	}{
		"ep-a": {1, map[string]string{"app": "proxy", "pod": "ep-a", "svc": "web"}},
		"ep-b": {2, map[string]string{"app": "proxy", "pod": "ep-b", "svc": "web"}},
		"cli":  {1, map[string]string{"app": "proxy", "pod": "cli"}},
	} {
		if _, err := s.client.CoreV1().Pods(f.ns).Create(ctx, localcluster.TestServerPod(f.ns, name, s.cfg.NodeName(p.node), p.labels), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pods, err := localcluster.WaitPodsRunning(ctx, s.client, f.ns, "app=proxy", 3, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		switch p.Name {
		case "ep-a":
			f.epA = p
		case "ep-b":
			f.epB = p
		case "cli":
			f.cli = p
		}
	}
	policy := corev1.IPFamilyPolicySingleStack
	if s.cfg.DualStack() {
		policy = corev1.IPFamilyPolicyRequireDualStack
	}
	mk := func(name string, typ corev1.ServiceType, selector map[string]string) *corev1.Service {
		svc, err := s.client.CoreV1().Services(f.ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
			Spec: corev1.ServiceSpec{
				Type: typ, Selector: selector, IPFamilyPolicy: &policy,
				Ports: []corev1.ServicePort{
					{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: proxyTCPPort, TargetPort: intstr.FromInt32(serverTCPPort)},
					{Name: "udp", Protocol: corev1.ProtocolUDP, Port: proxyUDPPort, TargetPort: intstr.FromInt32(serverUDP)},
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	f.web = mk("web", corev1.ServiceTypeNodePort, map[string]string{"svc": "web"})
	f.one = mk("one", corev1.ServiceTypeClusterIP, map[string]string{"pod": "ep-a"})
	f.none = mk("none", corev1.ServiceTypeClusterIP, map[string]string{"pod": "nobody"})
	return f
}

// clusterIP returns svc's ClusterIP of family fam.
func clusterIP(t *testing.T, svc *corev1.Service, fam corev1.IPFamily) string {
	t.Helper()
	for _, ip := range svc.Spec.ClusterIPs {
		if famOf(ip) == fam {
			return ip
		}
	}
	t.Fatalf("service %s/%s has no %s ClusterIP (%v)", svc.Namespace, svc.Name, fam, svc.Spec.ClusterIPs)
	return ""
}

// svcGroup is what a node's OVS does with one frontend: the ServiceLB flow
// matching it (its packet count) and the select group it sends to, with
// each bucket's DNAT endpoint (HOST:PORT, an IPv6 host in brackets) and
// packet count as `ovs-ofctl dump-group-stats` reports them.
type svcGroup struct {
	id          int
	flowPackets uint64
	buckets     map[string]uint64
}

var (
	groupActionRE = regexp.MustCompile(`actions=group:(\d+)`)
	nPacketsRE    = regexp.MustCompile(`n_packets=(\d+)`)
	bucketNATRE   = regexp.MustCompile(`bucket_id:(\d+),.*nat\(dst=([^)]+)\)`)
	bucketStatsRE = regexp.MustCompile(`bucket(\d+):packet_count=(\d+)`)
)

// serviceGroup reads node's ServiceLB flow for frontend ip:port over proto
// ("tcp" or "udp") and the group it sends to.
func (s *suite) serviceGroup(ctx context.Context, node, proto, ip string, port int32) (svcGroup, error) {
	var g svcGroup
	flows, err := s.nodeExec(ctx, node, "ovs-ofctl", "-O", "OpenFlow15", "dump-flows", "br-int", "table=ServiceLB")
	if err != nil {
		return g, err
	}
	match := proto
	if famOf(ip) == corev1.IPv6Protocol {
		match += "6"
	}
	dst := regexp.MustCompile(`_dst=` + regexp.QuoteMeta(ip) + `[ ,]`)
	portRE := regexp.MustCompile(`tp_dst=` + strconv.Itoa(int(port)) + `[ ,]`)
	protoRE := regexp.MustCompile(`[ ,]` + match + `,`)
	var line string
	for l := range strings.SplitSeq(flows, "\n") {
		if dst.MatchString(l) && portRE.MatchString(l) && protoRE.MatchString(l) {
			if line != "" {
				return g, fmt.Errorf("two ServiceLB flows on %s for %s %s:%d:\n%s\n%s", node, proto, ip, port, line, l)
			}
			line = l
		}
	}
	if line == "" {
		return g, fmt.Errorf("no ServiceLB flow on %s for %s %s:%d", node, proto, ip, port)
	}
	m := groupActionRE.FindStringSubmatch(line)
	if m == nil {
		return g, fmt.Errorf("ServiceLB flow on %s for %s %s:%d sends to no group: %s", node, proto, ip, port, line)
	}
	g.id, _ = strconv.Atoi(m[1])
	if m := nPacketsRE.FindStringSubmatch(line); m != nil {
		g.flowPackets, _ = strconv.ParseUint(m[1], 10, 64)
	}
	groups, err := s.nodeExec(ctx, node, "ovs-ofctl", "-O", "OpenFlow15", "dump-groups", "br-int")
	if err != nil {
		return g, err
	}
	stats, err := s.nodeExec(ctx, node, "ovs-ofctl", "-O", "OpenFlow15", "dump-group-stats", "br-int")
	if err != nil {
		return g, err
	}
	prefix := fmt.Sprintf("group_id=%d,", g.id)
	endpoints := map[string]string{} // bucket ID -> endpoint
	for l := range strings.SplitSeq(groups, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), prefix) {
			continue
		}
		for _, b := range strings.Split(l, "bucket=")[1:] {
			if m := bucketNATRE.FindStringSubmatch(b); m != nil {
				endpoints[m[1]] = m[2]
			}
		}
	}
	if len(endpoints) == 0 {
		return g, fmt.Errorf("group %d on %s (for %s %s:%d) has no DNAT buckets:\n%s", g.id, node, proto, ip, port, groups)
	}
	g.buckets = map[string]uint64{}
	for ep := range maps.Values(endpoints) {
		g.buckets[ep] = 0
	}
	for l := range strings.SplitSeq(stats, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), prefix) {
			continue
		}
		for _, m := range bucketStatsRE.FindAllStringSubmatch(l, -1) {
			n, _ := strconv.ParseUint(m[2], 10, 64)
			if ep, ok := endpoints[m[1]]; ok {
				g.buckets[ep] += n
			}
		}
	}
	return g, nil
}

// endpointsOf returns the group endpoints (HOST:PORT) the pods serve port
// at, for family fam.
func endpointsOf(t *testing.T, fam corev1.IPFamily, port int, pods ...corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, net.JoinHostPort(mustPodIP(t, p, fam), strconv.Itoa(port)))
	}
	return out
}

// waitGroup waits until node's group for the frontend holds exactly the
// endpoints want, and returns it.
func (s *suite) waitGroup(ctx context.Context, node, proto, ip string, port int32, want []string, timeout time.Duration) (svcGroup, error) {
	var g svcGroup
	err := eventually(timeout, func() error {
		var err error
		if g, err = s.serviceGroup(ctx, node, proto, ip, port); err != nil {
			return err
		}
		if len(g.buckets) != len(want) {
			return fmt.Errorf("group %d has endpoints %v, want %v", g.id, g.buckets, want)
		}
		for _, ep := range want {
			if _, ok := g.buckets[ep]; !ok {
				return fmt.Errorf("group %d has endpoints %v, want %v", g.id, g.buckets, want)
			}
		}
		return nil
	})
	return g, err
}

// waitBucketCounts waits until each bucket of node's group for the
// frontend counted, since before, at least want[endpoint] packets (and at
// least one): OVS credits the connections that follow the first one of a
// datapath flow to the group when its revalidators read the datapath's
// counters, a moment later (the counts of one run were about half the
// connections right after them, exact a few seconds on).
func (s *suite) waitBucketCounts(ctx context.Context, node, proto, ip string, port int32, before svcGroup, want map[string]int) (svcGroup, error) {
	var g svcGroup
	err := eventually(5*time.Second, func() error {
		var err error
		if g, err = s.serviceGroup(ctx, node, proto, ip, port); err != nil {
			return err
		}
		if g.id != before.id {
			return fmt.Errorf("the group of %s changed from %d to %d during the probes", ip, before.id, g.id)
		}
		for ep, n := range want {
			if d := g.buckets[ep] - before.buckets[ep]; d == 0 || d < uint64(n) {
				return fmt.Errorf("group %d bucket %s counted %d packets for %d connections answered by its endpoint", g.id, ep, d, n)
			}
		}
		return nil
	})
	return g, err
}

// probeMany makes n concurrent connections (UDP: exchanges, each from its
// own socket) from pod to hostport and returns the answers by serving pod
// ("" counts failures) and the first failure's reason.
func (s *suite) probeMany(ctx context.Context, pod corev1.Pod, proto, hostport string, n int, timeout time.Duration) (map[string]int, string, error) {
	targets := make([]string, n)
	for i := range targets {
		targets[i] = proto + ":" + hostport
	}
	out, err := s.podRun(ctx, pod.Namespace+"/"+pod.Name, s.bin, "probe-matrix", "--targets", strings.Join(targets, ","), "--timeout", timeout.String())
	if err != nil {
		return nil, "", err
	}
	got := map[string]int{}
	var reason string
	for l := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 4 && f[2] == "ok":
			got[f[3]]++
		case len(f) >= 3 && f[2] == "fail":
			got[""]++
			if reason == "" {
				reason = strings.Join(f[3:], " ")
			}
		}
	}
	return got, reason, nil
}

// TestProxyCoexist: with --proxy coexist, the client node's OVS
// load-balances pods' Service traffic (docs/proxy.md): ClusterIP over TCP
// and UDP per family reaches both endpoints and the Service's select
// group counted them (so OVS, not kube-proxy, chose them); a pod reaches
// itself through its Service (hairpin); a Service without endpoints
// refuses at once; a pod reaches a NodePort on its node's IPs (in OVS)
// and on the other node's; egress NetworkPolicy applies to the endpoint
// after DNAT; an endpoint removed from the Service gets no new
// connections.
func TestProxyCoexist(t *testing.T) {
	s := need(t)
	s.requireProxy(t, localcluster.ProxyCoexist)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	f := s.newProxyFixture(ctx, t)
	protos := []struct {
		name   string
		port   int32
		target int
	}{{"tcp", proxyTCPPort, serverTCPPort}, {"udp", proxyUDPPort, serverUDP}}
	both := func(fam corev1.IPFamily, target int) []string { return endpointsOf(t, fam, target, f.epA, f.epB) }

	t.Run("ClusterIP", func(t *testing.T) {
		for _, fam := range allFamilies {
			for _, pr := range protos {
				t.Run(string(fam)+"/"+pr.name, func(t *testing.T) {
					s.requireFamily(t, fam)
					vip := clusterIP(t, f.web, fam)
					before, err := s.waitGroup(ctx, f.node1, pr.name, vip, pr.port, both(fam, pr.target), 60*time.Second)
					if err != nil {
						t.Fatalf("the Service's group on %s: %v", f.node1, err)
					}
					const n = 30
					got, reason, err := s.probeMany(ctx, f.cli, pr.name, net.JoinHostPort(vip, strconv.Itoa(int(pr.port))), n, 2*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					t.Logf("%d %s connections to %s: answers %v", n, pr.name, vip, got)
					if got[""] > 0 {
						t.Errorf("%d of %d connections failed (%s)", got[""], n, reason)
					}
					if got["ep-a"] == 0 || got["ep-b"] == 0 {
						t.Errorf("answers %v: want both ep-a and ep-b", got)
					}
					// Only a connection's first packet passes the group:
					// each bucket counts at least its endpoint's answers.
					want := map[string]int{}
					names := map[string]string{}
					for i, name := range []string{"ep-a", "ep-b"} {
						ep := both(fam, pr.target)[i]
						want[ep], names[ep] = got[name], name
					}
					after, err := s.waitBucketCounts(ctx, f.node1, pr.name, vip, pr.port, before, want)
					for ep, name := range names {
						t.Logf("group %d bucket %s (%s): %d packets during the probes", after.id, ep, name, after.buckets[ep]-before.buckets[ep])
					}
					if err != nil {
						t.Errorf("%v: OVS did not balance these connections", err)
					}
				})
			}
		}
	})

	t.Run("Hairpin", func(t *testing.T) {
		for _, fam := range allFamilies {
			for _, pr := range protos {
				t.Run(string(fam)+"/"+pr.name, func(t *testing.T) {
					s.requireFamily(t, fam)
					vip := clusterIP(t, f.one, fam)
					ep := endpointsOf(t, fam, pr.target, f.epA)
					before, err := s.waitGroup(ctx, f.node1, pr.name, vip, pr.port, ep, 60*time.Second)
					if err != nil {
						t.Fatalf("the Service's group on %s: %v", f.node1, err)
					}
					got, reason, err := s.probeMany(ctx, f.epA, pr.name, net.JoinHostPort(vip, strconv.Itoa(int(pr.port))), 5, 2*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					if got["ep-a"] != 5 {
						t.Errorf("ep-a -> its own Service %s %s: answers %v (first failure: %s), want 5 from ep-a", vip, pr.name, got, reason)
					}
					if _, err := s.waitBucketCounts(ctx, f.node1, pr.name, vip, pr.port, before, map[string]int{ep[0]: got["ep-a"]}); err != nil {
						t.Errorf("hairpin connections: %v", err)
					}
				})
			}
		}
	})

	t.Run("NoEndpoints", func(t *testing.T) {
		for _, fam := range allFamilies {
			for _, pr := range protos {
				t.Run(string(fam)+"/"+pr.name, func(t *testing.T) {
					s.requireFamily(t, fam)
					target := net.JoinHostPort(clusterIP(t, f.none, fam), strconv.Itoa(int(pr.port)))
					// kube-proxy's reject rule may lag the Service's creation.
					var took time.Duration
					var last string
					err := eventually(30*time.Second, func() error {
						start := time.Now()
						out, err := s.podRun(ctx, "proxy-e2e/cli", s.bin, "probe", "--proto", pr.name, "--to", target, "--timeout", "3s")
						took, last = time.Since(start), out
						if err == nil {
							return fmt.Errorf("answered %q", out)
						}
						if !strings.Contains(out, "connection refused") {
							return fmt.Errorf("not refused after %v: %s", took, out)
						}
						return nil
					})
					if err != nil {
						t.Fatalf("cli -> %s %s (no endpoints): %v", pr.name, target, err)
					}
					// The probe runs through two nsenters; a timeout would take 3s.
					if took > 1500*time.Millisecond {
						t.Errorf("cli -> %s %s refused only after %v: %s", pr.name, target, took, last)
					}
					t.Logf("cli -> %s %s: refused in %v (probe process included)", pr.name, target, took.Round(time.Millisecond))
				})
			}
		}
	})

	t.Run("NodePort", func(t *testing.T) {
		nodes := map[string]*corev1.Node{}
		for _, i := range []int{1, 2} {
			n, err := s.client.CoreV1().Nodes().Get(ctx, s.cfg.NodeName(i), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			nodes[n.Name] = n
		}
		for _, fam := range allFamilies {
			for _, pr := range protos {
				t.Run(string(fam)+"/"+pr.name, func(t *testing.T) {
					s.requireFamily(t, fam)
					var nodePort int32
					for _, p := range f.web.Spec.Ports {
						if p.Name == pr.name {
							nodePort = p.NodePort
						}
					}
					for name, n := range nodes {
						var ip string
						for _, a := range n.Status.Addresses {
							if a.Type == corev1.NodeInternalIP && famOf(a.Address) == fam {
								ip = a.Address
							}
						}
						if ip == "" {
							t.Fatalf("node %s has no %s InternalIP: %v", name, fam, n.Status.Addresses)
						}
						var before svcGroup
						// On the client's own node's IPs the NodePort is
						// balanced in OVS; the other node's are kube-proxy's
						// there. The Service's ClusterIP flows exist by now,
						// so its NodePort flows should too.
						local := name == f.node1
						if local {
							var err error
							if before, err = s.waitGroup(ctx, f.node1, pr.name, ip, nodePort, both(fam, pr.target), 20*time.Second); err != nil {
								t.Errorf("the NodePort's group on %s: %v", f.node1, err)
								local = false // still probe: does the NodePort answer at all?
							}
						}
						target := net.JoinHostPort(ip, strconv.Itoa(int(nodePort)))
						got, reason, err := s.probeMany(ctx, f.cli, pr.name, target, 10, 2*time.Second)
						if err != nil {
							t.Fatal(err)
						}
						t.Logf("cli -> NodePort %s on %s: answers %v", target, name, got)
						if got["ep-a"]+got["ep-b"] != 10 {
							t.Errorf("cli -> NodePort %s %s on %s: answers %v (first failure: %s), want 10 from ep-a or ep-b", pr.name, target, name, got, reason)
						}
						if !local {
							continue
						}
						var d uint64
						err = eventually(5*time.Second, func() error {
							after, err := s.serviceGroup(ctx, f.node1, pr.name, ip, nodePort)
							if err != nil {
								return err
							}
							if d = after.flowPackets - before.flowPackets; d < 10 {
								return fmt.Errorf("ServiceLB flow for NodePort %s on %s counted %d packets for 10 connections: not balanced in OVS", target, name, d)
							}
							return nil
						})
						if err != nil {
							t.Error(err)
						}
					}
				})
			}
		}
	})

	t.Run("EgressPolicyAfterDNAT", func(t *testing.T) {
		// cli may only talk to ep-a: connections the group sends to ep-b
		// must be dropped by egress policy, which sees the endpoint.
		np := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "cli-to-ep-a"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "cli"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress: []networkingv1.NetworkPolicyEgressRule{{
					To: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "ep-a"}}}},
				}},
			},
		}
		if _, err := s.client.NetworkingV1().NetworkPolicies(f.ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = s.client.NetworkingV1().NetworkPolicies(f.ns).Delete(context.Background(), np.Name, metav1.DeleteOptions{})
			// Later subtests need cli -> ep-b again.
			_ = eventually(30*time.Second, func() error {
				_, err := s.probe(ctx, "proxy-e2e/cli", "tcp", net.JoinHostPort(f.epB.Status.PodIP, "80"))
				return err
			})
		}()
		for _, fam := range allFamilies {
			for _, pr := range protos {
				t.Run(string(fam)+"/"+pr.name, func(t *testing.T) {
					s.requireFamily(t, fam)
					epB := net.JoinHostPort(mustPodIP(t, f.epB, fam), strconv.Itoa(pr.target))
					if err := eventually(30*time.Second, func() error {
						if _, err := s.probe(ctx, "proxy-e2e/cli", pr.name, epB); err == nil {
							return fmt.Errorf("cli still reaches ep-b at %s", epB)
						}
						return nil
					}); err != nil {
						t.Fatalf("policy not in effect: %v", err)
					}
					vip := clusterIP(t, f.web, fam)
					before, err := s.serviceGroup(ctx, f.node1, pr.name, vip, pr.port)
					if err != nil {
						t.Fatal(err)
					}
					const n = 16
					got, _, err := s.probeMany(ctx, f.cli, pr.name, net.JoinHostPort(vip, strconv.Itoa(int(pr.port))), n, time.Second)
					if err != nil {
						t.Fatal(err)
					}
					// ep-b's bucket must count some: wait for the counters to settle.
					after, _ := s.waitBucketCounts(ctx, f.node1, pr.name, vip, pr.port, before, map[string]int{epB: 1})
					toB := after.buckets[epB] - before.buckets[epB]
					t.Logf("%d connections to %s: answers %v; the group sent %d to ep-b", n, vip, got, toB)
					if got["ep-b"] != 0 {
						t.Errorf("%d connections through the ClusterIP reached ep-b, which egress policy denies", got["ep-b"])
					}
					if got["ep-a"] == 0 {
						t.Errorf("no connection reached ep-a (answers %v)", got)
					}
					// Without this the test could pass by the group never
					// choosing ep-b.
					if toB == 0 || got[""] == 0 {
						t.Errorf("the group sent %d connections to ep-b and %d failed: the policy's effect on DNATed connections was not exercised", toB, got[""])
					}
				})
			}
		}
	})

	// Last: it takes ep-b out of Service web.
	t.Run("EndpointScaleDown", func(t *testing.T) {
		patch := func(v any) {
			t.Helper()
			b := fmt.Appendf(nil, `{"metadata":{"labels":{"svc":%s}}}`, v)
			if _, err := s.client.CoreV1().Pods(f.ns).Patch(ctx, "ep-b", types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		patch("null")
		defer patch(`"web"`)
		for _, fam := range allFamilies {
			for _, pr := range protos {
				t.Run(string(fam)+"/"+pr.name, func(t *testing.T) {
					s.requireFamily(t, fam)
					vip := clusterIP(t, f.web, fam)
					if _, err := s.waitGroup(ctx, f.node1, pr.name, vip, pr.port, endpointsOf(t, fam, pr.target, f.epA), 60*time.Second); err != nil {
						t.Fatalf("ep-b not removed from the group: %v", err)
					}
					const n = 20
					got, reason, err := s.probeMany(ctx, f.cli, pr.name, net.JoinHostPort(vip, strconv.Itoa(int(pr.port))), n, 2*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					if got["ep-a"] != n {
						t.Errorf("%d new connections after ep-b left the Service: answers %v (first failure: %s), want all from ep-a", n, got, reason)
					}
				})
			}
		}
	})
}
