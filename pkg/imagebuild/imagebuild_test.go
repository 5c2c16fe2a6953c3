package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// debsCache is the shared .deb cache of the integration tests (the same as
// weir-image's default), so packages are downloaded once per machine.
func debsCache() string {
	if d := os.Getenv("WEIR_DEBS_CACHE"); d != "" {
		return d
	}
	return "/var/cache/weir/debs"
}

func readTar(t *testing.T, data []byte) []*tar.Header {
	t.Helper()
	var hdrs []*tar.Header
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return hdrs
		}
		if err != nil {
			t.Fatal(err)
		}
		hdrs = append(hdrs, h)
	}
}

func TestTreeLayout(t *testing.T) {
	build := func() *Tree {
		tr := NewTree(true)
		// Added out of order, through usrmerged paths.
		tr.File("/sbin/z", 0o755, []byte("z"))
		tr.File("/bin/a", 0o755, []byte("a"))
		tr.Symlink("/lib64/ld.so", "/lib/x86_64-linux-gnu/ld.so")
		tr.Dir("/tmp", 0o1777)
		tr.File("/opt/x/y", 0o644, []byte("y"))
		return tr
	}
	a, err := build().TarBytes()
	if err != nil {
		t.Fatal(err)
	}
	b, err := build().TarBytes()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("the same tree rendered two different tars")
	}
	var names []string
	for _, h := range readTar(t, a) {
		names = append(names, h.Name)
		if !h.ModTime.Equal(time.Unix(0, 0)) || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: mtime %v uid %d gid %d, want epoch and root", h.Name, h.ModTime, h.Uid, h.Gid)
		}
		if h.Name == "tmp/" && h.Mode != 0o1777 {
			t.Errorf("tmp mode %o, want 1777", h.Mode)
		}
		if h.Name == "bin" && (h.Typeflag != tar.TypeSymlink || h.Linkname != "usr/bin") {
			t.Errorf("bin is %c -> %q, want a symlink to usr/bin", h.Typeflag, h.Linkname)
		}
	}
	want := []string{"bin", "lib", "lib64", "opt/", "opt/x/", "opt/x/y", "sbin", "tmp/",
		"usr/", "usr/bin/", "usr/bin/a", "usr/lib/", "usr/lib64/", "usr/lib64/ld.so", "usr/sbin/", "usr/sbin/z"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("tar entries\n %q\nwant\n %q", names, want)
	}
}

func TestAddTar(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "./lib/", Mode: 0o755},
		// A hard link before its target is listed in sorted order.
		{Typeflag: tar.TypeLink, Name: "./lib/a-link", Linkname: "./usr/lib/zz-target"},
		{Typeflag: tar.TypeReg, Name: "./usr/lib/zz-target", Mode: 0o640, Size: 4},
		{Typeflag: tar.TypeSymlink, Name: "./usr/lib/sym", Linkname: "zz-target"},
		{Typeflag: tar.TypeReg, Name: "./usr/share/doc/p/changelog", Mode: 0o644, Size: 0},
		{Typeflag: tar.TypeFifo, Name: "./fifo"},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("data"))
		}
	}
	tw.Close()
	tr := NewTree(true)
	if err := tr.AddTar(&buf, func(p string) bool { return !strings.HasPrefix(p, "usr/share/doc/") }); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path     string
		want     string // content; "" for no regular file
		wantPath bool
	}{
		{"/lib/a-link", "data", true},
		{"/usr/lib/a-link", "data", true},
		{"/usr/lib/zz-target", "data", true},
		{"/usr/lib/sym", "", true},
		{"/usr/share/doc/p/changelog", "", false},
		{"/fifo", "", false},
	}
	for _, tc := range tests {
		got, ok := tr.Read(tc.path)
		if tc.want != "" && (!ok || string(got) != tc.want) {
			t.Errorf("%s: content %q (%v), want %q", tc.path, got, ok, tc.want)
		}
		if tr.Has(tc.path) != tc.wantPath {
			t.Errorf("Has(%s) = %v, want %v", tc.path, !tc.wantPath, tc.wantPath)
		}
	}
	if r := tr.resolve("/lib/sym"); r != "usr/lib/zz-target" {
		t.Errorf("resolve(/lib/sym) = %q, want usr/lib/zz-target", r)
	}
}

func TestParseDepends(t *testing.T) {
	out := `openvswitch-switch
  PreDepends: init-system-helpers
 |Depends: kmod
  Depends: <module-init-tools>
  Depends: netbase
  Depends: <python3:any>
    python3
  Depends: libc6
  Breaks: openvswitch-common
  Replaces: openvswitch-common
libfoo
 |Depends: <virt>
    prov-a
    prov-b
  Depends: plain:any
  Recommends: ignored
libbar
`
	want := map[string][][]string{
		"openvswitch-switch": {
			{"init-system-helpers"},
			{"kmod"},
			{"netbase"},
			{"python3"},
			{"libc6"},
		},
		"libfoo": {{"prov-a", "prov-b", "plain"}},
		"libbar": nil,
	}
	if got := parseDepends([]byte(out)); !reflect.DeepEqual(got, want) {
		t.Errorf("parseDepends =\n %q\nwant\n %q", got, want)
	}
}

func TestCheckStatic(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	static := filepath.Join(dir, "static")
	cmd := exec.Command("go", "build", "-o", static, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	tests := []struct {
		name    string
		file    string
		wantErr string
	}{
		{"static Go binary", static, ""},
		{"dynamic C binary", "/bin/true", "dynamically linked"},
		{"not ELF", src, "not an ELF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			err = CheckStatic(data)
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("CheckStatic(%s) = %v, want error %q", tc.file, err, tc.wantErr)
			}
		})
	}
}

// TestAptAndBusybox resolves, downloads (into the shared cache) and unpacks
// real Debian packages: busybox-static with its applets, and a dynamically
// linked program whose library closure is checked.
func TestAptAndBusybox(t *testing.T) {
	if _, err := exec.LookPath("apt-cache"); err != nil {
		t.Skip("no apt on this machine")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	apt := &Apt{CacheDir: debsCache()}

	names, err := apt.Closure(ctx, []string{"openvswitch-common"}, []string{"python3*", "openssl"})
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{"openvswitch-common", "libc6", "libssl3", "libunbound8"} {
		if !slices.Contains(names, must) {
			t.Errorf("closure %v lacks %s", names, must)
		}
	}
	for _, n := range names {
		if strings.HasPrefix(n, "python3") || n == "openssl" {
			t.Errorf("closure contains excluded %s", n)
		}
	}

	pkgs, err := apt.Resolve(ctx, []string{"busybox-static"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 1 || pkgs[0].Version == "" || len(pkgs[0].SHA256) != 64 {
		t.Fatalf("Resolve = %+v", pkgs)
	}
	if _, err := apt.Resolve(ctx, []string{"no-such-package-weir"}); err == nil {
		t.Error("Resolve of a missing package succeeded")
	}
	paths, err := apt.Fetch(ctx, pkgs)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(paths[0]) != pkgs[0].FileName() {
		t.Errorf("cached as %s, want %s", paths[0], pkgs[0].FileName())
	}
	tr := NewTree(true)
	if err := ExtractDeb(ctx, paths[0], tr, nil); err != nil {
		t.Fatal(err)
	}
	if err := InstallBusyboxApplets(ctx, tr, "/bin/busybox"); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"/bin/sh", "/bin/cp", "/bin/mv", "/usr/bin/env"} {
		if got := tr.resolve(applet); got != "usr/bin/busybox" {
			t.Errorf("%s resolves to %q, want usr/bin/busybox", applet, got)
		}
	}
	if tr.Has("/linuxrc") {
		t.Error("linuxrc applet installed")
	}
	if missing := tr.MissingLibraries(); len(missing) != 0 {
		t.Errorf("static busybox needs libraries: %v", missing)
	}

	// A dynamic program without its libraries is reported.
	ls, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	tr.File("/usr/bin/true", 0o755, ls)
	missing := tr.MissingLibraries("/usr/bin/true")
	if !slices.Contains(missing, "usr/bin/true: libc.so.6") {
		t.Errorf("MissingLibraries = %v, want it to report libc.so.6", missing)
	}
}

func TestWriteArchive(t *testing.T) {
	dir := t.TempDir()
	tr := NewTree(false)
	tr.File("/hello", 0o755, []byte("#!/bin/sh\necho hi\n"))
	cfg := Config{
		Ref:        "example.test/hello:v1",
		Entrypoint: []string{"/hello"},
		Env:        []string{DefaultPath},
		Labels:     map[string]string{"a": "b"},
	}
	out1, out2 := filepath.Join(dir, "1.tar"), filepath.Join(dir, "2.tar")
	for _, out := range []string{out1, out2} {
		if err := WriteArchive(tr, cfg, out); err != nil {
			t.Fatal(err)
		}
	}
	d1, err := Digest(out1)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := Digest(out2)
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Errorf("same inputs, different digests %v and %v", d1, d2)
	}
	tag, err := name.NewTag(cfg.Ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out1, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "amd64" || cf.OS != "linux" || !slices.Equal(cf.Config.Entrypoint, cfg.Entrypoint) ||
		cf.Config.Labels["a"] != "b" || !slices.Equal(cf.Config.Env, cfg.Env) {
		t.Errorf("config %+v does not match %+v", cf, cfg)
	}

	hash, err := HashInputs(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if UpToDate(out1, hash) {
		t.Error("UpToDate before RecordInputs")
	}
	if err := RecordInputs(out1, hash); err != nil {
		t.Fatal(err)
	}
	if !UpToDate(out1, hash) || UpToDate(out1, hash[1:]+"0") || UpToDate(out2, hash) {
		t.Error("UpToDate does not match the recorded hash exactly")
	}
}
