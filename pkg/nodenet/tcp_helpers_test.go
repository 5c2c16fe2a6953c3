package nodenet_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// serveWhoAmI starts a TCP server (IPv4 or IPv6) listening on addr inside network
// namespace netns that answers every connection with one line,
// "<name> <remote address>", and closes it: the client learns who answered
// and which source address the server saw. It stops at cleanup.
func serveWhoAmI(t *testing.T, netns, addr, name string) {
	t.Helper()
	var l net.Listener
	err := ns.WithNetNSPath("/run/netns/"+netns, func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", addr) // the socket stays in netns
		return err
	})
	if err != nil {
		t.Fatalf("listening on %s in netns %s: %v", addr, netns, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return // closed at cleanup
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr())
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
}

// whoAnswers connects from network namespace netns to addr (TCP, IPv4 or IPv6, within
// timeout) and returns the server's name and the source address it saw
// (see serveWhoAmI).
func whoAnswers(netns, addr string, timeout time.Duration) (name string, seen *net.TCPAddr, err error) {
	var c net.Conn
	err = ns.WithNetNSPath("/run/netns/"+netns, func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", addr, timeout) // the socket is created in netns
		return err
	})
	if err != nil {
		return "", nil, fmt.Errorf("connecting from %s to %s: %w", netns, addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", nil, fmt.Errorf("reading the answer of %s: %w", addr, err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return "", nil, fmt.Errorf("unexpected answer %q from %s", line, addr)
	}
	seen, err = net.ResolveTCPAddr("tcp", f[1])
	if err != nil {
		return "", nil, fmt.Errorf("answer %q from %s: %w", line, addr, err)
	}
	return f[0], seen, nil
}

// waitAnswer retries whoAnswers until it succeeds or deadline passes (a
// server goroutine or a fresh neighbour entry may need a moment).
func waitAnswer(netns, addr string, within time.Duration) (string, *net.TCPAddr, error) {
	deadline := time.Now().Add(within)
	for {
		name, seen, err := whoAnswers(netns, addr, time.Second)
		if err == nil || time.Now().After(deadline) {
			return name, seen, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
