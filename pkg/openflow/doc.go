// Package openflow is Weir's binding layer over antrea.io/ofnet and
// antrea.io/libOpenflow. It owns everything between "a flow the pipeline wants"
// and "bytes ovs-vswitchd accepted":
//
//   - a typed, fluent flow builder (Flow, FlowBuilder, Action) covering every
//     match and action the pipeline uses, encoded with libOpenflow types;
//   - rendering of flows in exactly the syntax `ovs-ofctl -O OpenFlow15
//     dump-flows` prints, for tests, logs and tooling;
//   - the switch connection (Switch): ofnet's controller dials the bridge's
//     management socket, reconnects forever, and a reply tap in this package
//     routes barrier replies, OVS errors and stats replies back to the caller
//     that caused them (ofnet drops BarrierReply and keeps errors internal);
//   - atomic bundles, a real barrier, typed OVS errors (OVSError);
//   - a (round, category, owner) cookie layout, flow stats read-back and
//     delete-by-cookie;
//   - a per-owner flow cache holding encoded flow_mods, replayed after every
//     reconnect so a restarted ovs-vswitchd gets its flows back.
//
// The package knows nothing about Kubernetes, pods or policies: owners are
// opaque strings and categories opaque numbers chosen by the layer above.
package openflow
