package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/klog/v2/ktesting"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
	"github.com/weirnet/weir/pkg/cniserver"
	"github.com/weirnet/weir/pkg/ipam"
	"github.com/weirnet/weir/pkg/metrics"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/podnet"
	"github.com/weirnet/weir/test/ovstest"
)

const netConf = `{"cniVersion":"1.0.0","name":"weir","type":"weir"}`

// scrape fetches /metrics and parses it with the Prometheus text parser.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("scraping: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping: status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return mfs
}

// get returns the value of name{labels} in mfs (a histogram's count), -1
// if absent.
func get(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	mf := mfs[name]
	if mf == nil {
		return -1
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
next:
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, l := range m.GetLabel() {
			if want[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			return m.GetUntyped().GetValue()
		}
	}
	return -1
}

// status GETs path and returns the status code and body.
func status(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitStatus polls url until it answers code.
func waitStatus(t *testing.T, url string, code int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got, body := status(t, url)
		if got == code {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: status %d after %v, want %d:\n%s", url, got, timeout, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func cniCall(t *testing.T, ctx context.Context, c cniv1.CniClient, cmd string, args *cniv1.CniCmdArgs) *cniv1.Error {
	t.Helper()
	req := &cniv1.CniCmdRequest{CniArgs: args}
	var resp *cniv1.CniCmdResponse
	var err error
	switch cmd {
	case "ADD":
		resp, err = c.CmdAdd(ctx, req)
	case "DEL":
		resp, err = c.CmdDel(ctx, req)
	case "CHECK":
		resp, err = c.CmdCheck(ctx, req)
	case "STATUS":
		resp, err = c.CmdStatus(ctx, req)
	case "GC":
		resp, err = c.CmdGC(ctx, req)
	}
	if err != nil {
		t.Fatalf("CNI %s: %v", cmd, err)
	}
	return resp.GetError()
}

// TestAgentMetrics runs the real OpenFlow, OVSDB, pipeline and CNI server
// against a private OVS with the agent's metrics attached, serves them over
// HTTP, and checks that scraped counters follow real operations: CNI
// requests through the gRPC socket, a pod ADD (OVSDB transactions, bundles,
// flows per table, local pods), policy counters from real traffic, and an
// ovs-vswitchd restart (reconnects, /readyz going 503 and back).
func TestAgentMetrics(t *testing.T) {
	ovs := ovstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))

	a := metrics.NewAgent()
	hs, err := metrics.Listen(a.ServerConfig("127.0.0.1:0", log))
	if err != nil {
		t.Fatal(err)
	}
	srvCtx, stopSrv := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(srvCtx) }()
	defer func() {
		stopSrv()
		if err := <-served; err != nil {
			t.Errorf("metrics server: %v", err)
		}
	}()
	base := "http://" + hs.Addr().String()

	// Nothing attached yet: alive, not ready.
	if code, body := status(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz while starting: %d\n%s", code, body)
	}
	if code, _ := status(t, base+"/readyz"); code != 503 {
		t.Fatalf("/readyz while starting: %d, want 503", code)
	}

	db, err := ovsdb.Connect(ctx, ovs.DBSocket(), log.WithName("ovsdb"), ovsdb.WithObserver(a))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.EnsureBridge(ctx, ovsdb.BridgeConfig{Name: "br-int", DatapathType: ovsdb.DatapathNetdev}); err != nil {
		t.Fatal(err)
	}
	if err := db.SetFlowTableNames(ctx, "br-int", pipeline.TableNames()); err != nil {
		t.Fatal(err)
	}
	sw, err := openflow.Open(openflow.Config{MgmtSocket: ovs.MgmtSocket("br-int"), RetryInterval: 50 * time.Millisecond,
		Logger: log.WithName("openflow"), Observer: a})
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	if err := sw.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	a.SetSwitch(sw)
	_, cidr, _ := net.ParseCIDR("10.244.7.0/24")
	alloc, err := ipam.New(cidr, &ipam.MemStore{})
	if err != nil {
		t.Fatal(err)
	}
	gw := alloc.Gateway()
	pipe, err := pipeline.New(sw, pipeline.Config{GatewayOFPort: 2, GatewayMAC: podnet.MACFromIP(gw), GatewayIP: gw,
		PodCIDR: cidr, CTZone: 65520, Round: 1})
	if err != nil {
		t.Fatal(err)
	}
	a.SetPipeline(pipe)
	if err := pipe.InstallBase(ctx); err != nil {
		t.Fatal(err)
	}
	srv := cniserver.New(cniserver.Config{Bridge: "br-int", MTU: 1450, TxChecksumOff: true,
		HostNetNSPath: "/var/run/netns/" + ovs.NetNS, Logger: log, Observer: a}, db, pipe, alloc)
	sock := filepath.Join(t.TempDir(), "cni.sock")
	cniCtx, stopCNI := context.WithCancel(ctx)
	cniDone := make(chan error, 1)
	go func() { cniDone <- srv.Serve(cniCtx, sock) }()
	defer func() {
		stopCNI()
		if err := <-cniDone; err != nil {
			t.Errorf("CNI server: %v", err)
		}
	}()
	a.SetCNIServer(srv, sock)

	// The CNI server answers but is not ready: alive, not ready, and the
	// STATUS /healthz sent is counted with its error code.
	waitStatus(t, base+"/healthz", 200, 10*time.Second)
	if code, body := status(t, base+"/readyz"); code != 503 || !strings.Contains(body, "[-]cni-server failed") ||
		!strings.Contains(body, "[+]openflow ok") {
		t.Fatalf("/readyz before SetReady: %d\n%s", code, body)
	}
	m0 := scrape(t, base)
	if got := get(m0, "weir_agent_cni_request_errors_total", "command", "STATUS", "code", "50"); got < 1 {
		t.Errorf("STATUS errors with code 50 = %v, want >= 1 (the liveness check's STATUS while not ready)", got)
	}
	srv.SetReady(true)
	if code, body := status(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz after SetReady: %d\n%s", code, body)
	}

	m1 := scrape(t, base)
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"weir_agent_ovsdb_transactions_total", nil},
		{"weir_agent_ovsdb_transaction_duration_seconds", nil},
		{"weir_agent_openflow_requests_total", []string{"op", "bundle"}},
		{"weir_agent_openflow_flow_mods_total", nil},
		{"weir_agent_openflow_flows", []string{"table", "Classifier"}},
	} {
		if got := get(m1, c.name, c.labels...); got <= 0 {
			t.Errorf("after start-up: %s%v = %v, want > 0", c.name, c.labels, got)
		}
	}
	if got := get(m1, "weir_agent_local_pods"); got != 0 {
		t.Errorf("local pods before ADD = %v, want 0", got)
	}

	// CNI requests through the real gRPC socket.
	conn, err := grpcClient(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cni := cniv1.NewCniClient(conn)
	podNS := "weir-metrics-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	if out, err := exec.Command("ip", "netns", "add", podNS).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer func() { _ = exec.Command("ip", "netns", "delete", podNS).Run() }()
	args := &cniv1.CniCmdArgs{ContainerId: "cmetrics1", Ifname: "eth0", Netns: "/var/run/netns/" + podNS,
		Args: "K8S_POD_NAMESPACE=demo;K8S_POD_NAME=client", NetworkConfiguration: []byte(netConf)}
	addResp, err := cni.CmdAdd(ctx, &cniv1.CniCmdRequest{CniArgs: args})
	if err != nil || addResp.GetError() != nil {
		t.Fatalf("ADD: %v %v", err, addResp.GetError())
	}
	// CHECK must be given the ADD's result as prevResult (CNI spec).
	checkArgs := &cniv1.CniCmdArgs{ContainerId: args.ContainerId, Ifname: args.Ifname, Netns: args.Netns, Args: args.Args,
		NetworkConfiguration: []byte(`{"cniVersion":"1.0.0","name":"weir","type":"weir","prevResult":` + string(addResp.GetCniResult()) + `}`)}
	bad := &cniv1.CniCmdArgs{ContainerId: "cmetrics2", Ifname: "eth0", Netns: "/var/run/netns/" + podNS,
		NetworkConfiguration: []byte(`{"cniVersion":"9.9.9","name":"weir","type":"weir"}`)}
	if e := cniCall(t, ctx, cni, "ADD", bad); e.GetCode() != cniv1.CodeIncompatibleVersion {
		t.Fatalf("ADD with a bad version: %v, want code %d", e, cniv1.CodeIncompatibleVersion)
	}
	if e := cniCall(t, ctx, cni, "CHECK", checkArgs); e != nil {
		t.Fatalf("CHECK: %v", e)
	}
	m2 := scrape(t, base)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"weir_agent_cni_requests_total", []string{"command", "ADD"}, 2},
		{"weir_agent_cni_requests_total", []string{"command", "CHECK"}, 1},
		{"weir_agent_cni_request_errors_total", []string{"command", "ADD", "code", "1"}, 1},
		{"weir_agent_cni_request_duration_seconds", []string{"command", "ADD"}, 2},
		{"weir_agent_local_pods", nil, 1},
	} {
		if got := get(m2, c.name, c.labels...); got != c.want {
			t.Errorf("after ADD: %s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"weir_agent_ovsdb_transactions_total", nil},
		{"weir_agent_openflow_flow_mods_total", nil},
		{"weir_agent_openflow_requests_total", []string{"op", "bundle"}},
	} {
		if before, after := get(m1, c.name, c.labels...), get(m2, c.name, c.labels...); after <= before {
			t.Errorf("ADD did not move %s%v: %v -> %v", c.name, c.labels, before, after)
		}
	}
	if before, after := get(m1, "weir_agent_openflow_flows", "table", "SpoofGuard"),
		get(m2, "weir_agent_openflow_flows", "table", "SpoofGuard"); after <= before {
		t.Errorf("flows in SpoofGuard did not grow with the pod: %v -> %v", before, after)
	}

	// Policy: the pod is egress-isolated with one rule allowing
	// 198.51.100.1. Its pings there count under the rule; pings to
	// 192.0.2.1 are dropped by the isolation and count as denied.
	ofport, ok := srv.Interfaces().PodOFPort("demo", "client")
	if !ok {
		t.Fatal("no OpenFlow port for the pod")
	}
	podIP, _ := alloc.Lookup("cmetrics1/eth0")
	self := []pipeline.LocalPod{{IP: podIP, OFPort: ofport}}
	_, allowed, _ := net.ParseCIDR("198.51.100.1/32")
	if err := pipe.ApplyPolicy(ctx, pipeline.PolicyChange{
		Upsert: []pipeline.PolicyRule{{ID: 1, Name: "demo/allow-web/egress/0", Direction: pipeline.Egress, Pods: self,
			Peers: []*net.IPNet{allowed}}},
		Isolation: &pipeline.Isolation{Egress: self},
	}); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"198.51.100.1", "192.0.2.1"} {
		// No answer is expected: nothing lives there.
		_ = exec.Command("ip", "netns", "exec", podNS, "ping", "-c", "3", "-i", "0.2", "-W", "1", dst).Run()
	}
	m3 := scrape(t, base)
	if got := get(m3, "weir_agent_policy_rule_packets_total", "rule", "demo/allow-web/egress/0"); got < 1 {
		t.Errorf("packets allowed by the rule = %v, want >= 1", got)
	}
	if got := get(m3, "weir_agent_policy_denied_packets_total", "direction", "egress", "pod", "demo/client"); got < 3 {
		t.Errorf("egress packets denied for demo/client = %v, want >= 3", got)
	}
	t.Logf("policy counters: allowed by rule %v, denied egress %v; flows per table %v",
		get(m3, "weir_agent_policy_rule_packets_total", "rule", "demo/allow-web/egress/0"),
		get(m3, "weir_agent_policy_denied_packets_total", "direction", "egress", "pod", "demo/client"), flowsPerTable(m3))
	// The policy and isolation counters were read from the switch (not
	// before: with no rule and no isolated pod there is nothing to read).
	if got := get(m3, "weir_agent_openflow_requests_total", "op", "flow_stats"); got <= 0 {
		t.Errorf("weir_agent_openflow_requests_total[op flow_stats] = %v after a scrape with policy, want > 0", got)
	}
	if got := get(m3, "weir_agent_metrics_source_errors", "source", "policy_denied_packets"); got != 0 {
		t.Errorf("reading isolation drops failed during the scrape")
	}

	// ovs-vswitchd restarts: /readyz fails while OpenFlow is down, then
	// recovers; the reconnect is counted.
	ovs.StopVswitchd(t)
	down := waitStatus(t, base+"/readyz", 503, 10*time.Second)
	if code, body := status(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz while ovs-vswitchd is down: %d\n%s", code, body)
	}
	ovs.StartVswitchd(t)
	up := waitStatus(t, base+"/readyz", 200, 30*time.Second)
	t.Logf("/readyz 503 %v after vswitchd stopped, 200 again %v after it started", down.Round(time.Millisecond), up.Round(time.Millisecond))
	m4 := scrape(t, base)
	if got := get(m4, "weir_agent_openflow_reconnects_total"); got != 1 {
		t.Errorf("reconnects = %v, want 1", got)
	}

	if e := cniCall(t, ctx, cni, "DEL", args); e != nil {
		t.Fatalf("DEL: %v", e)
	}
	m5 := scrape(t, base)
	if got := get(m5, "weir_agent_local_pods"); got != 0 {
		t.Errorf("local pods after DEL = %v, want 0", got)
	}
	if got := get(m5, "weir_agent_cni_requests_total", "command", "DEL"); got != 1 {
		t.Errorf("DEL requests = %v, want 1", got)
	}
}

// flowsPerTable renders weir_agent_openflow_flows as "table=n ...".
func flowsPerTable(mfs map[string]*dto.MetricFamily) string {
	var parts []string
	for _, m := range mfs["weir_agent_openflow_flows"].GetMetric() {
		parts = append(parts, fmt.Sprintf("%s=%v", m.GetLabel()[0].GetValue(), m.GetGauge().GetValue()))
	}
	return strings.Join(parts, " ")
}
