// Package cniserver will own the agent's gRPC CNI server: pod interface
// setup, IPAM and the mapping of failures to CNI error codes. Filled in by
// the single-node networking issue (#3).
package cniserver
