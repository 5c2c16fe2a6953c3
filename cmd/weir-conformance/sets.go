package main

import (
	"fmt"
	"regexp"
	"strings"
)

// testSet is one selection of upstream e2e tests, as ginkgo focus and skip
// regular expressions over the full spec text (e.g. "[sig-network] Services
// should serve a basic endpoint from pods [Conformance]").
type testSet struct {
	name, title string
	focus       []string
	// skip are this set's own exclusions; commonSkips apply to every set.
	skip []skipRule
	// dualStack sets need a dual-stack cluster (weir-local --ip-family dual).
	dualStack bool
}

// skipRule excludes the tests whose text matches re, for reason.
type skipRule struct {
	re, reason string
}

// commonSkips are what a weir-local cluster cannot have. Each is listed in
// docs/conformance.md with its reason. The tests that need a cloud load
// balancer are all marked [Feature:LoadBalancer] (set d excludes features);
// the one untagged test with a LoadBalancer Service only uses its ClusterIP
// and runs.
var commonSkips = []skipRule{
	{`\[Feature:SCTPConnectivity\]`, "SCTP: this machine's kernel has no SCTP (no sctp module, no /proc/sys/net/sctp), so no pod can open an SCTP socket"},
}

// otherSets excludes the tests of sets a, b and c from set d.
const (
	conformanceRE = `\[Conformance\]`
	netpolRE      = `\[sig-network\] Netpol`
	granularRE    = `\[sig-network\] Networking Granular Checks`
)

// testSets are the selections of `make conformance SET=a|b|c|d|e`. Sets
// a and c overlap (the Granular Checks marked [Conformance] are in both); d
// is what none of a, b, c runs except the [Feature:...] tests, of which e
// runs the dual-stack ones.
var testSets = []testSet{
	{
		name: "a", title: "[sig-network] Conformance (including DNS)",
		focus: []string{`\[sig-network\].*` + conformanceRE},
	},
	{
		name: "b", title: "NetworkPolicy suite (test/e2e/network/netpol)",
		focus: []string{netpolRE},
	},
	{
		name: "c", title: "[sig-network] Networking Granular Checks",
		focus: []string{granularRE},
	},
	{
		name: "d", title: "every other [sig-network] test: not Serial, Slow, Disruptive, Feature, Alpha",
		focus: []string{`\[sig-network\]`},
		skip: []skipRule{
			{`\[Serial\]`, "the set excludes [Serial] tests by definition"},
			{`\[Slow\]`, "the set excludes [Slow] tests by definition"},
			{`\[Disruptive\]`, "the set excludes [Disruptive] tests by definition"},
			{`\[Feature:[^\]]*\]`, "the set excludes [Feature:...] tests by definition"},
			{`\[Alpha\]`, "alpha feature gates are off in the local cluster, as in a default cluster"},
			{conformanceRE, "in set a"},
			{netpolRE, "in set b"},
			{granularRE, "in set c"},
		},
	},
	{
		name: "e", title: "[Feature:IPv6DualStack] (needs a dual-stack cluster)",
		focus:     []string{`\[Feature:IPv6DualStack\]`},
		dualStack: true,
	},
}

// setByName returns the sets named by sel: one of a, b, c, d, or all.
func setByName(sel string) ([]testSet, error) {
	if sel == "all" {
		return testSets, nil
	}
	var out []testSet
	for _, n := range strings.Split(sel, ",") {
		found := false
		for _, s := range testSets {
			if s.name == strings.TrimSpace(n) {
				out = append(out, s)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown set %q: want a, b, c, d, e (comma-separated) or all", n)
		}
	}
	return out, nil
}

// skips returns the set's skip rules including the common ones.
func (s testSet) skips() []skipRule {
	return append(append([]skipRule(nil), commonSkips...), s.skip...)
}

// focusRE and skipRE are the expressions handed to ginkgo (--focus, --skip).
func (s testSet) focusRE() string { return strings.Join(s.focus, "|") }

func (s testSet) skipRE() string {
	var res []string
	for _, r := range s.skips() {
		res = append(res, r.re)
	}
	return strings.Join(res, "|")
}

// selects reports whether the set runs the test with full text name, as
// ginkgo decides it (focus matches and skip does not).
func (s testSet) selects(name string) bool {
	return regexp.MustCompile(s.focusRE()).MatchString(name) && !regexp.MustCompile(s.skipRE()).MatchString(name)
}
