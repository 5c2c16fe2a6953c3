package pipeline_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/pipeline"
	"github.com/weirnet/weir/test/ovstest"
	"github.com/weirnet/weir/test/testctx"
)

// tcp6Works reports whether a fresh IPv6 connection from pod to [ip]:port
// echoes.
func tcp6Works(t *testing.T, pod *ovstest.Pod, ip string, port int) error {
	t.Helper()
	var c net.Conn
	if err := inPod(t, pod, func() (err error) {
		c, err = net.DialTimeout("tcp6", net.JoinHostPort(ip, fmt.Sprint(port)), time.Second)
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	return echo(c, "hello")
}

// TestNetworkPolicyDualStack: allow rules apply to IPv6 on a dual-stack
// node. An ingress-isolated pod with a rule allowing TCP 8080 from another
// pod (peers: both of its addresses) accepts it over IPv6 and IPv4 and
// refuses other ports, other pods and ICMPv6 echo; an egress-isolated pod
// with a rule to an IPv6 ipBlock minus an except reaches the block and not
// the except. The switch holds exactly the rendered policy flows (OVS
// accepted and prints back the ipv6 twins), and the IPv6 packets count on
// the rule.
func TestNetworkPolicyDualStack(t *testing.T) {
	n := newDualStackNode(t)
	p1 := n.addDualStackPod(t, "p1", "10.10.0.2", "fd00:10:10::2", "02:00:0a:0a:00:02", 3)
	p2 := n.addDualStackPod(t, "p2", "10.10.0.3", "fd00:10:10::3", "02:00:0a:0a:00:03", 4)
	p3 := n.addDualStackPod(t, "p3", "10.10.0.4", "fd00:10:10::4", "02:00:0a:0a:00:04", 5)
	n.staticNeighbours(t, p1, p2, p3)
	for _, p := range []ipv6Pod{p2, p3} {
		echoServerOn(t, p.Pod, "tcp4", p.IP, 8080, 8081)
		echoServerOn(t, p.Pod, "tcp6", p.IPv6, 8080, 8081)
	}
	apply := func(t *testing.T, ch pipeline.PolicyChange) {
		t.Helper()
		if err := n.pipe.ApplyPolicy(testctx.Timeout(t, time.Minute), ch); err != nil {
			t.Fatal(err)
		}
		n.ovs.MustAppctl(t, "revalidator/wait")
	}
	type check struct {
		from   ipv6Pod
		to     string // IPv4 or IPv6 address
		port   int
		policy bool // want allowed
	}
	run := func(t *testing.T, cs []check) {
		t.Helper()
		for _, c := range cs {
			var err error
			if strings.Contains(c.to, ":") {
				err = tcp6Works(t, c.from.Pod, c.to, c.port)
			} else {
				err = tcpWorks(t, c.from.Pod, fmt.Sprintf("%s:%d", c.to, c.port))
			}
			if c.policy && err != nil {
				t.Errorf("%s -> [%s]:%d: want allowed, got %v", c.from.Name, c.to, c.port, err)
			} else if !c.policy && err == nil {
				t.Errorf("%s -> [%s]:%d: want denied, but it connected", c.from.Name, c.to, c.port)
			}
		}
	}
	localPod := func(p ipv6Pod) pipeline.LocalPod {
		return pipeline.LocalPod{IP: net.ParseIP(p.IP).To4(), OFPort: uint32(p.OFPort)}
	}

	// Without policy both families pass.
	run(t, []check{{p1, p2.IPv6, 8080, true}, {p1, p2.IP, 8081, true}})

	t.Run("ingress rule from p1 on TCP 8080, both families", func(t *testing.T) {
		rule := pipeline.PolicyRule{ID: 1, Name: "ns/p2/ingress/0", Direction: pipeline.Ingress,
			Pods:  []pipeline.LocalPod{localPod(p2)},
			Peers: []*net.IPNet{hostNet(p1.IP + "/32"), hostNet(p1.IPv6 + "/128")},
			Ports: []pipeline.PortRange{{Protocol: pipeline.ProtocolTCP, From: 8080}}}
		apply(t, pipeline.PolicyChange{Upsert: []pipeline.PolicyRule{rule},
			Isolation: &pipeline.Isolation{Ingress: []pipeline.LocalPod{localPod(p2)}}})
		checkPolicyFlows(t, n)
		before := n.nPackets(t, fmt.Sprintf("table=%d,conj_id=1", pipeline.IngressRule))
		run(t, []check{
			{p1, p2.IPv6, 8080, true},
			{p1, p2.IP, 8080, true},
			{p1, p2.IPv6, 8081, false},
			{p1, p2.IP, 8081, false},
			{p3, p2.IPv6, 8080, false},
			{p3, p2.IP, 8080, false},
			{p1, p3.IPv6, 8081, true}, // p3 is not isolated
		})
		if out, err := ping6(p1, p2.IPv6); err == nil {
			t.Errorf("ping6 p1 -> p2 passed although only TCP 8080 is allowed: %s", out)
		}
		if after := n.nPackets(t, fmt.Sprintf("table=%d,conj_id=1", pipeline.IngressRule)); after < before+2 {
			t.Errorf("rule 1 counted %d packets (before %d), want at least the two SYNs", after, before)
		}
		// The node's own IPv6 traffic still reaches the isolated pod.
		if out, err := n.ovs.Exec("", "ping", "-6", "-n", "-c", "2", "-W", "1", "-i", "0.2", "-I", gwIPv6, p2.IPv6); err != nil {
			t.Errorf("node -> isolated p2 over IPv6: %v: %s", err, out)
		}
		apply(t, pipeline.PolicyChange{Delete: []uint32{1}, Isolation: &pipeline.Isolation{}})
		run(t, []check{{p3, p2.IPv6, 8081, true}})
	})

	t.Run("egress rule to an IPv6 ipBlock minus an except", func(t *testing.T) {
		// fd00:10:10::/125 except fd00:10:10::4/127, as pkg/policy
		// resolves it: ::0/126 and ::6/127. p2 (::3) is in, p3 (::4) out.
		rule := pipeline.PolicyRule{ID: 2, Name: "ns/p1/egress/0", Direction: pipeline.Egress,
			Pods:  []pipeline.LocalPod{localPod(p1)},
			Peers: []*net.IPNet{hostNet("fd00:10:10::/126"), hostNet("fd00:10:10::6/127")}}
		apply(t, pipeline.PolicyChange{Upsert: []pipeline.PolicyRule{rule},
			Isolation: &pipeline.Isolation{Egress: []pipeline.LocalPod{localPod(p1)}}})
		checkPolicyFlows(t, n)
		run(t, []check{
			{p1, p2.IPv6, 8080, true},
			{p1, p2.IPv6, 8081, true}, // any port
			{p1, p3.IPv6, 8080, false},
			{p1, p2.IP, 8080, false}, // the rule has no IPv4 peer
			{p2, p3.IPv6, 8080, true},
		})
		if out, err := ping6(p1, p2.IPv6); err != nil {
			t.Errorf("ping6 p1 -> p2 (in the block): %v: %s", err, out)
		}
		if out, err := ping6(p1, p3.IPv6); err == nil {
			t.Errorf("ping6 p1 -> p3 (excepted) passed: %s", out)
		}
		apply(t, pipeline.PolicyChange{Delete: []uint32{2}, Isolation: &pipeline.Isolation{}})
		run(t, []check{{p1, p3.IPv6, 8080, true}})
		checkPolicyFlows(t, n)
	})
}

// TestNetworkPolicyIPv6Only: policy on an IPv6-only node with IPv6-only
// pods, given to the pipeline as pkg/policy does (LocalPod.IP their IPv6
// address, or nil). An ingress-isolated pod with a rule allowing TCP 8080
// from one pod accepts it and refuses other ports, other pods and ICMPv6
// echo, while the node still reaches it; an egress-isolated pod with a
// rule to one pod's /128 reaches that pod only; lifting the isolation
// restores everything. The switch holds exactly the rendered policy flows
// and the isolation drops count.
func TestNetworkPolicyIPv6Only(t *testing.T) {
	n := newIPv6OnlyNode(t)
	p1 := n.addIPv6OnlyPod(t, "p1", "fd00:10:10::2", "02:00:0a:0a:00:02", 3)
	p2 := n.addIPv6OnlyPod(t, "p2", "fd00:10:10::3", "02:00:0a:0a:00:03", 4)
	p3 := n.addIPv6OnlyPod(t, "p3", "fd00:10:10::4", "02:00:0a:0a:00:04", 5)
	for _, p := range []ipv6Pod{p1, p2, p3} {
		echoServerOn(t, p.Pod, "tcp6", p.IPv6, 8080, 8081)
	}
	apply := func(t *testing.T, ch pipeline.PolicyChange) {
		t.Helper()
		if err := n.pipe.ApplyPolicy(testctx.Timeout(t, time.Minute), ch); err != nil {
			t.Fatal(err)
		}
		n.ovs.MustAppctl(t, "revalidator/wait")
		checkPolicyFlows(t, n)
	}
	type check struct {
		from    ipv6Pod
		to      ipv6Pod
		port    int
		allowed bool
	}
	run := func(t *testing.T, cs []check) {
		t.Helper()
		for _, c := range cs {
			err := tcp6Works(t, c.from.Pod, c.to.IPv6, c.port)
			if c.allowed && err != nil {
				t.Errorf("%s -> %s:%d: want allowed, got %v", c.from.Name, c.to.Name, c.port, err)
			} else if !c.allowed && err == nil {
				t.Errorf("%s -> %s:%d: want denied, but it connected", c.from.Name, c.to.Name, c.port)
			}
		}
	}
	// pkg/policy's two ways of naming an IPv6-only pod.
	byIPv6 := func(p ipv6Pod) pipeline.LocalPod {
		return pipeline.LocalPod{IP: net.ParseIP(p.IPv6), OFPort: uint32(p.OFPort)}
	}
	byPort := func(p ipv6Pod) pipeline.LocalPod { return pipeline.LocalPod{OFPort: uint32(p.OFPort)} }

	run(t, []check{{p1, p2, 8080, true}, {p3, p2, 8081, true}})

	t.Run("ingress rule from p1 on TCP 8080", func(t *testing.T) {
		rule := pipeline.PolicyRule{ID: 1, Name: "ns/p2/ingress/0", Direction: pipeline.Ingress,
			Pods: []pipeline.LocalPod{byIPv6(p2)},
			// The IPv4 peer makes no flow on this node.
			Peers: []*net.IPNet{hostNet("10.10.0.2/32"), hostNet(p1.IPv6 + "/128")},
			Ports: []pipeline.PortRange{{Protocol: pipeline.ProtocolTCP, From: 8080}}}
		apply(t, pipeline.PolicyChange{Upsert: []pipeline.PolicyRule{rule},
			Isolation: &pipeline.Isolation{Ingress: []pipeline.LocalPod{byIPv6(p2)}}})
		before := n.nPackets(t, fmt.Sprintf("table=%d,conj_id=1", pipeline.IngressRule))
		run(t, []check{
			{p1, p2, 8080, true},
			{p1, p2, 8081, false},
			{p3, p2, 8080, false},
			{p1, p3, 8081, true}, // p3 is not isolated
		})
		if out, err := ping6(p1, p2.IPv6); err == nil {
			t.Errorf("ping6 p1 -> p2 passed although only TCP 8080 is allowed: %s", out)
		}
		if after := n.nPackets(t, fmt.Sprintf("table=%d,conj_id=1", pipeline.IngressRule)); after < before+1 {
			t.Errorf("rule 1 counted %d packets (before %d), want at least the SYN", after, before)
		}
		if out, err := n.ovs.Exec("", "ping", "-6", "-n", "-c", "2", "-W", "1", "-i", "0.2", "-I", gwIPv6, p2.IPv6); err != nil {
			t.Errorf("node -> isolated p2: %v: %s", err, out)
		}
		drops, err := n.pipe.IsolationDrops(testctx.Timeout(t, time.Minute))
		if err != nil || len(drops) != 1 || drops[0].Counters.Packets == 0 {
			t.Errorf("IsolationDrops = %+v, %v; want p2's ingress drop with the refused packets counted", drops, err)
		}
		apply(t, pipeline.PolicyChange{Delete: []uint32{1}, Isolation: &pipeline.Isolation{}})
		run(t, []check{{p3, p2, 8081, true}})
	})

	t.Run("egress rule to p2's /128", func(t *testing.T) {
		rule := pipeline.PolicyRule{ID: 2, Name: "ns/p1/egress/0", Direction: pipeline.Egress,
			Pods: []pipeline.LocalPod{byPort(p1)}, Peers: []*net.IPNet{hostNet(p2.IPv6 + "/128")}}
		apply(t, pipeline.PolicyChange{Upsert: []pipeline.PolicyRule{rule},
			Isolation: &pipeline.Isolation{Egress: []pipeline.LocalPod{byPort(p1)}}})
		run(t, []check{
			{p1, p2, 8080, true},
			{p1, p2, 8081, true}, // any port
			{p1, p3, 8080, false},
			{p2, p3, 8080, true},
		})
		if out, err := ping6(p1, p3.IPv6); err == nil {
			t.Errorf("ping6 egress-isolated p1 -> p3 passed: %s", out)
		}
		apply(t, pipeline.PolicyChange{Delete: []uint32{2}, Isolation: &pipeline.Isolation{}})
		run(t, []check{{p1, p3, 8080, true}})
	})
}
