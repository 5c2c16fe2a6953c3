package agentapi

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/pkg/podnet"
)

type fakeVerifier struct {
	disc   []openflow.FlowDiscrepancy
	rounds [][]uint8 // what Verify was called with
	err    error
}

func (f *fakeVerifier) Verify(_ context.Context, rounds []uint8) ([]openflow.FlowDiscrepancy, error) {
	f.rounds = append(f.rounds, rounds)
	return f.disc, f.err
}

type fakeIPAM struct {
	allocs map[string]net.IP
	err    error
}

func (f fakeIPAM) Allocations(context.Context) (map[string]net.IP, error) { return f.allocs, f.err }

type fakeKernel struct {
	veths  []string
	routes []Route
	err    error
}

func (f fakeKernel) PodVeths(context.Context) ([]string, error)     { return f.veths, f.err }
func (f fakeKernel) GatewayRoutes(context.Context) ([]Route, error) { return f.routes, f.err }

type fakeKube struct {
	stale map[string]string
	pods  int
	seen  []string // keys of the attachments it was asked about
}

func (f *fakeKube) StaleAttachments(_ context.Context, atts []interfacestore.Interface) (map[string]string, int, error) {
	for _, a := range atts {
		f.seen = append(f.seen, a.Key())
	}
	return f.stale, f.pods, nil
}

// auditNode is a consistent node: pods ns/a and ns/b attached, with ports,
// veths, IPs; peer node2 with its route; no flow discrepancy.
type auditNode struct {
	atts   fakePods
	ports  []ovsdb.PortInfo
	allocs map[string]net.IP
	kernel fakeKernel
	peers  fakePeers
	flows  *fakeVerifier
	kube   *fakeKube
	synced bool
}

func newAuditNode() *auditNode {
	_, peerCIDR, _ := net.ParseCIDR("10.10.1.0/24")
	n := &auditNode{allocs: map[string]net.IP{}, flows: &fakeVerifier{}, kube: &fakeKube{pods: 2}, synced: true,
		peers: fakePeers{{Name: "node2", PodCIDR: peerCIDR, NodeIP: net.ParseIP("192.168.1.2"), GatewayIP: net.ParseIP("10.10.1.1")}}}
	n.kernel.veths = []string{"weirnotapodveth"} // not a pod veth name: not counted
	n.kernel.routes = []Route{{Dst: peerCIDR, Via: net.ParseIP("10.10.1.1"), Dev: "weir-gw0"}}
	n.ports = []ovsdb.PortInfo{{Name: "weir-tun0", OFPort: 1, ExternalIDs: map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypeTunnel}},
		{Name: "weir-gw0", OFPort: 2, ExternalIDs: map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypeGateway}}}
	for i, name := range []string{"a", "b"} {
		cid := "c" + name
		host := podnet.HostIfName(cid, "eth0")
		ip := net.ParseIP(fmt.Sprintf("10.10.0.%d", 3+i))
		n.atts = append(n.atts, interfacestore.Interface{ContainerID: cid, IfName: "eth0", PortName: host, IPs: []netip.Addr{netip.MustParseAddr(ip.String())}, MAC: podnet.MACFromIP(ip),
			PodNamespace: "ns", PodName: name, PodUID: "uid-" + name})
		n.ports = append(n.ports, ovsdb.PortInfo{Name: host, OFPort: 3 + i, ExternalIDs: map[string]string{
			ovsdb.KeyWeirType: ovsdb.WeirTypePod, interfacestore.KeyPodNamespace: "ns", interfacestore.KeyPodName: name,
			interfacestore.KeyContainerID: cid, interfacestore.KeyIfName: "eth0", interfacestore.KeyIP: ip.String()}})
		n.allocs[cid+"/eth0"] = ip
		n.kernel.veths = append(n.kernel.veths, host)
	}
	return n
}

func (n *auditNode) server() *Server {
	return New(Config{NodeName: "node1", Bridge: "br-int", GatewayName: "weir-gw0", Logger: klog.Background()},
		Deps{Switch: &fakeSwitch{}, Pipeline: &fakePipeline{}, Pods: n.atts, OVSDB: fakeOVSDB{ports: n.ports}, Peers: n.peers,
			Audit: AuditSources{Flows: n.flows, IPAM: fakeIPAM{allocs: n.allocs}, Kernel: n.kernel, Kube: n.kube, Round: 7,
				InitialSyncDone: func() bool { return n.synced }}})
}

func TestAuditDetectsEachKind(t *testing.T) {
	strayHost := podnet.HostIfName("gone", "eth0")
	_, staleCIDR, _ := net.ParseCIDR("10.10.9.0/24")
	cases := []struct {
		name    string
		inject  func(n *auditNode)
		kind    string
		subject string   // exact
		detail  []string // substrings
	}{
		{"pod port without attachment", func(n *auditNode) {
			n.ports = append(n.ports, ovsdb.PortInfo{Name: strayHost, OFPort: 9, ExternalIDs: map[string]string{
				ovsdb.KeyWeirType: ovsdb.WeirTypePod, interfacestore.KeyPodNamespace: "ns", interfacestore.KeyPodName: "old", interfacestore.KeyContainerID: "gone",
				interfacestore.KeyIP: "10.10.0.9"}})
			n.kernel.veths = append(n.kernel.veths, strayHost)
		}, KindOrphanPort, "port " + strayHost + " ofport 9", []string{"pod ns/old, container gone, ip 10.10.0.9",
			"ovs-vsctl del-port br-int " + strayHost}},
		{"port named like a pod's without external_ids", func(n *auditNode) {
			n.ports = append(n.ports, ovsdb.PortInfo{Name: strayHost, OFPort: 9})
			n.kernel.veths = append(n.kernel.veths, strayHost)
		}, KindOrphanPort, "port " + strayHost + " ofport 9", []string{"no Weir external_ids"}},
		{"attachment without port", func(n *auditNode) {
			n.ports = slices.DeleteFunc(n.ports, func(p ovsdb.PortInfo) bool { return p.Name == n.atts[0].PortName })
			n.kernel.veths = slices.DeleteFunc(n.kernel.veths, func(v string) bool { return v == n.atts[0].PortName })
		}, KindOrphanAttachment, "pod ns/a uid uid-a (ca/eth0)", []string{"OVS port " + podnet.HostIfName("ca", "eth0") + " is not on br-int"}},
		{"attachment without veth", func(n *auditNode) {
			n.kernel.veths = slices.DeleteFunc(n.kernel.veths, func(v string) bool { return v == n.atts[0].PortName })
		}, KindOrphanAttachment, "pod ns/a uid uid-a (ca/eth0)", []string{"host veth " + podnet.HostIfName("ca", "eth0") + " is gone"}},
		{"attachment whose pod is gone", func(n *auditNode) {
			n.kube.stale = map[string]string{"cb/eth0": "the pod does not exist"}
		}, KindOrphanAttachment, "pod ns/b uid uid-b (cb/eth0)", []string{"the pod does not exist", "ip 10.10.0.4"}},
		{"allocation without attachment", func(n *auditNode) {
			n.allocs["stray/eth0"] = net.ParseIP("10.10.0.77")
		}, KindLeakedIP, "ip 10.10.0.77", []string{"allocated in IPAM to stray/eth0"}},
		{"attachment IP not allocated", func(n *auditNode) {
			delete(n.allocs, "cb/eth0")
		}, KindMissingIP, "ip 10.10.0.4", []string{"pod ns/b", "no allocation"}},
		{"attachment IP allocated to another", func(n *auditNode) {
			n.allocs["other/eth0"] = n.allocs["cb/eth0"]
			delete(n.allocs, "cb/eth0")
		}, KindMissingIP, "ip 10.10.0.4", []string{"allocated to other/eth0"}},
		{"attachment IP differs from allocation", func(n *auditNode) {
			n.allocs["cb/eth0"] = net.ParseIP("10.10.0.50")
		}, KindMissingIP, "ip 10.10.0.4", []string{"allocated 10.10.0.50 to it"}},
		{"veth without port", func(n *auditNode) {
			n.kernel.veths = append(n.kernel.veths, strayHost)
		}, KindOrphanVeth, "veth " + strayHost, []string{"ip link del " + strayHost}},
		{"route to no peer", func(n *auditNode) {
			n.kernel.routes = append(n.kernel.routes, Route{Dst: staleCIDR, Via: net.ParseIP("10.10.9.1"), Dev: "weir-gw0"})
		}, KindStaleRoute, "route 10.10.9.0/24 via 10.10.9.1 dev weir-gw0", []string{"no peer node has pod CIDR 10.10.9.0/24",
			"ip route del 10.10.9.0/24 dev weir-gw0"}},
		{"route via the wrong gateway", func(n *auditNode) {
			n.kernel.routes[0].Via = net.ParseIP("10.10.1.99")
		}, KindStaleRoute, "route 10.10.1.0/24 via 10.10.1.99 dev weir-gw0", []string{"peer node node2's gateway is 10.10.1.1"}},
		{"peer without route", func(n *auditNode) {
			n.kernel.routes = nil
		}, KindMissingRoute, "route 10.10.1.0/24 via 10.10.1.1 dev weir-gw0", []string{"peer node node2 (node IP 192.168.1.2)"}},
		{"cached flow not on the switch", func(n *auditNode) {
			n.flows.disc = []openflow.FlowDiscrepancy{{Kind: openflow.DiscrepancyMissing, Owner: "pod/ca/eth0", Table: pipeline.Classifier,
				Priority: 190, Cookie: uint64(openflow.MakeCookie(7, pipeline.CategoryPod, 1)), Match: "in_port=3"}}
		}, KindMissingFlow, "flow table=Classifier priority=190 cookie=0x702000000000001 match=in_port=3", []string{"owner pod/ca/eth0"}},
		{"flow of this round not in the cache", func(n *auditNode) {
			n.flows.disc = []openflow.FlowDiscrepancy{{Kind: openflow.DiscrepancyOrphan, Table: pipeline.L2Forwarding, Priority: 200,
				Cookie: uint64(openflow.MakeCookie(7, pipeline.CategoryPod, 9)), Match: "dl_dst=0a:58:0a:0a:00:09"}}
		}, KindOrphanFlow, fmt.Sprintf("flow table=L2Forwarding priority=200 cookie=%#x match=dl_dst=0a:58:0a:0a:00:09",
			uint64(openflow.MakeCookie(7, pipeline.CategoryPod, 9))), []string{"this run's round 7",
			fmt.Sprintf("ovs-ofctl -O OpenFlow15 --strict del-flows br-int 'table=%d,priority=200,dl_dst=0a:58:0a:0a:00:09'", pipeline.L2Forwarding)}},
		{"flow of an earlier round after the sync", func(n *auditNode) {
			n.flows.disc = []openflow.FlowDiscrepancy{{Kind: openflow.DiscrepancyOrphan, Table: pipeline.Classifier, Priority: 190,
				Cookie: uint64(openflow.MakeCookie(6, pipeline.CategoryPod, 1)), Match: "in_port=3"}}
		}, KindOrphanFlow, "flow table=Classifier priority=190 cookie=0x602000000000001 match=in_port=3", []string{"round 6, an earlier agent run"}},
		{"flow added by hand", func(n *auditNode) {
			n.flows.disc = []openflow.FlowDiscrepancy{{Kind: openflow.DiscrepancyOrphan, Table: 0, Priority: 1, Match: ""}}
		}, KindOrphanFlow, "flow table=Classifier priority=1 cookie=0x0 match=-", []string{"cookie round 0: not installed by Weir",
			"del-flows br-int 'table=0,priority=1'"}},
	}
	// Kinds of the other inconsistencies a case's injection causes.
	alsoCauses := map[string][]string{"attachment IP allocated to another": {KindLeakedIP}}
	clean := newAuditNode()
	rep, err := clean.server().Audit(context.Background(), &agentv1.AuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.GetInconsistencies()) != 0 || len(rep.GetNotes()) != 0 {
		t.Fatalf("consistent node: got %v, notes %q", rep.GetInconsistencies(), rep.GetNotes())
	}
	want := &agentv1.AuditCounts{Ports: 2, Attachments: 2, Ips: 2, Veths: 2, Routes: 1, Peers: 1, Pods: 2}
	if c := rep.GetChecked(); c.String() != want.String() {
		t.Errorf("counts %v, want %v", c, want)
	}
	if got := clean.flows.rounds; len(got) != 1 || got[0] != nil {
		t.Errorf("Verify called with rounds %v, want one call with nil (every round)", got)
	}
	if !slices.Equal(clean.kube.seen, []string{"ca/eth0", "cb/eth0"}) {
		t.Errorf("Kubernetes check asked about %v, want both attachments", clean.kube.seen)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := newAuditNode()
			tc.inject(n)
			rep, err := n.server().Audit(context.Background(), &agentv1.AuditRequest{})
			if err != nil {
				t.Fatal(err)
			}
			var got *agentv1.Inconsistency
			var others []string
			for _, inc := range rep.GetInconsistencies() {
				if inc.GetKind() == tc.kind && got == nil {
					got = inc
				} else {
					others = append(others, inc.GetKind())
				}
			}
			if got == nil || !slices.Equal(others, alsoCauses[tc.name]) {
				t.Fatalf("got %v, want one %s and others %v", rep.GetInconsistencies(), tc.kind, alsoCauses[tc.name])
			}
			if got.GetKind() != tc.kind || got.GetSubject() != tc.subject {
				t.Errorf("got %s %q, want %s %q", got.GetKind(), got.GetSubject(), tc.kind, tc.subject)
			}
			for _, sub := range tc.detail {
				if !strings.Contains(got.GetDetail(), sub) {
					t.Errorf("detail %q lacks %q", got.GetDetail(), sub)
				}
			}
		})
	}
}

// Before the initial sync the previous run's flows are expected: they are
// counted in a note, while this round's orphans are still reported.
func TestAuditEarlierRoundsBeforeSync(t *testing.T) {
	n := newAuditNode()
	n.synced = false
	n.flows.disc = []openflow.FlowDiscrepancy{
		{Kind: openflow.DiscrepancyOrphan, Table: 0, Priority: 190, Cookie: uint64(openflow.MakeCookie(6, pipeline.CategoryPod, 1))},
		{Kind: openflow.DiscrepancyOrphan, Table: 0, Priority: 190, Cookie: uint64(openflow.MakeCookie(5, pipeline.CategoryPeer, 1))},
		{Kind: openflow.DiscrepancyOrphan, Table: 0, Priority: 190, Cookie: uint64(openflow.MakeCookie(7, pipeline.CategoryPod, 1))},
	}
	rep, err := n.server().Audit(context.Background(), &agentv1.AuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if incs := rep.GetInconsistencies(); len(incs) != 1 || !strings.Contains(incs[0].GetSubject(), "cookie=0x702000000000001") {
		t.Errorf("got %v, want only the orphan of round 7", incs)
	}
	notes := strings.Join(rep.GetNotes(), "\n")
	for _, want := range []string{"2 flows of earlier cookie rounds await removal", "initial sync is not complete"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes %q lack %q", notes, want)
		}
	}
}

// Standalone: no peers, no Kubernetes; the report says what it skipped.
func TestAuditStandaloneNotes(t *testing.T) {
	n := newAuditNode()
	srv := New(Config{Bridge: "br-int", GatewayName: "weir-gw0", Logger: klog.Background()},
		Deps{Switch: &fakeSwitch{}, Pipeline: &fakePipeline{}, Pods: n.atts, OVSDB: fakeOVSDB{ports: n.ports},
			Audit: AuditSources{Flows: n.flows, IPAM: fakeIPAM{allocs: n.allocs}, Kernel: n.kernel, Round: 1}})
	rep, err := srv.Audit(context.Background(), &agentv1.AuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.GetInconsistencies()) != 0 {
		t.Errorf("got %v", rep.GetInconsistencies())
	}
	notes := strings.Join(rep.GetNotes(), "\n")
	for _, want := range []string{"peer routes not checked", "Kubernetes Pods not checked"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes %q lack %q", notes, want)
		}
	}
	if rep.GetChecked().GetRoutes() != 0 || rep.GetChecked().GetPods() != 0 || rep.GetRound() != 1 {
		t.Errorf("report %v", rep)
	}
}

// A source that cannot be read fails the audit (weirctl exits 2) instead of
// passing its check.
func TestAuditSourceErrors(t *testing.T) {
	boom := errors.New("boom")
	cases := map[string]func(n *auditNode) AuditSources{
		"ipam":   func(n *auditNode) AuditSources { return AuditSources{IPAM: fakeIPAM{err: boom}} },
		"kernel": func(n *auditNode) AuditSources { return AuditSources{Kernel: fakeKernel{err: boom}} },
		"flows":  func(n *auditNode) AuditSources { return AuditSources{Flows: &fakeVerifier{err: boom}} },
	}
	for _, name := range slices.Sorted(maps.Keys(cases)) {
		t.Run(name, func(t *testing.T) {
			n := newAuditNode()
			srv := New(Config{Bridge: "br-int", Logger: klog.Background()}, Deps{Switch: &fakeSwitch{}, Pipeline: &fakePipeline{},
				Pods: n.atts, OVSDB: fakeOVSDB{ports: n.ports}, Audit: cases[name](n)})
			_, err := srv.Audit(context.Background(), &agentv1.AuditRequest{})
			if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "boom") {
				t.Errorf("got %v, want Unavailable with the cause", err)
			}
		})
	}
}

func TestIsPodVethName(t *testing.T) {
	for name, want := range map[string]bool{
		podnet.HostIfName("c", "eth0"): true,
		"weir-gw0":                     false,
		"weir0123456789":               false, // 10 digits
		"weir0123456789ab":             false, // 12
		"weir0123456789A":              false,
		"veth0123456789a":              false,
	} {
		if got := isPodVethName(name); got != want {
			t.Errorf("isPodVethName(%q) = %v, want %v", name, got, want)
		}
	}
}

// fakeKernel6 is a kernel source that also lists IPv6 peer routes.
type fakeKernel6 struct {
	fakeKernel
	routes6 []Route
}

func (f fakeKernel6) GatewayRoutesV6(context.Context) ([]Route, error) { return f.routes6, f.err }

// TestAuditIPv6 audits IPv6-only and dual-stack nodes: each IPAM is
// checked against the attachments' addresses of its family (on an
// IPv6-only node the first family's IPAM is the IPv6 one), and the IPv6
// peer routes when the kernel source lists them (their next hop may be
// unknown); a kernel source without them is noted, not failed.
func TestAuditIPv6(t *testing.T) {
	_, peer4, _ := net.ParseCIDR("10.10.1.0/24")
	_, peer6, _ := net.ParseCIDR("fd00:10:11::/64")
	_, local4, _ := net.ParseCIDR("10.10.0.0/24")
	_, local6, _ := net.ParseCIDR("fd00:10:10::/64")
	type node struct {
		cfg    Config
		atts   fakePods
		src    AuditSources
		peers  fakePeers
		allocs [2]map[string]net.IP // by family
		kernel fakeKernel6
		v6     bool // the kernel source lists IPv6 routes
	}
	// build returns a consistent node: pods a and b; with dual, IPv4 and
	// IPv6 (two IPAMs), else IPv6 only; the peer's routes of each family.
	build := func(dual bool) *node {
		n := &node{allocs: [2]map[string]net.IP{{}, {}}, v6: true}
		n.cfg = Config{NodeName: "node1", Bridge: "br-int", GatewayName: "weir-gw0", PodCIDR: local6, Logger: klog.Background()}
		p := pipeline.PeerNode{Name: "node2", NodeIP: net.ParseIP("2001:db8:2::2"), PodCIDRv6: peer6, GatewayIPv6: net.ParseIP("fd00:10:11::1")}
		n.kernel.routes6 = []Route{{Dst: peer6, Dev: "weir-gw0"}} // next hop not read
		if dual {
			n.cfg.PodCIDR, n.cfg.PodCIDRv6 = local4, local6
			p.PodCIDR, p.GatewayIP = peer4, net.ParseIP("10.10.1.1")
			n.kernel.routes = []Route{{Dst: peer4, Via: net.ParseIP("10.10.1.1"), Dev: "weir-gw0"}}
		}
		n.peers = fakePeers{p}
		for i, name := range []string{"a", "b"} {
			cid := "c" + name
			ip6 := net.ParseIP(fmt.Sprintf("fd00:10:10::%d", 3+i))
			at := interfacestore.Interface{ContainerID: cid, IfName: "eth0", PortName: podnet.HostIfName(cid, "eth0"), MAC: podnet.MACFromIP(ip6),
				PodNamespace: "ns", PodName: name}
			if dual {
				ip4 := net.ParseIP(fmt.Sprintf("10.10.0.%d", 3+i)).To4()
				at.IPs = append(at.IPs, netip.MustParseAddr(ip4.String()))
				n.allocs[0][cid+"/eth0"] = ip4
			}
			at.IPs = append(at.IPs, netip.MustParseAddr(ip6.String()))
			n.allocs[1][cid+"/eth0"] = ip6
			n.atts = append(n.atts, at)
			n.kernel.veths = append(n.kernel.veths, at.PortName)
		}
		return n
	}
	server := func(n *node) *Server {
		var ports []ovsdb.PortInfo
		for i, at := range n.atts {
			ports = append(ports, ovsdb.PortInfo{Name: at.PortName, OFPort: 3 + i, ExternalIDs: map[string]string{ovsdb.KeyWeirType: ovsdb.WeirTypePod}})
		}
		src := AuditSources{Round: 1}
		if n.cfg.PodCIDRv6 != nil { // dual-stack
			src.IPAM, src.IPAMv6 = fakeIPAM{allocs: n.allocs[0]}, fakeIPAM{allocs: n.allocs[1]}
		} else {
			src.IPAM = fakeIPAM{allocs: n.allocs[1]}
		}
		src.Kernel = n.kernel.fakeKernel
		if n.v6 {
			src.Kernel = n.kernel
		}
		return New(n.cfg, Deps{Switch: &fakeSwitch{}, Pipeline: &fakePipeline{}, Pods: n.atts, OVSDB: fakeOVSDB{ports: ports},
			Peers: n.peers, Audit: src})
	}
	for _, tc := range []struct {
		name    string
		dual    bool
		inject  func(n *node)
		kind    string // "": consistent
		subject string
		notes   []string
	}{
		{name: "IPv6-only consistent"},
		{name: "dual-stack consistent", dual: true},
		{name: "IPv6-only IP not allocated", inject: func(n *node) { delete(n.allocs[1], "cb/eth0") },
			kind: KindMissingIP, subject: "ip fd00:10:10::4"},
		{name: "IPv6-only leaked IP", inject: func(n *node) { n.allocs[1]["gone/eth0"] = net.ParseIP("fd00:10:10::99") },
			kind: KindLeakedIP, subject: "ip fd00:10:10::99"},
		{name: "dual-stack IPv6 IP not allocated", dual: true, inject: func(n *node) { delete(n.allocs[1], "ca/eth0") },
			kind: KindMissingIP, subject: "ip fd00:10:10::3"},
		{name: "dual-stack IPv6 IP allocated another", dual: true, inject: func(n *node) { n.allocs[1]["ca/eth0"] = net.ParseIP("fd00:10:10::50") },
			kind: KindMissingIP, subject: "ip fd00:10:10::3"},
		{name: "IPv6-only missing route", inject: func(n *node) { n.kernel.routes6 = nil },
			kind: KindMissingRoute, subject: "route fd00:10:11::/64 via fd00:10:11::1 dev weir-gw0"},
		{name: "IPv6 route via the wrong gateway", dual: true, inject: func(n *node) { n.kernel.routes6[0].Via = net.ParseIP("fd00:10:11::9") },
			kind: KindStaleRoute, subject: "route fd00:10:11::/64 via fd00:10:11::9 dev weir-gw0"},
		{name: "dual-stack, IPv4 routes only", dual: true, inject: func(n *node) { n.v6 = false },
			notes: []string{"IPv6 peer routes not checked: the kernel source lists IPv4 routes only"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := build(tc.dual)
			if tc.inject != nil {
				tc.inject(n)
			}
			rep, err := server(n).Audit(context.Background(), &agentv1.AuditRequest{})
			if err != nil {
				t.Fatal(err)
			}
			incs := rep.GetInconsistencies()
			if tc.kind == "" && len(incs) != 0 || tc.kind != "" && (len(incs) != 1 || incs[0].GetKind() != tc.kind || incs[0].GetSubject() != tc.subject) {
				t.Errorf("got %v, want %q %q", incs, tc.kind, tc.subject)
			}
			// Notes of the sources this test leaves out.
			var notes []string
			for _, nt := range rep.GetNotes() {
				if !strings.Contains(nt, "flows not checked") && !strings.Contains(nt, "Kubernetes Pods not checked") {
					notes = append(notes, nt)
				}
			}
			if !slices.Equal(notes, tc.notes) {
				t.Errorf("notes %q, want %q", notes, tc.notes)
			}
			wantIPs := uint32(2)
			if tc.dual {
				wantIPs = 4
			}
			if c := rep.GetChecked(); tc.inject == nil && (c.GetIps() != wantIPs || c.GetAttachments() != 2 || c.GetPeers() != 1) {
				t.Errorf("counts %v, want %d IPs, 2 attachments, 1 peer", c, wantIPs)
			}
		})
	}
}
