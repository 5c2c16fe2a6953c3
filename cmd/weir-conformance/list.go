package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
)

// listLine is one line of `e2e.test --list-tests`: "    FILE:LINE: FULL TEXT".
var listLine = regexp.MustCompile(`^\s+\S+:\d+: (.+)$`)

// listTests returns the full text of every spec e2e.test has.
func listTests(ctx context.Context, e2eTest string) ([]string, error) {
	out, err := exec.CommandContext(ctx, e2eTest, "--list-tests").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-tests: %w", e2eTest, err)
	}
	return parseTestList(strings.NewReader(string(out))), nil
}

func parseTestList(r io.Reader) []string {
	var names []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := listLine.FindStringSubmatch(sc.Text()); m != nil {
			names = append(names, m[1])
		}
	}
	return names
}

// setListing is what a set makes of the test list: the tests it runs and,
// per skip rule, the tests its focus matched that the rule removed (a test
// is counted under the first rule that matches it).
type setListing struct {
	runs    []string
	skipped [][]string // parallel to set.skips()
}

func (s testSet) list(names []string) setListing {
	focus := regexp.MustCompile(s.focusRE())
	rules := s.skips()
	res := make([]*regexp.Regexp, len(rules))
	for i, r := range rules {
		res[i] = regexp.MustCompile(r.re)
	}
	l := setListing{skipped: make([][]string, len(rules))}
	for _, n := range names {
		if !focus.MatchString(n) {
			continue
		}
		skipped := false
		for i, re := range res {
			if re.MatchString(n) {
				l.skipped[i] = append(l.skipped[i], n)
				skipped = true
				break
			}
		}
		if !skipped {
			l.runs = append(l.runs, n)
		}
	}
	return l
}

// printListing writes, in Markdown, every set's count and the tests each
// skip rule removes; rules of set d that only restate its definition (or
// point at another set) are given as counts.
func printListing(w io.Writer, sets []testSet, names []string, verbose bool) {
	for _, s := range sets {
		l := s.list(names)
		fmt.Fprintf(w, "### Set %s: %s\n\nfocus `%s`: runs %d tests.\n\n", s.name, s.title, s.focusRE(), len(l.runs))
		for i, r := range s.skips() {
			if len(l.skipped[i]) == 0 {
				continue
			}
			fmt.Fprintf(w, "- skip `%s` (%d): %s\n", r.re, len(l.skipped[i]), r.reason)
			if i < len(commonSkips) || verbose {
				for _, n := range l.skipped[i] {
					fmt.Fprintf(w, "  - %s\n", n)
				}
			}
		}
		if verbose {
			fmt.Fprintf(w, "\nruns:\n")
			for _, n := range l.runs {
				fmt.Fprintf(w, "- %s\n", n)
			}
		}
		fmt.Fprintln(w)
	}
}
