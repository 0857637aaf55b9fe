package verify

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
)

// recoveryTime checks that the steady state held again within Max of the
// faults being removed.
func recoveryTime(c *experiments.RecoveryTime, run Run) Verdict {
	v := newVerdict(c.Type(), "")
	limit := time.Duration(c.Max)
	e := v.Evidence
	e["max"] = dur(limit)
	e["recovered"] = run.Recovered
	e["recovery_time"] = dur(run.RecoveryTime)
	switch {
	case !run.Recovered:
		v.judge(false, "the steady state did not hold again (gave up after %s; max %s)", dur(run.RecoveryTime), dur(limit))
	case run.RecoveryTime > limit:
		v.judge(false, "recovered in %s, more than the %s allowed", dur(run.RecoveryTime), dur(limit))
	default:
		v.judge(true, "recovered in %s (max %s)", dur(run.RecoveryTime), dur(limit))
	}
	return v
}

// window returns the spans a verifier judges: the fault windows, or the
// whole run. Without fault windows (nothing was injected) the fault
// window is the whole run. No spans at all means everything.
func window(name string, run Run) ([]Window, string) {
	if name != experiments.WindowRun && len(run.FaultWindows) > 0 {
		return run.FaultWindows, experiments.WindowFault
	}
	if run.RunWindow.Start.IsZero() && run.RunWindow.End.IsZero() {
		return nil, experiments.WindowRun
	}
	return []Window{run.RunWindow}, experiments.WindowRun
}

// inWindow returns the operations that started in one of the spans.
func inWindow(ops []history.Op, spans []Window) []history.Op {
	if spans == nil {
		return ops
	}
	var out []history.Op
	for _, op := range ops {
		for _, w := range spans {
			if w.Contains(op.Start) {
				out = append(out, op)
				break
			}
		}
	}
	return out
}

func describeWindow(e map[string]any, asked, used string, spans []Window) {
	e["window"] = used
	if asked != "" && asked != used {
		e["window_asked"] = asked
	}
	e["windows"] = bounded(spans)
}

// availability checks the share of a workload's operations that succeeded
// among those that started in the window. Unknown outcomes count against
// it: the client could not tell whether its write happened.
func availability(c *experiments.Availability, run Run) Verdict {
	v := newVerdict(c.Type(), c.Workload)
	spans, used := window(c.Window, run)
	e := v.Evidence
	describeWindow(e, c.Window, used, spans)
	ops := inWindow(opsOf(run.History, c.Workload), spans)
	counts := history.Counts(ops)
	e["operations"] = len(ops)
	e["ok"] = counts[history.OK]
	e["fail"] = counts[history.Fail]
	e["unknown"] = counts[history.Unknown]
	e["min_ok_ratio"] = c.MinOKRatio
	if len(ops) == 0 {
		v.judge(false, "workload %q started no operations in the %s window: nothing to judge", c.Workload, used)
		return v
	}
	ratio := float64(counts[history.OK]) / float64(len(ops))
	e["ok_ratio"] = ratio
	v.judge(ratio >= c.MinOKRatio, "%d of %d operations ok in the %s window (%.4g), want at least %.4g; %d failed, %d unknown",
		counts[history.OK], len(ops), used, ratio, c.MinOKRatio, counts[history.Fail], counts[history.Unknown])
	return v
}

// slowOp is an operation in a latency verdict's evidence.
type slowOp struct {
	Client  int       `json:"client"`
	Seq     int64     `json:"seq"`
	Kind    string    `json:"kind"`
	Start   time.Time `json:"start"`
	Latency string    `json:"latency"`
}

// latency checks the latency of the operations that succeeded and started
// in the window: the 99th percentile (nearest rank) at most P99Max, the
// median at least P50Min — the fault did slow the workload. Failed
// operations are left out: a fast error is not service.
func latency(c *experiments.Latency, run Run) Verdict {
	v := newVerdict(c.Type(), c.Workload)
	limit, floor := time.Duration(c.P99Max), time.Duration(c.P50Min)
	spans, used := window(c.Window, run)
	e := v.Evidence
	describeWindow(e, c.Window, used, spans)
	if limit > 0 {
		e["p99_max"] = dur(limit)
	}
	if floor > 0 {
		e["p50_min"] = dur(floor)
	}
	var ok []history.Op
	for _, op := range inWindow(opsOf(run.History, c.Workload), spans) {
		if op.Outcome == history.OK {
			ok = append(ok, op)
		}
	}
	e["operations"] = len(ok)
	if len(ok) == 0 {
		v.judge(false, "workload %q has no successful operation in the %s window: no latency to judge", c.Workload, used)
		return v
	}
	slices.SortStableFunc(ok, func(a, b history.Op) int { return cmp.Compare(a.Latency, b.Latency) })
	pct := func(p float64) time.Duration {
		rank := int(math.Ceil(float64(len(ok))*p)) - 1
		return ok[max(rank, 0)].Latency
	}
	p50, p99, slowest := pct(0.50), pct(0.99), ok[len(ok)-1].Latency
	e["p50"] = dur(p50)
	e["p99"] = dur(p99)
	e["max"] = dur(slowest)
	var slow []slowOp
	for i := len(ok) - 1; i >= 0 && i >= len(ok)-5; i-- {
		op := ok[i]
		slow = append(slow, slowOp{Client: op.Client, Seq: op.Seq, Kind: op.Kind, Start: op.Start, Latency: dur(op.Latency)})
	}
	e["slowest"] = slow
	pass := true
	var bounds []string
	if limit > 0 {
		verb := "at most"
		if p99 > limit {
			verb, pass = "more than", false
		}
		bounds = append(bounds, fmt.Sprintf("p99 %s, %s %s", dur(p99), verb, dur(limit)))
	}
	if floor > 0 {
		verb := "at least"
		if p50 < floor {
			verb, pass = "less than", false
		}
		bounds = append(bounds, fmt.Sprintf("p50 %s, %s %s", dur(p50), verb, dur(floor)))
	}
	rest := fmt.Sprintf("max %s", dur(slowest))
	switch {
	case floor == 0:
		rest = fmt.Sprintf("p50 %s, %s", dur(p50), rest)
	case limit == 0:
		rest = fmt.Sprintf("p99 %s, %s", dur(p99), rest)
	}
	v.judge(pass, "%s over %d ok operations in the %s window (%s)", strings.Join(bounds, "; "), len(ok), used, rest)
	return v
}

// errorCount counts the errors a workload's clients were told among the
// operations that started in the window: each failed or unknown outcome
// and each attempt retried before an outcome, of the SQLSTATE asked for
// (any when none is). A retried serialization failure never shows in the
// outcomes, yet the client saw it: that is how a fault that the workload
// copes with still shows that it reached the workload.
func errorCount(c *experiments.ErrorCount, run Run) Verdict {
	v := newVerdict(c.Type(), c.Workload)
	spans, used := window(c.Window, run)
	e := v.Evidence
	describeWindow(e, c.Window, used, spans)
	ops := inWindow(opsOf(run.History, c.Workload), spans)
	what := "an error"
	if c.SQLState != "" {
		what = "SQLSTATE " + c.SQLState
		e["sqlstate"] = c.SQLState
	}
	var outcomes, retried int
	bySQLState := map[string]int{}
	for _, op := range ops {
		if op.Outcome != history.OK && (c.SQLState == "" || op.SQLState == c.SQLState) {
			outcomes++
			bySQLState[cmp.Or(op.SQLState, "none")]++
		}
		for _, state := range op.Retried {
			if c.SQLState == "" || state == c.SQLState {
				retried++
				bySQLState[cmp.Or(state, "none")]++
			}
		}
	}
	n := outcomes + retried
	e["operations"] = len(ops)
	e["errors"] = n
	e["failed_or_unknown"] = outcomes
	e["retried"] = retried
	e["by_sqlstate"] = bySQLState
	e["min"] = c.Min
	bound := fmt.Sprintf("at least %d", c.Min)
	pass := n >= c.Min
	if c.Max != nil {
		e["max"] = *c.Max
		bound = fmt.Sprintf("between %d and %d", c.Min, *c.Max)
		pass = pass && n <= *c.Max
	}
	v.judge(pass, "the clients of %q were told %s %s in the %s window (%s failed or unknown, %s retried), want %s",
		c.Workload, what, count(n, "time"), used, count(outcomes, "operation"), count(retried, "attempt"), bound)
	return v
}

// faultFired checks that a rule fired at least Min times: a chaos run
// whose fault never fired proves nothing and must not pass silently.
func faultFired(c *experiments.FaultFired, run Run) Verdict {
	v := newVerdict(c.Type(), c.Rule)
	want := int64(c.Min)
	if want <= 0 {
		want = 1
	}
	fired := run.Fired[c.Rule]
	e := v.Evidence
	e["rule"] = c.Rule
	e["fired"] = fired
	e["min"] = want
	switch {
	case fired >= want:
		v.judge(true, "rule %q fired %s (min %d)", c.Rule, count(int(fired), "time"), want)
	case fired == 0:
		v.judge(false, "rule %q never fired (min %d): the run did not test what it meant to", c.Rule, want)
	default:
		v.judge(false, "rule %q fired %s, want at least %d", c.Rule, count(int(fired), "time"), want)
	}
	return v
}
