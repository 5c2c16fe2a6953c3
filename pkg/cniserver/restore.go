package cniserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

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
// re-registered, its flows reinstalled); ports whose netns is gone are
// removed with their veth; IPs the IPAM store holds without a port (an ADD
// cut short by a crash) are freed. Call it before SetReady(true).
func (s *Server) Restore(ctx context.Context) (RestoreStats, error) {
	var st RestoreStats
	ports, err := s.ports.ListPorts(ctx, s.cfg.Bridge)
	if err != nil {
		return st, fmt.Errorf("listing ports of %s: %w", s.cfg.Bridge, err)
	}
	keep := map[string]*attachment{}
	var errs []error
	for _, p := range ports {
		if p.ExternalIDs[ovsdb.KeyWeirType] != ovsdb.WeirTypePod {
			s.ofports.markUsed(p.Name, p.OFPort)
			continue
		}
		att, err := attachmentFromPort(p)
		if err == nil {
			_, err = os.Stat(att.NetNS)
		}
		if err == nil && p.OFPort > 0 {
			keep[att.key()] = att
			s.ofports.markUsed(p.Name, p.OFPort)
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
	allocs := map[string]net.IP{}
	for k, a := range keep {
		allocs[k] = a.IP
	}
	before := len(s.ipam.List())
	if err := s.ipam.Restore(allocs); err != nil {
		return st, fmt.Errorf("restoring IP allocations: %w", err)
	}
	if n := before - len(allocs); n > 0 {
		st.Released = n
	}
	for _, a := range keep {
		if err := s.flows.AddPod(ctx, a.podInterface()); err != nil {
			errs = append(errs, fmt.Errorf("reinstalling flows of %s: %w", a.key(), err))
			continue
		}
		s.mu.Lock()
		s.pods[a.key()] = a
		s.mu.Unlock()
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

// attachmentFromPort reads an attachment back from a port's external_ids.
func attachmentFromPort(p ovsdb.PortInfo) (*attachment, error) {
	ids := p.ExternalIDs
	a := &attachment{
		ContainerID: ids[ovsdb.KeyContainerID], IfName: ids[ovsdb.KeyIfName], NetNS: ids[ovsdb.KeyNetNS],
		HostIfName: p.Name, OFPort: p.OFPort, PodName: ids[ovsdb.KeyPodName], PodNS: ids[ovsdb.KeyPodNamespace],
		PodUID: ids[KeyPodUID], Network: ids[KeyNetwork],
	}
	if a.ContainerID == "" || a.IfName == "" || a.NetNS == "" {
		return nil, fmt.Errorf("port %s lacks container-id, ifname or netns in external_ids", p.Name)
	}
	ipStr, _, _ := strings.Cut(ids[ovsdb.KeyIP], ",")
	if a.IP = net.ParseIP(ipStr).To4(); a.IP == nil {
		return nil, fmt.Errorf("port %s has no valid ip in external_ids (%q)", p.Name, ids[ovsdb.KeyIP])
	}
	mac, err := net.ParseMAC(ids[ovsdb.KeyMAC])
	if err != nil {
		return nil, fmt.Errorf("port %s has no valid mac in external_ids: %w", p.Name, err)
	}
	a.MAC = mac
	return a, nil
}
