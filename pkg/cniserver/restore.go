package cniserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/weirnet/weir/pkg/interfacestore"
	"github.com/weirnet/weir/pkg/ovsdb"
	"github.com/weirnet/weir/pkg/podnet"
)

// RestoreStats says what Restore found.
type RestoreStats struct {
	Restored int // pods whose networking was kept and flows reinstalled
	Removed  int // ports of pods whose netns is gone
	Released int // IPs held in the IPAM store without a port
}

// Restore rebuilds the server's state at agent start-up from OVSDB, the
// durable record: every pod port whose netns still exists is kept (its IP
// re-registered, its flows reinstalled, its interface put in the store);
// ports whose netns is gone are removed with their veth; IPs the IPAM store
// holds without a port (an ADD cut short by a crash) are freed. Call it
// before SetReady(true). A port recorded by a newer Weir (a downgrade) fails
// Restore before anything is changed: removing it would cut off a running
// pod, and keeping it unread would let its IP be handed out again.
func (s *Server) Restore(ctx context.Context) (RestoreStats, error) {
	var st RestoreStats
	ports, err := s.ports.ListPorts(ctx, s.cfg.Bridge)
	if err != nil {
		return st, fmt.Errorf("listing ports of %s: %w", s.cfg.Bridge, err)
	}
	type found struct {
		port  ovsdb.PortInfo
		iface interfacestore.Interface
		err   error
	}
	var pods []found
	for _, p := range ports {
		if !interfacestore.IsPodPort(p.ExternalIDs) {
			s.ofports.MarkUsed(p.Name, p.OFPort)
			continue
		}
		iface, err := interfacestore.FromPort(p.Name, p.OFPort, p.ExternalIDs)
		if errors.Is(err, interfacestore.ErrNewerRecord) {
			return st, fmt.Errorf("restoring pod interfaces: %w; run the Weir version that wrote it, or delete the pod", err)
		}
		pods = append(pods, found{p, iface, err})
	}
	keep := map[string]interfacestore.Interface{}
	var errs []error
	for _, f := range pods {
		p, err := f.port, f.err
		if err == nil {
			_, err = os.Stat(f.iface.NetNS)
		}
		if err == nil && p.OFPort > 0 {
			keep[f.iface.Key()] = f.iface
			s.ofports.MarkUsed(p.Name, p.OFPort)
			continue
		}
		s.log.Info("Removing the port of a pod that is gone", "port", p.Name, "reason", reasonGone(err, p))
		if err := s.ports.DeletePort(ctx, s.cfg.Bridge, p.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := podnet.TeardownVeth(ctx, s.cfg.HostNetNSPath, p.Name, "", ""); err != nil {
			errs = append(errs, err)
		}
		st.Removed++
	}
	// Each family's IPAM gets the addresses of that family.
	for _, alloc := range s.allocators() {
		gw := alloc.Gateway()
		allocs := map[string]net.IP{}
		for k, a := range keep {
			if ip := sameFamily(gw, ipsOf(&a)); ip != nil {
				allocs[k] = ip
			}
		}
		for k := range alloc.List() {
			if _, ok := allocs[k]; !ok {
				st.Released++
			}
		}
		if err := alloc.Restore(allocs); err != nil {
			return st, fmt.Errorf("restoring IP allocations of %s: %w", alloc.CIDR(), err)
		}
	}
	for _, a := range keep {
		if err := s.flows.AddPod(ctx, podInterface(&a)); err != nil {
			errs = append(errs, fmt.Errorf("reinstalling flows of %s: %w", a.Key(), err))
			continue
		}
		if err := s.store.Put(a); err != nil {
			errs = append(errs, fmt.Errorf("restoring %s: %w", a.Key(), err))
			continue
		}
		st.Restored++
	}
	return st, errors.Join(errs...)
}

func reasonGone(err error, p ovsdb.PortInfo) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("ofport %d: %s", p.OFPort, p.Error)
}
