// Command weirctl is Weir's operator CLI. It talks to one node agent
// (ovs-agent) through the agent's gRPC tooling API (package
// github.com/weirnet/weir/pkg/apis/agent/v1) on the agent's unix socket,
// /var/run/weir/agent.sock on the node, or on a node of the local cluster
// picked with --node.
//
//	weirctl get info
//	weirctl get pods [-n NS] [POD]
//	weirctl get flows [--table T] [--pod NS/NAME] [--policy NS/NAME [--rule N]] [--peer NODE]
//	weirctl get policies
//	weirctl trace --from NS/POD|IP --to NS/POD|IP|node/NAME [--proto tcp|udp|icmp] [--port N]
//	weirctl watch drops
//	weirctl audit
//
// Output is a table by default, or the API messages with -o json|yaml.
//
// Exit codes: 0 success; 1 the agent answered with an error (its gRPC status
// message is printed as "<Code>: <message>"); 2 the command line is wrong;
// 3 the agent could not be reached (no socket, no permission, not answering
// in time, or Unavailable). audit has its own: 0 consistent, 1
// inconsistencies, 2 could not audit.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes.
const (
	exitOK          = 0
	exitAgentError  = 1
	exitUsage       = 2
	exitUnreachable = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the exit code; errors are
// printed on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	root := newRootCommand(stdout, getenv)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	msg, code := describeError(err)
	fmt.Fprintln(stderr, "weirctl:", msg)
	return code
}

// usageError is a wrong command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// describeError turns err into the message to print and the exit code. A
// gRPC status is printed as "<Code>: <message>", the agent's own words.
func describeError(err error) (string, int) {
	var ue *usageError
	var ce *connectError
	var ec *exitCodeError // audit's own exit codes
	switch {
	case errors.As(err, &ec):
		return ec.describe()
	case errors.As(err, &ue):
		return ue.msg + " (see --help)", exitUsage
	case errors.As(err, &ce):
		return ce.Error(), exitUnreachable
	case errors.Is(err, context.Canceled):
		return "interrupted", exitAgentError
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable:
			return "Unavailable: " + st.Message(), exitUnreachable
		case codes.DeadlineExceeded:
			return "DeadlineExceeded: the agent did not answer in time (--timeout): " + st.Message(), exitUnreachable
		}
		return fmt.Sprintf("%s: %s", st.Code(), st.Message()), exitAgentError
	}
	if isCobraUsage(err) {
		return err.Error() + " (see --help)", exitUsage
	}
	return err.Error(), exitAgentError
}
