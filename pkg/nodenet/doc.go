// Package nodenet owns the node-side networking of Weir's Geneve overlay, in
// the node's own network namespace (the agent runs with host networking):
//
//   - the routes that send traffic for a peer node's pod CIDR from the node
//     into OVS: "<peer pod CIDR> via <peer gateway IP> dev <gateway> onlink"
//     (EnsurePeerRoute, DeletePeerRoute); the pipeline answers ARP for the
//     peer gateway IP and tunnels the packets (pkg/pipeline, PeerFlows);
//   - the MTU arithmetic of the encapsulation (PodMTU, GeneveOverhead);
//   - for the userspace (netdev) datapath only, the underlay: OVS's
//     userspace tunnel code sends and receives Geneve through an OVS bridge
//     that holds the underlay NIC and carries the node's underlay addresses,
//     IPv4, IPv6 or both (SetupUnderlay, TeardownUnderlay, WarmTunnelNeighbor). The kernel
//     datapath needs none of this.
//
// Every function works in the network namespace of the calling goroutine's
// OS thread, like the netlink calls it makes; to act on another namespace
// run it inside ns.Do (github.com/containernetworking/plugins/pkg/ns).
// Bridges and ports are created through pkg/ovsdb; flows are none of this
// package's business. The design is described in docs/overlay.md.
package nodenet
