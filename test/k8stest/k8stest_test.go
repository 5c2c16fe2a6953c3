package k8stest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func TestMain(m *testing.M) { RunMain(m) }

// TestStart checks a private control plane end to end: version, default
// ServiceAccount, kubeconfig (client-go and kubectl), writes, and that Stop
// leaves no process or file behind.
func TestStart(t *testing.T) {
	cp := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	client := cp.ClientSet(t)
	v, err := client.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if v.GitVersion != K8sVersion {
		t.Errorf("server version %q, want %q", v.GitVersion, K8sVersion)
	}
	if _, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Errorf("default ServiceAccount: %v", err)
	}

	// The kubeconfig file works for client-go and for kubectl.
	restCfg, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig)
	if err != nil {
		t.Fatalf("loading kubeconfig: %v", err)
	}
	kc, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "k8stest-start"}}
	if _, err := kc.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating a namespace through the kubeconfig: %v", err)
	}
	out, err := cp.Kubectl(ctx, "get", "namespace", "k8stest-start", "-o", "name")
	if err != nil || strings.TrimSpace(out) != "namespace/k8stest-start" {
		t.Errorf("kubectl get namespace: %q, %v", out, err)
	}
	if out, err := cp.Kubectl(ctx, "get", "--raw", "/readyz"); err != nil || out != "ok" {
		t.Errorf("kubectl get --raw /readyz: %q, %v", out, err)
	}

	pids := cp.PIDs()
	if len(pids) != 2 {
		t.Fatalf("PIDs() = %v, want etcd and kube-apiserver", pids)
	}
	began := time.Now()
	if err := cp.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("Stop took %s", time.Since(began).Round(time.Millisecond))
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d still running after Stop", pid)
		}
	}
	if _, err := os.Stat(cp.Dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after Stop (%v)", cp.Dir, err)
	}
	if err := cp.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// TestShared checks that Shared hands every test the same running control
// plane.
func TestShared(t *testing.T) {
	a := Shared(t)
	var b *ControlPlane
	t.Run("again", func(t *testing.T) { b = Shared(t) })
	if a != b {
		t.Fatalf("Shared returned two control planes: %s and %s", a.Host, b.Host)
	}
	nodes, err := a.ClientSet(t).CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("listing nodes: %v", err)
	}
	if len(nodes.Items) != 0 {
		t.Errorf("a fresh control plane has %d nodes", len(nodes.Items))
	}
}

func TestBinDir(t *testing.T) {
	tests := []struct {
		name, cache, want string
	}{
		{"default", "", "/var/cache/weir/k8s-v1.37.2-etcd-v3.7.3/bin"},
		{"WEIR_CACHE", "/tmp/c", "/tmp/c/k8s-v1.37.2-etcd-v3.7.3/bin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("WEIR_CACHE", tc.cache)
			if got := BinDir(); got != tc.want {
				t.Errorf("BinDir() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Errorf("repo root %s has no go.mod: %v", root, err)
	}
}

func TestLastLines(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb", 5, "a\nb"},
		{"", 3, ""},
	}
	for _, tc := range tests {
		if got := lastLines(tc.in, tc.n); got != tc.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
