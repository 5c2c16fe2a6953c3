// Package pipeline owns Weir's OpenFlow pipeline: the ordered, named tables
// (the order is the pipeline) and the features that compose flows in them —
// classifier, spoof guard, ARP responder, conntrack, L3/L2 forwarding,
// Geneve overlay forwarding to peer nodes, NetworkPolicy as conjunctive
// flows (policy.go), and output. It is the only place in Weir where flows
// are composed; it builds them with pkg/openflow and installs them per owner
// (the base pipeline, each pod, each peer node, each policy rule and shared
// policy match) so every owner's flows carry its own cookie and can be
// found, replaced and deleted.
//
// The package knows nothing of sockets, CNI or Kubernetes objects: callers
// hand it plain descriptions (Config, PodInterface, PeerNode, PolicyRule).
// The overlay design is described in docs/overlay.md, the policy flows in
// docs/pipeline.md.
package pipeline
