package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weirnet/weir/pkg/localcluster"
)

// probe runs `test-server probe` inside pod from (NS/NAME) against hostport
// and returns the answer (the serving pod's name).
func (s *suite) probe(ctx context.Context, from, proto, hostport string) (string, error) {
	cmd, err := localcluster.PodExec(ctx, s.cfg, from, s.bin, "probe", "--proto", proto, "--to", hostport, "--timeout", "2s")
	if err != nil {
		return "", err
	}
	return combined(cmd)
}

// nodeProbe probes hostport from node's network namespace.
func (s *suite) nodeProbe(ctx context.Context, node, proto, hostport string) (string, error) {
	return s.nodeExec(ctx, node, s.bin, "probe", "--proto", proto, "--to", hostport, "--timeout", "2s")
}

// podRun runs a host command inside a pod's network namespace.
func (s *suite) podRun(ctx context.Context, from string, args ...string) (string, error) {
	cmd, err := localcluster.PodExec(ctx, s.cfg, from, args...)
	if err != nil {
		return "", err
	}
	return combined(cmd)
}

func (s *suite) nodeExec(ctx context.Context, node string, args ...string) (string, error) {
	cmd, err := localcluster.NodeExec(ctx, s.cfg, node, args...)
	if err != nil {
		return "", err
	}
	return combined(cmd)
}

func combined(cmd *exec.Cmd) (string, error) {
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, s)
	}
	return s, nil
}

// expectAnswer fails the test unless probing hostport from pod from gets
// the answer want.
func (s *suite) expectAnswer(t *testing.T, from, proto, hostport, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := s.probe(ctx, from, proto, hostport)
	if err != nil {
		t.Errorf("%s -> %s %s: %v", from, proto, hostport, err)
		return
	}
	if got != want {
		t.Errorf("%s -> %s %s: answered %q, want %q", from, proto, hostport, got, want)
	}
}

// eventually retries f every 200ms until it succeeds or timeout passes.
func eventually(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// agentPod returns the weir-agent pod on node.
func (s *suite) agentPod(ctx context.Context, node string) (*corev1.Pod, error) {
	l, err := s.client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=weir,app.kubernetes.io/component=agent",
		FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil {
		return nil, err
	}
	if len(l.Items) != 1 {
		return nil, fmt.Errorf("%d weir-agent pods on %s, want 1", len(l.Items), node)
	}
	return &l.Items[0], nil
}

// containerState returns the container ID and restart count of container
// name in pod.
func containerState(pod *corev1.Pod, name string) (id string, restarts int32, ready bool) {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == name {
			return strings.TrimPrefix(cs.ContainerID, "containerd://"), cs.RestartCount, cs.Ready
		}
	}
	return "", 0, false
}

// killContainer kills a container's processes with SIGKILL through the
// node's containerd, as a crash would; kubelet then restarts it.
func (s *suite) killContainer(ctx context.Context, node, id string) error {
	_, err := s.nodeExec(ctx, node, "ctr", "-a", "/run/containerd/containerd.sock", "-n", "k8s.io",
		"tasks", "kill", "-s", "SIGKILL", id)
	return err
}

// waitContainerRestarted waits until container name of the weir-agent pod on
// node has restarted past restarts and is ready again.
func (s *suite) waitContainerRestarted(ctx context.Context, node, name string, restarts int32, timeout time.Duration) error {
	return eventually(timeout, func() error {
		p, err := s.agentPod(ctx, node)
		if err != nil {
			return err
		}
		_, n, ready := containerState(p, name)
		if n <= restarts || !ready {
			return fmt.Errorf("container %s on %s: restarts %d (was %d), ready %v", name, node, n, restarts, ready)
		}
		return nil
	})
}

// allFamilies are the address families every family-table test has a
// subtest for. The cluster is dual-stack by default
// (localcluster.DefaultConfig; WEIR_E2E_IP_FAMILY chooses another), where
// a pod has one address of each in status.podIPs; the subtest of a family
// the cluster lacks skips (requireFamily), so that it shows as not run.
var allFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}

// families returns the cluster's address families, IPv4 first.
func (s *suite) families() []corev1.IPFamily { return clusterFamilies(s.cfg) }

func clusterFamilies(cfg localcluster.Config) []corev1.IPFamily {
	var out []corev1.IPFamily
	if cfg.HasIPv4() {
		out = append(out, corev1.IPv4Protocol)
	}
	if cfg.HasIPv6() {
		out = append(out, corev1.IPv6Protocol)
	}
	return out
}

// hasFamily reports whether the cluster has addresses of fam.
func (s *suite) hasFamily(fam corev1.IPFamily) bool {
	return fam == corev1.IPv4Protocol && s.cfg.HasIPv4() || fam == corev1.IPv6Protocol && s.cfg.HasIPv6()
}

// primaryFamily is the family of the cluster's primary addresses (podIP,
// the node's first InternalIP, Services that name no family).
func (s *suite) primaryFamily() corev1.IPFamily { return s.families()[0] }

// requireFamily skips t, saying why, when the cluster has no fam addresses.
func (s *suite) requireFamily(t *testing.T, fam corev1.IPFamily) {
	t.Helper()
	if !s.hasFamily(fam) {
		t.Skipf("the cluster is %s (WEIR_E2E_IP_FAMILY): it has no %s pod, Service or node addresses", s.cfg.IPFamily, fam)
	}
}

// requireIPv4 skips a test that only means something over IPv4 on a
// cluster without IPv4, saying what of IPv4 it checks.
func (s *suite) requireIPv4(t *testing.T, what string) {
	t.Helper()
	if !s.cfg.HasIPv4() {
		t.Skipf("IPv4-specific (%s); the cluster is %s and has no IPv4 addresses", what, s.cfg.IPFamily)
	}
}

// tunnelOverhead is what the Geneve tunnel adds to a pod packet on the
// underlay: 50 bytes over IPv4, 70 over IPv6 (an IPv6-only cluster's
// underlay), docs/overlay.md.
func (s *suite) tunnelOverhead() int {
	if s.cfg.HasIPv4() {
		return 50
	}
	return 70
}

// addrRE matches ip, an address (or CIDR) of either family, as a whole.
func addrRE(ip string) *regexp.Regexp {
	if strings.Contains(ip, ":") {
		return ip6RE(ip)
	}
	return ipRE(ip)
}

// podIP returns pod's address of family fam from status.podIPs. It is an
// error when the pod has none, or more than one, of that family.
func podIP(pod *corev1.Pod, fam corev1.IPFamily) (string, error) {
	var found []string
	for _, pip := range pod.Status.PodIPs {
		a, err := netip.ParseAddr(pip.IP)
		if err != nil {
			return "", fmt.Errorf("pod %s/%s: status.podIPs entry %q: %w", pod.Namespace, pod.Name, pip.IP, err)
		}
		if a.Is4() == (fam == corev1.IPv4Protocol) && !a.Is4In6() {
			found = append(found, pip.IP)
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("pod %s/%s: %d %s addresses in status.podIPs %v, want 1", pod.Namespace, pod.Name, len(found), fam, pod.Status.PodIPs)
	}
	return found[0], nil
}

// mustPodIP is podIP for a test: it fails t at once when there is no
// address of fam.
func mustPodIP(t testing.TB, pod corev1.Pod, fam corev1.IPFamily) string {
	t.Helper()
	ip, err := podIP(&pod, fam)
	if err != nil {
		t.Fatal(err)
	}
	return ip
}

// famOf returns the family of an IP address literal ("" if it is none).
func famOf(ip string) corev1.IPFamily {
	a, err := netip.ParseAddr(ip)
	switch {
	case err != nil:
		return ""
	case a.Is4() || a.Is4In6():
		return corev1.IPv4Protocol
	default:
		return corev1.IPv6Protocol
	}
}

// TestAddrRE: the address matchers find an address where ovs-ofctl, ip and
// the IPAM store write it, and not inside a longer one. No cluster needed.
func TestAddrRE(t *testing.T) {
	tests := []struct {
		ip, line string
		want     bool
	}{
		{"172.31.240.13", "actions=set_field:172.31.240.13->tun_dst,output:1", true},
		{"172.31.240.13", "actions=set_field:172.31.240.130->tun_dst", false},
		{"10.244.1.5", "ip,nw_dst=10.244.1.5 actions=", true},
		{"10.244.1.5", "ip,nw_dst=10.244.1.51 actions=", false},
		{"fd00:172:31:240::13", "actions=set_field:fd00:172:31:240::13->tun_ipv6_dst,output:1", true},
		{"fd00:172:31:240::13", "actions=set_field:fd00:172:31:240::130->tun_ipv6_dst", false},
		{"fd00:172:31:240::13", "tun_ipv6_src=fd00:172:31:240::13,ipv6", true},
		{"fd00:10:244:1::5", "ipv6,ipv6_dst=fd00:10:244:1::5 actions=", true},
		{"fd00:10:244:1::5", "ipv6,ipv6_dst=fd00:10:244:1::5a actions=", false},
		{"fd00:10:244:1::5", "ipv6,ipv6_dst=afd00:10:244:1::5 actions=", false},
		{"fd00:10:244:1::5", `"k": "fd00:10:244:1::5"`, true},
		{"fd00:10:96::/112", "ipv6,ipv6_dst=fd00:10:96::/112 actions=", true},
	}
	for _, tt := range tests {
		if got := addrRE(tt.ip).MatchString(tt.line); got != tt.want {
			t.Errorf("addrRE(%s) on %q: %v, want %v", tt.ip, tt.line, got, tt.want)
		}
	}
}
