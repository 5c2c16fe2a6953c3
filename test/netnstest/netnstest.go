// Package netnstest creates named network namespaces for tests and deletes
// them, with every interface and process left in them, at the test's
// cleanup — also when the test fails.
//
// Typical use:
//
//	node, pod := netnstest.New(t, "weir-node"), netnstest.New(t, "weir-pod")
//	// node.Name for `ip -n`, node.Path for CNI and ns.GetNS.
//	err := netnstest.Do(node.Name, func() error { ... })
//
// New and Add need root: they skip the test without it (or fail it with
// WEIR_REQUIRE_ROOT=1, see test/testroot). Create and Delete are for
// callers without a *testing.T (test/ovstest's Launch for the demo).
package netnstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weirnet/weir/test/testroot"
)

// Dir is where `ip netns` keeps its namespaces (NETNS_RUN_DIR), and the
// directory of the paths container runtimes hand to CNI.
const Dir = "/var/run/netns"

// commandTimeout bounds every ip(8) and kill(1) run.
const commandTimeout = 30 * time.Second

// NetNS is a named network namespace.
type NetNS struct {
	// Name is the name `ip netns` knows it by.
	Name string
	// Path is Dir/Name, the path CNI's CNI_NETNS and ns.GetNS take.
	Path string
}

// New creates network namespace prefix-<8 random hex digits> with its
// loopback up, and deletes it at t's cleanup (see Delete).
func New(t testing.TB, prefix string) NetNS {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("netnstest: random name: %v", err)
	}
	return Add(t, prefix+"-"+hex.EncodeToString(b))
}

// Add creates network namespace name with its loopback up, and deletes it
// at t's cleanup (see Delete). The cleanup is registered as soon as the
// namespace exists, so it also runs when the rest of the set-up or the test
// fails; a namespace the test deleted itself is no error.
func Add(t testing.TB, name string) NetNS {
	t.Helper()
	testroot.Require(t, "creates network namespaces")
	if _, err := run("ip", "netns", "add", name); err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	t.Cleanup(func() {
		if err := Delete(name); err != nil {
			t.Errorf("netnstest: %v", err)
		}
	})
	if err := loUp(name); err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	return NetNS{Name: name, Path: filepath.Join(Dir, name)}
}

// Delete deletes n now, as its cleanup would, and fails t on error.
func (n NetNS) Delete(t testing.TB) {
	t.Helper()
	if err := Delete(n.Name); err != nil {
		t.Fatalf("netnstest: %v", err)
	}
}

// Create creates network namespace name with its loopback up, for callers
// that have no *testing.T; they delete it with Delete. If bringing the
// loopback up fails, the namespace is deleted again.
func Create(name string) error {
	if _, err := run("ip", "netns", "add", name); err != nil {
		return err
	}
	if err := loUp(name); err != nil {
		return errors.Join(err, Delete(name))
	}
	return nil
}

// Delete kills every process left in network namespace name (which would
// keep it and its interfaces alive) and deletes it. A namespace that does
// not exist is not an error.
func Delete(name string) error {
	if _, err := os.Stat(filepath.Join(Dir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	out, err := run("ip", "netns", "pids", name)
	if err != nil {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	if pids := strings.Fields(out); len(pids) > 0 {
		if _, err := run("kill", append([]string{"-KILL"}, pids...)...); err != nil {
			return fmt.Errorf("delete netns %s: kill leftover processes: %w", name, err)
		}
	}
	if _, err := run("ip", "netns", "delete", name); err != nil {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// Do runs fn on a thread switched into network namespace name, so that
// netlink calls, sockets and child processes fn makes act there.
func Do(name string, fn func() error) error {
	netns, err := ns.GetNS(filepath.Join(Dir, name))
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer netns.Close()
	if err := netns.Do(func(ns.NetNS) error { return fn() }); err != nil {
		return fmt.Errorf("in netns %s: %w", name, err)
	}
	return nil
}

// MustDo is Do that fails t on error.
func MustDo(t testing.TB, name string, fn func() error) {
	t.Helper()
	if err := Do(name, fn); err != nil {
		t.Fatal(err)
	}
}

func loUp(name string) error {
	if _, err := run("ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	return nil
}

// run runs a command bounded by commandTimeout and returns its combined
// output; an error names the command line and carries the output.
func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 2 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err,
			strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}
