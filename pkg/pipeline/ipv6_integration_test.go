package pipeline_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

const gwIPv6 = "fd00:10:10::1"

// ipv6Pod is a pod with an IPv6 address: dual-stack, with its IPv4
// address in Pod.IP, or IPv6-only (addIPv6OnlyPod), where Pod.IP is the
// IPv6 address too.
type ipv6Pod struct {
	*ovstest.Pod
	IPv6 string
}

// newDualStackNode is newNode with IPv6 kept on in the pods, the pipeline's
// IPv6 configuration (fd00:10:10::/64, gateway fd00:10:10::1) and the
// gateway's IPv6 address on gw0.
func newDualStackNode(t *testing.T) *node {
	t.Helper()
	_, cidr6, _ := net.ParseCIDR("fd00:10:10::/64")
	n := newNodeWith(t, []ovstest.Option{ovstest.WithPodIPv6()}, func(c *pipeline.Config) {
		c.GatewayIPv6, c.PodCIDRv6 = net.ParseIP(gwIPv6), cidr6
	})
	if out, err := n.ovs.Exec("", "ip", "-6", "addr", "add", gwIPv6+"/64", "dev", "gw0", "nodad"); err != nil {
		t.Fatalf("gateway IPv6: %v: %s", err, out)
	}
	return n
}

// addDualStackPod adds a pod with ip and ip6 (no DAD) and a default IPv6
// route via the gateway, and installs its flows.
func (n *node) addDualStackPod(t *testing.T, name, ip, ip6, mac string, ofport int) ipv6Pod {
	t.Helper()
	p := n.ovs.AddPod(t, "br-int", name, ip+"/24", mac, ofport)
	mustPodExec(t, p, "ip", "-6", "addr", "add", ip6+"/64", "dev", "eth0", "nodad")
	mustPodExec(t, p, "ip", "-6", "route", "add", "default", "via", gwIPv6)
	hw, _ := net.ParseMAC(mac)
	if err := n.pipe.AddPod(testctx.Timeout(t, time.Minute), dualStackInterface(name, ofport, ip, ip6, hw)); err != nil {
		t.Fatal(err)
	}
	return ipv6Pod{p, ip6}
}

func dualStackInterface(key string, ofport int, ip, ip6 string, mac net.HardwareAddr) pipeline.PodInterface {
	return pipeline.PodInterface{Key: key, OFPort: uint32(ofport), MAC: mac,
		IPs: []netip.Addr{netip.MustParseAddr(ip), netip.MustParseAddr(ip6)}}
}

// staticNeighbours gives every pod and the node permanent IPv6 neighbour
// entries for each other and the gateway: the pipeline does not switch
// Neighbor Discovery yet (pkg/pipeline/ipv6.go).
func (n *node) staticNeighbours(t *testing.T, pods ...ipv6Pod) {
	t.Helper()
	for _, p := range pods {
		mustPodExec(t, p.Pod, "ip", "-6", "neigh", "replace", gwIPv6, "lladdr", gwMAC, "dev", "eth0", "nud", "permanent")
		for _, q := range pods {
			if q.Name != p.Name {
				mustPodExec(t, p.Pod, "ip", "-6", "neigh", "replace", q.IPv6, "lladdr", q.MAC, "dev", "eth0", "nud", "permanent")
			}
		}
		if out, err := n.ovs.Exec("", "ip", "-6", "neigh", "replace", p.IPv6, "lladdr", p.MAC, "dev", "gw0", "nud", "permanent"); err != nil {
			t.Fatalf("node neighbour %s: %v: %s", p.IPv6, err, out)
		}
	}
}

// nPackets sums n_packets over the flows of br-int matching spec (an
// ovs-ofctl flow match such as "table=1,icmp6,icmp_type=134").
func (n *node) nPackets(t *testing.T, spec string) int {
	t.Helper()
	n.ovs.MustAppctl(t, "revalidator/wait") // flow stats are the datapath's, collected by the revalidators
	out := n.ovs.MustOfctl(t, "-O", "OpenFlow15", "--no-names", "dump-flows", "br-int", spec)
	total := 0
	for _, m := range regexp.MustCompile(`n_packets=(\d+)`).FindAllStringSubmatch(out, -1) {
		v, _ := strconv.Atoi(m[1])
		total += v
	}
	return total
}

// nPacketsOf is nPackets over the flows matching spec whose dump contains
// flow (e.g. "priority=0 actions=drop" for a table's miss, which spec,
// without priority in non-strict dump-flows, cannot single out).
func (n *node) nPacketsOf(t *testing.T, spec, flow string) int {
	t.Helper()
	n.ovs.MustAppctl(t, "revalidator/wait")
	out := n.ovs.MustOfctl(t, "-O", "OpenFlow15", "--no-names", "dump-flows", "br-int", spec)
	total, found := 0, false
	for _, l := range strings.Split(out, "\n") {
		if m := regexp.MustCompile(`n_packets=(\d+)`).FindStringSubmatch(l); m != nil && strings.Contains(l, flow) {
			v, _ := strconv.Atoi(m[1])
			total, found = total+v, true
		}
	}
	if !found {
		t.Fatalf("no flow %q among %s:\n%s", flow, spec, out)
	}
	return total
}

func ping6(p ipv6Pod, args ...string) (string, error) {
	return p.Exec(append([]string{"ping", "-6", "-n", "-c", "2", "-W", "1", "-i", "0.2"}, args...)...)
}

// sendICMPv6 sends one raw ICMPv6 message (type, code, body after the
// checksum; the kernel fills the checksum) from the pod, with source src
// (bound), to dst with hop limit 255 as Neighbor Discovery requires.
func sendICMPv6(t *testing.T, p ipv6Pod, src, dst string, typ, code int, body []byte) {
	t.Helper()
	script := fmt.Sprintf(`
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
idx = socket.if_nametoindex("eth0")
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
s.bind((%q, 0, 0, idx))
s.sendto(bytes([%d, %d, 0, 0]) + bytes.fromhex(%q), (%q, 0, 0, idx))
`, src, typ, code, fmt.Sprintf("%x", body), dst)
	mustPodExec(t, p.Pod, "python3", "-c", script)
}

func linkLocal(t *testing.T, p ipv6Pod) string {
	t.Helper()
	out := mustPodExecOut(t, p.Pod, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link")
	m := regexp.MustCompile(`inet6 (fe80::[0-9a-f:]+)/`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("pod %s has no link-local address: %q", p.Name, out)
	}
	return m[1]
}

// TestDualStackPodSwitching: pods with IPv4 and IPv6 addresses on one node.
// The switch holds exactly the rendered flows; IPv4 works as before; pods
// reach each other over IPv6 (ICMPv6 echo and TCP, same subnet: L2) and
// the gateway's IPv6; the node reaches a pod over IPv6; ICMPv6 errors about
// a connection (port unreachable) come back; a spoofed IPv6 source, Router
// Advertisements and a Neighbor Advertisement claiming another pod's address
// are dropped. Neighbours are static: ND is not switched yet.
func TestDualStackPodSwitching(t *testing.T) {
	n := newDualStackNode(t)
	p1 := n.addDualStackPod(t, "p1", "10.10.0.2", "fd00:10:10::2", "02:00:0a:0a:00:02", 3)
	p2 := n.addDualStackPod(t, "p2", "10.10.0.3", "fd00:10:10::3", "02:00:0a:0a:00:03", 4)
	p3 := n.addDualStackPod(t, "p3", "10.10.0.4", "fd00:10:10::4", "02:00:0a:0a:00:04", 5)
	pods := []ipv6Pod{p1, p2, p3}

	// The switch holds exactly what the pipeline renders.
	base, err := n.pipe.BaseFlows()
	if err != nil {
		t.Fatal(err)
	}
	want := renderAll(base)
	for i, p := range pods {
		hw, _ := net.ParseMAC(p.MAC)
		flows, err := n.pipe.PodFlows(dualStackInterface(p.Name, p.OFPort, p.IP, p.IPv6, hw),
			openflow.MakeCookie(1, pipeline.CategoryPod, uint64(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, renderAll(flows)...)
		if err := n.pipe.CheckPod(testctx.Timeout(t, time.Minute), p.Name); err != nil {
			t.Fatalf("CheckPod(%s): %v", p.Name, err)
		}
	}
	got := n.dump(t)
	have := map[string]bool{}
	for _, g := range got {
		have[g] = true
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("rendered flow not in the switch: %s", w)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("switch holds %d flows, the pipeline rendered %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}

	n.staticNeighbours(t, pods...)

	// IPv4 as before.
	if err := p1.Ping(p2.IP, 2); err != nil {
		t.Errorf("IPv4: %v", err)
	}
	for _, c := range []struct {
		from ipv6Pod
		to   string
	}{{p1, p2.IPv6}, {p2, p1.IPv6}, {p3, p1.IPv6}, {p1, gwIPv6}} {
		if out, err := ping6(c.from, c.to); err != nil {
			t.Errorf("IPv6 %s -> %s: %v: %s", c.from.Name, c.to, err, out)
		}
	}
	if out, err := n.ovs.Exec("", "ping", "-6", "-n", "-c", "2", "-W", "1", "-i", "0.2", "-I", gwIPv6, p2.IPv6); err != nil {
		t.Errorf("node -> p2 over IPv6: %v: %s", err, out)
	}
	// Echo went through conntrack in IPv6 and was committed.
	if got := n.nPackets(t, tableSpec(pipeline.ConntrackZone, ",ipv6")); got == 0 {
		t.Errorf("no packet met the ipv6 ConntrackZone flow")
	}
	if got := n.nPackets(t, tableSpec(pipeline.ConntrackCommit, ",ipv6,ct_state=+new+trk")); got == 0 {
		t.Errorf("no IPv6 connection was committed")
	}

	t.Run("TCP over IPv6", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		srv := exec.CommandContext(ctx, "ip", "netns", "exec", p2.NetNS, "python3", "-c", `
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 8080)); s.listen(1); print("listening", flush=True)
c, _ = s.accept(); c.sendall(b"pong:" + c.recv(100)); c.close()
`)
		stdout, err := srv.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		defer srv.Wait() //nolint:errcheck // killed by cancel at the latest
		buf := make([]byte, 64)
		if k, err := stdout.Read(buf); err != nil || !strings.Contains(string(buf[:k]), "listening") {
			t.Fatalf("TCP server in p2 did not start: %q, %v", buf[:k], err)
		}
		out := mustPodExecOut(t, p1.Pod, "python3", "-c", fmt.Sprintf(`
import socket
s = socket.create_connection((%q, 8080), timeout=5)
s.sendall(b"ping"); print(s.recv(100).decode())
`, p2.IPv6))
		if strings.TrimSpace(out) != "pong:ping" {
			t.Fatalf("TCP p1 -> p2 [%s]:8080 got %q", p2.IPv6, out)
		}
	})

	t.Run("ICMPv6 errors of a connection pass", func(t *testing.T) {
		// UDP to a closed port: p2 answers with ICMPv6 port unreachable,
		// related to the UDP connection in conntrack.
		// Related packets of the reply direction may carry +rpl too and
		// then take the +rpl bypass, which has the same priority.
		bypass := func() int {
			return n.nPackets(t, tableSpec(pipeline.EgressRule, ",ipv6,ct_state=-new+rel+trk")) + n.nPackets(t, tableSpec(pipeline.EgressRule, ",ipv6,ct_state=-new+rpl+trk"))
		}
		before := bypass()
		out := mustPodExecOut(t, p1.Pod, "python3", "-c", fmt.Sprintf(`
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(3)
s.connect((%q, 9999)); s.send(b"x")
try:
    s.recv(10); print("answer")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
`, p2.IPv6))
		if strings.TrimSpace(out) != "refused" {
			t.Fatalf("UDP to a closed port of p2: %q, want the ICMPv6 port unreachable (refused)", out)
		}
		if after := bypass(); after <= before {
			t.Errorf("the ICMPv6 error did not take the +rel bypass (%d -> %d packets)", before, after)
		}
	})

	t.Run("spoofed IPv6 source is dropped", func(t *testing.T) {
		mustPodExec(t, p3.Pod, "ip", "-6", "addr", "add", "fd00:10:10::99/64", "dev", "eth0", "nodad")
		if out, err := ping6(p3, "-I", "fd00:10:10::99", p1.IPv6); err == nil {
			t.Fatalf("ping from a spoofed IPv6 source got through: %s", out)
		}
		if out, err := ping6(p3, "-I", p3.IPv6, p1.IPv6); err != nil {
			t.Fatalf("honest IPv6 ping from the same pod failed: %v: %s", err, out)
		}
		mustPodExec(t, p3.Pod, "ip", "-6", "addr", "del", "fd00:10:10::99/64", "dev", "eth0")
	})

	t.Run("router advertisements from a pod are dropped", func(t *testing.T) {
		before := n.nPackets(t, "table=1,icmp6,icmp_type=134")
		// Hop limit 64, no flags, router lifetime 1800 s, reachable and
		// retransmit timers 0; a prefix option for fd00:99::/64
		// (on-link, autonomous, lifetimes 3600 s).
		ra := append([]byte{64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0},
			3, 4, 64, 0xc0, 0, 0, 0x0e, 0x10, 0, 0, 0x0e, 0x10, 0, 0, 0, 0,
			0xfd, 0, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
		// From the pod's link-local (as routers send them) and from its
		// global address (which passes the pod's spoof guard).
		for _, src := range []string{linkLocal(t, p3), p3.IPv6} {
			sendICMPv6(t, p3, src, "ff02::1", 134, 0, ra)
			if after := n.nPackets(t, "table=1,icmp6,icmp_type=134"); after-before != 1 {
				t.Errorf("RA from %s: the RA drop flow counted %d packets, want 1", src, after-before)
			}
			before++
		}
		for _, p := range []ipv6Pod{p1, p2} {
			if out := mustPodExecOut(t, p.Pod, "ip", "-6", "route", "show", "proto", "ra"); strings.TrimSpace(out) != "" {
				t.Errorf("pod %s learnt routes from p3's RA: %s", p.Name, out)
			}
			if out := mustPodExecOut(t, p.Pod, "ip", "-6", "addr", "show", "dev", "eth0"); strings.Contains(out, "fd00:99:") {
				t.Errorf("pod %s autoconfigured an address from p3's RA: %s", p.Name, out)
			}
		}
	})

	t.Run("an NA claiming another pod's address is dropped", func(t *testing.T) {
		// Counted on SpoofGuard's drop of forged ND from pods.
		spec := "table=1,reg0=0x3/0xf,icmp6,icmp_type=136"
		before := n.nPackets(t, spec)
		// Solicited+override NA from p3's own address to p2: "p1's address
		// is at p3's MAC" (target option: type 2, length 1, p3's MAC).
		target := net.ParseIP(p1.IPv6).To16()
		mac, _ := net.ParseMAC(p3.MAC)
		na := append(append([]byte{0x60, 0, 0, 0}, target...), append([]byte{2, 1}, mac...)...)
		mustPodExec(t, p2.Pod, "ip", "-6", "neigh", "replace", p1.IPv6, "lladdr", p1.MAC, "dev", "eth0", "nud", "stale")
		sendICMPv6(t, p3, p3.IPv6, p2.IPv6, 136, 0, na)
		if after := n.nPackets(t, spec); after-before != 1 {
			t.Errorf("the ND drop flow counted %d packets, want 1", after-before)
		}
		if out := mustPodExecOut(t, p2.Pod, "ip", "-6", "neigh", "show", p1.IPv6); !strings.Contains(out, p1.MAC) {
			t.Errorf("p2's neighbour entry for p1 changed: %q", out)
		}
		mustPodExec(t, p2.Pod, "ip", "-6", "neigh", "replace", p1.IPv6, "lladdr", p1.MAC, "dev", "eth0", "nud", "permanent")
		if out, err := ping6(p2, p1.IPv6); err != nil {
			t.Errorf("p2 -> p1 after the spoofed NA: %v: %s", err, out)
		}
	})

	t.Run("neighbour discovery through the pipeline", func(t *testing.T) {
		// Forget the static entries: pods resolve each other and the
		// gateway, and the node resolves a pod, through the NS/NA flows.
		for _, p := range []ipv6Pod{p1, p2} {
			mustPodExec(t, p.Pod, "ip", "-6", "neigh", "flush", "dev", "eth0")
		}
		if out, err := n.ovs.Exec("", "ip", "-6", "neigh", "del", p1.IPv6, "dev", "gw0"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		for _, c := range []struct {
			from ipv6Pod
			to   string
		}{{p1, p2.IPv6}, {p2, p1.IPv6}, {p1, gwIPv6}} {
			if out, err := ping6(c.from, c.to); err != nil {
				t.Errorf("%s -> %s without static neighbours: %v: %s", c.from.Name, c.to, err, out)
			}
		}
		if out := mustPodExecOut(t, p1.Pod, "ip", "-6", "neigh", "show", p2.IPv6); !strings.Contains(out, p2.MAC) {
			t.Errorf("p1 resolved p2 to %q, want %s", out, p2.MAC)
		}
		if out, err := n.ovs.Exec("", "ping", "-6", "-n", "-c", "2", "-W", "1", "-i", "0.2", p1.IPv6); err != nil {
			t.Errorf("node -> p1 without a static neighbour: %v: %s", err, out)
		}
	})
	// Isolation covers IPv6 too (the ipv6 default drops); with no allow
	// rule an isolated pod has no IPv6, and lifting it restores IPv6.
	t.Run("isolation drops IPv6 too", func(t *testing.T) {
		iso := func(ingress, egress []pipeline.LocalPod) {
			t.Helper()
			if err := n.pipe.ApplyPolicy(testctx.Timeout(t, time.Minute), pipeline.PolicyChange{Isolation: &pipeline.Isolation{Ingress: ingress, Egress: egress}}); err != nil {
				t.Fatal(err)
			}
			n.ovs.MustAppctl(t, "revalidator/wait")
		}
		local := func(p ipv6Pod) []pipeline.LocalPod {
			return []pipeline.LocalPod{{IP: net.ParseIP(p.IP), OFPort: uint32(p.OFPort)}}
		}
		iso(local(p2), nil)
		if out, err := ping6(p1, p2.IPv6); err == nil {
			t.Errorf("p1 -> ingress-isolated p2 over IPv6 passed: %s", out)
		}
		iso(nil, local(p1))
		if out, err := ping6(p1, p3.IPv6); err == nil {
			t.Errorf("egress-isolated p1 -> p3 over IPv6 passed: %s", out)
		}
		drops, err := n.pipe.IsolationDrops(testctx.Timeout(t, time.Minute))
		if err != nil || len(drops) != 1 || drops[0].Counters.Packets == 0 {
			t.Errorf("IsolationDrops = %+v, %v; want p1's egress drop with the IPv6 pings counted", drops, err)
		}
		iso(nil, nil)
		if out, err := ping6(p1, p2.IPv6); err != nil {
			t.Errorf("p1 -> p2 over IPv6 after the isolation was lifted: %v: %s", err, out)
		}
	})
}

// newIPv6OnlyNode is newDualStackNode without the pipeline's IPv4 half
// (Config.GatewayIP and PodCIDR nil), as the agent configures an IPv6-only
// node. gw0 keeps the fixture's 10.10.0.1/24, so IPv4 from a pod has a
// kernel that would answer it and only the pipeline can stop it.
func newIPv6OnlyNode(t *testing.T) *node {
	t.Helper()
	_, cidr6, _ := net.ParseCIDR("fd00:10:10::/64")
	n := newNodeWith(t, []ovstest.Option{ovstest.WithPodIPv6()}, func(c *pipeline.Config) {
		c.GatewayIP, c.PodCIDR = nil, nil
		c.GatewayIPv6, c.PodCIDRv6 = net.ParseIP(gwIPv6), cidr6
	})
	if out, err := n.ovs.Exec("", "ip", "-6", "addr", "add", gwIPv6+"/64", "dev", "gw0", "nodad"); err != nil {
		t.Fatalf("gateway IPv6: %v: %s", err, out)
	}
	return n
}

// addIPv6OnlyPod adds a pod whose only address is ip6 (/64), waits until
// duplicate address detection is over (its NS from :: meets SpoofGuard's
// ND drop, so nobody answers), adds a default route via the gateway's IPv6
// and installs the pod's flows.
func (n *node) addIPv6OnlyPod(t *testing.T, name, ip6, mac string, ofport int) ipv6Pod {
	t.Helper()
	p := n.ovs.AddPod(t, "br-int", name, ip6+"/64", mac, ofport)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := mustPodExecOut(t, p, "ip", "-6", "addr", "show", "dev", "eth0")
		if strings.Contains(out, "dadfailed") {
			t.Fatalf("pod %s: duplicate address detection failed: %s", name, out)
		}
		if !strings.Contains(out, "tentative") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s: addresses still tentative: %s", name, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	mustPodExec(t, p, "ip", "-6", "route", "add", "default", "via", gwIPv6)
	hw, _ := net.ParseMAC(mac)
	if err := n.pipe.AddPod(testctx.Timeout(t, time.Minute), ipv6OnlyInterface(name, ofport, ip6, hw)); err != nil {
		t.Fatal(err)
	}
	return ipv6Pod{p, ip6}
}

func ipv6OnlyInterface(key string, ofport int, ip6 string, mac net.HardwareAddr) pipeline.PodInterface {
	return pipeline.PodInterface{Key: key, OFPort: uint32(ofport), MAC: mac, IPs: []netip.Addr{netip.MustParseAddr(ip6)}}
}

// TestIPv6OnlyPodSwitching: an IPv6-only node (no IPv4 in the pipeline's
// configuration) with three IPv6-only pods. The switch holds exactly the
// rendered flows; pods resolve each other and the gateway through the ND
// flows and reach each other and the gateway's IPv6 by ICMPv6 echo and
// TCP, and the node reaches a pod; IPv4 from a pod (which holds an IPv4
// address the pipeline does not know) is counted on SpoofGuard's drop and
// IPv4 from the node on ConntrackZone's, and neither gets an answer; ARP
// from the pod is dropped in SpoofGuard, from the node in ARPResponder;
// a spoofed IPv6 source and a forged NA are still dropped.
func TestIPv6OnlyPodSwitching(t *testing.T) {
	n := newIPv6OnlyNode(t)
	if n.pipe.IPv4Enabled() || !n.pipe.IPv6Enabled() {
		t.Fatalf("IPv4Enabled %v, IPv6Enabled %v: want an IPv6-only pipeline", n.pipe.IPv4Enabled(), n.pipe.IPv6Enabled())
	}
	p1 := n.addIPv6OnlyPod(t, "p1", "fd00:10:10::2", "02:00:0a:0a:00:02", 3)
	p2 := n.addIPv6OnlyPod(t, "p2", "fd00:10:10::3", "02:00:0a:0a:00:03", 4)
	p3 := n.addIPv6OnlyPod(t, "p3", "fd00:10:10::4", "02:00:0a:0a:00:04", 5)

	// The switch holds exactly what the pipeline renders.
	base, err := n.pipe.BaseFlows()
	if err != nil {
		t.Fatal(err)
	}
	want := renderAll(base)
	for i, p := range []ipv6Pod{p1, p2, p3} {
		hw, _ := net.ParseMAC(p.MAC)
		flows, err := n.pipe.PodFlows(ipv6OnlyInterface(p.Name, p.OFPort, p.IPv6, hw), openflow.MakeCookie(1, pipeline.CategoryPod, uint64(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, renderAll(flows)...)
		if err := n.pipe.CheckPod(testctx.Timeout(t, time.Minute), p.Name); err != nil {
			t.Fatalf("CheckPod(%s): %v", p.Name, err)
		}
	}
	got := n.dump(t)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("switch holds\n%s\nthe pipeline rendered\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	echoServerOn(t, p2.Pod, "tcp6", p2.IPv6, 8080)
	echoServerIn(t, n.ovs.NetNS, "tcp6", gwIPv6, 8080)
	nodePing6 := func(dst string) error {
		out, err := n.ovs.Exec("", "ping", "-6", "-n", "-c", "2", "-W", "1", "-i", "0.2", "-I", gwIPv6, dst)
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
	pingFrom := func(p ipv6Pod, dst string) func() error {
		return func() error {
			if out, err := ping6(p, dst); err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		}
	}
	// No static neighbours: everything is resolved through the ND flows.
	for _, c := range []struct {
		name  string
		check func() error
	}{
		{"ping6 p1 -> p2", pingFrom(p1, p2.IPv6)},
		{"ping6 p2 -> p1", pingFrom(p2, p1.IPv6)},
		{"ping6 p3 -> p1", pingFrom(p3, p1.IPv6)},
		{"ping6 p1 -> gateway", pingFrom(p1, gwIPv6)},
		{"ping6 node -> p3", func() error { return nodePing6(p3.IPv6) }},
		{"TCP p1 -> p2", func() error { return tcp6Works(t, p1.Pod, p2.IPv6, 8080) }},
		{"TCP p3 -> gateway", func() error { return tcp6Works(t, p3.Pod, gwIPv6, 8080) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.check(); err != nil {
				t.Error(err)
			}
		})
	}
	if out := mustPodExecOut(t, p1.Pod, "ip", "-6", "neigh", "show", p2.IPv6); !strings.Contains(out, p2.MAC) {
		t.Errorf("p1 resolved p2 to %q, want %s", out, p2.MAC)
	}
	if got := n.nPackets(t, tableSpec(pipeline.ConntrackCommit, ",ipv6,ct_state=+new+trk")); got == 0 {
		t.Errorf("no IPv6 connection was committed")
	}

	// p3 also gets an IPv4 address, which the pipeline does not know;
	// static neighbour entries both ways leave ARP out of the first two
	// checks.
	const ip4 = "10.10.0.9"
	mustPodExec(t, p3.Pod, "ip", "addr", "add", ip4+"/24", "dev", "eth0")
	t.Run("IPv4 from a pod dies in SpoofGuard", func(t *testing.T) {
		mustPodExec(t, p3.Pod, "ip", "neigh", "replace", "10.10.0.1", "lladdr", gwMAC, "dev", "eth0", "nud", "permanent")
		before := n.nPacketsOf(t, "table=1", " priority=0 actions=drop")
		if err := p3.Ping("10.10.0.1", 2); err == nil {
			t.Fatal("IPv4 ping from a pod to the gateway's IPv4 got an answer")
		}
		if after := n.nPacketsOf(t, "table=1", " priority=0 actions=drop"); after-before < 2 {
			t.Errorf("SpoofGuard's drop counted %d packets for 2 IPv4 echo requests", after-before)
		}
	})
	t.Run("IPv4 from the node dies in ConntrackZone", func(t *testing.T) {
		if out, err := n.ovs.Exec("", "ip", "neigh", "replace", ip4, "lladdr", p3.MAC, "dev", "gw0", "nud", "permanent"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		before := n.nPacketsOf(t, tableSpec(pipeline.ConntrackZone, ""), " priority=0 actions=drop")
		if out, err := n.ovs.Exec("", "ping", "-4", "-n", "-c", "2", "-W", "1", "-i", "0.2", ip4); err == nil {
			t.Fatalf("IPv4 ping from the node to a pod got an answer: %s", out)
		}
		if after := n.nPacketsOf(t, tableSpec(pipeline.ConntrackZone, ""), " priority=0 actions=drop"); after-before < 2 {
			t.Errorf("ConntrackZone's drop counted %d packets for 2 IPv4 echo requests", after-before)
		}
	})
	t.Run("ARP is dropped", func(t *testing.T) {
		// From the pod: it asks for the gateway; no answer, from OVS or
		// the node.
		mustPodExec(t, p3.Pod, "ip", "neigh", "del", "10.10.0.1", "dev", "eth0")
		before := n.nPacketsOf(t, "table=1", " priority=0 actions=drop")
		if err := p3.Ping("10.10.0.1", 1); err == nil {
			t.Fatal("IPv4 ping from a pod without a neighbour entry got an answer")
		}
		if out := mustPodExecOut(t, p3.Pod, "ip", "neigh", "show", "10.10.0.1"); strings.Contains(out, gwMAC) {
			t.Errorf("the pod resolved the gateway's IPv4 over ARP: %q", out)
		}
		if after := n.nPacketsOf(t, "table=1", " priority=0 actions=drop"); after == before {
			t.Error("SpoofGuard's drop counted no packet of the pod's ARP request")
		}
		// From the node: it asks for the pod's IPv4, which the pod would
		// answer.
		if out, err := n.ovs.Exec("", "ip", "neigh", "del", ip4, "dev", "gw0"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		spec, drop := "table=2,arp", " priority=1,arp actions=drop"
		before = n.nPacketsOf(t, spec, drop)
		if out, err := n.ovs.Exec("", "ping", "-4", "-n", "-c", "1", "-W", "2", ip4); err == nil {
			t.Fatalf("IPv4 ping from the node without a neighbour entry got an answer: %s", out)
		}
		if after := n.nPacketsOf(t, spec, drop); after == before {
			t.Error("ARPResponder's ARP drop counted none of the node's ARP requests")
		}
		if out, _ := n.ovs.Exec("", "ip", "neigh", "show", ip4, "dev", "gw0"); strings.Contains(out, p3.MAC) {
			t.Errorf("the node resolved the pod's IPv4 over ARP: %q", out)
		}
	})
	mustPodExec(t, p3.Pod, "ip", "addr", "del", ip4+"/24", "dev", "eth0")

	t.Run("spoofed IPv6 source is dropped", func(t *testing.T) {
		mustPodExec(t, p3.Pod, "ip", "-6", "addr", "add", "fd00:10:10::99/64", "dev", "eth0", "nodad")
		if out, err := ping6(p3, "-I", "fd00:10:10::99", p1.IPv6); err == nil {
			t.Fatalf("ping from a spoofed IPv6 source got through: %s", out)
		}
		if out, err := ping6(p3, "-I", p3.IPv6, p1.IPv6); err != nil {
			t.Fatalf("honest IPv6 ping from the same pod failed: %v: %s", err, out)
		}
		mustPodExec(t, p3.Pod, "ip", "-6", "addr", "del", "fd00:10:10::99/64", "dev", "eth0")
	})
	t.Run("an NA claiming another pod's address is dropped", func(t *testing.T) {
		spec := "table=1,reg0=0x3/0xf,icmp6,icmp_type=136"
		before := n.nPackets(t, spec)
		// "p1's address is at p3's MAC", solicited+override, to p2.
		target := net.ParseIP(p1.IPv6).To16()
		mac, _ := net.ParseMAC(p3.MAC)
		na := append(append([]byte{0x60, 0, 0, 0}, target...), append([]byte{2, 1}, mac...)...)
		mustPodExec(t, p2.Pod, "ip", "-6", "neigh", "replace", p1.IPv6, "lladdr", p1.MAC, "dev", "eth0", "nud", "stale")
		sendICMPv6(t, p3, p3.IPv6, p2.IPv6, 136, 0, na)
		if after := n.nPackets(t, spec); after-before != 1 {
			t.Errorf("the ND drop flow counted %d packets, want 1", after-before)
		}
		if out := mustPodExecOut(t, p2.Pod, "ip", "-6", "neigh", "show", p1.IPv6); !strings.Contains(out, p1.MAC) {
			t.Errorf("p2's neighbour entry for p1 changed: %q", out)
		}
		if out, err := ping6(p2, p1.IPv6); err != nil {
			t.Errorf("p2 -> p1 after the forged NA: %v: %s", err, out)
		}
	})
}

// tableSpec is an ovs-ofctl flow spec for table id (by number: the test
// bridges have no table names) followed by rest (",match...").
func tableSpec(id uint8, rest string) string { return fmt.Sprintf("table=%d%s", id, rest) }
