package agentapi

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
	"github.com/weirnet/weir/pkg/pipeline"
)

// The fuzz targets below send fuzzed tooling requests (the fields of
// `weirctl trace --from/--to/--proto/--port`, `weirctl flows`, `pods`,
// `policies`, `watch`) to the server built on the fakes of fakes_test.go.
// A request is answered or refused with a gRPC status whose code says who
// is at fault (InvalidArgument, NotFound, FailedPrecondition): never a
// panic, never Internal/Unknown. Run one with e.g.
//
//	go test -run '^$' -fuzz '^FuzzTrace$' -fuzztime 60s ./pkg/agentapi/

// clientCodes are the codes of a refused request.
var clientCodes = map[codes.Code]bool{codes.InvalidArgument: true, codes.NotFound: true, codes.FailedPrecondition: true}

func checkRefusal(t *testing.T, what string, err error) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || !clientCodes[st.Code()] || st.Message() == "" {
		t.Fatalf("%s: error %v (code %v) is not a clear refusal", what, err, status.Code(err))
	}
}

func podRef(set bool, ns, name string) *agentv1.PodRef {
	if !set {
		return nil
	}
	return &agentv1.PodRef{Namespace: ns, Name: name}
}

// traceFlowRE is what a trace flow may consist of: field=value pairs of
// numbers, addresses and the protocol, and with the Service proxy the
// dp_hash that picks a group's bucket. A fuzzed request field must not
// reach ovs-vswitchd's ofproto/trace unvalidated.
var traceFlowRE = regexp.MustCompile(`^in_port=[0-9]+(,tun_(ipv6_)?src=[0-9a-f.:]+,tun_id=0)?,` +
	`((icmp|tcp|udp),dl_src=[0-9a-f:]+,dl_dst=[0-9a-f:]+,nw_src=[0-9.]+,nw_dst=[0-9.]+,nw_ttl=64,icmp_type=8,icmp_code=0|` +
	`(icmp|tcp|udp)6,dl_src=[0-9a-f:]+,dl_dst=[0-9a-f:]+,ipv6_src=[0-9a-f:]+,ipv6_dst=[0-9a-f:]+,nw_ttl=64,icmpv6_type=128,icmpv6_code=0|` +
	`(tcp|udp)6?,dl_src=[0-9a-f:]+,dl_dst=[0-9a-f:]+,(nw|ipv6)_src=[0-9a-f.:]+,(nw|ipv6)_dst=[0-9a-f.:]+,nw_ttl=64,` +
	`(tcp_src=[0-9]+,tcp_dst=[0-9]+,tcp_flags=0x002|udp_src=[0-9]+,udp_dst=[0-9]+))(,dp_hash=0x[0-9a-f]+)?$`)

// checkTrace checks an answered trace: a well-formed flow, handed to
// ofproto/trace as is, and a verdict that says what happened.
func checkTrace(t *testing.T, f *fixture, resp *agentv1.TraceResponse) {
	t.Helper()
	if !traceFlowRE.MatchString(resp.GetFlow()) {
		t.Fatalf("trace flow %q is not a well-formed packet", resp.GetFlow())
	}
	if len(f.uctl.args) < 3 || f.uctl.args[0] != "ofproto/trace" || f.uctl.args[2] != resp.GetFlow() {
		t.Fatalf("ofproto/trace called with %q, want flow %q", f.uctl.args, resp.GetFlow())
	}
	v := resp.GetVerdict()
	if v == nil || v.GetSummary() == "" {
		t.Fatalf("trace without a verdict summary: %+v", v)
	}
	switch v.GetKind() {
	case agentv1.TraceVerdict_DROP:
		if v.GetDropReason() == "" {
			t.Fatalf("drop verdict without a reason: %+v", v)
		}
	case agentv1.TraceVerdict_OUTPUT, agentv1.TraceVerdict_TUNNEL:
	default:
		t.Fatalf("verdict kind %v", v.GetKind())
	}
	// A step in a table ovs-vswitchd cannot print (> 255), or in another
	// bridge, names no table.
	for _, st := range resp.GetSteps() {
		want := ""
		if st.GetTableId() < 256 && !strings.HasPrefix(st.GetNote(), otherBridgeNote) {
			want, _ = pipeline.TableName(uint8(st.GetTableId()))
		}
		if st.GetTableName() != want {
			t.Fatalf("step in table %d named %q, want %q", st.GetTableId(), st.GetTableName(), want)
		}
	}
}

// FuzzTrace fuzzes every field of a trace request, and ovs-vswitchd's
// answer.
func FuzzTrace(f *testing.F) {
	type seed struct {
		srcPod           bool
		srcNS, srcName   string
		srcIP            string
		dstPod           bool
		dstNS, dstName   string
		dstIP, dstNode   string
		proto            string
		srcPort, dstPort uint32
		out              string
	}
	for _, s := range []seed{
		{srcPod: true, srcNS: "ns", srcName: "a", dstIP: "10.10.1.5", out: tunnelTrace},
		{srcPod: true, srcNS: "ns", srcName: "a", dstPod: true, dstNS: "ns", dstName: "b", proto: "udp", dstPort: 53, out: "Datapath actions: drop\n"},
		{srcIP: "10.10.1.5", dstPod: true, dstNS: "ns", dstName: "b", proto: "TCP", srcPort: 5, dstPort: 80,
			out: " 9. reg1=0x4, priority 200, cookie 0x104000000000000\n    drop\n\nDatapath actions: drop\n"},
		{srcIP: "8.8.8.8", dstPod: true, dstNS: "ns", dstName: "b", out: " 0. priority 0\n -> output port is 4\nDatapath actions: 4\n"},
		{srcPod: true, srcNS: "ns", srcName: "a", dstNode: "node2", out: "264. ip, priority 1, cookie 0xffffffffffffffffffff\n    output:4\nDatapath actions: 3\n"},
		{srcPod: true, srcNS: "ns", srcName: "a", dstNode: "node1"},
		{srcPod: true, srcName: "a", dstIP: "::1"},
		{srcIP: "10.10.0.3", srcPod: true, srcName: "a", dstIP: "1.1.1.1"},
		{srcIP: "1.2.3.4", dstIP: "1.1.1.1", dstNode: "node2"},
		{srcIP: "1.2.3.4", dstIP: "1.1.1.1", proto: "tcp", dstPort: 70000},
		{srcIP: "1.2.3.4", dstIP: "1.1.1.1", proto: "icmp", srcPort: 1},
		{srcIP: "1.2.3.4", dstIP: "1.1.1.1", proto: "tcp,in_port=1", dstPort: 1},
		{srcIP: "::ffff:10.10.0.4", dstIP: "10.10.0.3", proto: "udp"},
		{srcIP: "fd00:10:11::5", dstPod: true, dstNS: "ns", dstName: "b", proto: "udp", dstPort: 53, out: tunnelTrace6},
		{srcPod: true, srcNS: "ns", srcName: "b", dstIP: "fd00:10:11::5", out: tunnelTrace6},
		{srcPod: true, srcNS: "ns", srcName: "b", dstNode: "node2", out: tunnelTrace6NoRoute},
		{srcPod: true, srcNS: "ns", srcName: "a", dstIP: "fd00:10:10::4"},
	} {
		f.Add(s.srcPod, s.srcNS, s.srcName, s.srcIP, s.dstPod, s.dstNS, s.dstName, s.dstIP, s.dstNode, s.proto, s.srcPort, s.dstPort, s.out)
	}
	f.Fuzz(func(t *testing.T, srcPod bool, srcNS, srcName, srcIP string, dstPod bool, dstNS, dstName, dstIP, dstNode, proto string,
		srcPort, dstPort uint32, out string) {
		fx := newFixture()
		fx.uctl.out = out
		req := &agentv1.TraceRequest{SourcePod: podRef(srcPod, srcNS, srcName), SourceIp: srcIP,
			DestinationPod: podRef(dstPod, dstNS, dstName), DestinationIp: dstIP, DestinationNode: dstNode,
			Protocol: proto, SourcePort: srcPort, DestinationPort: dstPort}
		resp, err := fx.srv.Trace(context.Background(), req)
		if err != nil {
			checkRefusal(t, "trace", err)
			return
		}
		checkTrace(t, fx, resp)
	})
}

// FuzzTraceOutput fuzzes only ovs-vswitchd's ofproto/trace output for a
// valid request (FuzzTrace reaches it rarely, as most fuzzed requests are
// refused first): parsing it into steps and a verdict never fails.
func FuzzTraceOutput(f *testing.F) {
	for _, out := range []string{
		tunnelTrace,
		tunnelTrace6,
		tunnelTrace6NoRoute,
		fmt.Sprintf(serviceTrace, "10.10.1.5:8080", "10.10.1.5:8080"),
		fmt.Sprintf(serviceTrace, "[fd00:10:11::5]:8080", "bad"),
		"",
		"Datapath actions: drop\n",
		" 10. reg1=0x4, priority 200, cookie 0x104000000000000\n    drop\n\nFinal flow: unchanged\nDatapath actions: drop\n",
		" 11. ip,nw_dst=10.10.0.4, priority 200, cookie 0x104000000000007\n    goto_table:12\n -> output port is 4\nDatapath actions: 4\n",
		" 6. reg1=0x, priority 200, cookie 0x104000000000000\nDatapath actions: drop\n",
		"recirc(0x1) - resume conntrack with ct_state=new|trk\n -> output port is 1\nFinal flow: tun_dst=192.168.1.2\nDatapath actions: 2\n",
		"99999999999999999999. x, priority 99999999999999999999, cookie 0x1\n output:99999999999\nDatapath actions: 1\n",
	} {
		f.Add(out, false)
		f.Add(out, true)
	}
	f.Fuzz(func(t *testing.T, out string, tcp bool) {
		fx := newFixture()
		fx.uctl.out = out
		// The proxy is on: a ServiceLB step with a group is explained.
		web := svcPort("shop/web:http/IPv4", "10.96.0.10", "10.10.0.3:8080", "10.10.1.5:8080")
		fx.srv.deps.Services, fx.srv.deps.ServiceGroups, fx.srv.deps.Groups = fakeServices{web}, fakeGroupIDs{web.Key: 16777217}, &fakeGroups{}
		req := &agentv1.TraceRequest{SourcePod: podRef(true, "ns", "a"), DestinationPod: podRef(true, "ns", "b")}
		if tcp {
			req = &agentv1.TraceRequest{SourceIp: "10.10.1.5", DestinationPod: podRef(true, "ns", "b"), Protocol: "tcp", DestinationPort: 80}
		}
		resp, err := fx.srv.Trace(context.Background(), req)
		if err != nil {
			t.Fatalf("trace of a valid request failed on ofproto/trace output %q: %v", out, err)
		}
		checkTrace(t, fx, resp)
		if n := strings.Count(out, "\n") + 1; len(resp.GetSteps()) > n {
			t.Fatalf("%d steps from %d lines", len(resp.GetSteps()), n)
		}
	})
}

// FuzzListFlows fuzzes the flows filters: table (name or number), pod,
// policy (namespace, name, rule), peer node.
func FuzzListFlows(f *testing.F) {
	type seed struct {
		table                   string
		pod                     bool
		podNS, podName          string
		pol                     bool
		polNS, polName, polRule string
		peer                    string
	}
	for _, s := range []seed{
		{},
		{table: "IngressDefaultRule"},
		{table: "ingressdefaultrule"},
		{table: "8"},
		{table: "253"},
		{table: "254"},
		{table: "-1"},
		{table: "0x1"},
		{table: "+7"},
		{pod: true, podNS: "ns", podName: "b"},
		{pod: true, podName: "b"},
		{pod: true},
		{pol: true, polNS: "ns", polName: "allow-web"},
		{pol: true, polNS: "ns", polName: "allow-web", polRule: "INGRESS/0"},
		{pol: true, polNS: "ns", polName: "allow-web", polRule: "ingress"},
		{pol: true},
		{peer: "node2", table: "L3Forwarding"},
		{peer: "node2", pod: true, podNS: "ns", podName: "a"},
	} {
		f.Add(s.table, s.pod, s.podNS, s.podName, s.pol, s.polNS, s.polName, s.polRule, s.peer)
	}
	f.Fuzz(func(t *testing.T, table string, pod bool, podNS, podName string, pol bool, polNS, polName, polRule, peer string) {
		fx := newFixture()
		req := &agentv1.ListFlowsRequest{Table: table, Pod: podRef(pod, podNS, podName), PeerNode: peer}
		if pol {
			req.Policy = &agentv1.PolicyRef{Namespace: polNS, Name: polName, Rule: polRule}
		}
		resp, err := fx.srv.ListFlows(context.Background(), req)
		if err != nil {
			checkRefusal(t, "flows", err)
			return
		}
		want, _ := parseTable(table)
		for _, fl := range resp.GetFlows() {
			if table != "" && fl.GetTableId() != uint32(want) {
				t.Fatalf("table filter %q (table %d) returned a flow of table %d", table, want, fl.GetTableId())
			}
			if fl.GetText() == "" {
				t.Fatalf("flow without text: %+v", fl)
			}
		}
	})
}

// FuzzPodsPoliciesWatch fuzzes the filters of pods, policies and watch
// (including the watch interval); a watch runs one sample and ends with
// its context.
func FuzzPodsPoliciesWatch(f *testing.F) {
	type seed struct {
		ns, name       string
		pod            bool
		podNS, podName string
		pol            bool
		interval       uint32
		idle           bool
	}
	for _, s := range []seed{
		{},
		{ns: "ns", name: "b"},
		{ns: "ns", name: "allow-web", pol: true, interval: 100, idle: true},
		{pod: true, podNS: "ns", podName: "b", interval: 1000},
		{pod: true, podName: "zz"},
		{pod: true},
		{pol: true, interval: 99},
		{name: "x", pol: true, interval: 4294967295},
		{ns: "ns/allow-web", name: "ingress", pod: true, podNS: "ns", podName: "a", pol: true},
	} {
		f.Add(s.ns, s.name, s.pod, s.podNS, s.podName, s.pol, s.interval, s.idle)
	}
	f.Fuzz(func(t *testing.T, ns, name string, pod bool, podNS, podName string, pol bool, interval uint32, idle bool) {
		fx := newFixture()
		ctx := context.Background()
		if resp, err := fx.srv.ListPodInterfaces(ctx, &agentv1.ListPodInterfacesRequest{Namespace: ns, Pod: name}); err != nil {
			checkRefusal(t, "pods", err)
		} else {
			for _, p := range resp.GetInterfaces() {
				if ns != "" && p.GetPod().GetNamespace() != ns || name != "" && p.GetPod().GetName() != name {
					t.Fatalf("pods filter %q/%q returned %v", ns, name, p.GetPod())
				}
			}
		}
		if resp, err := fx.srv.ListNetworkPolicies(ctx, &agentv1.ListNetworkPoliciesRequest{Namespace: ns, Name: name,
			Pod: podRef(pod, podNS, podName)}); err != nil {
			checkRefusal(t, "policies", err)
		} else {
			for _, r := range resp.GetRules() {
				if ns != "" && r.GetPolicyNamespace() != ns || name != "" && r.GetPolicyName() != name {
					t.Fatalf("policies filter %q/%q returned rule %s", ns, name, r.GetName())
				}
			}
		}
		req := &agentv1.WatchPolicyVerdictsRequest{IntervalMs: interval, Pod: podRef(pod, podNS, podName), IncludeIdle: idle}
		if pol {
			req.Policy = &agentv1.PolicyRef{Namespace: ns, Name: name}
		}
		wctx, cancel := context.WithCancel(ctx)
		cancel() // one sample, then the watch sees its context end
		if err := fx.srv.WatchPolicyVerdicts(req, &fakeStream{ctx: wctx, sent: make(chan struct{}, 1)}); err != nil {
			checkRefusal(t, "watch", err)
		}
	})
}
