package agentapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/unixctl"
)

// defaultTraceSrcPort is the TCP/UDP source port of a trace without one.
const defaultTraceSrcPort = 40000

// endpoint is one end of a traced packet.
type endpoint struct {
	// ip is the traced address: given in the request (given), else chosen
	// by pickFamily among the pod's addresses or the node's gateways.
	ip     net.IP
	given  bool
	mac    net.HardwareAddr // local pod's MAC
	pod    *pod             // local pod, if it is one
	peer   *pipeline.PeerNode
	node   string // a node destination (peer, or this node if peer is nil)
	inPort uint32 // where the packet enters the bridge (source only)
}

// resolveSource finds where a packet from the request's source enters the
// bridge: a local pod's port, the tunnel (a peer's pod), or the gateway
// (anything else: the node itself, outside addresses).
func (s *Server) resolveSource(n *node, req *agentv1.TraceRequest) (endpoint, error) {
	var e endpoint
	switch {
	case req.GetSourcePod() != nil && req.GetSourceIp() != "":
		return e, status.Error(codes.InvalidArgument, "give the source as a pod or an IP, not both")
	case req.GetSourcePod() != nil:
		p, err := n.findPod(req.GetSourcePod(), "source")
		if err != nil {
			return e, err
		}
		return podEndpoint(p)
	case req.GetSourceIp() != "":
		ip, err := parseIP(req.GetSourceIp(), "source IP")
		if err != nil {
			return e, err
		}
		if p, ok := n.podByIP(ip); ok {
			return podEndpointAt(p, ip)
		}
		e.ip, e.given = ip, true
		if e.peer = s.peerOfPodIP(ip); e.peer != nil {
			e.inPort = s.cfg.TunnelOFPort
		} else {
			e.inPort = s.cfg.GatewayOFPort
		}
		return e, nil
	}
	return e, status.Error(codes.InvalidArgument, "a source (pod or IP) is required")
}

// podEndpointAt is podEndpoint with the address the request named (which
// picks the family).
func podEndpointAt(p pod, ip net.IP) (endpoint, error) {
	e, err := podEndpoint(p)
	if err == nil {
		e.ip, e.given = ip, true
	}
	return e, err
}

func podEndpoint(p pod) (endpoint, error) {
	if p.OFPort == 0 || p.IP == nil {
		return endpoint{}, status.Errorf(codes.FailedPrecondition, "pod %s has no OpenFlow port or IP yet", p.ref())
	}
	return endpoint{ip: p.IP, mac: p.MAC, pod: &p, inPort: p.OFPort}, nil
}

// resolveDestination finds the destination address (and local pod).
func (s *Server) resolveDestination(n *node, req *agentv1.TraceRequest) (endpoint, error) {
	var e endpoint
	given := 0
	for _, set := range []bool{req.GetDestinationPod() != nil, req.GetDestinationIp() != "", req.GetDestinationNode() != ""} {
		if set {
			given++
		}
	}
	if given != 1 {
		return e, status.Error(codes.InvalidArgument, "give exactly one destination: a pod, an IP or a node")
	}
	switch {
	case req.GetDestinationPod() != nil:
		p, err := n.findPod(req.GetDestinationPod(), "destination")
		if err != nil {
			return e, err
		}
		return podEndpoint(p)
	case req.GetDestinationNode() != "":
		name := req.GetDestinationNode()
		for _, peer := range s.peers() {
			if peer.Name == name {
				return endpoint{peer: &peer, node: name}, nil
			}
		}
		if name == s.cfg.NodeName && (s.gws[v4] != nil || s.gws[v6] != nil) {
			return endpoint{node: name}, nil
		}
		return e, status.Errorf(codes.NotFound, "no peer node %q on this node", name)
	}
	ip, err := parseIP(req.GetDestinationIp(), "destination IP")
	if err != nil {
		return e, err
	}
	if p, ok := n.podByIP(ip); ok {
		return podEndpointAt(p, ip)
	}
	e.ip, e.given = ip, true
	e.peer = s.peerOfPodIP(ip)
	return e, nil
}

// addrOf returns e's address of family f: a local pod's, a node's gateway
// address; nil if it has none.
func (s *Server) addrOf(e *endpoint, f int) net.IP {
	switch {
	case e.pod != nil:
		for _, a := range e.pod.IPs {
			if ip := net.IP(a.Unmap().AsSlice()); familyOf(ip) == f {
				return normIP(ip)
			}
		}
		if familyOf(e.pod.IP) == f {
			return e.pod.IP
		}
	case e.node != "" && e.peer != nil:
		return peerGateway(*e.peer, f)
	case e.node != "":
		return s.gws[f]
	}
	return nil
}

// describe names e in errors.
func (e *endpoint) describe() string {
	switch {
	case e.pod != nil:
		return "pod " + e.pod.ref()
	case e.node != "":
		return "node " + e.node
	}
	return e.ip.String()
}

// pickFamily chooses the trace's IP family and sets both endpoints'
// addresses in it. An address given in the request decides; else IPv4 if
// both ends have one, else IPv6 (pods and gateways of an IPv6-only node
// have IPv6 addresses only).
func (s *Server) pickFamily(src, dst *endpoint) (int, error) {
	fam := -1
	if src.given {
		fam = familyOf(src.ip)
	}
	if dst.given {
		if fam >= 0 && familyOf(dst.ip) != fam {
			return 0, status.Errorf(codes.InvalidArgument, "source %s and destination %s are of different IP families", src.ip, dst.ip)
		}
		fam = familyOf(dst.ip)
	}
	if fam < 0 {
		for _, f := range []int{v4, v6} {
			if s.addrOf(src, f) != nil && s.addrOf(dst, f) != nil {
				fam = f
				break
			}
		}
		if fam < 0 {
			return 0, status.Errorf(codes.FailedPrecondition, "%s and %s have no IP family in common", src.describe(), dst.describe())
		}
	}
	for _, e := range []*endpoint{src, dst} {
		if e.given {
			continue
		}
		if e.ip = s.addrOf(e, fam); e.ip == nil {
			what := "address"
			if e.pod == nil {
				what = "gateway address"
			}
			return 0, status.Errorf(codes.FailedPrecondition, "%s has no %s %s", e.describe(), familyName(fam), what)
		}
	}
	return fam, nil
}

// peerOfPodIP returns the peer node one of whose pod CIDRs holds ip, or
// nil.
func (s *Server) peerOfPodIP(ip net.IP) *pipeline.PeerNode {
	for _, peer := range s.peers() {
		for _, c := range peerCIDRs(peer) {
			if c.Contains(ip) {
				return &peer
			}
		}
	}
	return nil
}

// peerCIDRs returns the peer's pod CIDRs. Each is taken by its family
// wherever it is given (an IPv6-only peer's may be in PodCIDR).
func peerCIDRs(p pipeline.PeerNode) []*net.IPNet {
	var out []*net.IPNet
	for _, c := range []*net.IPNet{p.PodCIDR, p.PodCIDRv6} {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// peerGateway returns the peer's gateway address of family f (nil if it
// has none), wherever it is given.
func peerGateway(p pipeline.PeerNode, f int) net.IP {
	for _, ip := range []net.IP{p.GatewayIP, p.GatewayIPv6} {
		if ip != nil && familyOf(ip) == f {
			return normIP(ip)
		}
	}
	return nil
}

func parseIP(s, what string) (net.IP, error) {
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, status.Errorf(codes.InvalidArgument, "%s %q is not an IP address", what, s)
	}
	return normIP(ip), nil
}

// traceFlow builds the ofproto/trace flow: the packet as it arrives at
// the bridge. From a local pod: its MAC to the destination pod's MAC when
// both are local pods of the same subnet (pods ARP each other), else to
// the gateway's MAC (routed). Through the tunnel: to GlobalVirtualMAC.
// From the gateway: the gateway's MAC to the destination pod's MAC.
func (s *Server) traceFlow(src, dst endpoint, req *agentv1.TraceRequest) (string, error) {
	fam, err := s.pickFamily(&src, &dst)
	if err != nil {
		return "", err
	}
	isV6 := fam == v6
	var dlSrc, dlDst string
	gwMAC := macString(s.cfg.GatewayMAC)
	switch {
	case src.pod != nil:
		dlSrc = src.mac.String()
		// Local pods of one subnet resolve each other (ARP, or ND). Local
		// pods have their addresses from the node's pod CIDR of each
		// family; when it is not known, they are taken to.
		cidr := s.cidrs[fam]
		if dst.pod != nil && (cidr == nil || cidr.Contains(src.ip) && cidr.Contains(dst.ip)) {
			dlDst = dst.mac.String()
		} else {
			dlDst = gwMAC
		}
	case src.peer != nil:
		if s.cfg.TunnelOFPort == 0 {
			return "", status.Error(codes.FailedPrecondition, "the node has no tunnel port")
		}
		dlSrc, dlDst = gwMAC, pipeline.GlobalVirtualMAC
	default:
		dlSrc = "02:00:00:00:00:01"
		if dst.pod != nil {
			dlDst = dst.mac.String()
		} else {
			dlDst = gwMAC
		}
		if s.cfg.GatewayMAC != nil {
			dlSrc = gwMAC
		}
	}
	proto := strings.ToLower(req.GetProtocol())
	if proto == "" {
		proto = "icmp"
	}
	parts := []string{"in_port=" + strconv.FormatUint(uint64(src.inPort), 10)}
	if src.peer != nil {
		// The outer source is the peer's node IP, of the underlay's
		// family (not necessarily the packet's).
		tunSrc := "tun_src="
		if familyOf(src.peer.NodeIP) == v6 {
			tunSrc = "tun_ipv6_src="
		}
		parts = append(parts, tunSrc+src.peer.NodeIP.String(), "tun_id=0")
	}
	// An echo request; ICMPv6 has fields of its own (icmp_type's
	// prerequisite is ICMPv4).
	family, srcField, dstField, echo := "", "nw_src=", "nw_dst=", []string{"icmp_type=8", "icmp_code=0"}
	if isV6 {
		family, srcField, dstField, echo = "6", "ipv6_src=", "ipv6_dst=", []string{"icmpv6_type=128", "icmpv6_code=0"}
	}
	switch proto {
	case "icmp", "tcp", "udp":
		parts = append(parts, proto+family)
	}
	parts = append(parts, "dl_src="+dlSrc, "dl_dst="+dlDst, srcField+src.ip.String(), dstField+dst.ip.String(), "nw_ttl=64")
	switch proto {
	case "icmp":
		if req.GetSourcePort() != 0 || req.GetDestinationPort() != 0 {
			return "", status.Error(codes.InvalidArgument, "ports need protocol tcp or udp")
		}
		parts = append(parts, echo...)
	case "tcp", "udp":
		sp := req.GetSourcePort()
		if sp == 0 {
			sp = defaultTraceSrcPort
		}
		if sp > 65535 || req.GetDestinationPort() > 65535 {
			return "", status.Errorf(codes.InvalidArgument, "port out of range (1-65535)")
		}
		// tcp_src or udp_src: ofproto/trace's flow parser takes tp_src
		// for tcp_src, whose prerequisite (TCP) a UDP packet does not meet.
		parts = append(parts, fmt.Sprintf("%s_src=%d", proto, sp), fmt.Sprintf("%s_dst=%d", proto, req.GetDestinationPort()))
		if proto == "tcp" {
			parts = append(parts, "tcp_flags=0x002")
		}
	default:
		return "", status.Errorf(codes.InvalidArgument, "protocol %q: want icmp, tcp or udp", req.GetProtocol())
	}
	return strings.Join(parts, ","), nil
}

// Trace implements agentv1.AgentServiceServer.
func (s *Server) Trace(ctx context.Context, req *agentv1.TraceRequest) (*agentv1.TraceResponse, error) {
	if s.deps.Unixctl == nil {
		return nil, status.Error(codes.Unimplemented, "trace needs ovs-vswitchd's unixctl socket, which is not configured")
	}
	n, err := s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	src, err := s.resolveSource(n, req)
	if err != nil {
		return nil, err
	}
	dst, err := s.resolveDestination(n, req)
	if err != nil {
		return nil, err
	}
	flow, err := s.traceFlow(src, dst, req)
	if err != nil {
		return nil, err
	}
	var wantEP netip.Addr
	var wantPort uint16
	if v := req.GetServiceEndpoint(); v != "" {
		if !s.proxyOn() {
			return nil, errProxyOff
		}
		if wantEP, wantPort, err = parseEndpoint(v); err != nil {
			return nil, err
		}
	}
	// With the proxy, the packet carries a dp_hash: a Service's select
	// group (selection_method=dp_hash) picks its bucket from it, where
	// ofproto/trace would otherwise stop at the hash recirculation ("no
	// live bucket"), which it does not follow. The datapath hashes each
	// real connection's 5-tuple, so the hash here is the trace's own.
	hash := uint32(0)
	if s.proxyOn() {
		hash = traceHash(flow)
	}
	out, tr, err := s.runTrace(ctx, flow, hash)
	if err != nil {
		return nil, err
	}
	svc := s.serviceHop(tr)
	if wantEP.IsValid() {
		if svc == nil {
			return nil, status.Errorf(codes.FailedPrecondition, "the packet does not reach a Service's group (flow %s), so it has no endpoint %s to follow",
				flow, req.GetServiceEndpoint())
		}
		i := endpointIndex(svc.sp.ClusterEndpoints, wantEP, wantPort)
		if i < 0 {
			return nil, status.Errorf(codes.NotFound, "%s is not an endpoint of Service %s", req.GetServiceEndpoint(), serviceName(svc.sp.Key))
		}
		if svc.bucket != uint32(i) && svc.sp.AffinityTimeout > 0 {
			// The pipeline gives such a group a hash of the client's
			// address instead of dp_hash: the endpoint follows from the
			// client, not from a per-connection hash.
			return nil, status.Errorf(codes.FailedPrecondition,
				"Service %s has sessionAffinity ClientIP: its group picks the endpoint by the client's address, and this client's is %s, not %s",
				serviceName(svc.sp.Key), orUnknown(svc.endpoint), req.GetServiceEndpoint())
		}
		// OVS maps the hash's low bits (at most 256 values) to buckets:
		// one of 1..256 picks bucket i if any does.
		for h := uint32(1); svc.bucket != uint32(i) && h <= 256; h++ {
			if out, tr, err = s.runTrace(ctx, flow, h); err != nil {
				return nil, err
			}
			if svc = s.serviceHop(tr); svc == nil {
				return nil, status.Errorf(codes.Internal, "the trace with dp_hash=%d no longer reaches the Service's group", h)
			}
			hash = h
		}
		if svc.bucket != uint32(i) {
			return nil, status.Errorf(codes.FailedPrecondition, "no dp_hash makes group %d pick the bucket of %s (weight 0?)", svc.groupID,
				req.GetServiceEndpoint())
		}
	}
	if hash != 0 {
		flow += fmt.Sprintf(",dp_hash=%#x", hash)
	}
	resp := &agentv1.TraceResponse{Flow: flow, RawOutput: out}
	resp.Steps = tr.steps
	resp.Verdict = s.verdict(n, tr)
	s.explainService(resp, svc, dst, req)
	return resp, nil
}

// runTrace runs ofproto/trace on flow, with dp_hash=hash when non-zero.
func (s *Server) runTrace(ctx context.Context, flow string, hash uint32) (string, parsedTrace, error) {
	f := flow
	if hash != 0 {
		f += fmt.Sprintf(",dp_hash=%#x", hash)
	}
	out, err := s.deps.Unixctl.Call(ctx, "ofproto/trace", s.cfg.Bridge, f, "--ct-next", "trk,new")
	if err != nil {
		var ue *unixctl.Error
		if errors.As(err, &ue) {
			return "", parsedTrace{}, status.Errorf(codes.InvalidArgument, "ofproto/trace rejected flow %s: %s", f, ue.Message)
		}
		return "", parsedTrace{}, internalError(ctx, "running ofproto/trace", err)
	}
	return out, parseTrace(out, s.cfg.Bridge), nil
}

// parsedTrace is ofproto/trace's output in pieces.
type parsedTrace struct {
	steps []*agentv1.TraceStep
	// Of the last section (after the last recirculation): its datapath
	// actions, final flow, and output ports seen.
	datapathActions string
	finalFlow       string
	outPorts        []uint32
	// warnings are what ovs-vswitchd reports it could not do in the
	// main bridge (" >> native tunnel routing failed"), and the tunnel
	// neighbour it has yet to resolve.
	warnings []string
	cookies  []uint64 // per step
	inMain   []bool   // per step: in the main bridge (not the underlay's)
}

var (
	// " 8. dl_dst=02:00:0a:0a:00:04, priority 200, cookie 0x102000000000002"
	stepRE = regexp.MustCompile(`^\s*(\d+)\. (?:(.*), )?priority (\d+)(?:, cookie (0x[0-9a-f]+))?$`)
	// "-> output port is 4" / "output:4" / "output:NXM_NX_REG1[]"
	outPortRE = regexp.MustCompile(`^-> output port is (\d+)`)
	outputRE  = regexp.MustCompile(`^output:(\d+)$`)
	// `bridge("br-phy")`: the steps after it are in that bridge (after
	// native tunnelling, the underlay bridge's).
	bridgeRE = regexp.MustCompile(`^bridge\("(.*)"\)$`)
	// The tunnel destination in the final flow: tun_dst over an IPv4
	// underlay, tun_ipv6_dst over an IPv6 one.
	tunDstRE = regexp.MustCompile(`\btun_(?:ipv6_)?dst=([0-9A-Fa-f:.]+)`)
)

// parseTrace splits ofproto/trace's output into steps. Later sections
// (after "recirc(...) - resume conntrack") reset the output ports and
// datapath actions: the verdict is that of the last section. Steps in
// another bridge than bridge (the underlay bridge a natively tunnelled
// packet continues in) name no pipeline table and output to none of
// bridge's ports.
func parseTrace(out, bridge string) parsedTrace {
	var tr parsedTrace
	var cur *agentv1.TraceStep
	afterRecirc := false
	// other is the other bridge the steps are in ("" for bridge), from
	// its header indented otherIndent: ofproto/trace nests the underlay
	// bridge's steps under the tunnel output, and steps indented less are
	// bridge's again.
	other, otherIndent := "", 0
	for _, raw := range strings.Split(out, "\n") {
		line := strings.TrimSpace(raw)
		indent := len(raw) - len(strings.TrimLeft(raw, " "))
		if m := bridgeRE.FindStringSubmatch(line); m != nil {
			if other, otherIndent = m[1], indent; other == bridge || bridge == "" {
				other = ""
			}
			cur = nil
			continue
		}
		switch {
		case strings.Contains(line, " - resume conntrack"):
			afterRecirc = true
			tr.outPorts, tr.datapathActions, tr.finalFlow, tr.warnings = nil, "", "", nil
			other = ""
			cur = nil
			continue
		case strings.HasPrefix(line, "Final flow: "):
			tr.finalFlow = strings.TrimPrefix(line, "Final flow: ")
			cur = nil
			continue
		case strings.HasPrefix(line, "Datapath actions: "):
			tr.datapathActions = strings.TrimPrefix(line, "Datapath actions: ")
			cur = nil
			continue
		case line == "" || strings.HasPrefix(line, "Megaflow:") || strings.HasPrefix(line, "Flow:"):
			cur = nil
			continue
		}
		if m := stepRE.FindStringSubmatch(raw); m != nil {
			if indent < otherIndent {
				other, otherIndent = "", 0
			}
			// ovs-vswitchd prints tables 0-255 only; a larger number (seen
			// by FuzzTrace) names no table rather than a wrapped one.
			id, err := strconv.ParseUint(m[1], 10, 32)
			var name string
			if err == nil && id <= 255 && other == "" {
				name, _ = pipeline.TableName(uint8(id))
			}
			cookie, _ := strconv.ParseUint(strings.TrimPrefix(m[4], "0x"), 16, 64)
			flow := "priority=" + m[3]
			if m[2] != "" {
				flow = m[2] + ", priority " + m[3]
			}
			if m[4] != "" {
				flow += ", cookie " + m[4]
			}
			cur = &agentv1.TraceStep{TableId: uint32(id), TableName: name, Flow: flow, AfterRecirculation: afterRecirc}
			if other != "" {
				cur.Note = otherBridgeNote + other
			}
			tr.steps = append(tr.steps, cur)
			tr.cookies = append(tr.cookies, cookie)
			tr.inMain = append(tr.inMain, other == "")
			continue
		}
		if cur == nil {
			continue
		}
		cur.Actions = append(cur.Actions, line)
		if other != "" {
			continue
		}
		if w, ok := traceWarning(line); ok {
			tr.warnings = append(tr.warnings, w)
		}
		if line == "IN_PORT" {
			// Output to the input port (a hairpinned Service
			// connection): resolved from the final flow below.
			tr.outPorts = append(tr.outPorts, ofppInPort)
		} else if m := outPortRE.FindStringSubmatch(line); m != nil {
			p, _ := strconv.ParseUint(m[1], 10, 32)
			tr.outPorts = append(tr.outPorts, uint32(p))
		} else if m := outputRE.FindStringSubmatch(line); m != nil {
			p, _ := strconv.ParseUint(m[1], 10, 32)
			tr.outPorts = append(tr.outPorts, uint32(p))
		}
	}
	if m := inPortRE.FindStringSubmatch(tr.finalFlow); m != nil {
		p, _ := strconv.ParseUint(m[1], 10, 32)
		for i, o := range tr.outPorts {
			if o == ofppInPort {
				tr.outPorts[i] = uint32(p)
			}
		}
	}
	return tr
}

// ofppInPort is OpenFlow's OFPP_IN_PORT, the IN_PORT action's port.
const ofppInPort = 0xfffffff8

var inPortRE = regexp.MustCompile(`\bin_port=(\d+)`)

// otherBridgeNote starts the note of a step in another bridge.
const otherBridgeNote = "in bridge "

// traceWarning returns what an action line of ofproto/trace says
// ovs-vswitchd could not do: its warnings (">> text") and errors
// (">>>> text <<<<"), and the tunnel neighbour it has to resolve first
// (the packet is not sent: "-> neighbor cache miss for ... sending ARP
// request").
func traceWarning(line string) (string, bool) {
	switch {
	case strings.HasPrefix(line, ">>>> "):
		return strings.TrimSuffix(strings.TrimPrefix(line, ">>>> "), " <<<<"), true
	case strings.HasPrefix(line, ">> "):
		return strings.TrimPrefix(line, ">> "), true
	case strings.HasPrefix(line, "-> neighbor cache miss"):
		return strings.TrimPrefix(line, "-> "), true
	}
	return "", false
}

// verdict explains the trace: where the packet went, which policy rules
// allowed it, or which isolation dropped it.
func (s *Server) verdict(n *node, tr parsedTrace) *agentv1.TraceVerdict {
	v := &agentv1.TraceVerdict{}
	for i, step := range tr.steps {
		c := openflow.Cookie(tr.cookies[i])
		if !tr.inMain[i] || c.Category() != pipeline.CategoryPolicy || c.Object() == 0 || step.TableId != uint32(pipeline.IngressRule) &&
			step.TableId != uint32(pipeline.EgressRule) {
			continue
		}
		if r, ok := s.deps.Pipeline.PolicyRule(uint32(c.Object())); ok {
			step.Note = "allowed by policy rule " + r.Name
			v.AllowedBy = append(v.AllowedBy, r.Name)
		} else {
			step.Note = fmt.Sprintf("allowed by policy rule %d (no longer realized)", c.Object())
		}
	}
	// Into the tunnel with a warning is reported as such even when the
	// datapath actions are empty: where the packet was to go is the
	// answer, and the warning says why it did not.
	toTunnel := len(tr.outPorts) > 0 && s.cfg.TunnelOFPort != 0 && tr.outPorts[len(tr.outPorts)-1] == s.cfg.TunnelOFPort
	dropped := tr.datapathActions == "" || tr.datapathActions == "drop" || len(tr.outPorts) == 0
	if toTunnel && len(tr.warnings) > 0 {
		dropped = false
	}
	if !dropped {
		port := tr.outPorts[len(tr.outPorts)-1]
		v.OutPort = port
		v.OutPortName = n.portNames[port]
		switch {
		case port == s.cfg.TunnelOFPort && port != 0:
			v.Kind = agentv1.TraceVerdict_TUNNEL
			if ip := tunnelDst(tr.finalFlow); ip != nil {
				v.TunnelDst = ip.String()
				for _, peer := range s.peers() {
					if peer.NodeIP.Equal(ip) {
						v.Node = peer.Name
					}
				}
			}
			v.Summary = fmt.Sprintf("tunneled to node %s (%s)", orUnknown(v.Node), orUnknown(v.TunnelDst))
			if len(tr.warnings) > 0 {
				// The pipeline chose the tunnel; ovs-vswitchd did not
				// send the packet (no underlay route to the endpoint, or
				// its MAC still unresolved).
				v.Summary += "; but ovs-vswitchd did not send it: " + strings.Join(tr.warnings, "; ") +
					" (check the underlay: ovs-appctl ovs/route/show, tnl/neigh/show)"
			}
		default:
			v.Kind = agentv1.TraceVerdict_OUTPUT
			if p, ok := n.podByOFPort(port); ok {
				if p.Name != "" {
					v.Pod = &agentv1.PodRef{Namespace: p.Namespace, Name: p.Name}
				}
				v.Summary = fmt.Sprintf("output to port %s (pod %s)", orUnknown(v.OutPortName), p.ref())
			} else if port == s.cfg.GatewayOFPort {
				v.Summary = fmt.Sprintf("output to the gateway %s (the node)", orUnknown(v.OutPortName))
			} else {
				v.Summary = fmt.Sprintf("output to port %d %s", port, v.OutPortName)
			}
		}
		if len(v.AllowedBy) > 0 {
			v.Summary += "; allowed by " + strings.Join(v.AllowedBy, ", ")
		}
		return v
	}
	v.Kind = agentv1.TraceVerdict_DROP
	// The drop is explained by the main bridge's last step.
	var last *agentv1.TraceStep
	for i, step := range tr.steps {
		if tr.inMain[i] {
			last = step
		}
	}
	if last == nil {
		v.DropReason = "no flow matched"
		v.Summary = "dropped: " + v.DropReason
		return v
	}
	switch uint8(last.TableId) {
	case pipeline.IngressDefaultRule, pipeline.EgressDefaultRule:
		dir := pipeline.Ingress
		if last.TableId == uint32(pipeline.EgressDefaultRule) {
			dir = pipeline.Egress
		}
		match, _, _ := strings.Cut(last.Flow, ", priority")
		iso := isolation{dir: dir}
		iso.ofport, iso.ip = parseIsolationMatch(match)
		who := iso.describe(n)
		if p, ok := iso.pod(n); ok {
			if p.Name != "" {
				v.IsolatedPod = &agentv1.PodRef{Namespace: p.Namespace, Name: p.Name}
			}
			v.IsolatingPolicies = s.isolationPolicies(p, dir)
		}
		v.DropReason = fmt.Sprintf("dropped by isolation of %s (%s)", who, strings.ToLower(dir.String()))
		if len(v.IsolatingPolicies) > 0 {
			v.DropReason += ": no rule of " + strings.Join(v.IsolatingPolicies, ", ") + " allows it"
		}
		last.Note = v.DropReason
	default:
		v.DropReason = fmt.Sprintf("dropped in table %s by flow %s", orUnknown(last.TableName), last.Flow)
	}
	v.Summary = v.DropReason
	return v
}

// tunnelDst returns the tunnel destination a final flow carries: the
// first tun_dst or tun_ipv6_dst that is a specified address (ovs-vswitchd
// prints the unset family's fields as 0.0.0.0 or :: when it prints them).
func tunnelDst(finalFlow string) net.IP {
	for _, m := range tunDstRE.FindAllStringSubmatch(finalFlow, -1) {
		if ip := net.ParseIP(m[1]); ip != nil && !ip.IsUnspecified() {
			return normIP(ip)
		}
	}
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

// parseIsolationMatch reads reg1=<ofport> or nw_src=<ip> from the match of
// the isolation drop a trace ended in (as ovs-appctl ofproto/trace prints
// it).
func parseIsolationMatch(match string) (ofport uint32, ip net.IP) {
	for _, kv := range strings.Split(match, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "reg1", "in_port":
			if n, err := strconv.ParseUint(v, 0, 32); err == nil {
				ofport = uint32(n)
			}
		case "nw_src", "ipv6_src":
			ip = net.ParseIP(v)
		}
	}
	return ofport, ip
}
