package ovstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// waitDelay bounds how long a finished command may keep its output pipes open
// (for example through a child that inherited them) before Wait gives up.
const waitDelay = 2 * time.Second

// command describes one external command run by the harness.
type command struct {
	name    string
	args    []string
	env     []string      // extra KEY=VALUE pairs added to os.Environ()
	stdin   string        // data written to the command's standard input
	timeout time.Duration // kill the command after this long
}

// run executes c and returns its combined stdout and stderr. A failure, a
// timeout included, yields an error naming the command line and carrying the
// output.
func run(c command) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, c.name, c.args...)
	cmd.WaitDelay = waitDelay
	if len(c.env) > 0 {
		cmd.Env = append(os.Environ(), c.env...)
	}
	if c.stdin != "" {
		cmd.Stdin = strings.NewReader(c.stdin)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out

	err := cmd.Run()
	output := out.String()
	if err == nil {
		return output, nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s: %w", c.timeout, err)
	}
	return output, fmt.Errorf("%s: %w%s", c.commandLine(), err, formatOutput(output))
}

// commandLine renders c for error messages, quoting arguments that contain
// blanks.
func (c command) commandLine() string {
	parts := make([]string, 0, len(c.args)+1)
	for _, a := range append([]string{c.name}, c.args...) {
		if a == "" || strings.ContainsAny(a, " \t\n\"'") {
			a = fmt.Sprintf("%q", a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// formatOutput returns output indented below an error line, or "" if empty.
func formatOutput(output string) string {
	output = strings.TrimRight(output, "\n")
	if output == "" {
		return " (no output)"
	}
	return "\n\t" + strings.ReplaceAll(output, "\n", "\n\t")
}

// poll calls check every interval until it reports done, returns an error, or
// timeout passes. On timeout it returns an error describing what was awaited
// together with the last error check returned.
func poll(timeout, interval time.Duration, what string, check func() (done bool, err error)) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		done, err := check()
		if done {
			return nil
		}
		lastErr = err
		if time.Now().After(deadline) {
			if lastErr != nil {
				return fmt.Errorf("timed out after %s waiting for %s: %w", timeout, what, lastErr)
			}
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(interval)
	}
}
