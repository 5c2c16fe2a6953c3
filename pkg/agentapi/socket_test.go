package agentapi_test

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/agentapi"
	"github.com/weirnet/weir/test/testroot"
)

// helperEnv makes the test binary act as a client that dials the socket
// in it and reports the outcome (see TestSocketHelper).
const helperEnv = "WEIR_AGENTAPI_DIAL"

// TestSocketHelper is not a test: run with helperEnv set (by
// TestUnixSocketPermissions, as another user) it dials the socket and
// prints "connected" or the error.
func TestSocketHelper(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process only")
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		os.Stdout.WriteString("dial error: " + err.Error() + "\n")
		return
	}
	c.Close()
	os.Stdout.WriteString("connected\n")
}

// TestUnixSocketPermissions checks that the API socket is mode 0600 and
// that a non-root user (nobody, uid 65534) cannot connect, while root can.
func TestUnixSocketPermissions(t *testing.T) {
	testroot.Require(t, "changes to user nobody to connect")
	// Not t.TempDir, whose parent is 0700: only the socket's own mode may
	// keep nobody out.
	dir, err := os.MkdirTemp("", "weir-agentapi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "weir", "agent.sock")
	ln, err := agentapi.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.Chmod(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want socket 0600", fi.Mode())
	}
	// The test binary, copied where nobody may run it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper.test")
	copyFile(t, self, bin)

	for _, tc := range []struct {
		name string
		cred *syscall.Credential
		want string
	}{
		{name: "root", want: "connected"},
		{name: "nobody", cred: &syscall.Credential{Uid: 65534, Gid: 65534}, want: "permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-test.run=^TestSocketHelper$", "-test.v")
			cmd.Env = append(os.Environ(), helperEnv+"="+sock)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: tc.cred}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helper: %v: %s", err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("helper as %s printed:\n%s\nwant %q", tc.name, out, tc.want)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
