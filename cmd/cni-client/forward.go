package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
)

// Default deadlines of the forwarded calls. ADD may wait for OVS and IPAM;
// STATUS must answer quickly as the runtime polls it.
const (
	defaultCmdTimeout    = 2 * time.Minute
	defaultStatusTimeout = 10 * time.Second
)

// rpcFunc is a method of cniv1.CniClient, e.g. cniv1.CniClient.CmdAdd.
type rpcFunc func(cniv1.CniClient, context.Context, *cniv1.CniCmdRequest, ...grpc.CallOption) (*cniv1.CniCmdResponse, error)

// command describes how one CNI command is forwarded.
type command struct {
	name    string        // CNI_COMMAND, for messages
	rpc     rpcFunc       // the agent's rpc
	timeout time.Duration // default deadline
	// wantResult: the agent must return a non-empty CNI result (ADD).
	wantResult bool
	// unavailable is the code of an agent that cannot be reached or does
	// not answer in time: 11 (try again later) if zero, but 50 for STATUS, whose
	// spec codes are 50 (cannot serve ADD) and 51 (and existing containers
	// may have limited connectivity). It is 50: pods keep their flows in
	// OVS while the agent is down (test/integration TestAgentRestart pings
	// between them), so only new ADDs are known to fail.
	unavailable uint
}

func (c command) unavailableCode() uint {
	if c.unavailable == 0 {
		return cniv1.CodeTryAgainLater
	}
	return c.unavailable
}

// plugin implements the CNI commands by forwarding them to the agent.
type plugin struct {
	stdout io.Writer               // where the CNI result goes
	getenv func(key string) string // the process environment
}

func (p *plugin) cmdAdd(args *skel.CmdArgs) error {
	return p.forward(command{name: "ADD", rpc: cniv1.CniClient.CmdAdd, timeout: defaultCmdTimeout, wantResult: true}, args)
}

func (p *plugin) cmdCheck(args *skel.CmdArgs) error {
	return p.forward(command{name: "CHECK", rpc: cniv1.CniClient.CmdCheck, timeout: defaultCmdTimeout}, args)
}

func (p *plugin) cmdDel(args *skel.CmdArgs) error {
	return p.forward(command{name: "DEL", rpc: cniv1.CniClient.CmdDel, timeout: defaultCmdTimeout}, args)
}

func (p *plugin) cmdStatus(args *skel.CmdArgs) error {
	return p.forward(command{name: "STATUS", rpc: cniv1.CniClient.CmdStatus, timeout: defaultStatusTimeout,
		unavailable: cniv1.CodePluginNotAvailable}, args)
}

func (p *plugin) cmdGC(args *skel.CmdArgs) error {
	return p.forward(command{name: "GC", rpc: cniv1.CniClient.CmdGC, timeout: defaultCmdTimeout}, args)
}

// forward sends one CNI command to the agent and prints the agent's CNI result
// verbatim on p.stdout. Every error it returns is a *types.Error, which skel
// prints as the CNI error JSON.
func (p *plugin) forward(cmd command, args *skel.CmdArgs) error {
	socket, err := socketPathFromConfig(args.StdinData)
	if err != nil {
		return err
	}
	timeout, err := callTimeout(p.getenv, cmd.timeout)
	if err != nil {
		return err
	}

	// NewClient does not connect; the rpc below does, and fails fast with
	// codes.Unavailable when nothing listens on the socket. The target is
	// escaped so that a path with '%', '?' or '#' parses; d dials the path
	// itself anyway.
	d := &dialer{socket: socket}
	target := (&url.URL{Scheme: "unix", Path: socket}).String()
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(d.dial))
	if err != nil {
		return unreachableError(cmd, socket, err)
	}
	defer func() { _ = conn.Close() }()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := cmd.rpc(cniv1.NewCniClient(conn), ctx, &cniv1.CniCmdRequest{
		CniArgs: &cniv1.CniCmdArgs{
			ContainerId:          args.ContainerID,
			Netns:                args.Netns,
			Ifname:               args.IfName,
			Args:                 args.Args,
			Path:                 args.Path,
			NetworkConfiguration: args.StdinData,
		},
	})
	if err != nil {
		if dialErr := d.lastErr(); dialErr != nil && status.Code(err) == codes.Unavailable {
			return unreachableError(cmd, socket, dialErr)
		}
		return rpcError(cmd, socket, timeout, err)
	}
	if e := resp.GetError(); e != nil {
		return agentError(e)
	}
	result := resp.GetCniResult()
	if cmd.wantResult && len(result) == 0 {
		return types.NewError(cniv1.CodeInternal,
			fmt.Sprintf("weir: the Weir agent at %s returned an empty result for %s", socket, cmd.name), "")
	}
	if len(result) == 0 {
		return nil
	}
	if _, err := p.stdout.Write(result); err != nil {
		return types.NewError(cniv1.CodeIOFailure, "weir: cannot write the CNI result to stdout", err.Error())
	}
	return nil
}

// dialer connects to the agent's socket and remembers the outcome of the
// last attempt: its error says why the agent is unreachable far more plainly
// than the gRPC status wrapped around it.
type dialer struct {
	socket string

	mu  sync.Mutex
	err error
}

func (d *dialer) dial(ctx context.Context, _ string) (net.Conn, error) {
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "unix", d.socket)
	d.mu.Lock()
	d.err = err
	d.mu.Unlock()
	return conn, err
}

// lastErr returns the error of the last dial, nil if it succeeded or none
// was made.
func (d *dialer) lastErr() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// unreachableError is the CNI error for an agent that cannot be reached
// because of cause: a dial error or an rpc error with codes.Unavailable.
func unreachableError(cmd command, socket string, cause error) *types.Error {
	reason := status.Convert(cause).Message()
	// "dial unix /path: connect: no such file or directory" names the socket
	// twice; keep "connect: no such file or directory".
	var opErr *net.OpError
	if errors.As(cause, &opErr) && opErr.Err != nil {
		reason = opErr.Err.Error()
	}
	return types.NewError(cmd.unavailableCode(),
		fmt.Sprintf("weir: cannot reach the Weir agent at %s (is the ovs-agent pod running?): %s", socket, reason), "")
}

// rpcError maps a failed rpc to a CNI error: unreachable or out of time is
// cmd.unavailable, anything else is an internal error.
func rpcError(cmd command, socket string, timeout time.Duration, err error) *types.Error {
	st := status.Convert(err)
	switch {
	case st.Code() == codes.Unavailable:
		return unreachableError(cmd, socket, err)
	case st.Code() == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded):
		return types.NewError(cmd.unavailableCode(),
			fmt.Sprintf("weir: the Weir agent at %s did not answer %s within %s (is the ovs-agent pod overloaded or stuck?)",
				socket, cmd.name, timeout), st.Message())
	default:
		return types.NewError(cniv1.CodeInternal,
			fmt.Sprintf("weir: the Weir agent at %s failed %s: %s", socket, cmd.name, st.Message()),
			"gRPC status "+st.Code().String())
	}
}

// agentError converts the agent's CNI error verbatim. Code 0 is not a valid
// CNI error code, so an agent sending it gets CodeInternal instead.
func agentError(e *cniv1.Error) *types.Error {
	code := uint(e.GetCode())
	if code == 0 {
		code = cniv1.CodeInternal
	}
	return &types.Error{Code: code, Msg: e.GetMessage(), Details: e.GetDetails()}
}
