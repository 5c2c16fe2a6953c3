package nodenet

// ipForwardPath is net.ipv4.ip_forward of the calling thread's network
// namespace (procfs shows the namespace of the thread that reads it).
const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// EnableIPv4Forwarding sets net.ipv4.ip_forward=1 in the calling thread's
// network namespace, which the node needs to route pod traffic it does
// not terminate: pod egress that is masqueraded towards the underlay, and
// Service traffic a kube-proxy DNATs to a pod and sends back through the
// gateway. It reports whether the setting was off before (it is idempotent).
func EnableIPv4Forwarding() (changed bool, err error) {
	return setSysctl(ipForwardPath, "net.ipv4.ip_forward", "1")
}

// ipv6ForwardPath is net.ipv6.conf.all.forwarding, which turns IPv6
// forwarding on for every interface.
const ipv6ForwardPath = "/proc/sys/net/ipv6/conf/all/forwarding"

// EnableIPv6Forwarding sets net.ipv6.conf.all.forwarding=1 in the calling
// thread's network namespace, the IPv6 twin of EnableIPv4Forwarding for a
// dual-stack node. It reports whether the setting was off before.
func EnableIPv6Forwarding() (changed bool, err error) {
	return setSysctl(ipv6ForwardPath, "net.ipv6.conf.all.forwarding", "1")
}
