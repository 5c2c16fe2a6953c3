package podnet

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
)

// HostIfPrefix starts every host-side interface name HostIfName returns.
const HostIfPrefix = "weir"

// HostIfName returns the name of the host side of the veth of a container's
// interface: "weir" followed by the first 11 hex digits (44 bits) of
// SHA-256(containerID + "/" + ifName), 15 bytes in all, the longest name the
// kernel accepts. The name is stable, so an ADD retry, DEL and CHECK of the
// same container interface all find the same host interface. 44 bits make a
// collision between two live pods of one node negligible (probability about
// 3e-8 with 1000 pods, against 1e-4 for 32 bits), which matters because
// SetupVeth replaces a conflicting host veth of the same name.
func HostIfName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return HostIfPrefix + hex.EncodeToString(sum[:6])[:11]
}

// MACFromIP returns the MAC SetupVeth gives a pod interface configured
// without one: locally administered, unicast, and derived from the pod
// address, 0a:58 followed by the four bytes of an IPv4 address (the scheme
// OVN-Kubernetes uses), or by the first four bytes of a SHA-256 of an IPv6
// address. Deriving it from the address makes it stable across ADD retries
// and means a peer's neighbour cache entry for a reused address stays
// correct when the address passes to a new pod. It returns nil for an
// invalid address.
func MACFromIP(ip net.IP) net.HardwareAddr {
	var tail []byte
	if v4 := ip.To4(); v4 != nil {
		tail = v4
	} else if v6 := ip.To16(); v6 != nil {
		sum := sha256.Sum256(v6)
		tail = sum[:4]
	} else {
		return nil
	}
	// 0x0a: bit 0 (group) clear, bit 1 (locally administered) set.
	return net.HardwareAddr{0x0a, 0x58, tail[0], tail[1], tail[2], tail[3]}
}
