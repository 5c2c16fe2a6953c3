package main

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseTargets(t *testing.T) {
	tests := []struct {
		in     string
		want   []target
		errHas string
	}{
		{in: "tcp:10.0.0.1:80", want: []target{{"tcp", "10.0.0.1:80"}}},
		{in: "tcp:10.0.0.1:80, udp:10.0.0.2:81,", want: []target{{"tcp", "10.0.0.1:80"}, {"udp", "10.0.0.2:81"}}},
		{in: "udp:[fd00::1]:53", want: []target{{"udp", "[fd00::1]:53"}}},
		{in: "", errHas: "no targets"},
		{in: "sctp:10.0.0.1:80", errHas: "unknown protocol"},
		{in: "10.0.0.1:80", errHas: "unknown protocol"},
		{in: "tcp", errHas: "want PROTO:HOST:PORT"},
		{in: "tcp:10.0.0.1", errHas: "want PROTO:HOST:PORT"},
		{in: "tcp::80", errHas: "want PROTO:HOST:PORT"},
		{in: "tcp:10.0.0.1:0", errHas: "bad port"},
		{in: "tcp:10.0.0.1:http", errHas: "bad port"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseTargets(tc.in)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("parseTargets(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("parseTargets(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// TestProbeMatrix probes answering, refusing and silent loopback servers in
// one run: every target gets its line in order, and the silent ones cost one
// timeout in total, not one each.
func TestProbeMatrix(t *testing.T) {
	a := startServer(t, "pod-a")
	b := startServer(t, "pod-b")
	closed := closedPort(t)
	var udpCount atomic.Int32
	silentU := silentUDP(t, &udpCount)
	silentT := silentTCP(t)
	addr := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }

	type row struct{ proto, addr, verdict, rest string }
	want := []row{
		{"tcp", addr(a), "ok", "pod-a"},
		{"udp", addr(a), "ok", "pod-a"},
		{"tcp", addr(b), "ok", "pod-b"},
		{"udp", addr(b), "ok", "pod-b"},
		{"tcp", addr(closed), "fail", "refused"},
		{"udp", addr(closed), "fail", "refused"},
		{"udp", addr(silentU), "fail", "no answer"},
		{"tcp", addr(silentT), "fail", "timeout"},
		{"udp", addr(silentU), "fail", "no answer"},
	}
	var targets []string
	for _, r := range want {
		targets = append(targets, r.proto+":"+r.addr)
	}
	const timeout = 600 * time.Millisecond
	var out, errOut bytes.Buffer
	cmd := newRootCmd(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{"probe-matrix", "--timeout", timeout.String(), "--targets", strings.Join(targets, ",")})
	start := time.Now()
	if err := cmd.Execute(); err != nil {
		t.Fatalf("probe-matrix: %v (stderr %q)", err, errOut.String())
	}
	took := time.Since(start)
	// Three silent targets probed one after the other would take 3 timeouts.
	if took < timeout || took > 2*timeout {
		t.Errorf("probe-matrix took %v, want between %v and %v (concurrent probes)", took, timeout, 2*timeout)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, w := range want {
		f := strings.Fields(lines[i])
		if len(f) < 4 || f[0] != w.proto || f[1] != w.addr || f[2] != w.verdict {
			t.Errorf("line %d = %q, want %q %q %q ...", i, lines[i], w.proto, w.addr, w.verdict)
			continue
		}
		rest := strings.Join(f[3:], " ")
		if w.verdict == "ok" && rest != w.rest || w.verdict == "fail" && !strings.Contains(rest, w.rest) {
			t.Errorf("line %d = %q, want the answer/reason %q", i, lines[i], w.rest)
		}
	}
	if got := udpCount.Load(); got != 2*udpTries {
		t.Errorf("silent UDP server got %d datagrams, want %d (two targets, %d tries each)", got, 2*udpTries, udpTries)
	}
}

func TestProbeMatrixUsageErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		errHas string
	}{
		{name: "no targets flag", args: []string{"probe-matrix"}, errHas: "targets"},
		{name: "bad target", args: []string{"probe-matrix", "--targets", "icmp:1.2.3.4:1"}, errHas: "unknown protocol"},
		{name: "zero timeout", args: []string{"probe-matrix", "--targets", "tcp:127.0.0.1:1", "--timeout", "0s"}, errHas: "timeout"},
		{name: "stray argument", args: []string{"probe-matrix", "--targets", "tcp:127.0.0.1:1", "extra"}, errHas: "unknown command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			cmd := newRootCmd(&out)
			cmd.SetErr(&bytes.Buffer{})
			cmd.SetArgs(tc.args)
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("err = %v, want one containing %q", err, tc.errHas)
			}
			if out.Len() != 0 {
				t.Errorf("printed %q on a usage error", out.String())
			}
		})
	}
}
