package nodenet

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
)

// serviceRejectTable is the nftables table (family inet) of
// InstallServiceReject.
const serviceRejectTable = "weir_svcreject"

// InstallServiceReject makes the node's kernel answer, as kube-proxy does,
// packets that arrive from the gateway gatewayName addressed to the Service
// CIDRs serviceCIDRs (either family): a TCP connection is reset (RST), any
// other protocol gets ICMP (or ICMPv6) port unreachable.
//
// Why: with Weir's own proxy (pkg/pipeline, Config.Proxy) a pod's packet for
// a ClusterIP whose Service has no endpoints anywhere is not DNATed in OVS
// but sent on to the gateway like any routed packet; it arrives at the node
// still addressed to the ClusterIP, and a Service without endpoints must
// refuse rather than time out. A packet for a Service that has endpoints
// never gets here with a ClusterIP destination: OVS (or, in coexistence,
// kube-proxy's prerouting DNAT) changed it to an endpoint first. So the
// rule sits in the forward hook (the ClusterIP is not a local address; the
// node forwards, as every Kubernetes node does) and in input (a ClusterIP
// someone assigned to a local interface), matching only iifname
// gatewayName, so the node's own and external traffic are left to whoever
// handles them.
//
// The table is replaced atomically in one `nft -f` transaction
// (idempotent); an empty serviceCIDRs installs an empty table.
func InstallServiceReject(ctx context.Context, gatewayName string, serviceCIDRs []netip.Prefix) error {
	if gatewayName == "" {
		return fmt.Errorf("nodenet: service reject: the gateway name is required")
	}
	var v4, v6 []string
	for _, p := range serviceCIDRs {
		switch {
		case !p.IsValid():
			return fmt.Errorf("nodenet: service reject: invalid Service CIDR %v", p)
		case p.Addr().Is4():
			v4 = append(v4, p.Masked().String())
		case p.Addr().Is4In6():
			return fmt.Errorf("nodenet: service reject: Service CIDR %v is IPv4-mapped IPv6", p)
		default:
			v6 = append(v6, p.Masked().String())
		}
	}
	var rules strings.Builder
	for _, fam := range []struct {
		match string
		cidrs []string
	}{{"ip daddr", v4}, {"ip6 daddr", v6}} {
		if len(fam.cidrs) == 0 {
			continue
		}
		m := fmt.Sprintf("iifname %q %s { %s }", gatewayName, fam.match, strings.Join(fam.cidrs, ", "))
		fmt.Fprintf(&rules, "\t\t%s meta l4proto tcp reject with tcp reset\n", m)
		fmt.Fprintf(&rules, "\t\t%s reject with icmpx type port-unreachable\n", m)
	}
	ruleset := fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain forward {
		type filter hook forward priority filter; policy accept;
%[2]s	}
	chain input {
		type filter hook input priority filter; policy accept;
%[2]s	}
}
`, serviceRejectTable, rules.String())
	if err := runNft(ctx, ruleset); err != nil {
		return fmt.Errorf("nodenet: installing the Service reject rules: %w", err)
	}
	return nil
}

// RemoveServiceReject deletes InstallServiceReject's table; a missing
// table is fine.
func RemoveServiceReject(ctx context.Context) error {
	ruleset := fmt.Sprintf("table inet %[1]s\ndelete table inet %[1]s\n", serviceRejectTable)
	if err := runNft(ctx, ruleset); err != nil {
		return fmt.Errorf("nodenet: removing the Service reject rules: %w", err)
	}
	return nil
}
