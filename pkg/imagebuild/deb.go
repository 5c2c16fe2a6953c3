package imagebuild

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Package is one Debian binary package at an exact version, as the local apt
// index describes it.
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Arch    string `json:"arch"`
	SHA256  string `json:"sha256"`
}

// FileName is the name apt-get download gives the package's .deb ("1:2.0"
// versions escape the colon as %3a); the debs cache stores it under it.
func (p Package) FileName() string {
	return fmt.Sprintf("%s_%s_%s.deb", p.Name, strings.ReplaceAll(p.Version, ":", "%3a"), p.Arch)
}

// Apt resolves and downloads Debian packages with the host's apt tools
// (apt-cache, apt-get download, dpkg-deb). Downloaded .debs are kept in
// CacheDir, named by exact version and checked against the index's SHA256.
type Apt struct {
	CacheDir string
}

func run(ctx context.Context, dir string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Closure returns the names of roots and everything they depend on
// (Depends and Pre-Depends, recursively; no Recommends), sorted. A name
// matching one of the exclude globs (path.Match syntax, e.g. "python3*") is
// left out together with whatever only it pulled in. In an alternative
// ("a | b") the first candidate that is not excluded is taken; a virtual
// package stands for its providers.
func (a *Apt) Closure(ctx context.Context, roots, exclude []string) ([]string, error) {
	excluded := func(n string) bool {
		for _, g := range exclude {
			if ok, _ := path.Match(g, n); ok {
				return true
			}
		}
		return false
	}
	// One apt-cache run for the whole graph (each run costs most of a
	// second), then a walk that prunes excluded packages.
	args := append([]string{"depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
		"--no-breaks", "--no-replaces", "--no-enhances"}, roots...)
	out, err := run(ctx, "", "apt-cache", args...)
	if err != nil {
		return nil, fmt.Errorf("imagebuild: dependency closure: %w", err)
	}
	graph := parseDepends(out)
	seen := map[string]bool{}
	var walk func(n string) error
	walk = func(n string) error {
		if seen[n] {
			return nil
		}
		seen[n] = true
		groups, ok := graph[n]
		if !ok {
			return fmt.Errorf("imagebuild: apt-cache knows no package %s", n)
		}
		for _, group := range groups {
			for _, cand := range group {
				if excluded(cand) {
					continue
				}
				if err := walk(cand); err != nil {
					return err
				}
				break
			}
		}
		return nil
	}
	for _, r := range roots {
		if err := walk(r); err != nil {
			return nil, err
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// parseDepends reads `apt-cache depends` output and returns each listed
// package's dependency groups: a group lists the candidates that satisfy one
// dependency, in preference order (alternatives joined by "|", virtual
// packages replaced by their providers).
func parseDepends(out []byte) map[string][][]string {
	graph := map[string][][]string{}
	pkg := ""
	var cur []string
	continuing, virtual := false, false
	finish := func() {
		if len(cur) > 0 {
			graph[pkg] = append(graph[pkg], cur)
		}
		cur, continuing, virtual = nil, false, false
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !strings.HasPrefix(line, " "): // a package header
			finish()
			pkg = stripArch(strings.TrimSpace(line))
			if _, ok := graph[pkg]; !ok {
				graph[pkg] = nil
			}
		case strings.HasPrefix(line, "    "): // a provider of the virtual package above
			if virtual {
				cur = append(cur, stripArch(strings.TrimSpace(line)))
			}
		default:
			alt := strings.HasPrefix(line, " |")
			if !continuing {
				finish()
			}
			kind, dep, ok := strings.Cut(strings.TrimSpace(strings.TrimPrefix(line, " |")), ": ")
			if !ok || (kind != "Depends" && kind != "PreDepends") {
				finish()
				continue
			}
			virtual = strings.HasPrefix(dep, "<")
			if !virtual {
				cur = append(cur, stripArch(dep))
			}
			continuing = alt
		}
	}
	finish()
	return graph
}

func stripArch(n string) string {
	n, _, _ = strings.Cut(n, ":")
	return n
}

// Resolve looks up the candidate version of each named package in the local
// apt index (`apt-cache show --no-all-versions`).
func (a *Apt) Resolve(ctx context.Context, names []string) ([]Package, error) {
	out, err := run(ctx, "", "apt-cache", append([]string{"show", "--no-all-versions"}, names...)...)
	if err != nil {
		return nil, fmt.Errorf("imagebuild: resolving package versions: %w", err)
	}
	byName := map[string]Package{}
	for _, stanza := range strings.Split(string(out), "\n\n") {
		var p Package
		for _, line := range strings.Split(stanza, "\n") {
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				continue
			}
			switch k {
			case "Package":
				p.Name = v
			case "Version":
				p.Version = v
			case "Architecture":
				p.Arch = v
			case "SHA256":
				p.SHA256 = v
			}
		}
		if p.Name != "" {
			byName[p.Name] = p
		}
	}
	pkgs := make([]Package, 0, len(names))
	for _, n := range names {
		p, ok := byName[n]
		if !ok || p.Version == "" || p.SHA256 == "" {
			return nil, fmt.Errorf("imagebuild: package %s has no installable candidate in the apt index", n)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

// Fetch makes sure every package's .deb is in the cache (downloading the
// missing ones with one `apt-get download name=version ...`) and returns
// their paths in the order of pkgs.
func (a *Apt) Fetch(ctx context.Context, pkgs []Package) ([]string, error) {
	if err := os.MkdirAll(a.CacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("imagebuild: creating the debs cache: %w", err)
	}
	paths := make([]string, len(pkgs))
	var missing []Package
	for i, p := range pkgs {
		paths[i] = filepath.Join(a.CacheDir, p.FileName())
		if err := checkSHA256(paths[i], p.SHA256); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return paths, nil
	}
	tmp, err := os.MkdirTemp(a.CacheDir, ".download-")
	if err != nil {
		return nil, fmt.Errorf("imagebuild: creating a download directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	args := []string{"download", "-q"}
	for _, p := range missing {
		args = append(args, p.Name+"="+p.Version)
	}
	if _, err := run(ctx, tmp, "apt-get", args...); err != nil {
		return nil, fmt.Errorf("imagebuild: downloading packages: %w", err)
	}
	for _, p := range missing {
		got, err := filepath.Glob(filepath.Join(tmp, p.Name+"_*.deb"))
		if err != nil || len(got) != 1 {
			return nil, fmt.Errorf("imagebuild: apt-get download left %d files for %s", len(got), p.Name)
		}
		if err := checkSHA256(got[0], p.SHA256); err != nil {
			return nil, fmt.Errorf("imagebuild: downloaded %s: %w", p.Name, err)
		}
		if err := os.Rename(got[0], filepath.Join(a.CacheDir, p.FileName())); err != nil {
			return nil, fmt.Errorf("imagebuild: storing %s in the debs cache: %w", p.Name, err)
		}
	}
	return paths, nil
}

func checkSHA256(file, want string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("hashing %s: %w", file, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s has sha256 %s, want %s", file, got, want)
	}
	return nil
}

// ExtractDeb unpacks the file system part of a .deb (`dpkg-deb
// --fsys-tarfile`) into t; keep filters paths as in Tree.AddTar.
func ExtractDeb(ctx context.Context, deb string, t *Tree, keep func(p string) bool) error {
	out, err := run(ctx, "", "dpkg-deb", "--fsys-tarfile", deb)
	if err != nil {
		return fmt.Errorf("imagebuild: unpacking %s: %w", filepath.Base(deb), err)
	}
	if err := t.AddTar(bytes.NewReader(out), keep); err != nil {
		return fmt.Errorf("imagebuild: unpacking %s: %w", filepath.Base(deb), err)
	}
	return nil
}
