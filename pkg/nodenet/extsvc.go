package nodenet

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// externalServicesTable is the nftables table (family inet) of
// InstallExternalServices.
const externalServicesTable = "weir_extsvc"

// ExternalServiceRule is one frontend of Weir's proxy reached from
// outside the node (the kube-proxy-free mode).
type ExternalServiceRule struct {
	// IP is an ExternalIP or LoadBalancer ingress IP; the zero Addr makes
	// the rule a NodePort on every local address of the family IPv6 says.
	IP   netip.Addr
	IPv6 bool
	// Protocol is "tcp", "udp" or "sctp".
	Protocol string
	Port     uint16
	// SNAT (externalTrafficPolicy Cluster) masquerades the client to the
	// gateway's address as the packet enters the gateway, so that an
	// endpoint on another node replies back through this one; Local keeps
	// the client's address.
	SNAT bool
}

// ExternalServices is what InstallExternalServices installs.
type ExternalServices struct {
	GatewayName string
	// GatewayIP and GatewayIPv6 are the SNAT sources, NodePortIP and
	// NodePortIPv6 the virtual addresses NodePort traffic is DNATed to
	// (pkg/pipeline ProxyConfig.NodePortIP; ServiceNextHopIPv4 and
	// ServiceNextHopIPv6 serve, routed to the gateway by
	// EnsureServiceRoutes), each required for a family that has rules.
	GatewayIP, GatewayIPv6   netip.Addr
	NodePortIP, NodePortIPv6 netip.Addr
	Rules                    []ExternalServiceRule
	// SourceRanges restrict LoadBalancer frontends to client prefixes
	// (spec.loadBalancerSourceRanges): their packets from other sources
	// arriving from outside are dropped before any NAT.
	SourceRanges []SourceRangeRule
}

// SourceRangeRule is one LoadBalancer frontend's allowed client prefixes
// (of its family; none of it drops every external client).
type SourceRangeRule struct {
	IP       netip.Addr
	Protocol string
	Port     uint16
	Allowed  []netip.Prefix
}

// InstallExternalServices makes the node's kernel hand the Service traffic
// that arrives from outside the node to the gateway, for Weir's proxy in
// OVS (pkg/pipeline, proxy_node.go), in the nftables table "inet
// weir_extsvc", replaced in one transaction:
//
//   - prerouting (dstnat): a packet not from the gateway nor the loopback,
//     for a local address (fib daddr type local) and a NodePort's protocol
//     and port, is DNATed to the family's NodePortIP, its port kept. A
//     packet for the node's own address is delivered locally otherwise; no
//     route can send it to the gateway, a DNAT can.
//   - output (dstnat): the node's own packets for a local, non-loopback
//     address and a NodePort get the same DNAT.
//   - postrouting (srcnat): a packet not from the gateway that leaves into
//     the gateway for a frontend with SNAT (the NodePortIP and port, or
//     the ExternalIP, protocol and port) is SNATed to the gateway address
//     of its family; so is the node's own one for a NodePort without
//     SNAT (policy Local) whose source is another local address.
//
// Before both, a LoadBalancer frontend with source ranges drops the
// packets of other clients arriving from outside (filter, priority -150,
// ahead of the DNAT, so the client's own address is what is checked; OVS
// sees the gateway IP after the SNAT).
//
// ExternalIPs and LB IPs are not local addresses: the node forwards their
// packets, which EnsureServiceRoutes' routes (/32 or /128 per address)
// send into the gateway. The kernel's conntrack reverses both NATs on the
// replies, which OVS returns to the gateway.
func InstallExternalServices(ctx context.Context, es ExternalServices) error {
	if es.GatewayName == "" {
		return fmt.Errorf("nodenet: external services: the gateway name is required")
	}
	type key struct {
		v6, snat bool
		proto    string
	}
	nodePorts := map[key][]string{}
	var extSNAT [2][]string // per family: "ip . proto . port"
	for _, r := range es.Rules {
		if r.Protocol != "tcp" && r.Protocol != "udp" && r.Protocol != "sctp" {
			return fmt.Errorf("nodenet: external services: protocol %q is not tcp, udp or sctp", r.Protocol)
		}
		if r.Port == 0 {
			return fmt.Errorf("nodenet: external services: %s rule without a port", r.Protocol)
		}
		v6 := r.IPv6
		if r.IP.IsValid() {
			if r.IP.Is4In6() || r.IP.Zone() != "" {
				return fmt.Errorf("nodenet: external services: %v is not a plain IPv4 or IPv6 address", r.IP)
			}
			v6 = r.IP.Is6()
		}
		gw, np := es.GatewayIP, es.NodePortIP
		if v6 {
			gw, np = es.GatewayIPv6, es.NodePortIPv6
		}
		if r.SNAT && (!gw.IsValid() || gw.Is6() != v6) {
			return fmt.Errorf("nodenet: external services: SNAT of %s needs the gateway's %s address, have %v", ruleName(r), familyWord(v6), gw)
		}
		if !r.IP.IsValid() {
			if !np.IsValid() || np.Is6() != v6 {
				return fmt.Errorf("nodenet: external services: NodePort %s needs the %s NodePort address, have %v", ruleName(r), familyWord(v6), np)
			}
			k := key{v6, r.SNAT, r.Protocol}
			nodePorts[k] = append(nodePorts[k], fmt.Sprint(r.Port))
			continue
		}
		if r.SNAT {
			i := 0
			if v6 {
				i = 1
			}
			extSNAT[i] = append(extSNAT[i], fmt.Sprintf("%s . %s . %d", r.IP, r.Protocol, r.Port))
		}
	}
	gwName := fmt.Sprintf("%q", es.GatewayName)
	var pre, out, post strings.Builder
	keys := make([]key, 0, len(nodePorts))
	for k := range nodePorts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int {
		return strings.Compare(fmt.Sprint(a.v6, a.proto, a.snat), fmt.Sprint(b.v6, b.proto, b.snat))
	})
	for _, k := range keys {
		fam, np, gw := "ip", es.NodePortIP, es.GatewayIP
		if k.v6 {
			fam, np, gw = "ip6", es.NodePortIPv6, es.GatewayIPv6
		}
		ports := strings.Join(nodePorts[k], ", ")
		fmt.Fprintf(&pre, "\t\tiifname != { %s, \"lo\" } meta nfproto %s fib daddr type local meta l4proto %s th dport { %s } dnat %s to %s\n",
			gwName, nfproto(k.v6), k.proto, ports, fam, np)
		// The node's own connections to its NodePorts: the same DNAT in
		// output, and the SNAT below whatever the policy (the source the
		// kernel chose for a local destination is that address, which a
		// remote endpoint could not reply to). Not for loopback
		// destinations: the kernel does not route 127.0.0.0/8 or ::1 out
		// of the gateway.
		fmt.Fprintf(&out, "\t\tmeta nfproto %s fib daddr type local %s daddr != %s meta l4proto %s th dport { %s } dnat %s to %s\n",
			nfproto(k.v6), fam, loopback(k.v6), k.proto, ports, fam, np)
		if k.snat {
			fmt.Fprintf(&post, "\t\tiifname != %s oifname %s %s daddr %s meta l4proto %s th dport { %s } snat %s to %s\n",
				gwName, gwName, fam, np, k.proto, ports, fam, gw)
		} else if gw.IsValid() && gw.Is6() == k.v6 {
			fmt.Fprintf(&post, "\t\toifname %s %s daddr %s fib saddr type local %s saddr != %s meta l4proto %s th dport { %s } snat %s to %s\n",
				gwName, fam, np, fam, gw, k.proto, ports, fam, gw)
		}
	}
	for i, elems := range extSNAT {
		if len(elems) == 0 {
			continue
		}
		fam, gw := "ip", es.GatewayIP
		if i == 1 {
			fam, gw = "ip6", es.GatewayIPv6
		}
		fmt.Fprintf(&post, "\t\tiifname != %s oifname %s %s daddr . meta l4proto . th dport { %s } snat %s to %s\n",
			gwName, gwName, fam, strings.Join(elems, ", "), fam, gw)
	}
	var filter strings.Builder
	for _, r := range es.SourceRanges {
		if r.Protocol != "tcp" && r.Protocol != "udp" && r.Protocol != "sctp" {
			return fmt.Errorf("nodenet: external services: source ranges of %v: protocol %q is not tcp, udp or sctp", r.IP, r.Protocol)
		}
		if !r.IP.IsValid() || r.IP.Is4In6() || r.Port == 0 {
			return fmt.Errorf("nodenet: external services: source ranges need a plain address and a port, have %v port %d", r.IP, r.Port)
		}
		fam := "ip"
		if r.IP.Is6() {
			fam = "ip6"
		}
		var allowed []string
		for _, a := range r.Allowed {
			if a.IsValid() && a.Addr().Is6() == r.IP.Is6() && !a.Addr().Is4In6() {
				allowed = append(allowed, a.Masked().String())
			}
		}
		m := fmt.Sprintf("iifname != { %s, \"lo\" } %s daddr %s meta l4proto %s th dport %d", gwName, fam, r.IP, r.Protocol, r.Port)
		if len(allowed) == 0 {
			fmt.Fprintf(&filter, "\t\t%s drop\n", m)
			continue
		}
		fmt.Fprintf(&filter, "\t\t%s %s saddr != { %s } drop\n", m, fam, strings.Join(allowed, ", "))
	}
	ruleset := fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain sourceranges {
		type filter hook prerouting priority -150; policy accept;
%[5]s	}
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
%[2]s	}
	chain output {
		type nat hook output priority -100; policy accept;
%[3]s	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
%[4]s	}
}
`, externalServicesTable, pre.String(), out.String(), post.String(), filter.String())
	if err := runNft(ctx, ruleset); err != nil {
		return fmt.Errorf("nodenet: installing the external Service rules: %w", err)
	}
	return nil
}

// RemoveExternalServices deletes InstallExternalServices' table; a missing
// table is fine.
func RemoveExternalServices(ctx context.Context) error {
	ruleset := fmt.Sprintf("table inet %[1]s\ndelete table inet %[1]s\n", externalServicesTable)
	if err := runNft(ctx, ruleset); err != nil {
		return fmt.Errorf("nodenet: removing the external Service rules: %w", err)
	}
	return nil
}

func loopback(v6 bool) string {
	if v6 {
		return "::1"
	}
	return "127.0.0.0/8"
}

func nfproto(v6 bool) string {
	if v6 {
		return "ipv6"
	}
	return "ipv4"
}

func familyWord(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

func ruleName(r ExternalServiceRule) string {
	if r.IP.IsValid() {
		return fmt.Sprintf("%s %s", r.Protocol, netip.AddrPortFrom(r.IP, r.Port))
	}
	return fmt.Sprintf("%s %d", r.Protocol, r.Port)
}
