package cniserver

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
	"github.com/weirnet/weir/pkg/ipam"
	"github.com/weirnet/weir/pkg/podnet"
	"github.com/weirnet/weir/test/testroot"
)

// TestAddBandwidth: ADD with the bandwidth capability shapes both ends of
// the pod's veth; invalid limits fail with code 7 and leave nothing behind.
func TestAddBandwidth(t *testing.T) {
	testroot.Require(t, "creates network namespaces and veths")
	tests := []struct {
		name          string
		runtimeConfig string
		wantCode      uint32
		wantMsg       string
		hostTC, podTC string // in `tc qdisc show` of each side
	}{
		{name: "both directions", runtimeConfig: `{"bandwidth":{"ingressRate":20000000,"ingressBurst":4294967295,"egressRate":10000000,"egressBurst":4294967295}}`,
			hostTC: "tbf 1: root", podTC: "rate 10Mbit"},
		{name: "egress only", runtimeConfig: `{"bandwidth":{"egressRate":1000000,"egressBurst":4294967295}}`,
			hostTC: "noqueue", podTC: "rate 1Mbit"},
		{name: "no limits", runtimeConfig: `{"bandwidth":{}}`, hostTC: "noqueue", podTC: "noqueue"},
		{name: "rate without burst", runtimeConfig: `{"bandwidth":{"ingressRate":20000000}}`,
			wantCode: cniv1.CodeInvalidNetworkConfig, wantMsg: "ingressRate 20000000 is set without ingressBurst"},
		{name: "rate below 1 kbit/s", runtimeConfig: `{"bandwidth":{"egressRate":10,"egressBurst":100}}`,
			wantCode: cniv1.CodeInvalidNetworkConfig, wantMsg: "egressRate 10 bit/s is out of range"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			suffix := string(rune('a' + i))
			nodeName := "weir-bw-node-" + suffix
			node := netnsAdd(t, nodeName)
			pod := netnsAdd(t, "weir-bw-pod-"+suffix)
			_, cidr, _ := net.ParseCIDR("10.78.0.0/24")
			alloc, err := ipam.New(cidr, &ipam.MemStore{})
			if err != nil {
				t.Fatal(err)
			}
			ports := &fakePorts{ports: map[string]int{}}
			flows := &fakeFlows{pods: map[string]bool{}}
			s := New(Config{Bridge: "br-int", MTU: 1450, HostNetNSPath: node}, ports, flows, alloc)
			s.SetReady(true)
			conf := `{"cniVersion":"1.0.0","name":"weir","type":"weir","runtimeConfig":` + tc.runtimeConfig + `}`
			args := &cniv1.CniCmdArgs{ContainerId: "c1", Ifname: "eth0", Netns: pod, NetworkConfiguration: []byte(conf)}
			resp, err := s.CmdAdd(context.Background(), &cniv1.CniCmdRequest{CniArgs: args})
			if err != nil {
				t.Fatal(err)
			}
			hostIf := podnet.HostIfName("c1", "eth0")
			if tc.wantCode != 0 {
				if resp.Error == nil || resp.Error.Code != tc.wantCode || !strings.Contains(resp.Error.Details, tc.wantMsg) {
					t.Fatalf("ADD: %+v, want code %d mentioning %q", resp.Error, tc.wantCode, tc.wantMsg)
				}
				t.Logf("code %d: %s: %s", resp.Error.Code, resp.Error.Message, resp.Error.Details)
				out, err := exec.Command("ip", "-n", nodeName, "-o", "link", "show", "type", "veth").CombinedOutput()
				if err != nil || strings.TrimSpace(string(out)) != "" {
					t.Errorf("veth left after the failed ADD: %s (%v)", out, err)
				}
				if l := alloc.List(); len(l) != 0 || len(flows.pods) != 0 || len(ports.ports) != 0 || s.Interfaces().Len() != 0 {
					t.Errorf("left after the failed ADD: IPs %v flows %v ports %v attachments %d", l, flows.pods, ports.ports, s.Interfaces().Len())
				}
				return
			}
			if resp.Error != nil {
				t.Fatalf("ADD: %+v", resp.Error)
			}
			hostTC, _ := exec.Command("ip", "netns", "exec", nodeName, "tc", "qdisc", "show", "dev", hostIf, "root").CombinedOutput()
			podTC, _ := exec.Command("ip", "netns", "exec", "weir-bw-pod-"+suffix, "tc", "qdisc", "show", "dev", "eth0", "root").CombinedOutput()
			if !strings.Contains(string(hostTC), tc.hostTC) || !strings.Contains(string(podTC), tc.podTC) {
				t.Errorf("qdiscs: host %q pod %q, want %q and %q", hostTC, podTC, tc.hostTC, tc.podTC)
			}
			req, cerr := parseRequest("CHECK", args, true, true)
			if cerr != nil {
				t.Fatal(cerr)
			}
			vcfg := podnet.VethConfig{HostNetNSPath: node, HostIfName: hostIf, NetNSPath: pod, IfName: "eth0", MTU: 1450}
			if p := checkBandwidth(req, vcfg); p != "" {
				t.Errorf("checkBandwidth after ADD: %s", p)
			}
			if tc.podTC != "noqueue" {
				other := *req.conf.RuntimeConfig.Bandwidth
				other.EgressRate *= 2
				req.conf.RuntimeConfig.Bandwidth = &other
				if p := checkBandwidth(req, vcfg); !strings.Contains(p, "is shaped to") {
					t.Errorf("checkBandwidth against other limits: %q, want it to report the shaping", p)
				}
				// Without limits the qdiscs are not Weir's to judge (a
				// chained bandwidth plugin may own them).
				req.conf.RuntimeConfig.Bandwidth = nil
				if p := checkBandwidth(req, vcfg); p != "" {
					t.Errorf("checkBandwidth without limits: %q, want nothing checked", p)
				}
			}
			if resp, err := s.CmdDel(context.Background(), &cniv1.CniCmdRequest{CniArgs: args}); err != nil || resp.Error != nil {
				t.Fatalf("DEL: %+v %v", resp, err)
			}
			out, err := exec.Command("ip", "-n", nodeName, "-o", "link", "show", "type", "veth").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "" {
				t.Errorf("veth (and its qdisc) left after DEL: %s (%v)", out, err)
			}
		})
	}
}
