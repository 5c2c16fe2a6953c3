package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
)

// newWatchCommand is `watch drops` (only isolation drops) or, with
// dropsOnly false, `watch verdicts` (drops and allowing rules).
func newWatchCommand(o *options, dropsOnly bool) *cobra.Command {
	var interval time.Duration
	var policy, pod string
	use, short := "verdicts", "Stream how many new packets each policy rule allowed and each isolated pod dropped"
	if dropsOnly {
		use, short = "drops", "Stream the packets NetworkPolicy isolation drops on this node, until Ctrl-C"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval < 100*time.Millisecond {
				return usageErrorf("--interval must be at least 100ms")
			}
			req := &agentv1.WatchPolicyVerdictsRequest{IntervalMs: uint32(interval / time.Millisecond)}
			if pod != "" {
				p, err := parsePodRef("--pod", pod)
				if err != nil {
					return err
				}
				req.Pod = p
			}
			if policy != "" {
				p, err := parsePodRef("--policy", policy)
				if err != nil {
					return err
				}
				req.Policy = &agentv1.PolicyRef{Namespace: p.GetNamespace(), Name: p.GetName()}
			}
			a, err := o.connect(cmd)
			if err != nil {
				return err
			}
			defer a.Close()
			return watch(cmd.Context(), a.client, req, o.printer(), dropsOnly)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&interval, "interval", time.Second, "how often the agent samples the counters")
	f.StringVar(&pod, "pod", "", "only this local pod (NAMESPACE/NAME)")
	f.StringVar(&policy, "policy", "", "only this NetworkPolicy (NAMESPACE/NAME)")
	return cmd
}

// watch prints the events of the stream until ctx ends (Ctrl-C: a clean
// exit) or the stream fails.
func watch(ctx context.Context, c agentv1.AgentServiceClient, req *agentv1.WatchPolicyVerdictsRequest, p printer, dropsOnly bool) error {
	stream, err := c.WatchPolicyVerdicts(ctx, req)
	if err != nil {
		return err
	}
	if p.format == outputTable {
		fmt.Fprintf(p.w, watchRowFormat, "TIME", "VERDICT", "POD / RULE", "DIRECTION", "NEW PACKETS", "TOTAL", "")
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		}
		if dropsOnly && ev.GetKind() != agentv1.PolicyVerdictEvent_DROPPED {
			continue
		}
		if err := p.printStreamed(ev, func(w io.Writer) { watchRow(w, ev) }); err != nil {
			return err
		}
	}
}

const watchRowFormat = "%-12s  %-7s  %-40s  %-9s  %11s  %8s  %s\n"

func watchRow(w io.Writer, ev *agentv1.PolicyVerdictEvent) {
	t := time.Unix(0, ev.GetTimeUnixNano()).Format("15:04:05.000")
	what := ev.GetRuleName()
	verdict := "allow"
	if ev.GetKind() == agentv1.PolicyVerdictEvent_DROPPED {
		verdict = "drop"
		what = localPod(ev.GetPod())
		if ip := ev.GetPod().GetIp(); ip != "" && ip != what {
			what += " (" + ip + ")"
		}
	}
	fmt.Fprintf(w, watchRowFormat, t, verdict, dash(what), dash(ev.GetDirection()), fmt.Sprint(ev.GetNewPackets()),
		fmt.Sprint(ev.GetTotalPackets()), strings.TrimSpace(ev.GetMessage()))
}
