// Command ovs-agent is Weir's per-node agent: it owns the OVS bridge,
// programs the OpenFlow pipeline and serves the CNI requests the `weir`
// CNI binary forwards to it. See docs/agent.md for the configuration.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/weirnet/weir/pkg/agent"
	"github.com/weirnet/weir/pkg/openflow"
)

func main() {
	klog.InitFlags(nil)
	configPath := flag.String("config", "", "path of the agent's YAML config file (see docs/agent.md)")
	cfg := agent.DefaultConfig()
	flag.StringVar(&cfg.PodCIDR, "pod-cidr", "", "the node's pod CIDR (overrides the config file; empty: read the Node's spec.podCIDR)")
	flag.StringVar(&cfg.PodCIDRv6, "pod-cidr-v6", "", "with --pod-cidr: the node's IPv6 pod CIDR, for dual-stack pods (overrides the config file)")
	flag.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file for the API server (overrides the config file; empty: in-cluster)")
	flag.StringVar(&cfg.NodeName, "node-name", "", "name of this node's Node object (overrides the config file and $NODE_NAME)")
	flag.StringVar(&cfg.DatapathType, "datapath-type", "", "OVS datapath: system or netdev (overrides the config file)")
	flag.StringVar(&cfg.Bridge, "bridge", "", "integration bridge name (overrides the config file)")
	flag.StringVar(&cfg.OVSRunDir, "ovs-rundir", "", "directory with the bridge's .mgmt socket (overrides the config file)")
	flag.StringVar(&cfg.OVSDBEndpoint, "ovsdb", "", "OVSDB endpoint, unix:PATH (overrides the config file)")
	flag.StringVar(&cfg.CNISocket, "cni-socket", "", "CNI server socket (overrides the config file)")
	flag.StringVar(&cfg.StateDir, "state-dir", "", "directory for persistent state (overrides the config file)")
	flag.StringVar(&cfg.UnderlayInterface, "underlay-interface", "", "underlay NIC, the node's tunnel endpoint (overrides the config file)")
	flag.StringVar(&cfg.TunnelPort, "tunnel-port", "", "Geneve tunnel port name (overrides the config file)")
	flag.IntVar(&cfg.MTU, "mtu", 0, "pod and gateway MTU; 0 keeps the config file's (default auto)")
	cleanup := flag.Bool("cleanup", false, "undo what the agent set up on this node (SNAT, pod guard, br-phy underlay, "+
		"integration bridge, state) and exit; for uninstalling, see docs/agent.md")
	flag.Parse()

	if err := run(*configPath, cfg, *cleanup); err != nil {
		klog.ErrorS(err, "ovs-agent failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

// run merges the config file with the flags that were given and runs the
// agent until SIGTERM or SIGINT (or, with cleanup, undoes its node set-up).
func run(configPath string, flags agent.Config, cleanup bool) error {
	cfg := agent.DefaultConfig()
	if configPath != "" {
		var err error
		if cfg, err = agent.LoadConfig(configPath); err != nil {
			return err
		}
	}
	for _, o := range []struct {
		dst *string
		v   string
	}{
		{&cfg.PodCIDR, flags.PodCIDR}, {&cfg.PodCIDRv6, flags.PodCIDRv6}, {&cfg.DatapathType, flags.DatapathType}, {&cfg.Bridge, flags.Bridge},
		{&cfg.OVSRunDir, flags.OVSRunDir}, {&cfg.OVSDBEndpoint, flags.OVSDBEndpoint},
		{&cfg.CNISocket, flags.CNISocket}, {&cfg.StateDir, flags.StateDir},
		{&cfg.Kubeconfig, flags.Kubeconfig}, {&cfg.NodeName, flags.NodeName},
		{&cfg.UnderlayInterface, flags.UnderlayInterface}, {&cfg.TunnelPort, flags.TunnelPort},
	} {
		if o.v != "" {
			*o.dst = o.v
		}
	}
	if flags.MTU != 0 {
		cfg.MTU = flags.MTU
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := klog.Background()
	if cleanup {
		return agent.Cleanup(ctx, cfg, log)
	}
	openflow.RouteLibraryLogs(log)
	return agent.Run(ctx, cfg, log)
}
