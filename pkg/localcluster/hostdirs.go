package localcluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// The standard runtime paths (hostMountPoints) are bind-mount targets in
// every node's mount namespace, of every cluster on the machine. Up creates
// the missing ones on the host; they may be removed only when no cluster is
// left: since Linux 3.18, removing a directory that is a mount point in
// another mount namespace detaches those mounts, so one cluster's `down`
// that removed "its" /var/lib/containerd or /opt/cni/bin took them away from
// the running nodes of every other cluster (seen: containerd's content store
// and the loopback plugin vanished from a running e2e cluster's nodes when
// another e2e run finished).
//
// So the record is machine-wide, under /run (cleared at boot): the clusters
// that are up (one file per cluster directory) and the directories some Up
// created; the last Down removes them. A lock serialises Up's creating and
// registering against Down's checking and removing.

// hostRegistryDir is where the machine-wide record lives; a variable for tests.
var hostRegistryDir = "/run/weir-local"

func hostRegistryLock() (func(), error) {
	if err := os.MkdirAll(filepath.Join(hostRegistryDir, "clusters"), 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", hostRegistryDir, err)
	}
	f, err := os.OpenFile(filepath.Join(hostRegistryDir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// clusterKey names cfg's registration: its directory, made a file name.
func (c Config) clusterKey() string {
	return strings.ReplaceAll(strings.Trim(filepath.Clean(c.Dir), "/"), "/", "_")
}

// createHostDirs creates the missing mount points, records them and
// registers cfg's cluster as up.
func createHostDirs(cfg Config) error {
	unlock, err := hostRegistryLock()
	if err != nil {
		return err
	}
	defer unlock()
	var created []string
	var errs []error
	for _, d := range hostMountPoints {
		c, err := mkdirAllRecorded(d)
		created = append(created, c...)
		if err != nil {
			errs = append(errs, fmt.Errorf("creating mount point %s: %w", d, err))
		}
	}
	if len(created) > 0 {
		f, err := os.OpenFile(filepath.Join(hostRegistryDir, "created-dirs"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		_, werr := f.WriteString(strings.Join(created, "\n") + "\n")
		errs = append(errs, werr, f.Close())
	}
	errs = append(errs, os.WriteFile(filepath.Join(hostRegistryDir, "clusters", cfg.clusterKey()), []byte(cfg.Dir+"\n"), 0o644))
	return errors.Join(errs...)
}

// releaseHostDirs unregisters cfg's cluster and, if no other cluster is up,
// removes the mount points any Up created (only those still empty). A
// registration whose cluster directory is gone is stale (its Down did not
// finish) and is dropped.
func releaseHostDirs(cfg Config, legacy []string) error {
	unlock, err := hostRegistryLock()
	if err != nil {
		return err
	}
	defer unlock()
	clusters := filepath.Join(hostRegistryDir, "clusters")
	if err := os.Remove(filepath.Join(clusters, cfg.clusterKey())); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	entries, err := os.ReadDir(clusters)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(clusters, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if _, err := os.Stat(strings.TrimSpace(string(b))); err == nil {
			return nil // another cluster is up: its nodes still mount the directories
		}
		_ = os.Remove(p)
	}
	record := filepath.Join(hostRegistryDir, "created-dirs")
	b, err := os.ReadFile(record)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	dirs := append(strings.Fields(string(b)), legacy...)
	// Deepest first; Remove fails (and leaves it) on a non-empty directory.
	slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, d := range slices.Compact(dirs) {
		_ = os.Remove(d)
	}
	if err := os.Remove(record); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
