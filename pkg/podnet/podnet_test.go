package podnet

import (
	"net"
	"strings"
	"testing"
)

func TestHostIfName(t *testing.T) {
	tests := []struct {
		containerID, ifName string
	}{
		{"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "eth0"},
		{"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "net1"},
		{"c2", "eth0"},
		{"", ""},
	}
	seen := map[string]string{}
	for _, tc := range tests {
		name := HostIfName(tc.containerID, tc.ifName)
		if len(name) != 15 || !strings.HasPrefix(name, "weir") {
			t.Errorf("HostIfName(%q, %q) = %q: want 15 bytes starting with weir", tc.containerID, tc.ifName, name)
		}
		if err := validIfName(name); err != nil {
			t.Errorf("HostIfName(%q, %q) = %q: %v", tc.containerID, tc.ifName, name, err)
		}
		if again := HostIfName(tc.containerID, tc.ifName); again != name {
			t.Errorf("HostIfName not stable: %q then %q", name, again)
		}
		key := tc.containerID + "/" + tc.ifName
		if prev, dup := seen[name]; dup {
			t.Errorf("HostIfName collision: %q and %q both give %q", prev, key, name)
		}
		seen[name] = key
	}
}

func TestMACFromIP(t *testing.T) {
	tests := []struct {
		ip   string
		want string
	}{
		{"10.244.1.5", "0a:58:0a:f4:01:05"},
		{"192.168.255.254", "0a:58:c0:a8:ff:fe"},
		{"::ffff:10.0.0.1", "0a:58:0a:00:00:01"},
		// IPv6: 0a:58 and the first four bytes of SHA-256 of the 16-byte
		// address. Pinned: a pod keeps its MAC across agent versions.
		{"fd00::5", "0a:58:96:aa:09:cb"},
		{"fd00::6", "0a:58:34:1b:a9:90"},
		{"2001:db8::1", "0a:58:1e:03:d7:e1"},
	}
	for _, tc := range tests {
		mac := MACFromIP(net.ParseIP(tc.ip))
		if len(mac) != 6 || mac[0]&1 != 0 || mac[0]&2 == 0 {
			t.Errorf("MACFromIP(%s) = %s: want a 48-bit locally administered unicast MAC", tc.ip, mac)
		}
		if tc.want != "" && mac.String() != tc.want {
			t.Errorf("MACFromIP(%s) = %s, want %s", tc.ip, mac, tc.want)
		}
	}
	if mac := MACFromIP(nil); mac != nil {
		t.Errorf("MACFromIP(nil) = %s, want nil", mac)
	}
}

func TestValidate(t *testing.T) {
	ipn := func(s string) *net.IPNet {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return n
	}
	good := VethConfig{
		NetNSPath:  "/var/run/netns/x",
		IfName:     "eth0",
		HostIfName: "weir0123456789a",
		IPNet:      ipn("10.0.0.5/24"),
		Gateway:    net.ParseIP("10.0.0.1"),
	}
	tests := []struct {
		name    string
		mutate  func(*VethConfig)
		wantErr string
	}{
		{name: "valid", mutate: func(*VethConfig) {}},
		{name: "valid with MAC and MTU", mutate: func(c *VethConfig) {
			c.MAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
			c.MTU = 1450
		}},
		{name: "no netns", mutate: func(c *VethConfig) { c.NetNSPath = "" }, wantErr: "NetNSPath is empty"},
		{name: "no ifname", mutate: func(c *VethConfig) { c.IfName = "" }, wantErr: "IfName: empty"},
		{name: "long host name", mutate: func(c *VethConfig) { c.HostIfName = "weir0123456789abc" }, wantErr: "longer than 15"},
		{name: "slash in name", mutate: func(c *VethConfig) { c.IfName = "eth/0" }, wantErr: "contains"},
		{name: "no IP", mutate: func(c *VethConfig) { c.IPNet = nil }, wantErr: "IPNet is empty"},
		{name: "no gateway", mutate: func(c *VethConfig) { c.Gateway = nil }, wantErr: "Gateway is empty"},
		{name: "gateway family", mutate: func(c *VethConfig) { c.Gateway = net.ParseIP("fd00::1") }, wantErr: "different families"},
		{name: "gateway is pod", mutate: func(c *VethConfig) { c.Gateway = net.ParseIP("10.0.0.5") }, wantErr: "is the pod address"},
		{name: "MTU", mutate: func(c *VethConfig) { c.MTU = 10 }, wantErr: "MTU 10 out of range"},
		{name: "multicast MAC", mutate: func(c *VethConfig) { c.MAC = net.HardwareAddr{1, 0, 0, 0, 0, 1} }, wantErr: "multicast"},
		{name: "short MAC", mutate: func(c *VethConfig) { c.MAC = net.HardwareAddr{2, 0, 0} }, wantErr: "48-bit"},
		{name: "zero MAC", mutate: func(c *VethConfig) { c.MAC = make(net.HardwareAddr, 6) }, wantErr: "all zeros"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			cfg.IPNet = ipn("10.0.0.5/24")
			tc.mutate(&cfg)
			out, err := cfg.validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("validate() error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("validate(): %v", err)
			}
			if cfg.MAC == nil && out.MAC.String() != "0a:58:0a:00:00:05" {
				t.Errorf("default MAC = %s, want the one derived from the IP", out.MAC)
			}
			if cfg.MAC != nil && out.MAC.String() != cfg.MAC.String() {
				t.Errorf("MAC = %s, want %s", out.MAC, cfg.MAC)
			}
			if len(out.IPNet.IP) != 4 {
				t.Errorf("IPv4 address not normalised to 4 bytes: %d", len(out.IPNet.IP))
			}
		})
	}
}
