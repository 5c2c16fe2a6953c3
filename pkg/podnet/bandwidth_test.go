package podnet

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/weirnet/weir/test/netnstest"
)

func TestBandwidthValidate(t *testing.T) {
	tests := []struct {
		name string
		bw   Bandwidth
		want string // "" = valid
	}{
		{"none", Bandwidth{}, ""},
		{"both directions", Bandwidth{IngressRate: 10e6, IngressBurst: 1e6, EgressRate: 5e6, EgressBurst: 1e6}, ""},
		{"containerd's burst", Bandwidth{EgressRate: 10e6, EgressBurst: math.MaxUint32}, ""},
		{"rate without burst", Bandwidth{IngressRate: 10e6}, "ingressRate 10000000 is set without ingressBurst"},
		{"burst without rate", Bandwidth{EgressBurst: 10}, "egressBurst 10 is set without egressRate"},
		{"rate too low", Bandwidth{EgressRate: 999, EgressBurst: 1e6}, "egressRate 999 bit/s is out of range"},
		{"rate too high", Bandwidth{IngressRate: MaxBandwidthRate + 1, IngressBurst: 1e6}, "ingressRate 1000000000000001 bit/s is out of range"},
		{"burst too large", Bandwidth{IngressRate: 1e6, IngressBurst: MaxBandwidthBurst}, "4 GiB or more"},
		{"two problems", Bandwidth{IngressRate: 1, IngressBurst: 1, EgressRate: 1e6}, "ingressRate 1 bit/s is out of range 1000-1000000000000000; egressRate 1000000 is set without egressBurst"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.bw.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v, want valid", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestTBFParams(t *testing.T) {
	tests := []struct {
		name              string
		rate, burst       uint64
		mtu               int
		wantRate, wantBur uint64
	}{
		// 10 Mbit/s = 1.25 MB/s: 100 ms = 125000 bytes, 4 ms = 5000.
		{"containerd's MaxUint32 burst is capped at 100 ms", 10e6, math.MaxUint32, 1450, 1_250_000, 125_000},
		{"a burst in range is kept", 10e6, 800_000, 1450, 1_250_000, 100_000},
		{"a tiny burst is raised to 4 ms of the rate", 10e6, 8, 1450, 1_250_000, 5_000},
		// 1 Mbit/s: 4 ms = 500 bytes, less than a frame.
		{"at least one frame", 1e6, 8, 1450, 125_000, 1464},
		{"default MTU", 1e6, 8, 0, 125_000, 1514},
		// 100 ms of 1 kbit/s is 12 bytes: the frame wins over the cap.
		{"the frame wins over the cap", 1000, math.MaxUint32, 1450, 125, 1464},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := TBFParams(tc.rate, tc.burst, tc.mtu)
			if p.RateBytes != tc.wantRate || p.BurstBytes != tc.wantBur {
				t.Fatalf("TBFParams(%d, %d, %d) = %+v, want rate %d burst %d", tc.rate, tc.burst, tc.mtu, p, tc.wantRate, tc.wantBur)
			}
			if wantLimit := p.RateBytes*25/1000 + p.BurstBytes; p.LimitBytes != wantLimit {
				t.Errorf("limit %d, want 25 ms of the rate plus the burst = %d", p.LimitBytes, wantLimit)
			}
		})
	}
}

// TestSetBandwidth shapes a real veth pair, reads the qdiscs back with
// tc(8), changes and removes the limits.
func TestSetBandwidth(t *testing.T) {
	requireRoot(t)
	node, pod := netnstest.New(t, "weirtest-node"), netnstest.New(t, "weirtest-pod")
	vcfg := podConfig(t, node, pod, "10.99.0.5/24", "10.99.0.1")
	if _, err := SetupVeth(context.Background(), vcfg); err != nil {
		t.Fatal(err)
	}
	cfg := BandwidthConfig{HostNetNSPath: node.Path, HostIfName: vcfg.HostIfName, NetNSPath: pod.Path, IfName: "eth0", MTU: 1450}
	tc := func(n netnstest.NetNS, dev string) string {
		return run(t, "ip", "netns", "exec", n.Name, "tc", "qdisc", "show", "dev", dev, "root")
	}

	steps := []struct {
		name           string
		limits         Bandwidth
		hostTC, podTC  string // substrings of `tc qdisc show`
		wantIn, wantEg uint64 // bytes/s, 0 = no tbf
		wantErr        string
	}{
		{name: "both directions", limits: Bandwidth{IngressRate: 20e6, IngressBurst: math.MaxUint32, EgressRate: 10e6, EgressBurst: math.MaxUint32},
			hostTC: "rate 20Mbit burst 250000b lat 25ms", podTC: "rate 10Mbit burst 125000b lat 25ms", wantIn: 2_500_000, wantEg: 1_250_000},
		{name: "again (idempotent)", limits: Bandwidth{IngressRate: 20e6, IngressBurst: math.MaxUint32, EgressRate: 10e6, EgressBurst: math.MaxUint32},
			hostTC: "rate 20Mbit", podTC: "rate 10Mbit", wantIn: 2_500_000, wantEg: 1_250_000},
		{name: "egress only", limits: Bandwidth{EgressRate: 5e6, EgressBurst: 1e6},
			hostTC: "noqueue", podTC: "rate 5Mbit", wantEg: 625_000},
		{name: "invalid changes nothing", limits: Bandwidth{IngressRate: 5e6}, wantErr: "ingressRate 5000000 is set without ingressBurst",
			hostTC: "noqueue", podTC: "rate 5Mbit", wantEg: 625_000},
		{name: "removed", limits: Bandwidth{}, hostTC: "noqueue", podTC: "noqueue"},
	}
	for _, s := range steps {
		cfg.Limits = s.limits
		err := SetBandwidth(context.Background(), cfg)
		if s.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), s.wantErr) {
				t.Fatalf("%s: SetBandwidth: %v, want %q", s.name, err, s.wantErr)
			}
		} else if err != nil {
			t.Fatalf("%s: SetBandwidth: %v", s.name, err)
		}
		if got := tc(node, vcfg.HostIfName); !strings.Contains(got, s.hostTC) {
			t.Errorf("%s: host side qdisc %q, want %q", s.name, got, s.hostTC)
		}
		if got := tc(pod, "eth0"); !strings.Contains(got, s.podTC) {
			t.Errorf("%s: pod side qdisc %q, want %q", s.name, got, s.podTC)
		}
		in, eg, err := GetBandwidth(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if rate(in) != s.wantIn || rate(eg) != s.wantEg {
			t.Errorf("%s: GetBandwidth: ingress %+v egress %+v, want rates %d and %d", s.name, in, eg, s.wantIn, s.wantEg)
		}
		if s.wantErr == "" {
			if err := CheckBandwidth(cfg); err != nil {
				t.Errorf("%s: CheckBandwidth: %v", s.name, err)
			}
		}
	}
	// CHECK notices a limit that is missing.
	cfg.Limits = Bandwidth{IngressRate: 1e6, IngressBurst: 1e6}
	if err := CheckBandwidth(cfg); err == nil || !strings.Contains(err.Error(), "has no tbf") {
		t.Errorf("CheckBandwidth of an unshaped pair: %v, want it to report the missing tbf", err)
	}
	cfg.IfName = "nosuch0"
	if err := SetBandwidth(context.Background(), BandwidthConfig{HostNetNSPath: node.Path, HostIfName: vcfg.HostIfName,
		NetNSPath: pod.Path, IfName: "nosuch0", Limits: Bandwidth{EgressRate: 1e6, EgressBurst: 1e6}}); err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("SetBandwidth on a missing interface: %v", err)
	}
}

func rate(t *TBF) uint64 {
	if t == nil {
		return 0
	}
	return t.RateBytes
}
