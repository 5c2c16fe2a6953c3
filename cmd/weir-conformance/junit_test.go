package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// A report in the shape ginkgo v2.32 writes: suite nodes, a passed, a
// failed, a timed-out and a self-skipped spec, and specs the filter left out.
const sampleJUnit = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="7" disabled="3" errors="0" failures="2" time="120.5">
  <testsuite name="Kubernetes e2e suite" package="/e2e" tests="7" disabled="0" skipped="3" errors="0" failures="2" time="120.5">
    <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="1.2"></testcase>
    <testcase name="[It] [sig-network] Services should serve a basic endpoint from pods [Conformance]" classname="Kubernetes e2e suite" status="passed" time="10.1"></testcase>
    <testcase name="[It] [sig-network] Proxy version v1 should proxy through a service and a pod [Conformance]" classname="Kubernetes e2e suite" status="failed" time="30">
      <failure message="Told to stop trying after 30s.&#xA;more detail" type="failed">[FAILED] Told to stop trying</failure>
    </testcase>
    <testcase name="[It] [sig-network] DNS should provide DNS for services [Conformance]" classname="Kubernetes e2e suite" status="timedout" time="60">
      <failure message="" type="timedout">[TIMEDOUT] A suite timeout occurred&#xA;second line</failure>
    </testcase>
    <testcase name="[It] [sig-network] Services should work with IPv6 [Conformance]" classname="Kubernetes e2e suite" status="skipped" time="0.1">
      <skipped message="skipped - Only supported for IPv6 clusters"></skipped>
    </testcase>
    <testcase name="[It] [sig-storage] CSI mock volume should not run" classname="Kubernetes e2e suite" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
    <testcase name="[It] [sig-network] Pending test" classname="Kubernetes e2e suite" status="pending" time="0">
      <skipped message="pending"></skipped>
    </testcase>
    <testcase name="[SynchronizedAfterSuite]" classname="Kubernetes e2e suite" status="failed" time="0.5">
      <failure message="cleanup failed" type="failed"></failure>
    </testcase>
  </testsuite>
</testsuites>`

func TestParseJUnit(t *testing.T) {
	r, err := parseJUnit(strings.NewReader(sampleJUnit), "a")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.passed; len(got) != 1 || got[0] != "[sig-network] Services should serve a basic endpoint from pods [Conformance]" {
		t.Errorf("passed = %q", got)
	}
	wantFailed := []failedTest{
		{"[sig-network] DNS should provide DNS for services [Conformance]", "timedout: [TIMEDOUT] A suite timeout occurred"},
		{"[sig-network] Proxy version v1 should proxy through a service and a pod [Conformance]", "failed: Told to stop trying after 30s."},
	}
	if len(r.failed) != len(wantFailed) {
		t.Fatalf("failed = %+v, want %+v", r.failed, wantFailed)
	}
	for i := range wantFailed {
		if r.failed[i] != wantFailed[i] {
			t.Errorf("failed[%d] = %+v, want %+v", i, r.failed[i], wantFailed[i])
		}
	}
	if len(r.skipped) != 1 || r.skipped[0].reason != "Only supported for IPv6 clusters" {
		t.Errorf("skipped = %+v, want only the self-skipped IPv6 test", r.skipped)
	}
	if len(r.setupFailed) != 1 || r.setupFailed[0].name != "[SynchronizedAfterSuite]" {
		t.Errorf("setupFailed = %+v", r.setupFailed)
	}
	if r.total() != 4 {
		t.Errorf("total = %d, want 4 (1 passed, 2 failed, 1 skipped)", r.total())
	}
	if r.duration != 120500*time.Millisecond {
		t.Errorf("duration = %v", r.duration)
	}

	var out bytes.Buffer
	printSummary(&out, []result{r})
	for _, want := range []string{"a          1       2        1      4", "FAIL [sig-network] Proxy version v1", "SKIP [sig-network] Services should work with IPv6", "suite setup FAILED: [SynchronizedAfterSuite]"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestParseJUnitInvalid(t *testing.T) {
	if _, err := parseJUnit(strings.NewReader("<testsuites><testsuite"), "a"); err == nil {
		t.Error("truncated XML parsed without error")
	}
}
