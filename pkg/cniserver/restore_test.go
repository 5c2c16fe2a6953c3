package cniserver

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/ipam"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/test/ovstest"
)

// restoreNode is a real OVS with a bridge and an ovsdb.Client, for Restore
// against ports as OVSDB holds them.
type restoreNode struct {
	ovs   *ovstest.Instance
	db    *ovsdb.Client
	alloc *ipam.Allocator
}

func newRestoreNode(t *testing.T) *restoreNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	n := &restoreNode{ovs: ovstest.Start(t)}
	log := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))
	var err error
	if n.db, err = ovsdb.Connect(ctx, n.ovs.DBSocket(), log.WithName("ovsdb")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.db.Close)
	if _, err := n.db.EnsureBridge(ctx, ovsdb.BridgeConfig{Name: "br-int", DatapathType: ovsdb.DatapathNetdev}); err != nil {
		t.Fatal(err)
	}
	_, cidr, _ := net.ParseCIDR("10.244.1.0/24")
	if n.alloc, err = ipam.New(cidr, &ipam.MemStore{}); err != nil {
		t.Fatal(err)
	}
	return n
}

// addPort creates a pod port with ids as its external_ids, the way an
// earlier agent left it: the host end of a veth pair in the node netns, as
// the CNI server makes them (Restore tears down the veth of a pod that is
// gone, and refuses other kinds of devices).
func (n *restoreNode) addPort(t *testing.T, name string, ofport int, ids map[string]string) {
	t.Helper()
	if out, err := n.ovs.Exec(n.ovs.NetNS, "ip", "link", "add", name, "type", "veth", "peer", "name", "p"+name[len(name)-8:]); err != nil {
		t.Fatalf("creating veth %s: %v: %s", name, err, out)
	}
	if out, err := n.ovs.Exec(n.ovs.NetNS, "ip", "link", "set", name, "up"); err != nil {
		t.Fatalf("setting %s up: %v: %s", name, err, out)
	}
	args := []string{"add-port", "br-int", name, "--", "set", "Interface", name,
		"ofport_request=" + strconv.Itoa(ofport), "--", "set", "Port", name}
	for _, k := range slices.Sorted(maps.Keys(ids)) {
		args = append(args, "external_ids:"+k+"="+ids[k])
	}
	n.ovs.MustVsctl(t, args...)
	// As after a restart: ovs-vswitchd has given the port its number.
	n.ovs.MustVsctl(t, "--timeout=20", "wait-until", "Interface", name, "ofport="+strconv.Itoa(ofport))
}

func addrs(in ...string) []netip.Addr {
	out := make([]netip.Addr, len(in))
	for i, a := range in {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

func (n *restoreNode) server(t *testing.T) (*Server, *fakeFlows) {
	flows := &fakeFlows{pods: map[string]bool{}}
	log := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))
	s := New(Config{Bridge: "br-int", MTU: 1450, HostNetNSPath: "/var/run/netns/" + n.ovs.NetNS, Logger: log}, n.db, flows, n.alloc)
	return s, flows
}

// TestRestoreRecordsOfEarlierWeir restores ports whose external_ids were
// written by earlier Weir: record version 1 (one IPv4 address), with and
// without the network name and pod UID, next to a version 2 record, a pod
// whose netns is gone and an IP held without a port.
func TestRestoreRecordsOfEarlierWeir(t *testing.T) {
	n := newRestoreNode(t)
	ctx := context.Background()
	live := filepath.Join(t.TempDir(), "netns-live") // Restore only checks that the netns exists
	if err := os.WriteFile(live, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	v1 := func(cid, ip, mac, pod string) map[string]string {
		return map[string]string{"weir-type": "pod", "container-id": cid, "ifname": "eth0", "netns": live,
			"ip": ip, "mac": mac, "pod-namespace": "default", "pod-name": pod}
	}
	withNetwork := v1("c-net", "10.244.1.5", "0a:58:0a:f4:01:05", "web-0")
	withNetwork["pod-uid"], withNetwork["cni-network"] = "uid-web-0", "weir"
	n.addPort(t, "weirc0000000001", 5, withNetwork)
	n.addPort(t, "weirc0000000002", 6, v1("c-legacy", "10.244.1.6", "0a:58:0a:f4:01:06", "web-1"))
	v2 := interfacestore.ExternalIDs(interfacestore.Interface{ContainerID: "c-v2", IfName: "eth0", NetNS: live,
		PodNamespace: "default", PodName: "web-2", Network: "weir", MAC: net.HardwareAddr{0x0a, 0x58, 10, 244, 1, 7},
		IPs: addrs("10.244.1.7")})
	n.addPort(t, "weirc0000000003", 7, v2)
	gone := v1("c-gone", "10.244.1.8", "0a:58:0a:f4:01:08", "web-3")
	gone["netns"] = "/var/run/netns/weir-restore-test-gone"
	n.addPort(t, "weirc0000000004", 8, gone)
	if _, err := n.alloc.Allocate("c-crashed/eth0"); err != nil { // an ADD cut short before its port
		t.Fatal(err)
	}

	s, flows := n.server(t)
	st, err := s.Restore(ctx)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if want := (RestoreStats{Restored: 3, Removed: 1, Released: 1}); st != want {
		t.Errorf("Restore = %+v, want %+v", st, want)
	}
	store := s.Interfaces()
	tests := []struct {
		key, pod, ip, network, uid string
		ofport                     uint32
	}{
		{"c-net/eth0", "web-0", "10.244.1.5", "weir", "uid-web-0", 5},
		{"c-legacy/eth0", "web-1", "10.244.1.6", "", "", 6},
		{"c-v2/eth0", "web-2", "10.244.1.7", "weir", "", 7},
	}
	for _, tt := range tests {
		i, ok := store.Get(tt.key)
		if !ok {
			t.Errorf("%s not restored", tt.key)
			continue
		}
		if len(i.IPs) != 1 || i.IPs[0].String() != tt.ip || i.Network != tt.network || i.PodUID != tt.uid || i.OFPort != tt.ofport {
			t.Errorf("%s restored as %+v", tt.key, i)
		}
		if p, ok := store.PodOFPort("default", tt.pod); !ok || p != tt.ofport {
			t.Errorf("PodOFPort(default/%s) = %d, %v; want %d", tt.pod, p, ok, tt.ofport)
		}
		if ip, ok := n.alloc.Lookup(tt.key); !ok || ip.String() != tt.ip {
			t.Errorf("IPAM has %v, %v for %s; want %s", ip, ok, tt.key, tt.ip)
		}
		if !flows.pods[tt.key] {
			t.Errorf("flows of %s not reinstalled", tt.key)
		}
	}
	if store.Len() != 3 || len(n.alloc.List()) != 3 {
		t.Errorf("store has %d interfaces and IPAM %d IPs, want 3 each: %v", store.Len(), len(n.alloc.List()), n.alloc.List())
	}
	ports := n.ovs.MustVsctl(t, "list-ports", "br-int")
	if strings.Contains(ports, "weirc0000000004") {
		t.Errorf("the port of the pod whose netns is gone is still there:\n%s", ports)
	}
	if out, err := n.ovs.Exec(n.ovs.NetNS, "ip", "link", "show", "weirc0000000004"); err == nil {
		t.Errorf("the veth of the pod whose netns is gone is still there:\n%s", out)
	}
	// The restored ofports are not handed out again.
	if p, err := s.ofports.Reserve("weirnew00000000"); err != nil || p <= 7 {
		t.Errorf("Reserve after Restore = %d, %v; want a number above the restored 5..7", p, err)
	}
}

// TestRestoreRefusesNewerRecord: a port recorded by a newer Weir (after a
// downgrade) fails Restore and nothing is changed.
func TestRestoreRefusesNewerRecord(t *testing.T) {
	n := newRestoreNode(t)
	newer := interfacestore.ExternalIDs(interfacestore.Interface{ContainerID: "c-new", IfName: "eth0",
		NetNS: "/var/run/netns/gone", MAC: net.HardwareAddr{0x0a, 0x58, 10, 244, 1, 9}, IPs: addrs("10.244.1.9")})
	newer[interfacestore.KeyRecordVersion] = "99"
	n.addPort(t, "weirc0000000009", 9, newer)
	s, _ := n.server(t)
	_, err := s.Restore(context.Background())
	if !errors.Is(err, interfacestore.ErrNewerRecord) || !strings.Contains(err.Error(), "weirc0000000009") {
		t.Fatalf("Restore = %v, want ErrNewerRecord naming the port", err)
	}
	if ports := n.ovs.MustVsctl(t, "list-ports", "br-int"); !strings.Contains(ports, "weirc0000000009") {
		t.Errorf("Restore removed the newer agent's port:\n%s", ports)
	}
	if s.Interfaces().Len() != 0 {
		t.Errorf("Restore put %d interfaces in the store", s.Interfaces().Len())
	}
}

// TestRestoreDualStack restores a version 2 record with an address of each
// family into the IPAM of each family.
func TestRestoreDualStack(t *testing.T) {
	n := newRestoreNode(t)
	live := filepath.Join(t.TempDir(), "netns-live")
	if err := os.WriteFile(live, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	n.addPort(t, "weirc0000000011", 11, interfacestore.ExternalIDs(interfacestore.Interface{ContainerID: "c-ds", IfName: "eth0",
		NetNS: live, PodNamespace: "default", PodName: "ds", Network: "weir", MAC: net.HardwareAddr{0x0a, 0x58, 10, 244, 1, 11},
		IPs: addrs("10.244.1.11", "fd00:244:1::b")}))
	_, c6, _ := net.ParseCIDR("fd00:244:1::/64")
	alloc6, err := ipam.New(c6, &ipam.MemStore{})
	if err != nil {
		t.Fatal(err)
	}
	flows := &fakeFlows{pods: map[string]bool{}}
	log := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))
	s := New(Config{Bridge: "br-int", HostNetNSPath: "/var/run/netns/" + n.ovs.NetNS, IPv6: alloc6, Logger: log}, n.db, flows, n.alloc)
	if st, err := s.Restore(context.Background()); err != nil || st.Restored != 1 {
		t.Fatalf("Restore = %+v, %v", st, err)
	}
	if ip, ok := n.alloc.Lookup("c-ds/eth0"); !ok || ip.String() != "10.244.1.11" {
		t.Errorf("IPv4 IPAM has %v, %v", ip, ok)
	}
	if ip, ok := alloc6.Lookup("c-ds/eth0"); !ok || ip.String() != "fd00:244:1::b" {
		t.Errorf("IPv6 IPAM has %v, %v", ip, ok)
	}
}
