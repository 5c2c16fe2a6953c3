package nodenet

import (
	"context"
	"fmt"

	"github.com/weirnet/weir/pkg/podnet"
)

// podGuardTable is the nftables table (families arp, ip and ip6) that
// keeps the node's kernel out of pod traffic on the host-side veths.
const podGuardTable = "weir_podguard"

// PodIfacePattern matches the host-side interface names of pods
// (podnet.HostIfName) in nftables syntax.
const PodIfacePattern = podnet.HostIfPrefix + "*"

// InstallPodGuard makes the node's kernel ignore what pods send on their
// host-side veths, except on the gateway gatewayName (whose name may match
// PodIfacePattern). With the userspace datapath a host-side veth is an
// ordinary kernel interface that OVS reads through a packet socket, so the
// kernel sees every frame too: it would answer a pod's ARP request for its
// gateway address (a local address) with the veth's own MAC, and with
// net.ipv4.ip_forward=1 route the frames the pod then sends to that MAC,
// duplicating them next to OVS's copy. Three base chains drop those frames
// early: ARP input, IPv4 prerouting and IPv6 prerouting (before
// conntrack), all matching iifname PodIfacePattern but not gatewayName.
// OVS's packet socket sees a frame before any hook, so the pipeline is
// unaffected. The tables are replaced atomically in one `nft -f`
// transaction (idempotent).
//
// IPv6 needs the guard less: pkg/podnet turns IPv6 off on every host-side
// veth it creates (disable_ipv6, so the kernel drops IPv6 there before any
// hook), and the kernel answers a Neighbor Solicitation only for an
// address of the interface it arrives on, never for the gateway's. The
// ip6 chain is the guard for a pod of an IPv6-only or dual-stack node all
// the same, should IPv6 be on on a host-side veth (turned on again by
// hand or by another tool): with IPv6 forwarding on, the kernel would
// otherwise route what a pod sends to the veth's MAC, as with IPv4.
//
// With the kernel datapath the kernel stack never sees a pod's frames (OVS
// takes them at the device), so the agent installs it only for netdev.
func InstallPodGuard(ctx context.Context, gatewayName string) error {
	if gatewayName == "" {
		return fmt.Errorf("nodenet: pod guard: the gateway name is required")
	}
	ruleset := fmt.Sprintf(`table arp %[1]s
delete table arp %[1]s
table arp %[1]s {
	chain input {
		type filter hook input priority 0; policy accept;
		iifname %[2]q iifname != %[3]q drop
	}
}
table ip %[1]s
delete table ip %[1]s
table ip %[1]s {
	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		iifname %[2]q iifname != %[3]q drop
	}
}
table ip6 %[1]s
delete table ip6 %[1]s
table ip6 %[1]s {
	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		iifname %[2]q iifname != %[3]q drop
	}
}
`, podGuardTable, PodIfacePattern, gatewayName)
	if err := runNft(ctx, ruleset); err != nil {
		return fmt.Errorf("nodenet: installing the pod guard: %w", err)
	}
	return nil
}

// RemovePodGuard deletes InstallPodGuard's tables; missing tables are fine.
func RemovePodGuard(ctx context.Context) error {
	ruleset := fmt.Sprintf("table arp %[1]s\ndelete table arp %[1]s\ntable ip %[1]s\ndelete table ip %[1]s\n"+
		"table ip6 %[1]s\ndelete table ip6 %[1]s\n", podGuardTable)
	if err := runNft(ctx, ruleset); err != nil {
		return fmt.Errorf("nodenet: removing the pod guard: %w", err)
	}
	return nil
}
