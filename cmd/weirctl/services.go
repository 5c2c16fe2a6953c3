package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
)

func newGetServicesCommand(o *options) *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:   "services [-n NAMESPACE] [SERVICE | NAMESPACE/SERVICE]",
		Short: "The Service ports the agent's Service proxy realized: frontends, endpoints, select group and counters",
		Long: `services lists, per Service port and IP family, what the agent's Service
proxy realized in OVS: the frontends (ClusterIP, NodePort, ExternalIP,
LoadBalancer), the endpoints with their select-group bucket, and the group's
counters. A bucket's packets are the connections its endpoint got (only a
connection's first packet passes the group). On a node whose proxy is off
(proxyMode off) the agent answers FailedPrecondition.`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &agentv1.ListServicesRequest{Namespace: namespace}
			if len(args) == 1 {
				req.Name = args[0]
				if ns, name, ok := strings.Cut(args[0], "/"); ok {
					if ns == "" || name == "" || (namespace != "" && namespace != ns) {
						return usageErrorf("service %q: want SERVICE or NAMESPACE/SERVICE (matching -n)", args[0])
					}
					req.Namespace, req.Name = ns, name
				}
			}
			return o.call(cmd, func(ctx context.Context, c agentv1.AgentServiceClient) error {
				r, err := c.ListServices(ctx, req)
				if err != nil {
					return err
				}
				return o.printer().print(r, func(w io.Writer) { servicesTable(w, r) })
			})
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "only Services of this namespace")
	return cmd
}

// servicesTable prints one row per Service port, then one per endpoint
// with its bucket's counters.
func servicesTable(w io.Writer, r *agentv1.ListServicesResponse) {
	row(w, "NAMESPACE", "SERVICE", "PORT", "FAMILY", "FRONTENDS", "ENDPOINTS", "GROUP", "PACKETS", "BYTES")
	anyEndpoint := false
	for _, s := range r.GetServices() {
		var fronts []string
		for _, f := range s.GetFrontends() {
			fronts = append(fronts, frontend(f))
		}
		group := "-"
		if s.GetGroupId() != 0 {
			group = strconv.FormatUint(uint64(s.GetGroupId()), 10)
		}
		row(w, s.GetNamespace(), s.GetName(), s.GetPortName(), s.GetFamily(), strings.Join(fronts, ","), endpointCount(s), group,
			s.GetPacketCount(), s.GetByteCount())
		anyEndpoint = anyEndpoint || len(s.GetClusterEndpoints())+len(s.GetExternalEndpoints()) > 0
	}
	if anyEndpoint {
		fmt.Fprintln(w)
		row(w, "SERVICE PORT", "TRAFFIC", "ENDPOINT", "LOCAL", "WEIGHT", "BUCKET", "CONNECTIONS", "BYTES")
		for _, s := range r.GetServices() {
			for _, e := range s.GetClusterEndpoints() {
				row(w, s.GetKey(), "cluster", endpointAddr(e), yesNo(e.GetLocal()), e.GetWeight(), e.GetBucketId(), e.GetPacketCount(),
					e.GetByteCount())
			}
			for _, e := range s.GetExternalEndpoints() {
				row(w, s.GetKey(), "external", endpointAddr(e), yesNo(e.GetLocal()), e.GetWeight(), "-", "-", "-")
			}
		}
	}
	for _, n := range r.GetNotes() {
		fmt.Fprintf(w, "Note: %s\n", n)
	}
}

// frontend writes "ClusterIP 10.96.0.10:80/TCP"; a NodePort on every node
// address is "NodePort *:30080/TCP".
func frontend(f *agentv1.ServiceFrontend) string {
	addr := "*:" + strconv.FormatUint(uint64(f.GetPort()), 10)
	if f.GetIp() != "" {
		addr = net.JoinHostPort(f.GetIp(), strconv.FormatUint(uint64(f.GetPort()), 10))
	}
	return f.GetKind() + " " + addr + "/" + f.GetProtocol()
}

// endpointCount is the number of cluster endpoints, with why there are
// none, and the external ones when they differ.
func endpointCount(s *agentv1.ServicePort) string {
	n := strconv.Itoa(len(s.GetClusterEndpoints()))
	switch {
	case len(s.GetClusterEndpoints()) > 0:
	case !s.GetHasEndpoints():
		n += " (rejects)"
	default:
		n += " (drops: none local)"
	}
	if s.GetExternalEndpointsSet() {
		ext := fmt.Sprintf("%d external", len(s.GetExternalEndpoints()))
		if s.GetExternalLocal() {
			ext += " local"
		}
		n += ", " + ext
	}
	return n
}

func endpointAddr(e *agentv1.ServiceEndpoint) string {
	return net.JoinHostPort(e.GetIp(), strconv.FormatUint(uint64(e.GetPort()), 10))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
