// Package kubecache owns what the agent keeps of the cluster's objects: it
// builds the agent's one shared informer factory (NewFactory) and the
// transform that slims every object before it enters an informer's cache
// (Transform). Each informer has exactly one transform, set by the factory
// when it creates the informer, so the controllers sharing an informer (the
// Pod informer feeds both the policy model and the Pod controller) cannot
// disagree about what is kept: the fields here are the union of what every
// reader needs, and a new reader of a field must add it here.
//
// Why: every agent watches every Pod and Node of the cluster (issue 12:
// 30,000 pods and 1,000 nodes). A full Pod is several KiB (managedFields,
// the whole spec and status); the slim Pod keeps its identity, labels, node,
// IPs and named ports. A Node carries its images, conditions and
// managedFields; a peer needs only its pod CIDR and addresses. The Service
// proxy (issue 14: 10,000 Services of 10 endpoints each) keeps the fields
// of Services and EndpointSlices it computes load balancing from; an
// EndpointSlice loses, above all, each endpoint's targetRef and hostname.
package kubecache

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
)

// MirrorPodAnnotation is set by the kubelet on the API object of a static
// pod; its value is the static pod's UID, which the runtime passes to CNI
// as K8S_POD_UID (the mirror object's own UID differs). The Pod controller
// compares it, so the slim Pod keeps it.
const MirrorPodAnnotation = "kubernetes.io/config.mirror"

// NewFactory returns a shared informer factory on client, without periodic
// resync, whose every informer slims its objects with Transform.
func NewFactory(client kubernetes.Interface, opts ...informers.SharedInformerOption) informers.SharedInformerFactory {
	opts = append([]informers.SharedInformerOption{informers.WithTransform(Transform)}, opts...)
	return informers.NewSharedInformerFactoryWithOptions(client, 0, opts...)
}

// Labels and annotations of Services and EndpointSlices the Service proxy
// (pkg/proxy) reads.
const (
	// ServiceProxyNameLabel on a Service names the proxy that serves it
	// instead of the default one; such Services are not Weir's (kube-proxy
	// skips them too).
	ServiceProxyNameLabel = "service.kubernetes.io/service-proxy-name"
	// EndpointsLastChangeTriggerTime on an EndpointSlice is when the change
	// it reflects happened (the start of kube-proxy's network programming
	// latency); kept for measuring the same latency.
	EndpointsLastChangeTriggerTime = corev1.EndpointsLastChangeTriggerTime
)

// Transform is the informers' transform (cache.TransformFunc): Pods,
// Nodes, Services and EndpointSlices are replaced by their slim copies
// (SlimPod, SlimNode, SlimService, SlimEndpointSlice); Namespaces and
// NetworkPolicies lose their managedFields (their readers use the rest);
// anything else (a tombstone) passes unchanged.
func Transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return SlimPod(o), nil
	case *corev1.Node:
		return SlimNode(o), nil
	case *corev1.Service:
		return SlimService(o), nil
	case *discoveryv1.EndpointSlice:
		return SlimEndpointSlice(o), nil
	case *corev1.Namespace:
		o.ManagedFields = nil
		return o, nil
	case *networkingv1.NetworkPolicy:
		o.ManagedFields = nil
		delete(o.Annotations, corev1.LastAppliedConfigAnnotation)
		return o, nil
	}
	return obj, nil
}

// SlimPod returns a copy of pod with only the fields its readers use:
//
//   - the policy model (pkg/policy newPodInfo): namespace, name, labels,
//     spec.nodeName, spec.hostNetwork, status.phase, status.podIP(s), and
//     the named ports of each container (the model ignores unnamed ones);
//   - the Pod controller (pkg/agent staleAgainst): UID, spec.nodeName and
//     the mirror-pod annotation; deletionTimestamp for its logs;
//   - the informer: resourceVersion.
func SlimPod(pod *corev1.Pod) *corev1.Pod {
	slim := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, Labels: pod.Labels,
			ResourceVersion: pod.ResourceVersion, DeletionTimestamp: pod.DeletionTimestamp},
		Spec:   corev1.PodSpec{NodeName: pod.Spec.NodeName, HostNetwork: pod.Spec.HostNetwork},
		Status: corev1.PodStatus{Phase: pod.Status.Phase, PodIP: pod.Status.PodIP, PodIPs: pod.Status.PodIPs},
	}
	if v, ok := pod.Annotations[MirrorPodAnnotation]; ok {
		slim.Annotations = map[string]string{MirrorPodAnnotation: v}
	}
	for _, ct := range pod.Spec.Containers {
		var ports []corev1.ContainerPort
		for _, p := range ct.Ports {
			if p.Name != "" {
				ports = append(ports, corev1.ContainerPort{Name: p.Name, Protocol: p.Protocol, ContainerPort: p.ContainerPort})
			}
		}
		if ports != nil {
			slim.Spec.Containers = append(slim.Spec.Containers, corev1.Container{Name: ct.Name, Ports: ports})
		}
	}
	return slim
}

// SlimNode returns a copy of node with only the fields its readers use: the
// Node controller (pkg/agent: peerFromNode, peerFieldsChanged,
// collectGarbage, noteLocal) reads the name, spec.podCIDR(s) and
// status.addresses; the informer needs resourceVersion. Dropped: labels,
// annotations, managedFields, taints, and all of status but the addresses
// (conditions, images, nodeInfo, capacity), which is also what changes at
// every kubelet heartbeat.
func SlimNode(node *corev1.Node) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: node.Name, UID: node.UID, ResourceVersion: node.ResourceVersion,
			DeletionTimestamp: node.DeletionTimestamp},
		Spec:   corev1.NodeSpec{PodCIDR: node.Spec.PodCIDR, PodCIDRs: node.Spec.PodCIDRs},
		Status: corev1.NodeStatus{Addresses: node.Status.Addresses},
	}
}

// SlimService returns a copy of svc with only the fields the Service proxy
// (pkg/proxy computeService) reads: identity, the service-proxy-name and
// headless labels, the spec's type, cluster IPs and families, ports (name,
// protocol, port, node port: the target port comes resolved in the
// EndpointSlices), external IPs, session affinity, traffic policies,
// health check node port and load balancer source ranges, and the load
// balancer ingress IPs of the status. Dropped: managedFields, annotations
// (kubectl's last-applied copy of the whole object), the selector, other
// labels.
func SlimService(svc *corev1.Service) *corev1.Service {
	slim := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, UID: svc.UID,
			ResourceVersion: svc.ResourceVersion, DeletionTimestamp: svc.DeletionTimestamp,
			Labels: keepLabels(svc.Labels, ServiceProxyNameLabel, corev1.IsHeadlessService)},
		Spec: corev1.ServiceSpec{
			Type: svc.Spec.Type, ClusterIP: svc.Spec.ClusterIP, ClusterIPs: svc.Spec.ClusterIPs, IPFamilies: svc.Spec.IPFamilies,
			ExternalIPs: svc.Spec.ExternalIPs, SessionAffinity: svc.Spec.SessionAffinity,
			SessionAffinityConfig: svc.Spec.SessionAffinityConfig, ExternalTrafficPolicy: svc.Spec.ExternalTrafficPolicy,
			InternalTrafficPolicy: svc.Spec.InternalTrafficPolicy, HealthCheckNodePort: svc.Spec.HealthCheckNodePort,
			LoadBalancerSourceRanges: svc.Spec.LoadBalancerSourceRanges,
		},
	}
	if svc.Spec.Ports != nil {
		slim.Spec.Ports = make([]corev1.ServicePort, len(svc.Spec.Ports))
		for i, p := range svc.Spec.Ports {
			slim.Spec.Ports[i] = corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port, NodePort: p.NodePort}
		}
	}
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP != "" {
			slim.Status.LoadBalancer.Ingress = append(slim.Status.LoadBalancer.Ingress,
				corev1.LoadBalancerIngress{IP: ing.IP, IPMode: ing.IPMode})
		}
	}
	return slim
}

// SlimEndpointSlice returns a copy of es with only the fields the Service
// proxy reads: identity, the service-name and headless labels, the
// last-change-trigger-time annotation, the address type, the ports, and of
// each endpoint its first address (the addresses of an endpoint are
// fungible; kube-proxy uses the first), conditions, node name and hints.
// Dropped: managedFields, other labels and annotations, and each
// endpoint's targetRef, hostname, zone and deprecatedTopology.
func SlimEndpointSlice(es *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	slim := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: es.Name, Namespace: es.Namespace, UID: es.UID,
			ResourceVersion: es.ResourceVersion, DeletionTimestamp: es.DeletionTimestamp,
			Labels: keepLabels(es.Labels, discoveryv1.LabelServiceName, corev1.IsHeadlessService)},
		AddressType: es.AddressType,
		Ports:       es.Ports,
	}
	if v, ok := es.Annotations[EndpointsLastChangeTriggerTime]; ok {
		slim.Annotations = map[string]string{EndpointsLastChangeTriggerTime: v}
	}
	if es.Endpoints != nil {
		slim.Endpoints = make([]discoveryv1.Endpoint, len(es.Endpoints))
		for i, ep := range es.Endpoints {
			s := discoveryv1.Endpoint{Conditions: ep.Conditions, NodeName: ep.NodeName, Hints: ep.Hints}
			if len(ep.Addresses) > 0 {
				s.Addresses = []string{ep.Addresses[0]}
			}
			slim.Endpoints[i] = s
		}
	}
	return slim
}

// keepLabels returns the labels of keys that are set, nil if none is.
func keepLabels(labels map[string]string, keys ...string) map[string]string {
	var out map[string]string
	for _, k := range keys {
		if v, ok := labels[k]; ok {
			if out == nil {
				out = make(map[string]string, len(keys))
			}
			out[k] = v
		}
	}
	return out
}
