package integration

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weirnet/weir/test/k8stest"
	"github.com/weirnet/weir/test/ovstest"
)

// underlayNIC is the underlay NIC in each node netns: one end of a veth pair
// joining the two nodes.
const underlayNIC = "ul0"

// peerFlowsFilter selects the flows of category peer (pipeline.CategoryPeer
// = 3) in ovs-ofctl's cookie syntax.
const peerFlowsFilter = "cookie=0x0003000000000000/0x00ff000000000000"

// clusterNode is a simulated node in cluster mode: the agent reads its pod
// CIDR from its Node object and installs its peers from the other Nodes.
type clusterNode struct {
	*node
	name   string
	nodeIP string
}

// TestClusterOverlay runs two simulated nodes against a real
// kube-apiserver: each agent finds its pod CIDR in its Node object, sets
// up the netdev underlay on its NIC, and turns the other Node into a Geneve
// peer. Pods added through the real CNI binary reach each other across the
// nodes; deleting a Node cuts its pods off, recreating it restores them.
func TestClusterOverlay(t *testing.T) {
	began := time.Now()
	cp := k8stest.Start(t)
	client := cp.ClientSet(t)

	specs := []struct{ name, cidr, ip string }{
		{"node-1", "10.40.1.0/24", "192.0.2.1"},
		{"node-2", "10.40.2.0/24", "192.0.2.2"},
	}
	var nodes []*clusterNode
	for _, s := range specs {
		ovs := ovstest.Start(t)
		dir := t.TempDir()
		n := &clusterNode{name: s.name, nodeIP: s.ip, node: &node{ovs: ovs, dir: dir, sock: filepath.Join(dir, "cni.sock"),
			podCIDR: s.cidr, cni: libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(dir, "cache"), nil)}}
		nodes = append(nodes, n)
	}
	n1, n2 := nodes[0], nodes[1]
	// The underlay: a veth pair created directly in the two node
	// namespaces (nothing in the root namespace); it goes with them.
	if out, err := exec.Command("ip", "link", "add", underlayNIC, "netns", n1.ovs.NetNS, "type", "veth",
		"peer", "name", underlayNIC, "netns", n2.ovs.NetNS).CombinedOutput(); err != nil {
		t.Fatalf("creating the underlay veth: %v: %s", err, out)
	}
	for _, n := range nodes {
		mustNodeExec(t, n.node, "ip", "addr", "add", n.nodeIP+"/24", "dev", underlayNIC)
		mustNodeExec(t, n.node, "ip", "link", "set", underlayNIC, "up")
	}

	nodeCreated := time.Now()
	for _, n := range nodes {
		createNode(t, client, n.name, n.podCIDR, n.nodeIP)
	}
	for _, n := range nodes {
		kubeconfig := apiKubeconfig(t, cp, n.node)
		n.startClusterAgent(t, kubeconfig)
	}
	agentsReady := time.Since(nodeCreated)
	for _, n := range nodes {
		waitFor(t, 10*time.Second, n.name+" to install its peer", func() bool { return n.peerFlows(t) == 2 })
	}
	peersReady := time.Since(nodeCreated)
	p1, p2 := n1.mustAdd(t), n2.mustAdd(t)
	for _, p := range []*pod{p1, p2} {
		if out, err := inNS(p.ns, "cat", "/sys/class/net/eth0/mtu"); err != nil || strings.TrimSpace(out) != "1450" {
			t.Errorf("pod MTU %q (%v), want 1450 (automatic: underlay 1500 less 50 for Geneve)", strings.TrimSpace(out), err)
		}
	}
	crossed := waitPing(t, p1.ns, p2.ip, 10*time.Second)
	t.Logf("Nodes created -> agents ready (CNI STATUS) %v -> peers installed on both nodes %v; pods added -> cross-node ping answered after %v",
		agentsReady.Round(time.Millisecond), peersReady.Round(time.Millisecond), crossed.Round(time.Millisecond))
	if err := ping(p2.ns, p1.ip); err != nil {
		t.Fatalf("node-2's pod -> node-1's pod: %v", err)
	}

	// Deleting node-2's Node removes the peer on node-1.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.CoreV1().Nodes().Delete(ctx, n2.name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	waitFor(t, 10*time.Second, "node-1 to drop the route and peer flows of node-2", func() bool {
		route, _ := n1.ovs.Exec("", "ip", "route", "show", n2.podCIDR)
		return strings.TrimSpace(route) == "" && n1.peerFlows(t) == 0
	})
	t.Logf("Node deleted -> peer removed on node-1 in %v", time.Since(deleted).Round(time.Millisecond))
	if err := ping(p1.ns, p2.ip); err == nil {
		t.Error("node-1's pod still reaches node-2's pod after node-2's Node was deleted")
	}

	// Recreating it restores connectivity.
	recreated := time.Now()
	createNode(t, client, n2.name, n2.podCIDR, n2.nodeIP)
	waitPing(t, p1.ns, p2.ip, 10*time.Second)
	t.Logf("Node recreated (create + status update) -> cross-node ping again %v after the create call",
		time.Since(recreated).Round(time.Millisecond))
	if time.Since(recreated) > 5*time.Second {
		t.Errorf("connectivity took %v to come back, want a few seconds", time.Since(recreated))
	}
	if err := ping(p2.ns, p1.ip); err != nil {
		t.Errorf("after recreating the Node, node-2's pod -> node-1's pod: %v", err)
	}
	t.Logf("cluster overlay test body took %v", time.Since(began).Round(time.Millisecond))
}

// peerFlows counts the node's peer flows (two per peer: ARP responder and
// L3 tunnel route).
func (n *clusterNode) peerFlows(t *testing.T) int {
	t.Helper()
	return strings.Count(n.ovs.MustOfctl(t, "-O", "OpenFlow15", "--no-stats", "dump-flows", "br-int", peerFlowsFilter), "cookie=")
}

func mustNodeExec(t *testing.T, n *node, args ...string) {
	t.Helper()
	if out, err := n.ovs.Exec("", args[0], args[1:]...); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}

// createNode creates a Node with a pod CIDR and, through the status
// subresource (as the kubelet does), an InternalIP.
func createNode(t *testing.T, client kubernetes.Interface, name, cidr, ip string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	created, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating Node %s: %v", name, err)
	}
	created.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("setting the InternalIP of Node %s: %v", name, err)
	}
}

// waitPing pings dst from netns until it answers, and returns how long that
// took.
func waitPing(t *testing.T, netns, dst string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		out, err := inNS(netns, "ping", "-c", "1", "-W", "1", dst)
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("no ping reply from %s in %s after %v: %v: %s", dst, netns, timeout, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startClusterAgent runs ovs-agent in cluster mode inside the node's netns
// (pod CIDR from the Node, netdev underlay on the veth NIC) and waits for
// CNI STATUS.
func (n *clusterNode) startClusterAgent(t *testing.T, kubeconfig string) {
	t.Helper()
	n.agentLog = filepath.Join(n.dir, "agent.log")
	logf, err := os.Create(n.agentLog)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", n.ovs.NetNS, filepath.Join(binDir, "ovs-agent"),
		"--kubeconfig", kubeconfig, "--node-name", n.name, "--underlay-interface", underlayNIC,
		"--datapath-type", "netdev", "--bridge", "br-int",
		"--ovs-rundir", n.ovs.Dir, "--ovsdb", n.ovs.DBSocket(),
		"--cni-socket", n.sock, "--state-dir", filepath.Join(n.dir, "state"), "-v=2")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.agent = cmd
	t.Cleanup(func() {
		n.stopAgent(t, syscall.SIGTERM)
		// WEIR_KEEP_AGENT_LOG=path keeps a copy of each agent's log as
		// path.<node name>.
		if keep := os.Getenv("WEIR_KEEP_AGENT_LOG"); keep != "" {
			if b, err := os.ReadFile(n.agentLog); err == nil {
				_ = os.WriteFile(keep+"."+n.name, b, 0o600)
			}
		}
		if t.Failed() {
			if b, err := os.ReadFile(n.agentLog); err == nil {
				t.Logf("agent log of %s:\n%s", n.name, tail(string(b), 60))
			}
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := n.cni.GetStatusNetworkList(context.Background(), n.confList(t, "1.1.0"))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent of %s not ready after 30s: %v", n.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// apiKubeconfig makes the API server reachable from inside node n's netns
// and returns a kubeconfig for it there.
//
// The API server listens on 127.0.0.1 of the root namespace, which a node
// namespace (with a loopback of its own) cannot reach. Rather than adding
// links and routes between the namespaces, the test opens a TCP listener on
// 127.0.0.1 inside the node namespace (a socket belongs to the namespace
// of the thread that creates it) and forwards each accepted connection to
// the API server from the root namespace. No route or address changes
// anywhere, the serving certificate (issued for 127.0.0.1) stays valid,
// and closing the listener at cleanup removes it all.
func apiKubeconfig(t *testing.T, cp *k8stest.ControlPlane, n *node) string {
	t.Helper()
	target := strings.TrimPrefix(cp.Host, "https://")
	l := listenInNetNS(t, n.ovs.NetNS)
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = struct{}{}
		} else {
			delete(conns, c)
		}
	}
	wg.Go(func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return // closed at cleanup
			}
			wg.Go(func() {
				defer in.Close()
				out, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer out.Close()
				track(in, true)
				track(out, true)
				defer track(in, false)
				defer track(out, false)
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
				go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
				<-done // either side closed: tear both down
				in.Close()
				out.Close()
				<-done
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})

	cfg, err := clientcmd.LoadFromFile(cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + l.Addr().String()
	}
	path := filepath.Join(n.dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// listenInNetNS opens a TCP listener on 127.0.0.1 inside netns name.
func listenInNetNS(t *testing.T, name string) net.Listener {
	t.Helper()
	netns, err := ns.GetNS("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Close()
	var l net.Listener
	err = netns.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatalf("listening in netns %s: %v", name, err)
	}
	return l
}
