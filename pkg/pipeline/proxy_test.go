package pipeline

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/openflow"
)

func proxyConfig(t *testing.T, dual bool) Config {
	t.Helper()
	cfg := testConfig(t)
	_, svc, _ := net.ParseCIDR("10.96.0.0/12")
	cfg.ServiceCIDR = svc
	px := &ProxyConfig{
		NodeIPs:   []netip.Addr{netip.MustParseAddr("192.168.1.10")},
		HairpinIP: netip.MustParseAddr("169.254.0.253"),
		SNATZone:  65521,
	}
	if dual {
		_, cidr6, _ := net.ParseCIDR("fd00:10:10::/64")
		_, svc6, _ := net.ParseCIDR("fd00:96::/112")
		cfg.GatewayIPv6, cfg.PodCIDRv6, cfg.ServiceCIDRv6 = net.ParseIP("fd00:10:10::1"), cidr6, svc6
		px.NodeIPs = append(px.NodeIPs, netip.MustParseAddr("fd00:192::10"))
		px.HairpinIPv6 = netip.MustParseAddr("fc00::aabb:ccdd:eeff")
	}
	cfg.Proxy = px
	return cfg
}

// goldenServices are ServicePorts covering each kind of frontend and the
// three endpoint cases (endpoints, none anywhere, none here).
func goldenServices(v6 bool) []ServicePort {
	a := func(s4, s6 string) netip.Addr {
		if v6 {
			return netip.MustParseAddr(s6)
		}
		return netip.MustParseAddr(s4)
	}
	fam := "/IPv4"
	if v6 {
		fam = "/IPv6"
	}
	src := netip.MustParsePrefix("203.0.113.0/24")
	if v6 {
		src = netip.MustParsePrefix("2001:db8:113::/48")
	}
	return []ServicePort{
		{Key: "default/web:http" + fam, HasEndpoints: true,
			Frontends: []ServiceFrontend{
				{Kind: KindClusterIP, IP: a("10.96.0.10", "fd00:96::10"), Port: 80, Protocol: ProtocolTCP},
				{Kind: KindNodePort, Port: 30080, Protocol: ProtocolTCP},
				{Kind: KindExternalIP, IP: a("198.51.100.7", "2001:db8:100::7"), Port: 80, Protocol: ProtocolTCP},
				{Kind: KindLoadBalancer, IP: a("203.0.113.9", "2001:db8:113::9"), Port: 80, Protocol: ProtocolTCP},
			},
			ClusterEndpoints: []ServiceEndpoint{
				{IP: a("10.10.0.5", "fd00:10:10::5"), Port: 8080, Local: true},
				{IP: a("10.10.1.7", "fd00:10:11::7"), Port: 8080, Weight: 3},
			},
			LoadBalancerSourceRanges: []netip.Prefix{src},
		},
		{Key: "default/dns:dns" + fam, HasEndpoints: true, AffinityTimeout: 3 * time.Hour,
			Frontends:        []ServiceFrontend{{Kind: KindClusterIP, IP: a("10.96.0.53", "fd00:96::53"), Port: 53, Protocol: ProtocolUDP}},
			ClusterEndpoints: []ServiceEndpoint{{IP: a("10.10.0.6", "fd00:10:10::6"), Port: 5353, Local: true}}},
		// No endpoints anywhere: no flow (the gateway rejects).
		{Key: "default/empty:" + fam, Frontends: []ServiceFrontend{{Kind: KindClusterIP, IP: a("10.96.0.99", "fd00:96::99"), Port: 80, Protocol: ProtocolTCP}}},
		// Endpoints elsewhere only (internalTrafficPolicy Local): drop.
		{Key: "default/local:" + fam, HasEndpoints: true,
			Frontends: []ServiceFrontend{{Kind: KindClusterIP, IP: a("10.96.0.98", "fd00:96::98"), Port: 443, Protocol: ProtocolSCTP}}},
	}
}

func renderServices(t *testing.T, p *Pipeline, sps []ServicePort) string {
	t.Helper()
	r := Renderer()
	var b strings.Builder
	var local []netip.Addr
	for i, sp := range sps {
		g, flows, err := p.ServicePortFlows(sp, openflow.MakeCookie(1, CategoryService, uint64(i+1)), 1<<24|uint32(i+1))
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("# " + sp.Key + "\n")
		if g != nil {
			b.WriteString(r.Group(g) + "\n")
		}
		for _, f := range flows {
			b.WriteString(r.Flow(f) + "\n")
		}
		local = append(local, localEndpoints(sp)...)
	}
	hp, err := p.HairpinFlows(local, openflow.MakeCookie(1, CategoryService, 100))
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString("# hairpin\n")
	b.WriteString(render(hp))
	return b.String()
}

// TestProxyFlows: the base flows with the proxy on, and the groups and
// flows of ServicePorts of every frontend kind, IPv4 and dual-stack
// (goldens proxy-*.flows, reviewed line by line). The base flows differ from
// the proxy-off goldens only where the proxy needs them to (checked below),
// so the proxy-off goldens (TestFeatureFlows, TestDualStackFlows) stay as
// they are.
func TestProxyFlows(t *testing.T) {
	for _, tc := range []struct {
		name, base, svc string
		dual            bool
	}{
		{"IPv4", "proxy-base.flows", "proxy-services.flows", false},
		{"dual-stack", "proxy-base-dualstack.flows", "proxy-services-dualstack.flows", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := proxyConfig(t, tc.dual)
			p, err := New(nil, cfg)
			if err != nil {
				t.Fatal(err)
			}
			base, err := p.BaseFlows()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.base, render(base))

			// Against the same config without the proxy: exactly the
			// ARPResponder and ConntrackState misses and the ConntrackZone
			// ct() change, and the proxy's own flows are added.
			off := cfg
			off.Proxy = nil
			po, err := New(nil, off)
			if err != nil {
				t.Fatal(err)
			}
			offFlows, _ := po.BaseFlows()
			on := strings.Split(strings.TrimSpace(render(base)), "\n")
			was := strings.Split(strings.TrimSpace(render(offFlows)), "\n")
			var changed []string
			for i, l := range was {
				if on[i] != l {
					changed = append(changed, on[i])
				}
			}
			nct := 2
			if tc.dual {
				nct = 3
			}
			if len(changed) != 1+nct {
				t.Errorf("proxy changes %d of the base flows, want %d:\n%s", len(changed), 1+nct, strings.Join(changed, "\n"))
			}
			for _, c := range changed {
				if !strings.Contains(c, "goto_table:UnSNAT") && !strings.Contains(c, "goto_table:ServiceLB") && !strings.Contains(c, "ct(table=ConntrackState,zone=65520,nat)") {
					t.Errorf("unexpected change: %s", c)
				}
			}

			sps := goldenServices(false)
			if tc.dual {
				sps = append(sps, goldenServices(true)...)
			}
			golden(t, tc.svc, renderServices(t, p, sps))
		})
	}
}

// fakeGroupSwitch records SyncOwnerStates calls.
type fakeGroupSwitch struct {
	calls []map[string]openflow.OwnerState
	fail  error
}

func (f *fakeGroupSwitch) Sync(context.Context, string, ...*openflow.Flow) error { return nil }
func (f *fakeGroupSwitch) SyncOwners(context.Context, map[string][]*openflow.Flow) error {
	return nil
}
func (f *fakeGroupSwitch) Uninstall(context.Context, string) error { return nil }
func (f *fakeGroupSwitch) DumpFlows(context.Context, openflow.FlowFilter) ([]openflow.FlowStats, error) {
	return nil, nil
}
func (f *fakeGroupSwitch) SyncOwnerStates(_ context.Context, owners map[string]openflow.OwnerState) error {
	if f.fail != nil {
		return f.fail
	}
	f.calls = append(f.calls, owners)
	return nil
}
func (f *fakeGroupSwitch) DeleteUncachedGroups(context.Context) (int, error) { return 3, nil }

func ownerNames(m map[string]openflow.OwnerState) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestApplyServices: what each call sends (one SyncOwnerStates, only the
// touched owners), group IDs (round in the top byte, stable per
// ServicePort, not reused), refusals that change nothing.
func TestApplyServices(t *testing.T) {
	sw := &fakeGroupSwitch{}
	cfg := proxyConfig(t, false)
	cfg.Round = 7
	p, err := New(sw, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sps := goldenServices(false)
	if err := p.ApplyServices(ctx, sps, nil); err != nil {
		t.Fatal(err)
	}
	if len(sw.calls) != 1 {
		t.Fatalf("%d SyncOwnerStates calls, want 1", len(sw.calls))
	}
	if got, want := ownerNames(sw.calls[0]), []string{"svc-hairpin", "svc/default/dns:dns/IPv4", "svc/default/empty:/IPv4",
		"svc/default/local:/IPv4", "svc/default/web:http/IPv4"}; !slices.Equal(got, want) {
		t.Fatalf("owners %v, want %v", got, want)
	}
	if st := sw.calls[0]["svc-hairpin"]; len(st.Flows) != 2 {
		t.Errorf("%d hairpin flows, want 2 (two local endpoints)", len(st.Flows))
	}
	if st := sw.calls[0]["svc/default/empty:/IPv4"]; len(st.Flows)+len(st.Groups) != 0 {
		t.Errorf("a ServicePort without endpoints anywhere got flows: %+v", st)
	}
	if st := sw.calls[0]["svc/default/local:/IPv4"]; len(st.Groups) != 0 || len(st.Flows) != 1 || !strings.Contains(st.Flows[0].String(), "actions=drop") {
		t.Errorf("a ServicePort with endpoints elsewhere only: want one drop flow, got %+v", st)
	}
	webID, _ := p.ServiceGroupID("default/web:http/IPv4")
	dnsID, _ := p.ServiceGroupID("default/dns:dns/IPv4")
	if webID != 7<<24|1 || dnsID != 7<<24|2 {
		t.Errorf("group IDs %#x %#x, want %#x %#x", webID, dnsID, 7<<24|1, 7<<24|2)
	}

	// An endpoint change: only that ServicePort, same group ID, no hairpin
	// change (its local endpoint stays).
	web := sps[0]
	web.ClusterEndpoints = web.ClusterEndpoints[:1]
	if err := p.ApplyServices(ctx, []ServicePort{web}, nil); err != nil {
		t.Fatal(err)
	}
	last := sw.calls[len(sw.calls)-1]
	if got := ownerNames(last); !slices.Equal(got, []string{"svc/default/web:http/IPv4"}) {
		t.Errorf("endpoint change touched %v", got)
	}
	if g := last["svc/default/web:http/IPv4"].Groups; len(g) != 1 || g[0].ID != webID || g[0].NumBuckets() != 1 {
		t.Errorf("endpoint change: groups %v, want group %#x with one bucket", g, webID)
	}

	// Refusals change nothing and send nothing.
	n := len(sw.calls)
	bad := []struct {
		name    string
		upserts []ServicePort
		deleted []string
		want    string
	}{
		{"twice", []ServicePort{web, web}, nil, "given twice"},
		{"upsert and delete", []ServicePort{web}, []string{web.Key}, "both upserted and deleted"},
		{"frontend taken", []ServicePort{{Key: "x/y:/IPv4", Frontends: web.Frontends[:1], HasEndpoints: true}}, nil, "belongs to default/web:http/IPv4"},
		{"family mix", []ServicePort{{Key: "x/z:/IPv4", Frontends: []ServiceFrontend{{Kind: KindClusterIP, IP: netip.MustParseAddr("10.96.1.1"), Port: 1, Protocol: ProtocolTCP}},
			ClusterEndpoints: []ServiceEndpoint{{IP: netip.MustParseAddr("fd00::1"), Port: 1}}}}, nil, "not of the ServicePort's family"},
		{"no IPv6 here", []ServicePort{{Key: "x/v6:/IPv6", Frontends: []ServiceFrontend{{Kind: KindClusterIP, IP: netip.MustParseAddr("fd00:96::1"), Port: 1, Protocol: ProtocolTCP}}}}, nil, "no IPv6 configuration"},
		{"too many endpoints", []ServicePort{bigService(1200)}, nil, "refused, not split"},
		{"frontend without port", []ServicePort{{Key: "x/p:/IPv4", Frontends: []ServiceFrontend{{Kind: KindClusterIP, IP: netip.MustParseAddr("10.96.1.2"), Protocol: ProtocolTCP}}}}, nil, "without a port"},
		{"bad protocol", []ServicePort{{Key: "x/q:/IPv4", Frontends: []ServiceFrontend{{Kind: KindClusterIP, IP: netip.MustParseAddr("10.96.1.3"), Port: 1, Protocol: 1}}}}, nil, "not TCP, UDP or SCTP"},
		{"endpoint without port", []ServicePort{{Key: "x/r:/IPv4", Frontends: []ServiceFrontend{{Kind: KindClusterIP, IP: netip.MustParseAddr("10.96.1.4"), Port: 1, Protocol: ProtocolTCP}},
			ClusterEndpoints: []ServiceEndpoint{{IP: netip.MustParseAddr("10.10.0.9")}}}}, nil, "endpoint 10.10.0.9 without a port"},
		{"no address", []ServicePort{{Key: "x/s:/IPv4", Frontends: []ServiceFrontend{{Kind: KindExternalIP, Port: 1, Protocol: ProtocolTCP}}, HasEndpoints: true}}, nil, "without an address"},
	}
	for _, b := range bad {
		err := p.ApplyServices(ctx, b.upserts, b.deleted)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: error %v, want %q", b.name, err, b.want)
		}
	}
	if len(sw.calls) != n {
		t.Errorf("refused calls reached the switch")
	}
	// A refused sync leaves the state as it was: the key is still new.
	sw.fail = context.DeadlineExceeded
	if err := p.ApplyServices(ctx, []ServicePort{bigService(10)}, nil); err == nil {
		t.Fatal("switch failure not reported")
	}
	sw.fail = nil
	if _, ok := p.ServiceGroupID(bigService(10).Key); ok {
		t.Error("a ServicePort whose sync failed is recorded")
	}

	// Deleting: the owner is emptied, its frontend freed, and its local
	// endpoint leaves the hairpin flows.
	if err := p.ApplyServices(ctx, nil, []string{"default/dns:dns/IPv4", "never/was:/IPv4"}); err != nil {
		t.Fatal(err)
	}
	last = sw.calls[len(sw.calls)-1]
	if got := ownerNames(last); !slices.Equal(got, []string{"svc-hairpin", "svc/default/dns:dns/IPv4"}) {
		t.Errorf("delete touched %v", got)
	}
	if st := last["svc/default/dns:dns/IPv4"]; len(st.Flows)+len(st.Groups) != 0 {
		t.Errorf("deleted owner keeps %+v", st)
	}
	if st := last["svc-hairpin"]; len(st.Flows) != 1 {
		t.Errorf("%d hairpin flows after deleting dns, want 1", len(st.Flows))
	}
	// A new ServicePort may take the freed frontend and gets a new ID.
	dns2 := sps[1]
	dns2.Key = "other/dns:dns/IPv4"
	if err := p.ApplyServices(ctx, []ServicePort{dns2}, nil); err != nil {
		t.Fatal(err)
	}
	if id, _ := p.ServiceGroupID(dns2.Key); id == dnsID || id>>24 != 7 {
		t.Errorf("new ServicePort got group ID %#x (the deleted one had %#x)", id, dnsID)
	}
	if n, err := p.DeleteStaleGroups(ctx); err != nil || n != 3 {
		t.Errorf("DeleteStaleGroups = %d, %v", n, err)
	}

	// Without Config.Proxy ApplyServices refuses.
	po, _ := New(sw, testConfig(t))
	if err := po.ApplyServices(ctx, sps, nil); err == nil || !strings.Contains(err.Error(), "Config.Proxy") {
		t.Errorf("without the proxy: %v", err)
	}
}

func bigService(n int) ServicePort {
	sp := ServicePort{Key: "big/svc:/IPv4", HasEndpoints: true,
		Frontends: []ServiceFrontend{{Kind: KindClusterIP, IP: netip.MustParseAddr("10.96.5.5"), Port: 80, Protocol: ProtocolTCP}}}
	for i := range n {
		sp.ClusterEndpoints = append(sp.ClusterEndpoints, ServiceEndpoint{
			IP: netip.AddrFrom4([4]byte{10, 20, byte(i >> 8), byte(i)}), Port: 8080})
	}
	return sp
}

func TestProxyConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
		want string
	}{
		{"same zone", func(c *Config) { c.Proxy.SNATZone = c.CTZone }, "must differ"},
		{"no hairpin", func(c *Config) { c.Proxy.HairpinIP = netip.Addr{} }, "IPv4 hairpin IP"},
		{"v6 hairpin without v6", func(c *Config) { c.Proxy.HairpinIPv6 = netip.MustParseAddr("fc00::1") }, "without IPv6"},
		{"bad node ip", func(c *Config) { c.Proxy.NodeIPs = []netip.Addr{{}} }, "node IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := proxyConfig(t, false)
			tc.mod(&cfg)
			if _, err := New(nil, cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestServiceGroupIDLimit: in round 255 the last group ID of a run is
// still a valid OpenFlow group ID, and the one after is refused.
func TestServiceGroupIDLimit(t *testing.T) {
	cfg := proxyConfig(t, false)
	cfg.Round = 255
	p, err := New(&fakeGroupSwitch{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.svc.nextGroup = maxGroupSerial - 1
	sp := bigService(2)
	if err := p.ApplyServices(context.Background(), []ServicePort{sp}, nil); err != nil {
		t.Fatal(err)
	}
	if id, _ := p.ServiceGroupID(sp.Key); id > openflow.MaxGroupID || id>>24 != 255 {
		t.Errorf("last group ID %#x (max %#x)", id, openflow.MaxGroupID)
	}
	sp2 := sp
	sp2.Key = "big/other:/IPv4"
	sp2.Frontends = []ServiceFrontend{{Kind: KindClusterIP, IP: netip.MustParseAddr("10.96.5.6"), Port: 80, Protocol: ProtocolTCP}}
	if err := p.ApplyServices(context.Background(), []ServicePort{sp2}, nil); err == nil || !strings.Contains(err.Error(), "exhausted") {
		t.Errorf("after the last ID: %v, want exhausted", err)
	}
}

// TestProxyIPv6Only: on an IPv6-only node the proxy needs only the IPv6
// hairpin IP, its base flows are the IPv6 ones, and an IPv6 ServicePort is
// realized while an IPv4 one is refused.
func TestProxyIPv6Only(t *testing.T) {
	mac, _ := net.ParseMAC("02:00:0a:0a:00:01")
	_, cidr6, _ := net.ParseCIDR("fd00:10:10::/64")
	cfg := Config{GatewayOFPort: 2, GatewayMAC: mac, GatewayIPv6: net.ParseIP("fd00:10:10::1"), PodCIDRv6: cidr6, CTZone: 65520, Round: 1,
		Proxy: &ProxyConfig{HairpinIPv6: netip.MustParseAddr("fc00::aabb:ccdd:eeff"), SNATZone: 65521}}
	sw := &fakeGroupSwitch{}
	p, err := New(sw, cfg)
	if err != nil {
		t.Fatal(err)
	}
	base, err := p.BaseFlows()
	if err != nil {
		t.Fatal(err)
	}
	got := render(base)
	for _, want := range []string{
		"table=UnSNAT, priority=200,ipv6,ipv6_dst=fc00::aabb:ccdd:eeff actions=set_field:0x20000/0x20000->reg0,ct(table=ConntrackZone,zone=65521,nat)",
		"table=ConntrackZone, priority=200,ipv6 actions=ct(table=ConntrackState,zone=65520,nat)",
		"table=ConntrackState, priority=0 actions=goto_table:ServiceLB",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("IPv6-only base flows lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, ",ip,") || strings.Contains(got, "169.254") {
		t.Errorf("IPv6-only base flows match IPv4:\n%s", got)
	}
	v6 := goldenServices(true)
	if err := p.ApplyServices(context.Background(), v6, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.ApplyServices(context.Background(), goldenServices(false)[:1], nil); err == nil || !strings.Contains(err.Error(), "no IPv4 configuration") {
		t.Errorf("IPv4 ServicePort on an IPv6-only node: %v", err)
	}
	cfg.Proxy.HairpinIP = netip.MustParseAddr("169.254.0.253")
	if _, err := New(nil, cfg); err == nil {
		t.Error("an IPv4 hairpin IP on an IPv6-only node was accepted")
	}
}
