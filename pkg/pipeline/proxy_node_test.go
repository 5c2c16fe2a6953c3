package pipeline

import (
	"context"
	"github.com/weirnet/weir/pkg/openflow"
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
			// externalTrafficPolicy Local: a second group over the local
			// endpoints for the external frontends from the gateway; pods
			// keep the cluster group.
			for i, sp := range etpLocal(tc.dual) {
				gs, flows, err := p.ServicePortGroups(sp, openflow.MakeCookie(1, CategoryService, uint64(50+i)), 1<<24|uint32(50+2*i), 1<<24|uint32(51+2*i))
				if err != nil {
					t.Fatal(err)
				}
				if len(gs) != 2 {
					t.Fatalf("%s: %d groups, want 2", sp.Key, len(gs))
				}
				got += "# " + sp.Key + "\n" + Renderer().Group(gs[0]) + "\n" + Renderer().Group(gs[1]) + "\n" + render(flows)
				if _, _, err := p.ServicePortFlows(sp, 1, 1); err == nil {
					t.Errorf("%s: ServicePortFlows without an external group ID accepted", sp.Key)
				}
			}
			golden(t, tc.golden, got)

			base, _ := p.BaseFlows()
			podBase, _ := pods.BaseFlows()
			if render(base) != render(podBase) {
				t.Error("FromGateway changes the base flows")
			}
			got = renderServices(t, p, sps)
			var extra []string
			was := renderServices(t, pods, sps)
			for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
				if !strings.Contains(was, l+"\n") {
					extra = append(extra, l)
				}
			}
			// One per frontend with a group or a drop: web's ClusterIP,
			// NodePort (at the virtual NodePort address), ExternalIP and
			// LB IP (to the group: its source ranges are the kernel's),
			// dns (UDP 53), local (SCTP 443, drop); "empty" has no flow
			// at all.
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

// etpLocal is a NodePort ServicePort with externalTrafficPolicy Local (per
// family): a local and a remote cluster endpoint, the local one external.
func etpLocal(dual bool) []ServicePort {
	sps := []ServicePort{{Key: "default/etp-local:http/IPv4", HasEndpoints: true, ExternalLocal: true,
		Frontends: []ServiceFrontend{
			{Kind: KindClusterIP, IP: netip.MustParseAddr("10.96.0.30"), Port: 80, Protocol: ProtocolTCP},
			{Kind: KindNodePort, Port: 30090, Protocol: ProtocolTCP}},
		ClusterEndpoints:  []ServiceEndpoint{{IP: netip.MustParseAddr("10.10.0.5"), Port: 8080, Local: true}, {IP: netip.MustParseAddr("10.10.1.7"), Port: 8080}},
		ExternalEndpoints: []ServiceEndpoint{{IP: netip.MustParseAddr("10.10.0.5"), Port: 8080, Local: true}}}}
	if dual {
		sps = append(sps, ServicePort{Key: "default/etp-local:http/IPv6", HasEndpoints: true, ExternalLocal: true,
			Frontends: []ServiceFrontend{
				{Kind: KindClusterIP, IP: netip.MustParseAddr("fd00:96::30"), Port: 80, Protocol: ProtocolTCP},
				{Kind: KindNodePort, Port: 30090, Protocol: ProtocolTCP}},
			ClusterEndpoints:  []ServiceEndpoint{{IP: netip.MustParseAddr("fd00:10:10::5"), Port: 8080, Local: true}, {IP: netip.MustParseAddr("fd00:10:11::7"), Port: 8080}},
			ExternalEndpoints: []ServiceEndpoint{{IP: netip.MustParseAddr("fd00:10:10::5"), Port: 8080, Local: true}}})
	}
	return sps
}

// TestApplyServicesExternalGroup: with FromGateway a ServicePort with
// ExternalEndpoints gets a second group ID from the run's counter, kept
// across updates (also when the list empties), both groups in its one
// owner; without FromGateway no second group.
func TestApplyServicesExternalGroup(t *testing.T) {
	cfg := proxyConfig(t, false)
	cfg.Proxy.FromGateway, cfg.Proxy.NodePortIP = true, netip.MustParseAddr("169.254.0.252")
	sw := &fakeGroupSwitch{}
	p, err := New(sw, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sp := etpLocal(false)[0]
	plain := goldenServices(false)[0]
	if err := p.ApplyServices(context.Background(), []ServicePort{sp, plain}, nil); err != nil {
		t.Fatal(err)
	}
	id, _ := p.ServiceGroupID(sp.Key)
	ext, ok := p.ServiceExternalGroupID(sp.Key)
	if !ok || ext == id || ext>>groupRoundShift != uint32(cfg.Round) {
		t.Fatalf("external group %#x (%v), cluster group %#x", ext, ok, id)
	}
	if _, ok := p.ServiceExternalGroupID(plain.Key); ok {
		t.Errorf("%s without ExternalEndpoints has an external group", plain.Key)
	}
	st := sw.calls[0][serviceOwner(sp.Key)]
	if len(st.Groups) != 2 || st.Groups[0].ID != id || st.Groups[1].ID != ext {
		t.Fatalf("owner groups %v, want %#x and %#x", st.Groups, id, ext)
	}
	// No local endpoint any more: the ID stays, the group goes.
	sp.ExternalEndpoints = []ServiceEndpoint{}
	if err := p.ApplyServices(context.Background(), []ServicePort{sp}, nil); err != nil {
		t.Fatal(err)
	}
	if again, _ := p.ServiceExternalGroupID(sp.Key); again != ext {
		t.Errorf("external group ID moved from %#x to %#x", ext, again)
	}
	if st := sw.calls[1][serviceOwner(sp.Key)]; len(st.Groups) != 1 {
		t.Errorf("%d groups with no external endpoint, want 1", len(st.Groups))
	}

	off := proxyConfig(t, false)
	po, err := New(&fakeGroupSwitch{}, off)
	if err != nil {
		t.Fatal(err)
	}
	if err := po.ApplyServices(context.Background(), etpLocal(false), nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := po.ServiceExternalGroupID(sp.Key); ok {
		t.Error("an external group without FromGateway")
	}
}
