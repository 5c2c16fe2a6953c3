package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
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

// ipFamilies are the address families every family-table test runs over:
// the e2e cluster is dual-stack (localcluster.DefaultConfig), so a pod has
// one address of each in status.podIPs.
var ipFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}

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
