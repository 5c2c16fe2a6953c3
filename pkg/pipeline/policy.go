package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"

	"github.com/weirnet/weir/pkg/openflow"
	"k8s.io/klog/v2"
)

// NetworkPolicy realization: PolicyRules (policy_model.go) become
// conjunctive flows in EgressRule and IngressRule, Isolation becomes default
// drops in EgressDefaultRule and IngressDefaultRule.
//
// A rule has up to three dimensions: the local pods it applies to (egress:
// ip,nw_src=<pod IP>; ingress: ip,reg1=<pod ofport>, the output port
// L2Forwarding chose), the peers (egress nw_dst, ingress nw_src) and the
// ports (tcp/udp/sctp with a masked tp_dst).
//
// On a dual-stack pipeline (ipv6Enabled) a rule whose peers include IPv6
// networks, or that allows any peer, also gets the ipv6 twins of its
// flows in the same clauses: applied-to egress ipv6,in_port=<pod ofport>
// (SpoofGuard already pinned the pod's IPv6 source to its port), ingress
// ipv6,reg1=<pod ofport>; peers ipv6_dst / ipv6_src; ports
// tcp6/udp6/sctp6. A packet is of one family, so it can only complete a
// conjunction with the flows of its family; the IPv4 flows of a rule are
// those of an IPv4-only pipeline, and a rule whose peers are all of one
// family gets the flows of that family only. Without IPv6 on the
// pipeline, IPv6 peers make no flows (no local pod has IPv6 there).
//
// On an IPv6-only pipeline (no IPv4 configuration) it is the other way
// round: IPv4 peers make no flows, and a rule's flows are the ipv6 ones
// above only. A local pod without an IPv4 address (LocalPod.IP nil or its
// IPv6 address: an IPv6-only pod, on an IPv6-only or a dual-stack
// pipeline) gets only the IPv6 applied-to flows and default drops, which
// match its port and never its address. A packet is allowed by the rule
// when it matches one flow of every dimension: each dimension's flows carry
// conjunction(<rule ID>, k/n), and the flow conj_id=<rule ID> (cookie
// category Policy, object rule ID: its counters are the rule's) sends the
// packet on, past the table's default-rule table. Dimensions that are "any"
// are left out; a rule left with one dimension is a plain allow flow (OVS
// needs two clauses for a conjunction). So the flow count is the sum of the
// dimensions' sizes, never their product.
//
// NetworkPolicies are unordered and allow-only, their union is what is
// allowed: every clause flow has priority prioPolicyConj and every plain
// flow prioPolicyPlain. OVS holds one flow per (table, priority, match), so
// rules sharing a match (one pod in several rules, the same peer) share one
// flow with several conjunction actions; matchState counts the users of
// every match and the flow is rewritten, atomically with the rest of the
// change, when they come and go.
//
// Every ApplyPolicy bumps the policy generation, stored in ct_mark bits
// 8..31 when connections are committed. Only replies, related packets and
// packets of connections committed under the current generation skip the
// rule tables; an established connection from before the change is checked
// again like a new one and re-committed with the new generation if still
// allowed, or dropped by the default drop if not.

// PolicyChange is one atomic change of the node's policy.
type PolicyChange struct {
	// Upsert adds rules or replaces the rules with the same ID.
	Upsert []PolicyRule
	// Delete removes rules by ID (unknown IDs are ignored).
	Delete []uint32
	// Isolation replaces the isolated pods; nil leaves them unchanged.
	Isolation *Isolation
}

// Counters are a policy rule's packet and byte counts.
type Counters struct {
	Packets, Bytes uint64
}

// matchKind is the kind of one policy match.
type matchKind uint8

const (
	matchSrcNet  matchKind = iota + 1 // ip,nw_src=<prefix>
	matchDstNet                       // ip,nw_dst=<prefix>
	matchOutPort                      // ip,reg1=<ofport> (v6: ipv6,reg1=<ofport>)
	matchL4                           // tcp|udp|sctp[,tp_dst=<port>/<mask>] (v6: tcp6|udp6|sctp6)
	matchInPort                       // ipv6,in_port=<ofport> (egress applied-to of IPv6)
)

// policyMatch is one (table, priority, match) of a policy flow; it is
// comparable, the key of the shared-flow map.
type policyMatch struct {
	table  uint8
	prio   uint16
	kind   matchKind
	prefix netip.Prefix
	ofport uint32
	proto  Protocol
	port   uint16
	mask   uint16 // 0: any port of proto
	// v6 selects the IPv6 twin of matchOutPort and matchL4 (the net
	// matches take the family of prefix; matchInPort is IPv6 only).
	v6 bool
}

func (m policyMatch) String() string {
	switch m.kind {
	case matchSrcNet:
		return fmt.Sprintf("%d/%d/src/%s", m.table, m.prio, m.prefix)
	case matchDstNet:
		return fmt.Sprintf("%d/%d/dst/%s", m.table, m.prio, m.prefix)
	case matchOutPort:
		if m.v6 {
			return fmt.Sprintf("%d/%d/out6/%d", m.table, m.prio, m.ofport)
		}
		return fmt.Sprintf("%d/%d/out/%d", m.table, m.prio, m.ofport)
	case matchInPort:
		return fmt.Sprintf("%d/%d/in6/%d", m.table, m.prio, m.ofport)
	}
	if m.v6 {
		return fmt.Sprintf("%d/%d/l46/%d/%d/%#x", m.table, m.prio, m.proto, m.port, m.mask)
	}
	return fmt.Sprintf("%d/%d/l4/%d/%d/%#x", m.table, m.prio, m.proto, m.port, m.mask)
}

// comparePolicyMatch orders matches by kind, then family (IPv4 first),
// then value.
func comparePolicyMatch(a, b policyMatch) int {
	return cmp.Or(cmp.Compare(a.table, b.table), cmp.Compare(a.prio, b.prio), cmp.Compare(a.kind, b.kind),
		cmp.Compare(boolInt(a.v6), boolInt(b.v6)), a.prefix.Addr().Compare(b.prefix.Addr()), cmp.Compare(a.prefix.Bits(), b.prefix.Bits()),
		cmp.Compare(a.ofport, b.ofport), cmp.Compare(a.proto, b.proto), cmp.Compare(a.port, b.port), cmp.Compare(a.mask, b.mask))
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// builder returns the flow builder of m with cookie c.
func (m policyMatch) builder(c uint64) *openflow.FlowBuilder {
	b := openflow.NewFlow(m.table, m.prio).Cookie(c)
	switch m.kind {
	case matchSrcNet:
		b.MatchProtocol(ipProtocol(m.prefix.Addr().Is6())).MatchSrcNet(prefixNet(m.prefix))
	case matchDstNet:
		b.MatchProtocol(ipProtocol(m.prefix.Addr().Is6())).MatchDstNet(prefixNet(m.prefix))
	case matchOutPort:
		b.MatchProtocol(ipProtocol(m.v6)).MatchRegBits(outPortField.match(m.ofport))
	case matchInPort:
		b.MatchProtocol(openflow.ProtocolIPv6).MatchInPort(m.ofport)
	case matchL4:
		b.MatchProtocol(l4Protocol(m.proto, m.v6))
		switch m.mask {
		case 0:
		case 0xffff:
			b.MatchDstPort(m.port)
		default:
			b.MatchDstPortMasked(m.port, m.mask)
		}
	}
	return b
}

func prefixNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

func ipProtocol(v6 bool) openflow.Protocol {
	if v6 {
		return openflow.ProtocolIPv6
	}
	return openflow.ProtocolIP
}

func l4Protocol(p Protocol, v6 bool) openflow.Protocol {
	switch {
	case p == ProtocolUDP && v6:
		return openflow.ProtocolUDPv6
	case p == ProtocolUDP:
		return openflow.ProtocolUDP
	case p == ProtocolSCTP && v6:
		return openflow.ProtocolSCTPv6
	case p == ProtocolSCTP:
		return openflow.ProtocolSCTP
	case v6:
		return openflow.ProtocolTCPv6
	}
	return openflow.ProtocolTCP
}

// conjRef is one conjunction action: clause k of n of rule id.
type conjRef struct {
	id   uint32
	k, n uint8
}

// matchState is the users of one shared policy flow: conjunction clauses
// (priority prioPolicyConj) or rules using it as their plain allow flow
// (prioPolicyPlain).
type matchState struct {
	conjs map[conjRef]struct{}
	plain map[uint32]struct{}
}

func (s *matchState) empty() bool { return s == nil || len(s.conjs) == 0 && len(s.plain) == 0 }

func (s *matchState) clone() *matchState {
	if s == nil {
		return nil
	}
	return &matchState{conjs: maps.Clone(s.conjs), plain: maps.Clone(s.plain)}
}

// ruleState is an installed rule and the matches it uses.
type ruleState struct {
	rule    PolicyRule
	dims    [][]policyMatch // nil: the rule matches nothing
	conj    bool            // realized as a conjunction (>= 2 dimensions)
	matches []policyMatch   // every match of every dimension
}

// policyState is the pipeline's policy: rules, shared flows, isolation and
// the generation.
type policyState struct {
	rules      map[uint32]*ruleState
	matches    map[policyMatch]*matchState
	isolation  Isolation
	generation uint32
}

func newPolicyState() policyState {
	return policyState{rules: map[uint32]*ruleState{}, matches: map[policyMatch]*matchState{}}
}

// Flow cache owners of policy flows.
const ownerIsolation = "policy/isolation"

func ruleOwner(id uint32) string      { return fmt.Sprintf("policy/rule/%d", id) }
func matchOwner(m policyMatch) string { return "policy/match/" + m.String() }
func (p *Pipeline) sharedCookie() uint64 {
	return uint64(openflow.MakeCookie(p.cfg.Round, CategoryPolicy, 0))
}

// PolicyRuleCookie returns the cookie of rule id's own flows (its conj_id
// flow or plain allow flow) in round.
func PolicyRuleCookie(round uint8, id uint32) openflow.Cookie {
	return openflow.MakeCookie(round, CategoryPolicy, uint64(id))
}

// ruleTables returns the rule table of direction d and the table its
// allowed packets go to.
func ruleTables(d Direction) (table, next uint8) {
	if d == Egress {
		return EgressRule, L3Forwarding
	}
	return IngressRule, ConntrackCommit
}

// ruleDimensions validates r and returns its dimensions (applied-to, peers,
// ports; "any" dimensions left out), each deduplicated and sorted; nil
// dimensions mean the rule matches nothing. ipv4 and ipv6 are the
// pipeline's families. With ipv6 (a dual-stack or IPv6-only pipeline) the
// dimensions hold the IPv6 twins too where the rule can match IPv6 (any
// peer, or some IPv6 peer); without it IPv6 peers are left out, as IPv4
// peers are without ipv4.
func ruleDimensions(r PolicyRule, ipv4, ipv6 bool) ([][]policyMatch, error) {
	if r.ID == 0 {
		return nil, errors.New("policy rule ID 0 is reserved")
	}
	if r.Direction != Ingress && r.Direction != Egress {
		return nil, fmt.Errorf("policy rule %d (%s): invalid direction %d", r.ID, r.Name, r.Direction)
	}
	table, _ := ruleTables(r.Direction)
	peerKind := matchDstNet
	if r.Direction == Ingress {
		peerKind = matchSrcNet
	}
	var appliedTo, peers, ports []policyMatch
	var peers6 int
	for _, n := range r.Peers {
		if n == nil || n.IP.To4() == nil && len(n.IP) != net.IPv6len {
			return nil, fmt.Errorf("policy rule %d (%s): peer %v is not an IP network", r.ID, r.Name, n)
		}
		ones, bits := n.Mask.Size()
		if n.IP.To4() == nil {
			if bits != 128 {
				return nil, fmt.Errorf("policy rule %d (%s): invalid peer mask %v", r.ID, r.Name, n)
			}
			if !ipv6 {
				continue // no IPv6 here: the peer cannot match
			}
			a := netip.AddrFrom16([16]byte(n.IP))
			peers = append(peers, policyMatch{table: table, kind: peerKind, prefix: netip.PrefixFrom(a, ones).Masked()})
			peers6++
			continue
		}
		if bits != 32 && bits != 128 || bits == 128 && ones < 96 {
			return nil, fmt.Errorf("policy rule %d (%s): invalid peer mask %v", r.ID, r.Name, n)
		}
		if !ipv4 {
			continue // no IPv4 here: the peer cannot match
		}
		if bits == 128 {
			ones -= 96
		}
		a, _ := netip.AddrFromSlice(n.IP.To4())
		peers = append(peers, policyMatch{table: table, kind: peerKind, prefix: netip.PrefixFrom(a, ones).Masked()})
	}
	// The families the rule can match. IPv4 needs a pod with an IPv4
	// address too: without one (IPv6-only pods on a dual-stack node) the
	// IPv4 port flows could never complete the conjunction.
	fam4 := ipv4 && (r.Peers == nil || len(peers) > peers6) &&
		slices.ContainsFunc(r.Pods, func(pod LocalPod) bool { return pod.IP.To4() != nil })
	fam6 := ipv6 && (r.Peers == nil || peers6 > 0)
	for _, pod := range r.Pods {
		if err := checkLocalPodFamily(pod, ipv4, ipv6); err != nil {
			return nil, fmt.Errorf("policy rule %d (%s): %w", r.ID, r.Name, err)
		}
		ip4 := pod.IP.To4()
		if ip4 == nil {
			// An IPv6-only pod: only its IPv6 flows (below), by port.
			if pod.OFPort == 0 {
				return nil, fmt.Errorf("policy rule %d (%s): pod %v without OpenFlow port", r.ID, r.Name, pod.IP)
			}
		} else if r.Direction == Egress {
			if fam4 {
				a, _ := netip.AddrFromSlice(ip4)
				appliedTo = append(appliedTo, policyMatch{table: table, kind: matchSrcNet, prefix: netip.PrefixFrom(a, 32)})
			}
		} else if pod.OFPort == 0 {
			return nil, fmt.Errorf("policy rule %d (%s): pod %v without OpenFlow port", r.ID, r.Name, pod.IP)
		} else if fam4 {
			appliedTo = append(appliedTo, policyMatch{table: table, kind: matchOutPort, ofport: pod.OFPort})
		}
		if !fam6 {
			continue
		}
		if pod.OFPort == 0 {
			return nil, fmt.Errorf("policy rule %d (%s): pod %v without OpenFlow port", r.ID, r.Name, pod.IP)
		}
		if r.Direction == Egress {
			appliedTo = append(appliedTo, policyMatch{table: table, kind: matchInPort, ofport: pod.OFPort})
		} else {
			appliedTo = append(appliedTo, policyMatch{table: table, kind: matchOutPort, ofport: pod.OFPort, v6: true})
		}
	}
	var fams []bool
	if fam4 {
		fams = append(fams, false)
	}
	if fam6 {
		fams = append(fams, true)
	}
	for _, pr := range r.Ports {
		switch pr.Protocol {
		case ProtocolTCP, ProtocolUDP, ProtocolSCTP:
		default:
			return nil, fmt.Errorf("policy rule %d (%s): unsupported protocol %d", r.ID, r.Name, pr.Protocol)
		}
		from, to := pr.From, pr.To
		if to == 0 {
			to = from // a single port given as From only
		}
		if from > to {
			return nil, fmt.Errorf("policy rule %d (%s): port range %d-%d is empty", r.ID, r.Name, pr.From, pr.To)
		}
		for _, v6 := range fams {
			if from == 0 && to == 0 {
				ports = append(ports, policyMatch{table: table, kind: matchL4, proto: pr.Protocol, v6: v6})
				continue
			}
			for _, pm := range PortRangeMasks(from, to) {
				ports = append(ports, policyMatch{table: table, kind: matchL4, proto: pr.Protocol, port: pm.Port, mask: pm.Mask, v6: v6})
			}
		}
	}
	dims := [][]policyMatch{appliedTo}
	if r.Peers != nil {
		dims = append(dims, peers)
	}
	if r.Ports != nil {
		dims = append(dims, ports)
	}
	for i, d := range dims {
		if len(d) == 0 {
			return nil, nil // a dimension matching nothing: no flows
		}
		slices.SortFunc(d, comparePolicyMatch)
		dims[i] = slices.Compact(d)
	}
	// A port dimension with "any port" of a protocol next to port matches
	// of the same protocol is redundant but harmless; it is kept as given.
	return dims, nil
}

// checkLocalPodFamily checks that the pipeline serves pod's family: a pod
// with an IPv4 address needs the IPv4 configuration, one without (an
// IPv6-only pod, whose IP is nil or its IPv6 address) the IPv6 one.
func checkLocalPodFamily(pod LocalPod, ipv4, ipv6 bool) error {
	switch {
	case pod.IP.To4() != nil && !ipv4:
		return fmt.Errorf("pod IP %v is IPv4 but the pipeline has no IPv4 configuration", pod.IP)
	case pod.IP.To4() == nil && !ipv6:
		return fmt.Errorf("pod IP %v is not IPv4 and the pipeline has no IPv6 configuration", pod.IP)
	case pod.IP != nil && pod.IP.To4() == nil && len(pod.IP) != net.IPv6len:
		return fmt.Errorf("pod IP %v is not an IP address", pod.IP)
	}
	return nil
}

// PortMask is one value/mask block of tp_dst.
type PortMask struct {
	Port, Mask uint16
}

// PortRangeMasks returns the minimal list of value/mask blocks covering
// exactly the ports from..to (inclusive; from <= to): the range is split
// into maximal aligned power-of-two blocks, smallest port first.
func PortRangeMasks(from, to uint16) []PortMask {
	var out []PortMask
	lo, hi := uint32(from), uint32(to)
	for lo <= hi {
		// The largest block starting at lo that is aligned and fits.
		size := uint32(1)
		for size < 1<<16 && lo&(size*2-1) == 0 && lo+size*2-1 <= hi {
			size *= 2
		}
		out = append(out, PortMask{Port: uint16(lo), Mask: uint16(0xffff &^ (size - 1))})
		lo += size
	}
	return out
}

// ApplyPolicy applies c to the switch in one atomic OpenFlow bundle (rule
// flows, shared clause flows, default drops and the new policy generation
// together: no packet sees half a change) and bumps the policy generation,
// so that established connections are checked against the new policy. On
// error nothing changed.
func (p *Pipeline) ApplyPolicy(ctx context.Context, c PolicyChange) error {
	p.policyMu.Lock()
	defer p.policyMu.Unlock()

	type upsert struct {
		rule PolicyRule
		dims [][]policyMatch
	}
	ups := make([]upsert, 0, len(c.Upsert))
	seen := map[uint32]bool{}
	for _, r := range c.Upsert {
		if seen[r.ID] {
			return fmt.Errorf("policy change: rule %d given twice", r.ID)
		}
		seen[r.ID] = true
		dims, err := ruleDimensions(r, p.ipv4Enabled(), p.ipv6Enabled())
		if err != nil {
			return fmt.Errorf("policy change: %w", err)
		}
		ups = append(ups, upsert{r, dims})
	}
	if c.Isolation != nil {
		for _, pods := range [][]LocalPod{c.Isolation.Ingress, c.Isolation.Egress} {
			for _, pod := range pods {
				if pod.OFPort == 0 {
					return fmt.Errorf("policy change: isolated pod %v needs a port", pod.IP)
				}
				if err := checkLocalPodFamily(pod, p.ipv4Enabled(), p.ipv6Enabled()); err != nil {
					return fmt.Errorf("policy change: isolated pod (port %d): %w", pod.OFPort, err)
				}
			}
		}
	}

	p.mu.Lock()
	st := &p.policy
	// Undo log: the previous state of every touched match and rule.
	savedMatches := map[policyMatch]*matchState{}
	savedRules := map[uint32]*ruleState{}
	touch := func(m policyMatch) *matchState {
		ms := st.matches[m]
		if _, ok := savedMatches[m]; !ok {
			savedMatches[m] = ms.clone()
		}
		if ms == nil {
			ms = &matchState{conjs: map[conjRef]struct{}{}, plain: map[uint32]struct{}{}}
			st.matches[m] = ms
		}
		return ms
	}
	touchRule := func(id uint32) {
		if _, ok := savedRules[id]; !ok {
			savedRules[id] = st.rules[id]
		}
	}
	remove := func(id uint32) {
		rs, ok := st.rules[id]
		if !ok {
			return
		}
		touchRule(id)
		for k, dim := range rs.dims {
			for _, m := range dim {
				ms := touch(m)
				delete(ms.conjs, conjRef{id, uint8(k + 1), uint8(len(rs.dims))})
				delete(ms.plain, id)
			}
		}
		delete(st.rules, id)
	}
	for _, id := range c.Delete {
		remove(id)
	}
	for _, u := range ups {
		remove(u.rule.ID)
	}
	for _, u := range ups {
		id := u.rule.ID
		touchRule(id)
		rs := &ruleState{rule: u.rule, conj: len(u.dims) >= 2}
		prio := prioPolicyPlain
		if rs.conj {
			prio = prioPolicyConj
		}
		for k, dim := range u.dims {
			for i := range dim {
				dim[i].prio = prio
				ms := touch(dim[i])
				if rs.conj {
					ms.conjs[conjRef{id, uint8(k + 1), uint8(len(u.dims))}] = struct{}{}
				} else {
					ms.plain[id] = struct{}{}
				}
				rs.matches = append(rs.matches, dim[i])
			}
		}
		rs.dims = u.dims
		st.rules[id] = rs
	}
	oldIsolation, oldGen := st.isolation, st.generation
	if c.Isolation != nil {
		st.isolation = Isolation{Ingress: slices.Clone(c.Isolation.Ingress), Egress: slices.Clone(c.Isolation.Egress)}
	}
	st.generation = st.generation%maxGeneration + 1

	// The flows of every touched owner.
	owners := map[string][]*openflow.Flow{}
	var err error
	for m, ms := range st.matches {
		if _, ok := savedMatches[m]; !ok {
			continue
		}
		var f *openflow.Flow
		if f, err = p.matchFlow(m, ms); err != nil {
			break
		}
		if f == nil {
			owners[matchOwner(m)] = nil
		} else {
			owners[matchOwner(m)] = []*openflow.Flow{f}
		}
	}
	for id := range savedRules {
		if err != nil {
			break
		}
		var fl []*openflow.Flow
		if rs := st.rules[id]; rs != nil && rs.conj {
			var f *openflow.Flow
			if f, err = p.conjFlow(rs.rule); err != nil {
				break
			}
			fl = append(fl, f)
		}
		owners[ruleOwner(id)] = fl
	}
	if err == nil && c.Isolation != nil {
		owners[ownerIsolation], err = p.isolationFlows(st.isolation)
	}
	if err == nil {
		owners[ownerBase], err = p.baseFlows(st.generation)
	}
	gen := st.generation
	p.mu.Unlock()

	if err == nil {
		err = p.sw.SyncOwners(ctx, owners)
	}
	if err != nil {
		p.mu.Lock()
		for m, ms := range savedMatches {
			if ms.empty() {
				delete(st.matches, m)
			} else {
				st.matches[m] = ms
			}
		}
		for id, rs := range savedRules {
			if rs == nil {
				delete(st.rules, id)
			} else {
				st.rules[id] = rs
			}
		}
		st.isolation, st.generation = oldIsolation, oldGen
		p.mu.Unlock()
		return fmt.Errorf("applying policy change: %w", err)
	}
	p.mu.Lock()
	for m := range savedMatches {
		if st.matches[m].empty() {
			delete(st.matches, m)
		}
	}
	nRules := len(st.rules)
	p.mu.Unlock()
	klog.V(2).InfoS("Applied policy change", "upserted", len(c.Upsert), "deleted", len(c.Delete),
		"isolation", c.Isolation != nil, "rules", nRules, "generation", gen, "owners", len(owners))
	return nil
}

// matchFlow returns the shared flow of m, or nil if nothing uses it.
func (p *Pipeline) matchFlow(m policyMatch, ms *matchState) (*openflow.Flow, error) {
	if ms.empty() {
		return nil, nil
	}
	_, next := ruleTables(Egress)
	if m.table == IngressRule {
		_, next = ruleTables(Ingress)
	}
	if len(ms.plain) > 0 {
		// A plain allow flow shared by several rules counts under the
		// lowest rule ID.
		owner := slices.Min(slices.Collect(maps.Keys(ms.plain)))
		return m.builder(uint64(PolicyRuleCookie(p.cfg.Round, owner))).GotoTable(next).Done()
	}
	refs := slices.SortedFunc(maps.Keys(ms.conjs), func(a, b conjRef) int {
		return cmp.Or(cmp.Compare(a.id, b.id), cmp.Compare(a.k, b.k))
	})
	b := m.builder(p.sharedCookie())
	for _, r := range refs {
		b.Conjunction(r.id, r.k, r.n)
	}
	return b.Done()
}

// conjFlow returns the conj_id flow of a conjunctive rule: it carries the
// rule's cookie and sends allowed packets past the default-rule table.
func (p *Pipeline) conjFlow(r PolicyRule) (*openflow.Flow, error) {
	table, next := ruleTables(r.Direction)
	return openflow.NewFlow(table, prioPolicyConj).Cookie(uint64(PolicyRuleCookie(p.cfg.Round, r.ID))).
		MatchConjID(r.ID).GotoTable(next).Done()
}

// isolationFlows returns the default drops of isolated pods: IP from
// egress-isolated pods, IP to ingress-isolated pods (ARP passes); on a
// pipeline with IPv6 IPv6 likewise. An IPv6-only pod (no IPv4 address) has
// the IPv6 drops only.
func (p *Pipeline) isolationFlows(iso Isolation) ([]*openflow.Flow, error) {
	c := p.sharedCookie()
	var bs []*openflow.FlowBuilder
	seen := map[string]bool{}
	for _, pod := range iso.Egress {
		if k := "e" + pod.IP.String(); pod.IP.To4() != nil && !seen[k] {
			seen[k] = true
			bs = append(bs, openflow.NewFlow(EgressDefaultRule, prioPolicyDrop).Cookie(c).
				MatchProtocol(openflow.ProtocolIP).MatchSrcIP(pod.IP.To4()).Drop())
		}
		// The IPv6 default drop, by the pod's port (SpoofGuard pinned
		// its IPv6 source to it), as the IPv6 applied-to of egress rules.
		if k := fmt.Sprint("e6", pod.OFPort); p.ipv6Enabled() && !seen[k] {
			seen[k] = true
			bs = append(bs, openflow.NewFlow(EgressDefaultRule, prioPolicyDrop).Cookie(c).
				MatchProtocol(openflow.ProtocolIPv6).MatchInPort(pod.OFPort).Drop())
		}
	}
	for _, pod := range iso.Ingress {
		if k := fmt.Sprint("i", pod.OFPort); pod.IP.To4() != nil && !seen[k] {
			seen[k] = true
			bs = append(bs, openflow.NewFlow(IngressDefaultRule, prioPolicyDrop).Cookie(c).
				MatchProtocol(openflow.ProtocolIP).MatchRegBits(outPortField.match(pod.OFPort)).Drop())
		}
		if k := fmt.Sprint("i6", pod.OFPort); p.ipv6Enabled() && !seen[k] {
			seen[k] = true
			bs = append(bs, openflow.NewFlow(IngressDefaultRule, prioPolicyDrop).Cookie(c).
				MatchProtocol(openflow.ProtocolIPv6).MatchRegBits(outPortField.match(pod.OFPort)).Drop())
		}
	}
	return buildAll(bs)
}

// PolicyFlows returns every policy flow the pipeline holds (rules, shared
// clause flows and default drops; not the generation flows, which are base
// flows), for tests and tooling.
func (p *Pipeline) PolicyFlows() ([]*openflow.Flow, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := &p.policy
	var out []*openflow.Flow
	for _, m := range slices.SortedFunc(maps.Keys(st.matches), func(a, b policyMatch) int {
		return cmp.Or(cmp.Compare(a.table, b.table), cmp.Compare(b.prio, a.prio), comparePolicyMatch(a, b))
	}) {
		f, err := p.matchFlow(m, st.matches[m])
		if err != nil {
			return nil, err
		}
		if f != nil {
			out = append(out, f)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(st.rules)) {
		if rs := st.rules[id]; rs.conj {
			f, err := p.conjFlow(rs.rule)
			if err != nil {
				return nil, err
			}
			out = append(out, f)
		}
	}
	iso, err := p.isolationFlows(st.isolation)
	if err != nil {
		return nil, err
	}
	return append(out, iso...), nil
}

// PolicyRules returns the IDs of the installed rules, sorted.
func (p *Pipeline) PolicyRules() []uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.policy.rules))
}

// PolicyRule returns the installed rule id.
func (p *Pipeline) PolicyRule(id uint32) (PolicyRule, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rs, ok := p.policy.rules[id]
	if !ok {
		return PolicyRule{}, false
	}
	return rs.rule, true
}

// PolicyGeneration returns the current policy generation (the value in
// ct_mark bits 8..31 of connections checked against the current policy).
func (p *Pipeline) PolicyGeneration() uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.policy.generation
}

// PolicyRuleStats reads the packet and byte counters of every installed
// rule from the switch: the counters of its conj_id flow, or of its plain
// allow flow (a plain flow shared by several rules counts under the lowest
// rule ID). Rules without flows report zeros.
func (p *Pipeline) PolicyRuleStats(ctx context.Context) (map[uint32]Counters, error) {
	stats, err := p.sw.DumpFlows(ctx, openflow.FlowFilter{
		Cookie:     uint64(openflow.MakeCookie(p.cfg.Round, CategoryPolicy, 0)),
		CookieMask: openflow.CookieRoundMask | openflow.CookieCategoryMask,
	})
	if err != nil {
		return nil, fmt.Errorf("reading policy rule counters: %w", err)
	}
	out := map[uint32]Counters{}
	for _, id := range p.PolicyRules() {
		out[id] = Counters{}
	}
	for _, s := range stats {
		id := uint32(openflow.Cookie(s.Flow.Cookie).Object())
		if c, ok := out[id]; ok && id != 0 {
			c.Packets += s.Packets
			c.Bytes += s.Bytes
			out[id] = c
		}
	}
	return out, nil
}

// PolicyRuleCookie returns the cookie of rule id's own flows in this
// pipeline's round (see the package-level PolicyRuleCookie).
func (p *Pipeline) PolicyRuleCookie(id uint32) openflow.Cookie {
	return PolicyRuleCookie(p.cfg.Round, id)
}
