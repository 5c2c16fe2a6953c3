package metrics

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Resources of weir_kube_received_bytes_total: what the agent watches, and
// "other" for the rest (events it writes, discovery, single reads).
const (
	KubePods            = "pods"
	KubeNodes           = "nodes"
	KubeNamespaces      = "namespaces"
	KubeNetworkPolicies = "networkpolicies"
	KubeOther           = "other"
)

// KubeResources lists the resource label values, each exported from the
// start (at zero).
var KubeResources = []string{KubePods, KubeNodes, KubeNamespaces, KubeNetworkPolicies, KubeOther}

// kubeMetrics are the Kubernetes client's metrics. They are not under
// weir_agent_: the bytes are counted in the client's transport, which any
// Weir component talking to the API server can use.
type kubeMetrics struct {
	received *prometheus.CounterVec
	// byResource holds received's children, resolved once: the counting
	// reader adds to one without a label lookup.
	byResource map[string]prometheus.Counter

	initialSync     prometheus.Gauge
	initialSyncOnce sync.Once
}

func newKubeMetrics() *kubeMetrics {
	k := &kubeMetrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prometheus.BuildFQName(namespace, "kube", "received_bytes_total"),
			Help: "Bytes of Kubernetes API server response bodies (lists, watch streams, reads) the agent's client read, " +
				"after HTTP decompression, by resource (pods, nodes, namespaces, networkpolicies, other).",
		}, []string{"resource"}),
		byResource: map[string]prometheus.Counter{},
		initialSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: name("initial_sync_seconds"),
			Help: "Seconds from the start of the agent's Run (just after its config is loaded) until its first " +
				"complete sync: in cluster mode the Node controller's initial sync and garbage collection, the " +
				"policy controller's first apply and the removal of earlier runs' flows; in standalone mode that " +
				"removal. Absent until then; set once."}),
	}
	for _, r := range KubeResources {
		k.byResource[r] = k.received.WithLabelValues(r)
	}
	return k
}

// SetInitialSync records the agent's first complete sync, d after its Run
// started (weir_agent_initial_sync_seconds); only the first call counts.
// The gauge is registered then, so a scrape tells "not synced yet" (absent)
// from a fast sync.
func (m *Metrics) SetInitialSync(d time.Duration) {
	m.kube.initialSyncOnce.Do(func() {
		m.kube.initialSync.Set(d.Seconds())
		m.reg.MustRegister(m.kube.initialSync)
	})
}

// WrapKubeTransport wraps the Kubernetes client's transport (for
// rest.Config.Wrap) so that every response body it reads is counted in
// weir_kube_received_bytes_total, by the resource of the request's path
// (KubeResource). Counting is one atomic add per Read of the body: nothing
// is parsed, so a watch stream costs no more than it did.
func (m *Metrics) WrapKubeTransport(rt http.RoundTripper) http.RoundTripper {
	return &countingTransport{next: rt, counters: m.kube.byResource}
}

// countingTransport is WrapKubeTransport's RoundTripper.
type countingTransport struct {
	next     http.RoundTripper
	counters map[string]prometheus.Counter // read-only
}

// RoundTrip implements http.RoundTripper.
func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.Body == nil || resp.Body == http.NoBody {
		return resp, err
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, counter: t.counters[KubeResource(req.URL.Path)]}
	return resp, nil
}

// countingBody counts the bytes read from a response body.
type countingBody struct {
	io.ReadCloser
	counter prometheus.Counter
}

// Read implements io.Reader.
func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.counter.Add(float64(n)) // an atomic add: client_golang's integer fast path
	}
	return n, err
}

// KubeResource returns the resource label of an API server request path:
// KubePods for /api/v1/pods, /api/v1/namespaces/NS/pods[/NAME[/SUB]] and
// the legacy /api/v1/watch/... forms; KubeNodes, KubeNetworkPolicies
// likewise (networkpolicies under /apis/networking.k8s.io/v1);
// KubeNamespaces for /api/v1/namespaces[/NAME] (not for what lives in a
// namespace); KubeOther for anything else.
func KubeResource(path string) string {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(segs) >= 2 && segs[0] == "api": // /api/v1/...
		segs = segs[2:]
	case len(segs) >= 3 && segs[0] == "apis": // /apis/GROUP/VERSION/...
		segs = segs[3:]
	default:
		return KubeOther
	}
	if len(segs) > 0 && segs[0] == "watch" {
		segs = segs[1:]
	}
	if len(segs) == 0 {
		return KubeOther
	}
	resource := segs[0]
	if resource == "namespaces" {
		switch len(segs) {
		case 1, 2:
			return KubeNamespaces
		case 3:
			if segs[2] == "status" || segs[2] == "finalize" {
				return KubeNamespaces // subresources of the namespace itself
			}
		}
		resource = segs[2]
	}
	switch resource {
	case KubePods, KubeNodes, KubeNetworkPolicies:
		return resource
	}
	return KubeOther
}
