package openflow

// CatalogCase exposes the builder catalog to the integration tests
// (package openflow_test).
type CatalogCase struct {
	Name  string
	Build *FlowBuilder
}

// ExportedCatalog returns the catalog's flows.
func ExportedCatalog() []CatalogCase {
	var out []CatalogCase
	for _, c := range catalog() {
		out = append(out, CatalogCase{c.name, c.build})
	}
	return out
}

// SetReplayHook makes every replay attempt call f first (under the replay
// lock); an error from f fails the attempt. nil removes the hook.
func SetReplayHook(s *Switch, f func(gen uint64, attempt int) error) {
	if f == nil {
		s.hooks.replayAttempt.Store(nil)
		return
	}
	s.hooks.replayAttempt.Store(&f)
}

// SetCommitHook makes every bundle commit that OVS answered call f; an
// error from f is returned as if the answer had been lost. nil removes it.
func SetCommitHook(s *Switch, f func() error) {
	if f == nil {
		s.hooks.commitAnswered.Store(nil)
		return
	}
	s.hooks.commitAnswered.Store(&f)
}

// DropConnection closes the relay's connection to ovs-vswitchd, as a
// network failure would: ofnet sees the session end and reconnects, and
// the Switch replays its cache. The switch keeps its flows.
func DropConnection(s *Switch) {
	s.relay.mu.Lock()
	sw := s.relay.sw
	s.relay.mu.Unlock()
	if sw != nil {
		sw.Close()
	}
}

// GroupCatalogCase exposes the group catalog to the integration tests.
type GroupCatalogCase struct {
	Name  string
	Build *GroupBuilder
	Want  string
}

// ExportedGroupCatalog returns the group catalog.
func ExportedGroupCatalog() []GroupCatalogCase {
	var out []GroupCatalogCase
	for _, c := range groupCatalog() {
		out = append(out, GroupCatalogCase{c.name, c.build, c.want})
	}
	return out
}
