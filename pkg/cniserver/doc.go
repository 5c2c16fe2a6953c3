// Package cniserver is the agent's gRPC CNI server (the cniv1.Cni service
// the `weir` binary forwards to): it validates each CNI call, sets up a pod
// interface (pkg/podnet), its IP (pkg/ipam), OVS port (pkg/ovsdb) and flows
// (pkg/pipeline), rolls all of it back when a step fails, and maps failures
// to CNI error codes. Each attachment (container ID + interface name) is
// recorded with its network's name in the external_ids of its OVS port, the
// durable record Restore rebuilds the server from after a restart; GC,
// CHECK and DEL of a network act on that network's attachments only. The
// behaviour against the CNI specification is described in docs/cni.md.
package cniserver
