package runner

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/verify"
)

// verify runs every verifier against the history and the database.
func (r *run) verify(ctx context.Context) {
	facts := verify.Run{
		History:           r.hist,
		VerifyDSN:         r.env.verifyDSN,
		RunWindow:         verify.Window{Start: r.started, End: time.Now()},
		RecoveryTime:      r.res.RecoveryTime,
		Recovered:         r.res.Recovered,
		Fired:             map[string]int64{},
		PgBouncerAdminDSN: r.env.bouncerAdminDSN,
		Workloads:         map[string]experiments.Workload{},
	}
	for _, w := range r.exp.Workloads {
		facts.Workloads[w.Name] = w
	}
	for _, w := range r.res.FaultWindows {
		facts.FaultWindows = append(facts.FaultWindows, verify.Window{Start: w.Start, End: w.End})
		facts.Fired[w.Rule] += w.Fired
	}
	for _, st := range r.res.Steps {
		if st.Phase != "method" {
			continue
		}
		facts.MethodSteps = append(facts.MethodSteps, verify.Step{Name: st.Name, Window: verify.Window{Start: st.Start, End: st.End}})
		if st.Kind == "inject" || st.Kind == "crash" {
			facts.FaultSteps = append(facts.FaultSteps, verify.Step{Name: st.Name, Window: verify.Window{Start: st.Start, End: st.End}})
		}
		// A crash is a fault until recovery begins, as an injected rule
		// without a duration is.
		if st.Kind == "crash" && st.Error == "" {
			facts.FaultWindows = append(facts.FaultWindows, verify.Window{Start: st.Start, End: r.methodEnd})
		}
	}
	if nodes := r.env.nodes(); len(nodes) > 0 {
		facts.Serving, facts.Primary = r.env.serving, r.startServing
		for _, n := range nodes {
			facts.Nodes = append(facts.Nodes, verify.Node{Name: n.name, DSN: n.dsn, Running: n.running(ctx)})
		}
		facts.StartTimeline = r.startTimeline
		r.mu.Lock()
		facts.Promotions = append(facts.Promotions, r.promotions...)
		facts.RestorePoints = maps.Clone(r.points)
		r.mu.Unlock()
	}
	verdicts := r.duringVerdicts()
	if v, ok := r.removedVerdict(); ok {
		verdicts = append(verdicts, v)
	}
	for _, v := range r.exp.Verify {
		start := time.Now()
		verdict := verify.Check(ctx, v, facts)
		verdict.Took = time.Since(start)
		verdicts = append(verdicts, verdict)
	}
	for _, verdict := range verdicts {
		r.res.Verdicts = append(r.res.Verdicts, verdict)
		if !verdict.Pass {
			r.res.Pass = false
			if r.res.Phase == "done" {
				r.res.Phase, r.res.Problem = "verify", verdict.Name+": "+verdict.Summary
			}
		}
		// The summary starts with its status (ok: / FAIL:).
		r.logf("verify %s: %s", verdict.Name, verdict.Summary)
	}
}

// removedVerdict judges that every rule put on a remote instance was
// removed from it: a rule left armed on an instance that still runs goes
// on faulting whoever uses it after the run. None when no rule went to a
// remote instance.
func (r *run) removedVerdict() (verify.Verdict, bool) {
	r.env.mu.Lock()
	touched := slices.Clone(r.env.touched)
	r.env.mu.Unlock()
	r.mu.Lock()
	left := slices.Clone(r.res.LeftArmed)
	r.leftJudged = len(left)
	r.mu.Unlock()
	if len(touched) == 0 && len(left) == 0 {
		return verify.Verdict{}, false
	}
	v := verify.Verdict{Name: "faults_removed", Type: "faults_removed", Pass: len(left) == 0,
		Evidence: map[string]any{"instances": touched}}
	if v.Pass {
		v.Summary = fmt.Sprintf("ok: every injected rule was removed from each instance it was put on (%d: %s)", len(touched), strings.Join(touched, ", "))
		return v, true
	}
	var parts []string
	for _, l := range left {
		parts = append(parts, l.String())
	}
	v.Evidence["left_armed"] = left
	v.Summary = fmt.Sprintf("FAIL: %d removal(s) did not reach their instance: %s", len(left), strings.Join(parts, "; "))
	return v, true
}
