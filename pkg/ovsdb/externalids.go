package ovsdb

// Keys of the external_ids Weir writes on the Port rows it creates: which
// port is for what, so a restarted agent tells pods, tunnel, gateway and
// uplink apart from OVSDB alone. The record of a pod port is
// pkg/interfacestore's (interfacestore.ExternalIDs).
const (
	// KeyWeirType says what a port is for; its values are the WeirType*
	// constants.
	KeyWeirType = "weir-type"
)

// Values of KeyWeirType.
const (
	WeirTypePod     = "pod"
	WeirTypeGateway = "gateway"
	WeirTypeTunnel  = "tunnel"
	WeirTypeUplink  = "uplink"
)
