package ovsdb

// Keys of the external_ids Weir writes on the Port rows it creates. Together
// they let a restarted agent rebuild which port belongs to which pod, tunnel
// or uplink from OVSDB alone.
const (
	// KeyWeirType says what a port is for; its values are the WeirType*
	// constants.
	KeyWeirType = "weir-type"
	// KeyPodNamespace and KeyPodName identify the pod of a pod port.
	KeyPodNamespace = "pod-namespace"
	KeyPodName      = "pod-name"
	// KeyContainerID is the CNI container (sandbox) ID of a pod port.
	KeyContainerID = "container-id"
	// KeyIfName is the interface name inside the pod (CNI_IFNAME).
	KeyIfName = "ifname"
	// KeyIP holds the pod's IP addresses, comma separated.
	KeyIP = "ip"
	// KeyMAC is the MAC address of the pod-side interface.
	KeyMAC = "mac"
	// KeyNetNS is the path of the pod's network namespace.
	KeyNetNS = "netns"
)

// Values of KeyWeirType.
const (
	WeirTypePod     = "pod"
	WeirTypeGateway = "gateway"
	WeirTypeTunnel  = "tunnel"
	WeirTypeUplink  = "uplink"
)
