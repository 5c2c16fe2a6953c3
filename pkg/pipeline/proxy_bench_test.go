package pipeline

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/weirnet/weir/pkg/openflow"
	"github.com/weirnet/weir/test/ovstest"
)

// benchServices returns n ServicePorts, each a TCP ClusterIP (10.96.0.0/12
// counted up) with 10 endpoints on other nodes (10.20.0.0/16 and up, port
// 8080).
func benchServices(n int) []ServicePort {
	sps := make([]ServicePort, n)
	for i := range sps {
		vip := netip.AddrFrom4([4]byte{10, 96 + byte(i>>16), byte(i >> 8), byte(i)})
		sp := ServicePort{Key: fmt.Sprintf("ns%d/svc%d:http/IPv4", i%100, i), HasEndpoints: true,
			Frontends: []ServiceFrontend{{Kind: KindClusterIP, IP: vip, Port: 80, Protocol: ProtocolTCP}}}
		for j := range 10 {
			k := i*10 + j
			sp.ClusterEndpoints = append(sp.ClusterEndpoints, ServiceEndpoint{
				IP: netip.AddrFrom4([4]byte{10, 20 + byte(k>>16), byte(k >> 8), byte(k)}), Port: 8080})
		}
		sps[i] = sp
	}
	return sps
}

func benchProxyConfig() Config {
	mac, _ := net.ParseMAC("02:00:0a:0a:00:01")
	_, cidr, _ := net.ParseCIDR("10.10.0.0/24")
	return Config{GatewayOFPort: 2, GatewayMAC: mac, GatewayIP: net.ParseIP("10.10.0.1").To4(), PodCIDR: cidr, CTZone: 65520, Round: 1,
		Proxy: &ProxyConfig{HairpinIP: netip.MustParseAddr("169.254.0.253"), SNATZone: 65521}}
}

// BenchmarkServicesGenerate measures ApplyServices of 10,000 ServicePorts x
// 10 endpoints against a switch that only records (the pipeline's own
// cost: building groups and flows, the state).
func BenchmarkServicesGenerate(b *testing.B) {
	sps := benchServices(10000)
	for b.Loop() {
		p, err := New(&fakeGroupSwitch{}, benchProxyConfig())
		if err != nil {
			b.Fatal(err)
		}
		if err := p.ApplyServices(context.Background(), sps, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServicesInstall applies 1,000 and 10,000 ServicePorts x 10
// endpoints to a private OVS in one ApplyServices (one bundle: a select
// group and a frontend flow each), then measures one endpoint change among
// 10,000 (one group_mod).
func BenchmarkServicesInstall(b *testing.B) {
	ovs := ovstest.Start(b)
	ovs.AddBridge(b, "br-int")
	sw, err := openflow.Open(openflow.Config{MgmtSocket: ovs.MgmtSocket("br-int"), RetryInterval: 50 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sw.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := sw.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	p, err := New(sw, benchProxyConfig())
	if err != nil {
		b.Fatal(err)
	}
	if err := p.InstallBase(ctx); err != nil {
		b.Fatal(err)
	}
	keys := func(sps []ServicePort) []string {
		out := make([]string, len(sps))
		for i, sp := range sps {
			out[i] = sp.Key
		}
		return out
	}
	for _, n := range []int{1000, 10000} {
		sps := benchServices(n)
		b.Run(fmt.Sprintf("first-install-%d", n), func(b *testing.B) {
			for b.Loop() {
				if err := p.ApplyServices(ctx, sps, nil); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if got := sw.Cache().GroupLen(); got != n {
					b.Fatalf("%d groups cached, want %d", got, n)
				}
				if err := p.ApplyServices(ctx, nil, keys(sps)); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
	b.Run("endpoint-change-among-10000", func(b *testing.B) {
		sps := benchServices(10000)
		if err := p.ApplyServices(ctx, sps, nil); err != nil {
			b.Fatal(err)
		}
		i := 0
		for b.Loop() {
			sp := sps[(i*7919)%len(sps)]
			eps := append([]ServiceEndpoint(nil), sp.ClusterEndpoints...)
			eps[i%10].IP = netip.AddrFrom4([4]byte{10, 99, byte(i >> 8), byte(i)})
			sp.ClusterEndpoints = eps
			if err := p.ApplyServices(ctx, []ServicePort{sp}, nil); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
