package e2e

// The NetworkPolicy evaluator: an independent, deliberately plain reading of
// the Kubernetes NetworkPolicy v1 semantics (k8s.io/api/networking/v1 field
// documentation), used as the oracle of the policy e2e suite. It does not
// import Weir's pkg/policy or pkg/pipeline: a bug shared by both could not be
// found otherwise.
//
// Semantics implemented:
//   - A policy selects the pods of its own namespace matching spec.podSelector
//     (empty selector: every pod of the namespace).
//   - Its policy types are spec.policyTypes, or when empty: Ingress, plus
//     Egress if it has egress rules.
//   - A pod is isolated for a direction if any policy selecting it has that
//     type; a non-isolated pod allows everything in that direction. An
//     isolated pod allows a connection if any rule of any selecting policy
//     of that type allows it (union; policies never deny).
//   - A rule allows a connection if one of its peers matches the other pod
//     (no peers: every peer) and one of its ports matches the destination
//     protocol/port (no ports: every port).
//   - Peers: ipBlock (CIDR minus except, matched against the pod IP);
//     podSelector alone (pods of the policy's namespace); namespaceSelector
//     alone (all pods of matching namespaces); both in one peer (matching pods
//     in matching namespaces).
//   - Ports: protocol defaults to TCP; no port means every port of the
//     protocol; a number, with endPort a range; a name resolves on the
//     destination pod to the container port of that name and protocol (no
//     such port: the rule entry matches nothing for that pod).
//   - A connection src → dst is allowed iff src's egress allows it and dst's
//     ingress allows it.
//   - Connections are of one IP family (a dual-stack pod has an address of
//     each): an ipBlock matches the peer pod's address of the connection's
//     family, so a CIDR of the other family matches nothing; selectors match
//     pods whatever the family.

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// evalPod is what the evaluator knows of a pod: IP is its IPv4 address,
// IP6 its IPv6 one (empty when it has none).
type evalPod struct {
	Namespace, Name string
	Labels          map[string]string
	IP, IP6         string
	Node            string
	Ports           []corev1.ContainerPort
}

func (p evalPod) key() string { return p.Namespace + "/" + p.Name }

// addr returns the pod's address of family fam ("" if it has none).
func (p evalPod) addr(fam corev1.IPFamily) string {
	if fam == corev1.IPv6Protocol {
		return p.IP6
	}
	return p.IP
}

// evalModel is the input of the evaluator: namespaces with their labels,
// pods, and NetworkPolicies.
type evalModel struct {
	Namespaces map[string]map[string]string
	Pods       []evalPod
	Policies   []networkingv1.NetworkPolicy
}

// allowed reports whether a connection of family fam from src to dst on
// proto/port is allowed by the model's policies. Both pods must have an
// address of fam.
func (m *evalModel) allowed(fam corev1.IPFamily, src, dst evalPod, proto corev1.Protocol, port int32) (bool, error) {
	for _, p := range []evalPod{src, dst} {
		if p.addr(fam) == "" {
			return false, fmt.Errorf("pod %s has no %s address", p.key(), fam)
		}
	}
	eg, err := m.directionAllows(fam, src, dst, dst, networkingv1.PolicyTypeEgress, proto, port)
	if err != nil || !eg {
		return false, err
	}
	return m.directionAllows(fam, dst, src, dst, networkingv1.PolicyTypeIngress, proto, port)
}

// directionAllows reports whether pod's policies of direction dir allow a
// connection with peer; portPod is the destination pod, where named ports
// resolve.
func (m *evalModel) directionAllows(fam corev1.IPFamily, pod, peer, portPod evalPod, dir networkingv1.PolicyType, proto corev1.Protocol, port int32) (bool, error) {
	isolated := false
	for i := range m.Policies {
		np := &m.Policies[i]
		if np.Namespace != pod.Namespace || !hasType(np, dir) {
			continue
		}
		sel, err := selector(&np.Spec.PodSelector)
		if err != nil {
			return false, fmt.Errorf("policy %s/%s podSelector: %w", np.Namespace, np.Name, err)
		}
		if !sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		isolated = true
		var rules []evalRule
		if dir == networkingv1.PolicyTypeIngress {
			for _, r := range np.Spec.Ingress {
				rules = append(rules, evalRule{r.From, r.Ports})
			}
		} else {
			for _, r := range np.Spec.Egress {
				rules = append(rules, evalRule{r.To, r.Ports})
			}
		}
		for _, r := range rules {
			pm, err := m.peersMatch(fam, np.Namespace, r.peers, peer)
			if err != nil {
				return false, fmt.Errorf("policy %s/%s: %w", np.Namespace, np.Name, err)
			}
			if pm && portsMatch(r.ports, portPod, proto, port) {
				return true, nil
			}
		}
	}
	return !isolated, nil
}

// evalRule is an ingress or egress rule: its peers (from or to) and ports.
type evalRule struct {
	peers []networkingv1.NetworkPolicyPeer
	ports []networkingv1.NetworkPolicyPort
}

// hasType reports whether np has policy type t, with the API's defaulting
// of an empty policyTypes.
func hasType(np *networkingv1.NetworkPolicy, t networkingv1.PolicyType) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return t == networkingv1.PolicyTypeIngress || t == networkingv1.PolicyTypeEgress && len(np.Spec.Egress) > 0
	}
	for _, pt := range np.Spec.PolicyTypes {
		if pt == t {
			return true
		}
	}
	return false
}

func selector(s *metav1.LabelSelector) (labels.Selector, error) {
	return metav1.LabelSelectorAsSelector(s)
}

// peersMatch reports whether pod, in a connection of family fam, is one of
// peers of a policy in namespace policyNS; no peers means every peer.
func (m *evalModel) peersMatch(fam corev1.IPFamily, policyNS string, peers []networkingv1.NetworkPolicyPeer, pod evalPod) (bool, error) {
	if len(peers) == 0 {
		return true, nil
	}
	for _, p := range peers {
		ok, err := m.peerMatches(fam, policyNS, p, pod)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func (m *evalModel) peerMatches(fam corev1.IPFamily, policyNS string, p networkingv1.NetworkPolicyPeer, pod evalPod) (bool, error) {
	if p.IPBlock != nil {
		return ipBlockMatches(p.IPBlock, pod.addr(fam))
	}
	if p.PodSelector == nil && p.NamespaceSelector == nil {
		return false, fmt.Errorf("peer with neither ipBlock nor selectors")
	}
	if p.NamespaceSelector == nil {
		if pod.Namespace != policyNS {
			return false, nil
		}
	} else {
		nsSel, err := selector(p.NamespaceSelector)
		if err != nil {
			return false, err
		}
		nsLabels, ok := m.Namespaces[pod.Namespace]
		if !ok {
			return false, fmt.Errorf("pod %s in unknown namespace", pod.key())
		}
		if !nsSel.Matches(labels.Set(nsLabels)) {
			return false, nil
		}
	}
	if p.PodSelector == nil {
		return true, nil
	}
	podSel, err := selector(p.PodSelector)
	if err != nil {
		return false, err
	}
	return podSel.Matches(labels.Set(pod.Labels)), nil
}

// ipBlockMatches reports whether ip is in b's CIDR and none of its excepts;
// an address of the other family than the CIDR's is not.
func ipBlockMatches(b *networkingv1.IPBlock, ip string) (bool, error) {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return false, fmt.Errorf("pod IP %q: %w", ip, err)
	}
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return false, fmt.Errorf("ipBlock cidr: %w", err)
	}
	if !cidr.Contains(addr) {
		return false, nil
	}
	for _, e := range b.Except {
		ex, err := netip.ParsePrefix(e)
		if err != nil {
			return false, fmt.Errorf("ipBlock except: %w", err)
		}
		if ex.Contains(addr) {
			return false, nil
		}
	}
	return true, nil
}

// portsMatch reports whether proto/port on dst is one of ports; no ports
// means every port.
func portsMatch(ports []networkingv1.NetworkPolicyPort, dst evalPod, proto corev1.Protocol, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		pp := corev1.ProtocolTCP
		if p.Protocol != nil {
			pp = *p.Protocol
		}
		if pp != proto {
			continue
		}
		if p.Port == nil {
			return true
		}
		if p.Port.Type == intstr.String {
			if n, ok := namedPort(dst, p.Port.StrVal, proto); ok && n == port {
				return true
			}
			continue
		}
		lo := p.Port.IntVal
		hi := lo
		if p.EndPort != nil {
			hi = *p.EndPort
		}
		if lo <= port && port <= hi {
			return true
		}
	}
	return false
}

// namedPort resolves name on pod for proto.
func namedPort(pod evalPod, name string, proto corev1.Protocol) (int32, bool) {
	for _, cp := range pod.Ports {
		cpProto := cp.Protocol
		if cpProto == "" {
			cpProto = corev1.ProtocolTCP
		}
		if cp.Name == name && cpProto == proto {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// The evaluator's own tests: small hand-computed cases, no cluster needed.

// evalTestModel: namespaces n1 (ns=n1) and n2 (ns=n2, team=t); pods n1/p,
// n1/q (10.0.0.0/24, fd00::/64) and n2/r (10.0.1.0/24, fd00:0:0:1::/64).
func evalTestModel(nps ...networkingv1.NetworkPolicy) *evalModel {
	return &evalModel{
		Namespaces: map[string]map[string]string{"n1": {"ns": "n1"}, "n2": {"ns": "n2", "team": "t"}},
		Pods: []evalPod{
			{Namespace: "n1", Name: "p", Labels: map[string]string{"app": "p"}, IP: "10.0.0.1", IP6: "fd00::1",
				Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 8080}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}},
			{Namespace: "n1", Name: "q", Labels: map[string]string{"app": "q", "role": "db"}, IP: "10.0.0.2", IP6: "fd00::2"},
			{Namespace: "n2", Name: "r", Labels: map[string]string{"app": "r"}, IP: "10.0.1.1", IP6: "fd00:0:0:1::1",
				Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}}},
		},
		Policies: nps,
	}
}

func TestPolicyEvaluator(t *testing.T) {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	pol := func(ns string, podSel *metav1.LabelSelector, types []networkingv1.PolicyType, in []networkingv1.NetworkPolicyIngressRule, out []networkingv1.NetworkPolicyEgressRule) networkingv1.NetworkPolicy {
		return *netpol(ns, "np", podSel, types, in, out)
	}
	type probe struct {
		src, dst string
		proto    corev1.Protocol
		port     int32
		want     bool
	}
	tests := []struct {
		name     string
		policies []networkingv1.NetworkPolicy
		probes   []probe
	}{
		{name: "no policies allow everything", probes: []probe{
			{"n1/p", "n1/q", tcp, 80, true}, {"n2/r", "n1/p", udp, 53, true}}},
		{name: "deny ingress isolates only selected pods", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "q"), ingressOnly, nil, nil)},
			probes: []probe{{"n1/p", "n1/q", tcp, 80, false}, {"n1/q", "n1/p", tcp, 80, true}, {"n2/r", "n1/p", tcp, 80, true}}},
		{name: "deny egress", policies: []networkingv1.NetworkPolicy{
			pol("n1", all(), egressOnly, nil, nil)},
			probes: []probe{{"n1/p", "n2/r", tcp, 80, false}, {"n2/r", "n1/p", tcp, 80, true}, {"n1/p", "n1/q", udp, 1, false}}},
		{name: "empty policyTypes: ingress only without egress rules", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "p"), nil, nil, nil)},
			probes: []probe{{"n2/r", "n1/p", tcp, 80, false}, {"n1/p", "n2/r", tcp, 80, true}}},
		{name: "empty policyTypes with egress rules: both", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "p"), nil, nil, to(nil, podPeer(sel("app", "q"))))},
			probes: []probe{{"n2/r", "n1/p", tcp, 80, false}, {"n1/p", "n2/r", tcp, 80, false}, {"n1/p", "n1/q", tcp, 80, true}}},
		{name: "explicit Egress ignores ingress rules", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "p"), egressOnly, from(nil, podPeer(sel("app", "none"))), to(nil))},
			probes: []probe{{"n2/r", "n1/p", tcp, 80, true}, {"n1/p", "n2/r", tcp, 80, true}}},
		{name: "empty rule allows all", policies: []networkingv1.NetworkPolicy{
			pol("n1", all(), ingressOnly, allFrom, nil)},
			probes: []probe{{"n2/r", "n1/p", udp, 9, true}}},
		{name: "podSelector alone means the policy's namespace", policies: []networkingv1.NetworkPolicy{
			pol("n2", all(), ingressOnly, from(nil, podPeer(all())), nil)},
			probes: []probe{{"n1/p", "n2/r", tcp, 80, false}}},
		{name: "podSelector alone in another namespace", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "p"), ingressOnly, from(nil, podPeer(sel("role", "db"))), nil)},
			probes: []probe{{"n1/q", "n1/p", tcp, 80, true}, {"n2/r", "n1/p", tcp, 80, false}}},
		{name: "namespaceSelector alone", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "p"), ingressOnly, from(nil, nsPeer(sel("team", "t"))), nil)},
			probes: []probe{{"n2/r", "n1/p", tcp, 80, true}, {"n1/q", "n1/p", tcp, 80, false}}},
		{name: "both selectors in one peer: AND", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "p"), ingressOnly, from(nil, podNSPeer(sel("app", "q"), sel("ns", "n1"))), nil)},
			probes: []probe{{"n1/q", "n1/p", tcp, 80, true}, {"n2/r", "n1/p", tcp, 80, false}}},
		{name: "both selectors in one peer: AND fails on the namespace", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "p"), ingressOnly, from(nil, podNSPeer(sel("app", "q"), sel("ns", "n2"))), nil)},
			probes: []probe{{"n1/q", "n1/p", tcp, 80, false}, {"n2/r", "n1/p", tcp, 80, false}}},
		{name: "two peers: OR", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "p"), ingressOnly, from(nil, podPeer(sel("app", "q")), nsPeer(sel("ns", "n2"))), nil)},
			probes: []probe{{"n1/q", "n1/p", tcp, 80, true}, {"n2/r", "n1/p", tcp, 80, true}}},
		{name: "ipBlock with except", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "p"), ingressOnly, from(nil, ipPeer("10.0.0.0/16", "10.0.0.0/24")), nil)},
			probes: []probe{{"n2/r", "n1/p", tcp, 80, true}, {"n1/q", "n1/p", tcp, 80, false}}},
		{name: "ports: protocol defaults to TCP", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "p"), ingressOnly, from(ports(networkingv1.NetworkPolicyPort{Port: new(intstr.FromInt32(80))})), nil)},
			probes: []probe{{"n2/r", "n1/p", tcp, 80, true}, {"n2/r", "n1/p", udp, 80, false}, {"n2/r", "n1/p", tcp, 81, false}}},
		{name: "ports: endPort range", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "p"), ingressOnly, from(ports(port(udp, 1000, 1002))), nil)},
			probes: []probe{{"n2/r", "n1/p", udp, 999, false}, {"n2/r", "n1/p", udp, 1000, true}, {"n2/r", "n1/p", udp, 1002, true}, {"n2/r", "n1/p", udp, 1003, false}, {"n2/r", "n1/p", tcp, 1001, false}}},
		{name: "ports: protocol without port", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "p"), ingressOnly, from(ports(networkingv1.NetworkPolicyPort{Protocol: &udp})), nil)},
			probes: []probe{{"n2/r", "n1/p", udp, 7, true}, {"n2/r", "n1/p", tcp, 7, false}}},
		{name: "ingress named port resolves on the selected pod", policies: []networkingv1.NetworkPolicy{
			pol("n1", all(), ingressOnly, from(ports(named(tcp, "web"))), nil)},
			probes: []probe{{"n2/r", "n1/p", tcp, 8080, true}, {"n2/r", "n1/p", tcp, 9090, false}, {"n2/r", "n1/q", tcp, 8080, false}}},
		{name: "named port protocol must match the container port's", policies: []networkingv1.NetworkPolicy{
			pol("n1", all(), ingressOnly, from(ports(named(tcp, "dns"), named(udp, "web"))), nil)},
			probes: []probe{{"n2/r", "n1/p", udp, 53, false}, {"n2/r", "n1/p", tcp, 53, false}, {"n2/r", "n1/p", udp, 8080, false}}},
		{name: "egress named port resolves on the destination pod", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "q"), egressOnly, nil, to(ports(named(tcp, "web"))))},
			probes: []probe{{"n1/q", "n2/r", tcp, 9090, true}, {"n1/q", "n1/p", tcp, 8080, true}, {"n1/q", "n1/p", tcp, 9090, false}}},
		{name: "egress and ingress both needed", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "p"), egressOnly, nil, to(nil, nsPeer(sel("ns", "n2")))),
			pol("n2", all(), ingressOnly, from(nil, podPeer(all())), nil)},
			probes: []probe{{"n1/p", "n2/r", tcp, 80, false}, {"n1/p", "n1/q", tcp, 80, false}}},
		{name: "union of policies", policies: []networkingv1.NetworkPolicy{
			pol("n1", sel("app", "p"), ingressOnly, from(ports(port(tcp, 80, 0))), nil),
			pol("n1", all(), ingressOnly, from(nil, nsPeer(sel("team", "t"))), nil)},
			probes: []probe{{"n1/q", "n1/p", tcp, 80, true}, {"n1/q", "n1/p", tcp, 81, false}, {"n2/r", "n1/p", tcp, 81, true}, {"n1/p", "n1/q", tcp, 80, false}}},
		{name: "selector expressions", policies: []networkingv1.NetworkPolicy{
			pol("n1", selExpr("role", metav1.LabelSelectorOpDoesNotExist), ingressOnly, from(nil, nsPeer(selExpr("team", metav1.LabelSelectorOpExists))), nil)},
			probes: []probe{{"n1/q", "n1/p", tcp, 80, false}, {"n2/r", "n1/p", tcp, 80, true}, {"n1/p", "n1/q", tcp, 80, true}}},
		{name: "policies of another namespace do not select", policies: []networkingv1.NetworkPolicy{
			pol("n2", all(), bothTypes, nil, nil)},
			probes: []probe{{"n1/p", "n1/q", tcp, 80, true}, {"n1/p", "n2/r", tcp, 80, false}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := evalTestModel(tc.policies...)
			pods := map[string]evalPod{}
			for _, p := range m.Pods {
				pods[p.key()] = p
			}
			for _, p := range tc.probes {
				got, err := m.allowed(corev1.IPv4Protocol, pods[p.src], pods[p.dst], p.proto, p.port)
				if err != nil {
					t.Fatal(err)
				}
				if got != p.want {
					t.Errorf("%s -> %s %s/%d: allowed=%v, want %v", p.src, p.dst, p.proto, p.port, got, p.want)
				}
			}
		})
	}
}

func TestPolicyEvaluatorErrors(t *testing.T) {
	m := evalTestModel(*netpol("n1", "bad", all(), ingressOnly, from(nil, networkingv1.NetworkPolicyPeer{}), nil))
	if _, err := m.allowed(corev1.IPv4Protocol, m.Pods[2], m.Pods[0], corev1.ProtocolTCP, 80); err == nil {
		t.Error("a peer without selectors or ipBlock gave no error")
	}
	m = evalTestModel(*netpol("n1", "bad", all(), ingressOnly, from(nil, ipPeer("10.0.0.0/33")), nil))
	if _, err := m.allowed(corev1.IPv4Protocol, m.Pods[2], m.Pods[0], corev1.ProtocolTCP, 80); err == nil {
		t.Error("a bad CIDR gave no error")
	}
}

// TestPolicyEvaluatorFamilies: the same policies evaluated for an IPv4 and
// an IPv6 connection: selectors match whatever the family, an ipBlock only
// connections of its own family.
func TestPolicyEvaluatorFamilies(t *testing.T) {
	v4, v6, tcp := corev1.IPv4Protocol, corev1.IPv6Protocol, corev1.ProtocolTCP
	type probe struct {
		src, dst string
		v4, v6   bool // allowed over IPv4, over IPv6
	}
	tests := []struct {
		name   string
		policy *networkingv1.NetworkPolicy
		probes []probe
	}{
		{name: "selectors match both families",
			policy: netpol("n1", "np", sel("app", "p"), ingressOnly, from(nil, nsPeer(sel("team", "t"))), nil),
			probes: []probe{{"n2/r", "n1/p", true, true}, {"n1/q", "n1/p", false, false}}},
		{name: "an IPv4 ipBlock allows IPv4 only, the pod is isolated for both",
			policy: netpol("n1", "np", sel("app", "p"), ingressOnly, from(nil, ipPeer("10.0.1.0/24")), nil),
			probes: []probe{{"n2/r", "n1/p", true, false}, {"n1/q", "n1/p", false, false}}},
		{name: "an IPv6 ipBlock with except allows IPv6 only",
			policy: netpol("n1", "np", sel("app", "p"), ingressOnly, from(nil, ipPeer("fd00::/48", "fd00::/64")), nil),
			probes: []probe{{"n2/r", "n1/p", false, true}, {"n1/q", "n1/p", false, false}}},
		{name: "egress to both families' blocks",
			policy: netpol("n1", "np", sel("app", "q"), egressOnly, nil, to(nil, ipPeer("10.0.0.0/24"), ipPeer("fd00:0:0:1::/64"))),
			probes: []probe{{"n1/q", "n1/p", true, false}, {"n1/q", "n2/r", false, true}, {"n2/r", "n1/q", true, true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := evalTestModel(*tc.policy)
			pods := map[string]evalPod{}
			for _, p := range m.Pods {
				pods[p.key()] = p
			}
			for _, p := range tc.probes {
				for fam, want := range map[corev1.IPFamily]bool{v4: p.v4, v6: p.v6} {
					got, err := m.allowed(fam, pods[p.src], pods[p.dst], tcp, 80)
					if err != nil {
						t.Fatal(err)
					}
					if got != want {
						t.Errorf("%s -> %s %s tcp/80: allowed=%v, want %v", p.src, p.dst, fam, got, want)
					}
				}
			}
		})
	}
	m := evalTestModel()
	m.Pods[0].IP6 = ""
	if _, err := m.allowed(v6, m.Pods[2], m.Pods[0], tcp, 80); err == nil {
		t.Error("an IPv6 connection to a pod without an IPv6 address gave no error")
	}
}
