package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newHoldCmd(stdout io.Writer) *cobra.Command {
	var to string
	var holdFor, interval, timeout time.Duration
	cmd := &cobra.Command{
		Use:   "hold",
		Short: "Keep a TCP connection to a test server open, exchanging a line every interval",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if holdFor <= 0 || interval <= 0 || timeout <= 0 {
				return fmt.Errorf("--for, --interval and --timeout must be positive")
			}
			return holdConn(cmd.Context(), stdout, to, holdFor, interval, timeout)
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "server address HOST:PORT")
	cmd.Flags().DurationVar(&holdFor, "for", 10*time.Second, "how long to keep the connection")
	cmd.Flags().DurationVar(&interval, "interval", 200*time.Millisecond, "time between two exchanges")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Second, "how long to wait for the connection and each echo")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// holdConn connects to addr, asks for a held connection and exchanges a
// line every interval for holdFor. It prints "connected NAME" and at the end
// "held D, N echoes"; when an exchange fails it prints "broken after D (N
// echoes): REASON" and returns an error.
func holdConn(ctx context.Context, out io.Writer, addr string, holdFor, interval, timeout time.Duration) error {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	var d net.Dialer
	c, err := d.DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return fmt.Errorf("hold %s: %w", addr, err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, holdRequest+"\n"); err != nil {
		return fmt.Errorf("hold %s: sending the request: %w", addr, err)
	}
	name, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("hold %s: reading the name: %w", addr, err)
	}
	fmt.Fprintf(out, "connected %s\n", strings.TrimSpace(name))
	start := time.Now()
	t := time.NewTicker(interval)
	defer t.Stop()
	for n := 0; ; n++ {
		if time.Since(start) >= holdFor {
			fmt.Fprintf(out, "held %v, %d echoes\n", time.Since(start).Round(time.Millisecond), n)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hold %s: %w", addr, ctx.Err())
		case <-t.C:
		}
		msg := fmt.Sprintf("ping %d\n", n)
		_ = c.SetDeadline(time.Now().Add(timeout))
		_, err := io.WriteString(c, msg)
		var echo string
		if err == nil {
			echo, err = r.ReadString('\n')
		}
		if err == nil && echo != msg {
			err = fmt.Errorf("echo %q, want %q", echo, msg)
		}
		if err != nil {
			fmt.Fprintf(out, "broken after %v (%d echoes): %v\n", time.Since(start).Round(time.Millisecond), n, oneLine(err.Error()))
			return fmt.Errorf("hold %s: connection broken: %w", addr, err)
		}
	}
}
