package e2e

// The local cluster behaves like a real one: the control plane is a node of
// the pod network (the API server reaches pods and Services), cluster DNS
// answers, the documented commands work as written, and nothing for cluster
// addresses leaves the machine's root network namespace (checked again at the
// end of the run, TestMain).

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weirnet/weir/pkg/localcluster"
	"github.com/weirnet/weir/test/k8stest"
)

// TestClusterControlPlaneNode: the control plane runs in the control-plane
// node's network namespace; that node is Ready, tainted NoSchedule, runs
// Weir's agent, and the API server advertises its address.
func TestClusterControlPlaneNode(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := s.cfg.NodeName(localcluster.ControlPlane)
	n, err := s.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(n.Spec.Taints, func(tn corev1.Taint) bool {
		return tn.Key == localcluster.ControlPlaneTaint && tn.Effect == corev1.TaintEffectNoSchedule
	}) {
		t.Errorf("node %s taints %v lack %s:NoSchedule", name, n.Spec.Taints, localcluster.ControlPlaneTaint)
	}
	if _, ok := n.Labels[localcluster.ControlPlaneTaint]; !ok {
		t.Errorf("node %s lacks the label %s", name, localcluster.ControlPlaneTaint)
	}
	if _, err := s.agentPod(ctx, name); err != nil {
		t.Errorf("Weir's agent on the control-plane node: %v", err)
	}
	eps, err := s.client.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The advertise address: of the primary family (IPv6 on an IPv6-only cluster).
	if cp := s.cfg.PrimaryNodeIP(localcluster.ControlPlane); len(eps.Endpoints) != 1 || !slices.Contains(eps.Endpoints[0].Addresses, cp) {
		t.Errorf("Service kubernetes endpoints %+v, want the control-plane node's %s", eps.Endpoints, cp)
	}

	cpNS, err := netnsID("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		b, err := os.ReadFile(filepath.Join(s.cfg.Dir, "run", c+".pid"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.Readlink("/proc/" + strings.TrimSpace(string(b)) + "/ns/net")
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if got != cpNS {
			t.Errorf("%s runs in network namespace %s, want the control-plane node's %s", c, got, cpNS)
		}
	}
}

// TestClusterNoClusterRoutesInRootNetNS: the machine's own routing tables
// know no pod or service address (they live only inside the cluster's
// namespaces), and the leak guard is in place; for each family of the
// cluster.
func TestClusterNoClusterRoutesInRootNetNS(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Per family: the cluster's ranges, a pod address no node owns (in a
	// node-sized block the controller-manager has not handed out) and a
	// ClusterIP no Service has (kube-proxy has no rule for it).
	type famCase struct {
		fam                  corev1.IPFamily
		cidrs                []string
		unowned, unallocated string
	}
	cases := map[corev1.IPFamily]famCase{
		corev1.IPv4Protocol: {corev1.IPv4Protocol, []string{s.cfg.ClusterCIDR, s.cfg.ServiceCIDR}, "10.244.250.9", "10.96.250.9"},
		corev1.IPv6Protocol: {corev1.IPv6Protocol, []string{s.cfg.ClusterCIDRv6, s.cfg.ServiceCIDRv6}, "fd00:10:244:fa::9", "fd00:10:96::fa09"},
	}
	for _, fam := range s.families() {
		c := cases[fam]
		flag := map[corev1.IPFamily]string{corev1.IPv4Protocol: "-4", corev1.IPv6Protocol: "-6"}[fam]
		out, err := exec.CommandContext(ctx, "ip", flag, "route", "show", "table", "all").CombinedOutput()
		if err != nil {
			t.Fatalf("ip route: %v: %s", err, out)
		}
		var cidrs []netip.Prefix
		for _, cidr := range c.cidrs {
			cidrs = append(cidrs, netip.MustParsePrefix(cidr))
		}
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) == 0 {
				continue
			}
			dst := f[0]
			if slices.Contains([]string{"local", "broadcast", "unicast", "blackhole", "unreachable", "prohibit", "anycast", "multicast"}, dst) && len(f) > 1 {
				dst = f[1]
			}
			if dst == "default" {
				continue
			}
			p, err := netip.ParsePrefix(dst)
			if err != nil {
				a, aerr := netip.ParseAddr(dst)
				if aerr != nil {
					continue
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			for _, c := range cidrs {
				if c.Overlaps(p) {
					t.Errorf("the root network namespace routes cluster addresses: %s", l)
				}
			}
		}
	}
	for _, c := range []string{localcluster.GuardForwarded, localcluster.GuardSent} {
		if _, err := localcluster.GuardCount(ctx, s.cfg, "", c); err != nil {
			t.Errorf("leak guard counter %s: %v", c, err)
		}
	}

	// A pod address no node owns is unreachable on a node and in a pod,
	// not sent on towards the host.
	before, err := localcluster.GuardCount(ctx, s.cfg, "", localcluster.GuardForwarded)
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range s.families() {
		c := cases[fam]
		if out, err := s.nodeExec(ctx, s.cfg.NodeName(1), "ip", "route", "get", c.unowned); err == nil {
			t.Errorf("node 1 routes the unowned pod address %s: %s", c.unowned, out)
		}
		if out, err := s.probe(ctx, e2eNS+"/a1", "udp", net.JoinHostPort(c.unowned, "81")); err == nil {
			t.Errorf("a probe to the unowned pod address %s was answered: %s", c.unowned, out)
		}
		// Likewise a ClusterIP no Service has, from a pod and from a node.
		if out, err := s.probe(ctx, e2eNS+"/a1", "udp", net.JoinHostPort(c.unallocated, "81")); err == nil {
			t.Errorf("a probe to the unallocated ClusterIP %s was answered: %s", c.unallocated, out)
		}
		if out, err := s.nodeProbe(ctx, s.cfg.NodeName(2), "tcp", net.JoinHostPort(c.unallocated, "80")); err == nil {
			t.Errorf("a probe from node 2 to the unallocated ClusterIP %s was answered: %s", c.unallocated, out)
		}
	}
	if after, err := localcluster.GuardCount(ctx, s.cfg, "", localcluster.GuardForwarded); err != nil || after != before {
		leaks, _ := localcluster.GuardLeaks(ctx, s.cfg, "")
		t.Errorf("the leak guard counted %d packets (err %v) while pods and nodes probed unowned cluster addresses: %s", after-before, err, leaks)
	}
}

// TestClusterAPIServerReachesPods: the API server's pod and service proxy
// reach pods on every worker node, and kubectl port-forward works.
func TestClusterAPIServerReachesPods(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, pod := range []string{"a1", "b1"} {
		got, err := s.client.CoreV1().Pods(e2eNS).ProxyGet("http", pod, "80", "/", nil).DoRaw(ctx)
		if err != nil {
			t.Errorf("apiserver proxy to pod %s (node %s): %v", pod, s.pods[pod].Spec.NodeName, err)
		} else if strings.TrimSpace(string(got)) != pod {
			t.Errorf("apiserver proxy to pod %s answered %q", pod, got)
		}
	}

	ns := newNamespace(ctx, t, s, "cluster-proxy")
	srv := localcluster.TestServerPod(ns, "srv", s.cfg.NodeName(2), map[string]string{"app": "srv"})
	if _, err := s.client.CoreV1().Pods(ns).Create(ctx, srv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createService(ctx, t, s, ns, "web", "app=srv", false)
	if _, err := localcluster.WaitPodsRunning(ctx, s.client, ns, "app=srv", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	err := eventually(30*time.Second, func() error {
		got, err := s.client.CoreV1().Services(ns).ProxyGet("http", "web", "80", "/", nil).DoRaw(ctx)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(got)) != "srv" {
			return fmt.Errorf("answered %q, want srv", got)
		}
		return nil
	})
	if err != nil {
		t.Errorf("apiserver service proxy to %s/web: %v", ns, err)
	}

	// kubectl port-forward to b1 on a free local port.
	pf := s.cfg.Kubectl(ctx, "-n", e2eNS, "port-forward", "--address", "127.0.0.1", "pod/b1", ":80")
	stdout, err := pf.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	pf.Stderr = os.Stderr
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pf.Process.Kill(); _ = pf.Wait() }()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		re := regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+)`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case a := <-addr:
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get("http://" + a + "/")
		if err != nil {
			t.Fatalf("through kubectl port-forward: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.TrimSpace(string(body)) != "b1" {
			t.Errorf("through kubectl port-forward: answered %q, want b1", body)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("kubectl port-forward printed no local address")
	}
}

// TestClusterDNS: kubelet's clusterDNS is the kube-dns Service, and a pod
// resolves, through its own resolv.conf, a Service name, a headless
// Service with its pod's hostname record, a pod record, and only cluster
// names.
func TestClusterDNS(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dnsIP := s.cfg.DNSServiceIP()
	for _, i := range []int{localcluster.ControlPlane, 1, 2} {
		node := s.cfg.NodeName(i)
		raw, err := s.client.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", node, "proxy", "configz").DoRaw(ctx)
		if err != nil {
			t.Fatalf("kubelet configz of %s: %v", node, err)
		}
		var cz struct {
			KubeletConfig struct {
				ClusterDNS    []string `json:"clusterDNS"`
				ClusterDomain string   `json:"clusterDomain"`
			} `json:"kubeletconfig"`
		}
		if err := json.Unmarshal(raw, &cz); err != nil {
			t.Fatalf("kubelet configz of %s: %v", node, err)
		}
		if !slices.Equal(cz.KubeletConfig.ClusterDNS, []string{dnsIP}) || cz.KubeletConfig.ClusterDomain != "cluster.local" {
			t.Errorf("kubelet %s: clusterDNS %v domain %q, want [%s] cluster.local", node, cz.KubeletConfig.ClusterDNS, cz.KubeletConfig.ClusterDomain, dnsIP)
		}
	}
	kdns, err := s.client.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if kdns.Spec.ClusterIP != dnsIP {
		t.Errorf("Service kube-dns has ClusterIP %s, want %s", kdns.Spec.ClusterIP, dnsIP)
	}

	ns := newNamespace(ctx, t, s, "cluster-dns")
	// A server with a hostname under headless Service "hl", and a client
	// with busybox's nslookup (the weir-agent image carries busybox).
	srv := localcluster.TestServerPod(ns, "srv", s.cfg.NodeName(1), map[string]string{"app": "dns-srv"})
	srv.Spec.Hostname, srv.Spec.Subdomain = "srv-host", "hl"
	zero := int64(0)
	client := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client", Labels: map[string]string{"app": "dns-client"}},
		Spec: corev1.PodSpec{
			NodeName:                      s.cfg.NodeName(2),
			TerminationGracePeriodSeconds: &zero,
			Containers: []corev1.Container{{
				Name: "c", Image: "weir-agent:dev", ImagePullPolicy: corev1.PullNever,
				Command: []string{"/bin/sleep", "3600"},
			}},
		},
	}
	for _, p := range []*corev1.Pod{srv, client} {
		if _, err := s.client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	web := createService(ctx, t, s, ns, "web", "app=dns-srv", false)
	createService(ctx, t, s, ns, "hl", "app=dns-srv", true)
	srvPods, err := localcluster.WaitPodsRunning(ctx, s.client, ns, "app=dns-srv", 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := localcluster.WaitPodsRunning(ctx, s.client, ns, "app=dns-client", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	srvIP := srvPods[0].Status.PodIP

	resolv, err := combined(s.cfg.Kubectl(ctx, "exec", "-n", ns, "client", "--", "cat", "/etc/resolv.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"nameserver " + dnsIP, "search " + ns + ".svc.cluster.local svc.cluster.local cluster.local"} {
		if !strings.Contains(resolv, want) {
			t.Errorf("the pod's resolv.conf lacks %q:\n%s", want, resolv)
		}
	}

	// busybox prints each answer as "Address: IP" (and the server as
	// "Address: IP:53" or "[IP6]:53", which is no address).
	addrRE := regexp.MustCompile(`(?m)^Address:\s*(\S+)\s*$`)
	lookup := func(name string) ([]string, error) {
		out, err := combined(s.cfg.Kubectl(ctx, "exec", "-n", ns, "client", "--", "nslookup", name))
		var addrs []string
		for _, m := range addrRE.FindAllStringSubmatch(out, -1) {
			// Canonical spelling: busybox and the API server may write an
			// IPv6 address differently.
			if a, err := netip.ParseAddr(m[1]); err == nil {
				addrs = append(addrs, a.String())
			}
		}
		return addrs, err
	}
	// A pod record is the address with dashes: a-b-c-d, or for IPv6 the
	// colons as dashes (fd00-10-244-1--5), as CoreDNS reads it back.
	podRecord := strings.NewReplacer(".", "-", ":", "-").Replace(srvIP) + "." + ns + ".pod.cluster.local"
	tests := []struct{ name, want string }{
		{"web." + ns + ".svc.cluster.local", web.Spec.ClusterIP},
		{"kubernetes.default.svc.cluster.local", netip.MustParsePrefix(s.cfg.PrimaryServiceCIDR()).Masked().Addr().Next().String()},
		{"hl." + ns + ".svc.cluster.local", srvIP},
		{"srv-host.hl." + ns + ".svc.cluster.local", srvIP},
		{podRecord, srvIP},
	}
	for _, tt := range tests {
		// Endpoints reach CoreDNS through its watch a moment after the pod is Ready.
		err := eventually(20*time.Second, func() error {
			got, err := lookup(tt.name)
			if err != nil {
				return err
			}
			if want := netip.MustParseAddr(tt.want).String(); !slices.Equal(got, []string{want}) {
				return fmt.Errorf("resolved to %v, want [%s]", got, tt.want)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
	// No outside DNS: a name outside the cluster is not answered, and a
	// missing Service is NXDOMAIN.
	for _, name := range []string{"example.com", "missing." + ns + ".svc.cluster.local"} {
		if got, err := lookup(name); err == nil || len(got) > 0 {
			t.Errorf("%s resolved to %v (err %v), want no answer", name, got, err)
		}
	}
}

// TestClusterREADMEExamples runs the node-exec and pod-exec examples of
// README.md and docs/local-cluster.md as written — from the repository root,
// with relative paths like bin/test-server — substituting only this
// cluster's node names, pods and pod IPs for the documented ones.
func TestClusterREADMEExamples(t *testing.T) {
	s := need(t)
	root, err := k8stest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, doc := range []string{"README.md", filepath.Join("docs", "local-cluster.md")} {
		b, err := os.ReadFile(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			// Examples, not the synopsis lines (NODE -- CMD...).
			if (strings.HasPrefix(l, "bin/weir-local node-exec ") || strings.HasPrefix(l, "bin/weir-local pod-exec ")) &&
				!strings.Contains(l, "CMD...") {
				if i := strings.Index(l, "  #"); i > 0 {
					l = l[:i]
				}
				lines = append(lines, strings.TrimSpace(l))
			}
		}
	}
	slices.Sort(lines)
	lines = slices.Compact(lines)
	if !slices.ContainsFunc(lines, func(l string) bool {
		return strings.Contains(l, "pod-exec") && strings.Contains(l, "-- bin/test-server probe")
	}) {
		t.Fatalf("the docs show no `pod-exec ... -- bin/test-server probe` example; found %q", lines)
	}
	b1IP := s.pods["b1"].Status.PodIP
	// A documented pod IP, with its port if it has one: b1's address (of
	// the primary family, IPv6 in brackets before a port).
	podIP := regexp.MustCompile(`10\.244\.\d+\.\d+(:\d+)?`)
	subst := func(m string) string {
		if _, port, ok := strings.Cut(m, ":"); ok {
			return net.JoinHostPort(b1IP, port)
		}
		return b1IP
	}
	repl := strings.NewReplacer(
		"weir-demo/server-weir-node1", e2eNS+"/a1", "weir-demo/server-weir-node2", e2eNS+"/b1",
		"weir-node1", s.cfg.NodeName(1), "weir-node2", s.cfg.NodeName(2))
	for _, l := range lines {
		cmdline := podIP.ReplaceAllStringFunc(repl.Replace(l), subst)
		t.Run(l, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "sh", "-c", cmdline)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "WEIR_LOCAL_DIR="+s.cfg.Dir, "WEIR_K8S_BIN="+s.cfg.K8sBin)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", cmdline, err, out)
			}
			if strings.Contains(cmdline, "test-server probe") && strings.TrimSpace(string(out)) != "b1" {
				t.Errorf("%s answered %q, want b1", cmdline, out)
			}
		})
	}
}

// newNamespace creates a namespace for one test and deletes it afterwards.
func newNamespace(ctx context.Context, t *testing.T, s *suite, name string) string {
	t.Helper()
	if _, err := s.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// createService creates a TCP Service on port 80 selecting pods by one
// label (key=value); headless gives it no ClusterIP.
func createService(ctx context.Context, t *testing.T, s *suite, ns, name, selector string, headless bool) *corev1.Service {
	t.Helper()
	k, v, _ := strings.Cut(selector, "=")
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{k: v},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}},
		},
	}
	if headless {
		svc.Spec.ClusterIP = corev1.ClusterIPNone
	}
	created, err := s.client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return created
}

// netnsID names a network namespace as /proc/PID/ns/net links do.
func netnsID(path string) (string, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return "", fmt.Errorf("network namespace %s: %w", path, err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino), nil
}

// checkNoLeaks reports packets the leak guard counted during the run:
// packets for cluster addresses that reached the machine's root network
// namespace on their way out of the machine.
func checkNoLeaks(cfg localcluster.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []string
	for _, c := range []string{localcluster.GuardForwarded, localcluster.GuardSent} {
		n, err := localcluster.GuardCount(ctx, cfg, "", c)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if n != 0 {
			errs = append(errs, fmt.Sprintf("%d packets for cluster addresses (%s, %s) %s towards the machine's default route",
				n, cfg.ClusterCIDRs(), cfg.ServiceCIDRs(), map[string]string{
					localcluster.GuardForwarded: "came from the cluster's nodes",
					localcluster.GuardSent:      "were sent by root-namespace processes",
				}[c]))
		}
	}
	if len(errs) > 0 {
		leaks, _ := localcluster.GuardLeaks(ctx, cfg, "")
		return fmt.Errorf("leak guard: %s; dropped flows (source . destination . protocol . port): %s", strings.Join(errs, "; "), leaks)
	}
	return nil
}
