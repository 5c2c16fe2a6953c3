package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// healthReadHeaderTimeout bounds reading a health check request's header,
// so a client that opens a connection and sends nothing holds no
// goroutine for long.
const healthReadHeaderTimeout = 5 * time.Second

// healthServer serves the healthCheckNodePorts of the Services with
// externalTrafficPolicy Local, as kube-proxy does: a cloud load balancer
// probes every node at that port and sends clients only to nodes that
// answer 200, which are those with a ready local endpoint. Each Service
// gets an HTTP server per family it has (like kube-proxy's one proxier per
// family) on each bind address of that family; the body, the headers and
// the status follow kube-proxy's.
type healthServer struct {
	log     klog.Logger
	bind    []netip.Addr
	healthy func() bool // the proxy has realized its state (serviceProxyHealthy)

	mu       sync.Mutex
	services map[string]*hcService // by namespace/name
}

type hcService struct {
	port    uint16
	servers map[corev1.IPFamily][]*http.Server
	local   map[corev1.IPFamily]int
}

// healthResponse is the body kube-proxy answers with.
type healthResponse struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

func newHealthServer(log klog.Logger, bind []netip.Addr, healthy func() bool) *healthServer {
	if len(bind) == 0 {
		bind = []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()}
	}
	return &healthServer{log: log, bind: bind, healthy: healthy, services: map[string]*hcService{}}
}

// sync makes the health check of the Service named key match hc: servers
// are opened for the families hc has local counts for (port 0: none) and
// closed for the others, and the counts are what the servers answer from
// now on. A server that cannot listen is reported in the error and tried
// again at the next sync.
func (h *healthServer) sync(key string, hc healthCheck) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.services[key]
	if s != nil && (hc.port == 0 || hc.port != s.port) {
		h.log.V(2).Info("Closing a health check", "service", key, "port", s.port)
		s.close()
		delete(h.services, key)
		s = nil
	}
	if hc.port == 0 {
		return nil
	}
	if s == nil {
		s = &hcService{port: hc.port, servers: map[corev1.IPFamily][]*http.Server{}}
		h.services[key] = s
	}
	s.local = hc.local
	for f, servers := range s.servers {
		if _, ok := hc.local[f]; !ok {
			closeServers(servers)
			delete(s.servers, f)
		}
	}
	var errs []error
	for f := range hc.local {
		if _, ok := s.servers[f]; ok {
			continue
		}
		servers, err := h.listen(key, f, hc.port)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		h.log.V(2).Info("Serving a health check", "service", key, "port", hc.port, "family", f)
		s.servers[f] = servers
	}
	return errors.Join(errs...)
}

// listen opens the servers of one family on every bind address of it.
func (h *healthServer) listen(key string, family corev1.IPFamily, port uint16) ([]*http.Server, error) {
	network := "tcp4"
	if family == corev1.IPv6Protocol {
		network = "tcp6"
	}
	var servers []*http.Server
	for _, ip := range h.bind {
		if familyOf(ip) != family {
			continue
		}
		addr := netip.AddrPortFrom(ip, port).String()
		var lc net.ListenConfig
		l, err := lc.Listen(context.Background(), network, addr)
		if err != nil {
			closeServers(servers)
			return nil, fmt.Errorf("health check of service %s: listening on %s: %w", key, addr, err)
		}
		srv := &http.Server{Handler: h.handler(key, family), ReadHeaderTimeout: healthReadHeaderTimeout}
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				h.log.Error(err, "Health check server stopped", "service", key, "address", addr)
			}
		}()
		servers = append(servers, srv)
	}
	return servers, nil
}

// handler answers any path, as kube-proxy's does.
func (h *healthServer) handler(key string, family corev1.IPFamily) http.Handler {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.mu.Lock()
		s, ok := h.services[key]
		count := 0
		if ok {
			count = s.local[family]
		}
		h.mu.Unlock()
		if !ok {
			// The Service went away between accept and now.
			http.Error(w, "no such health check", http.StatusServiceUnavailable)
			return
		}
		var body healthResponse
		body.Service.Namespace, body.Service.Name = ns, name
		body.LocalEndpoints = count
		body.ServiceProxyHealthy = h.healthy()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(count))
		if count > 0 && body.ServiceProxyHealthy {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(&body)
	})
}

// ports returns the health check port of each Service served, by
// namespace/name.
func (h *healthServer) ports() map[string]uint16 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]uint16, len(h.services))
	for k, s := range h.services {
		if len(s.servers) > 0 {
			out[k] = s.port
		}
	}
	return out
}

// closeAll closes every server.
func (h *healthServer) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, s := range h.services {
		s.close()
		delete(h.services, k)
	}
}

func (s *hcService) close() {
	for f, servers := range s.servers {
		closeServers(servers)
		delete(s.servers, f)
	}
}

func closeServers(servers []*http.Server) {
	for _, srv := range servers {
		// Close, not Shutdown: a probe in flight may fail, as kube-proxy's
		// do; the load balancer probes again.
		_ = srv.Close()
	}
}
