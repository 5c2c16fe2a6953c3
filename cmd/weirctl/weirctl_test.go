package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
)

// fakeAgent implements the tooling API with canned answers and records the
// last request of each call.
type fakeAgent struct {
	agentv1.UnimplementedAgentServiceServer

	mu   sync.Mutex
	last map[string]proto.Message
	// events are streamed by WatchPolicyVerdicts, which then blocks until
	// the client goes away when hold is set.
	events []*agentv1.PolicyVerdictEvent
	hold   bool
	// ipv6Only and dualStack make the answers those of an IPv6-only or a
	// dual-stack node (set before the first call).
	ipv6Only, dualStack bool
}

func (f *fakeAgent) record(name string, m proto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last[name] = proto.Clone(m)
}

func (f *fakeAgent) request(name string) proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last[name]
}

func (f *fakeAgent) AgentInfo(_ context.Context, r *agentv1.AgentInfoRequest) (*agentv1.AgentInfoResponse, error) {
	f.record("AgentInfo", r)
	if f.ipv6Only {
		return &agentv1.AgentInfoResponse{NodeName: "node-6", PodCidr: "fd00:10:244:1::/64", PodCidrs: []string{"fd00:10:244:1::/64"},
			GatewayIp: "fd00:10:244:1::1", GatewayIps: []string{"fd00:10:244:1::1"}, GatewayMac: "02:00:fd:00:00:01", Ready: true}, nil
	}
	if f.dualStack {
		return &agentv1.AgentInfoResponse{NodeName: "node-ds", PodCidr: "10.244.0.0/24", PodCidrs: []string{"10.244.0.0/24", "fd00:10:244::/64"},
			GatewayIp: "10.244.0.1", GatewayIps: []string{"10.244.0.1", "fd00:10:244::1"}, GatewayMac: "02:00:0a:f4:00:01", Ready: true}, nil
	}
	return &agentv1.AgentInfoResponse{
		Version: "v0.1.0", VcsRevision: "abc123", GoVersion: "go1.26.8", NodeName: "node-a", PodCidr: "10.244.0.0/24",
		OvsVersion: "3.1.0", DatapathType: "netdev", Bridge: "br-int",
		Openflow:      &agentv1.ConnectionState{Connected: true, Generation: 2, Endpoint: "/var/run/openvswitch/br-int.mgmt"},
		Ovsdb:         &agentv1.ConnectionState{Connected: true, Endpoint: "unix:/var/run/openvswitch/db.sock"},
		FlowCounts:    []*agentv1.TableFlowCount{{TableId: 0, TableName: "Classifier", FlowCount: 4}, {TableId: 1, TableName: "SpoofGuard", FlowCount: 3}},
		LocalPodCount: 2, Ready: true, PeerNodes: []string{"node-b"}, GatewayIp: "10.244.0.1", GatewayMac: "02:00:0a:f4:00:01",
	}, nil
}

func (f *fakeAgent) ListPodInterfaces(_ context.Context, r *agentv1.ListPodInterfacesRequest) (*agentv1.ListPodInterfacesResponse, error) {
	f.record("ListPodInterfaces", r)
	if f.ipv6Only {
		return &agentv1.ListPodInterfacesResponse{Interfaces: []*agentv1.PodInterface{{Pod: &agentv1.PodRef{Namespace: "ns1", Name: "web"},
			Ifname: "eth0", OvsPortName: "web-1a2b3c", Ofport: 3, Ip: "fd00:10:244:1::2", Ips: []string{"fd00:10:244:1::2"},
			Mac: "02:00:fd:00:00:02", ContainerId: "0123"}}}, nil
	}
	all := []*agentv1.PodInterface{
		{Pod: &agentv1.PodRef{Namespace: "ns1", Name: "web"}, Ifname: "eth0", OvsPortName: "web-1a2b3c", Ofport: 3, Ip: "10.244.0.2", Mac: "02:00:0a:f4:00:02", ContainerId: "0123456789abcdef0123"},
		{Pod: &agentv1.PodRef{Namespace: "ns2", Name: "db"}, Ifname: "eth0", OvsPortName: "db-4d5e6f", Ofport: 4, Ip: "10.244.0.3", Ips: []string{"10.244.0.3", "fd00:10:244::3"}, Mac: "02:00:0a:f4:00:03", ContainerId: "fedcba"},
	}
	var out []*agentv1.PodInterface
	for _, i := range all {
		if (r.GetNamespace() == "" || r.GetNamespace() == i.GetPod().GetNamespace()) && (r.GetPod() == "" || r.GetPod() == i.GetPod().GetName()) {
			out = append(out, i)
		}
	}
	return &agentv1.ListPodInterfacesResponse{Interfaces: out}, nil
}

func (f *fakeAgent) ListFlows(_ context.Context, r *agentv1.ListFlowsRequest) (*agentv1.ListFlowsResponse, error) {
	f.record("ListFlows", r)
	if r.GetTable() == "NoSuchTable" {
		return nil, status.Error(codes.InvalidArgument, `table "NoSuchTable": no such table`)
	}
	if r.GetPod().GetName() == "ghost" {
		return nil, status.Error(codes.NotFound, "pod ns1/ghost: not attached on this node")
	}
	return &agentv1.ListFlowsResponse{Flows: []*agentv1.Flow{{
		TableId: 1, TableName: "SpoofGuard", Cookie: 0x1020000000003, Priority: 200, PacketCount: 7, ByteCount: 588,
		Text: " cookie=0x1020000000003, duration=12.345s, table=SpoofGuard, n_packets=7, n_bytes=588, priority=200,ip,in_port=\"web-1a2b3c\",dl_src=02:00:0a:f4:00:02,nw_src=10.244.0.2 actions=goto_table:ARPResponder",
	}}}, nil
}

func (f *fakeAgent) Trace(_ context.Context, r *agentv1.TraceRequest) (*agentv1.TraceResponse, error) {
	f.record("Trace", r)
	if r.GetSourceIp() == "10.0.0.300" {
		return nil, status.Error(codes.InvalidArgument, `source IP "10.0.0.300": not an IP address`)
	}
	resp := &agentv1.TraceResponse{
		Flow: "icmp,in_port=3,nw_src=10.244.0.2,nw_dst=10.244.1.2",
		Steps: []*agentv1.TraceStep{
			{TableId: 0, TableName: "Classifier", Flow: "priority 200, in_port=3", Actions: []string{"goto_table:SpoofGuard"}},
			{TableId: 5, TableName: "ConntrackState", Flow: "priority 190, ct_state=+new+trk", Actions: []string{"ct(table=4)", "-> resumed at table 4", "goto_table:L3Forwarding"}, AfterRecirculation: true},
		},
		Verdict: &agentv1.TraceVerdict{Kind: agentv1.TraceVerdict_TUNNEL, TunnelDst: "172.31.250.12", Node: "node-b", Summary: "tunneled to node-b"},
	}
	if f.ipv6Only {
		resp.Flow = "in_port=3,icmp6,ipv6_src=fd00:10:244:1::2,ipv6_dst=fd00:10:244:2::5"
		resp.Verdict = &agentv1.TraceVerdict{Kind: agentv1.TraceVerdict_TUNNEL, TunnelDst: "2001:db8:2::2", Node: "node-b",
			Summary: "tunneled to node node-b (2001:db8:2::2)"}
	}
	if r.GetDestinationIp() == "10.96.0.10" { // a ClusterIP
		resp.Verdict = &agentv1.TraceVerdict{Kind: agentv1.TraceVerdict_OUTPUT, OutPort: 3, OutPortName: "web-1a2b3c",
			Pod: &agentv1.PodRef{Namespace: "ns1", Name: "web"}, Service: "ns1/web:http", ServicePortKey: "ns1/web:http/IPv4",
			ServiceEndpoint: "10.244.0.2:8080", ServiceGroupId: 16777217, ServiceBucketId: 1,
			Summary: "Service ns1/web:http → endpoint 10.244.0.2:8080 (bucket 1 of 2 of group 16777217); output to port web-1a2b3c (pod ns1/web)"}
	}
	if r.GetDestinationIp() == "10.96.0.99" { // a ClusterIP without endpoints
		resp.Verdict = &agentv1.TraceVerdict{Kind: agentv1.TraceVerdict_OUTPUT, OutPort: 2, OutPortName: "weir-gw0", Service: "ns1/gone:"}
	}
	if r.GetDestinationPod().GetName() == "isolated" {
		resp.Steps[1].Note = "dropped here"
		resp.Verdict = &agentv1.TraceVerdict{Kind: agentv1.TraceVerdict_DROP, DropReason: "dropped by isolation of ns1/isolated (ingress)",
			IsolatedPod: &agentv1.PodRef{Namespace: "ns1", Name: "isolated"}, IsolatingPolicies: []string{"ns1/deny-all"}}
	}
	return resp, nil
}

func (f *fakeAgent) ListNetworkPolicies(_ context.Context, r *agentv1.ListNetworkPoliciesRequest) (*agentv1.ListNetworkPoliciesResponse, error) {
	f.record("ListNetworkPolicies", r)
	return &agentv1.ListNetworkPoliciesResponse{
		Rules: []*agentv1.PolicyRule{{Id: 1, Name: "ns1/allow-web/ingress/0", PolicyNamespace: "ns1", PolicyName: "allow-web", Direction: "Ingress",
			AppliedTo: []*agentv1.LocalPodRef{{Pod: &agentv1.PodRef{Namespace: "ns1", Name: "web"}, Ip: "10.244.0.2", Ofport: 3}},
			Peers:     []string{"10.244.1.0/24"}, Ports: []*agentv1.PortRange{{Protocol: "TCP", From: 80, To: 80}, {Protocol: "UDP", From: 1000, To: 2000}},
			PacketCount: 5, ByteCount: 370}},
		Isolated: []*agentv1.IsolatedPod{{Pod: &agentv1.LocalPodRef{Pod: &agentv1.PodRef{Namespace: "ns1", Name: "web"}, Ip: "10.244.0.2"},
			Direction: "Ingress", DroppedPackets: 9, DroppedBytes: 666, Policies: []string{"ns1/allow-web"}}},
		Generation: 4,
	}, nil
}

func (f *fakeAgent) WatchPolicyVerdicts(r *agentv1.WatchPolicyVerdictsRequest, s grpc.ServerStreamingServer[agentv1.PolicyVerdictEvent]) error {
	f.record("WatchPolicyVerdicts", r)
	for _, ev := range f.events {
		if err := s.Send(ev); err != nil {
			return err
		}
	}
	if f.hold {
		<-s.Context().Done()
	}
	return nil
}

// startFake serves a fakeAgent, changed by opts, on a unix socket at path.
func startFake(t *testing.T, path string, opts ...func(*fakeAgent)) *fakeAgent {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAgent{last: map[string]proto.Message{}}
	for _, o := range opts {
		o(f)
	}
	srv := grpc.NewServer()
	agentv1.RegisterAgentServiceServer(srv, f)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return f
}

// shortTempDir is a temporary directory with a path short enough for unix
// sockets (108 bytes), which t.TempDir's is not always.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "weirctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(ctx context.Context, env map[string]string, args ...string) result {
	var out, errOut strings.Builder
	code := run(ctx, args, &out, &errOut, func(k string) string { return env[k] })
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

func TestCommands(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "agent.sock")
	fake := startFake(t, sock)
	tests := []struct {
		name      string
		args      []string
		code      int
		stdout    []string // substrings, in order
		notStdout []string
		stderr    string
		call      string        // the RPC expected
		wantReq   proto.Message // its request
	}{
		{
			name:   "info",
			args:   []string{"get", "info"},
			stdout: []string{"Node:", "node-a", "Ready:", "yes", "OpenFlow:", "connected (generation 2)", "Peer nodes:", "node-b", "TABLE", "NAME", "FLOWS", "Classifier", "4", "SpoofGuard", "3"},
			call:   "AgentInfo", wantReq: &agentv1.AgentInfoRequest{},
		},
		{
			name:      "all pods",
			args:      []string{"get", "pods"},
			stdout:    []string{"NAMESPACE", "POD", "IPS", "MAC", "OVS PORT", "OFPORT", "ns1", "web", "10.244.0.2", "web-1a2b3c", "3", "eth0", "0123456789ab", "ns2", "db", "10.244.0.3,fd00:10:244::3"},
			notStdout: []string{"0123456789abc"},
			call:      "ListPodInterfaces", wantReq: &agentv1.ListPodInterfacesRequest{},
		},
		{
			name:   "pods of a namespace",
			args:   []string{"get", "pods", "-n", "ns2"},
			stdout: []string{"db"}, notStdout: []string{"web"},
			call: "ListPodInterfaces", wantReq: &agentv1.ListPodInterfacesRequest{Namespace: "ns2"},
		},
		{
			name:   "one pod as NS/NAME",
			args:   []string{"get", "pods", "ns1/web"},
			stdout: []string{"web"}, notStdout: []string{"db"},
			call: "ListPodInterfaces", wantReq: &agentv1.ListPodInterfacesRequest{Namespace: "ns1", Pod: "web"},
		},
		{
			name: "unknown pod is NotFound",
			args: []string{"get", "pods", "-n", "ns1", "ghost"},
			code: exitAgentError, stderr: "weirctl: NotFound: pod ns1/ghost has no interface on this node",
			call: "ListPodInterfaces", wantReq: &agentv1.ListPodInterfacesRequest{Namespace: "ns1", Pod: "ghost"},
		},
		{
			name:      "flows of a pod",
			args:      []string{"get", "flows", "--pod", "ns1/web", "--table", "SpoofGuard"},
			stdout:    []string{"TABLE", "COOKIE", "PRIORITY", "PACKETS", "BYTES", "FLOW", "SpoofGuard", "0x1020000000003", "200", "7", "588", `ip,in_port="web-1a2b3c"`, "actions=goto_table:ARPResponder"},
			notStdout: []string{"duration=", "n_packets="},
			call:      "ListFlows", wantReq: &agentv1.ListFlowsRequest{Table: "SpoofGuard", Pod: &agentv1.PodRef{Namespace: "ns1", Name: "web"}},
		},
		{
			name: "flows of a policy rule and a peer",
			args: []string{"get", "flows", "--policy", "ns1/allow-web", "--rule", "ingress/0", "--peer", "node-b"},
			call: "ListFlows", wantReq: &agentv1.ListFlowsRequest{Policy: &agentv1.PolicyRef{Namespace: "ns1", Name: "allow-web", Rule: "ingress/0"}, PeerNode: "node-b"},
			stdout: []string{"SpoofGuard"},
		},
		{
			name: "agent error InvalidArgument passes through",
			args: []string{"get", "flows", "--table", "NoSuchTable"},
			code: exitAgentError, stderr: `weirctl: InvalidArgument: table "NoSuchTable": no such table`,
			call: "ListFlows", wantReq: &agentv1.ListFlowsRequest{Table: "NoSuchTable"},
		},
		{
			name: "agent error NotFound passes through",
			args: []string{"get", "flows", "--pod", "ns1/ghost"},
			code: exitAgentError, stderr: "weirctl: NotFound: pod ns1/ghost: not attached on this node",
			call: "ListFlows", wantReq: &agentv1.ListFlowsRequest{Pod: &agentv1.PodRef{Namespace: "ns1", Name: "ghost"}},
		},
		{
			name:   "policies",
			args:   []string{"get", "policies", "-n", "ns1", "--pod", "ns1/web"},
			stdout: []string{"RULE", "ns1/allow-web/ingress/0", "Ingress", "ns1/web", "10.244.1.0/24", "TCP/80,UDP/1000-2000", "5", "370", "ISOLATED POD", "ns1/web", "10.244.0.2", "9", "666", "ns1/allow-web"},
			call:   "ListNetworkPolicies", wantReq: &agentv1.ListNetworkPoliciesRequest{Namespace: "ns1", Pod: &agentv1.PodRef{Namespace: "ns1", Name: "web"}},
		},
		{
			name:   "trace to a remote IP over tcp",
			args:   []string{"trace", "--from", "ns1/web", "--to", "10.244.1.2", "--proto", "TCP", "--port", "80"},
			stdout: []string{"Flow:", "nw_dst=10.244.1.2", "Classifier", "priority 200, in_port=3", "\n", "goto_table:SpoofGuard", "(recirculated after conntrack)", "ConntrackState", "ct(table=4)", "\n", "-> resumed at table 4", "Verdict:", "TUNNEL to node node-b (172.31.250.12)", "Summary:", "tunneled to node-b"},
			call:   "Trace", wantReq: &agentv1.TraceRequest{SourcePod: &agentv1.PodRef{Namespace: "ns1", Name: "web"}, DestinationIp: "10.244.1.2", Protocol: "tcp", DestinationPort: 80},
		},
		{
			name: "trace to a node",
			args: []string{"trace", "--from", "10.244.0.2", "--to", "node/node-b"},
			call: "Trace", wantReq: &agentv1.TraceRequest{SourceIp: "10.244.0.2", DestinationNode: "node-b", Protocol: "icmp"},
			stdout: []string{"TUNNEL"},
		},
		{
			name:   "trace dropped by isolation",
			args:   []string{"trace", "--from", "10.244.1.2", "--to", "ns1/isolated", "--proto", "udp", "--port", "53", "--source-port", "4000"},
			stdout: []string{"=> dropped here", "Verdict:", "DROP", "Drop reason:", "isolation of ns1/isolated", "Isolated pod:", "ns1/isolated", "Isolated by:", "ns1/deny-all"},
			call:   "Trace", wantReq: &agentv1.TraceRequest{SourceIp: "10.244.1.2", DestinationPod: &agentv1.PodRef{Namespace: "ns1", Name: "isolated"}, Protocol: "udp", DestinationPort: 53, SourcePort: 4000},
		},
		{
			name: "malformed IP goes to the agent",
			args: []string{"trace", "--from", "10.0.0.300", "--to", "ns1/web"},
			code: exitAgentError, stderr: `weirctl: InvalidArgument: source IP "10.0.0.300": not an IP address`,
			call: "Trace", wantReq: &agentv1.TraceRequest{SourceIp: "10.0.0.300", DestinationPod: &agentv1.PodRef{Namespace: "ns1", Name: "web"}, Protocol: "icmp"},
		},
		// Command-line errors: exit 2, nothing sent.
		{name: "no subcommand", args: []string{"get"}, code: exitUsage, stderr: "get needs a subcommand: flows, info, pods, policies"},
		{name: "unknown subcommand", args: []string{"get", "nodes"}, code: exitUsage, stderr: `unknown command "nodes"`},
		{name: "unknown flag", args: []string{"get", "info", "--bogus"}, code: exitUsage, stderr: "unknown flag: --bogus"},
		{name: "bad output", args: []string{"get", "info", "-o", "xml"}, code: exitUsage, stderr: `output "xml": want json or yaml`},
		{name: "bad pod ref", args: []string{"get", "flows", "--pod", "web"}, code: exitUsage, stderr: `--pod "web": want NAMESPACE/NAME`},
		{name: "rule without policy", args: []string{"get", "flows", "--rule", "ingress/0"}, code: exitUsage, stderr: "--rule needs --policy"},
		{name: "bad rule", args: []string{"get", "flows", "--policy", "a/b", "--rule", "sideways/1"}, code: exitUsage, stderr: `--rule "sideways/1": want ingress/N or egress/N`},
		{name: "rule without direction", args: []string{"get", "flows", "--policy", "a/b", "--rule", "0"}, code: exitUsage, stderr: `--rule "0"`},
		{name: "trace without --to", args: []string{"trace", "--from", "a/b"}, code: exitUsage, stderr: "trace needs --from and --to"},
		{name: "trace bad proto", args: []string{"trace", "--from", "a/b", "--to", "1.2.3.4", "--proto", "sctp", "--port", "1"}, code: exitUsage, stderr: `--proto "sctp"`},
		{name: "trace tcp without port", args: []string{"trace", "--from", "a/b", "--to", "1.2.3.4", "--proto", "tcp"}, code: exitUsage, stderr: "--proto tcp needs --port"},
		{name: "trace icmp with port", args: []string{"trace", "--from", "a/b", "--to", "1.2.3.4", "--port", "80"}, code: exitUsage, stderr: "--port and --source-port need --proto tcp or udp"},
		{name: "trace port out of range", args: []string{"trace", "--from", "a/b", "--to", "1.2.3.4", "--proto", "tcp", "--port", "70000"}, code: exitUsage, stderr: "--port"},
		{name: "trace from a node", args: []string{"trace", "--from", "node/x", "--to", "1.2.3.4"}, code: exitUsage, stderr: "a source is a pod or an IP"},
		{name: "too many args", args: []string{"get", "pods", "a", "b"}, code: exitUsage, stderr: "at most 1 argument"},
		{name: "watch bad interval", args: []string{"watch", "drops", "--interval", "1ms"}, code: exitUsage, stderr: "--interval must be at least 100ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake.mu.Lock()
			fake.last = map[string]proto.Message{}
			fake.mu.Unlock()
			r := runCLI(context.Background(), nil, append([]string{"--socket", sock}, tc.args...)...)
			if r.code != tc.code {
				t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tc.code, r.stdout, r.stderr)
			}
			rest := r.stdout
			for _, s := range tc.stdout {
				i := strings.Index(rest, s)
				if i < 0 {
					t.Fatalf("stdout lacks %q (in order)\nstdout:\n%s", s, r.stdout)
				}
				rest = rest[i+len(s):]
			}
			for _, s := range tc.notStdout {
				if strings.Contains(r.stdout, s) {
					t.Errorf("stdout has %q\nstdout:\n%s", s, r.stdout)
				}
			}
			if !strings.Contains(r.stderr, tc.stderr) || (tc.stderr == "" && r.stderr != "") {
				t.Errorf("stderr %q, want it to contain %q", r.stderr, tc.stderr)
			}
			if tc.call == "" {
				if len(fake.last) != 0 {
					t.Errorf("a usage error reached the agent: %v", fake.last)
				}
				return
			}
			if got := fake.request(tc.call); !proto.Equal(got, tc.wantReq) {
				t.Errorf("%s request %v, want %v", tc.call, got, tc.wantReq)
			}
		})
	}
}

// TestTableAlignment checks that table columns line up.
// TestIPv6Addresses: the info of IPv6-only and dual-stack nodes shows
// every pod CIDR and gateway address, an IPv6 pod's address is its IPS
// column, and a trace to an IPv6 address goes to the agent as it is and
// shows the IPv6 tunnel destination (an IPv6 underlay).
func TestIPv6Addresses(t *testing.T) {
	for _, tc := range []struct {
		name      string
		dualStack bool
		args      []string
		stdout    []string // substrings, in order
		wantReq   proto.Message
	}{
		{name: "IPv6-only info", args: []string{"get", "info"},
			stdout: []string{"Pod CIDR:", "fd00:10:244:1::/64\n", "Gateway:", "fd00:10:244:1::1 02:00:fd:00:00:01"}},
		{name: "dual-stack info", dualStack: true, args: []string{"get", "info"},
			stdout: []string{"Pod CIDR:", "10.244.0.0/24, fd00:10:244::/64\n", "Gateway:", "10.244.0.1, fd00:10:244::1 02:00:0a:f4:00:01"}},
		{name: "IPv6-only pods", args: []string{"get", "pods"},
			stdout: []string{"IPS", "MAC", "\n", "ns1", "web", "fd00:10:244:1::2", "02:00:fd:00:00:02", "web-1a2b3c"}},
		{name: "IPv6 trace", args: []string{"trace", "--from", "ns1/web", "--to", "fd00:10:244:2::5"},
			stdout:  []string{"Flow:", "ipv6_dst=fd00:10:244:2::5", "Verdict:", "TUNNEL to node node-b (2001:db8:2::2)"},
			wantReq: &agentv1.TraceRequest{SourcePod: &agentv1.PodRef{Namespace: "ns1", Name: "web"}, DestinationIp: "fd00:10:244:2::5", Protocol: "icmp"}},
		{name: "IPv6 source IP", args: []string{"trace", "--from", "fd00:10:244:2::5", "--to", "ns1/web", "--proto", "tcp", "--port", "80"},
			wantReq: &agentv1.TraceRequest{SourceIp: "fd00:10:244:2::5", DestinationPod: &agentv1.PodRef{Namespace: "ns1", Name: "web"}, Protocol: "tcp", DestinationPort: 80}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(shortTempDir(t), "agent.sock")
			fake := startFake(t, sock, func(f *fakeAgent) { f.ipv6Only, f.dualStack = !tc.dualStack, tc.dualStack })
			r := runCLI(context.Background(), nil, append([]string{"--socket", sock}, tc.args...)...)
			if r.code != 0 {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			rest := r.stdout
			for _, s := range tc.stdout {
				i := strings.Index(rest, s)
				if i < 0 {
					t.Fatalf("stdout lacks %q (in order)\nstdout:\n%s", s, r.stdout)
				}
				rest = rest[i+len(s):]
			}
			if tc.wantReq != nil {
				if got := fake.request("Trace"); !proto.Equal(got, tc.wantReq) {
					t.Errorf("Trace request %v, want %v", got, tc.wantReq)
				}
			}
		})
	}
}

func TestTableAlignment(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "agent.sock")
	startFake(t, sock)
	r := runCLI(context.Background(), nil, "--socket", sock, "get", "pods")
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want header + 2:\n%s", len(lines), r.stdout)
	}
	col := strings.Index(lines[0], "IP")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l[col:], "10.244.0.") {
			t.Errorf("IP column not aligned at %d:\n%s", col, r.stdout)
		}
	}
}

func TestOutputFormats(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "agent.sock")
	startFake(t, sock)
	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			r := runCLI(context.Background(), nil, "--socket", sock, "-o", format, "get", "info")
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			out := []byte(r.stdout)
			if format == "yaml" {
				var err error
				if out, err = yaml.YAMLToJSON(out); err != nil {
					t.Fatalf("not YAML: %v\n%s", err, r.stdout)
				}
			}
			var got struct {
				NodeName   string `json:"nodeName"`
				Openflow   struct{ Generation string }
				FlowCounts []struct {
					TableName string `json:"tableName"`
					FlowCount int    `json:"flowCount"`
				} `json:"flowCounts"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			// protojson: lowerCamelCase names, uint64 as a string.
			if got.NodeName != "node-a" || got.Openflow.Generation != "2" || len(got.FlowCounts) != 2 || got.FlowCounts[1].TableName != "SpoofGuard" || got.FlowCounts[1].FlowCount != 3 {
				t.Errorf("decoded %+v from\n%s", got, r.stdout)
			}
		})
	}
}

func TestWatchDrops(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "agent.sock")
	fake := startFake(t, sock)
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local).UnixNano()
	fake.events = []*agentv1.PolicyVerdictEvent{
		{Kind: agentv1.PolicyVerdictEvent_ALLOWED, TimeUnixNano: ts, RuleName: "ns1/allow-web/ingress/0", Direction: "Ingress", NewPackets: 3, TotalPackets: 10},
		{Kind: agentv1.PolicyVerdictEvent_DROPPED, TimeUnixNano: ts, Direction: "Ingress", Pod: &agentv1.LocalPodRef{Pod: &agentv1.PodRef{Namespace: "ns1", Name: "web"}, Ip: "10.244.0.2"}, NewPackets: 2, TotalPackets: 9, Message: "isolation of ns1/web dropped 2 new packets"},
		{Kind: agentv1.PolicyVerdictEvent_DROPPED, TimeUnixNano: ts, Direction: "Egress", Pod: &agentv1.LocalPodRef{Ip: "10.244.0.9"}, NewPackets: 1, TotalPackets: 1},
	}
	fake.hold = true

	t.Run("table until interrupted", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan result)
		go func() {
			done <- runCLI(ctx, nil, "--socket", sock, "watch", "drops", "--interval", "200ms", "--pod", "ns1/web")
		}()
		// The stream stays open (hold) until the client is interrupted.
		select {
		case r := <-done:
			t.Fatalf("watch ended before the interrupt: %+v", r)
		case <-time.After(500 * time.Millisecond):
		}
		cancel()
		r := <-done
		if r.code != 0 {
			t.Fatalf("exit %d after Ctrl-C, want 0: %s", r.code, r.stderr)
		}
		lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
		if len(lines) != 3 {
			t.Fatalf("want header + 2 drops, got:\n%s", r.stdout)
		}
		for i, want := range [][]string{
			{"TIME", "VERDICT", "POD / RULE", "NEW PACKETS"},
			{"03:04:05.000", "drop", "ns1/web (10.244.0.2)", "Ingress", " 2 ", " 9 ", "isolation of ns1/web dropped 2 new packets"},
			{"drop", "10.244.0.9", "Egress", " 1 "},
		} {
			for _, s := range want {
				if !strings.Contains(lines[i], s) {
					t.Errorf("line %d %q lacks %q", i, lines[i], s)
				}
			}
		}
		if strings.Contains(r.stdout, "allow-web") {
			t.Errorf("watch drops printed an ALLOWED event:\n%s", r.stdout)
		}
		want := &agentv1.WatchPolicyVerdictsRequest{IntervalMs: 200, Pod: &agentv1.PodRef{Namespace: "ns1", Name: "web"}}
		if got := fake.request("WatchPolicyVerdicts"); !proto.Equal(got, want) {
			t.Errorf("request %v, want %v", got, want)
		}
	})

	t.Run("verdicts as JSON lines", func(t *testing.T) {
		// Ctrl-C is a cancellation (a deadline would travel to the agent).
		ctx, cancel := context.WithCancel(context.Background())
		defer time.AfterFunc(time.Second, cancel).Stop()
		r := runCLI(ctx, nil, "--socket", sock, "-o", "json", "watch", "verdicts")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
		if len(lines) != 3 {
			t.Fatalf("want 3 JSON lines, got:\n%s", r.stdout)
		}
		var ev struct{ Kind, RuleName string }
		if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil || ev.Kind != "ALLOWED" || ev.RuleName != "ns1/allow-web/ingress/0" {
			t.Errorf("first line %s: %+v %v", lines[0], ev, err)
		}
	})
}

func TestSocketSelection(t *testing.T) {
	dir := shortTempDir(t)
	// A local cluster directory with two nodes, one of them with an agent.
	startFake(t, filepath.Join(dir, "nodes", "n1", "run-weir", "agent.sock"))
	if err := os.MkdirAll(filepath.Join(dir, "nodes", "n2", "run-weir"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{name: "--node with --local-dir", args: []string{"--local-dir", dir, "--node", "n1", "get", "info"}, stdout: "node-a"},
		{name: "--node with WEIR_LOCAL_DIR", env: map[string]string{"WEIR_LOCAL_DIR": dir}, args: []string{"--node", "n1", "get", "info"}, stdout: "node-a"},
		{name: "unknown node", args: []string{"--local-dir", dir, "--node", "n9", "get", "info"}, code: exitUsage,
			stderr: "node n9: not a node of the local cluster in " + dir + " (nodes: n1, n2)"},
		{name: "no local cluster", args: []string{"--local-dir", filepath.Join(dir, "none"), "--node", "n1", "get", "info"}, code: exitUsage,
			stderr: "no local cluster in " + filepath.Join(dir, "none")},
		{name: "node without agent", args: []string{"--local-dir", dir, "--node", "n2", "get", "info"}, code: exitUnreachable,
			stderr: "cannot reach the agent at " + filepath.Join(dir, "nodes", "n2", "run-weir", "agent.sock") + ": dial unix"},
		{name: "missing socket", args: []string{"--socket", filepath.Join(dir, "nope.sock"), "get", "info"}, code: exitUnreachable,
			stderr: "no such file or directory (is the agent running? use --socket or --node)"},
		{name: "--socket and --node", args: []string{"--socket", "/x", "--node", "n1", "get", "info"}, code: exitUsage, stderr: "--socket and --node exclude each other"},
		{name: "bad node name", args: []string{"--local-dir", dir, "--node", "../n1", "get", "info"}, code: exitUsage, stderr: `node "../n1": not a node name`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(context.Background(), tc.env, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stdout, tc.stdout) || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("exit %d (want %d)\nstdout: %s\nstderr: %s\nwant stdout ∋ %q, stderr ∋ %q", r.code, tc.code, r.stdout, r.stderr, tc.stdout, tc.stderr)
			}
		})
	}
}

func TestCompactFlow(t *testing.T) {
	tests := []struct{ in, want string }{
		{" cookie=0x1, duration=1.5s, table=Classifier, n_packets=0, n_bytes=0, priority=200,in_port=weir-gw0 actions=goto_table:SpoofGuard",
			"in_port=weir-gw0 actions=goto_table:SpoofGuard"},
		{" cookie=0x0, duration=3s, table=Output, n_packets=5, n_bytes=10, idle_age=2, priority=0 actions=drop", "actions=drop"},
		{" cookie=0x0, duration=3s, table=0, n_packets=5, n_bytes=10, reset_counts priority=10,ip actions=drop", "ip actions=drop"},
		{"priority=100,arp,arp_tpa=10.244.0.1 actions=NORMAL", "arp,arp_tpa=10.244.0.1 actions=NORMAL"},
		{"actions=drop", "actions=drop"},
	}
	for _, tc := range tests {
		if got := compactFlow(tc.in); got != tc.want {
			t.Errorf("compactFlow(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
