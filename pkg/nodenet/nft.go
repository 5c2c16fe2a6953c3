package nodenet

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// nftTable is the nftables table (family netdev) holding the underlay
// NIC's ingress drop.
const nftTable = "weir_underlay"

// nftTimeout bounds one nft run.
const nftTimeout = 10 * time.Second

// installIngressDrop makes the kernel drop every frame that arrives on dev,
// with an nftables netdev-family base chain on the ingress hook whose
// policy is drop. OVS reads the NIC through an AF_PACKET socket, and packet
// taps see a frame before the ingress hook, so OVS still gets everything.
//
// The table is declared, deleted and declared again with the chain in one
// `nft -f` transaction: atomic, idempotent, and right even if a previous run
// bound the chain to another device.
//
// Why the nft command rather than a netlink library: Weir has no nftables
// library among its dependencies (github.com/google/nftables would be a new
// one with its own netlink stack), this is a one-line ruleset applied once
// at start-up, `nft -f` applies it atomically, and it is only needed with
// the userspace datapath (test and development set-ups, where the nft tool
// is installed by hack/install-deps.sh); the production kernel datapath
// never calls it.
func installIngressDrop(ctx context.Context, dev string) error {
	ruleset := fmt.Sprintf(`table netdev %[1]s
delete table netdev %[1]s
table netdev %[1]s {
	chain ingress {
		type filter hook ingress device %[2]q priority 0; policy drop;
	}
}
`, nftTable, dev)
	if err := runNft(ctx, ruleset); err != nil {
		return fmt.Errorf("nodenet: installing the ingress drop on %s: %w", dev, err)
	}
	return nil
}

// removeIngressDrop deletes the table of installIngressDrop; a missing
// table is fine (it is declared first, in the same transaction).
func removeIngressDrop(ctx context.Context) error {
	ruleset := fmt.Sprintf("table netdev %[1]s\ndelete table netdev %[1]s\n", nftTable)
	if err := runNft(ctx, ruleset); err != nil {
		return fmt.Errorf("nodenet: removing the underlay ingress drop: %w", err)
	}
	return nil
}

// runNft applies ruleset with `nft -f -` in the calling thread's network
// namespace (a child process inherits the namespace of the thread that
// starts it).
func runNft(ctx context.Context, ruleset string) error {
	ctx, cancel := context.WithTimeout(ctx, nftTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft -f -: %w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}
