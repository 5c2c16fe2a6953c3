package nodenet_test

import (
	"bytes"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/test/netnstest"
)

// TestPeerRouteNotRewritten: ensuring a peer's route (and, for IPv6, its
// pinned next hop) that is already in place writes nothing, so the kernel
// announces nothing ovs-vswitchd would react to (an agent restart
// re-ensures every peer's route); a changed next hop is still written.
func TestPeerRouteNotRewritten(t *testing.T) {
	ns := netnstest.New(t, "weir-nr").Name
	nsRun(t, ns, "ip", "link", "add", "gw0", "type", "veth", "peer", "name", "gw0p")
	nsRun(t, ns, "ip", "link", "set", "gw0p", "up")
	nsRun(t, ns, "ip", "link", "set", "gw0", "up")
	_, cidr4, _ := net.ParseCIDR("10.20.1.0/24")
	_, cidr6, _ := net.ParseCIDR("fd00:20:1::/64")
	mac, _ := net.ParseMAC("aa:bb:cc:dd:ee:ff")
	ensure := func(gw4, gw6 string) {
		t.Helper()
		netnstest.MustDo(t, ns, func() error { return nodenet.EnsurePeerRoute("gw0", cidr4, net.ParseIP(gw4)) })
		netnstest.MustDo(t, ns, func() error { return nodenet.EnsurePeerRouteV6("gw0", cidr6, net.ParseIP(gw6), mac) })
	}
	ensure("10.20.1.1", "fd00:20:1::1")

	var out bytes.Buffer
	mon := exec.Command("ip", "netns", "exec", ns, "ip", "-o", "monitor", "route", "neigh")
	mon.Stdout = &out
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	stop := func() string {
		time.Sleep(200 * time.Millisecond) // let the monitor print what it got
		_ = mon.Process.Kill()
		_ = mon.Wait()
		return out.String()
	}
	time.Sleep(200 * time.Millisecond) // the monitor subscribes
	ensure("10.20.1.1", "fd00:20:1::1")
	ensure("10.20.1.1", "fd00:20:1::1")
	ensure("10.20.1.254", "fd00:20:1::1") // the IPv4 next hop changes
	got := stop()
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "10.20.1.0/24 via 10.20.1.254") {
		t.Fatalf("netlink announcements: %q, want only the changed IPv4 route", got)
	}
}
