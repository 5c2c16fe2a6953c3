package e2e

// Helpers of the fault suite (faults_test.go, soak_test.go): continuous
// traffic with loss counted by sequence number (test-server udp-stream
// through a udp-echo) and a TCP connection that must not break (test-server
// hold), probers that count answers from a pod that must stay isolated, and
// commands in a pod's network namespace that work while the API server is
// down.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weirnet/weir/pkg/localcluster"
)

// echoPort is where the fault tests run test-server udp-echo in server pods
// (the pods' own test-server serves 80 and 81).
const echoPort = 90

// podRef is a pod resolved once: commands through it (inPod) need no API
// server.
type podRef struct {
	name, node, ip string
	netns          string // path of its network namespace inside its node
}

// resolvePod returns ns/name's node, IP and network-namespace path.
func (s *suite) resolvePod(ctx context.Context, ns, name string) (podRef, error) {
	p, err := s.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return podRef{}, err
	}
	// PodExec finds the namespace and enters it with `nsenter --net=PATH`.
	cmd, err := localcluster.PodExec(ctx, s.cfg, ns+"/"+name, "true")
	if err != nil {
		return podRef{}, err
	}
	for _, a := range cmd.Args {
		if path, ok := strings.CutPrefix(a, "--net="); ok {
			return podRef{name: name, node: p.Spec.NodeName, ip: p.Status.PodIP, netns: path}, nil
		}
	}
	return podRef{}, fmt.Errorf("pod %s/%s: no network namespace in %v", ns, name, cmd.Args)
}

// inPod returns a command running a host binary in pod p's network namespace.
func (s *suite) inPod(ctx context.Context, p podRef, args ...string) (*exec.Cmd, error) {
	return localcluster.NodeExec(ctx, s.cfg, p.node, append([]string{"nsenter", "--net=" + p.netns, "--"}, args...)...)
}

// bg is a background command of a test (started by start, ended by stop or
// the test's cleanup).
type bg struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func (s *suite) start(t *testing.T, p podRef, args ...string) *bg {
	t.Helper()
	cmd, err := s.inPod(context.Background(), p, args...)
	if err != nil {
		t.Fatal(err)
	}
	b := &bg{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &b.out, &b.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	go func() { b.err = cmd.Wait(); close(b.done) }()
	t.Cleanup(func() { b.stop() })
	return b
}

// exited tells whether the command ended by itself.
func (b *bg) exited() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// stop interrupts the command (nsenter execs it, so the signal reaches
// test-server, which reports and exits), waits up to 10 s, and returns its
// output.
func (b *bg) stop() string {
	if !b.exited() {
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.done:
		case <-time.After(10 * time.Second):
			_ = b.cmd.Process.Kill()
			<-b.done
		}
	}
	return b.out.String()
}

// stream is a flow of traffic between two pods: UDP at 100 datagrams/s
// through a udp-echo, and one TCP connection exchanging a line every 100 ms.
type stream struct {
	name     string
	udp, tcp *bg
	started  time.Time
}

// streamResult is what a stream measured.
type streamResult struct {
	sent, received, lost int
	longestOutage        time.Duration
	lostSeqs             string
	tcpBroken            bool
	tcpDetail            string
}

var streamRE = regexp.MustCompile(`sent (\d+) received (\d+) lost (\d+) longest-outage (\d+)ms`)

// startEcho runs a udp-echo in p on echoPort.
func (s *suite) startEcho(t *testing.T, p podRef) *bg {
	t.Helper()
	return s.start(t, p, s.bin, "udp-echo", "--port", strconv.Itoa(echoPort))
}

// startStream starts a stream from one pod to another (which runs a
// udp-echo and test-server serve).
func (s *suite) startStream(t *testing.T, name string, from, to podRef) *stream {
	t.Helper()
	return &stream{
		name:    name,
		started: time.Now(),
		udp: s.start(t, from, s.bin, "udp-stream", "--to", net.JoinHostPort(to.ip, strconv.Itoa(echoPort)),
			"--rate", "100", "--for", "30m", "--timeout", "2s"),
		tcp: s.start(t, from, s.bin, "hold", "--to", net.JoinHostPort(to.ip, "80"),
			"--for", "30m", "--interval", "100ms", "--timeout", "2s"),
	}
}

// stop ends the stream and parses what it measured.
func (st *stream) stop() (streamResult, error) {
	var r streamResult
	// A hold that ended before it was asked to broke.
	r.tcpBroken = st.tcp.exited()
	tcp := st.tcp.stop()
	r.tcpBroken = r.tcpBroken || strings.Contains(tcp, "broken after") || !strings.Contains(tcp, "connected ")
	r.tcpDetail = tcp
	udp := st.udp.stop()
	m := streamRE.FindStringSubmatch(udp)
	if m == nil {
		return r, fmt.Errorf("stream %s: no udp-stream report in %q", st.name, udp)
	}
	r.sent, _ = strconv.Atoi(m[1])
	r.received, _ = strconv.Atoi(m[2])
	r.lost, _ = strconv.Atoi(m[3])
	ms, _ := strconv.Atoi(m[4])
	r.longestOutage = time.Duration(ms) * time.Millisecond
	for _, l := range strings.Split(udp, "\n") {
		if seqs, ok := strings.CutPrefix(l, "lost "); ok {
			r.lostSeqs = seqs
		}
	}
	return r, nil
}

// isolationProbe probes, until stopped, from each source: target (which a
// policy isolates: every answer is a violation) and control (which the
// policies allow: answers show the prober itself works).
type isolationProbe struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	// figures
	probes, violations, controls, controlOK int
	lastViolation                           string
}

func (s *suite) startIsolationProbe(sources []podRef, target, control podRef) *isolationProbe {
	ip := &isolationProbe{stopc: make(chan struct{})}
	for _, src := range sources {
		ip.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-ip.stopc:
					return
				default:
				}
				proto, port := "tcp", "80"
				if i%2 == 1 {
					proto, port = "udp", "81"
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				out, err := s.probeIn(ctx, src, proto, net.JoinHostPort(target.ip, port))
				_, cerr := s.probeIn(ctx, src, "tcp", net.JoinHostPort(control.ip, "80"))
				cancel()
				ip.mu.Lock()
				ip.probes++
				if err == nil {
					ip.violations++
					ip.lastViolation = fmt.Sprintf("%s -> %s %s:%s answered %q at %s", src.name, target.name, proto, port, out, time.Now().Format(time.RFC3339Nano))
				}
				ip.controls++
				if cerr == nil {
					ip.controlOK++
				}
				ip.mu.Unlock()
			}
		})
	}
	return ip
}

func (ip *isolationProbe) stop() {
	close(ip.stopc)
	ip.wg.Wait()
}

// probeIn runs test-server probe in p (1 s timeout).
func (s *suite) probeIn(ctx context.Context, p podRef, proto, hostport string) (string, error) {
	cmd, err := s.inPod(ctx, p, s.bin, "probe", "--proto", proto, "--to", hostport, "--timeout", "1s")
	if err != nil {
		return "", err
	}
	return combined(cmd)
}

// faultPods creates test-server pods (name -> node index) with label
// role=ROLE (name -> role) in ns and waits until they run.
func (s *suite) faultPods(ctx context.Context, t *testing.T, ns string, layout map[string]int, roles map[string]string) map[string]podRef {
	t.Helper()
	// Pods need the namespace's default ServiceAccount, which the
	// controller-manager creates (late after an API outage: its informers
	// back off).
	if err := eventually(time.Minute, func() error {
		_, err := s.client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for name, node := range layout {
		p := localcluster.TestServerPod(ns, name, s.cfg.NodeName(node), map[string]string{"app": "fault", "role": roles[name]})
		if _, err := s.client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := localcluster.WaitPodsRunning(ctx, s.client, ns, "app=fault", len(layout), 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	refs := map[string]podRef{}
	for name := range layout {
		r, err := s.resolvePod(ctx, ns, name)
		if err != nil {
			t.Fatal(err)
		}
		refs[name] = r
	}
	return refs
}

// faultPolicies are the policies in force during the faults: pods with
// role=iso accept nothing; pods with role=srv accept only role=cli, on TCP
// 80 and UDP echoPort.
func faultPolicies(ns string) []*networkingv1.NetworkPolicy {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	p80, pEcho := intstr.FromInt32(80), intstr.FromInt32(echoPort)
	return []*networkingv1.NetworkPolicy{
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "isolate"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "iso"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "allow-cli"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "srv"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "cli"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p80}, {Protocol: &udp, Port: &pEcho}},
				}},
			},
		},
	}
}

// applyFaultPolicies creates faultPolicies and waits until they are in
// force: iso answered before and no longer does; srv still answers cli.
func (s *suite) applyFaultPolicies(ctx context.Context, t *testing.T, ns string, cli, iso, srv podRef) {
	t.Helper()
	if _, err := s.probeIn(ctx, cli, "tcp", net.JoinHostPort(iso.ip, "80")); err != nil {
		t.Fatalf("before the policies, %s -> %s: %v", cli.name, iso.name, err)
	}
	for _, np := range faultPolicies(ns) {
		if _, err := s.client.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	err := eventually(15*time.Second, func() error {
		if out, err := s.probeIn(ctx, cli, "tcp", net.JoinHostPort(iso.ip, "80")); err == nil {
			return fmt.Errorf("isolated %s still answers %s: %s", iso.name, cli.name, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.probeIn(ctx, cli, "tcp", net.JoinHostPort(srv.ip, "80")); err != nil {
		t.Fatalf("with the policies, allowed %s -> %s: %v", cli.name, srv.name, err)
	}
}

// logStream prints a stream's figures and fails the test on loss or a
// broken TCP connection.
func logStream(t *testing.T, what string, st *stream) streamResult {
	t.Helper()
	r, err := st.stop()
	if err != nil {
		t.Error(err)
		return r
	}
	t.Logf("%s, %s: UDP sent %d received %d lost %d (longest outage %v) over %.1fs; TCP connection broken: %v",
		what, st.name, r.sent, r.received, r.lost, r.longestOutage, time.Since(st.started).Seconds(), r.tcpBroken)
	if r.sent < 100 {
		t.Errorf("%s, %s: only %d datagrams sent", what, st.name, r.sent)
	}
	if r.lost > 0 {
		t.Errorf("%s, %s: %d of %d UDP datagrams lost (sequence numbers %s)", what, st.name, r.lost, r.sent, r.lostSeqs)
	}
	if r.tcpBroken {
		t.Errorf("%s, %s: the TCP connection broke: %s", what, st.name, r.tcpDetail)
	}
	return r
}

// logIsolation prints an isolation prober's figures and fails the test if
// the isolated pod ever answered or the prober never reached the control.
func logIsolation(t *testing.T, what string, ip *isolationProbe) {
	t.Helper()
	ip.stop()
	t.Logf("%s: isolated pod probed %d times, answered %d; allowed control answered %d of %d",
		what, ip.probes, ip.violations, ip.controlOK, ip.controls)
	if ip.violations > 0 {
		t.Errorf("%s: the isolated pod answered %d of %d probes; last: %s", what, ip.violations, ip.probes, ip.lastViolation)
	}
	if ip.probes == 0 || ip.controlOK == 0 {
		t.Errorf("%s: the prober did not work (%d probes, control answered %d of %d)", what, ip.probes, ip.controlOK, ip.controls)
	}
}
