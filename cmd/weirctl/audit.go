package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
)

// Exit codes of audit, which differ from the other commands' so that a
// script can tell "inconsistent" from "could not audit".
const (
	auditClean        = 0
	auditInconsistent = 1
	auditFailed       = 2
)

// exitCodeError makes run exit with code; err (may be nil) is printed as
// describeError prints it, else msg.
type exitCodeError struct {
	code int
	err  error
	msg  string
}

func (e *exitCodeError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return e.msg
}

func (e *exitCodeError) Unwrap() error { return e.err }

// describe returns the message to print and the exit code.
func (e *exitCodeError) describe() (string, int) {
	if e.err == nil {
		return e.msg, e.code
	}
	msg, _ := describeError(e.err)
	return msg, e.code
}

func newAuditCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "audit",
		Short: "Cross-check the node's OVS ports, pods, IPs, veths, routes and flows; list every inconsistency",
		Long: `audit asks the agent to compare, on its node: the bridge's pod ports with the CNI
server's attachments (orphan-port, orphan-attachment), IPAM allocations with the
attachments (leaked-ip, missing-ip), host-side pod veths with the ports (orphan-veth),
kernel routes through the gateway with the peer nodes (stale-route, missing-route), the
switch's flows with the agent's flow cache (orphan-flow, missing-flow) and, in cluster
mode, the attachments with the Kubernetes Pods (orphan-attachment). It changes nothing.

Exit codes: 0 consistent, 1 inconsistencies listed, 2 the audit could not be done
(bad command line, agent unreachable or failing).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rep *agentv1.AuditReport
			err := o.call(cmd, func(ctx context.Context, c agentv1.AgentServiceClient) error {
				var err error
				rep, err = c.Audit(ctx, &agentv1.AuditRequest{})
				if err != nil {
					return err
				}
				return o.printer().print(rep, func(w io.Writer) { auditTable(w, rep) })
			})
			switch {
			case err != nil:
				return &exitCodeError{code: auditFailed, err: err}
			case len(rep.GetInconsistencies()) > 0:
				return &exitCodeError{code: auditInconsistent, msg: fmt.Sprintf("audit: %d inconsistencies", len(rep.GetInconsistencies()))}
			}
			return nil
		},
	}
}

func auditTable(w io.Writer, r *agentv1.AuditReport) {
	node := r.GetNodeName()
	if node == "" {
		node = "(standalone)"
	}
	c := r.GetChecked()
	fmt.Fprintf(w, "Node:\t%s (cookie round %d)\n", node, r.GetRound())
	groups := "" // only with the Service proxy
	if c.GetGroups() > 0 {
		groups = fmt.Sprintf(", %d groups", c.GetGroups())
	}
	fmt.Fprintf(w, "Checked:\t%d pod ports, %d attachments, %d IPs, %d veths, %d routes, %d peers, %d flows, %d pods%s\n",
		c.GetPorts(), c.GetAttachments(), c.GetIps(), c.GetVeths(), c.GetRoutes(), c.GetPeers(), c.GetFlows(), c.GetPods(), groups)
	for _, n := range r.GetNotes() {
		fmt.Fprintf(w, "Note:\t%s\n", n)
	}
	fmt.Fprintln(w)
	if len(r.GetInconsistencies()) == 0 {
		fmt.Fprintln(w, "No inconsistencies.")
		return
	}
	row(w, "KIND", "SUBJECT", "DETAIL")
	for _, i := range r.GetInconsistencies() {
		row(w, i.GetKind(), i.GetSubject(), i.GetDetail())
	}
}
