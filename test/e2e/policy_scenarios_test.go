package e2e

// The NetworkPolicy scenarios: each is a list of steps (apply or delete
// policies, change pod or namespace labels, add pods); after every step the
// observed matrix must equal the evaluator's.

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weirnet/weir/pkg/localcluster"
)

type npScenario struct {
	name  string
	steps []npStep
	// needs are the address families the scenario cannot be built
	// without (its ipBlocks name addresses of them); on a cluster lacking
	// one it skips.
	needs []corev1.IPFamily
	// after, if set, runs once every step is realized.
	after func(ctx context.Context, t *testing.T, e *npEnv)
	// around, if set, runs before the first step; the function it returns
	// runs after the last (also when a step failed).
	around func(ctx context.Context, t *testing.T, e *npEnv) (finish func())
}

// npStep is one change of a scenario.
type npStep struct {
	desc string
	// policies are created, or updated if they exist.
	policies func(e *npEnv) []*networkingv1.NetworkPolicy
	// deletePolicies are NS/NAME.
	deletePolicies []string
	// podLabels and nsLabels are merged into the labels of pods (NS/NAME)
	// and namespaces; an empty value removes the key.
	podLabels map[string]map[string]string
	nsLabels  map[string]map[string]string
	newPods   []npNewPod
	// unchanged declares that the step leaves the expected matrix as it was.
	unchanged bool
	// facts are hand-computed cells "FROM TO T80 ok|no", over every
	// family of the pods unless a family ends the fact ("... ok IPv6";
	// such a fact says nothing where the pods have no such address), the
	// evaluator's expectation must contain: they check the scenario means
	// what it says.
	facts []string
}

// npNewPod is a pod a step creates.
type npNewPod struct {
	ns, name, style string
	node            int
	labels          map[string]string
}

func (st npStep) run(ctx context.Context, e *npEnv) error {
	c := e.s.client
	if st.policies != nil {
		for _, np := range st.policies(e) {
			_, err := c.NetworkingV1().NetworkPolicies(np.Namespace).Create(ctx, np, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				var cur *networkingv1.NetworkPolicy
				if cur, err = c.NetworkingV1().NetworkPolicies(np.Namespace).Get(ctx, np.Name, metav1.GetOptions{}); err == nil {
					np.ResourceVersion = cur.ResourceVersion
					_, err = c.NetworkingV1().NetworkPolicies(np.Namespace).Update(ctx, np, metav1.UpdateOptions{})
				}
			}
			if err != nil {
				return fmt.Errorf("applying policy %s/%s: %w", np.Namespace, np.Name, err)
			}
		}
	}
	for _, key := range st.deletePolicies {
		ns, name, _ := strings.Cut(key, "/")
		if err := c.NetworkingV1().NetworkPolicies(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			return fmt.Errorf("deleting policy %s: %w", key, err)
		}
	}
	for key, l := range st.podLabels {
		ns, name, _ := strings.Cut(key, "/")
		p, err := c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		p.Labels = mergeLabels(p.Labels, l)
		if _, err := c.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("relabelling pod %s: %w", key, err)
		}
	}
	for ns, l := range st.nsLabels {
		n, err := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Labels = mergeLabels(n.Labels, l)
		if _, err := c.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("relabelling namespace %s: %w", ns, err)
		}
	}
	for _, np := range st.newPods {
		p := npPodSpec(np.ns, np.name, e.s.cfg.NodeName(np.node), np.style, np.labels)
		if _, err := c.CoreV1().Pods(np.ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating pod %s/%s: %w", np.ns, np.name, err)
		}
	}
	for _, np := range st.newPods {
		err := eventually(time.Minute, func() error {
			p, err := c.CoreV1().Pods(np.ns).Get(ctx, np.name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
				return fmt.Errorf("pod %s/%s is %s, IP %q", np.ns, np.name, p.Status.Phase, p.Status.PodIP)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func mergeLabels(cur, change map[string]string) map[string]string {
	out := maps.Clone(cur)
	if out == nil {
		out = map[string]string{}
	}
	for k, v := range change {
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// check verifies the step's facts against the expectation over fams.
func (st npStep) check(want map[npProbe]bool, fams []corev1.IPFamily) error {
	for _, f := range st.facts {
		ps, allowed, err := parseFact(f, fams)
		if err != nil {
			return err
		}
		for _, p := range ps {
			w, ok := want[p]
			if !ok {
				return fmt.Errorf("fact %q: no such probe in the matrix (%s)", f, p.fam)
			}
			if w != allowed {
				return fmt.Errorf("fact %q: the evaluator says allowed=%v over %s", f, w, p.fam)
			}
		}
	}
	return nil
}

// parseFact parses "FROM TO T80 ok|no [IPv4|IPv6]": the probe over the
// family given, or over every family of fams when none is; a family not in
// fams gives no probe.
func parseFact(f string, fams []corev1.IPFamily) ([]npProbe, bool, error) {
	fs := strings.Fields(f)
	if len(fs) < 4 || len(fs) > 5 || len(fs[2]) < 2 || (fs[3] != "ok" && fs[3] != "no") {
		return nil, false, fmt.Errorf("bad fact %q", f)
	}
	if len(fs) == 5 {
		fam := corev1.IPFamily(fs[4])
		if !slices.Contains(allFamilies, fam) {
			return nil, false, fmt.Errorf("bad fact %q: family %q", f, fs[4])
		}
		if !slices.Contains(fams, fam) {
			fams = nil
		} else {
			fams = []corev1.IPFamily{fam}
		}
	}
	proto := corev1.ProtocolTCP
	if fs[2][0] == 'U' {
		proto = corev1.ProtocolUDP
	}
	var port int32
	if _, err := fmt.Sscan(fs[2][1:], &port); err != nil {
		return nil, false, fmt.Errorf("bad fact %q: %w", f, err)
	}
	var out []npProbe
	for _, fam := range fams {
		out = append(out, npProbe{fam, fs[0], fs[1], proto, port})
	}
	return out, fs[3] == "ok", nil
}

// Policy construction helpers.

func sel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func selExpr(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func netpol(ns, name string, podSel *metav1.LabelSelector, types []networkingv1.PolicyType, in []networkingv1.NetworkPolicyIngressRule, out []networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: *podSel, PolicyTypes: types, Ingress: in, Egress: out},
	}
}

var (
	ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressOnly  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	bothTypes   = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
)

func from(ports []networkingv1.NetworkPolicyPort, peers ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyIngressRule {
	return []networkingv1.NetworkPolicyIngressRule{{From: peers, Ports: ports}}
}

func to(ports []networkingv1.NetworkPolicyPort, peers ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyEgressRule {
	return []networkingv1.NetworkPolicyEgressRule{{To: peers, Ports: ports}}
}

func podPeer(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: s}
}

func nsPeer(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: s}
}

func podNSPeer(pod, ns *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: pod, NamespaceSelector: ns}
}

func ipPeer(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

func proto(p corev1.Protocol) *corev1.Protocol { return &p }

// port is a numeric port; end > 0 makes it a range.
func port(p corev1.Protocol, n, end int32) networkingv1.NetworkPolicyPort {
	np := networkingv1.NetworkPolicyPort{Protocol: proto(p), Port: new(intstr.FromInt32(n))}
	if end > 0 {
		np.EndPort = &end
	}
	return np
}

func named(p corev1.Protocol, name string) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: proto(p), Port: new(intstr.FromString(name))}
}

func ports(ps ...networkingv1.NetworkPolicyPort) []networkingv1.NetworkPolicyPort { return ps }

// policies returns a fixed policy list as a step's policies.
func policies(nps ...*networkingv1.NetworkPolicy) func(*npEnv) []*networkingv1.NetworkPolicy {
	return func(*npEnv) []*networkingv1.NetworkPolicy { return nps }
}

// all is the empty selector, selecting everything.
func all() *metav1.LabelSelector { return &metav1.LabelSelector{} }

// allPeers is an ingress/egress rule list with one rule allowing everything.
var (
	allFrom = []networkingv1.NetworkPolicyIngressRule{{}}
	allTo   = []networkingv1.NetworkPolicyEgressRule{{}}
)

// hostPrefix is pod key's address of fam as a CIDR: a /32 or a /128.
func hostPrefix(e *npEnv, key string, fam corev1.IPFamily) string {
	if fam == corev1.IPv6Protocol {
		return e.pod(key).IP6 + "/128"
	}
	return e.pod(key).IP + "/32"
}

func npScenarios() []npScenario {
	return []npScenario{
		{name: "default deny ingress", steps: []npStep{{desc: "deny all ingress in x",
			policies: policies(netpol("x", "deny-in", all(), ingressOnly, nil, nil)),
			facts:    []string{"y/a x/a T80 no", "x/b x/a U81 no", "x/a y/a T80 ok"}}}},
		{name: "default deny egress", steps: []npStep{{desc: "deny all egress in x",
			policies: policies(netpol("x", "deny-out", all(), egressOnly, nil, nil)),
			facts:    []string{"x/a y/a T80 no", "x/a x/b U80 no", "y/a x/a T80 ok"}}}},
		{name: "default deny both", steps: []npStep{{desc: "deny ingress and egress in x",
			policies: policies(netpol("x", "deny-both", all(), bothTypes, nil, nil)),
			facts:    []string{"x/a y/a T80 no", "y/a x/a T80 no", "y/a z/a U81 ok"}}}},
		{name: "default deny ingress everywhere", steps: []npStep{{desc: "deny all ingress in x, y, z",
			policies: policies(netpol("x", "deny-in", all(), ingressOnly, nil, nil),
				netpol("y", "deny-in", all(), ingressOnly, nil, nil), netpol("z", "deny-in", all(), ingressOnly, nil, nil)),
			facts: []string{"y/a z/a T80 no", "z/c x/a U81 no"}}}},
		{name: "allow all ingress rule unions with deny", steps: []npStep{{desc: "deny x, allow everything into x/a with an empty rule",
			policies: policies(netpol("x", "deny-in", all(), ingressOnly, nil, nil),
				netpol("x", "allow-all-a", sel("pod", "a"), ingressOnly, allFrom, nil)),
			facts: []string{"z/c x/a U81 ok", "x/b x/a T80 ok", "x/a x/b T80 no"}}}},
		{name: "allow from same namespace", steps: []npStep{{desc: "x accepts only pods of x",
			policies: policies(netpol("x", "same-ns", all(), ingressOnly, from(nil, podPeer(all())), nil)),
			facts:    []string{"x/b x/a T80 ok", "y/b x/a T80 no"}}}},
		{name: "allow from namespace by label", steps: []npStep{{desc: "x accepts only namespace ns=y",
			policies: policies(netpol("x", "from-y", all(), ingressOnly, from(nil, nsPeer(sel("ns", "y"))), nil)),
			facts:    []string{"y/c x/a U80 ok", "z/c x/a U80 no", "x/b x/a U80 no"}}}},
		{name: "namespace selector expression", steps: []npStep{{desc: "x/a accepts namespaces ns NotIn (x)",
			policies: policies(netpol("x", "not-x", sel("pod", "a"), ingressOnly, from(nil, nsPeer(selExpr("ns", metav1.LabelSelectorOpNotIn, "x"))), nil)),
			facts:    []string{"y/c x/a U80 ok", "z/a x/a T81 ok", "x/b x/a T80 no"}}}},
		{name: "pod and namespace selector in one peer", steps: []npStep{{desc: "x/a accepts pod=b in ns=y only",
			policies: policies(netpol("x", "one-peer", sel("pod", "a"), ingressOnly, from(nil, podNSPeer(sel("pod", "b"), sel("ns", "y"))), nil)),
			facts:    []string{"y/b x/a T80 ok", "y/a x/a T80 no", "x/b x/a T80 no", "z/b x/a T80 no"}}}},
		{name: "pod and namespace selector as two peers", steps: []npStep{{desc: "x/a accepts ns=y, and pod=b of x",
			policies: policies(netpol("x", "two-peers", sel("pod", "a"), ingressOnly, from(nil, nsPeer(sel("ns", "y")), podPeer(sel("pod", "b"))), nil)),
			facts:    []string{"y/b x/a T80 ok", "y/a x/a T80 ok", "x/b x/a T80 ok", "z/b x/a T80 no", "x/c x/a T80 no"}}}},
		{name: "pod selector expressions", steps: []npStep{{desc: "x pods with pod In (a,b) accept pods without label role (all)",
			policies: policies(netpol("x", "expr", selExpr("pod", metav1.LabelSelectorOpIn, "a", "b"), ingressOnly,
				from(nil, podNSPeer(selExpr("role", metav1.LabelSelectorOpDoesNotExist), selExpr("ns", metav1.LabelSelectorOpExists))), nil),
				netpol("x", "deny-c", sel("pod", "c"), ingressOnly, nil, nil)),
			facts: []string{"z/b x/a T80 ok", "z/b x/c T80 no"}}}},
		// An ipBlock matches one family: the IPv4 /32s allow nothing over
		// IPv6 (x/a is isolated for both), the IPv6 /128s nothing over IPv4.
		{name: "ipBlock pod /32s (IPv4 only)", needs: []corev1.IPFamily{corev1.IPv4Protocol}, steps: []npStep{{desc: "x/a accepts y/b and z/c by IPv4 address",
			policies: func(e *npEnv) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "ip32", sel("pod", "a"), ingressOnly,
					from(nil, ipPeer(hostPrefix(e, "y/b", corev1.IPv4Protocol)), ipPeer(hostPrefix(e, "z/c", corev1.IPv4Protocol))), nil)}
			},
			facts: []string{"y/b x/a U81 ok IPv4", "z/c x/a T80 ok IPv4", "y/b x/a U81 no IPv6", "z/c x/a T80 no IPv6", "y/c x/a T80 no"}}}},
		{name: "ipBlock pod /128s (IPv6 only)", needs: []corev1.IPFamily{corev1.IPv6Protocol}, steps: []npStep{{desc: "x/a accepts y/b and z/c by IPv6 address",
			policies: func(e *npEnv) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "ip128", sel("pod", "a"), ingressOnly,
					from(nil, ipPeer(hostPrefix(e, "y/b", corev1.IPv6Protocol)), ipPeer(hostPrefix(e, "z/c", corev1.IPv6Protocol))), nil)}
			},
			facts: []string{"y/b x/a U81 ok IPv6", "z/c x/a T80 ok IPv6", "y/b x/a U81 no IPv4", "z/c x/a T80 no IPv4", "y/c x/a T80 no"}}}},
		{name: "ipBlock node pod CIDR with except", steps: []npStep{{desc: "x/a accepts node 2's pod CIDRs (every family) except y/b",
			policies: func(e *npEnv) []*networkingv1.NetworkPolicy {
				var peers []networkingv1.NetworkPolicyPeer
				for _, fam := range e.families {
					peers = append(peers, ipPeer(e.podCIDRs[fam][2], hostPrefix(e, "y/b", fam)))
				}
				return []*networkingv1.NetworkPolicy{netpol("x", "cidr", sel("pod", "a"), ingressOnly, from(nil, peers...), nil)}
			},
			facts: []string{"x/b x/a T80 ok", "y/c x/a T80 ok", "y/b x/a T80 no", "x/c x/a T80 no"}}}},
		{name: "egress ipBlock with except", steps: []npStep{{desc: "x/a reaches 0.0.0.0/0 and ::/0 except node 1's pod CIDRs",
			policies: func(e *npEnv) []*networkingv1.NetworkPolicy {
				var peers []networkingv1.NetworkPolicyPeer
				for _, fam := range e.families {
					all := map[corev1.IPFamily]string{corev1.IPv4Protocol: "0.0.0.0/0", corev1.IPv6Protocol: "::/0"}[fam]
					peers = append(peers, ipPeer(all, e.podCIDRs[fam][1]))
				}
				return []*networkingv1.NetworkPolicy{netpol("x", "out-cidr", sel("pod", "a"), egressOnly, nil, to(nil, peers...))}
			},
			facts: []string{"x/a x/b T80 ok", "x/a x/c T80 no", "x/a y/a T80 no"}}}},
		{name: "numeric port only", steps: []npStep{{desc: "x accepts TCP 80 from anyone",
			policies: policies(netpol("x", "tcp80", all(), ingressOnly, from(ports(port(corev1.ProtocolTCP, 80, 0))), nil)),
			facts:    []string{"y/a x/a T80 ok", "y/a x/a T81 no", "y/a x/a U80 no"}}}},
		{name: "protocol UDP only", steps: []npStep{{desc: "x accepts UDP on any port",
			policies: policies(netpol("x", "udp", all(), ingressOnly, from(ports(networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolUDP)})), nil)),
			facts:    []string{"y/a x/a U80 ok", "y/a x/a U81 ok", "y/a x/a T80 no"}}}},
		{name: "several ports in one rule", steps: []npStep{{desc: "y accepts TCP 81 and UDP 80",
			policies: policies(netpol("y", "ports", all(), ingressOnly, from(ports(port(corev1.ProtocolTCP, 81, 0), port(corev1.ProtocolUDP, 80, 0))), nil)),
			facts:    []string{"x/a y/b T81 ok", "x/a y/b U80 ok", "x/a y/b T80 no", "x/a y/b U81 no"}}}},
		{name: "named port resolves per pod", steps: []npStep{{desc: "x accepts TCP port web (a: 80, b: 81, c: none)",
			policies: policies(netpol("x", "web", all(), ingressOnly, from(ports(named(corev1.ProtocolTCP, "web"))), nil)),
			facts:    []string{"y/a x/a T80 ok", "y/a x/a T81 no", "y/a x/b T81 ok", "y/a x/b T80 no", "y/a x/c T80 no", "y/a x/c U80 no"}}}},
		{name: "named UDP port resolves per pod", steps: []npStep{{desc: "y accepts UDP port dns (a: 80, b: 81, c: none)",
			policies: policies(netpol("y", "dns", all(), ingressOnly, from(ports(named(corev1.ProtocolUDP, "dns"))), nil)),
			facts:    []string{"x/a y/a U80 ok", "x/a y/b U81 ok", "x/a y/b U80 no", "x/a y/c U80 no"}}}},
		{name: "named port needs the protocol too", steps: []npStep{{desc: "z accepts UDP port web (only c has web on UDP: 80)",
			policies: policies(netpol("z", "web-udp", all(), ingressOnly, from(ports(named(corev1.ProtocolUDP, "web"))), nil)),
			facts:    []string{"x/a z/c U80 ok", "x/a z/a T80 no", "x/a z/a U80 no", "x/a z/b U81 no"}}}},
		{name: "egress named port resolves on the destination", steps: []npStep{{desc: "x/a may send to TCP port web",
			policies: policies(netpol("x", "out-web", sel("pod", "a"), egressOnly, nil, to(ports(named(corev1.ProtocolTCP, "web"))))),
			facts:    []string{"x/a y/a T80 ok", "x/a y/b T81 ok", "x/a y/b T80 no", "x/a y/c T80 no", "x/a y/c U80 no"}}}},
		{name: "endPort range", steps: []npStep{
			{desc: "x accepts TCP 80-81",
				policies: policies(netpol("x", "range", all(), ingressOnly, from(ports(port(corev1.ProtocolTCP, 80, 81))), nil)),
				facts:    []string{"y/a x/a T80 ok", "y/a x/a T81 ok", "y/a x/a U80 no"}},
			{desc: "x accepts TCP 81-81",
				policies: policies(netpol("x", "range", all(), ingressOnly, from(ports(port(corev1.ProtocolTCP, 81, 81))), nil)),
				facts:    []string{"y/a x/a T80 no", "y/a x/a T81 ok"}},
		}},
		{name: "multiple policies on one pod are a union", steps: []npStep{{desc: "x/a: TCP 80 from ns=y, and UDP from pod=c of x",
			policies: policies(netpol("x", "p1", sel("pod", "a"), ingressOnly, from(ports(port(corev1.ProtocolTCP, 80, 0)), nsPeer(sel("ns", "y"))), nil),
				netpol("x", "p2", sel("pod", "a"), ingressOnly, from(ports(networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolUDP)}), podPeer(sel("pod", "c"))), nil)),
			facts: []string{"y/b x/a T80 ok", "y/b x/a U80 no", "x/c x/a U81 ok", "x/c x/a T80 no", "z/c x/a U81 no"}}}},
		{name: "egress to specific pods", steps: []npStep{{desc: "x/a may reach x/b, and z/c on TCP 81",
			policies: policies(netpol("x", "out", sel("pod", "a"), egressOnly, nil, []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{podPeer(sel("pod", "b"))}},
				{To: []networkingv1.NetworkPolicyPeer{podNSPeer(sel("pod", "c"), sel("ns", "z"))}, Ports: ports(port(corev1.ProtocolTCP, 81, 0))},
			})),
			facts: []string{"x/a x/b U80 ok", "x/a z/c T81 ok", "x/a z/c T80 no", "x/a y/b T80 no", "y/a x/a T80 ok"}}}},
		{name: "egress and ingress must both allow", steps: []npStep{{desc: "x/a may reach ns=y only; y/b accepts ns=z only",
			policies: policies(netpol("x", "out-y", sel("pod", "a"), egressOnly, nil, to(nil, nsPeer(sel("ns", "y")))),
				netpol("y", "in-z", sel("pod", "b"), ingressOnly, from(nil, nsPeer(sel("ns", "z"))), nil)),
			facts: []string{"x/a y/a T80 ok", "x/a y/b T80 no", "z/a y/b T80 ok", "x/b y/b T80 no"}}}},
		{name: "deny egress then allow all egress for one pod", steps: []npStep{{desc: "x denies egress, x/b may send anywhere",
			policies: policies(netpol("x", "deny-out", all(), egressOnly, nil, nil), netpol("x", "b-out", sel("pod", "b"), egressOnly, nil, allTo)),
			facts:    []string{"x/b z/c U81 ok", "x/a z/c U81 no"}}}},
		{name: "policyTypes Egress ignores ingress rules", steps: []npStep{{desc: "x/a: types [Egress], ingress rule from nothing, egress to ns=y",
			policies: policies(netpol("x", "egress-only", sel("pod", "a"), egressOnly,
				from(nil, podPeer(sel("pod", "nobody"))), to(nil, nsPeer(sel("ns", "y"))))),
			facts: []string{"z/a x/a T80 ok", "x/b x/a T80 ok", "x/a y/c T80 ok", "x/a z/c T80 no"}}}},
		{name: "default policyTypes with egress rules", steps: []npStep{{desc: "x/a: no types, no ingress rules, egress to ns=z: isolates both directions",
			policies: policies(netpol("x", "implicit", sel("pod", "a"), nil, nil, to(nil, nsPeer(sel("ns", "z"))))),
			facts:    []string{"z/a x/a T80 no", "x/a z/a T80 ok", "x/a y/a T80 no"}}}},
		{name: "empty podSelector selects every pod of the namespace", steps: []npStep{{desc: "z: {} may only send to ns=x",
			policies: policies(netpol("z", "z-out", all(), egressOnly, nil, to(nil, nsPeer(sel("ns", "x"))))),
			facts:    []string{"z/a x/c T80 ok", "z/b z/a T80 no", "z/c y/c U81 no", "y/c z/c U81 ok"}}}},
		{name: "policy update and delete", steps: []npStep{
			{desc: "x/a accepts ns=y",
				policies: policies(netpol("x", "upd", sel("pod", "a"), ingressOnly, from(nil, nsPeer(sel("ns", "y"))), nil)),
				facts:    []string{"y/a x/a T80 ok", "z/a x/a T80 no"}},
			{desc: "the rule changes to ns=z on UDP",
				policies: policies(netpol("x", "upd", sel("pod", "a"), ingressOnly, from(ports(networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolUDP)}), nsPeer(sel("ns", "z"))), nil)),
				facts:    []string{"y/a x/a T80 no", "z/a x/a T80 no", "z/a x/a U80 ok"}},
			{desc: "the policy is deleted", deletePolicies: []string{"x/upd"}, facts: []string{"y/a x/a T80 ok"}},
		}},
		{name: "pod label change while policies stand", steps: []npStep{
			{desc: "x pod=a accepts role=client pods of any namespace",
				policies: policies(netpol("x", "clients", sel("pod", "a"), ingressOnly, from(nil, podNSPeer(sel("role", "client"), all())), nil)),
				facts:    []string{"y/b x/a T80 no"}},
			{desc: "y/b becomes role=client", podLabels: map[string]map[string]string{"y/b": {"role": "client"}},
				facts: []string{"y/b x/a T80 ok", "y/c x/a T80 no"}},
			{desc: "x/b becomes pod=a (now isolated too)", podLabels: map[string]map[string]string{"x/b": {"pod": "a"}},
				facts: []string{"y/b x/b T80 ok", "y/c x/b T80 no"}},
			{desc: "y/b stops being a client", podLabels: map[string]map[string]string{"y/b": {"role": ""}},
				facts: []string{"y/b x/a T80 no", "y/b x/b T80 no"}},
		}},
		{name: "namespace label change while policies stand", steps: []npStep{
			{desc: "x/a accepts namespaces team=blue",
				policies: policies(netpol("x", "blue", sel("pod", "a"), ingressOnly, from(nil, nsPeer(sel("team", "blue"))), nil)),
				facts:    []string{"z/a x/a T80 no"}},
			{desc: "z becomes team=blue", nsLabels: map[string]map[string]string{"z": {"team": "blue"}},
				facts: []string{"z/a x/a T80 ok", "y/a x/a T80 no"}},
			{desc: "z leaves team blue, y joins", nsLabels: map[string]map[string]string{"z": {"team": ""}, "y": {"team": "blue"}},
				facts: []string{"z/a x/a T80 no", "y/a x/a T80 ok"}},
		}},
		{name: "new pod joins a peer set", steps: []npStep{
			{desc: "x/a accepts role=client pods of x",
				policies: policies(netpol("x", "clients", sel("pod", "a"), ingressOnly, from(nil, podPeer(sel("role", "client"))), nil)),
				facts:    []string{"x/b x/a T80 no"}},
			{desc: "new pod x/d role=client on node 2",
				newPods: []npNewPod{{ns: "x", name: "d", style: "a", node: 2, labels: map[string]string{"pod": "d", "role": "client"}}},
				facts:   []string{"x/d x/a T80 ok", "x/d x/b T80 ok", "y/a x/d T80 ok", "x/b x/a T80 no"}},
		}},
		{name: "new pod joins an isolated set", steps: []npStep{
			{desc: "pods pod=a of z accept TCP 81 only",
				policies: policies(netpol("z", "a-81", sel("pod", "a"), ingressOnly, from(ports(port(corev1.ProtocolTCP, 81, 0))), nil)),
				facts:    []string{"x/a z/a T80 no", "x/a z/a T81 ok"}},
			{desc: "new pod z/a2 labelled pod=a on node 2, its port web is 81",
				newPods: []npNewPod{{ns: "z", name: "a2", style: "b", node: 2, labels: map[string]string{"pod": "a"}}},
				facts:   []string{"x/a z/a2 T80 no", "x/a z/a2 T81 ok", "z/a2 x/a T80 ok"}},
		}},
		{name: "node to local pods is always allowed", steps: []npStep{{desc: "deny all ingress in x, y, z",
			policies: policies(netpol("x", "deny-in", all(), ingressOnly, nil, nil),
				netpol("y", "deny-in", all(), ingressOnly, nil, nil), netpol("z", "deny-in", all(), ingressOnly, nil, nil)),
			facts: []string{"x/a x/c T80 no"}}},
			after: nodeToLocalPods},
		{name: "existing connection becomes denied", steps: []npStep{{desc: "x/a accepts ns=y only",
			policies: policies(netpol("x", "only-y", sel("pod", "a"), ingressOnly, from(nil, nsPeer(sel("ns", "y"))), nil)),
			facts:    []string{"y/a x/a T80 ok", "x/b x/a T80 no"}}},
			around: heldConnections},
		{name: "policy delete restores access", steps: []npStep{
			{desc: "deny both directions in y", policies: policies(netpol("y", "deny", all(), bothTypes, nil, nil)),
				facts: []string{"x/a y/a T80 no", "y/a x/a T80 no"}},
			{desc: "also deny ingress in z", policies: policies(netpol("z", "deny", all(), ingressOnly, nil, nil)),
				facts: []string{"x/a z/a T80 no"}},
			{desc: "delete the policy of y", deletePolicies: []string{"y/deny"},
				facts: []string{"x/a y/a T80 ok", "x/a z/a T80 no"}},
		}},
	}
}

// nodeToLocalPods checks that each node reaches all its local pods on every
// port, over every family, although they are isolated: kubelet probes need
// it.
func nodeToLocalPods(ctx context.Context, t *testing.T, e *npEnv) {
	for i := 1; i <= 2; i++ {
		node := e.s.cfg.NodeName(i)
		var targets []string
		want := map[string]string{} // target → pod name
		for _, p := range e.model.Pods {
			if p.Node != node {
				continue
			}
			for _, fam := range e.families {
				for _, pp := range npPorts {
					hp := net.JoinHostPort(p.addr(fam), strconv.Itoa(int(pp.port)))
					targets = append(targets, strings.ToLower(string(pp.proto))+":"+hp)
					want[string(pp.proto)+" "+hp] = p.Name
				}
			}
		}
		if len(targets) == 0 {
			t.Fatalf("no pods on %s", node)
		}
		res, err := e.s.probeMatrix(ctx, "", node, targets)
		if err != nil {
			t.Fatal(err)
		}
		for tg, r := range res {
			hp := net.JoinHostPort(tg.host, strconv.Itoa(int(tg.port)))
			name, ok := want[string(tg.proto)+" "+hp]
			if !ok {
				t.Errorf("node %s: probe-matrix reported %s %s, not a target", node, tg.proto, hp)
				continue
			}
			if !r.ok || r.detail != name {
				t.Errorf("node %s -> local pod %s %s %s: ok=%v %q, want an answer from %s", node, name, tg.proto, hp, r.ok, r.detail, name)
			}
		}
		t.Logf("node %s reached its %d local pods on all %d ports over %v", node, len(targets)/len(npPorts)/len(e.families), len(npPorts), e.families)
	}
}

// applyOffline applies st to e's model directly, as the API server would:
// the scenario table can be checked without a cluster.
func (st npStep) applyOffline(e *npEnv) {
	m := e.model
	if st.policies != nil {
		for _, np := range st.policies(e) {
			m.Policies = slices.DeleteFunc(m.Policies, func(p networkingv1.NetworkPolicy) bool {
				return p.Namespace == np.Namespace && p.Name == np.Name
			})
			m.Policies = append(m.Policies, *np)
		}
	}
	for _, key := range st.deletePolicies {
		m.Policies = slices.DeleteFunc(m.Policies, func(p networkingv1.NetworkPolicy) bool { return p.Namespace+"/"+p.Name == key })
	}
	for i, p := range m.Pods {
		if l, ok := st.podLabels[p.key()]; ok {
			m.Pods[i].Labels = mergeLabels(p.Labels, l)
		}
	}
	for ns, l := range st.nsLabels {
		m.Namespaces[ns] = mergeLabels(m.Namespaces[ns], l)
	}
	for _, np := range st.newPods {
		p := evalPod{Namespace: np.ns, Name: np.name, Labels: np.labels, Node: fmt.Sprintf("node%d", np.node), Ports: npContainerPorts[np.style]}
		p.setOfflineIPs(e.families, np.node, 100+len(m.Pods))
		m.Pods = append(m.Pods, p)
	}
}

// setOfflineIPs gives p made-up addresses of fams on node (1-based), host
// number n.
func (p *evalPod) setOfflineIPs(fams []corev1.IPFamily, node, n int) {
	for _, fam := range fams {
		if fam == corev1.IPv6Protocol {
			p.IP6 = fmt.Sprintf("fd00:10:244:%d::%x", node-1, n)
		} else {
			p.IP = fmt.Sprintf("10.244.%d.%d", node-1, n)
		}
	}
}

// offlineEnv is the topology with made-up IPs of fams: node i's pods in
// 10.244.(i-1).0/24 and fd00:10:244:(i-1)::/64, as the cluster's
// controller-manager allocates them.
func offlineEnv(fams []corev1.IPFamily) *npEnv {
	cidrs := map[corev1.IPFamily]map[int]string{
		corev1.IPv4Protocol: {1: "10.244.0.0/24", 2: "10.244.1.0/24"},
		corev1.IPv6Protocol: {1: "fd00:10:244::/64", 2: "fd00:10:244:1::/64"},
	}
	e := &npEnv{families: fams, podCIDRs: map[corev1.IPFamily]map[int]string{}, model: &evalModel{Namespaces: map[string]map[string]string{}}}
	for _, fam := range fams {
		e.podCIDRs[fam] = cidrs[fam]
	}
	for _, ns := range npNamespaces {
		e.model.Namespaces[ns] = map[string]string{"ns": ns, "kubernetes.io/metadata.name": ns}
		for _, name := range npPodNames {
			node := npPodNode[ns+"/"+name]
			p := evalPod{Namespace: ns, Name: name, Labels: map[string]string{"pod": name}, Node: fmt.Sprintf("node%d", node), Ports: npContainerPorts[name]}
			p.setOfflineIPs(fams, node, 10+len(e.model.Pods))
			e.model.Pods = append(e.model.Pods, p)
		}
	}
	return e
}

// TestNetworkPolicyScenarioDesign checks the scenario table without a
// cluster, for the pods of a dual-stack, an IPv4-only and an IPv6-only
// cluster: every step's hand-written facts agree with the evaluator, every
// step changes the expected matrix unless declared otherwise, and there are
// enough scenarios.
func TestNetworkPolicyScenarioDesign(t *testing.T) {
	scs := npScenarios()
	if len(scs) < 30 {
		t.Errorf("%d scenarios, want at least 30", len(scs))
	}
	names := map[string]bool{}
	for _, sc := range scs {
		if names[sc.name] {
			t.Errorf("duplicate scenario name %q", sc.name)
		}
		names[sc.name] = true
	}
	v4, v6 := corev1.IPv4Protocol, corev1.IPv6Protocol
	for _, c := range []struct {
		name string
		fams []corev1.IPFamily
	}{{"dual", []corev1.IPFamily{v4, v6}}, {"ipv4", []corev1.IPFamily{v4}}, {"ipv6", []corev1.IPFamily{v6}}} {
		t.Run(c.name, func(t *testing.T) {
			for _, sc := range scs {
				t.Run(sc.name, func(t *testing.T) {
					for _, fam := range sc.needs {
						if !slices.Contains(c.fams, fam) {
							t.Skipf("needs %s pod addresses", fam)
						}
					}
					checkScenarioOffline(t, sc, c.fams)
				})
			}
		})
	}
}

func checkScenarioOffline(t *testing.T, sc npScenario, fams []corev1.IPFamily) {
	e := offlineEnv(fams)
	before, err := e.expected()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range before {
		if !v {
			t.Fatal("the baseline denies a probe")
		}
	}
	for i, st := range sc.steps {
		st.applyOffline(e)
		want, err := e.expected()
		if err != nil {
			t.Fatalf("step %d (%s): %v", i+1, st.desc, err)
		}
		if err := st.check(want, e.families); err != nil {
			t.Errorf("step %d (%s): %v", i+1, st.desc, err)
		}
		if len(st.facts) == 0 {
			t.Errorf("step %d (%s) states no facts", i+1, st.desc)
		}
		if same := sameMatrix(want, before); same != st.unchanged {
			t.Errorf("step %d (%s): changes the matrix: %v, declared unchanged: %v", i+1, st.desc, !same, st.unchanged)
		}
		before = want
	}
}

// heldConnections opens long-lived TCP connections x/b → x/a:80 (to be
// denied by the scenario's policy while open) and y/a → x/a:80 (to stay
// allowed), each over every family, and checks at the end that the
// first broke and the second lasted.
func heldConnections(ctx context.Context, t *testing.T, e *npEnv) func() {
	const holdFor = 12 * time.Second
	type held struct {
		fam      corev1.IPFamily
		from, to string
		broken   bool            // whether the connection must break
		out      strings.Builder // stdout, written by the reader goroutine
		errOut   strings.Builder // stderr, written by exec
		done     chan error
	}
	var conns []*held
	for _, fam := range e.families {
		conns = append(conns, &held{fam: fam, from: "x/b", to: "x/a", broken: true}, &held{fam: fam, from: "y/a", to: "x/a"})
	}
	connected := make(chan string, len(conns))
	for _, h := range conns {
		h.done = make(chan error, 1)
		cmd, err := localcluster.PodExec(ctx, e.s.cfg, h.from, e.s.bin, "hold", "--to", net.JoinHostPort(e.pod(h.to).addr(h.fam), "80"),
			"--for", holdFor.String(), "--interval", "200ms", "--timeout", "1s")
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = &h.errOut
		if err := cmd.Start(); err != nil {
			t.Fatalf("hold from %s over %s: %v", h.from, h.fam, err)
		}
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				h.out.WriteString(sc.Text() + "\n")
				if strings.HasPrefix(sc.Text(), "connected ") {
					connected <- h.from
				}
			}
			h.done <- cmd.Wait()
		}()
	}
	for range conns {
		select {
		case <-connected:
		case <-time.After(5 * time.Second):
			t.Fatal("the held connections did not connect within 5s")
		}
	}
	// Let each connection carry a few echoes before the policy comes.
	time.Sleep(time.Second)
	t.Logf("%d long-lived connections to x/a open", len(conns))
	return func() {
		for _, h := range conns {
			var err error
			select {
			case err = <-h.done:
			case <-time.After(holdFor + 10*time.Second):
				t.Errorf("hold from %s over %s did not end", h.from, h.fam)
				continue
			}
			out := strings.TrimSpace(h.out.String() + h.errOut.String())
			switch {
			case h.broken && (err == nil || !strings.Contains(out, "broken after")):
				t.Errorf("the connection %s -> %s over %s survived the policy that denies it: %v\n%s", h.from, h.to, h.fam, err, out)
			case h.broken && echoesBefore(out) < 3:
				t.Errorf("the connection %s -> %s over %s broke before the policy came (fewer than 3 echoes):\n%s", h.from, h.to, h.fam, out)
			case !h.broken && err != nil:
				t.Errorf("the connection %s -> %s over %s, still allowed, broke: %v\n%s", h.from, h.to, h.fam, err, out)
			default:
				t.Logf("connection %s -> %s over %s: %s", h.from, h.to, h.fam, strings.ReplaceAll(out, "\n", "; "))
			}
		}
	}
}

var echoesRE = regexp.MustCompile(`broken after \S+ \((\d+) echoes\)`)

// echoesBefore returns how many echoes a broken hold reported, -1 if none.
func echoesBefore(out string) int {
	m := echoesRE.FindStringSubmatch(out)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
