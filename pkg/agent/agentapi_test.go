package agent

import (
	"context"
	"maps"
	"net"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/ipam"
	"github.com/weirnet/weir/pkg/kubecache"
)

// The audit's Kubernetes check uses the Pod controller's rule: gone, on
// another node, recreated (UID), and a static pod's mirror annotation.
func TestAuditKubePods(t *testing.T) {
	pod := func(name, node, uid string, ann map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(uid), Annotations: ann},
			Spec: corev1.PodSpec{NodeName: node}}
	}
	client := fake.NewClientset(
		pod("live", "node1", "u-live", nil),
		pod("static", "node1", "u-mirror", map[string]string{kubecache.MirrorPodAnnotation: "u-static"}),
		pod("recreated", "node1", "u-new", nil),
		pod("moved", "node2", "u-moved", nil),
	)
	att := func(name, uid string) interfacestore.Interface {
		return interfacestore.Interface{ContainerID: name, IfName: "eth0", PodNamespace: "ns", PodName: name, PodUID: uid}
	}
	atts := []interfacestore.Interface{att("live", "u-live"), att("static", "u-static"), att("recreated", "u-old"),
		att("moved", "u-moved"), att("gone", "u-gone"), {ContainerID: "nokube", IfName: "eth0"}}
	stale, n, err := kubePods{client: client, node: "node1"}.StaleAttachments(context.Background(), atts)
	if err != nil {
		t.Fatal(err)
	}
	// The fake clientset ignores field selectors: it lists all 4 Pods.
	if n != 4 {
		t.Errorf("read %d pods, want 4", n)
	}
	want := map[string]string{
		"recreated/eth0": "the pod was recreated (UID u-new, interface recorded u-old)",
		"moved/eth0":     `a pod of this name now has spec.nodeName "node2"`,
		"gone/eth0":      "the pod does not exist",
	}
	if !maps.Equal(stale, want) {
		t.Errorf("stale %q, want %q", stale, want)
	}
}

// The audit reads the running allocator: what it allocated, released
// included.
func TestAuditAllocations(t *testing.T) {
	_, cidr, _ := net.ParseCIDR("10.9.0.0/24")
	alloc, err := ipam.New(cidr, ipam.NewFileStore(filepath.Join(t.TempDir(), "ipam.json")))
	if err != nil {
		t.Fatal(err)
	}
	ip, err := alloc.Allocate("c1/eth0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alloc.Allocate("c2/eth0"); err != nil {
		t.Fatal(err)
	}
	if err := alloc.Release("c2/eth0"); err != nil {
		t.Fatal(err)
	}
	got, err := allocations{alloc}.Allocations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got["c1/eth0"].Equal(ip) {
		t.Errorf("allocations %v, want c1/eth0 -> %s", got, ip)
	}
}
