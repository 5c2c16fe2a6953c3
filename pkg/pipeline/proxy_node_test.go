package pipeline

import (
	"net/netip"
	"strings"
	"testing"
)

// TestProxyFromGatewayFlows: with ProxyConfig.FromGateway the ServicePorts
// gain, per frontend, one ServiceLB flow from the gateway
// (goldens proxy-services-fromgateway*.flows, reviewed line by line) and
// nothing else: every flow of the pods' proxy is unchanged, and the base flows are those without it.
func TestProxyFromGatewayFlows(t *testing.T) {
	for _, tc := range []struct {
		name, golden string
		dual         bool
	}{
		{"IPv4", "proxy-services-fromgateway.flows", false},
		{"dual-stack", "proxy-services-fromgateway-dualstack.flows", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := proxyConfig(t, tc.dual)
			pods, err := New(nil, cfg)
			if err != nil {
				t.Fatal(err)
			}
			px := *cfg.Proxy
			px.FromGateway, px.NodePortIP = true, netip.MustParseAddr("169.254.0.252")
			if tc.dual {
				px.NodePortIPv6 = netip.MustParseAddr("fc00::aabb:ccdd:eefe")
			}
			cfg.Proxy = &px
			p, err := New(nil, cfg)
			if err != nil {
				t.Fatal(err)
			}
			sps := goldenServices(false)
			if tc.dual {
				sps = append(sps, goldenServices(true)...)
			}
			got := renderServices(t, p, sps)
			golden(t, tc.golden, got)

			base, _ := p.BaseFlows()
			podBase, _ := pods.BaseFlows()
			if render(base) != render(podBase) {
				t.Error("FromGateway changes the base flows")
			}
			var extra []string
			was := renderServices(t, pods, sps)
			for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
				if !strings.Contains(was, l+"\n") {
					extra = append(extra, l)
				}
			}
			// One per frontend with a group or a drop: web's ClusterIP,
			// NodePort (at the virtual NodePort address), ExternalIP and
			// LB IP (drop: it has source ranges), dns (UDP 53), local
			// (SCTP 443, drop); "empty" has no flow at all.
			want := 6
			if tc.dual {
				want = 12
			}
			if len(extra) != want {
				t.Errorf("%d flows added, want %d:\n%s", len(extra), want, strings.Join(extra, "\n"))
			}
			for _, l := range extra {
				if !strings.Contains(l, "reg0=0x1/0xf") || !strings.Contains(l, "table=ServiceLB") ||
					!(strings.Contains(l, "set_field:02:00:0a:0a:00:01->eth_dst,group:") || strings.HasSuffix(l, "actions=drop")) {
					t.Errorf("unexpected flow: %s", l)
				}
			}
		})
	}
}
