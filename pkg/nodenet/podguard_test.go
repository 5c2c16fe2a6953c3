package nodenet_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/test/netnstest"
)

// TestPodGuard checks that the node's kernel stops answering (ARP, IPv4
// and IPv6) on pod host-side interfaces once the guard is installed, while
// an interface named as the gateway keeps working, and that the guard goes
// away again. A pod on a veth "weir..." pings the node's addresses
// 10.9.0.1 and fd00:9::1 (held on lo: local addresses on another device,
// as the gateway's are). IPv6 is on on these host-side veths (podnet turns
// it off on the ones it makes: see InstallPodGuard), and the pod sends to
// the veth's MAC (a permanent neighbour entry: the kernel answers no
// Neighbor Solicitation for an address of another device, which the test
// checks too), so only the ip6 chain keeps the kernel out.
func TestPodGuard(t *testing.T) {
	node, pod, gwPod := netnstest.New(t, "weir-nn").Name, netnstest.New(t, "weir-nn").Name, netnstest.New(t, "weir-nn").Name
	nsRun(t, node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	nsRun(t, node, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
	nsRun(t, node, "ip", "addr", "add", "10.9.0.1/32", "dev", "lo")
	nsRun(t, node, "ip", "-6", "addr", "add", "fd00:9::1/128", "dev", "lo")
	for _, p := range []struct{ ns, hostIf, ip, ip6 string }{
		{pod, "weir0123456789a", "10.9.0.2/24", "fd00:9::2"},
		{gwPod, "weir-gwt", "10.9.0.3/24", "fd00:9::3"},
	} {
		mustRun(t, "ip", "link", "add", p.hostIf, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
		nsRun(t, node, "ip", "link", "set", p.hostIf, "up")
		nsRun(t, node, "ip", "route", "add", strings.Split(p.ip, "/")[0], "dev", p.hostIf) // the way back
		nsRun(t, node, "ip", "-6", "route", "add", p.ip6, "dev", p.hostIf)
		nsRun(t, p.ns, "ip", "addr", "add", p.ip, "dev", "eth0")
		nsRun(t, p.ns, "ip", "-6", "addr", "add", p.ip6+"/64", "dev", "eth0", "nodad")
		nsRun(t, p.ns, "ip", "link", "set", "eth0", "up")
		hostMAC := strings.TrimSpace(nsRun(t, node, "cat", "/sys/class/net/"+p.hostIf+"/address"))
		podMAC := strings.TrimSpace(nsRun(t, p.ns, "cat", "/sys/class/net/eth0/address"))
		// Both ways without Neighbor Discovery (the node's side would
		// need a link-local source address, tentative for a while).
		nsRun(t, node, "ip", "-6", "neigh", "replace", p.ip6, "lladdr", podMAC, "dev", p.hostIf, "nud", "permanent")
		if p.ns == pod {
			// The kernel answers no solicitation for an address of
			// another device (lo): the pod cannot resolve fd00:9::1.
			if err := exec.Command("ip", "netns", "exec", p.ns, "ping", "-6", "-c", "1", "-W", "1", "fd00:9::1").Run(); err == nil {
				t.Error("the node's kernel answered a Neighbor Solicitation on a pod veth for an address of lo")
			}
		}
		nsRun(t, p.ns, "ip", "-6", "neigh", "replace", "fd00:9::1", "lladdr", hostMAC, "dev", "eth0", "nud", "permanent")
	}
	reaches := func(ns string) bool {
		nsRun(t, ns, "ip", "-4", "neigh", "flush", "dev", "eth0")
		return exec.Command("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "0.5", "10.9.0.1").Run() == nil
	}
	reaches6 := func(ns string) bool {
		return exec.Command("ip", "netns", "exec", ns, "ping", "-6", "-c", "1", "-W", "0.5", "fd00:9::1").Run() == nil
	}
	for _, tc := range []struct {
		name          string
		step          func() error
		wantPod, want bool // pod, gateway-named interface
	}{
		{"no guard", func() error { return nil }, true, true},
		{"guard", func() error { return nodenet.InstallPodGuard(t.Context(), "weir-gwt") }, false, true},
		{"guard again", func() error { return nodenet.InstallPodGuard(t.Context(), "weir-gwt") }, false, true},
		{"removed", func() error { return nodenet.RemovePodGuard(t.Context()) }, true, true},
		{"removed again", func() error { return nodenet.RemovePodGuard(t.Context()) }, true, true},
	} {
		netnstest.MustDo(t, node, tc.step)
		if got := reaches(pod); got != tc.wantPod {
			t.Errorf("%s: the kernel answers the pod on its veth: %v, want %v", tc.name, got, tc.wantPod)
		}
		if got := reaches(gwPod); got != tc.want {
			t.Errorf("%s: the kernel answers on the gateway-named interface: %v, want %v", tc.name, got, tc.want)
		}
		if got := reaches6(pod); got != tc.wantPod {
			t.Errorf("%s: the kernel answers the pod on its veth over IPv6: %v, want %v", tc.name, got, tc.wantPod)
		}
		if got := reaches6(gwPod); got != tc.want {
			t.Errorf("%s: the kernel answers on the gateway-named interface over IPv6: %v, want %v", tc.name, got, tc.want)
		}
	}
	if out := nsRun(t, node, "nft", "list", "tables"); strings.Contains(out, "weir_podguard") {
		t.Errorf("tables left after RemovePodGuard:\n%s", out)
	}
	netnstest.MustDo(t, node, func() error {
		if err := nodenet.InstallPodGuard(t.Context(), ""); err == nil {
			t.Error("InstallPodGuard without a gateway name: no error")
		}
		return nil
	})
}
