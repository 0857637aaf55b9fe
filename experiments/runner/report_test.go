package runner_test

import (
	"encoding/xml"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/experiments/runner"
	"github.com/pgchaos/pgchaos/experiments/verify"
)

// junitSuite is the one test suite of a run's JUnit report, as read back.
type junitSuite struct {
	Tests      int    `xml:"tests,attr"`
	Failures   int    `xml:"failures,attr"`
	Hostname   string `xml:"hostname,attr"`
	Properties []struct {
		Name  string `xml:"name,attr"`
		Value string `xml:"value,attr"`
	} `xml:"properties>property"`
	Cases []struct {
		Class   string `xml:"classname,attr"`
		Name    string `xml:"name,attr"`
		Time    string `xml:"time,attr"`
		Failure *struct {
			Message string `xml:"message,attr"`
			Text    string `xml:",chardata"`
		} `xml:"failure"`
	} `xml:"testcase"`
}

// junitOf renders a run's JUnit report and reads it back.
func junitOf(t *testing.T, res *runner.Result) junitSuite {
	t.Helper()
	data, err := runner.JUnit(res)
	if err != nil {
		t.Fatal(err)
	}
	var suites struct {
		Suites []junitSuite `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &suites); err != nil || len(suites.Suites) != 1 {
		t.Fatalf("JUnit: %v\n%s", err, data)
	}
	return suites.Suites[0]
}

// The reports of a run that failed in several places: JUnit has a case for
// each probe, failed step, recovery, verifier and rollback, and counts the
// failures; the Markdown summary names the phase that failed and lists
// the method's steps and the faults.
func TestReports(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	res := &runner.Result{
		Experiment: "x", Source: "x.yaml", Seed: 42, Hostname: "ci-7", Phase: "recovery", Problem: "the steady state did not hold again within 1s",
		Started: t0, Ended: t0.Add(20 * time.Second),
		Probes: []runner.ProbeResult{
			{Phase: "before", Name: "p1", Pass: true, Value: 1},
			{Phase: "after", Name: "p1", Pass: false, Value: 7, Error: "too many"},
		},
		Steps: []runner.StepResult{
			{Phase: "method", Name: "cut", Kind: "inject", Start: t0.Add(2 * time.Second), End: t0.Add(2*time.Second + 5*time.Millisecond)},
			{Phase: "method", Name: "kill", Kind: "crash", Start: t0.Add(3 * time.Second), End: t0.Add(4 * time.Second), Error: "boom | bang"},
		},
		FaultWindows: []runner.FaultWindow{{Rule: "cut", Start: t0.Add(2 * time.Second), End: t0.Add(12 * time.Second), Fired: 3}},
		RecoveryTime: time.Second,
		Verdicts: []verify.Verdict{
			{Name: "durability(l)", Type: "durability", Pass: true, Summary: "ok: fine"},
			{Name: "rpo(l)", Type: "rpo", Pass: false, Summary: "FAIL: 2 lost | badly", Evidence: map[string]any{"lost": 2}},
		},
		Rollbacks:  []runner.StepResult{{Phase: "rollbacks", Name: "undo", Start: t0, End: t0.Add(time.Second), Error: "no"}},
		Operations: map[string]int{"ok": 10, "fail": 2, "unknown": 1},
	}
	s := junitOf(t, res)
	if fmt.Sprint(s.Properties) != "[{seed 42} {file x.yaml}]" || s.Hostname != "ci-7" {
		t.Errorf("properties %v, hostname %q: want the seed and the file, and the run's host", s.Properties, s.Hostname)
	}
	// probes 2, the failed step 1, recovery 1, verifiers 2, rollback 1.
	if s.Tests != 7 || len(s.Cases) != 7 || s.Failures != 5 {
		t.Fatalf("tests %d, cases %d, failures %d, want 7, 7, 5", s.Tests, len(s.Cases), s.Failures)
	}
	want := []struct{ class, name, time, failure string }{
		{"steady_state.before", "p1", "0.000", ""},
		{"steady_state.after", "p1", "0.000", "probe p1: value 7 too many"},
		{"method", "kill", "1.000", "boom | bang"},
		{"recovery", "steady state holds again", "1.000", "the steady state did not hold again within 1s"},
		{"verify.durability", "durability(l)", "0.000", ""},
		{"verify.rpo", "rpo(l)", "0.000", "FAIL: 2 lost | badly"},
		{"rollbacks", "undo", "1.000", "no"},
	}
	for i, w := range want {
		c := s.Cases[i]
		got := ""
		if c.Failure != nil {
			got = c.Failure.Message
		}
		if c.Class != w.class || c.Name != w.name || c.Time != w.time || got != w.failure {
			t.Errorf("case %d: %s %q %s %q, want %s %q %s %q", i, c.Class, c.Name, c.Time, got, w.class, w.name, w.time, w.failure)
		}
	}
	if f := s.Cases[5].Failure; f == nil || !strings.Contains(f.Text, `"lost": 2`) {
		t.Errorf("the failed verifier's text lacks its evidence: %+v", f)
	}

	md := runner.Markdown(res)
	for _, w := range []string{
		"## pgchaos: x — ❌ failed",
		"**recovery:** the steady state did not hold again within 1s",
		"Ran 20s with seed 42. Operations: 10 ok, 2 failed, 1 unknown.",
		"| steady state (after): p1 | **FAIL** | value 7 too many |",
		"| step: kill | **FAIL** | boom \\| bang |",
		"| rpo(l) | **FAIL** | FAIL: 2 lost \\| badly |",
		"| durability(l) | pass | ok: fine |",
		"| rollback: undo | **FAIL** | no |",
		"| cut | 2s | 5ms | ok |",
		"| kill | 3s | 1s | **FAIL**: boom \\| bang |",
		"| cut | 2s | 12s | 3 |",
	} {
		if !strings.Contains(md, w) {
			t.Errorf("the summary lacks %q:\n%s", w, md)
		}
	}
	if strings.Contains(md, "Recovered in") {
		t.Errorf("a run that did not recover says it did:\n%s", md)
	}
	// Every cell is escaped: a line break in an error stays in its row.
	res.Rollbacks[0].Error = "no\nreally | not"
	if md := runner.Markdown(res); !strings.Contains(md, "| rollback: undo | **FAIL** | no<br>really \\| not |\n") {
		t.Errorf("a two-line error breaks its row:\n%s", md)
	}
	// A setup failure explains itself instead of an empty table.
	setup := &runner.Result{Experiment: "s", Phase: "setup", Problem: "setup step schema: syntax error", SetupFailed: true, Started: t0, Ended: t0}
	if md := runner.Markdown(setup); !strings.Contains(md, "**setup:** setup step schema: syntax error") || !strings.Contains(md, "Nothing was judged: the run stopped before its workloads started") || strings.Contains(md, "| check |") {
		t.Errorf("a setup failure:\n%s", md)
	}
	res.Rollbacks[0].Error = "no"
	res.Recovered, res.Pass, res.Phase, res.Problem = true, true, "done", ""
	if md := runner.Markdown(res); !strings.Contains(md, "✅ passed") || !strings.Contains(md, "Recovered in 1s.") {
		t.Errorf("a passing run:\n%s", md)
	}
}

// The result's counts agree with what the workload was told: operations
// by outcome, per second, and the first of those that did not succeed
// (at most 20) as evidence. setup runs on setup_dsn, the method's sql on
// dsn.
func TestResultCounts(t *testing.T) {
	dsn, setup := newDB(t), newDB(t)
	res := runFile(t, `name: counts
target:
  dsn: ${var:dsn}
  setup_dsn: ${var:setup}
setup:
  - sql: CREATE TABLE made_in_setup (x int)
workloads:
  - name: w
    type: sql
    clients: 1
    rate: 100
    statements:
      - {sql: "SELECT 1"}
      - {sql: "SELECT 1/0"}
method:
  - wait: 1500ms
  - sql: CREATE TABLE made_in_method (x int)
`, map[string]string{"dsn": dsn, "setup": setup})
	ok, fail := res.Operations["ok"], res.Operations["fail"]
	if ok < 20 || fail < 21 {
		t.Fatalf("operations %v: want both kinds, and more than 20 failures", res.Operations)
	}
	var perOK, perFail int
	for _, s := range res.PerSecond {
		perOK += s.OK
		perFail += s.Fail
	}
	if perOK != ok || perFail != fail {
		t.Errorf("per second %d ok, %d failed; operations %v", perOK, perFail, res.Operations)
	}
	if len(res.NotOK) != 20 || res.NotOK[0].SQLState != "22012" {
		t.Errorf("not ok: %d listed, first %+v", len(res.NotOK), res.NotOK[0])
	}
	if n := query[int64](t, setup, "SELECT count(*) FROM pg_tables WHERE tablename = 'made_in_setup'"); n != 1 {
		t.Errorf("setup did not run on setup_dsn")
	}
	if n := query[int64](t, dsn, "SELECT count(*) FROM pg_tables WHERE tablename = 'made_in_method'"); n != 1 {
		t.Errorf("the method's sql did not run on dsn")
	}
}

// An interrupted run's JUnit skips what the interruption cut short rather
// than failing it; totals are on <testsuites> too; every case has the time
// it took; the properties say which pgchaos and which --var values ran.
func TestJUnitOfAnInterruptedRun(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	res := &runner.Result{
		Experiment: "x", Phase: "interrupted", Problem: "context canceled", Interrupted: true,
		Started: t0, Ended: t0.Add(3 * time.Second), Version: "v1.2.3", Vars: map[string]string{"rate": "5"},
		Verdicts: []verify.Verdict{
			{Name: "durability(l)", Type: "durability", Pass: true, Summary: "ok: fine", Took: 42 * time.Millisecond},
			{Name: "rto(l)", Type: "rto", Pass: false, Summary: "FAIL: no write acknowledged after the fault", Took: time.Millisecond},
		},
	}
	data, err := runner.JUnit(res)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Skipped  int `xml:"skipped,attr"`
		Suites   []struct {
			Failures   int `xml:"failures,attr"`
			Skipped    int `xml:"skipped,attr"`
			Properties []struct {
				Name  string `xml:"name,attr"`
				Value string `xml:"value,attr"`
			} `xml:"properties>property"`
			Cases []struct {
				Name    string    `xml:"name,attr"`
				Time    string    `xml:"time,attr"`
				Skipped *struct{} `xml:"skipped"`
				Failure *struct{} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	s := doc.Suites[0]
	if doc.Tests != 3 || doc.Failures != 0 || doc.Skipped != 2 || s.Failures != 0 || s.Skipped != 2 {
		t.Errorf("totals: testsuites %d tests, %d failures, %d skipped; suite %d failures, %d skipped; want 3, 0, 2:\n%s", doc.Tests, doc.Failures, doc.Skipped, s.Failures, s.Skipped, data)
	}
	if got := fmt.Sprint(s.Properties); !strings.Contains(got, "{pgchaos_version v1.2.3}") || !strings.Contains(got, "{var.rate 5}") {
		t.Errorf("properties %s", got)
	}
	for _, c := range s.Cases {
		if c.Name == "durability(l)" && c.Time != "0.042" {
			t.Errorf("durability's case took %s, want 0.042", c.Time)
		}
	}
}
