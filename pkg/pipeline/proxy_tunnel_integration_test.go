package pipeline_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/test/testctx"
)

// tunnelPair connects two nodes' br-int through Geneve over an underlay:
// a veth ul0 between the node namespaces, each end on a br-phy bridge
// holding the node IP (the userspace datapath routes the tunnel through
// it), the node kernels kept off ul0 (netdev ingress drop), tun0 on br-int
// (ofport 1), each node the other's peer, and the tunnel neighbour caches
// warmed (OVS drops a tunnelled packet it has no neighbour for).
func tunnelPair(t *testing.T, n1, n2 *node, peer1, peer2 pipeline.PeerNode) {
	t.Helper()
	if out, err := n1.ovs.Exec("", "ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", n2.ovs.NetNS); err != nil {
		t.Fatalf("underlay veth: %v: %s", err, out)
	}
	for _, x := range []struct {
		n      *node
		nodeIP net.IP
		peer   pipeline.PeerNode
	}{{n1, peer2.NodeIP, peer2}, {n2, peer1.NodeIP, peer1}} {
		n := x.n
		n.ovs.MustVsctl(t, "add-br", "br-phy", "--", "set", "Bridge", "br-phy", "datapath_type=netdev", "fail_mode=standalone",
			"--", "add-port", "br-phy", "ul0")
		n.ovs.MustVsctl(t, "add-port", "br-int", "tun0", "--", "set", "Interface", "tun0", "type=geneve", "ofport_request=1",
			"options:remote_ip=flow", "options:key=flow", "options:csum=true")
		own := peer1.NodeIP
		if n == n2 {
			own = peer2.NodeIP
		}
		for _, args := range [][]string{
			{"ip", "addr", "add", own.String() + "/24", "dev", "br-phy"},
			{"ip", "link", "set", "br-phy", "up"},
			{"ip", "link", "set", "ul0", "up"},
			{"nft", "add", "table", "netdev", "weir_test_ul"},
			{"nft", "add", "chain", "netdev", "weir_test_ul", "in", `{ type filter hook ingress device "ul0" priority 0; policy drop; }`},
		} {
			if out, err := n.ovs.Exec("", args[0], args[1:]...); err != nil {
				t.Fatalf("%v: %v: %s", args, err, out)
			}
		}
		if err := n.pipe.AddPeer(testctx.Timeout(t, time.Minute), x.peer); err != nil {
			t.Fatal(err)
		}
	}
	// OVS learns the tunnel neighbour from the ARP reply it sees on
	// br-phy: each node pings the other once.
	for _, x := range []struct {
		n  *node
		ip net.IP
	}{{n1, peer2.NodeIP}, {n2, peer1.NodeIP}} {
		if out, err := x.n.ovs.Exec("", "ping", "-c", "1", "-W", "2", x.ip.String()); err != nil {
			t.Fatalf("underlay ping %v: %v: %s", x.ip, err, out)
		}
	}
}

// proxyTunnelNodes returns node 1 (pod CIDR 10.10.0.0/24, node IP
// 192.0.2.1, its proxy configured by proxy) and node 2 (10.10.1.0/24,
// 192.0.2.2) joined by the Geneve tunnel (tunnelPair).
func proxyTunnelNodes(t *testing.T, proxy func(*pipeline.Config)) (n1, n2 *node) {
	t.Helper()
	_, cidr1, _ := net.ParseCIDR("10.10.0.0/24")
	_, cidr2, _ := net.ParseCIDR("10.10.1.0/24")
	n1 = newNode(t, func(c *pipeline.Config) { c.TunnelOFPort = 1 }, proxy)
	n2 = newNode(t, func(c *pipeline.Config) {
		c.TunnelOFPort, c.GatewayIP, c.PodCIDR = 1, net.ParseIP("10.10.1.1"), cidr2
	})
	peer1 := pipeline.PeerNode{Name: "n1", NodeIP: net.ParseIP("192.0.2.1").To4(), PodCIDR: cidr1, GatewayIP: net.ParseIP("10.10.0.1").To4()}
	peer2 := pipeline.PeerNode{Name: "n2", NodeIP: net.ParseIP("192.0.2.2").To4(), PodCIDR: cidr2, GatewayIP: net.ParseIP("10.10.1.1").To4()}
	tunnelPair(t, n1, n2, peer1, peer2)
	return n1, n2
}

// TestProxyRemoteEndpoint: a ClusterIP with one endpoint on this node and
// one on a peer node reached through the Geneve tunnel: connections spread
// over both, the remote endpoint sees the client pod's own address, replies
// come back through the tunnel and are un-DNATed (the client connects to
// and hears from the ClusterIP), UDP included.
func TestProxyRemoteEndpoint(t *testing.T) {
	n1, n2 := proxyTunnelNodes(t, withProxy)

	client := n1.addRoutedPod(t, "pc", "10.10.0.2", "02:00:0a:0a:00:02", 3)
	local := n1.addRoutedPod(t, "pa", "10.10.0.3", "02:00:0a:0a:00:03", 4)
	remote := n2.addPod(t, "pr", "10.10.1.5", "02:00:0a:0a:01:05", 3)
	mustPodExec(t, remote, "ip", "route", "add", "default", "via", "10.10.1.1")
	nameServer(t, local.NetNS, "pa", local.IP, 8080)
	nameServer(t, remote.NetNS, "pr", remote.IP, 8080)

	const vip = "10.96.0.10"
	web := pipeline.ServicePort{Key: "default/web:http/IPv4", HasEndpoints: true,
		Frontends: []pipeline.ServiceFrontend{clusterIP(vip, 80, pipeline.ProtocolTCP), clusterIP(vip, 53, pipeline.ProtocolUDP)},
		ClusterEndpoints: []pipeline.ServiceEndpoint{endpoint(local.IP, 8080),
			{IP: netip.MustParseAddr(remote.IP), Port: 8080}}}
	n1.applyServices(t, []pipeline.ServicePort{web})

	count := stickyConnections(t, client.NetNS, vip+":80", 30, client.IP)
	t.Logf("30 connections: %v", count)
	if count["pa"] < 4 || count["pr"] < 4 {
		t.Errorf("connections not spread over the local and the remote endpoint: %v", count)
	}
	udp := map[string]int{}
	for i := range 20 {
		name, from, err := askUDP(t, client.NetNS, vip+":53")
		if err != nil || from != vip+":53" {
			t.Fatalf("UDP query %d: %q from %q (%v)", i, name, from, err)
		}
		udp[name]++
	}
	t.Logf("20 UDP queries: %v", udp)
	if udp["pr"] == 0 {
		t.Errorf("no UDP query reached the remote endpoint: %v", udp)
	}
}
