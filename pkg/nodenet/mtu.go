package nodenet

// GeneveOverhead is what Geneve over IPv4 adds to a packet as OVS builds it
// (no Geneve options): outer IPv4 header 20 + UDP 8 + Geneve 8 + the inner
// Ethernet header 14 bytes. The UDP checksum (csum=true) costs no room.
const GeneveOverhead = 50

// GeneveOverheadIPv6 is the same over an IPv6 underlay: the outer IPv6
// header is 40 bytes instead of 20 (no extension headers: OVS adds none),
// so 40 + UDP 8 + Geneve 8 + inner Ethernet 14. The overhead depends only
// on the underlay's family, not on the inner packet's: Geneve carries the
// inner Ethernet frame whatever its EtherType.
const GeneveOverheadIPv6 = 70

// PodMTU returns the largest MTU pods (and the gateway) can use so that
// their packets, once encapsulated, fit the underlay's MTU, for an IPv4
// underlay (PodMTUFor(underlayMTU, false)).
func PodMTU(underlayMTU int) int { return PodMTUFor(underlayMTU, false) }

// PodMTUFor is PodMTU for the underlay's family: ipv6Underlay is true when
// the tunnel endpoints (the local node's underlay address and the peers'
// node IPs) are IPv6. One family per node: a node tunnels to every peer
// over the family of its own endpoint.
func PodMTUFor(underlayMTU int, ipv6Underlay bool) int {
	if ipv6Underlay {
		return underlayMTU - GeneveOverheadIPv6
	}
	return underlayMTU - GeneveOverhead
}
