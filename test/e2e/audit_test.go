package e2e

// Audit (weirctl audit): clean on a running node; an orphan flow, an
// orphan port, an orphan veth and a stale route injected by hand are each
// reported with their subject; removed again, the node is clean. (A leaked
// IP cannot be injected into a running agent from outside: the audit reads
// the allocator itself; the unit tests of pkg/agentapi cover that kind.)

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
)

// auditReport runs `weirctl audit -o json` against node's agent.
func (s *suite) auditReport(ctx context.Context, node string) (*agentv1.AuditReport, weirctlResult, error) {
	r := s.weirctl(ctx, node, "-o", "json", "audit")
	if r.code != 0 && r.code != 1 {
		return nil, r, fmt.Errorf("weirctl audit: %s", r)
	}
	rep := &agentv1.AuditReport{}
	if err := protojson.Unmarshal([]byte(r.stdout), rep); err != nil {
		return nil, r, fmt.Errorf("weirctl audit: decoding %q: %w", r.stdout, err)
	}
	if (r.code == 1) != (len(rep.GetInconsistencies()) > 0) {
		return nil, r, fmt.Errorf("weirctl audit exited %d with %d inconsistencies", r.code, len(rep.GetInconsistencies()))
	}
	return rep, r, nil
}

// auditUntilClean waits until node's audit reports nothing (other tests may have
// left pods terminating).
func (s *suite) auditUntilClean(ctx context.Context, t *testing.T, node string) *agentv1.AuditReport {
	t.Helper()
	var rep *agentv1.AuditReport
	err := eventually(60*time.Second, func() error {
		var err error
		rep, _, err = s.auditReport(ctx, node)
		if err != nil {
			return err
		}
		if incs := rep.GetInconsistencies(); len(incs) > 0 {
			return fmt.Errorf("audit of %s not clean: %v", node, incs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestAudit(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	node := s.cfg.NodeName(1)

	rep := s.auditUntilClean(ctx, t, node)
	c := rep.GetChecked()
	t.Logf("clean audit of %s: %v, notes %q", node, c, rep.GetNotes())
	// Node 1 runs a1 and a2 (and others' pods); node 2 is its peer.
	if c.GetPorts() < 2 || c.GetAttachments() < 2 || c.GetIps() < 2 || c.GetVeths() < 2 || c.GetRoutes() < 1 ||
		c.GetPeers() < 1 || c.GetFlows() == 0 || c.GetPods() < 2 || rep.GetNodeName() != node || rep.GetRound() == 0 {
		t.Fatalf("the audit checked too little: %v (node %q round %d)", c, rep.GetNodeName(), rep.GetRound())
	}

	// The injections, each removed again also when the test fails.
	const (
		strayVeth = "weire2e0a0d17ff" // Weir's pod veth naming: "weir" + 11 hex digits
		strayPeer = "audite2epeer"
		strayPort = "weire2e0b0d17ff" // a pod-named OVS port without an attachment
		portPeer  = "audite2eport"
		flowMatch = "ip,nw_dst=10.255.77.77"
	)
	// A stray route of the node's pod family. On an IPv6-only node it is an
	// IPv6 one and carries Weir's route protocol (87, nodenet.
	// RouteProtocolWeir): the audit takes only those for Weir's over IPv6
	// (over IPv4 also the legacy onlink routes, as the IPv4 injection is),
	// others being an administrator's business; and it does not read an
	// IPv6 route's next hop back, so the subject has "via ?".
	strayRoute, strayVia, strayProto, wantVia := "10.250.77.0/24", "10.250.77.1", []string{}, "10.250.77.1"
	if !s.cfg.HasIPv4() {
		strayRoute, strayVia, strayProto, wantVia = "fd00:250:77::/64", "fd00:250:77::1", []string{"proto", "87"}, "?"
	}
	steps := []struct{ add, del []string }{
		{[]string{"ovs-ofctl", "-O", "OpenFlow15", "add-flow", "br-int", "table=0,priority=1,cookie=0," + flowMatch + ",actions=drop"},
			[]string{"ovs-ofctl", "-O", "OpenFlow15", "--strict", "del-flows", "br-int", "table=0,priority=1," + flowMatch}},
		{[]string{"ip", "link", "add", strayVeth, "type", "veth", "peer", "name", strayPeer}, []string{"ip", "link", "del", strayVeth}},
		{[]string{"sh", "-c", fmt.Sprintf("ip link add %s type veth peer name %s && ovs-vsctl add-port br-int %s", strayPort, portPeer, strayPort)},
			[]string{"sh", "-c", fmt.Sprintf("ovs-vsctl --if-exists del-port br-int %[1]s; ip link del %[1]s", strayPort)}},
		{append([]string{"ip", "route", "add", strayRoute, "via", strayVia, "dev", "weir-gw0", "onlink"}, strayProto...), []string{"ip", "route", "del", strayRoute, "dev", "weir-gw0"}},
	}
	for _, st := range steps {
		if _, err := s.nodeExec(ctx, node, st.add...); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if out, err := s.nodeExec(context.Background(), node, st.del...); err != nil && !strings.Contains(out, "Cannot find") &&
				!strings.Contains(out, "No such process") {
				t.Errorf("cleanup: %v", err)
			}
		})
	}

	rep, r, err := s.auditReport(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	if r.code != 1 {
		t.Fatalf("weirctl audit exited %d with the injections, want 1: %s", r.code, r)
	}
	want := map[string]string{ // kind -> subject (prefix)
		"orphan-flow": "flow table=Classifier priority=1 cookie=0x0 match=",
		"orphan-port": "port " + strayPort + " ofport ",
		"orphan-veth": "veth " + strayVeth,
		"stale-route": fmt.Sprintf("route %s via %s dev weir-gw0", strayRoute, wantVia),
	}
	var flowDetail string
	var kinds []string
	for _, inc := range rep.GetInconsistencies() {
		kinds = append(kinds, inc.GetKind())
		prefix, ok := want[inc.GetKind()]
		if !ok || !strings.HasPrefix(inc.GetSubject(), prefix) {
			t.Errorf("unexpected inconsistency %s %q: %s", inc.GetKind(), inc.GetSubject(), inc.GetDetail())
			continue
		}
		switch inc.GetKind() {
		case "orphan-flow":
			if !strings.Contains(inc.GetSubject(), "nw_dst=10.255.77.77") {
				t.Errorf("orphan flow subject %q lacks its match", inc.GetSubject())
			}
			flowDetail = inc.GetDetail()
		case "orphan-port":
			if !strings.Contains(inc.GetDetail(), "ovs-vsctl del-port br-int "+strayPort) {
				t.Errorf("orphan-port detail %q does not say how to remove it", inc.GetDetail())
			}
		}
	}
	slices.Sort(kinds)
	if !slices.Equal(kinds, []string{"orphan-flow", "orphan-port", "orphan-veth", "stale-route"}) {
		t.Errorf("kinds %v, want one each of orphan-flow, orphan-port, orphan-veth, stale-route", kinds)
	}
	// The table output lists them too.
	tr := s.weirctl(ctx, node, "audit")
	for _, w := range []string{"KIND", "SUBJECT", "orphan-veth", strayVeth, "orphan-port", strayPort} {
		if tr.code != 1 || !strings.Contains(tr.stdout, w) {
			t.Errorf("weirctl audit (table) lacks %q or exit is not 1: %s", w, tr)
		}
	}

	// The orphan flow's detail says how to remove it: run exactly that.
	_, del, ok := strings.Cut(flowDetail, "remove it: ")
	if !ok || !strings.HasPrefix(del, "ovs-ofctl ") {
		t.Fatalf("orphan-flow detail %q gives no ovs-ofctl command", flowDetail)
	}
	if _, err := s.nodeExec(ctx, node, "sh", "-c", del); err != nil {
		t.Fatalf("running the detail's command: %v", err)
	}
	for _, st := range steps[1:] {
		if _, err := s.nodeExec(ctx, node, st.del...); err != nil {
			t.Fatal(err)
		}
	}
	s.auditUntilClean(ctx, t, node)
}
