package k8stest

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// shared is the control plane of the test binary, started by the first
// Shared call and stopped by RunMain.
var shared struct {
	sync.Mutex
	mainRunning bool
	started     bool
	cp          *ControlPlane
	err         error
}

// RunMain runs the tests of m and then stops the control plane that Shared
// started, if any, and exits with the tests' status. Call it from TestMain:
//
//	func TestMain(m *testing.M) { k8stest.RunMain(m) }
func RunMain(m *testing.M) {
	shared.Lock()
	shared.mainRunning = true
	shared.Unlock()
	code := m.Run()
	shared.Lock()
	cp := shared.cp
	shared.cp = nil
	shared.Unlock()
	if cp != nil {
		if err := cp.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "k8stest: stopping the shared control plane: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// Shared returns the test binary's shared control plane, starting it on
// first use (so tests that do not need one do not pay for it). It skips the
// test when not running as root and fails it when the control plane could
// not be started — for every later caller too, without retrying. The
// package's TestMain must call RunMain, which stops it.
//
// If t fails, the tails of the control plane's logs are logged.
func Shared(t testing.TB) *ControlPlane {
	t.Helper()
	skipUnlessRoot(t)
	shared.Lock()
	defer shared.Unlock()
	if !shared.mainRunning {
		t.Fatal("k8stest.Shared needs the package's TestMain to call k8stest.RunMain (which stops the control plane)")
	}
	if !shared.started {
		shared.started = true
		if !haveBinaries(BinDir()) {
			t.Logf("k8stest: building etcd %s and kube-apiserver %s into %s (once; 7-8 min)", EtcdVersion, K8sVersion, BinDir())
		}
		shared.cp, shared.err = Launch()
		if shared.err == nil {
			t.Logf("k8stest: shared etcd %s + kube-apiserver %s ready in %s at %s", EtcdVersion, K8sVersion,
				shared.cp.StartupTime.Round(time.Millisecond), shared.cp.Host)
		}
	}
	if shared.err != nil {
		t.Fatalf("k8stest: starting the shared control plane: %v", shared.err)
	}
	cp := shared.cp
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("k8stest: logs of the shared control plane in %s:\n%s", cp.Dir, cp.LogTail())
		}
	})
	return cp
}
