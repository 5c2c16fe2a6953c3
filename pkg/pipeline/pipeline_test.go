package pipeline

import (
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/openflow"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func testConfig(t *testing.T) Config {
	t.Helper()
	mac, _ := net.ParseMAC("02:00:0a:0a:00:01")
	_, cidr, _ := net.ParseCIDR("10.10.0.0/24")
	return Config{GatewayOFPort: 2, GatewayMAC: mac, GatewayIP: net.ParseIP("10.10.0.1").To4(),
		TunnelOFPort: 1, PodCIDR: cidr, CTZone: 65520, Round: 1}
}

func render(flows []*openflow.Flow) string {
	r := Renderer()
	var b strings.Builder
	for _, f := range flows {
		b.WriteString(r.Flow(f))
		b.WriteByte('\n')
	}
	return b.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("flows differ from %s:\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// TestFeatureFlows renders each feature's flows in ovs-ofctl syntax and
// compares them with the reviewed text in testdata/.
func TestFeatureFlows(t *testing.T) {
	p, err := New(nil, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	base, err := p.BaseFlows()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "base.flows", render(base))

	mac, _ := net.ParseMAC("02:00:0a:0a:00:05")
	pod, err := p.PodFlows(PodInterface{Key: "c1/eth0", OFPort: 5, IPs: []netip.Addr{netip.MustParseAddr("10.10.0.5")}, MAC: mac}, openflow.MakeCookie(1, CategoryPod, 7))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "pod.flows", render(pod))
}

func TestConfigAndPodValidation(t *testing.T) {
	good := testConfig(t)
	mac, _ := net.ParseMAC("02:00:0a:0a:00:05")
	tests := []struct {
		name string
		cfg  func(c *Config)
		pod  PodInterface
		want string
	}{
		{"no gateway port", func(c *Config) { c.GatewayOFPort = 0 }, PodInterface{}, "gateway OpenFlow port"},
		{"gateway outside CIDR", func(c *Config) { c.GatewayIP = net.ParseIP("10.99.0.1") }, PodInterface{}, "must contain gateway IP"},
		{"no family", func(c *Config) { c.GatewayIP, c.PodCIDR = nil, nil }, PodInterface{}, "a gateway address of at least one family is required"},
		{"gateway IP without pod CIDR", func(c *Config) { c.PodCIDR = nil }, PodInterface{}, "must contain gateway IP"},
		{"pod CIDR without gateway IP", func(c *Config) { c.GatewayIP = nil }, PodInterface{}, "needs the gateway IPv4 address"},
		{"IPv6 gateway IP", func(c *Config) { c.GatewayIP = net.ParseIP("fd00:10:10::1") }, PodInterface{}, "is not an IPv4 address"},
		{"IPv6 Service CIDR as ServiceCIDR", func(c *Config) { c.ServiceCIDR = cidr(t, "fd00:10:96::/112") }, PodInterface{}, "is not an IPv4 prefix"},
		{"pod without port", nil, PodInterface{Key: "k", IPs: []netip.Addr{netip.MustParseAddr("10.10.0.5")}, MAC: mac}, "OpenFlow port is required"},
		{"pod without IP", nil, PodInterface{Key: "k", OFPort: 3, MAC: mac}, "at least one IP address is required"},
		{"pod without MAC", nil, PodInterface{Key: "k", OFPort: 3, IPs: []netip.Addr{netip.MustParseAddr("10.10.0.5")}}, "MAC address is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			p, err := New(nil, cfg)
			if err == nil {
				_, err = p.PodFlows(tc.pod, 1)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestTables(t *testing.T) {
	tables := Tables()
	if len(tables) != int(numTables) || tables[0].Name != "Classifier" || tables[len(tables)-1].Name != "Output" {
		t.Fatalf("unexpected tables %v", tables)
	}
	for i, tb := range tables {
		if tb.ID != uint8(i) {
			t.Fatalf("table %s has ID %d at position %d", tb.Name, tb.ID, i)
		}
	}
	if _, ok := TableName(numTables); ok {
		t.Fatal("TableName knows a table past the end")
	}
}

// arpVerdict returns the actions of the highest-priority ARPResponder flow
// in flows that matches pkt, a packet described by the match fields as
// ovs-ofctl prints them (e.g. "reg0": "0x3/0xf"): a flow matches if each of
// its fields is present in pkt with the same text. The pipeline only ever
// matches reg0's source bits with the mask 0xf, so comparing text is exact
// here.
func arpVerdict(t *testing.T, flows []*openflow.Flow, pkt map[string]string) string {
	t.Helper()
	best, verdict := -1, "no flow"
	for _, f := range flows {
		if f.Table != ARPResponder || int(f.Priority) <= best {
			continue
		}
		ok := true
		for _, kv := range strings.Split(f.Match(), ",") {
			if kv == "" || strings.HasPrefix(kv, "priority=") {
				continue
			}
			k, v, _ := strings.Cut(kv, "=")
			if got, present := pkt[k]; !present || got != v {
				ok = false
				break
			}
		}
		if ok {
			best = int(f.Priority)
			_, verdict, _ = strings.Cut(Renderer().Flow(f), "actions=")
		}
	}
	return verdict
}

// TestARPResponderVerdicts: which way ARP takes through ARPResponder, for
// the packets the node, pods and peers send. The node's kernel asks for a
// pod with whatever source address it is about to send from (arp_announce
// 0), so a pod's reply addressed to the gateway MAC must reach the gateway
// whatever its target IP.
func TestARPResponderVerdicts(t *testing.T) {
	p, err := New(nil, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	flows, err := p.BaseFlows()
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("02:00:0a:0a:00:05")
	pod, err := p.PodFlows(PodInterface{Key: "c1/eth0", OFPort: 5, IPs: []netip.Addr{netip.MustParseAddr("10.10.0.5")}, MAC: mac}, openflow.MakeCookie(1, CategoryPod, 7))
	if err != nil {
		t.Fatal(err)
	}
	_, peerCIDR, _ := net.ParseCIDR("10.10.1.0/24")
	peer, err := p.PeerFlows(PeerNode{Name: "n2", PodCIDR: peerCIDR, NodeIP: net.ParseIP("192.0.2.2"), GatewayIP: net.ParseIP("10.10.1.1")},
		openflow.MakeCookie(1, CategoryPeer, 3))
	if err != nil {
		t.Fatal(err)
	}
	flows = append(append(flows, pod...), peer...)
	const (
		fromPod = "0x3/0xf"
		fromGW  = "0x1/0xf"
		gwMAC   = "02:00:0a:0a:00:01"
		podMAC  = "02:00:0a:0a:00:05"
		bcast   = "ff:ff:ff:ff:ff:ff"
		toGW    = "output:2"
		toPod   = "output:5"
		drop    = "drop"
	)
	for _, tc := range []struct {
		name               string
		reg0, dst, op, tpa string
		want, wantPrefix   string
	}{
		{name: "pod's reply to the node's request from the node IP", reg0: fromPod, dst: gwMAC, op: "2", tpa: "192.0.2.1", want: toGW},
		{name: "pod's reply to the node's request from the gateway IP", reg0: fromPod, dst: gwMAC, op: "2", tpa: "10.10.0.1", want: toGW},
		{name: "pod's reply to the gateway MAC naming another pod's IP", reg0: fromPod, dst: gwMAC, op: "2", tpa: "10.10.0.5", want: toGW},
		{name: "pod's reply to another pod", reg0: fromPod, dst: podMAC, op: "2", tpa: "10.10.0.5", want: toPod},
		{name: "pod's broadcast reply for the node IP", reg0: fromPod, dst: bcast, op: "2", tpa: "192.0.2.1", want: drop},
		{name: "pod asks for the node IP", reg0: fromPod, dst: bcast, op: "1", tpa: "192.0.2.1", want: drop},
		{name: "pod asks for another pod", reg0: fromPod, dst: bcast, op: "1", tpa: "10.10.0.5", want: toPod},
		{name: "pod asks for the gateway", reg0: fromPod, dst: bcast, op: "1", tpa: "10.10.0.1", wantPrefix: "move:NXM_OF_ETH_SRC[]"},
		{name: "node asks for a pod", reg0: fromGW, dst: bcast, op: "1", tpa: "10.10.0.5", want: toPod},
		{name: "node asks for a peer's gateway", reg0: fromGW, dst: bcast, op: "1", tpa: "10.10.1.1", wantPrefix: "move:NXM_OF_ETH_SRC[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := arpVerdict(t, flows, map[string]string{"arp": "", "reg0": tc.reg0, "dl_dst": tc.dst, "arp_op": tc.op, "arp_tpa": tc.tpa})
			if tc.wantPrefix != "" {
				if !strings.HasPrefix(got, tc.wantPrefix) || !strings.HasSuffix(got, "IN_PORT") {
					t.Errorf("actions %q, want an answer built in place (%s...IN_PORT)", got, tc.wantPrefix)
				}
				return
			}
			if got != tc.want {
				t.Errorf("actions %q, want %q", got, tc.want)
			}
		})
	}
}
