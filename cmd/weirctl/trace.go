package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
)

func newTraceCommand(o *options) *cobra.Command {
	var from, to, proto, endpoint string
	var port, sport uint16
	cmd := &cobra.Command{
		Use:   "trace --from NS/POD|IP --to NS/POD|IP|node/NAME [--proto tcp|udp|icmp] [--port N] [--endpoint IP[:PORT]]",
		Short: "Trace a synthetic packet through this node's pipeline and explain its verdict",
		Long: `trace asks the agent to run a synthetic packet through ovs-vswitchd
(ofproto/trace, through conntrack) on the node it serves and prints the tables
it crossed and the verdict: output to a local port, into the tunnel to a peer
node, or dropped (and by which policy isolation).

--from is a local pod (NAMESPACE/NAME) or an IP (e.g. a pod on another node);
--to is a pod, an IP, or node/NAME for a peer node.

When --to is a Service frontend (a ClusterIP with --proto and --port) and the
agent's Service proxy is on, the trace follows the bucket of the Service's
select group that a hash of the traced packet picks and names the Service
and that endpoint; --endpoint IP[:PORT] follows that endpoint's bucket
instead (real connections are spread by the datapath's hash of each
connection).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := traceRequest(from, to, proto, port, sport)
			if err != nil {
				return err
			}
			if endpoint != "" {
				if req.DestinationIp == "" {
					return usageErrorf("--endpoint needs --to a Service frontend IP")
				}
				req.ServiceEndpoint = endpoint
			}
			return o.call(cmd, func(ctx context.Context, c agentv1.AgentServiceClient) error {
				r, err := c.Trace(ctx, req)
				if err != nil {
					return err
				}
				return o.printer().print(r, func(w io.Writer) { traceTable(w, r) })
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "source: NAMESPACE/POD (a pod on this node) or an IP")
	f.StringVar(&to, "to", "", "destination: NAMESPACE/POD, an IP, or node/NAME")
	f.StringVar(&proto, "proto", "icmp", "protocol: icmp, tcp or udp")
	f.Uint16Var(&port, "port", 0, "destination port (tcp, udp)")
	f.Uint16Var(&sport, "source-port", 0, "source port (tcp, udp; default chosen by the agent)")
	f.StringVar(&endpoint, "endpoint", "", "with --to a Service frontend: follow this endpoint's bucket (IP or IP:PORT)")
	return cmd
}

// traceRequest builds the request from the flags. An endpoint without a
// slash is passed on as an IP; the agent validates it.
func traceRequest(from, to, proto string, port, sport uint16) (*agentv1.TraceRequest, error) {
	if from == "" || to == "" {
		return nil, usageErrorf("trace needs --from and --to")
	}
	req := &agentv1.TraceRequest{Protocol: strings.ToLower(proto), DestinationPort: uint32(port), SourcePort: uint32(sport)}
	switch req.Protocol {
	case "icmp":
		if port != 0 || sport != 0 {
			return nil, usageErrorf("--port and --source-port need --proto tcp or udp")
		}
	case "tcp", "udp":
		if port == 0 {
			return nil, usageErrorf("--proto %s needs --port", req.Protocol)
		}
	default:
		return nil, usageErrorf("--proto %q: want icmp, tcp or udp", proto)
	}
	if strings.Contains(from, "/") {
		if strings.HasPrefix(from, "node/") {
			return nil, usageErrorf("--from %q: a source is a pod or an IP", from)
		}
		p, err := parsePodRef("--from", from)
		if err != nil {
			return nil, err
		}
		req.SourcePod = p
	} else {
		req.SourceIp = from
	}
	switch {
	case strings.HasPrefix(to, "node/"):
		req.DestinationNode = strings.TrimPrefix(to, "node/")
		if req.DestinationNode == "" {
			return nil, usageErrorf("--to %q: want node/NAME", to)
		}
	case strings.Contains(to, "/"):
		p, err := parsePodRef("--to", to)
		if err != nil {
			return nil, err
		}
		req.DestinationPod = p
	default:
		req.DestinationIp = to
	}
	return req, nil
}

// traceTable prints the trace: the packet, then per table crossed the
// matched flow, its actions (ofproto/trace's explanations, "-> ...", on lines
// of their own) and the agent's note, then the verdict.
func traceTable(w io.Writer, r *agentv1.TraceResponse) {
	fmt.Fprintf(w, "Flow:\t%s\n\n", r.GetFlow())
	recirculated := false
	for _, s := range r.GetSteps() {
		if s.GetAfterRecirculation() && !recirculated {
			recirculated = true
			fmt.Fprintln(w, "\t(recirculated after conntrack)")
		}
		table := s.GetTableName()
		if table == "" {
			table = fmt.Sprint(s.GetTableId())
		}
		fmt.Fprintf(w, "%s\t%s\n", table, s.GetFlow())
		var actions []string
		for _, a := range s.GetActions() {
			if strings.HasPrefix(a, "->") {
				if len(actions) > 0 {
					fmt.Fprintf(w, "\t    %s\n", strings.Join(actions, ","))
					actions = nil
				}
				fmt.Fprintf(w, "\t        %s\n", a)
				continue
			}
			actions = append(actions, a)
		}
		if len(actions) > 0 {
			fmt.Fprintf(w, "\t    %s\n", strings.Join(actions, ","))
		}
		if s.GetNote() != "" {
			fmt.Fprintf(w, "\t    => %s\n", s.GetNote())
		}
	}
	fmt.Fprintln(w)
	v := r.GetVerdict()
	fmt.Fprintf(w, "Verdict:\t%s\n", verdictLine(v))
	if v.GetService() != "" {
		svc := v.GetService()
		if v.GetServiceEndpoint() != "" {
			svc += fmt.Sprintf(" → endpoint %s (bucket %d of group %d)", v.GetServiceEndpoint(), v.GetServiceBucketId(), v.GetServiceGroupId())
		} else {
			svc += " (no endpoint)"
		}
		fmt.Fprintf(w, "Service:\t%s\n", svc)
	}
	if len(v.GetAllowedBy()) > 0 {
		fmt.Fprintf(w, "Allowed by:\t%s\n", strings.Join(v.GetAllowedBy(), ", "))
	}
	if v.GetKind() == agentv1.TraceVerdict_DROP {
		if v.GetDropReason() != "" {
			fmt.Fprintf(w, "Drop reason:\t%s\n", v.GetDropReason())
		}
		if p := v.GetIsolatedPod(); p.GetName() != "" {
			fmt.Fprintf(w, "Isolated pod:\t%s/%s\n", p.GetNamespace(), p.GetName())
		}
		if len(v.GetIsolatingPolicies()) > 0 {
			fmt.Fprintf(w, "Isolated by:\t%s\n", strings.Join(v.GetIsolatingPolicies(), ", "))
		}
	}
	if v.GetSummary() != "" {
		fmt.Fprintf(w, "Summary:\t%s\n", v.GetSummary())
	}
}

func verdictLine(v *agentv1.TraceVerdict) string {
	switch v.GetKind() {
	case agentv1.TraceVerdict_OUTPUT:
		s := fmt.Sprintf("OUTPUT to port %s (%d)", dash(v.GetOutPortName()), v.GetOutPort())
		if p := v.GetPod(); p.GetName() != "" {
			s += fmt.Sprintf(", pod %s/%s", p.GetNamespace(), p.GetName())
		}
		return s
	case agentv1.TraceVerdict_TUNNEL:
		return fmt.Sprintf("TUNNEL to node %s (%s)", dash(v.GetNode()), dash(v.GetTunnelDst()))
	case agentv1.TraceVerdict_DROP:
		return "DROP"
	}
	return v.GetKind().String()
}
