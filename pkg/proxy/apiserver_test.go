package proxy

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/klog/v2/ktesting"

	"github.com/weirnet/weir/pkg/kubecache"
	"github.com/weirnet/weir/test/k8stest"
	"github.com/weirnet/weir/test/testctx"
)

// TestControllerAPIServer runs the controller against a real kube-apiserver
// (which allocates the cluster IP, node ports and health check node port,
// and validates the objects) with a fake realizer: a LoadBalancer Service
// with externalTrafficPolicy Local, named target ports and two protocols,
// its EndpointSlice (no controller-manager runs: the test writes it as the
// EndpointSlice controller would), its ingress IP in the status, then its
// deletion.
func TestControllerAPIServer(t *testing.T) {
	cp := k8stest.Shared(t)
	cs := cp.ClientSet(t)
	ctx := testctx.Timeout(t, 2*time.Minute)
	ns := fmt.Sprintf("proxy-%d", time.Now().UnixNano()%100000)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })

	svcObj, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			SessionAffinity:       corev1.ServiceAffinityClientIP,
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("web")},
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(5353)},
			}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svcObj.Spec.HealthCheckNodePort == 0 || svcObj.Spec.Ports[0].NodePort == 0 || svcObj.Spec.ClusterIP == "" {
		t.Fatalf("the apiserver allocated no health check port, node port or cluster IP: %+v", svcObj.Spec)
	}
	t.Logf("Service %s/web: clusterIP %s nodePorts %d,%d healthCheckNodePort %d", ns, svcObj.Spec.ClusterIP,
		svcObj.Spec.Ports[0].NodePort, svcObj.Spec.Ports[1].NodePort, svcObj.Spec.HealthCheckNodePort)

	f := newFakeRealizer()
	factory := kubecache.NewFactory(cs)
	c, err := NewController(ControllerConfig{Client: cs, Informers: factory, NodeName: "me", Realizer: f,
		HealthCheckAddresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		Logger:               ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	factory.Start(runCtx.Done())
	go func() {
		defer close(done)
		c.Run(runCtx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
		factory.Shutdown()
	})
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}

	// The shared control plane may hold other tests' Services (and the
	// default kubernetes Service): look at this namespace only.
	mine := func() []string {
		var out []string
		for _, s := range f.rendered() {
			if strings.HasPrefix(s, ns+"/") {
				out = append(out, s)
			}
		}
		return out
	}
	waitState := func(what string, want []string) {
		t.Helper()
		eventually(t, what, func() (bool, string) {
			got := mine()
			return slices.Equal(got, want), fmt.Sprintf("\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		})
	}
	cip, np0, np1 := svcObj.Spec.ClusterIP, svcObj.Spec.Ports[0].NodePort, svcObj.Spec.Ports[1].NodePort
	frontends := func(port, nodePort int32, proto int, lb string) string {
		s := fmt.Sprintf("ClusterIP:%s:%d/%d,NodePort:*:%d/%d", cip, port, proto, nodePort, proto)
		if lb != "" {
			s += fmt.Sprintf(",LoadBalancer:%s:%d/%d", lb, port, proto)
		}
		return s
	}
	waitState("no endpoints yet", []string{
		fmt.Sprintf("%s/web:dns/IPv4 fe=%s cl=[] ext=[] extlocal none affinity=3h0m0s", ns, frontends(53, np1, 17, "")),
		fmt.Sprintf("%s/web:http/IPv4 fe=%s cl=[] ext=[] extlocal none affinity=3h0m0s", ns, frontends(80, np0, 6, "")),
	})

	// The EndpointSlice resolves the named target port per pod.
	ready, me, other := true, "me", "other"
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{port("http", 8080, corev1.ProtocolTCP), port("dns", 5353, corev1.ProtocolUDP)},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.1.5"}, NodeName: &me, Conditions: discoveryv1.EndpointConditions{Ready: &ready}},
			{Addresses: []string{"10.244.2.5"}, NodeName: &other, Conditions: discoveryv1.EndpointConditions{Ready: &ready}},
		},
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svcObj.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.50"}}
	if _, err := cs.CoreV1().Services(ns).UpdateStatus(ctx, svcObj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitState("endpoints and the ingress IP", []string{
		fmt.Sprintf("%s/web:dns/IPv4 fe=%s cl=[10.244.1.5:5353L,10.244.2.5:5353] ext=[10.244.1.5:5353L] extlocal affinity=3h0m0s",
			ns, frontends(53, np1, 17, "192.0.2.50")),
		fmt.Sprintf("%s/web:http/IPv4 fe=%s cl=[10.244.1.5:8080L,10.244.2.5:8080] ext=[10.244.1.5:8080L] extlocal affinity=3h0m0s",
			ns, frontends(80, np0, 6, "192.0.2.50")),
	})

	hcAddr := fmt.Sprintf("127.0.0.1:%d", svcObj.Spec.HealthCheckNodePort)
	eventually(t, "the health check answers 200", func() (bool, string) {
		status, _, body, err := probe(t, hcAddr)
		if err != nil {
			return false, err.Error()
		}
		return status == http.StatusOK && body.LocalEndpoints == 1 && body.Service.Namespace == ns,
			fmt.Sprintf("status %d body %+v", status, body)
	})

	if err := cs.CoreV1().Services(ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitState("Service deleted", nil)
	eventually(t, "the health check closes", func() (bool, string) {
		_, _, _, err := probe(t, hcAddr)
		return err != nil, "still answering"
	})
	// The orphaned EndpointSlice brings nothing back.
	time.Sleep(100 * time.Millisecond)
	if got := mine(); got != nil {
		t.Errorf("after deletion: %q", got)
	}
}
