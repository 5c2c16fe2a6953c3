package agent

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/pkg/pipeline"
)

// TestNodeServiceNetCompute: the kernel's rules and routes of the
// kube-proxy-free mode from the realized ServicePorts: one NodePort rule
// per family, protocol and port with SNAT unless externalTrafficPolicy
// Local, one rule and one host route per ExternalIP and LB IP, the
// Service CIDR and virtual NodePort routes per family, nothing for
// ClusterIPs.
func TestNodeServiceNetCompute(t *testing.T) {
	mac, _ := net.ParseMAC("02:00:0a:0a:00:01")
	_, svc4, _ := net.ParseCIDR("10.96.0.0/12")
	_, svc6, _ := net.ParseCIDR("fd00:96::/112")
	n := newNodeServiceNet("weir-gw0", mac, net.ParseIP("10.10.0.1"), net.ParseIP("fd00:10::1"), svc4, svc6, klog.Background())
	a := netip.MustParseAddr
	n.ports["default/web:http/IPv4"] = pipeline.ServicePort{Key: "default/web:http/IPv4", Frontends: []pipeline.ServiceFrontend{
		{Kind: pipeline.KindClusterIP, IP: a("10.96.0.10"), Port: 80, Protocol: pipeline.ProtocolTCP},
		{Kind: pipeline.KindNodePort, Port: 30080, Protocol: pipeline.ProtocolTCP},
		{Kind: pipeline.KindExternalIP, IP: a("198.51.100.7"), Port: 80, Protocol: pipeline.ProtocolTCP},
		{Kind: pipeline.KindLoadBalancer, IP: a("203.0.113.9"), Port: 80, Protocol: pipeline.ProtocolTCP}},
		LoadBalancerSourceRanges: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	n.ports["default/web:http/IPv6"] = pipeline.ServicePort{Key: "default/web:http/IPv6", Frontends: []pipeline.ServiceFrontend{
		{Kind: pipeline.KindNodePort, Port: 30080, Protocol: pipeline.ProtocolTCP}}}
	n.ports["default/loc:dns/IPv4"] = pipeline.ServicePort{Key: "default/loc:dns/IPv4", ExternalLocal: true, Frontends: []pipeline.ServiceFrontend{
		{Kind: pipeline.KindNodePort, Port: 30053, Protocol: pipeline.ProtocolUDP},
		{Kind: pipeline.KindExternalIP, IP: a("198.51.100.7"), Port: 53, Protocol: pipeline.ProtocolUDP}}}
	es, routes := n.compute()
	if es.GatewayIP != a("10.10.0.1") || es.GatewayIPv6 != a("fd00:10::1") || es.NodePortIP != nodenet.ServiceNextHopIPv4 || es.NodePortIPv6 != nodenet.ServiceNextHopIPv6 {
		t.Errorf("addresses: %+v", es)
	}
	wantRules := []nodenet.ExternalServiceRule{
		{Protocol: "udp", Port: 30053},
		{IP: a("198.51.100.7"), Protocol: "udp", Port: 53},
		{Protocol: "tcp", Port: 30080, SNAT: true},
		{IP: a("198.51.100.7"), Protocol: "tcp", Port: 80, SNAT: true},
		{IP: a("203.0.113.9"), Protocol: "tcp", Port: 80, SNAT: true},
		{IPv6: true, Protocol: "tcp", Port: 30080, SNAT: true},
	}
	if !slices.Equal(es.Rules, wantRules) {
		t.Errorf("rules\n got %+v\nwant %+v", es.Rules, wantRules)
	}
	if len(es.SourceRanges) != 1 || es.SourceRanges[0].IP != a("203.0.113.9") || es.SourceRanges[0].Port != 80 ||
		len(es.SourceRanges[0].Allowed) != 1 || es.SourceRanges[0].Allowed[0] != netip.MustParsePrefix("192.0.2.0/24") {
		t.Errorf("source ranges %+v, want the LB frontend's 192.0.2.0/24", es.SourceRanges)
	}
	gw4, gw6 := a("10.10.0.1"), a("fd00:10::1")
	wantRoutes := []nodenet.ServiceRoute{
		{CIDR: netip.MustParsePrefix("10.96.0.0/12"), Src: gw4},
		{CIDR: netip.MustParsePrefix("fd00:96::/112"), Src: gw6},
		{CIDR: netip.MustParsePrefix("169.254.0.252/32"), Src: gw4},
		{CIDR: netip.MustParsePrefix("fc00::aabb:ccdd:eefe/128"), Src: gw6},
		{CIDR: netip.MustParsePrefix("198.51.100.7/32"), Src: gw4},
		{CIDR: netip.MustParsePrefix("203.0.113.9/32"), Src: gw4},
	}
	if !slices.Equal(routes, wantRoutes) {
		t.Errorf("routes\n got %+v\nwant %+v", routes, wantRoutes)
	}

	// An IPv4-only node ignores IPv6 ServicePorts and has no IPv6 route.
	n4 := newNodeServiceNet("weir-gw0", mac, net.ParseIP("10.10.0.1"), nil, svc4, nil, klog.Background())
	n4.ports["default/web:http/IPv6"] = n.ports["default/web:http/IPv6"]
	es, routes = n4.compute()
	if len(es.Rules) != 0 || es.NodePortIPv6.IsValid() || len(routes) != 2 {
		t.Errorf("IPv4-only: rules %+v routes %+v", es.Rules, routes)
	}
}
