package localcluster

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Config says where a local cluster lives and what it is made of. The zero
// value is not usable; start from DefaultConfig.
type Config struct {
	// Dir holds every file of the cluster (PKI, logs, etcd data, node
	// directories). Down removes it.
	Dir string
	// Prefix names the cluster's host objects: nodes are <prefix>-node<N>
	// (also their netns and cgroup roots), the host bridge <prefix>-br and
	// the node veths <prefix>-v<N>. At most 8 characters.
	Prefix string
	// Subnet is the first three octets of the nodes' /24 underlay; the host
	// bridge is .1, node N is .(10+N). It also names the IPv6 underlay
	// (Subnet6), which is all an IPv6-only cluster uses of it.
	Subnet string
	// PortBase shifts every control-plane port (API server PortBase+443,
	// etcd PortBase+379/+380, controller-manager +257, scheduler +259) so
	// two clusters (a user's and the e2e suite's) do not collide.
	PortBase int
	// K8sBin holds kube-apiserver, kube-controller-manager, kube-scheduler,
	// kubelet, kube-proxy, kubectl and etcd (hack/k8s-build.sh).
	K8sBin string
	// BinDir holds Weir's binaries (bin/, from make build), ImagesDir the
	// image tarballs imported into every node (bin/images, from make images).
	BinDir    string
	ImagesDir string
	// Manifest is the DaemonSet manifest to deploy (build/yamls/weir.yml).
	Manifest string
	// ClusterCIDR is the pod network; nodes get a /24 each from the
	// controller-manager. ServiceCIDR is the ClusterIP range. Both are
	// IPv4 and unused on an IPv6-only cluster.
	ClusterCIDR string
	ServiceCIDR string
	// IPFamily is the cluster's IP family: IPFamilyIPv4; IPFamilyDual (the
	// default), which adds ClusterCIDRv6 (a /64 per node) and
	// ServiceCIDRv6 to the control plane and an IPv6 underlay address to
	// every node (Subnet6), IPv4 staying the primary family; or
	// IPFamilyIPv6, which has only the IPv6 ones.
	IPFamily      string
	ClusterCIDRv6 string
	ServiceCIDRv6 string
	// Proxy is who load-balances Services: ProxyKubeProxy (the default:
	// the agent's proxyMode off, kube-proxy does it all) or ProxyCoexist
	// (the agent's proxyMode coexist: Weir's proxy DNATs pods' Service
	// traffic in OVS, kube-proxy still runs for the node's and external
	// traffic). ProxyWeir, the kube-proxy-free mode, is not built yet and
	// Validate refuses it.
	Proxy string
	// ExtraArgs are appended to a control-plane daemon's command line, by
	// daemon: "etcd", "kube-apiserver", "kube-controller-manager" or
	// "kube-scheduler" (a later flag wins). The scale harness tunes the
	// control plane with them (docs/scale.md).
	ExtraArgs map[string][]string
	// Out receives progress lines.
	Out io.Writer
}

// DefaultConfig is the cluster `weir-local up` starts.
func DefaultConfig() Config {
	return Config{
		Dir:           "/var/lib/weir-local",
		Prefix:        "weir",
		Subnet:        "172.31.250",
		PortBase:      17000,
		K8sBin:        "/var/cache/weir/k8s-v1.37.2-etcd-v3.7.3/bin",
		BinDir:        "bin",
		ImagesDir:     "bin/images",
		Manifest:      "build/yamls/weir.yml",
		ClusterCIDR:   "10.244.0.0/16",
		ServiceCIDR:   "10.96.0.0/16",
		IPFamily:      IPFamilyDual,
		ClusterCIDRv6: "fd00:10:244::/56",
		ServiceCIDRv6: "fd00:10:96::/112",
		Proxy:         ProxyKubeProxy,
		Out:           os.Stdout,
	}
}

// The IP families of Config.IPFamily.
const (
	IPFamilyIPv4 = "ipv4"
	IPFamilyDual = "dual"
	// IPFamilyIPv6 is an IPv6-only cluster: IPv6 pod, Service and node
	// addresses, and an IPv6 underlay between the nodes (Geneve over IPv6).
	IPFamilyIPv6 = "ipv6"
)

// The Service proxies of Config.Proxy.
const (
	ProxyKubeProxy = "kube-proxy"
	ProxyCoexist   = "coexist"
	// ProxyWeir is the kube-proxy-free mode (the agent's proxyMode all,
	// issue 14); neither the agent nor the local cluster supports it yet.
	ProxyWeir = "weir"
)

// agentProxyMode is the agent's proxyMode for the cluster's Proxy
// (pkg/agent's Config.ProxyMode values).
func (c Config) agentProxyMode() string {
	if c.Proxy == ProxyCoexist {
		return "coexist"
	}
	return "off"
}

// DualStack reports whether the cluster has IPv6 besides IPv4.
func (c Config) DualStack() bool { return c.IPFamily == IPFamilyDual }

// HasIPv4 reports whether the cluster has IPv4 addresses (ipv4 and dual).
func (c Config) HasIPv4() bool { return c.IPFamily != IPFamilyIPv6 }

// HasIPv6 reports whether the cluster has IPv6 addresses (dual and ipv6).
func (c Config) HasIPv6() bool { return c.IPFamily == IPFamilyDual || c.IPFamily == IPFamilyIPv6 }

// ClusterCIDRs is the pod network as the control plane's flags take it:
// "v4", "v4,v6" or, IPv6-only, "v6".
func (c Config) ClusterCIDRs() string {
	switch c.IPFamily {
	case IPFamilyDual:
		return c.ClusterCIDR + "," + c.ClusterCIDRv6
	case IPFamilyIPv6:
		return c.ClusterCIDRv6
	}
	return c.ClusterCIDR
}

// ServiceCIDRs is the ClusterIP range as kube-apiserver's
// --service-cluster-ip-range takes it: "v4", "v4,v6" or, IPv6-only, "v6".
func (c Config) ServiceCIDRs() string {
	switch c.IPFamily {
	case IPFamilyDual:
		return c.ServiceCIDR + "," + c.ServiceCIDRv6
	case IPFamilyIPv6:
		return c.ServiceCIDRv6
	}
	return c.ServiceCIDR
}

// PrimaryServiceCIDR is the first range of ServiceCIDRs: the family of
// Services that do not ask for one, of the kubernetes and kube-dns
// Services among them.
func (c Config) PrimaryServiceCIDR() string {
	if c.IPFamily == IPFamilyIPv6 {
		return c.ServiceCIDRv6
	}
	return c.ServiceCIDR
}

// Validate reports configuration errors before anything is created.
func (c Config) Validate() error {
	var errs []error
	if !filepath.IsAbs(c.Dir) {
		errs = append(errs, fmt.Errorf("dir %q: must be an absolute path", c.Dir))
	}
	if c.Prefix == "" || len(c.Prefix) > 8 || strings.ContainsAny(c.Prefix, "/ .") {
		errs = append(errs, fmt.Errorf("prefix %q: need 1 to 8 characters without '/', '.' or spaces", c.Prefix))
	}
	if ip := net.ParseIP(c.Subnet + ".1"); ip == nil || ip.To4() == nil {
		errs = append(errs, fmt.Errorf("subnet %q: need three IPv4 octets, e.g. 172.31.250", c.Subnet))
	}
	switch c.IPFamily {
	case IPFamilyIPv4:
	case IPFamilyDual, IPFamilyIPv6:
		for name, cidr := range map[string]string{"cluster CIDR v6": c.ClusterCIDRv6, "service CIDR v6": c.ServiceCIDRv6} {
			if p, err := netip.ParsePrefix(cidr); err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
				errs = append(errs, fmt.Errorf("%s %q: need an IPv6 prefix", name, cidr))
			}
		}
		if p, err := netip.ParsePrefix(c.ClusterCIDRv6); err == nil && p.Bits() > 60 {
			errs = append(errs, fmt.Errorf("cluster CIDR v6 %q: need /60 or shorter (nodes get a /64 each)", c.ClusterCIDRv6))
		}
	default:
		errs = append(errs, fmt.Errorf("ip family %q: want %s, %s or %s", c.IPFamily, IPFamilyIPv4, IPFamilyDual, IPFamilyIPv6))
	}
	switch c.Proxy {
	case ProxyKubeProxy, ProxyCoexist:
	case ProxyWeir:
		errs = append(errs, fmt.Errorf("proxy %q: the kube-proxy-free mode is not supported yet; use %s or %s", c.Proxy, ProxyKubeProxy, ProxyCoexist))
	default:
		errs = append(errs, fmt.Errorf("proxy %q: want %s or %s", c.Proxy, ProxyKubeProxy, ProxyCoexist))
	}
	for d := range c.ExtraArgs {
		if !slices.Contains(controlPlaneDaemons, d) {
			errs = append(errs, fmt.Errorf("extra args for %q: not a control-plane daemon (want one of %v)", d, controlPlaneDaemons))
		}
	}
	if c.PortBase < 1024 || c.PortBase > 65000 {
		errs = append(errs, fmt.Errorf("port base %d: must be between 1024 and 65000", c.PortBase))
	}
	return errors.Join(errs...)
}

// controlPlaneDaemons are the host processes of the control plane, the keys
// of Config.ExtraArgs.
var controlPlaneDaemons = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// ControlPlane is the node index of the control-plane node: the network
// namespace the control plane (etcd, kube-apiserver, controller-manager,
// scheduler) runs in, which is also a Kubernetes node with its own containerd,
// kubelet, kube-proxy and Weir agent, tainted NoSchedule. Being a node of the
// pod network is what lets the API server reach pods and Services (apiserver
// proxy, webhooks, port-forward), as in a real cluster.
const ControlPlane = 0

// ControlPlaneTaint keeps ordinary pods off the control-plane node.
const ControlPlaneTaint = "node-role.kubernetes.io/control-plane"

// APIServerURL is the address nodes and users reach the API server at: the
// control-plane node's primary underlay address (its advertise address),
// reachable from the host over the node bridge; an IPv6 one in brackets.
func (c Config) APIServerURL() string {
	return "https://" + net.JoinHostPort(c.PrimaryNodeIP(ControlPlane), strconv.Itoa(c.PortBase+443))
}

// KubeconfigPath is the admin kubeconfig of the cluster.
func (c Config) KubeconfigPath() string { return filepath.Join(c.Dir, "pki", "admin.kubeconfig") }

// NodeName returns the name of node idx (1-based; ControlPlane is
// <prefix>-control-plane).
func (c Config) NodeName(idx int) string {
	if idx == ControlPlane {
		return c.Prefix + "-control-plane"
	}
	return fmt.Sprintf("%s-node%d", c.Prefix, idx)
}

// NodeIP returns the IPv4 underlay IP of node idx (the control plane's is
// .10); an IPv6-only cluster's nodes have none (PrimaryNodeIP).
func (c Config) NodeIP(idx int) string { return fmt.Sprintf("%s.%d", c.Subnet, 10+idx) }

// Subnet6 is the nodes' IPv6 underlay /64 of a dual-stack or IPv6-only
// cluster, written with the IPv4 subnet's octets as its groups so the two
// read alike: 172.31.250 gives fd00:172:31:250::/64.
func (c Config) Subnet6() string { return "fd00:" + strings.ReplaceAll(c.Subnet, ".", ":") + "::" }

// NodeIP6 returns the IPv6 underlay address of node idx on a dual-stack or
// IPv6-only cluster (the host bridge is ::1, node N ::1N, as its IPv4 .1N).
func (c Config) NodeIP6(idx int) string { return fmt.Sprintf("%s%d", c.Subnet6(), 10+idx) }

// PrimaryNodeIP is node idx's address of the cluster's primary family:
// its first InternalIP, and for the control-plane node the API server's
// advertise address. NodeIP, but NodeIP6 on an IPv6-only cluster.
func (c Config) PrimaryNodeIP(idx int) string {
	if c.IPFamily == IPFamilyIPv6 {
		return c.NodeIP6(idx)
	}
	return c.NodeIP(idx)
}

// NodeIPs is kubelet's --node-ip for node idx: the IPv4 address, then the
// IPv6 one on a dual-stack cluster; the IPv6 one alone on an IPv6-only one.
func (c Config) NodeIPs(idx int) string {
	switch c.IPFamily {
	case IPFamilyDual:
		return c.NodeIP(idx) + "," + c.NodeIP6(idx)
	case IPFamilyIPv6:
		return c.NodeIP6(idx)
	}
	return c.NodeIP(idx)
}

func (c Config) bridge() string             { return c.Prefix + "-br" }
func (c Config) hostVeth(idx int) string    { return fmt.Sprintf("%s-v%d", c.Prefix, idx) }
func (c Config) runDir() string             { return filepath.Join(c.Dir, "run") }
func (c Config) logDir() string             { return filepath.Join(c.Dir, "logs") }
func (c Config) nodeDir(name string) string { return filepath.Join(c.Dir, "nodes", name) }
func (c Config) statePath() string          { return filepath.Join(c.Dir, "state.json") }
func (c Config) etcdPort() int              { return c.PortBase + 379 }

func (c Config) logf(format string, args ...any) {
	if c.Out != nil {
		fmt.Fprintf(c.Out, format+"\n", args...)
	}
}

// state is what Down needs to undo that cannot be derived from Config: the
// nodes that exist and the host state found before Up changed it.
type state struct {
	// Prefix, Subnet and PortBase are the cluster's identity, so commands
	// given only its directory act on the right objects.
	Prefix   string `json:"prefix,omitempty"`
	Subnet   string `json:"subnet,omitempty"`
	PortBase int    `json:"portBase,omitempty"`
	// IPFamily is empty in the state of a cluster an earlier version
	// started, which was IPv4-only.
	IPFamily string `json:"ipFamily,omitempty"`
	// Proxy is empty in the state of a cluster an earlier version started,
	// which ran kube-proxy alone.
	Proxy string `json:"proxy,omitempty"`
	Nodes []int  `json:"nodes"`
	// CreatedDirs are host directories an Up of an earlier version created
	// as bind-mount targets; the record is now machine-wide (hostdirs.go).
	CreatedDirs []string `json:"createdDirs"`
	// Sysctls are the machine-wide values kubelet rewrites, as found
	// before the first kubelet started.
	Sysctls map[string]string `json:"sysctls"`
}

func (c Config) loadState() (state, error) {
	var st state
	data, err := os.ReadFile(c.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("reading cluster state: %w", err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("parsing %s: %w", c.statePath(), err)
	}
	return st, nil
}

func (c Config) saveState(st state) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := c.statePath() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("writing cluster state: %w", err)
	}
	return os.Rename(tmp, c.statePath())
}

// kubeletSysctls are rewritten by kubelet (protectKernelDefaults=false) on
// the whole machine; Up saves them and Down restores them.
var kubeletSysctls = []string{"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory"}

func readSysctls() (map[string]string, error) {
	out := map[string]string{}
	for _, k := range kubeletSysctls {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			return nil, fmt.Errorf("reading sysctl %s: %w", k, err)
		}
		out[k] = strings.TrimSpace(string(b))
	}
	return out, nil
}

// minInotifyInstances is what Up raises fs.inotify.max_user_instances to
// (never lowers it, and Down leaves it: another cluster may still need it).
// Every kubelet and containerd of every node holds inotify instances under
// the one root user; with several clusters up (make run, e2e slots,
// make conformance) Debian's default of 128 ran out and kubelet failed to
// start with "too many open files".
const minInotifyInstances = 1024

func raiseInotifyInstances() error {
	const path = "/proc/sys/fs/inotify/max_user_instances"
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= minInotifyInstances {
		return nil
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(minInotifyInstances)), 0o644); err != nil {
		return fmt.Errorf("raising %s to %d: %w", path, minInotifyInstances, err)
	}
	return nil
}

func restoreSysctls(vals map[string]string) error {
	var errs []error
	for k, v := range vals {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restoring sysctl %s=%s: %w", k, v, err))
		}
	}
	return errors.Join(errs...)
}

// Client returns a clientset for the cluster's admin user.
func (c Config) Client() (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", c.KubeconfigPath())
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", c.KubeconfigPath(), err)
	}
	rc.QPS, rc.Burst = 50, 100
	return kubernetes.NewForConfig(rc)
}

// Kubectl returns a kubectl command against the cluster.
func (c Config) Kubectl(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, filepath.Join(c.K8sBin, "kubectl"),
		append([]string{"--kubeconfig", c.KubeconfigPath()}, args...)...)
}

// startDaemon starts a long-running process in its own session (so it
// outlives `weir-local up`), logging to logFile, and records its PID.
func startDaemon(pidFile, logFile string, env []string, name string, args ...string) error {
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening log %s: %w", logFile, err)
	}
	defer lf.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", filepath.Base(name), err)
	}
	pid := cmd.Process.Pid
	// Reap it in the background if it dies while we are still running, so it
	// does not linger as a zombie that still looks alive to kill(pid, 0).
	go func() { _ = cmd.Wait() }()
	return os.WriteFile(pidFile, []byte(strconv.Itoa(pid)), 0o644)
}

func readPID(pidFile string) int {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	// A zombie still answers kill(0); check /proc state.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// stopPID sends SIGTERM, waits up to grace, then SIGKILLs.
func stopPID(pid int, grace time.Duration) {
	if !alive(pid) {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 100 && alive(pid); i++ {
		time.Sleep(20 * time.Millisecond)
	}
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %v)", what, ctx.Err(), last)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Resolve returns cfg with the identity (prefix, subnet, ports) recorded by
// the Up that created the cluster in cfg.Dir, if there is one.
func (c Config) Resolve() (Config, error) {
	st, err := c.loadState()
	if err != nil {
		return c, err
	}
	if st.Prefix != "" {
		c.Prefix, c.Subnet, c.PortBase = st.Prefix, st.Subnet, st.PortBase
		c.IPFamily = st.IPFamily
		if c.IPFamily == "" {
			c.IPFamily = IPFamilyIPv4
		}
		c.Proxy = st.Proxy
		if c.Proxy == "" {
			c.Proxy = ProxyKubeProxy
		}
	}
	return c, nil
}
