package agent

import (
	"testing"

	"github.com/weirnet/weir/test/k8stest"
)

// TestMain shares one real control plane (started on first use) among the
// package's tests and stops it afterwards.
func TestMain(m *testing.M) {
	k8stest.RunMain(m)
}
