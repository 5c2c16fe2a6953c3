package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"

	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/cniserver"
	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/policy"
)

// Agent is what ovs-agent needs: the Metrics (hand it to the components
// as their Observer), the sources read at scrape time, and the health
// checks. The components are attached with the Set methods as start-up
// creates them; until then their metrics are absent and /readyz fails.
// /healthz passes during start-up: start-up has its own logs and timeouts.
type Agent struct {
	*Metrics
	cni  atomic.Pointer[cniserver.Server]
	sw   atomic.Pointer[openflow.Switch]
	pipe atomic.Pointer[pipeline.Pipeline]
	pol  atomic.Pointer[policy.Controller]
	// cniSocket is set once the CNI server is about to serve on it.
	cniSocket atomic.Pointer[string]
}

// NewAgent creates the agent's metrics and registers its scrape-time
// sources.
func NewAgent() *Agent {
	a := &Agent{Metrics: New()}
	if err := a.RegisterSources(a.sources()); err != nil {
		panic(fmt.Sprintf("metrics: registering agent sources: %v", err)) // a programming error: duplicate names
	}
	return a
}

// SetSwitch attaches the OpenFlow connection.
func (a *Agent) SetSwitch(sw *openflow.Switch) { a.sw.Store(sw) }

// SetPipeline attaches the pipeline (flow table names, policy counters).
func (a *Agent) SetPipeline(p *pipeline.Pipeline) { a.pipe.Store(p) }

// SetCNIServer attaches the CNI server, which serves on socket.
func (a *Agent) SetCNIServer(s *cniserver.Server, socket string) {
	a.cni.Store(s)
	a.cniSocket.Store(&socket)
}

// SetPolicyController attaches the NetworkPolicy controller.
func (a *Agent) SetPolicyController(c *policy.Controller) { a.pol.Store(c) }

// LiveChecks are /healthz's checks: the CNI server's gRPC loop answers a
// STATUS call on its socket (whatever the answer), and the OpenFlow
// connection's request path is not stuck.
func (a *Agent) LiveChecks() []Check {
	return []Check{
		{Name: "cni-server", Run: func(ctx context.Context) error {
			p := a.cniSocket.Load()
			if p == nil {
				return nil // starting
			}
			_, err := CNIStatus(ctx, *p)
			return err
		}},
	}
}

// ReadyChecks are /readyz's checks: the CNI server is ready (what STATUS
// reports) and the OpenFlow connection is up.
func (a *Agent) ReadyChecks() []Check {
	return []Check{
		{Name: "cni-server", Run: func(context.Context) error {
			s := a.cni.Load()
			if s == nil || !s.Ready() {
				return errors.New("the agent is not ready for pods (bridge, pipeline or state restore in progress)")
			}
			return nil
		}},
		{Name: "openflow", Run: func(context.Context) error {
			sw := a.sw.Load()
			if sw == nil {
				return errors.New("not connected yet")
			}
			if st := sw.State(); st != openflow.StateReady {
				return fmt.Errorf("connection %s", st)
			}
			return nil
		}},
	}
}

// ServerConfig returns the server configuration for address.
func (a *Agent) ServerConfig(address string, log klog.Logger) ServerConfig {
	return ServerConfig{Address: address, Metrics: a.Metrics, Live: a.LiveChecks(), Ready: a.ReadyChecks(), Logger: log}
}

// Start listens on address and serves until ctx ends or the returned
// stop function is called; stop also waits for the server to finish. An
// empty address serves nothing.
func (a *Agent) Start(ctx context.Context, address string, log klog.Logger) (stop func(), err error) {
	if address == "" {
		log.Info("Metrics and health server disabled (metricsAddress is empty)")
		return func() {}, nil
	}
	srv, err := Listen(a.ServerConfig(address, log))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx); err != nil {
			log.Error(err, "Metrics and health server stopped")
		}
	}()
	return func() {
		cancel()
		wg.Wait()
	}, nil
}

func (a *Agent) sources() Sources {
	return Sources{
		FlowsPerTable: func() map[string]int {
			sw := a.sw.Load()
			if sw == nil {
				return nil
			}
			out := map[string]int{}
			for id, n := range sw.Cache().TableLens() {
				name, ok := pipeline.TableName(id)
				if !ok {
					name = strconv.Itoa(int(id))
				}
				out[name] += n
			}
			return out
		},
		LocalPods: func() int {
			if s := a.cni.Load(); s != nil {
				return s.Interfaces().Len()
			}
			return 0
		},
		PolicyRules: func() int {
			if c := a.pol.Load(); c != nil {
				return c.Stats().Rules
			}
			return 0
		},
		PolicyRulePackets: func(ctx context.Context) (map[string]uint64, error) {
			p := a.pipe.Load()
			if p == nil || len(p.PolicyRules()) == 0 {
				return nil, nil
			}
			stats, err := p.PolicyRuleStats(ctx)
			if err != nil {
				return nil, err
			}
			out := map[string]uint64{}
			for id, c := range stats {
				name := strconv.FormatUint(uint64(id), 10)
				if r, ok := p.PolicyRule(id); ok && r.Name != "" {
					name = r.Name
				}
				out[name] += c.Packets
			}
			return out, nil
		},
		IsolationDrops: func(ctx context.Context) ([]IsolationDrop, error) {
			pipe, s := a.pipe.Load(), a.cni.Load()
			if pipe == nil || s == nil {
				return nil, nil
			}
			return isolationDrops(ctx, pipe, s.Interfaces())
		},
	}
}

// isolationDrops names the isolated pods' default drops the pipeline
// realized, with their counters, by the interface store: an egress drop by
// the pod's IP, an ingress drop by its OpenFlow port.
func isolationDrops(ctx context.Context, pipe *pipeline.Pipeline, ifaces *interfacestore.Store) ([]IsolationDrop, error) {
	drops, err := pipe.IsolationDrops(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]IsolationDrop, 0, len(drops))
	for _, d := range drops {
		var i interfacestore.Interface
		var ok bool
		dir, what := "ingress", fmt.Sprint("ofport ", d.Pod.OFPort)
		if d.Direction == pipeline.Egress {
			dir, what = "egress", d.Pod.IP.String()
			if ip, valid := netip.AddrFromSlice(d.Pod.IP); valid {
				i, ok = ifaces.ByIP(ip)
			}
		} else {
			i, ok = ifaces.ByOFPort(d.Pod.OFPort)
		}
		pod := "unknown:" + what
		switch {
		case ok && i.PodName != "":
			pod = i.PodNamespace + "/" + i.PodName
		case ok:
			pod = i.Key()
		}
		out = append(out, IsolationDrop{Direction: dir, Pod: pod, Packets: d.Counters.Packets})
	}
	return out, nil
}
