package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
)

const (
	// requestWait is how long a TCP client has to start an HTTP request
	// before it gets the bare name.
	requestWait = 200 * time.Millisecond
	// ioTimeout bounds reading the rest of an HTTP request and writing answers.
	ioTimeout = 2 * time.Second
	// holdRequest, as a TCP client's first line, makes the connection
	// long-lived (see hold).
	holdRequest = "HOLD"
	// holdIdle ends a held connection whose client stays silent this long.
	holdIdle = 30 * time.Second
)

// httpMethods are the request-line prefixes that make a TCP answer HTTP.
var httpMethods = []string{"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ", "PATCH "}

func newServeCmd() *cobra.Command {
	var ports []int
	var host string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Answer TCP, HTTP and UDP requests on every port with the pod name",
		RunE: func(cmd *cobra.Command, _ []string) error {
			name, err := podName()
			if err != nil {
				return err
			}
			srv, err := listen(host, ports, name)
			if err != nil {
				return err
			}
			klog.InfoS("Serving", "name", name, "host", host, "ports", srv.ports)
			srv.serve(cmd.Context())
			return nil
		},
	}
	cmd.Flags().IntSliceVar(&ports, "ports", []int{80, 81}, "ports to listen on (TCP and UDP each)")
	cmd.Flags().StringVar(&host, "host", "", `address to listen on ("": every address of both families; 0.0.0.0: IPv4 only; "::": IPv6 only)`)
	return cmd
}

// podName is $POD_NAME, or the host name if it is unset.
func podName() (string, error) {
	if n := os.Getenv("POD_NAME"); n != "" {
		return n, nil
	}
	n, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("no POD_NAME and no host name: %w", err)
	}
	return n, nil
}

// server holds the listeners of a running test server.
type server struct {
	name  string
	ports []int
	tcp   []net.Listener
	udp   []net.PacketConn
}

// listen opens a TCP and a UDP socket on host for each port. Port 0 picks a
// free TCP port and uses the same number for UDP. An empty host is one
// dual-stack socket per protocol and port (IPv4 and IPv6, as a dual-stack
// pod needs); an IPv4 address, 0.0.0.0 included, listens on IPv4 only, an
// IPv6 one, :: included, on IPv6 only.
func listen(host string, ports []int, name string) (*server, error) {
	s := &server{name: name}
	tcp, udp := "tcp", "udp"
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		tcp, udp = "tcp4", "udp4"
	} else if ip != nil {
		tcp, udp = "tcp6", "udp6"
	}
	for _, p := range ports {
		ln, err := net.Listen(tcp, net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			s.close()
			return nil, fmt.Errorf("listening on tcp port %d: %w", p, err)
		}
		p = ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket(udp, net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			ln.Close()
			s.close()
			return nil, fmt.Errorf("listening on udp port %d: %w", p, err)
		}
		s.tcp, s.udp, s.ports = append(s.tcp, ln), append(s.udp, pc), append(s.ports, p)
	}
	return s, nil
}

func (s *server) close() {
	for _, ln := range s.tcp {
		ln.Close()
	}
	for _, pc := range s.udp {
		pc.Close()
	}
}

// serve answers requests until ctx ends, then closes the sockets and waits
// for the handlers.
func (s *server) serve(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range s.tcp {
		wg.Go(func() { s.serveTCP(s.tcp[i], s.ports[i], &wg) })
		wg.Go(func() { s.serveUDP(s.udp[i], s.ports[i]) })
	}
	<-ctx.Done()
	s.close()
	wg.Wait()
}

func (s *server) serveTCP(ln net.Listener, port int, wg *sync.WaitGroup) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				klog.ErrorS(err, "Accept failed", "port", port)
			}
			return
		}
		wg.Go(func() { s.answerTCP(c, port) })
	}
}

// answerTCP writes the name to c, as an HTTP response if the client sends a
// request line within requestWait.
func (s *server) answerTCP(c net.Conn, port int) {
	defer c.Close()
	kind := "tcp"
	body := s.name + "\n"
	answer := body
	r := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(requestWait))
	first, err := r.Peek(4)
	if err == nil || len(first) > 0 {
		// Wait for the whole method token before deciding.
		_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
		line, _ := r.ReadString('\n')
		if strings.TrimSpace(line) == holdRequest {
			s.hold(c, r, port)
			return
		}
		if isHTTP(line) {
			kind = "http"
			// Drain the header block so the client sees a clean close.
			for {
				h, err := r.ReadString('\n')
				if err != nil || strings.TrimSpace(h) == "" {
					break
				}
			}
			answer = fmt.Sprintf("HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"+
				"Content-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
			if strings.HasPrefix(line, "HEAD ") {
				answer = strings.TrimSuffix(answer, body)
			}
		}
	}
	_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err = c.Write([]byte(answer))
	klog.InfoS("Request", "proto", kind, "port", port, "from", c.RemoteAddr().String(), "err", err)
}

// hold serves a long-lived connection: the name, then every line the client
// sends echoed back, until the client closes or stays silent for holdIdle.
func (s *server) hold(c net.Conn, r *bufio.Reader, port int) {
	_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write([]byte(s.name + "\n")); err != nil {
		klog.InfoS("Hold", "port", port, "from", c.RemoteAddr().String(), "err", err)
		return
	}
	echoes := 0
	for {
		_ = c.SetReadDeadline(time.Now().Add(holdIdle))
		line, err := r.ReadString('\n')
		if err != nil {
			klog.InfoS("Hold ended", "port", port, "from", c.RemoteAddr().String(), "echoes", echoes, "err", err)
			return
		}
		_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
		if _, err := c.Write([]byte(line)); err != nil {
			klog.InfoS("Hold ended", "port", port, "from", c.RemoteAddr().String(), "echoes", echoes, "err", err)
			return
		}
		echoes++
	}
}

func isHTTP(line string) bool {
	for _, m := range httpMethods {
		if strings.HasPrefix(line, m) {
			return true
		}
	}
	return false
}

func (s *server) serveUDP(pc net.PacketConn, port int) {
	buf := make([]byte, 64*1024)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				klog.ErrorS(err, "UDP read failed", "port", port)
			}
			return
		}
		_, err = pc.WriteTo([]byte(s.name+"\n"), from)
		klog.InfoS("Request", "proto", "udp", "port", port, "from", from.String(), "err", err)
	}
}
