// Package k8stest runs a real, private Kubernetes control plane — etcd and
// kube-apiserver, no controller-manager, scheduler or nodes — on 127.0.0.1
// for tests, the way package ovstest runs a private OVS.
//
// The binaries are built from the Go module proxy by hack/k8s-build.sh and
// cached outside the repository (see BinDir); Start runs the script when they
// are missing, which takes 7–8 minutes once (give `go test` a -timeout to
// match). A control plane then starts in about 3 seconds. Everything it
// creates lives in a temporary directory and is removed at cleanup, together
// with the processes.
//
// One control plane per test binary is the cheap way to use it:
//
//	func TestMain(m *testing.M) { k8stest.RunMain(m) }
//
//	func TestX(t *testing.T) {
//		client := k8stest.Shared(t).ClientSet(t)
//		...
//	}
//
// Tests sharing a control plane must not step on each other's objects (use
// unique names). Start gives a test a control plane of its own.
package k8stest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/weirnet/weir/test/testroot"
)

const (
	// K8sVersion is the version of kube-apiserver and kubectl used.
	K8sVersion = "v1.37.2"
	// EtcdVersion is the version of etcd used.
	EtcdVersion = "v3.7.3"
	// ServiceClusterIPRange is the apiserver's --service-cluster-ip-range.
	ServiceClusterIPRange = "10.96.0.0/16"

	// defaultCache is where hack/k8s-build.sh caches binaries unless
	// WEIR_CACHE says otherwise.
	defaultCache = "/var/cache/weir"
	// buildTimeout bounds hack/k8s-build.sh (a cold build takes 7–8 min).
	buildTimeout = 30 * time.Minute
	// readyTimeout bounds waiting for etcd and for kube-apiserver's /readyz.
	readyTimeout = 60 * time.Second
	// stopTimeout is how long a process gets to exit after SIGTERM before
	// it is killed.
	stopTimeout = 5 * time.Second
	// pollInterval is the delay between readiness checks.
	pollInterval = 50 * time.Millisecond
	// logTailLines is how many lines of each log are shown after a failure.
	logTailLines = 40
	// dirPrefix names control plane directories in os.TempDir().
	dirPrefix = "weir-k8s-"
	// ownerFile in a control plane directory holds the PID of the process
	// that started it.
	ownerFile = "owner.pid"
	// startAttempts is how often Launch tries again when a port it picked
	// was taken by someone else in the meantime.
	startAttempts = 3
)

// BinDir returns the directory hack/k8s-build.sh installs etcd,
// kube-apiserver and kubectl into: $WEIR_CACHE (default /var/cache/weir)
// /k8s-<K8sVersion>-etcd-<EtcdVersion>/bin.
func BinDir() string {
	cache := os.Getenv("WEIR_CACHE")
	if cache == "" {
		cache = defaultCache
	}
	return filepath.Join(cache, "k8s-"+K8sVersion+"-etcd-"+EtcdVersion, "bin")
}

// binaries are the programs BinDir must hold.
var binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// buildMu serialises EnsureBinaries within a process; hack/k8s-build.sh
// locks against other processes (other test binaries) itself.
var buildMu sync.Mutex

// EnsureBinaries returns BinDir after running hack/k8s-build.sh if any
// binary is missing there. The script's output goes to w (if not nil).
func EnsureBinaries(w io.Writer) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	dir := BinDir()
	if haveBinaries(dir) {
		return dir, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", fmt.Errorf("building the control plane binaries: %w", err)
	}
	script := filepath.Join(root, "hack", "k8s-build.sh")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, script)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "K8S_VERSION="+K8sVersion, "ETCD_VERSION="+EtcdVersion)
	var out bytes.Buffer
	if w != nil {
		cmd.Stdout, cmd.Stderr = io.MultiWriter(&out, w), io.MultiWriter(&out, w)
	} else {
		cmd.Stdout, cmd.Stderr = &out, &out
	}
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s failed: %w\n%s", script, err, lastLines(out.String(), logTailLines))
	}
	if !haveBinaries(dir) {
		return "", fmt.Errorf("%s succeeded but %s lacks one of %v", script, dir, binaries)
	}
	return dir, nil
}

func haveBinaries(dir string) bool {
	for _, b := range binaries {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// repoRoot finds the Weir repository: the nearest directory above the
// working directory (go test runs in the package's directory) or, failing
// that, above this source file, that has hack/k8s-build.sh.
func repoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			if _, err := os.Stat(filepath.Join(dir, "hack", "k8s-build.sh")); err == nil {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("cannot find the repository root (a directory with hack/k8s-build.sh) above %v", starts)
}

// ControlPlane is a running etcd and kube-apiserver. Its methods are safe
// for concurrent use.
type ControlPlane struct {
	// Dir holds the certificates, the token file, the kubeconfig, etcd's
	// data and both logs. It is removed by Stop.
	Dir string
	// Kubeconfig is the path of a kubeconfig file for the admin user
	// (group system:masters).
	Kubeconfig string
	// Host is the API server URL, https://127.0.0.1:<port>.
	Host string
	// EtcdURL is etcd's client URL, http://127.0.0.1:<port>.
	EtcdURL string
	// StartupTime is how long Launch took from starting etcd until the
	// API server was ready and the default ServiceAccount existed.
	StartupTime time.Duration

	restConfig *rest.Config

	mu      sync.Mutex
	procs   []*process
	stopped bool
	stopErr error
}

// process is a started daemon.
type process struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{} // closed when Wait returns
	err    error         // Wait's result, valid once exited is closed
}

// Start starts a control plane of the test's own and registers its teardown
// with t.Cleanup. It skips the test when not running as root and fails it
// when the binaries cannot be built or the control plane does not come up;
// on failure the tails of the logs are logged.
func Start(t testing.TB) *ControlPlane {
	t.Helper()
	skipUnlessRoot(t)
	if !haveBinaries(BinDir()) {
		t.Logf("k8stest: building etcd %s and kube-apiserver %s into %s (once; 7-8 min)", EtcdVersion, K8sVersion, BinDir())
	}
	cp, err := launch(func(cp *ControlPlane) {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("k8stest: logs of the control plane in %s:\n%s", cp.Dir, cp.LogTail())
			}
			if err := cp.Stop(); err != nil {
				t.Errorf("k8stest: %v", err)
			}
		})
	})
	if err != nil {
		t.Fatalf("k8stest: %v", err)
	}
	t.Logf("k8stest: etcd %s + kube-apiserver %s ready in %s at %s", EtcdVersion, K8sVersion,
		cp.StartupTime.Round(time.Millisecond), cp.Host)
	return cp
}

// Launch starts a control plane outside of a test (TestMain, a demo). The
// caller must call Stop; if Launch fails it has already cleaned up.
func Launch() (*ControlPlane, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("k8stest: needs root")
	}
	var created *ControlPlane
	cp, err := launch(func(cp *ControlPlane) { created = cp })
	if err != nil {
		if created != nil {
			err = fmt.Errorf("%w\n%s", err, created.LogTail())
			if serr := created.Stop(); serr != nil {
				err = errors.Join(err, serr)
			}
		}
		return nil, err
	}
	return cp, nil
}

func skipUnlessRoot(t testing.TB) {
	t.Helper()
	testroot.Require(t, "k8stest runs etcd and kube-apiserver (and may build them into "+defaultCache+")")
}

// launch builds the binaries if needed and starts the control plane;
// registered is called as soon as there is something to clean up. A start
// that fails because another process took one of the picked ports is
// retried with new ports.
func launch(registered func(*ControlPlane)) (*ControlPlane, error) {
	bin, err := EnsureBinaries(nil)
	if err != nil {
		return nil, err
	}
	removeStaleDirs()
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("creating the control plane directory: %w", err)
	}
	cp := &ControlPlane{Dir: dir}
	registered(cp)
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, fmt.Errorf("writing %s: %w", ownerFile, err)
	}
	for attempt := 1; ; attempt++ {
		err = cp.start(bin)
		if err == nil {
			return cp, nil
		}
		if attempt == startAttempts || !strings.Contains(cp.LogTail(), "address already in use") {
			return nil, err
		}
		if serr := cp.stopProcesses(); serr != nil {
			return nil, errors.Join(err, serr)
		}
	}
}

// removeStaleDirs removes the directories of control planes whose test
// binary was killed before it could clean up (its processes died with it:
// they run with a parent-death signal). Errors are ignored: this is
// best-effort housekeeping.
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // being created, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(dir)
		}
	}
}

// start writes the credentials, starts etcd and kube-apiserver, waits until
// the API server is ready and writes the kubeconfig.
func (cp *ControlPlane) start(bin string) error {
	began := time.Now()
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdPort, peerPort, apiPort := ports[0], ports[1], ports[2]
	cp.EtcdURL = "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	cp.Host = "https://127.0.0.1:" + strconv.Itoa(apiPort)

	pki := filepath.Join(cp.Dir, "pki")
	token, err := writeCredentials(pki)
	if err != nil {
		return err
	}

	dataDir := filepath.Join(cp.Dir, "etcd-data")
	if err := os.RemoveAll(dataDir); err != nil { // from a failed attempt
		return fmt.Errorf("clearing etcd data dir: %w", err)
	}
	etcd, err := cp.spawn("etcd", filepath.Join(bin, "etcd"),
		"--name=k8stest",
		"--data-dir="+dataDir,
		"--listen-client-urls="+cp.EtcdURL, "--advertise-client-urls="+cp.EtcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=k8stest="+peerURL,
		// A single member: elect itself in ~0.1 s instead of ~1 s.
		"--heartbeat-interval=10", "--election-timeout=100",
		"--unsafe-no-fsync", "--log-level=warn",
	)
	if err != nil {
		return err
	}
	plain := &http.Client{Timeout: 2 * time.Second}
	if err := waitReady(etcd, cp.EtcdURL+"/health", plain, "etcd"); err != nil {
		return err
	}

	apiserver, err := cp.spawn("kube-apiserver", filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers="+cp.EtcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(apiPort),
		"--tls-cert-file="+filepath.Join(pki, "apiserver.crt"),
		"--tls-private-key-file="+filepath.Join(pki, "apiserver.key"),
		"--client-ca-file="+filepath.Join(pki, "ca.crt"),
		"--token-auth-file="+filepath.Join(pki, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		"--service-cluster-ip-range="+ServiceClusterIPRange,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(pki, "sa.key"),
		// The advertise address is loopback, which the default endpoint
		// reconciler refuses to publish.
		"--endpoint-reconciler-type=none",
		"--cert-dir="+filepath.Join(cp.Dir, "certs"),
		"--v=1",
	)
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return fmt.Errorf("reading CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	secure := &http.Client{Timeout: 2 * time.Second, Transport: &bearer{token: token,
		rt: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}}
	if err := waitReady(apiserver, cp.Host+"/readyz", secure, "kube-apiserver"); err != nil {
		return err
	}

	cp.restConfig = &rest.Config{
		Host:            cp.Host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
		UserAgent:       "weir-k8stest",
		QPS:             100,
		Burst:           200,
	}
	cp.Kubeconfig = filepath.Join(cp.Dir, "kubeconfig")
	if err := writeKubeconfig(cp.Kubeconfig, cp.Host, filepath.Join(pki, "ca.crt"), token); err != nil {
		return err
	}
	if err := cp.ensureDefaultServiceAccount(); err != nil {
		return err
	}
	cp.StartupTime = time.Since(began)
	return nil
}

// bearer adds a bearer token to every request.
type bearer struct {
	token string
	rt    http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.rt.RoundTrip(r)
}

// spawn starts a daemon in its own process group with its output in
// <Dir>/<name>.log. It is killed if the test binary dies.
func (cp *ControlPlane) spawn(name, path string, args ...string) (*process, error) {
	logPath := filepath.Join(cp.Dir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating %s log: %w", name, err)
	}
	defer logFile.Close()
	cmd := exec.Command(path, args...)
	cmd.Dir = cp.Dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Pdeathsig fires when the forking OS thread exits; keep it alive for
	// the fork.
	runtime.LockOSThread()
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	cp.mu.Lock()
	cp.procs = append(cp.procs, p)
	cp.mu.Unlock()
	return p, nil
}

// waitReady polls url until it answers 200, p exits, or readyTimeout passes.
func waitReady(p *process, url string, client *http.Client, what string) error {
	deadline := time.Now().Add(readyTimeout)
	var last string
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before it was ready (%v); see %s", what, p.err, p.log)
		case <-time.After(pollInterval):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s (last: %s); see %s", what, readyTimeout, last, p.log)
		}
	}
}

// ensureDefaultServiceAccount creates the default ServiceAccount in the
// default namespace, which a controller-manager would otherwise create.
func (cp *ControlPlane) ensureDefaultServiceAccount() error {
	client, err := kubernetes.NewForConfig(cp.restConfig)
	if err != nil {
		return fmt.Errorf("creating client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: metav1.NamespaceDefault}}
	for {
		_, err := client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Create(ctx, sa, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			return nil
		}
		// The default namespace is created by a post-start hook; it
		// normally exists once /readyz is ok, but do not rely on it.
		if !apierrors.IsNotFound(err) || ctx.Err() != nil {
			return fmt.Errorf("creating ServiceAccount default/default: %w", err)
		}
		time.Sleep(pollInterval)
	}
}

// RESTConfig returns a client configuration for the admin user (a copy the
// caller may change).
func (cp *ControlPlane) RESTConfig() *rest.Config { return rest.CopyConfig(cp.restConfig) }

// ClientSet returns a clientset for the admin user; it fails t if that is
// impossible.
func (cp *ControlPlane) ClientSet(t testing.TB) kubernetes.Interface {
	t.Helper()
	client, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatalf("k8stest: creating clientset: %v", err)
	}
	return client
}

// Kubectl runs kubectl against the control plane and returns its combined
// output.
func (cp *ControlPlane) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(BinDir(), "kubectl"), append([]string{"--kubeconfig=" + cp.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// PIDs returns the process IDs of etcd and kube-apiserver that have not
// exited yet.
func (cp *ControlPlane) PIDs() []int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var pids []int
	for _, p := range cp.procs {
		select {
		case <-p.exited:
		default:
			pids = append(pids, p.cmd.Process.Pid)
		}
	}
	return pids
}

// LogTail returns the last lines of etcd's and kube-apiserver's logs.
func (cp *ControlPlane) LogTail() string {
	var b strings.Builder
	for _, name := range []string{"etcd", "kube-apiserver"} {
		data, err := os.ReadFile(filepath.Join(cp.Dir, name+".log"))
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "--- %s.log (last %d lines) ---\n%s\n", name, logTailLines, lastLines(string(data), logTailLines))
	}
	return b.String()
}

// Stop stops kube-apiserver and etcd (SIGTERM, then SIGKILL after 5 s) and
// removes Dir. It is idempotent; later calls return the first call's error.
func (cp *ControlPlane) Stop() error {
	cp.mu.Lock()
	if cp.stopped {
		cp.mu.Unlock()
		return cp.stopErr
	}
	cp.stopped = true
	cp.mu.Unlock()
	err := cp.stopProcesses()
	if rerr := os.RemoveAll(cp.Dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("removing %s: %w", cp.Dir, rerr))
	}
	cp.mu.Lock()
	cp.stopErr = err
	cp.mu.Unlock()
	return err
}

// stopProcesses stops the daemons in reverse start order.
func (cp *ControlPlane) stopProcesses() error {
	cp.mu.Lock()
	procs := cp.procs
	cp.procs = nil
	cp.mu.Unlock()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stop sends SIGTERM to the process group, then SIGKILL if it lingers.
func (p *process) stop() error {
	pgid := p.cmd.Process.Pid // Setpgid: the group ID is the leader's PID
	select {
	case <-p.exited:
		_ = syscall.Kill(-pgid, syscall.SIGKILL) // any children left behind
		return nil
	default:
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-p.exited:
		case <-time.After(stopTimeout):
			return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, pgid)
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return nil
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// writeCredentials writes into dir a CA, a serving certificate for
// 127.0.0.1/localhost signed by it, the service-account signing key pair
// and a token file with one admin token (group system:masters), which it
// returns. ECDSA P-256 keeps this to a few milliseconds.
func writeCredentials(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generating CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "weir-k8stest-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", fmt.Errorf("creating CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", fmt.Errorf("parsing CA certificate: %w", err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generating serving key: %w", err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return "", fmt.Errorf("creating serving certificate: %w", err)
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generating service-account key: %w", err)
	}
	srvKeyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		return "", fmt.Errorf("encoding serving key: %w", err)
	}
	saKeyDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return "", fmt.Errorf("encoding service-account key: %w", err)
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return "", fmt.Errorf("encoding service-account public key: %w", err)
	}
	tokenBytes := make([]byte, 16)
	if _, err := rand.Read(tokenBytes); err != nil {
		return "", fmt.Errorf("generating token: %w", err)
	}
	token := hex.EncodeToString(tokenBytes)
	files := []struct {
		name string
		data []byte
	}{
		{"ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})},
		{"apiserver.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER})},
		{"apiserver.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: srvKeyDER})},
		{"sa.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: saKeyDER})},
		{"sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER})},
		{"tokens.csv", []byte(token + ",admin,admin,system:masters\n")},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return "", fmt.Errorf("writing %s: %w", f.name, err)
		}
	}
	return token, nil
}

// writeKubeconfig writes a kubeconfig for host with the admin token.
func writeKubeconfig(path, host, caFile, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["k8stest"] = &clientcmdapi.Cluster{Server: host, CertificateAuthority: caFile}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["k8stest"] = &clientcmdapi.Context{Cluster: "k8stest", AuthInfo: "admin"}
	cfg.CurrentContext = "k8stest"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// RepoRoot returns the root of the Weir repository the tests run in.
func RepoRoot() (string, error) { return repoRoot() }
