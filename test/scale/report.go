package main

// The harness's output: per scenario a result.json (the Result, to compare
// runs and to summarize), report.md (tables) and PNG plots; across
// scenarios summary.md and the growth plots (Summarize).

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/weirnet/weir/pkg/pipeline"
)

// Percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of ms:
// the smallest value with at least p% of the values at or below it. NaN
// when ms is empty.
func Percentile(ms []float64, p float64) float64 {
	if len(ms) == 0 {
		return math.NaN()
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// WriteReport writes r into dir: result.json, report.md, latency.png and
// flows.png.
func WriteReport(dir string, r Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report directory: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the result: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "result.json"), b, 0o644); err != nil {
		return fmt.Errorf("writing the result: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(ReportMarkdown(r)), 0o644); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	if err := plotLatencies(filepath.Join(dir, "latency.png"), r); err != nil {
		return err
	}
	return plotFlows(filepath.Join(dir, "flows.png"), r)
}

// LoadResults reads result.json files.
func LoadResults(paths []string) ([]Result, error) {
	var out []Result
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading a result: %w", err)
		}
		var r Result
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", p, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// fmtMs formats a latency; "—" when nothing was measured.
func fmtMs(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	return fmt.Sprintf("%.0f", v)
}

// ReportMarkdown renders one scenario's result.
func ReportMarkdown(r Result) string {
	var b strings.Builder
	s := r.Scenario
	fmt.Fprintf(&b, "# Scale %s: %d nodes, %d pods, %d policies in %d namespaces\n\n", s.Name, s.Nodes, s.Pods, s.Policies, s.Namespaces)
	fmt.Fprintf(&b, "Run started %s. Objects created in %.1f s; every pod had an IP %.1f s after the start.\n\n",
		r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Layout.Created.Seconds(), r.Layout.Converged.Seconds())

	b.WriteString("## Agents\n\n")
	b.WriteString("| node | agent RSS MiB | Go heap MiB | full sync s | full sync CPU s | flows | ovs-vswitchd RSS MiB | watch B/s |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, a := range r.Agents {
		sync, cpu := "—", "—"
		if a.FullSyncSeconds > 0 {
			sync, cpu = fmt.Sprintf("%.2f", a.FullSyncSeconds), fmt.Sprintf("%.2f", a.FullSyncCPUSeconds)
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %s | %s | %d | %.0f | %.0f |\n", a.Node, a.RSSMiB, a.HeapMiB, sync, cpu,
			a.FlowsTotal, a.VswitchdRSSMiB, sumValues(a.WatchBytesPerSecond))
	}

	b.WriteString("\n## Latency from the API change to the flows in OVS (ms)\n\n")
	b.WriteString("| node | change | reps | p50 | p99 | max |\n|---|---|---:|---:|---:|---:|\n")
	for _, a := range r.Agents {
		for _, l := range a.Latencies {
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s |\n", a.Node, l.Name, len(l.Ms),
				fmtMs(Percentile(l.Ms, 50)), fmtMs(Percentile(l.Ms, 99)), fmtMs(Percentile(l.Ms, 100)))
		}
	}

	b.WriteString("\n## Flows per table\n\n")
	tables := flowTables(r)
	b.WriteString("| table |")
	for _, a := range r.Agents {
		fmt.Fprintf(&b, " %s |", a.Node)
	}
	b.WriteString("\n|---|" + strings.Repeat("---:|", len(r.Agents)) + "\n")
	for _, t := range tables {
		fmt.Fprintf(&b, "| %s |", t)
		for _, a := range r.Agents {
			fmt.Fprintf(&b, " %d |", a.FlowsPerTable[t])
		}
		b.WriteString("\n")
	}

	b.WriteString("\n## Watch bytes per second during churn, by resource\n\n")
	b.WriteString("| node |")
	for _, res := range watchResources(r) {
		fmt.Fprintf(&b, " %s |", res)
	}
	b.WriteString("\n|---|" + strings.Repeat("---:|", len(watchResources(r))) + "\n")
	for _, a := range r.Agents {
		fmt.Fprintf(&b, "| %s |", a.Node)
		for _, res := range watchResources(r) {
			fmt.Fprintf(&b, " %.0f |", a.WatchBytesPerSecond[res])
		}
		b.WriteString("\n")
	}

	api := r.APIServer
	b.WriteString("\n## API server during churn\n\n")
	b.WriteString("| churn s | RSS MiB | CPU s | CPU s per churn s | watch events/s | watch bytes/s |\n|---:|---:|---:|---:|---:|---:|\n")
	perSec := 0.0
	if api.ChurnSeconds > 0 {
		perSec = api.CPUSeconds / api.ChurnSeconds
	}
	fmt.Fprintf(&b, "| %.0f | %.0f | %.1f | %.2f | %.0f | %.0f |\n", api.ChurnSeconds, api.RSSMiB, api.CPUSeconds, perSec,
		api.WatchEventsPerSecond, api.WatchBytesPerSecond)
	b.WriteString("\nPlots: latency.png (p50 and p99 per change and node), flows.png (flows per table and node).\n")
	return b.String()
}

func sumValues(m map[string]float64) float64 {
	t := 0.0
	for _, v := range m {
		t += v
	}
	return t
}

// flowTables is the union of the agents' table names, in pipeline order.
func flowTables(r Result) []string {
	ts := keysOfAgents(r, func(a AgentResult) []string { return slices.Collect(maps.Keys(a.FlowsPerTable)) })
	slices.SortFunc(ts, func(a, b string) int { return cmp.Or(cmp.Compare(tableOrder(a), tableOrder(b)), cmp.Compare(a, b)) })
	return ts
}

// keysOfAgents is the sorted union over the agents of keys(agent).
func keysOfAgents(r Result, keys func(AgentResult) []string) []string {
	var out []string
	for _, a := range r.Agents {
		for _, k := range keys(a) {
			if !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return out
}

// tableOrder is a table's place in the pipeline (pipeline.Tables), for a
// table given by name or number; unknown tables sort last.
func tableOrder(t string) int {
	for _, pt := range pipeline.Tables() {
		if pt.Name == t || strconv.Itoa(int(pt.ID)) == t {
			return int(pt.ID)
		}
	}
	return math.MaxInt
}

// watchResources is the sorted union of the agents' watch resources.
func watchResources(r Result) []string {
	return keysOfAgents(r, func(a AgentResult) []string { return slices.Collect(maps.Keys(a.WatchBytesPerSecond)) })
}

// plotLatencies draws p50 and p99 per change type, one bar group per agent.
func plotLatencies(path string, r Result) error {
	var names []string
	for _, a := range r.Agents {
		for _, l := range a.Latencies {
			if !slices.Contains(names, l.Name) {
				names = append(names, l.Name)
			}
		}
	}
	var measured []AgentResult // the control-plane node's agent has no latencies
	for _, a := range r.Agents {
		if len(a.Latencies) > 0 {
			measured = append(measured, a)
		}
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: API change to flows in OVS", r.Scenario.Name)
	p.Y.Label.Text = "ms"
	n := 2 * len(measured)
	w := vg.Points(12)
	i := 0
	top := 0.0
	for _, a := range measured {
		for _, q := range []float64{50, 99} {
			vals := make(plotter.Values, len(names))
			for j, name := range names {
				for _, l := range a.Latencies {
					if l.Name == name {
						if v := Percentile(l.Ms, q); !math.IsNaN(v) {
							vals[j] = v
							top = max(top, v)
						}
					}
				}
			}
			bars, err := plotter.NewBarChart(vals, w)
			if err != nil {
				return fmt.Errorf("latency plot: %w", err)
			}
			bars.Color = plotutil.Color(i)
			bars.LineStyle.Width = 0
			bars.Offset = w * vg.Length(float64(i)-float64(n-1)/2)
			p.Add(bars)
			p.Legend.Add(fmt.Sprintf("%s p%.0f", a.Node, q), bars)
			i++
		}
	}
	p.Legend.Top = true
	p.Y.Min, p.Y.Max = 0, top*1.4 // room for the legend above the bars
	p.NominalX(names...)
	return savePlot(p, path, vg.Length(max(len(names), 3))*vg.Points(float64(n)*14+30))
}

// plotFlows draws the flows of each table, one bar per agent.
func plotFlows(path string, r Result) error {
	tables := flowTables(r)
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: flows per table", r.Scenario.Name)
	p.Y.Label.Text = "flows"
	w := vg.Points(10)
	for i, a := range r.Agents {
		vals := make(plotter.Values, len(tables))
		for j, t := range tables {
			vals[j] = float64(a.FlowsPerTable[t])
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return fmt.Errorf("flow plot: %w", err)
		}
		bars.Color = plotutil.Color(i)
		bars.LineStyle.Width = 0
		bars.Offset = w * vg.Length(float64(i)-float64(len(r.Agents)-1)/2)
		p.Add(bars)
		p.Legend.Add(a.Node, bars)
	}
	p.Legend.Top = true
	p.NominalX(tables...)
	p.X.Tick.Label.Rotation = math.Pi / 4
	p.X.Tick.Label.XAlign = -0.8
	return savePlot(p, path, vg.Length(max(len(tables), 4))*vg.Points(float64(len(r.Agents))*12+20))
}

func savePlot(p *plot.Plot, path string, width vg.Length) error {
	if err := p.Save(max(width, 6*vg.Inch), 4*vg.Inch, path); err != nil {
		return fmt.Errorf("saving %s: %w", path, err)
	}
	return nil
}

// Worst is the largest value of f over the agents (0 when none).
func worst(r Result, f func(AgentResult) float64) float64 {
	v := 0.0
	for _, a := range r.Agents {
		v = max(v, f(a))
	}
	return v
}

// worstP99 is the largest p99 over the agents and change types.
func worstP99(a AgentResult) float64 {
	v := 0.0
	for _, l := range a.Latencies {
		if p := Percentile(l.Ms, 99); !math.IsNaN(p) {
			v = max(v, p)
		}
	}
	return v
}

// SummaryMarkdown is summary.md: one row per scenario; the first memory
// column is the agent's RSS (the largest over the real nodes).
func SummaryMarkdown(results []Result) string {
	results = slices.SortedFunc(slices.Values(results), func(a, b Result) int { return cmp.Compare(a.Scenario.Name, b.Scenario.Name) })
	var b strings.Builder
	b.WriteString("| scenario | nodes / pods / policies | agent RSS MiB | Go heap MiB | full sync s | full sync CPU s | worst p99 ms | flows | ovs-vswitchd RSS MiB | agent watch B/s | API server CPU s per churn s |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		s := r.Scenario
		api := 0.0
		if r.APIServer.ChurnSeconds > 0 {
			api = r.APIServer.CPUSeconds / r.APIServer.ChurnSeconds
		}
		fmt.Fprintf(&b, "| %s | %d / %d / %d | %.0f | %.0f | %.2f | %.2f | %.0f | %.0f | %.0f | %.0f | %.2f |\n",
			s.Name, s.Nodes, s.Pods, s.Policies,
			worst(r, func(a AgentResult) float64 { return a.RSSMiB }),
			worst(r, func(a AgentResult) float64 { return a.HeapMiB }),
			worst(r, func(a AgentResult) float64 { return a.FullSyncSeconds }),
			worst(r, func(a AgentResult) float64 { return a.FullSyncCPUSeconds }),
			worst(r, worstP99),
			worst(r, func(a AgentResult) float64 { return float64(a.FlowsTotal) }),
			worst(r, func(a AgentResult) float64 { return a.VswitchdRSSMiB }),
			worst(r, func(a AgentResult) float64 { return sumValues(a.WatchBytesPerSecond) }),
			api)
	}
	return b.String()
}

// Summarize writes summary.md, growth.png (flows against the scenario's
// size) and rss.png (agent RSS and heap against it) into out.
func Summarize(out string, results []Result) error {
	if err := os.WriteFile(filepath.Join(out, "summary.md"), []byte(SummaryMarkdown(results)), 0o644); err != nil {
		return fmt.Errorf("writing the summary: %w", err)
	}
	size := func(r Result) float64 {
		return float64(r.Scenario.Nodes + r.Scenario.Pods + r.Scenario.Policies)
	}
	series := func(f func(AgentResult) float64) plotter.XYs {
		var xys plotter.XYs
		for _, r := range results {
			xys = append(xys, plotter.XY{X: size(r), Y: worst(r, f)})
		}
		slices.SortFunc(xys, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
		return xys
	}
	for _, pl := range []struct {
		file, title, y string
		lines          []any
	}{
		{"growth.png", "Agent flows against cluster size", "flows (largest agent)",
			[]any{"flows", series(func(a AgentResult) float64 { return float64(a.FlowsTotal) })}},
		{"rss.png", "Agent memory against cluster size", "MiB (largest agent)",
			[]any{"RSS", series(func(a AgentResult) float64 { return a.RSSMiB }),
				"Go heap", series(func(a AgentResult) float64 { return a.HeapMiB })}},
	} {
		p := plot.New()
		p.Title.Text = pl.title
		p.X.Label.Text = "nodes + pods + policies"
		p.Y.Label.Text = pl.y
		p.Y.Min = 0
		if err := plotutil.AddLinePoints(p, pl.lines...); err != nil {
			return fmt.Errorf("%s: %w", pl.file, err)
		}
		if err := savePlot(p, filepath.Join(out, pl.file), 6*vg.Inch); err != nil {
			return err
		}
	}
	return nil
}
