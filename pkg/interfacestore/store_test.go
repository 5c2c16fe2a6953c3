package interfacestore

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func iface(container, ifName, pod string, ofport uint32, ips ...string) Interface {
	i := Interface{ContainerID: container, IfName: ifName, NetNS: "/var/run/netns/" + container,
		PortName: "veth" + container + ifName, OFPort: ofport, MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(ofport)}}
	if pod != "" {
		i.PodNamespace, i.PodName, _ = strings.Cut(pod, "/")
	}
	for _, s := range ips {
		i.IPs = append(i.IPs, netip.MustParseAddr(s))
	}
	return i
}

func TestStoreIndexes(t *testing.T) {
	s := NewStore()
	var events []string
	s.WatchPods(func(r PodRef) { events = append(events, r.String()) })
	for _, i := range []Interface{
		iface("c1", "eth0", "ns/a", 3, "10.0.0.3", "fd00::3"),
		iface("c1", "net1", "ns/a", 4, "10.1.0.4"),
		iface("c0", "net1", "ns/b", 5, "10.0.0.5"),
		iface("c0", "eth1", "ns/b", 6, "fd00::6"),
		iface("raw", "eth0", "", 7, "10.0.0.7"),
	} {
		if err := s.Put(i); err != nil {
			t.Fatalf("Put(%s): %v", i.Key(), err)
		}
	}
	if want := []string{"ns/a", "ns/a", "ns/b", "ns/b"}; !slices.Equal(events, want) {
		t.Errorf("watch events = %v, want %v (none for a non-Kubernetes interface)", events, want)
	}
	tests := []struct {
		name      string
		pod       PodRef
		wantPort  uint32
		wantFound bool
		wantKeys  []string
	}{
		{"eth0 first", PodRef{"ns", "a"}, 3, true, []string{"c1/eth0", "c1/net1"}},
		{"no eth0: lowest key", PodRef{"ns", "b"}, 6, true, []string{"c0/eth1", "c0/net1"}},
		{"unknown pod", PodRef{"ns", "zz"}, 0, false, nil},
		{"name without namespace", PodRef{"", "a"}, 0, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port, ok := s.PodOFPort(tt.pod.Namespace, tt.pod.Name)
			if port != tt.wantPort || ok != tt.wantFound {
				t.Errorf("PodOFPort = %d, %v; want %d, %v", port, ok, tt.wantPort, tt.wantFound)
			}
			var keys []string
			for _, i := range s.ByPod(tt.pod.Namespace, tt.pod.Name) {
				keys = append(keys, i.Key())
			}
			if !slices.Equal(keys, tt.wantKeys) {
				t.Errorf("ByPod = %v, want %v", keys, tt.wantKeys)
			}
		})
	}
	if i, ok := s.ByOFPort(6); !ok || i.Key() != "c0/eth1" {
		t.Errorf("ByOFPort(6) = %s, %v", i.Key(), ok)
	}
	for ip, want := range map[string]string{"fd00::3": "c1/eth0", "10.0.0.3": "c1/eth0", "::ffff:10.0.0.5": "c0/net1", "10.9.9.9": ""} {
		i, ok := s.ByIP(netip.MustParseAddr(ip))
		if got := map[bool]string{true: i.Key()}[ok]; got != want {
			t.Errorf("ByIP(%s) = %q, want %q", ip, got, want)
		}
	}
	var keys []string
	for _, i := range s.List() {
		keys = append(keys, i.Key())
	}
	if want := []string{"c0/eth1", "c0/net1", "c1/eth0", "c1/net1", "raw/eth0"}; !slices.Equal(keys, want) {
		t.Errorf("List = %v, want %v", keys, want)
	}

	// Replacing an interface moves its indexes (a re-ADD with a new port).
	moved := iface("c1", "eth0", "ns/a", 9, "10.0.0.9")
	if err := s.Put(moved); err != nil {
		t.Fatalf("Put(replacement): %v", err)
	}
	if _, ok := s.ByOFPort(3); ok {
		t.Error("the replaced interface's old ofport is still indexed")
	}
	if _, ok := s.ByIP(netip.MustParseAddr("fd00::3")); ok {
		t.Error("the replaced interface's old IP is still indexed")
	}
	if p, _ := s.PodOFPort("ns", "a"); p != 9 {
		t.Errorf("PodOFPort after replacement = %d, want 9", p)
	}

	// Deleting.
	events = nil
	if _, ok := s.Delete("c1/eth0"); !ok {
		t.Fatal("Delete(c1/eth0) found nothing")
	}
	if _, ok := s.Delete("c1/eth0"); ok {
		t.Fatal("second Delete(c1/eth0) found something")
	}
	if p, _ := s.PodOFPort("ns", "a"); p != 4 {
		t.Errorf("PodOFPort after deleting eth0 = %d, want net1's 4", p)
	}
	if !slices.Equal(events, []string{"ns/a"}) {
		t.Errorf("watch events of Delete = %v, want [ns/a]", events)
	}
	if s.Len() != 4 {
		t.Errorf("Len = %d, want 4", s.Len())
	}
}

func TestStorePutRejects(t *testing.T) {
	s := NewStore()
	if err := s.Put(iface("c1", "eth0", "ns/a", 3, "10.0.0.3")); err != nil {
		t.Fatal(err)
	}
	noPort := iface("c3", "eth0", "ns/c", 0, "10.0.0.30")
	noPort.PortName = ""
	tests := []struct {
		name string
		in   Interface
		want string
	}{
		{"ofport held", iface("c2", "eth0", "ns/b", 3, "10.0.0.4"), "ofport 3 of c2/eth0 is held by c1/eth0"},
		{"IP held", iface("c2", "eth0", "ns/b", 4, "10.0.0.3"), "IP 10.0.0.3 of c2/eth0 is held by c1/eth0"},
		{"no container", iface("", "eth0", "ns/b", 4, "10.0.0.4"), "lacks a container ID"},
		{"no port", noPort, "lacks its OVS port"},
		{"no IP", iface("c2", "eth0", "ns/b", 4), "has no IP address"},
		{"two IPv4", iface("c2", "eth0", "ns/b", 4, "10.0.0.4", "10.0.0.5"), "two addresses of one family"},
		{"mapped", iface("c2", "eth0", "ns/b", 4, "::ffff:10.0.0.4"), "invalid address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Put(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Put = %v, want an error containing %q", err, tt.want)
			}
			if s.Len() != 1 {
				t.Fatalf("a rejected Put changed the store: %d interfaces", s.Len())
			}
		})
	}
}

func TestStoreHandsOutCopies(t *testing.T) {
	s := NewStore()
	in := iface("c1", "eth0", "ns/a", 3, "10.0.0.3")
	if err := s.Put(in); err != nil {
		t.Fatal(err)
	}
	in.IPs[0] = netip.MustParseAddr("10.9.9.9")
	got, _ := s.Get("c1/eth0")
	got.MAC[0] = 0xff
	again, _ := s.Get("c1/eth0")
	if again.IPs[0] != netip.MustParseAddr("10.0.0.3") || again.MAC[0] != 2 {
		t.Fatalf("the store shares memory with its callers: %+v", again)
	}
}
