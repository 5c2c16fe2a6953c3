// Package ovsdb is Weir's typed client for the Open_vSwitch database served by
// ovsdb-server, built on github.com/ovn-org/libovsdb v0.7.0.
//
// It owns the agent's durable OVS configuration:
//
//   - bridges (Bridge rows with their local port): datapath type, fail_mode
//     (secure, or standalone for the userspace datapath's underlay bridge),
//     the OpenFlow versions Weir speaks, datapath-id and hwaddr, and
//     OpenFlow table names (Flow_Table rows referenced from
//     Bridge.flow_tables);
//   - ports and interfaces: internal ports (the gateway), existing netdevs
//     (pod veths, the uplink) and flow-based Geneve tunnel ports, including
//     waiting for ovs-vswitchd to assign the OpenFlow port number and
//     reporting its Interface.error when it cannot;
//   - the external_ids Weir writes on its ports (see the Key* and WeirType*
//     constants), which are the durable record a restarted agent rebuilds
//     its state from.
//
// Every logical change is one OVSDB transaction, so a crash never leaves half
// a port behind; an Ensure/Add call that fails after creating rows removes
// them again. The Client keeps a monitor on the few tables and columns it
// uses (Open_vSwitch, Bridge, Port, Interface, Flow_Table) and reads from that
// replica. ovsdb-server sends the update notifications of a transaction
// before its reply, and libovsdb applies notifications before delivering the
// reply, so a call observes its own writes as soon as the transaction
// returns.
//
// The Client reconnects forever when ovsdb-server goes away (libovsdb's
// WithReconnect; the monitor is re-established and the replica rebuilt by
// libovsdb on every reconnect). While disconnected, calls wait for the
// connection to come back until their context ends.
//
// It knows nothing about OpenFlow (pkg/openflow) or Kubernetes: callers pass
// names and external_ids maps.
//
// The table models in subpackage vswitchd are generated from OVS's schema;
// see the go:generate line below and vswitchd/doc.go.
package ovsdb

//go:generate go run github.com/ovn-org/libovsdb/cmd/modelgen@v0.7.0 -p vswitchd -o vswitchd /usr/share/openvswitch/vswitch.ovsschema
