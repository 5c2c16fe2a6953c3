package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/weirnet/weir/pkg/localcluster"
)

// Address plan of the simulated part of the cluster (all inside
// clusterCIDR, none overlapping the real nodes' /24s from its start).
var (
	kwokCIDRBase   = netip.MustParseAddr("10.160.0.0") // node i: 10.160.0.0/24 + i
	extraCIDRBase  = netip.MustParseAddr("10.190.0.0") // nodes added while measuring
	kwokIPBase     = netip.MustParseAddr("172.20.0.1")
	extraNodeIPNet = netip.MustParseAddr("172.21.0.1")
)

// kwokTaint keeps ordinary pods (CoreDNS, tests) off the simulated nodes;
// the generated pods tolerate it.
var kwokTaint = corev1.Taint{Key: "kwok.x-k8s.io/node", Value: "fake", Effect: corev1.TaintEffectNoSchedule}

// createWorkers is how many creates are in flight. Measured at S1 on 2
// cores, 32 is where the API server, not the harness, limits the rate.
const createWorkers = 32

func nsName(i int) string  { return fmt.Sprintf("scale-%04d", i) }
func podName(j int) string { return fmt.Sprintf("p-%04d", j) }
func appLabel(k int) string {
	return fmt.Sprintf("app-%d", k)
}
func teamLabel(i int) string { return fmt.Sprintf("team-%d", i%Teams) }
func envLabel(i int) string {
	if i%2 == 0 {
		return "prod"
	}
	return "dev"
}

// nthPrefix is the i-th /24 after base.
func nthPrefix(base netip.Addr, i int) netip.Prefix {
	b := base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i) << 8
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 24)
}

// nthNodeIP is the i-th node address after base, skipping .0 and .255
// (250 per /24).
func nthNodeIP(base netip.Addr, i int) netip.Addr {
	b := base.As4()
	b[2] += byte(i / 250)
	b[3] = byte(i%250) + 1
	return netip.AddrFrom4(b)
}

func kwokNode(name string, cidr netip.Prefix, ip netip.Addr) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels: map[string]string{KwokNodeLabel: KwokNodeValue, ScaleLabel: "true",
				"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"},
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
		Spec: corev1.NodeSpec{PodCIDR: cidr.String(), PodCIDRs: []string{cidr.String()}, Taints: []corev1.Taint{kwokTaint}},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()},
				{Type: corev1.NodeHostName, Address: name}},
			Allocatable: corev1.ResourceList{corev1.ResourcePods: mustQuantity("1000")},
			Capacity:    corev1.ResourceList{corev1.ResourcePods: mustQuantity("1000")},
		},
	}
}

func namespace(i int) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(i), Labels: map[string]string{
		"team": teamLabel(i), "env": envLabel(i), ScaleLabel: "true"}}}
}

// kwokPod is pod j of a namespace on a simulated node: labels app and tier,
// named ports http and metrics, no real container.
func kwokPod(ns, name, node, app string, j int) *corev1.Pod {
	tier := "web"
	if j%2 == 1 {
		tier = "db"
	}
	zero := int64(0)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels: map[string]string{"app": app, "tier": tier, ScaleLabel: "true"}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: &zero,
			Tolerations:                   []corev1.Toleration{{Key: kwokTaint.Key, Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{Name: "app", Image: "fake.invalid/app",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
					{Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}}}},
		},
	}
}

var (
	tcp     = corev1.ProtocolTCP
	udp     = corev1.ProtocolUDP
	httpNP  = intstr.FromString("http")
	metrics = intstr.FromInt32(9090)
	dns     = intstr.FromInt32(53)
)

func appSelector(app string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
}

// policies are the PoliciesPerNamespace NetworkPolicies of namespace i.
func policies(i int) []*networkingv1.NetworkPolicy {
	ns := nsName(i)
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{ScaleLabel: "true"}}
	}
	ingress := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	nps := []*networkingv1.NetworkPolicy{{
		ObjectMeta: meta("default-deny-ingress"),
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: ingress},
	}}
	for k := 0; k < 6; k++ {
		nps = append(nps, &networkingv1.NetworkPolicy{ObjectMeta: meta(fmt.Sprintf("app-%d-from-app-%d", k, k+1)),
			Spec: networkingv1.NetworkPolicySpec{PodSelector: *appSelector(appLabel(k)), PolicyTypes: ingress,
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: appSelector(appLabel(k + 1))}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &httpNP}}}}}})
	}
	nps = append(nps,
		&networkingv1.NetworkPolicy{ObjectMeta: meta("ns-team"),
			Spec: networkingv1.NetworkPolicySpec{PodSelector: *appSelector("app-0"), PolicyTypes: ingress,
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": teamLabel(i)}},
					PodSelector:       appSelector("app-1")}}}}}},
		&networkingv1.NetworkPolicy{ObjectMeta: meta("ipblock"),
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: ingress,
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8",
						Except: []string{"10.160.0.0/16"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &metrics}}}}}},
		&networkingv1.NetworkPolicy{ObjectMeta: meta("egress-prod"),
			Spec: networkingv1.NetworkPolicySpec{PodSelector: *appSelector("app-0"),
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress: []networkingv1.NetworkPolicyEgressRule{
					{To: []networkingv1.NetworkPolicyPeer{{
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}},
						PodSelector:       appSelector("app-2")}},
						Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &httpNP}}},
					{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &dns}}},
				}}})
	return nps
}

// realPod is a test-server pod on a real worker with the generated pods'
// labels and named ports, so the policies of its namespace apply to it.
func realPod(ns, name, node string) *corev1.Pod {
	p := localcluster.TestServerPod(ns, name, node, map[string]string{"app": "app-0", "tier": "web", ScaleLabel: "true"}, 8080, 9090)
	for i := range p.Spec.Containers[0].Ports {
		switch p.Spec.Containers[0].Ports[i].Name {
		case "tcp-8080":
			p.Spec.Containers[0].Ports[i].Name = "http"
		case "tcp-9090":
			p.Spec.Containers[0].Ports[i].Name = "metrics"
		}
	}
	return p
}

// parallel runs f(0..n-1) on createWorkers goroutines and returns the
// first error.
func parallel(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for w := 0; w < createWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return firstErr
}

// ignoreExists makes a create idempotent (a rerun against a kept cluster).
func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// generate creates the scenario's nodes, namespaces, pods, policies and real
// pods, in that order.
func generate(ctx context.Context, c kubernetes.Interface, env Env, s Scenario, log func(string, ...any)) (Layout, error) {
	start := time.Now()
	l := Layout{Scenario: s}
	for i := 0; i < s.Nodes; i++ {
		l.KwokNodes = append(l.KwokNodes, KwokNode{Name: fmt.Sprintf("kwok-%04d", i),
			PodCIDR: nthPrefix(kwokCIDRBase, i), InternalIP: nthNodeIP(kwokIPBase, i)})
	}
	for i := 0; i < s.Namespaces; i++ {
		l.Namespaces = append(l.Namespaces, nsName(i))
	}
	step := func(what string, n int, f func(ctx context.Context, i int) error) error {
		t := time.Now()
		if err := parallel(ctx, n, f); err != nil {
			return fmt.Errorf("creating %s: %w", what, err)
		}
		log("created %d %s in %.1fs (%.0f/s)", n, what, time.Since(t).Seconds(), float64(n)/time.Since(t).Seconds())
		return nil
	}
	if err := step("nodes", len(l.KwokNodes), func(ctx context.Context, i int) error {
		n := l.KwokNodes[i]
		_, err := c.CoreV1().Nodes().Create(ctx, kwokNode(n.Name, n.PodCIDR, n.InternalIP), metav1.CreateOptions{})
		return ignoreExists(err)
	}); err != nil {
		return l, err
	}
	if err := step("namespaces", s.Namespaces, func(ctx context.Context, i int) error {
		_, err := c.CoreV1().Namespaces().Create(ctx, namespace(i), metav1.CreateOptions{})
		return ignoreExists(err)
	}); err != nil {
		return l, err
	}
	perNS := s.Pods / s.Namespaces
	if err := step("pods", s.Pods, func(ctx context.Context, i int) error {
		ns, j := i/perNS, i%perNS
		node := l.KwokNodes[i%len(l.KwokNodes)].Name
		_, err := c.CoreV1().Pods(nsName(ns)).Create(ctx, kwokPod(nsName(ns), podName(j), node, appLabel(j%Apps), j), metav1.CreateOptions{})
		return ignoreExists(err)
	}); err != nil {
		return l, err
	}
	if err := step("policies", s.Namespaces*PoliciesPerNamespace, func(ctx context.Context, i int) error {
		np := policies(i / PoliciesPerNamespace)[i%PoliciesPerNamespace]
		_, err := c.NetworkingV1().NetworkPolicies(np.Namespace).Create(ctx, np, metav1.CreateOptions{})
		return ignoreExists(err)
	}); err != nil {
		return l, err
	}
	var workers []RealNode
	for _, n := range env.Real {
		if n.Worker {
			workers = append(workers, n)
		}
	}
	for i := 0; i < ActiveNamespaces && i < s.Namespaces; i++ {
		for _, w := range workers {
			p := realPod(nsName(i), "real-"+w.Name, w.Name)
			if _, err := c.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); ignoreExists(err) != nil {
				return l, fmt.Errorf("creating real pod: %w", err)
			}
			l.RealPods = append(l.RealPods, p.Namespace+"/"+p.Name)
		}
	}
	l.Created = time.Since(start)
	return l, nil
}

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }
