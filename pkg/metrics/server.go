package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
)

// Check is one health check: Run returns nil when healthy.
type Check struct {
	Name string
	Run  func(ctx context.Context) error
}

// checkTimeout bounds one check; a check that does not return in time
// fails (that is what "responsive" means for /healthz).
const checkTimeout = 5 * time.Second

// ServerConfig configures the HTTP server.
type ServerConfig struct {
	// Address is the listen address, e.g. ":9495".
	Address string
	// Metrics is served on /metrics (nil: /metrics is not served).
	Metrics *Metrics
	// Live are the checks of /healthz, Ready those of /readyz.
	Live, Ready []Check
	Logger      klog.Logger
}

// Server serves /metrics, /healthz and /readyz.
type Server struct {
	cfg  ServerConfig
	l    net.Listener
	http *http.Server
}

// Listen opens the listening socket (so a port clash is reported at once)
// without serving yet.
func Listen(cfg ServerConfig) (*Server, error) {
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = klog.Background()
	}
	l, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("metrics and health server: listening on %s: %w", cfg.Address, err)
	}
	return &Server{cfg: cfg, l: l, http: &http.Server{Handler: Handler(cfg), ReadHeaderTimeout: 10 * time.Second}}, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// Serve serves until ctx ends, then shuts down (waiting up to 5 s for
// requests in flight).
func (s *Server) Serve(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.http.Shutdown(sctx)
	}()
	s.cfg.Logger.Info("Serving metrics and health", "address", s.l.Addr().String())
	err := s.http.Serve(s.l)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("metrics and health server: %w", err)
}

// Handler returns the HTTP handler of cfg: /metrics, /healthz, /readyz.
func Handler(cfg ServerConfig) http.Handler {
	mux := http.NewServeMux()
	if cfg.Metrics != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(cfg.Metrics.Registry(), promhttp.HandlerOpts{
			ErrorLog: promLogger{cfg.Logger}, ErrorHandling: promhttp.ContinueOnError}))
	}
	mux.Handle("/healthz", checkHandler(cfg.Live))
	mux.Handle("/readyz", checkHandler(cfg.Ready))
	return mux
}

// checkHandler runs checks concurrently and answers 200 when all passed,
// else 503; the body names each check, as Kubernetes' components do:
// "[+]name ok" or "[-]name failed: reason".
func checkHandler(checks []Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), checkTimeout)
		defer cancel()
		errs := make([]error, len(checks))
		var wg sync.WaitGroup
		for i, c := range checks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = runCheck(ctx, c)
			}()
		}
		wg.Wait()
		var b strings.Builder
		failed := false
		for i, c := range checks {
			if errs[i] != nil {
				failed = true
				fmt.Fprintf(&b, "[-]%s failed: %v\n", c.Name, errs[i])
			} else {
				fmt.Fprintf(&b, "[+]%s ok\n", c.Name)
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if failed {
			w.WriteHeader(http.StatusServiceUnavailable)
			b.WriteString("check failed\n")
		} else {
			b.WriteString("ok\n")
		}
		_, _ = w.Write([]byte(b.String()))
	})
}

// runCheck runs c, failing it when it outlasts ctx.
func runCheck(ctx context.Context, c Check) error {
	res := make(chan error, 1)
	go func() { res <- c.Run(ctx) }()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no answer within %s", checkTimeout)
	}
}

// promLogger adapts klog to promhttp's error log.
type promLogger struct{ log klog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Error(errors.New(fmt.Sprint(v...)), "Serving metrics failed")
}
