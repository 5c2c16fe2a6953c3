package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// udpTries is how often a UDP probe sends its datagram within the timeout:
// the first one can be lost while the sender resolves the neighbour's MAC.
const udpTries = 3

func newProbeCmd(stdout io.Writer) *cobra.Command {
	var proto, to string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "probe",
		Short: "Ask a test server for its name; exit 0 if it answered, 1 if not",
		RunE: func(cmd *cobra.Command, _ []string) error {
			answer, err := probe(cmd.Context(), proto, to, timeout)
			if err != nil {
				return err
			}
			_, err = io.WriteString(stdout, answer)
			return err
		},
	}
	cmd.Flags().StringVar(&proto, "proto", "tcp", "tcp or udp")
	cmd.Flags().StringVar(&to, "to", "", "server address HOST:PORT")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Second, "give up after this long")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// probe asks the server at addr for its name over proto and returns the
// answer (ending in a newline). It fails when there is no answer within
// timeout, when the connection is refused, or when the answer is empty.
func probe(ctx context.Context, proto, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var answer string
	var err error
	switch proto {
	case "tcp":
		answer, err = probeTCP(ctx, addr)
	case "udp":
		answer, err = probeUDP(ctx, addr, timeout)
	default:
		return "", fmt.Errorf("unknown protocol %q (want tcp or udp)", proto)
	}
	if err != nil {
		return "", fmt.Errorf("%s probe to %s: %w", proto, addr, err)
	}
	if strings.TrimSpace(answer) == "" {
		return "", fmt.Errorf("%s probe to %s: empty answer", proto, addr)
	}
	if !strings.HasSuffix(answer, "\n") {
		answer += "\n"
	}
	return answer, nil
}

func probeTCP(ctx context.Context, addr string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	// The server writes its name and closes the connection.
	b, err := io.ReadAll(io.LimitReader(c, 4096))
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	return string(b), nil
}

func probeUDP(ctx context.Context, addr string, timeout time.Duration) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 4096)
	perTry := timeout / udpTries
	var lastErr error
	for i := range udpTries {
		if _, err := c.Write([]byte("probe\n")); err != nil {
			return "", fmt.Errorf("sending: %w", err)
		}
		deadline := time.Now().Add(perTry)
		if i == udpTries-1 {
			deadline, _ = ctx.Deadline()
		}
		_ = c.SetReadDeadline(deadline)
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
		lastErr = err
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			// e.g. ICMP port unreachable: connection refused.
			return "", err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return "", fmt.Errorf("no answer after %d datagrams: %w", udpTries, lastErr)
}
