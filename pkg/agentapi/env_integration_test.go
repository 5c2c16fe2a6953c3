package agentapi_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/agentapi"
	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/podnet"
	"github.com/weirnet/weir/pkg/unixctl"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

const gwMAC = "02:00:0a:0a:00:01"

// node is a simulated node: a private OVS with br-int (tables named), a
// gateway gw0 (10.10.0.1/24, ofport 2) and the real base pipeline.
type node struct {
	ovs  *ovstest.Instance
	sw   *openflow.Switch
	pipe *pipeline.Pipeline
	db   *ovsdb.Client
	pods []*ovstest.Pod
}

func newNode(t *testing.T) *node {
	t.Helper()
	ovs := ovstest.Start(t)
	ovs.AddBridge(t, "br-int")
	ovs.MustVsctl(t, "add-port", "br-int", "gw0", "--", "set", "Interface", "gw0",
		"type=internal", "ofport_request=2", `mac="`+gwMAC+`"`)
	for _, args := range [][]string{
		{"ip", "addr", "add", "10.10.0.1/24", "dev", "gw0"},
		{"ip", "link", "set", "gw0", "up"},
	} {
		if out, err := ovs.Exec("", args[0], args[1:]...); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	sw, err := openflow.Open(openflow.Config{MgmtSocket: ovs.MgmtSocket("br-int"), RetryInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Close)
	if err := sw.WaitReady(testctx.Timeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC(gwMAC)
	_, cidr, _ := net.ParseCIDR("10.10.0.0/24")
	_, cidr6, _ := net.ParseCIDR("fd00:10:10::/64") // dual-stack: traces over IPv6 too
	pipe, err := pipeline.New(sw, pipeline.Config{GatewayOFPort: 2, GatewayMAC: mac, GatewayIP: net.ParseIP("10.10.0.1"),
		PodCIDR: cidr, GatewayIPv6: net.ParseIP("fd00:10:10::1"), PodCIDRv6: cidr6, CTZone: 65520, Round: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := pipe.InstallBase(testctx.Timeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	db, err := ovsdb.Connect(testctx.Timeout(t, time.Minute), ovs.DBSocket(), klog.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.SetFlowTableNames(testctx.Timeout(t, time.Minute), "br-int", pipeline.TableNames()); err != nil {
		t.Fatal(err)
	}
	return &node{ovs: ovs, sw: sw, pipe: pipe, db: db}
}

func (n *node) addPod(t *testing.T, name, ip, mac string, ofport int) *ovstest.Pod {
	t.Helper()
	p := n.ovs.AddPod(t, "br-int", name, ip+"/24", mac, ofport)
	hw, _ := net.ParseMAC(mac)
	if err := n.pipe.AddPod(testctx.Timeout(t, time.Minute), pipeline.PodInterface{Key: name, OFPort: uint32(ofport), IPs: podIPs(ip), MAC: hw}); err != nil {
		t.Fatal(err)
	}
	n.pods = append(n.pods, p)
	return p
}

// podIPs are a test pod's addresses: ip and fd00:10:10::<last octet of ip>.
func podIPs(ip string) []netip.Addr {
	v4 := netip.MustParseAddr(ip)
	return []netip.Addr{v4, netip.MustParseAddr(fmt.Sprintf("fd00:10:10::%x", v4.As4()[3]))}
}

// attachments fakes the CNI server's attachments from the test's pods
// (their namespace is "ns", their name the pod name).
type attachments struct{ n *node }

func (a attachments) List() []interfacestore.Interface {
	var out []interfacestore.Interface
	for _, p := range a.n.pods {
		out = append(out, interfacestore.Interface{ContainerID: "c-" + p.Name, IfName: "eth0",
			NetNS: "/run/netns/" + p.NetNS, PortName: p.HostIf, IPs: podIPs(p.IP), MAC: podnet.MACFromIP(net.ParseIP(p.IP)), PodNamespace: "ns", PodName: p.Name})
	}
	return out
}

// server starts the API on a unix socket in a temporary directory and
// returns a client.
func (n *node) server(t *testing.T) (agentv1.AgentServiceClient, string) {
	t.Helper()
	gwMACHW, _ := net.ParseMAC(gwMAC)
	_, cidr, _ := net.ParseCIDR("10.10.0.0/24")
	return n.serve(t, agentapi.Config{NodeName: "node1", Bridge: "br-int", DatapathType: "netdev", PodCIDR: cidr,
		GatewayName: "gw0", GatewayIP: net.ParseIP("10.10.0.1"), GatewayMAC: gwMACHW, GatewayOFPort: 2, Logger: klog.Background()},
		agentapi.Deps{Switch: n.sw, Pipeline: n.pipe, Pods: attachments{n}, OVSDB: n.db, Unixctl: unixctl.New(n.ovs.Dir, "ovs-vswitchd")})
}

// serve starts the API of cfg and deps on a unix socket in a temporary
// directory and returns a client.
func (n *node) serve(t *testing.T, cfg agentapi.Config, deps agentapi.Deps) (agentv1.AgentServiceClient, string) {
	t.Helper()
	srv := agentapi.New(cfg, deps)
	sock := filepath.Join(t.TempDir(), "run", "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, agentapi.ServeConfig{UnixSocket: sock}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := agentv1.NewAgentServiceClient(conn)
	// Wait for the listener.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.AgentInfo(testctx.Timeout(t, time.Minute), &agentv1.AgentInfoRequest{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent API did not come up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c, sock
}

func pod(name string) *agentv1.PodRef { return &agentv1.PodRef{Namespace: "ns", Name: name} }

// TestAgainstRealOVS runs the API over a real bridge and pipeline: info,
// pods, flows, a trace between two pods (output), the same trace under an
// ingress isolation (drop, naming it) and with an allow rule (output,
// naming the rule), policy listing and the verdict watch seeing real
// dropped pings.
func TestAgainstRealOVS(t *testing.T) {
	n := newNode(t)
	n.addPod(t, "a", "10.10.0.3", "0a:58:0a:0a:00:03", 3)
	b := n.addPod(t, "b", "10.10.0.4", "0a:58:0a:0a:00:04", 4)
	c, _ := n.server(t)
	ctx := testctx.Timeout(t, time.Minute)

	info, err := c.AgentInfo(ctx, &agentv1.AgentInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Openflow.Connected || !info.Ovsdb.Connected || info.LocalPodCount != 2 || info.OvsVersion == "" ||
		info.PodCidr != "10.10.0.0/24" || len(info.FlowCounts) < 13 || info.FlowCounts[0].TableName != "Classifier" ||
		info.FlowCounts[0].FlowCount != 4 {
		t.Errorf("AgentInfo = %v", info)
	}

	pods, err := c.ListPodInterfaces(ctx, &agentv1.ListPodInterfacesRequest{Pod: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Interfaces) != 1 || pods.Interfaces[0].Ofport != 4 || pods.Interfaces[0].Ip != "10.10.0.4" ||
		pods.Interfaces[0].OvsPortName != b.HostIf || pods.Interfaces[0].Mac != "0a:58:0a:0a:00:04" {
		t.Errorf("ListPodInterfaces(b) = %v", pods)
	}

	// ListFlows renders exactly what ovs-ofctl prints (minus idle_age).
	flows, err := c.ListFlows(ctx, &agentv1.ListFlowsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ofctl := n.ovs.MustOfctl(t, "-O", "OpenFlow15", "--names", "dump-flows", "br-int")
	want := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(ofctl), "\n") {
		want[stripVolatile(l)] = true
	}
	if len(flows.Flows) != len(want) {
		t.Errorf("ListFlows returned %d flows, ovs-ofctl %d", len(flows.Flows), len(want))
	}
	for _, f := range flows.Flows {
		if !want[stripVolatile(f.Text)] {
			t.Errorf("flow not printed by ovs-ofctl:\n%s", f.Text)
		}
	}
	podFlows, err := c.ListFlows(ctx, &agentv1.ListFlowsRequest{Pod: pod("a"), Table: "SpoofGuard"})
	if err != nil {
		t.Fatal(err)
	}
	// IPv4 and ARP; IPv6, and NS and NA from its IPv6 and link-local source.
	if len(podFlows.Flows) != 7 {
		t.Errorf("ListFlows(pod a, SpoofGuard) = %d flows, want 7: %v", len(podFlows.Flows), podFlows.Flows)
	}

	trace := func(proto string, port uint32) *agentv1.TraceResponse {
		t.Helper()
		tr, err := c.Trace(ctx, &agentv1.TraceRequest{SourcePod: pod("a"), DestinationPod: pod("b"), Protocol: proto, DestinationPort: port})
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	tr := trace("tcp", 80)
	if tr.Verdict.Kind != agentv1.TraceVerdict_OUTPUT || tr.Verdict.OutPort != 4 || tr.Verdict.Pod.GetName() != "b" {
		t.Errorf("Trace a->b = %v\n%s", tr.Verdict, tr.RawOutput)
	}
	// Over IPv6: the destination as b's IPv6 address.
	trace6 := func() *agentv1.TraceResponse {
		t.Helper()
		tr, err := c.Trace(ctx, &agentv1.TraceRequest{SourcePod: pod("a"), DestinationIp: "fd00:10:10::4", Protocol: "tcp", DestinationPort: 80})
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	tr = trace6()
	if tr.Verdict.Kind != agentv1.TraceVerdict_OUTPUT || tr.Verdict.OutPort != 4 || tr.Verdict.Pod.GetName() != "b" ||
		!strings.Contains(tr.Flow, "tcp6") || !strings.Contains(tr.Flow, "ipv6_dst=fd00:10:10::4") {
		t.Errorf("Trace a->b over IPv6 = %v (flow %s)\n%s", tr.Verdict, tr.Flow, tr.RawOutput)
	}
	if !hasTable(tr.Steps, "ConntrackState") || !hasTable(tr.Steps, "Output") {
		t.Errorf("Trace a->b steps miss the tables after conntrack: %v", tr.Steps)
	}

	// Default-deny ingress for b.
	bLocal := pipeline.LocalPod{IP: net.ParseIP("10.10.0.4"), OFPort: 4}
	if err := n.pipe.ApplyPolicy(ctx, pipeline.PolicyChange{Isolation: &pipeline.Isolation{Ingress: []pipeline.LocalPod{bLocal}}}); err != nil {
		t.Fatal(err)
	}
	tr = trace("tcp", 80)
	if tr.Verdict.Kind != agentv1.TraceVerdict_DROP || tr.Verdict.IsolatedPod.GetName() != "b" ||
		!strings.Contains(tr.Verdict.DropReason, "isolation of ns/b (ingress)") {
		t.Errorf("Trace a->b isolated = %v\n%s", tr.Verdict, tr.RawOutput)
	}
	if tr = trace6(); tr.Verdict.Kind != agentv1.TraceVerdict_DROP || tr.Verdict.IsolatedPod.GetName() != "b" {
		t.Errorf("Trace a->b over IPv6, isolated = %v\n%s", tr.Verdict, tr.RawOutput)
	}

	// An allow rule for TCP 80.
	if err := n.pipe.ApplyPolicy(ctx, pipeline.PolicyChange{Upsert: []pipeline.PolicyRule{{ID: 7, Name: "ns/allow-web/ingress/0",
		Direction: pipeline.Ingress, Pods: []pipeline.LocalPod{bLocal},
		Ports: []pipeline.PortRange{{Protocol: pipeline.ProtocolTCP, From: 80, To: 80}}}}}); err != nil {
		t.Fatal(err)
	}
	tr = trace("tcp", 80)
	if tr.Verdict.Kind != agentv1.TraceVerdict_OUTPUT || !slices.Equal(tr.Verdict.AllowedBy, []string{"ns/allow-web/ingress/0"}) {
		t.Errorf("Trace a->b tcp/80 with rule = %v\n%s", tr.Verdict, tr.RawOutput)
	}
	tr = trace("icmp", 0)
	if tr.Verdict.Kind != agentv1.TraceVerdict_DROP || !slices.Equal(tr.Verdict.IsolatingPolicies, []string{"ns/allow-web"}) {
		t.Errorf("Trace a->b icmp with rule = %v\n%s", tr.Verdict, tr.RawOutput)
	}

	pols, err := c.ListNetworkPolicies(ctx, &agentv1.ListNetworkPoliciesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pols.Rules) != 1 || pols.Rules[0].PolicyName != "allow-web" || pols.Rules[0].AppliedTo[0].Pod.GetName() != "b" ||
		len(pols.Isolated) != 1 || pols.Isolated[0].Pod.Pod.GetName() != "b" || pols.Isolated[0].Direction != "Ingress" {
		t.Errorf("ListNetworkPolicies = %v", pols)
	}
	polFlows, err := c.ListFlows(ctx, &agentv1.ListFlowsRequest{Policy: &agentv1.PolicyRef{Namespace: "ns", Name: "allow-web"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(polFlows.Flows) != 1 || !strings.Contains(polFlows.Flows[0].Text, "conj_id=7 actions=goto_table:ConntrackCommit") {
		t.Errorf("ListFlows(policy allow-web) = %v", polFlows.Flows)
	}

	// The watch sees a's pings to b dropped by b's isolation.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	stream, err := c.WatchPolicyVerdicts(wctx, &agentv1.WatchPolicyVerdictsRequest{IntervalMs: 200})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		// ARP passes isolation; pings are dropped.
		n.pods[0].Ping("10.10.0.4", 3) //nolint:errcheck // expected to fail
	}()
	for {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("no drop event: %v", err)
		}
		if ev.Kind == agentv1.PolicyVerdictEvent_DROPPED && ev.Pod.Pod.GetName() == "b" && ev.NewPackets > 0 {
			t.Logf("verdict event: %s", ev.Message)
			break
		}
	}
}

// stripVolatile removes the counters' and duration's values, which change
// between two dumps, and idle_age, which the API does not print.
func stripVolatile(l string) string {
	l = strings.TrimSpace(l)
	l = regexp.MustCompile(`duration=[0-9.]+s`).ReplaceAllString(l, "duration=")
	return regexp.MustCompile(`idle_age=\d+, `).ReplaceAllString(l, "")
}

func hasTable(steps []*agentv1.TraceStep, name string) bool {
	for _, s := range steps {
		if s.TableName == name {
			return true
		}
	}
	return false
}
