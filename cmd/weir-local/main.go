// Command weir-local runs a real multi-node Kubernetes cluster on this
// machine — every node its own network and mount namespace with containerd,
// kubelet and kube-proxy, the control plane in the control-plane node's
// network namespace — with Weir deployed by its own DaemonSet and CoreDNS as
// cluster DNS. No Docker needed. See pkg/localcluster.
//
//	weir-local up [--nodes N] [--ip-family dual|ipv4|ipv6] [--proxy kube-proxy|coexist] [--prefix P --subnet A.B.C --port-base N]
//	                              start the cluster and deploy Weir
//	weir-local demo               test-server pods on every node, probed pairwise
//	weir-local status             processes, nodes, DaemonSet
//	weir-local kubeconfig         print the admin kubeconfig path
//	weir-local node-exec NODE -- CMD...
//	weir-local pod-exec NS/POD -- CMD...
//	weir-local down               remove everything
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/weirnet/weir/pkg/localcluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "weir-local:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	cfg := localcluster.DefaultConfig()
	if d := os.Getenv("WEIR_LOCAL_DIR"); d != "" {
		cfg.Dir = d
	}
	if d := os.Getenv("WEIR_K8S_BIN"); d != "" {
		cfg.K8sBin = d
	}
	root := &cobra.Command{
		Use:           "weir-local",
		Short:         "A local multi-node Kubernetes cluster with Weir, without Docker",
		SilenceUsage:  true,
		SilenceErrors: true,
		// A cluster in --dir may have been started with another identity
		// (e.g. the e2e suite's): act on what it recorded.
		PersistentPreRunE: func(*cobra.Command, []string) (err error) {
			cfg, err = cfg.Resolve()
			return err
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&cfg.Dir, "dir", cfg.Dir, "state directory of the cluster (env WEIR_LOCAL_DIR)")
	pf.StringVar(&cfg.K8sBin, "k8s-bin", cfg.K8sBin, "directory with the Kubernetes binaries from hack/k8s-build.sh (env WEIR_K8S_BIN)")
	pf.StringVar(&cfg.BinDir, "bin-dir", cfg.BinDir, "directory with Weir's binaries (make build)")
	pf.StringVar(&cfg.ImagesDir, "images-dir", cfg.ImagesDir, "directory with the image tarballs (make images)")
	pf.StringVar(&cfg.Manifest, "manifest", cfg.Manifest, "Weir's DaemonSet manifest")

	nodes := 2
	up := &cobra.Command{
		Use:   "up",
		Short: "Start the control plane and N nodes, deploy Weir, wait until Ready",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			if err := localcluster.Up(cmd.Context(), cfg, nodes); err != nil {
				return fmt.Errorf("%w\n(logs under %s; `weir-local down` removes the cluster)", err, cfg.Dir)
			}
			fmt.Printf("cluster up in %.1fs; export KUBECONFIG=%s\n", time.Since(start).Seconds(), cfg.KubeconfigPath())
			return nil
		},
	}
	up.Flags().IntVar(&nodes, "nodes", nodes, "number of nodes")
	// Another identity lets a second cluster run beside the default one; the
	// other commands read it from --dir.
	up.Flags().StringVar(&cfg.Prefix, "prefix", cfg.Prefix, "prefix of the cluster's host objects (nodes, netns, bridge, veths; at most 8 characters)")
	up.Flags().StringVar(&cfg.Subnet, "subnet", cfg.Subnet, "first three octets of the nodes' /24 underlay")
	up.Flags().IntVar(&cfg.PortBase, "port-base", cfg.PortBase, "base of the control-plane ports (API server at base+443)")
	up.Flags().StringVar(&cfg.IPFamily, "ip-family", cfg.IPFamily, "IP family of the cluster: dual (IPv4 and IPv6 pod, Service and node addresses, IPv4 first), ipv4, or ipv6 (IPv6 addresses only, Geneve over an IPv6 underlay)")

	up.Flags().StringVar(&cfg.Proxy, "proxy", cfg.Proxy, "who load-balances Services: kube-proxy (kube-proxy alone), or coexist (Weir's proxy DNATs pods' Service traffic in OVS, kube-proxy the node's and external traffic); weir, without kube-proxy, is not supported yet")

	down := &cobra.Command{
		Use:   "down",
		Short: "Stop the cluster and remove every process, namespace, mount, cgroup, link and file it created",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Not cancelled by Ctrl-C: a half-done teardown is worse.
			return localcluster.Down(context.WithoutCancel(cmd.Context()), cfg)
		},
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster's processes, nodes and the Weir DaemonSet",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return localcluster.Status(cmd.Context(), cfg, os.Stdout)
		},
	}
	kubeconfig := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the path of the admin kubeconfig",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if _, err := os.Stat(cfg.KubeconfigPath()); err != nil {
				return fmt.Errorf("no cluster in %s: %w", cfg.Dir, err)
			}
			fmt.Println(cfg.KubeconfigPath())
			return nil
		},
	}
	demo := &cobra.Command{
		Use:   "demo",
		Short: "Create a test-server pod on every node and probe every pair over TCP and UDP",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return localcluster.Demo(cmd.Context(), cfg)
		},
	}
	nodeExec := &cobra.Command{
		Use:   "node-exec NODE -- CMD...",
		Short: "Run a command in a node's network and mount namespaces",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := localcluster.NodeExec(cmd.Context(), cfg, args[0], args[1:]...)
			if err != nil {
				return err
			}
			return runAttached(c)
		},
	}
	podExec := &cobra.Command{
		Use:   "pod-exec NAMESPACE/POD -- CMD...",
		Short: "Run a host command inside a pod's network namespace",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := localcluster.PodExec(cmd.Context(), cfg, args[0], args[1:]...)
			if err != nil {
				return err
			}
			return runAttached(c)
		},
	}
	root.AddCommand(up, down, status, kubeconfig, demo, nodeExec, podExec)
	return root
}

func runAttached(c *exec.Cmd) error {
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	return c.Run()
}
