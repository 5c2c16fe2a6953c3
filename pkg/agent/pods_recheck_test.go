package agent

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"

	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/kubecache"
	"github.com/weirnet/weir/test/testroot"
)

// fakeInterfaces stands in for the CNI server's attachments.
type fakeInterfaces struct {
	mu       sync.Mutex
	atts     map[string]interfacestore.Interface
	released map[string]time.Time
}

func (f *fakeInterfaces) List() []interfacestore.Interface {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]interfacestore.Interface, 0, len(f.atts))
	for _, a := range f.atts {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b interfacestore.Interface) int { return strings.Compare(a.Key(), b.Key()) })
	return out
}

func (f *fakeInterfaces) Release(_ context.Context, key string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.atts[key]; !ok {
		return false, nil
	}
	delete(f.atts, key)
	f.released[key] = time.Now()
	return true, nil
}

func (f *fakeInterfaces) add(key, ns, name, uid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	container, ifName, _ := strings.Cut(key, "/")
	f.atts[key] = interfacestore.Interface{ContainerID: container, IfName: ifName, PodNamespace: ns, PodName: name, PodUID: uid}
}

func (f *fakeInterfaces) releasedAt(key string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.released[key]
	return at, ok
}

// TestPodRecheckWhileRunning adds interfaces while the Pod controller runs
// (after its start-up reconcile): one whose pod never exists is released
// by the periodic re-check once it has been missing for the grace period,
// not before; one whose Pod object appears within the grace period (an
// ADD the informer had not caught up with), a live pod's and a static
// pod's (mirror annotation) are kept.
func TestPodRecheckWhileRunning(t *testing.T) {
	tests := []struct {
		name     string
		grace    time.Duration
		interval time.Duration // 0: the default
	}{
		{"short grace", 600 * time.Millisecond, 100 * time.Millisecond},
		{"default grace and interval", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.grace == 0 {
				testroot.RequireSoak(t) // ~150 s: release at 60-90 s, then two 30 s re-checks
			}
			const node = "n1"
			live := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "live", UID: "u-live"},
				Spec: corev1.PodSpec{NodeName: node}}
			static := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "static", UID: "u-mirror",
				Annotations: map[string]string{kubecache.MirrorPodAnnotation: "u-static"}}, Spec: corev1.PodSpec{NodeName: node}}
			client := fake.NewClientset(live, static)
			f := &fakeInterfaces{atts: map[string]interfacestore.Interface{}, released: map[string]time.Time{}}
			pc, err := NewPodController(PodControllerConfig{Client: client, NodeName: node, Interfaces: f, Releaser: f,
				GracePeriod: tc.grace, RecheckInterval: tc.interval,
				Logger: ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))})
			if err != nil {
				t.Fatal(err)
			}
			grace := pc.cfg.GracePeriod
			interval := pc.cfg.RecheckInterval
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			defer background(ctx, pc.Run)() // stops it and waits
			wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
			defer wcancel()
			if err := pc.WaitInitialReconcile(wctx); err != nil {
				t.Fatal(err)
			}

			added := time.Now()
			f.add("never/eth0", "ns", "never", "u-never")
			f.add("late/eth0", "ns", "late", "u-late")
			f.add("live/eth0", "ns", "live", "u-live")
			f.add("static/eth0", "ns", "static", "u-static")
			// The Pod of "late" reaches the informer after its ADD.
			time.Sleep(min(grace/4, 2*interval))
			if _, err := client.CoreV1().Pods("ns").Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "late", UID: types.UID("u-late")},
				Spec:       corev1.PodSpec{NodeName: node}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Until(added.Add(grace * 9 / 10)))
			if at, ok := f.releasedAt("never/eth0"); ok {
				t.Fatalf("the interface of the missing pod was released %s after its ADD, before the %s grace period",
					at.Sub(added).Round(time.Millisecond), grace)
			}
			deadline := added.Add(2*grace + 2*interval + 5*time.Second)
			for {
				at, ok := f.releasedAt("never/eth0")
				if ok {
					took := at.Sub(added)
					t.Logf("interface of a never-existing pod released %s after its ADD (grace %s, re-check every %s)",
						took.Round(time.Millisecond), grace, interval)
					if took < grace {
						t.Errorf("released after %s, before the %s grace period", took, grace)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the interface of the missing pod is still there %s after its ADD (grace %s)",
						time.Since(added).Round(time.Millisecond), grace)
				}
				time.Sleep(20 * time.Millisecond)
			}
			// Two more re-checks: the others stay.
			time.Sleep(2*interval + 100*time.Millisecond)
			for _, key := range []string{"late/eth0", "live/eth0", "static/eth0"} {
				if _, ok := f.releasedAt(key); ok {
					t.Errorf("%s was released; its pod exists", key)
				}
			}
			if got := pc.Released(); got != 1 {
				t.Errorf("Released() = %d, want 1", got)
			}
		})
	}
}
