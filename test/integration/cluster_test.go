package integration

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
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
	name       string
	nodeIP     string
	kubeconfig string
}

// TestClusterOverlay runs two simulated nodes against a real
// kube-apiserver: each agent finds its pod CIDR in its Node object, sets
// up the netdev underlay on its NIC, and turns the other Node into a Geneve
// peer. Pods added through the real CNI binary reach each other across the
// nodes; deleting a Node cuts its pods off, recreating it restores them.
func TestClusterOverlay(t *testing.T) {
	began := time.Now()
	client, nodes, agentsReady, peersReady := startCluster(t)
	n1, n2 := nodes[0], nodes[1]
	// Cluster mode's own metrics, from the real API server: the first
	// complete sync (Node controller + garbage collection, first policy
	// apply, earlier rounds removed) and the watch bytes by resource (one
	// shared informer factory: Pods, Nodes, Namespaces and NetworkPolicies
	// each listed and watched once).
	for _, n := range nodes {
		var m string
		waitFor(t, 10*time.Second, n.name+" to report its initial sync", func() bool {
			m = n.scrapeMetrics(t)
			return strings.Contains(m, "\nweir_agent_initial_sync_seconds ")
		})
		for _, res := range []string{"pods", "nodes", "namespaces", "networkpolicies"} {
			if v := metricValue(m, `weir_kube_received_bytes_total{resource="`+res+`"}`); v <= 0 {
				t.Errorf("%s: weir_kube_received_bytes_total{resource=%q} = %v, want > 0 (it lists and watches them)", n.name, res, v)
			}
		}
		if v := metricValue(m, "weir_agent_initial_sync_seconds"); v <= 0 || v > 30 {
			t.Errorf("%s: weir_agent_initial_sync_seconds = %v, want within (0, 30]", n.name, v)
		}
	}
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

// startCluster starts a kube-apiserver and two simulated nodes (node-1
// 10.40.1.0/24 on 192.0.2.1, node-2 10.40.2.0/24 on 192.0.2.2) joined by a
// veth underlay, creates their Nodes and starts their agents, and waits
// until each has installed the other as a peer. It returns how long after
// the Nodes were created the agents were ready and the peers installed.
func startCluster(t *testing.T) (client kubernetes.Interface, nodes []*clusterNode, agentsReady, peersReady time.Duration) {
	t.Helper()
	cp := k8stest.Start(t)
	client = cp.ClientSet(t)

	specs := []struct{ name, cidr, ip string }{
		{"node-1", "10.40.1.0/24", "192.0.2.1"},
		{"node-2", "10.40.2.0/24", "192.0.2.2"},
	}
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
	agentsReady = time.Since(nodeCreated)
	for _, n := range nodes {
		waitFor(t, 10*time.Second, n.name+" to install its peer", func() bool { return n.peerFlows(t) == flowsPerPeer })
	}
	peersReady = time.Since(nodeCreated)
	return client, nodes, agentsReady, peersReady
}

// flowsPerPeer is how many flows pipeline.PeerFlows installs per peer: ARP
// responder, L3 tunnel route, and the route of replies to the peer's node
// IP.
const flowsPerPeer = 3

// peerFlows counts the node's peer flows (flowsPerPeer per peer).
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
	n.kubeconfig = kubeconfig
	n.launchClusterAgent(t)
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
}

// launchClusterAgent starts the agent process (its log appended to
// n.agentLog) and waits for CNI STATUS.
func (n *clusterNode) launchClusterAgent(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(n.agentLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", n.ovs.NetNS, filepath.Join(binDir, "ovs-agent"),
		"--kubeconfig", n.kubeconfig, "--node-name", n.name, "--underlay-interface", underlayNIC,
		"--datapath-type", "netdev", "--bridge", "br-int",
		"--ovs-rundir", n.ovs.Dir, "--ovsdb", n.ovs.DBSocket(),
		"--cni-socket", n.sock, "--state-dir", filepath.Join(n.dir, "state"), "-v=2")
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
	return listenInNetNSAt(t, name, "127.0.0.1:0")
}

// listenInNetNSAt opens a TCP listener on addr inside netns name.
func listenInNetNSAt(t *testing.T, name, addr string) net.Listener {
	t.Helper()
	netns, err := ns.GetNS("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Close()
	var l net.Listener
	err = netns.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listening in netns %s: %v", name, err)
	}
	return l
}

// TestClusterRestarts restarts the parts of a node that a DaemonSet
// restarts independently, with pods on both nodes:
//
//   - ovs-vswitchd on node-2 while its agent keeps running: once with its
//     tap devices (br-phy, br-int, the gateway) deleted while it is down,
//     so it recreates them empty, as after "ovs-appctl exit --cleanup" or
//     a node reboot that keeps the OVSDB file; and once the way the OVS
//     container stops it (SIGTERM: OVS 3.1 keeps its tap devices, with
//     their addresses and routes). The agent must restore
//     the underlay, gateway and peer routes on the OpenFlow reconnect, so
//     that pods and nodes reach each other again within seconds;
//   - the agent on node-1 (killed and started again) while a pod on node-1
//     probes a pod on node-2 every 50 ms with ping and TCP connects: not a
//     probe may be lost.
func TestClusterRestarts(t *testing.T) {
	began := time.Now()
	client, nodes, _, _ := startCluster(t)
	n1, n2 := nodes[0], nodes[1]
	p1, p2 := n1.mustAdd(t), n2.mustAdd(t)
	// Pod objects, so that a restarted agent's Pod controller keeps their
	// interfaces.
	createPod(t, client, p1, n1.name)
	createPod(t, client, p2, n2.name)
	waitPing(t, p1.ns, p2.ip, 10*time.Second)
	srv := serveTCP(t, p2)

	t.Run("ovs-vswitchd restart", func(t *testing.T) {
		snatBefore := nftTable(t, n2, "ip", "weir")
		for _, tc := range []struct {
			name string
			lose bool // the tap devices are gone when ovs-vswitchd starts again
		}{
			{"devices lost", true},
			{"devices kept", false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				n2.ovs.StopVswitchd(t)
				if tc.lose {
					// ovs-vswitchd (3.1) keeps its tap devices over an
					// exit; deleting them is what "exit --cleanup" or a
					// node reboot with the OVSDB file kept does.
					for _, dev := range []string{"br-phy", "weir-gw0", "br-int"} {
						mustNodeExec(t, n2.node, "ip", "link", "delete", dev)
					}
				}
				started := time.Now()
				n2.ovs.StartVswitchd(t)
				up := time.Since(started)
				crossed := waitPingFine(t, p1.ns, p2.ip, 15*time.Second) + up
				t.Logf("ovs-vswitchd started -> serving its bridges after %v -> cross-node pod ping answered after %v",
					up.Round(time.Millisecond), crossed.Round(time.Millisecond))
				if out, err := inNS(p1.ns, "ping", "-c", "3", "-i", "0.1", "-W", "1", p2.ip); err != nil || strings.Contains(out, "DUP!") {
					t.Errorf("node-1 pod -> node-2 pod after the restart: %v:\n%s", err, out)
				}

				wantOn := []struct{ what, cmd, want string }{
					{"br-phy address", "ip -4 -o addr show dev br-phy", "inet 192.0.2.2/24"},
					{"gateway address", "ip -4 -o addr show dev weir-gw0", "inet 10.40.2.1/24"},
					{"gateway MTU", "ip -o link show dev weir-gw0", "mtu 1450"},
					{"peer route", "ip route show 10.40.1.0/24", "10.40.1.0/24 via 10.40.1.1 dev weir-gw0 proto 87 onlink"},
				}
				for _, w := range wantOn {
					if out, err := n2.ovs.Exec("", "sh", "-c", w.cmd); err != nil || !strings.Contains(out, w.want) {
						t.Errorf("node-2 %s after the restart: %q (%v), want %q", w.what, strings.TrimSpace(out), err, w.want)
					}
				}
				if err := dialTCP(p1, srv, time.Second); err != nil {
					t.Errorf("TCP node-1 pod -> node-2 pod after the restart: %v", err)
				}
				for _, c := range []struct{ from, to string }{
					{p2.ns, p1.ip},        // node-2's pod -> node-1's pod
					{n2.ovs.NetNS, p1.ip}, // restarted node -> remote pod
					{n1.ovs.NetNS, p2.ip}, // remote node -> pod on the restarted node
				} {
					if err := ping(c.from, c.to); err != nil {
						t.Errorf("after the restart: %v", err)
					}
				}
				if got := nftTable(t, n2, "ip", "weir"); got != snatBefore {
					t.Errorf("SNAT table changed by the restart:\nbefore:\n%s\nafter:\n%s", snatBefore, got)
				}
				t.Logf("ovs-vswitchd started -> all checks done %v", time.Since(started).Round(time.Millisecond))
			})
		}
	})

	t.Run("agent restart without a gap", func(t *testing.T) {
		probe := startProbes(t, p1, p2, srv)
		time.Sleep(300 * time.Millisecond)
		n1.stopAgent(t, syscall.SIGKILL)
		killed := time.Now()
		logBefore, _ := os.ReadFile(n1.agentLog)
		n1.launchClusterAgent(t)
		ready := time.Since(killed)
		waitFor(t, 15*time.Second, "node-1's agent to remove the previous run's flows", func() bool {
			b, _ := os.ReadFile(n1.agentLog)
			return strings.Contains(string(b[len(logBefore):]), "Removed the previous run's stale flows")
		})
		cleaned := time.Since(killed)
		time.Sleep(500 * time.Millisecond)
		pings, lostPings, connects, failedConnects := probe.stop(t)
		t.Logf("agent killed -> restarted agent ready %v -> previous round's flows removed %v; probes meanwhile: "+
			"%d pings (%d lost), %d TCP connects (%d failed)", ready.Round(time.Millisecond), cleaned.Round(time.Millisecond),
			pings, lostPings, connects, failedConnects)
		if pings < 20 || connects < 20 {
			t.Errorf("too few probes (%d pings, %d connects) to judge", pings, connects)
		}
		if lostPings > 0 || failedConnects > 0 {
			t.Errorf("cross-node traffic was interrupted by the agent restart: %d pings lost, %d TCP connects failed",
				lostPings, failedConnects)
		}
		if got := n1.peerFlows(t); got != flowsPerPeer {
			t.Errorf("node-1 has %d peer flows after the restart, want %d (no stale round left)", got, flowsPerPeer)
		}
	})
	t.Logf("restart test body took %v", time.Since(began).Round(time.Millisecond))
}

// createPod creates the Pod object of sandbox p (K8S_POD_NAME, namespace
// default) bound to node.
func createPod(t *testing.T, client kubernetes.Interface, p *pod, node string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.id, Namespace: metav1.NamespaceDefault},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "example.invalid/none"}}}}
	if _, err := client.CoreV1().Pods(metav1.NamespaceDefault).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating Pod %s: %v", p.id, err)
	}
}

// waitPingFine is waitPing with a 200 ms answer timeout per try, and
// returns how long it took.
func waitPingFine(t *testing.T, netns, dst string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		out, err := inNS(netns, "ping", "-c", "1", "-W", "0.2", dst)
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("no ping reply from %s in %s after %v: %v: %s", dst, netns, timeout, err, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nftTable lists an nftables table in node n (without handles or
// counters' values), "" if it does not exist.
func nftTable(t *testing.T, n *clusterNode, family, name string) string {
	t.Helper()
	out, err := n.ovs.Exec("", "nft", "list", "table", family, name)
	if err != nil {
		return ""
	}
	return regexp.MustCompile(`counter packets \d+ bytes \d+`).ReplaceAllString(out, "counter")
}

// serveTCP accepts (and closes) TCP connections on port 7070 of pod p until
// the test ends; it returns the address.
func serveTCP(t *testing.T, p *pod) string {
	t.Helper()
	addr := net.JoinHostPort(p.ip, "7070")
	l := listenInNetNSAt(t, p.ns, addr)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return addr
}

// dialTCP connects to addr from pod p's namespace.
func dialTCP(p *pod, addr string, timeout time.Duration) error {
	netns, err := ns.GetNS(p.path)
	if err != nil {
		return err
	}
	defer netns.Close()
	return netns.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// probes pings and TCP-connects from one pod to another every 50 ms.
type probes struct {
	ping     *exec.Cmd
	out      *strings.Builder
	stopTCP  chan struct{}
	tcpDone  chan struct{}
	connects int
	failed   int
}

// startProbes starts probing dst (ping) and srv (TCP) from src.
func startProbes(t *testing.T, src, dst *pod, srv string) *probes {
	t.Helper()
	p := &probes{out: &strings.Builder{}, stopTCP: make(chan struct{}), tcpDone: make(chan struct{})}
	// -O reports a probe without answer when the next one is sent; the
	// replies' sequence numbers are what is counted.
	p.ping = exec.Command("ip", "netns", "exec", src.ns, "ping", "-n", "-O", "-i", "0.05", "-W", "1", dst.ip)
	p.ping.Stdout, p.ping.Stderr = p.out, p.out
	if err := p.ping.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.tcpDone)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stopTCP:
				return
			case <-tick.C:
			}
			p.connects++
			if err := dialTCP(src, srv, time.Second); err != nil {
				p.failed++
				if p.failed <= 3 {
					t.Logf("TCP connect %d failed: %v", p.connects, err)
				}
			}
		}
	}()
	t.Cleanup(func() {
		if p.ping.ProcessState == nil {
			_ = p.ping.Process.Kill()
			_ = p.ping.Wait()
		}
	})
	return p
}

// stop ends the probes and returns the pings sent (up to the last
// answered), how many of those went unanswered, and the TCP connects and
// failures.
func (p *probes) stop(t *testing.T) (pings, lostPings, connects, failedConnects int) {
	t.Helper()
	close(p.stopTCP)
	<-p.tcpDone
	_ = p.ping.Process.Signal(syscall.SIGINT)
	_ = p.ping.Wait()
	answered := map[int]bool{}
	last := 0
	for _, m := range regexp.MustCompile(`bytes from .* icmp_seq=(\d+) `).FindAllStringSubmatch(p.out.String(), -1) {
		seq, _ := strconv.Atoi(m[1])
		answered[seq] = true
		last = max(last, seq)
	}
	for seq := 1; seq <= last; seq++ {
		if !answered[seq] {
			lostPings++
		}
	}
	if strings.Contains(p.out.String(), "DUP!") {
		t.Errorf("duplicate ping replies:\n%s", tail(p.out.String(), 30))
	}
	if lostPings > 0 {
		t.Logf("ping output:\n%s", tail(p.out.String(), 30))
	}
	return last, lostPings, p.connects, p.failed
}

// scrapeMetrics returns the agent's /metrics (its default address :9495),
// read over a connection dialled inside the node's netns.
func (n *clusterNode) scrapeMetrics(t *testing.T) string {
	t.Helper()
	var body []byte
	err := ns.WithNetNSPath("/var/run/netns/"+n.ovs.NetNS, func(ns.NetNS) error {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(n.nodeIP, "9495"), 2*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "GET /metrics HTTP/1.0\r\nHost: agent\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(resp.Body)
		return err
	})
	if err != nil {
		t.Fatalf("scraping %s's metrics: %v", n.name, err)
	}
	return string(body)
}

// metricValue returns the value of the sample series (name with its
// labels, as exposed) in a Prometheus text exposition, or -1 if absent.
func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				return f
			}
		}
	}
	return -1
}
