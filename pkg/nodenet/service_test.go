package nodenet_test

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

// fakeKubeProxy is what kube-proxy (iptables mode) does for a ClusterIP
// Service, written as nftables: DNAT of the ClusterIP:port to one endpoint,
// in a table of its own in the node's namespace.
func fakeKubeProxy(t *testing.T, n *simNode, dnat map[string]string) {
	t.Helper()
	var rules strings.Builder
	for vip, ep := range dnat {
		host, port, err := net.SplitHostPort(vip)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&rules, "\t\tip daddr %s tcp dport %s dnat to %s\n", host, port, ep)
	}
	ruleset := fmt.Sprintf(`table ip fake-kube-proxy {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
%s	}
}
`, rules.String())
	cmd := exec.Command("ip", "netns", "exec", n.ovs.NetNS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f - in %s: %v\n%s\n%s", n.ovs.NetNS, err, out, ruleset)
	}
}

// TestServiceReplies proves the "replies via the gateway" flows with the
// kube-proxy path: pod a on node 1 connects to a ClusterIP, node 1's kernel
// DNATs it (fakeKubeProxy) to an endpoint on node 1 (pod b) or on node 2
// (pod c) and routes it back into OVS through the gateway; the endpoint's
// reply must go back through node 1's gateway to be un-DNATed, or the
// client sees an answer from the wrong address. With the flows deleted the
// same connections fail; with them back they work again.
func TestServiceReplies(t *testing.T) {
	began := time.Now()
	n1, n2 := twoNodes(t)
	for _, n := range []*simNode{n1, n2} {
		mustExec(t, n.ovs, "", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	}
	a := n1.addPod(t, "a", 2, 3)
	b := n1.addPod(t, "b", 3, 4)
	c := n2.addPod(t, "c", 2, 3)
	peerNodes(t, n1, n2)
	for _, p := range []*ovstest.Pod{b, c} {
		serveWhoAmI(t, p.NetNS, net.JoinHostPort(p.IP, "8080"), p.Name)
	}
	fakeKubeProxy(t, n1, map[string]string{
		"10.96.0.10:80": net.JoinHostPort(b.IP, "8080"), // endpoint on the same node
		"10.96.0.11:80": net.JoinHostPort(c.IP, "8080"), // endpoint on the other node
	})
	t.Logf("two nodes, three pods, fake kube-proxy up in %v", time.Since(began).Round(time.Millisecond))

	cases := []struct {
		name, addr, want string
	}{
		{"ClusterIP, endpoint on the same node", "10.96.0.10:80", "b"},
		{"ClusterIP, endpoint on the other node", "10.96.0.11:80", "c"},
		{"pod to pod on the same node, no service", net.JoinHostPort(b.IP, "8080"), "b"},
		{"pod to pod across nodes, no service", net.JoinHostPort(c.IP, "8080"), "c"},
	}
	check := func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				start := time.Now()
				who, seen, err := waitAnswer(a.NetNS, tc.addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				// The endpoint sees the client pod's own address: service
				// traffic to pods is DNATed only, never masqueraded.
				if who != tc.want || !seen.IP.Equal(net.ParseIP(a.IP)) {
					t.Fatalf("answered by %q seeing %v, want %q seeing %s", who, seen, tc.want, a.IP)
				}
				t.Logf("%s answered in %v", who, time.Since(start).Round(time.Microsecond))
			})
		}
	}
	t.Run("with the flows", check)

	// The reply flows in the switch counted the service replies.
	replyFlows := func(n *simNode) []*openflow.Flow {
		base, err := n.pipe.BaseFlows()
		if err != nil {
			t.Fatal(err)
		}
		var out []*openflow.Flow
		for _, f := range base {
			if f.Table == pipeline.L3Forwarding && strings.Contains(f.String(), "ct_mark") {
				out = append(out, f)
			}
		}
		if len(out) != 2 {
			t.Fatalf("want 2 reply-via-gateway flows (pod and tunnel), got %d", len(out))
		}
		return out
	}
	n1.ovs.MustAppctl(t, "revalidator/wait") // datapath flow stats reach the OpenFlow flows
	st, err := n1.sw.DumpFlows(testctx.Timeout(t, callTimeout), openflow.FlowFilter{Table: ptr(pipeline.L3Forwarding)})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range replyFlows(n1) {
		for _, s := range st {
			if s.Flow.Key() == want.Key() {
				t.Logf("node1 %d packets: %s", s.Packets, want)
				if s.Packets == 0 {
					t.Errorf("the flow counted no packet: %s", want)
				}
			}
		}
	}

	t.Run("without the flows service replies are lost", func(t *testing.T) {
		ctx := testctx.Timeout(t, callTimeout)
		var del, add []openflow.FlowOp
		for _, n := range []*simNode{n1, n2} {
			for _, f := range replyFlows(n) {
				del = append(del, openflow.Delete(f))
				add = append(add, openflow.Add(f))
			}
		}
		if err := n1.sw.Apply(ctx, del[:2]); err != nil {
			t.Fatal(err)
		}
		if err := n2.sw.Apply(ctx, del[2:]); err != nil {
			t.Fatal(err)
		}
		// Datapath flows cached from the connections above would go on
		// forwarding replies to the gateway until the revalidators have
		// caught up with the flow table.
		for _, n := range []*simNode{n1, n2} {
			n.ovs.MustAppctl(t, "revalidator/wait")
		}
		for _, tc := range cases[:2] {
			if who, seen, err := whoAnswers(a.NetNS, tc.addr, 2*time.Second); err == nil {
				t.Errorf("%s: answered by %s seeing %v without the reply flows", tc.name, who, seen)
			} else {
				t.Logf("%s without the reply flows: %v", tc.name, err)
			}
		}
		if err := n1.sw.Apply(ctx, add[:2]); err != nil {
			t.Fatal(err)
		}
		if err := n2.sw.Apply(ctx, add[2:]); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("with the flows back", check)
	t.Logf("service test body took %v", time.Since(began).Round(time.Millisecond))
}

func ptr[T any](v T) *T { return &v }
