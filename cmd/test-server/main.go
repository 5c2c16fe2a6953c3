// Command test-server is the workload of Weir's connectivity tests.
//
//	test-server serve [--ports 80,81]
//
// listens on TCP and UDP on every port (every address of both families,
// unless --host narrows it) and answers every request
// with the pod name (env POD_NAME, else the host name) and a newline: a TCP
// client that sends an HTTP request line within 200 ms gets an HTTP/1.0 200
// response with the name as body, any other TCP client gets the bare name,
// and every UDP datagram gets the name back.
//
//	test-server probe --proto tcp|udp --to HOST:PORT [--timeout 1s]
//
// asks a server and prints its answer; exit status 0 if it answered, 1 (with
// the reason on stderr) if not.
//
//	test-server probe-matrix --targets tcp:HOST:PORT,udp:HOST:PORT,... [--timeout 1s]
//
// probes all targets concurrently and prints one line per target, in the
// order given: "PROTO HOST:PORT ok ANSWER" or "PROTO HOST:PORT fail REASON".
// It exits 0 whatever the probes' outcome, non-zero only on usage errors.
//
//	test-server hold --to HOST:PORT [--for 10s] [--interval 200ms] [--timeout 1s]
//
// keeps one TCP connection open (a first line "HOLD" makes the server echo
// every line) and exchanges a line every interval; exit status 0 if the
// connection lasted, 1 with "broken after ..." on stdout when an echo did not
// come back within the timeout.
//
//	test-server udp-echo [--port 90]
//	test-server udp-stream --to HOST:PORT [--rate 100] [--for 1m] [--timeout 1s]
//
// measure loss with sequence numbers (stream.go): udp-echo sends every
// datagram back; udp-stream sends numbered datagrams at the rate until --for
// passes or it is interrupted, and prints "sent N received M lost L
// longest-outage Dms" and, if any were lost, "lost A-B,C,...".
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd(os.Stdout).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test-server:", err)
		os.Exit(1)
	}
}

func newRootCmd(stdout io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "test-server",
		Short:         "TCP/UDP/HTTP server answering with the pod name, and its probe client",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCmd(), newProbeCmd(stdout), newProbeMatrixCmd(stdout), newHoldCmd(stdout),
		newUDPEchoCmd(), newUDPStreamCmd(stdout))
	return root
}
