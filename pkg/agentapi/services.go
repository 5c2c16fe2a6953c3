package agentapi

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/pipeline"
)

// Services is the Service proxy's model as last applied (*proxy.Controller).
type Services interface {
	Services() []pipeline.ServicePort
}

// ServiceGroups maps a realized ServicePort to its select group
// (*pipeline.Pipeline).
type ServiceGroups interface {
	ServiceGroupID(key string) (uint32, bool)
}

// GroupDumper reads groups and their counters from the switch
// (*openflow.Switch).
type GroupDumper interface {
	DumpGroups(ctx context.Context, ids ...uint32) ([]openflow.GroupStats, error)
}

// errProxyOff answers the proxy's RPCs on an agent without it.
var errProxyOff = status.Error(codes.FailedPrecondition,
	"the Service proxy is off (proxyMode off): Services are kube-proxy's on this node")

// proxyOn says the proxy's sources are all wired.
func (s *Server) proxyOn() bool {
	return s.deps.Services != nil && s.deps.ServiceGroups != nil && s.deps.Groups != nil
}

// splitServiceKey splits "namespace/name:port-name/family".
func splitServiceKey(key string) (ns, name, port, family string) {
	rest := key
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		rest, family = rest[:i], rest[i+1:]
	}
	ns, rest, _ = strings.Cut(rest, "/")
	name, port, _ = strings.Cut(rest, ":")
	return ns, name, port, family
}

// serviceName is "ns/name:port" (the key without its family).
func serviceName(key string) string {
	ns, name, port, _ := splitServiceKey(key)
	return ns + "/" + name + ":" + port
}

func endpointsOf(eps []pipeline.ServiceEndpoint) []*agentv1.ServiceEndpoint {
	out := make([]*agentv1.ServiceEndpoint, 0, len(eps))
	for i, e := range eps {
		w := uint32(e.Weight)
		if w == 0 {
			w = 1
		}
		out = append(out, &agentv1.ServiceEndpoint{Ip: e.IP.String(), Port: uint32(e.Port), Local: e.Local, Weight: w,
			BucketId: uint32(i)})
	}
	return out
}

// ListServices implements agentv1.AgentServiceServer: the ServicePorts the
// proxy last applied, with their group's counters read in one group
// stats round trip. The buckets are the ClusterEndpoints in order (the
// pipeline gives bucket i to endpoint i).
func (s *Server) ListServices(ctx context.Context, req *agentv1.ListServicesRequest) (*agentv1.ListServicesResponse, error) {
	if !s.proxyOn() {
		return nil, errProxyOff
	}
	resp := &agentv1.ListServicesResponse{}
	var ids []uint32
	byGroup := map[uint32]*agentv1.ServicePort{}
	for _, sp := range s.deps.Services.Services() {
		ns, name, port, family := splitServiceKey(sp.Key)
		if req.GetNamespace() != "" && ns != req.GetNamespace() || req.GetName() != "" && name != req.GetName() {
			continue
		}
		out := &agentv1.ServicePort{Key: sp.Key, Namespace: ns, Name: name, PortName: port, Family: family,
			ClusterEndpoints: endpointsOf(sp.ClusterEndpoints), ExternalEndpointsSet: sp.ExternalEndpoints != nil,
			ExternalLocal: sp.ExternalLocal, HasEndpoints: sp.HasEndpoints,
			AffinityTimeoutSeconds: uint32(sp.AffinityTimeout.Seconds())}
		if sp.ExternalEndpoints != nil {
			out.ExternalEndpoints = endpointsOf(sp.ExternalEndpoints)
			for _, e := range out.ExternalEndpoints {
				e.BucketId = 0 // not in the group: the pipeline serves pods' traffic from ClusterEndpoints
			}
		}
		for _, f := range sp.Frontends {
			fe := &agentv1.ServiceFrontend{Kind: f.Kind.String(), Port: uint32(f.Port), Protocol: protocolName(f.Protocol)}
			if f.IP.IsValid() {
				fe.Ip = f.IP.String()
			}
			out.Frontends = append(out.Frontends, fe)
		}
		for _, p := range sp.LoadBalancerSourceRanges {
			out.LoadBalancerSourceRanges = append(out.LoadBalancerSourceRanges, p.String())
		}
		if id, ok := s.deps.ServiceGroups.ServiceGroupID(sp.Key); ok && len(sp.ClusterEndpoints) > 0 {
			out.GroupId = id
			ids = append(ids, id)
			byGroup[id] = out
		}
		resp.Services = append(resp.Services, out)
	}
	if len(ids) == 0 {
		return resp, nil
	}
	// One request for all groups (DumpGroups with no IDs reads every
	// group): cheaper than one round trip per Service.
	var want []uint32
	if len(ids) <= 16 {
		want = ids
	}
	stats, err := s.deps.Groups.DumpGroups(ctx, want...)
	if err != nil {
		return nil, internalError(ctx, "reading the Service groups", err)
	}
	seen := map[uint32]bool{}
	for _, g := range stats {
		out, ok := byGroup[g.ID]
		if !ok {
			continue
		}
		seen[g.ID] = true
		out.PacketCount, out.ByteCount = g.Packets, g.Bytes
		out.GroupDurationSeconds = g.Duration.Seconds()
		out.GroupFlowCount = g.FlowCount
		for _, b := range g.Buckets {
			if int(b.ID) < len(out.ClusterEndpoints) {
				e := out.ClusterEndpoints[b.ID]
				e.PacketCount, e.ByteCount = b.Packets, b.Bytes
			}
		}
	}
	for _, id := range ids {
		if !seen[id] {
			resp.Notes = append(resp.Notes, fmt.Sprintf("group %d of %s is not on the switch (weirctl audit reports it as a missing-group)",
				id, byGroup[id].Key))
		}
	}
	return resp, nil
}

// serviceFor returns the realized ServicePort one of whose frontends is
// dst:port over proto ("tcp", "udp"), if the proxy is on: for a trace
// that met no Service group, to say why (no endpoints). A NodePort on
// every node address (no IP in the model) matches no address here.
func (s *Server) serviceFor(dst netip.Addr, proto string, port uint32) (pipeline.ServicePort, bool) {
	if !s.proxyOn() || !dst.IsValid() || port == 0 {
		return pipeline.ServicePort{}, false
	}
	for _, sp := range s.deps.Services.Services() {
		for _, f := range sp.Frontends {
			if f.IP == dst && uint32(f.Port) == port && strings.EqualFold(protocolName(f.Protocol), proto) {
				return sp, true
			}
		}
	}
	return pipeline.ServicePort{}, false
}

// parseEndpoint parses "ip" or "ip:port" ("[ipv6]:port").
func parseEndpoint(v string) (netip.Addr, uint16, error) {
	if ap, err := netip.ParseAddrPort(v); err == nil {
		return ap.Addr().Unmap(), ap.Port(), nil
	}
	a, err := netip.ParseAddr(strings.Trim(v, "[]"))
	if err != nil {
		return netip.Addr{}, 0, status.Errorf(codes.InvalidArgument, "service endpoint %q is not an IP or IP:port", v)
	}
	return a.Unmap(), 0, nil
}

// endpointIndex returns the index of the endpoint ip[:port] in eps.
func endpointIndex(eps []pipeline.ServiceEndpoint, ip netip.Addr, port uint16) int {
	for i, e := range eps {
		if e.IP == ip && (port == 0 || e.Port == port) {
			return i
		}
	}
	return -1
}

// traceHash is the dp_hash of a trace: a hash of its flow (so traces of
// different source ports may take different buckets), never 0 (which OVS
// reads as "not computed").
func traceHash(flow string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(flow))
	if v := h.Sum32(); v != 0 {
		return v
	}
	return 1
}

// serviceHop is a traced packet's pass through a Service's select group.
type serviceHop struct {
	step    *agentv1.TraceStep // the ServiceLB step
	sp      pipeline.ServicePort
	known   bool // sp is the model's ServicePort of groupID
	groupID uint32
	// bucket is the bucket OVS used (noBucket: none) and endpoint the
	// DNAT destination its ct(nat) gave ("ip:port").
	bucket   uint32
	endpoint string
}

const noBucket = ^uint32(0)

var (
	groupActionRE = regexp.MustCompile(`^group:(\d+)$`)
	usingBucketRE = regexp.MustCompile(`^-> using bucket (\d+)$`)
	natDstRE      = regexp.MustCompile(`^nat\(dst=([^)]*)\)$`)
)

// serviceHop finds, in the main bridge's ServiceLB steps, the group a
// packet was sent to, the bucket ofproto/trace used ("-> using bucket 1")
// and the bucket's DNAT ("nat(dst=10.10.1.5:8080)"), and the ServicePort
// of that group. Nil when the packet met no Service group.
func (s *Server) serviceHop(tr parsedTrace) *serviceHop {
	if !s.proxyOn() {
		return nil
	}
	for i, step := range tr.steps {
		if !tr.inMain[i] || step.TableId != uint32(pipeline.ServiceLB) {
			continue
		}
		var hop *serviceHop
		for _, a := range step.Actions {
			if m := groupActionRE.FindStringSubmatch(a); m != nil && hop == nil {
				id, _ := strconv.ParseUint(m[1], 10, 32)
				hop = &serviceHop{step: step, groupID: uint32(id), bucket: noBucket}
				continue
			}
			if hop == nil {
				continue
			}
			if m := usingBucketRE.FindStringSubmatch(a); m != nil && hop.bucket == noBucket {
				b, _ := strconv.ParseUint(m[1], 10, 32)
				hop.bucket = uint32(b)
			} else if m := natDstRE.FindStringSubmatch(a); m != nil && hop.endpoint == "" {
				hop.endpoint = normEndpoint(m[1])
			}
		}
		if hop == nil {
			continue
		}
		for _, sp := range s.deps.Services.Services() {
			if id, ok := s.deps.ServiceGroups.ServiceGroupID(sp.Key); ok && id == hop.groupID {
				hop.sp, hop.known = sp, true
				break
			}
		}
		return hop
	}
	return nil
}

// normEndpoint writes OVS's "10.10.1.5:8080" or "[fd00::5]:8080" as
// netip does (and a bare address as it is).
func normEndpoint(v string) string {
	if ap, err := netip.ParseAddrPort(v); err == nil {
		return ap.String()
	}
	if a, err := netip.ParseAddr(strings.Trim(v, "[]")); err == nil {
		return a.String()
	}
	return v
}

// explainService names the Service a trace went through and the endpoint
// its group chose, in the verdict, the ServiceLB step's note and the
// summary; or, for a frontend of a realized Service without a group here,
// why the packet was not load-balanced.
func (s *Server) explainService(resp *agentv1.TraceResponse, hop *serviceHop, dst endpoint, req *agentv1.TraceRequest) {
	v := resp.Verdict
	if hop != nil {
		name := fmt.Sprintf("group %d", hop.groupID)
		if hop.known {
			v.ServicePortKey, v.Service = hop.sp.Key, serviceName(hop.sp.Key)
			name = "Service " + v.Service
		}
		v.ServiceGroupId = hop.groupID
		if hop.bucket == noBucket || hop.endpoint == "" {
			hop.step.Note = name + ": the group chose no bucket"
			v.Summary = hop.step.Note + "; " + v.Summary
			return
		}
		v.ServiceEndpoint, v.ServiceBucketId = hop.endpoint, hop.bucket
		n := ""
		if hop.known {
			n = fmt.Sprintf(" of %d", len(hop.sp.ClusterEndpoints))
		}
		hop.step.Note = fmt.Sprintf("%s → endpoint %s (bucket %d%s of group %d)", name, hop.endpoint, hop.bucket, n, hop.groupID)
		v.Summary = hop.step.Note + "; " + v.Summary
		for _, st := range resp.Steps {
			// HairpinSNAT's flows other than its miss: the pod reached
			// itself through the Service.
			if st.TableId == uint32(pipeline.HairpinSNAT) && !strings.HasPrefix(st.Flow, "priority=0") &&
				!strings.Contains(st.Flow, "priority 0,") {
				st.Note = "hairpin: the endpoint is the client itself, its source is NATed to the hairpin address"
				v.Summary += "; " + st.Note
				break
			}
		}
		return
	}
	ip, ok := netip.AddrFromSlice(normIP(dst.ip))
	if !ok {
		return
	}
	sp, ok := s.serviceFor(ip, strings.ToLower(req.GetProtocol()), req.GetDestinationPort())
	if !ok {
		return
	}
	v.ServicePortKey, v.Service = sp.Key, serviceName(sp.Key)
	var why string
	switch {
	case !sp.HasEndpoints:
		why = "has no endpoints: not load-balanced, the node rejects it (TCP RST, ICMP port unreachable)"
	default:
		why = "has no endpoint for this traffic on this node (a Local traffic policy): dropped"
	}
	v.Summary = fmt.Sprintf("Service %s %s; %s", v.Service, why, v.Summary)
}
