package nodenet

import (
	"context"
	"fmt"

	"github.com/weirnet/weir/pkg/podnet"
)

// podGuardTable is the nftables table (families arp and ip) that keeps
// the node's kernel out of pod traffic on the host-side veths.
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
// duplicating them next to OVS's copy. Two base chains drop those frames
// early: ARP input, and IPv4 prerouting (before conntrack), both matching
// iifname PodIfacePattern but not gatewayName. OVS's packet socket sees a
// frame before either hook, so the pipeline is unaffected. The tables are
// replaced atomically in one `nft -f` transaction (idempotent).
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
`, podGuardTable, PodIfacePattern, gatewayName)
	if err := runNft(ctx, ruleset); err != nil {
		return fmt.Errorf("nodenet: installing the pod guard: %w", err)
	}
	return nil
}

// RemovePodGuard deletes InstallPodGuard's tables; missing tables are fine.
func RemovePodGuard(ctx context.Context) error {
	ruleset := fmt.Sprintf("table arp %[1]s\ndelete table arp %[1]s\ntable ip %[1]s\ndelete table ip %[1]s\n", podGuardTable)
	if err := runNft(ctx, ruleset); err != nil {
		return fmt.Errorf("nodenet: removing the pod guard: %w", err)
	}
	return nil
}
