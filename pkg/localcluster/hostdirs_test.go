package localcluster

import (
	"os"
	"path/filepath"
	"testing"
)

// TestHostDirsLastDownRemoves: the mount points Up created stay while any
// cluster is up (removing them would detach the bind mounts of that
// cluster's running nodes) and go with the last Down; a registration whose
// cluster directory is gone does not keep them.
func TestHostDirsLastDownRemoves(t *testing.T) {
	base := t.TempDir()
	oldReg, oldMP := hostRegistryDir, hostMountPoints
	t.Cleanup(func() { hostRegistryDir, hostMountPoints = oldReg, oldMP })
	hostRegistryDir = filepath.Join(base, "run")
	existing := filepath.Join(base, "host", "existing")
	if err := os.MkdirAll(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	mp := []string{filepath.Join(base, "host", "opt", "cni", "bin"), filepath.Join(base, "host", "existing", "sub")}
	hostMountPoints = mp

	cluster := func(name string) Config {
		cfg := DefaultConfig()
		cfg.Dir = filepath.Join(base, name)
		if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	exist := func(p string) bool { _, err := os.Stat(p); return err == nil }
	a, b, stale := cluster("a"), cluster("b"), cluster("stale")
	for _, c := range []Config{a, b, stale} {
		if err := createHostDirs(c); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range mp {
		if !exist(p) {
			t.Fatalf("%s was not created", p)
		}
	}
	// The stale cluster's directory vanished without a Down.
	if err := os.RemoveAll(stale.Dir); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		down      Config
		wantExist bool
	}{
		{a, true},  // b is still up
		{b, false}, // the last one (the stale registration does not count)
	}
	for _, st := range steps {
		if err := os.RemoveAll(st.down.Dir); err != nil { // as Down does before releasing
			t.Fatal(err)
		}
		if err := releaseHostDirs(st.down, nil); err != nil {
			t.Fatal(err)
		}
		for _, p := range mp {
			if exist(p) != st.wantExist {
				t.Errorf("after down of %s: %s exists = %v, want %v", st.down.Dir, p, exist(p), st.wantExist)
			}
		}
	}
	if !exist(existing) {
		t.Errorf("%s existed before the first up and was removed", existing)
	}
	if exist(filepath.Join(base, "host", "opt")) {
		t.Error("parents created by up were left")
	}
}
