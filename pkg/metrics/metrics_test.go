package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"k8s.io/klog/v2/ktesting"
)

// value returns the value of the metric name with exactly labels (a
// counter's, gauge's or untyped value; a histogram's sample count), and
// whether it exists.
func value(t *testing.T, m *Metrics, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			if !labelsEqual(mt.GetLabel(), labels) {
				continue
			}
			switch {
			case mt.Counter != nil:
				return mt.GetCounter().GetValue(), true
			case mt.Gauge != nil:
				return mt.GetGauge().GetValue(), true
			case mt.Histogram != nil:
				return float64(mt.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func labelsEqual(have []*dto.LabelPair, want map[string]string) bool {
	if len(have) != len(want) {
		return false
	}
	for _, l := range have {
		if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
			return false
		}
	}
	return true
}

func TestObservers(t *testing.T) {
	fail := errors.New("boom")
	tests := []struct {
		name    string
		observe func(m *Metrics)
		metric  string
		labels  map[string]string
		want    float64
	}{
		{"openflow bundle counted", func(m *Metrics) {
			m.OpenFlowRequest("bundle", 3, time.Millisecond, nil)
			m.OpenFlowRequest("bundle", 2, time.Millisecond, fail)
		}, "weir_agent_openflow_requests_total", map[string]string{"op": "bundle"}, 2},
		{"openflow errors by op", func(m *Metrics) {
			m.OpenFlowRequest("bundle", 3, time.Millisecond, nil)
			m.OpenFlowRequest("flow_stats", 0, time.Millisecond, fail)
		}, "weir_agent_openflow_request_errors_total", map[string]string{"op": "flow_stats"}, 1},
		{"openflow latency observed", func(m *Metrics) {
			m.OpenFlowRequest("barrier", 0, 2*time.Millisecond, nil)
		}, "weir_agent_openflow_request_duration_seconds", map[string]string{"op": "barrier"}, 1},
		{"flow_mods summed, flow stats excluded", func(m *Metrics) {
			m.OpenFlowRequest("bundle", 3, time.Millisecond, nil)
			m.OpenFlowRequest("flow_mods", 4, time.Millisecond, nil)
			m.OpenFlowRequest("flow_stats", 9, time.Millisecond, nil)
		}, "weir_agent_openflow_flow_mods_total", nil, 7},
		{"reconnects", func(m *Metrics) { m.OpenFlowReconnect(); m.OpenFlowReconnect() },
			"weir_agent_openflow_reconnects_total", nil, 2},
		{"ovsdb transactions", func(m *Metrics) {
			m.OVSDBTransaction(time.Millisecond, nil)
			m.OVSDBTransaction(time.Millisecond, fail)
		}, "weir_agent_ovsdb_transactions_total", nil, 2},
		{"ovsdb errors", func(m *Metrics) {
			m.OVSDBTransaction(time.Millisecond, nil)
			m.OVSDBTransaction(time.Millisecond, fail)
		}, "weir_agent_ovsdb_transaction_errors_total", nil, 1},
		{"ovsdb latency", func(m *Metrics) { m.OVSDBTransaction(time.Millisecond, nil) },
			"weir_agent_ovsdb_transaction_duration_seconds", nil, 1},
		{"cni commands present at zero", func(*Metrics) {}, "weir_agent_cni_requests_total", map[string]string{"command": "GC"}, 0},
		{"cni requests", func(m *Metrics) {
			m.CNIRequest("ADD", 0, time.Millisecond)
			m.CNIRequest("ADD", 11, time.Millisecond)
			m.CNIRequest("DEL", 0, time.Millisecond)
		}, "weir_agent_cni_requests_total", map[string]string{"command": "ADD"}, 2},
		{"cni errors by code", func(m *Metrics) {
			m.CNIRequest("ADD", 0, time.Millisecond)
			m.CNIRequest("ADD", 11, time.Millisecond)
			m.CNIRequest("ADD", 101, time.Millisecond)
		}, "weir_agent_cni_request_errors_total", map[string]string{"command": "ADD", "code": "11"}, 1},
		{"cni latency", func(m *Metrics) { m.CNIRequest("STATUS", 0, time.Millisecond) },
			"weir_agent_cni_request_duration_seconds", map[string]string{"command": "STATUS"}, 1},
		{"policy syncs", func(m *Metrics) { m.PolicySync(time.Millisecond, 3, nil); m.PolicySync(time.Millisecond, 3, fail) },
			"weir_agent_policy_sync_duration_seconds", nil, 2},
		{"policy sync errors", func(m *Metrics) { m.PolicySync(time.Millisecond, 3, nil); m.PolicySync(time.Millisecond, 3, fail) },
			"weir_agent_policy_sync_errors_total", nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := New()
			tc.observe(m)
			got, ok := value(t, m, tc.metric, tc.labels)
			if !ok {
				t.Fatalf("%s%v missing", tc.metric, tc.labels)
			}
			if got != tc.want {
				t.Fatalf("%s%v = %v, want %v", tc.metric, tc.labels, got, tc.want)
			}
		})
	}
}

func TestSources(t *testing.T) {
	m := New()
	err := m.RegisterSources(Sources{
		FlowsPerTable: func() map[string]int { return map[string]int{"Classifier": 4, "L2Forwarding": 2} },
		LocalPods:     func() int { return 3 },
		PolicyRules:   func() int { return 5 },
		PolicyRulePackets: func(context.Context) (map[string]uint64, error) {
			return map[string]uint64{"ns/np/ingress/0": 7}, nil
		},
		IsolationDrops: func(context.Context) ([]IsolationDrop, error) {
			return []IsolationDrop{{"egress", "ns/a", 2}, {"egress", "ns/a", 3}, {"ingress", "ns/b", 1}},
				errors.New("partly failed")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		metric string
		labels map[string]string
		want   float64
	}{
		{"weir_agent_openflow_flows", map[string]string{"table": "Classifier"}, 4},
		{"weir_agent_openflow_flows", map[string]string{"table": "L2Forwarding"}, 2},
		{"weir_agent_local_pods", nil, 3},
		{"weir_agent_policy_rules", nil, 5},
		{"weir_agent_policy_rule_packets_total", map[string]string{"rule": "ns/np/ingress/0"}, 7},
		{"weir_agent_policy_denied_packets_total", map[string]string{"direction": "egress", "pod": "ns/a"}, 5},
		{"weir_agent_policy_denied_packets_total", map[string]string{"direction": "ingress", "pod": "ns/b"}, 1},
		{"weir_agent_metrics_source_errors", map[string]string{"source": "policy_denied_packets"}, 1},
		{"weir_agent_metrics_source_errors", map[string]string{"source": "policy_rule_packets"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.metric, func(t *testing.T) {
			got, ok := value(t, m, tc.metric, tc.labels)
			if !ok || got != tc.want {
				t.Fatalf("%s%v = %v (present %v), want %v", tc.metric, tc.labels, got, ok, tc.want)
			}
		})
	}
}

func TestHealthHandler(t *testing.T) {
	ok := Check{Name: "fine", Run: func(context.Context) error { return nil }}
	bad := Check{Name: "broken", Run: func(context.Context) error { return errors.New("not ready") }}
	hang := Check{Name: "stuck", Run: func(ctx context.Context) error { <-ctx.Done(); time.Sleep(time.Second); return nil }}
	tests := []struct {
		name     string
		path     string
		live     []Check
		ready    []Check
		wantCode int
		wantBody []string
	}{
		{"healthz ok", "/healthz", []Check{ok}, nil, 200, []string{"[+]fine ok", "ok"}},
		{"readyz failing", "/readyz", []Check{ok}, []Check{ok, bad}, 503, []string{"[+]fine ok", "[-]broken failed: not ready"}},
		{"readyz no checks", "/readyz", nil, nil, 200, []string{"ok"}},
		{"healthz stuck check", "/healthz", []Check{hang}, nil, 503, []string{"[-]stuck failed: no answer within"}},
		{"metrics served", "/metrics", nil, nil, 200, []string{"weir_agent_cni_requests_total{command=\"ADD\"} 0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(Handler(ServerConfig{Metrics: New(), Live: tc.live, Ready: tc.ready}))
			defer srv.Close()
			resp, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d; body:\n%s", resp.StatusCode, tc.wantCode, body)
			}
			for _, w := range tc.wantBody {
				if !strings.Contains(string(body), w) {
					t.Errorf("body lacks %q:\n%s", w, body)
				}
			}
		})
	}
}

func TestAgentStart(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	log := ktesting.NewLogger(t, ktesting.NewConfig())
	a := NewAgent()

	// Disabled: nothing listens, stop is a no-op.
	stop, err := a.Start(context.Background(), "", log)
	if err != nil {
		t.Fatal(err)
	}
	stop()

	// A port in use is reported at once.
	if _, err := a.Start(context.Background(), busy.Addr().String(), log); err == nil ||
		!strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start on a busy port: %v, want address already in use", err)
	}

	// Serving: stop ends the server although the context lives on.
	stop, err = a.Start(context.Background(), "127.0.0.1:0", log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not return")
	}
}
