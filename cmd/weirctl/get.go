package main

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
)

func newGetInfoCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "The agent's node, versions, OVS connections, readiness and flows per table",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c agentv1.AgentServiceClient) error {
				r, err := c.AgentInfo(ctx, &agentv1.AgentInfoRequest{})
				if err != nil {
					return err
				}
				return o.printer().print(r, func(w io.Writer) { infoTable(w, r) })
			})
		},
	}
}

func infoTable(w io.Writer, r *agentv1.AgentInfoResponse) {
	ready := "yes"
	if !r.GetReady() {
		ready = "no: " + r.GetNotReadyReason()
	}
	node := r.GetNodeName()
	if node == "" {
		node = "(standalone)"
	}
	fmt.Fprintf(w, "Node:\t%s\n", node)
	fmt.Fprintf(w, "Version:\t%s (revision %s, %s)\n", dash(r.GetVersion()), dash(r.GetVcsRevision()), dash(r.GetGoVersion()))
	fmt.Fprintf(w, "Ready:\t%s\n", ready)
	fmt.Fprintf(w, "Pod CIDR:\t%s\n", dash(strings.Join(orOne(r.GetPodCidrs(), r.GetPodCidr()), ", ")))
	fmt.Fprintf(w, "Gateway:\t%s %s\n", dash(strings.Join(orOne(r.GetGatewayIps(), r.GetGatewayIp()), ", ")), r.GetGatewayMac())
	fmt.Fprintf(w, "Bridge:\t%s (datapath %s, OVS %s)\n", dash(r.GetBridge()), dash(r.GetDatapathType()), dash(r.GetOvsVersion()))
	fmt.Fprintf(w, "OpenFlow:\t%s\n", connState(r.GetOpenflow()))
	fmt.Fprintf(w, "OVSDB:\t%s\n", connState(r.GetOvsdb()))
	fmt.Fprintf(w, "Local pods:\t%d\n", r.GetLocalPodCount())
	fmt.Fprintf(w, "Peer nodes:\t%s\n", dash(strings.Join(r.GetPeerNodes(), ", ")))
	fmt.Fprintf(w, "Policy rules:\t%d\n", r.GetPolicyRuleCount())
	if len(r.GetFlowCounts()) > 0 {
		fmt.Fprintln(w)
		row(w, "TABLE", "NAME", "FLOWS")
		for _, t := range r.GetFlowCounts() {
			row(w, t.GetTableId(), t.GetTableName(), t.GetFlowCount())
		}
	}
}

// orOne returns all (every family's value), else one (an agent from
// before dual-stack reports one only), else nothing.
func orOne(all []string, one string) []string {
	if len(all) == 0 && one != "" {
		return []string{one}
	}
	return all
}

func connState(c *agentv1.ConnectionState) string {
	if c == nil {
		return "-"
	}
	s := "disconnected"
	if c.GetConnected() {
		s = "connected"
	}
	if c.GetGeneration() > 0 {
		s += fmt.Sprintf(" (generation %d)", c.GetGeneration())
	}
	if c.GetEndpoint() != "" {
		s += " to " + c.GetEndpoint()
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newGetPodsCommand(o *options) *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:   "pods [-n NAMESPACE] [POD | NAMESPACE/POD]",
		Short: "The pod interfaces the agent attached on this node",
		Args:  maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &agentv1.ListPodInterfacesRequest{Namespace: namespace}
			if len(args) == 1 {
				req.Pod = args[0]
				if ns, name, ok := strings.Cut(args[0], "/"); ok {
					if ns == "" || name == "" || (namespace != "" && namespace != ns) {
						return usageErrorf("pod %q: want POD or NAMESPACE/POD (matching -n)", args[0])
					}
					req.Namespace, req.Pod = ns, name
				}
			}
			return o.call(cmd, func(ctx context.Context, c agentv1.AgentServiceClient) error {
				r, err := c.ListPodInterfaces(ctx, req)
				if err != nil {
					return err
				}
				if req.Pod != "" && len(r.GetInterfaces()) == 0 {
					what := req.Pod
					if req.Namespace != "" {
						what = req.Namespace + "/" + req.Pod
					}
					return status.Errorf(codes.NotFound, "pod %s has no interface on this node", what)
				}
				return o.printer().print(r, func(w io.Writer) { podsTable(w, r) })
			})
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "only pods of this namespace")
	return cmd
}

func podsTable(w io.Writer, r *agentv1.ListPodInterfacesResponse) {
	row(w, "NAMESPACE", "POD", "IPS", "MAC", "OVS PORT", "OFPORT", "IFNAME", "CONTAINER")
	for _, i := range r.GetInterfaces() {
		ips := strings.Join(i.GetIps(), ",")
		if ips == "" { // an agent from before dual-stack
			ips = i.GetIp()
		}
		row(w, i.GetPod().GetNamespace(), i.GetPod().GetName(), ips, i.GetMac(), i.GetOvsPortName(),
			i.GetOfport(), i.GetIfname(), shortID(i.GetContainerId()))
	}
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func newGetFlowsCommand(o *options) *cobra.Command {
	var table, pod, policy, rule, peer string
	cmd := &cobra.Command{
		Use:   "flows [--table T] [--pod NS/NAME] [--policy NS/NAME [--rule ingress/N|egress/N]] [--peer NODE]",
		Short: "The bridge's flows with counters, as ovs-ofctl --names prints them",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &agentv1.ListFlowsRequest{Table: table, PeerNode: peer}
			var err error
			if pod != "" {
				if req.Pod, err = parsePodRef("--pod", pod); err != nil {
					return err
				}
			}
			if rule != "" && policy == "" {
				return usageErrorf("--rule needs --policy")
			}
			if policy != "" {
				p, err := parsePodRef("--policy", policy)
				if err != nil {
					return err
				}
				if rule != "" && !ruleRE.MatchString(strings.ToLower(rule)) {
					return usageErrorf("--rule %q: want ingress/N or egress/N", rule)
				}
				req.Policy = &agentv1.PolicyRef{Namespace: p.GetNamespace(), Name: p.GetName(), Rule: strings.ToLower(rule)}
			}
			return o.call(cmd, func(ctx context.Context, c agentv1.AgentServiceClient) error {
				r, err := c.ListFlows(ctx, req)
				if err != nil {
					return err
				}
				return o.printer().print(r, func(w io.Writer) { flowsTable(w, r) })
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&table, "table", "", "only this table (name or number)")
	f.StringVar(&pod, "pod", "", "only the flows of this local pod (NAMESPACE/NAME)")
	f.StringVar(&policy, "policy", "", "only the flows of this NetworkPolicy's rules (NAMESPACE/NAME)")
	f.StringVar(&rule, "rule", "", "with --policy: only this rule (ingress/N or egress/N)")
	f.StringVar(&peer, "peer", "", "only the tunnel flows of this peer node")
	return cmd
}

// ruleRE is the rule part of a realized rule's name: ingress/N or egress/N.
var ruleRE = regexp.MustCompile(`^(ingress|egress)/[0-9]+$`)

// flowHeaderRE matches the leading fields of a dump-flows line that the
// table shows in columns of their own.
var flowHeaderRE = regexp.MustCompile(`^\s*(?:(?:cookie|duration|table|n_packets|n_bytes|idle_age|hard_age|priority|reset_counts|idle_timeout|hard_timeout)=[^, ]*(?:, |,| )|reset_counts(?:, |,| ))+`)

// compactFlow returns a dump-flows line without the fields the table shows
// in columns (cookie, duration, table, counters, priority).
func compactFlow(text string) string {
	return strings.TrimSpace(flowHeaderRE.ReplaceAllString(text, ""))
}

func flowsTable(w io.Writer, r *agentv1.ListFlowsResponse) {
	row(w, "TABLE", "COOKIE", "PRIORITY", "PACKETS", "BYTES", "FLOW")
	for _, f := range r.GetFlows() {
		table := f.GetTableName()
		if table == "" {
			table = strconv.Itoa(int(f.GetTableId()))
		}
		row(w, table, fmt.Sprintf("%#x", f.GetCookie()), f.GetPriority(), f.GetPacketCount(), f.GetByteCount(), compactFlow(f.GetText()))
	}
}

func newGetPoliciesCommand(o *options) *cobra.Command {
	var namespace, pod string
	cmd := &cobra.Command{
		Use:   "policies [-n NAMESPACE] [POLICY] [--pod NS/NAME]",
		Short: "The NetworkPolicy rules realized for local pods, and the isolated pods",
		Args:  maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &agentv1.ListNetworkPoliciesRequest{Namespace: namespace}
			if len(args) == 1 {
				req.Name = args[0]
				if ns, name, ok := strings.Cut(args[0], "/"); ok {
					req.Namespace, req.Name = ns, name
				}
			}
			if pod != "" {
				var err error
				if req.Pod, err = parsePodRef("--pod", pod); err != nil {
					return err
				}
			}
			return o.call(cmd, func(ctx context.Context, c agentv1.AgentServiceClient) error {
				r, err := c.ListNetworkPolicies(ctx, req)
				if err != nil {
					return err
				}
				return o.printer().print(r, func(w io.Writer) { policiesTable(w, r) })
			})
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "only policies of this namespace")
	cmd.Flags().StringVar(&pod, "pod", "", "only rules applying to this local pod (NAMESPACE/NAME)")
	return cmd
}

func policiesTable(w io.Writer, r *agentv1.ListNetworkPoliciesResponse) {
	row(w, "RULE", "ID", "DIRECTION", "APPLIED TO", "PEERS", "PORTS", "PACKETS", "BYTES")
	for _, rule := range r.GetRules() {
		var applied []string
		for _, p := range rule.GetAppliedTo() {
			applied = append(applied, localPod(p))
		}
		var ports []string
		for _, p := range rule.GetPorts() {
			ports = append(ports, portRange(p))
		}
		row(w, rule.GetName(), rule.GetId(), rule.GetDirection(), orAny(applied), orAny(rule.GetPeers()), orAny(ports),
			rule.GetPacketCount(), rule.GetByteCount())
	}
	if len(r.GetIsolated()) > 0 {
		fmt.Fprintln(w)
		row(w, "ISOLATED POD", "IP", "DIRECTION", "DROPPED PACKETS", "DROPPED BYTES", "POLICIES")
		for _, i := range r.GetIsolated() {
			row(w, localPod(i.GetPod()), i.GetPod().GetIp(), i.GetDirection(), i.GetDroppedPackets(), i.GetDroppedBytes(),
				strings.Join(i.GetPolicies(), ","))
		}
	}
}

// localPod names a local pod: NS/NAME, else its IP.
func localPod(p *agentv1.LocalPodRef) string {
	if p.GetPod().GetName() != "" {
		return p.GetPod().GetNamespace() + "/" + p.GetPod().GetName()
	}
	return p.GetIp()
}

func portRange(p *agentv1.PortRange) string {
	switch {
	case p.GetFrom() == 0 && p.GetTo() == 0:
		return p.GetProtocol()
	case p.GetFrom() == p.GetTo() || p.GetTo() == 0:
		return fmt.Sprintf("%s/%d", p.GetProtocol(), p.GetFrom())
	}
	return fmt.Sprintf("%s/%d-%d", p.GetProtocol(), p.GetFrom(), p.GetTo())
}

func orAny(s []string) string {
	if len(s) == 0 {
		return "any"
	}
	return strings.Join(s, ",")
}
