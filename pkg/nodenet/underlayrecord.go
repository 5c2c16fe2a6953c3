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
//
// IPv6 has keys of its own rather than sharing the IPv4 ones: an agent
// before IPv6 support rejects any IPv6 CIDR or route in the IPv4 keys (and
// would then fail to start after a rollback), while it ignores keys it does
// not know. A record without the IPv6 keys, as those agents wrote it, is an
// IPv4-only record; SetupUnderlay writes the IPv6 keys only when there is
// something IPv6 to record, so an IPv4-only node's record stays as it was.
// Likewise the IPv4 keys only when there is something IPv4 to record: an
// IPv6-only node's record holds the IPv6 keys alone.
const (
	// KeyUnderlayAddrs holds the underlay IPv4 addresses, comma separated
	// CIDRs: "192.0.2.1/24".
	KeyUnderlayAddrs = "weir-underlay-addrs"
	// KeyUnderlayRoutes holds the movable underlay IPv4 routes as a JSON
	// list of RecordedRoute.
	KeyUnderlayRoutes = "weir-underlay-routes"
	// KeyUnderlayAddrs6 holds the underlay's global IPv6 addresses, comma
	// separated CIDRs: "2001:db8::1/64".
	KeyUnderlayAddrs6 = "weir-underlay-addrs6"
	// KeyUnderlayRoutes6 holds the movable underlay IPv6 routes as a JSON
	// list of RecordedRoute.
	KeyUnderlayRoutes6 = "weir-underlay-routes6"
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
// routes the underlay bridge must carry, per family.
type underlayRecord struct {
	Addrs  []*net.IPNet
	Routes []RecordedRoute
	// Addrs6 and Routes6 are the IPv6 twins of Addrs and Routes.
	Addrs6  []*net.IPNet
	Routes6 []RecordedRoute
}

// externalIDs renders r as the record's external_ids. The keys of a
// family are left out when r holds no address or route of it (see
// KeyUnderlayAddrs6).
func (r underlayRecord) externalIDs() (map[string]string, error) {
	ids := map[string]string{}
	if len(r.Addrs) > 0 || len(r.Routes) > 0 {
		if err := renderFamily(ids, KeyUnderlayAddrs, KeyUnderlayRoutes, r.Addrs, r.Routes); err != nil {
			return nil, err
		}
	}
	if len(r.Addrs6) > 0 || len(r.Routes6) > 0 {
		if err := renderFamily(ids, KeyUnderlayAddrs6, KeyUnderlayRoutes6, r.Addrs6, r.Routes6); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// renderFamily puts one family's addresses and routes into ids under
// addrsKey and routesKey.
func renderFamily(ids map[string]string, addrsKey, routesKey string, nets []*net.IPNet, routes []RecordedRoute) error {
	addrs := make([]string, 0, len(nets))
	for _, a := range nets {
		addrs = append(addrs, a.String())
	}
	if routes == nil {
		routes = []RecordedRoute{}
	}
	b, err := json.Marshal(routes)
	if err != nil {
		return fmt.Errorf("nodenet: encoding the underlay routes (%s): %w", routesKey, err)
	}
	ids[addrsKey], ids[routesKey] = strings.Join(addrs, ","), string(b)
	return nil
}

// parseUnderlayRecord reads the record from a Port row's external_ids; a
// row without one gives an empty record, a row without the IPv6 keys (an
// IPv4-only node, or a record older than IPv6 support) one without IPv6.
func parseUnderlayRecord(ids map[string]string) (underlayRecord, error) {
	var r underlayRecord
	var err error
	if r.Addrs, err = parseRecordAddrs(ids, KeyUnderlayAddrs, netlink.FAMILY_V4); err != nil {
		return r, err
	}
	if r.Routes, err = parseRecordRoutes(ids, KeyUnderlayRoutes, netlink.FAMILY_V4); err != nil {
		return r, err
	}
	if r.Addrs6, err = parseRecordAddrs(ids, KeyUnderlayAddrs6, netlink.FAMILY_V6); err != nil {
		return r, err
	}
	if r.Routes6, err = parseRecordRoutes(ids, KeyUnderlayRoutes6, netlink.FAMILY_V6); err != nil {
		return r, err
	}
	return r, nil
}

// parseRecordAddrs parses the comma separated CIDRs of family under key.
func parseRecordAddrs(ids map[string]string, key string, family int) ([]*net.IPNet, error) {
	s := ids[key]
	if s == "" {
		return nil, nil
	}
	var out []*net.IPNet
	for _, f := range strings.Split(s, ",") {
		ip, n, err := net.ParseCIDR(strings.TrimSpace(f))
		if err != nil || (ip.To4() != nil) != (family == netlink.FAMILY_V4) {
			return nil, fmt.Errorf("nodenet: underlay record %s=%q: bad %s CIDR %q", key, s, ipFamilyName(family), f)
		}
		if family == netlink.FAMILY_V4 {
			out = append(out, &net.IPNet{IP: ip.To4(), Mask: net.CIDRMask(maskOnes(n.Mask), 32)})
		} else {
			out = append(out, &net.IPNet{IP: ip.To16(), Mask: net.CIDRMask(maskOnes(n.Mask), 128)})
		}
	}
	return out, nil
}

// parseRecordRoutes parses the JSON route list of family under key and
// checks that it converts to kernel routes (so a bad record fails here,
// before SetupUnderlay changes anything).
func parseRecordRoutes(ids map[string]string, key string, family int) ([]RecordedRoute, error) {
	s := ids[key]
	if s == "" {
		return nil, nil
	}
	var routes []RecordedRoute
	if err := json.Unmarshal([]byte(s), &routes); err != nil {
		return nil, fmt.Errorf("nodenet: underlay record %s=%q: %w", key, s, err)
	}
	if _, err := toNetlinkRoutes(routes, family); err != nil {
		return nil, err
	}
	return routes, nil
}

func ipFamilyName(family int) string {
	if family == netlink.FAMILY_V6 {
		return "IPv6"
	}
	return "IPv4"
}

func maskOnes(m net.IPMask) int {
	ones, _ := m.Size()
	return ones
}

// addrNets returns the prefixes of addrs (IPv4 ones in their 4-byte form).
func addrNets(addrs []netlink.Addr) []*net.IPNet {
	out := make([]*net.IPNet, 0, len(addrs))
	for _, a := range addrs {
		ip := a.IP.To4()
		if ip == nil {
			ip = a.IP
		}
		out = append(out, &net.IPNet{IP: ip, Mask: a.Mask})
	}
	return out
}

// netlinkAddrs returns the recorded IPv4 addresses for addAddrs (the kernel
// derives the broadcast address).
func (r underlayRecord) netlinkAddrs() []netlink.Addr {
	return netlinkAddrs(r.Addrs)
}

// netlinkAddrs6 returns the recorded IPv6 addresses for addAddrs.
func (r underlayRecord) netlinkAddrs6() []netlink.Addr {
	return netlinkAddrs(r.Addrs6)
}

func netlinkAddrs(nets []*net.IPNet) []netlink.Addr {
	out := make([]netlink.Addr, 0, len(nets))
	for _, a := range nets {
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

// netlinkRoutes converts the recorded IPv4 routes to kernel routes without
// a device (moveRoutes sets it).
func (r underlayRecord) netlinkRoutes() ([]netlink.Route, error) {
	return toNetlinkRoutes(r.Routes, netlink.FAMILY_V4)
}

// netlinkRoutes6 is the IPv6 twin of netlinkRoutes.
func (r underlayRecord) netlinkRoutes6() ([]netlink.Route, error) {
	return toNetlinkRoutes(r.Routes6, netlink.FAMILY_V6)
}

// toNetlinkRoutes converts recorded routes of family to kernel routes
// without a device; every address in them must be of that family.
func toNetlinkRoutes(routes []RecordedRoute, family int) ([]netlink.Route, error) {
	v4 := family == netlink.FAMILY_V4
	name := ipFamilyName(family)
	out := make([]netlink.Route, 0, len(routes))
	for _, rr := range routes {
		nr := netlink.Route{Family: family, Priority: rr.Metric, Table: rr.Table, Scope: netlink.Scope(rr.Scope),
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
			if err != nil || (dst.IP.To4() != nil) != v4 {
				return nil, fmt.Errorf("nodenet: underlay record: route destination %q is no %s CIDR", rr.Dst, name)
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
			ip := net.ParseIP(f.s)
			if v4 {
				ip = ip.To4()
			} else if ip.To4() != nil {
				ip = nil // an IPv4 (or IPv4-mapped) address in an IPv6 route
			}
			if ip == nil {
				return nil, fmt.Errorf("nodenet: underlay record: route to %q: %q is no %s address", rr.Dst, f.s, name)
			}
			*f.ip = ip
		}
		out = append(out, nr)
	}
	return out, nil
}
