package pipeline

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/test/ovstest"
)

// benchRules returns n rules over 100 local pods, in a realistic mix:
// ingress and egress, 1-5 applied-to pods, 1-20 peer /32s (pod IPs of a
// 4096-pod cluster, so rules share peers) or a CIDR, 0-3 ports, some of
// them ranges.
func benchRules(n int) []PolicyRule {
	rng := rand.New(rand.NewPCG(1, 2))
	pods := make([]LocalPod, 100)
	for i := range pods {
		pods[i] = LocalPod{IP: net.IPv4(10, 10, 0, byte(2+i)).To4(), OFPort: uint32(10 + i)}
	}
	rules := make([]PolicyRule, n)
	for i := range rules {
		r := PolicyRule{ID: uint32(i + 1), Name: fmt.Sprintf("ns%d/p%d/x/0", i%50, i), Direction: Ingress}
		if i%3 == 0 {
			r.Direction = Egress
		}
		for range 1 + rng.IntN(5) {
			r.Pods = append(r.Pods, pods[rng.IntN(len(pods))])
		}
		if i%10 == 0 {
			r.Peers = []*net.IPNet{{IP: net.IPv4(172, 16, byte(i), 0).To4(), Mask: net.CIDRMask(24, 32)}}
		} else {
			for range 1 + rng.IntN(20) {
				k := rng.IntN(4096)
				r.Peers = append(r.Peers, &net.IPNet{IP: net.IPv4(10, 20+byte(k>>8), byte(k), 7).To4(), Mask: net.CIDRMask(32, 32)})
			}
		}
		switch i % 4 {
		case 1:
			r.Ports = []PortRange{{Protocol: ProtocolTCP, From: uint16(80 + i%20)}}
		case 2:
			r.Ports = []PortRange{{Protocol: ProtocolTCP, From: 8000, To: uint16(8000 + i%100)}, {Protocol: ProtocolUDP, From: 53}}
		case 3:
			r.Ports = []PortRange{{Protocol: ProtocolTCP, From: 443}, {Protocol: ProtocolTCP, From: 6443}, {Protocol: ProtocolSCTP, From: 9000, To: 9999}}
		}
		rules[i] = r
	}
	return rules
}

// BenchmarkPolicyGenerate measures computing the flows of 1000 rules (no
// switch).
func BenchmarkPolicyGenerate(b *testing.B) {
	rules := benchRules(1000)
	mac, _ := net.ParseMAC("02:00:0a:0a:00:01")
	_, cidr, _ := net.ParseCIDR("10.10.0.0/24")
	cfg := Config{GatewayOFPort: 2, GatewayMAC: mac, GatewayIP: net.ParseIP("10.10.0.1").To4(), PodCIDR: cidr, CTZone: 65520, Round: 1}
	var flows int
	for b.Loop() {
		sw := &fakeSwitch{owners: map[string][]*openflow.Flow{}}
		p, err := New(sw, cfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.ApplyPolicy(context.Background(), PolicyChange{Upsert: rules}); err != nil {
			b.Fatal(err)
		}
		flows = 0
		for o, fl := range sw.owners {
			if o != ownerBase {
				flows += len(fl)
			}
		}
	}
	b.ReportMetric(float64(flows), "flows")
}

// BenchmarkPolicyInstall installs 1000 rules into a private OVS in one
// ApplyPolicy (one bundle), then measures a one-rule change among them.
func BenchmarkPolicyInstall(b *testing.B) {
	ovs := ovstest.Start(b)
	ovs.AddBridge(b, "br-int")
	sw, err := openflow.Open(openflow.Config{MgmtSocket: ovs.MgmtSocket("br-int"), RetryInterval: 50 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sw.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := sw.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	mac, _ := net.ParseMAC("02:00:0a:0a:00:01")
	_, cidr, _ := net.ParseCIDR("10.10.0.0/24")
	p, err := New(sw, Config{GatewayOFPort: 2, GatewayMAC: mac, GatewayIP: net.ParseIP("10.10.0.1").To4(), PodCIDR: cidr, CTZone: 65520, Round: 1})
	if err != nil {
		b.Fatal(err)
	}
	if err := p.InstallBase(ctx); err != nil {
		b.Fatal(err)
	}
	rules := benchRules(1000)
	ids := make([]uint32, len(rules))
	for i, r := range rules {
		ids[i] = r.ID
	}
	b.Run("all-1000", func(b *testing.B) {
		var flows int
		for b.Loop() {
			if err := p.ApplyPolicy(ctx, PolicyChange{Upsert: rules}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			flows = len(ovs.DumpFlows(b, "br-int", "cookie=0x104000000000000/0xffff000000000000"))
			if err := p.ApplyPolicy(ctx, PolicyChange{Delete: ids}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(flows), "flows")
	})
	b.Run("one-rule-change-among-1000", func(b *testing.B) {
		if err := p.ApplyPolicy(ctx, PolicyChange{Upsert: rules}); err != nil {
			b.Fatal(err)
		}
		i := 0
		for b.Loop() {
			r := rules[i%len(rules)]
			r.Peers = append(r.Peers[:len(r.Peers):len(r.Peers)], &net.IPNet{IP: net.IPv4(10, 99, 0, byte(i)).To4(), Mask: net.CIDRMask(32, 32)})
			if err := p.ApplyPolicy(ctx, PolicyChange{Upsert: []PolicyRule{r}}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
