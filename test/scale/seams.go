// Command scale is the scale harness of `make scale` (docs/scale.md): it
// starts a weir-local cluster with two real Weir nodes, simulates many more
// Nodes and Pods with kwok, generates namespaces, labelled pods and
// NetworkPolicies, and measures each real node's agent (memory, full-sync
// CPU and wall time, single-change latencies to flows in OVS, flows per
// table, watch bytes) and the API server's cost of serving it. It writes a
// Markdown report and PNG plots.
//
// This file is the seam between the harness's parts: the scenario sizes, the
// generated layout, the environment and the results.
package main

import (
	"net/netip"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/weirnet/weir/pkg/localcluster"
)

// Scenario is one size of `make scale SCENARIO=...`.
type Scenario struct {
	Name       string
	Nodes      int // kwok nodes
	Pods       int // kwok pods
	Policies   int
	Namespaces int
}

// Generator shape: every namespace holds PodsPerNamespace pods and
// PoliciesPerNamespace policies, so Pods/Policies/Namespaces agree.
const (
	PodsPerNamespace     = 100
	PoliciesPerNamespace = 10
	// Apps is the number of distinct app=app-N labels per namespace.
	Apps = 10
	// Teams is the number of distinct team=team-N namespace labels.
	Teams = 10
	// ActiveNamespaces is how many namespaces also get one real pod
	// (labels app=app-0, tier=web) per real worker node: the agent's policy
	// work is for its local pods, so these make the generated policies
	// land as flows.
	ActiveNamespaces = 5
	// ScaleLabel marks every generated object, so a run removes only its own.
	ScaleLabel = "weir.io/scale"
	// KwokNodeLabel selects the nodes kwok manages (type=kwok).
	KwokNodeLabel = "type"
	KwokNodeValue = "kwok"
)

// Scenarios are the sizes of issue 12.
var Scenarios = []Scenario{
	{Name: "S1", Nodes: 100, Pods: 3000, Policies: 300, Namespaces: 30},
	{Name: "S2", Nodes: 1000, Pods: 30000, Policies: 3000, Namespaces: 300},
	{Name: "S3", Nodes: 2000, Pods: 100000, Policies: 10000, Namespaces: 1000},
}

// RealNode is a node that runs containerd, kubelet and a Weir agent.
type RealNode struct {
	Name   string
	IP     string // underlay address (agent metrics at http://IP:9495/metrics)
	Worker bool   // false for the control-plane node (tainted)
}

// Env is the cluster the harness measures.
type Env struct {
	Cfg    localcluster.Config
	Client kubernetes.Interface
	Real   []RealNode
}

// KwokNode is one simulated node.
type KwokNode struct {
	Name       string
	PodCIDR    netip.Prefix
	InternalIP netip.Addr
}

// Layout is what the generator created.
type Layout struct {
	Scenario   Scenario
	Namespaces []string
	KwokNodes  []KwokNode
	// RealPods are the namespace/name keys of the real test pods.
	RealPods []string
	// Created is how long creating every object took, Converged how long
	// until every kwok pod had an IP.
	Created, Converged time.Duration
}

// Sample is one measured latency series (milliseconds per repetition).
type Sample struct {
	Name string // e.g. "pod label change"
	Ms   []float64
}

// AgentResult is what was measured on one real node's agent.
type AgentResult struct {
	Node string
	// Steady state after the load converged.
	RSSMiB, HeapMiB float64
	// Full sync after an agent restart (weir_agent_initial_sync_seconds),
	// and the CPU seconds the new process used until then.
	FullSyncSeconds, FullSyncCPUSeconds float64
	Latencies                           []Sample
	FlowsPerTable                       map[string]int // table name → flows
	FlowsTotal                          int
	VswitchdRSSMiB                      float64
	// Watch bytes per second the agent received during the churn phase, by
	// resource (weir_kube_received_bytes_total).
	WatchBytesPerSecond map[string]float64
}

// APIServerResult is the API server's cost during the churn phase.
type APIServerResult struct {
	RSSMiB     float64
	CPUSeconds float64 // during churn
	// WatchEventsPerSecond is apiserver_watch_events_sizes_count growth /s.
	WatchEventsPerSecond float64
	// WatchBytesPerSecond is apiserver_watch_events_sizes_sum growth /s.
	WatchBytesPerSecond float64
	ChurnSeconds        float64
}

// Result is one scenario's run.
type Result struct {
	Scenario  Scenario
	Layout    Layout
	Agents    []AgentResult
	APIServer APIServerResult
	Started   time.Time
}
