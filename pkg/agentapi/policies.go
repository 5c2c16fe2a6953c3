package agentapi

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
	"github.com/weirnet/weir/pkg/pipeline"
)

// splitRuleName splits "<ns>/<policy>/<direction>/<index>[/<part>]" into
// namespace, policy name and the rule part ("ingress/0[/1]").
func splitRuleName(name string) (ns, policy, rule string) {
	parts := strings.SplitN(name, "/", 3)
	switch len(parts) {
	case 3:
		return parts[0], parts[1], parts[2]
	case 2:
		return parts[0], parts[1], ""
	}
	return "", name, ""
}

// selectRules returns the realized rules of policy ref (optionally one
// rule), NotFound if there are none.
func (s *Server) selectRules(ref *agentv1.PolicyRef) ([]pipeline.PolicyRule, error) {
	if ref.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "policy filter: policy name is required")
	}
	ns := ref.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	rule := strings.ToLower(ref.GetRule())
	var out []pipeline.PolicyRule
	for _, id := range s.deps.Pipeline.PolicyRules() {
		r, ok := s.deps.Pipeline.PolicyRule(id)
		if !ok {
			continue
		}
		rns, rpol, rrule := splitRuleName(r.Name)
		if rns != ns || rpol != ref.GetName() {
			continue
		}
		if rule != "" && rrule != rule && !strings.HasPrefix(rrule, rule+"/") {
			continue
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		what := ns + "/" + ref.GetName()
		if rule != "" {
			what += " rule " + rule
		}
		return nil, status.Errorf(codes.NotFound, "no realized rules of NetworkPolicy %s on this node "+
			"(it selects no local pod, or has no allow rules: isolation alone has no rules)", what)
	}
	return out, nil
}

// isolation is the default drop of one isolated pod.
type isolation struct {
	dir     pipeline.Direction
	ofport  uint32 // the pod's port (what an ingress drop matches; 0 if unknown)
	ip      net.IP // the pod's address (what an egress drop matches; nil if unknown)
	key     string // identifies the drop across samples
	packets uint64
	bytes   uint64
}

// pod returns the local pod an isolation protects.
func (iso isolation) pod(n *node) (pod, bool) {
	if iso.dir == pipeline.Ingress || iso.ip == nil {
		return n.podByOFPort(iso.ofport)
	}
	return n.podByIP(iso.ip)
}

func (iso isolation) localRef(n *node) *agentv1.LocalPodRef {
	if p, ok := iso.pod(n); ok {
		return p.localRef()
	}
	return &agentv1.LocalPodRef{Ip: ipString(iso.ip), Ofport: iso.ofport}
}

func (iso isolation) describe(n *node) string {
	if p, ok := iso.pod(n); ok {
		return p.ref()
	}
	if iso.ip != nil {
		return iso.ip.String()
	}
	return fmt.Sprintf("ofport %d", iso.ofport)
}

func protocolName(p pipeline.Protocol) string {
	switch p {
	case pipeline.ProtocolTCP:
		return "TCP"
	case pipeline.ProtocolUDP:
		return "UDP"
	case pipeline.ProtocolSCTP:
		return "SCTP"
	}
	return strconv.Itoa(int(p))
}

func (s *Server) ruleProto(n *node, r pipeline.PolicyRule, c pipeline.Counters) *agentv1.PolicyRule {
	ns, pol, _ := splitRuleName(r.Name)
	out := &agentv1.PolicyRule{Id: r.ID, Name: r.Name, PolicyNamespace: ns, PolicyName: pol, Direction: r.Direction.String(),
		PacketCount: c.Packets, ByteCount: c.Bytes}
	for _, lp := range r.Pods {
		if p, ok := n.podByOFPort(lp.OFPort); ok {
			out.AppliedTo = append(out.AppliedTo, p.localRef())
		} else {
			out.AppliedTo = append(out.AppliedTo, &agentv1.LocalPodRef{Ip: ipString(lp.IP), Ofport: lp.OFPort})
		}
	}
	for _, peer := range r.Peers {
		out.Peers = append(out.Peers, peer.String())
	}
	for _, pr := range r.Ports {
		out.Ports = append(out.Ports, &agentv1.PortRange{Protocol: protocolName(pr.Protocol), From: uint32(pr.From), To: uint32(pr.To)})
	}
	return out
}

// appliesTo reports whether rule r protects pod p.
func appliesTo(r pipeline.PolicyRule, p pod) bool {
	for _, lp := range r.Pods {
		if lp.OFPort == p.OFPort || lp.IP != nil && p.hasIP(lp.IP) {
			return true
		}
	}
	return false
}

// isolationPolicies returns the policies isolating p in dir: from the
// NetworkPolicy controller when there is one (it knows every policy, a
// default deny without allow rules included), else the policies with
// realized rules protecting p.
func (s *Server) isolationPolicies(p pod, dir pipeline.Direction) []string {
	if s.deps.Isolation != nil {
		return s.deps.Isolation.IsolatingPolicies(p.OFPort, dir)
	}
	seen := map[string]bool{}
	var out []string
	for _, id := range s.deps.Pipeline.PolicyRules() {
		r, ok := s.deps.Pipeline.PolicyRule(id)
		if !ok || r.Direction != dir || !appliesTo(r, p) {
			continue
		}
		ns, pol, _ := splitRuleName(r.Name)
		if k := ns + "/" + pol; !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// ListNetworkPolicies implements agentv1.AgentServiceServer.
func (s *Server) ListNetworkPolicies(ctx context.Context, req *agentv1.ListNetworkPoliciesRequest) (*agentv1.ListNetworkPoliciesResponse, error) {
	n, err := s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	var only *pod
	if req.GetPod() != nil {
		p, err := n.findPod(req.GetPod(), "pod filter")
		if err != nil {
			return nil, err
		}
		only = &p
	}
	counters, err := s.deps.Pipeline.PolicyRuleStats(ctx)
	if err != nil {
		return nil, internalError(ctx, "reading policy rule counters", err)
	}
	resp := &agentv1.ListNetworkPoliciesResponse{Generation: s.deps.Pipeline.PolicyGeneration()}
	for _, id := range s.deps.Pipeline.PolicyRules() {
		r, ok := s.deps.Pipeline.PolicyRule(id)
		if !ok {
			continue
		}
		ns, pol, _ := splitRuleName(r.Name)
		if req.GetNamespace() != "" && ns != req.GetNamespace() || req.GetName() != "" && pol != req.GetName() ||
			only != nil && !appliesTo(r, *only) {
			continue
		}
		resp.Rules = append(resp.Rules, s.ruleProto(n, r, counters[id]))
	}
	isos, err := s.countedIsolations(ctx)
	if err != nil {
		return nil, err
	}
	for _, iso := range isos {
		p, known := iso.pod(n)
		if only != nil && (!known || p.Key != only.Key) {
			continue
		}
		ip := &agentv1.IsolatedPod{Pod: iso.localRef(n), Direction: iso.dir.String(), DroppedPackets: iso.packets,
			DroppedBytes: iso.bytes}
		if known {
			ip.Policies = s.isolationPolicies(p, iso.dir)
		}
		if req.GetNamespace() != "" || req.GetName() != "" {
			// A policy filter keeps the isolations of pods its rules protect.
			match := false
			for _, pol := range ip.Policies {
				ns, name, _ := strings.Cut(pol, "/")
				if (req.GetNamespace() == "" || ns == req.GetNamespace()) && (req.GetName() == "" || name == req.GetName()) {
					match = true
				}
			}
			if !match {
				continue
			}
		}
		resp.Isolated = append(resp.Isolated, ip)
	}
	return resp, nil
}

// countedIsolations returns the isolated pods as the pipeline realized
// them, with the counters of their drop flows.
func (s *Server) countedIsolations(ctx context.Context) ([]isolation, error) {
	drops, err := s.deps.Pipeline.IsolationDrops(ctx)
	if err != nil {
		return nil, internalError(ctx, "reading isolation drops", err)
	}
	out := make([]isolation, 0, len(drops))
	for _, d := range drops {
		out = append(out, isolation{dir: d.Direction, ofport: d.Pod.OFPort, ip: d.Pod.IP,
			key: fmt.Sprintf("%s/%d/%s", d.Direction, d.Pod.OFPort, d.Pod.IP), packets: d.Counters.Packets, bytes: d.Counters.Bytes})
	}
	return out, nil
}

// Watch intervals.
const (
	defaultWatchInterval = time.Second
	minWatchInterval     = 100 * time.Millisecond
)

// WatchPolicyVerdicts implements agentv1.AgentServiceServer: it samples
// PolicyRuleStats and the isolation drop flows' counters every interval
// and sends the deltas. The first sample is the baseline: nothing is sent
// for it (except idle events when asked). A counter that went down (flows
// re-installed, ovs-vswitchd restarted) restarts from the new value.
func (s *Server) WatchPolicyVerdicts(req *agentv1.WatchPolicyVerdictsRequest, stream agentv1.AgentService_WatchPolicyVerdictsServer) error {
	ctx := stream.Context()
	interval := defaultWatchInterval
	if req.GetIntervalMs() != 0 {
		interval = time.Duration(req.GetIntervalMs()) * time.Millisecond
		if interval < minWatchInterval {
			return status.Errorf(codes.InvalidArgument, "interval %v is below the minimum %v", interval, minWatchInterval)
		}
	}
	if req.GetPolicy() != nil {
		if _, err := s.selectRules(req.GetPolicy()); err != nil {
			return err
		}
	}
	if req.GetPod() != nil {
		n, err := s.snapshot(ctx)
		if err != nil {
			return err
		}
		if _, err := n.findPod(req.GetPod(), "pod filter"); err != nil {
			return err
		}
	}
	prevRules := map[uint32]pipeline.Counters{}
	prevIso := map[string]pipeline.Counters{}
	first := true
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		evs, err := s.sampleVerdicts(ctx, req, prevRules, prevIso, first)
		if err != nil {
			return err
		}
		first = false
		for _, ev := range evs {
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sampleVerdicts reads the counters once, updates prev and returns the
// events of the deltas.
func (s *Server) sampleVerdicts(ctx context.Context, req *agentv1.WatchPolicyVerdictsRequest,
	prevRules map[uint32]pipeline.Counters, prevIso map[string]pipeline.Counters, baseline bool) ([]*agentv1.PolicyVerdictEvent, error) {
	now := time.Now().UnixNano()
	n, err := s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	var filterPod *pod
	if req.GetPod() != nil {
		p, err := n.findPod(req.GetPod(), "pod filter")
		if err != nil {
			return nil, err // the pod went away: end the watch
		}
		filterPod = &p
	}
	ruleIDs := map[uint32]bool{}
	if req.GetPolicy() != nil {
		rules, err := s.selectRules(req.GetPolicy())
		if err != nil && status.Code(err) != codes.NotFound {
			return nil, err
		}
		for _, r := range rules {
			ruleIDs[r.ID] = true
		}
	}
	counters, err := s.deps.Pipeline.PolicyRuleStats(ctx)
	if err != nil {
		return nil, internalError(ctx, "reading policy rule counters", err)
	}
	var evs []*agentv1.PolicyVerdictEvent
	for _, id := range s.deps.Pipeline.PolicyRules() {
		r, ok := s.deps.Pipeline.PolicyRule(id)
		if !ok || req.GetPolicy() != nil && !ruleIDs[id] || filterPod != nil && !appliesTo(r, *filterPod) {
			continue
		}
		cur, prev := counters[id], prevRules[id]
		prevRules[id] = cur
		dp, db := delta(cur.Packets, prev.Packets), delta(cur.Bytes, prev.Bytes)
		if baseline || dp == 0 && !req.GetIncludeIdle() {
			continue
		}
		evs = append(evs, &agentv1.PolicyVerdictEvent{Kind: agentv1.PolicyVerdictEvent_ALLOWED, TimeUnixNano: now, RuleId: id,
			RuleName: r.Name, Direction: r.Direction.String(), NewPackets: dp, NewBytes: db, TotalPackets: cur.Packets,
			TotalBytes: cur.Bytes, Message: fmt.Sprintf("rule %s allowed %d new packets (%d bytes)", r.Name, dp, db)})
	}
	isos, err := s.countedIsolations(ctx)
	if err != nil {
		return nil, err
	}
	for _, iso := range isos {
		p, known := iso.pod(n)
		if filterPod != nil && (!known || p.Key != filterPod.Key) {
			continue
		}
		if req.GetPolicy() != nil {
			if !known || !containsPolicy(s.isolationPolicies(p, iso.dir), req.GetPolicy()) {
				continue
			}
		}
		cur := pipeline.Counters{Packets: iso.packets, Bytes: iso.bytes}
		prev := prevIso[iso.key]
		prevIso[iso.key] = cur
		dp, db := delta(cur.Packets, prev.Packets), delta(cur.Bytes, prev.Bytes)
		if baseline || dp == 0 && !req.GetIncludeIdle() {
			continue
		}
		evs = append(evs, &agentv1.PolicyVerdictEvent{Kind: agentv1.PolicyVerdictEvent_DROPPED, TimeUnixNano: now,
			Direction: iso.dir.String(), Pod: iso.localRef(n), NewPackets: dp, NewBytes: db, TotalPackets: cur.Packets,
			TotalBytes: cur.Bytes, Message: fmt.Sprintf("pod %s dropped %d %s packets by isolation (%d bytes)",
				iso.describe(n), dp, strings.ToLower(iso.dir.String()), db)})
	}
	return evs, nil
}

func containsPolicy(pols []string, ref *agentv1.PolicyRef) bool {
	ns := ref.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	for _, p := range pols {
		if p == ns+"/"+ref.GetName() {
			return true
		}
	}
	return false
}

// delta is cur-prev, or cur when the counter went down (flow re-installed).
func delta(cur, prev uint64) uint64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}
