package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2/ktesting"

	"github.com/weirnet/weir/test/k8stest"
)

func TestNodePodCIDR(t *testing.T) {
	tests := []struct {
		name     string
		podCIDR  string
		podCIDRs []string
		want     string // "" means nil
		wantErr  string
	}{
		{name: "none"},
		{name: "podCIDR only", podCIDR: "10.244.1.0/24", want: "10.244.1.0/24"},
		{name: "podCIDRs first", podCIDR: "10.244.1.0/24", podCIDRs: []string{"10.244.1.0/24", "fd00::/64"}, want: "10.244.1.0/24,fd00::/64"},
		{name: "IPv6 first", podCIDR: "fd00::/64", podCIDRs: []string{"fd00::/64", "10.244.2.0/24"}, want: "10.244.2.0/24,fd00::/64"},
		{name: "IPv6 too small", podCIDR: "10.244.1.0/24", podCIDRs: []string{"10.244.1.0/24", "fd00::/124"}, wantErr: "outside /48../120"},
		{name: "IPv6 host bits", podCIDR: "10.244.1.0/24", podCIDRs: []string{"10.244.1.0/24", "fd00::5/64"}, wantErr: "host bits"},
		{name: "host bits", podCIDR: "10.244.3.7/24", want: "10.244.3.0/24"},
		{name: "malformed", podCIDR: "10.244.1.0/33", wantErr: `malformed pod CIDR "10.244.1.0/33"`},
		{name: "garbage", podCIDRs: []string{"not-a-cidr"}, wantErr: "malformed pod CIDR"},
		{name: "too small", podCIDR: "10.244.1.0/31", wantErr: "too small"},
		{name: "IPv6 only", podCIDR: "fd00::/64", podCIDRs: []string{"fd00::/64"}, want: "fd00::/64"},
		{name: "IPv6 only, podCIDR alone", podCIDR: "fd00:10:244:1::/64", want: "fd00:10:244:1::/64"},
		{name: "IPv6 only, too small", podCIDRs: []string{"fd00::/121"}, wantErr: "outside /48../120"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node := &corev1.Node{Spec: corev1.NodeSpec{PodCIDR: tc.podCIDR, PodCIDRs: tc.podCIDRs}}
			got, err := NodePodCIDRs(node)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want {
				t.Fatalf("got %v, want %q", got, tc.want)
			}
			if v4, _ := NodePodCIDR(node); (v4 == nil) != (got.IPv4 == nil) {
				t.Fatalf("NodePodCIDR = %v, NodePodCIDRs.IPv4 = %v", v4, got.IPv4)
			}
		})
	}
}

// TestWaitForPodCIDR runs WaitForPodCIDR against a real kube-apiserver.
func TestWaitForPodCIDR(t *testing.T) {
	cp := k8stest.Shared(t)
	client := cp.ClientSet(t)

	type step struct {
		after    time.Duration
		create   *corev1.NodeSpec // create the Node with this spec
		patchTo  string           // patch spec.podCIDR(s) to this
		deadline bool             // the step whose effect WaitForPodCIDR must see quickly
	}
	tests := []struct {
		name    string
		initial *corev1.NodeSpec // nil: no Node at first
		steps   []step
		timeout time.Duration
		want    string
		wantErr []string // substrings of the error
	}{
		{
			name:    "already set",
			initial: &corev1.NodeSpec{PodCIDR: "10.244.1.0/24"},
			timeout: 10 * time.Second,
			want:    "10.244.1.0/24",
		},
		{
			name:    "patched later",
			initial: &corev1.NodeSpec{},
			steps:   []step{{after: time.Second, patchTo: "10.244.2.0/24", deadline: true}},
			timeout: 10 * time.Second,
			want:    "10.244.2.0/24",
		},
		{
			name:    "node created later",
			steps:   []step{{after: time.Second, create: &corev1.NodeSpec{PodCIDR: "10.244.3.0/24"}, deadline: true}},
			timeout: 10 * time.Second,
			want:    "10.244.3.0/24",
		},
		{
			name:    "dual stack, IPv6 first",
			initial: &corev1.NodeSpec{PodCIDR: "fd00:10::/64", PodCIDRs: []string{"fd00:10::/64", "10.244.4.0/24"}},
			timeout: 10 * time.Second,
			want:    "10.244.4.0/24,fd00:10::/64",
		},
		{
			name:    "timeout without a CIDR",
			initial: &corev1.NodeSpec{},
			timeout: time.Second,
			wantErr: []string{"gave up waiting", "has no spec.podCIDR", "context deadline exceeded"},
		},
		{
			name:    "timeout without a Node",
			timeout: time.Second,
			wantErr: []string{"gave up waiting", "does not exist", "context deadline exceeded"},
		},
		{
			// The API server rejects syntactically malformed CIDRs, so an
			// unusable one (too small for a gateway and a pod) stands in.
			name:    "unusable CIDR",
			initial: &corev1.NodeSpec{PodCIDR: "10.244.5.0/31"},
			timeout: 10 * time.Second,
			wantErr: []string{`"10.244.5.0/31"`, "too small"},
		},
		{
			name:    "IPv6 only",
			initial: &corev1.NodeSpec{PodCIDR: "fd00:20::/64"},
			timeout: 10 * time.Second,
			want:    "fd00:20::/64",
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nodeName := fmt.Sprintf("wait-%d", i)
			if tc.initial != nil {
				createNode(t, client, nodeName, *tc.initial)
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			var changed time.Time // when the deadline step was applied
			stepsDone := make(chan error, 1)
			go func() {
				var err error
				defer func() { stepsDone <- err }()
				for _, s := range tc.steps {
					time.Sleep(s.after)
					switch {
					case s.create != nil:
						err = createNodeErr(client, nodeName, *s.create)
					case s.patchTo != "":
						err = patchPodCIDR(client, nodeName, s.patchTo)
					}
					if err != nil {
						return
					}
					if s.deadline {
						changed = time.Now()
					}
				}
			}()
			began := time.Now()
			got, err := WaitForPodCIDR(ctx, client, nodeName, ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2))))
			returned := time.Now()
			if serr := <-stepsDone; serr != nil {
				t.Fatalf("changing the Node: %v", serr)
			}
			t.Logf("WaitForPodCIDR returned after %s: %v, %v", returned.Sub(began).Round(time.Millisecond), got, err)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("got %v, want an error", got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "deadline") && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
			if !changed.IsZero() {
				lag := returned.Sub(changed)
				t.Logf("returned %s after the Node got its CIDR", lag.Round(time.Millisecond))
				if lag > time.Second {
					t.Errorf("returned %s after the Node got its CIDR, want within 1s", lag)
				}
			}
		})
	}
}

// TestWaitForPodCIDRForbidden checks that an agent without RBAC permission
// to list Nodes gets an error saying so, not just a timeout.
func TestWaitForPodCIDRForbidden(t *testing.T) {
	cp := k8stest.Shared(t)
	cfg := cp.RESTConfig()
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:default:nobody"}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	got, err := WaitForPodCIDR(ctx, client, "forbidden", ktesting.NewLogger(t, ktesting.NewConfig()))
	if err == nil {
		t.Fatalf("got %v, want an error", got)
	}
	for _, w := range []string{"cannot list Nodes", "forbidden", "context deadline exceeded"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

// TestRunPodCIDR checks how Run gets its pod CIDR: from the config, or
// through a kubeconfig from the Node.
func TestRunPodCIDR(t *testing.T) {
	cp := k8stest.Shared(t)
	createNode(t, cp.ClientSet(t), "run-podcidr", corev1.NodeSpec{PodCIDR: "10.244.9.0/24"})
	createNode(t, cp.ClientSet(t), "run-podcidr-dual", corev1.NodeSpec{PodCIDR: "10.244.10.0/24",
		PodCIDRs: []string{"10.244.10.0/24", "fd00:10:244:a::/64"}})
	tests := []struct {
		name    string
		cfg     Config
		want    string
		wantErr string
	}{
		{"static", Config{PodCIDR: "10.1.2.0/24", NodeName: "run-podcidr", Kubeconfig: "/nonexistent"}, "10.1.2.0/24", ""},
		{"static dual-stack", Config{PodCIDR: "10.1.2.0/24", PodCIDRv6: "fd00:1:2::/64", NodeName: "run-podcidr", Kubeconfig: "/nonexistent"},
			"10.1.2.0/24,fd00:1:2::/64", ""},
		{"from the Node", Config{NodeName: "run-podcidr", Kubeconfig: cp.Kubeconfig}, "10.244.9.0/24", ""},
		{"from a dual-stack Node", Config{NodeName: "run-podcidr-dual", Kubeconfig: cp.Kubeconfig}, "10.244.10.0/24,fd00:10:244:a::/64", ""},
		{"bad kubeconfig", Config{NodeName: "run-podcidr", Kubeconfig: "/nonexistent/kubeconfig"}, "", "loading kubeconfig /nonexistent/kubeconfig"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := podCIDRs(ctx, tc.cfg, nil, ktesting.NewLogger(t, ktesting.NewConfig()))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func createNode(t *testing.T, client kubernetes.Interface, name string, spec corev1.NodeSpec) {
	t.Helper()
	if err := createNodeErr(client, name, spec); err != nil {
		t.Fatal(err)
	}
}

func createNodeErr(client kubernetes.Interface, name string, spec corev1.NodeSpec) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating Node %s: %w", name, err)
	}
	return nil
}

func patchPodCIDR(client kubernetes.Interface, name, cidr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	patch := fmt.Sprintf(`{"spec":{"podCIDR":%q,"podCIDRs":[%q]}}`, cidr, cidr)
	if _, err := client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patching the pod CIDR of Node %s: %w", name, err)
	}
	return nil
}
