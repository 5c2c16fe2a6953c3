package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weirnet/weir/pkg/localcluster"
)

// gatewayName is the agent's default gateway interface (pkg/agent config).
const gatewayName = "weir-gw0"

// hostServerPort is the port of the datapath test's hostNetwork test
// servers (one per node; TestHostNetworkPod uses 9080).
const hostServerPort = 9091

// TestDatapath: the sources and destinations the pipeline must handle
// beyond pod to pod (issue 10, "Datapath"), over the cluster's primary
// family (pod IPs, node IPs, ClusterIPs and NodePorts of it):
//
//   - the very first connection from a node's IP (not the gateway IP) to a
//     fresh pod, locally (the node's ARP request then carries the node IP
//     as sender) and from the other node through the tunnel;
//   - a fresh pod's first connection to its own node's NodePort (the reply,
//     un-NATed by kube-proxy, leaves the node from the node IP);
//   - a matrix of sources (pods on both nodes, both nodes' and the
//     control-plane node's hosts from their default source and from their
//     node IP, as hostNetwork pods bound to status.hostIP do) against pods, node IPs (hostNetwork servers),
//     NodePorts on both node IPs with the endpoint local or remote,
//     ClusterIPs, and the API server (its address and the kubernetes
//     Service).
func TestDatapath(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	node2 := s.cfg.NodeName(2)
	ip1, ip2 := s.cfg.PrimaryNodeIP(1), s.cfg.PrimaryNodeIP(2)

	// Two NodePort Services, one per endpoint node, and a hostNetwork test
	// server per node.
	np := map[string]*corev1.Service{}
	for _, ep := range []string{"a1", "b1"} {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: e2eNS, Name: "dp-" + ep},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeNodePort,
				Selector: map[string]string{"pod": ep},
				Ports:    []corev1.ServicePort{{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: 8080, TargetPort: intstr.FromInt32(80)}},
			},
		}
		created, err := s.client.CoreV1().Services(e2eNS).Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.client.CoreV1().Services(e2eNS).Delete(context.Background(), created.Name, metav1.DeleteOptions{})
		np[ep] = created
	}
	hostServers := map[int]string{1: "dp-host1", 2: "dp-host2"}
	for idx, name := range hostServers {
		p := localcluster.TestServerPod(e2eNS, name, s.cfg.NodeName(idx), map[string]string{"app": "dp-host"}, hostServerPort)
		p.Spec.HostNetwork = true
		if _, err := s.client.CoreV1().Pods(e2eNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer s.client.CoreV1().Pods(e2eNS).Delete(context.Background(), name, metav1.DeleteOptions{})
	}
	if _, err := localcluster.WaitPodsRunning(ctx, s.client, e2eNS, "app=dp-host", len(hostServers), 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	nodePort := func(ep string) string { return strconv.Itoa(int(np[ep].Spec.Ports[0].NodePort)) }
	// kube-proxy programs a Service a moment after it appears; wait for
	// both from a node (not a subject of the checks below), so that the
	// single-attempt checks do not measure kube-proxy.
	for _, ep := range []string{"a1", "b1"} {
		for _, target := range []string{net.JoinHostPort(ip1, nodePort(ep)), net.JoinHostPort(ip2, nodePort(ep))} {
			err := eventually(30*time.Second, func() error {
				got, _, err := s.nodeDial(ctx, node2, "", target, true, 2*time.Second)
				if err == nil && got != ep {
					err = fmt.Errorf("answered %q, want %s", got, ep)
				}
				return err
			})
			if err != nil {
				t.Fatalf("NodePort %s (endpoint %s) never answered node 2: %v", target, ep, err)
			}
		}
	}

	t.Run("first connection", func(t *testing.T) { s.testFirstConnections(t, nodePort) })
	t.Run("matrix", func(t *testing.T) { s.testDatapathMatrix(t, np, nodePort, hostServers) })
}

// testFirstConnections creates a fresh pod per case and checks that the
// very first connection of the case succeeds (one attempt, no retry).
func (s *suite) testFirstConnections(t *testing.T, nodePort func(string) string) {
	node1 := s.cfg.NodeName(1)
	ip1, ip2 := s.cfg.PrimaryNodeIP(1), s.cfg.PrimaryNodeIP(2)
	for i, tc := range []struct {
		name string
		// arpAnnounce, if set, is written to weir-gw0's arp_announce on node
		// 1 for the case (the agent sets 2; 0 is the kernel default, which
		// leaves it to the pipeline alone).
		arpAnnounce string
		// Either the fresh pod is the server and dialNode dials it from
		// dialSrc, or the fresh pod is the client and probes target.
		dialNode, dialSrc string
		target, want      string
	}{
		{name: "node 1's IP to a fresh pod on node 1", dialNode: node1, dialSrc: ip1},
		{name: "node 1's IP to a fresh pod on node 1, arp_announce 0", arpAnnounce: "0", dialNode: node1, dialSrc: ip1},
		{name: "node 2's IP to a fresh pod on node 1 through the tunnel", dialNode: s.cfg.NodeName(2), dialSrc: ip2},
		{name: "fresh pod on node 1 to node 1's NodePort, endpoint on node 2", target: net.JoinHostPort(ip1, nodePort("b1")), want: "b1"},
		{name: "fresh pod on node 1 to node 1's NodePort, endpoint on node 1", target: net.JoinHostPort(ip1, nodePort("a1")), want: "a1"},
		{name: "fresh pod on node 1 to node 1's NodePort, endpoint on node 2, arp_announce 0", arpAnnounce: "0",
			target: net.JoinHostPort(ip1, nodePort("b1")), want: "b1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if tc.arpAnnounce != "" {
				// Over IPv6 the node resolves the pod by neighbour
				// discovery, which arp_announce does not touch: the case
				// would repeat its arp_announce 2 twin.
				s.requireIPv4(t, "arp_announce picks the source of ARP requests")
				key := "net.ipv4.conf." + gatewayName + ".arp_announce"
				old, err := s.nodeExec(ctx, node1, "sysctl", "-n", key)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.nodeExec(ctx, node1, "sysctl", "-q", "-w", key+"="+tc.arpAnnounce); err != nil {
					t.Fatal(err)
				}
				defer func() {
					if _, err := s.nodeExec(context.Background(), node1, "sysctl", "-q", "-w", key+"="+old); err != nil {
						t.Errorf("restoring %s=%s on %s: %v", key, old, node1, err)
					}
				}()
			}
			name := fmt.Sprintf("dp-fresh-%d", i)
			p := localcluster.TestServerPod(e2eNS, name, node1, map[string]string{"app": name})
			if _, err := s.client.CoreV1().Pods(e2eNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			defer s.client.CoreV1().Pods(e2eNS).Delete(context.Background(), name, metav1.DeleteOptions{})
			pods, err := localcluster.WaitPodsRunning(ctx, s.client, e2eNS, "app="+name, 1, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			podIP := pods[0].Status.PodIP
			// Fresh means: node 1 has no neighbour entry for the pod.
			if _, err := s.nodeExec(ctx, node1, "ip", "neigh", "flush", "to", podIP, "dev", gatewayName); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			var got string
			var took time.Duration
			if tc.dialNode != "" {
				tc.want = name
				got, took, err = s.nodeDial(ctx, tc.dialNode, tc.dialSrc, net.JoinHostPort(podIP, "80"), true, 5*time.Second)
			} else {
				pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
				defer pcancel()
				got, err = s.podRun(pctx, e2eNS+"/"+name, s.bin, "probe", "--proto", "tcp", "--to", tc.target, "--timeout", "5s")
				took = time.Since(start) // including entering the pod's namespace
			}
			if err != nil || got != tc.want {
				t.Fatalf("first connection: answer %q, %v; want %q", got, err, tc.want)
			}
			t.Logf("first connection answered by %s, %v", got, took.Round(time.Millisecond/10))
		})
	}
}

// dpSource is where a connection of the matrix starts: a pod (through
// test-server probe in its netns) or a node's host, from its default source
// address or from src.
type dpSource struct {
	name      string
	pod       string // NS/NAME
	node, src string
}

// dpTarget is a destination of the matrix; want is the expected answer
// (the serving pod's name), empty where the server says nothing first (the
// API server): then connecting is the check.
type dpTarget struct {
	name, hostport, want string
}

func (s *suite) testDatapathMatrix(t *testing.T, np map[string]*corev1.Service, nodePort func(string) string, hostServers map[int]string) {
	ip1, ip2 := s.cfg.PrimaryNodeIP(1), s.cfg.PrimaryNodeIP(2)
	api, err := url.Parse(s.cfg.APIServerURL())
	if err != nil {
		t.Fatal(err)
	}
	kubernetes, err := s.client.CoreV1().Services("default").Get(context.Background(), "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sources := []dpSource{
		{name: "pod on node 1", pod: e2eNS + "/a2"},
		{name: "pod on node 2", pod: e2eNS + "/b1"},
		{name: "node 1", node: s.cfg.NodeName(1)},
		{name: "node 2", node: s.cfg.NodeName(2)},
		{name: "node 1 from its node IP", node: s.cfg.NodeName(1), src: ip1},
		{name: "node 2 from its node IP", node: s.cfg.NodeName(2), src: ip2},
		// The API server's own network namespace (apiserver proxy,
		// webhooks, port-forward start here).
		{name: "control-plane node", node: s.cfg.NodeName(localcluster.ControlPlane)},
		{name: "control-plane node from its node IP", node: s.cfg.NodeName(localcluster.ControlPlane), src: s.cfg.PrimaryNodeIP(localcluster.ControlPlane)},
	}
	podPort := func(name string) string { return net.JoinHostPort(s.pods[name].Status.PodIP, "80") }
	hostPort := strconv.Itoa(hostServerPort)
	targets := []dpTarget{
		{"pod a1 on node 1", podPort("a1"), "a1"},
		{"pod b1 on node 2", podPort("b1"), "b1"},
		{"node 1 IP (hostNetwork server)", net.JoinHostPort(ip1, hostPort), hostServers[1]},
		{"node 2 IP (hostNetwork server)", net.JoinHostPort(ip2, hostPort), hostServers[2]},
		{"NodePort on node 1 IP, endpoint on node 1", net.JoinHostPort(ip1, nodePort("a1")), "a1"},
		{"NodePort on node 1 IP, endpoint on node 2", net.JoinHostPort(ip1, nodePort("b1")), "b1"},
		{"NodePort on node 2 IP, endpoint on node 1", net.JoinHostPort(ip2, nodePort("a1")), "a1"},
		{"NodePort on node 2 IP, endpoint on node 2", net.JoinHostPort(ip2, nodePort("b1")), "b1"},
		{"ClusterIP, endpoint on node 1", net.JoinHostPort(np["a1"].Spec.ClusterIP, "8080"), "a1"},
		{"ClusterIP, endpoint on node 2", net.JoinHostPort(np["b1"].Spec.ClusterIP, "8080"), "b1"},
		{"API server address", api.Host, ""},
		{"kubernetes Service", net.JoinHostPort(kubernetes.Spec.ClusterIP, "443"), ""},
	}
	for _, src := range sources {
		t.Run(src.name, func(t *testing.T) {
			t.Parallel()
			for _, tg := range targets {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				got, took, err := s.dpConnect(ctx, src, tg)
				cancel()
				if err == nil && got != tg.want {
					err = fmt.Errorf("answered %q, want %q", got, tg.want)
				}
				if err != nil {
					t.Errorf("%s -> %s (%s): %v", src.name, tg.name, tg.hostport, err)
					continue
				}
				t.Logf("%s -> %s: ok, %v", src.name, tg.name, took.Round(time.Millisecond/10))
			}
		})
	}
}

// dpConnect makes one connection from src to tg and returns the answer and
// how long it took: from a node the TCP connect time alone, from a pod the
// whole probe including entering the pod's namespace (~0.2 s of it).
func (s *suite) dpConnect(ctx context.Context, src dpSource, tg dpTarget) (string, time.Duration, error) {
	const timeout = 3 * time.Second
	if src.node != "" {
		return s.nodeDial(ctx, src.node, src.src, tg.hostport, tg.want != "", timeout)
	}
	start := time.Now()
	if tg.want != "" {
		got, err := s.probe(ctx, src.pod, "tcp", tg.hostport)
		return got, time.Since(start), err
	}
	// Connect only, with the shell's /dev/tcp (no client binary needed).
	host, port, err := net.SplitHostPort(tg.hostport)
	if err != nil {
		return "", 0, err
	}
	_, err = s.podRun(ctx, src.pod, "timeout", strconv.Itoa(int(timeout/time.Second)), "bash", "-c",
		fmt.Sprintf("exec 3<>/dev/tcp/%s/%s", host, port))
	return "", time.Since(start), err
}

// nodeDial connects over TCP from node's network namespace to hostport,
// from the local address src if it is set (as a process bound to the node
// IP does), and with read returns what the server sent before closing the
// connection (a test server's name). It reports how long connecting took.
func (s *suite) nodeDial(ctx context.Context, node, src, hostport string, read bool, timeout time.Duration) (string, time.Duration, error) {
	pid, err := localcluster.NodePID(s.cfg, node)
	if err != nil {
		return "", 0, err
	}
	var answer string
	var took time.Duration
	err = ns.WithNetNSPath(fmt.Sprintf("/proc/%d/ns/net", pid), func(ns.NetNS) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		d := net.Dialer{}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		start := time.Now()
		c, err := d.DialContext(ctx, "tcp", hostport)
		took = time.Since(start)
		if err != nil {
			return err
		}
		defer c.Close()
		if !read {
			return nil
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = c.SetDeadline(dl)
		}
		b, err := io.ReadAll(c)
		answer = strings.TrimSpace(string(b))
		return err
	})
	if err != nil {
		return answer, took, fmt.Errorf("from %s (source %q) to %s: %w", node, src, hostport, err)
	}
	return answer, took, nil
}
