package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/pkg/pipeline"
)

// The kube-proxy-free mode (proxyMode "all", docs/proxy.md "Kube-proxy-free
// mode"): besides the pods' Service traffic, the pipeline load-balances
// the node's own (the Service CIDRs routed into the gateway) and the
// external traffic (NodePorts, ExternalIPs, LB IPs, which the node's
// kernel hands to the gateway: nodenet.InstallExternalServices), and the
// node rejects Service CIDR traffic without endpoints
// (nodenet.InstallServiceReject).

// nodeServiceNet is the node side of the kube-proxy-free mode, the
// kernel's part; the pipeline's is ProxyConfig.FromGateway.
type nodeServiceNet struct {
	gateway    string
	gatewayMAC net.HardwareAddr
	gwIP       netip.Addr // IPv4 gateway address, or invalid
	gwIPv6     netip.Addr
	svcCIDRs   []netip.Prefix
	log        klog.Logger

	mu         sync.Mutex
	ports      map[string]pipeline.ServicePort // the realized ServicePorts, by key
	lastNft    string                          // fingerprint of the installed rules
	lastRoutes string                          // fingerprint of the installed routes
}

// setup installs the routes of the Service CIDRs and the virtual NodePort
// addresses and the reject rule, and an empty external table.
func (n *nodeServiceNet) setup(ctx context.Context) error {
	if err := nodenet.InstallServiceReject(ctx, n.gateway, n.svcCIDRs); err != nil {
		return err
	}
	return n.sync(ctx)
}

// proxyAllCleanup removes what the kube-proxy-free mode installed, in the
// other modes (a node switched back to kube-proxy, whose own rules then
// serve and reject).
func proxyAllCleanup(ctx context.Context, gateway string) error {
	if err := nodenet.RemoveServiceRoutes(gateway); err != nil {
		return err
	}
	if err := nodenet.RemoveExternalServices(ctx); err != nil {
		return err
	}
	return nodenet.RemoveServiceReject(ctx)
}

// newNodeServiceNet is the node side for a gateway with the given MAC and
// addresses (either may be nil) and the cluster's Service CIDRs.
func newNodeServiceNet(gateway string, mac net.HardwareAddr, gw4, gw6 net.IP, svc4, svc6 *net.IPNet, log klog.Logger) *nodeServiceNet {
	n := &nodeServiceNet{gateway: gateway, gatewayMAC: mac, log: log, ports: map[string]pipeline.ServicePort{}}
	if a, ok := netip.AddrFromSlice(gw4.To4()); ok && gw4 != nil {
		n.gwIP = a
	}
	if a, ok := netip.AddrFromSlice(gw6.To16()); ok && gw6 != nil && gw6.To4() == nil {
		n.gwIPv6 = a
	}
	for _, c := range []*net.IPNet{svc4, svc6} {
		if c == nil {
			continue
		}
		a, _ := netip.AddrFromSlice(c.IP)
		ones, _ := c.Mask.Size()
		if a.Is4In6() {
			a = a.Unmap()
		}
		n.svcCIDRs = append(n.svcCIDRs, netip.PrefixFrom(a, ones).Masked())
	}
	return n
}

// wrap returns r with the node side added: its ApplyServices realizes the
// ServicePorts in the pipeline, then brings the kernel's rules and routes for their external frontends up to date
// (skipped when they did not change: endpoint changes never touch them).
// An error of the kernel's part is returned so that the controller
// retries; the pipeline's part is idempotent.
func (n *nodeServiceNet) wrap(r pipeline.ServiceRealizer) pipeline.ServiceRealizer {
	return realizerFunc(func(ctx context.Context, upserts []pipeline.ServicePort, deleted []string) error {
		if err := r.ApplyServices(ctx, upserts, deleted); err != nil {
			return err
		}
		n.mu.Lock()
		for _, sp := range upserts {
			n.ports[sp.Key] = sp
		}
		for _, k := range deleted {
			delete(n.ports, k)
		}
		n.mu.Unlock()
		return n.sync(ctx)
	})
}

type realizerFunc func(ctx context.Context, upserts []pipeline.ServicePort, deleted []string) error

func (f realizerFunc) ApplyServices(ctx context.Context, upserts []pipeline.ServicePort, deleted []string) error {
	return f(ctx, upserts, deleted)
}

// sync installs the external rules and the routes computed from the
// realized ServicePorts if they differ from the installed ones.
func (n *nodeServiceNet) sync(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	es, routes := n.compute()
	fpNft, fpRoutes := fmt.Sprint(es), fmt.Sprint(routes)
	if fpRoutes != n.lastRoutes {
		if err := nodenet.EnsureServiceRoutes(n.gateway, routes, n.gatewayMAC); err != nil {
			return err
		}
		n.lastRoutes = fpRoutes
	}
	if fpNft != n.lastNft {
		if err := nodenet.InstallExternalServices(ctx, es); err != nil {
			return err
		}
		n.lastNft = fpNft
	}
	return nil
}

// compute returns the external rules and the routes: the Service CIDRs,
// the virtual NodePort address of each family, and each ExternalIP and LB
// IP, all into the gateway with the family's gateway address as source.
func (n *nodeServiceNet) compute() (nodenet.ExternalServices, []nodenet.ServiceRoute) {
	es := nodenet.ExternalServices{GatewayName: n.gateway, GatewayIP: n.gwIP, GatewayIPv6: n.gwIPv6}
	var routes []nodenet.ServiceRoute
	src := func(a netip.Addr) netip.Addr {
		if a.Is6() {
			return n.gwIPv6
		}
		return n.gwIP
	}
	for _, c := range n.svcCIDRs {
		if s := src(c.Addr()); s.IsValid() {
			routes = append(routes, nodenet.ServiceRoute{CIDR: c, Src: s})
		}
	}
	if n.gwIP.IsValid() {
		es.NodePortIP = nodenet.ServiceNextHopIPv4
		routes = append(routes, nodenet.ServiceRoute{CIDR: netip.PrefixFrom(nodenet.ServiceNextHopIPv4, 32), Src: n.gwIP})
	}
	if n.gwIPv6.IsValid() {
		es.NodePortIPv6 = nodenet.ServiceNextHopIPv6
		routes = append(routes, nodenet.ServiceRoute{CIDR: netip.PrefixFrom(nodenet.ServiceNextHopIPv6, 128), Src: n.gwIPv6})
	}
	keys := make([]string, 0, len(n.ports))
	for k := range n.ports {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	seenRoute := map[netip.Addr]bool{}
	for _, k := range keys {
		sp := n.ports[k]
		v6 := len(k) >= 4 && k[len(k)-4:] == "IPv6"
		if !src(addrOfFamily(v6)).IsValid() {
			continue // a family the node has no gateway address of
		}
		for _, f := range sp.Frontends {
			proto := protocolName(f.Protocol)
			if proto == "" || f.Kind == pipeline.KindClusterIP {
				continue
			}
			r := nodenet.ExternalServiceRule{Protocol: proto, Port: f.Port, SNAT: !sp.ExternalLocal, IPv6: v6}
			switch {
			case f.Kind == pipeline.KindNodePort:
				// Every NodePort is reached at every local address of the
				// family (a NodePort frontend with an address is one of
				// them).
			default:
				r.IP = f.IP
				if f.Kind == pipeline.KindLoadBalancer && len(sp.LoadBalancerSourceRanges) > 0 {
					es.SourceRanges = append(es.SourceRanges, nodenet.SourceRangeRule{IP: f.IP, Protocol: proto, Port: f.Port,
						Allowed: sp.LoadBalancerSourceRanges})
				}
				if !seenRoute[f.IP] {
					seenRoute[f.IP] = true
					routes = append(routes, nodenet.ServiceRoute{CIDR: netip.PrefixFrom(f.IP, f.IP.BitLen()), Src: src(f.IP)})
				}
			}
			if !slices.Contains(es.Rules, r) {
				es.Rules = append(es.Rules, r)
			}
		}
	}
	return es, routes
}

// addrOfFamily is a placeholder address of the family, for src().
func addrOfFamily(v6 bool) netip.Addr {
	if v6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

func protocolName(p pipeline.Protocol) string {
	switch p {
	case pipeline.ProtocolTCP:
		return "tcp"
	case pipeline.ProtocolUDP:
		return "udp"
	case pipeline.ProtocolSCTP:
		return "sctp"
	}
	return ""
}
