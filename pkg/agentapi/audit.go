package agentapi

// Audit (weirctl audit): cross-checks the node's state sources pairwise and
// reports every disagreement with its subject named precisely and a detail
// the operator can act on. It only reads; repairing is the agent's (restart,
// Pod and Node controllers) or the operator's job.

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/podnet"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
)

// Kinds of Inconsistency (agentv1.Inconsistency.Kind).
const (
	KindOrphanPort       = "orphan-port"
	KindOrphanAttachment = "orphan-attachment"
	KindLeakedIP         = "leaked-ip"
	KindMissingIP        = "missing-ip"
	KindOrphanVeth       = "orphan-veth"
	KindStaleRoute       = "stale-route"
	KindMissingRoute     = "missing-route"
	KindOrphanFlow       = "orphan-flow"
	KindMissingFlow      = "missing-flow"
	KindOrphanGroup      = "orphan-group"
	KindMissingGroup     = "missing-group"
	KindDifferingGroup   = "differing-group"
)

// GroupVerifier compares the switch's groups with the agent's flow cache
// (*openflow.Switch).
type GroupVerifier interface {
	VerifyGroups(ctx context.Context) ([]openflow.GroupDiscrepancy, error)
}

// FlowVerifier compares the switch's flows with the agent's flow cache
// (*openflow.Switch).
type FlowVerifier interface {
	Verify(ctx context.Context, rounds []uint8) ([]openflow.FlowDiscrepancy, error)
}

// IPAM reads the node's IP allocations, owner ("<container id>/<ifname>",
// an attachment's key) to address.
type IPAM interface {
	Allocations(ctx context.Context) (map[string]net.IP, error)
}

// Route is a kernel route through the gateway interface with a next hop:
// the shape of a peer route (nodenet.EnsurePeerRoute).
type Route struct {
	Dst *net.IPNet
	Via net.IP
	Dev string
}

// Kernel reads the node network namespace.
type Kernel interface {
	// PodVeths returns the names of the veths named like a pod's host side
	// (podnet.HostIfName).
	PodVeths(ctx context.Context) ([]string, error)
	// GatewayRoutes returns the IPv4 routes of the main table through the
	// gateway interface that have a next hop.
	GatewayRoutes(ctx context.Context) ([]Route, error)
}

// KernelIPv6 is a Kernel that also lists Weir's IPv6 peer routes through
// the gateway (a dual-stack or IPv6-only node). Their Via may be nil when
// the source does not read the next hop: it is then not compared. The IPv6
// peer routes of a Kernel without it are not checked (the report says so).
type KernelIPv6 interface {
	GatewayRoutesV6(ctx context.Context) ([]Route, error)
}

// KubePods checks attachments against the Kubernetes API.
type KubePods interface {
	// StaleAttachments returns, by attachment key, why the Pod of each
	// attachment that names one does not exist (or is another pod now), and
	// how many Pods it read.
	StaleAttachments(ctx context.Context, atts []interfacestore.Interface) (stale map[string]string, pods int, err error)
}

// AuditSources are what Audit reads beyond the server's other Deps. A nil
// source is not checked and the report says so in its notes.
type AuditSources struct {
	Flows FlowVerifier
	// Groups, when set, also checks the OpenFlow groups (the Service
	// proxy's); nil when the proxy is off.
	Groups GroupVerifier
	// IPAM is the allocator of the node's first family (that of
	// Config.PodCIDR: IPv4, or IPv6 on an IPv6-only node), IPAMv6 the IPv6
	// allocator of a dual-stack node (on a node whose first family is
	// IPv6, IPAMv6 is used if set, else IPAM). Each is checked against
	// the attachments' addresses of its family.
	IPAM   IPAM
	IPAMv6 IPAM
	// Kernel may also be a KernelIPv6.
	Kernel Kernel
	Kube   KubePods // nil in standalone mode
	// Round is this agent run's cookie round.
	Round uint8
	// InitialSyncDone reports whether the agent has removed the flows of
	// earlier rounds (in cluster mode it does once its controllers have
	// synced); until then those flows are expected. Nil means done.
	InitialSyncDone func() bool
}

// audit collects a report.
type audit struct {
	rep *agentv1.AuditReport
}

func (a *audit) add(kind, subject, format string, args ...any) {
	a.rep.Inconsistencies = append(a.rep.Inconsistencies,
		&agentv1.Inconsistency{Kind: kind, Subject: subject, Detail: fmt.Sprintf(format, args...)})
}

func (a *audit) note(format string, args ...any) {
	a.rep.Notes = append(a.rep.Notes, fmt.Sprintf(format, args...))
}

// Audit implements agentv1.AgentServiceServer. A source that cannot be read
// fails the whole call: a partial audit must not look clean.
func (s *Server) Audit(ctx context.Context, _ *agentv1.AuditRequest) (*agentv1.AuditReport, error) {
	src := s.deps.Audit
	a := &audit{rep: &agentv1.AuditReport{Checked: &agentv1.AuditCounts{}, NodeName: s.cfg.NodeName, Round: uint32(src.Round)}}
	ports, err := s.deps.OVSDB.ListPorts(ctx, s.cfg.Bridge)
	if err != nil {
		return nil, internalError(ctx, "audit: listing OVS ports", err)
	}
	atts := s.deps.Pods.List()
	a.rep.Checked.Attachments = uint32(len(atts))
	a.portsVsAttachments(s.cfg.Bridge, ports, atts)

	ipams := [2]IPAM{src.IPAM}
	if s.firstFamily() == v6 {
		ipams = [2]IPAM{nil, src.IPAMv6}
		if src.IPAMv6 == nil {
			ipams[v6] = src.IPAM
		}
	} else if src.IPAMv6 != nil {
		ipams[v6] = src.IPAMv6
	}
	for f, ipam := range ipams {
		if ipam == nil {
			if f == s.firstFamily() || s.cidrs[f] != nil {
				a.note("%s IPAM allocations not checked: no IPAM source", familyName(f))
			}
			continue
		}
		allocs, err := ipam.Allocations(ctx)
		if err != nil {
			return nil, internalError(ctx, fmt.Sprintf("audit: reading %s IPAM allocations", familyName(f)), err)
		}
		a.ipsVsAttachments(allocs, atts, f)
	}

	if src.Kernel == nil {
		a.note("kernel veths and routes not checked: no kernel source")
	} else {
		veths, err := src.Kernel.PodVeths(ctx)
		if err != nil {
			return nil, internalError(ctx, "audit: listing host veths", err)
		}
		a.vethsVsPorts(s.cfg.Bridge, veths, ports, atts)
		if s.deps.Peers == nil {
			a.note("peer routes not checked: no Node controller (standalone mode)")
		} else {
			routes, err := src.Kernel.GatewayRoutes(ctx)
			if err != nil {
				return nil, internalError(ctx, "audit: listing routes through the gateway", err)
			}
			families := [2]bool{v4: true}
			if k6, ok := src.Kernel.(KernelIPv6); ok {
				r6, err := k6.GatewayRoutesV6(ctx)
				if err != nil {
					return nil, internalError(ctx, "audit: listing IPv6 routes through the gateway", err)
				}
				routes = append(routes, r6...)
				families[v6] = true
			}
			peers := s.deps.Peers.PeerNodes()
			if !families[v6] && hasIPv6CIDR(peers) {
				a.note("IPv6 peer routes not checked: the kernel source lists IPv4 routes only")
			}
			a.routesVsPeers(routes, peers, s.cfg.GatewayName, families)
		}
	}

	syncDone := src.InitialSyncDone == nil || src.InitialSyncDone()
	if src.Flows == nil {
		a.note("flows not checked: no flow cache source")
	} else {
		// nil: every round. After the initial sync only this run's round
		// should be on the bridge, so the flows of any other are orphans.
		disc, err := src.Flows.Verify(ctx, nil)
		if err != nil {
			return nil, internalError(ctx, "audit: verifying flows", err)
		}
		stats, err := s.deps.Switch.DumpFlows(ctx, openflow.FlowFilter{})
		if err != nil {
			return nil, internalError(ctx, "audit: counting flows", err)
		}
		a.rep.Checked.Flows = uint32(len(stats))
		a.flows(disc, s.cfg.Bridge, src.Round, syncDone)
	}
	if src.Groups != nil {
		disc, err := src.Groups.VerifyGroups(ctx)
		if err != nil {
			return nil, internalError(ctx, "audit: verifying groups", err)
		}
		a.rep.Checked.Groups, err = s.groupCount(ctx)
		if err != nil {
			return nil, internalError(ctx, "audit: counting groups", err)
		}
		a.groups(disc, s.cfg.Bridge, syncDone)
	}
	if !syncDone {
		a.note("the agent's initial sync is not complete: peers, routes and policy flows may still change; audit again shortly")
	}

	if src.Kube == nil {
		a.note("Kubernetes Pods not checked: no Kubernetes API (standalone mode)")
	} else {
		stale, n, err := src.Kube.StaleAttachments(ctx, atts)
		if err != nil {
			return nil, internalError(ctx, "audit: reading Pods from the Kubernetes API", err)
		}
		a.rep.Checked.Pods = uint32(n)
		a.attachmentsVsPods(atts, stale)
	}

	sort.SliceStable(a.rep.Inconsistencies, func(i, j int) bool {
		x, y := a.rep.Inconsistencies[i], a.rep.Inconsistencies[j]
		if x.Kind != y.Kind {
			return x.Kind < y.Kind
		}
		return x.Subject < y.Subject
	})
	if n := len(a.rep.Inconsistencies); n > 0 {
		s.log.Info("Audit found inconsistencies", "count", n)
	}
	return a.rep, nil
}

// isPodVethName reports whether name is a host-side veth name of
// podnet.HostIfName: the prefix and 11 lower-case hex digits.
func isPodVethName(name string) bool {
	rest, ok := strings.CutPrefix(name, podnet.HostIfPrefix)
	if !ok || len(rest) != 11 {
		return false
	}
	for _, c := range rest {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// isPodPort reports whether p is a pod port Weir owns: marked as one in its
// external_ids, or (a record that lost them) named like one.
func isPodPort(p ovsdb.PortInfo) bool {
	t, marked := p.ExternalIDs[ovsdb.KeyWeirType]
	return t == ovsdb.WeirTypePod || !marked && isPodVethName(p.Name)
}

func attachmentRef(at interfacestore.Interface) string {
	s := ""
	if at.PodName != "" {
		s = "pod " + at.PodNamespace + "/" + at.PodName + ", "
	}
	return s + "container " + at.ContainerID + ", ifname " + at.IfName
}

func attachmentSubject(at interfacestore.Interface) string {
	if at.PodName == "" {
		return "attachment " + at.Key()
	}
	s := "pod " + at.PodNamespace + "/" + at.PodName
	if at.PodUID != "" {
		s += " uid " + at.PodUID
	}
	return s + " (" + at.Key() + ")"
}

func portSubject(p ovsdb.PortInfo) string {
	return fmt.Sprintf("port %s ofport %d", p.Name, p.OFPort)
}

// portsVsAttachments: the bridge's pod ports against the CNI server's
// attachments (by host interface name).
func (a *audit) portsVsAttachments(bridge string, ports []ovsdb.PortInfo, atts []interfacestore.Interface) {
	byHost := make(map[string]interfacestore.Interface, len(atts))
	for _, at := range atts {
		byHost[at.PortName] = at
	}
	portNames := make(map[string]bool, len(ports))
	for _, p := range ports {
		portNames[p.Name] = true
		if !isPodPort(p) {
			continue
		}
		a.rep.Checked.Ports++
		if _, ok := byHost[p.Name]; ok {
			continue
		}
		ids := p.ExternalIDs
		owner := "no Weir external_ids"
		if interfacestore.IsPodPort(ids) {
			owner = fmt.Sprintf("recorded for pod %s/%s, container %s, ip %s", ids[interfacestore.KeyPodNamespace], ids[interfacestore.KeyPodName],
				ids[interfacestore.KeyContainerID], ids[interfacestore.KeyIP])
		}
		a.add(KindOrphanPort, portSubject(p),
			"OVS port on %s (%s) that the CNI server has no attachment for: no pod flows lead to it. An agent restart "+
				"restores it from its external_ids, or removes it if the pod's netns is gone; or remove it: ovs-vsctl del-port %s %s",
			bridge, owner, bridge, p.Name)
	}
	for _, at := range atts {
		if !portNames[at.PortName] {
			a.add(KindOrphanAttachment, attachmentSubject(at),
				"the CNI server has an attachment (%s, ip %s) whose OVS port %s is not on %s: the pod has no network "+
					"and CNI CHECK fails for it; delete the pod so its controller recreates it", attachmentRef(at), ipString(ipOf(at)),
				at.PortName, bridge)
		}
	}
}

// firstFamily is the family of Config.PodCIDR (the node's first), else
// the node's only family, else IPv4.
func (s *Server) firstFamily() int {
	switch {
	case s.cfg.PodCIDR != nil:
		return familyOf(s.cfg.PodCIDR.IP)
	case s.cidrs[v4] == nil && s.cidrs[v6] != nil:
		return v6
	}
	return v4
}

// addrOfFamily returns at's address of family f (nil if it has none).
func addrOfFamily(at interfacestore.Interface, f int) net.IP {
	for _, a := range at.IPs {
		if ip := net.IP(a.Unmap().AsSlice()); familyOf(ip) == f {
			return normIP(ip)
		}
	}
	return nil
}

// ipsVsAttachments: the owners and addresses of the IPAM of family f
// against the attachments' keys and IPs of that family.
func (a *audit) ipsVsAttachments(allocs map[string]net.IP, atts []interfacestore.Interface, f int) {
	a.rep.Checked.Ips += uint32(len(allocs))
	keys := make(map[string]bool, len(atts))
	for _, at := range atts {
		keys[at.Key()] = true
		ip := addrOfFamily(at, f)
		if ip == nil {
			continue
		}
		got, ok := allocs[at.Key()]
		switch {
		case !ok:
			owner := ""
			for o, aip := range allocs {
				if aip.Equal(ip) {
					owner = o
				}
			}
			if owner != "" {
				a.add(KindMissingIP, "ip "+ip.String(),
					"the attachment of %s uses it but IPAM has it allocated to %s: two pods may share the address; "+
						"delete one of the pods", attachmentRef(at), owner)
			} else {
				a.add(KindMissingIP, "ip "+ip.String(),
					"the attachment of %s uses it but IPAM has no allocation for it: IPAM may hand the address to a new "+
						"pod (a duplicate); restart the agent (it rebuilds IPAM from the OVS ports) or delete the pod",
					attachmentRef(at))
			}
		case !got.Equal(ip):
			a.add(KindMissingIP, "ip "+ip.String(),
				"the attachment of %s uses it but IPAM allocated %s to it: IPAM may hand %s to a new pod; restart the "+
					"agent (it rebuilds IPAM from the OVS ports) or delete the pod", attachmentRef(at), got, ip)
		}
	}
	for owner, ip := range allocs {
		if !keys[owner] {
			a.add(KindLeakedIP, "ip "+ip.String(),
				"allocated in IPAM to %s, which has no attachment: the address is never handed out again; an agent "+
					"restart releases it (IPAM is rebuilt from the OVS ports)", owner)
		}
	}
}

// vethsVsPorts: host-side pod veths against the bridge's ports; and the
// attachments whose veth is gone.
func (a *audit) vethsVsPorts(bridge string, veths []string, ports []ovsdb.PortInfo, atts []interfacestore.Interface) {
	have := make(map[string]bool, len(veths))
	portNames := make(map[string]bool, len(ports))
	for _, p := range ports {
		portNames[p.Name] = true
	}
	for _, v := range veths {
		if !isPodVethName(v) {
			continue
		}
		a.rep.Checked.Veths++
		have[v] = true
		if !portNames[v] {
			a.add(KindOrphanVeth, "veth "+v,
				"a pod's host-side veth (Weir's naming) that is not a port of %s: left behind by a failed ADD or DEL, "+
					"it carries no traffic; remove it: ip link del %s", bridge, v)
		}
	}
	for _, at := range atts {
		if portNames[at.PortName] && !have[at.PortName] {
			a.add(KindOrphanAttachment, attachmentSubject(at),
				"the attachment (%s, ip %s) has its OVS port but its host veth %s is gone: the pod has no network; "+
					"delete the pod so its controller recreates it", attachmentRef(at), ipString(ipOf(at)), at.PortName)
		}
	}
}

// routesVsPeers: the kernel routes through the gateway against the Node
// controller's peers (one route per peer pod CIDR, via its gateway IP of
// that family), for the families the kernel source lists.
func (a *audit) routesVsPeers(routes []Route, peers []pipeline.PeerNode, gateway string, families [2]bool) {
	a.rep.Checked.Routes = uint32(len(routes))
	a.rep.Checked.Peers = uint32(len(peers))
	type want struct {
		peer pipeline.PeerNode
		cidr *net.IPNet
		via  net.IP
	}
	var wants []want
	byCIDR := map[string]want{}
	for _, p := range peers {
		for _, c := range peerCIDRs(p) {
			f := familyOf(c.IP)
			if !families[f] {
				continue
			}
			w := want{peer: p, cidr: c, via: peerGateway(p, f)}
			wants = append(wants, w)
			byCIDR[c.String()] = w
		}
	}
	routed := map[string]bool{}
	for _, r := range routes {
		dst := r.Dst.String()
		via := "?"
		if r.Via != nil {
			via = r.Via.String()
		}
		subject := fmt.Sprintf("route %s via %s dev %s", dst, via, r.Dev)
		w, ok := byCIDR[dst]
		switch {
		case !ok:
			a.add(KindStaleRoute, subject,
				"no peer node has pod CIDR %s: the node's own traffic to it enters OVS and goes nowhere; if no node "+
					"owns that CIDR any more: ip route del %s dev %s", dst, dst, r.Dev)
		case r.Via != nil && !r.Via.Equal(w.via):
			routed[dst] = true
			a.add(KindStaleRoute, subject,
				"peer node %s's gateway is %s, not %s: the Node controller replaces the route when it next syncs node %s "+
					"(or restart the agent)", w.peer.Name, w.via, r.Via, w.peer.Name)
		default:
			routed[dst] = true
		}
	}
	for _, w := range wants {
		if routed[w.cidr.String()] {
			continue
		}
		a.add(KindMissingRoute, fmt.Sprintf("route %s via %s dev %s", w.cidr, w.via, gateway),
			"peer node %s (node IP %s) has tunnel flows but no kernel route to its pod CIDR: the node's own traffic to "+
				"its pods does not enter OVS; the Node controller re-adds it when it next syncs node %s (or restart the agent)",
			w.peer.Name, w.peer.NodeIP, w.peer.Name)
	}
}

// hasIPv6CIDR reports whether a peer has an IPv6 pod CIDR.
func hasIPv6CIDR(peers []pipeline.PeerNode) bool {
	for _, p := range peers {
		for _, c := range peerCIDRs(p) {
			if familyOf(c.IP) == v6 {
				return true
			}
		}
	}
	return false
}

func flowSubject(d openflow.FlowDiscrepancy) string {
	table := fmt.Sprint(d.Table)
	if name, ok := pipeline.TableName(d.Table); ok {
		table = name
	}
	return fmt.Sprintf("flow table=%s priority=%d cookie=%#x match=%s", table, d.Priority, d.Cookie, dash(d.Match))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// flows turns Verify's discrepancies into inconsistencies. Before the
// initial sync, the flows of earlier rounds are the previous run's, kept on
// purpose until this run has re-installed everything: they are counted in a
// note, not reported.
func (a *audit) flows(disc []openflow.FlowDiscrepancy, bridge string, round uint8, syncDone bool) {
	pending := 0
	for _, d := range disc {
		subject := flowSubject(d)
		spec := fmt.Sprintf("table=%d,priority=%d", d.Table, d.Priority)
		if d.Match != "" {
			spec += "," + d.Match
		}
		del := fmt.Sprintf("ovs-ofctl -O OpenFlow15 --strict del-flows %s '%s'", bridge, spec)
		if d.Kind == openflow.DiscrepancyMissing {
			a.add(KindMissingFlow, subject,
				"in the agent's flow cache (owner %s) but not on the switch: the packets it handles take another path; "+
					"the agent replays its cache when ovs-vswitchd reconnects; restart the agent to re-install it now", d.Owner)
			continue
		}
		r := openflow.Cookie(d.Cookie).Round()
		switch {
		case r == 0:
			a.add(KindOrphanFlow, subject,
				"cookie round 0: not installed by Weir (ovs-ofctl add-flow or another controller), it can change the "+
					"pipeline's decisions; remove it: %s", del)
		case r != round && !syncDone:
			pending++
		case r != round:
			a.add(KindOrphanFlow, subject,
				"of cookie round %d, an earlier agent run (this run's round is %d), which should have been removed after "+
					"the initial sync; remove it: %s", r, round, del)
		default:
			a.add(KindOrphanFlow, subject,
				"carries this run's round %d but is not in the agent's flow cache (a delete that did not reach the switch, "+
					"or a flow added outside the cache); remove it: %s", round, del)
		}
	}
	if pending > 0 {
		a.note("%d flows of earlier cookie rounds await removal after the agent's initial sync (not reported)", pending)
	}
}

// groupCount counts the groups on the switch (one group desc/stats
// request).
func (s *Server) groupCount(ctx context.Context) (uint32, error) {
	if s.deps.Groups == nil {
		return 0, nil
	}
	gs, err := s.deps.Groups.DumpGroups(ctx)
	return uint32(len(gs)), err
}

// groups turns VerifyGroups' discrepancies into inconsistencies. Groups
// have no cookie round: before the initial sync the groups no owner
// caches are the previous run's, which the agent deletes after it (with
// the earlier rounds' flows using them), so they are only counted.
func (a *audit) groups(disc []openflow.GroupDiscrepancy, bridge string, syncDone bool) {
	pending := 0
	for _, d := range disc {
		subject := fmt.Sprintf("group %d", d.ID)
		switch d.Kind {
		case openflow.DiscrepancyMissing:
			a.add(KindMissingGroup, subject,
				"in the agent's flow cache (owner %s) but not on the switch: OVS deleted the flows sending to it, so that "+
					"Service is not load-balanced; the agent replays its cache when ovs-vswitchd reconnects; restart the agent "+
					"to re-install it now", d.Owner)
		case openflow.DiscrepancyOrphan:
			if !syncDone {
				pending++
				continue
			}
			a.add(KindOrphanGroup, subject,
				"on the switch but in no owner's cache (another tool, or an earlier run's group left behind); "+
					"remove it: ovs-ofctl -O OpenFlow15 del-groups %s group_id=%d", bridge, d.ID)
		default:
			a.add(KindDifferingGroup, subject, "owner %s: the switch's group differs from the cached one: %s; restart "+
				"the agent to re-install it", d.Owner, d.Detail)
		}
	}
	if pending > 0 {
		a.note("%d groups no owner caches (an earlier agent run's) await removal after the initial sync (not reported)", pending)
	}
}

// attachmentsVsPods reports the attachments whose Pod is gone.
func (a *audit) attachmentsVsPods(atts []interfacestore.Interface, stale map[string]string) {
	for _, at := range atts {
		reason, ok := stale[at.Key()]
		if !ok {
			continue
		}
		a.add(KindOrphanAttachment, attachmentSubject(at),
			"%s, but the interface (container %s, ifname %s, port %s, ip %s) is still attached: the runtime's CNI DEL "+
				"or, after the grace period, the agent's Pod controller removes it; if neither does, restart the agent",
			reason, at.ContainerID, at.IfName, at.PortName, ipString(ipOf(at)))
	}
}
