// Package interfacestore is the single owner of the node's local pod
// interfaces: which container interface (container ID + ifname) is
// attached to which OVS port and OpenFlow port, with which MAC and
// addresses, for which pod and network. pkg/cniserver writes the Store; the
// policy controller, the Pod controller, the tooling API and metrics read
// it. The package also owns the two things every writer and reader of
// those interfaces must agree on: the versioned codec of the external_ids
// record Weir keeps on each pod port (the durable copy a restarted agent
// restores the Store from), and the OpenFlow port numbering of the bridge
// (the tunnel and gateway numbers, and the pool pod ports are numbered
// from).
package interfacestore
