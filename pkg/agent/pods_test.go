package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2/ktesting"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
	"github.com/weirnet/weir/pkg/cniserver"
	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/ipam"
	"github.com/weirnet/weir/pkg/kubecache"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/podnet"
	"github.com/weirnet/weir/test/k8stest"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

func TestStaleAgainst(t *testing.T) {
	pod := func(node, uid string, ann map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: types.UID(uid), Annotations: ann},
			Spec: corev1.PodSpec{NodeName: node}}
	}
	tests := []struct {
		name    string
		attUID  string
		pod     *corev1.Pod
		wantSub string // "" means not stale
	}{
		{"same pod, UID recorded", "u1", pod("n1", "u1", nil), ""},
		{"no UID recorded", "", pod("n1", "u2", nil), ""},
		{"recreated", "u1", pod("n1", "u2", nil), "recreated"},
		{"other node", "", pod("n2", "u1", nil), `spec.nodeName "n2"`},
		{"not scheduled", "u1", pod("", "u1", nil), `spec.nodeName ""`},
		{"static pod via mirror", "hash1", pod("n1", "mirror-uid", map[string]string{kubecache.MirrorPodAnnotation: "hash1"}), ""},
		{"static pod changed", "hash0", pod("n1", "mirror-uid", map[string]string{kubecache.MirrorPodAnnotation: "hash1"}), "recreated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := staleAgainst(interfacestore.Interface{PodNamespace: "ns", PodName: "p", PodUID: tc.attUID}, tc.pod, "n1")
			if (tc.wantSub == "") != (got == "") || !strings.Contains(got, tc.wantSub) {
				t.Fatalf("staleAgainst = %q, want containing %q", got, tc.wantSub)
			}
		})
	}
}

// cniNode is a node for tests: a private OVS with br-int, the base
// pipeline and the real CNI server, whose host-side veths live in the OVS
// namespace.
type cniNode struct {
	ovs   *ovstest.Instance
	db    *ovsdb.Client
	sw    *openflow.Switch
	alloc *ipam.Allocator
	srv   *cniserver.Server
	cidr  *net.IPNet
}

func newCNINode(t *testing.T, cidr string) *cniNode {
	t.Helper()
	ctx := testctx.Timeout(t, 2*time.Minute)
	log := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))
	n := &cniNode{ovs: ovstest.Start(t)}
	var err error
	if n.db, err = ovsdb.Connect(ctx, n.ovs.DBSocket(), log.WithName("ovsdb")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.db.Close)
	if _, err := n.db.EnsureBridge(ctx, ovsdb.BridgeConfig{Name: "br-int", DatapathType: ovsdb.DatapathNetdev}); err != nil {
		t.Fatal(err)
	}
	if n.sw, err = openflow.Open(openflow.Config{MgmtSocket: n.ovs.MgmtSocket("br-int"), RetryInterval: 50 * time.Millisecond,
		Logger: log.WithName("openflow")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.sw.Close)
	if err := n.sw.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	_, n.cidr, _ = net.ParseCIDR(cidr)
	if n.alloc, err = ipam.New(n.cidr, &ipam.MemStore{}); err != nil {
		t.Fatal(err)
	}
	gw := n.alloc.Gateway()
	pipe, err := pipeline.New(n.sw, pipeline.Config{GatewayOFPort: interfacestore.GatewayOFPort, GatewayMAC: podnet.MACFromIP(gw),
		GatewayIP: gw, PodCIDR: n.cidr, CTZone: 65520, Round: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := pipe.InstallBase(ctx); err != nil {
		t.Fatal(err)
	}
	n.srv = cniserver.New(cniserver.Config{Bridge: "br-int", MTU: 1450, TxChecksumOff: true,
		HostNetNSPath: "/var/run/netns/" + n.ovs.NetNS, Logger: log}, n.db, pipe, n.alloc)
	n.srv.SetReady(true)
	return n
}

func randSuffix(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// sandbox is a pod's network namespace and its CNI identity.
type sandbox struct {
	name, uid, containerID, netns string
	ip                            string
}

// add creates a netns for pod name and attaches it through CNI ADD with the
// kubelet's CNI_ARGS (uid "" leaves K8S_POD_UID out; name "" all of them).
func (n *cniNode) add(t *testing.T, ns, name, uid string) *sandbox {
	t.Helper()
	sb := &sandbox{name: name, uid: uid, containerID: "c" + randSuffix(t)}
	nsName := "weir-pr-" + sb.containerID
	if out, err := exec.Command("ip", "netns", "add", nsName).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", nsName).Run() })
	sb.netns = "/var/run/netns/" + nsName
	var args []string
	if name != "" {
		args = append(args, "K8S_POD_NAMESPACE="+ns, "K8S_POD_NAME="+name, "K8S_POD_INFRA_CONTAINER_ID="+sb.containerID)
	}
	if uid != "" {
		args = append(args, "K8S_POD_UID="+uid)
	}
	resp, err := n.srv.CmdAdd(testctx.Timeout(t, 2*time.Minute), &cniv1.CniCmdRequest{CniArgs: &cniv1.CniCmdArgs{
		ContainerId: sb.containerID, Ifname: "eth0", Netns: sb.netns, Args: strings.Join(args, ";"),
		NetworkConfiguration: []byte(`{"cniVersion":"1.0.0","name":"weir","type":"weir"}`)}})
	if err != nil || resp.Error != nil {
		t.Fatalf("ADD %s: %v %+v", name, err, resp.GetError())
	}
	ip, ok := n.alloc.Lookup(sb.containerID + "/eth0")
	if !ok {
		t.Fatalf("ADD %s: no IP allocated", name)
	}
	sb.ip = ip.String()
	return sb
}

// del is the kubelet's CNI DEL.
func (n *cniNode) del(t *testing.T, sb *sandbox) {
	t.Helper()
	resp, err := n.srv.CmdDel(testctx.Timeout(t, 2*time.Minute), &cniv1.CniCmdRequest{CniArgs: &cniv1.CniCmdArgs{
		ContainerId: sb.containerID, Ifname: "eth0", Netns: sb.netns,
		NetworkConfiguration: []byte(`{"cniVersion":"1.0.0","name":"weir","type":"weir"}`)}})
	if err != nil || resp.Error != nil {
		t.Fatalf("DEL %s: %v %+v", sb.name, err, resp.GetError())
	}
}

// state describes what is left of sb on the node: "attached" when port,
// veth, flows and IP are all there, "gone" when none is, else a list.
func (n *cniNode) state(t *testing.T, sb *sandbox) string {
	t.Helper()
	hostIf := podnet.HostIfName(sb.containerID, "eth0")
	var have []string
	if strings.Contains(" "+strings.Join(strings.Fields(n.ovs.MustVsctl(t, "list-ports", "br-int")), " ")+" ", " "+hostIf+" ") {
		have = append(have, "port")
	}
	if out, err := n.ovs.Exec("", "ip", "link", "show", hostIf); err == nil {
		have = append(have, "veth")
	} else if !strings.Contains(out, "does not exist") {
		t.Fatalf("ip link show %s: %v: %s", hostIf, err, out)
	}
	// The pod's flows: cookie category "pod", mentioning its IP.
	podCookie := fmt.Sprintf("cookie=%#x/%#x", uint64(openflow.MakeCookie(0, pipeline.CategoryPod, 0)),
		openflow.CookieCategoryMask)
	for _, f := range n.ovs.DumpFlows(t, "br-int", podCookie) {
		if strings.Contains(f, "="+sb.ip+",") || strings.HasSuffix(f, "="+sb.ip) || strings.Contains(f, "="+sb.ip+" ") {
			have = append(have, "flows")
			break
		}
	}
	if _, ok := n.alloc.Lookup(sb.containerID + "/eth0"); ok {
		have = append(have, "ip")
	}
	switch len(have) {
	case 0:
		return "gone"
	case 4:
		return "attached"
	}
	return strings.Join(have, ",")
}

func createPod(t *testing.T, client kubernetes.Interface, ns, name, node string) *corev1.Pod {
	t.Helper()
	pod, err := client.CoreV1().Pods(ns).Create(testctx.Timeout(t, 2*time.Minute), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{NodeName: node, AutomountServiceAccountToken: ptr(false),
			Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/none:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating Pod %s/%s: %v", ns, name, err)
	}
	t.Cleanup(func() { deletePod(t, client, ns, name, true) })
	return pod
}

func deletePod(t *testing.T, client kubernetes.Interface, ns, name string, ignoreMissing bool) {
	err := client.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
	if err != nil && !(ignoreMissing && apierrors.IsNotFound(err)) {
		t.Errorf("deleting Pod %s/%s: %v", ns, name, err)
	}
}

// TestPodReconcile runs the Pod controller against a real kube-apiserver
// with the real CNI server on a real OVS: interfaces of pods deleted while
// the agent was down (or recreated with a new UID, or now bound to another
// node) are released at start-up exactly as a DEL would; a pod deleted
// while the agent runs keeps its interface through the grace period and
// loses it after; an interface the runtime DELs itself within the grace
// period is left to it; live pods and non-Kubernetes interfaces are
// untouched.
func TestPodReconcile(t *testing.T) {
	cp := k8stest.Shared(t)
	client := cp.ClientSet(t)
	node := "pods-" + randSuffix(t)
	other := node + "-other"
	ns := metav1.NamespaceDefault
	n := newCNINode(t, "10.66.0.0/24")

	// Pods before the "agent restart".
	keep := createPod(t, client, ns, "keep-"+node, node)
	keepNoUID := createPod(t, client, ns, "keep-nouid-"+node, node)
	gone := createPod(t, client, ns, "gone-"+node, node)
	recreated := createPod(t, client, ns, "recreated-"+node, node)
	moved := createPod(t, client, ns, "moved-"+node, node)
	sbKeep := n.add(t, ns, keep.Name, string(keep.UID))
	sbKeepNoUID := n.add(t, ns, keepNoUID.Name, "")
	sbGone := n.add(t, ns, gone.Name, string(gone.UID))
	sbRecreated := n.add(t, ns, recreated.Name, string(recreated.UID))
	sbMoved := n.add(t, ns, moved.Name, "")
	sbPlain := n.add(t, "", "", "") // not from a kubelet
	for _, sb := range []*sandbox{sbKeep, sbKeepNoUID, sbGone, sbRecreated, sbMoved, sbPlain} {
		if got := n.state(t, sb); got != "attached" {
			t.Fatalf("after ADD, %s is %q, want attached", sb.name, got)
		}
	}

	// While the agent is "down": one pod deleted, one deleted and created
	// again (new UID), one deleted and created on another node.
	deletePod(t, client, ns, gone.Name, false)
	deletePod(t, client, ns, recreated.Name, false)
	createPod(t, client, ns, recreated.Name, node)
	deletePod(t, client, ns, moved.Name, false)
	createPod(t, client, ns, moved.Name, other)

	const grace = 3 * time.Second
	log := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))
	pc, err := NewPodController(PodControllerConfig{Client: client, NodeName: node, Interfaces: n.srv.Interfaces(), Releaser: n.srv, GracePeriod: grace,
		Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(testctx.Timeout(t, 2*time.Minute))
	done := make(chan struct{})
	go func() {
		defer close(done)
		pc.Run(ctx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
	start := time.Now()
	if err := pc.WaitInitialReconcile(testctx.Timeout(t, 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	t.Logf("start-up reconcile (informer sync included) took %s", time.Since(start).Round(time.Millisecond))

	want := map[*sandbox]string{sbKeep: "attached", sbKeepNoUID: "attached", sbPlain: "attached",
		sbGone: "gone", sbRecreated: "gone", sbMoved: "gone"}
	for sb, w := range want {
		if got := n.state(t, sb); got != w {
			t.Errorf("after the start-up reconcile, %s (%s) is %q, want %q", sb.name, sb.ip, got, w)
		}
	}
	if got := pc.Released(); got != 3 {
		t.Errorf("Released() = %d, want 3", got)
	}
	// The released IPs are free again.
	if got := len(n.alloc.List()); got != 3 {
		t.Errorf("IPAM holds %d allocations, want 3: %v", got, n.alloc.List())
	}

	// While running: a deleted pod keeps its interface through the grace
	// period (the kubelet's DEL may still come), then loses it.
	deleted := time.Now()
	deletePod(t, client, ns, keep.Name, false)
	// A pod whose DEL the runtime does in time is left to it.
	deletePod(t, client, ns, keepNoUID.Name, false)
	n.del(t, sbKeepNoUID)
	time.Sleep(grace / 2)
	if got := n.state(t, sbKeep); got != "attached" {
		t.Fatalf("%s after %s of a %s grace period is %q, want still attached", sbKeep.name,
			time.Since(deleted).Round(time.Millisecond), grace, got)
	}
	deadline := time.Now().Add(grace + 15*time.Second)
	for n.state(t, sbKeep) != "gone" {
		if time.Now().After(deadline) {
			t.Fatalf("%s is %q %s after the Pod was deleted, want gone", sbKeep.name, n.state(t, sbKeep),
				time.Since(deleted).Round(time.Millisecond))
		}
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(deleted)
	t.Logf("interface of the deleted pod released %s after the delete (grace %s)", took.Round(time.Millisecond), grace)
	if took < grace {
		t.Errorf("released after %s, before the %s grace period", took, grace)
	}
	time.Sleep(500 * time.Millisecond) // let the queue settle
	if got := pc.Released(); got != 4 {
		t.Errorf("Released() = %d, want 4 (the DEL of %s came first)", got, sbKeepNoUID.name)
	}
	if got := n.state(t, sbPlain); got != "attached" {
		t.Errorf("the non-Kubernetes interface is %q, want attached", got)
	}
}
