package pipeline_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

const (
	hairpinIP   = "169.254.0.253"
	hairpinIPv6 = "fc00::aabb:ccdd:eeff"
)

// withProxy turns the proxy on (Service CIDR 10.96.0.0/12, SNAT zone 65521,
// hairpin IPs of the families the config has).
func withProxy(c *pipeline.Config) {
	_, svc, _ := net.ParseCIDR("10.96.0.0/12")
	c.ServiceCIDR = svc
	c.Proxy = &pipeline.ProxyConfig{HairpinIP: netip.MustParseAddr(hairpinIP), SNATZone: 65521,
		NodeIPs: []netip.Addr{netip.MustParseAddr("192.168.1.10")}}
	if c.GatewayIPv6 != nil {
		_, svc6, _ := net.ParseCIDR("fd00:96::/112")
		c.ServiceCIDRv6 = svc6
		c.Proxy.HairpinIPv6 = netip.MustParseAddr(hairpinIPv6)
	}
}

// nameServer answers on TCP and UDP port in pod's namespace at ip: a TCP
// client gets "<name> <its address as the server saw it>" for every line
// it sends, a UDP datagram the same as a reply. It stops at cleanup.
func nameServer(t *testing.T, netns, name, ip string, port int) {
	t.Helper()
	addr := net.JoinHostPort(ip, fmt.Sprint(port))
	var ln net.Listener
	var pc net.PacketConn
	if err := inNS(t, netns, func() (err error) {
		if ln, err = net.Listen("tcp", addr); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					if _, err := fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr().(*net.TCPAddr).IP); err != nil {
						return
					}
				}
			}()
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 512)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(fmt.Sprintf("%s %s", name, from.(*net.UDPAddr).IP)), from)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// svcConn is a client's TCP connection to a Service.
type svcConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialService(t *testing.T, netns, addr string) (*svcConn, error) {
	t.Helper()
	var c net.Conn
	if err := inNS(t, netns, func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	}); err != nil {
		return nil, err
	}
	return &svcConn{c, bufio.NewReader(c)}, nil
}

// stickyConnections opens n TCP connections from netns to addr and asks
// each twice: a connection must stay with its endpoint, and the endpoint
// must have seen wantSrc as the client. It returns the connections per
// endpoint name.
func stickyConnections(t *testing.T, netns, addr string, n int, wantSrc string) map[string]int {
	t.Helper()
	count := map[string]int{}
	for i := range n {
		c, err := dialService(t, netns, addr)
		if err != nil {
			t.Fatalf("%s: connection %d: %v", addr, i, err)
		}
		name, seen, err := c.ask()
		if err == nil {
			var again string
			if again, _, err = c.ask(); err == nil && again != name {
				err = fmt.Errorf("moved from %s to %s", name, again)
			}
		}
		c.c.Close()
		if err != nil {
			t.Fatalf("%s: connection %d: %v", addr, i, err)
		}
		if seen != wantSrc {
			t.Errorf("%s: endpoint %s saw client %s, want %s", addr, name, seen, wantSrc)
		}
		count[name]++
	}
	return count
}

// ask returns the endpoint's name and the client address it saw.
func (s *svcConn) ask() (name, client string, err error) {
	_ = s.c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintln(s.c, "who"); err != nil {
		return "", "", err
	}
	line, err := s.r.ReadString('\n')
	if err != nil {
		return "", "", err
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return "", "", fmt.Errorf("bad answer %q", line)
	}
	return f[0], f[1], nil
}

// askUDP sends one datagram from netns to addr and returns the answer's
// name and the source address the answer came from.
func askUDP(t *testing.T, netns, addr string) (name, from string, err error) {
	t.Helper()
	var pc net.PacketConn
	if err := inNS(t, netns, func() (err error) {
		pc, err = net.ListenPacket("udp", ":0")
		return err
	}); err != nil {
		return "", "", err
	}
	defer pc.Close()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return "", "", err
	}
	_ = pc.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := pc.WriteTo([]byte("who"), ua); err != nil {
		return "", "", err
	}
	buf := make([]byte, 512)
	n, src, err := pc.ReadFrom(buf)
	if err != nil {
		return "", "", err
	}
	f := strings.Fields(string(buf[:n]))
	if len(f) != 2 {
		return "", "", fmt.Errorf("bad answer %q", buf[:n])
	}
	return f[0], src.String(), nil
}

// askUDPConnected is askUDP on a connected socket, which reports an ICMP
// port unreachable as ECONNREFUSED.
func askUDPConnected(t *testing.T, netns, addr string) (name, from string, err error) {
	t.Helper()
	var c net.Conn
	if err := inNS(t, netns, func() (err error) {
		c, err = net.Dial("udp", addr)
		return err
	}); err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("who")); err != nil {
		return "", "", err
	}
	buf := make([]byte, 512)
	k, err := c.Read(buf)
	if err != nil {
		return "", "", err
	}
	return string(buf[:k]), c.RemoteAddr().String(), nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (n *node) addRoutedPod(t *testing.T, name, ip, mac string, ofport int) *ovstest.Pod {
	t.Helper()
	p := n.addPod(t, name, ip, mac, ofport)
	mustPodExec(t, p, "ip", "route", "add", "default", "via", "10.10.0.1")
	return p
}

func (n *node) applyServices(t *testing.T, upserts []pipeline.ServicePort, deleted ...string) {
	t.Helper()
	if err := n.pipe.ApplyServices(testctx.Timeout(t, time.Minute), upserts, deleted); err != nil {
		t.Fatal(err)
	}
	n.ovs.MustAppctl(t, "revalidator/wait")
}

func endpoint(ip string, port uint16) pipeline.ServiceEndpoint {
	return pipeline.ServiceEndpoint{IP: netip.MustParseAddr(ip), Port: port, Local: true}
}

func clusterIP(ip string, port uint16, proto pipeline.Protocol) pipeline.ServiceFrontend {
	return pipeline.ServiceFrontend{Kind: pipeline.KindClusterIP, IP: netip.MustParseAddr(ip), Port: port, Protocol: proto}
}

// TestProxyClusterIP: pods reach a ClusterIP (TCP and UDP) load-balanced by
// the pipeline over two endpoint pods of the same node on a real bridge:
// connections spread over both endpoints and each sticks to its endpoint;
// replies come from the ClusterIP (TCP would not even connect otherwise, and
// the UDP answer's source is checked); the endpoint sees the client's own
// address; the switch holds the group and flows the pipeline rendered; an
// endpoint removed from the Service gets no new connections while an
// established one keeps working; with no endpoints anywhere the packets go
// to the gateway; with endpoints elsewhere only they are dropped; a pod
// reaching itself through the Service is SNATed to the hairpin IP; egress
// policy allowing only endpoint A keeps every connection on A; NodePort
// (on a configured node IP), ExternalIP and LoadBalancer frontends work
// from a pod, the last only for clients in its source ranges.
func TestProxyClusterIP(t *testing.T) {
	n := newNode(t, withProxy)
	client := n.addRoutedPod(t, "pc", "10.10.0.2", "02:00:0a:0a:00:02", 3)
	a := n.addRoutedPod(t, "pa", "10.10.0.3", "02:00:0a:0a:00:03", 4)
	b := n.addRoutedPod(t, "pb", "10.10.0.4", "02:00:0a:0a:00:04", 5)
	nameServer(t, a.NetNS, "pa", a.IP, 8080)
	nameServer(t, b.NetNS, "pb", b.IP, 8080)
	const vip = "10.96.0.10"
	web := pipeline.ServicePort{Key: "default/web:http/IPv4", HasEndpoints: true,
		Frontends:        []pipeline.ServiceFrontend{clusterIP(vip, 80, pipeline.ProtocolTCP), clusterIP(vip, 53, pipeline.ProtocolUDP)},
		ClusterEndpoints: []pipeline.ServiceEndpoint{endpoint(a.IP, 8080), endpoint(b.IP, 8080)}}
	// Two ports of one Service in one ServicePort would not be the
	// controller's shape; here the UDP frontend shares the endpoints'
	// port 8080 on purpose, one group serving both protocols.
	n.applyServices(t, []pipeline.ServicePort{web})

	t.Run("switch holds the rendered group and flows", func(t *testing.T) {
		id, ok := n.pipe.ServiceGroupID(web.Key)
		if !ok || id>>24 != 1 {
			t.Fatalf("group ID %#x, %v; want round 1 in the top byte", id, ok)
		}
		g, flows, err := n.pipe.ServicePortFlows(web, 0, id)
		if err != nil {
			t.Fatal(err)
		}
		out := n.ovs.MustOfctl(t, "-O", "OpenFlow15", "dump-groups", "br-int")
		if !strings.Contains(out, g.String()) {
			t.Errorf("dump-groups lacks %s:\n%s", g, out)
		}
		if got := len(n.ovs.DumpFlows(t, "br-int", fmt.Sprintf("table=%d,reg0=0x3/0xf", pipeline.ServiceLB))); got != len(flows) {
			t.Errorf("%d ServiceLB frontend flows on the switch, want %d", got, len(flows))
		}
	})

	var long *svcConn // a connection kept open, to endpoint pb
	parent := t
	t.Run("TCP spreads and sticks", func(t *testing.T) {
		count := map[string]int{}
		for i := range 40 {
			c, err := dialService(t, client.NetNS, vip+":80")
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			name, seen, err := c.ask()
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			if seen != client.IP {
				t.Errorf("endpoint %s saw client %s, want %s (no SNAT for a pod client)", name, seen, client.IP)
			}
			for range 3 {
				if again, _, err := c.ask(); err != nil || again != name {
					t.Fatalf("connection %d moved from %s to %q (%v)", i, name, again, err)
				}
			}
			if got := c.c.RemoteAddr().String(); got != vip+":80" {
				t.Errorf("client's peer is %s", got)
			}
			count[name]++
			if name == "pb" && long == nil {
				long = c
				parent.Cleanup(func() { c.c.Close() })
				continue
			}
			c.c.Close()
		}
		t.Logf("40 connections: %v", count)
		if count["pa"] < 5 || count["pb"] < 5 || count["pa"]+count["pb"] != 40 {
			t.Errorf("connections not spread over both endpoints: %v", count)
		}
	})
	t.Run("UDP spreads and replies come from the ClusterIP", func(t *testing.T) {
		count := map[string]int{}
		for i := range 30 {
			name, from, err := askUDP(t, client.NetNS, vip+":53")
			if err != nil {
				t.Fatalf("query %d: %v", i, err)
			}
			if from != vip+":53" {
				t.Fatalf("answer from %s, want %s:53 (un-DNAT)", from, vip)
			}
			count[name]++
		}
		t.Logf("30 UDP queries: %v", count)
		if count["pa"] < 3 || count["pb"] < 3 {
			t.Errorf("UDP not spread over both endpoints: %v", count)
		}
	})
	t.Run("endpoint removed: new connections avoid it, established one goes on", func(t *testing.T) {
		if long == nil {
			t.Fatal("no connection to pb from the previous subtest")
		}
		one := web
		one.ClusterEndpoints = []pipeline.ServiceEndpoint{endpoint(a.IP, 8080)}
		n.applyServices(t, []pipeline.ServicePort{one})
		for i := range 20 {
			c, err := dialService(t, client.NetNS, vip+":80")
			if err != nil {
				t.Fatal(err)
			}
			name, _, err := c.ask()
			c.c.Close()
			if err != nil || name != "pa" {
				t.Fatalf("new connection %d after removing pb reached %q (%v)", i, name, err)
			}
		}
		if name, _, err := long.ask(); err != nil || name != "pb" {
			t.Errorf("established connection to pb after its removal: %q, %v", name, err)
		}
		n.applyServices(t, []pipeline.ServicePort{web}) // both again
	})
	t.Run("no endpoints anywhere: to the gateway", func(t *testing.T) {
		empty := web
		empty.ClusterEndpoints, empty.HasEndpoints = nil, false
		n.applyServices(t, []pipeline.ServicePort{empty})
		before := n.nPacketsOf(t, fmt.Sprintf("table=%d", pipeline.L2Forwarding), "dl_dst="+gwMAC)
		if _, err := dialService(t, client.NetNS, vip+":80"); err == nil {
			t.Fatal("connected to a Service without endpoints (nothing here answers for it)")
		}
		if after := n.nPacketsOf(t, fmt.Sprintf("table=%d", pipeline.L2Forwarding), "dl_dst="+gwMAC); after-before < 1 {
			t.Errorf("no packet to the gateway MAC (%d -> %d)", before, after)
		}
		if got := n.nPackets(t, fmt.Sprintf("table=%d,reg0=0x3/0xf", pipeline.ServiceLB)); got != 0 {
			// The frontend flows are gone: the ServicePort has none.
			t.Errorf("ServiceLB frontend flows still count %d packets", got)
		}

		// With the node's reject rule the client is refused at once: TCP
		// gets an RST, UDP port unreachable, both back through OVS. The
		// node forwards (as a Kubernetes node does) and routes the Service
		// CIDR into a veth whose peer is down, so only the rule answers.
		ns := n.ovs.NetNS
		for _, args := range [][]string{
			{"sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
			{"ip", "link", "add", "sink0", "type", "veth", "peer", "name", "sink1"},
			{"ip", "link", "set", "sink0", "up"},
			{"ip", "neigh", "replace", "10.7.0.2", "lladdr", "02:00:00:00:07:02", "dev", "sink0", "nud", "permanent"},
			{"ip", "route", "add", "10.96.0.0/12", "via", "10.7.0.2", "dev", "sink0", "onlink"},
		} {
			if out, err := n.ovs.Exec("", args[0], args[1:]...); err != nil {
				t.Fatalf("%v: %v: %s", args, err, out)
			}
		}
		if _, err := dialService(t, client.NetNS, vip+":80"); err == nil || !errors.Is(err, syscall.ETIMEDOUT) && !isTimeout(err) {
			t.Fatalf("before the reject rule: %v, want a timeout", err)
		}
		if err := inNS(t, ns, func() error {
			return nodenet.InstallServiceReject(t.Context(), "gw0", []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")})
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = inNS(t, ns, func() error { return nodenet.RemoveServiceReject(context.Background()) }) })
		start := time.Now()
		if _, err := dialService(t, client.NetNS, vip+":80"); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("TCP with the reject rule: %v, want connection refused", err)
		} else {
			t.Logf("TCP to a Service without endpoints refused in %v", time.Since(start))
		}
		if _, _, err := askUDPConnected(t, client.NetNS, vip+":53"); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("UDP with the reject rule: %v, want port unreachable (ECONNREFUSED)", err)
		}
	})
	t.Run("no endpoints here but elsewhere: dropped", func(t *testing.T) {
		local := web
		local.ClusterEndpoints = nil
		n.applyServices(t, []pipeline.ServicePort{local})
		before := n.nPacketsOf(t, fmt.Sprintf("table=%d", pipeline.L2Forwarding), "dl_dst="+gwMAC)
		if _, err := dialService(t, client.NetNS, vip+":80"); err == nil {
			t.Fatal("connected")
		}
		if got := n.nPacketsOf(t, fmt.Sprintf("table=%d,tcp", pipeline.ServiceLB), "actions=drop"); got < 1 {
			t.Errorf("ServiceLB drop counted %d packets", got)
		}
		if after := n.nPacketsOf(t, fmt.Sprintf("table=%d", pipeline.L2Forwarding), "dl_dst="+gwMAC); after != before {
			t.Errorf("%d packets went to the gateway", after-before)
		}
		n.applyServices(t, []pipeline.ServicePort{web})
	})
	t.Run("hairpin", func(t *testing.T) {
		only := web
		only.ClusterEndpoints = []pipeline.ServiceEndpoint{endpoint(a.IP, 8080)}
		n.applyServices(t, []pipeline.ServicePort{only})
		for i := range 3 {
			c, err := dialService(t, a.NetNS, vip+":80")
			if err != nil {
				t.Fatalf("pa -> its own Service, connection %d: %v", i, err)
			}
			name, seen, err := c.ask()
			if err == nil {
				_, _, err = c.ask() // an established packet both ways
			}
			c.c.Close()
			if err != nil || name != "pa" || seen != hairpinIP {
				t.Errorf("hairpin: endpoint %q saw client %q (%v), want pa seeing %s", name, seen, err, hairpinIP)
			}
		}
		name, from, err := askUDP(t, a.NetNS, vip+":53")
		if err != nil || name != "pa" || from != vip+":53" {
			t.Errorf("hairpin UDP: %q from %q (%v)", name, from, err)
		}
		n.applyServices(t, []pipeline.ServicePort{web})
	})
	t.Run("egress policy applies to the endpoint", func(t *testing.T) {
		ch := pipeline.PolicyChange{
			Upsert: []pipeline.PolicyRule{{ID: 1, Name: "default/only-a/egress/0", Direction: pipeline.Egress,
				Pods: []pipeline.LocalPod{local(client)}, Peers: []*net.IPNet{{IP: net.ParseIP(a.IP).To4(), Mask: net.CIDRMask(32, 32)}}}},
			Isolation: &pipeline.Isolation{Egress: []pipeline.LocalPod{local(client)}},
		}
		if err := n.pipe.ApplyPolicy(testctx.Timeout(t, time.Minute), ch); err != nil {
			t.Fatal(err)
		}
		n.ovs.MustAppctl(t, "revalidator/wait")
		var ok, failed int
		for range 12 {
			c, err := dialService(t, client.NetNS, vip+":80")
			if err != nil {
				failed++ // the group chose pb: egress policy dropped it
				continue
			}
			name, _, err := c.ask()
			c.c.Close()
			if err != nil || name != "pa" {
				t.Fatalf("under egress only-to-pa, a connection reached %q (%v)", name, err)
			}
			ok++
		}
		t.Logf("egress only-to-pa: %d connections to pa, %d refused by policy (bucket pb)", ok, failed)
		if ok == 0 || failed == 0 {
			t.Errorf("want some connections to pa and some dropped (to pb) of 12: %d, %d", ok, failed)
		}
		if err := n.pipe.ApplyPolicy(testctx.Timeout(t, time.Minute), pipeline.PolicyChange{Delete: []uint32{1}, Isolation: &pipeline.Isolation{}}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("NodePort, ExternalIP and LoadBalancer frontends from a pod", func(t *testing.T) {
		const nodeIP, extIP, lbIP = "192.168.1.10", "198.51.100.7", "203.0.113.9"
		fronts := web
		fronts.Frontends = append(fronts.Frontends[:2:2],
			pipeline.ServiceFrontend{Kind: pipeline.KindNodePort, Port: 30080, Protocol: pipeline.ProtocolTCP},
			pipeline.ServiceFrontend{Kind: pipeline.KindExternalIP, IP: netip.MustParseAddr(extIP), Port: 80, Protocol: pipeline.ProtocolTCP},
			pipeline.ServiceFrontend{Kind: pipeline.KindLoadBalancer, IP: netip.MustParseAddr(lbIP), Port: 80, Protocol: pipeline.ProtocolTCP})
		// Only the client's /32 may use the LB IP.
		fronts.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix(client.IP + "/32")}
		n.applyServices(t, []pipeline.ServicePort{fronts})
		for _, addr := range []string{nodeIP + ":30080", extIP + ":80", lbIP + ":80"} {
			c, err := dialService(t, client.NetNS, addr)
			if err != nil {
				t.Errorf("client -> %s: %v", addr, err)
				continue
			}
			name, _, err := c.ask()
			c.c.Close()
			if err != nil || (name != "pa" && name != "pb") {
				t.Errorf("client -> %s reached %q (%v)", addr, name, err)
			}
		}
		// Pod pb is outside the source range: its connection to the LB IP
		// is dropped, while the ExternalIP still works for it.
		if _, err := dialService(t, b.NetNS, lbIP+":80"); err == nil {
			t.Errorf("pb reached the LB IP outside LoadBalancerSourceRanges")
		}
		if c, err := dialService(t, b.NetNS, extIP+":80"); err != nil {
			t.Errorf("pb -> ExternalIP: %v", err)
		} else {
			c.c.Close()
		}
		n.applyServices(t, []pipeline.ServicePort{web})
	})
	t.Run("session affinity: a client keeps its endpoint", func(t *testing.T) {
		sticky := web
		sticky.AffinityTimeout = 3 * time.Hour
		n.applyServices(t, []pipeline.ServicePort{sticky})
		id, _ := n.pipe.ServiceGroupID(web.Key)
		if out := n.ovs.MustOfctl(t, "-O", "OpenFlow15", "dump-groups", "br-int", fmt.Sprint(id)); !strings.Contains(out, "selection_method=hash,fields=ip_src") {
			t.Errorf("affinity group is not hashed on the client address:\n%s", out)
		}
		for _, from := range []*ovstest.Pod{client, b} {
			seen := map[string]int{}
			for i := range 15 {
				c, err := dialService(t, from.NetNS, vip+":80")
				if err != nil {
					t.Fatalf("%s connection %d: %v", from.Name, i, err)
				}
				name, _, err := c.ask()
				c.c.Close()
				if err != nil {
					t.Fatalf("%s connection %d: %v", from.Name, i, err)
				}
				seen[name]++
			}
			if len(seen) != 1 {
				t.Errorf("with ClientIP affinity %s's 15 connections reached %v, want one endpoint", from.Name, seen)
			}
			t.Logf("affinity: %s -> %v", from.Name, seen)
		}
		n.applyServices(t, []pipeline.ServicePort{web})
	})
	t.Run("replay after ovs-vswitchd restart", func(t *testing.T) {
		groups := func() string {
			return n.ovs.MustOfctl(t, "-O", "OpenFlow15", "dump-groups", "br-int")
		}
		before, beforeGroups := n.ovs.DumpFlows(t, "br-int"), groups()
		n.ovs.StopVswitchd(t)
		n.ovs.StartVswitchd(t)
		select {
		case <-n.sw.Reconnected():
		case <-time.After(20 * time.Second):
			t.Fatal("no reconnect within 20s")
		}
		if after := n.ovs.DumpFlows(t, "br-int"); strings.Join(after, "\n") != strings.Join(before, "\n") {
			t.Fatalf("flows after replay:\n%s\nbefore:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
		}
		if after := groups(); after != beforeGroups {
			t.Fatalf("groups after replay:\n%s\nbefore:\n%s", after, beforeGroups)
		}
		count := map[string]int{}
		for range 10 {
			c, err := dialService(t, client.NetNS, vip+":80")
			if err != nil {
				t.Fatalf("after the restart: %v", err)
			}
			name, _, err := c.ask()
			c.c.Close()
			if err != nil {
				t.Fatalf("after the restart: %v", err)
			}
			count[name]++
		}
		if count["pa"] == 0 || count["pb"] == 0 {
			t.Errorf("after the restart connections reach only %v", count)
		}
	})
	t.Run("deleted: no group, no frontend flow", func(t *testing.T) {
		n.applyServices(t, nil, web.Key)
		if out := n.ovs.MustOfctl(t, "-O", "OpenFlow15", "dump-groups", "br-int"); strings.Contains(out, "group_id") {
			t.Errorf("groups left: %s", out)
		}
		if got := n.ovs.DumpFlows(t, "br-int", fmt.Sprintf("table=%d,reg0=0x3/0xf", pipeline.ServiceLB)); len(got) != 0 {
			t.Errorf("frontend flows left: %v", got)
		}
	})
}

// TestProxyIPv6ClusterIP: on a dual-stack node an IPv6 ClusterIP is
// load-balanced over two IPv6 endpoints (TCP spread and sticky, UDP answered
// from the ClusterIP), and a pod reaching itself through it is SNATed to the
// IPv6 hairpin IP.
func TestProxyIPv6ClusterIP(t *testing.T) {
	_, cidr6, _ := net.ParseCIDR("fd00:10:10::/64")
	n := newNodeWith(t, []ovstest.Option{ovstest.WithPodIPv6()}, func(c *pipeline.Config) {
		c.GatewayIPv6, c.PodCIDRv6 = net.ParseIP(gwIPv6), cidr6
	}, withProxy)
	if out, err := n.ovs.Exec("", "ip", "-6", "addr", "add", gwIPv6+"/64", "dev", "gw0", "nodad"); err != nil {
		t.Fatalf("gateway IPv6: %v: %s", err, out)
	}
	client := n.addDualStackPod(t, "pc", "10.10.0.2", "fd00:10:10::2", "02:00:0a:0a:00:02", 3)
	a := n.addDualStackPod(t, "pa", "10.10.0.3", "fd00:10:10::3", "02:00:0a:0a:00:03", 4)
	b := n.addDualStackPod(t, "pb", "10.10.0.4", "fd00:10:10::4", "02:00:0a:0a:00:04", 5)
	n.staticNeighbours(t, client, a, b)
	nameServer(t, a.NetNS, "pa", a.IPv6, 8080)
	nameServer(t, b.NetNS, "pb", b.IPv6, 8080)
	const vip = "fd00:96::10"
	web := pipeline.ServicePort{Key: "default/web:http/IPv6", HasEndpoints: true,
		Frontends:        []pipeline.ServiceFrontend{clusterIP(vip, 80, pipeline.ProtocolTCP), clusterIP(vip, 53, pipeline.ProtocolUDP)},
		ClusterEndpoints: []pipeline.ServiceEndpoint{endpoint(a.IPv6, 8080), endpoint(b.IPv6, 8080)}}
	n.applyServices(t, []pipeline.ServicePort{web})
	addr := net.JoinHostPort(vip, "80")

	count := stickyConnections(t, client.NetNS, addr, 30, client.IPv6)
	t.Logf("30 IPv6 connections: %v", count)
	if count["pa"] < 4 || count["pb"] < 4 {
		t.Errorf("IPv6 connections not spread: %v", count)
	}
	name, from, err := askUDP(t, client.NetNS, net.JoinHostPort(vip, "53"))
	if err != nil || from != net.JoinHostPort(vip, "53") {
		t.Errorf("IPv6 UDP: %q from %q (%v), want an answer from the ClusterIP", name, from, err)
	}

	only := web
	only.ClusterEndpoints = []pipeline.ServiceEndpoint{endpoint(a.IPv6, 8080)}
	n.applyServices(t, []pipeline.ServicePort{only})
	c, err := dialService(t, a.NetNS, addr)
	if err != nil {
		t.Fatalf("IPv6 hairpin: %v", err)
	}
	defer c.c.Close()
	if name, seen, err := c.ask(); err != nil || name != "pa" || seen != hairpinIPv6 {
		t.Errorf("IPv6 hairpin: endpoint %q saw %q (%v), want pa seeing %s", name, seen, err, hairpinIPv6)
	}
}
