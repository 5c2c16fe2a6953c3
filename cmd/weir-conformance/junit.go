package main

import (
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// The JUnit XML that `ginkgo --junit-report` writes (ginkgo v2
// reporters.JUnitTestSuites), the fields the summary needs.
type junitSuites struct {
	Suites []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name  string      `xml:"name,attr"`
	Time  float64     `xml:"time,attr"`
	Cases []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name    string        `xml:"name,attr"`
	Status  string        `xml:"status,attr"`
	Time    float64       `xml:"time,attr"`
	Skipped *junitMessage `xml:"skipped"`
	Failure *junitMessage `xml:"failure"`
	Error   *junitMessage `xml:"error"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Body    string `xml:",chardata"`
}

// result counts one set's tests.
type result struct {
	set      string
	passed   []string
	failed   []failedTest
	skipped  []skippedTest
	duration time.Duration
	// setupFailed names failed suite nodes ([BeforeSuite], [SynchronizedBeforeSuite], ...).
	setupFailed []failedTest
}

type failedTest struct{ name, message string }
type skippedTest struct{ name, reason string }

// parseJUnit reads a ginkgo JUnit report. Ginkgo lists every spec of the
// suite, also those the focus/skip expressions left out: those have status
// "skipped" with the bare message "skipped" and are not counted. A test that
// skipped itself at run time (e2eskipper, message "skipped - REASON") is.
func parseJUnit(r io.Reader, set string) (result, error) {
	var s junitSuites
	if err := xml.NewDecoder(r).Decode(&s); err != nil {
		return result{}, fmt.Errorf("parsing JUnit report: %w", err)
	}
	res := result{set: set}
	for _, su := range s.Suites {
		res.duration += time.Duration(su.Time * float64(time.Second))
		for _, c := range su.Cases {
			name, isSpec := strings.CutPrefix(c.Name, "[It] ")
			switch c.Status {
			case "passed":
				if isSpec {
					res.passed = append(res.passed, name)
				}
			case "skipped":
				if c.Skipped != nil {
					if reason, ok := strings.CutPrefix(c.Skipped.Message, "skipped - "); ok && isSpec {
						res.skipped = append(res.skipped, skippedTest{name, firstLine(reason)})
					}
				}
			case "pending":
				// Pending specs never run and are not part of any set.
			default: // failed, timedout, panicked, interrupted, aborted
				f := failedTest{name: name, message: c.Status}
				for _, m := range []*junitMessage{c.Failure, c.Error} {
					if m != nil {
						f.message = c.Status + ": " + firstLine(strings.TrimSpace(m.Message+"\n"+m.Body))
						break
					}
				}
				if isSpec {
					res.failed = append(res.failed, f)
				} else {
					res.setupFailed = append(res.setupFailed, f)
				}
			}
		}
	}
	sort.Strings(res.passed)
	sort.Slice(res.failed, func(i, j int) bool { return res.failed[i].name < res.failed[j].name })
	sort.Slice(res.skipped, func(i, j int) bool { return res.skipped[i].name < res.skipped[j].name })
	return res, nil
}

func parseJUnitFile(path, set string) (result, error) {
	f, err := os.Open(path)
	if err != nil {
		return result{}, err
	}
	defer f.Close()
	res, err := parseJUnit(f, set)
	if err != nil {
		return result{}, fmt.Errorf("%s: %w", path, err)
	}
	return res, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	const max = 300
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}

// total is the number of tests that ran or skipped themselves.
func (r result) total() int { return len(r.passed) + len(r.failed) + len(r.skipped) }

// printSummary writes one line per set, then the failed and skipped tests.
func printSummary(w io.Writer, results []result) {
	fmt.Fprintf(w, "\n%-4s %7s %7s %8s %6s %10s\n", "set", "passed", "failed", "skipped", "total", "duration")
	for _, r := range results {
		fmt.Fprintf(w, "%-4s %7d %7d %8d %6d %10s\n", r.set, len(r.passed), len(r.failed), len(r.skipped), r.total(),
			r.duration.Round(time.Second))
	}
	for _, r := range results {
		for _, f := range r.setupFailed {
			fmt.Fprintf(w, "\nset %s: suite setup FAILED: %s\n    %s\n", r.set, f.name, f.message)
		}
		if len(r.failed) > 0 {
			fmt.Fprintf(w, "\nset %s: %d failed\n", r.set, len(r.failed))
			for _, f := range r.failed {
				fmt.Fprintf(w, "  FAIL %s\n       %s\n", f.name, f.message)
			}
		}
		if len(r.skipped) > 0 {
			fmt.Fprintf(w, "\nset %s: %d skipped at run time\n", r.set, len(r.skipped))
			for _, s := range r.skipped {
				fmt.Fprintf(w, "  SKIP %s\n       %s\n", s.name, s.reason)
			}
		}
	}
}
