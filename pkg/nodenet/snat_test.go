package nodenet_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/test/netnstest"
)

func TestSNATConfigValidation(t *testing.T) {
	_, v4, _ := net.ParseCIDR("10.10.1.0/24")
	_, v6, _ := net.ParseCIDR("fd00::/64")
	tests := []struct {
		name string
		cfg  nodenet.SNATConfig
		want string
	}{
		{"no CIDR", nodenet.SNATConfig{GatewayName: "gw0"}, "needs a pod CIDR"},
		{"IPv6 CIDR as the IPv4 one", nodenet.SNATConfig{PodCIDR: v6, GatewayName: "gw0"}, "IPv4 pod CIDR must be an IPv4 CIDR"},
		{"no gateway", nodenet.SNATConfig{PodCIDR: v4}, "gateway interface name"},
		{"gateway name too long", nodenet.SNATConfig{PodCIDR: v4, GatewayName: "a-very-long-name"}, "gateway interface name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Invalid configs fail before any netlink call, so this needs no
			// root and touches nothing.
			err := nodenet.ReconcileSNAT(t.Context(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestSNAT proves the masquerade of pod egress on a simulated node (its own
// OVS, userspace datapath, the real pipeline) with an "outside" host
// (192.0.2.2) on the node's underlay network that has no route to the pod
// CIDR: with the table in place a pod reaches it and it sees the node's
// address; without it the pod's connection fails; Reconcile is idempotent
// and replaces a stale rule; Remove deletes the table.
func TestSNAT(t *testing.T) {
	began := time.Now()
	n := startNode(t, "node1", "10.10.1.0/24", "02:00:0a:0a:01:01")
	outside := netnstest.New(t, "weir-nn").Name
	mustRun(t, "ip", "link", "add", nicName, "netns", n.ovs.NetNS, "type", "veth", "peer", "name", "eth0", "netns", outside)
	mustExec(t, n.ovs, "", "ip", "addr", "add", "192.0.2.1/24", "dev", nicName)
	mustExec(t, n.ovs, "", "ip", "link", "set", nicName, "up")
	nsRun(t, outside, "ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
	nsRun(t, outside, "ip", "link", "set", "eth0", "up")
	// The outside host's packets reach OVS (br-phy) through an AF_PACKET
	// socket; with TX checksum offload they would carry partial checksums,
	// which the kernel behind br-phy drops. A real NIC computes them.
	nsRun(t, outside, "ethtool", "-K", "eth0", "tx", "off")
	n.setUp(t)
	pod := n.addPod(t, "p1", 2, 3)
	mustExec(t, n.ovs, "", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	serveWhoAmI(t, outside, "192.0.2.2:8080", "outside")
	if out := nsRun(t, outside, "ip", "route", "show"); strings.Contains(out, "10.10.") || strings.Contains(out, "default") {
		t.Fatalf("the outside host must have no route to the pods:\n%s", out)
	}
	t.Logf("node, pod and outside host up in %v", time.Since(began).Round(time.Millisecond))

	ctx := t.Context()
	cfg := nodenet.SNATConfig{PodCIDR: n.podCIDR, GatewayName: gatewayName}
	listTable := func() string {
		t.Helper()
		return mustExec(t, n.ovs, "", "nft", "list", "table", "ip", nodenet.SNATTable)
	}
	reconcile := func(c nodenet.SNATConfig) {
		t.Helper()
		netnstest.MustDo(t, n.ovs.NetNS, func() error { return nodenet.ReconcileSNAT(ctx, c) })
	}

	t.Run("rule as nft prints it", func(t *testing.T) {
		start := time.Now()
		reconcile(cfg)
		t.Logf("ReconcileSNAT took %v", time.Since(start).Round(time.Microsecond))
		got := listTable()
		want := `table ip weir {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.10.1.0/24 oifname != "gw0" counter packets 0 bytes 0 masquerade comment "weir: masquerade pod egress leaving the node"
	}
}
`
		if got != want {
			t.Errorf("nft list table ip weir:\n%s\nwant:\n%s", got, want)
		}
		// Idempotent: the same again gives the same table.
		reconcile(cfg)
		if again := listTable(); again != got {
			t.Errorf("second Reconcile changed the table:\n%s\nfirst:\n%s", again, got)
		}
		var rules int
		netnstest.MustDo(t, n.ovs.NetNS, func() error {
			r, err := nodenet.SNATRules()
			rules = len(r)
			return err
		})
		if rules != 1 {
			t.Errorf("the library lists %d rules, want 1", rules)
		}
	})

	t.Run("pod reaches the outside as the node", func(t *testing.T) {
		who, seen, err := waitAnswer(pod.NetNS, "192.0.2.2:8080", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if who != "outside" || !seen.IP.Equal(net.ParseIP("192.0.2.1")) {
			t.Fatalf("answered by %q, which saw source %v; want outside seeing the node address 192.0.2.1", who, seen)
		}
		if err := pod.Ping("192.0.2.2", 2); err != nil {
			t.Errorf("ping to the outside: %v", err)
		}
		if out := listTable(); strings.Contains(out, "counter packets 0 ") {
			t.Errorf("the masquerade rule counted nothing:\n%s", out)
		}
		// Traffic to the node's own gateway is not masqueraded (it is not
		// forwarded at all) and still works.
		if err := pod.Ping(n.gwIP.String(), 1); err != nil {
			t.Errorf("ping to the gateway: %v", err)
		}
	})

	t.Run("stale rule is replaced", func(t *testing.T) {
		_, other, _ := net.ParseCIDR("10.99.0.0/16")
		reconcile(nodenet.SNATConfig{PodCIDR: other, GatewayName: "other0"})
		if out := listTable(); !strings.Contains(out, "10.99.0.0/16") || strings.Contains(out, "10.10.1.0/24") {
			t.Fatalf("table after Reconcile with another CIDR:\n%s", out)
		}
		if _, _, err := whoAnswers(pod.NetNS, "192.0.2.2:8080", 2*time.Second); err == nil {
			t.Error("the pod reached the outside with a rule for another CIDR")
		}
		reconcile(cfg)
		if out := listTable(); strings.Count(out, "masquerade comment") != 1 || !strings.Contains(out, "10.10.1.0/24") {
			t.Fatalf("table after Reconcile back:\n%s", out)
		}
	})

	t.Run("without SNAT the outside cannot answer", func(t *testing.T) {
		netnstest.MustDo(t, n.ovs.NetNS, func() error { return nodenet.RemoveSNAT(ctx) })
		netnstest.MustDo(t, n.ovs.NetNS, func() error { return nodenet.RemoveSNAT(ctx) }) // idempotent
		if out, err := n.ovs.Exec("", "nft", "list", "table", "ip", nodenet.SNATTable); err == nil {
			t.Errorf("table still there after RemoveSNAT:\n%s", out)
		}
		netnstest.MustDo(t, n.ovs.NetNS, func() error {
			r, err := nodenet.SNATRules()
			if err == nil && r != nil {
				t.Errorf("SNATRules lists %d rules without the table", len(r))
			}
			return err
		})
		if _, _, err := whoAnswers(pod.NetNS, "192.0.2.2:8080", 2*time.Second); err == nil {
			t.Error("the pod reached the outside host without SNAT (it has no route back)")
		} else {
			t.Logf("without SNAT: %v", err)
		}
		// And back.
		reconcile(cfg)
		if _, seen, err := waitAnswer(pod.NetNS, "192.0.2.2:8080", 5*time.Second); err != nil || !seen.IP.Equal(net.ParseIP("192.0.2.1")) {
			t.Errorf("after Reconcile again: %v (seen %v)", err, seen)
		}
	})
	t.Logf("SNAT test body took %v", time.Since(began).Round(time.Millisecond))
}
