package localcluster

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

//go:embed node-inside.sh
var nodeInsideScript []byte

// hostMountPoints are the standard runtime paths a node bind-mounts from its
// own directory inside its mount namespace. They must exist on the host as
// mount targets; Up creates the missing ones and Down removes those again.
var hostMountPoints = []string{
	"/etc/cni/net.d", "/opt/cni/bin", "/var/lib/kubelet", "/run/containerd", "/var/lib/containerd",
	"/run/netns", "/var/run/openvswitch", "/var/run/weir", "/var/lib/weir", "/var/log/pods", "/var/log/weir",
}

// cgroupHierarchies lists the cgroup v1 hierarchies mounted on this host
// (plus the unified one), where each node gets its own cgroup root.
func cgroupHierarchies() ([]string, error) {
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil, fmt.Errorf("listing cgroup hierarchies: %w", err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	return out, nil
}

// AddNode creates node idx (1-based) and starts its containerd, kubelet and
// kube-proxy; the node registers itself with the API server.
func AddNode(ctx context.Context, cfg Config, idx int) error {
	st, err := cfg.loadState()
	if err != nil {
		return err
	}
	if slices.Contains(st.Nodes, idx) {
		return fmt.Errorf("node %s already exists", cfg.NodeName(idx))
	}
	if err := startNode(ctx, cfg, idx); err != nil {
		stopNode(ctx, cfg, idx)
		return fmt.Errorf("starting node %s: %w", cfg.NodeName(idx), err)
	}
	st, err = cfg.loadState()
	if err != nil {
		return err
	}
	st.Nodes = append(st.Nodes, idx)
	slices.Sort(st.Nodes)
	return cfg.saveState(st)
}

// RemoveNode stops node idx, removes everything it created and deletes its
// Node object.
func RemoveNode(ctx context.Context, cfg Config, idx int) error {
	stopNode(ctx, cfg, idx)
	st, err := cfg.loadState()
	if err != nil {
		return err
	}
	st.Nodes = slices.DeleteFunc(st.Nodes, func(n int) bool { return n == idx })
	if err := cfg.saveState(st); err != nil {
		return err
	}
	client, err := cfg.Client()
	if err != nil {
		return err
	}
	err = client.CoreV1().Nodes().Delete(ctx, cfg.NodeName(idx), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting Node %s: %w", cfg.NodeName(idx), err)
	}
	return nil
}

func startNode(ctx context.Context, cfg Config, idx int) error {
	name := cfg.NodeName(idx)
	dir := cfg.nodeDir(name)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clearing %s: %w", dir, err)
	}
	for _, d := range []string{"logs", "opt-cni-bin"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}

	// Credentials: the kubelet's own client certificate (Node authorizer)
	// and kube-proxy's.
	p, err := loadOrCreatePKI(filepath.Join(cfg.Dir, "pki"))
	if err != nil {
		return err
	}
	if err := p.ensure(certSpec{name: "node-" + name, cn: "system:node:" + name, orgs: []string{"system:nodes"}}); err != nil {
		return err
	}
	if err := p.kubeconfig(filepath.Join(dir, "kubelet.kubeconfig"), cfg.APIServerURL(), "node-"+name); err != nil {
		return err
	}
	if err := p.kubeconfig(filepath.Join(dir, "kube-proxy.kubeconfig"), cfg.APIServerURL(), "kube-proxy"); err != nil {
		return err
	}

	// The runtime's loopback plugin: containerd's CRI sets up every pod's lo
	// with it (distributions ship it with the runtime, not the network plugin).
	if err := copyFile(filepath.Join(cfg.BinDir, "cni-plugins", "loopback"), filepath.Join(dir, "opt-cni-bin", "loopback"), 0o755); err != nil {
		return fmt.Errorf("installing the loopback CNI plugin (make build builds it): %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "containerd.toml"), []byte(containerdConfig), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "kubelet-config.yaml"), []byte(kubeletConfig(cfg, name, p)), 0o644); err != nil {
		return err
	}

	if err := nodeCgroups(name); err != nil {
		return err
	}

	// The control-plane node's network exists already: the control plane
	// started in it before any kubelet.
	if _, err := os.Stat("/run/netns/" + name); err != nil || idx != ControlPlane {
		if err := nodeNetwork(ctx, cfg, idx); err != nil {
			return err
		}
	}

	return runNodeInside(ctx, cfg, idx)
}

// nodeCgroups creates node name's cgroup root in every hierarchy.
func nodeCgroups(name string) error {
	// kubelet refuses a cgroupRoot missing from any hierarchy; cpuset
	// children start empty and must inherit the parent's CPUs and memory nodes.
	hier, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hier {
		if filepath.Base(h) == "unified" {
			continue
		}
		if err := os.MkdirAll(filepath.Join(h, name), 0o755); err != nil {
			return fmt.Errorf("creating cgroup %s/%s: %w", h, name, err)
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(h, name, f), v, 0o644); err != nil {
					return fmt.Errorf("setting %s of cgroup %s: %w", f, name, err)
				}
			}
		}
	}

	return nil
}

// runNodeInside starts node idx's containerd (importing the images),
// kubelet and kube-proxy in a new mount namespace in the node's network
// namespace (node-inside.sh).
func runNodeInside(ctx context.Context, cfg Config, idx int) error {
	name, ip := cfg.NodeName(idx), cfg.NodeIPs(idx)
	dir := cfg.nodeDir(name)
	script := filepath.Join(dir, "node-inside.sh")
	if err := os.WriteFile(script, nodeInsideScript, 0o755); err != nil {
		return err
	}
	images, err := filepath.Abs(cfg.ImagesDir)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+name,
		"unshare", "--mount", "--propagation", "slave", "bash", script)
	cmd.Env = append(os.Environ(), "NODE_DIR="+dir, "NODE_NAME="+name, "NODE_IP="+ip,
		"K8S_BIN="+cfg.K8sBin, "IMAGES="+images, "CLUSTER_CIDR="+cfg.ClusterCIDRs())
	if idx == ControlPlane {
		cmd.Env = append(cmd.Env, "KUBELET_TAINTS="+ControlPlaneTaint+":NoSchedule")
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("setting up the node's mount namespace: %w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

// nodeNetwork creates node idx's network namespace, whose eth0 is a veth
// into the host bridge.
func nodeNetwork(ctx context.Context, cfg Config, idx int) error {
	name := cfg.NodeName(idx)
	for _, s := range cfg.nodeNetworkSteps(idx) {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	if err := nft(ctx, "/run/netns/"+name, cfg.nodeRuleset()); err != nil {
		return fmt.Errorf("node %s: rejecting untranslated Service traffic: %w", name, err)
	}
	return nil
}

// nodeNetworkSteps are the commands that create node idx's network. An
// IPv6-only node has no IPv4 address at all (only lo's 127.0.0.1, which
// its kubelet, kube-proxy and the control plane's etcd listen on): nothing
// on it needs one, the images are imported over containerd's unix socket.
func (c Config) nodeNetworkSteps(idx int) [][]string {
	name, ip := c.NodeName(idx), c.NodeIP(idx)
	veth := c.hostVeth(idx)
	steps := [][]string{
		{"ip", "netns", "add", name},
		{"ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name},
		{"ip", "link", "set", veth, "master", c.bridge(), "up"},
		// Make the emulated wire behave like one: the host end hands the node
		// full-size frames with complete checksums (no TSO/GSO super-frames or
		// partial checksums), which the userspace datapath reading eth0
		// through AF_PACKET cannot handle.
		{"ethtool", "-K", veth, "tx", "off"},
		{"ip", "-n", name, "link", "set", "lo", "up"},
	}
	if c.HasIPv4() {
		steps = append(steps, []string{"ip", "-n", name, "addr", "add", ip + "/24", "dev", "eth0"})
	}
	steps = append(steps, []string{"ip", "-n", name, "link", "set", "eth0", "up"})
	if c.HasIPv4() {
		steps = append(steps,
			[]string{"ip", "-n", name, "route", "add", "default", "via", c.Subnet + ".1"},
			// Pod addresses no node owns fail here instead of following the
			// default route to the host (where the leak guard would drop them):
			// the agent's per-node routes are more specific. Not for the
			// service CIDR: a local connect to a ClusterIP needs a route before
			// kube-proxy's DNAT (nodeRuleset covers it).
			[]string{"ip", "-n", name, "route", "add", "unreachable", c.ClusterCIDR})
	}
	if c.HasIPv6() {
		steps = append(steps, c.nodeNetwork6(idx)...)
	}
	return steps
}

// nodeNetwork6 is the IPv6 part of a dual-stack or IPv6-only node's
// network: its underlay address (nodad: the wire is ours, no one else has
// it), the default route via the host bridge and the unreachable pod
// network, as for IPv4.
func (c Config) nodeNetwork6(idx int) [][]string {
	name := c.NodeName(idx)
	return [][]string{
		{"ip", "-n", name, "addr", "add", c.NodeIP6(idx) + "/64", "dev", "eth0", "nodad"},
		{"ip", "-n", name, "-6", "route", "add", "default", "via", c.Subnet6() + "1"},
		{"ip", "-n", name, "-6", "route", "add", "unreachable", c.ClusterCIDRv6},
	}
}

// nodeRuleset rejects, in a node's network namespace, packets that still
// carry a ClusterIP after kube-proxy's DNAT (priority -100) — a ClusterIP
// kube-proxy has no rule for yet, e.g. a test probing a new Service before
// kube-proxy synced — which would otherwise follow the node's default route
// to the host. Seen: 2 such packets in one e2e run, counted by the host's
// leak guard.
func (c Config) nodeRuleset() string {
	return fmt.Sprintf(`table inet weir_local_node
delete table inet weir_local_node
table inet weir_local_node {
	chain forward {
		type filter hook forward priority 10; policy accept;
		%[1]s
		%[2]s
	}
	chain output {
		type filter hook output priority 10; policy accept;
		%[1]s
		%[2]s
	}
}
`, c.nodeRule4(), c.nodeRule6())
}

// nodeRule4 is nodeRuleset's rule for IPv4 ClusterIPs (a comment on an
// IPv6-only cluster).
func (c Config) nodeRule4() string {
	if !c.HasIPv4() {
		return "# IPv6-only cluster"
	}
	return fmt.Sprintf("ip daddr %s counter reject with icmp type net-unreachable", c.ServiceCIDR)
}

// nodeRule6 is nodeRuleset's rule for IPv6 ClusterIPs (a comment on an
// IPv4-only cluster).
func (c Config) nodeRule6() string {
	if !c.HasIPv6() {
		return "# IPv4-only cluster"
	}
	return fmt.Sprintf("ip6 daddr %s counter reject with icmpv6 type no-route", c.ServiceCIDRv6)
}

// NodePID returns a process living in node idx's network and mount
// namespaces (its containerd), the anchor for node-exec.
func NodePID(cfg Config, name string) (int, error) {
	pid := readPID(filepath.Join(cfg.nodeDir(name), "containerd.pid"))
	if !alive(pid) {
		return 0, fmt.Errorf("node %s is not running (no containerd process)", name)
	}
	return pid, nil
}

// stopNode kills every process of the node (kubelet, kube-proxy, containerd,
// shims and all containers), then removes its cgroups, netns and directory.
// It never fails: it is also the cleanup of a half-started node.
func stopNode(ctx context.Context, cfg Config, idx int) {
	name := cfg.NodeName(idx)
	dir := cfg.nodeDir(name)
	killNode(cfg, name)
	hier, _ := cgroupHierarchies()
	for _, h := range hier {
		removeCgroupTree(filepath.Join(h, name))
	}
	_ = run(ctx, "ip", "netns", "del", name)
	_ = run(ctx, "ip", "link", "del", cfg.hostVeth(idx))
	if err := os.RemoveAll(dir); err != nil {
		cfg.logf("warning: removing %s: %v", dir, err)
	}
}

// killNode stops node name's kubelet and kube-proxy, then kills every
// process of the node: containerd, its shims, all containers, and anything
// else in its mount or network namespace.
func killNode(cfg Config, name string) {
	dir := cfg.nodeDir(name)
	for _, f := range []string{"kubelet.pid", "kube-proxy.pid"} {
		stopPID(readPID(filepath.Join(dir, f)), 5*time.Second)
	}
	hier, _ := cgroupHierarchies()
	// The namespaces are identified by inode number, and the kernel reuses
	// a namespace's number as soon as the namespace is gone: once the kill
	// loop below has killed containerd, its mount namespace dies and the
	// next `ip netns exec` anywhere on the machine (which unshares a mount
	// namespace) may get the same number — and was killed as part of this
	// node (seen: a test's ovsdb-server and pings of concurrent tests
	// SIGKILLed). An open file descriptor pins a namespace, so its number
	// cannot be reused until the loop is done.
	var pinned []*os.File
	ctrPID := readPID(filepath.Join(dir, "containerd.pid"))
	mntNS := ""
	if alive(ctrPID) {
		if f, id, err := pinNamespace(fmt.Sprintf("/proc/%d/ns/mnt", ctrPID), "mnt"); err == nil {
			pinned = append(pinned, f)
			mntNS = id
		}
	}
	netNS := ""
	if f, id, err := pinNamespace("/run/netns/"+name, "net"); err == nil {
		pinned = append(pinned, f)
		netNS = id
	}
	// Containers live in the node's cgroup root; containerd, its shims and
	// the node daemons share the node's mount namespace; anything else left
	// in the node's network namespace (a control-plane process) would keep
	// it and its veth alive. Kill until none is left (shims may start a
	// process while we kill).
	for round := 0; round < 50; round++ {
		pids := nodeProcesses(hier, name, mntNS, netNS)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, f := range pinned {
		f.Close()
	}
}

// pinNamespace opens the namespace file path (keeping the namespace, and so
// its inode number, alive while the file is open) and returns it with the
// namespace's identity as /proc/PID/ns/* links name it, e.g. "net:[4026532281]".
func pinNamespace(path, kind string) (*os.File, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("stat %s: %w", path, err)
	}
	return f, fmt.Sprintf("%s:[%d]", kind, st.Ino), nil
}

// nodeProcesses lists live processes in the node's cgroup root, in its
// mount namespace or in its network namespace.
func nodeProcesses(hier []string, name, mntNS, netNS string) []int {
	seen := map[int]bool{}
	for _, h := range hier {
		root := filepath.Join(h, name)
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	if mntNS != "" || netNS != "" {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && mntNS != "" && l == mntNS {
				seen[pid] = true
			}
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && netNS != "" && l == netNS {
				seen[pid] = true
			}
		}
	}
	var out []int
	for pid := range seen {
		if alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// removeCgroupTree removes a cgroup directory and its children, deepest first.
func removeCgroupTree(root string) {
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		for try := 0; try < 20; try++ {
			if err := syscall.Rmdir(dirs[i]); err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}

// containerdConfig uses the standard paths, which are per-node bind mounts
// inside the node's mount namespace.
const containerdConfig = `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    # Imported locally by weir-local (no registry is reachable).
    sandbox_image = "registry.k8s.io/pause:3.10"
    disable_apparmor = true
    # Without CAP_SYS_RESOURCE (as in this sandbox) runc cannot set an
    # oom_score_adj below the caller's.
    restrict_oom_score_adj = true
    tolerate_missing_hugetlb_controller = true
    disable_hugetlb_controller = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/opt/cni/bin"
      conf_dir = "/etc/cni/net.d"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          BinaryName = "/usr/sbin/runc"
`

func kubeletConfig(cfg Config, name string, p *pki) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %q}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
# containerd 1.6 cannot report its cgroup driver; this host has hybrid cgroup v1.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# Every node's pods under their own root, so several kubelets share the machine.
cgroupRoot: /%s
clusterDomain: %s
clusterDNS: [%s]
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
fileCheckFrequency: 5s
`, p.path("ca", "crt"), name, ClusterDomain, cfg.DNSServiceIP())
}
