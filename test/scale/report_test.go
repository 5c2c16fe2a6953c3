package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(100 - i) // 100 … 1, unsorted on purpose
	}
	tests := []struct {
		name string
		ms   []float64
		p    float64
		want float64
	}{
		{"p50 of 1..100", hundred, 50, 50},
		{"p99 of 1..100", hundred, 99, 99},
		{"p100 is the max", hundred, 100, 100},
		{"p99 of 5 is the max", []float64{3, 1, 5, 2, 4}, 99, 5},
		{"p50 of 5 is the median", []float64{3, 1, 5, 2, 4}, 50, 3},
		{"one value", []float64{7}, 1, 7},
	}
	for _, tt := range tests {
		if got := Percentile(tt.ms, tt.p); got != tt.want {
			t.Errorf("%s: Percentile = %v, want %v", tt.name, got, tt.want)
		}
	}
	if got := Percentile(nil, 50); !math.IsNaN(got) {
		t.Errorf("Percentile(nil) = %v, want NaN", got)
	}
	if !reflect.DeepEqual(hundred[:2], []float64{100, 99}) {
		t.Errorf("Percentile sorted its input in place")
	}
}

func sampleResult(name string, pods int, rss float64) Result {
	return Result{
		Scenario: Scenario{Name: name, Nodes: pods / 30, Pods: pods, Policies: pods / 10, Namespaces: pods / 100},
		Layout:   Layout{Created: 6 * time.Second, Converged: 30 * time.Second},
		Started:  time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC),
		Agents: []AgentResult{
			{Node: "wscale-worker-1", RSSMiB: rss, HeapMiB: rss / 4, FullSyncSeconds: 1.5, FullSyncCPUSeconds: 2.25,
				Latencies:     []Sample{{Name: "pod label change", Ms: []float64{10, 20, 30}}, {Name: "new node", Ms: nil}},
				FlowsPerTable: map[string]int{"Classifier": 10, "IngressRule": 180}, FlowsTotal: 190, VswitchdRSSMiB: 22,
				WatchBytesPerSecond: map[string]float64{"pods": 1000, "nodes": 24}},
			{Node: "wscale-worker-2", RSSMiB: rss + 5, HeapMiB: rss / 3, FlowsPerTable: map[string]int{"Classifier": 12},
				FlowsTotal: 12},
		},
		APIServer: APIServerResult{RSSMiB: 900, CPUSeconds: 30, ChurnSeconds: 60, WatchEventsPerSecond: 100, WatchBytesPerSecond: 5e5},
	}
}

func TestReportMarkdown(t *testing.T) {
	md := ReportMarkdown(sampleResult("S1", 3000, 80))
	for _, want := range []string{
		"# Scale S1: 100 nodes, 3000 pods, 300 policies in 30 namespaces",
		"| wscale-worker-1 | 80 | 20 | 1.50 | 2.25 | 190 | 22 | 1024 |",
		"| wscale-worker-2 | 85 | 27 | — | — | 12 | 0 | 0 |", // no full sync measured on it
		"| wscale-worker-1 | pod label change | 3 | 20 | 30 | 30 |",
		"| wscale-worker-1 | new node | 0 | — | — | — |",
		"| IngressRule | 180 | 0 |",
		"| 60 | 900 | 30.0 | 0.50 | 100 | 500000 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestSummaryRowsAndFiles(t *testing.T) {
	dir := t.TempDir()
	results := []Result{sampleResult("S2", 30000, 140), sampleResult("S1", 3000, 80)}
	for _, r := range results {
		if err := WriteReport(filepath.Join(dir, r.Scenario.Name), r); err != nil {
			t.Fatal(err)
		}
	}
	paths, _ := filepath.Glob(filepath.Join(dir, "S*", "result.json"))
	loaded, err := LoadResults(paths)
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 2 {
		t.Fatalf("loaded %d results, want 2", len(loaded))
	}
	if err := Summarize(dir, loaded); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "summary.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(md)), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[2], "| S1 | 100 / 3000 / 300 | 85 |") ||
		!strings.HasPrefix(lines[3], "| S2 | 1000 / 30000 / 3000 | 145 |") {
		t.Errorf("summary rows (sorted by scenario, first memory column the largest agent RSS):\n%s", md)
	}
	if !strings.Contains(lines[0], "| agent RSS MiB |") {
		t.Errorf("summary header: %s", lines[0])
	}
	png := []byte("\x89PNG\r\n\x1a\n")
	for _, f := range []string{"S1/latency.png", "S1/flows.png", "S2/report.md", "growth.png", "rss.png"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if strings.HasSuffix(f, ".png") && !bytes.HasPrefix(b, png) {
			t.Errorf("%s is not a PNG", f)
		}
	}
}
