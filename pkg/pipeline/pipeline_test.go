package pipeline

import (
	"flag"
	"net"
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
	pod, err := p.PodFlows(PodInterface{Key: "c1/eth0", OFPort: 5, IP: net.ParseIP("10.10.0.5"), MAC: mac}, openflow.MakeCookie(1, CategoryPod, 7))
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
		{"pod without port", nil, PodInterface{Key: "k", IP: net.ParseIP("10.10.0.5"), MAC: mac}, "OpenFlow port is required"},
		{"pod without IP", nil, PodInterface{Key: "k", OFPort: 3, MAC: mac}, "IPv4 address is required"},
		{"pod without MAC", nil, PodInterface{Key: "k", OFPort: 3, IP: net.ParseIP("10.10.0.5")}, "MAC address is required"},
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
