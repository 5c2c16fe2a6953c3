package agentapi_test

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/test/testctx"
)

// newProxyTestNode is a dual-stack tunnelNode (pods a 10.10.0.3 and b
// 10.10.0.4, peer node2 with 10.10.1.0/24 behind the tunnel) whose
// pipeline has the Service proxy on, and its model.
func newProxyTestNode(t *testing.T) (*tunnelNode, *testProxy) {
	t.Helper()
	px := &testProxy{cfg: pipeline.ProxyConfig{HairpinIP: netip.MustParseAddr("169.254.0.253"),
		HairpinIPv6: netip.MustParseAddr("fc00::aabb:ccdd:eeff"), SNATZone: 65521,
		NodeIPs: []netip.Addr{netip.MustParseAddr("192.168.1.1")}}}
	n := newTunnelNode(t, dualStack, "192.168.1.2", true, px)
	return n, px
}

// The Services of the proxy tests: web (ClusterIP + NodePort, a local and
// a remote endpoint weighted 1:3), web's IPv6 port (one local endpoint),
// and gone (no endpoints anywhere: rejected).
var (
	webPort = pipeline.ServicePort{Key: "shop/web:http/IPv4",
		Frontends: []pipeline.ServiceFrontend{
			{Kind: pipeline.KindClusterIP, IP: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: pipeline.ProtocolTCP},
			{Kind: pipeline.KindNodePort, Port: 30080, Protocol: pipeline.ProtocolTCP}},
		ClusterEndpoints: []pipeline.ServiceEndpoint{
			{IP: host(localV4, 3), Port: 8080, Local: true},
			{IP: host(peerV4, 5), Port: 8080, Weight: 3}},
		HasEndpoints: true}
	webPortV6 = pipeline.ServicePort{Key: "shop/web:http/IPv6",
		Frontends: []pipeline.ServiceFrontend{
			{Kind: pipeline.KindClusterIP, IP: netip.MustParseAddr("fd00:96::10"), Port: 80, Protocol: pipeline.ProtocolTCP}},
		ClusterEndpoints: []pipeline.ServiceEndpoint{{IP: host(localV6, 3), Port: 8080, Local: true}},
		HasEndpoints:     true}
	// sticky has sessionAffinity ClientIP.
	stickyPort = pipeline.ServicePort{Key: "shop/sticky:/IPv4",
		Frontends: []pipeline.ServiceFrontend{
			{Kind: pipeline.KindClusterIP, IP: netip.MustParseAddr("10.96.0.20"), Port: 80, Protocol: pipeline.ProtocolTCP}},
		ClusterEndpoints: []pipeline.ServiceEndpoint{
			{IP: host(localV4, 3), Port: 8080, Local: true},
			{IP: host(peerV4, 5), Port: 8080}},
		HasEndpoints: true, AffinityTimeout: time.Hour}
	gonePort = pipeline.ServicePort{Key: "shop/gone:/IPv4",
		Frontends: []pipeline.ServiceFrontend{
			{Kind: pipeline.KindClusterIP, IP: netip.MustParseAddr("10.96.0.99"), Port: 53, Protocol: pipeline.ProtocolUDP}}}
)

// TestServicesAgainstRealOVS realizes Services on a real pipeline and
// checks ListServices (frontends, endpoints, the group's ID and its
// counters from the switch after packets went through it) and traces
// through a ClusterIP: the verdict names the Service and the endpoint the
// group's bucket DNATed to, and the packet then goes where that endpoint
// is (the tunnel for node2's pod, the local pod's port); a requested
// endpoint is followed; a Service without endpoints is named with its
// reject; without the proxy's sources ListServices is FailedPrecondition.
func TestServicesAgainstRealOVS(t *testing.T) {
	n, px := newProxyTestNode(t)
	px.apply(t, n, webPort, webPortV6, stickyPort, gonePort)
	ctx := testctx.Timeout(t, time.Minute)

	// Traces: the chosen endpoint decides the output.
	trace := func(req *agentv1.TraceRequest) *agentv1.TraceResponse {
		t.Helper()
		tr, err := n.c.Trace(ctx, req)
		if err != nil {
			t.Fatalf("Trace(%v): %v", req, err)
		}
		return tr
	}
	wantGroup, _ := n.pipe.ServiceGroupID(webPort.Key)
	for _, tc := range []struct {
		endpoint string
		kind     agentv1.TraceVerdict_Kind
		outPort  uint32
		bucket   uint32
	}{
		{"10.10.1.5:8080", agentv1.TraceVerdict_TUNNEL, 1, 1},
		{"10.10.0.3", agentv1.TraceVerdict_OUTPUT, 3, 0},
	} {
		tr := trace(&agentv1.TraceRequest{SourcePod: pod("b"), DestinationIp: "10.96.0.10", Protocol: "tcp", DestinationPort: 80,
			ServiceEndpoint: tc.endpoint})
		v := tr.Verdict
		ep := tc.endpoint
		if !strings.Contains(ep, ":") {
			ep += ":8080"
		}
		wantSummary := "Service shop/web:http → endpoint " + ep
		if v.Kind != tc.kind || v.OutPort != tc.outPort || v.Service != "shop/web:http" || v.ServicePortKey != webPort.Key ||
			v.ServiceEndpoint != ep || v.ServiceBucketId != tc.bucket || v.ServiceGroupId != wantGroup ||
			!strings.HasPrefix(v.Summary, wantSummary) || !strings.Contains(tr.Flow, ",dp_hash=0x") {
			t.Errorf("trace b -> 10.96.0.10:80 via %s = %v (flow %s), want %v out %d, summary %q...\n%s", tc.endpoint, v, tr.Flow,
				tc.kind, tc.outPort, wantSummary, tr.RawOutput)
		}
		var lb *agentv1.TraceStep
		for _, st := range tr.Steps {
			if st.TableName == "ServiceLB" {
				lb = st
			}
		}
		if lb == nil || !strings.HasPrefix(lb.Note, wantSummary) {
			t.Errorf("trace via %s: ServiceLB step %v, want the note %q...", tc.endpoint, lb, wantSummary)
		}
		// The flow returned is the one traced: tracing it again by hand
		// takes the same bucket.
		out := n.ovs.MustAppctl(t, "ofproto/trace", "br-int", tr.Flow, "--ct-next", "trk,new")
		if !strings.Contains(out, "nat(dst="+ep+")") {
			t.Errorf("ofproto/trace %s does not DNAT to %s:\n%s", tr.Flow, ep, out)
		}
	}
	// Without a requested endpoint: the trace's own hash picks one of the
	// two, and the verdict agrees with it.
	tr := trace(&agentv1.TraceRequest{SourcePod: pod("a"), DestinationIp: "10.96.0.10", Protocol: "tcp", DestinationPort: 80})
	if v := tr.Verdict; v.Service != "shop/web:http" || (v.ServiceEndpoint != "10.10.1.5:8080" || v.Kind != agentv1.TraceVerdict_TUNNEL) &&
		(v.ServiceEndpoint != "10.10.0.3:8080" || v.Kind != agentv1.TraceVerdict_OUTPUT) {
		t.Errorf("trace a -> 10.96.0.10:80 = %v\n%s", v, tr.RawOutput)
	}
	// The NodePort on the node's address (ProxyConfig.NodeIPs), from a pod.
	tr = trace(&agentv1.TraceRequest{SourcePod: pod("b"), DestinationIp: "192.168.1.1", Protocol: "tcp", DestinationPort: 30080,
		ServiceEndpoint: "10.10.0.3"})
	if v := tr.Verdict; v.Service != "shop/web:http" || v.ServiceEndpoint != "10.10.0.3:8080" || v.Kind != agentv1.TraceVerdict_OUTPUT ||
		v.OutPort != 3 {
		t.Errorf("trace b -> 192.168.1.1:30080 = %v\n%s", v, tr.RawOutput)
	}
	// IPv6.
	tr = trace(&agentv1.TraceRequest{SourcePod: pod("b"), DestinationIp: "fd00:96::10", Protocol: "tcp", DestinationPort: 80})
	if v := tr.Verdict; v.Service != "shop/web:http" || v.ServicePortKey != webPortV6.Key || v.ServiceEndpoint != "[fd00:10:10::3]:8080" ||
		v.Kind != agentv1.TraceVerdict_OUTPUT || v.OutPort != 3 {
		t.Errorf("trace b -> [fd00:96::10]:80 = %v\n%s", v, tr.RawOutput)
	}
	// No endpoints: to the node, which rejects.
	tr = trace(&agentv1.TraceRequest{SourcePod: pod("b"), DestinationIp: "10.96.0.99", Protocol: "udp", DestinationPort: 53})
	if v := tr.Verdict; v.Service != "shop/gone:" || v.ServiceEndpoint != "" || v.Kind != agentv1.TraceVerdict_OUTPUT || v.OutPort != 2 ||
		!strings.HasPrefix(v.Summary, "Service shop/gone: has no endpoints") {
		t.Errorf("trace b -> 10.96.0.99:53 = %v\n%s", v, tr.RawOutput)
	}
	// sessionAffinity: if the pipeline picks the bucket by the client's
	// address (selection_method=hash), the endpoint is the client's and
	// asking for the other one is refused, saying why; with dp_hash it is
	// followed like any other.
	stickyGroup, _ := n.pipe.ServiceGroupID(stickyPort.Key)
	gs, err := n.sw.DumpGroups(ctx, stickyGroup)
	if err != nil || len(gs) != 1 {
		t.Fatalf("DumpGroups(%d) = %v, %v", stickyGroup, gs, err)
	}
	tr = trace(&agentv1.TraceRequest{SourcePod: pod("b"), DestinationIp: "10.96.0.20", Protocol: "tcp", DestinationPort: 80})
	chosen := tr.Verdict.ServiceEndpoint
	other := "10.10.0.3:8080"
	if chosen == other {
		other = "10.10.1.5:8080"
	}
	if tr.Verdict.Service != "shop/sticky:" || chosen != "10.10.0.3:8080" && chosen != "10.10.1.5:8080" {
		t.Errorf("trace b -> sticky = %v\n%s", tr.Verdict, tr.RawOutput)
	}
	_, err = n.c.Trace(ctx, &agentv1.TraceRequest{SourcePod: pod("b"), DestinationIp: "10.96.0.20", Protocol: "tcp", DestinationPort: 80,
		ServiceEndpoint: other})
	if gs[0].Method == "hash" {
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "sessionAffinity ClientIP") ||
			!strings.Contains(err.Error(), "this client's is "+chosen) {
			t.Errorf("trace b -> sticky via %s (group by client address) = %v, want FailedPrecondition naming %s", other, err, chosen)
		}
	} else if err != nil {
		t.Errorf("trace b -> sticky via %s (group method %q) = %v", other, gs[0].Method, err)
	}
	t.Logf("sticky's group: selection method %q", gs[0].Method)

	// Bad endpoint requests.
	for _, tc := range []struct {
		req  *agentv1.TraceRequest
		code codes.Code
	}{
		{&agentv1.TraceRequest{SourcePod: pod("b"), DestinationIp: "10.96.0.10", Protocol: "tcp", DestinationPort: 80,
			ServiceEndpoint: "10.10.0.4:8080"}, codes.NotFound},
		{&agentv1.TraceRequest{SourcePod: pod("b"), DestinationIp: "10.96.0.10", Protocol: "tcp", DestinationPort: 80,
			ServiceEndpoint: "nope"}, codes.InvalidArgument},
		{&agentv1.TraceRequest{SourcePod: pod("b"), DestinationPod: pod("a"), Protocol: "tcp", DestinationPort: 80,
			ServiceEndpoint: "10.10.0.3"}, codes.FailedPrecondition},
	} {
		if _, err := n.c.Trace(ctx, tc.req); status.Code(err) != tc.code {
			t.Errorf("Trace(%v) = %v, want %v", tc.req, err, tc.code)
		}
	}

	// Hairpin: a reaches itself through web.
	tr = trace(&agentv1.TraceRequest{SourcePod: pod("a"), DestinationIp: "10.96.0.10", Protocol: "tcp", DestinationPort: 80,
		ServiceEndpoint: "10.10.0.3:8080"})
	if v := tr.Verdict; v.Kind != agentv1.TraceVerdict_OUTPUT || v.OutPort != 3 || v.Pod.GetName() != "a" ||
		v.ServiceEndpoint != "10.10.0.3:8080" || !strings.Contains(v.Summary, "hairpin") {
		t.Errorf("trace a -> 10.96.0.10:80 via itself = %v\n%s", v, tr.RawOutput)
	}

	// Counters: SYNs of 20 connections from b to web's ClusterIP, as
	// packet-outs through the pipeline: each passes the group once. Which
	// bucket each takes is the datapath's hash, so only the sum over the
	// buckets is known.
	const conns = 20
	for i := range conns {
		pkt := tcpSYN(netip.MustParseAddr("10.10.0.4"), netip.MustParseAddr("10.96.0.10"), uint16(41000+i), 80)
		n.ovs.MustOfctl(t, "-O", "OpenFlow15", "packet-out", "br-int", "in_port=4 packet="+pkt+" actions=resubmit(,0)")
	}
	resp, err := n.c.ListServices(ctx, &agentv1.ListServicesRequest{Namespace: "shop", Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Services) != 2 || resp.Services[0].Key != webPort.Key || resp.Services[1].Key != webPortV6.Key || len(resp.Notes) != 0 {
		t.Fatalf("ListServices(shop/web) = %v", resp)
	}
	web := resp.Services[0]
	if web.GroupId != wantGroup || web.GroupFlowCount != 2 || web.Namespace != "shop" || web.Name != "web" || web.PortName != "http" ||
		web.Family != "IPv4" || len(web.Frontends) != 2 || web.Frontends[0].Ip != "10.96.0.10" || web.Frontends[0].Kind != "ClusterIP" ||
		web.Frontends[1].Ip != "" || web.Frontends[1].Port != 30080 || web.Frontends[1].Protocol != "TCP" ||
		len(web.ClusterEndpoints) != 2 || web.ClusterEndpoints[1].Ip != "10.10.1.5" || web.ClusterEndpoints[1].Weight != 3 ||
		!web.ClusterEndpoints[0].Local || web.ClusterEndpoints[1].BucketId != 1 {
		t.Errorf("ListServices: web = %v", web)
	}
	if b := web.ClusterEndpoints; web.PacketCount != conns || b[0].PacketCount+b[1].PacketCount != conns || web.ByteCount != conns*54 ||
		b[0].ByteCount+b[1].ByteCount != conns*54 {
		t.Errorf("ListServices: web's group counted %d packets (%d bytes), buckets %d+%d; want %d SYNs of 54 bytes", web.PacketCount,
			web.ByteCount, b[0].PacketCount, b[1].PacketCount, conns)
	}
	t.Logf("%d connections: %d to the local endpoint, %d to the remote one (weight 3)", conns, web.ClusterEndpoints[0].PacketCount,
		web.ClusterEndpoints[1].PacketCount)
	all, err := n.c.ListServices(ctx, &agentv1.ListServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Services) != 4 || all.Services[3].Key != gonePort.Key || all.Services[3].GroupId != 0 {
		t.Errorf("ListServices() = %v", all)
	}

	// Audit: the three groups agree with the cache; one deleted behind the
	// agent's back is a missing-group, and ListServices says so.
	groupKinds := func(rep *agentv1.AuditReport) []string {
		var out []string
		for _, i := range rep.GetInconsistencies() {
			if strings.HasSuffix(i.Kind, "-group") {
				out = append(out, i.Kind+" "+i.Subject+": "+i.Detail)
			}
		}
		return out
	}
	rep, err := n.c.Audit(ctx, &agentv1.AuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if g := groupKinds(rep); len(g) != 0 || rep.Checked.Groups != 3 {
		t.Errorf("audit: %d groups checked, group inconsistencies %q; want 3, none", rep.Checked.Groups, g)
	}
	v6Group, _ := n.pipe.ServiceGroupID(webPortV6.Key)
	n.ovs.MustOfctl(t, "-O", "OpenFlow15", "del-groups", "br-int", fmt.Sprintf("group_id=%d", v6Group))
	if rep, err = n.c.Audit(ctx, &agentv1.AuditRequest{}); err != nil {
		t.Fatal(err)
	}
	if g := groupKinds(rep); len(g) != 1 || !strings.HasPrefix(g[0], fmt.Sprintf("missing-group group %d: ", v6Group)) ||
		!strings.Contains(g[0], "owner svc/"+webPortV6.Key) {
		t.Errorf("audit after deleting group %d: %q", v6Group, g)
	}
	if all, err = n.c.ListServices(ctx, &agentv1.ListServicesRequest{}); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("group %d of %s is not on the switch", v6Group, webPortV6.Key); len(all.Notes) != 1 ||
		!strings.HasPrefix(all.Notes[0], want) {
		t.Errorf("ListServices notes %q, want %q...", all.Notes, want)
	}
}

// tcpSYN returns, in hex, an Ethernet frame from pod b's MAC to the
// gateway's holding a TCP SYN src:sport -> dst:dport with valid checksums
// (the userspace conntrack checks them): 54 bytes.
func tcpSYN(src, dst netip.Addr, sport, dport uint16) string {
	eth := []byte{0x02, 0x00, 0x0a, 0x0a, 0x00, 0x01, 0x0a, 0x58, 0x0a, 0x0a, 0x00, 0x04, 0x08, 0x00}
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(ip[2:], 40)
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], 1)
	tcp[12], tcp[13] = 5<<4, 0x02
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	pseudo := append(append(append([]byte{}, s4[:]...), d4[:]...), 0, 6, 0, 20)
	binary.BigEndian.PutUint16(tcp[16:], checksum(append(pseudo, tcp...)))
	return hex.EncodeToString(append(append(eth, ip...), tcp...))
}

// checksum is the Internet checksum of b (even length).
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
