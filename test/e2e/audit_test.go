package e2e

// Audit (weirctl audit): clean on a running node; an orphan flow, a leaked
// IP, an orphan veth and a stale route injected by hand are each reported
// with their subject; removed again, the node is clean.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1 "github.com/weirnet/weir/pkg/apis/agent/v1"
	"github.com/weirnet/weir/pkg/localcluster"
)

// ipamStateFile is the agent's IPAM state file inside a node's mount namespace.
const ipamStateFile = "/var/lib/weir/ipam.json"

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

// editIPAMFile rewrites node's IPAM state file with edit applied to its
// allocations (owner -> IP), atomically (temporary file and rename, as the
// agent writes it).
func (s *suite) editIPAMFile(ctx context.Context, node string, edit func(map[string]string)) error {
	raw, err := s.nodeExec(ctx, node, "cat", ipamStateFile)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		return fmt.Errorf("parsing %s: %w\n%s", ipamStateFile, err, raw)
	}
	allocs := map[string]string{}
	if m, ok := doc["allocations"].(map[string]any); ok {
		for k, v := range m {
			allocs[k], _ = v.(string)
		}
	}
	edit(allocs)
	doc["allocations"] = allocs
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	cmd, err := localcluster.NodeExec(ctx, s.cfg, node, "sh", "-c",
		fmt.Sprintf("umask 077 && cat > %[1]s.audit-e2e && mv %[1]s.audit-e2e %[1]s", ipamStateFile))
	if err != nil {
		return err
	}
	cmd.Stdin = strings.NewReader(string(out))
	_, err = combined(cmd)
	return err
}

// unallocatedIP returns the highest usable address of cidr that allocs
// does not hold.
func unallocatedIP(cidr *net.IPNet, allocs map[string]string) (string, error) {
	used := map[string]bool{}
	for _, ip := range allocs {
		used[ip] = true
	}
	ones, bits := cidr.Mask.Size()
	base := cidr.IP.To4()
	if base == nil || bits != 32 || ones > 30 {
		return "", fmt.Errorf("pod CIDR %s: want an IPv4 CIDR of at least /30", cidr)
	}
	n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	for h := uint32(1)<<(32-ones) - 2; h > 1; h-- { // below the broadcast, above the gateway
		v := n + h
		ip := net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).String()
		if !used[ip] {
			return ip, nil
		}
	}
	return "", fmt.Errorf("pod CIDR %s is full", cidr)
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
		strayVeth  = "weire2e0a0d17ff" // Weir's pod veth naming: "weir" + 11 hex digits
		strayPeer  = "audite2epeer"
		strayRoute = "10.250.77.0/24"
		strayVia   = "10.250.77.1"
		flowMatch  = "ip,nw_dst=10.255.77.77"
		strayOwner = "audit-e2e/eth0"
	)
	k8sNode, err := s.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, podCIDR, err := net.ParseCIDR(k8sNode.Spec.PodCIDR)
	if err != nil {
		t.Fatalf("node %s pod CIDR %q: %v", node, k8sNode.Spec.PodCIDR, err)
	}
	var strayIP string
	if err := s.editIPAMFile(ctx, node, func(allocs map[string]string) {
		if strayIP, err = unallocatedIP(podCIDR, allocs); err == nil {
			allocs[strayOwner] = strayIP
		}
	}); err != nil || strayIP == "" {
		t.Fatalf("adding a stray IPAM allocation: %v", err)
	}
	t.Cleanup(func() {
		if err := s.editIPAMFile(context.Background(), node, func(a map[string]string) { delete(a, strayOwner) }); err != nil {
			t.Errorf("removing the stray IPAM allocation: %v", err)
		}
	})
	steps := []struct{ add, del []string }{
		{[]string{"ovs-ofctl", "-O", "OpenFlow15", "add-flow", "br-int", "table=0,priority=1,cookie=0," + flowMatch + ",actions=drop"},
			[]string{"ovs-ofctl", "-O", "OpenFlow15", "--strict", "del-flows", "br-int", "table=0,priority=1," + flowMatch}},
		{[]string{"ip", "link", "add", strayVeth, "type", "veth", "peer", "name", strayPeer}, []string{"ip", "link", "del", strayVeth}},
		{[]string{"ip", "route", "add", strayRoute, "via", strayVia, "dev", "weir-gw0", "onlink"}, []string{"ip", "route", "del", strayRoute, "dev", "weir-gw0"}},
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
		"leaked-ip":   "ip " + strayIP,
		"orphan-veth": "veth " + strayVeth,
		"stale-route": fmt.Sprintf("route %s via %s dev weir-gw0", strayRoute, strayVia),
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
		case "leaked-ip":
			if !strings.Contains(inc.GetDetail(), strayOwner) {
				t.Errorf("leaked-ip detail %q does not name owner %s", inc.GetDetail(), strayOwner)
			}
		}
	}
	slices.Sort(kinds)
	if !slices.Equal(kinds, []string{"leaked-ip", "orphan-flow", "orphan-veth", "stale-route"}) {
		t.Errorf("kinds %v, want one each of leaked-ip, orphan-flow, orphan-veth, stale-route", kinds)
	}
	// The table output lists them too.
	tr := s.weirctl(ctx, node, "audit")
	for _, w := range []string{"KIND", "SUBJECT", "orphan-veth", strayVeth, "leaked-ip", strayIP} {
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
	if err := s.editIPAMFile(ctx, node, func(a map[string]string) { delete(a, strayOwner) }); err != nil {
		t.Fatal(err)
	}
	for _, st := range steps[1:] {
		if _, err := s.nodeExec(ctx, node, st.del...); err != nil {
			t.Fatal(err)
		}
	}
	s.auditUntilClean(ctx, t, node)
}
