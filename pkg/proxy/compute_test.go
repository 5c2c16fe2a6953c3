package proxy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weirnet/weir/pkg/kubecache"
	"github.com/weirnet/weir/pkg/pipeline"
)

const (
	v4 = corev1.IPv4Protocol
	v6 = corev1.IPv6Protocol
)

// The node under test is "me" in zone "z1".
var me = topology{node: "me", zone: "z1"}

// svc returns Service default/web: ClusterIP 10.96.0.10, port http 80/TCP,
// changed by mods.
func svc(mods ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10",
			ClusterIPs: []string{"10.96.0.10"}, IPFamilies: []corev1.IPFamily{v4},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func dualStack(s *corev1.Service) {
	s.Spec.ClusterIPs = []string{"10.96.0.10", "fd00:96::10"}
	s.Spec.IPFamilies = []corev1.IPFamily{v4, v6}
}

func nodePort(s *corev1.Service) {
	s.Spec.Type = corev1.ServiceTypeNodePort
	s.Spec.Ports[0].NodePort = 30080
}

func eTPLocal(s *corev1.Service) {
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
}

func iTPLocal(s *corev1.Service) {
	p := corev1.ServiceInternalTrafficPolicyLocal
	s.Spec.InternalTrafficPolicy = &p
}

// es returns an EndpointSlice of default/web.
func es(name string, family discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: family, Ports: ports, Endpoints: eps,
	}
}

func port(name string, num int32, proto corev1.Protocol) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: &name, Port: &num, Protocol: &proto}
}

var httpPort = []discoveryv1.EndpointPort{port("http", 8080, corev1.ProtocolTCP)}

// ep returns a ready endpoint on node; mods change it.
func ep(addr, node string, mods ...func(*discoveryv1.Endpoint)) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{addr}, NodeName: &node,
		Conditions: discoveryv1.EndpointConditions{Ready: new(true), Serving: new(true), Terminating: new(false)}}
	for _, m := range mods {
		m(&e)
	}
	return e
}

func notReady(e *discoveryv1.Endpoint) {
	e.Conditions.Ready = new(false)
	e.Conditions.Serving = new(false)
}

// terminating: serving but terminating (ready is false while terminating).
func terminating(e *discoveryv1.Endpoint) {
	e.Conditions.Ready, e.Conditions.Serving, e.Conditions.Terminating = new(false), new(true), new(true)
}

func terminatingNotServing(e *discoveryv1.Endpoint) {
	e.Conditions.Ready, e.Conditions.Serving, e.Conditions.Terminating = new(false), new(false), new(true)
}

func zones(zs ...string) func(*discoveryv1.Endpoint) {
	return func(e *discoveryv1.Endpoint) {
		if e.Hints == nil {
			e.Hints = &discoveryv1.EndpointHints{}
		}
		for _, z := range zs {
			e.Hints.ForZones = append(e.Hints.ForZones, discoveryv1.ForZone{Name: z})
		}
	}
}

func nodes(ns ...string) func(*discoveryv1.Endpoint) {
	return func(e *discoveryv1.Endpoint) {
		if e.Hints == nil {
			e.Hints = &discoveryv1.EndpointHints{}
		}
		for _, n := range ns {
			e.Hints.ForNodes = append(e.Hints.ForNodes, discoveryv1.ForNode{Name: n})
		}
	}
}

// render prints a ServicePort on one line with every field: frontends
// as kind:ip:port/proto (* for every node address), endpoints as ip:port
// with L for local, ext=- for nil ExternalEndpoints.
func render(p pipeline.ServicePort) string {
	var b strings.Builder
	b.WriteString(p.Key + " fe=")
	for i, f := range p.Frontends {
		if i > 0 {
			b.WriteByte(',')
		}
		ip := "*"
		if f.IP.IsValid() {
			ip = f.IP.String()
		}
		fmt.Fprintf(&b, "%s:%s:%d/%d", f.Kind, ip, f.Port, f.Protocol)
	}
	eps := func(es []pipeline.ServiceEndpoint) string {
		if es == nil {
			return "-"
		}
		var ss []string
		for _, e := range es {
			s := netip.AddrPortFrom(e.IP, e.Port).String()
			if e.Local {
				s += "L"
			}
			if e.Weight != 0 {
				s += fmt.Sprintf("w%d", e.Weight)
			}
			ss = append(ss, s)
		}
		return "[" + strings.Join(ss, ",") + "]"
	}
	cl := eps(p.ClusterEndpoints)
	if p.ClusterEndpoints == nil {
		cl = "[]" // nil and empty ClusterEndpoints mean the same
	}
	fmt.Fprintf(&b, " cl=%s ext=%s", cl, eps(p.ExternalEndpoints))
	if p.ExternalLocal {
		b.WriteString(" extlocal")
	}
	if !p.HasEndpoints {
		b.WriteString(" none")
	}
	if p.AffinityTimeout != 0 {
		fmt.Fprintf(&b, " affinity=%s", p.AffinityTimeout)
	}
	if len(p.LoadBalancerSourceRanges) > 0 {
		fmt.Fprintf(&b, " src=%v", p.LoadBalancerSourceRanges)
	}
	return b.String()
}

func renderState(st serviceState) []string {
	var out []string
	for _, p := range st.ports {
		out = append(out, render(p))
	}
	slices.Sort(out)
	if st.hc.port != 0 {
		h := fmt.Sprintf("hc=%d", st.hc.port)
		for _, f := range []corev1.IPFamily{v4, v6} {
			if n, ok := st.hc.local[f]; ok {
				h += fmt.Sprintf(" %s:%d", f, n)
			}
		}
		out = append(out, h)
	}
	return out
}

func TestComputeService(t *testing.T) {
	both := []corev1.IPFamily{v4, v6}
	v4Slice := func(eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
		return es("web-v4", discoveryv1.AddressTypeIPv4, httpPort, eps...)
	}
	tests := []struct {
		name     string
		svc      *corev1.Service
		slices   []*discoveryv1.EndpointSlice
		families []corev1.IPFamily // nil: both
		topo     *topology         // nil: me
		want     []string
	}{
		{
			name:   "ClusterIP, ready endpoints local and remote, sorted",
			svc:    svc(),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.2.5", "other"), ep("10.244.1.5", "me"))},
			want:   []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080L,10.244.2.5:8080] ext=-"},
		},
		{
			name:   "no EndpointSlice: the ClusterIP rejects",
			svc:    svc(),
			slices: nil,
			want:   []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[] ext=- none"},
		},
		{
			name: "deleted Service: nothing",
			svc:  nil,
			want: nil,
		},
		{
			name: "dual-stack: one ServicePort per family, endpoints by address type",
			svc:  svc(dualStack),
			slices: []*discoveryv1.EndpointSlice{
				v4Slice(ep("10.244.1.5", "me")),
				es("web-v6", discoveryv1.AddressTypeIPv6, httpPort, ep("fd00:244:1::5", "me"), ep("fd00:244:2::5", "other")),
			},
			want: []string{
				"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080L] ext=-",
				"default/web:http/IPv6 fe=ClusterIP:fd00:96::10:80/6 cl=[[fd00:244:1::5]:8080L,[fd00:244:2::5]:8080] ext=-",
			},
		},
		{
			name:     "dual-stack Service on an IPv4-only node: IPv4 only",
			svc:      svc(dualStack),
			slices:   []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.5", "me"))},
			families: []corev1.IPFamily{v4},
			want:     []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080L] ext=-"},
		},
		{
			name: "IPv6 single-stack Service: no IPv4 ServicePort, not even its NodePort",
			svc: svc(nodePort, func(s *corev1.Service) {
				s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Spec.IPFamilies = "fd00:96::10", []string{"fd00:96::10"}, []corev1.IPFamily{v6}
			}),
			slices: []*discoveryv1.EndpointSlice{
				v4Slice(ep("10.244.1.5", "me")), // a stray slice of the other family
				es("web-v6", discoveryv1.AddressTypeIPv6, httpPort, ep("fd00:244:1::5", "me")),
			},
			want: []string{"default/web:http/IPv6 fe=ClusterIP:fd00:96::10:80/6,NodePort:*:30080/6 cl=[[fd00:244:1::5]:8080L] ext=-"},
		},
		{
			name: "Service without ipFamilies (older apiserver): spec.clusterIP's family",
			svc: svc(func(s *corev1.Service) {
				s.Spec.ClusterIPs, s.Spec.IPFamilies = nil, nil
			}),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.5", "me"))},
			want:   []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080L] ext=-"},
		},
		{
			name: "named target ports: each slice port carries its number; ports matched by name and protocol",
			svc: svc(func(s *corev1.Service) {
				s.Spec.Ports = []corev1.ServicePort{
					{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
					{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
					{Name: "sig", Port: 3868, Protocol: corev1.ProtocolSCTP},
				}
			}),
			slices: []*discoveryv1.EndpointSlice{
				// Pods of an old version serve http on 8080, new ones on 8081.
				es("web-a", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{
					port("http", 8080, corev1.ProtocolTCP), port("dns", 5353, corev1.ProtocolUDP), port("sig", 3869, corev1.ProtocolSCTP),
					port("dns", 9999, corev1.ProtocolTCP), // same name, other protocol: not the dns port
				}, ep("10.244.1.5", "me")),
				es("web-b", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port("http", 8081, corev1.ProtocolTCP)},
					ep("10.244.2.6", "other")),
			},
			want: []string{
				"default/web:dns/IPv4 fe=ClusterIP:10.96.0.10:53/17 cl=[10.244.1.5:5353L] ext=-",
				"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080L,10.244.2.6:8081] ext=-",
				"default/web:sig/IPv4 fe=ClusterIP:10.96.0.10:3868/132 cl=[10.244.1.5:3869L] ext=-",
			},
		},
		{
			name: "unnamed single port; slice port without protocol is TCP; invalid ports and addresses ignored",
			svc:  svc(func(s *corev1.Service) { s.Spec.Ports[0].Name = "" }),
			slices: []*discoveryv1.EndpointSlice{
				es("web-a", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{{Name: new(""), Port: new(int32(8080))}},
					ep("10.244.1.5", "me"), ep("not-an-ip", "me"), discoveryv1.Endpoint{}),
				es("web-b", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{{Name: new(""), Port: new(int32(0))}, {Name: new("")}},
					ep("10.244.9.9", "me")),
			},
			want: []string{"default/web:/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080L] ext=-"},
		},
		{
			name: "an endpoint in two slices counts once; the copy not terminating wins",
			svc:  svc(),
			slices: []*discoveryv1.EndpointSlice{
				v4Slice(ep("10.244.1.5", "me"), ep("10.244.2.5", "me", terminating)),
				es("web-v4-b", discoveryv1.AddressTypeIPv4, httpPort, ep("10.244.1.5", "me"), ep("10.244.2.5", "other")),
			},
			want: []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080L,10.244.2.5:8080] ext=-"},
		},
		{
			name: "not ready and terminating endpoints are not used while one is ready; unset conditions mean ready",
			svc:  svc(),
			slices: []*discoveryv1.EndpointSlice{v4Slice(
				ep("10.244.1.1", "me", notReady), ep("10.244.1.2", "me", terminating),
				ep("10.244.1.3", "other", func(e *discoveryv1.Endpoint) { e.Conditions = discoveryv1.EndpointConditions{} }),
			)},
			want: []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.3:8080] ext=-"},
		},
		{
			name: "none ready: serving terminating endpoints as the fallback (not the non-serving ones)",
			svc:  svc(),
			slices: []*discoveryv1.EndpointSlice{v4Slice(
				ep("10.244.1.1", "me", notReady), ep("10.244.1.2", "me", terminating),
				ep("10.244.1.3", "other", terminatingNotServing), ep("10.244.1.4", "other", terminating),
				// Serving but neither ready nor terminating: not a fallback.
				ep("10.244.1.6", "other", func(e *discoveryv1.Endpoint) { e.Conditions.Ready = new(false) }),
			)},
			want: []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.2:8080L,10.244.1.4:8080] ext=-"},
		},
		{
			name:   "none ready, none serving: rejects",
			svc:    svc(),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.1", "me", notReady), ep("10.244.1.3", "other", terminatingNotServing))},
			want:   []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[] ext=- none"},
		},
		{
			name:   "internalTrafficPolicy Local: local endpoints only",
			svc:    svc(iTPLocal),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.5", "me"), ep("10.244.2.5", "other"))},
			want:   []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080L] ext=-"},
		},
		{
			name:   "internalTrafficPolicy Local without local endpoints: empty, but the Service has endpoints (drop, not reject)",
			svc:    svc(iTPLocal),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.2.5", "other"))},
			want:   []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[] ext=-"},
		},
		{
			name: "internalTrafficPolicy Local: the local fallback to terminating is its own (a remote one is ready)",
			svc:  svc(iTPLocal),
			slices: []*discoveryv1.EndpointSlice{v4Slice(
				ep("10.244.1.5", "me", terminating), ep("10.244.2.5", "other"))},
			want: []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080L] ext=-"},
		},
		{
			name:   "NodePort, externalTrafficPolicy Cluster: one list for all",
			svc:    svc(nodePort),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.5", "me"), ep("10.244.2.5", "other"))},
			want:   []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6,NodePort:*:30080/6 cl=[10.244.1.5:8080L,10.244.2.5:8080] ext=-"},
		},
		{
			name:   "NodePort, externalTrafficPolicy Local: external traffic to local endpoints, source kept",
			svc:    svc(nodePort, eTPLocal),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.5", "me"), ep("10.244.2.5", "other"))},
			want:   []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6,NodePort:*:30080/6 cl=[10.244.1.5:8080L,10.244.2.5:8080] ext=[10.244.1.5:8080L] extlocal"},
		},
		{
			name:   "externalTrafficPolicy Local without local endpoints: external list empty but not nil (drop on this node)",
			svc:    svc(nodePort, eTPLocal),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.2.5", "other"))},
			want:   []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6,NodePort:*:30080/6 cl=[10.244.2.5:8080] ext=[] extlocal"},
		},
		{
			name: "externalTrafficPolicy Local: only a terminating local endpoint is the local fallback",
			svc:  svc(nodePort, eTPLocal),
			slices: []*discoveryv1.EndpointSlice{v4Slice(
				ep("10.244.1.5", "me", terminating), ep("10.244.2.5", "other"))},
			want: []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6,NodePort:*:30080/6 cl=[10.244.2.5:8080] ext=[10.244.1.5:8080L] extlocal"},
		},
		{
			name:   "both traffic policies Local",
			svc:    svc(nodePort, eTPLocal, iTPLocal),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.5", "me"), ep("10.244.2.5", "other"))},
			want:   []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6,NodePort:*:30080/6 cl=[10.244.1.5:8080L] ext=[10.244.1.5:8080L] extlocal"},
		},
		{
			name:   "internalTrafficPolicy Local, external Cluster: external traffic to every endpoint",
			svc:    svc(nodePort, iTPLocal),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.5", "me"), ep("10.244.2.5", "other"))},
			want:   []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6,NodePort:*:30080/6 cl=[10.244.1.5:8080L] ext=[10.244.1.5:8080L,10.244.2.5:8080]"},
		},
		{
			name: "externalIPs of the family, deduplicated; source ranges only restrict load balancer IPs",
			svc: svc(dualStack, eTPLocal, func(s *corev1.Service) {
				s.Spec.ExternalIPs = []string{"192.0.2.2", "2001:db8::1", "192.0.2.1", "192.0.2.2"}
				s.Spec.LoadBalancerSourceRanges = []string{"198.51.100.0/24"}
			}),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.5", "me"))},
			want: []string{
				"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6,ExternalIP:192.0.2.1:80/6,ExternalIP:192.0.2.2:80/6 cl=[10.244.1.5:8080L] ext=[10.244.1.5:8080L] extlocal",
				"default/web:http/IPv6 fe=ClusterIP:fd00:96::10:80/6,ExternalIP:2001:db8::1:80/6 cl=[] ext=[] extlocal none",
			},
		},
		{
			name: "LoadBalancer: VIP-mode ingress IPs of the family, source ranges of the family",
			svc: svc(dualStack, nodePort, func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.LoadBalancerSourceRanges = []string{" 198.51.100.0/24", "2001:db8:100::/48", "203.0.113.9/32"}
				proxy := corev1.LoadBalancerIPModeProxy
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
					{IP: "203.0.113.7"}, {IP: "2001:db8::7", IPMode: new(corev1.LoadBalancerIPModeVIP)},
					{IP: "203.0.113.8", IPMode: &proxy}, {Hostname: "lb.example"},
				}
			}),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.5", "me"))},
			want: []string{
				"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6,NodePort:*:30080/6,LoadBalancer:203.0.113.7:80/6 cl=[10.244.1.5:8080L] ext=- src=[198.51.100.0/24 203.0.113.9/32]",
				"default/web:http/IPv6 fe=ClusterIP:fd00:96::10:80/6,NodePort:*:30080/6,LoadBalancer:2001:db8::7:80/6 cl=[] ext=- none src=[2001:db8:100::/48]",
			},
		},
		{
			name: "LoadBalancer source range 0.0.0.0/0 allows any client",
			svc: svc(nodePort, func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.LoadBalancerSourceRanges = []string{"198.51.100.0/24", "0.0.0.0/0"}
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}}
			}),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.5", "me"))},
			want:   []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6,NodePort:*:30080/6,LoadBalancer:203.0.113.7:80/6 cl=[10.244.1.5:8080L] ext=-"},
		},
		{
			name: "LoadBalancer with externalTrafficPolicy Local: health check node port with the local ready count per family",
			svc: svc(dualStack, nodePort, eTPLocal, func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.HealthCheckNodePort = 31000
				s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP, NodePort: 30443})
			}),
			slices: []*discoveryv1.EndpointSlice{es("web-v4", discoveryv1.AddressTypeIPv4,
				[]discoveryv1.EndpointPort{port("http", 8080, corev1.ProtocolTCP), port("https", 8443, corev1.ProtocolTCP)},
				// Two ready local pods (each counted once over both ports),
				// a terminating local one (not counted), a remote one.
				ep("10.244.1.5", "me"), ep("10.244.1.6", "me"), ep("10.244.1.7", "me", terminating), ep("10.244.2.5", "other"))},
			want: []string{
				"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6,NodePort:*:30080/6 cl=[10.244.1.5:8080L,10.244.1.6:8080L,10.244.2.5:8080] ext=[10.244.1.5:8080L,10.244.1.6:8080L] extlocal",
				"default/web:http/IPv6 fe=ClusterIP:fd00:96::10:80/6,NodePort:*:30080/6 cl=[] ext=[] extlocal none",
				"default/web:https/IPv4 fe=ClusterIP:10.96.0.10:443/6,NodePort:*:30443/6 cl=[10.244.1.5:8443L,10.244.1.6:8443L,10.244.2.5:8443] ext=[10.244.1.5:8443L,10.244.1.6:8443L] extlocal",
				"default/web:https/IPv6 fe=ClusterIP:fd00:96::10:443/6,NodePort:*:30443/6 cl=[] ext=[] extlocal none",
				"hc=31000 IPv4:2 IPv6:0",
			},
		},
		{
			name: "NodePort with externalTrafficPolicy Local has no health check (LoadBalancer only)",
			svc: svc(nodePort, eTPLocal, func(s *corev1.Service) {
				s.Spec.HealthCheckNodePort = 31000
			}),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.5", "me"))},
			want:   []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6,NodePort:*:30080/6 cl=[10.244.1.5:8080L] ext=[10.244.1.5:8080L] extlocal"},
		},
		{
			name:   "sessionAffinity ClientIP with its timeout",
			svc:    svc(affinity(new(int32(60)))),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.5", "me"))},
			want:   []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080L] ext=- affinity=1m0s"},
		},
		{
			name:   "sessionAffinity ClientIP without a timeout: 3h",
			svc:    svc(affinity(nil)),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.5", "me"))},
			want:   []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080L] ext=- affinity=3h0m0s"},
		},
		{
			name: "zone hints: every ready endpoint hinted, one for this zone",
			svc:  svc(),
			slices: []*discoveryv1.EndpointSlice{v4Slice(
				ep("10.244.1.5", "n2", zones("z1")), ep("10.244.2.5", "n3", zones("z2")), ep("10.244.3.5", "n4", zones("z1", "z3")),
				ep("10.244.4.5", "n5", notReady), // not ready: its missing hint does not count
			)},
			want: []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080,10.244.3.5:8080] ext=-"},
		},
		{
			name: "zone hints on, node without a zone label: hints ignored",
			svc:  svc(),
			topo: &topology{node: "me"},
			slices: []*discoveryv1.EndpointSlice{v4Slice(
				ep("10.244.1.5", "n2", zones("z1")), ep("10.244.2.5", "n3", zones("z2")))},
			want: []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080,10.244.2.5:8080] ext=-"},
		},
		{
			name: "zone hints on one endpoint only: ignored (all or nothing)",
			svc:  svc(),
			slices: []*discoveryv1.EndpointSlice{v4Slice(
				ep("10.244.1.5", "n2", zones("z1")), ep("10.244.2.5", "n3"))},
			want: []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080,10.244.2.5:8080] ext=-"},
		},
		{
			name: "zone hints, none for this zone: ignored",
			svc:  svc(),
			slices: []*discoveryv1.EndpointSlice{v4Slice(
				ep("10.244.1.5", "n2", zones("z2")), ep("10.244.2.5", "n3", zones("z3")))},
			want: []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080,10.244.2.5:8080] ext=-"},
		},
		{
			name: "node hints (PreferSameNode) win over zone hints",
			svc:  svc(),
			slices: []*discoveryv1.EndpointSlice{v4Slice(
				ep("10.244.1.5", "me", zones("z1"), nodes("me")), ep("10.244.2.5", "n3", zones("z1"), nodes("n3")))},
			want: []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080L] ext=-"},
		},
		{
			name: "node hints, none for this node: the zone hints apply",
			svc:  svc(),
			slices: []*discoveryv1.EndpointSlice{v4Slice(
				ep("10.244.1.5", "n2", zones("z1"), nodes("n2")), ep("10.244.2.5", "n3", zones("z2"), nodes("n3")))},
			want: []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080] ext=-"},
		},
		{
			name: "topology does not restrict the terminating fallback",
			svc:  svc(),
			slices: []*discoveryv1.EndpointSlice{v4Slice(
				ep("10.244.1.5", "n2", zones("z1"), terminating), ep("10.244.2.5", "n3", zones("z2"), terminating))},
			want: []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.1.5:8080,10.244.2.5:8080] ext=-"},
		},
		{
			name: "topology restricts cluster traffic, not externalTrafficPolicy Local's",
			svc:  svc(nodePort, eTPLocal),
			slices: []*discoveryv1.EndpointSlice{v4Slice(
				ep("10.244.1.5", "me", zones("z2")), ep("10.244.2.5", "n3", zones("z1")))},
			want: []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6,NodePort:*:30080/6 cl=[10.244.2.5:8080] ext=[10.244.1.5:8080L] extlocal"},
		},
		{
			name: "headless Service (clusterIP None): nothing",
			svc: svc(func(s *corev1.Service) {
				s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
			}),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.5", "me"))},
			want:   nil,
		},
		{
			name: "ExternalName Service: nothing",
			svc: svc(func(s *corev1.Service) {
				s.Spec.Type, s.Spec.ExternalName, s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ServiceTypeExternalName, "db.example", "", nil
			}),
			want: nil,
		},
		{
			name:   "service-proxy-name label: another proxy's Service",
			svc:    svc(func(s *corev1.Service) { s.Labels = map[string]string{kubecache.ServiceProxyNameLabel: "other-proxy"} }),
			slices: []*discoveryv1.EndpointSlice{v4Slice(ep("10.244.1.5", "me"))},
			want:   nil,
		},
		{
			name: "EndpointSlices labelled headless and FQDN slices are ignored",
			svc:  svc(),
			slices: []*discoveryv1.EndpointSlice{
				func() *discoveryv1.EndpointSlice {
					s := v4Slice(ep("10.244.1.5", "me"))
					s.Labels[corev1.IsHeadlessService] = ""
					return s
				}(),
				es("web-fqdn", discoveryv1.AddressTypeFQDN, httpPort, ep("db.example", "me")),
				es("web-v4-b", discoveryv1.AddressTypeIPv4, httpPort, ep("10.244.2.5", "other")),
			},
			want: []string{"default/web:http/IPv4 fe=ClusterIP:10.96.0.10:80/6 cl=[10.244.2.5:8080] ext=-"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fams := tt.families
			if fams == nil {
				fams = both
			}
			topo := me
			if tt.topo != nil {
				topo = *tt.topo
			}
			got := renderState(computeService(tt.svc, tt.slices, fams, topo))
			if !slices.Equal(got, tt.want) {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
		})
	}
}

func affinity(timeout *int32) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		if timeout != nil {
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: timeout}}
		}
	}
}

// TestEqualPort: the diff sends a ServicePort again for any change of any
// field, and tells a nil external list (Cluster policy) from an empty one
// (no local endpoint).
func TestEqualPort(t *testing.T) {
	base := pipeline.ServicePort{Key: "default/web:http/IPv4",
		Frontends:        []pipeline.ServiceFrontend{{Kind: pipeline.KindClusterIP, IP: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: pipeline.ProtocolTCP}},
		ClusterEndpoints: []pipeline.ServiceEndpoint{{IP: netip.MustParseAddr("10.244.1.5"), Port: 8080}}, HasEndpoints: true}
	if !equalPort(base, clonePort(base)) {
		t.Fatal("a clone differs")
	}
	for name, mod := range map[string]func(*pipeline.ServicePort){
		"frontend port":      func(p *pipeline.ServicePort) { p.Frontends[0].Port = 81 },
		"endpoint local":     func(p *pipeline.ServicePort) { p.ClusterEndpoints[0].Local = true },
		"endpoint weight":    func(p *pipeline.ServicePort) { p.ClusterEndpoints[0].Weight = 2 },
		"external nil→empty": func(p *pipeline.ServicePort) { p.ExternalEndpoints = []pipeline.ServiceEndpoint{} },
		"external local":     func(p *pipeline.ServicePort) { p.ExternalLocal = true },
		"has endpoints":      func(p *pipeline.ServicePort) { p.HasEndpoints = false },
		"affinity":           func(p *pipeline.ServicePort) { p.AffinityTimeout = time.Minute },
		"source ranges": func(p *pipeline.ServicePort) {
			p.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
		},
	} {
		p := clonePort(base)
		mod(&p)
		if equalPort(base, p) {
			t.Errorf("%s: change not seen", name)
		}
	}
}
