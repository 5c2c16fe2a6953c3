package localcluster

// Fault hooks for the e2e fault suite (test/e2e/faults_test.go): restart a
// node's software as a crash or reboot would, and take control-plane
// processes down and up again.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// RestartNode kills everything of worker node idx — kubelet, kube-proxy,
// containerd, its shims and every container (the weir-agent pod's ovs and
// ovs-agent with them) — as a power cut would, then starts the node again as
// AddNode does. What a reboot empties is emptied: the node's mount namespace
// dies with its processes, taking the pods' network namespaces (and their
// veths) along, and the runtime directories that live in /run on a real node
// (run-containerd, netns) start empty. The disk directories (/var/lib/...,
// the OVSDB file, the IPAM store) stay, and so does the node's network
// namespace, the machine's "hardware", with the kernel state a reboot resets
// reset: OVS's userspace tap devices (br-phy, br-int, the gateway), which
// outlive ovs-vswitchd (docs/agent.md), are deleted, eth0 gets its boot
// address and routes back, and the nftables/iptables ruleset is emptied
// (the agent's netdev weir_underlay table drops everything arriving on
// eth0, which only OVS's AF_PACKET socket sees) but for localcluster's own
// node table. Without that the node cannot come back with the
// netdev datapath: its address stays on br-phy, which nothing forwards
// until ovs-vswitchd runs, which runs in a pod the kubelet learns of only
// from the API server it then cannot reach (seen: "no route to host" for
// minutes).
func RestartNode(ctx context.Context, cfg Config, idx int) error {
	if idx == ControlPlane {
		return fmt.Errorf("RestartNode: the control-plane node also runs the control plane; restart a worker node")
	}
	st, err := cfg.loadState()
	if err != nil {
		return err
	}
	if !slices.Contains(st.Nodes, idx) {
		return fmt.Errorf("RestartNode: node %s does not exist", cfg.NodeName(idx))
	}
	name := cfg.NodeName(idx)
	killNode(cfg, name)
	for _, d := range []string{"run-containerd", "netns"} {
		if err := os.RemoveAll(filepath.Join(cfg.nodeDir(name), d)); err != nil {
			return fmt.Errorf("RestartNode: clearing %s of %s: %w", d, name, err)
		}
	}
	if err := bootNetwork(ctx, cfg, idx); err != nil {
		return fmt.Errorf("RestartNode %s: %w", name, err)
	}
	hier, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hier {
		removeCgroupTree(filepath.Join(h, name))
	}
	if err := nodeCgroups(name); err != nil {
		return fmt.Errorf("RestartNode %s: %w", name, err)
	}
	if err := runNodeInside(ctx, cfg, idx); err != nil {
		return fmt.Errorf("RestartNode %s: %w", name, err)
	}
	return nil
}

// bootNetwork resets node idx's network namespace to what nodeNetwork made:
// no tap devices, eth0 with the node's address, the default and unreachable
// routes, and only localcluster's nftables table.
func bootNetwork(ctx context.Context, cfg Config, idx int) error {
	name := cfg.NodeName(idx)
	out, err := exec.CommandContext(ctx, "ip", "-n", name, "-o", "link", "show", "type", "tun").Output()
	if err != nil {
		return fmt.Errorf("listing tap devices: %w", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			dev, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if err := run(ctx, "ip", "-n", name, "link", "del", dev); err != nil {
				return err
			}
		}
	}
	for _, s := range cfg.bootNetworkSteps(idx) {
		if err := run(ctx, "ip", append([]string{"-n", name}, s...)...); err != nil {
			return err
		}
	}
	if err := run(ctx, "ip", "netns", "exec", name, "nft", "flush", "ruleset"); err != nil {
		return err
	}
	return nft(ctx, "/run/netns/"+name, cfg.nodeRuleset())
}

// bootNetworkSteps are the `ip -n NODE` commands of bootNetwork: eth0's
// addresses and the node's routes of each family of the cluster, as
// nodeNetworkSteps made them.
func (c Config) bootNetworkSteps(idx int) [][]string {
	steps := [][]string{{"addr", "flush", "dev", "eth0"}}
	if c.HasIPv4() {
		steps = append(steps, []string{"addr", "add", c.NodeIP(idx) + "/24", "dev", "eth0"})
	}
	steps = append(steps, []string{"link", "set", "eth0", "up"})
	if c.HasIPv4() {
		steps = append(steps,
			[]string{"route", "replace", "default", "via", c.Subnet + ".1"},
			[]string{"route", "replace", "unreachable", c.ClusterCIDR})
	}
	if c.HasIPv6() {
		steps = append(steps,
			[]string{"addr", "add", c.NodeIP6(idx) + "/64", "dev", "eth0", "nodad"},
			[]string{"-6", "route", "replace", "default", "via", c.Subnet6() + "1"},
			[]string{"-6", "route", "replace", "unreachable", c.ClusterCIDRv6})
	}
	return steps
}

// StopControlPlane stops the named control-plane processes ("etcd",
// "kube-apiserver", "kube-controller-manager", "kube-scheduler"; SIGTERM,
// SIGKILL after 5 s) and returns the function that starts them again, in
// the order given, with the command lines they ran with; when
// kube-apiserver is among them it waits until it is ready.
func StopControlPlane(cfg Config, names ...string) (start func(ctx context.Context) error, err error) {
	type proc struct {
		name string
		argv []string
	}
	var procs []proc
	for _, n := range names {
		pid := readPID(filepath.Join(cfg.runDir(), n+".pid"))
		if !alive(pid) {
			return nil, fmt.Errorf("StopControlPlane: %s is not running", n)
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return nil, fmt.Errorf("StopControlPlane: command line of %s: %w", n, err)
		}
		procs = append(procs, proc{n, strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")})
	}
	for i := len(procs) - 1; i >= 0; i-- {
		stopPID(readPID(filepath.Join(cfg.runDir(), procs[i].name+".pid")), 5*time.Second)
	}
	return func(ctx context.Context) error {
		netns := "--net=/run/netns/" + cfg.NodeName(ControlPlane)
		for _, p := range procs {
			err := startDaemon(filepath.Join(cfg.runDir(), p.name+".pid"), filepath.Join(cfg.logDir(), p.name+".log"), nil,
				"nsenter", append([]string{netns, "--"}, p.argv...)...)
			if err != nil {
				return fmt.Errorf("restarting %s: %w", p.name, err)
			}
			if p.name != "kube-apiserver" {
				continue
			}
			client, err := cfg.Client()
			if err != nil {
				return err
			}
			if err := waitFor(ctx, 60*time.Second, "kube-apiserver /readyz", func() (bool, error) {
				_, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
				return err == nil, err
			}); err != nil {
				return err
			}
		}
		return nil
	}, nil
}
