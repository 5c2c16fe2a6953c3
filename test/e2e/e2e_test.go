package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weirnet/weir/pkg/localcluster"
)

func TestManifestServerDryRun(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := combined(s.cfg.Kubectl(ctx, "apply", "--dry-run=server", "-f", s.cfg.Manifest))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "daemonset.apps/weir-agent") {
		t.Errorf("dry-run output lacks the DaemonSet:\n%s", out)
	}
}

// TestPodToPod: same node and across nodes, ICMP, TCP and UDP, over IPv4 and
// over IPv6 (each pod's address of the family from status.podIPs), each
// family the cluster has.
func TestPodToPod(t *testing.T) {
	s := need(t)
	for _, fam := range allFamilies {
		t.Run(string(fam), func(t *testing.T) {
			s.requireFamily(t, fam)
			t.Parallel()
			for _, tc := range []struct{ from, to string }{
				{"a1", "a2"}, {"a2", "a1"}, // same node
				{"a1", "b1"}, {"b1", "a1"}, {"b1", "a2"}, // across nodes
			} {
				t.Run(tc.from+"-"+tc.to, func(t *testing.T) {
					t.Parallel()
					to := mustPodIP(t, s.pods[tc.to], fam)
					for _, proto := range []string{"tcp", "udp"} {
						for _, port := range []string{"80", "81"} {
							s.expectAnswer(t, e2eNS+"/"+tc.from, proto, net.JoinHostPort(to, port), tc.to)
						}
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					if out, err := s.podRun(ctx, e2eNS+"/"+tc.from, "ping", pingFamily(fam), "-c", "2", "-i", "0.2", "-W", "2", to); err != nil {
						t.Errorf("ping %s: %v\n%s", to, err, out)
					}
				})
			}
		})
	}
}

// pingFamily is ping's flag for fam (-4 or -6), so that a ping of the wrong
// family cannot pass unnoticed.
func pingFamily(fam corev1.IPFamily) string {
	if fam == corev1.IPv6Protocol {
		return "-6"
	}
	return "-4"
}

// TestNodeToPods: a node reaches its local pods and remote pods (through the
// gateway and the tunnel), as kubelet probes and hostNetwork pods need, over
// each family.
func TestNodeToPods(t *testing.T) {
	s := need(t)
	for _, fam := range allFamilies {
		t.Run(string(fam), func(t *testing.T) {
			s.requireFamily(t, fam)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for _, node := range []string{s.cfg.NodeName(1), s.cfg.NodeName(2)} {
				for _, name := range []string{"a1", "b1"} {
					ip := mustPodIP(t, s.pods[name], fam)
					got, err := s.nodeProbe(ctx, node, "tcp", net.JoinHostPort(ip, "80"))
					if err != nil || got != name {
						t.Errorf("node %s -> pod %s (%s): %q, %v", node, name, ip, got, err)
					}
				}
			}
		})
	}
}

// TestHostNetworkPod: a hostNetwork pod (in the node's network namespace, set
// up by kubelet without CNI) reaches pods on both nodes; probed from inside
// its container with kubectl exec.
func TestHostNetworkPod(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := localcluster.TestServerPod(e2eNS, "hostnet", s.cfg.NodeName(2), map[string]string{"app": "hostnet"}, 9080)
	p.Spec.HostNetwork = true
	if _, err := s.client.CoreV1().Pods(e2eNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer s.client.CoreV1().Pods(e2eNS).Delete(context.Background(), "hostnet", metav1.DeleteOptions{})
	if _, err := localcluster.WaitPodsRunning(ctx, s.client, e2eNS, "app=hostnet", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a1", "b1"} {
		out, err := combined(s.cfg.Kubectl(ctx, "-n", e2eNS, "exec", "hostnet", "--", "/test-server", "probe",
			"--proto", "tcp", "--to", net.JoinHostPort(s.pods[name].Status.PodIP, "81"), "--timeout", "2s"))
		if err != nil || out != name {
			t.Errorf("hostNetwork pod -> %s: %q, %v", name, out, err)
		}
	}
}

var mtuRE = regexp.MustCompile(`mtu (\d+)`)

// TestMaxSizePingAcrossNodes: the pod MTU is the underlay MTU minus the
// Geneve overhead — 50 bytes over the IPv4 underlay of an IPv4 or
// dual-stack cluster, 70 over the IPv6 underlay of an IPv6-only one — so a
// full-size don't-fragment ping crosses nodes and one byte more does not
// leave the pod, over IPv4 (payload MTU - 20 - 8) and over IPv6 (MTU - 40 -
// 8; IPv6 never fragments in transit, and the tunnel's family is the
// underlay's whatever the inner family).
func TestMaxSizePingAcrossNodes(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := s.podRun(ctx, e2eNS+"/a1", "ip", "-o", "link", "show", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	m := mtuRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no mtu in %q", out)
	}
	mtu, _ := strconv.Atoi(m[1])
	if want := 1500 - s.tunnelOverhead(); mtu != want {
		t.Errorf("pod MTU %d, want %d (1500 underlay - %d Geneve)", mtu, want, s.tunnelOverhead())
	}
	headers := map[corev1.IPFamily]int{corev1.IPv4Protocol: 20 + 8, corev1.IPv6Protocol: 40 + 8}
	for _, fam := range allFamilies {
		t.Run(string(fam), func(t *testing.T) {
			s.requireFamily(t, fam)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			dst := mustPodIP(t, s.pods["b1"], fam)
			size := strconv.Itoa(mtu - headers[fam])
			if out, err := s.podRun(ctx, e2eNS+"/a1", "ping", pingFamily(fam), "-M", "do", "-s", size, "-c", "2", "-i", "0.2", "-W", "2", dst); err != nil {
				t.Errorf("DF ping of %s bytes across nodes to %s: %v\n%s", size, dst, err, out)
			}
			big := strconv.Itoa(mtu - headers[fam] + 1)
			if out, err := s.podRun(ctx, e2eNS+"/a1", "ping", pingFamily(fam), "-M", "do", "-s", big, "-c", "1", "-W", "1", dst); err == nil {
				t.Errorf("DF ping of %s bytes (over the pod MTU) to %s succeeded:\n%s", big, dst, out)
			}
		})
	}
}

// TestSNATToOutside: a pod reaches a host outside the cluster (a network
// namespace on the node underlay that has no route to pod CIDRs) and that
// host sees the node's IP as the source: over IPv4 the node's IPv4 underlay
// address, over IPv6 its IPv6 one (the ip6 weir table); each family the
// cluster has.
func TestSNATToOutside(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	outside := s.cfg.Prefix + "-outside"
	// On the nodes' underlay subnets, so the nodes reach it on-link: the
	// IPv4 /24 and the IPv6 /64 of the host bridge.
	outsideIP := map[corev1.IPFamily]string{corev1.IPv4Protocol: s.cfg.Subnet + ".200", corev1.IPv6Protocol: s.cfg.Subnet6() + "200"}
	nodeIP := map[corev1.IPFamily]func(int) string{corev1.IPv4Protocol: s.cfg.NodeIP, corev1.IPv6Protocol: s.cfg.NodeIP6}
	host := s.cfg.Prefix + "-vout"
	setup := [][]string{
		{"ip", "netns", "add", outside},
		{"ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", outside},
		{"ip", "link", "set", host, "master", s.cfg.Prefix + "-br", "up"},
	}
	// An address of each family the cluster's underlay has.
	if s.hasFamily(corev1.IPv4Protocol) {
		setup = append(setup, []string{"ip", "-n", outside, "addr", "add", outsideIP[corev1.IPv4Protocol] + "/24", "dev", "eth0"})
	}
	if s.hasFamily(corev1.IPv6Protocol) {
		// nodad: the wire is ours, and the address must work at once.
		setup = append(setup, []string{"ip", "-n", outside, "addr", "add", outsideIP[corev1.IPv6Protocol] + "/64", "dev", "eth0", "nodad"})
	}
	setup = append(setup,
		[]string{"ip", "-n", outside, "link", "set", "eth0", "up"},
		[]string{"ip", "-n", outside, "link", "set", "lo", "up"},
		// A real host sends full-size frames with complete checksums.
		[]string{"ip", "netns", "exec", outside, "ethtool", "-K", "eth0", "tx", "off"})
	// Removed also when a setup step fails.
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", host).Run()
		_ = exec.Command("ip", "netns", "del", outside).Run()
	})
	for _, c := range setup {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
	}

	for _, fam := range allFamilies {
		t.Run(string(fam), func(t *testing.T) {
			s.requireFamily(t, fam)
			// A TCP server inside the outside namespace, recording who
			// connects.
			network := map[corev1.IPFamily]string{corev1.IPv4Protocol: "tcp4", corev1.IPv6Protocol: "tcp6"}[fam]
			target := net.JoinHostPort(outsideIP[fam], "8080")
			var ln net.Listener
			err := ns.WithNetNSPath("/run/netns/"+outside, func(ns.NetNS) error {
				var err error
				ln, err = net.Listen(network, target)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			seen := make(chan string, 10)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
					fmt.Fprintln(c, "outside")
					c.Close()
				}
			}()
			for _, pod := range []string{"a1", "b1"} {
				got, err := s.probe(ctx, e2eNS+"/"+pod, "tcp", target)
				if err != nil || got != "outside" {
					t.Errorf("pod %s -> outside %s: %q, %v", pod, target, got, err)
					continue
				}
				src := <-seen
				nodeIdx := 1
				if s.pods[pod].Spec.NodeName == s.cfg.NodeName(2) {
					nodeIdx = 2
				}
				if want := nodeIP[fam](nodeIdx); !sameIP(src, want) {
					t.Errorf("outside host saw pod %s's connection to %s from %s, want its node's %s address %s", pod, target, src, fam, want)
				}
			}
		})
	}
}

// sameIP reports whether two address literals are the same address (IPv6
// has several spellings of one).
func sameIP(a, b string) bool {
	x, errX := netip.ParseAddr(a)
	y, errY := netip.ParseAddr(b)
	return errX == nil && errY == nil && x == y
}

// TestClusterIPService: a pod reaches a ClusterIP Service whose only
// endpoint is on the other node, through kube-proxy on its node, and the
// endpoint reaches its own Service (hairpin); for a Service of each family
// (the cluster's default, its primary family; IPv4 and IPv6 single-stack)
// and for dual-stack ones (PreferDualStack, which a single-family cluster
// answers with its one family; RequireDualStack with IPv6 first, which
// needs a dual-stack cluster), over every ClusterIP the Service got.
func TestClusterIPService(t *testing.T) {
	s := need(t)
	single, prefer, require := corev1.IPFamilyPolicySingleStack, corev1.IPFamilyPolicyPreferDualStack, corev1.IPFamilyPolicyRequireDualStack
	v4, v6 := corev1.IPv4Protocol, corev1.IPv6Protocol
	for _, tc := range []struct {
		name     string
		policy   *corev1.IPFamilyPolicy
		families []corev1.IPFamily
		want     []corev1.IPFamily // the families of spec.clusterIPs, in order
		needs    []corev1.IPFamily // the cluster's families the case needs
	}{
		{name: "default", want: []corev1.IPFamily{s.primaryFamily()}},
		{name: "ipv4", policy: &single, families: []corev1.IPFamily{v4}, want: []corev1.IPFamily{v4}, needs: []corev1.IPFamily{v4}},
		{name: "ipv6", policy: &single, families: []corev1.IPFamily{v6}, want: []corev1.IPFamily{v6}, needs: []corev1.IPFamily{v6}},
		{name: "prefer-dual", policy: &prefer, want: s.families()},
		{name: "require-dual-v6", policy: &require, families: []corev1.IPFamily{v6, v4}, want: []corev1.IPFamily{v6, v4}, needs: []corev1.IPFamily{v4, v6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, fam := range tc.needs {
				s.requireFamily(t, fam)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: e2eNS, Name: "b1-svc-" + tc.name},
				Spec: corev1.ServiceSpec{
					Selector:       map[string]string{"pod": "b1"},
					IPFamilyPolicy: tc.policy,
					IPFamilies:     tc.families,
					Ports: []corev1.ServicePort{
						{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: 8080, TargetPort: intstr.FromInt32(80)},
						{Name: "udp", Protocol: corev1.ProtocolUDP, Port: 8081, TargetPort: intstr.FromInt32(81)},
					},
				},
			}
			svc, err := s.client.CoreV1().Services(e2eNS).Create(ctx, svc, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.client.CoreV1().Services(e2eNS).Delete(context.Background(), svc.Name, metav1.DeleteOptions{})
			var got []corev1.IPFamily
			for _, ip := range svc.Spec.ClusterIPs {
				got = append(got, famOf(ip))
			}
			if !slices.Equal(got, tc.want) || !slices.Equal(svc.Spec.IPFamilies, tc.want) {
				t.Fatalf("service %s: clusterIPs %v (families %v), ipFamilies %v; want families %v",
					svc.Name, svc.Spec.ClusterIPs, got, svc.Spec.IPFamilies, tc.want)
			}
			for _, ip := range svc.Spec.ClusterIPs {
				for _, c := range []struct{ from, proto, port string }{
					{"a1", "tcp", "8080"}, {"a1", "udp", "8081"}, // endpoint on the other node
					{"b1", "tcp", "8080"}, // endpoint is the client itself (hairpin)
				} {
					target := net.JoinHostPort(ip, c.port)
					// kube-proxy programs the rules a moment after the Service appears.
					err := eventually(30*time.Second, func() error {
						got, err := s.probe(ctx, e2eNS+"/"+c.from, c.proto, target)
						if err == nil && got != "b1" {
							err = fmt.Errorf("answered %q, want b1", got)
						}
						return err
					})
					if err != nil {
						t.Errorf("%s -> service %s (%s) %s %s: %v", c.from, svc.Name, famOf(ip), c.proto, target, err)
					}
				}
			}
		})
	}
}

// TestPodDeletionFreesResources: deleting a pod makes kubelet call CNI DEL;
// its OVS port, flows and IP are gone afterwards.
func TestPodDeletionFreesResources(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node := s.cfg.NodeName(1)
	p := localcluster.TestServerPod(e2eNS, "short-lived", node, map[string]string{"app": "short-lived"})
	if _, err := s.client.CoreV1().Pods(e2eNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods, err := localcluster.WaitPodsRunning(ctx, s.client, e2eNS, "app=short-lived", 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// The pod's address of each family, and where the agent keeps it.
	type famState struct {
		ip       string
		re       *regexp.Regexp
		ipamFile string
	}
	var fams []famState
	for _, fam := range s.families() {
		ip, err := podIP(&pods[0], fam)
		if err != nil {
			t.Fatal(err)
		}
		f := famState{ip, ipRE(ip), "/var/lib/weir/ipam.json"}
		if fam == corev1.IPv6Protocol {
			f.re, f.ipamFile = ip6RE(ip), "/var/lib/weir/ipam-v6.json"
		}
		fams = append(fams, f)
	}
	// By pod name: on a dual-stack node external_ids:ip holds both addresses.
	ports := func() string {
		out, _ := s.nodeExec(ctx, node, "ovs-vsctl", "--columns=name,external_ids", "find", "Port",
			"external_ids:pod-namespace="+e2eNS, "external_ids:pod-name=short-lived")
		return out
	}
	flowsOf := func(re *regexp.Regexp) string {
		out, _ := s.nodeExec(ctx, node, "ovs-ofctl", "-O", "OpenFlow15", "dump-flows", "br-int")
		return strings.Join(linesMatching(out, re), "\n")
	}
	flows := func() string {
		var f string
		for _, fs := range fams {
			f += flowsOf(fs.re)
		}
		return f
	}
	for _, fs := range fams {
		if flowsOf(fs.re) == "" {
			t.Fatalf("pod %s: no flows found before deletion", fs.ip)
		}
	}
	if ports() == "" {
		t.Fatalf("pod %s: no OVS port found before deletion", pods[0].Status.PodIP)
	}
	if err := s.client.CoreV1().Pods(e2eNS).Delete(ctx, "short-lived", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = eventually(60*time.Second, func() error {
		if _, err := s.client.CoreV1().Pods(e2eNS).Get(ctx, "short-lived", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("pod still exists")
		}
		if p := ports(); p != "" {
			return fmt.Errorf("port still in OVSDB: %s", p)
		}
		if f := flows(); f != "" {
			return fmt.Errorf("flows for %v still installed:\n%s", pods[0].Status.PodIPs, f)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The IPs are free again: the node's IPAM store of each family (ipam.json
	// for IPv4, ipam-v6.json for IPv6) no longer holds them.
	for _, fs := range fams {
		ipam, err := s.nodeExec(ctx, node, "cat", fs.ipamFile)
		if err != nil {
			t.Fatal(err)
		}
		var store struct {
			Allocations map[string]string `json:"allocations"`
		}
		if err := json.Unmarshal([]byte(ipam), &store); err != nil {
			t.Fatalf("parsing %s: %v\n%s", fs.ipamFile, err, ipam)
		}
		for owner, a := range store.Allocations {
			if a == fs.ip {
				t.Errorf("IP %s still allocated to %s in %s on %s", fs.ip, owner, fs.ipamFile, node)
			}
		}
	}
}

// continuousProbe probes hostport from pod every 100ms until stop is closed
// and reports how many probes failed out of how many.
func (s *suite) continuousProbe(from, hostport string, stop <-chan struct{}) (failed, total *int, done *sync.WaitGroup) {
	failed, total = new(int), new(int)
	done = &sync.WaitGroup{}
	done.Add(1)
	go func() {
		defer done.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if _, err := s.probe(ctx, from, "tcp", hostport); err != nil {
				*failed++
			}
			*total++
			cancel()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return failed, total, done
}

// TestOVSRestart: killing the ovs sidecar (ovsdb-server + ovs-vswitchd)
// makes kubelet restart it; the agent reconnects and replays its flows, and
// pods talk again within seconds.
func TestOVSRestart(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	node := s.cfg.NodeName(2)
	agent, err := s.agentPod(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	id, restarts, _ := containerState(agent, "ovs")
	killed := time.Now()
	if err := s.killContainer(ctx, node, id); err != nil {
		t.Fatal(err)
	}
	err = eventually(90*time.Second, func() error {
		_, err := s.probe(ctx, e2eNS+"/a1", "tcp", net.JoinHostPort(s.pods["b1"].Status.PodIP, "80"))
		return err
	})
	if err != nil {
		t.Fatalf("a1 -> b1 after the ovs container on %s was killed: %v", node, err)
	}
	t.Logf("cross-node traffic back %.1fs after the ovs container was killed", time.Since(killed).Seconds())
	if err := s.waitContainerRestarted(ctx, node, "ovs", restarts, time.Minute); err != nil {
		t.Error(err)
	}
}

// TestAgentRestart: killing the ovs-agent container keeps existing pods'
// traffic flowing (the datapath does not depend on the agent), and a new pod
// works once the agent is back.
func TestAgentRestart(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	node := s.cfg.NodeName(1)
	agent, err := s.agentPod(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	id, restarts, _ := containerState(agent, "ovs-agent")
	stop := make(chan struct{})
	failed, total, done := s.continuousProbe(e2eNS+"/a1", net.JoinHostPort(s.pods["b1"].Status.PodIP, "80"), stop)
	if err := s.killContainer(ctx, node, id); err != nil {
		t.Fatal(err)
	}
	err = s.waitContainerRestarted(ctx, node, "ovs-agent", restarts, 2*time.Minute)
	time.Sleep(2 * time.Second) // keep probing past the restart
	close(stop)
	done.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("during the agent restart %d of %d probes a1 -> b1 failed", *failed, *total)
	if *failed > 0 {
		t.Errorf("%d of %d probes of an existing connection path failed while the agent restarted", *failed, *total)
	}
	p := localcluster.TestServerPod(e2eNS, "after-restart", node, map[string]string{"app": "after-restart"})
	if _, err := s.client.CoreV1().Pods(e2eNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer s.client.CoreV1().Pods(e2eNS).Delete(context.Background(), p.Name, metav1.DeleteOptions{})
	pods, err := localcluster.WaitPodsRunning(ctx, s.client, e2eNS, "app=after-restart", 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	s.expectAnswer(t, e2eNS+"/b1", "tcp", net.JoinHostPort(pods[0].Status.PodIP, "80"), "after-restart")
}

// TestNodeJoinAndLeave: a third node joins and gets connectivity both ways;
// when it is removed, the other nodes drop its route and tunnel flows.
func TestNodeJoinAndLeave(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	joined := time.Now()
	if err := localcluster.AddNode(ctx, s.cfg, 3); err != nil {
		t.Fatal(err)
	}
	removed := false
	defer func() {
		if !removed {
			_ = localcluster.RemoveNode(context.Background(), s.cfg, 3)
		}
	}()
	if err := localcluster.WaitReady(ctx, s.cfg, 3, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("node 3 Ready with its weir-agent %.1fs after it started", time.Since(joined).Seconds())
	node3 := s.cfg.NodeName(3)
	p := localcluster.TestServerPod(e2eNS, "c1", node3, map[string]string{"app": "c1"})
	if _, err := s.client.CoreV1().Pods(e2eNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods, err := localcluster.WaitPodsRunning(ctx, s.client, e2eNS, "app=c1", 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c1 := pods[0]
	s.expectAnswer(t, e2eNS+"/a1", "tcp", net.JoinHostPort(c1.Status.PodIP, "80"), "c1")
	s.expectAnswer(t, e2eNS+"/c1", "udp", net.JoinHostPort(s.pods["a1"].Status.PodIP, "81"), "a1")

	n3, err := s.client.CoreV1().Nodes().Get(ctx, node3, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cidr, node1 := n3.Spec.PodCIDR, s.cfg.NodeName(1)
	// `ip route show PREFIX` lists IPv4 routes unless told -6.
	family := "-4"
	if famOf(strings.Split(cidr, "/")[0]) == corev1.IPv6Protocol {
		family = "-6"
	}
	routes := func() string { out, _ := s.nodeExec(ctx, node1, "ip", family, "route", "show", cidr); return out }
	tunnel := func() string {
		out, _ := s.nodeExec(ctx, node1, "ovs-ofctl", "-O", "OpenFlow15", "dump-flows", "br-int")
		return strings.Join(linesMatching(out, addrRE(s.cfg.PrimaryNodeIP(3))), "\n")
	}
	if routes() == "" || tunnel() == "" {
		t.Fatalf("node 1 has no route (%q) or tunnel flows for node 3 while it is up", routes())
	}
	_ = s.client.CoreV1().Pods(e2eNS).Delete(ctx, "c1", metav1.DeleteOptions{})
	if err := localcluster.RemoveNode(ctx, s.cfg, 3); err != nil {
		t.Fatal(err)
	}
	removed = true
	err = eventually(10*time.Second, func() error {
		if r := routes(); r != "" {
			return fmt.Errorf("route to node 3's pod CIDR still on node 1: %s", r)
		}
		if f := tunnel(); f != "" {
			return fmt.Errorf("flows towards node 3 still on node 1:\n%s", f)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// linesMatching returns the lines of out that re matches.
func linesMatching(out string, re *regexp.Regexp) []string {
	var hits []string
	for _, l := range strings.Split(out, "\n") {
		if re.MatchString(l) {
			hits = append(hits, l)
		}
	}
	return hits
}

// ipRE matches ip as a whole address (not 10.0.0.1 in 10.0.0.12).
// ip6RE matches an IPv6 address as a whole (not a prefix of a longer one),
// also as ovs-ofctl writes it after "set_field:" (its colon and the "d"
// before it would otherwise read as part of the address).
func ip6RE(ip string) *regexp.Regexp {
	return regexp.MustCompile(`(^|[^0-9a-fA-F:]|set_field:)` + regexp.QuoteMeta(ip) + `([^0-9a-fA-F:]|$)`)
}

func ipRE(ip string) *regexp.Regexp {
	return regexp.MustCompile(`(^|[^0-9.])` + regexp.QuoteMeta(ip) + `([^0-9.]|$)`)
}
