// Package integration tests Weir's single-node CNI path end to end: the
// real ovs-agent process in a simulated node (a network namespace with a
// private OVS), and the real `weir` CNI binary driven through libcni exactly
// as a container runtime drives it.
package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testroot"
)

// binDir holds the ovs-agent and weir binaries built by TestMain.
var binDir string

func TestMain(m *testing.M) {
	if msg, _ := testroot.Missing("the integration tests run OVS in network namespaces"); msg != "" {
		fmt.Println("integration:", msg)
		os.Exit(m.Run()) // every test skips (or fails) itself through ovstest.Start
	}
	dir, err := os.MkdirTemp("", "weir-bin-")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	binDir = dir
	// tuning is the reference plugin chained after weir in the spec tests
	// (cnispec_test.go), built from the plugins module go.mod pins.
	for out, pkg := range map[string]string{"ovs-agent": "../../cmd/ovs-agent", "weir": "../../cmd/cni-client",
		"tuning": "github.com/containernetworking/plugins/plugins/meta/tuning"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Printf("building %s: %v\n%s", pkg, err, b)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is a simulated node: a private OVS and the agent, both in one netns.
type node struct {
	ovs      *ovstest.Instance
	dir      string
	sock     string
	podCIDR  string
	podCIDR6 string // dual-stack when set
	agent    *exec.Cmd
	agentLog string
	cni      *libcni.CNIConfig
}

func newNode(t testing.TB, podCIDR string) *node {
	t.Helper()
	return newDualStackNode(t, podCIDR, "")
}

// newDualStackNode is newNode with an IPv6 pod CIDR too (none if podCIDR6
// is empty).
func newDualStackNode(t testing.TB, podCIDR, podCIDR6 string) *node {
	t.Helper()
	ovs := ovstest.Start(t)
	dir := t.TempDir()
	n := &node{ovs: ovs, dir: dir, sock: filepath.Join(dir, "cni.sock"), podCIDR: podCIDR, podCIDR6: podCIDR6,
		cni: libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(dir, "cache"), nil)}
	n.startAgent(t)
	t.Cleanup(func() {
		n.stopAgent(t, syscall.SIGTERM)
		// WEIR_KEEP_AGENT_LOG=path keeps a copy of the agent's log for
		// debugging (the test's directory is removed).
		if keep := os.Getenv("WEIR_KEEP_AGENT_LOG"); keep != "" {
			if b, err := os.ReadFile(n.agentLog); err == nil {
				_ = os.WriteFile(keep, b, 0o600)
			}
		}
		if t.Failed() {
			if b, err := os.ReadFile(n.agentLog); err == nil {
				t.Logf("agent log:\n%s", tail(string(b), 60))
			}
		}
	})
	return n
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startAgent runs ovs-agent inside the node's netns and waits for STATUS.
func (n *node) startAgent(t testing.TB) {
	t.Helper()
	n.agentLog = filepath.Join(n.dir, fmt.Sprintf("agent-%d.log", time.Now().UnixNano()))
	logf, err := os.Create(n.agentLog)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", n.ovs.NetNS, filepath.Join(binDir, "ovs-agent"),
		"--pod-cidr", n.podCIDR, "--datapath-type", "netdev", "--bridge", "br-int",
		"--ovs-rundir", n.ovs.Dir, "--ovsdb", n.ovs.DBSocket(),
		"--cni-socket", n.sock, "--state-dir", filepath.Join(n.dir, "state"), "-v=2")
	if n.podCIDR6 != "" {
		cmd.Args = append(cmd.Args, "--pod-cidr-v6", n.podCIDR6)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.agent = cmd
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := n.cni.GetStatusNetworkList(context.Background(), n.confList(t, "1.1.0"))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(n.agentLog)
			t.Fatalf("agent not ready after 30s: %v\n%s", err, tail(string(b), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (n *node) stopAgent(t testing.TB, sig syscall.Signal) {
	if n.agent == nil || n.agent.Process == nil {
		return
	}
	_ = n.agent.Process.Signal(sig)
	done := make(chan error, 1)
	go func() { done <- n.agent.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = n.agent.Process.Kill()
		<-done
		t.Errorf("agent did not stop within 10s of %v", sig)
	}
	n.agent = nil
}

func (n *node) confBytes(version string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"weir","plugins":[{"type":"weir","cniSocket":%q,"dns":{"nameservers":["10.96.0.10"]}}]}`,
		version, n.sock))
}

func (n *node) confList(t testing.TB, version string) *libcni.NetworkConfigList {
	t.Helper()
	l, err := libcni.ConfListFromBytes(n.confBytes(version))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// pod is a sandbox netns with a container ID.
type pod struct {
	id, ns, path string
	ip           string
	result       *current.Result
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newSandbox creates a pod network namespace, deleted at cleanup.
func newSandbox(t testing.TB) *pod {
	t.Helper()
	p := &pod{id: "ctr-" + randHex(8), ns: "weir-pod-" + randHex(4)}
	if out, err := exec.Command("ip", "netns", "add", p.ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	p.path = "/var/run/netns/" + p.ns
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", p.ns).Run() })
	return p
}

func (n *node) rt(p *pod) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.id, NetNS: p.path, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", p.id}}}
}

func (n *node) add(t testing.TB, p *pod) error {
	t.Helper()
	res, err := n.cni.AddNetworkList(context.Background(), n.confList(t, "1.0.0"), n.rt(p))
	if err != nil {
		return err
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	p.result = r
	p.ip = r.IPs[0].Address.IP.String()
	return nil
}

func (n *node) mustAdd(t testing.TB) *pod {
	t.Helper()
	p := newSandbox(t)
	if err := n.add(t, p); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	return p
}

func (n *node) del(t testing.TB, p *pod) error {
	return n.cni.DelNetworkList(context.Background(), n.confList(t, "1.0.0"), n.rt(p))
}

func (n *node) check(t testing.TB, p *pod) error {
	return n.cni.CheckNetworkList(context.Background(), n.confList(t, "1.0.0"), n.rt(p))
}

func inNS(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}

func ping(ns, dst string) error {
	out, err := inNS(ns, "ping", "-c", "2", "-W", "1", "-i", "0.2", dst)
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v: %s", dst, ns, err, out)
	}
	return nil
}

// ports lists the pod ports on the node's bridge.
func (n *node) podPorts(t testing.TB) []string {
	t.Helper()
	out := n.ovs.MustVsctl(t, "--format=csv", "--no-headings", "--columns=name,external_ids", "find", "Port", "external_ids:weir-type=pod")
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			names = append(names, strings.SplitN(l, ",", 2)[0])
		}
	}
	return names
}

func (n *node) podFlowCount(t testing.TB) int {
	t.Helper()
	// Category 2 (pod) cookies: 0x??02000000000000/0x00ff000000000000.
	out := n.ovs.MustOfctl(t, "-O", "OpenFlow15", "--no-stats", "dump-flows", "br-int", "cookie=0x0002000000000000/0x00ff000000000000")
	return strings.Count(out, "cookie=")
}

func (n *node) hostVeths(t testing.TB) []string {
	t.Helper()
	out, err := n.ovs.Exec("", "ip", "-o", "link", "show", "type", "veth")
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, out)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	return names
}

func (n *node) allocatedIPs(t testing.TB) map[string]bool {
	t.Helper()
	ips := map[string]bool{}
	for _, name := range []string{"ipam.json", "ipam-v6.json"} {
		b, err := os.ReadFile(filepath.Join(n.dir, "state", name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Allocations map[string]string `json:"allocations"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("IPAM state %s: %v", name, err)
		}
		for _, ip := range doc.Allocations {
			ips[ip] = true
		}
	}
	return ips
}

// cniCode extracts the CNI error code libcni returns.
func cniCode(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// TestPodNetworking: pods set up through the real CNI binary reach each
// other and the gateway, TCP works, spoofing is dropped, CHECK/ADD/DEL
// behave as the spec asks.
func TestPodNetworking(t *testing.T) {
	n := newNode(t, "10.20.0.0/24")
	a, b, c := n.mustAdd(t), n.mustAdd(t), n.mustAdd(t)

	if got := a.result.IPs[0].Gateway.String(); got != "10.20.0.1" {
		t.Fatalf("gateway in result %s, want 10.20.0.1", got)
	}
	if len(a.result.DNS.Nameservers) != 1 || a.result.DNS.Nameservers[0] != "10.96.0.10" {
		t.Errorf("DNS not passed through: %+v", a.result.DNS)
	}
	for _, pair := range [][2]*pod{{a, b}, {b, c}, {c, a}} {
		if err := ping(pair[0].ns, pair[1].ip); err != nil {
			t.Error(err)
		}
	}
	if err := ping(a.ns, "10.20.0.1"); err != nil {
		t.Errorf("pod -> gateway: %v", err)
	}
	if out, err := n.ovs.Exec("", "ping", "-c", "2", "-W", "1", "-i", "0.2", b.ip); err != nil {
		t.Errorf("node -> pod: %v: %s", err, out)
	}

	t.Run("tcp", func(t *testing.T) {
		bps := iperf3(t, a.ns, b.ns, b.ip, 2) // waits for the server instead of sleeping 200 ms
		t.Logf("TCP pod -> pod (same node, userspace datapath): %.0f Mbit/s", bps/1e6)
	})

	t.Run("spoofed IP is dropped", func(t *testing.T) {
		if out, err := inNS(c.ns, "ip", "addr", "add", "10.20.0.200/24", "dev", "eth0"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if _, err := inNS(c.ns, "ping", "-c", "2", "-W", "1", "-I", "10.20.0.200", a.ip); err == nil {
			t.Fatal("spoofed source IP got through")
		}
		if _, err := inNS(c.ns, "ping", "-c", "2", "-W", "1", "-I", c.ip, a.ip); err != nil {
			t.Fatalf("honest traffic from the same pod failed: %v", err)
		}
	})

	// The spec: "If an interface of the requested name already exists in
	// the container, the CNI plugin MUST return with an error." The
	// existing attachment is untouched.
	t.Run("repeated ADD fails and changes nothing", func(t *testing.T) {
		err := n.add(t, a)
		if cniCode(err) != 104 || !strings.Contains(err.Error(), "already has interface eth0") {
			t.Fatalf("second ADD: %v (code %d), want code 104", err, cniCode(err))
		}
		if err := ping(a.ns, b.ip); err != nil {
			t.Fatalf("after the refused ADD: %v", err)
		}
	})

	t.Run("CHECK", func(t *testing.T) {
		if err := n.check(t, a); err != nil {
			t.Fatalf("CHECK of a healthy pod: %v", err)
		}
		hostIf := a.result.Interfaces[0].Name
		if out, err := n.ovs.Exec("", "ip", "link", "del", hostIf); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		err := n.check(t, a)
		if err == nil || !strings.Contains(err.Error(), hostIf) {
			t.Fatalf("CHECK after deleting the veth: %v", err)
		}
		t.Logf("CHECK reports: %v", err)
	})

	t.Run("DEL twice", func(t *testing.T) {
		for i := 0; i < 2; i++ {
			if err := n.del(t, a); err != nil {
				t.Fatalf("DEL #%d: %v", i+1, err)
			}
		}
		if n.allocatedIPs(t)[a.ip] {
			t.Fatalf("IP %s still allocated after DEL", a.ip)
		}
		if got := len(n.podPorts(t)); got != 2 {
			t.Fatalf("%d pod ports after deleting one of three", got)
		}
		if got := n.podFlowCount(t); got != 2*6 {
			t.Fatalf("%d pod flows after deleting one of three, want 12", got)
		}
	})

	t.Run("DEL after the netns is gone", func(t *testing.T) {
		if out, err := exec.Command("ip", "netns", "delete", b.ns).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if err := n.del(t, b); err != nil {
			t.Fatalf("DEL with the netns gone: %v", err)
		}
		if got := len(n.podPorts(t)); got != 1 {
			t.Fatalf("%d pod ports left, want 1", got)
		}
	})
}

// TestAgentRestart kills the agent with SIGKILL between ADDs: existing pods
// keep working, the restarted agent restores them, and no IP is reused.
func TestAgentRestart(t *testing.T) {
	n := newNode(t, "10.21.0.0/24")
	a, b := n.mustAdd(t), n.mustAdd(t)
	gone := n.mustAdd(t)

	n.stopAgent(t, syscall.SIGKILL)
	// While the agent is down: pods still talk (the flows stay in OVS),
	// and one pod's sandbox disappears without a DEL.
	if err := ping(a.ns, b.ip); err != nil {
		t.Fatalf("with the agent down: %v", err)
	}
	if out, err := exec.Command("ip", "netns", "delete", gone.ns).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	n.startAgent(t)

	if err := ping(a.ns, b.ip); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if err := n.check(t, a); err != nil {
		t.Fatalf("CHECK after restart: %v", err)
	}
	// The vanished pod's port and IP were cleaned up at start-up.
	if got := len(n.podPorts(t)); got != 2 {
		t.Fatalf("%d pod ports after restart, want 2 (the vanished pod's removed)", got)
	}
	if n.allocatedIPs(t)[gone.ip] {
		t.Fatalf("the vanished pod's IP %s is still allocated", gone.ip)
	}
	if got := n.podFlowCount(t); got != 2*6 {
		t.Fatalf("%d pod flows after restart, want 12", got)
	}
	c := n.mustAdd(t)
	for _, old := range []*pod{a, b} {
		if c.ip == old.ip {
			t.Fatalf("new pod got %s, which pod %s still holds", c.ip, old.id)
		}
	}
	if err := ping(c.ns, a.ip); err != nil {
		t.Fatalf("new pod after restart: %v", err)
	}
	// A runtime that never saw the result of a's ADD (the agent died
	// answering it) retries: the restored attachment makes the ADD fail,
	// and the DEL the runtime sends after a failed ADD frees everything.
	if err := n.add(t, a); cniCode(err) != 104 {
		t.Fatalf("ADD of a restored attachment: %v (code %d), want code 104", err, cniCode(err))
	}
	if err := ping(a.ns, b.ip); err != nil {
		t.Fatalf("the refused ADD broke the pod: %v", err)
	}
	if err := n.del(t, a); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if n.allocatedIPs(t)[a.ip] || len(n.podPorts(t)) != 2 {
		t.Fatalf("after DEL of a restored attachment: IPs %v, ports %v", n.allocatedIPs(t), n.podPorts(t))
	}
}

// TestBadInput: each bad request fails with the right CNI code and a
// readable message, and leaves no port, flow, veth or IP behind.
func TestBadInput(t *testing.T) {
	n := newNode(t, "10.22.0.0/30") // room for the gateway and one pod
	nothingLeft := func(t testing.TB) {
		t.Helper()
		if p := n.podPorts(t); len(p) != 0 {
			t.Errorf("pod ports left: %v", p)
		}
		if c := n.podFlowCount(t); c != 0 {
			t.Errorf("%d pod flows left", c)
		}
		if v := n.hostVeths(t); len(v) != 0 {
			t.Errorf("veths left: %v", v)
		}
		if ips := n.allocatedIPs(t); len(ips) != 0 {
			t.Errorf("IPs left allocated: %v", ips)
		}
	}
	// runRaw runs the binary as a runtime does and returns the code and
	// text of the CNI error it prints, which must carry the request's
	// cniVersion.
	runRaw := func(t testing.TB, env map[string]string, stdin []byte) (uint, string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(binDir, "weir"))
		cmd.Env = []string{"CNI_PATH=" + binDir}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Stdin = strings.NewReader(string(stdin))
		out, err := cmd.Output()
		if err == nil {
			t.Fatalf("expected an error, got success: %s", out)
		}
		var e struct {
			types.Error
			CNIVersion string `json:"cniVersion"`
		}
		if jerr := json.Unmarshal(out, &e); jerr != nil {
			t.Fatalf("plugin output is not a CNI error: %q", out)
		}
		var req struct {
			CNIVersion string `json:"cniVersion"`
		}
		_ = json.Unmarshal(stdin, &req)
		if e.CNIVersion != req.CNIVersion {
			t.Errorf("error JSON %s carries cniVersion %q, the request's is %q", out, e.CNIVersion, req.CNIVersion)
		}
		return e.Code, e.Msg + " " + e.Details
	}
	sb := newSandbox(t)
	conf := func(v string) []byte {
		return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"weir","type":"weir","cniSocket":%q}`, v, n.sock))
	}
	env := func(over map[string]string) map[string]string {
		e := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr-bad", "CNI_NETNS": sb.path, "CNI_IFNAME": "eth0"}
		for k, v := range over {
			if v == "" {
				delete(e, k)
			} else {
				e[k] = v
			}
		}
		return e
	}
	tests := []struct {
		name  string
		env   map[string]string
		stdin []byte
		code  uint
		msg   string
	}{
		{"invalid JSON", env(nil), []byte(`{"cniVersion":"1.0.0","cniSocket":"` + n.sock + `",`), 6, "unmarshal"},
		{"unsupported cniVersion", env(nil), conf("0.3.1"), 1, "0.3.1"},
		{"missing CNI_NETNS", env(map[string]string{"CNI_NETNS": ""}), conf("1.0.0"), 4, "CNI_NETNS"},
		{"invalid CNI_NETNS", env(map[string]string{"CNI_NETNS": "/var/run/netns/weir-does-not-exist"}), conf("1.0.0"), 4, "CNI_NETNS"},
		{"missing CNI_CONTAINERID", env(map[string]string{"CNI_CONTAINERID": ""}), conf("1.0.0"), 4, "CNI_CONTAINERID"},
		// The kernel would take "eth%d" as a template and name it eth0.
		{"CNI_IFNAME template", env(map[string]string{"CNI_IFNAME": "eth%d"}), conf("1.1.0"), 4, `CNI_IFNAME "eth%d" must not contain`},
		{"CNI_IFNAME too long", env(map[string]string{"CNI_IFNAME": "eth0123456789abc"}), conf("1.1.0"), 4, `CNI_IFNAME "eth0123456789abc" is 16 bytes long`},
		{"CNI_IFNAME with /", env(map[string]string{"CNI_IFNAME": "x/y"}), conf("1.0.0"), 4, `CNI_IFNAME "x/y" must not contain`},
		{"CNI_IFNAME missing", env(map[string]string{"CNI_IFNAME": ""}), conf("1.1.0"), 4, "CNI_IFNAME is missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := runRaw(t, tc.env, tc.stdin)
			if code != tc.code || !strings.Contains(msg, tc.msg) {
				t.Fatalf("got code %d %q, want code %d mentioning %q", code, msg, tc.code, tc.msg)
			}
			t.Logf("code %d: %s", code, msg)
			nothingLeft(t)
		})
	}

	// Through libcni, which checks names itself but lets "eth%d" through.
	t.Run("CNI_IFNAME template through libcni", func(t *testing.T) {
		rt := n.rt(newSandbox(t))
		rt.IfName = "eth%d"
		_, err := n.cni.AddNetworkList(context.Background(), n.confList(t, "1.1.0"), rt)
		if cniCode(err) != 4 || !strings.Contains(err.Error(), "CNI_IFNAME") {
			t.Fatalf("ADD with CNI_IFNAME=eth%%d: %v (code %d), want code 4 naming CNI_IFNAME", err, cniCode(err))
		}
		nothingLeft(t)
	})

	status := func() error { return n.cni.GetStatusNetworkList(context.Background(), n.confList(t, "1.1.0")) }
	t.Run("IP pool exhausted", func(t *testing.T) {
		if err := status(); err != nil {
			t.Fatalf("STATUS with a free IP: %v", err)
		}
		first := n.mustAdd(t)
		// The spec: STATUS "should return an error if those resources are
		// exhausted and no new ADD requests can be serviced".
		if err := status(); cniCode(err) != 50 || !strings.Contains(err.Error(), "no IP address left") {
			t.Fatalf("STATUS with the pool exhausted: %v (code %d), want code 50", err, cniCode(err))
		}
		p := newSandbox(t)
		err := n.add(t, p)
		if cniCode(err) != 101 || !strings.Contains(err.Error(), "10.22.0.0/30") {
			t.Fatalf("ADD into a full /30: got %v (code %d), want code 101 naming the CIDR", err, cniCode(err))
		}
		t.Logf("code 101: %v", err)
		if len(n.podPorts(t)) != 1 || len(n.hostVeths(t)) != 1 {
			t.Fatalf("the failed ADD left something behind: ports %v veths %v", n.podPorts(t), n.hostVeths(t))
		}
		if err := n.del(t, first); err != nil {
			t.Fatal(err)
		}
		nothingLeft(t)
		if err := status(); err != nil {
			t.Fatalf("STATUS after the DEL freed an IP: %v", err)
		}
	})

	t.Run("agent not running", func(t *testing.T) {
		n.stopAgent(t, syscall.SIGTERM)
		err := n.add(t, newSandbox(t))
		if cniCode(err) != 11 || !strings.Contains(err.Error(), n.sock) {
			t.Fatalf("ADD without an agent: got %v (code %d), want code 11 naming the socket", err, cniCode(err))
		}
		t.Logf("code 11: %v", err)
		if err := status(); cniCode(err) != 50 || !strings.Contains(err.Error(), n.sock) {
			t.Fatalf("STATUS without an agent: %v (code %d), want code 50 naming the socket", err, cniCode(err))
		}
		nothingLeft(t)
	})
}

// TestGC: GC removes every attachment the runtime no longer lists as valid
// and keeps the others working.
func TestGC(t *testing.T) {
	n := newNode(t, "10.23.0.0/24")
	keep, stale := n.mustAdd(t), n.mustAdd(t)
	err := n.cni.GCNetworkList(context.Background(), n.confList(t, "1.1.0"), &libcni.GCArgs{
		ValidAttachments: []types.GCAttachment{{ContainerID: keep.id, IfName: "eth0"}},
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	if ports := n.podPorts(t); len(ports) != 1 || ports[0] != keep.result.Interfaces[0].Name {
		t.Fatalf("after GC the pod ports are %v, want only %s", ports, keep.result.Interfaces[0].Name)
	}
	if n.allocatedIPs(t)[stale.ip] || !n.allocatedIPs(t)[keep.ip] {
		t.Fatalf("after GC allocations are %v, want only %s", n.allocatedIPs(t), keep.ip)
	}
	if err := n.check(t, keep); err != nil {
		t.Fatalf("CHECK of the kept pod after GC: %v", err)
	}
	if err := ping(keep.ns, "10.23.0.1"); err != nil {
		t.Fatal(err)
	}
}
