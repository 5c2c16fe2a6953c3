package nodenet_test

import (
	"os"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/test/netnstest"
)

// TestSetGatewayARPAnnounce: the node pings a fresh pod from its node IP
// (192.0.2.10 on lo) through the gateway interface gw0. The pod learns the
// sender of the node's ARP request: with the kernel's default arp_announce
// 0 that is the node IP, after SetGatewayARPAnnounce the gateway IP.
func TestSetGatewayARPAnnounce(t *testing.T) {
	const nodeIP, gwIP = "192.0.2.10", "10.10.0.1"
	for _, tc := range []struct {
		name       string
		set        bool
		wantSender string
	}{
		{"kernel default", false, nodeIP},
		{"arp_announce 2", true, gwIP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node, pod := netnstest.New(t, "weir-nn").Name, netnstest.New(t, "weir-nn").Name
			mustRun(t, "ip", "link", "add", "gw0", "netns", node, "type", "veth", "peer", "name", "eth0", "netns", pod)
			nsRun(t, node, "ip", "addr", "add", gwIP+"/24", "dev", "gw0")
			nsRun(t, node, "ip", "addr", "add", nodeIP+"/32", "dev", "lo")
			nsRun(t, node, "ip", "link", "set", "gw0", "up")
			nsRun(t, pod, "ip", "addr", "add", "10.10.0.5/24", "dev", "eth0")
			nsRun(t, pod, "ip", "link", "set", "eth0", "up")
			nsRun(t, pod, "ip", "route", "add", "default", "via", gwIP)
			if tc.set {
				netnstest.MustDo(t, node, func() error {
					changed, err := nodenet.SetGatewayARPAnnounce("gw0")
					if err != nil || !changed {
						t.Errorf("SetGatewayARPAnnounce: changed %v, %v; want a change", changed, err)
					}
					if changed, err = nodenet.SetGatewayARPAnnounce("gw0"); err != nil || changed {
						t.Errorf("second SetGatewayARPAnnounce: changed %v, %v; want no change", changed, err)
					}
					b, err := os.ReadFile("/proc/sys/net/ipv4/conf/gw0/arp_announce")
					if err != nil || strings.TrimSpace(string(b)) != "2" {
						t.Errorf("arp_announce of gw0 reads %q, %v; want 2", b, err)
					}
					return nil
				})
			}
			nsRun(t, node, "ping", "-n", "-c", "1", "-W", "2", "-I", nodeIP, "10.10.0.5")
			neigh := nsRun(t, pod, "ip", "-4", "neigh", "show", "dev", "eth0")
			if !strings.Contains(neigh, tc.wantSender+" ") {
				t.Errorf("the pod learnt %q from the node's ARP request, want the sender %s", neigh, tc.wantSender)
			}
			// (The pod asks for the gateway itself to answer, so only the
			// node IP's absence tells.)
			if tc.set && strings.Contains(neigh, nodeIP+" ") {
				t.Errorf("the pod learnt %q, want no entry for the node IP %s", neigh, nodeIP)
			}
		})
	}
	for _, bad := range []string{"", "../all", "gw0/x"} {
		if _, err := nodenet.SetGatewayARPAnnounce(bad); err == nil {
			t.Errorf("SetGatewayARPAnnounce(%q): no error", bad)
		}
	}
}
