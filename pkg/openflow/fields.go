package openflow

import (
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Field names one matchable (and, for most, settable) field. The constants are declared in the order
// in which ovs-ofctl prints fields (lib/match.c match_format), so sorting a
// flow's matches by Field gives the printed order.
type Field uint8

const (
	FieldPktMark Field = iota
	FieldConjID
	FieldCtState
	FieldCtZone
	FieldCtMark
	FieldCtLabel
	FieldReg0 // reg0..reg15 occupy FieldReg0..FieldReg0+15
)

const (
	FieldTunID Field = FieldReg0 + 16 + iota
	FieldTunSrc
	FieldTunDst
	FieldTunIPv6Src // tunnels over IPv6; ovs-ofctl prints these right after tun_src, tun_dst
	FieldTunIPv6Dst
	FieldMetadata
	FieldInPort
	FieldEthSrc
	FieldEthDst
	FieldEthType // known types print as a keyword ("ip", "tcp", "arp") earlier; see Renderer.Match
	FieldIPv4Src
	FieldIPv4Dst
	FieldIPv6Src
	FieldIPv6Dst
	FieldArpSpa
	FieldArpTpa
	FieldIPProto
	FieldArpOp
	FieldArpSha
	FieldArpTha
	FieldICMPType
	FieldICMPCode
	FieldICMPv6Type
	FieldICMPv6Code
	FieldNDTarget // Neighbor Discovery target (NS and NA); ovs-ofctl prints these after icmp_code
	FieldNDSll    // source link-layer address option (NS)
	FieldNDTll    // target link-layer address option (NA)
	FieldTCPSrc
	FieldTCPDst
	FieldUDPSrc
	FieldUDPDst
	FieldSCTPSrc
	FieldSCTPDst
	numFields
)

// valueFormat says how a field's bytes are printed.
type valueFormat uint8

const (
	fmtHex      valueFormat = iota // 0x1f, masked 0x1/0xf (C "%#x": zero prints as 0)
	fmtDecimal                     // 42
	fmtIPv4                        // 10.0.0.1, CIDR masks as /24
	fmtIPv6                        // fe80::1, CIDR masks as /64
	fmtMAC                         // aa:bb:cc:dd:ee:ff
	fmtPort                        // in_port: number or reserved name
	fmtCtState                     // +new+trk
	fmtL4Port                      // tp_dst=80, masked 0x400/0xfc00
	fmtHexLabel                    // 128-bit ct_label
)

// fieldInfo describes one field: its NXM/OXM name for encoding (as known to
// libOpenflow), the name ovs-ofctl prints, width in bytes and print format.
type fieldInfo struct {
	oxm    string // name libOpenflow encodes (OXM or NXM)
	nxm    string // name OVS prints in move/load/output subfields
	name   string // name OVS prints in matches
	set    string // name OVS prints in set_field actions
	width  int
	format valueFormat
}

// fieldTable is read-only after package initialisation.
var fieldTable = func() [numFields]fieldInfo {
	var t [numFields]fieldInfo
	t[FieldPktMark] = fieldInfo{"NXM_NX_PKT_MARK", "NXM_NX_PKT_MARK", "pkt_mark", "pkt_mark", 4, fmtHex}
	t[FieldConjID] = fieldInfo{"NXM_NX_CONJ_ID", "NXM_NX_CONJ_ID", "conj_id", "conj_id", 4, fmtDecimal}
	t[FieldCtState] = fieldInfo{"NXM_NX_CT_STATE", "NXM_NX_CT_STATE", "ct_state", "ct_state", 4, fmtCtState}
	t[FieldCtZone] = fieldInfo{"NXM_NX_CT_ZONE", "NXM_NX_CT_ZONE", "ct_zone", "ct_zone", 2, fmtDecimal}
	t[FieldCtMark] = fieldInfo{"NXM_NX_CT_MARK", "NXM_NX_CT_MARK", "ct_mark", "ct_mark", 4, fmtHex}
	t[FieldCtLabel] = fieldInfo{"NXM_NX_CT_LABEL", "NXM_NX_CT_LABEL", "ct_label", "ct_label", 16, fmtHexLabel}
	for i := 0; i <= 15; i++ {
		reg := fmt.Sprintf("NXM_NX_REG%d", i)
		name := fmt.Sprintf("reg%d", i)
		t[FieldReg0+Field(i)] = fieldInfo{reg, reg, name, name, 4, fmtHex}
	}
	t[FieldTunID] = fieldInfo{"NXM_NX_TUN_ID", "NXM_NX_TUN_ID", "tun_id", "tun_id", 8, fmtHex}
	t[FieldTunSrc] = fieldInfo{"NXM_NX_TUN_IPV4_SRC", "NXM_NX_TUN_IPV4_SRC", "tun_src", "tun_src", 4, fmtIPv4}
	t[FieldTunDst] = fieldInfo{"NXM_NX_TUN_IPV4_DST", "NXM_NX_TUN_IPV4_DST", "tun_dst", "tun_dst", 4, fmtIPv4}
	t[FieldTunIPv6Src] = fieldInfo{"NXM_NX_TUN_IPV6_SRC", "NXM_NX_TUN_IPV6_SRC", "tun_ipv6_src", "tun_ipv6_src", 16, fmtIPv6}
	t[FieldTunIPv6Dst] = fieldInfo{"NXM_NX_TUN_IPV6_DST", "NXM_NX_TUN_IPV6_DST", "tun_ipv6_dst", "tun_ipv6_dst", 16, fmtIPv6}
	t[FieldMetadata] = fieldInfo{"OXM_OF_METADATA", "OXM_OF_METADATA", "metadata", "metadata", 8, fmtHex}
	t[FieldInPort] = fieldInfo{"OXM_OF_IN_PORT", "NXM_OF_IN_PORT", "in_port", "in_port", 4, fmtPort}
	t[FieldEthType] = fieldInfo{"OXM_OF_ETH_TYPE", "NXM_OF_ETH_TYPE", "dl_type", "eth_type", 2, fmtHex}
	t[FieldEthSrc] = fieldInfo{"OXM_OF_ETH_SRC", "NXM_OF_ETH_SRC", "dl_src", "eth_src", 6, fmtMAC}
	t[FieldEthDst] = fieldInfo{"OXM_OF_ETH_DST", "NXM_OF_ETH_DST", "dl_dst", "eth_dst", 6, fmtMAC}
	t[FieldIPv4Src] = fieldInfo{"OXM_OF_IPV4_SRC", "NXM_OF_IP_SRC", "nw_src", "ip_src", 4, fmtIPv4}
	t[FieldIPv4Dst] = fieldInfo{"OXM_OF_IPV4_DST", "NXM_OF_IP_DST", "nw_dst", "ip_dst", 4, fmtIPv4}
	t[FieldIPv6Src] = fieldInfo{"OXM_OF_IPV6_SRC", "NXM_NX_IPV6_SRC", "ipv6_src", "ipv6_src", 16, fmtIPv6}
	t[FieldIPv6Dst] = fieldInfo{"OXM_OF_IPV6_DST", "NXM_NX_IPV6_DST", "ipv6_dst", "ipv6_dst", 16, fmtIPv6}
	t[FieldArpSpa] = fieldInfo{"OXM_OF_ARP_SPA", "NXM_OF_ARP_SPA", "arp_spa", "arp_spa", 4, fmtIPv4}
	t[FieldArpTpa] = fieldInfo{"OXM_OF_ARP_TPA", "NXM_OF_ARP_TPA", "arp_tpa", "arp_tpa", 4, fmtIPv4}
	t[FieldIPProto] = fieldInfo{"OXM_OF_IP_PROTO", "NXM_OF_IP_PROTO", "nw_proto", "nw_proto", 1, fmtDecimal}
	t[FieldArpOp] = fieldInfo{"OXM_OF_ARP_OP", "NXM_OF_ARP_OP", "arp_op", "arp_op", 2, fmtDecimal}
	t[FieldArpSha] = fieldInfo{"OXM_OF_ARP_SHA", "NXM_NX_ARP_SHA", "arp_sha", "arp_sha", 6, fmtMAC}
	t[FieldArpTha] = fieldInfo{"OXM_OF_ARP_THA", "NXM_NX_ARP_THA", "arp_tha", "arp_tha", 6, fmtMAC}
	t[FieldICMPType] = fieldInfo{"OXM_OF_ICMPV4_TYPE", "NXM_OF_ICMP_TYPE", "icmp_type", "icmp_type", 1, fmtDecimal}
	t[FieldICMPCode] = fieldInfo{"OXM_OF_ICMPV4_CODE", "NXM_OF_ICMP_CODE", "icmp_code", "icmp_code", 1, fmtDecimal}
	t[FieldICMPv6Type] = fieldInfo{"OXM_OF_ICMPV6_TYPE", "NXM_NX_ICMPV6_TYPE", "icmp_type", "icmpv6_type", 1, fmtDecimal}
	t[FieldICMPv6Code] = fieldInfo{"OXM_OF_ICMPV6_CODE", "NXM_NX_ICMPV6_CODE", "icmp_code", "icmpv6_code", 1, fmtDecimal}
	t[FieldNDTarget] = fieldInfo{"OXM_OF_IPV6_ND_TARGET", "NXM_NX_ND_TARGET", "nd_target", "nd_target", 16, fmtIPv6}
	t[FieldNDSll] = fieldInfo{"OXM_OF_IPV6_ND_SLL", "NXM_NX_ND_SLL", "nd_sll", "nd_sll", 6, fmtMAC}
	t[FieldNDTll] = fieldInfo{"OXM_OF_IPV6_ND_TLL", "NXM_NX_ND_TLL", "nd_tll", "nd_tll", 6, fmtMAC}
	t[FieldTCPSrc] = fieldInfo{"OXM_OF_TCP_SRC", "NXM_OF_TCP_SRC", "tp_src", "tcp_src", 2, fmtL4Port}
	t[FieldTCPDst] = fieldInfo{"OXM_OF_TCP_DST", "NXM_OF_TCP_DST", "tp_dst", "tcp_dst", 2, fmtL4Port}
	t[FieldUDPSrc] = fieldInfo{"OXM_OF_UDP_SRC", "NXM_OF_UDP_SRC", "tp_src", "udp_src", 2, fmtL4Port}
	t[FieldUDPDst] = fieldInfo{"OXM_OF_UDP_DST", "NXM_OF_UDP_DST", "tp_dst", "udp_dst", 2, fmtL4Port}
	t[FieldSCTPSrc] = fieldInfo{"OXM_OF_SCTP_SRC", "OXM_OF_SCTP_SRC", "tp_src", "sctp_src", 2, fmtL4Port}
	t[FieldSCTPDst] = fieldInfo{"OXM_OF_SCTP_DST", "OXM_OF_SCTP_DST", "tp_dst", "sctp_dst", 2, fmtL4Port}
	return t
}()

// Reserved OpenFlow port numbers the builder accepts.
const (
	PortInPort     uint32 = 0xfffffff8
	PortNormal     uint32 = 0xfffffffa
	PortController uint32 = 0xfffffffd
	PortLocal      uint32 = 0xfffffffe
)

func formatPort(p uint32) string {
	switch p {
	case PortInPort:
		return "IN_PORT"
	case PortNormal:
		return "NORMAL"
	case PortController:
		return "CONTROLLER"
	case PortLocal:
		return "LOCAL"
	}
	return strconv.FormatUint(uint64(p), 10)
}

// beUint reads a big-endian unsigned integer of up to 8 bytes.
func beUint(b []byte) uint64 {
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v
}

// putBE writes v big-endian into a new slice of n bytes.
func putBE(v uint64, n int) []byte {
	b := make([]byte, n)
	for i := n - 1; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return b
}

// cHex prints like C's "%#x": 0 prints as "0", everything else as 0x...
func cHex(v uint64) string {
	if v == 0 {
		return "0"
	}
	return "0x" + strconv.FormatUint(v, 16)
}

func allOnes(b []byte) bool {
	for _, x := range b {
		if x != 0xff {
			return false
		}
	}
	return true
}

// prefixLen returns the CIDR prefix length of mask, or -1 if it is not one.
func prefixLen(mask []byte) int {
	ones, bits := net.IPMask(mask).Size()
	if bits == 0 {
		return -1
	}
	return ones
}

var ctStateNames = []string{"new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat"}

// formatValue renders one match value (and optional mask) as ovs-ofctl does.
func formatValue(info fieldInfo, value, mask []byte) string {
	switch info.format {
	case fmtDecimal:
		return strconv.FormatUint(beUint(value), 10)
	case fmtPort:
		return formatPort(uint32(beUint(value)))
	case fmtIPv4, fmtIPv6:
		s := net.IP(value).String()
		if mask != nil && !allOnes(mask) {
			if n := prefixLen(mask); n >= 0 {
				s += "/" + strconv.Itoa(n)
			} else {
				s += "/" + net.IP(mask).String()
			}
		}
		return s
	case fmtMAC:
		s := net.HardwareAddr(value).String()
		if mask != nil && !allOnes(mask) {
			s += "/" + net.HardwareAddr(mask).String()
		}
		return s
	case fmtCtState:
		v, m := uint32(beUint(value)), uint32(0xffffffff)
		if mask != nil {
			m = uint32(beUint(mask))
		}
		var b strings.Builder
		for i, name := range ctStateNames {
			bit := uint32(1) << i
			if m&bit == 0 {
				continue
			}
			if v&bit != 0 {
				b.WriteString("+")
			} else {
				b.WriteString("-")
			}
			b.WriteString(name)
		}
		return b.String()
	case fmtL4Port:
		if mask != nil && !allOnes(mask) {
			return cHex(beUint(value)) + "/" + cHex(beUint(mask))
		}
		return strconv.FormatUint(beUint(value), 10)
	case fmtHexLabel:
		s := hex128(value)
		if mask != nil && !allOnes(mask) {
			s += "/" + hex128(mask)
		}
		return s
	default: // fmtHex
		s := cHex(beUint(value))
		if mask != nil && !allOnes(mask) {
			s += "/" + cHex(beUint(mask))
		}
		return s
	}
}

func hex128(b []byte) string {
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	if hi == 0 {
		return cHex(lo)
	}
	return fmt.Sprintf("0x%x%016x", hi, lo)
}
