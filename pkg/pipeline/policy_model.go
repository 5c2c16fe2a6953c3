package pipeline

import (
	"net"
)

// This file is the seam between NetworkPolicy computation (pkg/policy, which
// knows Kubernetes) and its realization as flows (this package, which does
// not): the internal rule model. pkg/policy turns Pods, Namespaces and
// NetworkPolicies into PolicyRules and isolation sets for the pods of this
// node; the pipeline turns those into conjunctive flows. The model is plain
// data so that the computation could move to a central controller that
// ships each node only its rules.

// Direction is the traffic direction a rule or isolation applies to,
// from the point of view of the local pod it protects.
type Direction uint8

const (
	// Ingress rules match traffic to local pods.
	Ingress Direction = iota + 1
	// Egress rules match traffic from local pods.
	Egress
)

func (d Direction) String() string {
	switch d {
	case Ingress:
		return "Ingress"
	case Egress:
		return "Egress"
	}
	return "Direction(?)"
}

// Protocol is an L4 protocol a policy port matches.
type Protocol uint8

const (
	ProtocolTCP  Protocol = 6
	ProtocolUDP  Protocol = 17
	ProtocolSCTP Protocol = 132
)

// PortRange is one protocol with a destination port range; From == To is a
// single port, From == 0 && To == 0 all ports of the protocol.
type PortRange struct {
	Protocol Protocol
	From, To uint16
}

// LocalPod is a pod on this node that a rule applies to ("appliedTo").
type LocalPod struct {
	// IP is the pod's IPv4 address. An IPv6-only pod (on a pipeline
	// with IPv6) has none: IP is then nil or its IPv6 address, which no
	// flow matches (its IPv6 flows match OFPort).
	IP     net.IP
	OFPort uint32 // its OpenFlow port on br-int
}

// PolicyRule is one allow rule of one NetworkPolicy, resolved for this
// node: it allows traffic between any of Pods and any address in Peers on
// any of Ports, in Direction. Rules are only ever "allow": isolation (the
// default deny) is expressed by Isolation.
//
// A Kubernetes rule whose named ports resolve to different numbers on
// different pods is split by pkg/policy into several PolicyRules (one per
// distinct port set), each with the pods it holds for; they share Name and
// differ in ID.
type PolicyRule struct {
	// ID identifies the rule on this node; it is the conjunction ID and the
	// object part of the rule's flow cookies, so it must be unique among the
	// node's current rules and non-zero. pkg/policy allocates it.
	ID uint32
	// Name says where the rule comes from, for operators:
	// "<namespace>/<policy name>/<ingress|egress>/<rule index>", plus
	// "/<n>" for the parts of a rule split by named ports.
	Name      string
	Direction Direction
	// Pods are the local pods the rule applies to (never empty: a rule
	// without local pods is not sent to this node).
	Pods []LocalPod
	// Peers are the remote ends: pod IPs as /32s and ipBlock CIDRs, with
	// "except" already subtracted (pkg/policy splits a CIDR minus its
	// exceptions into disjoint CIDRs). A nil Peers means any address; an
	// empty non-nil Peers means none (the rule matches nothing).
	Peers []*net.IPNet
	// Ports restricts destination ports; nil means any protocol and port.
	Ports []PortRange
}

// Isolation says which local pods are isolated for a direction (selected
// by at least one policy of that policy type): their traffic in that
// direction is dropped unless a PolicyRule allows it.
type Isolation struct {
	Ingress []LocalPod
	Egress  []LocalPod
}
