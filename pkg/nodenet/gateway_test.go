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

// TestGatewayIPv6Only: on an IPv6-only node (the gateway gw0 has only an
// IPv6 address) SetGatewayARPAnnounce succeeds and changes nothing that
// matters, and IPv6 needs no twin of it: the node pings a fresh pod from
// its node IP (2001:db8::10 on lo) through the gateway, and the pod learns
// no neighbour entry for the node IP, because the kernel's Neighbor
// Solicitation on gw0 comes from gw0's link-local address.
func TestGatewayIPv6Only(t *testing.T) {
	const nodeIP, gwIP, podIP = "2001:db8::10", "fd00:10::1", "fd00:10::5"
	node, pod := netnstest.New(t, "weir-nn").Name, netnstest.New(t, "weir-nn").Name
	mustRun(t, "ip", "link", "add", "gw0", "netns", node, "type", "veth", "peer", "name", "eth0", "netns", pod)
	// No DAD on the link-local address the solicitation comes from.
	nsRun(t, node, "sysctl", "-q", "-w", "net.ipv6.conf.gw0.accept_dad=0")
	nsRun(t, node, "ip", "-6", "addr", "add", gwIP+"/64", "dev", "gw0", "nodad")
	nsRun(t, node, "ip", "-6", "addr", "add", nodeIP+"/128", "dev", "lo")
	nsRun(t, node, "ip", "link", "set", "gw0", "up")
	nsRun(t, pod, "sysctl", "-q", "-w", "net.ipv6.conf.eth0.accept_dad=0")
	nsRun(t, pod, "ip", "-6", "addr", "add", podIP+"/64", "dev", "eth0", "nodad")
	nsRun(t, pod, "ip", "link", "set", "eth0", "up")
	nsRun(t, pod, "ip", "-6", "route", "add", "default", "via", gwIP)
	netnstest.MustDo(t, node, func() error {
		if _, err := nodenet.SetGatewayARPAnnounce("gw0"); err != nil {
			t.Errorf("SetGatewayARPAnnounce on an IPv6-only gateway: %v", err)
		}
		return nil
	})
	if got := strings.TrimSpace(nsRun(t, node, "ip", "-4", "addr", "show", "dev", "gw0")); got != "" {
		t.Fatalf("gw0 has IPv4: %s", got)
	}
	nsRun(t, node, "ping", "-6", "-n", "-c", "1", "-W", "2", "-I", nodeIP, podIP)
	neigh := nsRun(t, pod, "ip", "-6", "neigh", "show", "dev", "eth0")
	if strings.Contains(neigh, nodeIP+" ") {
		t.Errorf("the pod learnt a neighbour entry for the node IP from the node's solicitation:\n%s", neigh)
	}
	if !strings.Contains(neigh, "fe80::") {
		t.Errorf("the pod learnt no entry for gw0's link-local address, the solicitation's source:\n%s", neigh)
	}
}
