package agent

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/weirnet/weir/test/testroot"
)

// inNetNS runs f on a thread in network namespace /var/run/netns/name.
func inNetNS(t *testing.T, name string, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread dies with the goroutine if restoring fails
		errc <- func() error {
			self, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				return err
			}
			defer self.Close()
			target, err := os.Open("/var/run/netns/" + name)
			if err != nil {
				return err
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("setns %s: %w", name, err)
			}
			ferr := f()
			if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("restoring the thread's netns: %w", err)
			}
			runtime.UnlockOSThread()
			return ferr
		}()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func mustIP(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestNodenetPeerRoutes checks on a real kernel (a scratch netns) that
// peer routes are installed with RouteProtocolWeir, that ListPeerRoutes
// finds them and the legacy unmarked routes of older releases, and only
// those (not routes others put on the gateway), and that DeletePeerRoute
// removes marked and legacy routes alike.
func TestNodenetPeerRoutes(t *testing.T) {
	testroot.Require(t, "creates a network namespace and routes in it")
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	ns := "weir-pr-" + hex.EncodeToString(b)
	mustIP(t, "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", ns).Run() })
	mustIP(t, "-n", ns, "link", "add", "gw0", "type", "veth", "peer", "name", "gw0p")
	mustIP(t, "-n", ns, "link", "add", "other0", "type", "veth", "peer", "name", "other0p")
	for _, l := range []string{"gw0", "gw0p", "other0", "other0p"} {
		mustIP(t, "-n", ns, "link", "set", l, "up")
	}
	mustIP(t, "-n", ns, "addr", "add", "10.72.0.1/24", "dev", "gw0")
	mustIP(t, "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "other0")
	// Legacy Weir route (no protocol: the kernel records boot).
	mustIP(t, "-n", ns, "route", "add", "10.72.5.0/24", "via", "10.72.5.1", "dev", "gw0", "onlink")
	// Not Weir's: another protocol, another next hop, another device.
	mustIP(t, "-n", ns, "route", "add", "10.72.6.0/24", "via", "10.72.6.1", "dev", "gw0", "onlink", "proto", "static")
	mustIP(t, "-n", ns, "route", "add", "10.72.7.0/24", "via", "10.72.7.9", "dev", "gw0", "onlink")
	mustIP(t, "-n", ns, "route", "add", "10.72.8.0/24", "via", "10.72.8.1", "dev", "other0", "onlink")

	r := NodenetRoutes{}
	_, marked, _ := net.ParseCIDR("10.72.1.0/24")
	list := func() []string {
		var got []string
		inNetNS(t, ns, func() error {
			dsts, err := r.ListPeerRoutes("gw0")
			for _, d := range dsts {
				got = append(got, d.String())
			}
			return err
		})
		slices.Sort(got)
		return got
	}
	inNetNS(t, ns, func() error { return r.EnsurePeerRoute("gw0", marked, net.ParseIP("10.72.1.1")) })
	if got := mustIP(t, "-n", ns, "route", "show", "10.72.1.0/24"); !strings.Contains(got, "proto 87") {
		t.Errorf("peer route %q has no proto 87", strings.TrimSpace(got))
	}
	if got, want := list(), []string{"10.72.1.0/24", "10.72.5.0/24"}; !slices.Equal(got, want) {
		t.Fatalf("ListPeerRoutes = %v, want %v", got, want)
	}
	// EnsurePeerRoute over a legacy route marks it.
	_, legacy, _ := net.ParseCIDR("10.72.5.0/24")
	inNetNS(t, ns, func() error { return r.EnsurePeerRoute("gw0", legacy, net.ParseIP("10.72.5.1")) })
	if got := mustIP(t, "-n", ns, "route", "show", "10.72.5.0/24"); !strings.Contains(got, "proto 87") ||
		strings.Count(strings.TrimSpace(got), "\n") != 0 {
		t.Errorf("legacy route after EnsurePeerRoute: %q, want one route with proto 87", got)
	}
	for _, c := range []*net.IPNet{marked, legacy} {
		for range 2 { // idempotent
			inNetNS(t, ns, func() error { return r.DeletePeerRoute("gw0", c) })
		}
	}
	if got := list(); len(got) != 0 {
		t.Fatalf("ListPeerRoutes after the deletes = %v, want none", got)
	}
	for _, dst := range []string{"10.72.6.0/24", "10.72.7.0/24", "10.72.8.0/24"} {
		if got := mustIP(t, "-n", ns, "route", "show", dst); strings.TrimSpace(got) == "" {
			t.Errorf("the route to %s, not Weir's, is gone", dst)
		}
	}
	inNetNS(t, ns, func() error {
		dsts, err := r.ListPeerRoutes("no-such-gw")
		if len(dsts) != 0 {
			t.Errorf("routes of a missing gateway: %v", dsts)
		}
		return err
	})
}
