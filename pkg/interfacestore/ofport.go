package interfacestore

import (
	"fmt"
	"maps"
	"sync"
)

// The bridge's OpenFlow port numbering. The agent requests the tunnel and
// gateway numbers (ofport_request) when it creates those ports; pod ports
// get numbers from FirstPodOFPort to LastPodOFPort (OVS accepts requests
// up to 0xfeff).
const (
	TunnelOFPort   uint32 = 1
	GatewayOFPort  uint32 = 2
	FirstPodOFPort uint32 = 3
	LastPodOFPort  uint32 = 0xfeff
)

// OFPorts hands out OpenFlow port numbers for pod ports, so a pod's flows
// can be installed before its port exists (the number is sent as
// ofport_request). Numbers go round-robin so a just-freed number (which
// ovs-vswitchd may still be releasing) is not reused at once. It is safe
// for concurrent use.
type OFPorts struct {
	mu     sync.Mutex
	byPort map[uint32]string // ofport -> port name
	byName map[string]uint32
	next   uint32
}

// NewOFPorts returns an allocator with every pod number free.
func NewOFPorts() *OFPorts {
	return &OFPorts{byPort: map[uint32]string{}, byName: map[string]uint32{}, next: FirstPodOFPort}
}

// Reserve returns the number for port name, reserving a new one if needed.
func (a *OFPorts) Reserve(name string) (uint32, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.byName[name]; ok {
		return p, nil
	}
	for range LastPodOFPort - FirstPodOFPort + 1 {
		p := a.next
		if a.next++; a.next > LastPodOFPort {
			a.next = FirstPodOFPort
		}
		if _, used := a.byPort[p]; !used {
			a.byPort[p], a.byName[name] = name, p
			return p, nil
		}
	}
	return 0, fmt.Errorf("interfacestore: all %d OpenFlow port numbers for pods are in use", LastPodOFPort-FirstPodOFPort+1)
}

// MarkUsed records a port that exists already (found at restore), whether
// or not it is a pod port. Numbers of 0 or less (none yet) are ignored.
func (a *OFPorts) MarkUsed(name string, port int) {
	if port <= 0 {
		return
	}
	p := uint32(port)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.byPort[p], a.byName[name] = name, p
	if p >= a.next && p < LastPodOFPort {
		a.next = p + 1
	}
}

// Release frees name's number; releasing an unknown name does nothing.
func (a *OFPorts) Release(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.byName[name]; ok {
		delete(a.byName, name)
		delete(a.byPort, p)
	}
}

// Reserved returns the numbers held, by port name.
func (a *OFPorts) Reserved() map[string]uint32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.byName)
}
