package netnstest_test

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/test/netnstest"
	"github.com/weirnet/weir/test/testroot"
)

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestNewDeletedAtCleanup checks that a namespace from New exists with its
// loopback up during the test, and that its cleanup deletes it even with a
// process still running inside.
func TestNewDeletedAtCleanup(t *testing.T) {
	var n netnstest.NetNS
	t.Run("inner", func(t *testing.T) {
		// Cleanups run last-registered first: reap the process after the
		// namespace's cleanup killed it.
		var sleep *exec.Cmd
		t.Cleanup(func() {
			if sleep != nil {
				_ = sleep.Wait()
			}
		})
		n = netnstest.New(t, "weir-nt")
		if !strings.HasPrefix(n.Name, "weir-nt-") || n.Path != netnstest.Dir+"/"+n.Name {
			t.Fatalf("New = %+v", n)
		}
		if !exists(n.Path) {
			t.Fatalf("%s does not exist", n.Path)
		}
		out, err := exec.Command("ip", "-n", n.Name, "-o", "link", "show", "lo").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "UP") {
			t.Fatalf("lo is not up in %s: %v: %s", n.Name, err, out)
		}
		// A process left behind keeps a namespace alive unless killed.
		cmd := exec.Command("ip", "netns", "exec", n.Name, "sleep", "600")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sleep = cmd
	})
	if exists(n.Path) {
		t.Fatalf("%s still exists after the cleanup", n.Path)
	}
}

// TestDeleteBeforeCleanup: a test may delete its namespace itself; the
// cleanup then has nothing to do and reports nothing.
func TestDeleteBeforeCleanup(t *testing.T) {
	n := netnstest.New(t, "weir-nt")
	n.Delete(t)
	if exists(n.Path) {
		t.Fatalf("%s exists after Delete", n.Path)
	}
	if err := netnstest.Delete(n.Name); err != nil {
		t.Fatalf("Delete of a deleted namespace: %v", err)
	}
}

// TestDo runs a function inside a namespace: it sees that namespace's
// interfaces, and its error comes back.
func TestDo(t *testing.T) {
	n := netnstest.New(t, "weir-nt")
	if out, err := exec.Command("ip", "-n", n.Name, "link", "add", "nt0", "type", "veth", "peer", "name", "nt1").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	netnstest.MustDo(t, n.Name, func() error {
		_, err := net.InterfaceByName("nt0")
		return err
	})
	if _, err := net.InterfaceByName("nt0"); err == nil {
		t.Error("nt0 visible outside the namespace")
	}
	want := errors.New("injected")
	if err := netnstest.Do(n.Name, func() error { return want }); !errors.Is(err, want) {
		t.Errorf("Do = %v, want %v", err, want)
	}
	if err := netnstest.Do("weir-nt-missing", func() error { return nil }); err == nil {
		t.Error("Do in a missing namespace succeeded")
	}
}

// TestCreate is the variant for callers without a *testing.T.
func TestCreate(t *testing.T) {
	testroot.Require(t, "creates network namespaces")
	name := "weir-nt-c" + time.Now().Format("150405.000")[7:]
	if err := netnstest.Create(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netnstest.Delete(name) })
	if err := netnstest.Create(name); err == nil {
		t.Error("Create of an existing namespace succeeded")
	}
	if err := netnstest.Delete(name); err != nil {
		t.Fatal(err)
	}
	if exists(netnstest.Dir + "/" + name) {
		t.Error("namespace exists after Delete")
	}
}
