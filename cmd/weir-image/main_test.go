package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/weirnet/weir/pkg/imagebuild"
	"github.com/weirnet/weir/test/testroot"
)

// The images are built once per test run (a few seconds with a warm debs
// cache) and shared by the tests.
var shared struct {
	once           sync.Once
	binDir, outDir string
	out            string
	took           time.Duration
	err            error
	cleanup        func()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.cleanup != nil {
		shared.cleanup()
	}
	os.Exit(code)
}

func debsCache() string {
	if d := os.Getenv("WEIR_DEBS_CACHE"); d != "" {
		return d
	}
	return "/var/cache/weir/debs"
}

// moduleRoot is the repository root (this package is cmd/weir-image).
func moduleRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(filepath.Dir(wd))
}

// runBuild runs `weir-image build args...` with the binary built by
// builtImages (not in this race-instrumented test process, where hashing
// and compressing are many times slower). It returns stdout; on failure the
// error includes stderr.
func runBuild(ctx context.Context, args ...string) (string, error) {
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(shared.binDir, "weir-image"), append([]string{"build"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("weir-image build %s: %w: %s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), nil
}

// builtImages builds the static binaries and all four images once.
func builtImages(t *testing.T) (binDir, outDir string) {
	t.Helper()
	testroot.Require(t, "chroot, apt-get download into the debs cache")
	root := moduleRoot(t)
	shared.once.Do(func() {
		tmp, err := os.MkdirTemp("", "weir-image-test-")
		if err != nil {
			shared.err = err
			return
		}
		shared.cleanup = func() { os.RemoveAll(tmp) }
		shared.binDir, shared.outDir = filepath.Join(tmp, "bin"), filepath.Join(tmp, "images")
		builds := [][]string{
			{"-o", shared.binDir + "/", "./cmd/ovs-agent", "./cmd/test-server", "./cmd/pause", "./cmd/weir-image"},
			{"-o", filepath.Join(shared.binDir, "weir"), "./cmd/cni-client"},
			{"-o", filepath.Join(shared.binDir, "cni-plugins", "portmap"), "github.com/containernetworking/plugins/plugins/meta/portmap"},
		}
		for _, b := range builds {
			cmd := exec.Command("go", append([]string{"build"}, b...)...)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				shared.err = fmt.Errorf("go build %v: %v: %s", b, err, out)
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		start := time.Now()
		shared.out, shared.err = runBuild(ctx, "--bin-dir", shared.binDir, "--out-dir", shared.outDir, "--debs-cache", debsCache())
		shared.took = time.Since(start)
	})
	if shared.err != nil {
		t.Fatalf("building the images: %v", shared.err)
	}
	return shared.binDir, shared.outDir
}

func openImage(t *testing.T, path, ref string) v1.Image {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(path, &tag)
	if err != nil {
		t.Fatalf("opening %s as %s: %v", path, ref, err)
	}
	return img
}

// extract unpacks the image's file system (its one layer, checked) into a
// new temporary directory.
func extract(t *testing.T, img v1.Image) string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("image has %d layers (%v), want 1", len(layers), err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	dir := t.TempDir()
	cmd := exec.Command("tar", "-x", "-z", "-p", "-C", dir)
	cmd.Stdin = rc
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("extracting the image: %v: %s", err, out)
	}
	return dir
}

func TestImages(t *testing.T) {
	binDir, outDir := builtImages(t)
	t.Logf("first build in %v:\n%s", shared.took, shared.out)

	tests := []struct {
		file, ref  string
		entrypoint []string
		// files must be regular files with these modes; links must be
		// symlinks with these targets.
		files map[string]os.FileMode
		links map[string]string
		// same compares image files with binaries from --bin-dir.
		same map[string]string
	}{
		{
			file: "weir-agent.tar", ref: "weir-agent:dev", entrypoint: []string{"/usr/local/bin/ovs-agent"},
			files: map[string]os.FileMode{"/usr/local/bin/ovs-agent": 0o755, "/opt/weir/bin/weir": 0o755, "/opt/weir/bin/portmap": 0o755,
				"/usr/local/bin/install-cni": 0o755, "/usr/bin/busybox": 0o755, "/usr/sbin/nft": 0o755, "/etc/passwd": 0o644},
			links: map[string]string{"/bin": "usr/bin", "/usr/bin/sh": "/usr/bin/busybox"},
			same: map[string]string{"/usr/local/bin/ovs-agent": "ovs-agent", "/opt/weir/bin/weir": "weir",
				"/opt/weir/bin/portmap": "cni-plugins/portmap"},
		},
		{
			file: "weir-ovs.tar", ref: "weir-ovs:dev", entrypoint: []string{"/usr/local/bin/start-ovs.sh"},
			files: map[string]os.FileMode{"/usr/local/bin/start-ovs.sh": 0o755, "/usr/local/bin/ovs-healthy.sh": 0o755,
				"/usr/sbin/ovsdb-server": 0o755, "/usr/lib/openvswitch-switch/ovs-vswitchd": 0o755,
				"/usr/bin/ovs-vsctl": 0o755, "/usr/bin/ovs-appctl": 0o755, "/usr/bin/ovsdb-tool": 0o755,
				"/usr/share/openvswitch/vswitch.ovsschema": 0o644, "/usr/lib/x86_64-linux-gnu/libc.so.6": 0o755},
			links: map[string]string{"/usr/sbin/ovs-vswitchd": "/usr/lib/openvswitch-switch/ovs-vswitchd", "/lib64": "usr/lib64"},
		},
		{
			file: "weir-test-server.tar", ref: "weir-test-server:dev", entrypoint: []string{"/test-server", "serve"},
			files: map[string]os.FileMode{"/test-server": 0o755},
			same:  map[string]string{"/test-server": "test-server"},
		},
		{
			file: "pause.tar", ref: "registry.k8s.io/pause:3.10", entrypoint: []string{"/pause"},
			files: map[string]os.FileMode{"/pause": 0o755},
			same:  map[string]string{"/pause": "pause"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.ref, func(t *testing.T) {
			img := openImage(t, filepath.Join(outDir, tc.file), tc.ref)
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.OS != "linux" || cf.Architecture != "amd64" {
				t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
			}
			if !slices.Equal(cf.Config.Entrypoint, tc.entrypoint) {
				t.Errorf("entrypoint %q, want %q", cf.Config.Entrypoint, tc.entrypoint)
			}
			if !slices.Equal(cf.Config.Env, []string{imagebuild.DefaultPath}) {
				t.Errorf("env %q", cf.Config.Env)
			}
			if cf.Config.Labels["org.opencontainers.image.source"] == "" {
				t.Errorf("labels %v lack the source", cf.Config.Labels)
			}
			root := extract(t, img)
			for f, mode := range tc.files {
				st, err := os.Stat(filepath.Join(root, f))
				if err != nil {
					t.Errorf("%s: %v", f, err)
					continue
				}
				if !st.Mode().IsRegular() || st.Mode().Perm() != mode {
					t.Errorf("%s: mode %v, want a regular file %v", f, st.Mode(), mode)
				}
			}
			for l, target := range tc.links {
				if got, err := os.Readlink(filepath.Join(root, l)); err != nil || got != target {
					t.Errorf("%s -> %q (%v), want -> %q", l, got, err, target)
				}
			}
			for f, bin := range tc.same {
				a, errA := os.ReadFile(filepath.Join(root, f))
				b, errB := os.ReadFile(filepath.Join(binDir, bin))
				if errA != nil || errB != nil || !bytes.Equal(a, b) {
					t.Errorf("%s differs from %s (%v, %v)", f, bin, errA, errB)
				}
			}
		})
	}
}

// chrootRun runs argv inside root with chroot(8) and returns its combined
// output.
func chrootRun(t *testing.T, root string, env []string, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chroot", append([]string{root}, argv...)...)
	cmd.Env = append([]string{imagebuild.DefaultPath}, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestOVSImageRuns runs the Open vSwitch programs from the unpacked image,
// proving that their shared-library closure is complete.
func TestOVSImageRuns(t *testing.T) {
	_, outDir := builtImages(t)
	root := extract(t, openImage(t, filepath.Join(outDir, "weir-ovs.tar"), "weir-ovs:dev"))
	tests := []struct {
		argv []string
		want string
	}{
		{[]string{"/usr/sbin/ovs-vswitchd", "--version"}, "ovs-vswitchd (Open vSwitch) 3."},
		{[]string{"/usr/sbin/ovsdb-server", "--version"}, "ovsdb-server (Open vSwitch) 3."},
		{[]string{"/usr/bin/ovs-vsctl", "--version"}, "ovs-vsctl (Open vSwitch) 3."},
		{[]string{"/usr/bin/ovs-appctl", "--version"}, "ovs-appctl (Open vSwitch) 3."},
		{[]string{"/usr/bin/ovs-ofctl", "--version"}, "ovs-ofctl (Open vSwitch) 3."},
		{[]string{"/usr/bin/ovsdb-tool", "--version"}, "ovsdb-tool (Open vSwitch) 3."},
		{[]string{"/bin/sh", "-c", "true && echo shell-ok"}, "shell-ok"},
	}
	for _, tc := range tests {
		t.Run(filepath.Base(tc.argv[0]), func(t *testing.T) {
			out, err := chrootRun(t, root, nil, tc.argv...)
			if err != nil || !strings.Contains(out, tc.want) {
				t.Errorf("%v: %v, output %q, want it to contain %q", tc.argv, err, out, tc.want)
			}
		})
	}
}

// ovsLifecycle is run by unshare(1) in new mount, network and PID
// namespaces: it starts the image's entrypoint in a chroot, waits for the
// liveness script to succeed, uses the database, and stops it with SIGTERM.
const ovsLifecycle = `set -eu
R="$1"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/var/run"
chroot "$R" /usr/local/bin/start-ovs.sh >"$2" 2>&1 &
pid=$!
ok=0
for i in $(seq 100); do
	if chroot "$R" /usr/local/bin/ovs-healthy.sh 2>/dev/null; then ok=1; break; fi
	sleep 0.1
done
[ "$ok" = 1 ] || { echo "never healthy"; kill -KILL $pid; exit 1; }
echo "restore-wait=$(chroot "$R" ovs-vsctl get Open_vSwitch . other_config:flow-restore-wait)"
chroot "$R" ovs-vsctl add-br br-test -- set bridge br-test datapath_type=netdev
echo "bridges=$(chroot "$R" ovs-vsctl list-br)"
kill -TERM $pid
rc=0
wait $pid || rc=$?
echo "exit=$rc"
if chroot "$R" /usr/local/bin/ovs-healthy.sh 2>/dev/null; then echo "still healthy after stop"; fi
`

// TestOVSStartScript runs start-ovs.sh and ovs-healthy.sh from the image for
// real (private namespaces, userspace datapath).
func TestOVSStartScript(t *testing.T) {
	_, outDir := builtImages(t)
	root := extract(t, openImage(t, filepath.Join(outDir, "weir-ovs.tar"), "weir-ovs:dev"))
	logFile := filepath.Join(t.TempDir(), "ovs.log")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--net", "--pid", "--fork", "--propagation", "private",
		"sh", "-c", ovsLifecycle, "sh", root, logFile)
	out, err := cmd.CombinedOutput()
	logs, _ := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("lifecycle: %v\n%s\nstart-ovs.sh output:\n%s", err, out, logs)
	}
	for _, want := range []string{`restore-wait="true"`, "bridges=br-test", "exit=0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("lifecycle output lacks %q:\n%s\nstart-ovs.sh output:\n%s", want, out, logs)
		}
	}
	if strings.Contains(string(out), "still healthy") {
		t.Errorf("ovs-healthy.sh succeeds after the daemons stopped:\n%s", out)
	}
	for _, want := range []string{"start-ovs: creating /etc/openvswitch/conf.db", "start-ovs: stopping ovs-vswitchd", "start-ovs: stopped"} {
		if !strings.Contains(string(logs), want) {
			t.Errorf("start-ovs.sh output lacks %q:\n%s", want, logs)
		}
	}
}

// TestAgentImage runs install-cni with the image's busybox against a fake
// host directory, and the agent's binaries from the unpacked image.
func TestAgentImage(t *testing.T) {
	binDir, outDir := builtImages(t)
	root := extract(t, openImage(t, filepath.Join(outDir, "weir-agent.tar"), "weir-agent:dev"))
	conflist := `{"cniVersion":"1.0.0","name":"weir","plugins":[{"type":"weir"}]}` + "\n"
	if err := os.MkdirAll(filepath.Join(root, "etc/weir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/weir/weir.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	// An old binary in place must be replaced, not written into.
	oldBin := filepath.Join(root, "host/opt/cni/bin/weir")
	if err := os.MkdirAll(filepath.Dir(oldBin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(oldBin, []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
	oldFile, err := os.Open(oldBin)
	if err != nil {
		t.Fatal(err)
	}
	defer oldFile.Close()

	tests := []struct {
		name    string
		env     []string
		wantErr string
	}{
		{name: "install", env: nil},
		{name: "again (idempotent)", env: nil},
		{name: "missing conflist", env: []string{"CNI_CONFLIST_FILE=/etc/weir/none"}, wantErr: "missing or empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := chrootRun(t, root, tc.env, "/usr/local/bin/install-cni")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(out, tc.wantErr) {
					t.Fatalf("install-cni: %v, output %q, want failure with %q", err, out, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("install-cni: %v: %s", err, out)
			}
			got, err := os.ReadFile(oldBin)
			want, _ := os.ReadFile(filepath.Join(binDir, "weir"))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("host /opt/cni/bin/weir is not the weir binary (%v)", err)
			}
			if st, err := os.Stat(oldBin); err != nil || st.Mode().Perm() != 0o755 {
				t.Errorf("host weir binary: %v %v", st, err)
			}
			gotPM, err := os.ReadFile(filepath.Join(root, "host/opt/cni/bin/portmap"))
			wantPM, _ := os.ReadFile(filepath.Join(binDir, "cni-plugins", "portmap"))
			if err != nil || len(wantPM) == 0 || !bytes.Equal(gotPM, wantPM) {
				t.Errorf("host /opt/cni/bin/portmap is not the portmap plugin (%v)", err)
			}
			gotConf, err := os.ReadFile(filepath.Join(root, "host/etc/cni/net.d/10-weir.conflist"))
			if err != nil || string(gotConf) != conflist {
				t.Errorf("host conflist %q (%v), want %q", gotConf, err, conflist)
			}
			for d, want := range map[string]int{"host/opt/cni/bin": 2, "host/etc/cni/net.d": 1} {
				entries, _ := os.ReadDir(filepath.Join(root, d))
				if len(entries) != want {
					t.Errorf("%s holds %d entries (temporary files left?)", d, len(entries))
				}
			}
		})
	}
	// The file opened before the install still has the old content: the
	// binary was replaced by rename.
	b, err := io.ReadAll(oldFile)
	if err != nil || string(b) != "old" {
		t.Errorf("the old binary was overwritten in place: %q %v", b, err)
	}

	progs := []struct {
		argv []string
		want string
	}{
		{[]string{"/usr/sbin/nft", "--version"}, "nftables v1."},
		{[]string{"/usr/local/bin/ovs-agent", "--help"}, "ovs-agent"},
		{[]string{"/bin/sh", "-c", "ls /opt/weir/bin"}, "weir"},
	}
	for _, p := range progs {
		out, err := chrootRun(t, root, nil, p.argv...)
		if err != nil || !strings.Contains(out, p.want) {
			t.Errorf("%v: %v, output %q, want %q", p.argv, err, out, p.want)
		}
	}
}

// TestPauseImage runs /pause from the image and stops it.
func TestPauseImage(t *testing.T) {
	_, outDir := builtImages(t)
	root := extract(t, openImage(t, filepath.Join(outDir, "pause.tar"), "registry.k8s.io/pause:3.10"))
	cmd := exec.Command("chroot", root, "/pause")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("pause exited early: %v", err)
	default:
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("pause: %v, want exit 0", err)
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("pause ignored SIGINT")
	}
}

// TestRebuild checks that a second build skips unchanged images, that a
// changed input rebuilds exactly that image, and that rebuilding gives the
// same digest (reproducible).
func TestRebuild(t *testing.T) {
	binDir, outDir := builtImages(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{"--bin-dir", binDir, "--out-dir", outDir, "--debs-cache", debsCache()}

	start := time.Now()
	out, err := runBuild(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cached build in %v:\n%s", time.Since(start), out)
	if n := strings.Count(out, "up to date"); n != 4 {
		t.Errorf("second build: %d images up to date, want 4:\n%s", n, out)
	}

	// Reproducible: a forced rebuild into another directory.
	other := t.TempDir()
	before := map[string]v1.Hash{}
	for _, img := range []string{"weir-ovs", "weir-test-server", "pause"} {
		d, err := imagebuild.Digest(filepath.Join(outDir, img+".tar"))
		if err != nil {
			t.Fatal(err)
		}
		before[img] = d
	}
	if _, err := runBuild(ctx, "--bin-dir", binDir, "--out-dir", other, "--debs-cache", debsCache(),
		"weir-ovs", "weir-test-server", "pause"); err != nil {
		t.Fatal(err)
	}
	for img, want := range before {
		got, err := imagebuild.Digest(filepath.Join(other, img+".tar"))
		if err != nil || got != want {
			t.Errorf("%s rebuilt with digest %v (%v), first build %v", img, got, err, want)
		}
	}

	// A changed binary rebuilds its image only.
	pause := filepath.Join(binDir, "pause")
	data, err := os.ReadFile(pause)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pause, append(data, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err = runBuild(ctx, append(args, "pause", "weir-test-server")...)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "built in") || !strings.Contains(lines[1], "up to date") {
		t.Errorf("after changing bin/pause: %q, want pause rebuilt and weir-test-server up to date", lines)
	}
	if err := os.WriteFile(pause, data, 0o755); err != nil {
		t.Fatal(err)
	}

	// Dynamic binaries are refused.
	dyn := t.TempDir()
	for _, f := range []string{"test-server"} {
		b, err := os.ReadFile("/bin/true")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dyn, f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, err = runBuild(ctx, "--bin-dir", dyn, "--out-dir", t.TempDir(), "weir-test-server")
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("building with a dynamic binary: %v, want a 'dynamically linked' error", err)
	}
	if _, err := runBuild(ctx, "no-such-image"); err == nil || !strings.Contains(err.Error(), "unknown image") {
		t.Errorf("unknown image: %v", err)
	}
}
