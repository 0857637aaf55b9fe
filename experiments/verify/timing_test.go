package verify_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
	"github.com/pgchaos/pgchaos/experiments/verify"
)

func TestRecoveryTime(t *testing.T) {
	max := experiments.Duration(10 * time.Second)
	cases := []struct {
		name      string
		took      time.Duration
		recovered bool
		pass      bool
	}{
		{"quick", 3 * time.Second, true, true},
		{"just in time", 10 * time.Second, true, true},
		{"slow", 12 * time.Second, true, false},
		{"never", 60 * time.Second, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := check(t, &experiments.RecoveryTime{Max: max}, verify.Run{RecoveryTime: tc.took, Recovered: tc.recovered})
			wantPass(t, v, tc.pass)
			wantEvidence(t, v, "recovery_time", tc.took.String())
		})
	}
}

// faulty is a workload that ran for 30s with a fault from 10s to 20s:
// every op is ok and fast outside the fault; inside it, half fail and the
// ok ones are slow.
func faulty() verify.Run {
	var ops []op
	for i := range 300 {
		at := time.Duration(i) * 100 * time.Millisecond
		o := op{workload: "w", key: "k", outcome: history.OK, at: at, took: 5 * time.Millisecond}
		if at >= 10*time.Second && at < 20*time.Second {
			o.took = 250 * time.Millisecond
			if i%2 == 0 {
				o.outcome, o.took = history.Fail, time.Millisecond
			}
			if i%10 == 1 {
				o.outcome = history.Unknown
			}
		}
		ops = append(ops, o)
	}
	return verify.Run{
		History:      hist(ops...),
		RunWindow:    verify.Window{Start: t0, End: t0.Add(30 * time.Second)},
		FaultWindows: []verify.Window{{Start: t0.Add(10 * time.Second), End: t0.Add(20 * time.Second)}},
	}
}

func TestAvailability(t *testing.T) {
	noFault := faulty()
	noFault.FaultWindows = nil
	cases := []struct {
		name     string
		check    experiments.Availability
		run      verify.Run
		pass     bool
		evidence map[string]any
	}{
		{"fault window", experiments.Availability{MinOKRatio: 0.4}, faulty(), true,
			map[string]any{"operations": 100, "ok": 40, "fail": 50, "unknown": 10, "window": "fault"}},
		{"low availability", experiments.Availability{MinOKRatio: 0.9}, faulty(), false,
			map[string]any{"ok_ratio": 0.4}},
		{"whole run", experiments.Availability{MinOKRatio: 0.79, Window: experiments.WindowRun}, faulty(), true,
			map[string]any{"operations": 300, "ok": 240}},
		{"no fault window falls back to the run", experiments.Availability{MinOKRatio: 0.9, Window: experiments.WindowFault}, noFault, false,
			map[string]any{"operations": 300, "window": "run", "window_asked": "fault"}},
		{"another workload", experiments.Availability{Workload: "other", MinOKRatio: 0}, faulty(), false,
			map[string]any{"operations": 0}},
		{"no history", experiments.Availability{MinOKRatio: 0}, verify.Run{}, false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.check
			if c.Workload == "" {
				c.Workload = "w"
			}
			v := check(t, &c, tc.run)
			wantPass(t, v, tc.pass)
			for k, want := range tc.evidence {
				wantEvidence(t, v, k, want)
			}
		})
	}
}

func TestLatency(t *testing.T) {
	p99 := func(d time.Duration) experiments.Duration { return experiments.Duration(d) }
	cases := []struct {
		name     string
		check    experiments.Latency
		pass     bool
		evidence map[string]any
	}{
		{"high p99 in the fault", experiments.Latency{P99Max: p99(100 * time.Millisecond)}, false,
			map[string]any{"operations": 40, "p99": "250ms", "max": "250ms"}},
		{"p99 within bounds", experiments.Latency{P99Max: p99(300 * time.Millisecond)}, true, nil},
		// 40 slow of 240 ok: p99 over the run is still slow, p50 fast.
		{"whole run", experiments.Latency{P99Max: p99(100 * time.Millisecond), Window: experiments.WindowRun}, false,
			map[string]any{"operations": 240, "p50": "5ms", "p99": "250ms"}},
		{"nothing ok", experiments.Latency{Workload: "other", P99Max: p99(time.Second)}, false, nil},
		// The fault's ok operations all took 250ms: its median is that.
		{"slowed by the fault", experiments.Latency{P50Min: p99(200 * time.Millisecond)}, true,
			map[string]any{"p50": "250ms", "p50_min": "200ms"}},
		{"p50 just at the floor", experiments.Latency{P50Min: p99(250 * time.Millisecond)}, true, nil},
		{"not slowed enough", experiments.Latency{P50Min: p99(251 * time.Millisecond)}, false, nil},
		{"not slowed over the run", experiments.Latency{P50Min: p99(100 * time.Millisecond), Window: experiments.WindowRun}, false,
			map[string]any{"p50": "5ms"}},
		{"both bounds hold", experiments.Latency{P99Max: p99(300 * time.Millisecond), P50Min: p99(200 * time.Millisecond)}, true, nil},
		{"the upper bound fails", experiments.Latency{P99Max: p99(249 * time.Millisecond), P50Min: p99(200 * time.Millisecond)}, false, nil},
		{"the lower bound fails", experiments.Latency{P99Max: p99(300 * time.Millisecond), P50Min: p99(300 * time.Millisecond)}, false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.check
			if c.Workload == "" {
				c.Workload = "w"
			}
			v := check(t, &c, faulty())
			wantPass(t, v, tc.pass)
			for k, want := range tc.evidence {
				wantEvidence(t, v, k, want)
			}
			// A bound not given is neither evidence nor in the summary.
			for key, bound := range map[string]experiments.Duration{"p99_max": c.P99Max, "p50_min": c.P50Min} {
				if _, ok := v.Evidence[key]; ok != (bound > 0) {
					t.Errorf("%s given %v, in the evidence %v", key, bound > 0, ok)
				}
			}
			if c.P50Min == 0 && strings.Contains(v.Summary, "at least") || c.P99Max == 0 && strings.Contains(v.Summary, "at most") {
				t.Errorf("summary %q judges a bound that was not given", v.Summary)
			}
		})
	}

	// Nearest rank: of 100 ops one slow outlier is the 100th percentile,
	// not the 99th.
	var ops []op
	for i := range 100 {
		took := time.Duration(i+1) * time.Millisecond
		ops = append(ops, op{workload: "w", outcome: history.OK, at: time.Duration(i) * time.Millisecond, took: took})
	}
	v := check(t, &experiments.Latency{Workload: "w", P99Max: p99(99 * time.Millisecond), Window: experiments.WindowRun}, verify.Run{History: hist(ops...)})
	wantPass(t, v, true)
	wantEvidence(t, v, "p99", "99ms")
	wantEvidence(t, v, "max", "100ms")
	// The evidence names the five slowest, slowest first; or all, when
	// fewer succeeded.
	slowest := func(v verify.Verdict) []string {
		var ops []struct{ Latency string }
		b, _ := json.Marshal(v.Evidence["slowest"])
		if err := json.Unmarshal(b, &ops); err != nil {
			t.Fatalf("slowest: %v", err)
		}
		var got []string
		for _, op := range ops {
			got = append(got, op.Latency)
		}
		return got
	}
	if got := slowest(v); fmt.Sprint(got) != "[100ms 99ms 98ms 97ms 96ms]" {
		t.Errorf("slowest %v, want the five slowest, slowest first", got)
	}
	v = check(t, &experiments.Latency{Workload: "w", P99Max: p99(time.Second), Window: experiments.WindowRun}, verify.Run{History: hist(ops[:3]...)})
	if got := slowest(v); fmt.Sprint(got) != "[3ms 2ms 1ms]" {
		t.Errorf("slowest of three %v, want all three", got)
	}
}

// errorRun has, in a fault window from 10s to 20s, an op that succeeded
// after two serialization failures, one that failed with 40001, one
// unknown, one that failed with 23505 and one plain success; and outside
// it, one that failed with 40001.
func errorRun() verify.Run {
	h := &history.History{}
	add := func(at time.Duration, w string, outcome history.Outcome, state string, retried ...string) {
		h.Add(history.Op{Workload: w, Kind: "transfer", Start: t0.Add(at), End: t0.Add(at + time.Millisecond),
			Outcome: outcome, SQLState: state, Retried: retried})
	}
	add(11*time.Second, "w", history.OK, "", "40001", "40001")
	add(12*time.Second, "w", history.Fail, "40001")
	add(13*time.Second, "w", history.Unknown, "")
	add(14*time.Second, "w", history.Fail, "23505")
	add(15*time.Second, "w", history.OK, "")
	add(15*time.Second, "other", history.Fail, "40001", "40001")
	add(25*time.Second, "w", history.Fail, "40001")
	return verify.Run{
		History:      h,
		RunWindow:    verify.Window{Start: t0, End: t0.Add(30 * time.Second)},
		FaultWindows: []verify.Window{{Start: t0.Add(10 * time.Second), End: t0.Add(20 * time.Second)}},
	}
}

func TestErrorCount(t *testing.T) {
	n := func(i int) *int { return &i }
	cases := []struct {
		name     string
		check    experiments.ErrorCount
		pass     bool
		evidence map[string]any
	}{
		{"any error", experiments.ErrorCount{Min: 1}, true,
			map[string]any{"errors": 5, "retried": 2, "failed_or_unknown": 3, "operations": 5, "window": "fault",
				"by_sqlstate": map[string]int{"40001": 3, "23505": 1, "none": 1}}},
		{"just enough", experiments.ErrorCount{Min: 5}, true, nil},
		{"too few", experiments.ErrorCount{Min: 6}, false, map[string]any{"errors": 5}},
		{"one SQLSTATE", experiments.ErrorCount{SQLState: "40001", Min: 3}, true,
			map[string]any{"errors": 3, "retried": 2, "failed_or_unknown": 1, "sqlstate": "40001"}},
		{"one SQLSTATE, too few", experiments.ErrorCount{SQLState: "40001", Min: 4}, false, nil},
		{"a SQLSTATE never seen", experiments.ErrorCount{SQLState: "40P01", Min: 1}, false, map[string]any{"errors": 0}},
		{"at most", experiments.ErrorCount{SQLState: "40001", Max: n(3)}, true, map[string]any{"max": 3}},
		{"more than the most", experiments.ErrorCount{SQLState: "40001", Max: n(2)}, false, nil},
		{"whole run", experiments.ErrorCount{SQLState: "40001", Min: 4, Max: n(4), Window: experiments.WindowRun}, true,
			map[string]any{"errors": 4, "operations": 6, "window": "run"}},
		{"none wanted", experiments.ErrorCount{Workload: "none", Max: n(0)}, true, map[string]any{"errors": 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.check
			if c.Workload == "" {
				c.Workload = "w"
			}
			v := check(t, &c, errorRun())
			wantPass(t, v, tc.pass)
			for k, want := range tc.evidence {
				wantEvidence(t, v, k, want)
			}
		})
	}
}

func TestFaultFired(t *testing.T) {
	fired := map[string]int64{"cut": 3, "once": 1, "slow": 0}
	cases := []struct {
		rule    string
		min     int
		pass    bool
		summary string
	}{
		{"cut", 1, true, `rule "cut" fired 3 times (min 1)`},
		{"cut", 3, true, ""},
		{"cut", 4, false, `rule "cut" fired 3 times, want at least 4`},
		{"cut", 0, true, ""},
		{"once", 1, true, `rule "once" fired 1 time (min 1)`},
		{"once", 2, false, `rule "once" fired 1 time, want at least 2`},
		{"slow", 1, false, "never fired"},
		{"slow", 0, false, "never fired (min 1)"}, // 0 is the default: at least once
		{"never-injected", 1, false, "never fired"},
	}
	for _, tc := range cases {
		v := check(t, &experiments.FaultFired{Rule: tc.rule, Min: tc.min}, verify.Run{Fired: fired})
		wantPass(t, v, tc.pass)
		if !strings.Contains(v.Summary, tc.summary) {
			t.Errorf("summary %q lacks %q", v.Summary, tc.summary)
		}
	}
}
