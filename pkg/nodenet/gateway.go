package nodenet

import (
	"fmt"
	"path/filepath"
)

// SetGatewayARPAnnounce sets net.ipv4.conf.<gatewayName>.arp_announce=2 in
// the calling thread's network namespace: when the node's kernel asks for a
// pod's MAC on the gateway, the request's sender IP is then the gateway's
// own address (the best local address on the pod subnet) instead of the
// source of the packet that triggered it. That source is often the node IP
// (a host process answering a pod that connected to the node IP, a NodePort
// reply after kube-proxy's un-NAT), and the pod's reply is then addressed
// to the node IP. The pipeline sends such replies to the gateway too
// (pkg/pipeline, ARPResponder); this is defence in depth, so the node never
// depends on ARP aimed at an address outside the pod subnet. The kernel
// uses the higher of "all" and the interface's value, so a node-wide
// setting is left alone. It reports whether the value changed.
//
// IPv6 needs no twin: the kernel sends a Neighbor Solicitation from the
// packet's source only if that address is on the soliciting interface,
// else from the interface's link-local address, never from the node IP.
// On an IPv6-only node the setting is harmless (the gateway has no IPv4
// address to ARP from; the IPv4 sysctls of the device exist all the same),
// so the agent may set it whatever the node's families.
func SetGatewayARPAnnounce(gatewayName string) (changed bool, err error) {
	if gatewayName == "" || gatewayName != filepath.Base(gatewayName) {
		return false, fmt.Errorf("nodenet: arp_announce: invalid gateway interface name %q", gatewayName)
	}
	return setSysctl(filepath.Join("/proc/sys/net/ipv4/conf", gatewayName, "arp_announce"),
		"net.ipv4.conf."+gatewayName+".arp_announce", "2")
}
