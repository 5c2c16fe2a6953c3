package kubecache

import (
	"context"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
