package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startServer runs a test server named name on a free loopback port and
// returns that port.
func startServer(t *testing.T, name string) int {
	t.Helper()
	srv, err := listen("127.0.0.1", []int{0}, name)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		srv.serve(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return srv.ports[0]
}

// closedPort returns a loopback port nothing listens on (TCP and UDP).
func closedPort(t *testing.T) int {
	t.Helper()
	srv, err := listen("127.0.0.1", []int{0}, "x")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p := srv.ports[0]
	srv.close()
	return p
}

// silentTCP accepts connections and never answers.
func silentTCP(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// silentUDP receives datagrams, counts them, and never answers.
func silentUDP(t *testing.T, count *atomic.Int32) int {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			count.Add(1)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc.LocalAddr().(*net.UDPAddr).Port
}

func TestProbe(t *testing.T) {
	port := startServer(t, "pod-a")
	closed := closedPort(t)
	silentT := silentTCP(t)
	var udpCount atomic.Int32
	silentU := silentUDP(t, &udpCount)
	addr := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }

	tests := []struct {
		name    string
		proto   string
		to      string
		timeout time.Duration
		want    string // answer; "" means the probe must fail
		errHas  string
		// the probe must end within maxTook (fail fast) or take at least
		// minTook (wait for the timeout).
		minTook, maxTook time.Duration
	}{
		{name: "tcp", proto: "tcp", to: addr(port), timeout: time.Second, want: "pod-a\n", maxTook: time.Second},
		{name: "udp", proto: "udp", to: addr(port), timeout: time.Second, want: "pod-a\n", maxTook: time.Second},
		{name: "tcp closed port", proto: "tcp", to: addr(closed), timeout: 5 * time.Second, errHas: "refused", maxTook: time.Second},
		{name: "udp closed port", proto: "udp", to: addr(closed), timeout: 5 * time.Second, errHas: "refused", maxTook: time.Second},
		{name: "tcp no answer", proto: "tcp", to: addr(silentT), timeout: 300 * time.Millisecond, errHas: "timeout", minTook: 300 * time.Millisecond, maxTook: 2 * time.Second},
		{name: "udp no answer", proto: "udp", to: addr(silentU), timeout: 300 * time.Millisecond, errHas: "no answer after 3 datagrams", minTook: 300 * time.Millisecond, maxTook: 2 * time.Second},
		{name: "bad protocol", proto: "sctp", to: addr(port), timeout: time.Second, errHas: "unknown protocol", maxTook: time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			cmd := newRootCmd(&out)
			cmd.SetErr(&errOut)
			cmd.SetArgs([]string{"probe", "--proto", tc.proto, "--to", tc.to, "--timeout", tc.timeout.String()})
			start := time.Now()
			err := cmd.Execute()
			took := time.Since(start)
			if tc.want != "" {
				if err != nil {
					t.Fatalf("probe failed: %v", err)
				}
				if out.String() != tc.want {
					t.Errorf("answer %q, want %q", out.String(), tc.want)
				}
			} else {
				if err == nil {
					t.Fatalf("probe succeeded with %q, want an error containing %q", out.String(), tc.errHas)
				}
				if !strings.Contains(err.Error(), tc.errHas) {
					t.Errorf("error %q does not contain %q", err, tc.errHas)
				}
				if out.Len() != 0 {
					t.Errorf("failed probe printed %q to stdout", out.String())
				}
			}
			if took < tc.minTook || took > tc.maxTook {
				t.Errorf("probe took %v, want between %v and %v", took, tc.minTook, tc.maxTook)
			}
		})
	}
	if got := udpCount.Load(); got != udpTries {
		t.Errorf("the silent UDP server got %d datagrams, want %d (retries)", got, udpTries)
	}
}

func TestHTTP(t *testing.T) {
	port := startServer(t, "pod-b")
	url := fmt.Sprintf("http://127.0.0.1:%d/anything", port)

	t.Run("net/http client", func(t *testing.T) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || string(body) != "pod-b\n" {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, "pod-b\n")
		}
	})

	tests := []struct {
		name, request, wantStatus, wantBody string
	}{
		{name: "GET", request: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: "HTTP/1.0 200 OK", wantBody: "pod-b\n"},
		{name: "HEAD", request: "HEAD / HTTP/1.0\r\n\r\n", wantStatus: "HTTP/1.0 200 OK", wantBody: ""},
		{name: "not HTTP", request: "hello\n", wantStatus: "pod-b", wantBody: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.WriteString(c, tc.request); err != nil {
				t.Fatal(err)
			}
			raw, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(bytes.NewReader(raw))
			status, _ := r.ReadString('\n')
			if strings.TrimSpace(status) != tc.wantStatus {
				t.Fatalf("first line %q, want %q (whole answer %q)", status, tc.wantStatus, raw)
			}
			if tc.wantStatus != "HTTP/1.0 200 OK" {
				return
			}
			_, body, _ := strings.Cut(string(raw), "\r\n\r\n")
			if body != tc.wantBody {
				t.Errorf("body %q, want %q", body, tc.wantBody)
			}
			if !strings.Contains(string(raw), fmt.Sprintf("Content-Length: %d\r\n", len("pod-b\n"))) {
				t.Errorf("no correct Content-Length in %q", raw)
			}
		})
	}
}

func TestPodName(t *testing.T) {
	t.Setenv("POD_NAME", "from-env")
	if n, err := podName(); err != nil || n != "from-env" {
		t.Errorf("podName() = %q, %v; want from-env", n, err)
	}
	t.Setenv("POD_NAME", "")
	n, err := podName()
	if err != nil || n == "" {
		t.Errorf("podName() without POD_NAME = %q, %v; want the host name", n, err)
	}
}

// TestListenFamilies: the default (empty) host serves IPv4 and IPv6 on one
// port, as a dual-stack pod needs; an IPv4 or IPv6 host serves only its own
// family.
func TestListenFamilies(t *testing.T) {
	for _, tc := range []struct {
		host     string
		v4, v6   bool // answers on 127.0.0.1, on ::1
		wantName string
	}{
		{host: "", v4: true, v6: true, wantName: "both"},
		{host: "0.0.0.0", v4: true, wantName: "ipv4"},
		{host: "::", v6: true, wantName: "ipv6"},
	} {
		t.Run(tc.wantName, func(t *testing.T) {
			srv, err := listen(tc.host, []int{0}, tc.wantName)
			if err != nil {
				t.Fatalf("listen %q: %v", tc.host, err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { srv.serve(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			port := strconv.Itoa(srv.ports[0])
			for _, c := range []struct {
				addr string
				want bool
			}{{"127.0.0.1", tc.v4}, {"::1", tc.v6}} {
				for _, proto := range []string{"tcp", "udp"} {
					to := net.JoinHostPort(c.addr, port)
					got, err := probe(context.Background(), proto, to, 300*time.Millisecond)
					switch {
					case c.want && (err != nil || got != tc.wantName+"\n"):
						t.Errorf("host %q: %s %s: %q, %v; want an answer", tc.host, proto, to, got, err)
					case !c.want && err == nil:
						t.Errorf("host %q: %s %s answered %q; want no answer", tc.host, proto, to, got)
					}
				}
			}
		})
	}
}
