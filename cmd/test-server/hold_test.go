package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// stallingServer answers a HOLD with a name, echoes echoes lines, then
// stops answering (as a dropped connection would look) or, if closeAfter,
// closes the connection.
func stallingServer(t *testing.T, echoes int, closeAfter bool) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		if l, err := r.ReadString('\n'); err != nil || l != "HOLD\n" {
			return
		}
		fmt.Fprintf(c, "stall\n")
		for range echoes {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprint(c, l)
		}
		if closeAfter {
			return
		}
		_, _ = r.ReadString(0) // read, never answer, until the client closes
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

var heldRE = regexp.MustCompile(`held \S+, (\d+) echoes`)

func TestHold(t *testing.T) {
	port := startServer(t, "pod-h")
	tests := []struct {
		name             string
		to               string
		holdFor          time.Duration
		wantErr          bool
		wantOut          []string // substrings of the output
		minTook, maxTook time.Duration
	}{
		{name: "held", to: fmt.Sprintf("127.0.0.1:%d", port), holdFor: 600 * time.Millisecond,
			wantOut: []string{"connected pod-h\n", "held ", " echoes\n"}, minTook: 600 * time.Millisecond, maxTook: 2 * time.Second},
		{name: "stalls after 3 echoes", to: stallingServer(t, 3, false), holdFor: 5 * time.Second, wantErr: true,
			wantOut: []string{"connected stall\n", "(3 echoes)", "timeout"}, minTook: 300 * time.Millisecond, maxTook: 2 * time.Second},
		{name: "closed after 2 echoes", to: stallingServer(t, 2, true), holdFor: 5 * time.Second, wantErr: true,
			wantOut: []string{"connected stall\n", "(2 echoes)", "EOF"}, maxTook: time.Second},
		{name: "refused", to: fmt.Sprintf("127.0.0.1:%d", closedPort(t)), holdFor: time.Second, wantErr: true, maxTook: time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			cmd := newRootCmd(&out)
			cmd.SetErr(&bytes.Buffer{})
			cmd.SetArgs([]string{"hold", "--to", tc.to, "--for", tc.holdFor.String(), "--interval", "50ms", "--timeout", "300ms"})
			start := time.Now()
			err := cmd.Execute()
			took := time.Since(start)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want an error: %v (output %q)", err, tc.wantErr, out.String())
			}
			if m := heldRE.FindStringSubmatch(out.String()); m != nil {
				if n, _ := strconv.Atoi(m[1]); n < 8 {
					t.Errorf("held with %d echoes, want at least 8 (one per 50ms)", n)
				}
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output %q lacks %q", out.String(), w)
				}
			}
			if took < tc.minTook || took > tc.maxTook {
				t.Errorf("took %v, want between %v and %v", took, tc.minTook, tc.maxTook)
			}
		})
	}
}
