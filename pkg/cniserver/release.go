package cniserver

import (
	"context"
	"fmt"
	"net"
	"time"
)

// KeyPodUID is the external_ids key of a pod port holding the pod's UID
// (CNI_ARGS K8S_POD_UID, which containerd and CRI-O pass). It is absent on
// ports of runtimes that do not pass it.
const KeyPodUID = "pod-uid"

// KeyNetwork is the external_ids key of a pod port holding the "name" of
// the network configuration the attachment was added for. GC, CHECK and DEL
// of a network act on its attachments only. Records written by Weir before
// it had this key restore with no network name: see legacyNetwork.
const KeyNetwork = "cni-network"

// Attachment describes one pod interface the server has set up (or
// restored).
type Attachment struct {
	// Key identifies the attachment: "<container id>/<ifname>".
	Key          string
	ContainerID  string
	IfName       string
	NetNS        string
	HostIfName   string
	IP           net.IP
	PodNamespace string // K8S_POD_NAMESPACE; empty outside Kubernetes
	PodName      string // K8S_POD_NAME; empty outside Kubernetes
	PodUID       string // K8S_POD_UID; empty if the runtime did not pass it
	// Network is the network configuration's "name"; empty for an
	// attachment restored from a record of an older Weir that did not
	// record it.
	Network string
}

// Attachments returns the server's pod interfaces, sorted by key.
func (s *Server) Attachments() []Attachment {
	atts := s.attachments()
	out := make([]Attachment, 0, len(atts))
	for _, a := range atts {
		out = append(out, Attachment{Key: a.key(), ContainerID: a.ContainerID, IfName: a.IfName, NetNS: a.NetNS,
			HostIfName: a.HostIfName, IP: append(net.IP(nil), a.IP...), PodNamespace: a.PodNS, PodName: a.PodName,
			PodUID: a.PodUID, Network: a.Network})
	}
	return out
}

// Release removes the attachment key exactly as a CNI DEL for it would:
// the pod's flows, its OVS port, the veth pair and its IP. It reports
// whether there was such an attachment; one that is gone already (a DEL
// came first) is not an error. It is for an agent that knows the pod is
// gone while the runtime will not call DEL (e.g. the pod was deleted while
// the agent was down).
func (s *Server) Release(ctx context.Context, key string) (bool, error) {
	s.mu.Lock()
	att := s.pods[key]
	s.mu.Unlock()
	if att == nil {
		return false, nil
	}
	unlock := s.locks.lock(att.ContainerID)
	defer unlock()
	s.mu.Lock()
	att = s.pods[key] // a DEL may have run while this waited for the lock
	s.mu.Unlock()
	if att == nil {
		return false, nil
	}
	start := time.Now()
	if err := s.del(ctx, att.ContainerID, att.IfName, att.NetNS); err != nil {
		return true, fmt.Errorf("releasing pod interface %s: %w", key, err)
	}
	s.log.V(2).Info("Released pod interface", "container", att.ContainerID, "ifname", att.IfName,
		"duration", time.Since(start))
	return true, nil
}
