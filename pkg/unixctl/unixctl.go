// Package unixctl is a minimal client of the unixctl control socket of OVS
// daemons (what ovs-appctl talks to): JSON-RPC 1.0 over a unix socket
// <run dir>/<daemon>.<pid>.ctl, one request at a time. The agent image has
// no ovs-appctl; the agent uses this to ask ovs-vswitchd for its version and
// to run ofproto/trace.
package unixctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// defaultTimeout bounds a call whose context has no deadline.
const defaultTimeout = 30 * time.Second

// Client calls one daemon's unixctl commands. Each call dials the socket
// afresh, so a Client survives daemon restarts (the socket path, which
// holds the pid, is looked up again on every call). A Client is safe for
// concurrent use.
type Client struct {
	runDir string
	daemon string
	id     atomic.Uint64
}

// New returns a client of daemon (e.g. "ovs-vswitchd") whose pidfile and
// control socket are in runDir (e.g. /var/run/openvswitch).
func New(runDir, daemon string) *Client {
	return &Client{runDir: runDir, daemon: daemon}
}

// SocketPath returns the daemon's current control socket: the default
// <runDir>/<daemon>.<pid>.ctl, with pid read from <runDir>/<daemon>.pid,
// or, when that does not exist, <runDir>/<daemon>.ctl (a daemon started
// with --unixctl=<runDir>/<daemon>.ctl, as test/ovstest does).
func (c *Client) SocketPath() (string, error) {
	pidFile := filepath.Join(c.runDir, c.daemon+".pid")
	fixed := filepath.Join(c.runDir, c.daemon+".ctl")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		if _, serr := os.Stat(fixed); serr == nil {
			return fixed, nil
		}
		return "", fmt.Errorf("reading %s pidfile (is %s running?): %w", c.daemon, c.daemon, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return "", fmt.Errorf("pidfile %s holds no pid: %q", pidFile, strings.TrimSpace(string(b)))
	}
	path := filepath.Join(c.runDir, fmt.Sprintf("%s.%d.ctl", c.daemon, pid))
	if _, err := os.Stat(path); err != nil {
		if _, serr := os.Stat(fixed); serr == nil {
			return fixed, nil
		}
	}
	return path, nil
}

// Error is an error the daemon returned for a command (ovs-appctl prints
// it on stderr and exits 2), as opposed to a transport failure.
type Error struct {
	Command string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", e.Command, strings.TrimSpace(e.Message))
}

type request struct {
	Method string   `json:"method"`
	Params []string `json:"params"`
	ID     uint64   `json:"id"`
}

type response struct {
	ID     uint64          `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  json.RawMessage `json:"error"`
}

// Call runs command with args and returns its output (what ovs-appctl
// prints on stdout). A command the daemon rejects returns *Error.
func (c *Client) Call(ctx context.Context, command string, args ...string) (string, error) {
	path, err := c.SocketPath()
	if err != nil {
		return "", err
	}
	return callSocket(ctx, path, c.id.Add(1), command, args)
}

func callSocket(ctx context.Context, path string, id uint64, command string, args []string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return "", fmt.Errorf("connecting to unixctl socket %s: %w", path, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if args == nil {
		args = []string{}
	}
	if err := json.NewEncoder(conn).Encode(request{Method: command, Params: args, ID: id}); err != nil {
		return "", fmt.Errorf("sending %s to %s: %w", command, path, errors.Join(err, ctx.Err()))
	}
	dec := json.NewDecoder(conn)
	for {
		var resp response
		if err := dec.Decode(&resp); err != nil {
			return "", fmt.Errorf("reading the reply to %s from %s: %w", command, path, errors.Join(err, ctx.Err()))
		}
		if resp.ID != id {
			continue // not ours (a notification); unixctl sends none today
		}
		if len(resp.Error) > 0 && string(resp.Error) != "null" {
			return "", &Error{Command: command, Message: rawString(resp.Error)}
		}
		return rawString(resp.Result), nil
	}
}

// rawString returns a JSON string's value, or the raw JSON of anything else.
func rawString(raw json.RawMessage) string {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	if string(raw) == "null" {
		return ""
	}
	return string(raw)
}
