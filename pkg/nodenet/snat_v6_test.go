package nodenet_test

import (
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/nodenet"
	"github.com/weirnet/weir/test/netnstest"
)

// The tables ReconcileSNAT makes for pod CIDRs 10.10.1.0/24 and
// fd00:10:1::/64 with gateway gw0, as nft prints them (counters zeroed).
const (
	wantSNATv4 = `table ip weir {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.10.1.0/24 oifname != "gw0" counter packets 0 bytes 0 masquerade comment "weir: masquerade pod egress leaving the node"
	}
}
`
	wantSNATv6 = `table ip6 weir {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip6 saddr fd00:10:1::/64 oifname != "gw0" counter packets 0 bytes 0 masquerade comment "weir: masquerade pod egress leaving the node"
	}
}
`
)

var counterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// nftList returns `nft list table <family> <name>` in netns (counters
// zeroed) and whether the table exists.
func nftList(t *testing.T, netns, family, name string) (string, bool) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", netns, "nft", "list", "table", family, name).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No such file or directory") {
			return "", false
		}
		t.Fatalf("nft list table %s %s: %v\n%s", family, name, err, out)
	}
	return counterRE.ReplaceAllString(string(out), "counter packets 0 bytes 0"), true
}

func mustCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSNATConfigValidationIPv6(t *testing.T) {
	v4, v6 := mustCIDR(t, "10.10.1.0/24"), mustCIDR(t, "fd00:10:1::/64")
	for name, cfg := range map[string]nodenet.SNATConfig{
		"IPv4 as the IPv6 CIDR":  {PodCIDR: v4, PodCIDRv6: v4, GatewayName: "gw0"},
		"IPv4 as the only CIDR":  {PodCIDRv6: v4, GatewayName: "gw0"},
		"no CIDR at all":         {GatewayName: "gw0"},
		"IPv6-only, no gateway":  {PodCIDRv6: v6},
		"IPv4-mapped IPv6 CIDR":  {PodCIDR: v4, PodCIDRv6: &net.IPNet{IP: net.ParseIP("::ffff:10.0.0.0"), Mask: net.CIDRMask(120, 128)}, GatewayName: "gw0"},
		"IPv6 CIDR with v4 mask": {PodCIDR: v4, PodCIDRv6: &net.IPNet{IP: v6.IP, Mask: net.CIDRMask(24, 32)}, GatewayName: "gw0"},
	} {
		t.Run(name, func(t *testing.T) {
			// Fails before any netlink call: needs no root, touches nothing.
			if err := nodenet.ReconcileSNAT(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "pod CIDR") &&
				!strings.Contains(err.Error(), "gateway interface name") {
				t.Fatalf("got %v, want an error about the pod CIDR or the gateway", err)
			}
		})
	}
}

// TestSNATTablesIPv6 checks the tables against real nftables in a network
// namespace: dual-stack and IPv4-only content, idempotency, the upgrade
// from an older agent's ip weir table (and a stale ip6 weir), removal of
// the IPv6 table when the node loses its IPv6 pod CIDR, an IPv6-only node
// (ip6 weir alone: the IPv4 table of before is removed), and RemoveSNAT
// (what `ovs-agent --cleanup` calls) removing both; a table of someone
// else is never touched.
func TestSNATTablesIPv6(t *testing.T) {
	node := netnstest.New(t, "weir-snat6").Name
	ctx := t.Context()
	v4, v6 := mustCIDR(t, "10.10.1.0/24"), mustCIDR(t, "fd00:10:1::/64")
	dual := nodenet.SNATConfig{PodCIDR: v4, PodCIDRv6: v6, GatewayName: "gw0"}
	v4only := nodenet.SNATConfig{PodCIDR: v4, GatewayName: "gw0"}
	v6only := nodenet.SNATConfig{PodCIDRv6: v6, GatewayName: "gw0"}
	reconcile := func(c nodenet.SNATConfig) {
		t.Helper()
		netnstest.MustDo(t, node, func() error { return nodenet.ReconcileSNAT(ctx, c) })
	}
	ruleCounts := func() (v4n, v6n int) {
		t.Helper()
		netnstest.MustDo(t, node, func() error {
			r4, err := nodenet.SNATRules()
			if err != nil {
				return err
			}
			r6, err := nodenet.SNATRulesIPv6()
			v4n, v6n = len(r4), len(r6)
			return err
		})
		return v4n, v6n
	}
	want := func(step string, v4want, v6want string) {
		t.Helper()
		got4, ok4 := nftList(t, node, "ip", nodenet.SNATTable)
		got6, ok6 := nftList(t, node, "ip6", nodenet.SNATTable)
		if ok4 != (v4want != "") || got4 != v4want {
			t.Errorf("%s: table ip weir (exists %v):\n%s\nwant:\n%s", step, ok4, got4, v4want)
		}
		if ok6 != (v6want != "") || got6 != v6want {
			t.Errorf("%s: table ip6 weir (exists %v):\n%s\nwant:\n%s", step, ok6, got6, v6want)
		}
		if got := nsRun(t, node, "nft", "list", "tables"); !strings.Contains(got, "table inet someone_else") {
			t.Errorf("%s: another table was touched; tables:\n%s", step, got)
		}
	}
	// A table that is not Weir's, with a table name of its own.
	nsRun(t, node, "nft", "add", "table", "inet", "someone_else")

	// An older agent (IPv4 SNAT only) left its table, here with a rule of
	// another pod CIDR and gateway, written by nft rather than the library.
	oldTable := `table ip weir {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.99.0.0/16 oifname != "old0" counter masquerade comment "weir: masquerade pod egress leaving the node"
	}
}`
	cmd := exec.Command("ip", "netns", "exec", node, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(oldTable)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("old table: %v\n%s", err, out)
	}

	t.Run("upgrade from the IPv4-only table to dual-stack", func(t *testing.T) {
		start := time.Now()
		reconcile(dual)
		t.Logf("ReconcileSNAT (dual-stack) took %v", time.Since(start).Round(time.Microsecond))
		want("after upgrade", wantSNATv4, wantSNATv6)
		if n4, n6 := ruleCounts(); n4 != 1 || n6 != 1 {
			t.Errorf("the library lists %d IPv4 and %d IPv6 rules, want 1 and 1", n4, n6)
		}
	})
	t.Run("idempotent", func(t *testing.T) {
		before := nsRun(t, node, "nft", "list", "ruleset")
		reconcile(dual)
		reconcile(dual)
		if after := nsRun(t, node, "nft", "list", "ruleset"); after != before {
			t.Errorf("Reconcile again changed the ruleset:\n%s\nbefore:\n%s", after, before)
		}
	})
	t.Run("IPv6 CIDR gone removes the IPv6 table", func(t *testing.T) {
		reconcile(v4only)
		want("IPv4 only", wantSNATv4, "")
		reconcile(v4only)
		want("IPv4 only again", wantSNATv4, "")
		if n4, n6 := ruleCounts(); n4 != 1 || n6 != 0 {
			t.Errorf("the library lists %d IPv4 and %d IPv6 rules, want 1 and 0", n4, n6)
		}
	})
	t.Run("stale IPv6 table is replaced", func(t *testing.T) {
		reconcile(nodenet.SNATConfig{PodCIDR: mustCIDR(t, "10.99.0.0/16"), PodCIDRv6: mustCIDR(t, "fd00:99::/48"), GatewayName: "old0"})
		if got, _ := nftList(t, node, "ip6", nodenet.SNATTable); !strings.Contains(got, "ip6 saddr fd00:99::/48 oifname != \"old0\"") {
			t.Fatalf("ip6 table with another CIDR:\n%s", got)
		}
		reconcile(dual)
		want("back to dual-stack", wantSNATv4, wantSNATv6)
	})
	t.Run("IPv6-only removes the IPv4 table", func(t *testing.T) {
		reconcile(v6only)
		want("IPv6 only", "", wantSNATv6)
		if n4, n6 := ruleCounts(); n4 != 0 || n6 != 1 {
			t.Errorf("the library lists %d IPv4 and %d IPv6 rules, want 0 and 1", n4, n6)
		}
		before := nsRun(t, node, "nft", "list", "ruleset")
		reconcile(v6only)
		if after := nsRun(t, node, "nft", "list", "ruleset"); after != before {
			t.Errorf("Reconcile again changed the ruleset:\n%s\nbefore:\n%s", after, before)
		}
		reconcile(dual)
		want("back to dual-stack", wantSNATv4, wantSNATv6)
		reconcile(v6only)
		want("IPv6 only again", "", wantSNATv6)
	})
	t.Run("RemoveSNAT removes both tables", func(t *testing.T) {
		for i := 1; i <= 2; i++ { // the second run finds nothing, which is fine
			netnstest.MustDo(t, node, func() error { return nodenet.RemoveSNAT(ctx) })
			want(fmt.Sprintf("after RemoveSNAT #%d", i), "", "")
		}
		if n4, n6 := ruleCounts(); n4 != 0 || n6 != 0 {
			t.Errorf("the library lists %d IPv4 and %d IPv6 rules without the tables", n4, n6)
		}
		if got := nsRun(t, node, "nft", "list", "tables"); strings.Contains(got, " "+nodenet.SNATTable+"\n") {
			t.Errorf("tables left: %s", got)
		}
	})
}

// TestSNATMasqueradeIPv6 proves the IPv6 (and, next to it, IPv4) masquerade
// end to end with plain kernel forwarding: a "pod" namespace (fd00:10:1::2
// and 10.10.1.2) routes through a "node" namespace (gateway veth gw0,
// forwarding on) to an "outside" namespace on the node's uplink
// (2001:db8:1::2, 192.0.2.2) that has no route to the pod CIDRs. With the
// tables a TCP server outside sees the node's address of each family and
// answers, and ping6 gets its replies; without the IPv6 table (IPv4-only
// config) the IPv6 connection fails and IPv4 still works; with the IPv6
// table alone (IPv6-only config) it is the other way round.
func TestSNATMasqueradeIPv6(t *testing.T) {
	began := time.Now()
	pod := netnstest.New(t, "weir-pod").Name
	node := netnstest.New(t, "weir-node").Name
	outside := netnstest.New(t, "weir-out").Name
	mustRun(t, "ip", "link", "add", "gw0", "netns", node, "type", "veth", "peer", "name", "eth0", "netns", pod)
	mustRun(t, "ip", "link", "add", "up0", "netns", node, "type", "veth", "peer", "name", "eth0", "netns", outside)
	for _, c := range [][]string{
		{pod, "ip", "addr", "add", "10.10.1.2/24", "dev", "eth0"},
		{pod, "ip", "addr", "add", "fd00:10:1::2/64", "dev", "eth0", "nodad"},
		{pod, "ip", "link", "set", "eth0", "up"},
		{pod, "ip", "route", "add", "default", "via", "10.10.1.1"},
		{pod, "ip", "-6", "route", "add", "default", "via", "fd00:10:1::1"},
		{node, "ip", "addr", "add", "10.10.1.1/24", "dev", "gw0"},
		{node, "ip", "addr", "add", "fd00:10:1::1/64", "dev", "gw0", "nodad"},
		{node, "ip", "link", "set", "gw0", "up"},
		{node, "ip", "addr", "add", "192.0.2.1/24", "dev", "up0"},
		{node, "ip", "addr", "add", "2001:db8:1::1/64", "dev", "up0", "nodad"},
		{node, "ip", "link", "set", "up0", "up"},
		{node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
		{node, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"},
		{outside, "ip", "addr", "add", "192.0.2.2/24", "dev", "eth0"},
		{outside, "ip", "addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad"},
		{outside, "ip", "link", "set", "eth0", "up"},
	} {
		nsRun(t, c[0], c[1:]...)
	}
	if out := nsRun(t, outside, "ip", "-4", "route", "show") + nsRun(t, outside, "ip", "-6", "route", "show"); strings.Contains(out, "10.10.") ||
		strings.Contains(out, "fd00:") || strings.Contains(out, "default") {
		t.Fatalf("the outside host must have no route to the pods:\n%s", out)
	}
	serveWhoAmI(t, outside, "[2001:db8:1::2]:8080", "outside6")
	serveWhoAmI(t, outside, "192.0.2.2:8080", "outside4")
	ctx := t.Context()
	reconcile := func(c nodenet.SNATConfig) {
		t.Helper()
		netnstest.MustDo(t, node, func() error { return nodenet.ReconcileSNAT(ctx, c) })
	}
	v4, v6 := mustCIDR(t, "10.10.1.0/24"), mustCIDR(t, "fd00:10:1::/64")
	t.Logf("pod, node and outside up in %v", time.Since(began).Round(time.Millisecond))

	t.Run("without SNAT the outside cannot answer", func(t *testing.T) {
		if _, seen, err := whoAnswers(pod, "[2001:db8:1::2]:8080", time.Second); err == nil {
			t.Fatalf("the pod reached the outside over IPv6 without SNAT (seen as %v)", seen)
		}
	})
	t.Run("dual-stack: the outside sees the node's addresses", func(t *testing.T) {
		reconcile(nodenet.SNATConfig{PodCIDR: v4, PodCIDRv6: v6, GatewayName: "gw0"})
		who, seen, err := waitAnswer(pod, "[2001:db8:1::2]:8080", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if who != "outside6" || !seen.IP.Equal(net.ParseIP("2001:db8:1::1")) {
			t.Fatalf("answered by %q, which saw source %v; want outside6 seeing the node address 2001:db8:1::1", who, seen)
		}
		t.Logf("IPv6: %s saw %v", who, seen)
		if out, err := exec.Command("ip", "netns", "exec", pod, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "2001:db8:1::2").CombinedOutput(); err != nil {
			t.Errorf("ping6 to the outside: %v\n%s", err, out)
		}
		who, seen, err = waitAnswer(pod, "192.0.2.2:8080", 5*time.Second)
		if err != nil || who != "outside4" || !seen.IP.Equal(net.ParseIP("192.0.2.1")) {
			t.Errorf("IPv4: answered by %q seeing %v (%v); want outside4 seeing 192.0.2.1", who, seen, err)
		}
		got, _ := nftList(t, node, "ip6", nodenet.SNATTable)
		if out := nsRun(t, node, "nft", "list", "table", "ip6", nodenet.SNATTable); strings.Contains(out, "counter packets 0 ") {
			t.Errorf("the IPv6 masquerade rule counted nothing:\n%s", out)
		} else if got != wantSNATv6 {
			t.Errorf("table ip6 weir:\n%s\nwant:\n%s", got, wantSNATv6)
		}
		// The gateway itself is not masqueraded (not forwarded) and answers.
		if out, err := exec.Command("ip", "netns", "exec", pod, "ping", "-6", "-c", "1", "-W", "2", "fd00:10:1::1").CombinedOutput(); err != nil {
			t.Errorf("ping6 to the gateway: %v\n%s", err, out)
		}
	})
	t.Run("IPv4-only config: IPv6 egress is no longer masqueraded", func(t *testing.T) {
		reconcile(nodenet.SNATConfig{PodCIDR: v4, GatewayName: "gw0"})
		if _, seen, err := whoAnswers(pod, "[2001:db8:1::2]:8080", time.Second); err == nil {
			t.Errorf("the pod reached the outside over IPv6 without the ip6 table (seen as %v)", seen)
		}
		if who, seen, err := waitAnswer(pod, "192.0.2.2:8080", 5*time.Second); err != nil || !seen.IP.Equal(net.ParseIP("192.0.2.1")) {
			t.Errorf("IPv4: answered by %q seeing %v (%v); want the node address 192.0.2.1", who, seen, err)
		}
	})
	t.Run("IPv6-only config: IPv4 egress is no longer masqueraded", func(t *testing.T) {
		reconcile(nodenet.SNATConfig{PodCIDRv6: v6, GatewayName: "gw0"})
		if who, seen, err := waitAnswer(pod, "[2001:db8:1::2]:8080", 5*time.Second); err != nil || who != "outside6" ||
			!seen.IP.Equal(net.ParseIP("2001:db8:1::1")) {
			t.Errorf("IPv6: answered by %q seeing %v (%v); want outside6 seeing the node address 2001:db8:1::1", who, seen, err)
		}
		if _, seen, err := whoAnswers(pod, "192.0.2.2:8080", time.Second); err == nil {
			t.Errorf("the pod reached the outside over IPv4 without the ip table (seen as %v)", seen)
		}
		if _, ok := nftList(t, node, "ip", nodenet.SNATTable); ok {
			t.Error("table ip weir left on an IPv6-only config")
		}
	})
	t.Run("dual-stack again", func(t *testing.T) {
		reconcile(nodenet.SNATConfig{PodCIDR: v4, PodCIDRv6: v6, GatewayName: "gw0"})
		if _, seen, err := waitAnswer(pod, "[2001:db8:1::2]:8080", 5*time.Second); err != nil || !seen.IP.Equal(net.ParseIP("2001:db8:1::1")) {
			t.Errorf("IPv6 after Reconcile again: %v (seen %v)", err, seen)
		}
	})
	t.Logf("test body took %v", time.Since(began).Round(time.Millisecond))
}
