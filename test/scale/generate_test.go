package main

import (
	"net/netip"
	"testing"
)

func TestAddressPlan(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"first kwok CIDR", nthPrefix(kwokCIDRBase, 0).String(), "10.160.0.0/24"},
		{"kwok CIDR 300", nthPrefix(kwokCIDRBase, 300).String(), "10.161.44.0/24"},
		{"kwok CIDR 1999", nthPrefix(kwokCIDRBase, 1999).String(), "10.167.207.0/24"},
		{"first node IP", nthNodeIP(kwokIPBase, 0).String(), "172.20.0.1"},
		{"node IP 249", nthNodeIP(kwokIPBase, 249).String(), "172.20.0.250"},
		{"node IP 250", nthNodeIP(kwokIPBase, 250).String(), "172.20.1.1"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, tt.got, tt.want)
		}
	}
	// Every kwok CIDR of the largest scenario lies in the cluster CIDR and
	// apart from the real nodes' first /24s and the measured extra nodes.
	cluster := netip.MustParsePrefix(clusterCIDR)
	last := nthPrefix(kwokCIDRBase, Scenarios[len(Scenarios)-1].Nodes-1)
	extra := nthPrefix(extraCIDRBase, 0)
	if !cluster.Contains(last.Addr()) || !cluster.Contains(extra.Addr()) || last.Overlaps(extra) || last.Addr().Compare(extra.Addr()) >= 0 {
		t.Errorf("address plan: last kwok CIDR %s, extra %s, cluster %s", last, extra, cluster)
	}
}

func TestPoliciesShape(t *testing.T) {
	for _, s := range Scenarios {
		if s.Pods != s.Namespaces*PodsPerNamespace || s.Policies != s.Namespaces*PoliciesPerNamespace {
			t.Errorf("%s: %d pods, %d policies in %d namespaces do not match the generator's shape", s.Name, s.Pods, s.Policies, s.Namespaces)
		}
	}
	nps := policies(3)
	if len(nps) != PoliciesPerNamespace {
		t.Fatalf("%d policies per namespace, want %d", len(nps), PoliciesPerNamespace)
	}
	names := map[string]bool{}
	for _, np := range nps {
		if np.Namespace != nsName(3) || names[np.Name] {
			t.Errorf("policy %s/%s: wrong namespace or duplicate name", np.Namespace, np.Name)
		}
		names[np.Name] = true
	}
}

func TestNSLabelCandidates(t *testing.T) {
	for _, s := range Scenarios[:2] {
		c := nsLabelCandidates(s)
		if len(c) == 0 {
			t.Fatalf("%s: no namespace to relabel", s.Name)
		}
		for _, i := range c {
			if i < ActiveNamespaces || i%Teams < ActiveNamespaces {
				t.Errorf("%s: candidate %d has local pods or an active namespace's team", s.Name, i)
			}
		}
	}
}
