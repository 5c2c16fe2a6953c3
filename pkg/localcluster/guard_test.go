package localcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/test/testroot"
)

// TestGuardCountsLeaks builds, in namespaces of its own, what the guard
// protects: a "root" namespace with the cluster bridge and an uplink (a veth
// carrying the default route, standing in for the machine's way out), and
// a node namespace on the bridge, both with IPv4 and IPv6 addresses. Then it
// sends packets and checks which the guard counts: cluster addresses towards
// the uplink are counted (forwarded from the node, or sent by a
// root-namespace process), everything else is not. For a dual-stack guard
// and an IPv6-only one, whose IPv4 "cluster" ranges are not the cluster's:
// packets to them are not counted.
func TestGuardCountsLeaks(t *testing.T) {
	testroot.Require(t, "network namespaces, nftables")
	for _, tool := range []string{"ip", "nft", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	for i, fam := range []string{IPFamilyDual, IPFamilyIPv6} {
		t.Run(fam, func(t *testing.T) { testGuardCountsLeaks(t, fam, fmt.Sprintf("g%d%d", i, os.Getpid()%100000)) })
	}
}

func testGuardCountsLeaks(t *testing.T, family, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := DefaultConfig()
	cfg.IPFamily = family
	cfg.Prefix = prefix
	cfg.Subnet = "172.30.99"
	root, node, sink := cfg.Prefix+"-root", cfg.Prefix+"-node", cfg.Prefix+"-sink"
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", root).Run()
		_ = exec.Command("ip", "netns", "del", node).Run()
		_ = exec.Command("ip", "netns", "del", sink).Run()
	})
	sh("ip", "netns", "add", root)
	sh("ip", "netns", "add", node)
	sh("ip", "netns", "add", sink)
	for _, s := range [][]string{
		{"ip", "-n", root, "link", "set", "lo", "up"},
		// The uplink leads to a sink namespace, the stand-in for the
		// network outside the machine.
		{"ip", "-n", root, "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", sink},
		{"ip", "-n", sink, "addr", "add", "198.51.100.254/24", "dev", "eth0"},
		{"ip", "-n", sink, "link", "set", "eth0", "up"},
		{"ip", "-n", root, "addr", "add", "198.51.100.1/24", "dev", "uplink"},
		{"ip", "-n", root, "link", "set", "uplink", "up"},
		{"ip", "-n", root, "route", "add", "default", "via", "198.51.100.254"},
		{"ip", "-n", root, "link", "add", cfg.bridge(), "type", "bridge"},
		{"ip", "-n", root, "addr", "add", cfg.Subnet + ".1/24", "dev", cfg.bridge()},
		{"ip", "-n", root, "link", "set", cfg.bridge(), "up"},
		{"ip", "netns", "exec", root, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"ip", "-n", root, "link", "add", cfg.hostVeth(1), "type", "veth", "peer", "name", "eth0", "netns", node},
		{"ip", "-n", root, "link", "set", cfg.hostVeth(1), "master", cfg.bridge(), "up"},
		{"ip", "-n", node, "link", "set", "lo", "up"},
		{"ip", "-n", node, "addr", "add", cfg.NodeIP(1) + "/24", "dev", "eth0"},
		{"ip", "-n", node, "link", "set", "eth0", "up"},
		{"ip", "-n", node, "route", "add", "default", "via", cfg.Subnet + ".1"},
		// The IPv6 half of the dual-stack default (nodad: no DAD wait).
		{"ip", "-n", sink, "addr", "add", "2001:db8:100::254/64", "dev", "eth0", "nodad"},
		{"ip", "-n", root, "addr", "add", "2001:db8:100::1/64", "dev", "uplink", "nodad"},
		{"ip", "-n", root, "-6", "route", "add", "default", "via", "2001:db8:100::254"},
		{"ip", "-n", root, "addr", "add", cfg.Subnet6() + "1/64", "dev", cfg.bridge(), "nodad"},
		{"ip", "netns", "exec", root, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
		{"ip", "-n", node, "addr", "add", cfg.NodeIP6(1) + "/64", "dev", "eth0", "nodad"},
		{"ip", "-n", node, "-6", "route", "add", "default", "via", cfg.Subnet6() + "1"},
	} {
		sh(s...)
	}
	rootNS, nodeNS := "/run/netns/"+root, "/run/netns/"+node
	if err := InstallGuard(ctx, cfg, rootNS); err != nil {
		t.Fatal(err)
	}
	// Installing again (a second up) is idempotent and resets nothing else.
	if err := InstallGuard(ctx, cfg, rootNS); err != nil {
		t.Fatal(err)
	}

	send := func(netns, dst string) {
		t.Helper()
		// One UDP datagram; bash opens the socket and writes once.
		sh("nsenter", "--net="+netns, "--", "bash", "-c", fmt.Sprintf("echo leak >/dev/udp/%s/9 || true", dst))
	}
	counts := func() (uint64, uint64) {
		t.Helper()
		f, err := GuardCount(ctx, cfg, rootNS, GuardForwarded)
		if err != nil {
			t.Fatal(err)
		}
		s, err := GuardCount(ctx, cfg, rootNS, GuardSent)
		if err != nil {
			t.Fatal(err)
		}
		return f, s
	}
	type leakCase struct {
		name, from, dst string
		// wantFwd and wantS are the counts of a guard of dst's family.
		wantFwd, wantS uint64
	}
	tests := []leakCase{
		{"node to a pod IP is forwarded to the uplink", nodeNS, "10.244.3.7", 1, 0},
		{"node to a service IP", nodeNS, "10.96.0.10", 1, 0},
		{"node to an outside address is not counted", nodeNS, "198.51.100.7", 0, 0},
		{"root process to a pod IP", rootNS, "10.244.0.5", 0, 1},
		{"root process to the node is not counted", rootNS, cfg.NodeIP(1), 0, 0},
		{"root process to an outside address is not counted", rootNS, "198.51.100.8", 0, 0},
		{"node to an IPv6 pod IP", nodeNS, "fd00:10:244:3::7", 1, 0},
		{"node to an IPv6 service IP", nodeNS, "fd00:10:96::10", 1, 0},
		{"node to an outside IPv6 address is not counted", nodeNS, "2001:db8:100::7", 0, 0},
		{"root process to an IPv6 pod IP", rootNS, "fd00:10:244::5", 0, 1},
		{"root process to the node's IPv6 is not counted", rootNS, cfg.NodeIP6(1), 0, 0},
	}
	// Counted also where the host forwards nothing (as on this machine):
	// the node's leak is counted before the routing decision.
	const offCases = 2
	tests = append(tests,
		leakCase{"with forwarding off: node to a pod IP", nodeNS, "10.244.4.4", 1, 0},
		leakCase{"with forwarding off: node to an IPv6 pod IP", nodeNS, "fd00:10:244:4::4", 1, 0})
	// guarded: whether the guard covers dst's family. An IPv6-only
	// cluster's guard has no IPv4 rules, so nothing of IPv4 is counted
	// (10.244.0.0/16 is not its pod network).
	guarded := func(dst string) bool {
		return strings.Contains(dst, ":") && cfg.HasIPv6() || !strings.Contains(dst, ":") && cfg.HasIPv4()
	}
	for i, tt := range tests {
		if i == len(tests)-offCases {
			sh("ip", "netns", "exec", root, "sysctl", "-qw", "net.ipv4.ip_forward=0")
			sh("ip", "netns", "exec", root, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")
		}
		if !guarded(tt.dst) {
			tt.wantFwd, tt.wantS = 0, 0
		}
		t.Run(tt.name, func(t *testing.T) {
			f0, s0 := counts()
			send(tt.from, tt.dst)
			f1, s1 := counts()
			if f1-f0 != tt.wantFwd || s1-s0 != tt.wantS {
				t.Errorf("to %s: counted forwarded +%d sent +%d, want +%d +%d", tt.dst, f1-f0, s1-s0, tt.wantFwd, tt.wantS)
			}
		})
	}

	// With the node's own rule (nodeNetwork installs it), an untranslated
	// ClusterIP packet is rejected on the node and never reaches the host.
	if err := nft(ctx, nodeNS, cfg.nodeRuleset()); err != nil {
		t.Fatal(err)
	}
	f0, _ := counts()
	send(nodeNS, "10.96.7.7")
	send(nodeNS, "fd00:10:96::7:7")
	if f1, _ := counts(); f1 != f0 {
		t.Errorf("node rule installed: the guard still counted %d packets to a ClusterIP from the node", f1-f0)
	}

	leaks, err := GuardLeaks(ctx, cfg, rootNS)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct{ flow, dst string }{
		{cfg.NodeIP(1) + " . 10.244.3.7 . udp . 9", "10.244.3.7"}, {"10.96.0.10 . udp . 9", "10.96.0.10"}, {"10.244.0.5 . udp . 9", "10.244.0.5"},
		{cfg.NodeIP6(1) + " . fd00:10:244:3::7 . udp . 9", "fd00:10:244:3::7"}, {"fd00:10:96::10 . udp . 9", "fd00:10:96::10"},
		{"fd00:10:244::5 . udp . 9", "fd00:10:244::5"},
	} {
		if in := strings.Contains(leaks, l.flow); in != guarded(l.dst) {
			t.Errorf("the guard's record of dropped flows has %q: %v, want %v: %q", l.flow, in, guarded(l.dst), leaks)
		}
	}

	if err := RemoveGuard(ctx, cfg, rootNS); err != nil {
		t.Fatal(err)
	}
	if _, err := GuardCount(ctx, cfg, rootNS, GuardSent); err == nil {
		t.Error("the guard table is still there after RemoveGuard")
	}
	if err := RemoveGuard(ctx, cfg, rootNS); err != nil {
		t.Errorf("removing a missing guard: %v", err)
	}
}
