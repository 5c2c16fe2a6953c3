package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
)

// target is one probe of a matrix: a protocol and a HOST:PORT.
type target struct {
	proto, addr string
}

func (t target) String() string { return t.proto + " " + t.addr }

// parseTargets parses a comma-separated list of PROTO:HOST:PORT (an IPv6 host
// in brackets).
func parseTargets(s string) ([]target, error) {
	var out []target
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		proto, addr, ok := strings.Cut(item, ":")
		if !ok {
			return nil, fmt.Errorf("target %q: want PROTO:HOST:PORT", item)
		}
		if proto != "tcp" && proto != "udp" {
			return nil, fmt.Errorf("target %q: unknown protocol %q (want tcp or udp)", item, proto)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			return nil, fmt.Errorf("target %q: want PROTO:HOST:PORT", item)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("target %q: bad port %q", item, port)
		}
		out = append(out, target{proto: proto, addr: addr})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no targets")
	}
	return out, nil
}

func newProbeMatrixCmd(stdout io.Writer) *cobra.Command {
	var targets string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "probe-matrix",
		Short: "Probe many targets concurrently; one line per target, exit 0 even if some fail",
		Long: `probe-matrix probes every target at once (each with its own timeout) and prints,
in the order given, one line per target:

  PROTO HOST:PORT ok ANSWER
  PROTO HOST:PORT fail REASON

It exits 0 whatever the probes' outcome; only usage errors make it fail.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ts, err := parseTargets(targets)
			if err != nil {
				return err
			}
			if timeout <= 0 {
				return fmt.Errorf("--timeout must be positive, got %v", timeout)
			}
			_, err = io.WriteString(stdout, probeMatrix(cmd.Context(), ts, timeout))
			return err
		},
	}
	cmd.Flags().StringVar(&targets, "targets", "", "comma-separated PROTO:HOST:PORT list (tcp or udp)")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Second, "per-probe timeout")
	_ = cmd.MarkFlagRequired("targets")
	return cmd
}

// probeMatrix probes all targets concurrently and returns the report, one
// line per target in the order given.
func probeMatrix(ctx context.Context, ts []target, timeout time.Duration) string {
	lines := make([]string, len(ts))
	var wg sync.WaitGroup
	for i, t := range ts {
		wg.Go(func() {
			answer, err := probe(ctx, t.proto, t.addr, timeout)
			if err != nil {
				// The error names protocol and address already; keep the cause.
				reason := strings.TrimPrefix(err.Error(), fmt.Sprintf("%s probe to %s: ", t.proto, t.addr))
				lines[i] = fmt.Sprintf("%s fail %s", t, oneLine(reason))
				return
			}
			lines[i] = fmt.Sprintf("%s ok %s", t, oneLine(answer))
		})
	}
	wg.Wait()
	return strings.Join(lines, "\n") + "\n"
}

// oneLine folds s into one trimmed line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
