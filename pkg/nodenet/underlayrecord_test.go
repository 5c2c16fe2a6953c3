package nodenet

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestUnderlayRecord round-trips records through external_ids, rejects
// malformed ones and checks how recorded and current routes merge.
func TestUnderlayRecord(t *testing.T) {
	def := RecordedRoute{Gw: "192.0.2.254", Metric: 100, Protocol: 3}
	net1 := RecordedRoute{Dst: "198.51.100.0/24", Gw: "192.0.2.254", Src: "192.0.2.1", OnLink: true}
	tests := []struct {
		name    string
		ids     map[string]string
		want    string // rendered again, "" for an empty record
		wantErr string
	}{
		{name: "no record", ids: map[string]string{"weir-type": "uplink"}},
		{name: "addresses and routes", ids: map[string]string{
			KeyUnderlayAddrs:  "192.0.2.1/24,203.0.113.9/28",
			KeyUnderlayRoutes: `[{"gw":"192.0.2.254","metric":100,"proto":3},{"dst":"198.51.100.0/24","gw":"192.0.2.254","src":"192.0.2.1","onlink":true}]`,
		}, want: `192.0.2.1/24,203.0.113.9/28|[{"gw":"192.0.2.254","metric":100,"proto":3},{"dst":"198.51.100.0/24","gw":"192.0.2.254","src":"192.0.2.1","onlink":true}]`},
		{name: "bad address", ids: map[string]string{KeyUnderlayAddrs: "192.0.2.1"}, wantErr: "bad IPv4 CIDR"},
		{name: "IPv6 address", ids: map[string]string{KeyUnderlayAddrs: "fd00::1/64"}, wantErr: "bad IPv4 CIDR"},
		{name: "bad JSON", ids: map[string]string{KeyUnderlayRoutes: "[{"}, wantErr: KeyUnderlayRoutes},
		{name: "bad gateway", ids: map[string]string{KeyUnderlayRoutes: `[{"gw":"nope"}]`}, wantErr: "no IPv4 address"},
		{name: "bad destination", ids: map[string]string{KeyUnderlayRoutes: `[{"dst":"fd00::/64"}]`}, wantErr: "no IPv4 CIDR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseUnderlayRecord(tc.ids)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Addrs) == 0 && len(r.Routes) == 0 {
				if tc.want != "" {
					t.Fatalf("empty record, want %s", tc.want)
				}
				return
			}
			ids, err := r.externalIDs()
			if err != nil {
				t.Fatal(err)
			}
			if got := ids[KeyUnderlayAddrs] + "|" + ids[KeyUnderlayRoutes]; got != tc.want {
				t.Errorf("rendered\n  %s\nwant\n  %s", got, tc.want)
			}
			routes, err := r.netlinkRoutes()
			if err != nil || len(routes) != 2 || routes[0].Dst != nil || routes[0].Priority != 100 ||
				routes[1].Dst.String() != "198.51.100.0/24" || routes[1].Src.String() != "192.0.2.1" {
				t.Errorf("kernel routes %v (%v)", routes, err)
			}
		})
	}

	// Merging: a current route with a recorded route's key wins; others
	// from both sides are kept.
	changedDef := RecordedRoute{Gw: "192.0.2.253", Metric: 100}
	extra := RecordedRoute{Dst: "10.99.0.0/16", Gw: "192.0.2.253"}
	got := mergeRoutes([]RecordedRoute{def, net1}, []RecordedRoute{changedDef, extra})
	if len(got) != 3 {
		t.Fatalf("merged %d routes, want 3: %+v", len(got), got)
	}
	seen := map[string]RecordedRoute{}
	for _, r := range got {
		seen[r.Dst] = r
	}
	if seen[""].Gw != "192.0.2.253" || seen["198.51.100.0/24"] != net1 || seen["10.99.0.0/16"] != extra {
		t.Errorf("merged %+v", got)
	}
}

// TestUnderlayRecordBeforeIPv6 parses a record as agents before IPv6
// support wrote it (IPv4 keys only): it must give the same IPv4 addresses
// and kernel routes as then, no IPv6, and render back unchanged, so an
// IPv4-only node's record does not change across the upgrade.
func TestUnderlayRecordBeforeIPv6(t *testing.T) {
	old := map[string]string{
		"weir-type":            "uplink",
		"weir-underlay-addrs":  "192.0.2.1/24,203.0.113.1/28",
		"weir-underlay-routes": `[{"gw":"192.0.2.254","metric":100,"proto":3},{"dst":"198.51.100.0/24","gw":"192.0.2.254","src":"192.0.2.1","proto":3}]`,
	}
	r, err := parseUnderlayRecord(old)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Addrs) != 2 || r.Addrs[0].String() != "192.0.2.1/24" || r.Addrs[1].String() != "203.0.113.1/28" ||
		len(r.Addrs[0].IP) != 4 || r.Addrs6 != nil || r.Routes6 != nil {
		t.Fatalf("parsed %+v", r)
	}
	routes, err := r.netlinkRoutes()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"fam 2 dst <nil> gw 192.0.2.254 src <nil> metric 100 table 254 proto 3 type 1 scope 0 flags 0",
		"fam 2 dst 198.51.100.0/24 gw 192.0.2.254 src 192.0.2.1 metric 0 table 254 proto 3 type 1 scope 0 flags 0",
	}
	if len(routes) != len(want) {
		t.Fatalf("kernel routes %v", routes)
	}
	for i, nr := range routes {
		dst := "<nil>"
		if nr.Dst != nil {
			dst = nr.Dst.String()
		}
		got := fmt.Sprintf("fam %d dst %s gw %v src %v metric %d table %d proto %d type %d scope %d flags %d",
			nr.Family, dst, nr.Gw, nr.Src, nr.Priority, nr.Table, nr.Protocol, nr.Type, nr.Scope, nr.Flags)
		if got != want[i] {
			t.Errorf("route %d:\n  %s\nwant\n  %s", i, got, want[i])
		}
		if nr.Gw != nil && len(nr.Gw) != 4 {
			t.Errorf("route %d: gateway in %d-byte form", i, len(nr.Gw))
		}
	}
	if r6, err := r.netlinkRoutes6(); err != nil || len(r6) != 0 || len(r.netlinkAddrs6()) != 0 {
		t.Errorf("IPv6 from an IPv4-only record: routes %v (%v), addresses %v", r6, err, r.netlinkAddrs6())
	}
	ids, err := r.externalIDs()
	if err != nil {
		t.Fatal(err)
	}
	delete(old, "weir-type")
	if !maps.Equal(ids, old) {
		t.Errorf("rendered again\n  %v\nwant the old record\n  %v", ids, old)
	}
}

// TestUnderlayRecordIPv6 round-trips dual-stack and IPv6 records and
// rejects a family in the other family's keys.
func TestUnderlayRecordIPv6(t *testing.T) {
	v4 := map[string]string{KeyUnderlayAddrs: "192.0.2.1/24", KeyUnderlayRoutes: `[{"gw":"192.0.2.254","proto":3}]`}
	with := func(kv ...string) map[string]string {
		m := maps.Clone(v4)
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name       string
		ids        map[string]string
		wantAddrs6 string // the IPv6 addresses, comma separated
		wantRoutes []string
		wantErr    string
	}{
		{name: "dual-stack", ids: with(KeyUnderlayAddrs6, "fd00:192:0:2::1/64,2001:db8:5::1/48",
			KeyUnderlayRoutes6, `[{"gw":"fd00:192:0:2::fe","metric":1024,"proto":3},{"dst":"2001:db8:99::/48","gw":"fe80::1","metric":1024,"proto":3}]`),
			wantAddrs6: "fd00:192:0:2::1/64,2001:db8:5::1/48",
			wantRoutes: []string{"<nil> via fd00:192:0:2::fe metric 1024", "2001:db8:99::/48 via fe80::1 metric 1024"}},
		{name: "IPv6 address, no IPv6 route", ids: with(KeyUnderlayAddrs6, "fd00::1/64", KeyUnderlayRoutes6, `[]`),
			wantAddrs6: "fd00::1/64"},
		{name: "IPv6 route through a device only", ids: with(KeyUnderlayAddrs6, "fd00::1/64", KeyUnderlayRoutes6, `[{"metric":1024}]`),
			wantAddrs6: "fd00::1/64", wantRoutes: []string{"<nil> via <nil> metric 1024"}},
		{name: "IPv4 address in the IPv6 key", ids: with(KeyUnderlayAddrs6, "192.0.2.9/24"), wantErr: "bad IPv6 CIDR"},
		{name: "IPv4-mapped address in the IPv6 key", ids: with(KeyUnderlayAddrs6, "::ffff:192.0.2.9/120"), wantErr: "bad IPv6 CIDR"},
		{name: "bad IPv6 address", ids: with(KeyUnderlayAddrs6, "fd00::1"), wantErr: "bad IPv6 CIDR"},
		{name: "IPv4 gateway in an IPv6 route", ids: with(KeyUnderlayRoutes6, `[{"gw":"192.0.2.254"}]`), wantErr: "no IPv6 address"},
		{name: "IPv4 destination in an IPv6 route", ids: with(KeyUnderlayRoutes6, `[{"dst":"10.0.0.0/8"}]`), wantErr: "no IPv6 CIDR"},
		{name: "bad IPv6 JSON", ids: with(KeyUnderlayRoutes6, `{`), wantErr: KeyUnderlayRoutes6},
		{name: "IPv6 route in the IPv4 key", ids: with(KeyUnderlayRoutes, `[{"gw":"fe80::1"}]`), wantErr: "no IPv4 address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseUnderlayRecord(tc.ids)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var addrs6 []string
			for _, a := range r.Addrs6 {
				addrs6 = append(addrs6, a.String())
			}
			if got := strings.Join(addrs6, ","); got != tc.wantAddrs6 || len(r.Addrs) != 1 || len(r.Routes) != 1 {
				t.Errorf("parsed %+v, want IPv6 addresses %s and the IPv4 part", r, tc.wantAddrs6)
			}
			routes, err := r.netlinkRoutes6()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, nr := range routes {
				if nr.Family != netlink.FAMILY_V6 || nr.Table != unix.RT_TABLE_MAIN || nr.Type != unix.RTN_UNICAST {
					t.Errorf("kernel route %v: family %d table %d type %d", nr, nr.Family, nr.Table, nr.Type)
				}
				dst := "<nil>"
				if nr.Dst != nil {
					dst = nr.Dst.String()
				}
				got = append(got, fmt.Sprintf("%s via %v metric %d", dst, nr.Gw, nr.Priority))
			}
			if !slices.Equal(got, tc.wantRoutes) {
				t.Errorf("kernel routes %q, want %q", got, tc.wantRoutes)
			}
			ids, err := r.externalIDs()
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(ids, tc.ids) {
				t.Errorf("rendered again\n  %v\nwant\n  %v", ids, tc.ids)
			}
		})
	}
}

// TestUnderlayRecordIPv6Only: an IPv6-only underlay's record holds the
// IPv6 keys alone (no empty IPv4 ones), parses back to no IPv4 part and
// renders to the same keys; an empty record renders to no keys at all.
func TestUnderlayRecordIPv6Only(t *testing.T) {
	ids := map[string]string{KeyUnderlayAddrs6: "fd00:192:0:2::1/64",
		KeyUnderlayRoutes6: `[{"gw":"fd00:192:0:2::fe","metric":1024,"proto":3}]`}
	r, err := parseUnderlayRecord(ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Addrs) != 0 || len(r.Routes) != 0 || len(r.Addrs6) != 1 || len(r.Routes6) != 1 {
		t.Fatalf("parsed %+v, want one IPv6 address and route and nothing IPv4", r)
	}
	got, err := r.externalIDs()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, ids) {
		t.Errorf("rendered\n  %v\nwant\n  %v", got, ids)
	}
	if got, err := (underlayRecord{}).externalIDs(); err != nil || len(got) != 0 {
		t.Errorf("empty record rendered to %v (%v), want no keys", got, err)
	}
}
