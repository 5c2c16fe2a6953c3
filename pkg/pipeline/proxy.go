package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/weirnet/weir/pkg/openflow"
)

// Weir's Service proxy, phase 1: traffic from local pods to Service
// frontends is load-balanced in OVS (kube-proxy may still run and serve the
// node's own and external traffic: the "coexistence" mode). With
// Config.Proxy the pipeline gains three tables (tables.go) and conntrack
// applies NAT:
//
//	ARPResponder → UnSNAT → ConntrackZone → ConntrackState → ServiceLB → HairpinSNAT → EgressRule → …
//
//   - ConntrackZone runs ct(nat) in the pod zone: replies of DNATed
//     connections get the frontend back as their source, and later packets
//     of the original direction are DNATed again to their endpoint, before
//     any table looks at them.
//   - ServiceLB: a pod's new connection (+new, source pod) to a frontend
//     (address, protocol, port) goes to the ServicePort's select group. Each
//     bucket is one endpoint and DNATs itself: ct(commit, zone, nat(dst=
//     endpoint:port), table=HairpinSNAT). The packet then continues with the
//     endpoint as destination, so egress policy (EgressRule), routing and
//     ingress policy see the real endpoint. An endpoint change is one
//     group_mod and nothing else.
//   - HairpinSNAT: a packet whose source and destination are the same local
//     endpoint (a pod reaching itself through its Service) is SNATed to the
//     per-family hairpin IP in a zone of its own (ProxyConfig.SNATZone; a
//     connection can only be NATed once per zone), so the pod's kernel
//     accepts it; reg0[17] (hairpinMark) tells ConntrackCommit not to
//     commit its SNATed tuple to the pod zone, and Output to send it out of
//     its in_port (OVS skips a plain output to the input port). Its replies,
//     addressed to the hairpin IP, are marked the same way and un-SNATed in
//     UnSNAT before the pod zone un-DNATs them.
//
// Why the bucket DNATs itself rather than loading the endpoint into
// registers for a per-endpoint DNAT table (Antrea's EndpointDNAT): OVS
// runs ct() in a bucket, the group then holds everything about the
// endpoints (an endpoint change touches no flow), and endpoints shared by
// several Services need no shared, reference-counted flows. What it gives
// up is a place for learn()-based session affinity to load an endpoint
// into; affinity is not implemented yet (docs/proxy.md).
//
// Not DNATed: a ServicePort without endpoints whose Service has none
// anywhere (HasEndpoints false) gets no flow; its packets go on to the
// gateway as before, where the node's reject rule (nodenet) or kube-proxy
// answers them. One with HasEndpoints true but an empty list (a Local
// traffic policy) drops them, as kube-proxy does. Pod traffic uses
// ClusterEndpoints for every frontend, kube-proxy's short circuit for local
// clients of external frontends.

// ProxyConfig turns on the proxy's tables (Config.Proxy).
type ProxyConfig struct {
	// NodeIPs are the node's addresses NodePort frontends with a zero IP
	// are reached at (from pods; both families allowed).
	NodeIPs []netip.Addr
	// HairpinIP and HairpinIPv6 are the source a pod sees when it reaches
	// itself through a Service: an address no pod or node uses, outside the
	// pod and Service CIDRs (Antrea uses 169.254.0.253 and
	// fc00::aabb:ccdd:eeff). Required for each family the node serves.
	HairpinIP, HairpinIPv6 netip.Addr
	// SNATZone is the conntrack zone of the hairpin SNAT; it must differ
	// from Config.CTZone.
	SNATZone uint16
	// FromGateway also load-balances the node's own traffic to ClusterIPs
	// (host processes, hostNetwork pods), which the node routes into the
	// gateway (nodenet.EnsureServiceRoutes) instead of DNATing it with
	// kube-proxy: the kube-proxy-free mode (proxy_node.go).
	FromGateway bool
	// NodePortIP and NodePortIPv6 (FromGateway only, per family the node
	// serves) are the virtual addresses the node DNATs NodePort traffic
	// arriving from outside to before routing it into the gateway
	// (nodenet.InstallExternalServices); ServiceLB matches them from the
	// gateway for every NodePort frontend (proxy_node.go).
	NodePortIP, NodePortIPv6 netip.Addr
}

func (c *Config) validateProxy() error {
	px := c.Proxy
	if px == nil {
		return nil
	}
	if px.SNATZone == c.CTZone {
		return fmt.Errorf("pipeline: proxy SNAT zone %d must differ from the pod conntrack zone", px.SNATZone)
	}
	if c.GatewayIP != nil && !px.HairpinIP.Is4() {
		return fmt.Errorf("pipeline: proxy needs an IPv4 hairpin IP, got %v", px.HairpinIP)
	}
	if c.GatewayIP == nil && px.HairpinIP.IsValid() {
		return fmt.Errorf("pipeline: proxy IPv4 hairpin IP %v on a node without IPv4", px.HairpinIP)
	}
	if c.GatewayIPv6 != nil && (!px.HairpinIPv6.Is6() || px.HairpinIPv6.Is4In6()) {
		return fmt.Errorf("pipeline: proxy needs an IPv6 hairpin IP, got %v", px.HairpinIPv6)
	}
	if c.GatewayIPv6 == nil && px.HairpinIPv6.IsValid() {
		return fmt.Errorf("pipeline: proxy IPv6 hairpin IP %v on a node without IPv6", px.HairpinIPv6)
	}
	for _, a := range px.NodeIPs {
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
			return fmt.Errorf("pipeline: proxy node IP %v is not a plain IPv4 or IPv6 address", a)
		}
	}
	return c.validateNodeProxy()
}

func (p *Pipeline) proxyOn() bool { return p.cfg.Proxy != nil }

// conntrackZoneCT is ConntrackZone's ct(): with the proxy it also applies
// the connection's NAT (un-DNAT of replies, re-DNAT of originals).
func (p *Pipeline) conntrackZoneCT() *openflow.CTAction {
	ct := openflow.CT(p.cfg.CTZone, ConntrackState)
	if p.proxyOn() {
		ct = ct.WithNAT(openflow.NAT{Kind: openflow.NATRestore})
	}
	return ct
}

// proxyBaseFlows returns the proxy's base flows: UnSNAT (the hairpin IP of
// each family through the SNAT zone), the misses of its tables, and the
// ConntrackCommit flow that leaves hairpin packets uncommitted in the pod
// zone. The changed misses of ARPResponder and ConntrackState and the
// ct(nat) of ConntrackZone are in baseFlows and ipv6BaseFlows.
func (p *Pipeline) proxyBaseFlows(nf func(table uint8, prio uint16) *openflow.FlowBuilder) []*openflow.FlowBuilder {
	px := p.cfg.Proxy
	var bs []*openflow.FlowBuilder
	for _, fam := range p.families() {
		hp := px.HairpinIP
		if fam {
			hp = px.HairpinIPv6
		}
		bs = append(bs, nf(UnSNAT, prioUnSNAT).MatchProtocol(ipProtocol(fam)).MatchDstIP(net.IP(hp.AsSlice())).
			LoadReg(hairpinMark.load()).CT(openflow.CT(px.SNATZone, ConntrackZone).WithNAT(openflow.NAT{Kind: openflow.NATRestore})))
	}
	return append(bs,
		nf(UnSNAT, prioMiss).GotoTable(ConntrackZone),
		nf(ServiceLB, prioMiss).GotoTable(HairpinSNAT),
		nf(HairpinSNAT, prioMiss).GotoTable(EgressRule),
		nf(ConntrackCommit, prioCommitHairpin).MatchRegBits(hairpinMark.match()).GotoTable(Output),
		// Hairpin packets, both ways, leave by the port they came in by
		// (the endpoint is the client); OVS skips a plain output to the
		// input port.
		nf(Output, prioOutputHairpin).MatchRegBits(hairpinMark.match()).MatchRegBits(outputFoundMark.match()).
			Output(openflow.PortInPort),
	)
}

// families returns the node's families, false for IPv4 and true for IPv6,
// IPv4 first.
func (p *Pipeline) families() []bool {
	var f []bool
	if p.ipv4Enabled() {
		f = append(f, false)
	}
	if p.ipv6Enabled() {
		f = append(f, true)
	}
	return f
}

// groupSwitch is what ApplyServices needs beyond Switch (an
// *openflow.Switch has it).
type groupSwitch interface {
	SyncOwnerStates(ctx context.Context, owners map[string]openflow.OwnerState) error
	DeleteUncachedGroups(ctx context.Context) (int, error)
}

// Group IDs: a ServicePort's group is round<<groupRoundShift | n, n counted
// from 1 in this run and never reused in it. So an ID stays with its
// ServicePort while it exists, and a restarted agent (a new cookie round)
// never gives an ID the previous run's flows still point at to another
// Service: those flows are deleted with their round, then
// DeleteStaleGroups removes the previous run's groups.
const (
	groupRoundShift = 24
	// maxGroupSerial keeps round 255's IDs at or below
	// openflow.MaxGroupID (0xffffff00).
	maxGroupSerial = 1<<groupRoundShift - 257
)

const ownerHairpin = "svc-hairpin"

func serviceOwner(key string) string { return "svc/" + key }

// frontendKey is one (address, protocol, port) ServiceLB matches.
type frontendKey struct {
	ip    netip.Addr
	proto Protocol
	port  uint16
}

// String prints the frontend for errors, e.g. "TCP 10.96.0.10:80".
func (f frontendKey) String() string {
	name := map[Protocol]string{ProtocolTCP: "TCP", ProtocolUDP: "UDP", ProtocolSCTP: "SCTP"}[f.proto]
	return fmt.Sprintf("%s %s", name, netip.AddrPortFrom(f.ip, f.port))
}

type serviceState struct {
	sp      ServicePort
	cookie  openflow.Cookie
	groupID uint32
	// extGroupID is the group of ExternalEndpoints (FromGateway only),
	// allocated when the ServicePort first has them and kept after.
	extGroupID uint32
	fronts     []frontendKey
	hairpin    []netip.Addr // local endpoint addresses
}

// proxyState is what ApplyServices realized, guarded by proxyMu.
type proxyState struct {
	services  map[string]*serviceState
	frontends map[frontendKey]string // -> ServicePort key
	hairpin   map[netip.Addr]int     // local endpoint -> ServicePorts using it
	nextGroup uint32
	hpCookie  openflow.Cookie
}

func newProxyState() proxyState {
	return proxyState{services: map[string]*serviceState{}, frontends: map[frontendKey]string{}, hairpin: map[netip.Addr]int{}}
}

// ApplyServices installs or replaces the given ServicePorts and removes
// those named in deleted (unknown keys are ignored), all in ONE bundle:
// per ServicePort its select group and its ServiceLB flows, plus the
// hairpin flows when the set of local endpoints changes. A ServicePort
// whose endpoints changed gets a group_mod of its group only; unchanged
// flows are not sent. It needs Config.Proxy and a Switch with groups (an
// *openflow.Switch). Refused, with nothing changed: a key given twice or
// both upserted and deleted, a frontend another ServicePort holds, an
// address of a family the node lacks or of the other family than the
// ServicePort's, and a group over openflow.MaxGroupLen (about 999 IPv4 or
// 799 IPv6 endpoints: a ServicePort with more is refused, not split).
func (p *Pipeline) ApplyServices(ctx context.Context, upserts []ServicePort, deleted []string) error {
	if !p.proxyOn() {
		return errors.New("pipeline: ApplyServices needs Config.Proxy")
	}
	gs, ok := p.sw.(groupSwitch)
	if !ok {
		return fmt.Errorf("pipeline: ApplyServices needs a switch with groups, have %T", p.sw)
	}
	p.proxyMu.Lock()
	defer p.proxyMu.Unlock()
	st := &p.svc

	touched := make(map[string]bool, len(upserts)+len(deleted))
	for _, sp := range upserts {
		if sp.Key == "" {
			return errors.New("pipeline: ServicePort without a key")
		}
		if touched[sp.Key] {
			return fmt.Errorf("pipeline: ServicePort %s given twice", sp.Key)
		}
		touched[sp.Key] = true
	}
	for _, k := range deleted {
		if touched[k] {
			return fmt.Errorf("pipeline: ServicePort %s both upserted and deleted", k)
		}
		touched[k] = true
	}

	owners := make(map[string]openflow.OwnerState, len(upserts)+len(deleted)+1)
	next := make(map[string]*serviceState, len(upserts))
	claimed := make(map[frontendKey]string)
	hpDelta := map[netip.Addr]int{}
	serial := st.nextGroup
	for _, sp := range upserts {
		old := st.services[sp.Key]
		ns := &serviceState{sp: sp}
		if old != nil {
			ns.cookie, ns.groupID, ns.extGroupID = old.cookie, old.groupID, old.extGroupID
		} else {
			if serial >= maxGroupSerial {
				return errors.New("pipeline: group IDs of this run exhausted (16M ServicePorts created)")
			}
			serial++
			ns.groupID = uint32(p.cfg.Round)<<groupRoundShift | serial
			c, err := p.cookies.New(CategoryService)
			if err != nil {
				return err
			}
			ns.cookie = c
		}
		if p.cfg.Proxy.FromGateway && sp.ExternalEndpoints != nil && ns.extGroupID == 0 {
			if serial >= maxGroupSerial {
				return errors.New("pipeline: group IDs of this run exhausted (16M ServicePorts created)")
			}
			serial++
			ns.extGroupID = uint32(p.cfg.Round)<<groupRoundShift | serial
		}
		groups, flows, fronts, err := p.servicePortFlows(sp, ns.cookie, ns.groupID, ns.extGroupID)
		if err != nil {
			return err
		}
		for _, fk := range fronts {
			if other, ok := claimed[fk]; ok {
				return fmt.Errorf("pipeline: ServicePorts %s and %s both claim frontend %v", other, sp.Key, fk)
			}
			if other, ok := st.frontends[fk]; ok && !touched[other] {
				return fmt.Errorf("pipeline: ServicePort %s: frontend %v belongs to %s", sp.Key, fk, other)
			}
			claimed[fk] = sp.Key
		}
		ns.fronts = fronts
		ns.hairpin = localEndpoints(sp)
		owners[serviceOwner(sp.Key)] = openflow.OwnerState{Groups: groups, Flows: flows}
		next[sp.Key] = ns
		if old != nil {
			for _, a := range old.hairpin {
				hpDelta[a]--
			}
		}
		for _, a := range ns.hairpin {
			hpDelta[a]++
		}
	}
	for _, k := range deleted {
		old := st.services[k]
		if old == nil {
			continue
		}
		owners[serviceOwner(k)] = openflow.OwnerState{}
		for _, a := range old.hairpin {
			hpDelta[a]--
		}
	}

	// The hairpin flows change only when an address appears or goes.
	hp := make(map[netip.Addr]int, len(st.hairpin))
	setChanged := false
	for a, n := range st.hairpin {
		hp[a] = n
	}
	for a, d := range hpDelta {
		if d == 0 {
			continue
		}
		before := hp[a]
		hp[a] += d
		if hp[a] <= 0 {
			delete(hp, a)
		}
		if (before > 0) != (hp[a] > 0) {
			setChanged = true
		}
	}
	hpCookie := st.hpCookie
	if setChanged {
		if hpCookie == 0 {
			c, err := p.cookies.New(CategoryService)
			if err != nil {
				return err
			}
			hpCookie = c
		}
		flows, err := p.HairpinFlows(slices.Collect(mapKeys(hp)), hpCookie)
		if err != nil {
			return err
		}
		owners[ownerHairpin] = openflow.OwnerState{Flows: flows}
	}

	if len(owners) > 0 {
		if err := gs.SyncOwnerStates(ctx, owners); err != nil {
			return fmt.Errorf("applying %d ServicePorts and deleting %d: %w", len(upserts), len(deleted), err)
		}
	}

	// Commit the new state.
	for _, k := range deleted {
		if old := st.services[k]; old != nil {
			for _, fk := range old.fronts {
				if st.frontends[fk] == k {
					delete(st.frontends, fk)
				}
			}
			delete(st.services, k)
		}
	}
	for k, ns := range next {
		if old := st.services[k]; old != nil {
			for _, fk := range old.fronts {
				if st.frontends[fk] == k {
					delete(st.frontends, fk)
				}
			}
		}
		st.services[k] = ns
	}
	for fk, k := range claimed {
		st.frontends[fk] = k
	}
	st.hairpin = hp
	st.hpCookie = hpCookie
	st.nextGroup = serial
	return nil
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// localEndpoints returns the distinct addresses of sp's local endpoints
// (the ones a client pod can be: hairpin).
func localEndpoints(sp ServicePort) []netip.Addr {
	var out []netip.Addr
	for _, e := range sp.ClusterEndpoints {
		if e.Local && !slices.Contains(out, e.IP) {
			out = append(out, e.IP)
		}
	}
	return out
}

// DeleteStaleGroups deletes every group on the switch no owner of this
// run holds: the previous run's Service groups, once this run has applied
// its Services and the previous rounds' flows (which may use them) are
// deleted. It returns how many it deleted.
func (p *Pipeline) DeleteStaleGroups(ctx context.Context) (int, error) {
	gs, ok := p.sw.(groupSwitch)
	if !ok {
		return 0, fmt.Errorf("pipeline: DeleteStaleGroups needs a switch with groups, have %T", p.sw)
	}
	n, err := gs.DeleteUncachedGroups(ctx)
	if err != nil {
		return n, fmt.Errorf("deleting stale Service groups: %w", err)
	}
	return n, nil
}

// ServiceGroupID returns the group ID of a realized ServicePort. The ID
// stays reserved while the ServicePort has no endpoints, when the switch
// holds no group for it.
func (p *Pipeline) ServiceGroupID(key string) (uint32, bool) {
	p.proxyMu.Lock()
	defer p.proxyMu.Unlock()
	s, ok := p.svc.services[key]
	if !ok {
		return 0, false
	}
	return s.groupID, true
}

// ServicePortFlows returns what ApplyServices installs for sp under cookie
// with group ID id: its select group (nil when it has no endpoints) and its
// ServiceLB flows (for goldens and checks; the hairpin flows are
// HairpinFlows').
//
// With FromGateway and ExternalEndpoints it fails: the second group needs
// its own ID (ServicePortGroups).
func (p *Pipeline) ServicePortFlows(sp ServicePort, cookie openflow.Cookie, id uint32) (*openflow.Group, []*openflow.Flow, error) {
	gs, f, _, err := p.servicePortFlows(sp, cookie, id, 0)
	if err != nil || len(gs) == 0 {
		return nil, f, err
	}
	return gs[0], f, nil
}

// servicePortFamily checks that every address of sp is of one family the
// node serves and returns it (true for IPv6).
func (p *Pipeline) servicePortFamily(sp ServicePort) (bool, error) {
	var fam *bool
	check := func(a netip.Addr, what string) error {
		if !a.IsValid() {
			return nil
		}
		if a.Is4In6() || a.Zone() != "" {
			return fmt.Errorf("pipeline: ServicePort %s: %s %v is not a plain IPv4 or IPv6 address", sp.Key, what, a)
		}
		v6 := a.Is6()
		if fam == nil {
			fam = &v6
		} else if *fam != v6 {
			return fmt.Errorf("pipeline: ServicePort %s: %s %v is not of the ServicePort's family", sp.Key, what, a)
		}
		return nil
	}
	for _, f := range sp.Frontends {
		if err := check(f.IP, f.Kind.String()+" frontend"); err != nil {
			return false, err
		}
		switch {
		case f.Port == 0:
			return false, fmt.Errorf("pipeline: ServicePort %s: %v frontend %v without a port", sp.Key, f.Kind, f.IP)
		case f.Protocol != ProtocolTCP && f.Protocol != ProtocolUDP && f.Protocol != ProtocolSCTP:
			return false, fmt.Errorf("pipeline: ServicePort %s: %v frontend %v: protocol %d is not TCP, UDP or SCTP", sp.Key, f.Kind, f.IP, f.Protocol)
		}
	}
	for _, e := range sp.ClusterEndpoints {
		if !e.IP.IsValid() {
			return false, fmt.Errorf("pipeline: ServicePort %s: endpoint without an address", sp.Key)
		}
		if e.Port == 0 {
			return false, fmt.Errorf("pipeline: ServicePort %s: endpoint %v without a port", sp.Key, e.IP)
		}
		if err := check(e.IP, "endpoint"); err != nil {
			return false, err
		}
	}
	if fam == nil {
		// Only NodePorts on every node address and no endpoints: the family
		// is in the key (…/IPv4, …/IPv6).
		v6 := len(sp.Key) >= 4 && sp.Key[len(sp.Key)-4:] == "IPv6"
		fam = &v6
	}
	if (*fam && !p.ipv6Enabled()) || (!*fam && !p.ipv4Enabled()) {
		return false, fmt.Errorf("pipeline: ServicePort %s: the node has no %s configuration", sp.Key, familyName(*fam))
	}
	return *fam, nil
}

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// servicePortFlows builds sp's groups (the ClusterEndpoints' with ID id
// first, then the ExternalEndpoints' with extID: FromGateway only) and
// ServiceLB flows and lists the frontends they match.
func (p *Pipeline) servicePortFlows(sp ServicePort, cookie openflow.Cookie, id, extID uint32) ([]*openflow.Group, []*openflow.Flow, []frontendKey, error) {
	v6, err := p.servicePortFamily(sp)
	if err != nil {
		return nil, nil, nil, err
	}
	group, err := p.endpointGroup(sp, sp.ClusterEndpoints, id, v6)
	if err != nil {
		return nil, nil, nil, err
	}
	var groups []*openflow.Group
	if group != nil {
		groups = append(groups, group)
	}
	var extGroup *openflow.Group
	if p.cfg.Proxy.FromGateway && sp.ExternalEndpoints != nil {
		if extID == 0 {
			return nil, nil, nil, fmt.Errorf("pipeline: ServicePort %s: ExternalEndpoints need a group ID of their own", sp.Key)
		}
		if extGroup, err = p.endpointGroup(sp, sp.ExternalEndpoints, extID, v6); err != nil {
			return nil, nil, nil, err
		}
		if extGroup != nil {
			groups = append(groups, extGroup)
		}
	}
	flows, fronts, err := p.frontendFlows(sp, cookie, v6, group, id, extGroup, extID)
	if err != nil {
		return nil, nil, nil, err
	}
	return groups, flows, fronts, nil
}

// endpointGroup is the select group id over eps (nil without endpoints).
func (p *Pipeline) endpointGroup(sp ServicePort, eps []ServiceEndpoint, id uint32, v6 bool) (*openflow.Group, error) {
	if len(eps) == 0 {
		return nil, nil
	}
	// dp_hash with algorithm 0 (the upper 32 bits of the parameter):
	// OVS's hash of the IP 5-tuple. OVS's default without a selection
	// method is the symmetric L3/L4 hash, which leaves UDP ports out:
	// every UDP flow of one client to one frontend would take the same
	// endpoint (TestProxyClusterIP measured 30 of 30). With more
	// buckets than OVS can map to hash values (256) it falls back to
	// its default hash over the default fields.
	gb := openflow.NewGroup(id, openflow.GroupSelect).DPHash(0)
	if sp.AffinityTimeout > 0 {
		// sessionAffinity ClientIP, partly: the bucket is chosen by a
		// hash of the client's address only, so a client keeps its
		// endpoint while the endpoint list is unchanged. The timeout
		// is not honoured (a client never moves while its endpoint
		// stays, and may move when the list changes): that needs
		// learn() flows, which pkg/openflow lacks (docs/proxy.md).
		src := openflow.FieldIPv4Src
		if v6 {
			src = openflow.FieldIPv6Src
		}
		gb = gb.Hash(0, src)
	}
	t := HairpinSNAT
	for _, e := range eps {
		w := e.Weight
		if w == 0 {
			w = 1
		}
		ct := &openflow.CTAction{Commit: true, Zone: p.cfg.CTZone, Table: &t,
			NAT: &openflow.NAT{Kind: openflow.NATDest, IPMin: net.IP(e.IP.AsSlice()), PortMin: e.Port}}
		gb.Bucket(w, ct)
	}
	group, err := gb.Done()
	if err != nil {
		return nil, fmt.Errorf("pipeline: ServicePort %s: %d endpoints in one group (the most that fit openflow.MaxGroupLen is about 999 IPv4 or 799 IPv6; larger Services are refused, not split): %w",
			sp.Key, len(eps), err)
	}
	return group, nil
}

// frontendFlows builds sp's ServiceLB flows to group id (nil: none) and,
// from the gateway, to extGroup extID when sp has ExternalEndpoints.
func (p *Pipeline) frontendFlows(sp ServicePort, cookie openflow.Cookie, v6 bool, group *openflow.Group, id uint32, extGroup *openflow.Group, extID uint32) ([]*openflow.Flow, []frontendKey, error) {
	// With endpoints: to the group. Without, and none anywhere: no flow,
	// the packet goes to the gateway (reject). Without here but some
	// elsewhere (Local policy): drop.
	if group == nil && !sp.HasEndpoints {
		return nil, nil, nil
	}
	c := uint64(cookie)
	action := func(b *openflow.FlowBuilder) *openflow.FlowBuilder {
		if group != nil {
			return b.Group(id)
		}
		return b.Drop()
	}
	var bs []*openflow.FlowBuilder
	var fronts []frontendKey
	for _, f := range sp.Frontends {
		ips := []netip.Addr{f.IP}
		if !f.IP.IsValid() {
			if f.Kind != KindNodePort {
				return nil, nil, fmt.Errorf("pipeline: ServicePort %s: %v frontend without an address", sp.Key, f.Kind)
			}
			ips = nil
			for _, a := range p.cfg.Proxy.NodeIPs {
				if a.Is6() == v6 {
					ips = append(ips, a)
				}
			}
		}
		for _, ip := range ips {
			fk := frontendKey{ip, f.Protocol, f.Port}
			if slices.Contains(fronts, fk) {
				continue
			}
			fronts = append(fronts, fk)
			match := func(prio uint16) *openflow.FlowBuilder {
				return openflow.NewFlow(ServiceLB, prio).Cookie(c).MatchProtocol(l4Protocol(f.Protocol, v6)).
					MatchRegBits(sourcePodMark.match()).MatchCTState(openflow.CTState{}.Trk(true).New(true)).
					MatchDstIP(net.IP(ip.AsSlice())).MatchDstPort(f.Port)
			}
			if f.Kind == KindLoadBalancer && len(sp.LoadBalancerSourceRanges) > 0 {
				// Only the allowed clients reach the endpoints; the rest
				// is dropped, as kube-proxy does.
				for _, r := range sp.LoadBalancerSourceRanges {
					if r.Addr().Is6() != v6 {
						continue
					}
					bs = append(bs, action(match(prioServiceSourceRange).MatchSrcNet(prefixNet(r))))
				}
				bs = append(bs, match(prioServiceFrontend).Drop())
				continue
			}
			bs = append(bs, action(match(prioServiceFrontend)))
			if f.Kind == KindClusterIP && p.cfg.Proxy.FromGateway {
				bs = append(bs, p.gatewayFrontendFlow(c, f, ip, v6, group, id))
			}
		}
		if f.Kind != KindClusterIP && p.cfg.Proxy.FromGateway {
			eg, eid := group, id
			if sp.ExternalEndpoints != nil {
				eg, eid = extGroup, extID
			}
			ext, err := p.externalFrontendFlows(sp, c, f, v6, eg, eid)
			if err != nil {
				return nil, nil, err
			}
			bs = append(bs, ext...)
		}
	}
	flows, err := buildAll(bs)
	if err != nil {
		return nil, nil, fmt.Errorf("ServicePort %s: %w", sp.Key, err)
	}
	return flows, fronts, nil
}

// HairpinFlows returns the HairpinSNAT flows for the given local endpoint
// addresses (sorted, IPv4 first): a packet from the endpoint to itself is
// marked and SNATed to the family's hairpin IP in the SNAT zone, then goes
// on to EgressRule.
func (p *Pipeline) HairpinFlows(addrs []netip.Addr, cookie openflow.Cookie) ([]*openflow.Flow, error) {
	addrs = slices.Clone(addrs)
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	px := p.cfg.Proxy
	t := EgressRule
	var bs []*openflow.FlowBuilder
	for _, a := range addrs {
		hp := px.HairpinIP
		if a.Is6() {
			hp = px.HairpinIPv6
		}
		if !hp.IsValid() {
			return nil, fmt.Errorf("pipeline: local endpoint %v: the node has no %s hairpin IP", a, familyName(a.Is6()))
		}
		ip := net.IP(a.AsSlice())
		bs = append(bs, openflow.NewFlow(HairpinSNAT, prioHairpin).Cookie(uint64(cookie)).
			MatchProtocol(ipProtocol(a.Is6())).MatchSrcIP(ip).MatchDstIP(ip).
			LoadReg(hairpinMark.load()).
			CT(&openflow.CTAction{Commit: true, Zone: px.SNATZone, Table: &t,
				NAT: &openflow.NAT{Kind: openflow.NATSource, IPMin: net.IP(hp.AsSlice())}}))
	}
	return buildAll(bs)
}
