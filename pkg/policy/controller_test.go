package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2/ktesting"

	"github.com/weirnet/weir/test/k8stest"
)

func TestMain(m *testing.M) { k8stest.RunMain(m) }

// fakePorts is a PodPorts whose ports the test sets.
type fakePorts struct {
	mu    sync.Mutex
	ports map[string]uint32
}

func (f *fakePorts) PodOFPort(ns, name string) (uint32, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.ports[ns+"/"+name]
	return p, ok
}

func (f *fakePorts) set(ns, name string, port uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if port == 0 {
		delete(f.ports, ns+"/"+name)
	} else {
		f.ports[ns+"/"+name] = port
	}
}

// createNamespace creates a namespace with its default ServiceAccount (no
// controller-manager runs to create it) and deletes it at cleanup.
func createNamespace(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	if _, err := cs.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func createPod(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, name, node, ip string, labels map[string]string) {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, AutomountServiceAccountToken: new(false), Containers: []corev1.Container{{Name: "c", Image: "none",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}}}
	created, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod %s/%s: %v", ns, name, err)
	}
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("setting status of pod %s/%s: %v", ns, name, err)
	}
}

// TestController runs the controller against a real kube-apiserver with a
// fake realizer and changes namespaces, pods and policies through the API.
func TestController(t *testing.T) {
	cp := k8stest.Shared(t)
	cs := cp.ClientSet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Unique names: the control plane is shared.
	sfx := fmt.Sprintf("%d", time.Now().UnixNano()%100000)
	nsA, nsB := "pol-a-"+sfx, "pol-b-"+sfx
	node := "pol-node-" + sfx
	for _, ns := range []struct {
		name   string
		labels map[string]string
	}{{nsA, map[string]string{"team": "x-" + sfx}}, {nsB, map[string]string{"team": "y-" + sfx}}} {
		createNamespace(t, ctx, cs, ns.name, ns.labels)
	}
	createPod(t, ctx, cs, nsA, "web", node, "10.90.0.11", map[string]string{"app": "web"})
	createPod(t, ctx, cs, nsA, "db", node, "10.90.0.12", map[string]string{"app": "db"})
	createPod(t, ctx, cs, nsB, "client", "elsewhere", "10.90.1.21", map[string]string{"role": "client"})

	f := newFakeRealizer(t)
	ports := &fakePorts{ports: map[string]uint32{nsA + "/db": 12}}
	c, err := NewController(ControllerConfig{Client: cs, NodeName: node, Realizer: f, Ports: ports,
		Logger: ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(runCtx)
	}()
	defer func() {
		stop()
		<-done
	}()
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor := func(what string, want []string, iso string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			got := f.render()
			f.mu.Lock()
			gotIso := renderIsolation(f.isolation)
			f.mu.Unlock()
			if slices.Equal(got, want) && gotIso == iso {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: rules %q isolation %s; want %q %s", what, got, gotIso, want, iso)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("no policies", nil, "in=[] eg=[]")

	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "web"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *sel("app=web"),
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team=y-" + sfx)}},
				Ports: []networkingv1.NetworkPolicyPort{port("TCP", "http")}}}}}
	if _, err := cs.NetworkingV1().NetworkPolicies(nsA).Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The target has no OpenFlow port yet: nothing to realize.
	time.Sleep(200 * time.Millisecond)
	waitFor("target without port", nil, "in=[] eg=[]")

	// The CNI server reports web's port.
	ports.set(nsA, "web", 11)
	c.PodPortChanged(nsA, "web")
	ruleName := nsA + "/web/ingress/0"
	waitFor("port appeared", []string{ruleName + " pods=[11] peers=[10.90.1.21/32] ports=[6:8080-8080]"}, "in=[11] eg=[]")

	// A second client in b joins the peers.
	createPod(t, ctx, cs, nsB, "client2", "elsewhere", "10.90.1.22", nil)
	waitFor("second peer", []string{ruleName + " pods=[11] peers=[10.90.1.21/32 10.90.1.22/32] ports=[6:8080-8080]"},
		"in=[11] eg=[]")

	// Namespace b no longer matches: the rule matches nothing and goes.
	nb, err := cs.CoreV1().Namespaces().Get(ctx, nsB, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nb.Labels["team"] = "z"
	if _, err := cs.CoreV1().Namespaces().Update(ctx, nb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("namespace relabelled", nil, "in=[11] eg=[]")

	// db relabelled to web becomes a target; its named port resolves too.
	db, err := cs.CoreV1().Pods(nsA).Get(ctx, "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	db.Labels["app"] = "web"
	if _, err := cs.CoreV1().Pods(nsA).Update(ctx, db, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("pod relabelled", nil, "in=[11 12] eg=[]")

	// An egress policy with ipBlocks of both families: both are resolved
	// (except subtracted), and nothing is reported.
	np6 := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "v6"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *sel("app=web"),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{
				{IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/64", Except: []string{"fd00::/65"}}},
				{IPBlock: &networkingv1.IPBlock{CIDR: "10.1.0.0/16", Except: []string{"10.1.0.0/17"}}}}}}}}
	if _, err := cs.NetworkingV1().NetworkPolicies(nsA).Create(ctx, np6, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("egress policy", []string{nsA + "/v6/egress/0 pods=[11 12] peers=[10.1.128.0/17 fd00::8000:0:0:0/65] ports=any"},
		"in=[11 12] eg=[11 12]")
	evs, err := cs.CoreV1().Events(nsA).List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector(
		"involvedObject.name", "v6").String()})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) != 0 {
		t.Fatalf("events on the policy: %+v", evs.Items)
	}

	// web's port goes away (CNI DEL): it is no longer a target.
	ports.set(nsA, "web", 0)
	c.PodPortChanged(nsA, "web")
	waitFor("port gone", []string{nsA + "/v6/egress/0 pods=[12] peers=[10.1.128.0/17 fd00::8000:0:0:0/65] ports=any"}, "in=[12] eg=[12]")

	// Deleting the policies removes everything.
	for _, name := range []string{"web", "v6"} {
		if err := cs.NetworkingV1().NetworkPolicies(nsA).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor("policies deleted", nil, "in=[] eg=[]")
	st := c.Stats()
	if st.Failures != 0 || st.Rules != 0 || st.Batches < 7 {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("stats %+v", st)
}

// TestControllerRetries checks that a failed ApplyPolicy is retried and
// the model is not committed in between.
func TestControllerRetries(t *testing.T) {
	cp := k8stest.Shared(t)
	cs := cp.ClientSet(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sfx := fmt.Sprintf("%d", time.Now().UnixNano()%100000)
	ns := "pol-r-" + sfx
	node := "pol-rnode-" + sfx
	createNamespace(t, ctx, cs, ns, nil)
	createPod(t, ctx, cs, ns, "p", node, "10.91.0.1", nil)
	f := newFakeRealizer(t)
	f.fail = errors.New("injected failure")
	c, err := NewController(ControllerConfig{Client: cs, NodeName: node, Realizer: f,
		Ports: &fakePorts{ports: map[string]uint32{ns + "/p": 7}}, Logger: ktesting.NewLogger(t, ktesting.NewConfig())})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "deny"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(runCtx)
	}()
	defer func() {
		stop()
		<-done
	}()
	for c.Stats().Failures < 2 {
		if ctx.Err() != nil {
			t.Fatal("no retries")
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.mu.Lock()
	f.fail = nil
	f.mu.Unlock()
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if renderIsolation(f.isolation) != "in=[7] eg=[]" {
		t.Fatalf("isolation %s after retry", renderIsolation(f.isolation))
	}
}
