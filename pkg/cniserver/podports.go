package cniserver

// OFPort returns the OpenFlow port of the pod namespace/name (from CNI_ARGS
// K8S_POD_NAMESPACE and K8S_POD_NAME); ok is false if the server has no
// attachment for it. A pod with several interfaces reports its eth0, else
// the interface with the lowest key.
func (s *Server) OFPort(namespace, name string) (uint32, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *attachment
	for _, a := range s.pods {
		if a.PodNS != namespace || a.PodName != name || a.PodName == "" {
			continue
		}
		if best == nil || a.IfName == "eth0" && best.IfName != "eth0" ||
			(a.IfName == "eth0") == (best.IfName == "eth0") && a.key() < best.key() {
			best = a
		}
	}
	if best == nil {
		return 0, false
	}
	return uint32(best.OFPort), true
}

// WatchPods registers fn to be called (from the goroutine serving the
// request, after the change) whenever an attachment of a Kubernetes pod is
// added or removed, with the pod's namespace and name; OFPort then
// reports the new state. fn must not block.
func (s *Server) WatchPods(fn func(namespace, name string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.podWatchers = append(s.podWatchers, fn)
}

// notifyPod tells the watchers about a change of a's pod.
func (s *Server) notifyPod(a *attachment) {
	if a.PodName == "" {
		return
	}
	s.mu.Lock()
	ws := append([]func(string, string){}, s.podWatchers...)
	s.mu.Unlock()
	for _, fn := range ws {
		fn(a.PodNS, a.PodName)
	}
}
