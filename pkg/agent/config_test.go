package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{"defaults kept", "podCIDR: 10.244.1.0/24\n", "", func(t *testing.T, c Config) {
			if c.Bridge != "br-int" || c.DatapathType != "system" || c.MTU != 0 || c.TunnelPort != "weir-tun0" || c.CNISocket != "/var/run/weir/cni.sock" {
				t.Fatalf("defaults lost: %+v", c)
			}
		}},
		{"overrides", "podCIDR: 10.10.0.0/24\ndatapathType: netdev\nmtu: 1400\nbridge: br-x\n", "", func(t *testing.T, c Config) {
			if c.DatapathType != "netdev" || c.MTU != 1400 || c.Bridge != "br-x" || c.MgmtSocket() != "/var/run/openvswitch/br-x.mgmt" {
				t.Fatalf("overrides not applied: %+v", c)
			}
		}},
		{"cluster mode", "kubeconfig: /etc/weir/kubeconfig\nnodeName: node-a\n", "", func(t *testing.T, c Config) {
			if c.PodCIDR != "" || c.Kubeconfig != "/etc/weir/kubeconfig" || c.NodeName != "node-a" {
				t.Fatalf("cluster fields not applied: %+v", c)
			}
		}},
		{"node name from NODE_NAME", "podCIDR: 10.10.0.0/24\n", "", func(t *testing.T, c Config) {
			if c.NodeName != "env-node" {
				t.Fatalf("NodeName = %q, want env-node from $NODE_NAME", c.NodeName)
			}
		}},
		{"unknown field", "podCIDR: 10.10.0.0/24\nbrdge: typo\n", "unknown field", nil},
		{"not yaml", "podCIDR: [\n", "parsing agent config", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(NodeNameEnv, "env-node")
			path := filepath.Join(t.TempDir(), "agent.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no pod CIDR, no node name", func(c *Config) { c.PodCIDR = "" }, "podCIDR is required"},
		{"bad pod CIDR with node name", func(c *Config) { c.PodCIDR = "10.0.0.0/33"; c.NodeName = "n" }, "podCIDR"},
		{"bad pod CIDR", func(c *Config) { c.PodCIDR = "10.0.0.0/33" }, "podCIDR"},
		{"ipv6 pod CIDR too small", func(c *Config) { c.PodCIDR = "fd00::/121" }, "outside /48../120"},
		{"ipv6 pod CIDR with podCIDRv6", func(c *Config) { c.PodCIDR = "fd00::/64"; c.PodCIDRv6 = "fd00:1::/64" }, "IPv6-only"},
		{"podCIDRv6 without podCIDR", func(c *Config) { c.PodCIDR = ""; c.NodeName = "n"; c.PodCIDRv6 = "fd00:1::/64" }, "static IPv4 podCIDR"},
		{"tiny pod CIDR", func(c *Config) { c.PodCIDR = "10.0.0.0/31" }, "too small"},
		{"datapath", func(c *Config) { c.DatapathType = "dpdk" }, "datapathType"},
		{"mtu", func(c *Config) { c.MTU = 100 }, "mtu 100"},
		{"relative socket", func(c *Config) { c.CNISocket = "cni.sock" }, "cniSocket"},
		{"long bridge", func(c *Config) { c.Bridge = "a-very-long-bridge-name" }, "bridge"},
		{"endpoint", func(c *Config) { c.OVSDBEndpoint = "/x.sock" }, "ovsdbEndpoint"},
		{"two IPv4 service CIDRs", func(c *Config) { c.ServiceCIDR = "10.96.0.0/16,10.97.0.0/16" }, "one CIDR per family"},
		{"bad second service CIDR", func(c *Config) { c.ServiceCIDR = "10.96.0.0/16,fd00::/129" }, "serviceCIDR"},
		{"proxy without cluster mode", func(c *Config) { c.ProxyMode = ProxyCoexist }, "needs nodeName"},
		{"proxy all without an API server address", func(c *Config) { c.NodeName = "n"; c.ProxyMode = ProxyAll }, "needs kubeAPIServerOverride"},
		{"proxy all without a Service CIDR", func(c *Config) {
			c.NodeName, c.ProxyMode, c.KubeAPIServerOverride, c.ServiceCIDR = "n", ProxyAll, "https://172.31.250.1:6443", ""
		}, "needs serviceCIDR"},
		{"proxy all without cluster mode", func(c *Config) { c.ProxyMode, c.KubeAPIServerOverride = ProxyAll, "https://172.31.250.1:6443" }, "needs nodeName"},
		{"proxy typo", func(c *Config) { c.NodeName = "n"; c.ProxyMode = "on" }, `want "off", "coexist" or "all"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.PodCIDR = "10.244.1.0/24"
			c.NodeName = ""
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"static pod CIDR", func(c *Config) { c.PodCIDR = "10.244.1.0/24" }},
		{"pod CIDR from the Node", func(c *Config) { c.NodeName = "node-a" }},
		{"pod CIDR from the Node, kubeconfig", func(c *Config) { c.NodeName = "node-a"; c.Kubeconfig = "/etc/weir/kubeconfig" }},
		{"static pod CIDR wins over the Node", func(c *Config) { c.PodCIDR = "10.244.1.0/24"; c.NodeName = "node-a" }},
		{"dual-stack service CIDRs", func(c *Config) { c.NodeName = "node-a"; c.ServiceCIDR = "10.96.0.0/16, fd00:10:96::/112" }},
		{"no service CIDR", func(c *Config) { c.NodeName = "node-a"; c.ServiceCIDR = "" }},
		{"IPv6-only service CIDR", func(c *Config) { c.NodeName = "node-a"; c.ServiceCIDR = "fd00:10:96::/112" }},
		{"proxy coexisting with kube-proxy", func(c *Config) { c.NodeName = "node-a"; c.ProxyMode = ProxyCoexist }},
		{"proxy off", func(c *Config) { c.NodeName = "node-a"; c.ProxyMode = ProxyOff }},
		{"kube-proxy-free", func(c *Config) {
			c.NodeName, c.ProxyMode, c.KubeAPIServerOverride = "node-a", ProxyAll, "https://172.31.250.1:6443"
		}},
		{"IPv6-only static pod CIDR", func(c *Config) { c.PodCIDR = "fd00:10:244:1::/64"; c.ServiceCIDR = "fd00:10:96::/112" }},
		{"dual-stack static pod CIDRs", func(c *Config) { c.PodCIDR = "10.244.1.0/24"; c.PodCIDRv6 = "fd00:10:244:1::/64" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.NodeName = ""
			tc.mutate(&c)
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestParsePodCIDRs(t *testing.T) {
	tests := []struct {
		podCIDR, podCIDRv6 string
		want               string // PodCIDRs.String()
		ipv6Only           bool
		primary            string
	}{
		{"10.244.1.0/24", "", "10.244.1.0/24", false, "10.244.1.0/24"},
		{"10.244.1.0/24", "fd00:10:244:1::/64", "10.244.1.0/24,fd00:10:244:1::/64", false, "10.244.1.0/24"},
		{"fd00:10:244:1::/64", "", "fd00:10:244:1::/64", true, "fd00:10:244:1::/64"},
	}
	for _, tc := range tests {
		c := DefaultConfig()
		c.PodCIDR, c.PodCIDRv6 = tc.podCIDR, tc.podCIDRv6
		got, err := c.ParsePodCIDRs()
		if err != nil {
			t.Errorf("%s,%s: %v", tc.podCIDR, tc.podCIDRv6, err)
			continue
		}
		if got.String() != tc.want || got.IPv6Only() != tc.ipv6Only || got.Primary().String() != tc.primary {
			t.Errorf("%s,%s: got %s (IPv6-only %v, primary %s), want %s (%v, %s)", tc.podCIDR, tc.podCIDRv6,
				got, got.IPv6Only(), got.Primary(), tc.want, tc.ipv6Only, tc.primary)
		}
	}
}
