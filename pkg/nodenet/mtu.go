package nodenet

// GeneveOverhead is what Geneve over IPv4 adds to a packet as OVS builds it
// (no Geneve options): outer IPv4 header 20 + UDP 8 + Geneve 8 + the inner
// Ethernet header 14 bytes. The UDP checksum (csum=true) costs no room.
const GeneveOverhead = 50

// PodMTU returns the largest MTU pods (and the gateway) can use so that
// their packets, once encapsulated, fit the underlay's MTU.
func PodMTU(underlayMTU int) int { return underlayMTU - GeneveOverhead }
