package cniserver

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
	"github.com/weirnet/weir/pkg/ipam"
	"github.com/weirnet/weir/test/testroot"
)

func dualStackServer(t *testing.T, node, cidr6 string) (*Server, *ipam.Allocator, *ipam.Allocator, *fakeFlows) {
	t.Helper()
	_, cidr, _ := net.ParseCIDR("10.79.0.0/24")
	alloc, err := ipam.New(cidr, &ipam.MemStore{})
	if err != nil {
		t.Fatal(err)
	}
	_, c6, _ := net.ParseCIDR(cidr6)
	alloc6, err := ipam.New(c6, &ipam.MemStore{})
	if err != nil {
		t.Fatal(err)
	}
	flows := &fakeFlows{pods: map[string]bool{}}
	s := New(Config{Bridge: "br-int", MTU: 1450, HostNetNSPath: node, IPv6: alloc6}, &fakePorts{ports: map[string]int{}}, flows, alloc)
	s.SetReady(true)
	return s, alloc, alloc6, flows
}

// TestDualStackAttachment: ADD gives the pod an address of each family with
// a default route of each via its gateway, the result says so, CHECK with
// that result passes, the store holds both addresses, and DEL frees both.
func TestDualStackAttachment(t *testing.T) {
	testroot.Require(t, "creates network namespaces and veths")
	node := netnsAdd(t, "weir-ds-node")
	pod := netnsAdd(t, "weir-ds-pod")
	s, alloc, alloc6, flows := dualStackServer(t, node, "fd00:79::/64")
	conf := `{"cniVersion":"1.1.0","name":"weir","type":"weir","routes":[{"dst":"10.96.0.0/12"},{"dst":"fd00:96::/108"}]}`
	args := &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: pod,
		Args: "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1", NetworkConfiguration: []byte(conf)}
	ctx := context.Background()
	resp, err := s.CmdAdd(ctx, &cniv1.CniCmdRequest{CniArgs: args})
	if err != nil || resp.Error != nil {
		t.Fatalf("ADD: %+v %v", resp, err)
	}
	var res current.Result
	if err := json.Unmarshal(resp.CniResult, &res); err != nil {
		t.Fatal(err)
	}
	var ips, routes []string
	for _, ip := range res.IPs {
		ips = append(ips, ip.Address.String()+" gw "+ip.Gateway.String())
	}
	for _, r := range res.Routes {
		routes = append(routes, r.Dst.String()+" via "+r.GW.String())
	}
	if want := "10.79.0.2/24 gw 10.79.0.1,fd00:79::2/64 gw fd00:79::1"; strings.Join(ips, ",") != want {
		t.Errorf("result IPs = %v, want %s", ips, want)
	}
	if want := "0.0.0.0/0 via 10.79.0.1,10.96.0.0/12 via 10.79.0.1,::/0 via fd00:79::1,fd00:96::/108 via fd00:79::1"; strings.Join(routes, ",") != want {
		t.Errorf("result routes = %v, want %s", routes, want)
	}
	out, err := exec.Command("ip", "-n", strings.TrimPrefix(pod, "/var/run/netns/"), "-6", "route", "show").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "default via fd00:79::1 dev eth0") {
		t.Errorf("pod IPv6 routes (%v):\n%s", err, out)
	}
	i, ok := s.Interfaces().Get("c1/eth0")
	if !ok || len(i.IPs) != 2 || i.IPs[0].String() != "10.79.0.2" || i.IPs[1].String() != "fd00:79::2" {
		t.Errorf("store has %+v, %v", i, ok)
	}
	if p := podInterface(&i); p.IPv6().String() != "fd00:79::2" || !flows.pods["c1/eth0"] {
		t.Errorf("pipeline got %+v", p)
	}

	// CHECK with the result as prevResult.
	var confMap map[string]any
	_ = json.Unmarshal([]byte(conf), &confMap)
	confMap["prevResult"] = json.RawMessage(resp.CniResult)
	checkConf, _ := json.Marshal(confMap)
	check := &cniv1.CniCmdArgs{ContainerId: args.ContainerId, Ifname: args.Ifname, Netns: args.Netns, Args: args.Args,
		NetworkConfiguration: checkConf}
	if resp, err := s.CmdCheck(ctx, &cniv1.CniCmdRequest{CniArgs: check}); err != nil || resp.Error != nil {
		t.Fatalf("CHECK: %+v %v", resp, err)
	}
	// A missing IPv6 route is found.
	if out, err := exec.Command("ip", "-n", strings.TrimPrefix(pod, "/var/run/netns/"), "-6", "route", "del", "fd00:96::/108").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if resp, _ := s.CmdCheck(ctx, &cniv1.CniCmdRequest{CniArgs: check}); resp.GetError() == nil ||
		!strings.Contains(resp.Error.Message, "no route fd00:96::/108 via fd00:79::1") {
		t.Errorf("CHECK without the IPv6 route = %+v", resp)
	}

	if resp, err := s.CmdDel(ctx, &cniv1.CniCmdRequest{CniArgs: args}); err != nil || resp.Error != nil {
		t.Fatalf("DEL: %+v %v", resp, err)
	}
	if len(alloc.List()) != 0 || len(alloc6.List()) != 0 || s.Interfaces().Len() != 0 {
		t.Errorf("after DEL: IPv4 %v, IPv6 %v, %d interfaces", alloc.List(), alloc6.List(), s.Interfaces().Len())
	}
}

// TestDualStackExhaustedIPv6: with no IPv6 address left, ADD fails with
// code 11 naming the IPv6 CIDR, and the IPv4 address it took is freed.
func TestDualStackExhaustedIPv6(t *testing.T) {
	testroot.Require(t, "creates network namespaces")
	node := netnsAdd(t, "weir-dx-node")
	pod := netnsAdd(t, "weir-dx-pod")
	s, alloc, alloc6, _ := dualStackServer(t, node, "fd00:79::/126") // ::1 gateway, ::2 and ::3 for pods
	for _, k := range []string{"x/eth0", "y/eth0"} {
		if _, err := alloc6.Allocate(k); err != nil {
			t.Fatal(err)
		}
	}
	args := &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: pod,
		NetworkConfiguration: []byte(`{"cniVersion":"1.1.0","name":"weir","type":"weir"}`)}
	resp, err := s.CmdAdd(context.Background(), &cniv1.CniCmdRequest{CniArgs: args})
	if err != nil || resp.GetError().GetCode() != cniv1.CodeIPAMExhausted || !strings.Contains(resp.Error.Message, "fd00:79::/126") {
		t.Fatalf("ADD = %+v, %v; want code %d naming the IPv6 CIDR", resp, err, cniv1.CodeIPAMExhausted)
	}
	if len(alloc.List()) != 0 {
		t.Errorf("IPv4 addresses left allocated: %v", alloc.List())
	}
}
