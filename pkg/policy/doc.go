// Package policy computes Kubernetes NetworkPolicies (networking.k8s.io/v1)
// into Weir's internal rule model (pkg/pipeline's PolicyRule and Isolation)
// for the pods of one node, incrementally.
//
// Model holds the node's view of Pods, Namespaces and NetworkPolicies and
// turns changes of them into pipeline.PolicyChanges that carry only the
// rules that changed: a pod label change recomputes only the policies whose
// target or peer selectors could include the pod, and rules keep their IDs
// while their content is unchanged. Controller feeds a Model from shared
// informers through one workqueue, coalescing bursts of events into one
// change, and hands each change to a Realizer (the pipeline) as one atomic
// bundle. docs/policy.md describes the semantics and the design.
package policy
