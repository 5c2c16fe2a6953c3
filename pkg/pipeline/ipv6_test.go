package pipeline

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/weirnet/weir/pkg/openflow"
)

func dualStackConfig(t *testing.T) Config {
	t.Helper()
	cfg := testConfig(t)
	_, cidr6, _ := net.ParseCIDR("fd00:10:10::/64")
	cfg.GatewayIPv6, cfg.PodCIDRv6 = net.ParseIP("fd00:10:10::1"), cidr6
	return cfg
}

func dualStackPod() PodInterface {
	mac, _ := net.ParseMAC("02:00:0a:0a:00:05")
	return PodInterface{Key: "c1/eth0", OFPort: 5, MAC: mac,
		IPs: []netip.Addr{netip.MustParseAddr("10.10.0.5"), netip.MustParseAddr("fd00:10:10::5")}}
}

// TestDualStackFlows: with the IPv6 configuration the base and pod flows are
// the IPv4 ones, unchanged and in the same order, followed by the IPv6
// flows (goldens base-dualstack.flows, pod-dualstack.flows).
func TestDualStackFlows(t *testing.T) {
	p4, err := New(nil, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(nil, dualStackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	base4, _ := p4.BaseFlows()
	base, err := p.BaseFlows()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "base-dualstack.flows", render(base))
	if got, want := render(base), render(base4); !strings.HasPrefix(got, want) {
		t.Errorf("dual-stack base flows do not start with the IPv4 base flows")
	}

	cookie := openflow.MakeCookie(1, CategoryPod, 7)
	pod, err := p.PodFlows(dualStackPod(), cookie)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "pod-dualstack.flows", render(pod))
	pod4 := dualStackPod()
	pod4.IPs = pod4.IPs[:1]
	flows4, err := p4.PodFlows(pod4, cookie)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := render(pod), render(flows4); !strings.HasPrefix(got, want) {
		t.Errorf("dual-stack pod flows do not start with the IPv4 pod flows")
	}
	// An IPv4-only pod on a dual-stack node has exactly the IPv4 flows.
	same, err := p.PodFlows(pod4, cookie)
	if err != nil {
		t.Fatal(err)
	}
	if render(same) != render(flows4) {
		t.Errorf("IPv4-only pod on a dual-stack node:\n%s\nwant\n%s", render(same), render(flows4))
	}
}

// TestIPv6ServiceCIDRBypass: with an IPv6 Service CIDR a pod's IPv6 packets
// to it skip egress policy on their first pass, as the IPv4 ones do, and
// the IPv4 flows stay as they are; without one there is no such flow.
func TestIPv6ServiceCIDRBypass(t *testing.T) {
	_, svc6, _ := net.ParseCIDR("fd00:10:96::/112")
	const want = "ipv6_dst=fd00:10:96::/112"
	for _, tc := range []struct {
		name  string
		svc6  *net.IPNet
		count int
	}{{"with IPv6 Service CIDR", svc6, 1}, {"without", nil, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := dualStackConfig(t)
			cfg.ServiceCIDRv6 = tc.svc6
			p, err := New(nil, cfg)
			if err != nil {
				t.Fatal(err)
			}
			base, err := p.BaseFlows()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range strings.Split(render(base), "\n") {
				if strings.Contains(l, want) {
					got = append(got, l)
				}
			}
			if len(got) != tc.count {
				t.Fatalf("flows matching %s: %q, want %d", want, got, tc.count)
			}
			if tc.count == 1 && (!strings.Contains(got[0], "ipv6") || !strings.Contains(got[0], "goto_table")) {
				t.Errorf("bypass flow %q: want an ipv6 match going on to L3 forwarding", got[0])
			}
		})
	}
}

func TestIPv6ConfigAndPodValidation(t *testing.T) {
	_, cidr4, _ := net.ParseCIDR("10.20.0.0/24")
	_, other6, _ := net.ParseCIDR("fd00:99::/64")
	for _, tc := range []struct {
		name string
		cfg  func(c *Config)
		want string
	}{
		{"gateway IPv6 without CIDR", func(c *Config) { c.PodCIDRv6 = nil }, "must be set together"},
		{"CIDR without gateway IPv6", func(c *Config) { c.GatewayIPv6 = nil }, "must be set together"},
		{"IPv4 gateway as IPv6", func(c *Config) { c.GatewayIPv6 = net.ParseIP("10.10.0.1") }, "not an IPv6 address"},
		{"IPv4 CIDR as IPv6", func(c *Config) { c.PodCIDRv6 = cidr4 }, "not an IPv6 prefix"},
		{"gateway IPv6 outside CIDR", func(c *Config) { c.PodCIDRv6 = other6 }, "must contain gateway IPv6"},
		{"IPv4 Service CIDR as IPv6", func(c *Config) { c.ServiceCIDRv6 = cidr4 }, "IPv6 Service CIDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := dualStackConfig(t)
			tc.cfg(&cfg)
			if _, err := New(nil, cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}

	p4, err := New(nil, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p4.PodFlows(dualStackPod(), 1); err == nil || !strings.Contains(err.Error(), "no IPv6 configuration") {
		t.Errorf("IPv6 pod on an IPv4-only pipeline: got %v", err)
	}
	p, err := New(nil, dualStackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ips  []string
		want string
	}{
		{"two IPv6", []string{"10.10.0.5", "fd00:10:10::5", "fd00:10:10::6"}, "at most one address per family"},
		{"two IPv4", []string{"10.10.0.5", "10.10.0.6"}, "at most one address per family"},
		{"4in6", []string{"10.10.0.5", "::ffff:10.10.0.6"}, "invalid address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := dualStackPod()
			pod.IPs = nil
			for _, s := range tc.ips {
				pod.IPs = append(pod.IPs, netip.MustParseAddr(s))
			}
			if _, err := p.PodFlows(pod, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
