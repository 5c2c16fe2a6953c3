package kubecache

import (
	"context"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

var managed = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}

func fullPod() *corev1.Pod {
	del := metav1.NewTime(time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC))
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop", UID: "u1", ResourceVersion: "42",
			Labels: map[string]string{"app": "web"}, DeletionTimestamp: &del, ManagedFields: managed,
			Annotations: map[string]string{MirrorPodAnnotation: "static-uid", "big": "x"}},
		Spec: corev1.PodSpec{NodeName: "n1", HostNetwork: true, Containers: []corev1.Container{
			{Name: "main", Image: "web:1", Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}, {ContainerPort: 9000}}},
			{Name: "sidecar", Image: "proxy:1", Ports: []corev1.ContainerPort{{ContainerPort: 15000}}},
		}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.5", PodIPs: []corev1.PodIP{{IP: "10.244.1.5"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

func fullService() *corev1.Service {
	timeout, local, vip := int32(60), corev1.ServiceInternalTrafficPolicyLocal, corev1.LoadBalancerIPModeVIP
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "s1", ResourceVersion: "9", ManagedFields: managed,
			Labels:      map[string]string{"app": "web", ServiceProxyNameLabel: "other"},
			Annotations: map[string]string{corev1.LastAppliedConfigAnnotation: "{big}"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.96.0.10",
			ClusterIPs: []string{"10.96.0.10", "fd00:96::10"}, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
			Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080,
				TargetPort: intstr.FromString("http"), AppProtocol: new("http")}},
			ExternalIPs: []string{"192.0.2.1"}, SessionAffinity: corev1.ServiceAffinityClientIP,
			SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &timeout}},
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal, InternalTrafficPolicy: &local,
			HealthCheckNodePort: 31000, LoadBalancerSourceRanges: []string{"198.51.100.0/24"}},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
			{IP: "203.0.113.7", IPMode: &vip, Ports: []corev1.PortStatus{{Port: 80}}}, {Hostname: "lb.example"}}}},
	}
}

func fullSlice() *discoveryv1.EndpointSlice {
	ready, node, port := true, "n1", int32(8080)
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "web-abc", Namespace: "shop", UID: "e1", ResourceVersion: "11", ManagedFields: managed,
			Labels:      map[string]string{discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"},
			Annotations: map[string]string{EndpointsLastChangeTriggerTime: "2026-12-03T08:00:00Z", "other": "x"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Protocol: new(corev1.ProtocolTCP), Port: &port}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5", "10.244.1.6"},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}, Hostname: new("web-0"), NodeName: &node, Zone: new("z1"),
			Hints:     &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z1"}}},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "web-0", UID: "u1"}}},
	}
}

func TestTransform(t *testing.T) {
	del := fullPod().DeletionTimestamp
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny", Namespace: "shop", ManagedFields: managed,
		Annotations: map[string]string{corev1.LastAppliedConfigAnnotation: "{}", "keep": "1"}}}
	tombstone := cache.DeletedFinalStateUnknown{Key: "shop/web-0", Obj: fullPod()}
	tests := []struct {
		name string
		in   any
		want any
	}{
		{"pod keeps identity, labels, node, IPs, named ports, mirror annotation", fullPod(), &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop", UID: "u1", ResourceVersion: "42",
				Labels: map[string]string{"app": "web"}, DeletionTimestamp: del,
				Annotations: map[string]string{MirrorPodAnnotation: "static-uid"}},
			Spec: corev1.PodSpec{NodeName: "n1", HostNetwork: true, Containers: []corev1.Container{
				{Name: "main", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.5", PodIPs: []corev1.PodIP{{IP: "10.244.1.5"}}},
		}},
		{"node keeps name, CIDRs, addresses", &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "n", ResourceVersion: "7", Labels: map[string]string{"a": "b"}, ManagedFields: managed},
			Spec:       corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}, Taints: []corev1.Taint{{Key: "t"}}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.31.250.11"}},
				Images: []corev1.ContainerImage{{Names: []string{"big"}}}, Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady}}},
		}, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "n", ResourceVersion: "7"},
			Spec:       corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}},
			Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.31.250.11"}}},
		}},
		{"namespace loses managedFields only", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop",
			Labels: map[string]string{"team": "a"}, ManagedFields: managed}},
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "a"}}}},
		{"policy loses managedFields and last-applied", np, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{
			Name: "deny", Namespace: "shop", Annotations: map[string]string{"keep": "1"}}}},
		{"service keeps identity, proxy labels, what load balancing reads", fullService(), &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "s1", ResourceVersion: "9",
				Labels: map[string]string{ServiceProxyNameLabel: "other"}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.96.0.10",
				ClusterIPs: []string{"10.96.0.10", "fd00:96::10"}, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
				Ports:       []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080}},
				ExternalIPs: []string{"192.0.2.1"}, SessionAffinity: corev1.ServiceAffinityClientIP,
				SessionAffinityConfig: fullService().Spec.SessionAffinityConfig,
				ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal, InternalTrafficPolicy: fullService().Spec.InternalTrafficPolicy,
				HealthCheckNodePort: 31000, LoadBalancerSourceRanges: []string{"198.51.100.0/24"}},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
				{IP: "203.0.113.7", IPMode: fullService().Status.LoadBalancer.Ingress[0].IPMode}}}},
		}},
		{"endpointslice keeps identity, service labels, trigger time, first address, conditions, node, hints", fullSlice(), &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "web-abc", Namespace: "shop", UID: "e1", ResourceVersion: "11",
				Labels:      map[string]string{discoveryv1.LabelServiceName: "web"},
				Annotations: map[string]string{EndpointsLastChangeTriggerTime: "2026-12-03T08:00:00Z"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       fullSlice().Ports,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, Conditions: fullSlice().Endpoints[0].Conditions,
				NodeName: fullSlice().Endpoints[0].NodeName, Hints: fullSlice().Endpoints[0].Hints}},
		}},
		{"tombstone passes unchanged", tombstone, tombstone},
	}
	for _, tt := range tests {
		got, err := Transform(tt.in)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s:\n got  %#v\n want %#v", tt.name, got, tt.want)
		}
	}
}

// TestFactoryTransforms: every informer of the factory holds slim objects.
func TestFactoryTransforms(t *testing.T) {
	client := fake.NewClientset(fullPod())
	f := NewFactory(client)
	pods := f.Core().V1().Pods()
	inf := pods.Informer()
	ctx, cancel := context.WithCancel(t.Context())
	defer func() { cancel(); f.Shutdown() }()
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync")
	}
	p, err := pods.Lister().Pods("shop").Get("web-0")
	if err != nil {
		t.Fatal(err)
	}
	if want := SlimPod(fullPod()); !reflect.DeepEqual(p, want) {
		t.Errorf("cached pod %#v, want the slim %#v", p, want)
	}
}
