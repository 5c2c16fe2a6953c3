package pipeline_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

// withNodeProxy is withProxy with the node's own traffic load-balanced
// too (the kube-proxy-free mode).
func withNodeProxy(c *pipeline.Config) {
	withProxy(c)
	c.Proxy.FromGateway, c.Proxy.NodePortIP = true, netip.MustParseAddr("169.254.0.252")
	if c.GatewayIPv6 != nil {
		c.Proxy.NodePortIPv6 = netip.MustParseAddr("fc00::aabb:ccdd:eefe")
	}
}

// TestProxyFromNode: the node itself (a process in the node namespace,
// as a host process or hostNetwork pod) reaches a ClusterIP whose
// endpoints are a pod of this node and a pod of a peer node behind the
// Geneve tunnel. The node routes the Service CIDR into the gateway
// (nodenet.EnsureServiceRoutes, the route's source the gateway IP); TCP
// connections spread over both endpoints and stick; each endpoint sees
// the gateway IP as the client; replies are un-DNATed (the connection
// would not even open otherwise) and UDP answers come from the ClusterIP.
// A Service with endpoints on other nodes only (a Local policy) drops the
// node's packets (the ServiceLB flow from the gateway counts them), and
// without FromGateway the pipeline has no flow for the node's packets.
func TestProxyFromNode(t *testing.T) {
	n1, n2 := proxyTunnelNodes(t, withNodeProxy)

	local := n1.addRoutedPod(t, "pa", "10.10.0.3", "02:00:0a:0a:00:03", 4)
	remote := n2.addPod(t, "pr", "10.10.1.5", "02:00:0a:0a:01:05", 3)
	mustPodExec(t, remote, "ip", "route", "add", "default", "via", "10.10.1.1")
	nameServer(t, local.NetNS, "pa", local.IP, 8080)
	nameServer(t, remote.NetNS, "pr", remote.IP, 8080)

	mac, _ := net.ParseMAC(gwMAC)
	if err := inNS(t, n1.ovs.NetNS, func() error {
		return nodenet.EnsureServiceRoutes("gw0", []nodenet.ServiceRoute{
			{CIDR: netip.MustParsePrefix("10.96.0.0/12"), Src: netip.MustParseAddr("10.10.0.1")}}, mac)
	}); err != nil {
		t.Fatal(err)
	}

	const vip, vipLocal = "10.96.0.10", "10.96.0.20"
	web := pipeline.ServicePort{Key: "default/web:http/IPv4", HasEndpoints: true,
		Frontends: []pipeline.ServiceFrontend{clusterIP(vip, 80, pipeline.ProtocolTCP), clusterIP(vip, 53, pipeline.ProtocolUDP)},
		ClusterEndpoints: []pipeline.ServiceEndpoint{endpoint(local.IP, 8080),
			{IP: netip.MustParseAddr(remote.IP), Port: 8080}}}
	elsewhere := pipeline.ServicePort{Key: "default/elsewhere:http/IPv4", HasEndpoints: true,
		Frontends: []pipeline.ServiceFrontend{clusterIP(vipLocal, 80, pipeline.ProtocolTCP)}}
	n1.applyServices(t, []pipeline.ServicePort{web, elsewhere})

	count := stickyConnections(t, n1.ovs.NetNS, vip+":80", 30, "10.10.0.1") // the gateway IP
	t.Logf("30 connections from the node: %v", count)
	if count["pa"] < 4 || count["pr"] < 4 {
		t.Errorf("connections not spread over the local and the remote endpoint: %v", count)
	}
	udp := map[string]int{}
	for i := range 20 {
		name, from, err := askUDP(t, n1.ovs.NetNS, vip+":53")
		if err != nil || from != vip+":53" {
			t.Fatalf("UDP query %d: %q from %q (%v)", i, name, from, err)
		}
		udp[name]++
	}
	t.Logf("20 UDP queries from the node: %v", udp)
	if udp["pa"] == 0 || udp["pr"] == 0 {
		t.Errorf("UDP queries not spread: %v", udp)
	}

	// Endpoints elsewhere only: the node's packets are dropped by the
	// ServiceLB flow from the gateway.
	if c, err := dialService(t, n1.ovs.NetNS, vipLocal+":80"); err == nil {
		c.c.Close()
		t.Fatalf("connected to %s, which has no endpoint for this node", vipLocal)
	} else if !isTimeout(err) {
		t.Errorf("connection to %s: %v, want a timeout", vipLocal, err)
	}
	if got := n1.nPacketsOf(t, fmt.Sprintf("table=%d,tcp,reg0=0x1/0xf,nw_dst=%s", pipeline.ServiceLB, vipLocal), "actions=drop"); got < 1 {
		t.Errorf("the ServiceLB drop from the gateway for %s counted %d packets", vipLocal, got)
	}

	// Deleted: the node's connection no longer reaches an endpoint.
	n1.applyServices(t, nil, web.Key)
	if c, err := dialService(t, n1.ovs.NetNS, vip+":80"); err == nil {
		c.c.Close()
		t.Errorf("connected to %s after its deletion", vip)
	}
}

// TestProxyNodePortFromOutside: a client outside the node (the peer
// node's own namespace, across the underlay) reaches a NodePort on the
// node IP, and an ExternalIP and an LB IP (within its source ranges)
// routed to the node; an LB IP whose ranges leave the client out times
// out (dropped by the kernel before any NAT). The node's kernel
// (nodenet.InstallExternalServices) DNATs the NodePort to the virtual
// NodePort address and SNATs both to the gateway IP into the gateway
// (externalTrafficPolicy Cluster); OVS load-balances them over a local
// and a remote endpoint (behind the tunnel, on the client's own node),
// which see the gateway IP; replies find their way back (the TCP
// connection opens and answers), UDP answers come from the node IP. A
// NodePort with externalTrafficPolicy Local (no SNAT, its external group
// over the local one of its two endpoints) always reaches the local
// endpoint, which sees the client's own address. The node's own
// connections to its NodePorts on its node IP work too (seen from the
// gateway IP).
func TestProxyNodePortFromOutside(t *testing.T) {
	n1, n2 := proxyTunnelNodes(t, withNodeProxy)

	local := n1.addRoutedPod(t, "pa", "10.10.0.3", "02:00:0a:0a:00:03", 4)
	remote := n2.addPod(t, "pr", "10.10.1.5", "02:00:0a:0a:01:05", 3)
	mustPodExec(t, remote, "ip", "route", "add", "default", "via", "10.10.1.1")
	nameServer(t, local.NetNS, "pa", local.IP, 8080)
	nameServer(t, remote.NetNS, "pr", remote.IP, 8080)

	const extIP, lbIP, lbDenied = "198.51.100.7", "203.0.113.9", "203.0.113.10"
	gwIP := netip.MustParseAddr("10.10.0.1")
	mac, _ := net.ParseMAC(gwMAC)
	if out, err := n1.ovs.Exec("", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatalf("ip_forward: %v: %s", err, out)
	}
	for _, ip := range []string{extIP, lbIP, lbDenied} {
		if out, err := n2.ovs.Exec("", "ip", "route", "add", ip, "via", "192.0.2.1"); err != nil {
			t.Fatalf("client route to %s: %v: %s", ip, err, out)
		}
	}
	if err := inNS(t, n1.ovs.NetNS, func() error {
		if err := nodenet.EnsureServiceRoutes("gw0", []nodenet.ServiceRoute{
			{CIDR: netip.MustParsePrefix("10.96.0.0/12"), Src: gwIP},
			{CIDR: netip.PrefixFrom(nodenet.ServiceNextHopIPv4, 32), Src: gwIP},
			{CIDR: netip.MustParsePrefix(extIP + "/32"), Src: gwIP},
			{CIDR: netip.MustParsePrefix(lbIP + "/32"), Src: gwIP},
			{CIDR: netip.MustParsePrefix(lbDenied + "/32"), Src: gwIP}}, mac); err != nil {
			return err
		}
		return nodenet.InstallExternalServices(testctx.Timeout(t, time.Minute), nodenet.ExternalServices{
			GatewayName: "gw0", GatewayIP: gwIP, NodePortIP: nodenet.ServiceNextHopIPv4,
			Rules: []nodenet.ExternalServiceRule{
				{Protocol: "tcp", Port: 30080, SNAT: true},
				{Protocol: "udp", Port: 30053, SNAT: true},
				{IP: netip.MustParseAddr(extIP), Protocol: "tcp", Port: 80, SNAT: true},
				{Protocol: "tcp", Port: 30081},
				{IP: netip.MustParseAddr(lbIP), Protocol: "tcp", Port: 80, SNAT: true},
				{IP: netip.MustParseAddr(lbDenied), Protocol: "tcp", Port: 80, SNAT: true},
			},
			SourceRanges: []nodenet.SourceRangeRule{
				{IP: netip.MustParseAddr(lbIP), Protocol: "tcp", Port: 80, Allowed: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
				{IP: netip.MustParseAddr(lbDenied), Protocol: "tcp", Port: 80, Allowed: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")}},
			}})
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = inNS(t, n1.ovs.NetNS, func() error { return nodenet.RemoveExternalServices(context.Background()) })
	})

	nodePort := func(port uint16, proto pipeline.Protocol) pipeline.ServiceFrontend {
		return pipeline.ServiceFrontend{Kind: pipeline.KindNodePort, Port: port, Protocol: proto}
	}
	web := pipeline.ServicePort{Key: "default/web:http/IPv4", HasEndpoints: true,
		Frontends: []pipeline.ServiceFrontend{clusterIP("10.96.0.10", 80, pipeline.ProtocolTCP),
			nodePort(30080, pipeline.ProtocolTCP), nodePort(30053, pipeline.ProtocolUDP),
			{Kind: pipeline.KindExternalIP, IP: netip.MustParseAddr(extIP), Port: 80, Protocol: pipeline.ProtocolTCP},
			{Kind: pipeline.KindLoadBalancer, IP: netip.MustParseAddr(lbIP), Port: 80, Protocol: pipeline.ProtocolTCP},
			{Kind: pipeline.KindLoadBalancer, IP: netip.MustParseAddr(lbDenied), Port: 80, Protocol: pipeline.ProtocolTCP}},
		ClusterEndpoints:         []pipeline.ServiceEndpoint{endpoint(local.IP, 8080), {IP: netip.MustParseAddr(remote.IP), Port: 8080}},
		LoadBalancerSourceRanges: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	// externalTrafficPolicy Local: the external frontends use the local
	// endpoint only (a group of their own), not SNATed by the kernel.
	loc := pipeline.ServicePort{Key: "default/loc:http/IPv4", HasEndpoints: true, ExternalLocal: true,
		Frontends:         []pipeline.ServiceFrontend{clusterIP("10.96.0.11", 80, pipeline.ProtocolTCP), nodePort(30081, pipeline.ProtocolTCP)},
		ClusterEndpoints:  []pipeline.ServiceEndpoint{endpoint(local.IP, 8080), {IP: netip.MustParseAddr(remote.IP), Port: 8080}},
		ExternalEndpoints: []pipeline.ServiceEndpoint{endpoint(local.IP, 8080)}}
	n1.applyServices(t, []pipeline.ServicePort{web, loc})

	for _, addr := range []string{"192.0.2.1:30080", extIP + ":80", lbIP + ":80"} {
		count := stickyConnections(t, n2.ovs.NetNS, addr, 20, gwIP.String()) // SNAT to the gateway IP
		t.Logf("%s: 20 connections from outside: %v", addr, count)
		if count["pa"] < 3 || count["pr"] < 3 {
			t.Errorf("%s: connections not spread over the local and the remote endpoint: %v", addr, count)
		}
	}
	udp := map[string]int{}
	for i := range 20 {
		name, from, err := askUDP(t, n2.ovs.NetNS, "192.0.2.1:30053")
		if err != nil || from != "192.0.2.1:30053" {
			t.Fatalf("UDP query %d: %q from %q (%v)", i, name, from, err)
		}
		udp[name]++
	}
	t.Logf("20 UDP queries from outside: %v", udp)
	if udp["pa"] == 0 || udp["pr"] == 0 {
		t.Errorf("UDP queries not spread: %v", udp)
	}
	// An LB IP whose source ranges leave the client out: dropped by the
	// kernel before any NAT (timeout).
	if c, err := dialService(t, n2.ovs.NetNS, lbDenied+":80"); err == nil {
		c.c.Close()
		t.Errorf("connected to %s from outside its source ranges", lbDenied)
	} else if !isTimeout(err) {
		t.Errorf("connection to %s from outside its source ranges: %v, want a timeout", lbDenied, err)
	}

	// The node's own connections to its NodePorts on its node IP (the
	// output chain's DNAT, SNAT to the gateway IP for both policies).
	for _, np := range []struct {
		addr string
		want []string
	}{{"192.0.2.1:30080", []string{"pa", "pr"}}, {"192.0.2.1:30081", []string{"pa"}}} {
		got := map[string]int{}
		for i := range 12 {
			c, err := dialService(t, n1.ovs.NetNS, np.addr)
			if err != nil {
				t.Fatalf("node to its NodePort %s: connection %d: %v", np.addr, i, err)
			}
			name, seen, err := c.ask()
			c.c.Close()
			if err != nil || seen != gwIP.String() {
				t.Fatalf("node to its NodePort %s: %s saw %s (%v), want the gateway IP", np.addr, name, seen, err)
			}
			got[name]++
		}
		t.Logf("node to its NodePort %s: %v", np.addr, got)
		for _, w := range np.want {
			if got[w] == 0 {
				t.Errorf("node to its NodePort %s: none on %s: %v", np.addr, w, got)
			}
		}
		if len(got) != len(np.want) {
			t.Errorf("node to its NodePort %s: endpoints %v, want only %v", np.addr, got, np.want)
		}
	}

	// Policy Local: the local endpoint only, and it sees the client.
	if _, ok := n1.pipe.ServiceExternalGroupID(loc.Key); !ok {
		t.Errorf("%s has no external group", loc.Key)
	}
	for i := range 10 {
		c, err := dialService(t, n2.ovs.NetNS, "192.0.2.1:30081")
		if err != nil {
			t.Fatalf("NodePort 30081: connection %d: %v", i, err)
		}
		name, seen, err := c.ask()
		c.c.Close()
		if err != nil || name != "pa" || seen != "192.0.2.2" {
			t.Errorf("NodePort 30081: %s saw %s (%v), want pa seeing the client 192.0.2.2", name, seen, err)
		}
	}
}

// TestProxyFromNodeIPv6: on a dual-stack node, the node's own IPv6
// connections to an IPv6 ClusterIP (routed into the gateway through the
// pinned IPv6 next hop, source the gateway IPv6) are load-balanced over
// two local endpoints, which see the gateway IPv6; UDP answers come from
// the ClusterIP.
func TestProxyFromNodeIPv6(t *testing.T) {
	_, cidr6, _ := net.ParseCIDR("fd00:10:10::/64")
	n := newNodeWith(t, []ovstest.Option{ovstest.WithPodIPv6()}, func(c *pipeline.Config) {
		c.GatewayIPv6, c.PodCIDRv6 = net.ParseIP(gwIPv6), cidr6
	}, withNodeProxy)
	if out, err := n.ovs.Exec("", "ip", "-6", "addr", "add", gwIPv6+"/64", "dev", "gw0", "nodad"); err != nil {
		t.Fatalf("gateway IPv6: %v: %s", err, out)
	}
	a := n.addDualStackPod(t, "pa", "10.10.0.3", "fd00:10:10::3", "02:00:0a:0a:00:03", 4)
	b := n.addDualStackPod(t, "pb", "10.10.0.4", "fd00:10:10::4", "02:00:0a:0a:00:04", 5)
	n.staticNeighbours(t, a, b)
	nameServer(t, a.NetNS, "pa", a.IPv6, 8080)
	nameServer(t, b.NetNS, "pb", b.IPv6, 8080)
	mac, _ := net.ParseMAC(gwMAC)
	if err := inNS(t, n.ovs.NetNS, func() error {
		return nodenet.EnsureServiceRoutes("gw0", []nodenet.ServiceRoute{
			{CIDR: netip.MustParsePrefix("fd00:96::/112"), Src: netip.MustParseAddr(gwIPv6)}}, mac)
	}); err != nil {
		t.Fatal(err)
	}
	const vip = "fd00:96::10"
	web := pipeline.ServicePort{Key: "default/web:http/IPv6", HasEndpoints: true,
		Frontends:        []pipeline.ServiceFrontend{clusterIP(vip, 80, pipeline.ProtocolTCP), clusterIP(vip, 53, pipeline.ProtocolUDP)},
		ClusterEndpoints: []pipeline.ServiceEndpoint{endpoint(a.IPv6, 8080), endpoint(b.IPv6, 8080)}}
	n.applyServices(t, []pipeline.ServicePort{web})

	count := map[string]int{}
	for i := range 20 {
		c, err := dialService(t, n.ovs.NetNS, net.JoinHostPort(vip, "80"))
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		name, seen, err := c.ask()
		c.c.Close()
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if seen != gwIPv6 {
			t.Errorf("endpoint %s saw client %s, want the gateway IPv6 %s", name, seen, gwIPv6)
		}
		count[name]++
	}
	t.Logf("20 IPv6 connections from the node: %v", count)
	if count["pa"] < 3 || count["pb"] < 3 {
		t.Errorf("connections not spread: %v", count)
	}
	for i := range 10 {
		name, from, err := askUDP(t, n.ovs.NetNS, net.JoinHostPort(vip, "53"))
		if err != nil || from != net.JoinHostPort(vip, "53") {
			t.Fatalf("UDP query %d: %q from %q (%v)", i, name, from, err)
		}
	}
}
