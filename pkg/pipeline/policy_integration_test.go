package pipeline_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

// inPod runs f inside pod's network namespace (sockets created there stay
// there).
func inPod(t *testing.T, pod *ovstest.Pod, f func() error) error {
	t.Helper()
	return inNS(t, pod.NetNS, f)
}

// inNS runs f inside the named network namespace.
func inNS(t *testing.T, name string, f func() error) error {
	t.Helper()
	netns, err := ns.GetNS("/run/netns/" + name)
	if err != nil {
		return fmt.Errorf("opening netns %s: %w", name, err)
	}
	defer netns.Close()
	return netns.Do(func(ns.NetNS) error { return f() })
}

// echoServer listens on ports of pod's IPv4 address and echoes every line
// back; it stops at the test's cleanup.
func echoServer(t *testing.T, pod *ovstest.Pod, ports ...int) {
	t.Helper()
	echoServerOn(t, pod, "tcp4", pod.IP, ports...)
}

// echoServerOn is echoServer on network ("tcp4" or "tcp6") and the given
// address of pod.
func echoServerOn(t *testing.T, pod *ovstest.Pod, network, ip string, ports ...int) {
	t.Helper()
	echoServerIn(t, pod.NetNS, network, ip, ports...)
}

// echoServerIn is echoServerOn in the named network namespace (the node's,
// for a server on the gateway's address).
func echoServerIn(t *testing.T, netns, network, ip string, ports ...int) {
	t.Helper()
	var accepting, copying sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	var lns []net.Listener
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		accepting.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		copying.Wait()
	})
	for _, port := range ports {
		var ln net.Listener
		if err := inNS(t, netns, func() (err error) {
			ln, err = net.Listen(network, net.JoinHostPort(ip, fmt.Sprint(port)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		accepting.Add(1)
		go func() {
			defer accepting.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				copying.Add(1)
				go func() {
					defer copying.Done()
					_, _ = io.Copy(c, c)
				}()
			}
		}()
	}
}

// dial opens a TCP connection from pod to addr (1s timeout); the caller
// closes it.
func dial(t *testing.T, pod *ovstest.Pod, addr string) (net.Conn, error) {
	t.Helper()
	return dialFrom(t, pod.NetNS, addr)
}

// dialFrom is dial from the named network namespace.
func dialFrom(t *testing.T, netns, addr string) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	err := inNS(t, netns, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, time.Second)
		return err
	})
	return c, err
}

// echo sends a line on c and waits up to 1s for it to come back.
func echo(c net.Conn, msg string) error {
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(c, msg); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != msg+"\n" {
		return fmt.Errorf("echo %q, got %q", msg, got)
	}
	return nil
}

// tcpWorks reports whether a fresh connection from pod to addr echoes.
func tcpWorks(t *testing.T, pod *ovstest.Pod, addr string) error {
	t.Helper()
	return tcpWorksFrom(t, pod.NetNS, addr)
}

// tcpWorksFrom is tcpWorks from the named network namespace.
func tcpWorksFrom(t *testing.T, netns, addr string) error {
	t.Helper()
	c, err := dialFrom(t, netns, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return echo(c, "hello")
}

func hostNet(s string) *net.IPNet {
	_, n, _ := net.ParseCIDR(s)
	return n
}

func local(p *ovstest.Pod) pipeline.LocalPod {
	return pipeline.LocalPod{IP: net.ParseIP(p.IP).To4(), OFPort: uint32(p.OFPort)}
}

// TestNetworkPolicy realizes policies on a real bridge with three pods and
// checks traffic: default deny, allow rules by peer and port (single and
// ranges), egress isolation, the node's access, existing connections cut
// when their rule goes and kept across unrelated changes, rule counters,
// rule deletion, and replay after an ovs-vswitchd restart.
func TestNetworkPolicy(t *testing.T) {
	n := newNode(t)
	a := n.addPod(t, "pa", "10.10.0.2", "02:00:0a:0a:00:02", 3)
	b := n.addPod(t, "pb", "10.10.0.3", "02:00:0a:0a:00:03", 4)
	c := n.addPod(t, "pc", "10.10.0.4", "02:00:0a:0a:00:04", 5)
	echoServer(t, b, 8080, 8081, 8999, 9000, 9010, 9011)
	echoServer(t, c, 7000)
	bAddr := func(port int) string { return fmt.Sprintf("%s:%d", b.IP, port) }

	apply := func(t *testing.T, ch pipeline.PolicyChange) {
		t.Helper()
		if err := n.pipe.ApplyPolicy(testctx.Timeout(t, time.Minute), ch); err != nil {
			t.Fatal(err)
		}
		// The userspace datapath caches megaflows: wait until they were
		// revalidated against the new tables.
		n.ovs.MustAppctl(t, "revalidator/wait")
	}
	allowed := func(t *testing.T, from *ovstest.Pod, addr string) {
		t.Helper()
		if err := tcpWorks(t, from, addr); err != nil {
			t.Errorf("%s -> %s: want allowed, got %v", from.Name, addr, err)
		}
	}
	denied := func(t *testing.T, from *ovstest.Pod, addr string) {
		t.Helper()
		if err := tcpWorks(t, from, addr); err == nil {
			t.Errorf("%s -> %s: want denied, but it connected", from.Name, addr)
		}
	}

	// Without policy everything passes.
	allowed(t, a, bAddr(8080))
	allowed(t, c, bAddr(9011))

	ruleA := pipeline.PolicyRule{ID: 1, Name: "ns/b/ingress/0", Direction: pipeline.Ingress, Pods: []pipeline.LocalPod{local(b)},
		Peers: []*net.IPNet{hostNet(a.IP + "/32")}, Ports: []pipeline.PortRange{{Protocol: pipeline.ProtocolTCP, From: 8080}}}
	ruleRange := pipeline.PolicyRule{ID: 2, Name: "ns/b/ingress/1", Direction: pipeline.Ingress, Pods: []pipeline.LocalPod{local(b)},
		Peers: []*net.IPNet{hostNet("10.10.0.4/30")}, Ports: []pipeline.PortRange{{Protocol: pipeline.ProtocolTCP, From: 9000, To: 9010}}}

	t.Run("default deny ingress", func(t *testing.T) {
		apply(t, pipeline.PolicyChange{Isolation: &pipeline.Isolation{Ingress: []pipeline.LocalPod{local(b)}}})
		denied(t, a, bAddr(8080))
		if err := a.Ping(b.IP, 2); err == nil {
			t.Error("ping a -> b passed a default deny")
		}
		// The pipeline reports what it realized, with the drop's counters.
		drops, err := n.pipe.IsolationDrops(testctx.Timeout(t, time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if len(drops) != 1 || drops[0].Direction != pipeline.Ingress || drops[0].Pod.OFPort != local(b).OFPort ||
			drops[0].Counters.Packets < 2 {
			t.Errorf("IsolationDrops = %+v, want b's ingress drop with the 2 pings (and the SYNs) counted", drops)
		}
		if iso := n.pipe.Isolation(); len(iso.Ingress) != 1 || len(iso.Egress) != 0 {
			t.Errorf("Isolation = %+v, want b ingress only", iso)
		}
		// The node (gateway IP) still reaches the isolated pod.
		if out, err := n.ovs.Exec("", "ping", "-c", "2", "-W", "1", "-i", "0.2", b.IP); err != nil {
			t.Errorf("node -> isolated b: %v: %s", err, out)
		}
		// b itself still reaches out (egress is not isolated), and its
		// replies come back.
		allowed(t, b, c.IP+":7000")
	})

	t.Run("allow from a on port 8080 only; range 9000-9010 from c", func(t *testing.T) {
		apply(t, pipeline.PolicyChange{Upsert: []pipeline.PolicyRule{ruleA, ruleRange}})
		allowed(t, a, bAddr(8080))
		denied(t, a, bAddr(8081))
		denied(t, c, bAddr(8080))
		allowed(t, c, bAddr(9000))
		allowed(t, c, bAddr(9010))
		denied(t, c, bAddr(8999))
		denied(t, c, bAddr(9011))
		denied(t, a, bAddr(9000)) // a is not in 10.10.0.4/30
		if err := a.Ping(b.IP, 1); err == nil {
			t.Error("ping a -> b passed although only TCP 8080 is allowed")
		}
	})

	t.Run("switch holds exactly the rendered policy flows", func(t *testing.T) { checkPolicyFlows(t, n) })

	t.Run("existing connections follow policy changes", func(t *testing.T) {
		conn1, err := dial(t, a, bAddr(8080))
		if err != nil {
			t.Fatal(err)
		}
		defer conn1.Close()
		conn2, err := dial(t, c, bAddr(9000))
		if err != nil {
			t.Fatal(err)
		}
		defer conn2.Close()
		for _, cn := range []net.Conn{conn1, conn2} {
			if err := echo(cn, "before"); err != nil {
				t.Fatal(err)
			}
		}
		// An unrelated change (a new rule for c) bumps the generation: both
		// connections are re-checked, still allowed, and keep working.
		gen := n.pipe.PolicyGeneration()
		apply(t, pipeline.PolicyChange{Upsert: []pipeline.PolicyRule{{ID: 3, Direction: pipeline.Ingress,
			Pods: []pipeline.LocalPod{local(c)}, Peers: []*net.IPNet{hostNet("10.99.0.0/16")}}}})
		if g := n.pipe.PolicyGeneration(); g != gen+1 {
			t.Fatalf("generation %d after a change, was %d", g, gen)
		}
		for i, cn := range []net.Conn{conn1, conn2} {
			if err := echo(cn, "unrelated change"); err != nil {
				t.Fatalf("connection %d after an unrelated change: %v", i+1, err)
			}
		}
		// Re-checked connections were re-committed with the new generation
		// (ct_mark bits 8..31), so their next packets skip the rules again.
		ct := n.ovs.MustAppctl(t, "dpctl/dump-conntrack")
		wantMark := fmt.Sprintf("mark=%d", (gen+1)<<8)
		for _, port := range []string{"dport=8080", "dport=9000"} {
			found := false
			for _, line := range strings.Split(ct, "\n") {
				if strings.Contains(line, "dst="+b.IP+",") && strings.Contains(line, port) && strings.Contains(line, wantMark) {
					found = true
				}
			}
			if !found {
				t.Errorf("no conntrack entry to %s %s with %s:\n%s", b.IP, port, wantMark, ct)
			}
		}
		// Deleting the rule that allowed conn1 cuts it; conn2 goes on.
		apply(t, pipeline.PolicyChange{Delete: []uint32{1}})
		if err := echo(conn1, "after delete"); err == nil {
			t.Error("connection 1 still works after its rule was deleted")
		}
		if err := echo(conn2, "after delete"); err != nil {
			t.Errorf("connection 2 broke by an unrelated delete: %v", err)
		}
		denied(t, a, bAddr(8080))
	})

	t.Run("rule counters", func(t *testing.T) {
		stats, err := n.pipe.PolicyRuleStats(testctx.Timeout(t, time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if got := stats[2]; got.Packets == 0 || got.Bytes == 0 {
			t.Errorf("rule 2 counters %+v, want traffic", got)
		}
		if _, ok := stats[1]; ok {
			t.Errorf("deleted rule 1 has counters: %v", stats)
		}
		if !slices.Equal(n.pipe.PolicyRules(), []uint32{2, 3}) {
			t.Errorf("rules %v, want [2 3]", n.pipe.PolicyRules())
		}
	})

	t.Run("egress isolation, allow to c, replies to an ingress-isolated pod", func(t *testing.T) {
		apply(t, pipeline.PolicyChange{Isolation: &pipeline.Isolation{
			Ingress: []pipeline.LocalPod{local(b), local(a)}, Egress: []pipeline.LocalPod{local(a)}}})
		if err := a.Ping(c.IP, 1); err == nil {
			t.Error("egress-isolated a pings c")
		}
		if err := a.Ping("10.10.0.1", 1); err == nil {
			t.Error("egress-isolated a pings the node")
		}
		apply(t, pipeline.PolicyChange{Upsert: []pipeline.PolicyRule{{ID: 4, Direction: pipeline.Egress,
			Pods: []pipeline.LocalPod{local(a)}, Peers: []*net.IPNet{hostNet(c.IP + "/32")}}}})
		// ARP keeps working under isolation: forget c's MAC first.
		mustPodExec(t, a, "ip", "neigh", "flush", "dev", "eth0")
		if err := a.Ping(c.IP, 2); err != nil {
			t.Errorf("a -> c with an egress allow: %v", err)
		}
		allowed(t, a, c.IP+":7000")
		if err := a.Ping("10.10.0.1", 1); err == nil {
			t.Error("a pings the node; only c is allowed")
		}
		// c cannot open connections to a (ingress-isolated), but replies
		// of a's connections reached a above.
		if err := c.Ping(a.IP, 1); err == nil {
			t.Error("c -> ingress-isolated a passed")
		}
	})

	t.Run("replay after ovs-vswitchd restart", func(t *testing.T) {
		before := n.ovs.DumpFlows(t, "br-int")
		n.ovs.StopVswitchd(t)
		n.ovs.StartVswitchd(t)
		select {
		case <-n.sw.Reconnected():
		case <-time.After(20 * time.Second):
			t.Fatal("no reconnect within 20s")
		}
		if after := n.ovs.DumpFlows(t, "br-int"); !slices.Equal(after, before) {
			t.Fatalf("flows after replay:\n%s\nbefore:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
		}
		allowed(t, c, bAddr(9000))
		denied(t, c, bAddr(9011))
	})

	t.Run("deleting rules and isolation restores connectivity", func(t *testing.T) {
		apply(t, pipeline.PolicyChange{Delete: []uint32{2, 3, 4}, Isolation: &pipeline.Isolation{}})
		allowed(t, a, bAddr(8081))
		allowed(t, c, bAddr(9011))
		if err := a.Ping(b.IP, 2); err != nil {
			t.Errorf("a -> b after removing all policy: %v", err)
		}
		if got := n.ovs.DumpFlows(t, "br-int", "cookie=0x104000000000000/0xffff000000000000"); len(got) != 0 {
			t.Errorf("policy flows left: %v", got)
		}
	})
}

// TestNetworkPolicyServices checks policy on Service traffic through a
// kube-proxy stand-in (an nftables DNAT of 10.96.0.10:80 to pod b:8080 in
// the node's namespace): the DNATed connection enters OVS from the gateway
// with the client pod's address and meets b's ingress rules; with
// Config.ServiceCIDR the client's egress rules apply after the DNAT (to the
// endpoint), not to the ClusterIP; the node's own connections to b pass.
func TestNetworkPolicyServices(t *testing.T) {
	n := newNode(t, func(c *pipeline.Config) { c.ServiceCIDR = hostNet("10.96.0.0/16") })
	a := n.addPod(t, "sa", "10.10.0.2", "02:00:0a:0a:00:02", 3)
	b := n.addPod(t, "sb", "10.10.0.3", "02:00:0a:0a:00:03", 4)
	echoServer(t, b, 8080)
	mustPodExec(t, a, "ip", "route", "add", "10.96.0.0/16", "via", "10.10.0.1")
	if out, err := n.ovs.Exec("", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	cmd := exec.Command("ip", "netns", "exec", n.ovs.NetNS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(`table ip fake-kube-proxy {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 10.96.0.10 tcp dport 80 dnat to 10.10.0.3:8080
	}
}
`)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	const vip = "10.96.0.10:80"
	bAddr := b.IP + ":8080"
	apply := func(t *testing.T, ch pipeline.PolicyChange) {
		t.Helper()
		if err := n.pipe.ApplyPolicy(testctx.Timeout(t, time.Minute), ch); err != nil {
			t.Fatal(err)
		}
		n.ovs.MustAppctl(t, "revalidator/wait")
	}
	check := func(t *testing.T, netns, addr string, want bool) {
		t.Helper()
		err := tcpWorksFrom(t, netns, addr)
		if want && err != nil {
			t.Errorf("%s -> %s: want allowed, got %v", netns, addr, err)
		}
		if !want && err == nil {
			t.Errorf("%s -> %s: want denied, but it connected", netns, addr)
		}
	}
	check(t, a.NetNS, vip, true)

	ingressFrom := func(peer string) pipeline.PolicyRule {
		return pipeline.PolicyRule{ID: 1, Direction: pipeline.Ingress, Pods: []pipeline.LocalPod{local(b)},
			Peers: []*net.IPNet{hostNet(peer)}, Ports: []pipeline.PortRange{{Protocol: pipeline.ProtocolTCP, From: 8080}}}
	}
	egressTo := func(peer string) pipeline.PolicyRule {
		return pipeline.PolicyRule{ID: 2, Direction: pipeline.Egress, Pods: []pipeline.LocalPod{local(a)},
			Peers: []*net.IPNet{hostNet(peer)}, Ports: []pipeline.PortRange{{Protocol: pipeline.ProtocolTCP, From: 8080}}}
	}
	t.Run("ingress rules apply to DNATed traffic from the gateway", func(t *testing.T) {
		apply(t, pipeline.PolicyChange{Upsert: []pipeline.PolicyRule{ingressFrom(a.IP + "/32")},
			Isolation: &pipeline.Isolation{Ingress: []pipeline.LocalPod{local(b)}}})
		check(t, a.NetNS, vip, true)
		apply(t, pipeline.PolicyChange{Upsert: []pipeline.PolicyRule{ingressFrom("10.10.0.99/32")}})
		check(t, a.NetNS, vip, false)
		check(t, a.NetNS, bAddr, false)
		// The node itself (source: the gateway IP) still reaches b.
		check(t, n.ovs.NetNS, bAddr, true)
	})
	t.Run("egress rules apply after the DNAT", func(t *testing.T) {
		apply(t, pipeline.PolicyChange{Upsert: []pipeline.PolicyRule{ingressFrom(a.IP + "/32"), egressTo(b.IP + "/32")},
			Isolation: &pipeline.Isolation{Ingress: []pipeline.LocalPod{local(b)}, Egress: []pipeline.LocalPod{local(a)}}})
		check(t, a.NetNS, vip, true)
		check(t, a.NetNS, bAddr, true)
		apply(t, pipeline.PolicyChange{Upsert: []pipeline.PolicyRule{egressTo("10.10.0.99/32")}})
		check(t, a.NetNS, vip, false)
		check(t, a.NetNS, bAddr, false)
	})
}

// checkPolicyFlows checks that n's switch holds exactly the policy flows
// (cookie category policy) its pipeline renders.
func checkPolicyFlows(t *testing.T, n *node) {
	t.Helper()
	want, err := n.pipe.PolicyFlows()
	if err != nil {
		t.Fatal(err)
	}
	got := n.ovs.DumpFlows(t, "br-int", "cookie=0x104000000000000/0xffff000000000000")
	w := renderAll(want)
	slices.Sort(w)
	slices.Sort(got)
	if !slices.Equal(got, w) {
		t.Fatalf("switch:\n%s\nrendered:\n%s", strings.Join(got, "\n"), strings.Join(w, "\n"))
	}
}
