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
	"ConntrackZone",      // send IP through conntrack
	"ConntrackState",     // drop invalid; established connections skip policy
	"EgressRule",         // hook: NetworkPolicy egress rules
	"EgressDefaultRule",  // hook: egress default deny for isolated pods
	"L3Forwarding",       // routed traffic: rewrite MACs, dec_ttl; peers: into the tunnel
	"L2Forwarding",       // destination MAC -> output port register
	"IngressRule",        // hook: NetworkPolicy ingress rules
	"IngressDefaultRule", // hook: ingress default deny for isolated pods
	"ConntrackCommit",    // commit new connections
	"Output",             // output to the port in the register
}

// Table IDs, one per entry of tableNames.
const (
	Classifier uint8 = iota
	SpoofGuard
	ARPResponder
	ConntrackZone
	ConntrackState
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

// Registers and marks the pipeline uses.
const (
	// regSource (reg0[0..3]) says where the packet came from.
	regSource              = 0
	sourceGateway   uint64 = 1
	sourceTunnel    uint64 = 2
	sourcePod       uint64 = 3
	regOutputFound         = 0 // reg0[16]: an output port was chosen
	outputFoundBit         = 16
	regOutPort             = 1 // reg1: the chosen output port
	sourceBitsStart        = 0
	sourceBitsEnd          = 3
)

// Cookie categories: which feature owns a flow.
const (
	CategoryBase   uint8 = 1 // the static pipeline
	CategoryPod    uint8 = 2 // one local pod
	CategoryPeer   uint8 = 3 // one remote node (AddPeer)
	CategoryPolicy uint8 = 4 // one policy rule (policy issue)
)

// Policy priorities in EgressRule/IngressRule (policy.go) and the ct_mark
// bits of the policy generation.
const (
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
	// prioPolicyDrop: default drops of isolated pods in the *DefaultRule tables.
	prioPolicyDrop uint16 = 200

	// ctMarkGenShift/ctMarkGenMask: ct_mark bits 8..31 hold the policy
	// generation a connection was last checked against (bit 0 is
	// ctMarkFromGateway, bit 1 ctMarkFromTunnel).
	ctMarkGenShift        = 8
	ctMarkGenMask  uint32 = 0xffffff00
	maxGeneration  uint32 = 1<<24 - 1
)
