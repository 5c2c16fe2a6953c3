package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// InstallBusyboxApplets adds a symlink to /bin/busybox for every applet of
// the static busybox at busyboxPath in t (`busybox --list-full`, run on this
// machine from a temporary copy). Paths that already exist are left alone,
// so real programs win over applets.
func InstallBusyboxApplets(ctx context.Context, t *Tree, busyboxPath string) error {
	data, ok := t.Read(busyboxPath)
	if !ok {
		return fmt.Errorf("imagebuild: %s is not a file in the image", busyboxPath)
	}
	dir, err := os.MkdirTemp("", "weir-busybox-")
	if err != nil {
		return fmt.Errorf("imagebuild: %w", err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "busybox")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		return fmt.Errorf("imagebuild: %w", err)
	}
	out, err := run(ctx, "", bin, "--list-full")
	if err != nil {
		return fmt.Errorf("imagebuild: listing busybox applets: %w", err)
	}
	target := "/" + t.Clean(busyboxPath)
	for _, applet := range strings.Fields(string(out)) {
		// linuxrc is for an initramfs, not a container.
		if t.Has(applet) || applet == "linuxrc" {
			continue
		}
		t.Symlink(applet, target)
	}
	return nil
}

// resolve follows symlinks inside the tree (at most 16 hops) and returns the
// canonical path of the final entry, or "" if it does not exist.
func (t *Tree) resolve(p string) string {
	p = t.Clean(p)
	for range 16 {
		e, ok := t.entries[p]
		if !ok {
			return ""
		}
		if e.typ != tar.TypeSymlink {
			return p
		}
		if strings.HasPrefix(e.target, "/") {
			p = t.Clean(e.target)
		} else {
			p = t.Clean(path.Join(path.Dir(p), e.target))
		}
	}
	return ""
}

// libDirs are the directories the dynamic loader searches on amd64 Debian.
var libDirs = []string{"usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/lib", "lib/x86_64-linux-gnu", "lib"}

// MissingLibraries returns, for each dynamically linked ELF file in t whose
// path starts with one of prefixes, the shared libraries (DT_NEEDED) and
// program interpreter it needs that the tree does not contain, as
// "file: lib" lines, sorted. An empty result means every such executable's
// library closure is complete.
func (t *Tree) MissingLibraries(prefixes ...string) []string {
	var missing []string
	for _, p := range t.Paths() {
		e := t.entries[p]
		if e.typ != tar.TypeReg || len(e.data) < 4 || !bytes.HasPrefix(e.data, []byte(elf.ELFMAG)) {
			continue
		}
		wanted := len(prefixes) == 0
		for _, pre := range prefixes {
			wanted = wanted || strings.HasPrefix(p, t.Clean(pre))
		}
		if !wanted {
			continue
		}
		f, err := elf.NewFile(bytes.NewReader(e.data))
		if err != nil {
			continue
		}
		needed, _ := f.ImportedLibraries()
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				interp := make([]byte, prog.Filesz)
				if _, err := prog.ReadAt(interp, 0); err == nil {
					if t.resolve(strings.TrimRight(string(interp), "\x00")) == "" {
						missing = append(missing, p+": "+strings.TrimRight(string(interp), "\x00"))
					}
				}
			}
		}
		f.Close()
		for _, lib := range needed {
			found := false
			for _, d := range libDirs {
				if t.resolve(path.Join(d, lib)) != "" {
					found = true
					break
				}
			}
			if !found {
				missing = append(missing, p+": "+lib)
			}
		}
	}
	sort.Strings(missing)
	return missing
}
