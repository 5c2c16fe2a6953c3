package integration

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// TestBandwidth: the kubernetes.io/ingress-bandwidth and egress-bandwidth
// annotations, as containerd's CRI passes them (the bandwidth capability,
// bits/s, burst math.MaxUint32), through the shipped conflist and the real
// weir binary. Both directions are measured with iperf3 on the userspace
// datapath against an unshaped pod; the limits differ per direction so that
// swapped directions fail. Invalid limits fail with code 7 and leave nothing
// behind; DEL removes the shaping with the veth.
func TestBandwidth(t *testing.T) {
	needPortmap(t)
	n := newNode(t, "10.24.0.0/24")
	l := n.shippedConfList(t)
	// Low enough that even a busy machine's unshaped rate is far above them
	// (the slowest seen here: 325 Mbit/s on one node, 87 across nodes).
	const ingress, egress = 8e6, 4e6 // bit/s: to the pod, from the pod
	limits := map[string]any{"bandwidth": map[string]any{
		"ingressRate": ingress, "ingressBurst": math.MaxUint32, "egressRate": egress, "egressBurst": math.MaxUint32}}

	shaped, peer, free := newSandbox(t), newSandbox(t), newSandbox(t)
	if err := n.chainAdd(t, l, shaped, limits); err != nil {
		t.Fatalf("ADD with bandwidth limits: %v", err)
	}
	for _, p := range []*pod{peer, free} {
		if err := n.chainAdd(t, l, p, nil); err != nil {
			t.Fatalf("ADD: %v", err)
		}
	}
	if err := n.chainCheck(t, l, shaped, limits); err != nil {
		t.Errorf("CHECK of the shaped pod: %v", err)
	}
	// Without the port's no-op QoS ovs-vswitchd would have deleted the
	// tbf on the host veth when it added the port.
	if qos := n.ovs.MustVsctl(t, "--columns=type", "--format=csv", "--no-headings", "list", "QoS"); strings.TrimSpace(qos) != "linux-noop" {
		t.Errorf("QoS rows %q, want the shaped pod's linux-noop only", qos)
	}

	unshaped := iperf3(t, free.ns, peer.ns, peer.ip, 3)
	gotEgress := iperf3(t, shaped.ns, peer.ns, peer.ip, 4)
	gotIngress := iperf3(t, peer.ns, shaped.ns, shaped.ip, 4)
	t.Logf("egress (from the pod): limit %.0f Mbit/s, measured %.2f Mbit/s", egress/1e6, gotEgress/1e6)
	t.Logf("ingress (to the pod): limit %.0f Mbit/s, measured %.2f Mbit/s", ingress/1e6, gotIngress/1e6)
	t.Logf("unshaped pod: %.0f Mbit/s", unshaped/1e6)
	for _, m := range []struct {
		dir        string
		got, limit float64
	}{{"egress", gotEgress, egress}, {"ingress", gotIngress, ingress}} {
		// A working shaper gives one TCP flow 95-102% of the rate here
		// (iperf3 counts payload, ~3% below the wire rate, and its
		// intervals jitter by a few percent).
		if m.got < 0.75*m.limit || m.got > 1.1*m.limit {
			t.Errorf("%s: %.2f Mbit/s measured, want within 75-110%% of the %.0f Mbit/s limit", m.dir, m.got/1e6, m.limit/1e6)
		}
	}
	if unshaped < 5*ingress {
		t.Errorf("the unshaped pod reached only %.0f Mbit/s: the measurement cannot tell shaping from a slow datapath", unshaped/1e6)
	}

	t.Run("invalid limits", func(t *testing.T) {
		portsBefore, vethsBefore := len(n.podPorts(t)), len(n.hostVeths(t))
		for _, bad := range []map[string]any{
			{"egressRate": 1e6},                         // no burst
			{"ingressRate": 10, "ingressBurst": 1e6},    // below 1 kbit/s
			{"ingressBurst": 1e6},                       // no rate
			{"egressRate": 1e6, "egressBurst": 1 << 35}, // 4 GiB burst
		} {
			p := newSandbox(t)
			err := n.chainAdd(t, l, p, map[string]any{"bandwidth": bad})
			if cniCode(err) != 7 || !strings.Contains(err.Error(), "bandwidth") {
				t.Errorf("ADD with %v: %v (code %d), want code 7 about the bandwidth", bad, err, cniCode(err))
				continue
			}
			t.Logf("code 7: %v", err)
			if got := len(n.podPorts(t)); got != portsBefore {
				t.Errorf("%d pod ports after the failed ADD, want %d", got, portsBefore)
			}
			if got := len(n.hostVeths(t)); got != vethsBefore {
				t.Errorf("%d veths after the failed ADD, want %d", got, vethsBefore)
			}
			if len(n.allocatedIPs(t)) != 3 {
				t.Errorf("IPs allocated after the failed ADD: %v, want the 3 pods'", n.allocatedIPs(t))
			}
		}
	})

	t.Run("DEL", func(t *testing.T) {
		hostIf := shaped.result.Interfaces[0].Name
		if err := n.chainDel(t, l, shaped, limits); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		if slices.Contains(n.hostVeths(t), hostIf) {
			t.Fatalf("host veth %s (and its qdisc) still there after DEL", hostIf)
		}
		if out, err := n.ovs.Exec("", "tc", "qdisc", "show"); err != nil || strings.Contains(out, "tbf") {
			t.Fatalf("a tbf is left in the node after DEL (%v):\n%s", err, out)
		}
		if qos := strings.TrimSpace(n.ovs.MustVsctl(t, "list", "QoS")); qos != "" {
			t.Fatalf("the port's no-op QoS is left after DEL:\n%s", qos)
		}
	})
}
