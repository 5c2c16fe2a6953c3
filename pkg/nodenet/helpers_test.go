package nodenet_test

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"testing"

	"github.com/weirnet/weir/test/testroot"
)

// scratchNetNS creates a network namespace deleted at cleanup (with
// everything in it) and returns its name.
func scratchNetNS(t *testing.T) string {
	t.Helper()
	testroot.Require(t, "creates network namespaces")
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "weir-nn-" + hex.EncodeToString(b)
	mustRun(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	mustRun(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// nsRun runs a command in namespace ns and fails the test on error.
func nsRun(t *testing.T, ns string, args ...string) string {
	t.Helper()
	return mustRun(t, "ip", append([]string{"netns", "exec", ns}, args...)...)
}
