package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2/ktesting"
)

// freePort returns a TCP port free on 127.0.0.1 (and, if the host has
// IPv6 loopback, on ::1) just now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := uint16(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		if !haveIPv6Loopback() {
			return p
		}
		if l6, err := net.Listen("tcp6", fmt.Sprintf("[::1]:%d", p)); err == nil {
			l6.Close()
			return p
		}
	}
	t.Fatal("no port free on both loopbacks")
	return 0
}

func haveIPv6Loopback() bool {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// probe GETs the health check at addr the way a load balancer does and
// returns the status, the weight header and the body.
func probe(t *testing.T, addr string) (int, string, healthResponse, error) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, "", healthResponse{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var body healthResponse
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("body %q: %v", raw, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	return resp.StatusCode, resp.Header.Get("X-Load-Balancing-Endpoint-Weight"), body, nil
}

func TestHealthServer(t *testing.T) {
	bind := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	has6 := haveIPv6Loopback()
	if has6 {
		bind = append(bind, netip.MustParseAddr("::1"))
	}
	var healthy atomic.Bool
	healthy.Store(true)
	h := newHealthServer(ktesting.NewLogger(t, ktesting.NewConfig()), bind, healthy.Load)
	t.Cleanup(h.closeAll)
	port := freePort(t)
	a4 := fmt.Sprintf("127.0.0.1:%d", port)
	a6 := fmt.Sprintf("[::1]:%d", port)

	check := func(what, addr string, wantStatus, wantCount int, wantHealthy bool) {
		t.Helper()
		status, weight, body, err := probe(t, addr)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if status != wantStatus || weight != fmt.Sprint(wantCount) || body.LocalEndpoints != wantCount ||
			body.ServiceProxyHealthy != wantHealthy || body.Service.Namespace != "shop" || body.Service.Name != "web" {
			t.Errorf("%s: status %d weight %q body %+v; want %d, %d local endpoints, healthy %v", what, status, weight, body,
				wantStatus, wantCount, wantHealthy)
		}
	}
	refused := func(what, addr string) {
		t.Helper()
		if _, _, _, err := probe(t, addr); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%s: %s answered or failed otherwise (%v); want connection refused", what, addr, err)
		}
	}

	if err := h.sync("shop/web", healthCheck{port: port, local: map[corev1.IPFamily]int{v4: 2, v6: 0}}); err != nil {
		t.Fatal(err)
	}
	check("two local endpoints", a4, http.StatusOK, 2, true)
	if has6 {
		check("IPv6: none", a6, http.StatusServiceUnavailable, 0, true)
	}
	if err := h.sync("shop/web", healthCheck{port: port, local: map[corev1.IPFamily]int{v4: 0, v6: 1}}); err != nil {
		t.Fatal(err)
	}
	check("no local endpoint", a4, http.StatusServiceUnavailable, 0, true)
	if has6 {
		check("IPv6: one", a6, http.StatusOK, 1, true)
	}
	healthy.Store(false)
	if err := h.sync("shop/web", healthCheck{port: port, local: map[corev1.IPFamily]int{v4: 1}}); err != nil {
		t.Fatal(err)
	}
	check("proxy not healthy", a4, http.StatusServiceUnavailable, 1, false)
	healthy.Store(true)
	check("proxy healthy again", a4, http.StatusOK, 1, true)
	if has6 {
		refused("IPv6 family gone", a6)
	}
	if got := h.ports(); len(got) != 1 || got["shop/web"] != port {
		t.Errorf("ports %v", got)
	}

	// A new port: the old one closes.
	port2 := freePort(t)
	if err := h.sync("shop/web", healthCheck{port: port2, local: map[corev1.IPFamily]int{v4: 1}}); err != nil {
		t.Fatal(err)
	}
	refused("old port", a4)
	check("new port", fmt.Sprintf("127.0.0.1:%d", port2), http.StatusOK, 1, true)

	// A port someone else holds: an error, and a retry once it is free.
	port3 := freePort(t)
	busy, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port3))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.sync("shop/other", healthCheck{port: port3, local: map[corev1.IPFamily]int{v4: 1}}); err == nil {
		t.Error("listening on a busy port succeeded")
	}
	if _, ok := h.ports()["shop/other"]; ok {
		t.Error("a health check that could not listen is listed as served")
	}
	busy.Close()
	if err := h.sync("shop/other", healthCheck{port: port3, local: map[corev1.IPFamily]int{v4: 1}}); err != nil {
		t.Fatalf("retry after the port was freed: %v", err)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port3))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("shop/other after the retry: status %d", resp.StatusCode)
	}

	// No health check any more (port 0): closed.
	if err := h.sync("shop/web", healthCheck{}); err != nil {
		t.Fatal(err)
	}
	refused("removed", fmt.Sprintf("127.0.0.1:%d", port2))
	h.closeAll()
	refused("all closed", fmt.Sprintf("127.0.0.1:%d", port3))
}
