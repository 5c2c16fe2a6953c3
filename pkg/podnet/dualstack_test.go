package podnet

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/weirnet/weir/test/netnstest"
)

// TestSetupVethDualStack gives the pod an IPv4 and an IPv6 address with a
// default route of each family via its gateway, checks them with CheckVeth,
// and has CheckVeth name a missing IPv6 route.
func TestSetupVethDualStack(t *testing.T) {
	requireRoot(t)
	node, pod := netnstest.New(t, "weirtest-node"), netnstest.New(t, "weirtest-pod")
	cfg := podConfig(t, node, pod, "10.99.0.5/24", "10.99.0.1")
	cfg.Second = &Address{IPNet: mustIPNet(t, "fd00:99::5/64"), Gateway: net.ParseIP("fd00:99::1"),
		Routes: []*net.IPNet{mustIPNet(t, "fd00:96::/108")}}
	ctx := context.Background()
	if _, err := SetupVeth(ctx, cfg); err != nil {
		t.Fatalf("SetupVeth: %v", err)
	}
	eth := links(t, pod)["eth0"]
	for _, want := range []struct {
		addr string
		len  int
	}{{"10.99.0.5", 24}, {"fd00:99::5", 64}} {
		if !slices.ContainsFunc(eth.AddrInfo, func(a ipAddr) bool { return a.Local == want.addr && a.PrefixLen == want.len }) {
			t.Errorf("pod interface lacks %s/%d: %+v", want.addr, want.len, eth.AddrInfo)
		}
	}
	v6 := run(t, "ip", "-n", pod.Name, "-6", "route", "show")
	for _, want := range []string{"default via fd00:99::1 dev eth0", "fd00:96::/108 via fd00:99::1 dev eth0"} {
		if !strings.Contains(v6, want) {
			t.Errorf("IPv6 routes lack %q:\n%s", want, v6)
		}
	}
	if v4 := run(t, "ip", "-n", pod.Name, "-4", "route", "show", "default"); !strings.Contains(v4, "via 10.99.0.1 dev eth0") {
		t.Errorf("IPv4 default route missing:\n%s", v4)
	}
	if err := CheckVeth(ctx, cfg); err != nil {
		t.Fatalf("CheckVeth after SetupVeth: %v", err)
	}
	run(t, "ip", "-n", pod.Name, "-6", "route", "del", "fd00:96::/108")
	err := CheckVeth(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "has no route fd00:96::/108 via fd00:99::1") {
		t.Fatalf("CheckVeth without the IPv6 route = %v", err)
	}
}

func TestVethConfigSecondAddress(t *testing.T) {
	base := VethConfig{NetNSPath: "/var/run/netns/p", IfName: "eth0", HostIfName: "weir0123456789a",
		IPNet: &net.IPNet{IP: net.ParseIP("10.99.0.5").To4(), Mask: net.CIDRMask(24, 32)}, Gateway: net.ParseIP("10.99.0.1")}
	v6 := func(ip, gw string) *Address {
		return &Address{IPNet: &net.IPNet{IP: net.ParseIP(ip), Mask: net.CIDRMask(64, 128)}, Gateway: net.ParseIP(gw)}
	}
	tests := []struct {
		name   string
		second *Address
		want   string // "" valid
	}{
		{"IPv6 second", v6("fd00::5", "fd00::1"), ""},
		{"same family", &Address{IPNet: &net.IPNet{IP: net.ParseIP("10.98.0.5").To4(), Mask: net.CIDRMask(24, 32)}, Gateway: net.ParseIP("10.98.0.1")}, "same family"},
		{"gateway of the other family", v6("fd00::5", "10.99.0.1"), "Second.Gateway 10.99.0.1 and pod address fd00::5 are of different families"},
		{"no address", &Address{Gateway: net.ParseIP("fd00::1")}, "Second.IPNet is empty"},
		{"route of the other family", &Address{IPNet: v6("fd00::5", "fd00::1").IPNet, Gateway: net.ParseIP("fd00::1"),
			Routes: []*net.IPNet{{IP: net.ParseIP("10.96.0.0").To4(), Mask: net.CIDRMask(12, 32)}}}, "different families"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			cfg.Second = tt.second
			_, err := cfg.validate()
			if (tt.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestSetupVethIPv6Only gives the pod a single IPv6 address (an IPv6-only
// node: the primary and only address is IPv6) with the IPv6 default route
// and an extra route via the IPv6 gateway, on-link; the derived MAC is
// MACFromIP of the IPv6 address; there is no IPv4 address or route;
// CheckVeth passes, then names the missing IPv6 default route; a second
// SetupVeth finds the pair as it is; TeardownVeth removes it.
func TestSetupVethIPv6Only(t *testing.T) {
	requireRoot(t)
	node, pod := netnstest.New(t, "weirtest-node"), netnstest.New(t, "weirtest-pod")
	cfg := podConfig(t, node, pod, "fd00:99::5/64", "fd00:99::1")
	cfg.Routes = []*net.IPNet{mustIPNet(t, "fd00:96::/108")}
	ctx := context.Background()
	res, err := SetupVeth(ctx, cfg)
	if err != nil {
		t.Fatalf("SetupVeth: %v", err)
	}
	wantMAC := MACFromIP(net.ParseIP("fd00:99::5"))
	eth := links(t, pod)["eth0"]
	if eth.Address != wantMAC.String() || res.ContainerMAC.String() != wantMAC.String() {
		t.Errorf("pod MAC %s (result %s), want %s", eth.Address, res.ContainerMAC, wantMAC)
	}
	if !slices.ContainsFunc(eth.AddrInfo, func(a ipAddr) bool { return a.Local == "fd00:99::5" && a.PrefixLen == 64 }) {
		t.Errorf("pod interface lacks fd00:99::5/64: %+v", eth.AddrInfo)
	}
	if v4 := strings.TrimSpace(run(t, "ip", "-n", pod.Name, "-4", "addr", "show", "dev", "eth0")); v4 != "" {
		t.Errorf("IPv6-only pod has IPv4 addresses:\n%s", v4)
	}
	if v4 := strings.TrimSpace(run(t, "ip", "-n", pod.Name, "-4", "route", "show")); v4 != "" {
		t.Errorf("IPv6-only pod has IPv4 routes:\n%s", v4)
	}
	v6 := run(t, "ip", "-n", pod.Name, "-6", "route", "show")
	for _, want := range []string{"default via fd00:99::1 dev eth0 metric 1024 onlink", "fd00:96::/108 via fd00:99::1 dev eth0 metric 1024 onlink"} {
		if !strings.Contains(v6, want) {
			t.Errorf("IPv6 routes lack %q:\n%s", want, v6)
		}
	}
	// nodad: usable at once.
	if got := run(t, "ip", "-n", pod.Name, "-6", "addr", "show", "dev", "eth0", "scope", "global"); strings.Contains(got, "tentative") {
		t.Errorf("the pod's IPv6 address is tentative:\n%s", got)
	}
	if err := CheckVeth(ctx, cfg); err != nil {
		t.Fatalf("CheckVeth after SetupVeth: %v", err)
	}
	again, err := SetupVeth(ctx, cfg)
	if err != nil || again.HostIfIndex != res.HostIfIndex || again.ContainerIfIndex != res.ContainerIfIndex {
		t.Errorf("SetupVeth again: %+v, %v; want the same pair %+v", again, err, res)
	}
	run(t, "ip", "-n", pod.Name, "-6", "route", "del", "default")
	if err := CheckVeth(ctx, cfg); err == nil || !strings.Contains(err.Error(), "has no default route via fd00:99::1") {
		t.Fatalf("CheckVeth without the IPv6 default route = %v", err)
	}
	if err := TeardownVeth(ctx, cfg.HostNetNSPath, cfg.HostIfName, cfg.NetNSPath, cfg.IfName); err != nil {
		t.Fatal(err)
	}
	if _, ok := links(t, pod)["eth0"]; ok {
		t.Error("eth0 left after TeardownVeth")
	}
}
