package localcluster

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TestServerImage is the image of cmd/test-server imported on every node.
const TestServerImage = "weir-test-server:dev"

// TestServerPod returns a pod pinned to node running `test-server serve` on
// ports (TCP and UDP each), answering with its pod name.
func TestServerPod(ns, name, node string, labels map[string]string, ports ...int) *corev1.Pod {
	if len(ports) == 0 {
		ports = []int{80, 81}
	}
	var ps []string
	var cports []corev1.ContainerPort
	for _, p := range ports {
		ps = append(ps, fmt.Sprint(p))
		cports = append(cports,
			corev1.ContainerPort{Name: fmt.Sprintf("tcp-%d", p), ContainerPort: int32(p), Protocol: corev1.ProtocolTCP},
			corev1.ContainerPort{Name: fmt.Sprintf("udp-%d", p), ContainerPort: int32(p), Protocol: corev1.ProtocolUDP})
	}
	zero := int64(0)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: &zero,
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name:            "server",
				Image:           TestServerImage,
				ImagePullPolicy: corev1.PullNever,
				Args:            []string{"serve", "--ports", strings.Join(ps, ",")},
				Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
					FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
				Ports: cports,
			}},
		},
	}
}

// WaitPodsRunning waits until every pod in ns matching selector is Running
// with an IP, and returns them.
func WaitPodsRunning(ctx context.Context, client kubernetes.Interface, ns, selector string, want int, timeout time.Duration) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	err := waitFor(ctx, timeout, fmt.Sprintf("%d running pods in %s", want, ns), func() (bool, error) {
		l, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err
		}
		n := 0
		for _, p := range l.Items {
			if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && p.DeletionTimestamp == nil {
				n++
			}
		}
		pods = l.Items
		return n >= want, fmt.Errorf("%d of %d running", n, want)
	})
	return pods, err
}

// Demo creates one test-server pod per node in namespace weir-demo and
// probes every pod from every pod over TCP and UDP, printing the result.
func Demo(ctx context.Context, cfg Config) error {
	client, err := cfg.Client()
	if err != nil {
		return err
	}
	st, err := cfg.loadState()
	if err != nil {
		return err
	}
	const ns = "weir-demo"
	_, err = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", ns, err)
	}
	start := time.Now()
	for _, i := range st.Nodes {
		node := cfg.NodeName(i)
		pod := TestServerPod(ns, "server-"+node, node, map[string]string{"app": "weir-demo"})
		if _, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating pod %s: %w", pod.Name, err)
		}
	}
	pods, err := WaitPodsRunning(ctx, client, ns, "app=weir-demo", len(st.Nodes), 2*time.Minute)
	if err != nil {
		return err
	}
	cfg.logf("demo pods Running after %.1fs:", time.Since(start).Seconds())
	for _, p := range pods {
		cfg.logf("  %s/%s  node %s  IPs %s", ns, p.Name, p.Spec.NodeName, strings.Join(podIPs(p), ","))
	}
	probe, err := filepath.Abs(filepath.Join(cfg.BinDir, "test-server"))
	if err != nil {
		return err
	}
	failed := 0
	for _, from := range pods {
		for _, to := range pods {
			// Every address of the pod: IPv4 and, on a dual-stack cluster,
			// IPv6; on an IPv6-only cluster its IPv6 address.
			for _, ip := range podIPs(to) {
				for _, proto := range []string{"tcp", "udp"} {
					cmd, err := PodExec(ctx, cfg, ns+"/"+from.Name, probe, "probe", "--proto", proto,
						"--to", net.JoinHostPort(ip, "80"), "--timeout", "2s")
					if err != nil {
						return err
					}
					out, err := cmd.CombinedOutput()
					verdict := "ok, answered " + strings.TrimSpace(string(out))
					if err != nil {
						verdict = "FAILED: " + strings.TrimSpace(string(out))
						failed++
					}
					cfg.logf("  %s -> %s %s %s/80: %s", from.Name, to.Name, ip, proto, verdict)
				}
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d probes failed", failed)
	}
	node := cfg.NodeName(st.Nodes[0])
	cfg.logf(`
Try it:
  export KUBECONFIG=%s
  %s get pods -A -o wide
  bin/weir-local node-exec %s -- ovs-ofctl -O OpenFlow15 --names dump-flows br-int
  bin/weir-local pod-exec %s/%s -- %s probe --proto tcp --to %s
  bin/weir-local down     # removes everything`, cfg.KubeconfigPath(), filepath.Join(cfg.K8sBin, "kubectl"), node,
		ns, pods[0].Name, filepath.Join(cfg.BinDir, "test-server"), net.JoinHostPort(pods[len(pods)-1].Status.PodIP, "81"))
	return nil
}

// podIPs returns a pod's addresses, primary first (status.podIPs; podIP
// alone from a kubelet that reports no list).
func podIPs(p corev1.Pod) []string {
	var out []string
	for _, ip := range p.Status.PodIPs {
		out = append(out, ip.IP)
	}
	if len(out) == 0 && p.Status.PodIP != "" {
		out = append(out, p.Status.PodIP)
	}
	return out
}
