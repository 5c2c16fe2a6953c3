package nodenet

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Keys of the underlay record SetupUnderlay keeps in the external_ids of
// the NIC's Port row (OVSDB outlives ovs-vswitchd, which owns the
// userspace bridge's device and with it the addresses and routes on it).
const (
	// KeyUnderlayAddrs holds the underlay IPv4 addresses, comma separated
	// CIDRs: "192.0.2.1/24".
	KeyUnderlayAddrs = "weir-underlay-addrs"
	// KeyUnderlayRoutes holds the movable underlay routes as a JSON list of
	// RecordedRoute.
	KeyUnderlayRoutes = "weir-underlay-routes"
)

// RecordedRoute is one underlay route in the OVSDB record. The device is
// implied (the underlay bridge); zero fields are omitted.
type RecordedRoute struct {
	// Dst is the destination CIDR; "" is the default route.
	Dst string `json:"dst,omitempty"`
	// Gw is the next hop, Src the preferred source address.
	Gw  string `json:"gw,omitempty"`
	Src string `json:"src,omitempty"`
	// Metric, Table (0 = main), Scope, Protocol, Type, TOS and MTU are the
	// kernel's route attributes of those names.
	Metric   int `json:"metric,omitempty"`
	Table    int `json:"table,omitempty"`
	Scope    int `json:"scope,omitempty"`
	Protocol int `json:"proto,omitempty"`
	Type     int `json:"type,omitempty"`
	TOS      int `json:"tos,omitempty"`
	MTU      int `json:"mtu,omitempty"`
	// OnLink is the onlink flag.
	OnLink bool `json:"onlink,omitempty"`
}

// key identifies the kernel route a RecordedRoute stands for: two routes
// with the same key cannot coexist in a table.
func (r RecordedRoute) key() string {
	t := r.Table
	if t == 0 {
		t = unix.RT_TABLE_MAIN
	}
	return fmt.Sprintf("%d|%s|%d|%d", t, r.Dst, r.Metric, r.TOS)
}

// underlayRecord is what SetupUnderlay records: the addresses and movable
// routes the underlay bridge must carry.
type underlayRecord struct {
	Addrs  []*net.IPNet
	Routes []RecordedRoute
}

// externalIDs renders r as the record's external_ids.
func (r underlayRecord) externalIDs() (map[string]string, error) {
	addrs := make([]string, 0, len(r.Addrs))
	for _, a := range r.Addrs {
		addrs = append(addrs, a.String())
	}
	routes := r.Routes
	if routes == nil {
		routes = []RecordedRoute{}
	}
	b, err := json.Marshal(routes)
	if err != nil {
		return nil, fmt.Errorf("nodenet: encoding the underlay routes: %w", err)
	}
	return map[string]string{KeyUnderlayAddrs: strings.Join(addrs, ","), KeyUnderlayRoutes: string(b)}, nil
}

// parseUnderlayRecord reads the record from a Port row's external_ids; a
// row without one gives an empty record.
func parseUnderlayRecord(ids map[string]string) (underlayRecord, error) {
	var r underlayRecord
	if s := ids[KeyUnderlayAddrs]; s != "" {
		for _, f := range strings.Split(s, ",") {
			ip, n, err := net.ParseCIDR(strings.TrimSpace(f))
			if err != nil || ip.To4() == nil {
				return r, fmt.Errorf("nodenet: underlay record %s=%q: bad IPv4 CIDR %q", KeyUnderlayAddrs, s, f)
			}
			r.Addrs = append(r.Addrs, &net.IPNet{IP: ip.To4(), Mask: net.CIDRMask(maskOnes(n.Mask), 32)})
		}
	}
	if s := ids[KeyUnderlayRoutes]; s != "" {
		if err := json.Unmarshal([]byte(s), &r.Routes); err != nil {
			return r, fmt.Errorf("nodenet: underlay record %s=%q: %w", KeyUnderlayRoutes, s, err)
		}
		if _, err := (underlayRecord{Routes: r.Routes}).netlinkRoutes(); err != nil {
			return r, err
		}
	}
	return r, nil
}

func maskOnes(m net.IPMask) int {
	ones, _ := m.Size()
	return ones
}

// addrNets returns the prefixes of addrs.
func addrNets(addrs []netlink.Addr) []*net.IPNet {
	out := make([]*net.IPNet, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, &net.IPNet{IP: a.IP.To4(), Mask: a.Mask})
	}
	return out
}

// netlinkAddrs returns the recorded addresses for addAddrs (the kernel
// derives the broadcast address).
func (r underlayRecord) netlinkAddrs() []netlink.Addr {
	out := make([]netlink.Addr, 0, len(r.Addrs))
	for _, a := range r.Addrs {
		out = append(out, netlink.Addr{IPNet: a})
	}
	return out
}

// recordRoutes converts kernel routes (from movableRoutes) to the record's
// form.
func recordRoutes(routes []netlink.Route) []RecordedRoute {
	out := make([]RecordedRoute, 0, len(routes))
	for _, r := range routes {
		rr := RecordedRoute{Metric: r.Priority, Scope: int(r.Scope), Protocol: int(r.Protocol), Type: r.Type, TOS: r.Tos,
			MTU: r.MTU, OnLink: r.Flags&int(netlink.FLAG_ONLINK) != 0}
		if r.Table != unix.RT_TABLE_MAIN {
			rr.Table = r.Table
		}
		if rr.Type == unix.RTN_UNICAST {
			rr.Type = 0
		}
		if r.Dst != nil && maskOnes(r.Dst.Mask) != 0 {
			rr.Dst = r.Dst.String()
		}
		if r.Gw != nil {
			rr.Gw = r.Gw.String()
		}
		if r.Src != nil {
			rr.Src = r.Src.String()
		}
		out = append(out, rr)
	}
	return out
}

// mergeRoutes returns recorded with current added; a current route with
// the key of a recorded one replaces it. The result is sorted by key.
func mergeRoutes(recorded, current []RecordedRoute) []RecordedRoute {
	byKey := map[string]RecordedRoute{}
	for _, r := range recorded {
		byKey[r.key()] = r
	}
	for _, r := range current {
		byKey[r.key()] = r
	}
	out := make([]RecordedRoute, 0, len(byKey))
	for _, r := range byKey {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b RecordedRoute) int { return cmp.Compare(a.key(), b.key()) })
	return out
}

// netlinkRoutes converts the recorded routes to kernel routes without a
// device (moveRoutes sets it).
func (r underlayRecord) netlinkRoutes() ([]netlink.Route, error) {
	out := make([]netlink.Route, 0, len(r.Routes))
	for _, rr := range r.Routes {
		nr := netlink.Route{Family: netlink.FAMILY_V4, Priority: rr.Metric, Table: rr.Table, Scope: netlink.Scope(rr.Scope),
			Protocol: netlink.RouteProtocol(rr.Protocol), Type: rr.Type, Tos: rr.TOS, MTU: rr.MTU}
		if nr.Table == 0 {
			nr.Table = unix.RT_TABLE_MAIN
		}
		if nr.Type == 0 {
			nr.Type = unix.RTN_UNICAST
		}
		if rr.OnLink {
			nr.Flags = int(netlink.FLAG_ONLINK)
		}
		if rr.Dst != "" {
			_, dst, err := net.ParseCIDR(rr.Dst)
			if err != nil || dst.IP.To4() == nil {
				return nil, fmt.Errorf("nodenet: underlay record: route destination %q is no IPv4 CIDR", rr.Dst)
			}
			nr.Dst = dst
		}
		for _, f := range []struct {
			s  string
			ip *net.IP
		}{{rr.Gw, &nr.Gw}, {rr.Src, &nr.Src}} {
			if f.s == "" {
				continue
			}
			ip := net.ParseIP(f.s).To4()
			if ip == nil {
				return nil, fmt.Errorf("nodenet: underlay record: route to %q: %q is no IPv4 address", rr.Dst, f.s)
			}
			*f.ip = ip
		}
		out = append(out, nr)
	}
	return out, nil
}
