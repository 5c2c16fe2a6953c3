// Package localcluster runs a real multi-node Kubernetes cluster on one
// machine without Docker: the control plane (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler) as host processes, and every node
// as its own network namespace plus mount namespace with its own containerd,
// kubelet and kube-proxy. Weir is then deployed by its own DaemonSet
// (build/yamls/weir.yml) from images imported into each node's containerd.
//
// It owns every process, namespace, mount, cgroup, link and file it creates
// and removes them all in Down; cmd/weir-local and the e2e suite (test/e2e)
// are its users.
package localcluster
