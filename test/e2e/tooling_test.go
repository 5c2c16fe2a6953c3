package e2e

// Tooling: the agent's gRPC tooling API (through grpcurl and weirctl), its
// Prometheus metrics endpoint, and how both treat bad input and non-root
// users. These tests run after the others (file order) on the suite's
// cluster.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weirnet/weir/pkg/localcluster"
)

// grpcurlVersion is the grpcurl the test builds (and caches) to talk to the
// agent through server reflection alone.
const grpcurlVersion = "v1.9.3"

// toolsCache keeps tools built from the module proxy across runs.
const toolsCache = "/var/cache/weir/tools"

// agentSocket is the tooling API socket inside a node's mount namespace.
const agentSocket = "/var/run/weir/agent.sock"

// metricsPort is the agent's Prometheus endpoint on the node IP.
const metricsPort = 9495

// weirctlResult is one weirctl run.
type weirctlResult struct {
	stdout, stderr string
	code           int
}

func (r weirctlResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// weirctlPath is the weirctl binary `make build` put next to test-server.
func (s *suite) weirctlPath() string { return filepath.Join(filepath.Dir(s.bin), "weirctl") }

// weirctl runs weirctl on the host against node's agent (--node through
// the cluster directory).
func (s *suite) weirctl(ctx context.Context, node string, args ...string) weirctlResult {
	cmd := exec.CommandContext(ctx, s.weirctlPath(), append([]string{"--local-dir", s.cfg.Dir, "--node", node}, args...)...)
	return runWeirctl(cmd)
}

func runWeirctl(cmd *exec.Cmd) weirctlResult {
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := weirctlResult{stdout: out.String(), stderr: errOut.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		r.code, r.stderr = -1, r.stderr+err.Error()
	}
	return r
}

// weirctlJSON runs weirctl -o json and decodes its answer into v.
func (s *suite) weirctlJSON(ctx context.Context, node string, v any, args ...string) error {
	r := s.weirctl(ctx, node, append([]string{"-o", "json"}, args...)...)
	if r.code != 0 {
		return fmt.Errorf("weirctl %s: %s", strings.Join(args, " "), r)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		return fmt.Errorf("weirctl %s: decoding %q: %w", strings.Join(args, " "), r.stdout, err)
	}
	return nil
}

// buildGrpcurl returns a grpcurl binary of grpcurlVersion, built once from
// the module proxy into toolsCache. It is built with `go install pkg@version`
// in a temporary directory: grpcurl's own go.mod decides its dependencies and
// Weir's go.mod is not involved.
func buildGrpcurl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(toolsCache, "grpcurl-"+grpcurlVersion)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	tmp := t.TempDir()
	env := append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=0", "GOBIN="+tmp, "GO111MODULE=on")
	list := exec.Command("go", "list", "-m", "-versions", "github.com/fullstorydev/grpcurl")
	list.Dir, list.Env = tmp, env
	out, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -m -versions github.com/fullstorydev/grpcurl: %v: %s", err, out)
	}
	if !slices.Contains(strings.Fields(string(out)), grpcurlVersion) {
		t.Fatalf("grpcurl %s is not served by the module proxy; served: %s", grpcurlVersion, out)
	}
	start := time.Now()
	install := exec.Command("go", "install", "github.com/fullstorydev/grpcurl/cmd/grpcurl@"+grpcurlVersion)
	install.Dir, install.Env = tmp, env
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("building grpcurl %s: %v: %s", grpcurlVersion, err, out)
	}
	t.Logf("built grpcurl %s in %.1fs", grpcurlVersion, time.Since(start).Seconds())
	if err := os.MkdirAll(toolsCache, 0o755); err != nil {
		t.Fatal(err)
	}
	// Copy, then rename: a concurrent run never sees half a binary.
	part := bin + fmt.Sprintf(".%d.part", os.Getpid())
	if err := copyExecutable(filepath.Join(tmp, "grpcurl"), part); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(part, bin); err != nil {
		os.Remove(part)
		t.Fatal(err)
	}
	return bin
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	return out.Close()
}

// TestToolingGrpcurl talks to node 1's agent with a generic gRPC client
// that knows nothing of Weir: everything it learns comes from server
// reflection on the unix socket inside the node.
func TestToolingGrpcurl(t *testing.T) {
	s := need(t)
	grpcurl := buildGrpcurl(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node := s.cfg.NodeName(1)
	// grpcurl v1.9.3's -unix flag still dials TCP; a unix:// target works.
	base := []string{grpcurl, "-plaintext", "unix://" + agentSocket}

	out, err := s.nodeExec(ctx, node, append(base, "list")...)
	if err != nil {
		t.Fatal(err)
	}
	services := strings.Fields(out)
	if !slices.Contains(services, "weir.agent.v1.AgentService") {
		t.Fatalf("grpcurl list: %q lacks weir.agent.v1.AgentService", services)
	}
	out, err = s.nodeExec(ctx, node, append(base, "list", "weir.agent.v1.AgentService")...)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"AgentInfo", "ListPodInterfaces", "ListFlows", "Trace", "ListNetworkPolicies", "WatchPolicyVerdicts"} {
		if !strings.Contains(out, "weir.agent.v1.AgentService."+m) {
			t.Errorf("methods listed by reflection lack %s:\n%s", m, out)
		}
	}
	out, err = s.nodeExec(ctx, node, append(base, "weir.agent.v1.AgentService/AgentInfo")...)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		NodeName string `json:"nodeName"`
		Ready    bool   `json:"ready"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("AgentInfo answer %q: %v", out, err)
	}
	if info.NodeName != node || !info.Ready {
		t.Errorf("AgentInfo through grpcurl: node %q ready %v, want %q ready", info.NodeName, info.Ready, node)
	}
}

// TestToolingWeirctl reads pods and flows and traces a packet across nodes.
func TestToolingWeirctl(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node1, node2 := s.cfg.NodeName(1), s.cfg.NodeName(2)
	a1, a2, b1 := s.pods["a1"], s.pods["a2"], s.pods["b1"]

	t.Run("info on the node's default socket", func(t *testing.T) {
		// Inside the node, no flags: /var/run/weir/agent.sock.
		cmd, err := localcluster.NodeExec(ctx, s.cfg, node1, s.weirctlPath(), "get", "info")
		if err != nil {
			t.Fatal(err)
		}
		r := runWeirctl(cmd)
		if r.code != 0 || !strings.Contains(r.stdout, "Node:") || !strings.Contains(r.stdout, node1) || !hasRow(r.stdout, "Ready:", "yes") {
			t.Errorf("weirctl get info in %s: %s", node1, r)
		}
		t.Logf("weirctl get info (in %s):\n%s", node1, r.stdout)
	})

	t.Run("get pods", func(t *testing.T) {
		r := s.weirctl(ctx, node1, "get", "pods", "-n", e2eNS)
		if r.code != 0 {
			t.Fatal(r)
		}
		for _, p := range []corev1.Pod{a1, a2} {
			// The IPS column: every address of the pod, as status.podIPs lists them.
			var ips []string
			for _, pip := range p.Status.PodIPs {
				ips = append(ips, pip.IP)
			}
			if !hasRow(r.stdout, e2eNS, p.Name, strings.Join(ips, ",")) {
				t.Errorf("get pods on %s lacks %s/%s %s:\n%s", node1, e2eNS, p.Name, strings.Join(ips, ","), r.stdout)
			}
		}
		if strings.Contains(r.stdout, " b1 ") {
			t.Errorf("get pods on %s lists b1 of %s:\n%s", node1, node2, r.stdout)
		}
		t.Logf("weirctl get pods -n %s (on %s):\n%s", e2eNS, node1, r.stdout)
	})

	t.Run("get flows of a pod", func(t *testing.T) {
		r := s.weirctl(ctx, node1, "get", "flows", "--pod", e2eNS+"/a1")
		if r.code != 0 {
			t.Fatal(r)
		}
		// The pod's flows by table name: its spoof guard and where it is
		// forwarded to; every one mentions its IP, MAC or port.
		for _, table := range []string{"SpoofGuard", "L3Forwarding"} {
			if !hasRow(r.stdout, table) {
				t.Errorf("flows of a1 lack table %s:\n%s", table, r.stdout)
			}
		}
		if !strings.Contains(r.stdout, a1.Status.PodIP) || strings.Contains(r.stdout, a2.Status.PodIP) {
			t.Errorf("flows of a1 (%s) should mention its IP and not a2's (%s):\n%s", a1.Status.PodIP, a2.Status.PodIP, r.stdout)
		}
		t.Logf("weirctl get flows --pod %s/a1:\n%s", e2eNS, r.stdout)
	})

	t.Run("trace across nodes", func(t *testing.T) {
		args := []string{"trace", "--from", e2eNS + "/a1", "--to", b1.Status.PodIP, "--proto", "tcp", "--port", "80"}
		var tr traceJSON
		if err := s.weirctlJSON(ctx, node1, &tr, args...); err != nil {
			t.Fatal(err)
		}
		if tr.Verdict.Kind != "TUNNEL" || tr.Verdict.Node != node2 {
			t.Errorf("trace a1 -> b1: verdict %+v, want TUNNEL to %s", tr.Verdict, node2)
		}
		r := s.weirctl(ctx, node1, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "TUNNEL to node "+node2) {
			t.Errorf("weirctl trace: want 'TUNNEL to node %s': %s", node2, r)
		}
		t.Logf("weirctl %s:\n%s", strings.Join(args, " "), r.stdout)
	})
}

// traceJSON is the part of a TraceResponse the tests read.
type traceJSON struct {
	Verdict struct {
		Kind              string   `json:"kind"`
		Node              string   `json:"node"`
		DropReason        string   `json:"dropReason"`
		IsolatedPod       podJSON  `json:"isolatedPod"`
		IsolatingPolicies []string `json:"isolatingPolicies"`
	} `json:"verdict"`
}

type podJSON struct{ Namespace, Name string }

// hasRow reports whether a line of a table holds all cells as whole words.
func hasRow(out string, cells ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		ok := true
		for _, c := range cells {
			if !slices.Contains(fields, c) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// TestToolingPolicyDrop isolates b1 with a default-deny ingress policy and
// checks what the tooling says: the trace on b1's node from a1's IP is a
// drop naming the isolated pod and the policy (also while it has no rule), and
// `watch drops` reports the dropped probe.
func TestToolingPolicyDrop(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	node2 := s.cfg.NodeName(2)
	a1, b1 := s.pods["a1"], s.pods["b1"]
	const name = "tooling-deny-b1"
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: e2eNS, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b1"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
	nps := s.client.NetworkingV1().NetworkPolicies(e2eNS)
	if _, err := nps.Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := nps.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting NetworkPolicy %s: %v", name, err)
		}
		// Removed: the same trace is delivered to b1 again.
		if err := eventually(30*time.Second, func() error {
			var tr traceJSON
			if err := s.weirctlJSON(ctx, node2, &tr, "trace", "--from", a1.Status.PodIP, "--to", e2eNS+"/b1", "--proto", "tcp", "--port", "80"); err != nil {
				return err
			}
			if tr.Verdict.Kind != "OUTPUT" {
				return fmt.Errorf("verdict %+v after the policy was deleted, want OUTPUT", tr.Verdict)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		s.expectAnswer(t, e2eNS+"/a1", "tcp", net.JoinHostPort(b1.Status.PodIP, "80"), "b1")
	}()

	trace := []string{"trace", "--from", a1.Status.PodIP, "--to", e2eNS + "/b1", "--proto", "tcp", "--port", "80"}
	var tr traceJSON
	if err := eventually(30*time.Second, func() error {
		tr = traceJSON{}
		if err := s.weirctlJSON(ctx, node2, &tr, trace...); err != nil {
			return err
		}
		if tr.Verdict.Kind != "DROP" {
			return fmt.Errorf("trace %s -> b1 on %s: verdict %+v, want DROP", a1.Status.PodIP, node2, tr.Verdict)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if tr.Verdict.IsolatedPod != (podJSON{e2eNS, "b1"}) {
		t.Errorf("drop names isolated pod %+v, want %s/b1 (reason %q)", tr.Verdict.IsolatedPod, e2eNS, tr.Verdict.DropReason)
	}
	// A pure default deny has no rules, yet the trace names it.
	if !slices.Equal(tr.Verdict.IsolatingPolicies, []string{e2eNS + "/" + name}) {
		t.Errorf("drop names isolating policies %v, want [%s/%s] (reason %q)", tr.Verdict.IsolatingPolicies, e2eNS, name, tr.Verdict.DropReason)
	}
	t.Logf("default deny: verdict %+v", tr.Verdict)

	// `watch drops` sees the probes the isolation drops.
	t.Run("watch drops", func(t *testing.T) {
		cmd := exec.Command(s.weirctlPath(), "--local-dir", s.cfg.Dir, "--node", node2, "-o", "json", "watch", "drops", "--interval", "200ms")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := false
		defer func() {
			if !exited {
				cmd.Process.Kill()
				cmd.Wait()
			}
		}()
		events := make(chan string, 100)
		go func() {
			defer close(events)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				events <- sc.Text()
			}
		}()
		// Let the agent take its baseline sample, then probe (dropped).
		time.Sleep(time.Second)
		if got, err := s.probe(ctx, e2eNS+"/a1", "tcp", net.JoinHostPort(b1.Status.PodIP, "80")); err == nil {
			t.Errorf("a1 -> b1 answered %q through a default deny", got)
		}
		var seen string
		timeout := time.After(15 * time.Second)
	wait:
		for {
			select {
			case line, ok := <-events:
				if !ok {
					break wait
				}
				var ev struct {
					Kind       string `json:"kind"`
					NewPackets string `json:"newPackets"`
					Pod        struct {
						Pod podJSON `json:"pod"`
						IP  string  `json:"ip"`
					} `json:"pod"`
				}
				if err := json.Unmarshal([]byte(line), &ev); err != nil {
					t.Errorf("watch printed %q: %v", line, err)
					continue
				}
				if ev.Kind == "DROPPED" && ev.Pod.IP == b1.Status.PodIP {
					seen = line
					break wait
				}
			case <-timeout:
				break wait
			}
		}
		// Ctrl-C ends the watch with exit 0.
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		exited = true
		if seen == "" {
			t.Errorf("watch drops on %s reported no drop for b1 within 15s (stderr %q)", node2, stderr.String())
		} else {
			t.Logf("watch drops: %s", seen)
		}
		if err != nil {
			t.Errorf("weirctl watch drops after SIGINT: %v (want exit 0); stderr %q", err, stderr.String())
		}
	})

	// With an allow rule (for a documentation-only network, so a1 stays
	// denied) the policy has a realized rule and the drop names it.
	t.Run("drop names the policy", func(t *testing.T) {
		cur, err := nps.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tcp := corev1.ProtocolTCP
		port := intstr.FromInt32(9)
		cur.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24"}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
		}}
		if _, err := nps.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := eventually(30*time.Second, func() error {
			tr = traceJSON{}
			if err := s.weirctlJSON(ctx, node2, &tr, trace...); err != nil {
				return err
			}
			if tr.Verdict.Kind != "DROP" || !slices.Contains(tr.Verdict.IsolatingPolicies, e2eNS+"/"+name) {
				return fmt.Errorf("verdict %+v, want DROP naming %s/%s", tr.Verdict, e2eNS, name)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		r := s.weirctl(ctx, node2, trace...)
		if r.code != 0 || !strings.Contains(r.stdout, "DROP") || !strings.Contains(r.stdout, e2eNS+"/"+name) {
			t.Errorf("weirctl trace should show DROP and %s/%s: %s", e2eNS, name, r)
		}
		t.Logf("weirctl %s (on %s):\n%s", strings.Join(trace, " "), node2, r.stdout)
		r = s.weirctl(ctx, node2, "get", "policies")
		if r.code != 0 || !strings.Contains(r.stdout, e2eNS+"/"+name+"/ingress/0") || !hasRow(r.stdout, e2eNS+"/b1", b1.Status.PodIP, "Ingress") {
			t.Errorf("get policies should list the rule and the isolated b1: %s", r)
		}
		t.Logf("weirctl get policies (on %s):\n%s", node2, r.stdout)
	})
}

// scrapeMetrics fetches path from the agent's metrics endpoint on node idx,
// connecting from inside the node's network namespace.
func (s *suite) scrapeMetrics(idx int, path string) (int, []byte, error) {
	addr := net.JoinHostPort(s.cfg.PrimaryNodeIP(idx), fmt.Sprint(metricsPort))
	var conn net.Conn
	// The socket is created on the locked thread inside the netns and keeps
	// that namespace afterwards, whichever thread uses it.
	err := ns.WithNetNSPath("/run/netns/"+s.cfg.NodeName(idx), func(ns.NetNS) error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("connecting to %s in %s: %w", addr, s.cfg.NodeName(idx), err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Close = true
	if err := req.Write(conn); err != nil {
		return 0, nil, fmt.Errorf("GET %s: %w", req.URL, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return 0, nil, fmt.Errorf("GET %s: %w", req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// cniAdds returns weir_agent_cni_requests_total{command="ADD"} of node idx.
func (s *suite) cniAdds(idx int) (float64, error) {
	code, body, err := s.scrapeMetrics(idx, "/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics: HTTP %d: %s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return 0, fmt.Errorf("parsing /metrics: %w", err)
	}
	const metric = "weir_agent_cni_requests_total"
	mf, ok := families[metric]
	if !ok {
		return 0, fmt.Errorf("/metrics has no %s", metric)
	}
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "command" && l.GetValue() == "ADD" {
				return m.GetCounter().GetValue(), nil
			}
		}
	}
	return 0, fmt.Errorf("%s has no command=\"ADD\" series", metric)
}

// TestToolingMetrics scrapes node 1's agent from inside the node and checks
// that creating a pod counts a CNI ADD.
func TestToolingMetrics(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, path := range []string{"/healthz", "/readyz"} {
		code, body, err := s.scrapeMetrics(1, path)
		if err != nil || code != http.StatusOK {
			t.Errorf("GET %s: %d %q %v", path, code, body, err)
		}
	}
	before, err := s.cniAdds(1)
	if err != nil {
		t.Fatal(err)
	}
	const name = "tooling-metrics"
	p := localcluster.TestServerPod(e2eNS, name, s.cfg.NodeName(1), map[string]string{"app": "tooling-metrics"})
	if _, err := s.client.CoreV1().Pods(e2eNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		zero := int64(0)
		if err := s.client.CoreV1().Pods(e2eNS).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Errorf("deleting pod %s: %v", name, err)
		}
	}()
	if _, err := localcluster.WaitPodsRunning(ctx, s.client, e2eNS, "app=tooling-metrics", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	after, err := s.cniAdds(1)
	if err != nil {
		t.Fatal(err)
	}
	if after < before+1 {
		t.Errorf("weir_agent_cni_requests_total{command=\"ADD\"}: %v before creating a pod, %v after; want at least one more", before, after)
	}
	t.Logf("CNI ADDs on %s: %v -> %v", s.cfg.NodeName(1), before, after)
}

// TestToolingBadInput checks the answers to bad requests and that the
// socket is root-only.
func TestToolingBadInput(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node := s.cfg.NodeName(1)
	tests := []struct {
		name string
		args []string
		want []string // in stderr
	}{
		{"unknown pod", []string{"get", "pods", e2eNS + "/nope"}, []string{"weirctl: NotFound:", "nope"}},
		{"flows of an unknown pod", []string{"get", "flows", "--pod", e2eNS + "/nope"}, []string{"weirctl: NotFound:", "nope"}},
		{"trace from an unknown pod", []string{"trace", "--from", e2eNS + "/nope", "--to", s.pods["a2"].Status.PodIP}, []string{"weirctl: NotFound:", "nope"}},
		{"malformed IP", []string{"trace", "--from", "10.244.0.300", "--to", e2eNS + "/a1"}, []string{"weirctl: InvalidArgument:", "10.244.0.300"}},
		{"unknown table", []string{"get", "flows", "--table", "NoSuchTable"}, []string{"weirctl: InvalidArgument:", "NoSuchTable"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := s.weirctl(ctx, node, tc.args...)
			if r.code != 1 {
				t.Errorf("exit %d, want 1: %s", r.code, r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q: %s", w, r)
				}
			}
			t.Logf("weirctl %s: %s", strings.Join(tc.args, " "), strings.TrimSpace(r.stderr))
		})
	}

	t.Run("socket is root-only", func(t *testing.T) {
		path := filepath.Join(s.cfg.Dir, "nodes", node, "run-weir", "agent.sock")
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want a socket with 0600", path, fi.Mode())
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != 0 {
			t.Errorf("%s: not owned by root: %+v", path, fi.Sys())
		}
		// weirctl as nobody, in the node's namespaces, on the default
		// socket. The binary is copied where nobody can run it.
		dir, err := os.MkdirTemp("", "weirctl-nobody-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, "weirctl")
		if err := copyExecutable(s.weirctlPath(), bin); err != nil {
			t.Fatal(err)
		}
		cmd, err := localcluster.NodeExec(ctx, s.cfg, node, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "get", "info")
		if err != nil {
			t.Fatal(err)
		}
		r := runWeirctl(cmd)
		if r.code != 3 || !strings.Contains(r.stderr, "permission denied") {
			t.Errorf("weirctl as uid 65534: want exit 3 and 'permission denied': %s", r)
		}
		t.Logf("as nobody: %s", strings.TrimSpace(r.stderr))
		// A plain child process with the credentials of nobody, on the
		// host-side path of the same socket.
		nobody := exec.CommandContext(ctx, bin, "--socket", path, "get", "info")
		nobody.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		r = runWeirctl(nobody)
		if r.code != 3 || !strings.Contains(r.stderr, "permission denied") {
			t.Errorf("weirctl with syscall.Credential 65534: want exit 3 and 'permission denied': %s", r)
		}
	})
}
