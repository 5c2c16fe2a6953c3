package nodenet

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// SNATTable is the nftables table (family ip) in which Weir masquerades pod
// egress. Weir owns it whole: ReconcileSNAT replaces it, RemoveSNAT deletes
// it, and no other rule set (kube-proxy's iptables-nft chains live in
// tables "nat"/"filter") ever touches it.
const SNATTable = "weir"

// SNATChain is the chain of SNATTable: type nat, hook postrouting,
// priority srcnat (100).
const SNATChain = "postrouting"

// snatComment is the comment of the masquerade rule (what `nft list`
// prints).
const snatComment = "weir: masquerade pod egress leaving the node"

// SNATConfig is the wanted masquerade rule set of a node.
type SNATConfig struct {
	// PodCIDR is the node's pod subnet: packets from it are masqueraded...
	PodCIDR *net.IPNet
	// GatewayName is the gateway interface: ...unless they leave through
	// it, i.e. go back into OVS towards a pod of this or (through the
	// tunnel) another node, which sees the pod's own address.
	GatewayName string
}

func (c SNATConfig) validate() error {
	switch {
	case c.PodCIDR == nil || c.PodCIDR.IP.To4() == nil || len(c.PodCIDR.Mask) != net.IPv4len:
		return fmt.Errorf("nodenet: SNAT needs an IPv4 pod CIDR, got %v", c.PodCIDR)
	case c.GatewayName == "" || len(c.GatewayName) >= unix.IFNAMSIZ:
		return fmt.Errorf("nodenet: SNAT needs a gateway interface name of 1 to %d characters, got %q", unix.IFNAMSIZ-1, c.GatewayName)
	}
	return nil
}

func snatTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: SNATTable}
}

// snatRuleExprs is the rule
//
//	ip saddr <PodCIDR> oifname != "<GatewayName>" masquerade
//
// as nftables expressions (what nft compiles it to).
func snatRuleExprs(c SNATConfig) []expr.Any {
	network := c.PodCIDR.IP.To4().Mask(c.PodCIDR.Mask)
	ifname := make([]byte, unix.IFNAMSIZ) // oifname compares the whole, NUL-padded name
	copy(ifname, c.GatewayName)
	return []expr.Any{
		// ip saddr: 4 bytes at offset 12 of the IPv4 header, masked.
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte(c.PodCIDR.Mask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(network)},
		// oifname != gateway.
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname},
		// A counter, so `nft list table ip weir` shows the rule at work.
		&expr.Counter{},
		&expr.Masq{},
	}
}

// ReconcileSNAT makes the node's table SNATTable exactly what c describes:
// a nat chain on postrouting (priority srcnat) with the one rule
//
//	ip saddr <PodCIDR> oifname != "<GatewayName>" counter masquerade
//
// so pod traffic leaving the node for anything outside the cluster (another
// interface than the gateway) takes the address of the interface it leaves
// through (the node IP), and replies find their way back; traffic to pods,
// which leaves through the gateway into OVS and the tunnel, keeps the pod's
// address.
//
// The table is declared, deleted and created again with its chain and rule
// in one nftables transaction (one netlink batch): atomic (no moment
// without the rule), idempotent, and it replaces whatever a previous run
// left there, e.g. the rule of another pod CIDR. It works in the network
// namespace of the calling thread.
func ReconcileSNAT(ctx context.Context, c SNATConfig) error {
	if err := c.validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nodenet: installing SNAT: %w", err)
	}
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nodenet: opening nftables: %w", err)
	}
	t := snatTable()
	conn.AddTable(t) // so the delete cannot fail on a missing table
	conn.DelTable(t)
	conn.AddTable(t)
	ch := conn.AddChain(&nftables.Chain{
		Name:     SNATChain,
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
	conn.AddRule(&nftables.Rule{
		Table:    t,
		Chain:    ch,
		Exprs:    snatRuleExprs(c),
		UserData: userdata.AppendString(nil, userdata.TypeComment, snatComment),
	})
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nodenet: installing nftables table ip %s (masquerade %v except via %s): %w",
			SNATTable, c.PodCIDR, c.GatewayName, err)
	}
	return nil
}

// RemoveSNAT deletes the table SNATTable, in the calling thread's network
// namespace; a missing table is fine (it is declared first, in the same
// transaction). The agent calls it at start-up when SNAT is turned off; an
// uninstall of Weir from a node calls it too.
func RemoveSNAT(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nodenet: removing SNAT: %w", err)
	}
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nodenet: opening nftables: %w", err)
	}
	t := snatTable()
	conn.AddTable(t)
	conn.DelTable(t)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nodenet: removing nftables table ip %s: %w", SNATTable, err)
	}
	return nil
}

// SNATRules returns the rules of SNATTable's chain as the kernel holds them
// (nil, nil if the table does not exist), for checks and tests.
func SNATRules() ([]*nftables.Rule, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nodenet: opening nftables: %w", err)
	}
	t := snatTable()
	rules, err := conn.GetRules(t, &nftables.Chain{Name: SNATChain, Table: t})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nodenet: listing nftables table ip %s: %w", SNATTable, err)
	}
	return rules, nil
}
