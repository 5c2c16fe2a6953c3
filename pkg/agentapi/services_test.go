package agentapi

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/pipeline"
)

type fakeServices []pipeline.ServicePort

func (f fakeServices) Services() []pipeline.ServicePort { return f }

type fakeGroupIDs map[string]uint32

func (f fakeGroupIDs) ServiceGroupID(key string) (uint32, bool) {
	id, ok := f[key]
	return id, ok
}

// fakeGroups answers DumpGroups with its stats (all of them: the server
// must pick out its groups) and records the IDs asked for.
type fakeGroups struct {
	stats []openflow.GroupStats
	err   error
	asked [][]uint32
}

func (f *fakeGroups) DumpGroups(_ context.Context, ids ...uint32) ([]openflow.GroupStats, error) {
	f.asked = append(f.asked, ids)
	return f.stats, f.err
}

func svcPort(key string, frontIP string, eps ...string) pipeline.ServicePort {
	sp := pipeline.ServicePort{Key: key, HasEndpoints: len(eps) > 0,
		Frontends: []pipeline.ServiceFrontend{{Kind: pipeline.KindClusterIP, IP: netip.MustParseAddr(frontIP), Port: 80,
			Protocol: pipeline.ProtocolTCP}}}
	for _, e := range eps {
		ap := netip.MustParseAddrPort(e)
		sp.ClusterEndpoints = append(sp.ClusterEndpoints, pipeline.ServiceEndpoint{IP: ap.Addr(), Port: ap.Port()})
	}
	return sp
}

func TestListServices(t *testing.T) {
	web := svcPort("shop/web:http/IPv4", "10.96.0.10", "10.10.0.3:8080", "10.10.1.5:8080")
	web.ClusterEndpoints[0].Local, web.ClusterEndpoints[1].Weight = true, 3
	web.Frontends = append(web.Frontends, pipeline.ServiceFrontend{Kind: pipeline.KindNodePort, Port: 30080, Protocol: pipeline.ProtocolTCP})
	web.ExternalEndpoints, web.ExternalLocal = web.ClusterEndpoints[:1], true
	web.AffinityTimeout = 3 * time.Hour
	web.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	dns := svcPort("kube-system/dns:dns/IPv6", "fd00:96::a", "[fd00:10:10::5]:53")
	dns.Frontends[0].Protocol = pipeline.ProtocolUDP
	empty := svcPort("shop/empty:/IPv4", "10.96.0.11")
	groups := func() *fakeGroups {
		return &fakeGroups{stats: []openflow.GroupStats{
			{ID: 5, Packets: 40, Bytes: 2400, FlowCount: 2, Duration: 90 * time.Second,
				Buckets: []openflow.BucketStats{{ID: 0, Packets: 10, Bytes: 600}, {ID: 1, Packets: 30, Bytes: 1800}}},
			{ID: 6, Packets: 1, Bytes: 80, FlowCount: 1, Buckets: []openflow.BucketStats{{ID: 0, Packets: 1, Bytes: 80}}},
			{ID: 99, Packets: 7}, // another owner's group
		}}
	}
	ids := fakeGroupIDs{web.Key: 5, dns.Key: 6}
	for _, tc := range []struct {
		name     string
		deps     func(d *Deps)
		req      *agentv1.ListServicesRequest
		code     codes.Code
		keys     []string
		notes    string
		askedIDs string
	}{
		{name: "proxy off", deps: func(d *Deps) {}, code: codes.FailedPrecondition},
		{name: "no group source", deps: func(d *Deps) { d.Services, d.ServiceGroups = fakeServices{web}, ids }, code: codes.FailedPrecondition},
		{name: "all", req: &agentv1.ListServicesRequest{}, keys: []string{web.Key, dns.Key, empty.Key}, askedIDs: "[5 6]"},
		{name: "namespace", req: &agentv1.ListServicesRequest{Namespace: "shop"}, keys: []string{web.Key, empty.Key}, askedIDs: "[5]"},
		{name: "name", req: &agentv1.ListServicesRequest{Namespace: "kube-system", Name: "dns"}, keys: []string{dns.Key}, askedIDs: "[6]"},
		{name: "none matches", req: &agentv1.ListServicesRequest{Name: "nope"}, askedIDs: ""},
		{name: "group missing on the switch", deps: func(d *Deps) {
			d.ServiceGroups = fakeGroupIDs{web.Key: 5, dns.Key: 7}
		}, req: &agentv1.ListServicesRequest{}, keys: []string{web.Key, dns.Key, empty.Key}, askedIDs: "[5 7]",
			notes: "group 7 of kube-system/dns:dns/IPv6 is not on the switch (weirctl audit reports it as a missing-group)"},
		{name: "switch fails", deps: func(d *Deps) { d.Groups = &fakeGroups{err: errors.New("not connected")} },
			req: &agentv1.ListServicesRequest{}, code: codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture()
			g := groups()
			f.srv.deps.Services, f.srv.deps.ServiceGroups, f.srv.deps.Groups = fakeServices{web, dns, empty}, ids, g
			if tc.deps != nil {
				d := Deps{Switch: f.sw, Pipeline: f.pipe}
				if tc.name != "proxy off" && tc.name != "no group source" {
					d.Services, d.ServiceGroups, d.Groups = fakeServices{web, dns, empty}, ids, g
				}
				tc.deps(&d)
				f.srv.deps.Services, f.srv.deps.ServiceGroups, f.srv.deps.Groups = d.Services, d.ServiceGroups, d.Groups
				if fg, ok := d.Groups.(*fakeGroups); ok {
					g = fg
				}
			}
			resp, err := f.srv.ListServices(context.Background(), tc.req)
			if status.Code(err) != tc.code {
				t.Fatalf("ListServices = %v, want %v", err, tc.code)
			}
			if err != nil {
				if tc.code == codes.FailedPrecondition && !strings.Contains(err.Error(), "the Service proxy is off (proxyMode off)") {
					t.Errorf("error %q does not say the proxy is off", err)
				}
				return
			}
			var keys []string
			for _, s := range resp.Services {
				keys = append(keys, s.Key)
			}
			if fmt.Sprint(keys) != fmt.Sprint(tc.keys) || strings.Join(resp.Notes, "; ") != tc.notes {
				t.Errorf("keys %v notes %q, want %v %q", keys, resp.Notes, tc.keys, tc.notes)
			}
			asked := ""
			if len(g.asked) > 0 {
				asked = fmt.Sprint(g.asked[0])
			}
			if len(g.asked) > 1 || asked != tc.askedIDs {
				t.Errorf("DumpGroups asked for %v, want one call for %s", g.asked, tc.askedIDs)
			}
		})
	}

	// The fields of one ServicePort.
	f := newFixture()
	f.srv.deps.Services, f.srv.deps.ServiceGroups, f.srv.deps.Groups = fakeServices{web, dns, empty}, ids, groups()
	resp, err := f.srv.ListServices(context.Background(), &agentv1.ListServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := resp.Services[0]
	want := &agentv1.ServicePort{Key: web.Key, Namespace: "shop", Name: "web", PortName: "http", Family: "IPv4",
		Frontends: []*agentv1.ServiceFrontend{{Kind: "ClusterIP", Ip: "10.96.0.10", Port: 80, Protocol: "TCP"},
			{Kind: "NodePort", Port: 30080, Protocol: "TCP"}},
		ClusterEndpoints: []*agentv1.ServiceEndpoint{
			{Ip: "10.10.0.3", Port: 8080, Local: true, Weight: 1, BucketId: 0, PacketCount: 10, ByteCount: 600},
			{Ip: "10.10.1.5", Port: 8080, Weight: 3, BucketId: 1, PacketCount: 30, ByteCount: 1800}},
		ExternalEndpoints:    []*agentv1.ServiceEndpoint{{Ip: "10.10.0.3", Port: 8080, Local: true, Weight: 1}},
		ExternalEndpointsSet: true, ExternalLocal: true, HasEndpoints: true, AffinityTimeoutSeconds: 10800,
		LoadBalancerSourceRanges: []string{"203.0.113.0/24"}, GroupId: 5, PacketCount: 40, ByteCount: 2400,
		GroupDurationSeconds: 90, GroupFlowCount: 2}
	if got.String() != want.String() {
		t.Errorf("web =\n%v\nwant\n%v", got, want)
	}
	if d := resp.Services[1]; d.Family != "IPv6" || d.Frontends[0].Protocol != "UDP" || d.ClusterEndpoints[0].Ip != "fd00:10:10::5" ||
		d.PacketCount != 1 || d.ClusterEndpoints[0].PacketCount != 1 {
		t.Errorf("dns = %v", d)
	}
	if e := resp.Services[2]; e.GroupId != 0 || e.HasEndpoints || len(e.ClusterEndpoints) != 0 || e.PortName != "" {
		t.Errorf("empty = %v", e)
	}

	// Many groups: one dump of all the switch's groups, not a request per
	// group.
	var many fakeServices
	manyIDs := fakeGroupIDs{}
	for i := range 20 {
		sp := svcPort(fmt.Sprintf("ns/s%02d:/IPv4", i), fmt.Sprintf("10.96.1.%d", i), "10.10.0.3:80")
		many, manyIDs[sp.Key] = append(many, sp), uint32(100+i)
	}
	g := &fakeGroups{}
	f.srv.deps.Services, f.srv.deps.ServiceGroups, f.srv.deps.Groups = many, manyIDs, g
	if resp, err = f.srv.ListServices(context.Background(), &agentv1.ListServicesRequest{}); err != nil {
		t.Fatal(err)
	}
	if len(g.asked) != 1 || len(g.asked[0]) != 0 || len(resp.Notes) != 20 {
		t.Errorf("20 groups: DumpGroups asked %v, %d notes", g.asked, len(resp.Notes))
	}
}

func TestSplitServiceKey(t *testing.T) {
	for _, tc := range []struct{ key, ns, name, port, family, svc string }{
		{"default/web:http/IPv4", "default", "web", "http", "IPv4", "default/web:http"},
		{"default/dns:/IPv6", "default", "dns", "", "IPv6", "default/dns:"},
		{"a/b:c", "a", "b:c", "", "", ""}, // no family: the last slash splits it off
	} {
		ns, name, port, fam := splitServiceKey(tc.key)
		if tc.svc == "" {
			continue
		}
		if ns != tc.ns || name != tc.name || port != tc.port || fam != tc.family || serviceName(tc.key) != tc.svc {
			t.Errorf("splitServiceKey(%q) = %q %q %q %q (%q)", tc.key, ns, name, port, fam, serviceName(tc.key))
		}
	}
}

// serviceTrace is ofproto/trace's output for b -> 10.96.0.10:80 with the
// proxy (shortened): the group's bucket 1 DNATs to 10.10.1.5:8080 and the
// packet goes into the tunnel.
const serviceTrace = `Flow: dp_hash=0x1234,tcp,in_port=4,nw_src=10.10.0.4,nw_dst=10.96.0.10,tp_src=40000,tp_dst=80

bridge("br-int")
----------------
 0. in_port=4, priority 190, cookie 0x102000000000002
    goto_table:1
 4. ip, priority 200, cookie 0x101000000000001
    ct(table=5,zone=65520,nat)
    nat
     -> A clone of the packet is forked to recirculate. The forked pipeline will be resumed at table 5.

Final flow: unchanged
Datapath actions: ct(zone=65520,nat),recirc(0x3)

===============================================================================
recirc(0x3) - resume conntrack with ct_state=new|trk
===============================================================================

 5. priority 0, cookie 0x101000000000001
    goto_table:6
 6. ct_state=+new+trk,tcp,reg0=0x3/0xf,nw_dst=10.96.0.10,tp_dst=80, priority 200, cookie 0x105000000000001
    group:16777217
     -> using bucket 1
    bucket 1
            ct(commit,table=7,zone=65520,nat(dst=%s))
            nat(dst=%s)
             -> A clone of the packet is forked to recirculate. The forked pipeline will be resumed at table 7.

Final flow: unchanged
Datapath actions: ct(commit,zone=65520,nat(dst=10.10.1.5:8080)),recirc(0x4)

===============================================================================
recirc(0x4) - resume conntrack with default ct_state=trk|new (use --ct-next to customize)
===============================================================================

 7. priority 0, cookie 0x101000000000001
    goto_table:8
10. ip,nw_dst=10.10.1.0/24, priority 200, cookie 0x103000000000001
    set_field:192.168.1.2->tun_dst
    goto_table:15
15. reg0=0x10000/0x10000, priority 200, cookie 0x101000000000001
    output:NXM_NX_REG1[]
     -> output port is 1

Final flow: recirc_id=0x4,tcp,tun_dst=192.168.1.2,in_port=4,nw_dst=10.10.1.5
Datapath actions: set(tunnel(dst=192.168.1.2)),1
`

func TestTraceThroughService(t *testing.T) {
	web := svcPort("shop/web:http/IPv4", "10.96.0.10", "10.10.0.3:8080", "10.10.1.5:8080")
	for _, tc := range []struct {
		name, nat, endpoint, summary string
		proxy                        bool
	}{
		{"IPv4", "10.10.1.5:8080", "10.10.1.5:8080",
			"Service shop/web:http → endpoint 10.10.1.5:8080 (bucket 1 of 2 of group 16777217); tunneled to node node2 (192.168.1.2)", true},
		{"IPv6 as OVS writes it", "[fd00:10:11::5]:8080", "[fd00:10:11::5]:8080", "", true},
		{"proxy off", "10.10.1.5:8080", "", "tunneled to node node2 (192.168.1.2)", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture()
			if tc.proxy {
				f.srv.deps.Services, f.srv.deps.ServiceGroups, f.srv.deps.Groups = fakeServices{web}, fakeGroupIDs{web.Key: 16777217}, &fakeGroups{}
			}
			f.uctl.out = fmt.Sprintf(serviceTrace, tc.nat, tc.nat)
			tr, err := f.srv.Trace(context.Background(), &agentv1.TraceRequest{SourcePod: ref("ns", "b"), DestinationIp: "10.96.0.10",
				Protocol: "tcp", DestinationPort: 80})
			if err != nil {
				t.Fatal(err)
			}
			v := tr.Verdict
			if v.Kind != agentv1.TraceVerdict_TUNNEL || v.ServiceEndpoint != tc.endpoint || tc.summary != "" && v.Summary != tc.summary {
				t.Errorf("verdict = %v", v)
			}
			hasHash := strings.Contains(tr.Flow, ",dp_hash=0x") && strings.Contains(f.uctl.args[2], ",dp_hash=0x")
			if hasHash != tc.proxy {
				t.Errorf("flow %s (sent %v): dp_hash given %v, want %v", tr.Flow, f.uctl.args, hasHash, tc.proxy)
			}
			if !tc.proxy {
				return
			}
			if v.Service != "shop/web:http" || v.ServicePortKey != web.Key || v.ServiceGroupId != 16777217 || v.ServiceBucketId != 1 {
				t.Errorf("verdict = %v", v)
			}
			if st := tr.Steps[3]; st.TableName != "ServiceLB" || !strings.HasPrefix(st.Note, "Service shop/web:http → endpoint "+tc.endpoint) {
				t.Errorf("ServiceLB step = %v", st)
			}
		})
	}
}

type fakeGroupVerifier struct {
	disc []openflow.GroupDiscrepancy
	err  error
}

func (f *fakeGroupVerifier) VerifyGroups(context.Context) ([]openflow.GroupDiscrepancy, error) {
	return f.disc, f.err
}

// TestAuditGroups: each group discrepancy is one inconsistency of its kind;
// before the initial sync uncached groups (an earlier run's) are only
// counted; without a group source nothing is checked; a failing source
// fails the audit.
func TestAuditGroups(t *testing.T) {
	disc := []openflow.GroupDiscrepancy{
		{Kind: openflow.DiscrepancyMissing, Owner: "svc/shop/web:http/IPv4", ID: 16777217},
		{Kind: openflow.DiscrepancyOrphan, ID: 33554433},
		{Kind: openflow.DiscrepancyDiffers, Owner: "svc/shop/db:/IPv4", ID: 16777218, Detail: "bucket 1 weight 1, want 3"},
	}
	for _, tc := range []struct {
		name   string
		synced bool
		v      *fakeGroupVerifier
		kinds  string
		note   string
		code   codes.Code
	}{
		{name: "after the sync", synced: true, v: &fakeGroupVerifier{disc: disc},
			kinds: "differing-group group 16777218|missing-group group 16777217|orphan-group group 33554433"}, // sorted by kind
		{name: "before the sync", v: &fakeGroupVerifier{disc: disc},
			kinds: "differing-group group 16777218|missing-group group 16777217",
			note:  "1 groups no owner caches (an earlier agent run's) await removal"},
		{name: "proxy off", synced: true},
		{name: "source fails", synced: true, v: &fakeGroupVerifier{err: errors.New("boom")}, code: codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newAuditNode()
			n.synced = tc.synced
			srv := n.server()
			srv.deps.Groups = &fakeGroups{stats: make([]openflow.GroupStats, 4)}
			if tc.v != nil {
				srv.deps.Audit.Groups = tc.v
			}
			rep, err := srv.Audit(context.Background(), &agentv1.AuditRequest{})
			if status.Code(err) != tc.code {
				t.Fatalf("Audit = %v, want %v", err, tc.code)
			}
			if err != nil {
				return
			}
			var kinds []string
			for _, i := range rep.GetInconsistencies() {
				kinds = append(kinds, i.GetKind()+" "+i.GetSubject())
			}
			if strings.Join(kinds, "|") != tc.kinds {
				t.Errorf("inconsistencies %q, want %q", kinds, tc.kinds)
			}
			notes := strings.Join(rep.GetNotes(), "\n")
			if tc.note != "" && !strings.Contains(notes, tc.note) {
				t.Errorf("notes %q lack %q", notes, tc.note)
			}
			wantGroups := uint32(4)
			if tc.v == nil {
				wantGroups = 0
			}
			if rep.GetChecked().GetGroups() != wantGroups {
				t.Errorf("checked %d groups, want %d", rep.GetChecked().GetGroups(), wantGroups)
			}
			for _, i := range rep.GetInconsistencies() {
				if i.GetKind() == KindOrphanGroup && !strings.Contains(i.GetDetail(), "ovs-ofctl -O OpenFlow15 del-groups br-int group_id=33554433") {
					t.Errorf("orphan detail %q lacks the del-groups command", i.GetDetail())
				}
			}
		})
	}
}
