package interfacestore

import (
	"errors"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, ips := range [][]string{{"10.0.0.3"}, {"10.0.0.3", "fd00:10::3"}, {"fd00:10::3"}} {
		in := iface("c1", "eth0", "ns/a", 3, ips...)
		in.PodUID, in.Network = "uid-1", "weir"
		ids := ExternalIDs(in)
		if ids[KeyRecordVersion] != "2" {
			t.Errorf("record version = %q, want 2", ids[KeyRecordVersion])
		}
		out, err := FromPort(in.PortName, int(in.OFPort), ids)
		if err != nil {
			t.Fatalf("FromPort(ExternalIDs(%v)): %v", ips, err)
		}
		if !reflect.DeepEqual(out, in) {
			t.Errorf("round trip of %v:\n got %+v\nwant %+v", ips, out, in)
		}
	}
}

// TestRecordsOfEarlierWeir decodes records exactly as Weir wrote them
// before the record was versioned (cniserver's externalIDs of 2026-11),
// and before it recorded the pod UID and the network.
func TestRecordsOfEarlierWeir(t *testing.T) {
	mac, _ := net.ParseMAC("0a:58:0a:f4:01:05")
	base := Interface{ContainerID: "0123abcd", IfName: "eth0", NetNS: "/var/run/netns/cni-1234",
		PodNamespace: "default", PodName: "web-0", MAC: mac, IPs: []netip.Addr{netip.MustParseAddr("10.244.1.5")},
		PortName: "weir0123abcd5f3e", OFPort: 7}
	v1 := map[string]string{"weir-type": "pod", "container-id": "0123abcd", "ifname": "eth0",
		"netns": "/var/run/netns/cni-1234", "ip": "10.244.1.5", "mac": "0a:58:0a:f4:01:05",
		"pod-name": "web-0", "pod-namespace": "default"}
	withNetwork := maps.Clone(v1)
	withNetwork["pod-uid"], withNetwork["cni-network"] = "5f1c", "weir"
	want := base
	want.PodUID, want.Network = "5f1c", "weir"
	outside := maps.Clone(v1)
	delete(outside, "pod-name")
	delete(outside, "pod-namespace")
	wantOutside := base
	wantOutside.PodNamespace, wantOutside.PodName = "", ""

	tests := []struct {
		name string
		ids  map[string]string
		want Interface
	}{
		{"v1 with network and UID", withNetwork, want},
		{"v1 before networks (legacy)", v1, base},
		{"v1 outside Kubernetes", outside, wantOutside},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromPort("weir0123abcd5f3e", 7, tt.ids)
			if err != nil {
				t.Fatalf("FromPort: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
			if got.Legacy() != (tt.ids["cni-network"] == "") {
				t.Errorf("Legacy() = %v", got.Legacy())
			}
		})
	}
}

func TestRecordRejects(t *testing.T) {
	good := ExternalIDs(iface("c1", "eth0", "ns/a", 3, "10.0.0.3", "fd00::3"))
	with := func(k, v string) map[string]string {
		m := maps.Clone(good)
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	v1 := with(KeyRecordVersion, "")
	v1[KeyIP] = "10.0.0.3"
	v1v6 := maps.Clone(v1)
	v1v6[KeyIP] = "fd00::3"
	v1two := maps.Clone(v1)
	v1two[KeyIP] = "10.0.0.3,fd00::3"
	tests := []struct {
		name  string
		ids   map[string]string
		want  string
		newer bool
	}{
		{"not a pod port", with("weir-type", "tunnel"), "not a pod port", false},
		{"newer version", with(KeyRecordVersion, "3"), "record version 3", true},
		{"bad version", with(KeyRecordVersion, "two"), "invalid weir-record", false},
		{"no netns", with(KeyNetNS, ""), "lacks container-id, ifname or netns", false},
		{"no ip", with(KeyIP, ""), "invalid ip", false},
		{"bad ip", with(KeyIP, "10.0.0.300"), "invalid ip", false},
		{"v6 first", with(KeyIP, "fd00::3,10.0.0.3"), "IPv4 first", false},
		{"two v6", with(KeyIP, "fd00::3,fd00::4"), "one address per family", false},
		{"three", with(KeyIP, "10.0.0.3,fd00::3,fd00::4"), "invalid ip", false},
		{"zone", with(KeyIP, "fe80::1%eth0"), "invalid ip", false},
		{"v1 with IPv6", v1v6, "record version 1", false},
		{"v1 with two", v1two, "record version 1", false},
		{"bad mac", with(KeyMAC, "nope"), "no valid mac", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FromPort("p", 3, tt.ids)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("FromPort = %v, want an error containing %q", err, tt.want)
			}
			if errors.Is(err, ErrNewerRecord) != tt.newer {
				t.Errorf("errors.Is(err, ErrNewerRecord) = %v, want %v", !tt.newer, tt.newer)
			}
		})
	}
}
