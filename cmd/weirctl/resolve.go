package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// defaultSocket is where the agent serves its tooling API on a node.
const defaultSocket = "/var/run/weir/agent.sock"

// defaultLocalDir is the state directory of the local cluster (`weir-local`,
// `make run`).
const defaultLocalDir = "/var/lib/weir-local"

// nodeSocket returns the agent socket of node in the local cluster in
// localDir; an unknown node is a usage error. Inside a node's mount namespace /var/run/weir is a bind mount of
// <localDir>/nodes/<node>/run-weir (pkg/localcluster), so from the host the
// socket is that directory's agent.sock.
func nodeSocket(localDir, node string) (string, error) {
	if node == "" || strings.ContainsAny(node, "/\x00") || node == "." || node == ".." {
		return "", usageErrorf("node %q: not a node name", node)
	}
	nodes := filepath.Join(localDir, "nodes")
	if _, err := os.Stat(filepath.Join(nodes, node)); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("node %s: %w", node, err)
		}
		known := knownNodes(nodes)
		if len(known) == 0 {
			return "", usageErrorf("node %s: no local cluster in %s (set --local-dir or WEIR_LOCAL_DIR)", node, localDir)
		}
		return "", usageErrorf("node %s: not a node of the local cluster in %s (nodes: %s)", node, localDir, strings.Join(known, ", "))
	}
	return filepath.Join(nodes, node, "run-weir", "agent.sock"), nil
}

// knownNodes lists the node directories under dir.
func knownNodes(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// checkSocket connects to the unix socket once, so that a missing socket or
// missing permission is reported as such instead of as a gRPC transport
// error.
func checkSocket(path string, timeout time.Duration) error {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		var hint string
		switch {
		case errors.Is(err, fs.ErrNotExist):
			hint = " (is the agent running? use --socket or --node)"
		case errors.Is(err, fs.ErrPermission):
			hint = " (the socket is root-only: run as root)"
		}
		return &connectError{socket: path, err: fmt.Errorf("%w%s", err, hint)}
	}
	return c.Close()
}

// connectError means the agent could not be reached at all.
type connectError struct {
	socket string
	err    error
}

func (e *connectError) Error() string {
	return fmt.Sprintf("cannot reach the agent at %s: %v", e.socket, e.err)
}

func (e *connectError) Unwrap() error { return e.err }
