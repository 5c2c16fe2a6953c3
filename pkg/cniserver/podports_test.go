package cniserver

import (
	"context"
	"net"
	"sync"
	"testing"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/ipam"
	"github.com/weirnet/weir/test/testroot"
)

// TestPodPorts adds and deletes a pod interface (real veth, fake OVS and
// flows) and checks what the interface store, the server writes, reports:
// PodOFPort and the WatchPods notifications the policy controller gets.
func TestPodPorts(t *testing.T) {
	testroot.Require(t, "creates network namespaces and veths")
	node := netnsAdd(t, "weir-pp-node")
	pod := netnsAdd(t, "weir-pp-pod")
	_, cidr, _ := net.ParseCIDR("10.78.0.0/24")
	alloc, err := ipam.New(cidr, &ipam.MemStore{})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Bridge: "br-int", MTU: 1450, HostNetNSPath: node}, &fakePorts{ports: map[string]int{}},
		&fakeFlows{pods: map[string]bool{}}, alloc)
	s.SetReady(true)
	var mu sync.Mutex
	var events []string
	store := s.Interfaces()
	store.WatchPods(func(r interfacestore.PodRef) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, r.String())
	})
	if _, ok := store.PodOFPort("ns1", "p1"); ok {
		t.Fatal("OFPort of an unknown pod reported")
	}
	args := &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: pod,
		Args:                 "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1;K8S_POD_UID=u1",
		NetworkConfiguration: []byte(`{"cniVersion":"1.0.0","name":"weir","type":"weir"}`)}
	resp, err := s.CmdAdd(context.Background(), &cniv1.CniCmdRequest{CniArgs: args})
	if err != nil || resp.Error != nil {
		t.Fatalf("ADD: %+v %v", resp, err)
	}
	port, ok := store.PodOFPort("ns1", "p1")
	if !ok || port == 0 || port != store.List()[0].OFPort {
		t.Fatalf("PodOFPort after ADD = %d, %v", port, ok)
	}
	if i, ok := store.ByOFPort(port); !ok || i.PodUID != "u1" || i.Network != "weir" {
		t.Fatalf("ByOFPort(%d) = %+v, %v", port, i, ok)
	}
	if _, ok := store.PodOFPort("ns1", "p2"); ok {
		t.Fatal("OFPort of another pod reported")
	}
	resp, err = s.CmdDel(context.Background(), &cniv1.CniCmdRequest{CniArgs: args})
	if err != nil || resp.Error != nil {
		t.Fatalf("DEL: %+v %v", resp, err)
	}
	if _, ok := store.PodOFPort("ns1", "p1"); ok || store.Len() != 0 {
		t.Fatal("PodOFPort reported after DEL")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 2 || events[0] != "ns1/p1" || events[1] != "ns1/p1" {
		t.Fatalf("notifications %q, want ns1/p1 twice", events)
	}
}
