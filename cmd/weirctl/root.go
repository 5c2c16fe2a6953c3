package main

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
)

// options are the flags every command shares.
type options struct {
	socket   string
	node     string
	localDir string
	output   string
	timeout  time.Duration

	stdout io.Writer
	format outputFormat
}

// agent is a connection to one agent's tooling API.
type agent struct {
	client agentv1.AgentServiceClient
	conn   *grpc.ClientConn
}

func (a *agent) Close() error { return a.conn.Close() }

// socketPath is the agent socket the flags select.
func (o *options) socketPath(socketSet bool) (string, error) {
	if o.node != "" {
		if socketSet {
			return "", usageErrorf("--socket and --node exclude each other")
		}
		return nodeSocket(o.localDir, o.node)
	}
	if o.socket == "" {
		return "", usageErrorf("--socket: empty path")
	}
	return filepath.Abs(o.socket)
}

// connect dials the selected agent. The unix socket is probed first so an
// absent agent or missing permission yields a plain error.
func (o *options) connect(cmd *cobra.Command) (*agent, error) {
	path, err := o.socketPath(cmd.Flags().Changed("socket"))
	if err != nil {
		return nil, err
	}
	if err := checkSocket(path, o.timeout); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, &connectError{socket: path, err: err}
	}
	return &agent{client: agentv1.NewAgentServiceClient(conn), conn: conn}, nil
}

// call runs f with a connected client under the --timeout deadline.
func (o *options) call(cmd *cobra.Command, f func(ctx context.Context, c agentv1.AgentServiceClient) error) error {
	a, err := o.connect(cmd)
	if err != nil {
		return err
	}
	defer a.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
	defer cancel()
	return f(ctx, a.client)
}

func (o *options) printer() printer { return printer{w: o.stdout, format: o.format} }

func newRootCommand(stdout io.Writer, getenv func(string) string) *cobra.Command {
	o := &options{stdout: stdout, localDir: defaultLocalDir}
	if d := getenv("WEIR_LOCAL_DIR"); d != "" {
		o.localDir = d
	}
	root := &cobra.Command{
		Use:   "weirctl",
		Short: "Inspect a Weir node agent: pods, flows, policies, packet traces, drops",
		Long: `weirctl talks to one Weir node agent through its gRPC tooling API on a unix
socket: --socket (default ` + defaultSocket + `, as on a node), or --node NAME for a node
of the local cluster (` + "`make run`, weir-local" + `), whose socket is
<local-dir>/nodes/NAME/run-weir/agent.sock on the host.

Exit codes: 0 ok, 1 the agent answered with an error, 2 bad command line,
3 the agent could not be reached.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) (err error) {
			o.format, err = parseOutput(o.output)
			if err != nil {
				return err
			}
			if o.timeout <= 0 {
				return usageErrorf("--timeout must be positive")
			}
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&o.socket, "socket", defaultSocket, "the agent's tooling API socket")
	pf.StringVar(&o.node, "node", "", "a node of the local cluster; its agent socket is <local-dir>/nodes/NODE/run-weir/agent.sock")
	pf.StringVar(&o.localDir, "local-dir", o.localDir, "state directory of the local cluster, for --node (env WEIR_LOCAL_DIR)")
	pf.StringVarP(&o.output, "output", "o", "", "output format: json or yaml (default: a table)")
	pf.DurationVar(&o.timeout, "timeout", 30*time.Second, "deadline of one request (not of watch)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })

	get := &cobra.Command{
		Use:   "get",
		Short: "Show agent state: info, pods, flows, policies, services",
		Args:  noArgs,
		RunE:  subcommandRequired,
	}
	get.AddCommand(newGetInfoCommand(o), newGetPodsCommand(o), newGetFlowsCommand(o), newGetPoliciesCommand(o), newGetServicesCommand(o))
	watch := &cobra.Command{
		Use:   "watch",
		Short: "Stream policy verdicts until interrupted",
		Args:  noArgs,
		RunE:  subcommandRequired,
	}
	watch.AddCommand(newWatchCommand(o, true), newWatchCommand(o, false))
	root.AddCommand(get, newTraceCommand(o), watch, newAuditCommand(o))
	return root
}

func subcommandRequired(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return usageErrorf("%s needs a subcommand: %s", cmd.CommandPath(), strings.Join(subcommandNames(cmd), ", "))
}

func subcommandNames(cmd *cobra.Command) []string {
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	return names
}

// noArgs accepts no positional arguments but lets a parent command report
// an unknown subcommand.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 && !cmd.HasSubCommands() {
		return usageErrorf("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

func maxArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > n {
			return usageErrorf("%s takes at most %d argument(s), got %q", cmd.CommandPath(), n, args)
		}
		return nil
	}
}

// isCobraUsage recognizes cobra's own command-line errors, which are plain
// errors.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "required flag", "invalid argument", "accepts "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// parsePodRef parses NS/NAME.
func parsePodRef(flag, s string) (*agentv1.PodRef, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, usageErrorf("%s %q: want NAMESPACE/NAME", flag, s)
	}
	return &agentv1.PodRef{Namespace: ns, Name: name}, nil
}
