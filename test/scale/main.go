package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/weirnet/weir/pkg/localcluster"
)

type options struct {
	scenario     string
	out          string
	reps         int
	churnRate    int
	churnSeconds time.Duration
	keep         bool
	kwokBin      string
	summarize    bool
	cluster      localcluster.Config
}

func main() {
	o := options{cluster: scaleConfig()}
	flag.StringVar(&o.scenario, "scenario", "S1", "scenario: S1, S2 or S3")
	flag.StringVar(&o.out, "out", "_output/scale", "report directory (one subdirectory per scenario)")
	flag.IntVar(&o.reps, "reps", 100, "repetitions of each single-change latency")
	flag.IntVar(&o.churnRate, "churn-rate", 50, "pod updates per second during the churn phase")
	flag.DurationVar(&o.churnSeconds, "churn", time.Minute, "length of the churn phase")
	flag.BoolVar(&o.keep, "keep-cluster", false, "leave the scale cluster (and its objects) running afterwards")
	flag.StringVar(&o.kwokBin, "kwok-bin", "/var/cache/weir/kwok-v0.8.0/bin", "directory from hack/kwok-build.sh")
	flag.BoolVar(&o.summarize, "summarize", false, "only render again each scenario's report and plots, and write summary.md and the growth plots, from the result.json files under -out")
	flag.StringVar(&o.cluster.K8sBin, "k8s-bin", o.cluster.K8sBin, "directory with the Kubernetes binaries (hack/k8s-build.sh)")
	flag.StringVar(&o.cluster.BinDir, "bin-dir", o.cluster.BinDir, "directory with Weir's binaries (make build)")
	flag.StringVar(&o.cluster.ImagesDir, "images-dir", o.cluster.ImagesDir, "directory with Weir's image tarballs (make images)")
	flag.StringVar(&o.cluster.Manifest, "manifest", o.cluster.Manifest, "Weir's DaemonSet manifest")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if o.summarize {
		err = summarize(o.out)
	} else {
		err = run(ctx, o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Printf("%s scale: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func findScenario(name string) (Scenario, error) {
	for _, s := range Scenarios {
		if s.Name == name {
			return s, nil
		}
	}
	return Scenario{}, fmt.Errorf("unknown scenario %q (want S1, S2 or S3)", name)
}

func summarize(out string) error {
	paths, err := filepath.Glob(filepath.Join(out, "S*", "result.json"))
	if err != nil || len(paths) == 0 {
		return fmt.Errorf("no result.json under %s/S*", out)
	}
	results, err := LoadResults(paths)
	if err != nil {
		return err
	}
	// Each scenario's report and plots are rendered again too, so a
	// change of the report's format needs no new run.
	for i, r := range results {
		if err := WriteReport(filepath.Dir(paths[i]), r); err != nil {
			return err
		}
	}
	return Summarize(out, results)
}

func run(ctx context.Context, o options) (err error) {
	s, err := findScenario(o.scenario)
	if err != nil {
		return err
	}
	if o.reps < 1 || o.reps > maxReps {
		return fmt.Errorf("-reps %d: want 1 to %d", o.reps, maxReps)
	}
	cfg := o.cluster
	started, err := upCluster(ctx, cfg, logf)
	if started && !o.keep {
		defer func() {
			logf("removing the scale cluster")
			if derr := localcluster.Down(context.WithoutCancel(ctx), cfg); derr != nil && err == nil {
				err = derr
			}
		}()
	}
	if err != nil {
		return err
	}
	client, err := fastClient(cfg)
	if err != nil {
		return err
	}
	env := Env{Cfg: cfg, Client: client, Real: realNodes(cfg)}
	kwok, err := startKwok(cfg, o.kwokBin)
	if err != nil {
		return err
	}
	defer kwok.Stop()
	pods, err := startPodWatch(ctx, client)
	if err != nil {
		return err
	}
	defer pods.stop()

	res := Result{Scenario: s, Started: time.Now()}
	logf("%s: %d nodes, %d pods, %d policies in %d namespaces", s.Name, s.Nodes, s.Pods, s.Policies, s.Namespaces)
	layout, err := generate(ctx, client, env, s, logf)
	if err != nil {
		return err
	}
	want := s.Pods + len(layout.RealPods)
	if err := pods.waitCount(want, 30*time.Minute, func(have int) { logf("%d of %d pods have an IP", have, want) }); err != nil {
		return err
	}
	if err := realPodsRunning(ctx, client, layout, 5*time.Minute); err != nil {
		return err
	}
	layout.Converged = time.Since(res.Started)
	logf("every pod has an IP after %.0fs (kwok RSS %.0f MiB)", layout.Converged.Seconds(), procRSSMiB(kwok.PID()))
	res.Layout = layout
	if err := waitAgentsIdle(ctx, env, 20*time.Second, 15*time.Minute); err != nil {
		return err
	}
	if res.Agents, err = steadyState(ctx, env); err != nil {
		return err
	}
	for _, a := range res.Agents {
		logf("%s: agent RSS %.0f MiB, heap %.0f MiB, %d flows, ovs-vswitchd RSS %.0f MiB", a.Node, a.RSSMiB, a.HeapMiB, a.FlowsTotal, a.VswitchdRSSMiB)
	}
	watch, api, err := churn(ctx, env, s, o.churnRate, o.churnSeconds, logf)
	if err != nil {
		return err
	}
	res.APIServer = api
	lat, misses, err := measureLatencies(ctx, env, layout, pods, o.reps, logf)
	if err != nil {
		return err
	}
	for k, n := range misses {
		logf("%s: %d repetitions without the expected flow event", k, n)
	}
	for i := range res.Agents {
		a := &res.Agents[i]
		a.WatchBytesPerSecond = watch[a.Node]
		a.Latencies = lat[a.Node]
	}
	// A failed full sync still leaves a report of everything else; the
	// run fails afterwards.
	var syncErr error
	for i := range res.Agents {
		a := &res.Agents[i]
		n := env.Real[i]
		if !n.Worker {
			continue
		}
		if a.FullSyncSeconds, a.FullSyncCPUSeconds, err = fullSync(ctx, env, n); err != nil {
			syncErr = errors.Join(syncErr, err)
			continue
		}
		logf("%s: full sync after a restart %.2fs, %.2f CPU s", a.Node, a.FullSyncSeconds, a.FullSyncCPUSeconds)
	}
	dir := filepath.Join(o.out, s.Name)
	if err := WriteReport(dir, res); err != nil {
		return err
	}
	logf("report in %s/report.md", dir)
	return syncErr
}
