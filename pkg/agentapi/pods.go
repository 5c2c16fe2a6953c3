package agentapi

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/pipeline"
)

// ipOf is i's IPv4 address, else its first address (nil if none): its
// IPv6 address on an IPv6-only node.
func ipOf(i interfacestore.Interface) net.IP {
	a, ok := i.IPv4()
	if !ok && len(i.IPs) > 0 {
		a, ok = i.IPs[0], true
	}
	if !ok {
		return nil
	}
	return net.IP(a.AsSlice())
}

// pod is one local pod interface with its OpenFlow port.
type pod struct {
	Namespace, Name string
	IfName          string
	PortName        string
	OFPort          uint32
	IP              net.IP       // IPv4, else the first address (IPv6-only pods)
	IPs             []netip.Addr // every address, IPv4 first
	MAC             net.HardwareAddr
	ContainerID     string
	NetNS           string
	UID             string
	Key             string
}

func (p pod) ref() string {
	if p.Name == "" {
		return p.Key
	}
	return p.Namespace + "/" + p.Name
}

func (p pod) localRef() *agentv1.LocalPodRef {
	r := &agentv1.LocalPodRef{Ip: ipString(p.IP), Ofport: p.OFPort}
	if p.Name != "" {
		r.Pod = &agentv1.PodRef{Namespace: p.Namespace, Name: p.Name}
	}
	return r
}

// node is a snapshot of the node's ports and pods.
type node struct {
	pods      []pod
	portNames map[uint32]string // ofport -> OVS port name
}

// snapshot reads the attachments and the bridge's ports.
func (s *Server) snapshot(ctx context.Context) (*node, error) {
	ports, err := s.deps.OVSDB.ListPorts(ctx, s.cfg.Bridge)
	if err != nil {
		return nil, internalError(ctx, "listing OVS ports", err)
	}
	n := &node{portNames: map[uint32]string{}}
	ofport := map[string]uint32{}
	for _, p := range ports {
		if p.OFPort > 0 {
			n.portNames[uint32(p.OFPort)] = p.Name
			ofport[p.Name] = uint32(p.OFPort)
		}
	}
	for _, a := range s.deps.Pods.List() {
		n.pods = append(n.pods, pod{Namespace: a.PodNamespace, Name: a.PodName, IfName: a.IfName, PortName: a.PortName,
			OFPort: ofport[a.PortName], IP: ipOf(a), IPs: slices.Clone(a.IPs), MAC: a.MAC, ContainerID: a.ContainerID, NetNS: a.NetNS, UID: a.PodUID, Key: a.Key()})
	}
	sort.Slice(n.pods, func(i, j int) bool {
		a, b := n.pods[i], n.pods[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Key < b.Key
	})
	return n, nil
}

// findPod returns the pod namespace/name (its eth0, else its first
// interface); NotFound if the node has none, InvalidArgument for an
// incomplete reference.
func (n *node) findPod(ref *agentv1.PodRef, what string) (pod, error) {
	if ref.GetName() == "" {
		return pod{}, status.Errorf(codes.InvalidArgument, "%s: pod name is required", what)
	}
	ns := ref.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	var found *pod
	for i := range n.pods {
		p := &n.pods[i]
		if p.Namespace == ns && p.Name == ref.GetName() && (found == nil || p.IfName == "eth0" && found.IfName != "eth0") {
			found = p
		}
	}
	if found == nil {
		return pod{}, status.Errorf(codes.NotFound, "%s: pod %s/%s has no interface on this node", what, ns, ref.GetName())
	}
	return *found, nil
}

// podByIP returns the local pod with ip.
func (n *node) podByIP(ip net.IP) (pod, bool) {
	for _, p := range n.pods {
		if p.hasIP(ip) {
			return p, true
		}
	}
	return pod{}, false
}

// hasIP reports whether ip is one of p's addresses (of either family).
func (p pod) hasIP(ip net.IP) bool {
	if ip == nil {
		return false
	}
	a, ok := netip.AddrFromSlice(ip)
	return p.IP.Equal(ip) || ok && slices.Contains(p.IPs, a.Unmap())
}

// podByOFPort returns the local pod on ofport.
func (n *node) podByOFPort(port uint32) (pod, bool) {
	for _, p := range n.pods {
		if p.OFPort == port && port != 0 {
			return p, true
		}
	}
	return pod{}, false
}

func (p pod) pipelineInterface() pipeline.PodInterface {
	return pipeline.PodInterface{Key: p.Key, OFPort: p.OFPort, IPs: p.IPs, MAC: p.MAC}
}

// ListPodInterfaces implements agentv1.AgentServiceServer.
func (s *Server) ListPodInterfaces(ctx context.Context, req *agentv1.ListPodInterfacesRequest) (*agentv1.ListPodInterfacesResponse, error) {
	n, err := s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	resp := &agentv1.ListPodInterfacesResponse{}
	for _, p := range n.pods {
		if req.GetNamespace() != "" && p.Namespace != req.GetNamespace() || req.GetPod() != "" && p.Name != req.GetPod() {
			continue
		}
		resp.Interfaces = append(resp.Interfaces, &agentv1.PodInterface{
			Pod: &agentv1.PodRef{Namespace: p.Namespace, Name: p.Name}, Ifname: p.IfName, OvsPortName: p.PortName,
			Ofport: p.OFPort, Ip: ipString(p.IP), Mac: macString(p.MAC), ContainerId: p.ContainerID, Netns: p.NetNS, PodUid: p.UID,
			Ips: addrStrings(p.IPs),
		})
	}
	if req.GetPod() != "" && len(resp.Interfaces) == 0 {
		return nil, status.Errorf(codes.NotFound, "pod %s/%s has no interface on this node", req.GetNamespace(), req.GetPod())
	}
	return resp, nil
}

// addrStrings formats addresses.
func addrStrings(addrs []netip.Addr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}
