package pipeline

import (
	"strings"
	"testing"
)

// TestServiceFlows checks the "replies via the gateway" flows for a node
// with and without a tunnel port: only connections from the gateway are
// marked, replies from pods (and with a tunnel, from other nodes) carrying
// the mark go to the gateway, and those flows win over the per-pod and
// per-peer routes (priority 200). The exact text is in base.flows.
func TestServiceFlows(t *testing.T) {
	tests := []struct {
		name         string
		tunnel       uint32
		wantSources  []string // reg0 matches of the L3Forwarding reply flows
		wantAllFlows int      // base flows in all
	}{
		{"single node", 0, []string{"reg0=0x3/0xf"}, 34},
		{"with tunnel", 1, []string{"reg0=0x3/0xf", "reg0=0x2/0xf"}, 38},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.TunnelOFPort = tc.tunnel
			p, err := New(nil, cfg)
			if err != nil {
				t.Fatal(err)
			}
			base, err := p.BaseFlows()
			if err != nil {
				t.Fatal(err)
			}
			if len(base) != tc.wantAllFlows {
				t.Errorf("%d base flows, want %d", len(base), tc.wantAllFlows)
			}
			r := Renderer()
			var commits, replies []string
			for _, f := range base {
				s := r.Flow(f)
				switch {
				case f.Table == ConntrackCommit && strings.Contains(s, "0x1/0xffffff01->ct_mark"):
					// The mark (bit 0) together with the policy generation
					// (bits 8..31, policy.go).
					commits = append(commits, s)
				case f.Table == L3Forwarding && strings.Contains(s, "ct_mark"):
					replies = append(replies, s)
					if f.Priority <= 200 {
						t.Errorf("reply flow does not win over pod and peer routes (priority 200): %s", s)
					}
				}
			}
			if len(commits) != 1 || !strings.Contains(commits[0], "ct_state=+new+trk") || !strings.Contains(commits[0], "reg0=0x1/0xf") ||
				!strings.Contains(commits[0], "exec(set_field:0x1/0xffffff01->ct_mark)") {
				t.Errorf("want one commit that marks new connections from the gateway (reg0=0x1), got %q", commits)
			}
			if len(replies) != len(tc.wantSources) {
				t.Fatalf("reply flows %q, want one per source %q", replies, tc.wantSources)
			}
			for i, s := range replies {
				if !strings.Contains(s, tc.wantSources[i]) || !strings.Contains(s, "ct_state=+rpl+trk,ct_mark=0x1/0x1") ||
					!strings.HasSuffix(s, "actions=set_field:02:00:0a:0a:00:01->eth_dst,goto_table:L2Forwarding") {
					t.Errorf("reply flow %d: %s", i, s)
				}
			}
		})
	}
}
