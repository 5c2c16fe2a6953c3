package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Up starts the control plane and nodes nodes, deploys Weir from
// cfg.Manifest and waits until every node is Ready and the DaemonSet is
// rolled out. On failure it leaves the cluster as far as it got so the logs
// can be read; Down removes it.
func Up(ctx context.Context, cfg Config, nodes int) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if nodes < 1 || nodes > 200 {
		return fmt.Errorf("--nodes %d: must be between 1 and 200", nodes)
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"} {
		if _, err := os.Stat(filepath.Join(cfg.K8sBin, b)); err != nil {
			return fmt.Errorf("missing %s in %s (run hack/k8s-build.sh or make k8s-bins): %w", b, cfg.K8sBin, err)
		}
	}
	if _, err := os.Stat(cfg.Manifest); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if m, _ := filepath.Glob(filepath.Join(cfg.ImagesDir, "*.tar")); len(m) == 0 {
		return fmt.Errorf("no image tarballs in %s (run make images)", cfg.ImagesDir)
	}
	if _, err := os.Stat(filepath.Join(cfg.ImagesDir, "coredns.tar")); err != nil {
		return fmt.Errorf("no CoreDNS image in %s (run make images): %w", cfg.ImagesDir, err)
	}
	if alive(readPID(filepath.Join(cfg.runDir(), "kube-apiserver.pid"))) {
		return fmt.Errorf("a cluster is already running in %s; run `weir-local down` first", cfg.Dir)
	}
	start := time.Now()
	for _, d := range []string{cfg.runDir(), cfg.logDir(), filepath.Join(cfg.Dir, "nodes")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	st, err := cfg.loadState()
	if err != nil {
		return err
	}
	st.Prefix, st.Subnet, st.PortBase, st.IPFamily, st.Proxy = cfg.Prefix, cfg.Subnet, cfg.PortBase, cfg.IPFamily, cfg.Proxy
	if st.Sysctls == nil {
		if st.Sysctls, err = readSysctls(); err != nil {
			return err
		}
	}
	if err := raiseInotifyInstances(); err != nil {
		return err
	}
	if err := createHostDirs(cfg); err != nil {
		return err
	}
	if err := cfg.saveState(st); err != nil {
		return err
	}

	p, err := clusterPKI(cfg)
	if err != nil {
		return err
	}
	if err := ensureBridge(ctx, cfg); err != nil {
		return err
	}
	if err := InstallGuard(ctx, cfg, ""); err != nil {
		return err
	}
	// The control plane runs in the control-plane node's network namespace,
	// created first; that node's kubelet joins with the workers below.
	if _, err := os.Stat("/run/netns/" + cfg.NodeName(ControlPlane)); err != nil {
		if err := nodeNetwork(ctx, cfg, ControlPlane); err != nil {
			return err
		}
	}
	if err := startControlPlane(ctx, cfg, p); err != nil {
		return err
	}
	cfg.logf("[%4.1fs] control plane ready at %s", time.Since(start).Seconds(), cfg.APIServerURL())

	var wg sync.WaitGroup
	errs := make([]error, nodes+1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := startNode(ctx, cfg, ControlPlane); err != nil {
			errs[0] = fmt.Errorf("starting node %s: %w", cfg.NodeName(ControlPlane), err)
			return
		}
		errs[0] = labelControlPlane(ctx, cfg)
	}()
	for i := 1; i <= nodes; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = AddNode(ctx, cfg, i)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	cfg.logf("[%4.1fs] control-plane node and %d nodes started (containerd, kubelet, kube-proxy; images imported)", time.Since(start).Seconds(), nodes)

	if err := Deploy(ctx, cfg); err != nil {
		return err
	}
	if err := WaitReady(ctx, cfg, nodes, 3*time.Minute); err != nil {
		return err
	}
	cfg.logf("[%4.1fs] Weir deployed: all %d nodes Ready, DaemonSet kube-system/weir-agent rolled out", time.Since(start).Seconds(), nodes+1)
	// Only now: a CoreDNS pod created while its node's agent is still
	// starting fails its first sandbox and waits out kubelet's back-off
	// (measured: DNS ready 0-13 s after the DaemonSet, against ~3 s when
	// applied after it).
	if err := DeployDNS(ctx, cfg); err != nil {
		return err
	}
	if err := WaitDNS(ctx, cfg, 2*time.Minute); err != nil {
		return err
	}
	cfg.logf("[%4.1fs] cluster DNS ready: kube-system/coredns behind Service kube-dns %s", time.Since(start).Seconds(), cfg.DNSServiceIP())
	return nil
}

// labelControlPlane gives the control-plane node its role label, which
// the NodeRestriction admission plugin does not let a kubelet set itself.
func labelControlPlane(ctx context.Context, cfg Config) error {
	client, err := cfg.Client()
	if err != nil {
		return err
	}
	patch := []byte(`{"metadata":{"labels":{"` + ControlPlaneTaint + `":""}}}`)
	name := cfg.NodeName(ControlPlane)
	return waitFor(ctx, time.Minute, "labelling node "+name, func() (bool, error) {
		_, err := client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		return err == nil, err
	})
}

func clusterPKI(cfg Config) (*pki, error) {
	p, err := loadOrCreatePKI(filepath.Join(cfg.Dir, "pki"))
	if err != nil {
		return nil, err
	}
	specs := []certSpec{
		{name: "apiserver", cn: "kube-apiserver", server: true,
			dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
			ips: apiServerIPs(cfg)},
		{name: "admin", cn: "kubernetes-admin", orgs: []string{"system:masters"}},
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}},
		{name: "controller-manager", cn: "system:kube-controller-manager"},
		{name: "scheduler", cn: "system:kube-scheduler"},
		{name: "kube-proxy", cn: "system:kube-proxy"},
	}
	for _, s := range specs {
		if err := p.ensure(s); err != nil {
			return nil, err
		}
	}
	if err := p.ensureKey("sa"); err != nil {
		return nil, err
	}
	for _, k := range []struct{ file, cert string }{
		{"admin.kubeconfig", "admin"}, {"controller-manager.kubeconfig", "controller-manager"}, {"scheduler.kubeconfig", "scheduler"},
	} {
		if err := p.kubeconfig(filepath.Join(p.dir, k.file), cfg.APIServerURL(), k.cert); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// apiServerIPs are the IP SANs of the API server's certificate: loopback,
// the control-plane node's underlay addresses (IPv4, IPv6 or both; clients
// use the primary one, APIServerURL) and the kubernetes Service's
// ClusterIP, the first address of the primary service range (the family of
// the advertise address: kube-apiserver refuses any other).
func apiServerIPs(cfg Config) []net.IP {
	ips := []net.IP{net.ParseIP("127.0.0.1")}
	if cfg.HasIPv4() {
		ips = append(ips, net.ParseIP(cfg.NodeIP(ControlPlane)))
	}
	if svc, err := netip.ParsePrefix(cfg.PrimaryServiceCIDR()); err == nil {
		ips = append(ips, net.IP(svc.Masked().Addr().Next().AsSlice()))
	}
	if cfg.HasIPv6() {
		ips = append(ips, net.IPv6loopback, net.ParseIP(cfg.NodeIP6(ControlPlane)))
	}
	return ips
}

func ensureBridge(ctx context.Context, cfg Config) error {
	if err := run(ctx, "ip", "link", "show", cfg.bridge()); err == nil {
		return nil
	}
	steps := [][]string{{"ip", "link", "add", cfg.bridge(), "type", "bridge"}}
	if cfg.HasIPv4() {
		steps = append(steps, []string{"ip", "addr", "add", cfg.Subnet + ".1/24", "dev", cfg.bridge()})
	}
	steps = append(steps, []string{"ip", "link", "set", cfg.bridge(), "up"})
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	if cfg.HasIPv6() {
		// nodad: usable at once; nothing else on the bridge claims it.
		if err := run(ctx, "ip", "addr", "add", cfg.Subnet6()+"1/64", "dev", cfg.bridge(), "nodad"); err != nil {
			return err
		}
	}
	return nil
}

// startControlPlane starts etcd, kube-apiserver, kube-controller-manager
// and kube-scheduler as host processes (host mount namespace, files under
// cfg.Dir) inside the control-plane node's network namespace.
func startControlPlane(ctx context.Context, cfg Config, p *pki) error {
	r, l := cfg.runDir(), cfg.logDir()
	bin := func(n string) string { return filepath.Join(cfg.K8sBin, n) }
	netns := "--net=/run/netns/" + cfg.NodeName(ControlPlane)
	startDaemon := func(pidFile, logFile string, env []string, name string, args ...string) error {
		// nsenter execs the daemon: the recorded PID is the daemon's.
		args = append(args, cfg.ExtraArgs[filepath.Base(name)]...)
		return startDaemon(pidFile, logFile, env, "nsenter", append([]string{netns, "--", name}, args...)...)
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", cfg.etcdPort())
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", cfg.etcdPort()+1)
	if err := startDaemon(filepath.Join(r, "etcd.pid"), filepath.Join(l, "etcd.log"), nil, bin("etcd"),
		"--name=weir-local", "--data-dir="+filepath.Join(r, "etcd-data"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=weir-local="+peerURL, "--log-level=warn", "--unsafe-no-fsync",
		"--heartbeat-interval=10", "--election-timeout=100"); err != nil {
		return err
	}
	if err := startDaemon(filepath.Join(r, "kube-apiserver.pid"), filepath.Join(l, "kube-apiserver.log"), nil, bin("kube-apiserver"),
		apiServerArgs(cfg, p.dir, etcdURL)...); err != nil {
		return err
	}
	client, err := cfg.Client()
	if err != nil {
		return err
	}
	apiPID := readPID(filepath.Join(r, "kube-apiserver.pid"))
	if err := waitFor(ctx, 60*time.Second, "kube-apiserver /readyz", func() (bool, error) {
		if !alive(apiPID) {
			return false, fmt.Errorf("kube-apiserver exited; see %s", filepath.Join(l, "kube-apiserver.log"))
		}
		_, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil, err
	}); err != nil {
		return err
	}
	if err := startDaemon(filepath.Join(r, "kube-controller-manager.pid"), filepath.Join(l, "kube-controller-manager.log"), nil,
		bin("kube-controller-manager"), controllerManagerArgs(cfg, p.dir)...); err != nil {
		return err
	}
	pk := func(n string) string { return filepath.Join(p.dir, n) }
	return startDaemon(filepath.Join(r, "kube-scheduler.pid"), filepath.Join(l, "kube-scheduler.log"), nil, bin("kube-scheduler"),
		"--kubeconfig="+pk("scheduler.kubeconfig"),
		"--authentication-kubeconfig="+pk("scheduler.kubeconfig"), "--authorization-kubeconfig="+pk("scheduler.kubeconfig"),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", cfg.PortBase+259), "--leader-elect=false", "--v=1")
}

// apiServerArgs is kube-apiserver's command line; pkiDir holds the
// cluster's certificates and keys.
func apiServerArgs(cfg Config, pkiDir, etcdURL string) []string {
	pk := func(n string) string { return filepath.Join(pkiDir, n) }
	// All addresses of the node: its underlay IP moves from eth0 to br-phy
	// when the agent starts (userspace datapath). "::" is every address of
	// both families, as an IPv6-only node needs.
	bind := "0.0.0.0"
	if cfg.IPFamily == IPFamilyIPv6 {
		bind = "::"
	}
	return []string{
		// The advertise address is the kubernetes Service's endpoint: of the
		// primary service family, which kube-apiserver insists on.
		"--etcd-servers=" + etcdURL, "--bind-address=" + bind, "--advertise-address=" + cfg.PrimaryNodeIP(ControlPlane),
		fmt.Sprintf("--secure-port=%d", cfg.PortBase+443),
		"--tls-cert-file=" + pk("apiserver.crt"), "--tls-private-key-file=" + pk("apiserver.key"),
		"--client-ca-file=" + pk("ca.crt"), "--kubelet-preferred-address-types=InternalIP,Hostname",
		"--kubelet-client-certificate=" + pk("apiserver-kubelet-client.crt"), "--kubelet-client-key=" + pk("apiserver-kubelet-client.key"),
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction", "--allow-privileged=true",
		"--service-cluster-ip-range=" + cfg.ServiceCIDRs(),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pk("sa.pub"), "--service-account-signing-key-file=" + pk("sa.key"),
		"--cert-dir=" + filepath.Join(cfg.runDir(), "apiserver-certs"), "--v=1",
	}
}

// controllerManagerArgs is kube-controller-manager's command line.
func controllerManagerArgs(cfg Config, pkiDir string) []string {
	pk := func(n string) string { return filepath.Join(pkiDir, n) }
	// A node CIDR mask flag per family of the cluster CIDRs only: the
	// controller-manager's node IPAM refuses the other family's flag on a
	// single-stack cluster ("usage of --node-cidr-mask-size-ipv6 is not
	// allowed for a single-stack IPv4 cluster", and it exits: seen with
	// --ip-family ipv4 when both flags were always given). IPv6-only takes
	// the single-stack flag.
	var masks []string
	switch cfg.IPFamily {
	case IPFamilyDual:
		masks = []string{"--node-cidr-mask-size-ipv4=24", "--node-cidr-mask-size-ipv6=64"}
	case IPFamilyIPv6:
		masks = []string{"--node-cidr-mask-size=64"}
	default:
		masks = []string{"--node-cidr-mask-size-ipv4=24"}
	}
	args := []string{
		"--kubeconfig=" + pk("controller-manager.kubeconfig"),
		"--authentication-kubeconfig=" + pk("controller-manager.kubeconfig"), "--authorization-kubeconfig=" + pk("controller-manager.kubeconfig"),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", cfg.PortBase+257), "--leader-elect=false",
		"--use-service-account-credentials=true", "--service-account-private-key-file=" + pk("sa.key"), "--root-ca-file=" + pk("ca.crt"),
		"--cluster-signing-cert-file=" + pk("ca.crt"), "--cluster-signing-key-file=" + pk("ca.key"),
		"--allocate-node-cidrs=true", "--cluster-cidr=" + cfg.ClusterCIDRs(),
	}
	args = append(args, masks...)
	return append(args,
		"--service-cluster-ip-range="+cfg.ServiceCIDRs(),
		// Deleted nodes' pods go away quickly, which the e2e node-removal case relies on.
		"--node-monitor-grace-period=20s", "--v=1")
}

// WaitReady waits until n worker nodes and the control-plane node are Ready
// and the weir-agent DaemonSet has an available, up-to-date pod on each.
func WaitReady(ctx context.Context, cfg Config, n int, timeout time.Duration) error {
	client, err := cfg.Client()
	if err != nil {
		return err
	}
	n++ // the control-plane node
	return waitFor(ctx, timeout, fmt.Sprintf("%d Ready nodes and the weir-agent DaemonSet", n), func() (bool, error) {
		nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		ready := 0
		for _, nd := range nodes.Items {
			for _, c := range nd.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		if ready < n {
			return false, fmt.Errorf("%d of %d nodes Ready", ready, n)
		}
		ds, err := client.AppsV1().DaemonSets("kube-system").Get(ctx, "weir-agent", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return daemonSetRolledOut(ds, n)
	})
}

func daemonSetRolledOut(ds *appsv1.DaemonSet, n int) (bool, error) {
	s := ds.Status
	if s.ObservedGeneration < ds.Generation || int(s.DesiredNumberScheduled) < n ||
		s.UpdatedNumberScheduled < s.DesiredNumberScheduled || s.NumberAvailable < s.DesiredNumberScheduled {
		return false, fmt.Errorf("DaemonSet weir-agent: desired %d, updated %d, available %d",
			s.DesiredNumberScheduled, s.UpdatedNumberScheduled, s.NumberAvailable)
	}
	return true, nil
}

// Down stops and removes everything Up and AddNode created. It is safe to
// run on a half-started or already removed cluster.
func Down(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	st, err := cfg.loadState()
	if err != nil {
		cfg.logf("warning: %v; cleaning up what can be found", err)
	}
	idxs := slices.Clone(st.Nodes)
	// Also nodes a crashed AddNode did not record.
	for i := 1; i <= 200; i++ {
		if _, err := os.Stat(cfg.nodeDir(cfg.NodeName(i))); err == nil && !slices.Contains(idxs, i) {
			idxs = append(idxs, i)
		}
		if _, err := os.Stat("/run/netns/" + cfg.NodeName(i)); err == nil && !slices.Contains(idxs, i) {
			idxs = append(idxs, i)
		}
	}
	var wg sync.WaitGroup
	for _, i := range idxs {
		wg.Add(1)
		go func() { defer wg.Done(); stopNode(ctx, cfg, i) }()
	}
	wg.Wait()
	for _, n := range []string{"kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"} {
		stopPID(readPID(filepath.Join(cfg.runDir(), n+".pid")), 10*time.Second)
	}
	// Last, the control-plane node (its netns held the control plane).
	stopNode(ctx, cfg, ControlPlane)
	_ = run(ctx, "ip", "link", "del", cfg.bridge())
	var errs []error
	if err := RemoveGuard(ctx, cfg, ""); err != nil {
		errs = append(errs, err)
	}
	if st.Sysctls != nil {
		errs = append(errs, restoreSysctls(st.Sysctls))
	}
	if err := os.RemoveAll(cfg.Dir); err != nil {
		errs = append(errs, fmt.Errorf("removing %s: %w", cfg.Dir, err))
	}
	// After the directory is gone, so that this cluster no longer counts as up.
	if err := releaseHostDirs(cfg, st.CreatedDirs); err != nil {
		errs = append(errs, fmt.Errorf("releasing the host mount points: %w", err))
	}
	return errors.Join(errs...)
}

// mkdirAllRecorded is os.MkdirAll that returns the directories it created,
// parents first, so that Down can remove exactly those.
func mkdirAllRecorded(dir string) ([]string, error) {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	var created []string
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return created, err
		}
		created = append(created, missing[i])
	}
	return created, nil
}
