package cniserver

import (
	"context"
	"fmt"
	"time"
)

// Release removes the attachment key exactly as a CNI DEL for it would:
// the pod's flows, its OVS port, the veth pair and its IP. It reports
// whether there was such an attachment; one that is gone already (a DEL
// came first) is not an error. It is for an agent that knows the pod is
// gone while the runtime will not call DEL (e.g. the pod was deleted while
// the agent was down).
func (s *Server) Release(ctx context.Context, key string) (bool, error) {
	att, ok := s.store.Get(key)
	if !ok {
		return false, nil
	}
	unlock := s.locks.lock(att.ContainerID)
	defer unlock()
	// A DEL may have run while this waited for the lock.
	if att, ok = s.store.Get(key); !ok {
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
