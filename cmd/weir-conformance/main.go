// Command weir-conformance runs upstream Kubernetes e2e network suites
// (k8s.io/kubernetes v1.37.2 test/e2e, built by hack/e2e-build.sh) against a
// weir-local cluster and summarises the JUnit reports. `make conformance`
// drives it; docs/conformance.md describes the sets, the skips and the last
// result.
//
//	weir-conformance run [--set a|b|c|d|all] ...   build the test images, import them, run, summarise
//	weir-conformance sets                          print the sets' focus and skip expressions with reasons
//	weir-conformance list [-v]                     which tests each set runs and each skip removes
//	weir-conformance summary SET=FILE...           summarise existing JUnit reports
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weirnet/weir/pkg/localcluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd(os.Stdout).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "weir-conformance:", err)
		os.Exit(1)
	}
}

// options of `weir-conformance run`.
type options struct {
	sets      string
	e2eBin    string // hack/e2e-build.sh output: e2e.test, ginkgo, agnhost, ...
	imagesOut string // where the test images' tarballs are built (cached)
	reportDir string
	procs     int
	timeout   time.Duration
	nodes     int
	keep      bool
	cluster   localcluster.Config
}

// The dedicated cluster `run` starts when none is up in --cluster-dir: its
// own directory, names, underlay subnet and ports, so that it collides
// neither with `make run` (weir, 172.31.250, 17xxx) nor with the e2e
// suite's slots (e2eN, 172.31.240-247, 18000-25999).
const (
	clusterDir      = "/var/lib/weir-conformance"
	clusterPrefix   = "wconf"
	clusterSubnet   = "172.31.236"
	clusterPortBase = 16000
)

func newRootCmd(stdout io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "weir-conformance",
		Short:         "Run upstream Kubernetes e2e network suites against a weir-local cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	o := options{cluster: localcluster.DefaultConfig()}
	o.cluster.Dir, o.cluster.Prefix, o.cluster.Subnet, o.cluster.PortBase = clusterDir, clusterPrefix, clusterSubnet, clusterPortBase
	run := &cobra.Command{
		Use:   "run",
		Short: "Build and import the test images, run the sets, print the summary (needs root)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSets(cmd.Context(), stdout, o)
		},
	}
	f := run.Flags()
	f.StringVar(&o.sets, "set", "all", "sets to run: a, b, c, d, e (comma-separated) or all")
	f.StringVar(&o.cluster.IPFamily, "ip-family", o.cluster.IPFamily, "IP family of the cluster started when none is up: ipv4 or dual (set e needs dual)")
	f.StringVar(&o.e2eBin, "e2e-bin", "/var/cache/weir/e2e-v1.37.2/bin", "directory from hack/e2e-build.sh (e2e.test, ginkgo, agnhost, ...)")
	f.StringVar(&o.imagesOut, "images-out", "/var/cache/weir/e2e-v1.37.2/images", "directory for the test images' tarballs (kept; rebuilt when their inputs change)")
	f.StringVar(&o.reportDir, "report-dir", "_output/conformance", "directory for the JUnit reports and logs, one subdirectory per set")
	f.IntVar(&o.procs, "procs", 2, "parallel ginkgo processes ([Serial] tests still run alone)")
	f.DurationVar(&o.timeout, "timeout", 3*time.Hour, "ginkgo timeout per set")
	f.IntVar(&o.nodes, "nodes", 2, "nodes of the cluster started when none is up")
	f.BoolVar(&o.keep, "keep-cluster", false, "leave a cluster that run started running afterwards (one that was up is always left)")
	f.StringVar(&o.cluster.Dir, "cluster-dir", o.cluster.Dir, "state directory of the weir-local cluster to use or start (e.g. /var/lib/weir-local for `make run`'s)")
	f.StringVar(&o.cluster.K8sBin, "k8s-bin", o.cluster.K8sBin, "directory with the Kubernetes binaries (hack/k8s-build.sh)")
	f.StringVar(&o.cluster.BinDir, "bin-dir", o.cluster.BinDir, "directory with Weir's binaries (make build)")
	f.StringVar(&o.cluster.ImagesDir, "images-dir", o.cluster.ImagesDir, "directory with Weir's image tarballs (make images)")
	f.StringVar(&o.cluster.Manifest, "manifest", o.cluster.Manifest, "Weir's DaemonSet manifest")

	sets := &cobra.Command{
		Use:   "sets",
		Short: "Print every set's focus and skip expressions with the reasons",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			for _, s := range testSets {
				fmt.Fprintf(stdout, "set %s: %s\n  focus: %s\n", s.name, s.title, s.focusRE())
				for _, r := range s.skips() {
					fmt.Fprintf(stdout, "  skip:  %-36s %s\n", r.re, r.reason)
				}
			}
			return nil
		},
	}
	summary := &cobra.Command{
		Use:   "summary SET=JUNIT.xml...",
		Short: "Summarise existing JUnit reports",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var results []result
			for _, a := range args {
				set, file, ok := strings.Cut(a, "=")
				if !ok {
					set, file = filepath.Base(filepath.Dir(a)), a
				}
				r, err := parseJUnitFile(file, set)
				if err != nil {
					return err
				}
				results = append(results, r)
			}
			printSummary(stdout, results)
			return nil
		},
	}
	var listBin, listSets string
	var verbose bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List, from e2e.test --list-tests, how many tests each set runs and which tests each skip removes (Markdown)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sel, err := setByName(listSets)
			if err != nil {
				return err
			}
			names, err := listTests(cmd.Context(), filepath.Join(listBin, "e2e.test"))
			if err != nil {
				return err
			}
			printListing(stdout, sel, names, verbose)
			return nil
		},
	}
	list.Flags().StringVar(&listBin, "e2e-bin", "/var/cache/weir/e2e-v1.37.2/bin", "directory from hack/e2e-build.sh")
	list.Flags().StringVar(&listSets, "set", "all", "sets to list")
	list.Flags().BoolVarP(&verbose, "verbose", "v", false, "also list every test each set runs and every test set d's own rules remove")
	root.AddCommand(run, sets, summary, list)
	return root
}

func runSets(ctx context.Context, stdout io.Writer, o options) error {
	sets, err := setByName(o.sets)
	if err != nil {
		return err
	}
	for _, b := range []string{"e2e.test", "ginkgo", "agnhost", "regression-issue-74839", "coredns", "localhost.crt", "localhost.key"} {
		if _, err := os.Stat(filepath.Join(o.e2eBin, b)); err != nil {
			return fmt.Errorf("missing %s in %s (run hack/e2e-build.sh): %w", b, o.e2eBin, err)
		}
	}
	reportDir, err := filepath.Abs(o.reportDir)
	if err != nil {
		return err
	}
	for _, p := range []*string{&o.e2eBin, &o.imagesOut, &o.cluster.K8sBin, &o.cluster.BinDir, &o.cluster.ImagesDir, &o.cluster.Manifest} {
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}

	// The images first: a failing build should not leave a cluster behind.
	tarballs, err := buildImages(ctx, stdout, o)
	if err != nil {
		return err
	}
	cfg, started, err := ensureCluster(ctx, stdout, o)
	if err != nil {
		return err
	}
	if !cfg.DualStack() {
		// Not before: the family of a cluster that is up is what it recorded.
		var dual []string
		for _, s := range sets {
			if s.dualStack {
				dual = append(dual, s.name)
			}
		}
		if len(dual) > 0 && o.sets != "all" {
			return fmt.Errorf("set(s) %s need a dual-stack cluster; the one in %s is %s-only", strings.Join(dual, ","), cfg.Dir, cfg.IPFamily)
		}
		if len(dual) > 0 {
			fmt.Fprintf(stdout, "the cluster is %s-only: not running set(s) %s, which need a dual-stack cluster (--ip-family dual)\n", cfg.IPFamily, strings.Join(dual, ","))
			sets = slices.DeleteFunc(sets, func(s testSet) bool { return s.dualStack })
		}
	}
	if started && !o.keep {
		defer func() {
			fmt.Fprintf(stdout, "removing the cluster in %s (--keep-cluster leaves it)\n", cfg.Dir)
			if err := localcluster.Down(context.WithoutCancel(ctx), cfg); err != nil {
				fmt.Fprintf(os.Stderr, "weir-conformance: removing the cluster: %v\n", err)
			}
		}()
	}
	if err := importImages(ctx, stdout, cfg, tarballs); err != nil {
		return err
	}

	var results []result
	var errs []error
	for _, s := range sets {
		r, err := runSet(ctx, stdout, o, cfg, s, filepath.Join(reportDir, s.name))
		if err != nil {
			errs = append(errs, fmt.Errorf("set %s: %w", s.name, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		results = append(results, r)
	}
	printSummary(stdout, results)
	fmt.Fprintf(stdout, "\nJUnit reports and logs: %s/<set>/\n", reportDir)
	for _, r := range results {
		if len(r.failed) > 0 || len(r.setupFailed) > 0 {
			errs = append(errs, fmt.Errorf("set %s: %d tests failed", r.set, len(r.failed)+len(r.setupFailed)))
		}
	}
	return errors.Join(errs...)
}

// conformanceImages are the weir-image names of the upstream test images
// (cmd/weir-image/conformance.go).
var conformanceImages = []string{
	"e2e-agnhost", "e2e-busybox", "e2e-glibc-dns-testing", "e2e-nginx",
	"e2e-regression-issue-74839", "e2e-distroless-iptables", "e2e-pause",
}

// buildImages builds the test images with weir-image from the e2e-build
// binaries and Weir's pause, and returns their tarballs.
func buildImages(ctx context.Context, stdout io.Writer, o options) ([]string, error) {
	stage, err := os.MkdirTemp("", "weir-conformance-bins-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	links := map[string]string{"pause": filepath.Join(o.cluster.BinDir, "pause")}
	for _, b := range []string{"agnhost", "regression-issue-74839", "coredns", "localhost.crt", "localhost.key"} {
		links[b] = filepath.Join(o.e2eBin, b)
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(stage, name)); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	fmt.Fprintf(stdout, "building the test images into %s\n", o.imagesOut)
	cmd := exec.CommandContext(ctx, filepath.Join(o.cluster.BinDir, "weir-image"),
		append([]string{"build", "--bin-dir", stage, "--out-dir", o.imagesOut}, conformanceImages...)...)
	cmd.Stdout, cmd.Stderr = stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("building the test images (weir-image from make build): %w", err)
	}
	fmt.Fprintf(stdout, "test images ready in %.1fs\n", time.Since(start).Seconds())
	var out []string
	for _, n := range conformanceImages {
		out = append(out, filepath.Join(o.imagesOut, n+".tar"))
	}
	return out, nil
}

// ensureCluster uses the cluster in o.cluster.Dir if its API server answers,
// and starts one there otherwise. started says whether it did.
func ensureCluster(ctx context.Context, stdout io.Writer, o options) (localcluster.Config, bool, error) {
	cfg, err := o.cluster.Resolve()
	if err != nil {
		return cfg, false, err
	}
	cfg.Out = stdout
	if _, err := os.Stat(cfg.KubeconfigPath()); err == nil {
		if n, err := readyNodes(ctx, cfg); err == nil && n > 0 {
			fmt.Fprintf(stdout, "using the cluster in %s (%d Ready nodes)\n", cfg.Dir, n)
			return cfg, false, nil
		} else if err != nil {
			return cfg, false, fmt.Errorf("a cluster exists in %s but does not answer (%w); `weir-local --dir %s down` removes it", cfg.Dir, err, cfg.Dir)
		}
	}
	fmt.Fprintf(stdout, "starting a %d-node %s cluster in %s (prefix %s, subnet %s.0/24)\n", o.nodes, cfg.IPFamily, cfg.Dir, cfg.Prefix, cfg.Subnet)
	start := time.Now()
	if err := localcluster.Up(ctx, cfg, o.nodes); err != nil {
		// Left as far as it got, for its logs.
		return cfg, false, fmt.Errorf("starting the cluster: %w (logs under %s; `weir-local --dir %s down` removes it)", err, cfg.Dir, cfg.Dir)
	}
	fmt.Fprintf(stdout, "cluster up in %.1fs\n", time.Since(start).Seconds())
	return cfg, true, nil
}

// schedulableNodes counts the nodes test pods can land on: the control-plane
// node is tainted NoSchedule. e2e.test with --provider=skeleton does not
// detect this itself; without --num-nodes every test needing two nodes
// skips ("Requires at least 2 nodes (not -1)", measured).
func schedulableNodes(ctx context.Context, cfg localcluster.Config) (int, error) {
	client, err := cfg.Client()
	if err != nil {
		return 0, err
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, fmt.Errorf("listing nodes: %w", err)
	}
	n := 0
	for _, nd := range nodes.Items {
		if nd.Spec.Unschedulable {
			continue
		}
		tainted := false
		for _, t := range nd.Spec.Taints {
			if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
				tainted = true
			}
		}
		if !tainted {
			n++
		}
	}
	return n, nil
}

func readyNodes(ctx context.Context, cfg localcluster.Config) (int, error) {
	client, err := cfg.Client()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, nd := range nodes.Items {
		for _, c := range nd.Status.Conditions {
			if c.Type == "Ready" && c.Status == "True" {
				n++
			}
		}
	}
	return n, nil
}

// importImages imports the tarballs into every node's containerd (the
// k8s.io namespace kubelet uses), as weir-local does with Weir's images.
func importImages(ctx context.Context, stdout io.Writer, cfg localcluster.Config, tarballs []string) error {
	client, err := cfg.Client()
	if err != nil {
		return err
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	start := time.Now()
	for _, nd := range nodes.Items {
		for _, t := range tarballs {
			cmd, err := localcluster.NodeExec(ctx, cfg, nd.Name, "ctr", "-a", "/run/containerd/containerd.sock", "-n", "k8s.io", "images", "import", t)
			if err != nil {
				return fmt.Errorf("node %s: %w", nd.Name, err)
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("importing %s into node %s: %w: %s", filepath.Base(t), nd.Name, err, strings.TrimSpace(string(out)))
			}
		}
	}
	fmt.Fprintf(stdout, "imported %d test images into %d nodes in %.1fs\n", len(tarballs), len(nodes.Items), time.Since(start).Seconds())
	return nil
}

// runSet runs one set with the ginkgo CLI over the precompiled e2e.test and
// parses its JUnit report.
func runSet(ctx context.Context, stdout io.Writer, o options, cfg localcluster.Config, s testSet, dir string) (result, error) {
	if err := os.RemoveAll(dir); err != nil {
		return result{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return result{}, err
	}
	numNodes, err := schedulableNodes(ctx, cfg)
	if err != nil {
		return result{}, err
	}
	junit := filepath.Join(dir, "junit.xml")
	logFile := filepath.Join(dir, "ginkgo.log")
	args := []string{"run",
		fmt.Sprintf("--procs=%d", o.procs), "--timeout=" + o.timeout.String(),
		"--focus=" + s.focusRE(), "--skip=" + s.skipRE(),
		"--junit-report=" + junit, "--no-color", "--poll-progress-after=5m",
		filepath.Join(o.e2eBin, "e2e.test"), "--",
		"--kubeconfig=" + cfg.KubeconfigPath(),
		// skeleton: no cloud and no SSH into nodes; tests needing either skip themselves.
		"--provider=skeleton",
		"--kubectl-path=" + filepath.Join(cfg.K8sBin, "kubectl"),
		"--e2e-output-dir=" + dir,
		fmt.Sprintf("--num-nodes=%d", numNodes),
		// Node logs are gathered over SSH, which the nodes do not run.
		"--disable-log-dump",
	}
	fmt.Fprintf(stdout, "\n=== set %s: %s\n    focus %s\n    skip  %s\n    log   %s\n", s.name, s.title, s.focusRE(), s.skipRE(), logFile)
	lf, err := os.Create(logFile)
	if err != nil {
		return result{}, err
	}
	defer lf.Close()
	cmd := exec.CommandContext(ctx, filepath.Join(o.e2eBin, "ginkgo"), args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = lf, lf
	// On Ctrl-C, ginkgo and its e2e.test processes are interrupted as a
	// terminal would (SIGINT to the process group): they run the tests'
	// cleanup and write the report. SIGINT to ginkgo alone was not enough
	// (measured: it kept running for minutes). Killed after WaitDelay.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) }
	cmd.WaitDelay = 2 * time.Minute
	fmt.Fprintf(lf, "%s %s\n", cmd.Path, strings.Join(args, " "))
	start := time.Now()
	runErr := cmd.Run()
	if ctx.Err() != nil && cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // what is left of the group
	}
	took := time.Since(start)
	r, err := parseJUnitFile(junit, s.name)
	if err != nil {
		if runErr != nil {
			return result{}, fmt.Errorf("ginkgo: %w, and no report (%v); see %s", runErr, err, logFile)
		}
		return result{}, err
	}
	// The wall-clock time, not the sum over parallel processes.
	r.duration = took
	fmt.Fprintf(stdout, "    %d passed, %d failed, %d skipped in %s\n", len(r.passed), len(r.failed), len(r.skipped), took.Round(time.Second))
	return r, nil
}
