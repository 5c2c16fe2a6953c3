package pipeline

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/weirnet/weir/pkg/openflow"
)

// IsolationDrop is one isolated pod's default drop as the pipeline realized
// it, with the counters of its flow.
type IsolationDrop struct {
	Direction Direction
	Pod       LocalPod
	Counters  Counters
}

// Isolation returns the isolated pods as the pipeline realized them (a
// copy), so tooling does not have to read them back from rendered flows.
func (p *Pipeline) Isolation() Isolation {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Isolation{Ingress: slices.Clone(p.policy.isolation.Ingress), Egress: slices.Clone(p.policy.isolation.Egress)}
}

// IsolationDrops returns every isolated pod's default drop with the
// counters of its flow read from the switch: egress drops first, then
// ingress, in the order of Isolation. Pods that share a drop flow (one IP
// egress, one port ingress) each report that flow's counters; a drop whose
// flow the switch does not hold reports zeros.
func (p *Pipeline) IsolationDrops(ctx context.Context) ([]IsolationDrop, error) {
	iso := p.Isolation()
	type drop struct {
		IsolationDrop
		key string
	}
	var drops []drop
	for _, d := range []struct {
		dir  Direction
		pods []LocalPod
	}{{Egress, iso.Egress}, {Ingress, iso.Ingress}} {
		for _, pod := range d.pods {
			one := Isolation{Egress: []LocalPod{pod}}
			if d.dir == Ingress {
				one = Isolation{Ingress: []LocalPod{pod}}
			}
			fs, err := p.isolationFlows(one)
			if err != nil {
				return nil, err
			}
			drops = append(drops, drop{IsolationDrop{Direction: d.dir, Pod: pod}, isolationKey(fs[0])})
		}
	}
	if len(drops) == 0 {
		return nil, nil
	}
	counters := map[string]Counters{}
	for _, table := range []uint8{EgressDefaultRule, IngressDefaultRule} {
		stats, err := p.sw.DumpFlows(ctx, openflow.FlowFilter{Table: &table, Cookie: p.sharedCookie(),
			CookieMask: openflow.CookieRoundMask | openflow.CookieCategoryMask})
		if err != nil {
			return nil, fmt.Errorf("reading the isolation drops of table %d: %w", table, err)
		}
		for _, s := range stats {
			counters[isolationKey(s.Flow)] = Counters{Packets: s.Packets, Bytes: s.Bytes}
		}
	}
	out := make([]IsolationDrop, len(drops))
	for i, d := range drops {
		d.Counters = counters[d.key]
		out[i] = d.IsolationDrop
	}
	return out, nil
}

// isolationKey identifies a drop flow by table and rendered match, which a
// flow read back from the switch shares with the flow that was sent.
func isolationKey(f *openflow.Flow) string {
	return strconv.Itoa(int(f.Table)) + " " + f.Match()
}
