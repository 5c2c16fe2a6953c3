package policy

import (
	"net"
	"slices"
	"testing"
)

func mustCIDR(t testing.TB, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSubtractCIDRs(t *testing.T) {
	tests := []struct {
		name   string
		base   string
		except []string
		want   []string
	}{
		{"no except", "10.0.0.0/8", nil, []string{"10.0.0.0/8"}},
		{"host bits cleared", "10.1.2.3/16", nil, []string{"10.1.0.0/16"}},
		{"one half", "10.0.0.0/8", []string{"10.0.0.0/9"}, []string{"10.128.0.0/9"}},
		{"deep", "10.0.0.0/24", []string{"10.0.0.0/26"}, []string{"10.0.0.64/26", "10.0.0.128/25"}},
		{"single host", "192.168.0.0/30", []string{"192.168.0.2/32"},
			[]string{"192.168.0.0/31", "192.168.0.3/32"}},
		{"two exceptions", "10.0.0.0/24", []string{"10.0.0.0/26", "10.0.0.192/26"},
			[]string{"10.0.0.64/26", "10.0.0.128/26"}},
		{"overlapping exceptions", "10.0.0.0/24", []string{"10.0.0.0/25", "10.0.0.0/26"},
			[]string{"10.0.0.128/25"}},
		{"except everything", "10.0.0.0/24", []string{"10.0.0.0/16"}, []string{}},
		{"except equal", "10.0.0.0/24", []string{"10.0.0.0/24"}, []string{}},
		{"except outside", "10.0.0.0/24", []string{"10.0.1.0/24"}, []string{"10.0.0.0/24"}},
		{"all addresses", "0.0.0.0/0", []string{"128.0.0.0/1"}, []string{"0.0.0.0/1"}},
		{"all but one host", "0.0.0.0/0", []string{"0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "224.0.0.0/4",
			"240.0.0.0/5", "248.0.0.0/6", "252.0.0.0/7", "254.0.0.0/8", "255.0.0.0/9", "255.128.0.0/10",
			"255.192.0.0/11", "255.224.0.0/12", "255.240.0.0/13", "255.248.0.0/14", "255.252.0.0/15",
			"255.254.0.0/16", "255.255.0.0/17", "255.255.128.0/18", "255.255.192.0/19", "255.255.224.0/20",
			"255.255.240.0/21", "255.255.248.0/22", "255.255.252.0/23", "255.255.254.0/24", "255.255.255.0/25",
			"255.255.255.128/26", "255.255.255.192/27", "255.255.255.224/28", "255.255.255.240/29",
			"255.255.255.248/30", "255.255.255.252/31"}, []string{"255.255.255.254/31"}},
		{"ipv6 except ignored", "10.0.0.0/24", []string{"fd00::/64"}, []string{"10.0.0.0/24"}},
		{"ipv6 base", "fd00::/64", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var except []*net.IPNet
			for _, e := range tc.except {
				except = append(except, mustCIDR(t, e))
			}
			got := subtractCIDRs(mustCIDR(t, tc.base), except)
			gotS := []string{}
			for _, n := range got {
				gotS = append(gotS, n.String())
			}
			if tc.want == nil {
				if got != nil {
					t.Fatalf("got %v, want nil", gotS)
				}
				return
			}
			if !slices.Equal(gotS, tc.want) {
				t.Fatalf("got %v, want %v", gotS, tc.want)
			}
			// Check by address membership on a sample of addresses.
			base, _ := toPrefix(mustCIDR(t, tc.base))
			for i := uint64(0); i < 1<<32; i += 1<<20 + 7 {
				a := base.addr | uint32(i)&^base.mask()
				in := false
				for _, n := range got {
					p, _ := toPrefix(n)
					if p.contains(prefix{addr: a, bits: 32}) {
						if in {
							t.Fatalf("address %d covered twice", a)
						}
						in = true
					}
				}
				excepted := false
				for _, e := range except {
					if p, ok := toPrefix(e); ok && p.contains(prefix{addr: a, bits: 32}) {
						excepted = true
					}
				}
				if in == excepted {
					t.Fatalf("address %d: in result %v, excepted %v", a, in, excepted)
				}
			}
		})
	}
}

func TestSubtractCIDRs6(t *testing.T) {
	tests := []struct {
		name   string
		base   string
		except []string
		want   []string
	}{
		{"no except", "fd00::/48", nil, []string{"fd00::/48"}},
		{"host bits cleared", "fd00::1:2:3/64", nil, []string{"fd00::/64"}},
		{"one half", "fd00::/64", []string{"fd00::/65"}, []string{"fd00::8000:0:0:0/65"}},
		{"deep", "fd00::/120", []string{"fd00::/122"}, []string{"fd00::40/122", "fd00::80/121"}},
		{"single host", "fd00::/126", []string{"fd00::2/128"}, []string{"fd00::/127", "fd00::3/128"}},
		{"two exceptions, out of order", "fd00::/120", []string{"fd00::c0/122", "fd00::/122"},
			[]string{"fd00::40/122", "fd00::80/122"}},
		{"byte boundary", "fd00::/64", []string{"fd00:0:0:0:ff00::/72"},
			[]string{"fd00::/65", "fd00::8000:0:0:0/66", "fd00::c000:0:0:0/67", "fd00::e000:0:0:0/68",
				"fd00::f000:0:0:0/69", "fd00::f800:0:0:0/70", "fd00::fc00:0:0:0/71", "fd00::fe00:0:0:0/72"}},
		{"except everything", "fd00::/64", []string{"fd00::/16"}, []string{}},
		{"except outside", "fd00::/64", []string{"fd01::/64"}, []string{"fd00::/64"}},
		{"ipv4 except ignored", "fd00::/64", []string{"10.0.0.0/8"}, []string{"fd00::/64"}},
		{"all addresses", "::/0", []string{"8000::/1"}, []string{"::/1"}},
		{"ipv4 base", "10.0.0.0/8", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var except []*net.IPNet
			for _, e := range tc.except {
				except = append(except, mustCIDR(t, e))
			}
			got := subtractCIDRs6(mustCIDR(t, tc.base), except)
			if tc.want == nil {
				if got != nil {
					t.Fatalf("got %v, want nil", got)
				}
				return
			}
			gotS := []string{}
			for _, n := range got {
				if len(n.IP) != 16 || len(n.Mask) != 16 {
					t.Fatalf("%v: not in 16-byte form", n)
				}
				gotS = append(gotS, n.String())
			}
			if !slices.Equal(gotS, tc.want) {
				t.Fatalf("got %v, want %v", gotS, tc.want)
			}
		})
	}
}
