// Command pause is the pod sandbox process: it holds the pod's namespaces
// and does nothing else. It sleeps until SIGINT or SIGTERM (then exits 0)
// and, as PID 1 of a shared PID namespace, reaps orphaned children on
// SIGCHLD. Weir builds it into registry.k8s.io/pause:3.10 so kubelet finds
// its sandbox image locally, without registry access.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "pause: %v, exiting\n", sig)
		os.Exit(0)
	}
}

// reap collects every exited child without blocking and returns how many it
// collected.
func reap() int {
	n := 0
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return n
		}
		n++
	}
}
