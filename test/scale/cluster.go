package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weirnet/weir/pkg/localcluster"
)

// The scale cluster has its own identity, so it never collides with the
// cluster of `make run` or of `make conformance`.
const (
	clusterDir      = "/var/lib/weir-scale"
	clusterPrefix   = "wscale"
	clusterSubnet   = "172.31.232"
	clusterPortBase = 15000
	// clusterCIDR holds the real nodes' /24s (allocated by the
	// controller-manager from its start) and the kwok nodes' /24s
	// (kwokCIDRBase on, set by the generator): 16,384 /24s.
	clusterCIDR = "10.128.0.0/10"
)

// scaleConfig is the local cluster the harness starts, tuned so the
// control plane is not what limits a run (docs/scale.md, "Tuning"):
//   - kube-apiserver: more requests in flight (defaults 400/200), and no
//     priority-and-fairness queuing of the generator's burst of creates;
//   - etcd: a bigger backend quota (default 2 GiB), and a snapshot count
//     that keeps its memory down during the creates;
//   - kube-controller-manager: a higher client rate (default 20 QPS), so
//     node lifecycle and endpoint controllers keep up with 1,000s of nodes.
func scaleConfig() localcluster.Config {
	cfg := localcluster.DefaultConfig()
	cfg.Dir, cfg.Prefix, cfg.Subnet, cfg.PortBase = clusterDir, clusterPrefix, clusterSubnet, clusterPortBase
	cfg.ClusterCIDR = clusterCIDR
	cfg.ExtraArgs = map[string][]string{
		"kube-apiserver": {"--max-requests-inflight=1000", "--max-mutating-requests-inflight=500",
			"--enable-priority-and-fairness=false"},
		"etcd":                    {"--quota-backend-bytes=8589934592", "--snapshot-count=10000"},
		"kube-controller-manager": {"--kube-api-qps=200", "--kube-api-burst=400"},
	}
	return cfg
}

// fastClient is an admin client without client-side rate limiting: the
// generator creates tens of thousands of objects.
func fastClient(cfg localcluster.Config) (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.KubeconfigPath())
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", cfg.KubeconfigPath(), err)
	}
	rc.QPS, rc.Burst = 2000, 4000
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.UserAgent = "weir-scale"
	return kubernetes.NewForConfig(rc)
}

// upCluster starts the scale cluster with two workers, or uses the one
// already up in cfg.Dir. started says whether this run started it.
func upCluster(ctx context.Context, cfg localcluster.Config, log func(string, ...any)) (started bool, err error) {
	if _, err := os.Stat(cfg.KubeconfigPath()); err == nil {
		if c, err := cfg.Client(); err == nil {
			if _, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{Limit: 1}); err == nil {
				log("using the cluster in %s", cfg.Dir)
				return false, nil
			}
		}
		return false, fmt.Errorf("a cluster exists in %s but does not answer; `bin/weir-local --dir %s down` removes it", cfg.Dir, cfg.Dir)
	}
	log("starting a 2-node cluster in %s", cfg.Dir)
	start := time.Now()
	if err := localcluster.Up(ctx, cfg, 2); err != nil {
		return true, fmt.Errorf("starting the cluster: %w (logs under %s)", err, cfg.Dir)
	}
	log("cluster up in %.0fs", time.Since(start).Seconds())
	return true, nil
}

// realNodes lists the nodes that run Weir: the control-plane node and the
// workers.
func realNodes(cfg localcluster.Config) []RealNode {
	nodes := []RealNode{{Name: cfg.NodeName(localcluster.ControlPlane), IP: cfg.NodeIP(localcluster.ControlPlane)}}
	for i := 1; i <= 2; i++ {
		nodes = append(nodes, RealNode{Name: cfg.NodeName(i), IP: cfg.NodeIP(i), Worker: true})
	}
	return nodes
}

// kwokConfig is kwok's --config: its tuning and the stages from the kwok
// module (hack/kwok-build.sh). Measured at S2 with the defaults (1 worker
// syncing pods per node, 4 lease workers) kwok itself lagged; more workers
// keep pods Running seconds after creation.
const kwokConfig = `apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  nodeLeaseDurationSeconds: 40
  nodeLeaseParallelism: 16
  podsOnNodeSyncParallelism: 16
  nodePlayStageParallelism: 16
  podPlayStageParallelism: 16
`

// kwokProcess is the running kwok controller.
type kwokProcess struct {
	cmd  *exec.Cmd
	done chan error
}

// startKwok runs kwok on the host against the cluster, managing the nodes
// labelled type=kwok. Its log goes to cfg.Dir/logs/kwok.log.
func startKwok(cfg localcluster.Config, kwokBin string) (*kwokProcess, error) {
	stages, err := filepath.Glob(filepath.Join(kwokBin, "stages", "*.yaml"))
	if err != nil || len(stages) == 0 {
		return nil, fmt.Errorf("no kwok stages in %s/stages (run hack/kwok-build.sh)", kwokBin)
	}
	docs := []string{kwokConfig}
	for _, s := range stages {
		b, err := os.ReadFile(s)
		if err != nil {
			return nil, fmt.Errorf("reading kwok stage: %w", err)
		}
		docs = append(docs, string(b))
	}
	confPath := filepath.Join(cfg.Dir, "kwok.yaml")
	if err := os.WriteFile(confPath, []byte(strings.Join(docs, "\n---\n")), 0o644); err != nil {
		return nil, fmt.Errorf("writing kwok config: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(cfg.Dir, "logs", "kwok.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening kwok log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(kwokBin, "kwok"), "--kubeconfig="+cfg.KubeconfigPath(), "--config="+confPath,
		"--manage-nodes-with-label-selector="+KwokNodeLabel+"="+KwokNodeValue,
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting kwok: %w", err)
	}
	p := &kwokProcess{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	select {
	case err := <-p.done:
		return nil, fmt.Errorf("kwok exited at start (%v); see %s", err, logf.Name())
	case <-time.After(2 * time.Second):
	}
	return p, nil
}

// PID is kwok's process ID (for its CPU and memory).
func (p *kwokProcess) PID() int { return p.cmd.Process.Pid }

// Stop ends kwok.
func (p *kwokProcess) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
