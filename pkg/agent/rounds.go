package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/pkg/pipeline"
)

// Cookie rounds. Every flow Weir installs carries the round of the agent
// run that installed it in the top byte of its cookie (pkg/openflow,
// Cookie). A run installs everything it wants in a round of its own and,
// once its controllers have re-installed the current state, deletes the
// flows of every other round: what is left of earlier runs (pods deleted,
// peers gone, policies removed while the agent was down). An agent may be
// restarted several times before one run gets that far (a crash loop
// waiting for the API server), so the bridge can hold flows of several old
// rounds at once; each of them must be avoided when choosing the new round
// and removed afterwards.

// bridgeRounds is what the bridge says about earlier runs.
type bridgeRounds struct {
	// present counts the flows of each non-zero round on the bridge, in
	// all tables. Round 0 is never one of Weir's (pickRound skips it):
	// flows with it (cookie 0, e.g. added by hand) are left alone.
	present map[uint8]int
	// latest is the round of the last run that installed the base
	// pipeline: the one the base flows of table Classifier carry (each run
	// re-adds them, which replaces the older run's copies), the one with
	// the most such flows if they disagree; 0 when there are none.
	latest uint8
}

// readRounds dumps every flow of the bridge once and tallies its rounds.
func readRounds(ctx context.Context, sw *openflow.Switch) (bridgeRounds, error) {
	flows, err := sw.DumpFlows(ctx, openflow.FlowFilter{})
	if err != nil {
		return bridgeRounds{}, fmt.Errorf("reading existing flows: %w", err)
	}
	cookies := make([]uint64, 0, len(flows))
	tables := make([]uint8, 0, len(flows))
	for _, f := range flows {
		cookies = append(cookies, f.Flow.Cookie)
		tables = append(tables, f.Flow.Table)
	}
	return tallyRounds(cookies, tables), nil
}

// tallyRounds is readRounds on the cookies and tables of the dumped flows.
func tallyRounds(cookies []uint64, tables []uint8) bridgeRounds {
	br := bridgeRounds{present: map[uint8]int{}}
	base := map[uint8]int{}
	for i, raw := range cookies {
		c := openflow.Cookie(raw)
		if c.Round() == 0 {
			continue
		}
		br.present[c.Round()]++
		if tables[i] == pipeline.Classifier && c.Category() == pipeline.CategoryBase {
			base[c.Round()]++
		}
	}
	for _, r := range slices.Sorted(maps.Keys(base)) {
		if base[r] > base[br.latest] {
			br.latest = r
		}
	}
	return br
}

// rounds returns the present rounds, sorted.
func (b bridgeRounds) rounds() []uint8 { return slices.Sorted(maps.Keys(b.present)) }

// errNoFreeRound: every one of the 255 usable rounds has flows on the
// bridge, which 255 agent restarts without a single completed sync would
// take.
var errNoFreeRound = errors.New("every cookie round 1-255 has flows on the bridge")

// pickRound returns the round of this run: the first round after latest,
// counting 1, 2, ... 255, 1, ... (0 is skipped: it marks flows that are
// not Weir's), that no flow on the bridge carries. Normally that is
// latest+1 (255 is followed by 1); after restarts that never reached the
// cleanup, rounds still on the bridge are skipped, so flows this run
// installs are never mistaken for stale ones, nor stale ones for this
// run's.
func pickRound(b bridgeRounds) (uint8, error) {
	r := b.latest
	for range 255 {
		r++
		if r == 0 {
			r = 1
		}
		if b.present[r] == 0 {
			return r, nil
		}
	}
	return 0, errNoFreeRound
}

// staleRounds returns the rounds of b other than current, sorted.
func staleRounds(b bridgeRounds, current uint8) []uint8 {
	var out []uint8
	for _, r := range b.rounds() {
		if r != current {
			out = append(out, r)
		}
	}
	return out
}

// deleteRoundsOps returns the flow ops deleting every flow of rounds.
func deleteRoundsOps(rounds []uint8) []openflow.FlowOp {
	ops := make([]openflow.FlowOp, 0, len(rounds))
	for _, r := range rounds {
		ops = append(ops, openflow.DeleteByCookie(uint64(openflow.MakeCookie(r, 0, 0)), openflow.CookieRoundMask))
	}
	return ops
}

// roundsForLog returns rs as ints: a []uint8 would be logged as a string.
func roundsForLog(rs []uint8) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		out[i] = int(r)
	}
	return out
}
