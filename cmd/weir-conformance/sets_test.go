package main

import (
	"strings"
	"testing"
)

// Spec texts as e2e.test v1.37.2 names them (--list-tests), one per case the
// sets must tell apart.
func TestSetsSelect(t *testing.T) {
	tests := []struct {
		name string
		want string // the sets that run it, "" for none
	}{
		{"[sig-network] Services should serve a basic endpoint from pods [Conformance]", "a"},
		{"[sig-network] DNS should provide DNS for services [Conformance]", "a"},
		{"[sig-network] Netpol NetworkPolicy between server and client should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]", "b"},
		{"[sig-network] Netpol [Feature:SCTPConnectivity][LinuxOnly] NetworkPolicy between server and client using SCTP should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]", ""},
		{"[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http [NodeConformance] [Conformance]", "ac"},
		{"[sig-network] Networking Granular Checks: Services should function for pod-Service: udp", "c"},
		{"[sig-network] Networking Granular Checks: Services should function for pod-Service: sctp [Feature:SCTPConnectivity]", ""},
		{"[sig-network] Services should be able to create a functioning NodePort service [Conformance]", "a"},
		{"[sig-network] Services should fail health check node port if there are only terminating endpoints", "d"},
		{"[sig-network] Services should be able to change the type and ports of a UDP service [Slow]", ""},
		{"[sig-network] Services should work after restarting kube-proxy [Disruptive]", ""},
		{"[sig-network] Services should implement service.kubernetes.io/service-proxy-name [Serial]", ""},
		{"[sig-network] DNS should support configurable pod DNS nameservers [Feature:Example]", ""},
		{"[sig-network] LoadBalancers [Feature:LoadBalancer] should be able to change the type and ports of a TCP service [Slow]", ""},
		{"[sig-network] Services should serve endpoints on same port and different protocol for internal traffic on Type LoadBalancer", "d"},
		{"[sig-network] ServiceCIDR [Alpha] should create ServiceCIDRs", ""},
		{"[sig-node] Pods should be submitted and removed [NodeConformance] [Conformance]", ""},
		{"[sig-network] [Feature:IPv6DualStack] should create service with ipv6,v4 cluster ip", "e"},
		{"[sig-network] [Feature:IPv6DualStack] Granular Checks: Services Secondary IP Family [LinuxOnly] should function for pod-Service: sctp [Feature:SCTPConnectivity]", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			for _, s := range testSets {
				if s.selects(tc.name) {
					got += s.name
				}
			}
			if got != tc.want {
				t.Errorf("selected by sets %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSetByName(t *testing.T) {
	tests := []struct {
		sel     string
		want    []string
		wantErr bool
	}{
		{sel: "all", want: []string{"a", "b", "c", "d", "e"}},
		{sel: "c", want: []string{"c"}},
		{sel: "a,c", want: []string{"a", "c"}},
		{sel: "f", wantErr: true},
		{sel: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.sel, func(t *testing.T) {
			got, err := setByName(tc.sel)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			var names []string
			for _, s := range got {
				names = append(names, s.name)
			}
			if len(names) != len(tc.want) {
				t.Fatalf("got %v, want %v", names, tc.want)
			}
			for i := range names {
				if names[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", names, tc.want)
				}
			}
		})
	}
}

func TestParseTestListAndSetListing(t *testing.T) {
	out := `The following spec names can be used with 'ginkgo run --focus/skip':
    test/e2e/network/service.go:100: [sig-network] Services should serve a basic endpoint from pods [Conformance]
    test/e2e/network/loadbalancer.go:12: [sig-network] LoadBalancers should be able to change the type and ports of a TCP service [Slow]
    test/e2e/network/service.go:200: [sig-network] Services should be rejected for evicted pods (no endpoints exist)
    test/e2e/network/service.go:300: [sig-network] Services should implement service.kubernetes.io/headless [Serial]
    test/e2e/node/pods.go:1: [sig-node] Pods should be submitted and removed [NodeConformance] [Conformance]

`
	names := parseTestList(strings.NewReader(out))
	if len(names) != 5 || names[0] != "[sig-network] Services should serve a basic endpoint from pods [Conformance]" {
		t.Fatalf("parsed %q", names)
	}
	d := testSets[3]
	l := d.list(names)
	if len(l.runs) != 1 || l.runs[0] != "[sig-network] Services should be rejected for evicted pods (no endpoints exist)" {
		t.Errorf("set d runs %q", l.runs)
	}
	// A test matching several rules counts under the first only: the
	// LoadBalancers test under [Slow], not also elsewhere.
	for i, r := range d.skips() {
		want := 0
		if r.re == `\[Slow\]` || r.re == `\[Serial\]` || r.re == conformanceRE {
			want = 1
		}
		if len(l.skipped[i]) != want {
			t.Errorf("rule %s removed %q, want %d test", r.re, l.skipped[i], want)
		}
	}
	total := len(l.runs)
	for _, s := range l.skipped {
		total += len(s)
	}
	if total != 4 {
		t.Errorf("runs+skipped = %d, want the 4 [sig-network] tests", total)
	}
}
