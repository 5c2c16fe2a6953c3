package main

// udp-echo and udp-stream measure packet loss with sequence numbers: the
// stream sends numbered datagrams at a fixed rate, the echo sends each one
// back, and the stream reports which numbers never came back. The fault
// tests (test/e2e/faults_test.go) run them across agent restarts and
// upgrades, where "no probe failed" is too coarse (a probe retries within
// its timeout; a lost datagram is lost).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
)

// seqPrefix starts every datagram of a stream; the number follows.
const seqPrefix = "seq "

func newUDPEchoCmd() *cobra.Command {
	var port int
	cmd := &cobra.Command{
		Use:   "udp-echo",
		Short: "Send every UDP datagram back to its sender unchanged",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// One socket for both families (IPv4 only where the pod has
			// no IPv6), as serve's: the peer may be IPv4 or IPv6.
			pc, err := net.ListenPacket("udp", net.JoinHostPort("", strconv.Itoa(port)))
			if err != nil {
				return fmt.Errorf("udp-echo: listening on port %d: %w", port, err)
			}
			return udpEcho(cmd.Context(), pc)
		},
	}
	cmd.Flags().IntVar(&port, "port", 90, "UDP port to listen on")
	return cmd
}

// udpEcho echoes datagrams on pc until ctx ends.
func udpEcho(ctx context.Context, pc net.PacketConn) error {
	go func() { <-ctx.Done(); pc.Close() }()
	buf := make([]byte, 64*1024)
	n := 0
	for {
		l, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				klog.InfoS("udp-echo done", "echoed", n)
				return nil
			}
			return fmt.Errorf("udp-echo: read: %w", err)
		}
		if _, err := pc.WriteTo(buf[:l], from); err == nil {
			n++
		}
	}
}

func newUDPStreamCmd(stdout io.Writer) *cobra.Command {
	var to string
	var rate int
	var streamFor, timeout time.Duration
	cmd := &cobra.Command{
		Use:   "udp-stream",
		Short: "Send numbered UDP datagrams to a udp-echo at a fixed rate and report the lost ones",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if rate <= 0 || streamFor <= 0 || timeout <= 0 {
				return fmt.Errorf("--rate, --for and --timeout must be positive")
			}
			st, err := udpStream(cmd.Context(), to, rate, streamFor, timeout)
			if err != nil {
				return err
			}
			fmt.Fprint(stdout, st.String())
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "udp-echo address HOST:PORT")
	cmd.Flags().IntVar(&rate, "rate", 100, "datagrams per second")
	cmd.Flags().DurationVar(&streamFor, "for", time.Minute, "how long to send (an interrupt ends it earlier, with the same report)")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Second, "how long to wait for the last echoes")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// streamStats is the outcome of a udp-stream.
type streamStats struct {
	sent     int
	received []bool // by sequence number
	interval time.Duration
}

func (s streamStats) lostRanges() [][2]int {
	var out [][2]int
	for i := 0; i < s.sent; i++ {
		if s.received[i] {
			continue
		}
		if n := len(out); n > 0 && out[n-1][1] == i-1 {
			out[n-1][1] = i
		} else {
			out = append(out, [2]int{i, i})
		}
	}
	return out
}

// String is the report: "sent N received M lost L longest-outage Dms" and,
// when some were lost, "lost A-B,C,..." (sequence numbers).
func (s streamStats) String() string {
	got, longest := 0, 0
	for i := 0; i < s.sent; i++ {
		if s.received[i] {
			got++
		}
	}
	ranges := s.lostRanges()
	var parts []string
	for _, r := range ranges {
		longest = max(longest, r[1]-r[0]+1)
		if r[0] == r[1] {
			parts = append(parts, strconv.Itoa(r[0]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", r[0], r[1]))
		}
	}
	out := fmt.Sprintf("sent %d received %d lost %d longest-outage %dms\n", s.sent, got, s.sent-got,
		(time.Duration(longest) * s.interval).Milliseconds())
	if len(parts) > 0 {
		out += "lost " + strings.Join(parts, ",") + "\n"
	}
	return out
}

// udpStream sends "seq N" to addr rate times a second for streamFor (or
// until ctx ends), then waits timeout for the last echoes.
func udpStream(ctx context.Context, addr string, rate int, streamFor, timeout time.Duration) (streamStats, error) {
	c, err := net.Dial("udp", addr) // the family is addr's
	if err != nil {
		return streamStats{}, fmt.Errorf("udp-stream %s: %w", addr, err)
	}
	defer c.Close()
	interval := time.Second / time.Duration(rate)
	st := streamStats{interval: interval, received: make([]bool, int(streamFor/interval)+1)}
	got := make(chan int, 1024)
	go func() {
		buf := make([]byte, 128)
		for {
			n, err := c.Read(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				// ICMP errors (port unreachable while a path is down) surface
				// here; the datagram counts as lost, the stream goes on.
				continue
			}
			if seq, err := strconv.Atoi(strings.TrimPrefix(string(buf[:n]), seqPrefix)); err == nil {
				got <- seq
			}
		}
	}()
	record := func(seq int) {
		if seq >= 0 && seq < len(st.received) {
			st.received[seq] = true
		}
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	end := time.After(streamFor)
sending:
	for st.sent < len(st.received) {
		select {
		case <-ctx.Done():
			break sending
		case <-end:
			break sending
		case seq := <-got:
			record(seq)
		case <-tick.C:
			// A failed write (no route while a path is down) is a lost datagram.
			_, _ = c.Write([]byte(seqPrefix + strconv.Itoa(st.sent)))
			st.sent++
		}
	}
	drain := time.After(timeout)
	for {
		select {
		case seq := <-got:
			record(seq)
		case <-drain:
			return st, nil
		}
	}
}
