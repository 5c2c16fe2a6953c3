package cniserver

import (
	"fmt"
	"sync"
)

// OpenFlow port numbers the server hands to pod ports. 1 and 2 are kept
// for the tunnel and the gateway; OVS accepts requests up to 0xfeff.
const (
	firstPodOFPort = 3
	lastPodOFPort  = 0xfeff
)

// ofportAllocator picks OpenFlow port numbers for pod ports (sent as
// ofport_request), so a pod's flows can be installed before its port
// exists. Numbers are handed out round-robin so a just-freed number (which
// ovs-vswitchd may still be releasing) is not reused at once.
type ofportAllocator struct {
	mu     sync.Mutex
	byPort map[int]string // ofport -> host interface name
	byName map[string]int
	next   int
}

func newOFPortAllocator() *ofportAllocator {
	return &ofportAllocator{byPort: map[int]string{}, byName: map[string]int{}, next: firstPodOFPort}
}

// reserve returns the port number for name, reserving a new one if needed.
func (a *ofportAllocator) reserve(name string) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.byName[name]; ok {
		return p, nil
	}
	for i := 0; i <= lastPodOFPort-firstPodOFPort; i++ {
		p := a.next
		if a.next++; a.next > lastPodOFPort {
			a.next = firstPodOFPort
		}
		if _, used := a.byPort[p]; !used {
			a.byPort[p], a.byName[name] = name, p
			return p, nil
		}
	}
	return 0, fmt.Errorf("all %d OpenFlow port numbers are in use", lastPodOFPort-firstPodOFPort+1)
}

// markUsed records a port that already exists (found at restore).
func (a *ofportAllocator) markUsed(name string, port int) {
	if port <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.byPort[port], a.byName[name] = name, port
	if port >= a.next && port < lastPodOFPort {
		a.next = port + 1
	}
}

// release frees name's number; releasing an unknown name does nothing.
func (a *ofportAllocator) release(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.byName[name]; ok {
		delete(a.byName, name)
		delete(a.byPort, p)
	}
}
