package proxy

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/weirnet/weir/pkg/kubecache"
	"github.com/weirnet/weir/pkg/pipeline"
)

// DefaultAffinityTimeout is sessionAffinity ClientIP's timeout when the
// Service sets none (the API's default, 3 hours).
const DefaultAffinityTimeout = 10800 * time.Second

// topology is what endpoint selection needs to know about this node.
type topology struct {
	node string // this node's name: an endpoint with this nodeName is local
	zone string // this node's topology.kubernetes.io/zone; "" if unlabelled
}

// healthCheck is what the health check server needs of one Service: its
// healthCheckNodePort and, per family the Service has, how many distinct
// ready local endpoint addresses it has.
type healthCheck struct {
	port  uint16
	local map[corev1.IPFamily]int
}

// serviceState is the computation's result for one Service.
type serviceState struct {
	ports map[string]pipeline.ServicePort // by ServicePort.Key
	hc    healthCheck                     // port 0: no health check
}

// endpoint is one EndpointSlice endpoint for one Service port, as
// kube-proxy's BaseEndpointInfo.
type endpoint struct {
	ip                          netip.Addr
	port                        uint16
	local                       bool
	ready, serving, terminating bool
	zones, nodes                []string // hints
}

func (e *endpoint) model() pipeline.ServiceEndpoint {
	return pipeline.ServiceEndpoint{IP: e.ip, Port: e.port, Local: e.local}
}

// portKey is the ServicePort key: namespace/name:port-name/family. An
// unnamed port (a single-port Service) has an empty port name.
func portKey(namespace, name, port string, family corev1.IPFamily) string {
	return namespace + "/" + name + ":" + port + "/" + string(family)
}

// skipService says whether the proxy ignores svc entirely, as kube-proxy
// does: headless (clusterIP None or empty) and ExternalName Services, and
// Services another proxy serves (service-proxy-name label). The headless
// label belongs on EndpointSlices; on a Service it is honoured too.
func skipService(svc *corev1.Service) bool {
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone ||
		svc.Spec.Type == corev1.ServiceTypeExternalName {
		return true
	}
	if _, ok := svc.Labels[kubecache.ServiceProxyNameLabel]; ok {
		return true
	}
	_, ok := svc.Labels[corev1.IsHeadlessService]
	return ok
}

// familyOf returns the family of a valid address.
func familyOf(a netip.Addr) corev1.IPFamily {
	if a.Is4() {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

// parseIP parses an address as the API writes it; an IPv4-mapped IPv6
// address counts as IPv4, as net.ParseIP would have it.
func parseIP(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// clusterIPOf returns svc's cluster IP of family, as kube-proxy's
// GetClusterIPByFamily: spec.clusterIPs paired with spec.ipFamilies, or,
// for an object without ipFamilies (an older apiserver), spec.clusterIP if
// it is of the family.
func clusterIPOf(svc *corev1.Service, family corev1.IPFamily) (netip.Addr, bool) {
	if len(svc.Spec.IPFamilies) == 0 {
		a, ok := parseIP(svc.Spec.ClusterIP)
		if ok && familyOf(a) == family {
			return a, true
		}
		return netip.Addr{}, false
	}
	for i, f := range svc.Spec.IPFamilies {
		if f == family && i < len(svc.Spec.ClusterIPs) {
			a, ok := parseIP(svc.Spec.ClusterIPs[i])
			if ok && familyOf(a) == family {
				return a, true
			}
		}
	}
	return netip.Addr{}, false
}

// ipsOf returns the valid addresses of family among ss.
func ipsOf(ss []string, family corev1.IPFamily) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		if a, ok := parseIP(s); ok && familyOf(a) == family {
			out = append(out, a)
		}
	}
	return out
}

// loadBalancerIPs returns the VIP-mode ingress IPs of family: an ingress
// in Proxy mode is reached through the load balancer, which kube-proxy
// leaves alone too.
func loadBalancerIPs(svc *corev1.Service, family corev1.IPFamily) []netip.Addr {
	var out []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IPMode != nil && *ing.IPMode != corev1.LoadBalancerIPModeVIP {
			continue
		}
		if a, ok := parseIP(ing.IP); ok && familyOf(a) == family {
			out = append(out, a)
		}
	}
	return out
}

// sourceRanges returns spec.loadBalancerSourceRanges of family; a
// zero-length prefix allows every client, which is the empty list.
func sourceRanges(svc *corev1.Service, family corev1.IPFamily) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range svc.Spec.LoadBalancerSourceRanges {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			continue
		}
		p = p.Masked()
		if familyOf(p.Addr()) != family {
			continue
		}
		if p.Bits() == 0 {
			return nil
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return slices.Compact(out)
}

// protocolOf maps a Service protocol; false for one Weir does not proxy.
func protocolOf(p corev1.Protocol) (pipeline.Protocol, bool) {
	switch p {
	case corev1.ProtocolTCP, "":
		return pipeline.ProtocolTCP, true
	case corev1.ProtocolUDP:
		return pipeline.ProtocolUDP, true
	case corev1.ProtocolSCTP:
		return pipeline.ProtocolSCTP, true
	}
	return 0, false
}

// externalPolicyLocal is kube-proxy's ExternalPolicyLocal: the Service
// takes external traffic at all and its externalTrafficPolicy is Local.
func externalPolicyLocal(svc *corev1.Service) bool {
	accessible := svc.Spec.Type == corev1.ServiceTypeLoadBalancer || svc.Spec.Type == corev1.ServiceTypeNodePort ||
		(svc.Spec.Type == corev1.ServiceTypeClusterIP && len(svc.Spec.ExternalIPs) > 0)
	return accessible && svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
}

func internalPolicyLocal(svc *corev1.Service) bool {
	return svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
}

// usableSlice says whether es carries endpoints of family for the proxy:
// of that address type (FQDN slices never), and not a headless Service's.
func usableSlice(es *discoveryv1.EndpointSlice, family corev1.IPFamily) bool {
	if _, ok := es.Labels[corev1.IsHeadlessService]; ok {
		return false
	}
	return string(es.AddressType) == string(family)
}

// endpointsFor collects the endpoints of the Service port named portName
// with protocol proto from the slices of family: the slice port of that
// name (and protocol) gives the target port number, so a named targetPort
// resolves per slice. Endpoints are deduplicated by address and port,
// preferring one that is not terminating (an address a terminating pod
// still holds may already be a new pod's), as kube-proxy does.
func endpointsFor(eslices []*discoveryv1.EndpointSlice, family corev1.IPFamily, portName string, proto corev1.Protocol, topo topology) []*endpoint {
	type key struct {
		ip   netip.Addr
		port uint16
	}
	var order []key
	byKey := map[key]*endpoint{}
	for _, es := range eslices {
		if !usableSlice(es, family) {
			continue
		}
		for _, sp := range es.Ports {
			if sp.Name == nil || *sp.Name != portName || sp.Port == nil || *sp.Port <= 0 || *sp.Port > 65535 {
				continue
			}
			// kube-proxy keys endpoints by port name and protocol; both
			// default to TCP in the API.
			got := corev1.ProtocolTCP
			if sp.Protocol != nil {
				got = cmp.Or(*sp.Protocol, corev1.ProtocolTCP)
			}
			if got != cmp.Or(proto, corev1.ProtocolTCP) {
				continue
			}
			for i := range es.Endpoints {
				ep := &es.Endpoints[i]
				if len(ep.Addresses) == 0 {
					continue
				}
				ip, ok := parseIP(ep.Addresses[0])
				if !ok || familyOf(ip) != family {
					continue
				}
				c := ep.Conditions
				e := &endpoint{
					ip: ip, port: uint16(*sp.Port),
					local:       topo.node != "" && ep.NodeName != nil && *ep.NodeName == topo.node,
					ready:       c.Ready == nil || *c.Ready,
					serving:     c.Serving == nil || *c.Serving,
					terminating: c.Terminating != nil && *c.Terminating,
				}
				if h := ep.Hints; h != nil {
					for _, z := range h.ForZones {
						e.zones = append(e.zones, z.Name)
					}
					for _, n := range h.ForNodes {
						e.nodes = append(e.nodes, n.Name)
					}
				}
				k := key{ip, e.port}
				if _, seen := byKey[k]; !seen {
					order = append(order, k)
					byKey[k] = e
				} else if !e.terminating {
					byKey[k] = e
				}
			}
		}
	}
	out := make([]*endpoint, 0, len(order))
	for _, k := range order {
		out = append(out, byKey[k])
	}
	slices.SortFunc(out, func(a, b *endpoint) int {
		return cmp.Or(a.ip.Compare(b.ip), cmp.Compare(a.port, b.port))
	})
	return out
}

// Topology modes of topologyMode.
const (
	topoNone = iota
	topoSameZone
	topoSameNode
)

// topologyMode decides whether cluster traffic follows the hints, as
// kube-proxy's topologyModeFromHints: by node when every ready endpoint
// has a node hint and one names this node; else by zone when every ready
// endpoint has a zone hint and one names this node's zone; else not at
// all. Hints are all or nothing, so that a partly hinted slice (the
// EndpointSlice controller mid-update) does not overload the hinted ones.
func topologyMode(eps []*endpoint, topo topology) int {
	anyReady, allNode, forNode, allZone, forZone := false, true, false, true, false
	for _, e := range eps {
		if !e.ready {
			continue
		}
		anyReady = true
		if len(e.nodes) == 0 {
			allNode = false
		} else if slices.Contains(e.nodes, topo.node) {
			forNode = true
		}
		if len(e.zones) == 0 {
			allZone = false
		} else if slices.Contains(e.zones, topo.zone) {
			forZone = true
		}
	}
	switch {
	case !anyReady:
		return topoNone
	case allNode && forNode:
		return topoSameNode
	case allZone && forZone:
		return topoSameZone
	}
	return topoNone
}

func availableFor(e *endpoint, mode int, topo topology) bool {
	switch mode {
	case topoSameNode:
		return slices.Contains(e.nodes, topo.node)
	case topoSameZone:
		return slices.Contains(e.zones, topo.zone)
	}
	return true
}

func filter(eps []*endpoint, keep func(*endpoint) bool) []pipeline.ServiceEndpoint {
	var out []pipeline.ServiceEndpoint
	for _, e := range eps {
		if keep(e) {
			out = append(out, e.model())
		}
	}
	return out
}

// categorize splits eps as kube-proxy's CategorizeEndpoints: the endpoints
// of the Cluster policy (ready ones, by topology; else serving and
// terminating ones anywhere) when usesCluster, and those of the Local
// policy (this node's ready ones, else its serving and terminating ones)
// when usesLocal. The fallback to terminating endpoints is decided for
// each list on its own.
func categorize(eps []*endpoint, topo topology, usesCluster, usesLocal bool) (cluster, local []pipeline.ServiceEndpoint) {
	if usesCluster {
		mode := topologyMode(eps, topo)
		cluster = filter(eps, func(e *endpoint) bool { return e.ready && availableFor(e, mode, topo) })
		if len(cluster) == 0 {
			// Topology never leaves this empty while a ready endpoint
			// exists (topologyMode then chose a mode with one), so none is
			// ready anywhere.
			cluster = filter(eps, func(e *endpoint) bool { return e.serving && e.terminating })
		}
	}
	if usesLocal {
		local = filter(eps, func(e *endpoint) bool { return e.local && e.ready })
		if len(local) == 0 {
			local = filter(eps, func(e *endpoint) bool { return e.local && e.serving && e.terminating })
		}
	}
	return cluster, local
}

// computeService computes svc's ServicePorts for the families the node
// serves, from the EndpointSlices labelled with its name (slices of other
// families and headless ones are ignored here), and its health check.
func computeService(svc *corev1.Service, eslices []*discoveryv1.EndpointSlice, families []corev1.IPFamily, topo topology) serviceState {
	st := serviceState{ports: map[string]pipeline.ServicePort{}}
	if svc == nil || skipService(svc) {
		return st
	}
	eLocal, iLocal := externalPolicyLocal(svc), internalPolicyLocal(svc)
	var affinity time.Duration
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		affinity = DefaultAffinityTimeout
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil && *c.ClientIP.TimeoutSeconds > 0 {
			affinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}
	needsHC := svc.Spec.Type == corev1.ServiceTypeLoadBalancer && eLocal &&
		svc.Spec.HealthCheckNodePort > 0 && svc.Spec.HealthCheckNodePort <= 65535
	if needsHC {
		st.hc = healthCheck{port: uint16(svc.Spec.HealthCheckNodePort), local: map[corev1.IPFamily]int{}}
	}
	for _, family := range families {
		clusterIP, ok := clusterIPOf(svc, family)
		if !ok {
			// kube-proxy too serves no frontend of a family the Service
			// has no cluster IP of, not even its NodePort.
			continue
		}
		externalIPs := ipsOf(svc.Spec.ExternalIPs, family)
		lbIPs := loadBalancerIPs(svc, family)
		ranges := sourceRanges(svc, family)
		for _, sp := range svc.Spec.Ports {
			proto, ok := protocolOf(sp.Protocol)
			if !ok || sp.Port <= 0 || sp.Port > 65535 {
				continue
			}
			port := uint16(sp.Port)
			fes := []pipeline.ServiceFrontend{{Kind: pipeline.KindClusterIP, IP: clusterIP, Port: port, Protocol: proto}}
			if sp.NodePort > 0 && sp.NodePort <= 65535 {
				fes = append(fes, pipeline.ServiceFrontend{Kind: pipeline.KindNodePort, Port: uint16(sp.NodePort), Protocol: proto})
			}
			for _, ip := range externalIPs {
				fes = append(fes, pipeline.ServiceFrontend{Kind: pipeline.KindExternalIP, IP: ip, Port: port, Protocol: proto})
			}
			for _, ip := range lbIPs {
				fes = append(fes, pipeline.ServiceFrontend{Kind: pipeline.KindLoadBalancer, IP: ip, Port: port, Protocol: proto})
			}
			slices.SortFunc(fes, func(a, b pipeline.ServiceFrontend) int {
				return cmp.Or(cmp.Compare(a.Kind, b.Kind), a.IP.Compare(b.IP))
			})
			fes = slices.Compact(fes)

			// As kube-proxy's ServicePort: external traffic exists per
			// family (a NodePort, or an external or ingress IP of it).
			accessible := sp.NodePort > 0 || len(externalIPs) > 0 || len(lbIPs) > 0
			usesCluster := !iLocal || accessible
			usesLocal := iLocal || (eLocal && accessible)
			eps := endpointsFor(eslices, family, sp.Name, sp.Protocol, topo)
			cluster, local := categorize(eps, topo, usesCluster, usesLocal)

			p := pipeline.ServicePort{
				Key:             portKey(svc.Namespace, svc.Name, sp.Name, family),
				Frontends:       fes,
				AffinityTimeout: affinity,
				HasEndpoints: slices.ContainsFunc(eps, func(e *endpoint) bool {
					return e.ready || (e.serving && e.terminating)
				}),
			}
			if iLocal {
				p.ClusterEndpoints = local
			} else {
				p.ClusterEndpoints = cluster
			}
			switch {
			case accessible && eLocal:
				p.ExternalEndpoints, p.ExternalLocal = nonNil(local), true
			case accessible && iLocal:
				p.ExternalEndpoints = nonNil(cluster)
			}
			if len(lbIPs) > 0 {
				p.LoadBalancerSourceRanges = ranges
			}
			st.ports[p.Key] = p
		}
		if needsHC {
			st.hc.local[family] = localReady(eslices, family, topo)
		}
	}
	return st
}

// localReady counts the distinct addresses of family of this node's ready
// endpoints in the slices, as kube-proxy's LocalReadyEndpoints: a node
// with only terminating local endpoints fails the health check, so load
// balancers drain it.
func localReady(eslices []*discoveryv1.EndpointSlice, family corev1.IPFamily, topo topology) int {
	seen := map[netip.Addr]bool{}
	for _, es := range eslices {
		if !usableSlice(es, family) || !slices.ContainsFunc(es.Ports, func(p discoveryv1.EndpointPort) bool {
			return p.Name != nil && p.Port != nil && *p.Port > 0
		}) {
			continue
		}
		for _, ep := range es.Endpoints {
			if len(ep.Addresses) == 0 || ep.NodeName == nil || *ep.NodeName != topo.node || topo.node == "" {
				continue
			}
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			if ip, ok := parseIP(ep.Addresses[0]); ok && familyOf(ip) == family {
				seen[ip] = true
			}
		}
	}
	return len(seen)
}

func nonNil(eps []pipeline.ServiceEndpoint) []pipeline.ServiceEndpoint {
	if eps == nil {
		return []pipeline.ServiceEndpoint{}
	}
	return eps
}

// equalPort says whether a and b realize the same; ExternalEndpoints nil
// and empty differ (Cluster policy vs. reject).
func equalPort(a, b pipeline.ServicePort) bool {
	return a.Key == b.Key && a.ExternalLocal == b.ExternalLocal && a.HasEndpoints == b.HasEndpoints &&
		a.AffinityTimeout == b.AffinityTimeout &&
		(a.ExternalEndpoints == nil) == (b.ExternalEndpoints == nil) &&
		slices.Equal(a.Frontends, b.Frontends) && slices.Equal(a.ClusterEndpoints, b.ClusterEndpoints) &&
		slices.Equal(a.ExternalEndpoints, b.ExternalEndpoints) &&
		slices.Equal(a.LoadBalancerSourceRanges, b.LoadBalancerSourceRanges)
}

// clonePort copies p's slices, so a snapshot handed out cannot be changed
// under the controller.
func clonePort(p pipeline.ServicePort) pipeline.ServicePort {
	p.Frontends = slices.Clone(p.Frontends)
	p.ClusterEndpoints = slices.Clone(p.ClusterEndpoints)
	if p.ExternalEndpoints != nil {
		p.ExternalEndpoints = append([]pipeline.ServiceEndpoint{}, p.ExternalEndpoints...)
	}
	p.LoadBalancerSourceRanges = slices.Clone(p.LoadBalancerSourceRanges)
	return p
}
