package podnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weirnet/weir/test/netnstest"
)

func TestSetupVeth(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name    string
		mutate  func(*VethConfig)
		wantMAC string
		wantMTU int
		wantTx  string
	}{
		{name: "derived MAC, tx checksum off", mutate: func(*VethConfig) {}, wantMAC: "0a:58:0a:63:00:05", wantMTU: 1450, wantTx: "off"},
		{name: "explicit MAC, default MTU, tx checksum on", mutate: func(c *VethConfig) {
			c.MAC = net.HardwareAddr{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
			c.MTU = 0
			c.TxChecksumOff = false
		}, wantMAC: "02:aa:bb:cc:dd:ee", wantMTU: 1500, wantTx: "on"},
		{name: "/32 address with on-link gateway", mutate: func(c *VethConfig) {
			c.IPNet = mustIPNet(t, "10.99.0.5/32")
			c.IfName = "net1"
		}, wantMAC: "0a:58:0a:63:00:05", wantMTU: 1450, wantTx: "off"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node, pod := netnstest.New(t, "weirtest-node"), netnstest.New(t, "weirtest-pod")
			cfg := podConfig(t, node, pod, "10.99.0.5/24", "10.99.0.1")
			tc.mutate(&cfg)
			ctx := context.Background()

			res, err := SetupVeth(ctx, cfg)
			if err != nil {
				t.Fatalf("SetupVeth: %v", err)
			}

			podLinks := links(t, pod)
			eth, ok := podLinks[cfg.IfName]
			if !ok {
				t.Fatalf("no %s in pod netns: %v", cfg.IfName, podLinks)
			}
			if eth.Address != tc.wantMAC || res.ContainerMAC.String() != tc.wantMAC {
				t.Errorf("pod MAC = %s (result %s), want %s", eth.Address, res.ContainerMAC, tc.wantMAC)
			}
			if eth.MTU != tc.wantMTU {
				t.Errorf("pod MTU = %d, want %d", eth.MTU, tc.wantMTU)
			}
			if !eth.up() {
				t.Errorf("pod interface is not up: %v", eth.Flags)
			}
			if eth.IfIndex != res.ContainerIfIndex || res.ContainerIfName != cfg.IfName {
				t.Errorf("result has container interface %s/%d, netns has %s/%d", res.ContainerIfName, res.ContainerIfIndex, cfg.IfName, eth.IfIndex)
			}
			ones, _ := cfg.IPNet.Mask.Size()
			if !slices.ContainsFunc(eth.AddrInfo, func(a ipAddr) bool {
				return a.Local == cfg.IPNet.IP.String() && a.PrefixLen == ones
			}) {
				t.Errorf("pod interface lacks %s: %+v", cfg.IPNet, eth.AddrInfo)
			}
			routes := defaultRoutes(t, pod)
			if len(routes) != 1 || routes[0].Gateway != "10.99.0.1" || routes[0].Dev != cfg.IfName || !slices.Contains(routes[0].Flags, "onlink") {
				t.Errorf("default routes = %+v, want one via 10.99.0.1 dev %s onlink", routes, cfg.IfName)
			}
			if got := ethtoolFeature(t, pod, cfg.IfName, "tx-checksumming"); got != tc.wantTx {
				t.Errorf("tx-checksumming = %q, want %q", got, tc.wantTx)
			}

			nodeLinks := links(t, node)
			host, ok := nodeLinks[cfg.HostIfName]
			if !ok {
				t.Fatalf("no %s in node netns: %v", cfg.HostIfName, nodeLinks)
			}
			if !host.up() || host.MTU != tc.wantMTU {
				t.Errorf("host side flags %v MTU %d; want UP, MTU %d", host.Flags, host.MTU, tc.wantMTU)
			}
			if res.HostIfName != cfg.HostIfName || res.HostIfIndex != host.IfIndex || res.HostMAC.String() != host.Address {
				t.Errorf("result host side %s/%d/%s, netns has %s/%d/%s", res.HostIfName, res.HostIfIndex, res.HostMAC, cfg.HostIfName, host.IfIndex, host.Address)
			}
			if len(host.AddrInfo) != 0 {
				t.Errorf("host side has addresses (IPv6 not disabled?): %+v", host.AddrInfo)
			}
			if v := strings.TrimSpace(run(t, "ip", "netns", "exec", node.Name, "cat", "/proc/sys/net/ipv6/conf/"+cfg.HostIfName+"/disable_ipv6")); v != "1" {
				t.Errorf("host side disable_ipv6 = %s, want 1", v)
			}
			// Nothing else in the node namespace: the veth is its only link
			// besides lo.
			if len(nodeLinks) != 2 {
				t.Errorf("node netns links: %v", nodeLinks)
			}
			if err := CheckVeth(ctx, cfg); err != nil {
				t.Errorf("CheckVeth after SetupVeth: %v", err)
			}
		})
	}
}

// TestSetupVethPingGateway gives the host side the gateway address and pings
// it from the pod, with tx checksum offload off on the pod side.
func TestSetupVethPingGateway(t *testing.T) {
	requireRoot(t)
	node, pod := netnstest.New(t, "weirtest-node"), netnstest.New(t, "weirtest-pod")
	cfg := podConfig(t, node, pod, "10.99.0.5/24", "10.99.0.1")
	if _, err := SetupVeth(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "-n", node.Name, "addr", "add", "10.99.0.1/24", "dev", cfg.HostIfName)
	out := run(t, "ip", "netns", "exec", pod.Name, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.99.0.1")
	if !strings.Contains(out, "3 received") {
		t.Errorf("ping: %s", out)
	}
	// TCP too: checksums are computed in software with offload off.
	run(t, "ip", "netns", "exec", pod.Name, "ping", "-c", "1", "-s", "1400", "-M", "do", "-W", "2", "10.99.0.1")
}

func TestSetupVethIdempotent(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	node, pod := netnstest.New(t, "weirtest-node"), netnstest.New(t, "weirtest-pod")
	cfg := podConfig(t, node, pod, "10.99.0.5/24", "10.99.0.1")
	first, err := SetupVeth(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	second, err := SetupVeth(ctx, cfg)
	if err != nil {
		t.Fatalf("second SetupVeth: %v", err)
	}
	if fmt.Sprint(*first) != fmt.Sprint(*second) {
		t.Errorf("second SetupVeth = %+v, want the existing %+v", *second, *first)
	}

	// A retry with a different address replaces the pair.
	cfg.IPNet = mustIPNet(t, "10.99.0.6/24")
	third, err := SetupVeth(ctx, cfg)
	if err != nil {
		t.Fatalf("SetupVeth with a new address: %v", err)
	}
	if third.HostIfIndex == first.HostIfIndex {
		t.Errorf("pair not recreated for a new address (host ifindex %d)", third.HostIfIndex)
	}
	eth := links(t, pod)["eth0"]
	if len(eth.AddrInfo) != 1 || eth.AddrInfo[0].Local != "10.99.0.6" {
		t.Errorf("pod addresses after re-setup: %+v", eth.AddrInfo)
	}
	if err := CheckVeth(ctx, cfg); err != nil {
		t.Error(err)
	}
}

func TestSetupVethReplacesStaleHostVeth(t *testing.T) {
	requireRoot(t)
	node, pod := netnstest.New(t, "weirtest-node"), netnstest.New(t, "weirtest-pod")
	cfg := podConfig(t, node, pod, "10.99.0.5/24", "10.99.0.1")
	run(t, "ip", "-n", node.Name, "link", "add", cfg.HostIfName, "type", "veth", "peer", "name", "straypeer")
	if _, err := SetupVeth(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if _, ok := links(t, node)["straypeer"]; ok {
		t.Error("stale veth pair not removed")
	}
	if err := CheckVeth(context.Background(), cfg); err != nil {
		t.Error(err)
	}
}

func TestSetupVethRollback(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name     string
		prepare  func(t *testing.T, node, pod netnstest.NetNS, cfg *VethConfig) context.Context
		wantStep string
		wantErr  string
		wantIs   error
		keep     string // an interface of the test's that must survive, as "node:name" or "pod:name"
	}{
		{
			name: "pod netns does not exist",
			prepare: func(t *testing.T, _, _ netnstest.NetNS, cfg *VethConfig) context.Context {
				cfg.NetNSPath = "/var/run/netns/weirtest-missing-" + randHex(t, 4)
				return context.Background()
			},
			wantStep: "open pod netns",
			wantIs:   ErrNetNSNotFound,
		},
		{
			name: "pod netns deleted",
			prepare: func(t *testing.T, _, pod netnstest.NetNS, _ *VethConfig) context.Context {
				pod.Delete(t)
				return context.Background()
			},
			wantStep: "open pod netns",
			wantIs:   ErrNetNSNotFound,
		},
		{
			name: "kernel rejects the default route",
			prepare: func(_ *testing.T, _, _ netnstest.NetNS, cfg *VethConfig) context.Context {
				// The subnet's broadcast address is no valid next hop.
				cfg.Gateway = net.ParseIP("10.99.0.255")
				return context.Background()
			},
			wantStep: "configure pod interface",
			wantErr:  "adding default route via 10.99.0.255",
		},
		{
			name: "pod interface name taken",
			prepare: func(t *testing.T, _, pod netnstest.NetNS, _ *VethConfig) context.Context {
				run(t, "ip", "-n", pod.Name, "link", "add", "eth0", "type", "bridge")
				return context.Background()
			},
			wantStep: "create veth pair",
			wantErr:  "eth0 already exists",
			keep:     "pod:eth0",
		},
		{
			name: "host name taken by a non-veth",
			prepare: func(t *testing.T, node, _ netnstest.NetNS, cfg *VethConfig) context.Context {
				run(t, "ip", "-n", node.Name, "link", "add", cfg.HostIfName, "type", "bridge")
				return context.Background()
			},
			wantStep: "remove stale host interface",
			wantErr:  "refusing to delete it",
			keep:     "node:host",
		},
		{
			name: "context cancelled",
			prepare: func(*testing.T, netnstest.NetNS, netnstest.NetNS, *VethConfig) context.Context {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx
			},
			wantStep: "start",
			wantIs:   context.Canceled,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node, pod := netnstest.New(t, "weirtest-node"), netnstest.New(t, "weirtest-pod")
			cfg := podConfig(t, node, pod, "10.99.0.5/24", "10.99.0.1")
			ctx := tc.prepare(t, node, pod, &cfg)

			res, err := SetupVeth(ctx, cfg)
			if err == nil {
				t.Fatalf("SetupVeth succeeded: %+v", res)
			}
			t.Logf("SetupVeth: %v", err)
			var se *SetupError
			if !errors.As(err, &se) {
				t.Fatalf("error %v (%T) is not a *SetupError", err, err)
			}
			if se.Step != tc.wantStep || se.RollbackErr != nil {
				t.Errorf("step %q (rollback error %v), want step %q: %v", se.Step, se.RollbackErr, tc.wantStep, err)
			}
			if tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %v is not %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), cfg.HostIfName) {
				t.Errorf("error %q does not name %s", err, cfg.HostIfName)
			}

			// Nothing left behind but what the test made itself.
			nodeLinks := links(t, node)
			if _, ok := nodeLinks[cfg.HostIfName]; ok != (tc.keep == "node:host") {
				t.Errorf("host interface present = %v after failed setup: %v", ok, nodeLinks)
			}
			if len(nodeLinks) != 1+boolInt(tc.keep == "node:host") {
				t.Errorf("node netns links after failed setup: %v", nodeLinks)
			}
			if _, err := tryRun("ip", "netns", "exec", pod.Name, "true"); err == nil {
				podLinks := links(t, pod)
				if len(podLinks) != 1+boolInt(tc.keep == "pod:eth0") {
					t.Errorf("pod netns links after failed setup: %v", podLinks)
				}
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestTeardownVeth(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	tests := []struct {
		name   string
		before func(t *testing.T, node, pod netnstest.NetNS, cfg VethConfig)
	}{
		{name: "both sides present", before: func(*testing.T, netnstest.NetNS, netnstest.NetNS, VethConfig) {}},
		{name: "pod netns deleted", before: func(t *testing.T, _, pod netnstest.NetNS, _ VethConfig) { pod.Delete(t) }},
		{name: "host side already deleted", before: func(t *testing.T, node, _ netnstest.NetNS, cfg VethConfig) {
			run(t, "ip", "-n", node.Name, "link", "del", cfg.HostIfName)
		}},
		{name: "host side moved away, pod side left", before: func(t *testing.T, node, _ netnstest.NetNS, cfg VethConfig) {
			other := netnstest.New(t, "weirtest-other")
			run(t, "ip", "-n", node.Name, "link", "set", cfg.HostIfName, "netns", other.Name)
		}},
		{name: "node netns deleted", before: func(t *testing.T, node, _ netnstest.NetNS, _ VethConfig) { node.Delete(t) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node, pod := netnstest.New(t, "weirtest-node"), netnstest.New(t, "weirtest-pod")
			cfg := podConfig(t, node, pod, "10.99.0.5/24", "10.99.0.1")
			if _, err := SetupVeth(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			tc.before(t, node, pod, cfg)
			for i := range 2 {
				if err := TeardownVeth(ctx, node.Path, cfg.HostIfName, pod.Path, cfg.IfName); err != nil {
					t.Fatalf("TeardownVeth #%d: %v", i+1, err)
				}
			}
			if _, err := tryRun("ip", "netns", "exec", node.Name, "true"); err == nil {
				if l := links(t, node); len(l) != 1 {
					t.Errorf("node netns links after teardown: %v", l)
				}
			}
			if _, err := tryRun("ip", "netns", "exec", pod.Name, "true"); err == nil {
				if l := links(t, pod); len(l) != 1 {
					t.Errorf("pod netns links after teardown: %v", l)
				}
			}
		})
	}
}

func TestTeardownVethRefusesNonVeth(t *testing.T) {
	requireRoot(t)
	node := netnstest.New(t, "weirtest-node")
	run(t, "ip", "-n", node.Name, "link", "add", "weirnotaveth", "type", "bridge")
	err := TeardownVeth(context.Background(), node.Path, "weirnotaveth", "", "")
	if err == nil || !strings.Contains(err.Error(), "not a veth") {
		t.Fatalf("TeardownVeth of a bridge = %v, want a refusal", err)
	}
	if _, ok := links(t, node)["weirnotaveth"]; !ok {
		t.Error("bridge interface deleted")
	}
}

func TestCheckVeth(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	tests := []struct {
		name    string
		breakIt func(t *testing.T, node, pod netnstest.NetNS, cfg *VethConfig)
		wantErr []string // substrings; nil means healthy
		wantIs  error
	}{
		{name: "healthy", breakIt: func(*testing.T, netnstest.NetNS, netnstest.NetNS, *VethConfig) {}},
		{name: "host veth deleted", breakIt: func(t *testing.T, node, _ netnstest.NetNS, cfg *VethConfig) {
			run(t, "ip", "-n", node.Name, "link", "del", cfg.HostIfName)
		}, wantErr: []string{"host interface weir", "not found in netns /var/run/netns/weirtest-node-", "interface eth0 not found in netns"}},
		{name: "wrong IP", breakIt: func(t *testing.T, _, pod netnstest.NetNS, _ *VethConfig) {
			run(t, "ip", "-n", pod.Name, "addr", "del", "10.99.0.5/24", "dev", "eth0")
			run(t, "ip", "-n", pod.Name, "addr", "add", "10.99.0.77/24", "dev", "eth0")
		}, wantErr: []string{"interface eth0 in netns /var/run/netns/weirtest-pod-", "lacks address 10.99.0.5/24 (has 10.99.0.77/24)"}},
		{name: "host side down", breakIt: func(t *testing.T, node, _ netnstest.NetNS, cfg *VethConfig) {
			run(t, "ip", "-n", node.Name, "link", "set", cfg.HostIfName, "down")
		}, wantErr: []string{"is down"}},
		{name: "pod side down", breakIt: func(t *testing.T, _, pod netnstest.NetNS, _ *VethConfig) {
			run(t, "ip", "-n", pod.Name, "link", "set", "eth0", "down")
		}, wantErr: []string{"interface eth0 in netns", "is down", "no default route via 10.99.0.1 (has none)"}},
		// A chained plugin (tuning) may lower the pod side's MTU: CHECK
		// must allow for that. The host side is Weir's alone.
		{name: "pod MTU changed", breakIt: func(t *testing.T, _, pod netnstest.NetNS, _ *VethConfig) {
			run(t, "ip", "-n", pod.Name, "link", "set", "eth0", "mtu", "1400")
		}},
		{name: "host MTU changed", breakIt: func(t *testing.T, node, _ netnstest.NetNS, cfg *VethConfig) {
			run(t, "ip", "-n", node.Name, "link", "set", cfg.HostIfName, "mtu", "1400")
		}, wantErr: []string{"host interface weir", "has MTU 1400, want 1450"}},
		{name: "routes another plugin added", breakIt: func(t *testing.T, _, pod netnstest.NetNS, _ *VethConfig) {
			run(t, "ip", "-n", pod.Name, "route", "add", "192.168.7.0/24", "via", "10.99.0.1", "dev", "eth0", "onlink")
		}},
		{name: "default route deleted", breakIt: func(t *testing.T, _, pod netnstest.NetNS, _ *VethConfig) {
			run(t, "ip", "-n", pod.Name, "route", "del", "default")
		}, wantErr: []string{"no default route via 10.99.0.1 (has none)"}},
		{name: "default route via another gateway", breakIt: func(t *testing.T, _, pod netnstest.NetNS, _ *VethConfig) {
			run(t, "ip", "-n", pod.Name, "route", "replace", "default", "via", "10.99.0.254", "dev", "eth0")
		}, wantErr: []string{"no default route via 10.99.0.1 (has via 10.99.0.254)"}},
		{name: "tx checksum back on", breakIt: func(t *testing.T, _, pod netnstest.NetNS, _ *VethConfig) {
			run(t, "ip", "netns", "exec", pod.Name, "ethtool", "-K", "eth0", "tx", "on")
		}, wantErr: []string{"tx checksum offload on, want off"}},
		{name: "MAC differs", breakIt: func(_ *testing.T, _, _ netnstest.NetNS, cfg *VethConfig) {
			cfg.MAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 9}
		}, wantErr: []string{"has MAC 0a:58:0a:63:00:05, want 02:00:00:00:00:09"}},
		{name: "pod netns gone", breakIt: func(t *testing.T, _, pod netnstest.NetNS, _ *VethConfig) {
			pod.Delete(t)
		}, wantErr: []string{"pod netns", "does not exist"}, wantIs: ErrNetNSNotFound},
		{name: "host side not the peer", breakIt: func(t *testing.T, node, pod netnstest.NetNS, cfg *VethConfig) {
			// Replace the pair by an unrelated one with the same names.
			run(t, "ip", "-n", node.Name, "link", "del", cfg.HostIfName)
			run(t, "ip", "-n", node.Name, "link", "add", cfg.HostIfName, "mtu", "1450", "type", "veth", "peer", "name", "x", "mtu", "1450")
			run(t, "ip", "-n", node.Name, "link", "set", cfg.HostIfName, "up")
			run(t, "ip", "-n", pod.Name, "link", "add", "eth0", "mtu", "1450", "address", "0a:58:0a:63:00:05", "type", "veth", "peer", "name", "y")
			run(t, "ip", "-n", pod.Name, "link", "set", "eth0", "up")
			run(t, "ip", "-n", pod.Name, "addr", "add", "10.99.0.5/24", "dev", "eth0")
			run(t, "ip", "-n", pod.Name, "route", "add", "default", "via", "10.99.0.1", "dev", "eth0", "onlink")
			run(t, "ip", "netns", "exec", pod.Name, "ethtool", "-K", "eth0", "tx", "off")
		}, wantErr: []string{"is not the peer of eth0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node, pod := netnstest.New(t, "weirtest-node"), netnstest.New(t, "weirtest-pod")
			cfg := podConfig(t, node, pod, "10.99.0.5/24", "10.99.0.1")
			if _, err := SetupVeth(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			tc.breakIt(t, node, pod, &cfg)
			err := CheckVeth(ctx, cfg)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("CheckVeth: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("CheckVeth found nothing wrong")
			}
			t.Logf("CheckVeth: %v", err)
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %v is not %v", err, tc.wantIs)
			}
			switch tc.name {
			case "MAC differs", "pod netns gone":
				return
			case "host side not the peer":
				// SetupVeth replaces the host side but does not delete an
				// eth0 in the pod that is not its peer.
				_, err := SetupVeth(ctx, cfg)
				if err == nil || !strings.Contains(err.Error(), "eth0 already exists in netns") || !errors.Is(err, ErrIfNameInUse) {
					t.Fatalf("SetupVeth over a foreign eth0 = %v, want a refusal wrapping ErrIfNameInUse", err)
				}
				return
			}
			// SetupVeth repairs a broken pair.
			{
				if _, err := SetupVeth(ctx, cfg); err != nil {
					t.Fatalf("SetupVeth to repair: %v", err)
				}
				if err := CheckVeth(ctx, cfg); err != nil {
					t.Errorf("CheckVeth after repair: %v", err)
				}
			}
		})
	}
}

// TestCurrentNetNS uses the calling thread's namespace as the host side, the
// way the agent does, by calling from inside the node namespace.
func TestCurrentNetNS(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	node, pod := netnstest.New(t, "weirtest-node"), netnstest.New(t, "weirtest-pod")
	cfg := podConfig(t, node, pod, "10.99.0.5/24", "10.99.0.1")
	cfg.HostNetNSPath = ""
	nodeNS, err := ns.GetNS(node.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer nodeNS.Close()
	err = nodeNS.Do(func(ns.NetNS) error {
		if _, err := SetupVeth(ctx, cfg); err != nil {
			return err
		}
		return CheckVeth(ctx, cfg)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := links(t, node)[cfg.HostIfName]; !ok {
		t.Fatal("host side not in the node netns")
	}
	err = nodeNS.Do(func(ns.NetNS) error {
		return TeardownVeth(ctx, "", cfg.HostIfName, pod.Path, cfg.IfName)
	})
	if err != nil {
		t.Fatal(err)
	}
	if l := links(t, node); len(l) != 1 {
		t.Errorf("node links after teardown: %v", l)
	}
}

// TestConcurrentSetup wires several pods into one node namespace at once.
func TestConcurrentSetup(t *testing.T) {
	requireRoot(t)
	const n = 8
	ctx := context.Background()
	node := netnstest.New(t, "weirtest-node")
	cfgs := make([]VethConfig, n)
	for i := range cfgs {
		cfgs[i] = podConfig(t, node, netnstest.New(t, "weirtest-pod"), fmt.Sprintf("10.99.0.%d/24", 10+i), "10.99.0.1")
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range cfgs {
		wg.Go(func() {
			if _, err := SetupVeth(ctx, cfgs[i]); err != nil {
				errs[i] = err
				return
			}
			errs[i] = CheckVeth(ctx, cfgs[i])
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if l := links(t, node); len(l) != n+1 {
		t.Errorf("node netns has %d links, want %d", len(l), n+1)
	}
	for i := range cfgs {
		wg.Go(func() {
			errs[i] = TeardownVeth(ctx, cfgs[i].HostNetNSPath, cfgs[i].HostIfName, cfgs[i].NetNSPath, cfgs[i].IfName)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if l := links(t, node); len(l) != 1 {
		t.Errorf("node netns links after teardown: %v", l)
	}
}

// BenchmarkSetupTeardownVeth measures one SetupVeth (tx checksum off) and
// one TeardownVeth per iteration, reported separately in milliseconds.
func BenchmarkSetupTeardownVeth(b *testing.B) {
	requireRoot(b)
	ctx := context.Background()
	node, pod := netnstest.New(b, "weirtest-node"), netnstest.New(b, "weirtest-pod")
	cfg := podConfig(b, node, pod, "10.99.0.5/24", "10.99.0.1")
	var setup, check, teardown time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := SetupVeth(ctx, cfg); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := CheckVeth(ctx, cfg); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if err := TeardownVeth(ctx, cfg.HostNetNSPath, cfg.HostIfName, cfg.NetNSPath, cfg.IfName); err != nil {
			b.Fatal(err)
		}
		setup += t1.Sub(t0)
		check += t2.Sub(t1)
		teardown += time.Since(t2)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(b.N) }
	b.ReportMetric(ms(setup), "setup-ms")
	b.ReportMetric(ms(check), "check-ms")
	b.ReportMetric(ms(teardown), "teardown-ms")
}

// TestSetupVethRoutes: which routes the pod interface gets (the default
// route or not, extra routes) is per configuration, CheckVeth checks
// exactly those, and a missing one is reported.
func TestSetupVethRoutes(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	tests := []struct {
		name       string
		noDefault  bool
		routes     []string
		wantRoutes []string // `ip -4 route show dev eth0` lines, sorted by the kernel
		breakRoute string   // a route to delete; CheckVeth must then fail naming it
	}{
		{name: "default only", wantRoutes: []string{"default via 10.99.0.1 onlink", "10.99.0.0/24 proto kernel scope link src 10.99.0.5"},
			breakRoute: "default"},
		{name: "no default route", noDefault: true, wantRoutes: []string{"10.99.0.0/24 proto kernel scope link src 10.99.0.5"}},
		{name: "no default, extra routes", noDefault: true, routes: []string{"10.96.0.0/12", "192.168.50.0/24"},
			wantRoutes: []string{"10.96.0.0/12 via 10.99.0.1 onlink", "10.99.0.0/24 proto kernel scope link src 10.99.0.5",
				"192.168.50.0/24 via 10.99.0.1 onlink"}, breakRoute: "192.168.50.0/24"},
		{name: "default and an extra route", routes: []string{"172.30.0.0/16"},
			wantRoutes: []string{"default via 10.99.0.1 onlink", "10.99.0.0/24 proto kernel scope link src 10.99.0.5",
				"172.30.0.0/16 via 10.99.0.1 onlink"}, breakRoute: "172.30.0.0/16"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node, pod := netnstest.New(t, "weirtest-node"), netnstest.New(t, "weirtest-pod")
			cfg := podConfig(t, node, pod, "10.99.0.5/24", "10.99.0.1")
			cfg.NoDefaultRoute = tc.noDefault
			for _, r := range tc.routes {
				cfg.Routes = append(cfg.Routes, mustIPNet(t, r))
			}
			if _, err := SetupVeth(ctx, cfg); err != nil {
				t.Fatalf("SetupVeth: %v", err)
			}
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(run(t, "ip", "-n", pod.Name, "-4", "route", "show", "dev", "eth0")), "\n") {
				got = append(got, strings.TrimSpace(l))
			}
			if strings.Join(got, "\n") != strings.Join(tc.wantRoutes, "\n") {
				t.Fatalf("routes of eth0:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.wantRoutes, "\n"))
			}
			if err := CheckVeth(ctx, cfg); err != nil {
				t.Fatalf("CheckVeth: %v", err)
			}
			if tc.breakRoute == "" {
				return
			}
			run(t, "ip", "-n", pod.Name, "route", "del", tc.breakRoute, "dev", "eth0")
			err := CheckVeth(ctx, cfg)
			want := "no route " + tc.breakRoute + " via 10.99.0.1"
			if tc.breakRoute == "default" {
				want = "no default route via 10.99.0.1"
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("CheckVeth after deleting %s = %v, want %q", tc.breakRoute, err, want)
			}
		})
	}
}

func TestSetupVethRejectsBadRoutesAndNames(t *testing.T) {
	requireRoot(t)
	node, pod := netnstest.New(t, "weirtest-node"), netnstest.New(t, "weirtest-pod")
	tests := []struct {
		name    string
		mutate  func(*VethConfig)
		wantErr string
	}{
		{"route of the other family", func(c *VethConfig) { c.Routes = []*net.IPNet{mustIPNet(t, "fd00::/64")} }, "different families"},
		{"name template", func(c *VethConfig) { c.IfName = "eth%d" }, "name template"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := podConfig(t, node, pod, "10.99.0.5/24", "10.99.0.1")
			tc.mutate(&cfg)
			_, err := SetupVeth(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("SetupVeth = %v, want an error with %q", err, tc.wantErr)
			}
			if l := links(t, node); len(l) != 1 {
				t.Errorf("links left in the node netns: %v", l)
			}
		})
	}
}
