// Package cniv1 is version 1 of the gRPC API between Weir's CNI binary
// (cmd/cni-client, installed as /opt/cni/bin/weir) and the CNI server of the
// node agent (pkg/cniserver).
//
// The binary forwards every CNI command except VERSION unchanged: CniCmdArgs
// carries the CNI_* environment and the raw network configuration from
// stdin, and CniCmdResponse carries either the CNI result bytes to print on
// stdout or a structured CNI Error. The error codes the two sides agree on
// are the Code* constants of this package.
//
// The *.pb.go files are generated from cni.proto by hack/gen-proto.sh
// (`make proto`); do not edit them by hand.
package cniv1
