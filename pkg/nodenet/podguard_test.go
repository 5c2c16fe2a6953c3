package nodenet_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/test/netnstest"
)

// TestPodGuard checks that the node's kernel stops answering (ARP and IP)
// on pod host-side interfaces once the guard is installed, while an
// interface named as the gateway keeps working, and that the guard goes
// away again. A pod on a veth "weir..." pings the node's address
// 10.9.0.1 (held on lo: a local address on another device, as the
// gateway address is).
func TestPodGuard(t *testing.T) {
	node, pod, gwPod := netnstest.New(t, "weir-nn").Name, netnstest.New(t, "weir-nn").Name, netnstest.New(t, "weir-nn").Name
	nsRun(t, node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	nsRun(t, node, "ip", "addr", "add", "10.9.0.1/32", "dev", "lo")
	for _, p := range []struct{ ns, hostIf, ip string }{{pod, "weir0123456789a", "10.9.0.2/24"}, {gwPod, "weir-gwt", "10.9.0.3/24"}} {
		mustRun(t, "ip", "link", "add", p.hostIf, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
		nsRun(t, node, "ip", "link", "set", p.hostIf, "up")
		nsRun(t, node, "ip", "route", "add", strings.Split(p.ip, "/")[0], "dev", p.hostIf) // the way back
		nsRun(t, p.ns, "ip", "addr", "add", p.ip, "dev", "eth0")
		nsRun(t, p.ns, "ip", "link", "set", "eth0", "up")
	}
	reaches := func(ns string) bool {
		nsRun(t, ns, "ip", "neigh", "flush", "dev", "eth0")
		return exec.Command("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "0.5", "10.9.0.1").Run() == nil
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
	}
	netnstest.MustDo(t, node, func() error {
		if err := nodenet.InstallPodGuard(t.Context(), ""); err == nil {
			t.Error("InstallPodGuard without a gateway name: no error")
		}
		return nil
	})
}
