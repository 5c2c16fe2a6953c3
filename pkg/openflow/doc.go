// Package openflow is Weir's binding layer over antrea.io/ofnet and
// antrea.io/libOpenflow. It owns everything between "a flow the pipeline wants"
// and "bytes ovs-vswitchd accepted":
//
//   - a typed, fluent flow builder (Flow, FlowBuilder, Action) covering every
//     match and action the pipeline uses, encoded with libOpenflow types;
//   - OpenFlow groups (Group, GroupBuilder): all, select (weights,
//     dp_hash or hash selection_method) and indirect, whose buckets hold
//     the same Actions (ct(nat), set_field, resubmit, output, group);
//   - rendering of flows and groups in exactly the syntax `ovs-ofctl -O
//     OpenFlow15 dump-flows` and `dump-groups` print, for tests, logs and
//     tooling;
//   - the switch connection (Switch): ofnet's controller dials the bridge's
//     management socket, reconnects forever, and a reply tap in this package
//     routes barrier replies, OVS errors and stats replies back to the caller
//     that caused them (ofnet drops BarrierReply and keeps errors internal);
//   - atomic bundles, a real barrier, typed OVS errors (OVSError);
//   - a (round, category, owner) cookie layout, flow stats read-back and
//     delete-by-cookie;
//   - a per-owner cache holding encoded flow_mods and group_mods: an
//     owner's groups and flows change together in one bundle
//     (SyncOwnerStates), a changed group is modified in place, and the
//     cache is replayed after every reconnect, groups before flows, so a
//     restarted ovs-vswitchd gets both back;
//   - group read-back (DumpGroups) with per-bucket counters that survive
//     OVS's reset of them on a group modify, and VerifyGroups.
//
// The package knows nothing about Kubernetes, pods or policies: owners are
// opaque strings and categories opaque numbers chosen by the layer above.
package openflow
