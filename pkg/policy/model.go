package policy

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weirnet/weir/pkg/pipeline"
)

// podInfo is what the model keeps of a Pod.
//
// The addresses are kept inline as arrays (96 bytes in all, as when only
// an IPv4 net.IP was kept): ip() and ipv6() slice them, so the rules'
// net.IPs share the podInfo's memory instead of allocating. (A realized
// rule that did not change therefore keeps the podInfo it was computed
// from alive, at most one older version per peer and rule, until it does.)
type podInfo struct {
	namespace, name string
	labels          labels.Set
	ports           []containerPort
	ofport          uint32 // local pods: the OpenFlow port, 0 while unknown
	ip4             [4]byte
	ip6             [16]byte
	// has4 and has6: the pod has an IPv4 (ip4) or an IPv6 (ip6) address
	// (a dual-stack pod both, an IPv6-only pod has6 alone); neither for a
	// pod that takes no part in policy (no address yet, terminated, or host
	// network).
	has4  bool
	has6  bool
	local bool // spec.nodeName is this node
}

// ip returns the pod's IPv4 address (4 bytes), nil if it has none.
func (p *podInfo) ip() net.IP {
	if !p.has4 {
		return nil
	}
	return p.ip4[:]
}

// ipv6 returns the pod's IPv6 address (16 bytes), nil if it has none.
func (p *podInfo) ipv6() net.IP {
	if !p.has6 {
		return nil
	}
	return p.ip6[:]
}

type containerPort struct {
	name     string
	protocol pipeline.Protocol
	port     uint16
}

func (p *podInfo) key() string { return p.namespace + "/" + p.name }

// eligible reports whether the pod takes part in policy at all.
func (p *podInfo) eligible() bool { return p != nil && (p.has4 || p.has6) }

// target reports whether the pod can be a target ("appliedTo") on this node.
func (p *podInfo) target() bool { return p.eligible() && p.local && p.ofport != 0 }

func (p *podInfo) equal(q *podInfo) bool {
	if p == nil || q == nil {
		return p == q
	}
	return p.namespace == q.namespace && p.name == q.name && p.has4 == q.has4 && p.ip4 == q.ip4 &&
		p.has6 == q.has6 && p.ip6 == q.ip6 && p.local == q.local &&
		p.ofport == q.ofport && labels.Equals(p.labels, q.labels) && slices.Equal(p.ports, q.ports)
}

// newPodInfo extracts the model's view of pod; ofport is its OpenFlow port
// if it is local and attached (0 otherwise).
func newPodInfo(pod *corev1.Pod, node string, ofport uint32) *podInfo {
	pi := &podInfo{namespace: pod.Namespace, name: pod.Name, labels: labels.Set(pod.Labels),
		local: pod.Spec.NodeName == node && node != ""}
	if pi.local {
		pi.ofport = ofport
	}
	if pod.Spec.HostNetwork || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return pi
	}
	if ip := podIPv4(pod); ip != nil {
		pi.has4, pi.ip4 = true, [4]byte(ip)
	}
	if a := podIPv6(pod); a.IsValid() {
		pi.has6, pi.ip6 = true, a.As16()
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == "" || cp.ContainerPort <= 0 || cp.ContainerPort > 65535 {
				continue
			}
			proto, ok := protocolOf(cp.Protocol)
			if !ok {
				continue
			}
			pi.ports = append(pi.ports, containerPort{name: cp.Name, protocol: proto, port: uint16(cp.ContainerPort)})
		}
	}
	return pi
}

// podIPv4 returns the pod's IPv4 address, nil if it has none.
func podIPv4(pod *corev1.Pod) net.IP {
	cands := []string{pod.Status.PodIP}
	for _, ip := range pod.Status.PodIPs {
		cands = append(cands, ip.IP)
	}
	for _, s := range cands {
		if ip := net.ParseIP(s).To4(); ip != nil {
			return ip
		}
	}
	return nil
}

// podIPv6 returns the pod's IPv6 address (Pod.status.podIPs), the zero
// Addr if it has none.
func podIPv6(pod *corev1.Pod) netip.Addr {
	parse := func(s string) (netip.Addr, bool) {
		if !strings.Contains(s, ":") {
			return netip.Addr{}, false // IPv4 or empty: not parsed twice
		}
		a, err := netip.ParseAddr(s)
		return a, err == nil && a.Is6() && !a.Is4In6() && a.Zone() == ""
	}
	for _, ip := range pod.Status.PodIPs {
		if a, ok := parse(ip.IP); ok {
			return a
		}
	}
	if a, ok := parse(pod.Status.PodIP); ok {
		return a
	}
	return netip.Addr{}
}

func protocolOf(p corev1.Protocol) (pipeline.Protocol, bool) {
	switch p {
	case "", corev1.ProtocolTCP:
		return pipeline.ProtocolTCP, true
	case corev1.ProtocolUDP:
		return pipeline.ProtocolUDP, true
	case corev1.ProtocolSCTP:
		return pipeline.ProtocolSCTP, true
	}
	return 0, false
}

// compiledPolicy is a NetworkPolicy with parsed selectors and peers.
type compiledPolicy struct {
	key, namespace, name, uid string
	podSel                    labels.Selector
	ingress, egress           bool // policy types
	rules                     []compiledRule
	// warnings are problems found while compiling (ipBlock excepts that
	// cannot apply: other address family, outside the block).
	warnings []string
	// peers is which pods the peer selectors can reach (for the index).
	peers peerScope
}

type compiledRule struct {
	dir   pipeline.Direction
	index int
	// peers is nil for a rule without from/to (all peers).
	peers   []compiledPeer
	anyPort bool // no ports: all ports
	numeric []pipeline.PortRange
	named   []namedPort
	// anyNamespace is true when some peer selects pods by namespaceSelector.
	anyNamespace bool
}

type namedPort struct {
	name     string
	protocol pipeline.Protocol
}

type compiledPeer struct {
	// ipBlock peers: blocks (except subtracted, may be empty).
	ipBlock bool
	blocks  []*net.IPNet
	// pod peers: nsSel nil means the policy's namespace; podSel nil all pods.
	nsSel, podSel labels.Selector
}

func compilePolicy(np *networkingv1.NetworkPolicy) (*compiledPolicy, error) {
	cp := &compiledPolicy{key: np.Namespace + "/" + np.Name, namespace: np.Namespace, name: np.Name, uid: string(np.UID)}
	var err error
	if cp.podSel, err = metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); err != nil {
		return nil, fmt.Errorf("policy %s: podSelector: %w", cp.key, err)
	}
	if len(np.Spec.PolicyTypes) == 0 {
		cp.ingress, cp.egress = true, len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			cp.ingress = true
		case networkingv1.PolicyTypeEgress:
			cp.egress = true
		}
	}
	if cp.ingress {
		for i, r := range np.Spec.Ingress {
			cr, err := cp.compileRule(pipeline.Ingress, i, r.From, r.Ports)
			if err != nil {
				return nil, err
			}
			cp.rules = append(cp.rules, cr)
		}
	}
	if cp.egress {
		for i, r := range np.Spec.Egress {
			cr, err := cp.compileRule(pipeline.Egress, i, r.To, r.Ports)
			if err != nil {
				return nil, err
			}
			cp.rules = append(cp.rules, cr)
		}
	}
	cp.peers = cp.scope()
	return cp, nil
}

func (cp *compiledPolicy) compileRule(dir pipeline.Direction, index int, peers []networkingv1.NetworkPolicyPeer,
	ports []networkingv1.NetworkPolicyPort) (compiledRule, error) {
	cr := compiledRule{dir: dir, index: index, anyPort: len(ports) == 0}
	where := fmt.Sprintf("policy %s %s rule %d", cp.key, strings.ToLower(dir.String()), index)
	for _, p := range ports {
		proto := pipeline.ProtocolTCP
		if p.Protocol != nil {
			var ok bool
			if proto, ok = protocolOf(*p.Protocol); !ok {
				return cr, fmt.Errorf("%s: unsupported protocol %q", where, *p.Protocol)
			}
		}
		switch {
		case p.Port == nil:
			cr.numeric = append(cr.numeric, pipeline.PortRange{Protocol: proto})
		case p.Port.Type == intstr.String:
			cr.named = append(cr.named, namedPort{name: p.Port.StrVal, protocol: proto})
		default:
			from := p.Port.IntVal
			to := from
			if p.EndPort != nil && *p.EndPort >= from {
				to = *p.EndPort
			}
			if from < 1 || to > 65535 {
				return cr, fmt.Errorf("%s: port %d-%d out of range", where, from, to)
			}
			cr.numeric = append(cr.numeric, pipeline.PortRange{Protocol: proto, From: uint16(from), To: uint16(to)})
		}
	}
	cr.numeric = normPorts(cr.numeric)
	if len(peers) == 0 {
		return cr, nil
	}
	cr.peers = []compiledPeer{}
	for _, p := range peers {
		if p.IPBlock != nil {
			_, base, err := net.ParseCIDR(p.IPBlock.CIDR)
			if err != nil {
				return cr, fmt.Errorf("%s: ipBlock %q: %w", where, p.IPBlock.CIDR, err)
			}
			var except []*net.IPNet
			var otherFamily []string
			for _, e := range p.IPBlock.Except {
				_, en, err := net.ParseCIDR(e)
				if err != nil {
					return cr, fmt.Errorf("%s: ipBlock except %q: %w", where, e, err)
				}
				if (en.IP.To4() == nil) != (base.IP.To4() == nil) {
					otherFamily = append(otherFamily, e)
					continue
				}
				except = append(except, en)
			}
			if len(otherFamily) > 0 {
				// The API server rejects these (an except must lie in
				// the block); one that got past it excepts nothing.
				cp.warnings = append(cp.warnings, fmt.Sprintf("%s: ipBlock %s: %d except(s) of the other address family ignored: %s",
					where, p.IPBlock.CIDR, len(otherFamily), strings.Join(otherFamily[:min(len(otherFamily), 3)], ", ")))
			}
			var blocks []*net.IPNet
			if base.IP.To4() != nil {
				blocks = subtractCIDRs(base, except)
			} else {
				blocks = subtractCIDRs6(base, except)
			}
			cr.peers = append(cr.peers, compiledPeer{ipBlock: true, blocks: blocks})
			continue
		}
		var cpe compiledPeer
		var err error
		if p.NamespaceSelector != nil {
			if cpe.nsSel, err = metav1.LabelSelectorAsSelector(p.NamespaceSelector); err != nil {
				return cr, fmt.Errorf("%s: namespaceSelector: %w", where, err)
			}
			cr.anyNamespace = true
		}
		if p.PodSelector != nil {
			if cpe.podSel, err = metav1.LabelSelectorAsSelector(p.PodSelector); err != nil {
				return cr, fmt.Errorf("%s: podSelector: %w", where, err)
			}
		}
		cr.peers = append(cr.peers, cpe)
	}
	return cr, nil
}

// normPorts sorts and deduplicates port ranges.
func normPorts(ps []pipeline.PortRange) []pipeline.PortRange {
	slices.SortFunc(ps, func(a, b pipeline.PortRange) int {
		if a.Protocol != b.Protocol {
			return int(a.Protocol) - int(b.Protocol)
		}
		if a.From != b.From {
			return int(a.From) - int(b.From)
		}
		return int(a.To) - int(b.To)
	})
	return slices.Compact(ps)
}

// peerMatches reports whether pod matches the pod part of peer p of a rule
// of policy cp (selectors only).
func (m *Model) peerMatches(cp *compiledPolicy, p *compiledPeer, pod *podInfo) bool {
	if p.ipBlock {
		return false
	}
	if p.nsSel == nil {
		if pod.namespace != cp.namespace {
			return false
		}
	} else if !p.nsSel.Matches(m.namespaces[pod.namespace]) {
		return false
	}
	return p.podSel == nil || p.podSel.Matches(pod.labels)
}

// mayInclude reports whether pod (eligible) is, by the selectors, a target
// or a peer of cp.
func (m *Model) mayInclude(cp *compiledPolicy, pod *podInfo) bool {
	if pod.local && pod.namespace == cp.namespace && cp.podSel.Matches(pod.labels) {
		return true
	}
	for i := range cp.rules {
		r := &cp.rules[i]
		if r.peers == nil {
			if r.dir == pipeline.Egress && len(r.named) > 0 {
				return true // named ports resolve on every pod
			}
			continue
		}
		for j := range r.peers {
			if m.peerMatches(cp, &r.peers[j], pod) {
				return true
			}
		}
	}
	return false
}

// mayIncludeNamespace reports whether a namespace with labels set could
// be selected by a namespaceSelector of cp.
func mayIncludeNamespace(cp *compiledPolicy, set labels.Set) bool {
	for i := range cp.rules {
		for j := range cp.rules[i].peers {
			if s := cp.rules[i].peers[j].nsSel; s != nil && s.Matches(set) {
				return true
			}
		}
	}
	return false
}

// policyResult is what one policy yields on this node.
type policyResult struct {
	rules           map[string]pipeline.PolicyRule // by rule key; ID unset until diffed
	ingress, egress []pipeline.LocalPod            // isolated targets
	warnings        []string
}

// Model is the node's view of Pods, Namespaces and NetworkPolicies and of
// the rules realized from them. It is not safe for concurrent use.
type Model struct {
	node       string
	pods       map[string]*podInfo            // by namespace/name
	podsByNS   map[string]map[string]*podInfo // namespace -> name -> pod
	targets    map[string]map[string]*podInfo // the local target pods, namespace -> name -> pod
	namespaces map[string]labels.Set
	policies   map[string]*compiledPolicy // by namespace/name
	index      policyIndex

	dirty map[string]bool // policies to recompute

	// Realized state: per policy key the rules (by rule key, with IDs)
	// and isolated targets.
	realized  map[string]*policyResult
	isolation *pipeline.Isolation // nil before the first commit
	ids       idAllocator
}

// NewModel returns an empty model for node.
func NewModel(node string) *Model {
	return &Model{node: node, pods: map[string]*podInfo{}, podsByNS: map[string]map[string]*podInfo{},
		targets: map[string]map[string]*podInfo{}, namespaces: map[string]labels.Set{},
		policies: map[string]*compiledPolicy{}, index: newPolicyIndex(), dirty: map[string]bool{},
		realized: map[string]*policyResult{}, ids: idAllocator{next: 1}}
}

// SetPod records pod (nil with its key to delete it); ofport is its
// OpenFlow port when local and attached, 0 otherwise. It marks the
// policies the pod may affect for recomputation and reports how many.
func (m *Model) SetPod(key string, pod *corev1.Pod, ofport uint32) int {
	old := m.pods[key]
	var nu *podInfo
	if pod != nil {
		nu = newPodInfo(pod, m.node, ofport)
	}
	if old.equal(nu) {
		return 0
	}
	if old != nil {
		m.removePod(key, old)
	}
	if nu != nil {
		m.addPod(key, nu)
	}
	n := 0
	check := func(pk string, cp *compiledPolicy) {
		if !m.dirty[pk] && ((old.eligible() && m.mayInclude(cp, old)) || (nu.eligible() && m.mayInclude(cp, nu))) {
			n += m.mark(pk)
		}
	}
	// The namespaces the pod is in (one, unless the key was reused).
	nss := make([]string, 0, 2)
	for _, p := range []*podInfo{old, nu} {
		if p != nil && !slices.Contains(nss, p.namespace) {
			nss = append(nss, p.namespace)
		}
	}
	for _, ns := range nss {
		if old.target() || nu.target() {
			n += m.refreshActive(ns)
		}
		if (old != nil && old.local) || (nu != nil && nu.local) {
			// A local pod may be a target of any policy of its namespace.
			for pk, cp := range m.index.byNS[ns] {
				check(pk, cp)
			}
		}
		// As a peer it matters only to active policies.
		for pk, cp := range m.index.sameNS[ns] {
			check(pk, cp)
		}
	}
	for pk, cp := range m.index.wide {
		check(pk, cp)
	}
	return n
}

// SetNamespace records a namespace's labels (ns nil deletes it) and marks
// the policies whose namespaceSelectors could match it before or after.
func (m *Model) SetNamespace(name string, ns *corev1.Namespace) int {
	old, had := m.namespaces[name]
	var nu labels.Set
	if ns != nil {
		nu = labels.Set(ns.Labels)
		if nu == nil {
			nu = labels.Set{}
		}
		if had && labels.Equals(old, nu) {
			return 0
		}
		m.namespaces[name] = nu
	} else {
		if !had {
			return 0
		}
		delete(m.namespaces, name)
	}
	if len(m.podsByNS[name]) == 0 {
		return 0 // no pods there: no peer changes
	}
	// Only active policies yield rules whose peers it could change.
	n := 0
	for pk, cp := range m.index.nsSel {
		if !m.dirty[pk] && ((had && mayIncludeNamespace(cp, old)) || (nu != nil && mayIncludeNamespace(cp, nu))) {
			n += m.mark(pk)
		}
	}
	return n
}

// SetPolicy records np (nil with its key to delete it). A policy that
// cannot be compiled is treated as deleted (and the error returned).
func (m *Model) SetPolicy(key string, np *networkingv1.NetworkPolicy) error {
	m.dirty[key] = true
	if old := m.policies[key]; old != nil {
		m.index.remove(key, old)
		delete(m.policies, key)
	}
	if np == nil {
		return nil
	}
	cp, err := compilePolicy(np)
	if err != nil {
		return err
	}
	m.policies[key] = cp
	m.index.add(key, cp, m.hasTarget(cp))
	return nil
}

// Dirty returns how many policies await recomputation.
func (m *Model) Dirty() int { return len(m.dirty) }

// Plan is a computed change: the pipeline change plus what the model
// records once it is realized.
type Plan struct {
	Change pipeline.PolicyChange
	// Warnings are per policy key the problems found in recomputed
	// policies (ipBlock excepts of the other address family ignored).
	Warnings map[string][]string

	results   map[string]*policyResult // recomputed policies (nil: gone)
	isolation *pipeline.Isolation
	allocated []uint32
	freed     []uint32
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool {
	return len(p.Change.Upsert) == 0 && len(p.Change.Delete) == 0 && p.Change.Isolation == nil
}

// Compute recomputes the dirty policies and returns the difference to the
// realized state. The model does not change until Commit; a plan that is
// not committed must be handed to Abort.
func (m *Model) Compute() (*Plan, error) {
	plan := &Plan{results: map[string]*policyResult{}, Warnings: map[string][]string{}}
	keys := make([]string, 0, len(m.dirty))
	for k := range m.dirty {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, pk := range keys {
		var res *policyResult
		if cp := m.policies[pk]; cp != nil {
			res = m.computePolicy(cp)
			if len(res.warnings) > 0 {
				plan.Warnings[pk] = res.warnings
			}
		}
		plan.results[pk] = res
		old := m.realized[pk]
		var oldRules map[string]pipeline.PolicyRule
		if old != nil {
			oldRules = old.rules
		}
		var newRules map[string]pipeline.PolicyRule
		if res != nil {
			newRules = res.rules
		}
		rks := make([]string, 0, len(newRules))
		for rk := range newRules {
			rks = append(rks, rk)
		}
		sort.Strings(rks)
		for _, rk := range rks {
			r := newRules[rk]
			if o, ok := oldRules[rk]; ok {
				r.ID = o.ID
				newRules[rk] = r
				if ruleEqual(o, r) {
					continue
				}
			} else {
				id, err := m.ids.get()
				if err != nil {
					m.Abort(plan)
					return nil, err
				}
				plan.allocated = append(plan.allocated, id)
				r.ID = id
				newRules[rk] = r
			}
			plan.Change.Upsert = append(plan.Change.Upsert, r)
		}
		for rk, o := range oldRules {
			if _, ok := newRules[rk]; !ok {
				plan.Change.Delete = append(plan.Change.Delete, o.ID)
				plan.freed = append(plan.freed, o.ID)
			}
		}
	}
	slices.Sort(plan.Change.Delete)
	iso := m.isolationWith(plan.results)
	if m.isolation == nil || !isolationEqual(*m.isolation, iso) {
		plan.isolation = &iso
		plan.Change.Isolation = &iso
	}
	return plan, nil
}

// Commit records plan as realized.
func (m *Model) Commit(plan *Plan) {
	for pk, res := range plan.results {
		// An empty result (most policies: no local target) is not kept:
		// it would only cost a walk per Compute.
		if res == nil || (len(res.rules) == 0 && len(res.ingress) == 0 && len(res.egress) == 0) {
			delete(m.realized, pk)
		} else {
			res.warnings = nil
			m.realized[pk] = res
		}
		delete(m.dirty, pk)
	}
	for _, id := range plan.freed {
		m.ids.put(id)
	}
	if plan.isolation != nil {
		m.isolation = plan.isolation
	}
}

// Abort returns the IDs plan allocated; the dirty policies stay dirty.
func (m *Model) Abort(plan *Plan) {
	for _, id := range plan.allocated {
		m.ids.put(id)
	}
	plan.allocated = nil
}

// MarkAllDirty schedules every known and realized policy for
// recomputation and forces the isolation to be sent again.
func (m *Model) MarkAllDirty() {
	for k := range m.policies {
		m.dirty[k] = true
	}
	for k := range m.realized {
		m.dirty[k] = true
	}
	m.isolation = nil
}

// Rules returns the number of realized rules.
func (m *Model) Rules() int {
	n := 0
	for _, r := range m.realized {
		n += len(r.rules)
	}
	return n
}

func (m *Model) isolationWith(changed map[string]*policyResult) pipeline.Isolation {
	in, eg := map[uint32]pipeline.LocalPod{}, map[uint32]pipeline.LocalPod{}
	add := func(r *policyResult) {
		for _, p := range r.ingress {
			in[p.OFPort] = p
		}
		for _, p := range r.egress {
			eg[p.OFPort] = p
		}
	}
	for pk, r := range m.realized {
		if _, ok := changed[pk]; !ok {
			add(r)
		}
	}
	for _, r := range changed {
		if r != nil {
			add(r)
		}
	}
	return pipeline.Isolation{Ingress: sortedPods(in), Egress: sortedPods(eg)}
}

// IsolationIndex returns, per direction and local pod OpenFlow port, the
// policies ("namespace/name", sorted) that isolate the pod as realized by
// the last Commit — what an operator wants to know about a dropped packet,
// including policies without any allow rule (a default deny).
func (m *Model) IsolationIndex() map[pipeline.Direction]map[uint32][]string {
	idx := map[pipeline.Direction]map[uint32][]string{pipeline.Ingress: {}, pipeline.Egress: {}}
	for pk, r := range m.realized {
		for _, p := range r.ingress {
			idx[pipeline.Ingress][p.OFPort] = append(idx[pipeline.Ingress][p.OFPort], pk)
		}
		for _, p := range r.egress {
			idx[pipeline.Egress][p.OFPort] = append(idx[pipeline.Egress][p.OFPort], pk)
		}
	}
	for _, byPort := range idx {
		for _, pols := range byPort {
			slices.Sort(pols)
		}
	}
	return idx
}

func sortedPods(m map[uint32]pipeline.LocalPod) []pipeline.LocalPod {
	out := make([]pipeline.LocalPod, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b pipeline.LocalPod) int { return int(a.OFPort) - int(b.OFPort) })
	return out
}

// computePolicy resolves cp against the current pods and namespaces.
func (m *Model) computePolicy(cp *compiledPolicy) *policyResult {
	res := &policyResult{rules: map[string]pipeline.PolicyRule{}, warnings: cp.warnings}
	var targets []*podInfo
	for _, p := range m.targets[cp.namespace] {
		if p.target() && cp.podSel.Matches(p.labels) {
			targets = append(targets, p)
		}
	}
	if len(targets) == 0 {
		return res
	}
	slices.SortFunc(targets, func(a, b *podInfo) int { return int(a.ofport) - int(b.ofport) })
	local := localPods(targets)
	if cp.ingress {
		res.ingress = local
	}
	if cp.egress {
		res.egress = local
	}
	for i := range cp.rules {
		m.computeRule(cp, &cp.rules[i], targets, local, res.rules)
	}
	return res
}

func localPods(ps []*podInfo) []pipeline.LocalPod {
	out := make([]pipeline.LocalPod, len(ps))
	for i, p := range ps {
		out[i] = pipeline.LocalPod{IP: p.ip(), OFPort: p.ofport}
	}
	return out
}

// computeRule adds the PolicyRules of one Kubernetes rule to out, keyed by
// "<uid>/<direction>/<index>/<part>": part "a" (no ports), "n" (the
// numeric ports) or "p:<ports>" (named ports resolved to <ports>).
func (m *Model) computeRule(cp *compiledPolicy, r *compiledRule, targets []*podInfo, local []pipeline.LocalPod,
	out map[string]pipeline.PolicyRule) {
	dirName := strings.ToLower(r.dir.String())
	base := cp.uid + "/" + dirName + "/" + strconv.Itoa(r.index) + "/"
	name := cp.key + "/" + dirName + "/" + strconv.Itoa(r.index)
	var peerPods []*podInfo
	var blocks []*net.IPNet
	all := r.peers == nil
	if !all {
		peerPods, blocks = m.resolvePeers(cp, r)
	}
	peersOf := func(pods []*podInfo, blocks []*net.IPNet) []*net.IPNet {
		ps := make([]*net.IPNet, 0, len(pods)+len(blocks))
		for _, p := range pods {
			if p.has4 {
				ps = append(ps, &net.IPNet{IP: p.ip(), Mask: net.CIDRMask(32, 32)})
			}
			if p.has6 {
				ps = append(ps, &net.IPNet{IP: p.ipv6(), Mask: net.CIDRMask(128, 128)})
			}
		}
		ps = append(ps, blocks...)
		return normPeers(ps)
	}
	type part struct {
		key  string
		rule pipeline.PolicyRule
	}
	var parts []part
	add := func(key string, pods []pipeline.LocalPod, peers []*net.IPNet, ports []pipeline.PortRange) {
		if peers != nil && len(peers) == 0 {
			return // matches nothing
		}
		parts = append(parts, part{key: key, rule: pipeline.PolicyRule{Direction: r.dir, Pods: pods, Peers: peers,
			Ports: ports}})
	}
	var allPeers []*net.IPNet
	if !all {
		allPeers = peersOf(peerPods, blocks)
	}
	switch {
	case r.anyPort:
		add("a", local, allPeers, nil)
	default:
		if len(r.numeric) > 0 {
			add("n", local, allPeers, r.numeric)
		}
		if len(r.named) == 0 {
			break
		}
		if r.dir == pipeline.Ingress {
			// Named ports resolve on the targets: group them by result.
			groups := map[string][]*podInfo{}
			ports := map[string][]pipeline.PortRange{}
			for _, t := range targets {
				pr := resolveNamed(r.named, t)
				if len(pr) == 0 {
					continue
				}
				k := portsKey(pr)
				groups[k] = append(groups[k], t)
				ports[k] = pr
			}
			for k, g := range groups {
				add("p:"+k, localPods(g), allPeers, ports[k])
			}
			break
		}
		// Egress: named ports resolve on the peer pods (ipBlocks match
		// nothing); a rule without "to" resolves on every pod.
		cands := peerPods
		if all {
			cands = m.allEligible()
		}
		groups := map[string][]*podInfo{}
		ports := map[string][]pipeline.PortRange{}
		for _, p := range cands {
			pr := resolveNamed(r.named, p)
			if len(pr) == 0 {
				continue
			}
			k := portsKey(pr)
			groups[k] = append(groups[k], p)
			ports[k] = pr
		}
		for k, g := range groups {
			add("p:"+k, local, peersOf(g, nil), ports[k])
		}
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].key < parts[j].key })
	for i, p := range parts {
		p.rule.Name = name
		if len(parts) > 1 {
			p.rule.Name += "/" + strconv.Itoa(i)
		}
		out[base+p.key] = p.rule
	}
}

// resolvePeers returns the eligible pods and the ipBlock CIDRs of r's peers.
func (m *Model) resolvePeers(cp *compiledPolicy, r *compiledRule) ([]*podInfo, []*net.IPNet) {
	var pods []*podInfo
	var blocks []*net.IPNet
	seen := map[*podInfo]bool{}
	for i := range r.peers {
		p := &r.peers[i]
		if p.ipBlock {
			blocks = append(blocks, p.blocks...)
			continue
		}
		scan := func(ns string, byName map[string]*podInfo) {
			for _, pod := range byName {
				if pod.eligible() && !seen[pod] && (p.podSel == nil || p.podSel.Matches(pod.labels)) {
					seen[pod] = true
					pods = append(pods, pod)
				}
			}
		}
		if p.nsSel == nil {
			scan(cp.namespace, m.podsByNS[cp.namespace])
			continue
		}
		for ns, byName := range m.podsByNS {
			if p.nsSel.Matches(m.namespaces[ns]) {
				scan(ns, byName)
			}
		}
	}
	return pods, blocks
}

func (m *Model) allEligible() []*podInfo {
	out := make([]*podInfo, 0, len(m.pods))
	for _, p := range m.pods {
		if p.eligible() {
			out = append(out, p)
		}
	}
	return out
}

// resolveNamed returns the ports named ports resolve to on pod.
func resolveNamed(named []namedPort, pod *podInfo) []pipeline.PortRange {
	var out []pipeline.PortRange
	for _, n := range named {
		for _, cp := range pod.ports {
			if cp.name == n.name && cp.protocol == n.protocol {
				out = append(out, pipeline.PortRange{Protocol: n.protocol, From: cp.port, To: cp.port})
			}
		}
	}
	return normPorts(out)
}

func portsKey(ps []pipeline.PortRange) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d:%d-%d", p.Protocol, p.From, p.To)
	}
	return b.String()
}

// normPeers sorts and deduplicates peers in 4-byte (IPv4) or 16-byte
// (IPv6) form, IPv4 first.
func normPeers(ps []*net.IPNet) []*net.IPNet {
	for i, p := range ps {
		if ip4 := p.IP.To4(); ip4 != nil && len(p.IP) != 4 {
			ps[i] = &net.IPNet{IP: ip4, Mask: p.Mask}
		}
	}
	slices.SortFunc(ps, func(a, b *net.IPNet) int {
		if len(a.IP) != len(b.IP) {
			return len(a.IP) - len(b.IP)
		}
		if c := bytes.Compare(a.IP, b.IP); c != 0 {
			return c
		}
		return bytes.Compare(a.Mask, b.Mask)
	})
	return slices.CompactFunc(ps, func(a, b *net.IPNet) bool { return a.IP.Equal(b.IP) && bytes.Equal(a.Mask, b.Mask) })
}

func ruleEqual(a, b pipeline.PolicyRule) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Direction == b.Direction &&
		slices.EqualFunc(a.Pods, b.Pods, podEqual) &&
		(a.Peers == nil) == (b.Peers == nil) &&
		slices.EqualFunc(a.Peers, b.Peers, func(x, y *net.IPNet) bool {
			return x.IP.Equal(y.IP) && bytes.Equal(x.Mask, y.Mask)
		}) &&
		(a.Ports == nil) == (b.Ports == nil) && slices.Equal(a.Ports, b.Ports)
}

func podEqual(a, b pipeline.LocalPod) bool { return a.OFPort == b.OFPort && a.IP.Equal(b.IP) }

func isolationEqual(a, b pipeline.Isolation) bool {
	return slices.EqualFunc(a.Ingress, b.Ingress, podEqual) && slices.EqualFunc(a.Egress, b.Egress, podEqual)
}

// idAllocator hands out rule IDs: non-zero, below 2^32, reused after
// release.
type idAllocator struct {
	next uint64
	free []uint32
}

var errIDsExhausted = errors.New("policy: no rule ID left")

func (a *idAllocator) get() (uint32, error) {
	if n := len(a.free); n > 0 {
		id := a.free[n-1]
		a.free = a.free[:n-1]
		return id, nil
	}
	if a.next >= 1<<32 {
		return 0, errIDsExhausted
	}
	id := uint32(a.next)
	a.next++
	return id, nil
}

func (a *idAllocator) put(id uint32) { a.free = append(a.free, id) }
