package proxy

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/kubecache"
)

// benchService returns Service bench/svc-i (an IPv4 ClusterIP, two ports)
// and its slice of n endpoints spread over 10 nodes, zone-hinted.
func benchService(i, n int) (*corev1.Service, *discoveryv1.EndpointSlice) {
	name := fmt.Sprintf("svc-%d", i)
	ip := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
	s := svc(named("bench", name, ip), multiPort)
	var eps []discoveryv1.Endpoint
	for j := range n {
		eps = append(eps, ep(fmt.Sprintf("10.%d.%d.%d", 100+i/65000, (i/250)%256, j+1), fmt.Sprintf("n%d", j%10),
			zones(fmt.Sprintf("z%d", j%3))))
	}
	sl := sliceOf("bench", name, name+"-x", []discoveryv1.EndpointPort{port("http", 8080, corev1.ProtocolTCP),
		port("metrics", 9100, corev1.ProtocolTCP)}, eps...)
	return s, sl
}

// BenchmarkComputeService: one Service of two ports and 10 zone-hinted
// endpoints, both families asked.
func BenchmarkComputeService(b *testing.B) {
	s, sl := benchService(1, 10)
	slices := []*discoveryv1.EndpointSlice{sl}
	fams := []corev1.IPFamily{v4, v6}
	for b.Loop() {
		computeService(s, slices, fams, topology{node: "n1", zone: "z1"})
	}
}

// BenchmarkControllerEndpointChange: with 10,000 Services of 10 endpoints
// synced, the time from an EndpointSlice change reaching the informer's
// cache to the ApplyServices call (the realizer here does nothing).
func BenchmarkControllerEndpointChange(b *testing.B) {
	const services = 10000
	objs := make([]runtime.Object, 0, 2*services)
	for i := range services {
		s, sl := benchService(i, 10)
		objs = append(objs, s, sl)
	}
	client := fake.NewClientset(objs...)
	factory := kubecache.NewFactory(client)
	f := newFakeRealizer()
	c, err := NewController(ControllerConfig{Client: client, Informers: factory, NodeName: "n1", Zone: "z1",
		Realizer: f, IPFamilies: []corev1.IPFamily{v4}, DisableHealthCheck: true, Logger: klog.Background().V(10)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); factory.Shutdown() }()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		b.Fatal("not synced")
	}
	start := time.Now()
	c.queue.Add(keySync)
	c.processBatch(ctx)
	b.Logf("first sync of %d Services: %s", services, time.Since(start).Round(time.Millisecond))
	if st := c.Stats(); st.ServicePorts != 2*services {
		b.Fatalf("stats %+v", st)
	}
	store := factory.Discovery().V1().EndpointSlices().Informer().GetStore()
	i := 0
	for b.Loop() {
		_, sl := benchService(i%services, 10)
		// Every round over the Services flips one endpoint's readiness.
		sl.Endpoints[i%10].Conditions.Ready = new((i/services)%2 == 1)
		if err := store.Update(kubecache.SlimEndpointSlice(sl)); err != nil {
			b.Fatal(err)
		}
		c.queue.Add("bench/" + sl.Labels[discoveryv1.LabelServiceName])
		c.processBatch(ctx)
		i++
	}
}
