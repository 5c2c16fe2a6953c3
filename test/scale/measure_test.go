package main

import (
	"maps"
	"strings"
	"testing"
)

func TestContainsAddress(t *testing.T) {
	tests := []struct {
		line, addr string
		want       bool
	}{
		{"ip,nw_src=10.160.5.4 actions=conjunction(11,2/3)", "10.160.5.4", true},
		{"ip,nw_src=10.160.5.40 actions=drop", "10.160.5.4", false},
		{"ip,nw_src=110.160.5.4 actions=drop", "10.160.5.4", false},
		{"ip,nw_src=10.160.5.4,nw_dst=10.160.5.44", "10.160.5.4", true},
		{"ip,nw_src=10.160.5.44,nw_dst=10.160.5.4", "10.160.5.4", true},
		{"ip,nw_dst=10.190.3.0/24 actions=set_field:172.21.0.4->tun_dst", "10.190.3.0/24", true},
		{"ip,nw_dst=10.190.3.0/24 actions=set_field:172.21.0.4->tun_dst", "172.21.0.4", true},
		{"ip,nw_dst=10.190.3.0/24", "10.190.3.0/2", false},
		{"", "10.0.0.1", false},
	}
	for _, tt := range tests {
		if got := containsAddress(tt.line, tt.addr); got != tt.want {
			t.Errorf("containsAddress(%q, %q) = %v, want %v", tt.line, tt.addr, got, tt.want)
		}
	}
}

func TestFlowEvent(t *testing.T) {
	added := " event=ADDED table=9 cookie=0x104000000000000 ip,nw_src=10.160.5.4 actions=conjunction(11,2/3)"
	deleted := " event=DELETED reason=delete table=9 cookie=0x104000000000000 ip,nw_src=10.160.5.4 actions=drop"
	tests := []struct {
		name  string
		line  string
		kinds []string
		want  bool
	}{
		{"added", added, []string{"ADDED", "MODIFIED"}, true},
		{"deleted is not added", deleted, []string{"ADDED", "MODIFIED"}, false},
		{"deleted", deleted, []string{"DELETED"}, true},
	}
	for _, tt := range tests {
		if got := flowEvent("10.160.5.4", tt.kinds...)(tt.line); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRouteEvents(t *testing.T) {
	add := "10.190.3.0/24 via 10.128.1.1 dev weir-gw0 proto 87 onlink"
	del := "Deleted 10.190.3.0/24 via 10.128.1.1 dev weir-gw0 proto 87 onlink"
	if !routeAdded("10.190.3.0/24")(add) || routeAdded("10.190.3.0/24")(del) || routeAdded("10.190.3.0/2")(add) {
		t.Error("routeAdded matches the wrong lines")
	}
	if !routeDeleted("10.190.3.0/24")(del) || routeDeleted("10.190.3.0/24")(add) {
		t.Error("routeDeleted matches the wrong lines")
	}
}

func TestCountFlows(t *testing.T) {
	dump := `OFPST_FLOW reply (OF1.5) (xid=0x2):
 cookie=0x104000000000000, duration=1.1s, table=PolicyIngress, n_packets=0, priority=100,ip,nw_src=10.160.5.4 actions=conjunction(11,2/3)
 cookie=0x104000000000000, duration=1.1s, table=PolicyIngress, n_packets=0, priority=100,ip,nw_src=10.160.5.5 actions=conjunction(11,2/3)
 cookie=0x101000000000001, duration=2.0s, table=Classifier, n_packets=3, priority=0 actions=drop
`
	per, total := countFlows(dump)
	if want := map[string]int{"PolicyIngress": 2, "Classifier": 1}; !maps.Equal(per, want) || total != 3 {
		t.Errorf("countFlows = %v, %d; want %v, 3", per, total, want)
	}
}

func TestMetricSet(t *testing.T) {
	text := `# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.048576e+08
# TYPE weir_kube_received_bytes_total counter
weir_kube_received_bytes_total{resource="pods"} 1000
weir_kube_received_bytes_total{resource="nodes"} 250
# TYPE apiserver_watch_events_sizes histogram
apiserver_watch_events_sizes_bucket{kind="Pod",le="+Inf"} 4
apiserver_watch_events_sizes_sum{kind="Pod"} 4096
apiserver_watch_events_sizes_count{kind="Pod"} 4
apiserver_watch_events_sizes_bucket{kind="Node",le="+Inf"} 1
apiserver_watch_events_sizes_sum{kind="Node"} 100
apiserver_watch_events_sizes_count{kind="Node"} 1
`
	m, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"gauge", m.value("process_resident_memory_bytes", nil) / mib, 100},
		{"counter with label", m.value("weir_kube_received_bytes_total", map[string]string{"resource": "pods"}), 1000},
		{"counter summed", m.value("weir_kube_received_bytes_total", nil), 1250},
		{"histogram sum", m.value("apiserver_watch_events_sizes", nil), 4196},
		{"histogram count", m.count("apiserver_watch_events_sizes"), 5},
		{"missing", m.value("no_such_metric", nil), 0},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if got := m.byLabel("weir_kube_received_bytes_total", "resource"); !maps.Equal(got, map[string]float64{"pods": 1000, "nodes": 250}) {
		t.Errorf("byLabel = %v", got)
	}
}
