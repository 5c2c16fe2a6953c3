// Package agentapi is the node agent's operator tooling API: the gRPC
// service weir.agent.v1.AgentService (pkg/apis/agent/v1) served on a unix
// socket (mode 0600) and optionally on TCP with TLS, with server
// reflection. It answers from the agent's live state (OpenFlow switch,
// pipeline, CNI server, OVSDB, Node controller) through small interfaces so
// it can be tested with fakes, and runs ofproto/trace through
// ovs-vswitchd's unixctl socket (pkg/unixctl). See docs/tooling.md.
package agentapi
