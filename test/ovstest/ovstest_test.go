package ovstest_test

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weirnet/weir/test/ovstest"
)

// instanceTrace is what TestInstance remembers of an instance to check, after
// its subtest ended, that cleanup removed everything.
type instanceTrace struct {
	dir        string
	namespaces []string
	pids       []int
}

func TestInstance(t *testing.T) {
	t.Parallel()
	var trace instanceTrace
	ok := t.Run("pods", func(t *testing.T) {
		ovs := ovstest.Start(t)
		ovs.AddBridge(t, "br-int")

		out := ovs.MustOfctl(t, "-O", "OpenFlow15", "show", "unix:"+ovs.MgmtSocket("br-int"))
		if !strings.Contains(out, "OFPT_FEATURES_REPLY (OF1.5)") {
			t.Fatalf("ovs-ofctl show over the management socket: unexpected output:\n%s", out)
		}
		dp := strings.TrimSpace(ovs.MustVsctl(t, "get", "Bridge", "br-int", "datapath_type"))
		if dp != "netdev" {
			t.Errorf("datapath_type = %s, want netdev", dp)
		}

		a := ovs.AddPod(t, "br-int", "a", "10.0.0.2/24", "02:00:0a:00:00:02", 3)
		b := ovs.AddPod(t, "br-int", "b", "10.0.0.3/24", "02:00:0a:00:00:03", 4)
		trace = instanceTrace{
			dir:        ovs.Dir,
			namespaces: []string{ovs.NetNS, a.NetNS, b.NetNS},
			pids:       []int{ovs.VswitchdPID(), ovs.OVSDBServerPID()},
		}
		if a.IP != "10.0.0.2" || a.CIDR != "10.0.0.2/24" || a.HostIf != "v-a" || a.OFPort != 3 {
			t.Errorf("pod a = %+v", *a)
		}
		if got := strings.TrimSpace(ovs.MustVsctl(t, "get", "Interface", b.HostIf, "ofport")); got != "4" {
			t.Errorf("ofport of %s = %s, want 4", b.HostIf, got)
		}

		// fail_mode=secure: nothing passes without flows.
		if err := a.Ping(b.IP, 1); err == nil {
			t.Errorf("ping passed with an empty flow table")
		}
		ovs.MustOfctl(t, "add-flow", "br-int", "actions=NORMAL")
		if err := a.Ping(b.IP, 3); err != nil {
			t.Fatal(err)
		}
		if err := b.Ping(a.IP, 3); err != nil {
			t.Fatal(err)
		}

		// The pod sees its own settings.
		out, err := a.Exec("ethtool", "-k", "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "tx-checksumming: off") {
			t.Errorf("pod eth0 still has TX checksum offload:\n%s", out)
		}
		if _, err := ovs.Exec("", "nft", "list", "chain", "netdev", "weir_hostdrop", "in_v-a"); err != nil {
			t.Errorf("host drop chain missing: %v", err)
		}
		if out, err := a.Exec("sysctl", "-n", "net.ipv6.conf.eth0.disable_ipv6"); err != nil || strings.TrimSpace(out) != "1" {
			t.Errorf("IPv6 not disabled on pod eth0: %v %s", err, out)
		}
	})

	if trace.dir == "" {
		if !ok {
			t.Fatal("subtest failed before the cleanup could be traced")
		}
		t.Skip("subtest was skipped")
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	for _, ns := range trace.namespaces {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == ns {
				t.Errorf("netns %s still exists after cleanup", ns)
			}
		}
	}
	for _, pid := range trace.pids {
		if pid == 0 {
			t.Errorf("daemon PID was not known while the instance ran")
		} else if alive(pid) {
			t.Errorf("daemon pid %d still alive after cleanup", pid)
		}
	}
	if _, err := os.Stat(trace.dir); !os.IsNotExist(err) {
		t.Errorf("instance dir %s still exists after cleanup (stat: %v)", trace.dir, err)
	}
}

func TestVswitchdRestart(t *testing.T) {
	t.Parallel()
	ovs := ovstest.Start(t)
	ovs.AddBridge(t, "br-int")
	a := ovs.AddPod(t, "br-int", "a", "10.0.1.2/24", "02:00:0a:00:01:02", 3)
	b := ovs.AddPod(t, "br-int", "b", "10.0.1.3/24", "02:00:0a:00:01:03", 4)
	ovs.MustOfctl(t, "add-flow", "br-int", "actions=NORMAL")
	if err := a.Ping(b.IP, 1); err != nil {
		t.Fatal(err)
	}

	old := ovs.VswitchdPID()
	if old == 0 {
		t.Fatal("VswitchdPID() = 0 while running")
	}
	ovs.StopVswitchd(t)
	if pid := ovs.VswitchdPID(); pid != 0 {
		t.Fatalf("VswitchdPID() = %d after StopVswitchd", pid)
	}
	if alive(old) {
		t.Fatalf("pid %d alive after StopVswitchd", old)
	}
	if _, err := ovs.Appctl("version"); err == nil {
		t.Error("ovs-appctl answered while ovs-vswitchd was stopped")
	}
	if _, err := ovs.Ofctl("show", "br-int"); err == nil {
		t.Error("OpenFlow socket answered while ovs-vswitchd was stopped")
	}
	// The database stays up; configuration changes are picked up on restart.
	ovs.MustVsctl(t, "--no-wait", "set", "Bridge", "br-int", "other_config:weir-test=1")

	ovs.StartVswitchd(t)
	pid := ovs.VswitchdPID()
	if pid == 0 || pid == old {
		t.Fatalf("VswitchdPID() = %d after restart (was %d)", pid, old)
	}
	ovs.MustOfctl(t, "-O", "OpenFlow15", "show", "unix:"+ovs.MgmtSocket("br-int"))
	// Flows do not survive a restart; ports do.
	if out := ovs.MustOfctl(t, "dump-flows", "br-int"); strings.Contains(out, "actions=NORMAL") {
		t.Errorf("flows survived the restart:\n%s", out)
	}
	if got := strings.TrimSpace(ovs.MustVsctl(t, "get", "Interface", a.HostIf, "ofport")); got != "3" {
		t.Errorf("ofport of %s after restart = %s, want 3", a.HostIf, got)
	}
	ovs.MustOfctl(t, "add-flow", "br-int", "actions=NORMAL")
	if err := a.Ping(b.IP, 3); err != nil {
		t.Fatal(err)
	}
}

func TestCommandErrors(t *testing.T) {
	t.Parallel()
	ovs := ovstest.Start(t)
	_, err := ovs.Vsctl("get", "Bridge", "no-such-bridge", "name")
	if err == nil || !strings.Contains(err.Error(), "no row") || !strings.Contains(err.Error(), "ovs-vsctl") {
		t.Errorf("Vsctl error should name the command and carry its output, got: %v", err)
	}
	if _, err := ovs.Exec(ovs.NetNS, "false"); err == nil {
		t.Error("Exec of false succeeded")
	}
	out, err := ovs.Exec("", "ip", "-o", "link", "show", "lo")
	if err != nil || !strings.Contains(out, "UP") {
		t.Errorf("loopback in %s not up: %v\n%s", ovs.NetNS, err, out)
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	ovs := ovstest.Start(t, ovstest.WithOtherConfig("weir-test", "yes"), ovstest.WithPodIPv6(),
		ovstest.WithCommandTimeout(10*time.Second))
	if got := strings.TrimSpace(ovs.MustVsctl(t, "get", "Open_vSwitch", ".", "other_config:weir-test")); got != `"yes"` && got != "yes" {
		t.Errorf("other_config:weir-test = %s, want yes", got)
	}
	ovs.AddBridge(t, "br-int")
	p := ovs.AddPod(t, "br-int", "p", "10.0.2.2/24", "02:00:0a:00:02:02", 7)
	if out, err := p.Exec("sysctl", "-n", "net.ipv6.conf.eth0.disable_ipv6"); err != nil || strings.TrimSpace(out) != "0" {
		t.Errorf("IPv6 disabled on pod eth0 despite WithPodIPv6: %v %s", err, out)
	}
}

// TestOVSDBServerKill stops ovsdb-server from outside, gracefully and as
// in a crash, and starts it again on the same database.
func TestOVSDBServerKill(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			ovs := ovstest.Start(t)
			ovs.AddBridge(t, "br-int")
			old := ovs.OVSDBServerPID()
			if old == 0 {
				t.Fatal("OVSDBServerPID() = 0 while running")
			}
			ovs.KillOVSDBServer(t, sig)
			if pid := ovs.OVSDBServerPID(); pid != 0 || alive(old) {
				t.Fatalf("ovsdb-server still running after %v (OVSDBServerPID() = %d)", sig, pid)
			}
			if _, err := ovs.Vsctl("--no-wait", "list-br"); err == nil {
				t.Error("ovs-vsctl answered while ovsdb-server was down")
			}
			ovs.StartOVSDBServer(t)
			if pid := ovs.OVSDBServerPID(); pid == 0 || pid == old {
				t.Fatalf("OVSDBServerPID() = %d after restart (was %d)", pid, old)
			}
			if got := strings.TrimSpace(ovs.MustVsctl(t, "list-br")); got != "br-int" {
				t.Errorf("bridges after restart = %q, want br-int", got)
			}
		})
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
