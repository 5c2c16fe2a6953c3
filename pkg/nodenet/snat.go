package nodenet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// SNATTable is the name of the nftables tables in which Weir masquerades
// pod egress: "ip weir" for IPv4 and its twin "ip6 weir" for IPv6 (the
// same chain, the same rule over the IPv6 header), each present when the
// node has a pod CIDR of that family: both on a dual-stack node, ip6 weir
// alone on an IPv6-only one.
// Weir owns both whole: ReconcileSNAT replaces them, RemoveSNAT deletes
// them, and no other rule set (kube-proxy's iptables-nft chains live in
// tables "nat"/"filter") ever touches them.
//
// Why two tables rather than one "inet weir": the IPv4 table stays exactly
// what agents before IPv6 SNAT created, so an upgrade rewrites it to the
// same content and nothing that lists or deletes "ip weir" (operators,
// tests, older cleanup instructions) changes meaning; the IPv6 rule comes
// and goes on its own as the node gains or loses its IPv6 pod CIDR.
const SNATTable = "weir"

// SNATChain is the chain of SNATTable: type nat, hook postrouting,
// priority srcnat (100).
const SNATChain = "postrouting"

// snatComment is the comment of the masquerade rule (what `nft list`
// prints).
const snatComment = "weir: masquerade pod egress leaving the node"

// SNATConfig is the wanted masquerade rule set of a node.
type SNATConfig struct {
	// PodCIDR is the node's IPv4 pod subnet: packets from it are
	// masqueraded... (table ip weir). Nil on an IPv6-only node: nil
	// removes that table.
	PodCIDR *net.IPNet
	// PodCIDRv6 is the node's IPv6 pod subnet on a dual-stack or IPv6-only
	// node, nil on an IPv4-only one: packets from it are masqueraded the
	// same way (table ip6 weir); nil removes that table. At least one of
	// PodCIDR and PodCIDRv6 is required.
	PodCIDRv6 *net.IPNet
	// GatewayName is the gateway interface: ...unless they leave through
	// it, i.e. go back into OVS towards a pod of this or (through the
	// tunnel) another node, which sees the pod's own address.
	GatewayName string
}

func (c SNATConfig) validate() error {
	switch {
	case c.PodCIDR == nil && c.PodCIDRv6 == nil:
		return errors.New("nodenet: SNAT needs a pod CIDR: an IPv4 pod CIDR, an IPv6 one or both")
	case c.PodCIDR != nil && (c.PodCIDR.IP.To4() == nil || len(c.PodCIDR.Mask) != net.IPv4len):
		return fmt.Errorf("nodenet: SNAT's IPv4 pod CIDR must be an IPv4 CIDR, got %v", c.PodCIDR)
	case c.PodCIDRv6 != nil && (c.PodCIDRv6.IP.To4() != nil || len(c.PodCIDRv6.IP) != net.IPv6len || len(c.PodCIDRv6.Mask) != net.IPv6len):
		return fmt.Errorf("nodenet: SNAT's IPv6 pod CIDR must be an IPv6 CIDR, got %v", c.PodCIDRv6)
	case c.GatewayName == "" || len(c.GatewayName) >= unix.IFNAMSIZ:
		return fmt.Errorf("nodenet: SNAT needs a gateway interface name of 1 to %d characters, got %q", unix.IFNAMSIZ-1, c.GatewayName)
	}
	return nil
}

func snatTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: SNATTable}
}

func snatTableV6() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv6, Name: SNATTable}
}

// snatRuleExprs is the rule
//
//	ip saddr <cidr> oifname != "<gateway>" masquerade
//
// (ip6 saddr for an IPv6 cidr) as nftables expressions (what nft compiles
// it to).
func snatRuleExprs(cidr *net.IPNet, gateway string) []expr.Any {
	// The source address: 4 bytes at offset 12 of the IPv4 header, or 16
	// bytes at offset 8 of the IPv6 header.
	addr, offset := cidr.IP.To4(), uint32(12)
	if addr == nil {
		addr, offset = cidr.IP.To16(), 8
	}
	n := uint32(len(addr))
	network := addr.Mask(cidr.Mask)
	ifname := make([]byte, unix.IFNAMSIZ) // oifname compares the whole, NUL-padded name
	copy(ifname, gateway)
	return []expr.Any{
		// ip saddr / ip6 saddr, masked.
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: []byte(cidr.Mask), Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(network)},
		// oifname != gateway.
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname},
		// A counter, so `nft list table ip weir` shows the rule at work.
		&expr.Counter{},
		&expr.Masq{},
	}
}

// ReconcileSNAT makes the node's SNAT tables exactly what c describes: if
// c.PodCIDR is set, table ip weir with a nat chain on postrouting
// (priority srcnat) holding the one rule
//
//	ip saddr <PodCIDR> oifname != "<GatewayName>" counter masquerade
//
// and, if c.PodCIDRv6 is set, its twin table ip6 weir with
//
//	ip6 saddr <PodCIDRv6> oifname != "<GatewayName>" counter masquerade
//
// (a family without a pod CIDR has no table: an IPv6-only node has ip6
// weir alone). So pod traffic leaving the node for
// anything outside the cluster (another interface than the gateway) takes
// the address of the interface it leaves through (the node IP of that
// family), and replies find their way back; traffic to pods, which leaves
// through the gateway into OVS and the tunnel, keeps the pod's address.
//
// Both tables are declared, deleted and (as wanted) created again with
// their chain and rule in one nftables transaction (one netlink batch):
// atomic (no moment without the rules, and a failure leaves the old
// tables), idempotent, and it replaces whatever a previous run left there:
// the rule of another pod CIDR, the ip weir table of an agent from before
// IPv6 SNAT (same content, rewritten), an ip6 weir table of a node that
// no longer has an IPv6 pod CIDR, or an ip weir table of a node that now
// is IPv6-only (removed). It works in the network
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
	replaceSNATTable(conn, snatTable(), c.PodCIDR, c.GatewayName)
	replaceSNATTable(conn, snatTableV6(), c.PodCIDRv6, c.GatewayName)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nodenet: installing nftables tables ip/ip6 %s (masquerade %s except via %s): %w",
			SNATTable, c.cidrs(), c.GatewayName, err)
	}
	return nil
}

// cidrs names c's pod CIDRs for messages.
func (c SNATConfig) cidrs() string {
	var out []string
	for _, n := range []*net.IPNet{c.PodCIDR, c.PodCIDRv6} {
		if n != nil {
			out = append(out, n.String())
		}
	}
	return strings.Join(out, ",")
}

// replaceSNATTable queues on conn the deletion of table t (declared first,
// so a missing table is no error) and, unless cidr is nil, its creation
// with the chain and the masquerade rule of cidr.
func replaceSNATTable(conn *nftables.Conn, t *nftables.Table, cidr *net.IPNet, gateway string) {
	conn.AddTable(t) // so the delete cannot fail on a missing table
	conn.DelTable(t)
	if cidr == nil {
		return
	}
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
		Exprs:    snatRuleExprs(cidr, gateway),
		UserData: userdata.AppendString(nil, userdata.TypeComment, snatComment),
	})
}

// RemoveSNAT deletes both SNAT tables (ip weir and ip6 weir) in one
// transaction, in the calling thread's network namespace; missing tables
// are fine (each is declared first, in the same transaction). The agent
// calls it at start-up when SNAT is turned off; the uninstall
// (`ovs-agent --cleanup`) calls it too.
func RemoveSNAT(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nodenet: removing SNAT: %w", err)
	}
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nodenet: opening nftables: %w", err)
	}
	replaceSNATTable(conn, snatTable(), nil, "")
	replaceSNATTable(conn, snatTableV6(), nil, "")
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nodenet: removing nftables tables ip and ip6 %s: %w", SNATTable, err)
	}
	return nil
}

// SNATRules returns the rules of the IPv4 SNAT table's chain (ip weir) as
// the kernel holds them (nil, nil if the table does not exist), for checks
// and tests.
func SNATRules() ([]*nftables.Rule, error) {
	return snatRules(snatTable())
}

// SNATRulesIPv6 is SNATRules for the IPv6 table ip6 weir.
func SNATRulesIPv6() ([]*nftables.Rule, error) {
	return snatRules(snatTableV6())
}

func snatRules(t *nftables.Table) ([]*nftables.Rule, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nodenet: opening nftables: %w", err)
	}
	rules, err := conn.GetRules(t, &nftables.Chain{Name: SNATChain, Table: t})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nodenet: listing nftables table %s %s: %w", familyName(t.Family), SNATTable, err)
	}
	return rules, nil
}

func familyName(f nftables.TableFamily) string {
	if f == nftables.TableFamilyIPv6 {
		return "ip6"
	}
	return "ip"
}
