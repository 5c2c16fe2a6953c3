// Package imagebuild assembles container images without a container engine:
// an in-memory root filesystem (Tree) filled from files, Debian packages and
// static busybox, written as a single reproducible layer into a
// docker-archive tarball with go-containerregistry. The tarballs load with
// `ctr -n k8s.io images import` and `docker load`.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Epoch is the modification time written into every tar header, so the same
// inputs always produce the same layer digest.
var epoch = time.Unix(0, 0).UTC()

// usrMerged lists the top-level directories that Debian bookworm makes
// symlinks into /usr. Package contents under them are stored under /usr.
var usrMerged = []string{"bin", "sbin", "lib", "lib64"}

// Tree is an in-memory root filesystem. Paths are slash separated and
// relative to the root ("usr/bin/sh"); leading slashes are accepted. Later
// writes to a path replace earlier ones, except that a directory keeps its
// first mode. A Tree is not safe for concurrent use.
type Tree struct {
	entries map[string]*entry
	// usrMerge maps /bin, /lib, ... to /usr/bin, /usr/lib, ... and adds the
	// compatibility symlinks, like a usrmerged Debian system.
	usrMerge bool
}

type entry struct {
	typ    byte // tar.TypeDir, tar.TypeReg or tar.TypeSymlink
	mode   int64
	data   []byte
	target string
}

// NewTree returns an empty tree. With usrMerge, /bin, /sbin and /lib* are
// symlinks into /usr and everything added below them is stored under /usr.
func NewTree(usrMerge bool) *Tree {
	t := &Tree{entries: map[string]*entry{}, usrMerge: usrMerge}
	if usrMerge {
		for _, d := range usrMerged {
			t.entries[d] = &entry{typ: tar.TypeSymlink, mode: 0o777, target: "usr/" + d}
			t.Dir("usr/"+d, 0o755)
		}
	}
	return t
}

// Clean returns p in the tree's canonical form: relative, cleaned, and with
// usrmerged directories mapped into /usr. It returns "" for the root.
func (t *Tree) Clean(p string) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if t.usrMerge {
		first, _, _ := strings.Cut(p, "/")
		for _, d := range usrMerged {
			if first == d {
				return "usr/" + p
			}
		}
	}
	return p
}

// Dir adds a directory (and its missing parents, mode 0755).
func (t *Tree) Dir(p string, mode int64) {
	p = t.Clean(p)
	if p == "" {
		return
	}
	t.parents(p)
	if e, ok := t.entries[p]; ok && e.typ == tar.TypeDir {
		return
	}
	t.entries[p] = &entry{typ: tar.TypeDir, mode: mode}
}

// File adds a regular file with the given permission bits.
func (t *Tree) File(p string, mode int64, data []byte) {
	p = t.Clean(p)
	t.parents(p)
	t.entries[p] = &entry{typ: tar.TypeReg, mode: mode, data: data}
}

// Symlink adds a symbolic link at p pointing to target (used verbatim).
func (t *Tree) Symlink(p, target string) {
	p = t.Clean(p)
	t.parents(p)
	t.entries[p] = &entry{typ: tar.TypeSymlink, mode: 0o777, target: target}
}

// Has reports whether the tree holds an entry at p.
func (t *Tree) Has(p string) bool {
	_, ok := t.entries[t.Clean(p)]
	return ok
}

// Read returns the content of the regular file at p.
func (t *Tree) Read(p string) ([]byte, bool) {
	e, ok := t.entries[t.Clean(p)]
	if !ok || e.typ != tar.TypeReg {
		return nil, false
	}
	return e.data, true
}

// Paths returns every path in the tree, sorted.
func (t *Tree) Paths() []string {
	ps := make([]string, 0, len(t.entries))
	for p := range t.entries {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

func (t *Tree) parents(p string) {
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := t.entries[d]; ok {
			continue
		}
		t.entries[d] = &entry{typ: tar.TypeDir, mode: 0o755}
	}
}

// AddTar copies the entries of an uncompressed tar stream (for example the
// data part of a .deb) into the tree. keep, if not nil, decides per cleaned
// path whether to copy an entry. Hard links become copies of their target,
// so the layer never depends on entry order. Devices and FIFOs are skipped.
func (t *Tree) AddTar(r io.Reader, keep func(p string) bool) error {
	tr := tar.NewReader(r)
	type link struct{ name, target string }
	var links []link
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("imagebuild: reading tar: %w", err)
		}
		p := t.Clean(hdr.Name)
		if p == "" || (keep != nil && !keep(p)) {
			continue
		}
		mode := hdr.Mode & 0o7777
		switch hdr.Typeflag {
		case tar.TypeDir:
			t.Dir(p, mode)
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				return fmt.Errorf("imagebuild: reading %s from tar: %w", hdr.Name, err)
			}
			t.File(p, mode, data)
		case tar.TypeSymlink:
			t.Symlink(p, hdr.Linkname)
		case tar.TypeLink:
			links = append(links, link{p, t.Clean(hdr.Linkname)})
		}
	}
	for _, l := range links {
		data, ok := t.Read(l.target)
		if !ok {
			return fmt.Errorf("imagebuild: hard link %s points to %s, which is not a regular file in the tree", l.name, l.target)
		}
		t.File(l.name, t.entries[l.target].mode, data)
	}
	return nil
}

// TarBytes renders the tree as an uncompressed tar: entries sorted by path,
// owner root, fixed modification times.
func (t *Tree) TarBytes() ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range t.Paths() {
		e := t.entries[p]
		hdr := &tar.Header{
			Typeflag: e.typ,
			Name:     p,
			Mode:     e.mode,
			ModTime:  epoch,
		}
		switch e.typ {
		case tar.TypeDir:
			hdr.Name += "/"
		case tar.TypeReg:
			hdr.Size = int64(len(e.data))
		case tar.TypeSymlink:
			hdr.Linkname = e.target
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("imagebuild: writing tar header for %s: %w", p, err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				return nil, fmt.Errorf("imagebuild: writing %s into tar: %w", p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("imagebuild: closing tar: %w", err)
	}
	return buf.Bytes(), nil
}

// Layer renders the tree as an image layer.
func (t *Tree) Layer() (v1.Layer, error) {
	data, err := t.TarBytes()
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("imagebuild: creating layer: %w", err)
	}
	return layer, nil
}
