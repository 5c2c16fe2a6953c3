package ovstest

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// termGrace is how long a daemon gets to exit after SIGTERM.
	termGrace = 5 * time.Second
	// killGrace is how long a daemon gets to disappear after SIGKILL.
	killGrace = 2 * time.Second
	// killTimeout is how long KillOVSDBServer waits for the daemon to exit.
	killTimeout = 10 * time.Second
)

// readPIDFile returns the PID stored in an OVS pidfile, or 0 if the file does
// not exist.
func readPIDFile(path string) (int, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read pidfile: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pidfile %s holds %q, not a PID", path, strings.TrimSpace(string(data)))
	}
	return pid, nil
}

// processRunning reports whether pid is a live (not zombie) process whose
// command name is comm. Checking the name guards against acting on a PID that
// was reused after the daemon died without removing its pidfile.
func processRunning(pid int, comm string) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Format: "pid (comm) state ...", where comm may itself contain ") ".
	s := string(data)
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < lp || rp+2 >= len(s) {
		return false
	}
	if s[lp+1:rp] != comm {
		return false
	}
	state := s[rp+2]
	return state != 'Z' && state != 'X'
}

// waitExit polls until pid is no longer a running comm process or timeout
// passes, and reports whether it exited.
func waitExit(pid int, comm string, timeout time.Duration) bool {
	return poll(timeout, 20*time.Millisecond, comm+" exit", func() (bool, error) {
		return !processRunning(pid, comm), nil
	}) == nil
}

// stopDaemon stops the daemon named comm whose PID is in pidfile: SIGTERM,
// up to termGrace to exit, then SIGKILL. It removes the pidfile afterwards
// (the daemon removes it itself on a clean exit, but not when killed). A
// missing pidfile or a pidfile naming a process that is gone is not an error.
func stopDaemon(pidfile, comm string) error {
	pid, err := readPIDFile(pidfile)
	if err != nil {
		return fmt.Errorf("stop %s: %w", comm, err)
	}
	if pid == 0 {
		return nil
	}
	if processRunning(pid, comm) {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("stop %s: SIGTERM pid %d: %w", comm, pid, err)
		}
		if !waitExit(pid, comm, termGrace) {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("stop %s: SIGKILL pid %d: %w", comm, pid, err)
			}
			if !waitExit(pid, comm, killGrace) {
				return fmt.Errorf("stop %s: pid %d still running %s after SIGKILL", comm, pid, killGrace)
			}
		}
	}
	if err := os.Remove(pidfile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stop %s: remove pidfile: %w", comm, err)
	}
	return nil
}
