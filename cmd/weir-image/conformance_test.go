package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/imagebuild"
)

// TestConformanceImages builds the upstream e2e test images and runs, in a
// chroot of each, the commands the e2e network tests run in them. The Go
// programs hack/e2e-build.sh compiles (agnhost, regression-issue-74839) are
// stood in for by Weir's test-server: what is tested here is the Debian
// part and the layout, not those programs.
func TestConformanceImages(t *testing.T) {
	binDir, _ := builtImages(t)
	stage := t.TempDir()
	for dst, src := range map[string]string{
		"agnhost": "test-server", "regression-issue-74839": "test-server", "coredns": "test-server", "pause": "pause",
	} {
		if err := os.Symlink(filepath.Join(binDir, src), filepath.Join(stage, dst)); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"localhost.crt", "localhost.key"} {
		if err := os.WriteFile(filepath.Join(stage, f), []byte("test "+f+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	outDir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var names []string
	for _, d := range conformanceImageDefs() {
		names = append(names, d.name)
	}
	if _, err := runBuild(ctx, append([]string{"--bin-dir", stage, "--out-dir", outDir, "--debs-cache", debsCache()}, names...)...); err != nil {
		t.Fatal(err)
	}
	// A plain build (no names) builds none of them.
	if defs, err := selectImages(nil); err != nil || len(defs) != len(imageDefs()) {
		t.Errorf("selectImages(nil) = %d images, %v; want only Weir's %d", len(defs), err, len(imageDefs()))
	}

	type check struct {
		argv []string
		want string
	}
	tests := []struct {
		image, ref string
		checks     []check
	}{
		{"e2e-agnhost", "registry.k8s.io/e2e-test-images/agnhost:2.66.1", []check{
			{[]string{"/agnhost-2", "--help"}, "serve"}, // the test-server stand-in's usage
			{[]string{"/coredns", "--help"}, "serve"},
			{[]string{"/bin/sh", "-c", "cat /localhost.crt"}, "test localhost.crt"},
			{[]string{"dig", "-v"}, "DiG 9."},
			{[]string{"getent", "passwd", "root"}, "root:x:0:0"},
			{[]string{"curl", "--version"}, "curl 7."},
			// As verifyServeHostnameServiceUp runs it; exit 4 is GNU wget's
			// "network failure" (busybox's wget crashes here, 139).
			{[]string{"/bin/sh", "-c", "wget -q -O - -T 1 http://127.0.0.1:1/; echo rc=$?"}, "rc=4"},
			// Through sh, as the tests run it (busybox's nc has no -u).
			{[]string{"/bin/sh", "-c", "nc -h 2>&1; true"}, "OpenBSD netcat"},
			{[]string{"/bin/sh", "-c", "ip -V"}, "iproute2"},
			{[]string{"ip", "-V"}, "iproute2"},
			{[]string{"ss", "-V"}, "iproute2"},
			{[]string{"/bin/sh", "-c", "iperf -v 2>&1; true"}, "iperf version 2."},
			{[]string{"socat", "-V"}, "socat version 1."},
			{[]string{"bash", "-c", "echo bash-ok"}, "bash-ok"},
			{[]string{"/bin/sh", "-c", "seq 1 2 | wc -l; sleep 0; test -d /tmp && echo sh-ok"}, "sh-ok"},
		}},
		{"e2e-busybox", "registry.k8s.io/e2e-test-images/busybox:1.37.0-2", []check{
			{[]string{"/bin/sh", "-c", "echo Pausing start. && sleep 0"}, "Pausing start."},
			{[]string{"nc", "--help"}, "nc"},
			{[]string{"wget", "--help"}, "wget"},
		}},
		{"e2e-glibc-dns-testing", "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1", []check{
			{[]string{"dig", "-v"}, "DiG 9."},
			{[]string{"getent", "passwd", "root"}, "root:x:0:0"},
			{[]string{"/bin/sh", "-c", "hostname --version 2>&1"}, "hostname "},
			{[]string{"/bin/sh", "-c", "for i in `seq 1 2`; do echo OK > /tmp/x; done; cat /tmp/x"}, "OK"},
		}},
		{"e2e-nginx", "registry.k8s.io/e2e-test-images/nginx:1.27.0-2", []check{
			{[]string{"/usr/sbin/nginx", "-t"}, "test is successful"},
		}},
		{"e2e-distroless-iptables", "registry.k8s.io/build-image/distroless-iptables:v0.9.9", []check{
			{[]string{"conntrack", "--version"}, "conntrack v1."},
			{[]string{"iptables", "--version"}, "nf_tables"},
			{[]string{"sleep", "0"}, ""},
		}},
		{"e2e-regression-issue-74839", "registry.k8s.io/e2e-test-images/regression-issue-74839:1.5", []check{
			{[]string{"/regression-issue-74839", "--help"}, "serve"},
		}},
		{"e2e-pause", "registry.k8s.io/pause:3.10.2", nil},
	}
	for _, tc := range tests {
		t.Run(tc.image, func(t *testing.T) {
			root := extract(t, openImage(t, filepath.Join(outDir, tc.image+".tar"), tc.ref))
			for _, c := range tc.checks {
				out, err := chrootProcRun(t, root, c.argv...)
				if err != nil || !strings.Contains(out, c.want) {
					t.Errorf("%v: %v, output %q, want it to contain %q", c.argv, err, out, c.want)
				}
			}
		})
	}
}

// chrootProcRun runs argv in a chroot of root with /proc and /dev mounted
// there (in a private mount namespace), as in a container: busybox's shell
// behaves differently without /proc (it cannot run its applets in place of
// PATH), its wget without /dev.
func chrootProcRun(t *testing.T, root string, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	script := `mkdir -p "$0/proc" "$0/dev" && mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" && exec chroot "$0" "$@"`
	cmd := exec.CommandContext(ctx, "unshare", append([]string{"--mount", "--propagation", "private", "--fork", "sh", "-c", script, root}, argv...)...)
	cmd.Env = []string{imagebuild.DefaultPath}
	out, err := cmd.CombinedOutput()
	return string(out), err
}
