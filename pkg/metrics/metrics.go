// Package metrics holds ovs-agent's Prometheus metrics and its health
// endpoints. A Metrics owns its own prometheus.Registry (no global
// registry); it implements the observer interfaces of pkg/openflow,
// pkg/ovsdb, pkg/cniserver and pkg/policy, which count and time what those
// packages do, and reads gauges that are cheap to compute (flows per table,
// local pods, policy rules, policy packet counters) from Sources when
// scraped. Server serves /metrics, /healthz and /readyz. See
// docs/tooling.md, "Metrics and health".
package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// namespace prefixes every metric name: weir_agent_...
const (
	namespace = "weir"
	subsystem = "agent"
)

// Histogram buckets: OpenFlow, OVSDB and CNI operations take from well
// under a millisecond (a cached STATUS) to seconds (a pod ADD on a busy
// node, a bundle of 100,000 flows).
var latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// Metrics is the agent's set of metrics and the registry that holds them.
// Its observer methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	ofRequests   *prometheus.CounterVec
	ofErrors     *prometheus.CounterVec
	ofLatency    *prometheus.HistogramVec
	ofFlowMods   prometheus.Counter
	ofReconnects prometheus.Counter

	ovsdbTxns    prometheus.Counter
	ovsdbErrors  prometheus.Counter
	ovsdbLatency prometheus.Histogram

	cniRequests *prometheus.CounterVec
	cniErrors   *prometheus.CounterVec
	cniLatency  *prometheus.HistogramVec

	policySyncs       prometheus.Counter
	policySyncErrors  prometheus.Counter
	policySyncLatency prometheus.Histogram

	kube *kubeMetrics // the Kubernetes client's bytes, the initial sync (kube.go)
}

func name(n string) string { return prometheus.BuildFQName(namespace, subsystem, n) }

// New creates the metrics in a new registry, together with the Go runtime
// and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		ofRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("openflow_requests_total"),
			Help: "OpenFlow requests sent to ovs-vswitchd, by operation (bundle, flow_mods, flow_stats, barrier)."}, []string{"op"}),
		ofErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("openflow_request_errors_total"),
			Help: "OpenFlow requests that failed (rejected by OVS, not connected, timed out), by operation."}, []string{"op"}),
		ofLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name("openflow_request_duration_seconds"),
			Help: "Duration of OpenFlow requests until the barrier reply, by operation.", Buckets: latencyBuckets}, []string{"op"}),
		ofFlowMods: prometheus.NewCounter(prometheus.CounterOpts{Name: name("openflow_flow_mods_total"),
			Help: "flow_mod messages sent to ovs-vswitchd (in bundles or not)."}),
		ofReconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: name("openflow_reconnects_total"),
			Help: "OpenFlow connections re-established after a loss (each replays the flow cache)."}),
		ovsdbTxns: prometheus.NewCounter(prometheus.CounterOpts{Name: name("ovsdb_transactions_total"),
			Help: "OVSDB transactions sent to ovsdb-server."}),
		ovsdbErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: name("ovsdb_transaction_errors_total"),
			Help: "OVSDB transactions that failed."}),
		ovsdbLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: name("ovsdb_transaction_duration_seconds"),
			Help: "Duration of OVSDB transactions.", Buckets: latencyBuckets}),
		cniRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("cni_requests_total"),
			Help: "CNI requests answered, by command (ADD, DEL, CHECK, STATUS, GC)."}, []string{"command"}),
		cniErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("cni_request_errors_total"),
			Help: "CNI requests answered with an error, by command and CNI error code."}, []string{"command", "code"}),
		cniLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name("cni_request_duration_seconds"),
			Help: "Duration of CNI requests in the agent, by command.", Buckets: latencyBuckets}, []string{"command"}),
		policySyncs: prometheus.NewCounter(prometheus.CounterOpts{Name: name("policy_syncs_total"),
			Help: "NetworkPolicy batches realized (or attempted) by the policy controller."}),
		policySyncErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: name("policy_sync_errors_total"),
			Help: "NetworkPolicy batches that failed (and are retried)."}),
		policySyncLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: name("policy_sync_duration_seconds"),
			Help: "Duration of one NetworkPolicy batch: model computation and flow changes.", Buckets: latencyBuckets}),
		kube: newKubeMetrics(),
	}
	m.reg.MustRegister(m.ofRequests, m.ofErrors, m.ofLatency, m.ofFlowMods, m.ofReconnects,
		m.ovsdbTxns, m.ovsdbErrors, m.ovsdbLatency, m.cniRequests, m.cniErrors, m.cniLatency,
		m.policySyncs, m.policySyncErrors, m.policySyncLatency, m.kube.received,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Commands are few and known: show them at zero from the start.
	for _, c := range []string{"ADD", "DEL", "CHECK", "STATUS", "GC"} {
		m.cniRequests.WithLabelValues(c)
	}
	return m
}

// Registry returns the registry holding the metrics.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// OpenFlowRequest implements openflow.Observer.
func (m *Metrics) OpenFlowRequest(op string, messages int, d time.Duration, err error) {
	m.ofRequests.WithLabelValues(op).Inc()
	m.ofLatency.WithLabelValues(op).Observe(d.Seconds())
	if messages > 0 && op != "flow_stats" {
		m.ofFlowMods.Add(float64(messages))
	}
	if err != nil {
		m.ofErrors.WithLabelValues(op).Inc()
	}
}

// OpenFlowReconnect implements openflow.Observer.
func (m *Metrics) OpenFlowReconnect() { m.ofReconnects.Inc() }

// OVSDBTransaction implements ovsdb.Observer.
func (m *Metrics) OVSDBTransaction(d time.Duration, err error) {
	m.ovsdbTxns.Inc()
	m.ovsdbLatency.Observe(d.Seconds())
	if err != nil {
		m.ovsdbErrors.Inc()
	}
}

// CNIRequest implements cniserver.Observer.
func (m *Metrics) CNIRequest(command string, code uint32, d time.Duration) {
	m.cniRequests.WithLabelValues(command).Inc()
	m.cniLatency.WithLabelValues(command).Observe(d.Seconds())
	if code != 0 {
		m.cniErrors.WithLabelValues(command, strconv.FormatUint(uint64(code), 10)).Inc()
	}
}

// PolicySync implements policy.Observer.
func (m *Metrics) PolicySync(d time.Duration, _ int, err error) {
	m.policySyncs.Inc()
	m.policySyncLatency.Observe(d.Seconds())
	if err != nil {
		m.policySyncErrors.Inc()
	}
}

// Sources supply the values read at scrape time. Every field is optional;
// a nil one leaves its metrics out.
type Sources struct {
	// FlowsPerTable returns the number of flows per table name (the
	// switch's flow cache: no round trip).
	FlowsPerTable func() map[string]int
	// LocalPods returns the number of pod interfaces on this node.
	LocalPods func() int
	// PolicyRules returns the number of policy rules realized.
	PolicyRules func() int
	// PolicyRulePackets returns the packets matched by each policy rule
	// (allowed by it), by rule name. It reads flow counters from OVS.
	PolicyRulePackets func(ctx context.Context) (map[string]uint64, error)
	// IsolationDrops returns the packets dropped by the default deny of
	// isolated pods. It reads flow counters from OVS.
	IsolationDrops func(ctx context.Context) ([]IsolationDrop, error)
}

// IsolationDrop is the packet count of one isolated pod's default deny.
type IsolationDrop struct {
	Direction string // ingress or egress
	Pod       string // namespace/name, or the container key outside Kubernetes
	Packets   uint64
}

// scrapeTimeout bounds the OVS reads of one scrape.
const scrapeTimeout = 5 * time.Second

// RegisterSources adds a collector reading src at every scrape.
func (m *Metrics) RegisterSources(src Sources) error {
	return m.reg.Register(&sourceCollector{src: src})
}

var (
	descFlows = prometheus.NewDesc(name("openflow_flows"),
		"Flows installed by the agent, by table (from its flow cache).", []string{"table"}, nil)
	descPods = prometheus.NewDesc(name("local_pods"),
		"Pod interfaces the agent set up on this node.", nil, nil)
	descRules = prometheus.NewDesc(name("policy_rules"),
		"NetworkPolicy rules realized on this node.", nil, nil)
	descRulePackets = prometheus.NewDesc(name("policy_rule_packets_total"),
		"Packets allowed by a NetworkPolicy rule (read from its flows' counters; resets when they are reinstalled).",
		[]string{"rule"}, nil)
	descDenied = prometheus.NewDesc(name("policy_denied_packets_total"),
		"Packets dropped by the default deny of an isolated pod (read from the drop flows' counters).",
		[]string{"direction", "pod"}, nil)
	descScrapeErrors = prometheus.NewDesc(name("metrics_source_errors"),
		"1 if reading a source of metrics failed during this scrape.", []string{"source"}, nil)
)

// sourceCollector reads Sources at scrape time.
type sourceCollector struct{ src Sources }

// Describe implements prometheus.Collector.
func (c *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFlows, descPods, descRules, descRulePackets, descDenied, descScrapeErrors} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *sourceCollector) Collect(ch chan<- prometheus.Metric) {
	if f := c.src.FlowsPerTable; f != nil {
		for table, n := range f() {
			ch <- prometheus.MustNewConstMetric(descFlows, prometheus.GaugeValue, float64(n), table)
		}
	}
	if f := c.src.LocalPods; f != nil {
		ch <- prometheus.MustNewConstMetric(descPods, prometheus.GaugeValue, float64(f()))
	}
	if f := c.src.PolicyRules; f != nil {
		ch <- prometheus.MustNewConstMetric(descRules, prometheus.GaugeValue, float64(f()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	if f := c.src.PolicyRulePackets; f != nil {
		rules, err := f(ctx)
		ch <- prometheus.MustNewConstMetric(descScrapeErrors, prometheus.GaugeValue, boolValue(err != nil), "policy_rule_packets")
		for rule, n := range rules {
			ch <- prometheus.MustNewConstMetric(descRulePackets, prometheus.CounterValue, float64(n), rule)
		}
	}
	if f := c.src.IsolationDrops; f != nil {
		drops, err := f(ctx)
		ch <- prometheus.MustNewConstMetric(descScrapeErrors, prometheus.GaugeValue, boolValue(err != nil), "policy_denied_packets")
		sum := map[[2]string]uint64{}
		for _, d := range drops {
			sum[[2]string{d.Direction, d.Pod}] += d.Packets
		}
		for k, n := range sum {
			ch <- prometheus.MustNewConstMetric(descDenied, prometheus.CounterValue, float64(n), k[0], k[1])
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
