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
// counters of its flows (IPv4 and, on a dual-stack node, IPv6) read from
// the switch: egress drops first, then
// ingress, in the order of Isolation. Pods that share a drop flow (one IP
// egress, one port ingress) each report that flow's counters; a drop whose
// flow the switch does not hold reports zeros.
func (p *Pipeline) IsolationDrops(ctx context.Context) ([]IsolationDrop, error) {
	iso := p.Isolation()
	type drop struct {
		IsolationDrop
		keys []string // its flows: IPv4, and IPv6 on a dual-stack node
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
			keys := make([]string, len(fs))
			for i, f := range fs {
				keys[i] = isolationKey(f)
			}
			drops = append(drops, drop{IsolationDrop{Direction: d.dir, Pod: pod}, keys})
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
		for _, k := range d.keys {
			c := counters[k]
			d.Counters.Packets += c.Packets
			d.Counters.Bytes += c.Bytes
		}
		out[i] = d.IsolationDrop
	}
	return out, nil
}

// isolationKey identifies a drop flow by table and rendered match, which a
// flow read back from the switch shares with the flow that was sent.
func isolationKey(f *openflow.Flow) string {
	return strconv.Itoa(int(f.Table)) + " " + f.Match()
}
