package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2/ktesting"

	"github.com/weirnet/weir/pkg/kubecache"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/test/k8stest"
)

func TestMain(m *testing.M) { k8stest.RunMain(m) }

// fakeRealizer records every ApplyServices call and keeps the resulting
// state; refuse, if set, makes a call fail.
type fakeRealizer struct {
	mu     sync.Mutex
	calls  []string // one line per call: "+key,+key -key"; failed calls start with "FAIL "
	state  map[string]pipeline.ServicePort
	refuse func(upserts []pipeline.ServicePort, deleted []string) error
}

func newFakeRealizer() *fakeRealizer {
	return &fakeRealizer{state: map[string]pipeline.ServicePort{}}
}

func (f *fakeRealizer) ApplyServices(_ context.Context, upserts []pipeline.ServicePort, deleted []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var parts []string
	for _, p := range upserts {
		parts = append(parts, "+"+p.Key)
	}
	for _, k := range deleted {
		parts = append(parts, "-"+k)
	}
	line := strings.Join(parts, " ")
	if f.refuse != nil {
		if err := f.refuse(upserts, deleted); err != nil {
			f.calls = append(f.calls, "FAIL "+line)
			return err
		}
	}
	f.calls = append(f.calls, line)
	for _, p := range upserts {
		f.state[p.Key] = clonePort(p)
	}
	for _, k := range deleted {
		if _, ok := f.state[k]; !ok {
			return fmt.Errorf("deleting %s, which is not installed", k)
		}
		delete(f.state, k)
	}
	return nil
}

func (f *fakeRealizer) setRefuse(r func([]pipeline.ServicePort, []string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refuse = r
}

// callsSince returns the calls after the first n.
func (f *fakeRealizer) callsSince(n int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls[min(n, len(f.calls)):])
}

func (f *fakeRealizer) numCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// rendered returns the state rendered, sorted.
func (f *fakeRealizer) rendered() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, p := range f.state {
		out = append(out, render(p))
	}
	slices.Sort(out)
	return out
}

// eventually polls cond until it holds or 20 s passed.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitCalls waits until the realizer has had n calls after since, and
// returns them.
func waitCalls(t *testing.T, f *fakeRealizer, since, n int) []string {
	t.Helper()
	var got []string
	eventually(t, fmt.Sprintf("waiting for %d ApplyServices calls", n), func() (bool, string) {
		got = f.callsSince(since)
		return len(got) >= n, fmt.Sprintf("calls %q", got)
	})
	return got
}

// startController runs a controller on client's informers through a
// shared factory the test owns (as the agent does) until the test ends.
func startController(t *testing.T, client kubernetes.Interface, f *fakeRealizer, mod func(*ControllerConfig)) *Controller {
	t.Helper()
	factory := kubecache.NewFactory(client)
	cfg := ControllerConfig{Client: client, Informers: factory, NodeName: "me", Zone: "z1", Realizer: f,
		HealthCheckAddresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		Logger:               ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))}
	if mod != nil {
		mod(&cfg)
	}
	c, err := NewController(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	factory.Start(ctx.Done())
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		factory.Shutdown()
	})
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := c.WaitSynced(wctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func multiPort(s *corev1.Service) {
	s.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
		{Name: "metrics", Port: 9090, Protocol: corev1.ProtocolTCP}}
}

func named(ns, name, ip string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Namespace, s.Name, s.Spec.ClusterIP, s.Spec.ClusterIPs = ns, name, ip, []string{ip}
	}
}

func sliceOf(ns, svcName, name string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	s := es(name, discoveryv1.AddressTypeIPv4, ports, eps...)
	s.Namespace, s.Labels[discoveryv1.LabelServiceName] = ns, svcName
	return s
}

// TestController drives the controller through a fake clientset: the first
// sync sends everything in one call, then each change sends only the
// ServicePorts it changed.
func TestController(t *testing.T) {
	ctx := t.Context()
	webPorts := []discoveryv1.EndpointPort{port("http", 8080, corev1.ProtocolTCP), port("metrics", 9100, corev1.ProtocolTCP)}
	client := fake.NewClientset(
		svc(multiPort, dualStack),
		sliceOf("default", "web", "web-1", webPorts, ep("10.244.1.5", "me"), ep("10.244.2.5", "other")),
		svc(named("default", "db", "10.96.0.20")),
		sliceOf("default", "db", "db-1", httpPort, ep("10.244.1.9", "me")),
		svc(named("default", "headless", corev1.ClusterIPNone)),
	)
	f := newFakeRealizer()
	c := startController(t, client, f, nil)

	got := waitCalls(t, f, 0, 1)
	if want := []string{"+default/db:http/IPv4 +default/web:http/IPv4 +default/web:http/IPv6 +default/web:metrics/IPv4 +default/web:metrics/IPv6"}; !slices.Equal(got, want) {
		t.Fatalf("first sync: calls %q, want %q", got, want)
	}
	want := []string{
		"default/db:http/IPv4 fe=ClusterIP:10.96.0.20:80/6 cl=[10.244.1.9:8080L] ext=-",
		"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080L,10.244.2.5:8080] ext=-",
		"default/web:http/IPv6 fe=ClusterIP:fd00:96::10:80/6 cl=[] ext=- none",
		"default/web:metrics/IPv4 fe=ClusterIP:10.96.0.10:9090/6 cl=[10.244.1.5:9100L,10.244.2.5:9100] ext=-",
		"default/web:metrics/IPv6 fe=ClusterIP:fd00:96::10:9090/6 cl=[] ext=- none",
	}
	if got := f.rendered(); !slices.Equal(got, want) {
		t.Fatalf("after the first sync:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	var snap []string
	for _, p := range c.Services() {
		snap = append(snap, render(p))
	}
	if !slices.Equal(snap, want) {
		t.Errorf("Services() snapshot:\n  %s", strings.Join(snap, "\n  "))
	}
	if st := c.Stats(); st.Services != 2 || st.ServicePorts != 5 || st.Batches != 1 || st.Upserts != 5 {
		t.Errorf("stats %+v", st)
	}

	step := func(what string, change func(), wantCalls ...string) {
		t.Helper()
		n := f.numCalls()
		change()
		got := waitCalls(t, f, n, len(wantCalls))
		time.Sleep(50 * time.Millisecond) // a stray extra call would show now
		if got = f.callsSince(n); !slices.Equal(got, wantCalls) {
			t.Fatalf("%s: calls %q, want %q", what, got, wantCalls)
		}
	}
	slicesAPI := client.DiscoveryV1().EndpointSlices("default")
	svcAPI := client.CoreV1().Services("default")

	step("web's metrics target port changes: only that port, in the family of the slice", func() {
		s := sliceOf("default", "web", "web-1", []discoveryv1.EndpointPort{port("http", 8080, corev1.ProtocolTCP),
			port("metrics", 9101, corev1.ProtocolTCP)}, ep("10.244.1.5", "me"), ep("10.244.2.5", "other"))
		if _, err := slicesAPI.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}, "+default/web:metrics/IPv4")

	step("a Service change the proxy does not read, then a db endpoint: only db is sent", func() {
		s := svc(multiPort, dualStack)
		s.Annotations = map[string]string{"note": "x"}
		s.Spec.Selector = map[string]string{"app": "web2"}
		if _, err := svcAPI.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := slicesAPI.Update(ctx, sliceOf("default", "db", "db-1", httpPort, ep("10.244.1.9", "me"),
			ep("10.244.3.9", "other")), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}, "+default/db:http/IPv4")

	step("an IPv6 slice for web: the IPv6 ports", func() {
		s := es("web-2", discoveryv1.AddressTypeIPv6, webPorts, ep("fd00:244:1::5", "me"))
		if _, err := slicesAPI.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}, "+default/web:http/IPv6 +default/web:metrics/IPv6")

	step("web loses its metrics port", func() {
		if _, err := svcAPI.Update(ctx, svc(dualStack), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}, "-default/web:metrics/IPv4 -default/web:metrics/IPv6")

	step("an EndpointSlice deleted", func() {
		if err := slicesAPI.Delete(ctx, "web-2", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}, "+default/web:http/IPv6")

	step("web deleted", func() {
		if err := svcAPI.Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}, "-default/web:http/IPv4 -default/web:http/IPv6")

	// A failing realizer: the change is retried until it is realized.
	failures := 2
	f.setRefuse(func([]pipeline.ServicePort, []string) error {
		if failures > 0 {
			failures--
			return errors.New("switch busy")
		}
		return nil
	})
	step("db's endpoints change while the realizer fails twice", func() {
		if _, err := slicesAPI.Update(ctx, sliceOf("default", "db", "db-1", httpPort, ep("10.244.3.9", "other")),
			metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}, "FAIL +default/db:http/IPv4", "FAIL +default/db:http/IPv4", "+default/db:http/IPv4")
	if got, want := f.rendered(), []string{"default/db:http/IPv4 fe=ClusterIP:10.96.0.20:80/6 cl=[10.244.3.9:8080] ext=-"}; !slices.Equal(got, want) {
		t.Errorf("final state %q, want %q", got, want)
	}
	if st := c.Stats(); st.Failures != 2 || st.Services != 1 || st.ServicePorts != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestControllerIsolatesRefusedService: when the realizer refuses a batch,
// the Services in it are applied one by one, so the one it refuses does
// not hold back the others; it alone is retried, with backoff.
func TestControllerIsolatesRefusedService(t *testing.T) {
	client := fake.NewClientset(
		svc(named("default", "a", "10.96.0.1")), svc(named("default", "bad", "10.96.0.2")), svc(named("default", "c", "10.96.0.3")))
	f := newFakeRealizer()
	f.setRefuse(func(ups []pipeline.ServicePort, _ []string) error {
		if slices.ContainsFunc(ups, func(p pipeline.ServicePort) bool { return strings.HasPrefix(p.Key, "default/bad:") }) {
			return errors.New("refused")
		}
		return nil
	})
	factory := kubecache.NewFactory(client)
	c, err := NewController(ControllerConfig{Client: client, Informers: factory, NodeName: "me", Realizer: f,
		IPFamilies: []corev1.IPFamily{v4}, DisableHealthCheck: true, Logger: ktesting.NewLogger(t, ktesting.NewConfig())})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer func() { cancel(); factory.Shutdown() }()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		t.Fatal("informers did not sync")
	}
	// The informers queued the three Services; one batch takes them all.
	c.queue.Add(keySync)
	if !c.processBatch(ctx) {
		t.Fatal("queue shut down")
	}
	want := []string{"FAIL +default/a:http/IPv4 +default/bad:http/IPv4 +default/c:http/IPv4",
		"+default/a:http/IPv4", "FAIL +default/bad:http/IPv4", "+default/c:http/IPv4"}
	if got := f.callsSince(0); !slices.Equal(got, want) {
		t.Fatalf("calls %q, want %q", got, want)
	}
	if n := c.queue.NumRequeues("default/bad"); n != 1 {
		t.Errorf("bad requeued %d times, want 1", n)
	}
	if n := c.queue.NumRequeues("default/a"); n != 0 {
		t.Errorf("a requeued %d times", n)
	}
	select {
	case <-c.synced1:
		t.Error("synced although a Service is not realized")
	default:
	}
	if c.healthy() {
		t.Error("healthy after a failed apply")
	}
	// The realizer accepts it now: the retry (with keySync) completes the
	// first sync.
	f.setRefuse(nil)
	// bad and keySync come back after their backoff, together or one
	// after the other.
	for range 2 {
		select {
		case <-c.synced1:
		default:
			if !c.processBatch(ctx) {
				t.Fatal("queue shut down")
			}
		}
	}
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.callsSince(4); !slices.Equal(got, []string{"+default/bad:http/IPv4"}) {
		t.Errorf("retry calls %q", got)
	}
	if !c.healthy() {
		t.Error("not healthy after the retry")
	}
}

// TestControllerHealthCheck: a LoadBalancer Service with
// externalTrafficPolicy Local gets its healthCheckNodePort served while it
// exists, answering by its local ready endpoints.
func TestControllerHealthCheck(t *testing.T) {
	ctx := t.Context()
	hcPort := freePort(t)
	lb := func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].NodePort = 30080
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = int32(hcPort)
	}
	client := fake.NewClientset(svc(lb), sliceOf("default", "web", "web-1", httpPort, ep("10.244.1.5", "me"), ep("10.244.2.5", "other")))
	f := newFakeRealizer()
	c := startController(t, client, f, func(cfg *ControllerConfig) { cfg.IPFamilies = []corev1.IPFamily{v4} })
	addr := fmt.Sprintf("127.0.0.1:%d", hcPort)

	probeUntil := func(what string, wantStatus, wantCount int) {
		t.Helper()
		eventually(t, what, func() (bool, string) {
			status, _, body, err := probe(t, addr)
			if err != nil {
				return false, err.Error()
			}
			return status == wantStatus && body.LocalEndpoints == wantCount && body.ServiceProxyHealthy,
				fmt.Sprintf("status %d body %+v", status, body)
		})
	}
	probeUntil("one local endpoint", http.StatusOK, 1)
	if got := c.HealthCheckPorts(); got["default/web"] != hcPort {
		t.Errorf("HealthCheckPorts %v", got)
	}
	slicesAPI := client.DiscoveryV1().EndpointSlices("default")
	if _, err := slicesAPI.Update(ctx, sliceOf("default", "web", "web-1", httpPort,
		ep("10.244.1.5", "me", terminating), ep("10.244.2.5", "other")), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Terminating local endpoints still serve (the fallback) but fail the
	// health check, so the load balancer drains the node.
	probeUntil("only a terminating local endpoint", http.StatusServiceUnavailable, 0)
	if got := f.rendered(); !slices.Equal(got, []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6,NodePort:*:30080/6 cl=[10.244.2.5:8080] ext=[10.244.1.5:8080L] extlocal"}) {
		t.Errorf("state %q", got)
	}
	if err := client.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "health check closed after the Service was deleted", func() (bool, string) {
		_, _, _, err := probe(t, addr)
		return err != nil, "still answering"
	})
	if got := c.HealthCheckPorts(); len(got) != 0 {
		t.Errorf("HealthCheckPorts after deletion %v", got)
	}
}

// TestControllerHealthCheckDisabled: with DisableHealthCheck nothing
// listens.
func TestControllerHealthCheckDisabled(t *testing.T) {
	hcPort := freePort(t)
	s := svc(func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].NodePort = 30080
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = int32(hcPort)
	})
	client := fake.NewClientset(s, sliceOf("default", "web", "web-1", httpPort, ep("10.244.1.5", "me")))
	f := newFakeRealizer()
	c := startController(t, client, f, func(cfg *ControllerConfig) { cfg.DisableHealthCheck = true })
	if _, _, _, err := probe(t, fmt.Sprintf("127.0.0.1:%d", hcPort)); err == nil {
		t.Error("a health check answers although disabled")
	}
	if c.HealthCheckPorts() != nil {
		t.Error("HealthCheckPorts not nil")
	}
	if f.numCalls() != 1 {
		t.Errorf("calls %q", f.callsSince(0))
	}
}

// TestControllerSetZone: a new zone label recomputes the Services whose
// endpoints carry zone hints.
func TestControllerSetZone(t *testing.T) {
	client := fake.NewClientset(svc(), sliceOf("default", "web", "web-1", httpPort,
		ep("10.244.1.5", "n1", zones("z1")), ep("10.244.2.5", "n2", zones("z2"))),
		svc(named("default", "db", "10.96.0.20")), sliceOf("default", "db", "db-1", httpPort, ep("10.244.1.9", "n1")))
	f := newFakeRealizer()
	c := startController(t, client, f, func(cfg *ControllerConfig) { cfg.IPFamilies = []corev1.IPFamily{v4} })
	if got := f.rendered(); !slices.Contains(got, "default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080] ext=-") {
		t.Fatalf("zone z1: %q", got)
	}
	n := f.numCalls()
	c.SetZone("z2")
	got := waitCalls(t, f, n, 1)
	if !slices.Equal(got, []string{"+default/web:http/IPv4"}) {
		t.Errorf("calls after SetZone %q", got)
	}
	if got := f.rendered(); !slices.Contains(got, "default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.2.5:8080] ext=-") {
		t.Errorf("zone z2: %q", got)
	}
	c.SetZone("z2") // unchanged: nothing to do
	time.Sleep(50 * time.Millisecond)
	if f.numCalls() != n+1 {
		t.Errorf("calls after an unchanged zone %q", f.callsSince(n))
	}
}

func TestNewControllerValidates(t *testing.T) {
	client := fake.NewClientset()
	for name, cfg := range map[string]ControllerConfig{
		"no realizer":  {Client: client, NodeName: "me"},
		"no node":      {Client: client, Realizer: newFakeRealizer()},
		"no client":    {NodeName: "me", Realizer: newFakeRealizer()},
		"bad family":   {Client: client, NodeName: "me", Realizer: newFakeRealizer(), IPFamilies: []corev1.IPFamily{"IPv5"}},
		"bad hc addrs": {Client: client, NodeName: "me", Realizer: newFakeRealizer(), HealthCheckAddresses: []netip.Addr{{}}},
	} {
		if _, err := NewController(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
