package agentapi

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	ip     net.IP
	mac    net.HardwareAddr // local pod's MAC
	pod    *pod             // local pod, if it is one
	peer   *pipeline.PeerNode
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
		e.ip = ip
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
		e.ip = ip
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
		for _, peer := range s.peers() {
			if peer.Name == req.GetDestinationNode() {
				return endpoint{ip: peer.GatewayIP, peer: &peer}, nil
			}
		}
		if req.GetDestinationNode() == s.cfg.NodeName && s.cfg.GatewayIP != nil {
			return endpoint{ip: s.cfg.GatewayIP}, nil
		}
		return e, status.Errorf(codes.NotFound, "no peer node %q on this node", req.GetDestinationNode())
	}
	ip, err := parseIP(req.GetDestinationIp(), "destination IP")
	if err != nil {
		return e, err
	}
	if p, ok := n.podByIP(ip); ok {
		return podEndpointAt(p, ip)
	}
	e.ip = ip
	e.peer = s.peerOfPodIP(ip)
	return e, nil
}

// peerOfPodIP returns the peer node whose pod CIDR holds ip, or nil.
func (s *Server) peerOfPodIP(ip net.IP) *pipeline.PeerNode {
	for _, peer := range s.peers() {
		if peer.PodCIDR.Contains(ip) {
			return &peer
		}
	}
	return nil
}

func parseIP(s, what string) (net.IP, error) {
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, status.Errorf(codes.InvalidArgument, "%s %q is not an IP address", what, s)
	}
	if v4 := ip.To4(); v4 != nil {
		return v4, nil
	}
	return ip, nil
}

// toIPv6 turns a trace whose source or destination IP is IPv6 into an
// IPv6 trace: pod endpoints take the pod's IPv6 address. A pod without one
// cannot be traced over IPv6.
func toIPv6(src, dst *endpoint) error {
	if src.ip.To4() == nil || dst.ip.To4() == nil {
		for _, e := range []*endpoint{src, dst} {
			if e.pod == nil || e.ip.To4() == nil {
				continue
			}
			var v6 net.IP
			for _, a := range e.pod.IPs {
				if a.Is6() && !a.Is4In6() {
					v6 = net.IP(a.AsSlice())
				}
			}
			if v6 == nil {
				return status.Errorf(codes.FailedPrecondition, "pod %s has no IPv6 address", e.pod.ref())
			}
			e.ip = v6
		}
	}
	if (src.ip.To4() == nil) != (dst.ip.To4() == nil) {
		return status.Errorf(codes.InvalidArgument, "source %s and destination %s are of different IP families", src.ip, dst.ip)
	}
	return nil
}

// traceFlow builds the ofproto/trace flow: the packet as it arrives at
// the bridge. From a local pod: its MAC to the destination pod's MAC when
// both are local pods of the same subnet (pods ARP each other), else to
// the gateway's MAC (routed). Through the tunnel: to GlobalVirtualMAC.
// From the gateway: the gateway's MAC to the destination pod's MAC.
func (s *Server) traceFlow(src, dst endpoint, req *agentv1.TraceRequest) (string, error) {
	if err := toIPv6(&src, &dst); err != nil {
		return "", err
	}
	v6 := src.ip.To4() == nil
	var dlSrc, dlDst string
	gwMAC := macString(s.cfg.GatewayMAC)
	switch {
	case src.pod != nil:
		dlSrc = src.mac.String()
		// Local pods of one subnet resolve each other (ARP, or ND: the
		// node's pods share its IPv6 pod CIDR).
		if dst.pod != nil && (v6 || s.cfg.PodCIDR != nil && s.cfg.PodCIDR.Contains(src.ip) && s.cfg.PodCIDR.Contains(dst.ip)) {
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
		parts = append(parts, "tun_src="+src.peer.NodeIP.String(), "tun_id=0")
	}
	family, srcField, dstField, echo := "", "nw_src=", "nw_dst=", "icmp_type=8"
	if v6 {
		family, srcField, dstField, echo = "6", "ipv6_src=", "ipv6_dst=", "icmp_type=128"
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
		parts = append(parts, echo, "icmp_code=0")
	case "tcp", "udp":
		sp := req.GetSourcePort()
		if sp == 0 {
			sp = defaultTraceSrcPort
		}
		if sp > 65535 || req.GetDestinationPort() > 65535 {
			return "", status.Errorf(codes.InvalidArgument, "port out of range (1-65535)")
		}
		parts = append(parts, fmt.Sprintf("tp_src=%d", sp), fmt.Sprintf("tp_dst=%d", req.GetDestinationPort()))
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
	out, err := s.deps.Unixctl.Call(ctx, "ofproto/trace", s.cfg.Bridge, flow, "--ct-next", "trk,new")
	if err != nil {
		var ue *unixctl.Error
		if errors.As(err, &ue) {
			return nil, status.Errorf(codes.InvalidArgument, "ofproto/trace rejected flow %s: %s", flow, ue.Message)
		}
		return nil, internalError(ctx, "running ofproto/trace", err)
	}
	resp := &agentv1.TraceResponse{Flow: flow, RawOutput: out}
	tr := parseTrace(out)
	resp.Steps = tr.steps
	resp.Verdict = s.verdict(n, tr)
	return resp, nil
}

// parsedTrace is ofproto/trace's output in pieces.
type parsedTrace struct {
	steps []*agentv1.TraceStep
	// Of the last section (after the last recirculation): its datapath
	// actions, final flow, and output ports seen.
	datapathActions string
	finalFlow       string
	outPorts        []uint32
	cookies         []uint64 // per step
}

var (
	// " 8. dl_dst=02:00:0a:0a:00:04, priority 200, cookie 0x102000000000002"
	stepRE = regexp.MustCompile(`^\s*(\d+)\. (?:(.*), )?priority (\d+)(?:, cookie (0x[0-9a-f]+))?$`)
	// "-> output port is 4" / "output:4" / "output:NXM_NX_REG1[]"
	outPortRE = regexp.MustCompile(`^-> output port is (\d+)`)
	outputRE  = regexp.MustCompile(`^output:(\d+)$`)
	tunDstRE  = regexp.MustCompile(`tun_dst=([0-9.]+)`)
)

// parseTrace splits ofproto/trace's output into steps. Later sections
// (after "recirc(...) - resume conntrack") reset the output ports and
// datapath actions: the verdict is that of the last section.
func parseTrace(out string) parsedTrace {
	var tr parsedTrace
	var cur *agentv1.TraceStep
	afterRecirc := false
	for _, raw := range strings.Split(out, "\n") {
		line := strings.TrimSpace(raw)
		switch {
		case strings.Contains(line, " - resume conntrack"):
			afterRecirc = true
			tr.outPorts, tr.datapathActions, tr.finalFlow = nil, "", ""
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
			// ovs-vswitchd prints tables 0-255 only; a larger number (seen
			// by FuzzTrace) names no table rather than a wrapped one.
			id, err := strconv.ParseUint(m[1], 10, 32)
			var name string
			if err == nil && id <= 255 {
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
			tr.steps = append(tr.steps, cur)
			tr.cookies = append(tr.cookies, cookie)
			continue
		}
		if cur == nil {
			continue
		}
		if m := outPortRE.FindStringSubmatch(line); m != nil {
			p, _ := strconv.ParseUint(m[1], 10, 32)
			tr.outPorts = append(tr.outPorts, uint32(p))
		} else if m := outputRE.FindStringSubmatch(line); m != nil {
			p, _ := strconv.ParseUint(m[1], 10, 32)
			tr.outPorts = append(tr.outPorts, uint32(p))
		}
		cur.Actions = append(cur.Actions, line)
	}
	return tr
}

// verdict explains the trace: where the packet went, which policy rules
// allowed it, or which isolation dropped it.
func (s *Server) verdict(n *node, tr parsedTrace) *agentv1.TraceVerdict {
	v := &agentv1.TraceVerdict{}
	for i, step := range tr.steps {
		c := openflow.Cookie(tr.cookies[i])
		if c.Category() != pipeline.CategoryPolicy || c.Object() == 0 || step.TableId != uint32(pipeline.IngressRule) &&
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
	dropped := tr.datapathActions == "" || tr.datapathActions == "drop" || len(tr.outPorts) == 0
	if !dropped {
		port := tr.outPorts[len(tr.outPorts)-1]
		v.OutPort = port
		v.OutPortName = n.portNames[port]
		switch {
		case port == s.cfg.TunnelOFPort && port != 0:
			v.Kind = agentv1.TraceVerdict_TUNNEL
			if m := tunDstRE.FindStringSubmatch(tr.finalFlow); m != nil {
				v.TunnelDst = m[1]
				for _, peer := range s.peers() {
					if peer.NodeIP.String() == m[1] {
						v.Node = peer.Name
					}
				}
			}
			v.Summary = fmt.Sprintf("tunneled to node %s (%s)", orUnknown(v.Node), orUnknown(v.TunnelDst))
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
	if len(tr.steps) == 0 {
		v.DropReason = "no flow matched"
		v.Summary = "dropped: " + v.DropReason
		return v
	}
	last := tr.steps[len(tr.steps)-1]
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
