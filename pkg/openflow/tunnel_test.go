package openflow

import (
	"net"
	"strings"
	"testing"
)

// TestTunnelAddressFamily: SetTunDst, MatchTunSrc and MatchTunDst choose
// the IPv4 or the IPv6 tunnel field by the address family (an IPv4
// address in its 16-byte form is IPv4), and refuse what is no address.
func TestTunnelAddressFamily(t *testing.T) {
	v4in16 := net.ParseIP("192.0.2.2") // net.ParseIP returns the 16-byte form
	tests := []struct {
		name    string
		build   func(*FlowBuilder) *FlowBuilder
		want    string // rendered match and actions
		wantErr string
	}{
		{"set IPv4", func(b *FlowBuilder) *FlowBuilder { return b.SetTunDst(net.IPv4(192, 0, 2, 2).To4()) },
			"priority=1 actions=set_field:192.0.2.2->tun_dst", ""},
		{"set IPv4 in 16 bytes", func(b *FlowBuilder) *FlowBuilder { return b.SetTunDst(v4in16) },
			"priority=1 actions=set_field:192.0.2.2->tun_dst", ""},
		{"set IPv6", func(b *FlowBuilder) *FlowBuilder { return b.SetTunDst(net.ParseIP("2001:db8::2")) },
			"priority=1 actions=set_field:2001:db8::2->tun_ipv6_dst", ""},
		{"match IPv4", func(b *FlowBuilder) *FlowBuilder { return b.MatchTunSrc(v4in16).MatchTunDst(net.ParseIP("192.0.2.1")) },
			"priority=1,tun_src=192.0.2.2,tun_dst=192.0.2.1 actions=drop", ""},
		{"match IPv6", func(b *FlowBuilder) *FlowBuilder {
			return b.MatchTunSrc(net.ParseIP("2001:db8::2")).MatchTunDst(net.ParseIP("2001:db8::1"))
		}, "priority=1,tun_ipv6_src=2001:db8::2,tun_ipv6_dst=2001:db8::1 actions=drop", ""},
		{"set nil", func(b *FlowBuilder) *FlowBuilder { return b.SetTunDst(nil) }, "", "set tunnel destination: invalid IP address"},
		{"set 3 bytes", func(b *FlowBuilder) *FlowBuilder { return b.SetTunDst(net.IP{1, 2, 3}) }, "", "set tunnel destination: invalid IP address"},
		{"match nil", func(b *FlowBuilder) *FlowBuilder { return b.MatchTunSrc(nil) }, "", "invalid IP address"},
		{"IPv6 into an IPv4 field", func(b *FlowBuilder) *FlowBuilder {
			return b.Action(SetIPField(FieldTunDst, net.ParseIP("2001:db8::2")))
		}, "", "value has 16 bytes, field has 4"},
		{"IPv4 into an IPv6 field", func(b *FlowBuilder) *FlowBuilder {
			return b.Action(SetIPField(FieldTunIPv6Dst, v4in16))
		}, "", "value has 4 bytes, field has 16"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := tc.build(NewFlow(0, 1)).Done()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.String(); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}
