// Command weir-demo is what `make run` runs until the local cluster
// exists: it starts a private Open vSwitch in a fresh network namespace (a
// simulated node), runs the real ovs-agent there, attaches two pods through
// the real `weir` CNI binary driven by libcni (as a container runtime
// would), pings between them, prints the pipeline with ovs-ofctl, and
// waits for Ctrl-C so you can explore. Everything it creates is removed on
// exit. Needs root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weirnet/weir/test/ovstest"
)

func main() {
	binDir := flag.String("bin-dir", "bin", "directory holding the ovs-agent and weir binaries (make build)")
	wait := flag.Bool("wait", true, "keep everything running until Ctrl-C")
	flag.Parse()
	if err := run(*binDir, *wait); err != nil {
		fmt.Fprintln(os.Stderr, "weir-demo:", err)
		os.Exit(1)
	}
}

func run(binDir string, wait bool) error {
	binDir, err := filepath.Abs(binDir)
	if err != nil {
		return err
	}
	for _, b := range []string{"ovs-agent", "weir"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return fmt.Errorf("%s not found in %s: run make build first", b, binDir)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	step("Starting a private Open vSwitch (userspace datapath) in a new network namespace")
	ovs, err := ovstest.Launch()
	if err != nil {
		return err
	}
	defer func() {
		step("Cleaning up")
		if err := ovs.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "weir-demo:", err)
		}
	}()
	fmt.Printf("    node netns %s, OVS files in %s\n", ovs.NetNS, ovs.Dir)

	work, err := os.MkdirTemp("", "weir-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	sock := filepath.Join(work, "cni.sock")
	logPath := filepath.Join(work, "ovs-agent.log")

	step("Starting ovs-agent in the node namespace (pod CIDR 10.244.1.0/24)")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	agent := exec.Command("ip", "netns", "exec", ovs.NetNS, filepath.Join(binDir, "ovs-agent"),
		"--pod-cidr", "10.244.1.0/24", "--datapath-type", "netdev", "--ovs-rundir", ovs.Dir,
		"--ovsdb", ovs.DBSocket(), "--cni-socket", sock, "--state-dir", filepath.Join(work, "state"))
	agent.Stdout, agent.Stderr = logf, logf
	if err := agent.Start(); err != nil {
		return err
	}
	defer func() {
		_ = agent.Process.Signal(syscall.SIGTERM)
		_ = agent.Wait()
	}()

	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(work, "cache"), nil)
	conf, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(
		`{"cniVersion":"1.1.0","name":"weir","plugins":[{"type":"weir","cniSocket":%q}]}`, sock)))
	if err != nil {
		return err
	}
	if err := waitReady(ctx, cni, conf); err != nil {
		return fmt.Errorf("%w (agent log: %s)", err, logPath)
	}

	var pods []podInfo
	for _, name := range []string{"demo-a", "demo-b"} {
		ns := ovs.NetNS + "-" + name
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			return fmt.Errorf("ip netns add %s: %v: %s", ns, err, out)
		}
		defer exec.Command("ip", "netns", "delete", ns).Run()
		rt := &libcni.RuntimeConf{ContainerID: name, NetNS: "/var/run/netns/" + ns, IfName: "eth0",
			Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name}}}
		step("CNI ADD " + name + " (the weir binary forwards it to the agent)")
		res, err := cni.AddNetworkList(ctx, conf, rt)
		if err != nil {
			return err
		}
		r, err := current.NewResultFromResult(res)
		if err != nil {
			return err
		}
		defer cni.DelNetworkList(context.Background(), conf, rt)
		fmt.Printf("    %s: %s on %s (host side %s)\n", name, r.IPs[0].Address.String(), r.Interfaces[1].Name, r.Interfaces[0].Name)
		pods = append(pods, podInfo{name: name, ns: ns, ip: r.IPs[0].Address.IP.String()})
	}

	step(fmt.Sprintf("ping %s -> %s", pods[0].name, pods[1].name))
	out, err := exec.Command("ip", "netns", "exec", pods[0].ns, "ping", "-c", "3", "-i", "0.2", pods[1].ip).CombinedOutput()
	fmt.Print(indent(string(out)))
	if err != nil {
		return fmt.Errorf("ping failed: %v", err)
	}

	step("The pipeline: ovs-ofctl -O OpenFlow15 --names dump-flows br-int")
	flows, err := ovs.Ofctl("-O", "OpenFlow15", "--names", "--no-stats", "dump-flows", "br-int")
	if err != nil {
		return err
	}
	fmt.Print(indent(flows))

	if !wait {
		return nil
	}
	fmt.Printf(`
Everything is running. In another shell (as root) try:
    OVS_RUNDIR=%[1]s ovs-ofctl -O OpenFlow15 --names dump-flows br-int table=SpoofGuard
    ovs-appctl -t %[1]s/ovs-vswitchd.ctl ofproto/trace br-int in_port=3,icmp,dl_src=...
    ip netns exec %[2]s ping %[3]s
    less %[4]s
Press Ctrl-C to clean up.
`, ovs.Dir, pods[0].ns, pods[1].ip, logPath)
	<-ctx.Done()
	return nil
}

type podInfo struct{ name, ns, ip string }

func waitReady(ctx context.Context, cni *libcni.CNIConfig, conf *libcni.NetworkConfigList) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cni.GetStatusNetworkList(ctx, conf)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("agent not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func step(s string) { fmt.Printf("==> %s\n", s) }

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + strings.TrimSpace(l) + "\n")
	}
	return b.String()
}
