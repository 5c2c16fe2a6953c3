package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cniv1 "github.com/weirnet/weir/pkg/apis/cni/v1"
	"github.com/weirnet/weir/test/testroot"
)

// TestFaultCorruptIPAMState: a corrupt ipam.json is moved aside with a
// warning and the allocations are rebuilt from the OVSDB pod ports; the pods
// keep working and a new pod gets an address none of them holds.
func TestFaultCorruptIPAMState(t *testing.T) {
	testroot.Require(t, "the agent runs OVS and pods in network namespaces")
	n := newNode(t, "10.33.0.0/24")
	a, b := n.mustAdd(t), n.mustAdd(t)
	n.stopAgent(t, syscall.SIGKILL)
	state := filepath.Join(n.dir, "state", "ipam.json")
	const garbage = `{"version":1,"allocations":{"x":"10.33.0.` // torn write
	if err := os.WriteFile(state, []byte(garbage), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n.startAgent(t)
	figure(t, "corrupt-ipam.agent-ready", time.Since(start).Milliseconds(), "ms")
	log, err := os.ReadFile(n.agentLog)
	if err != nil {
		t.Fatal(err)
	}
	var warning string
	for _, l := range strings.Split(string(log), "\n") {
		if strings.HasPrefix(l, "W") && strings.Contains(l, "IPAM state file is corrupt") {
			warning = l
		}
	}
	if warning == "" {
		t.Fatalf("no warning about the corrupt IPAM state in the agent log:\n%s", tail(string(log), 30))
	}
	t.Logf("agent warned: %s", warning)
	aside, _ := filepath.Glob(state + ".corrupt-*")
	if len(aside) != 1 {
		t.Fatalf("corrupt copies %v, want one", aside)
	}
	if data, _ := os.ReadFile(aside[0]); string(data) != garbage {
		t.Fatalf("the corrupt file kept aside holds %q, want the original %q", data, garbage)
	}
	n.checkConsistent(t, "10.33.0.1", []*pod{a, b}, nil)
	c := n.mustAdd(t)
	n.checkConsistent(t, "10.33.0.1", []*pod{a, b, c}, nil)
	if err := ping(c.ns, a.ip); err != nil {
		t.Fatal(err)
	}
}

// TestFaultUnwritableStateDir: with the state directory immutable (chattr +i:
// root ignores mode bits) an ADD fails with a CNI error naming the IPAM state
// and leaves nothing behind; once the directory is writable again the
// retried requests succeed and no IP is ever assigned twice, also across an
// agent restart.
func TestFaultUnwritableStateDir(t *testing.T) {
	testroot.Require(t, "the agent runs OVS and pods in network namespaces; chattr +i needs root")
	n := newNode(t, "10.34.0.0/24")
	a, b := n.mustAdd(t), n.mustAdd(t)
	dir := filepath.Join(n.dir, "state")
	chattr := func(flag string) {
		t.Helper()
		if out, err := exec.Command("chattr", flag, dir).CombinedOutput(); err != nil {
			t.Fatalf("chattr %s %s: %v: %s", flag, dir, err, out)
		}
	}
	chattr("+i")
	t.Cleanup(func() { _ = exec.Command("chattr", "-i", dir).Run() })

	p := newSandbox(t)
	err := n.add(t, p)
	if err == nil {
		t.Fatal("ADD succeeded with the state directory immutable")
	}
	if cniCode(err) != cniv1.CodeInternal || !strings.Contains(err.Error(), "IPAM state") {
		t.Fatalf("ADD with an unwritable state dir: %v (code %d), want code %d naming the IPAM state", err, cniCode(err), cniv1.CodeInternal)
	}
	t.Logf("code %d: %v", cniCode(err), err)
	// The runtime DELs after a failed ADD; nothing was attached, so the DEL
	// has nothing to save and must succeed.
	if err := n.del(t, p); err != nil {
		t.Errorf("DEL after the failed ADD: %v", err)
	}
	n.checkConsistent(t, "10.34.0.1", []*pod{a, b}, []*pod{p})
	// A DEL of a live pod cannot release its IP durably: if it fails, the
	// runtime retries it once the directory is writable.
	delErr := n.del(t, a)
	t.Logf("DEL of a live pod with the state dir unwritable: %v (code %d)", delErr, cniCode(delErr))

	chattr("-i")
	if delErr != nil {
		if err := n.del(t, a); err != nil {
			t.Fatalf("retried DEL once writable: %v", err)
		}
	}
	if err := n.add(t, p); err != nil {
		t.Fatalf("retried ADD once writable: %v", err)
	}
	live := []*pod{b, p}
	for i := 0; i < 5; i++ {
		live = append(live, n.mustAdd(t))
	}
	n.checkConsistent(t, "10.34.0.1", live, []*pod{a})
	// The durable state is right too: a restarted agent agrees, and new pods
	// still get fresh addresses.
	n.stopAgent(t, syscall.SIGKILL)
	n.startAgent(t)
	live = append(live, n.mustAdd(t), n.mustAdd(t))
	n.checkConsistent(t, "10.34.0.1", live, []*pod{a})
	figure(t, "unwritable-state.pods-after-recovery", len(live), "pods, all IPs distinct")
}

// TestFaultLegacyOVSDBRecords: pod ports written by the first Weir release
// still restore. That release (commit 98b4313) wrote weir-type, pod-name,
// pod-namespace, container-id, ifname, ip, mac and netns; pod-uid came with
// 15c865d and cni-network with 95fc3ae. The test rewrites the records of two
// pods by hand in that form, removes their flows and restarts the agent: the
// flows come back, the pods talk, CHECK and DEL work, nothing leaks.
func TestFaultLegacyOVSDBRecords(t *testing.T) {
	testroot.Require(t, "the agent runs OVS and pods in network namespaces")
	n := newNode(t, "10.35.0.0/24")
	a, b := n.mustAdd(t), n.mustAdd(t)
	n.stopAgent(t, syscall.SIGKILL)
	for _, p := range []*pod{a, b} {
		port := p.result.Interfaces[0].Name
		mac := strings.TrimSpace(n.ovs.MustVsctl(t, "get", "Port", port, "external_ids:mac"))
		n.ovs.MustVsctl(t, "clear", "Port", port, "external_ids")
		for k, v := range map[string]string{
			"weir-type": "pod", "pod-name": p.id, "pod-namespace": "default", "container-id": p.id,
			"ifname": "eth0", "ip": p.ip, "mac": strings.Trim(mac, `"`), "netns": p.path,
		} {
			n.ovs.MustVsctl(t, "set", "Port", port, "external_ids:"+k+"="+v)
		}
		t.Logf("legacy record of %s: %s", port, strings.TrimSpace(n.ovs.MustVsctl(t, "get", "Port", port, "external_ids")))
	}
	n.ovs.MustOfctl(t, "-O", "OpenFlow15", "del-flows", "br-int", "cookie=0x0002000000000000/0x00ff000000000000")
	if c := n.podFlowCount(t); c != 0 {
		t.Fatalf("%d pod flows left after deleting them", c)
	}
	n.startAgent(t)
	n.checkConsistent(t, "10.35.0.1", []*pod{a, b}, nil)
	if err := ping(a.ns, b.ip); err != nil {
		t.Fatal(err)
	}
	if err := n.check(t, a); err != nil {
		t.Errorf("CHECK of a restored legacy attachment: %v", err)
	}
	if err := n.del(t, a); err != nil {
		t.Fatalf("DEL of a restored legacy attachment: %v", err)
	}
	c := n.mustAdd(t)
	n.checkConsistent(t, "10.35.0.1", []*pod{b, c}, []*pod{a})
	figure(t, "legacy-records.restored", 2, "pods")
}
