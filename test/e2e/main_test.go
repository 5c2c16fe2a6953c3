// Package e2e is Weir's end-to-end suite: it starts a real multi-node
// Kubernetes cluster with pkg/localcluster (a control-plane node running
// kube-apiserver, controller-manager and scheduler, and per node containerd +
// kubelet + kube-proxy; CoreDNS as cluster DNS), deploys Weir with its own
// DaemonSet from freshly built images, and checks what users rely on through
// pods the real kubelet sets up via the real weir CNI binary. At the end it
// asserts that the leak guard counted no packet for a cluster address.
//
// The cluster is started once for the package (TestMain) and removed at the
// end, also when a test fails. It is dual-stack unless WEIR_E2E_IP_FAMILY
// says ipv4 or ipv6, and kube-proxy alone load-balances Services unless
// WEIR_E2E_PROXY says coexist. It needs root; without root every test skips.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weirnet/weir/pkg/localcluster"
	"github.com/weirnet/weir/test/k8stest"
	"github.com/weirnet/weir/test/testroot"
)

// suite is the cluster shared by every test of the package.
type suite struct {
	cfg    localcluster.Config
	client kubernetes.Interface
	bin    string // test-server binary on the host, run inside pods' netns
	// pods of the e2e namespace by name (a1, a2 on node 1; b1 on node 2).
	pods map[string]corev1.Pod
}

var cluster *suite // set by TestMain when the cluster is up

// e2eNS holds the suite's long-lived test-server pods.
const e2eNS = "e2e"

func TestMain(m *testing.M) {
	if msg, _ := testroot.Missing("e2e starts a local cluster in network namespaces"); msg != "" {
		fmt.Fprintln(os.Stderr, "e2e:", msg)
		os.Exit(m.Run()) // every test skips (or fails) itself through need
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx := context.Background()
	start := time.Now()
	// The cluster's IP family: dual (the default), ipv4 or ipv6 (make e2e
	// IP_FAMILY=...); the tests of a family the cluster lacks skip.
	family := localcluster.DefaultConfig().IPFamily
	if f := os.Getenv("WEIR_E2E_IP_FAMILY"); f != "" {
		family = f
	}
	if !slices.Contains([]string{localcluster.IPFamilyIPv4, localcluster.IPFamilyDual, localcluster.IPFamilyIPv6}, family) {
		fmt.Fprintf(os.Stderr, "e2e: WEIR_E2E_IP_FAMILY=%q: want %s, %s or %s\n", family,
			localcluster.IPFamilyDual, localcluster.IPFamilyIPv4, localcluster.IPFamilyIPv6)
		return 1
	}
	// Who load-balances Services: kube-proxy (the default) or coexist
	// (make e2e PROXY=...); the proxy tests of another mode skip.
	proxy := localcluster.DefaultConfig().Proxy
	if p := os.Getenv("WEIR_E2E_PROXY"); p != "" {
		proxy = p
	}
	if !slices.Contains([]string{localcluster.ProxyKubeProxy, localcluster.ProxyCoexist}, proxy) {
		fmt.Fprintf(os.Stderr, "e2e: WEIR_E2E_PROXY=%q: want %s or %s\n", proxy, localcluster.ProxyKubeProxy, localcluster.ProxyCoexist)
		return 1
	}
	root, err := k8stest.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	k8sBin, err := k8stest.EnsureBinaries(os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	// The images are built from the working tree by the same targets users run.
	build := exec.Command("make", "-s", "-C", root, "build", "images")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: make build images:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "weir-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	slot, release, err := claimSlot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer release()
	cfg := localcluster.DefaultConfig()
	cfg.Dir = dir
	// Apart from a user's `make run` cluster and from other e2e runs on the
	// machine (each holds a slot: its own names, subnet and ports).
	cfg.Prefix = fmt.Sprintf("e2e%d", slot)
	cfg.Subnet = fmt.Sprintf("172.31.%d", 240+slot)
	cfg.PortBase = 18000 + 1000*slot
	cfg.K8sBin = k8sBin
	cfg.BinDir = filepath.Join(root, "bin")
	cfg.ImagesDir = filepath.Join(root, "bin", "images")
	cfg.Manifest = filepath.Join(root, "build", "yamls", "weir.yml")
	cfg.Out = os.Stderr
	cfg.IPFamily = family
	cfg.Proxy = proxy
	// Whatever happens below, remove the cluster.
	defer func() {
		if os.Getenv("WEIR_E2E_KEEP") != "" {
			fmt.Fprintf(os.Stderr, "e2e: WEIR_E2E_KEEP set: cluster left in %s\n", dir)
			return
		}
		t := time.Now()
		if err := localcluster.Down(context.Background(), cfg); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: down:", err)
		}
		fmt.Fprintf(os.Stderr, "e2e: cluster removed in %.1fs\n", time.Since(t).Seconds())
	}()
	fmt.Fprintf(os.Stderr, "e2e: binaries and images ready after %.1fs; starting a %s cluster with --proxy %s\n", time.Since(start).Seconds(), cfg.IPFamily, cfg.Proxy)
	upStart := time.Now()
	if err := localcluster.Up(ctx, cfg, 2); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: up:", err)
		dumpLogs(cfg)
		return 1
	}
	s := &suite{cfg: cfg, bin: filepath.Join(root, "bin", "test-server"), pods: map[string]corev1.Pod{}}
	if s.client, err = cfg.Client(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if err := s.createPods(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: creating test pods:", err)
		dumpLogs(cfg)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: cluster up and test pods Running %.1fs after `up` started\n", time.Since(upStart).Seconds())
	cluster = s
	code := m.Run()
	// Whatever the tests did, no packet for a cluster address may have
	// headed for the machine's default route (the leak guard of `up`).
	if err := checkNoLeaks(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: FAIL:", err)
		code = 1
	} else {
		fmt.Fprintln(os.Stderr, "e2e: leak guard: 0 packets for cluster addresses towards the machine's default route")
	}
	if code != 0 {
		dumpLogs(cfg)
	}
	return code
}

func (s *suite) createPods(ctx context.Context) error {
	_, err := s.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e2eNS}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	layout := map[string]int{"a1": 1, "a2": 1, "b1": 2}
	for name, node := range layout {
		p := localcluster.TestServerPod(e2eNS, name, s.cfg.NodeName(node), map[string]string{"app": "e2e", "pod": name})
		if _, err := s.client.CoreV1().Pods(e2eNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	pods, err := localcluster.WaitPodsRunning(ctx, s.client, e2eNS, "app=e2e", len(layout), 2*time.Minute)
	if err != nil {
		return err
	}
	for _, p := range pods {
		s.pods[p.Name] = p
	}
	return nil
}

// dumpLogs prints the tail of the cluster's and agents' logs to help
// diagnose a failure.
func dumpLogs(cfg localcluster.Config) {
	files, _ := filepath.Glob(filepath.Join(cfg.Dir, "logs", "*.log"))
	more, _ := filepath.Glob(filepath.Join(cfg.Dir, "nodes", "*", "logs", "*.log"))
	pods, _ := filepath.Glob(filepath.Join(cfg.Dir, "nodes", "*", "var-log-pods", "kube-system_weir-agent-*", "*", "*.log"))
	for _, f := range append(append(files, more...), pods...) {
		out, _ := exec.Command("tail", "-n", "25", f).CombinedOutput()
		fmt.Fprintf(os.Stderr, "===== %s =====\n%s", f, out)
	}
}

// need returns the shared cluster or skips the test.
func need(t *testing.T) *suite {
	t.Helper()
	if cluster == nil {
		testroot.Require(t, "e2e starts a local cluster in network namespaces")
		t.Fatal("no cluster") // as root TestMain exits if the cluster does not come up
	}
	return cluster
}

// e2eSlots is how many e2e clusters may run on the machine at once.
const e2eSlots = 8

// claimSlot takes the first free e2e slot: an exclusive flock on
// /run/lock/weir-e2e-<slot>.lock, held until release (or process exit).
func claimSlot() (int, func(), error) {
	if err := os.MkdirAll("/run/lock", 0o755); err != nil {
		return 0, nil, err
	}
	for slot := 0; slot < e2eSlots; slot++ {
		f, err := os.OpenFile(fmt.Sprintf("/run/lock/weir-e2e-%d.lock", slot), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return 0, nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		return slot, func() { f.Close() }, nil
	}
	return 0, nil, fmt.Errorf("all %d e2e slots are taken by other runs", e2eSlots)
}
