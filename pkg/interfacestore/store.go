package interfacestore

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Interface is one pod interface attached to the bridge. Values handed out
// by the Store are copies: changing one changes nothing in the Store.
type Interface struct {
	// ContainerID and IfName (CNI_CONTAINERID, CNI_IFNAME) identify the
	// attachment; see Key.
	ContainerID string
	IfName      string
	// NetNS is the path of the pod's network namespace (CNI_NETNS).
	NetNS string
	// PodNamespace, PodName and PodUID come from CNI_ARGS
	// (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID); empty outside
	// Kubernetes, and PodUID also when the runtime does not pass it.
	PodNamespace string
	PodName      string
	PodUID       string
	// Network is the network configuration's "name". Empty for an
	// interface restored from a record written before Weir recorded
	// network names (see Legacy).
	Network string
	// MAC is the pod-side interface's address.
	MAC net.HardwareAddr
	// IPs are the pod's addresses on this interface, at most one per
	// family, IPv4 first.
	IPs []netip.Addr
	// PortName is the OVS port, which is the host side of the veth pair.
	PortName string
	// OFPort is the port's OpenFlow port number.
	OFPort uint32
}

// Key identifies an interface: "<container id>/<ifname>". It is also the
// IPAM allocation key and the pipeline's pod key.
func (i *Interface) Key() string { return Key(i.ContainerID, i.IfName) }

// Key is the key of container containerID's interface ifName.
func Key(containerID, ifName string) string { return containerID + "/" + ifName }

// Legacy reports whether the interface was restored from a record without a
// network name, written by a Weir that served a single network.
func (i *Interface) Legacy() bool { return i.Network == "" }

// IPv4 returns the interface's IPv4 address, if it has one.
func (i *Interface) IPv4() (netip.Addr, bool) { return i.ip(true) }

// IPv6 returns the interface's IPv6 address, if it has one.
func (i *Interface) IPv6() (netip.Addr, bool) { return i.ip(false) }

func (i *Interface) ip(v4 bool) (netip.Addr, bool) {
	for _, a := range i.IPs {
		if a.Is4() == v4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (i *Interface) clone() Interface {
	c := *i
	c.MAC = slices.Clone(i.MAC)
	c.IPs = slices.Clone(i.IPs)
	return c
}

// PodRef names a Kubernetes pod.
type PodRef struct{ Namespace, Name string }

func (r PodRef) String() string { return r.Namespace + "/" + r.Name }

// Store holds the node's pod interfaces, indexed by key, pod, OpenFlow port
// and IP. It is safe for concurrent use.
type Store struct {
	mu       sync.RWMutex
	byKey    map[string]*Interface
	byPod    map[PodRef][]*Interface // sorted: see podOrder
	byOFPort map[uint32]*Interface
	byIP     map[netip.Addr]*Interface
	watchers []func(PodRef)
}

// NewStore returns an empty Store.
func NewStore() *Store {
	return &Store{byKey: map[string]*Interface{}, byPod: map[PodRef][]*Interface{},
		byOFPort: map[uint32]*Interface{}, byIP: map[netip.Addr]*Interface{}}
}

// Put adds iface, replacing the interface of the same key. It fails, and
// changes nothing, when iface lacks its key, its port or a valid address,
// or when another interface holds its OpenFlow port or one of its
// addresses: two pods on one port or IP is a bug the caller must hear of.
func (s *Store) Put(iface Interface) error {
	if err := validate(&iface); err != nil {
		return err
	}
	in := iface.clone()
	key := in.Key()
	s.mu.Lock()
	old := s.byKey[key]
	if o := s.byOFPort[in.OFPort]; o != nil && o != old {
		s.mu.Unlock()
		return fmt.Errorf("interfacestore: ofport %d of %s is held by %s", in.OFPort, key, o.Key())
	}
	for _, a := range in.IPs {
		if o := s.byIP[a]; o != nil && o != old {
			s.mu.Unlock()
			return fmt.Errorf("interfacestore: IP %s of %s is held by %s", a, key, o.Key())
		}
	}
	if old != nil {
		s.remove(old)
	}
	s.add(&in)
	s.mu.Unlock()
	s.notify(old, &in)
	return nil
}

func validate(i *Interface) error {
	switch {
	case i.ContainerID == "" || i.IfName == "":
		return fmt.Errorf("interfacestore: interface %q lacks a container ID or ifname", i.Key())
	case i.PortName == "" || i.OFPort == 0:
		return fmt.Errorf("interfacestore: interface %s lacks its OVS port or OpenFlow port number", i.Key())
	case len(i.IPs) == 0:
		return fmt.Errorf("interfacestore: interface %s has no IP address", i.Key())
	}
	seen := map[bool]bool{}
	for _, a := range i.IPs {
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
			return fmt.Errorf("interfacestore: interface %s has an invalid address %v", i.Key(), a)
		}
		if seen[a.Is4()] {
			return fmt.Errorf("interfacestore: interface %s has two addresses of one family (%v)", i.Key(), i.IPs)
		}
		seen[a.Is4()] = true
	}
	return nil
}

// Delete removes the interface key and returns it; ok is false if there was
// none.
func (s *Store) Delete(key string) (_ Interface, ok bool) {
	s.mu.Lock()
	old := s.byKey[key]
	if old != nil {
		s.remove(old)
	}
	s.mu.Unlock()
	if old == nil {
		return Interface{}, false
	}
	s.notify(old, nil)
	return old.clone(), true
}

func (s *Store) add(i *Interface) {
	s.byKey[i.Key()] = i
	s.byOFPort[i.OFPort] = i
	for _, a := range i.IPs {
		s.byIP[a] = i
	}
	if ref, ok := podOf(i); ok {
		list := append(s.byPod[ref], i)
		sort.Slice(list, func(a, b int) bool { return podOrder(list[a], list[b]) })
		s.byPod[ref] = list
	}
}

func (s *Store) remove(i *Interface) {
	delete(s.byKey, i.Key())
	delete(s.byOFPort, i.OFPort)
	for _, a := range i.IPs {
		delete(s.byIP, a)
	}
	if ref, ok := podOf(i); ok {
		list := slices.DeleteFunc(s.byPod[ref], func(o *Interface) bool { return o == i })
		if len(list) == 0 {
			delete(s.byPod, ref)
		} else {
			s.byPod[ref] = list
		}
	}
}

func podOf(i *Interface) (PodRef, bool) {
	return PodRef{i.PodNamespace, i.PodName}, i.PodName != ""
}

// podOrder sorts a pod's interfaces: eth0 (the pod's primary interface in
// Kubernetes) first, then by key.
func podOrder(a, b *Interface) bool {
	if (a.IfName == "eth0") != (b.IfName == "eth0") {
		return a.IfName == "eth0"
	}
	return a.Key() < b.Key()
}

// Get returns the interface key.
func (s *Store) Get(key string) (Interface, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if i := s.byKey[key]; i != nil {
		return i.clone(), true
	}
	return Interface{}, false
}

// List returns every interface, sorted by key.
func (s *Store) List() []Interface {
	s.mu.RLock()
	out := make([]Interface, 0, len(s.byKey))
	for _, i := range s.byKey {
		out = append(out, i.clone())
	}
	s.mu.RUnlock()
	sort.Slice(out, func(a, b int) bool { return strings.Compare(out[a].Key(), out[b].Key()) < 0 })
	return out
}

// Len returns the number of interfaces.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byKey)
}

// ByPod returns the interfaces of pod namespace/name, eth0 first, then by
// key.
func (s *Store) ByPod(namespace, name string) []Interface {
	s.mu.RLock()
	defer s.mu.RUnlock()
	list := s.byPod[PodRef{namespace, name}]
	out := make([]Interface, len(list))
	for n, i := range list {
		out[n] = i.clone()
	}
	return out
}

// PodOFPort returns the OpenFlow port of pod namespace/name's primary
// interface (eth0, else the one with the lowest key); ok is false if the
// pod has no interface here.
func (s *Store) PodOFPort(namespace, name string) (uint32, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if list := s.byPod[PodRef{namespace, name}]; len(list) > 0 {
		return list[0].OFPort, true
	}
	return 0, false
}

// ByOFPort returns the interface on OpenFlow port port.
func (s *Store) ByOFPort(port uint32) (Interface, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if i := s.byOFPort[port]; i != nil {
		return i.clone(), true
	}
	return Interface{}, false
}

// ByIP returns the interface holding ip.
func (s *Store) ByIP(ip netip.Addr) (Interface, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if i := s.byIP[ip.Unmap()]; i != nil {
		return i.clone(), true
	}
	return Interface{}, false
}

// WatchPods registers fn to be called, after the change, whenever an
// interface of a Kubernetes pod is put or deleted, with the pod; the Store
// then answers with the new state. fn runs on the writer's goroutine and
// must not block.
func (s *Store) WatchPods(fn func(PodRef)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchers = append(s.watchers, fn)
}

// notify tells the watchers about the pods of the interface before (old)
// and after (cur) a change; either may be nil.
func (s *Store) notify(old, cur *Interface) {
	var refs []PodRef
	for _, i := range []*Interface{old, cur} {
		if i == nil {
			continue
		}
		if ref, ok := podOf(i); ok && !slices.Contains(refs, ref) {
			refs = append(refs, ref)
		}
	}
	if len(refs) == 0 {
		return
	}
	s.mu.RLock()
	ws := slices.Clone(s.watchers)
	s.mu.RUnlock()
	for _, ref := range refs {
		for _, fn := range ws {
			fn(ref)
		}
	}
}
