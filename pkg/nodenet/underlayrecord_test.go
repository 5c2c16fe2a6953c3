package nodenet

import (
	"strings"
	"testing"
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
