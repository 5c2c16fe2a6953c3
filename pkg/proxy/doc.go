// Package proxy is Weir's Service proxy controller: it watches Services and
// EndpointSlices (discovery.k8s.io/v1) through the agent's shared informer
// factory and computes, for every port of every Service and every IP family
// the node serves, a pipeline.ServicePort (the service model: frontends,
// the endpoints for cluster and for external traffic, session affinity),
// which a pipeline.ServiceRealizer turns into OVS select groups and
// ct(nat) flows.
//
// Which endpoints serve which traffic is decided here, the way kube-proxy
// decides it (k8s.io/kubernetes pkg/proxy, CategorizeEndpoints), so that
// the pipeline only realizes lists: ready endpoints, or the serving and
// terminating ones when none is ready; internalTrafficPolicy and
// externalTrafficPolicy Local restrict to this node's endpoints; topology
// hints (written by the EndpointSlice controller for trafficDistribution
// PreferClose / PreferSameZone / PreferSameNode and the topology-mode
// annotation) restrict cluster traffic to the endpoints hinted for this
// node or zone when every ready endpoint has a hint.
//
// The controller also serves the healthCheckNodePort of LoadBalancer
// Services with externalTrafficPolicy Local, as kube-proxy does: an HTTP
// server per port on the node answering 200 while the node has a ready
// local endpoint, 503 otherwise (healthcheck.go).
//
// docs/proxy.md ("Controller") describes the design.
package proxy
