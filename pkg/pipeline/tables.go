package pipeline

// Table is one stage of the pipeline.
type Table struct {
	ID   uint8
	Name string
}

// The pipeline, in order. Packets only ever move forward (goto_table), so
// this list is the pipeline; table IDs are positions in it.
var tableNames = [...]string{
	"Classifier",         // where did the packet come from: gateway, tunnel, pod
	"SpoofGuard",         // a pod may only send with its own IP and MAC
	"ARPResponder",       // answer ARP for the gateway; forward ARP by target IP
	"UnSNAT",             // proxy: replies to the hairpin IP are un-SNATed first (proxy.go)
	"ConntrackZone",      // send IP through conntrack
	"ConntrackState",     // drop invalid; established connections skip policy
	"ServiceLB",          // proxy: a pod's new connection to a frontend -> the Service's select group (proxy.go)
	"HairpinSNAT",        // proxy: a pod reaching itself through its Service is SNATed (proxy.go)
	"EgressRule",         // hook: NetworkPolicy egress rules
	"EgressDefaultRule",  // hook: egress default deny for isolated pods
	"L3Forwarding",       // routed traffic: rewrite MACs, dec_ttl; peers: into the tunnel
	"L2Forwarding",       // destination MAC -> output port register
	"IngressRule",        // hook: NetworkPolicy ingress rules
	"IngressDefaultRule", // hook: ingress default deny for isolated pods
	"ConntrackCommit",    // commit new connections
	"Output",             // output to the port in the register
}

// Table IDs, one per entry of tableNames. UnSNAT, ServiceLB and
// HairpinSNAT hold flows only with Config.Proxy; without it no flow sends a
// packet to them and every other flow is what it was before they were
// added (the goldens print table names, not numbers). Adding them
// renumbered the tables after ARPResponder, so an agent upgraded across
// that change must start a new cookie round with the old flows deleted
// (as every restart does) and nothing may keep table numbers.
const (
	Classifier uint8 = iota
	SpoofGuard
	ARPResponder
	UnSNAT
	ConntrackZone
	ConntrackState
	ServiceLB
	HairpinSNAT
	EgressRule
	EgressDefaultRule
	L3Forwarding
	L2Forwarding
	IngressRule
	IngressDefaultRule
	ConntrackCommit
	Output
	numTables
)

// Tables returns the pipeline's tables in order.
func Tables() []Table {
	out := make([]Table, numTables)
	for i := range out {
		out[i] = Table{ID: uint8(i), Name: tableNames[i]}
	}
	return out
}

// TableName returns the name of table id (for openflow.Renderer).
func TableName(id uint8) (string, bool) {
	if id >= numTables {
		return "", false
	}
	return tableNames[id], true
}

// TableNames maps table IDs to names, as OVSDB's Flow_Table wants them.
func TableNames() map[uint8]string {
	m := make(map[uint8]string, numTables)
	for _, t := range Tables() {
		m[t.ID] = t.Name
	}
	return m
}

// Cookie categories: which feature owns a flow.
const (
	CategoryBase   uint8 = 1 // the static pipeline
	CategoryPod    uint8 = 2 // one local pod
	CategoryPeer   uint8 = 3 // one remote node (AddPeer)
	CategoryPolicy uint8 = 4 // one policy rule (policy issue)
	// CategoryService: one ServicePort of the proxy (ApplyServices), and
	// the proxy's hairpin flows.
	CategoryService uint8 = 5
)

// Flow priorities, per table. OVS picks the highest-priority flow that
// matches, so within a table the numbers only order flows whose matches
// overlap; each comment says which flows a priority must win over or lose
// to. Equal numbers in different tables mean nothing.
const (
	// prioMiss: every table's last resort, matching everything: drop
	// (Classifier, SpoofGuard, ConntrackZone, Output) or on to the next
	// table.
	prioMiss uint16 = 0

	// Classifier. in_port matches never overlap, so the two numbers need
	// no order; they differ only because they always have, and changing
	// one would change every node's flows for nothing.
	//
	// prioClassifierPort: the gateway and tunnel ports.
	prioClassifierPort uint16 = 200
	// prioClassifierPod: a local pod's port.
	prioClassifierPod uint16 = 190

	// prioSpoofGuardPod: a pod's packets with its own IP and MAC, above
	// the miss that drops everything else from pods.
	prioSpoofGuardPod uint16 = 200
	// prioSpoofGuardRouterOnly: ICMPv6 messages only routers send (Router
	// Advertisement, Redirect) are dropped from pods even with the pod's
	// own addresses; above prioSpoofGuardPod, which would let them pass
	// (ipv6.go).
	prioSpoofGuardRouterOnly uint16 = 210
	// prioSpoofGuardND: a pod's Neighbor Solicitations and Advertisements
	// that claim only the pod's own addresses and MAC (ipv6.go); above
	// prioSpoofGuardNDDrop.
	prioSpoofGuardND uint16 = 206
	// prioSpoofGuardNDDrop: any other NS or NA from a pod is dropped (a
	// forged one would poison its neighbours' caches); above
	// prioSpoofGuardPod, whose IPv6 flow would let one with the pod's own
	// source address pass.
	prioSpoofGuardNDDrop uint16 = 205

	// ARPResponder, from the top:
	//
	// prioARPRespond: ARP requests OVS answers itself (pods asking for the
	// gateway IP, anyone asking for a peer's gateway IP); above
	// prioARPForward, whose flow for the gateway IP would otherwise send a
	// pod's request to the gateway port.
	prioARPRespond uint16 = 200
	// prioARPReplyToGateway: a pod's ARP reply addressed to the gateway
	// MAC goes to the gateway port whatever its target IP; above the
	// per-pod target flows (prioARPForward), so a reply for the gateway
	// is never sent to a pod (pipeline.go).
	prioARPReplyToGateway uint16 = 195
	// prioARPForward: ARP by target IP, to the gateway's or a pod's port.
	prioARPForward uint16 = 190
	// prioARPDrop: any other ARP is dropped; above the miss, which sends
	// IP on to conntrack.
	prioARPDrop uint16 = 1
	// prioNDDrop: Neighbor Solicitations and Advertisements the ND
	// forwarding flows (prioARPForward) do not take are dropped, above the
	// miss that would send them into conntrack.
	prioNDDrop uint16 = 1

	// prioConntrackZone: IP goes through conntrack; the miss drops the
	// rest (ARP never gets here: ARPResponder outputs or drops it).
	prioConntrackZone uint16 = 200
	// prioConntrackInvalid: packets conntrack marks invalid are dropped,
	// above the miss that sends the rest to the policy tables.
	prioConntrackInvalid uint16 = 200

	// Policy, in EgressRule/IngressRule (pipeline.go, policy.go): the
	// bypasses sit above the rules, so replies and packets already checked
	// never meet them.
	//
	// prioPolicyBypass: replies and related packets skip policy.
	prioPolicyBypass uint16 = 210
	// prioPolicyNode: the node's own traffic to pods (ingress), and pods'
	// traffic to the Service CIDR before kube-proxy's DNAT (egress).
	prioPolicyNode uint16 = 205
	// prioPolicyCurrent: packets of connections committed under the current
	// policy generation skip policy.
	prioPolicyCurrent uint16 = 200
	// prioPolicyPlain: allow flows of rules with a single dimension.
	prioPolicyPlain uint16 = 110
	// prioPolicyConj: conjunction clause flows and conj_id flows.
	prioPolicyConj uint16 = 100
	// prioPolicyDrop: default drops of isolated pods in the *DefaultRule
	// tables, above their miss that lets everything else pass.
	prioPolicyDrop uint16 = 200

	// L3Forwarding:
	//
	// prioL3ServiceReply: replies of connections that came from the
	// gateway go back to the gateway (service.go); above prioL3Route, so
	// they never take the direct route to a pod or peer.
	prioL3ServiceReply uint16 = 210
	// prioL3Route: routes to a local pod, into the tunnel to a peer's pods
	// or node IP, and from the tunnel to the gateway IP.
	prioL3Route uint16 = 200

	// prioL2Forward: destination MAC to output port, above the miss that
	// goes on with no port chosen.
	prioL2Forward uint16 = 200

	// ConntrackCommit, from the top:
	//
	// prioCommitMarked: new connections from the gateway or the tunnel are
	// committed with their ct_mark bit (service.go); above the plain
	// commit.
	prioCommitMarked uint16 = 210
	// prioCommitNew: new connections are committed with the policy
	// generation.
	prioCommitNew uint16 = 200
	// prioCommitCurrent: established connections already committed under
	// the current generation go on uncommitted; above prioRecommit, so
	// only connections checked again after a policy change are
	// re-committed.
	prioCommitCurrent uint16 = 190
	// prioRecommit: established connections from an older generation that
	// the policy still allows are re-committed with the current one.
	prioRecommit uint16 = 180

	// The proxy's flows (proxy.go), only with Config.Proxy:
	//
	// prioUnSNAT: replies to the hairpin IP go through the SNAT zone,
	// above UnSNAT's miss.
	prioUnSNAT uint16 = 200
	// prioServiceFrontend: a frontend's new connections to its group (or
	// dropped); prioServiceSourceRange: a LoadBalancer frontend's allowed
	// client prefixes, above its drop at prioServiceFrontend.
	prioServiceFrontend    uint16 = 200
	prioServiceSourceRange uint16 = 210
	// prioHairpin: a local endpoint talking to itself, above the miss.
	prioHairpin uint16 = 200
	// prioCommitHairpin: hairpin packets are not committed to the pod
	// zone again (their last ct was the SNAT zone's); above every other
	// ConntrackCommit flow.
	prioCommitHairpin uint16 = 220
	// prioOutputHairpin: hairpin packets (reg0[17]) with a port chosen go
	// out of their in_port, above prioOutput.
	prioOutputHairpin uint16 = 210

	// prioOutput: output to the chosen port (outputFoundMark); the miss
	// drops packets no flow chose a port for.
	prioOutput uint16 = 200
)

// The ct_mark bits of the policy generation.
const (
	// ctMarkGenShift/ctMarkGenMask: ct_mark bits 8..31 hold the policy
	// generation a connection was last checked against (bit 0 is
	// ctMarkFromGateway, bit 1 ctMarkFromTunnel).
	ctMarkGenShift        = 8
	ctMarkGenMask  uint32 = 0xffffff00
	maxGeneration  uint32 = 1<<24 - 1
)
