package pipeline

import (
	"context"
	"net/netip"
	"time"
)

// This file is the seam between Service load-balancing computation (the
// agent's proxy controller, which knows Services and EndpointSlices) and
// its realization in OVS (this package: select groups and ct(nat) DNAT,
// proxy.go): the service model, plain data as the policy model is. The
// controller decides which endpoints serve which traffic (readiness,
// serving/terminating fallback, traffic policies, topology); the pipeline
// only realizes the lists it is given.

// ServiceKind says which traffic a frontend takes.
type ServiceKind uint8

const (
	// KindClusterIP is a ClusterIP (spec.clusterIPs), reached from pods
	// and the node.
	KindClusterIP ServiceKind = iota + 1
	// KindNodePort is a NodePort on every node address of the family
	// (ServiceFrontend.IP is the zero Addr) or on one of them.
	KindNodePort
	// KindExternalIP is one of spec.externalIPs.
	KindExternalIP
	// KindLoadBalancer is one of status.loadBalancer.ingress[].ip.
	KindLoadBalancer
)

func (k ServiceKind) String() string {
	switch k {
	case KindClusterIP:
		return "ClusterIP"
	case KindNodePort:
		return "NodePort"
	case KindExternalIP:
		return "ExternalIP"
	case KindLoadBalancer:
		return "LoadBalancer"
	}
	return "ServiceKind(?)"
}

// ServiceFrontend is one address, port and protocol a Service is reached
// at.
type ServiceFrontend struct {
	Kind ServiceKind
	// IP is the frontend address; the zero Addr for a NodePort on every
	// node address of the ServicePort's family.
	IP       netip.Addr
	Port     uint16
	Protocol Protocol
}

// ServiceEndpoint is one backend of a ServicePort: an address of the
// ServicePort's family and the target port resolved for it.
type ServiceEndpoint struct {
	IP   netip.Addr
	Port uint16
	// Local says the endpoint is a pod of this node.
	Local bool
	// Weight is the endpoint's select-group bucket weight; 0 means 1.
	Weight uint16
}

// ServicePort is one port of one Service in one family: the unit the
// pipeline realizes as one select group and its frontend flows. Changing
// the endpoints of a ServicePort touches only its group.
type ServicePort struct {
	// Key identifies the ServicePort: namespace/name:port-name/family,
	// e.g. "default/web:http/IPv4". Stable while the Service exists.
	Key       string
	Frontends []ServiceFrontend
	// ClusterEndpoints serve traffic to the ClusterIP (and to the other
	// frontends when ExternalEndpoints is nil): the controller has applied
	// readiness with the terminating fallback, internalTrafficPolicy and
	// topology. Empty means the Service rejects (TCP RST, ICMP port
	// unreachable) as kube-proxy does (but see HasEndpoints).
	ClusterEndpoints []ServiceEndpoint
	// ExternalEndpoints, when non-nil, serve the NodePort, ExternalIP and
	// LoadBalancer frontends instead (externalTrafficPolicy: Local: the
	// local endpoints only, and the client's source address is kept).
	// Empty non-nil rejects external traffic on this node. It is also
	// non-nil, with ExternalLocal false, when internalTrafficPolicy is
	// Local and externalTrafficPolicy Cluster: ClusterEndpoints then holds
	// the local endpoints only, and external traffic goes to every
	// cluster endpoint. (kube-proxy sends traffic from a local pod to an
	// external frontend to the cluster endpoints, as if it were internal,
	// "short-circuiting" eTP Local; ClusterEndpoints is that list unless
	// internalTrafficPolicy is Local too.)
	ExternalEndpoints []ServiceEndpoint
	// ExternalLocal says externalTrafficPolicy is Local: external traffic
	// is not masqueraded.
	ExternalLocal bool
	// HasEndpoints says the Service has usable endpoints somewhere in the
	// cluster (kube-proxy's hasEndpoints: a ready one, or a serving and
	// terminating one). An empty ClusterEndpoints or ExternalEndpoints
	// rejects only when it is false; when it is true the list is empty
	// because of a Local traffic policy, and kube-proxy drops that
	// traffic instead (a load balancer's health check moves its clients to
	// another node; a reject would tell them the Service is gone).
	HasEndpoints bool
	// AffinityTimeout, when non-zero, is sessionAffinity ClientIP's
	// timeout: a client keeps its endpoint for that long after its last
	// packet.
	AffinityTimeout time.Duration
	// LoadBalancerSourceRanges, when non-empty, are the only client
	// prefixes (of the ServicePort's family) the LoadBalancer frontends
	// accept (spec.loadBalancerSourceRanges); kube-proxy drops other
	// clients' traffic to them. Empty accepts any client (as does a
	// zero-length prefix in the spec, which the controller turns into
	// empty). The other frontends are not restricted.
	LoadBalancerSourceRanges []netip.Prefix
}

// ServiceRealizer is what the proxy controller needs from the pipeline (a
// *Pipeline). Each call is one atomic change on the switch.
type ServiceRealizer interface {
	// ApplyServices installs or replaces the given ServicePorts and
	// removes those named in deleted, in one bundle.
	ApplyServices(ctx context.Context, upserts []ServicePort, deleted []string) error
}
