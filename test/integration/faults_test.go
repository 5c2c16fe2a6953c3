package integration

// Fault suite, node-level part (issue 11): the real ovs-agent, the real weir
// CNI binary through libcni and a private OVS, broken on purpose. Every test
// ends by proving the node consistent with checkConsistent: IPAM state,
// OVSDB pod ports, host veths and pod flows agree with the attachments the
// runtime believes exist, and every such attachment carries traffic.
//
// Each figure is logged as one line "FIGURE <name> <value> <unit>" so that
// `go test -v ... | grep FIGURE` collects them.

import (
	"context"
	"fmt"
	"math/rand"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weirnet/weir/test/testroot"
)

// podFlowsPerPod is the number of pod-category flows one attachment has
// (TestPodNetworking checks the same count).
const podFlowsPerPod = 6

func figure(t testing.TB, name string, value any, unit string) {
	t.Helper()
	t.Logf("FIGURE %s %v %s", name, value, unit)
}

// cniOp runs one CNI ADD or DEL without touching t, for use from many
// goroutines; ADD records the result in p.
func (n *node) cniOp(ctx context.Context, conf *libcni.NetworkConfigList, p *pod, add bool) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if !add {
		return n.cni.DelNetworkList(ctx, conf, n.rt(p))
	}
	res, err := n.cni.AddNetworkList(ctx, conf, n.rt(p))
	if err != nil {
		return err
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return fmt.Errorf("ADD result: %w", err)
	}
	p.result, p.ip = r, r.IPs[0].Address.IP.String()
	return nil
}

// retryAsRuntime brings p to the wanted state the way a container runtime
// does after a failure: a failed ADD is followed by a DEL and a new ADD, a
// failed DEL by another DEL, until one succeeds. It returns the number of
// retries it needed.
func (n *node) retryAsRuntime(ctx context.Context, conf *libcni.NetworkConfigList, p *pod, add bool) (int, error) {
	var err error
	for i := 1; i <= 5; i++ {
		if add {
			if err = n.cniOp(ctx, conf, p, false); err != nil {
				continue
			}
		}
		if err = n.cniOp(ctx, conf, p, add); err == nil {
			return i, nil
		}
	}
	return 5, fmt.Errorf("%s of %s still fails after 5 retries: %w", map[bool]string{true: "ADD", false: "DEL"}[add], p.id, err)
}

// stateIPs returns IPAM's allocations (owner to IP) from the state file.
func (n *node) stateIPs(t testing.TB) []string {
	t.Helper()
	var ips []string
	for ip := range n.allocatedIPs(t) {
		ips = append(ips, ip)
	}
	sort.Strings(ips)
	return ips
}

// checkConsistent fails t unless the node holds exactly the attachments of
// live: one OVSDB pod port, one host veth, podFlowsPerPod pod flows and one
// IPAM allocation each, all IPs distinct, every pod pinging the gateway;
// and gone's sandboxes have no interface left.
func (n *node) checkConsistent(t testing.TB, gateway string, live, gone []*pod) {
	t.Helper()
	var wantIfs, wantIPs []string
	seen := map[string]string{}
	for _, p := range live {
		if p.result == nil {
			t.Errorf("pod %s is live but has no ADD result", p.id)
			continue
		}
		if other, dup := seen[p.ip]; dup {
			t.Errorf("IP %s assigned to both %s and %s", p.ip, other, p.id)
		}
		seen[p.ip] = p.id
		wantIfs = append(wantIfs, p.result.Interfaces[0].Name)
		wantIPs = append(wantIPs, p.ip)
	}
	sort.Strings(wantIfs)
	sort.Strings(wantIPs)
	sorted := func(s []string) []string { s = slices.Clone(s); sort.Strings(s); return s }
	if got := sorted(n.podPorts(t)); !slices.Equal(got, wantIfs) {
		t.Errorf("OVSDB pod ports %v, want %v", got, wantIfs)
	}
	if got := sorted(n.hostVeths(t)); !slices.Equal(got, wantIfs) {
		t.Errorf("host veths %v, want %v", got, wantIfs)
	}
	if got := n.stateIPs(t); !slices.Equal(got, wantIPs) {
		t.Errorf("IPAM allocations %v, want %v", got, wantIPs)
	}
	if got, want := n.podFlowCount(t), podFlowsPerPod*len(live); got != want {
		t.Errorf("%d pod flows, want %d", got, want)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, p := range live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			var err error
			for try := 0; try < 3; try++ {
				if _, err = inNS(p.ns, "ping", "-c", "1", "-W", "1", gateway); err == nil {
					return
				}
			}
			mu.Lock()
			t.Errorf("pod %s (%s) does not reach the gateway %s: %v", p.id, p.ip, gateway, err)
			mu.Unlock()
		}()
	}
	for _, p := range gone {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := inNS(p.ns, "ip", "-o", "link", "show", "eth0")
			if err == nil {
				mu.Lock()
				t.Errorf("removed pod %s still has eth0: %s", p.id, out)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	n.audit(t)
}

// weirctl is built once, on first use, next to the other binaries.
var weirctl = sync.OnceValues(func() (string, error) {
	path := filepath.Join(binDir, "weirctl")
	if out, err := exec.Command("go", "build", "-o", path, "../../cmd/weirctl").CombinedOutput(); err != nil {
		return "", fmt.Errorf("building weirctl: %v: %s", err, out)
	}
	return path, nil
})

// audit runs `weirctl audit` against the node's agent, the agent's own
// consistency check (IPAM vs ports vs veths vs flows), and requires exit 0.
// checkConsistent does the same checks from outside; both must agree.
func (n *node) audit(t testing.TB) {
	t.Helper()
	bin, err := weirctl()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--socket", filepath.Join(n.dir, "agent.sock"), "audit").CombinedOutput()
	if err != nil {
		t.Errorf("weirctl audit: %v:\n%s", err, out)
	}
}

// TestFaultAgentKillDuringCNI SIGKILLs the agent at a random point while 25
// ADDs and 25 DELs run concurrently, restarts it, retries every failed
// request as a runtime does, and checks that nothing leaked and every pod
// that should exist works. 3 repetitions here, 20 in
// TestFaultAgentKillDuringCNISoak (make soak).
func TestFaultAgentKillDuringCNI(t *testing.T) { agentKillStorm(t, 3) }

func TestFaultAgentKillDuringCNISoak(t *testing.T) {
	testroot.RequireSoak(t)
	agentKillStorm(t, 20)
}

func agentKillStorm(t *testing.T, reps int) {
	testroot.Require(t, "the agent runs OVS and pods in network namespaces")
	const half = 25
	const gateway = "10.30.0.1"
	n := newNode(t, "10.30.0.0/24")
	conf := n.confList(t, "1.0.0")
	ctx := context.Background()
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))

	var totalFailed, totalRetries int
	var killDelays []time.Duration
	for rep := 0; rep < reps; rep++ {
		ok := t.Run(fmt.Sprintf("rep%02d", rep), func(t *testing.T) {
			// half pods exist before the storm; the storm deletes them
			// and adds half new ones.
			old := make([]*pod, half)
			fresh := make([]*pod, half)
			for i := range old {
				old[i], fresh[i] = newSandbox(t), newSandbox(t)
			}
			for _, p := range old {
				if err := n.cniOp(ctx, conf, p, true); err != nil {
					t.Fatalf("ADD before the storm: %v", err)
				}
			}
			// A calm storm takes ~0.6-1.2 s here (2 shared cores); kill
			// somewhere in its first 0.8 s so both early and late
			// phases of requests are hit.
			delay := time.Duration(rng.Int63n(int64(800 * time.Millisecond)))
			killDelays = append(killDelays, delay)
			proc := n.agent.Process
			type op struct {
				p   *pod
				add bool
				err error
			}
			ops := make([]*op, 0, 2*half)
			for i := 0; i < half; i++ {
				ops = append(ops, &op{p: fresh[i], add: true}, &op{p: old[i], add: false})
			}
			var wg sync.WaitGroup
			start := time.Now()
			for _, o := range ops {
				wg.Add(1)
				go func() { defer wg.Done(); o.err = n.cniOp(ctx, conf, o.p, o.add) }()
			}
			time.Sleep(delay)
			_ = proc.Kill()
			wg.Wait()
			storm := time.Since(start)
			n.stopAgent(t, syscall.SIGKILL) // reaps the killed process
			failed := 0
			for _, o := range ops {
				if o.err != nil {
					failed++
				}
			}
			restart := time.Now()
			n.startAgent(t)
			t.Logf("kill after %v of a %v storm: %d of %d requests failed; agent ready %v after restart",
				delay.Round(time.Millisecond), storm.Round(time.Millisecond), failed, len(ops), time.Since(restart).Round(time.Millisecond))
			retries := 0
			for _, o := range ops {
				if o.err == nil {
					continue
				}
				r, err := n.retryAsRuntime(ctx, conf, o.p, o.add)
				retries += r
				if err != nil {
					t.Error(err)
				}
			}
			totalFailed += failed
			totalRetries += retries
			n.checkConsistent(t, gateway, fresh, old)
			if t.Failed() {
				return
			}
			// Clean slate for the next repetition (its sandboxes go at
			// the end of this subtest).
			for _, p := range fresh {
				if err := n.cniOp(ctx, conf, p, false); err != nil {
					t.Fatalf("final DEL: %v", err)
				}
			}
			n.checkConsistent(t, gateway, nil, fresh)
		})
		if !ok {
			break
		}
	}
	figure(t, "agent-kill.repetitions", reps, "")
	figure(t, "agent-kill.failed-requests", totalFailed, fmt.Sprintf("of %d", reps*2*half))
	figure(t, "agent-kill.runtime-retries", totalRetries, "")
	t.Logf("kill delays: %v", killDelays)
}
