package main

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as the pause command, so the signal
// tests run the real main without a separate build.
func TestMain(m *testing.M) {
	if os.Getenv("WEIR_PAUSE_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func TestSignals(t *testing.T) {
	tests := []struct {
		name string
		sig  syscall.Signal
	}{
		{"SIGTERM", syscall.SIGTERM},
		{"SIGINT", syscall.SIGINT},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "WEIR_PAUSE_MAIN=1")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			// It must still be running (sleeping) after a while ...
			select {
			case err := <-done:
				t.Fatalf("pause exited on its own: %v", err)
			case <-time.After(300 * time.Millisecond):
			}
			// ... and exit 0 on the signal.
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("pause exited with %v after %s, want status 0", err, tc.name)
				}
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("pause did not exit on %s", tc.name)
			}
		})
	}
}

// TestReap leaves exited children unwaited (zombies) and checks that reap
// collects all of them.
func TestReap(t *testing.T) {
	const n = 3
	var pids []int
	for range n {
		p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, p.Pid)
	}
	for _, pid := range pids {
		waitZombie(t, pid)
	}
	if got := reap(); got != n {
		t.Errorf("reap() collected %d children, want %d", got, n)
	}
	for _, pid := range pids {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("child %d still exists after reap (stat: %v)", pid, err)
		}
	}
	if got := reap(); got != 0 {
		t.Errorf("second reap() collected %d, want 0", got)
	}
}

// waitZombie waits until pid has exited and is a zombie.
func waitZombie(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			t.Fatalf("child %d: %v", pid, err)
		}
		// The state follows the parenthesised command name.
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && strings.HasPrefix(string(b[i+1:]), " Z") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("child %d did not exit", pid)
}
