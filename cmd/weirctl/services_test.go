package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
)

// ListServices answers the Services of namespace ns1 (web: a ClusterIP and
// a NodePort, two endpoints; gone: none anywhere; local: eTP Local,
// endpoints elsewhere only), or FailedPrecondition for namespace "off"
// (an agent whose proxy is off).
func (f *fakeAgent) ListServices(_ context.Context, r *agentv1.ListServicesRequest) (*agentv1.ListServicesResponse, error) {
	f.record("ListServices", r)
	if r.GetNamespace() == "off" {
		return nil, status.Error(codes.FailedPrecondition, "the Service proxy is off (proxyMode off): Services are kube-proxy's on this node")
	}
	return &agentv1.ListServicesResponse{Services: []*agentv1.ServicePort{
		{Key: "ns1/web:http/IPv4", Namespace: "ns1", Name: "web", PortName: "http", Family: "IPv4", HasEndpoints: true,
			Frontends: []*agentv1.ServiceFrontend{{Kind: "ClusterIP", Ip: "10.96.0.10", Port: 80, Protocol: "TCP"},
				{Kind: "NodePort", Port: 30080, Protocol: "TCP"}},
			ClusterEndpoints: []*agentv1.ServiceEndpoint{
				{Ip: "10.244.0.2", Port: 8080, Local: true, Weight: 1, BucketId: 0, PacketCount: 12, ByteCount: 720},
				{Ip: "10.244.1.5", Port: 8080, Weight: 1, BucketId: 1, PacketCount: 8, ByteCount: 480}},
			GroupId: 16777217, PacketCount: 20, ByteCount: 1200, GroupFlowCount: 2},
		{Key: "ns1/web:http/IPv6", Namespace: "ns1", Name: "web", PortName: "http", Family: "IPv6", HasEndpoints: true,
			Frontends:        []*agentv1.ServiceFrontend{{Kind: "ClusterIP", Ip: "fd00:96::10", Port: 80, Protocol: "TCP"}},
			ClusterEndpoints: []*agentv1.ServiceEndpoint{{Ip: "fd00:10:244::2", Port: 8080, Local: true, Weight: 1}},
			GroupId:          16777218},
		{Key: "ns1/gone:/IPv4", Namespace: "ns1", Name: "gone", Family: "IPv4",
			Frontends: []*agentv1.ServiceFrontend{{Kind: "ClusterIP", Ip: "10.96.0.99", Port: 53, Protocol: "UDP"}}},
		{Key: "ns1/local:/IPv4", Namespace: "ns1", Name: "local", Family: "IPv4", HasEndpoints: true, ExternalEndpointsSet: true,
			ExternalLocal: true, Frontends: []*agentv1.ServiceFrontend{{Kind: "LoadBalancer", Ip: "203.0.113.9", Port: 443, Protocol: "TCP"}}},
	}, Notes: []string{"group 7 of ns1/x:/IPv4 is not on the switch (weirctl audit reports it as a missing-group)"}}, nil
}

func TestServicesCommands(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "agent.sock")
	fake := startFake(t, sock)
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		stdout  []string // substrings, in order
		stderr  string
		call    string
		wantReq proto.Message
	}{
		{name: "table", args: []string{"get", "services"},
			stdout: []string{"NAMESPACE", "SERVICE", "PORT", "FAMILY", "FRONTENDS", "ENDPOINTS", "GROUP", "PACKETS", "BYTES", "\n",
				"ns1", "web", "http", "IPv4", "ClusterIP 10.96.0.10:80/TCP,NodePort *:30080/TCP", "2", "16777217", "20", "1200", "\n",
				"ns1", "web", "http", "IPv6", "ClusterIP [fd00:96::10]:80/TCP", "1", "16777218", "\n",
				"ns1", "gone", "-", "IPv4", "ClusterIP 10.96.0.99:53/UDP", "0 (rejects)", "-", "\n",
				"ns1", "local", "LoadBalancer 203.0.113.9:443/TCP", "0 (drops: none local), 0 external local", "\n",
				"SERVICE PORT", "TRAFFIC", "ENDPOINT", "LOCAL", "WEIGHT", "BUCKET", "CONNECTIONS", "BYTES", "\n",
				"ns1/web:http/IPv4", "cluster", "10.244.0.2:8080", "yes", "1", "0", "12", "720", "\n",
				"ns1/web:http/IPv4", "cluster", "10.244.1.5:8080", "no", "1", "1", "8", "480", "\n",
				"ns1/web:http/IPv6", "cluster", "[fd00:10:244::2]:8080", "yes", "\n",
				"Note:", "group 7 of ns1/x:/IPv4 is not on the switch"},
			call: "ListServices", wantReq: &agentv1.ListServicesRequest{}},
		{name: "one Service as NS/NAME", args: []string{"get", "services", "ns1/web"},
			call: "ListServices", wantReq: &agentv1.ListServicesRequest{Namespace: "ns1", Name: "web"}, stdout: []string{"web"}},
		{name: "namespace flag", args: []string{"get", "services", "-n", "ns1", "web"},
			call: "ListServices", wantReq: &agentv1.ListServicesRequest{Namespace: "ns1", Name: "web"}, stdout: []string{"web"}},
		{name: "proxy off", args: []string{"get", "services", "-n", "off"}, code: exitAgentError,
			stderr: "weirctl: FailedPrecondition: the Service proxy is off (proxyMode off)",
			call:   "ListServices", wantReq: &agentv1.ListServicesRequest{Namespace: "off"}},
		{name: "namespace mismatch", args: []string{"get", "services", "-n", "a", "b/web"}, code: exitUsage,
			stderr: `service "b/web": want SERVICE or NAMESPACE/SERVICE (matching -n)`},
		{name: "trace through a ClusterIP", args: []string{"trace", "--from", "ns1/web", "--to", "10.96.0.10", "--proto", "tcp", "--port", "80"},
			stdout: []string{"Verdict:", "OUTPUT to port web-1a2b3c (3), pod ns1/web", "\n",
				"Service:", "ns1/web:http → endpoint 10.244.0.2:8080 (bucket 1 of group 16777217)", "\n", "Summary:", "Service ns1/web:http"},
			call: "Trace", wantReq: &agentv1.TraceRequest{SourcePod: &agentv1.PodRef{Namespace: "ns1", Name: "web"}, DestinationIp: "10.96.0.10",
				Protocol: "tcp", DestinationPort: 80}},
		{name: "trace a given endpoint", args: []string{"trace", "--from", "ns1/web", "--to", "10.96.0.10", "--proto", "tcp", "--port", "80",
			"--endpoint", "10.244.0.2:8080"}, stdout: []string{"Service:"},
			call: "Trace", wantReq: &agentv1.TraceRequest{SourcePod: &agentv1.PodRef{Namespace: "ns1", Name: "web"}, DestinationIp: "10.96.0.10",
				Protocol: "tcp", DestinationPort: 80, ServiceEndpoint: "10.244.0.2:8080"}},
		{name: "trace to a Service without endpoints", args: []string{"trace", "--from", "ns1/web", "--to", "10.96.0.99", "--proto", "udp",
			"--port", "53"}, stdout: []string{"Service:", "ns1/gone: (no endpoint)"},
			call: "Trace", wantReq: &agentv1.TraceRequest{SourcePod: &agentv1.PodRef{Namespace: "ns1", Name: "web"}, DestinationIp: "10.96.0.99",
				Protocol: "udp", DestinationPort: 53}},
		{name: "endpoint without an IP destination", args: []string{"trace", "--from", "ns1/web", "--to", "ns1/db", "--endpoint", "10.0.0.1"},
			code: exitUsage, stderr: "--endpoint needs --to a Service frontend IP"},
	} {
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
					t.Fatalf("stdout lacks %q (in order) after %q\nstdout:\n%s", s, r.stdout[:len(r.stdout)-len(rest)], r.stdout)
				}
				rest = rest[i+len(s):]
			}
			if !strings.Contains(r.stderr, tc.stderr) || (tc.stderr == "" && r.stderr != "") {
				t.Errorf("stderr %q, want it to contain %q", r.stderr, tc.stderr)
			}
			got := fake.request(tc.call)
			if tc.call == "" {
				if len(fake.last) != 0 {
					t.Errorf("a usage error reached the agent: %v", fake.last)
				}
				return
			}
			if !proto.Equal(got, tc.wantReq) {
				t.Errorf("%s request %v, want %v", tc.call, got, tc.wantReq)
			}
		})
	}

	// JSON and YAML: the API message, lowerCamelCase, 64-bit counters as
	// strings.
	for _, format := range []string{"json", "yaml"} {
		r := runCLI(context.Background(), nil, "--socket", sock, "get", "services", "-o", format)
		if r.code != 0 {
			t.Fatalf("-o %s: exit %d: %s", format, r.code, r.stderr)
		}
		out := []byte(r.stdout)
		if format == "yaml" {
			var err error
			if out, err = yaml.YAMLToJSON(out); err != nil {
				t.Fatalf("-o yaml: %v\n%s", err, r.stdout)
			}
		}
		var got struct {
			Services []struct {
				Key              string
				GroupID          uint32 `json:"groupId"`
				PacketCount      string `json:"packetCount"`
				ClusterEndpoints []struct {
					IP          string `json:"ip"`
					PacketCount string `json:"packetCount"`
				} `json:"clusterEndpoints"`
			}
			Notes []string
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("-o %s: %v\n%s", format, err, r.stdout)
		}
		if len(got.Services) != 4 || got.Services[0].Key != "ns1/web:http/IPv4" || got.Services[0].GroupID != 16777217 ||
			got.Services[0].PacketCount != "20" || got.Services[0].ClusterEndpoints[1].IP != "10.244.1.5" ||
			got.Services[0].ClusterEndpoints[1].PacketCount != "8" || len(got.Notes) != 1 {
			t.Errorf("-o %s = %+v\n%s", format, got, r.stdout)
		}
	}
}
