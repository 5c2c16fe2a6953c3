package localcluster

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The leak guard: the cluster's addresses (pod CIDR, service CIDR) exist
// only inside its namespaces, and the machine's root network namespace has
// no route to them. A packet for them that reaches the root namespace would
// leave through the machine's default route — to whatever network the machine
// is on. Up installs, in the root namespace, an nftables table that counts and
// drops such packets: those a node sends to the host over the cluster bridge
// (chain prerouting, counter "forwarded"; counted whether or not the host
// forwards packets at all, and only for this cluster's bridge so another
// cluster's leak on the same machine is not counted as this one's), those
// host processes send out of any interface that is not the cluster's own
// (chain output, counter "sent"), and, uncounted and whoever's, those the
// host would forward out of such an interface (chain forward). Down removes
// it. The e2e suite asserts both counters are 0 after its run.
//
// The nft command, not a netlink library, for the same reasons as
// pkg/nodenet: a small fixed ruleset applied once, atomically with `nft -f`.

// Guard counter names.
const (
	GuardForwarded = "forwarded"
	GuardSent      = "sent"
)

// guardTable is the nftables table (family inet) of the cluster's guard. nft
// names may not contain '-'.
func (c Config) guardTable() string {
	return "weir_local_" + strings.ReplaceAll(c.Prefix, "-", "_")
}

// guardRuleset declares (again, atomically) the guard table. A node's
// routes for cluster addresses go through its gateway and tunnel, so a
// packet for one that reaches the host over the bridge (L3, the bridge's
// address being the node's default gateway) is always a leak. Packets from
// host processes cannot be attributed to a cluster and are counted in "sent".
func (c Config) guardRuleset() string {
	t := c.guardTable()
	// The rules of each family of the cluster (nft sets hold one family;
	// leaks6 is listed with leaks). An IPv6-only cluster has no IPv4
	// addresses to guard: its IPv4 ranges are not in use.
	set4, pre4, fwd4, out4 := "", "", "", ""
	if c.HasIPv4() {
		set4 = fmt.Sprintf(`
	set cluster {
		type ipv4_addr; flags interval
		elements = { %s, %s }
	}
	set leaks {
		type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags dynamic; size 64
	}`, c.ClusterCIDR, c.ServiceCIDR)
		pre4 = fmt.Sprintf(`
		iifname %[1]q ip daddr @cluster add @leaks { ip saddr . ip daddr . meta l4proto . th dport } counter name %[2]s drop
		iifname %[1]q ip daddr @cluster counter name %[2]s drop`, c.bridge(), GuardForwarded)
		fwd4 = `
		ip daddr @cluster drop`
		out4 = fmt.Sprintf(`
		ip daddr @cluster add @leaks { ip saddr . ip daddr . meta l4proto . th dport } counter name %[1]s drop
		ip daddr @cluster counter name %[1]s drop`, GuardSent)
	}
	set6, pre6, fwd6, out6 := "", "", "", ""
	if c.HasIPv6() {
		set6 = fmt.Sprintf(`
	set cluster6 {
		type ipv6_addr; flags interval
		elements = { %s, %s }
	}
	set leaks6 {
		type ipv6_addr . ipv6_addr . inet_proto . inet_service; flags dynamic; size 64
	}`, c.ClusterCIDRv6, c.ServiceCIDRv6)
		pre6 = fmt.Sprintf(`
		iifname %[1]q ip6 daddr @cluster6 add @leaks6 { ip6 saddr . ip6 daddr . meta l4proto . th dport } counter name %[2]s drop
		iifname %[1]q ip6 daddr @cluster6 counter name %[2]s drop`, c.bridge(), GuardForwarded)
		fwd6 = `
		ip6 daddr @cluster6 drop`
		out6 = fmt.Sprintf(`
		ip6 daddr @cluster6 add @leaks6 { ip6 saddr . ip6 daddr . meta l4proto . th dport } counter name %[1]s drop
		ip6 daddr @cluster6 counter name %[1]s drop`, GuardSent)
	}
	return fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	counter %[3]s {}
	counter %[4]s {}%[6]s%[7]s
	chain prerouting {
		type filter hook prerouting priority -300; policy accept;%[8]s%[9]s
	}
	chain forward {
		type filter hook forward priority -10; policy accept;
		oifname %[2]q accept
		oifname "%[5]s*" accept%[10]s%[11]s
	}
	chain output {
		type filter hook output priority -10; policy accept;
		oifname %[2]q accept
		oifname "%[5]s*" accept%[12]s%[13]s
	}
}
`, t, c.bridge(), GuardForwarded, GuardSent, c.Prefix+"-v", set4, set6, pre4, pre6, fwd4, fwd6, out4, out6)
}

// InstallGuard installs the leak guard in the network namespace at netns
// ("" = the caller's, i.e. the machine's root namespace).
func InstallGuard(ctx context.Context, cfg Config, netns string) error {
	if err := nft(ctx, netns, cfg.guardRuleset()); err != nil {
		return fmt.Errorf("installing the cluster-address leak guard: %w", err)
	}
	return nil
}

// RemoveGuard deletes the guard table; a missing one is fine.
func RemoveGuard(ctx context.Context, cfg Config, netns string) error {
	t := cfg.guardTable()
	if err := nft(ctx, netns, fmt.Sprintf("table inet %[1]s\ndelete table inet %[1]s\n", t)); err != nil {
		return fmt.Errorf("removing the leak guard: %w", err)
	}
	return nil
}

var counterRE = regexp.MustCompile(`packets (\d+) bytes \d+`)

// GuardCount returns how many packets the guard counter name (GuardForwarded
// or GuardSent) has dropped.
func GuardCount(ctx context.Context, cfg Config, netns, name string) (uint64, error) {
	args := []string{"list", "counter", "inet", cfg.guardTable(), name}
	out, err := nftCmd(ctx, netns, args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	m := counterRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("nft %s: no packet count in %q", strings.Join(args, " "), out)
	}
	return strconv.ParseUint(string(m[1]), 10, 64)
}

// GuardLeaks lists what the guard dropped (up to 64 distinct flows), as
// nft prints the set: "source . destination . protocol . port", for a
// report when a counter is not 0.
func GuardLeaks(ctx context.Context, cfg Config, netns string) (string, error) {
	var sets []string
	if cfg.HasIPv4() {
		sets = append(sets, "leaks")
	}
	if cfg.HasIPv6() {
		sets = append(sets, "leaks6")
	}
	var all []string
	for _, set := range sets {
		out, err := nftCmd(ctx, netns, "list", "set", "inet", cfg.guardTable(), set).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("nft list set %s: %w: %s", set, err, strings.TrimSpace(string(out)))
		}
		_, elems, ok := strings.Cut(string(out), "elements = {")
		if !ok {
			continue // empty set
		}
		elems, _, _ = strings.Cut(elems, "}")
		all = append(all, strings.Fields(elems)...)
	}
	return strings.Join(all, " "), nil
}

func nftCmd(ctx context.Context, netns string, args ...string) *exec.Cmd {
	if netns == "" {
		return exec.CommandContext(ctx, "nft", args...)
	}
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netns, "--", "nft"}, args...)...)
}

func nft(ctx context.Context, netns, ruleset string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := nftCmd(ctx, netns, "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft -f -: %w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}
