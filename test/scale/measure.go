package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/kubernetes"

	"github.com/weirnet/weir/pkg/localcluster"
)

// metricSet is one scrape: family name → samples.
type metricSet map[string]*dto.MetricFamily

func parseMetrics(r io.Reader) (metricSet, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parsing metrics: %w", err)
	}
	return fams, nil
}

// value is the sum of family name's samples whose labels include want (a
// histogram counts its sample sum).
func (m metricSet) value(name string, want map[string]string) float64 {
	f, ok := m[name]
	if !ok {
		return 0
	}
	var v float64
	for _, s := range f.GetMetric() {
		if !labelsMatch(s.GetLabel(), want) {
			continue
		}
		switch {
		case s.Gauge != nil:
			v += s.GetGauge().GetValue()
		case s.Counter != nil:
			v += s.GetCounter().GetValue()
		case s.Untyped != nil:
			v += s.GetUntyped().GetValue()
		case s.Histogram != nil:
			v += s.GetHistogram().GetSampleSum()
		}
	}
	return v
}

// count is the summed sample count of histogram family name.
func (m metricSet) count(name string) float64 {
	f, ok := m[name]
	if !ok {
		return 0
	}
	var v float64
	for _, s := range f.GetMetric() {
		v += float64(s.GetHistogram().GetSampleCount())
	}
	return v
}

// byLabel sums family name by the value of label l.
func (m metricSet) byLabel(name, l string) map[string]float64 {
	out := map[string]float64{}
	f, ok := m[name]
	if !ok {
		return out
	}
	for _, s := range f.GetMetric() {
		for _, lp := range s.GetLabel() {
			if lp.GetName() == l {
				out[lp.GetValue()] += s.GetCounter().GetValue() + s.GetGauge().GetValue()
			}
		}
	}
	return out
}

func labelsMatch(ls []*dto.LabelPair, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, lp := range ls {
			if lp.GetName() == k && lp.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// agentMetrics scrapes the agent on node n.
func agentMetrics(ctx context.Context, n RealNode) (metricSet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.IP+":9495/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping the agent on %s: %w", n.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping the agent on %s: %s", n.Name, resp.Status)
	}
	return parseMetrics(resp.Body)
}

// apiServerMetrics scrapes kube-apiserver's /metrics as the admin.
func apiServerMetrics(ctx context.Context, c kubernetes.Interface) (metricSet, error) {
	b, err := c.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("scraping kube-apiserver: %w", err)
	}
	return parseMetrics(strings.NewReader(string(b)))
}

const mib = 1 << 20

// procRSSMiB is VmRSS of pid.
func procRSSMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// vswitchdPID finds the ovs-vswitchd of node: the process of that name in
// the node's network namespace.
func vswitchdPID(cfg localcluster.Config, node string) (int, error) {
	npid, err := localcluster.NodePID(cfg, node)
	if err != nil {
		return 0, err
	}
	want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", npid))
	if err != nil {
		return 0, err
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(d + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "ovs-vswitchd" {
			continue
		}
		if ns, err := os.Readlink(d + "/ns/net"); err == nil && ns == want {
			return strconv.Atoi(filepath.Base(d))
		}
	}
	return 0, fmt.Errorf("no ovs-vswitchd in the network namespace of %s", node)
}

// flowsPerTable dumps node's br-int and counts flows per table name.
func flowsPerTable(ctx context.Context, cfg localcluster.Config, node string) (map[string]int, int, error) {
	cmd, err := localcluster.NodeExec(ctx, cfg, node, "ovs-ofctl", "-O", "OpenFlow15", "--names", "dump-flows", "br-int")
	if err != nil {
		return nil, 0, err
	}
	out, err := cmd.Output()
	if err != nil {
		return nil, 0, fmt.Errorf("dump-flows on %s: %w", node, err)
	}
	per, total := countFlows(string(out))
	return per, total, nil
}

// countFlows counts the flows of a dump-flows output per table.
func countFlows(dump string) (map[string]int, int) {
	per := map[string]int{}
	total := 0
	for _, l := range strings.Split(dump, "\n") {
		i := strings.Index(l, " table=")
		if i < 0 {
			continue
		}
		t := l[i+len(" table="):]
		if j := strings.IndexByte(t, ','); j >= 0 {
			t = t[:j]
		}
		per[t]++
		total++
	}
	return per, total
}

// monitorLine is one event line of a monitor and when the harness read it.
type monitorLine struct {
	at   time.Time
	text string
}

// lineMonitor follows a streaming command on one node (`ovs-ofctl monitor`
// for flows, `ip monitor route` for routes) and keeps every line with its
// arrival time, so a waiter can find the first event after a change that
// names a marker (an IP or CIDR).
type lineMonitor struct {
	node   string
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	lines []monitorLine
	cond  *sync.Cond
	err   error
}

// startFlowMonitor follows flow additions, changes and removals on br-int
// (only events, not the initial table contents). Line-buffered: into a pipe
// ovs-ofctl's stdio buffers 4 KiB, which held events back for seconds.
func startFlowMonitor(ctx context.Context, cfg localcluster.Config, node string) (*lineMonitor, error) {
	return startMonitor(ctx, cfg, node, func(l string) bool { return strings.Contains(l, "event=") },
		"stdbuf", "-oL", "-eL", "ovs-ofctl", "-O", "OpenFlow15", "monitor", "br-int", "watch:!initial")
}

// startRouteMonitor follows IPv4 route changes in the node.
func startRouteMonitor(ctx context.Context, cfg localcluster.Config, node string) (*lineMonitor, error) {
	return startMonitor(ctx, cfg, node, func(string) bool { return true }, "stdbuf", "-oL", "ip", "-4", "monitor", "route")
}

func startMonitor(ctx context.Context, cfg localcluster.Config, node string, keep func(string) bool, args ...string) (*lineMonitor, error) {
	ctx, cancel := context.WithCancel(ctx)
	cmd, err := localcluster.NodeExec(ctx, cfg, node, args...)
	if err != nil {
		cancel()
		return nil, err
	}
	// One pipe for both: ovs-ofctl monitor writes the monitor reply to
	// stdout and the events after it to stderr (measured).
	out, w, err := os.Pipe()
	if err != nil {
		cancel()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Start()
	w.Close()
	if err != nil {
		out.Close()
		cancel()
		return nil, fmt.Errorf("%s on %s: %w", args[0], node, err)
	}
	m := &lineMonitor{node: node, cancel: cancel, done: make(chan struct{})}
	m.cond = sync.NewCond(&m.mu)
	go func() {
		defer close(m.done)
		defer out.Close()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			l := sc.Text()
			if !keep(l) {
				continue
			}
			m.mu.Lock()
			m.lines = append(m.lines, monitorLine{at: time.Now(), text: l})
			m.cond.Broadcast()
			m.mu.Unlock()
		}
		err := cmd.Wait()
		m.mu.Lock()
		m.err = fmt.Errorf("%s on %s ended: %v", strings.Join(args, " "), node, err)
		m.cond.Broadcast()
		m.mu.Unlock()
	}()
	return m, nil
}

// mark is a position in the event stream.
func (m *lineMonitor) mark() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.lines)
}

// waitFor returns the arrival time of the first line at or after position
// from that match accepts.
func (m *lineMonitor) waitFor(from int, timeout time.Duration, what string, match func(string) bool) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() { m.mu.Lock(); m.cond.Broadcast(); m.mu.Unlock() })
	defer timer.Stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := from; ; {
		for ; i < len(m.lines); i++ {
			if match(m.lines[i].text) {
				return m.lines[i].at, nil
			}
		}
		if m.err != nil {
			return time.Time{}, m.err
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("no event (%s) on %s within %v", what, m.node, timeout)
		}
		m.cond.Wait()
	}
}

// stop ends the monitor command.
func (m *lineMonitor) stop() {
	m.cancel()
	<-m.done
}

// flowEvent matches a flow-monitor line of one of kinds (ADDED, MODIFIED,
// DELETED) naming marker.
func flowEvent(marker string, kinds ...string) func(string) bool {
	return func(l string) bool { return eventMatches(l, marker, kinds) }
}

// routeAdded and routeDeleted match `ip monitor route` lines for prefix.
func routeAdded(prefix string) func(string) bool {
	return func(l string) bool { return strings.HasPrefix(l, prefix+" ") }
}

func routeDeleted(prefix string) func(string) bool {
	return func(l string) bool { return strings.HasPrefix(l, "Deleted "+prefix+" ") }
}

func eventMatches(line, marker string, kinds []string) bool {
	kindOK := false
	for _, k := range kinds {
		if strings.Contains(line, "event="+k) {
			kindOK = true
		}
	}
	return kindOK && containsAddress(line, marker)
}

// containsAddress reports whether s names addr as a whole token: 10.1.1.1
// is not found in 10.1.1.10.
func containsAddress(s, addr string) bool {
	for i := 0; ; {
		j := strings.Index(s[i:], addr)
		if j < 0 {
			return false
		}
		end := i + j + len(addr)
		startOK := i+j == 0 || !isAddrChar(s[i+j-1])
		endOK := end == len(s) || !isAddrChar(s[end])
		if startOK && endOK {
			return true
		}
		i += j + 1
	}
}

func isAddrChar(b byte) bool { return b == '.' || (b >= '0' && b <= '9') }
