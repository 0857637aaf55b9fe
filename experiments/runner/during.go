package runner

import (
	"context"
	"fmt"
	"time"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/verify"
)

// DuringSample is one sample of a during probe.
type DuringSample struct {
	// At is when it was taken, from the start of the run.
	At    time.Duration `json:"at_ns"`
	Value any           `json:"value"`
	Pass  bool          `json:"pass"`
	// Why says how the value compares with what is expected, or why the
	// query failed.
	Why string `json:"why"`
	// Step is the step it followed, with while: steps.
	Step string `json:"step,omitempty"`
}

// DuringResult is every sample of one during probe.
type DuringResult struct {
	Name    string         `json:"name"`
	While   string         `json:"while"`
	Must    string         `json:"must"`
	Samples []DuringSample `json:"samples"`
}

// watch samples the method and fault probes until ctx ends (the method
// does); steps probes are sampled by the method after each step.
func (r *run) watch(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	var probes []int
	for i, p := range r.exp.During {
		if p.While != experiments.WhileSteps {
			probes = append(probes, i)
		}
	}
	if len(probes) == 0 {
		return
	}
	next := make([]time.Time, len(r.exp.During))
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		now := time.Now()
		for _, i := range probes {
			p := r.exp.During[i]
			if now.Before(next[i]) {
				continue
			}
			if p.While == experiments.WhileFault && !r.faultInPlace() {
				continue
			}
			next[i] = now.Add(time.Duration(p.Every))
			r.sample(ctx, i, "")
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (r *run) faultInPlace() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.windows) > 0
}

// sampleSteps samples the steps probes once, after step.
func (r *run) sampleSteps(ctx context.Context, step string) {
	for i, p := range r.exp.During {
		if p.While == experiments.WhileSteps {
			r.sample(ctx, i, step)
		}
	}
}

// sample queries probe i on the verify DSN, straight to the server as a
// verifier does (not through a fault), and records what it found.
func (r *run) sample(ctx context.Context, i int, step string) {
	p := r.exp.During[i]
	at := time.Since(r.started)
	value, err := queryText(ctx, r.env.verifyDSN, p.SQL)
	if ctx.Err() != nil {
		return // cut short as the method ended: not a sample
	}
	s := DuringSample{At: at, Value: shownValue(value), Step: step}
	if err != nil {
		s.Why = err.Error()
	} else {
		s.Pass, s.Why = verify.Meets(p.Expect, value, p.Tolerance)
	}
	r.mu.Lock()
	r.during[i].Samples = append(r.during[i].Samples, s)
	r.mu.Unlock()
}

// duringVerdicts judge each during probe's samples.
func (r *run) duringVerdicts() []verify.Verdict {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []verify.Verdict
	for i, p := range r.exp.During {
		res := r.during[i]
		r.res.During = append(r.res.During, res)
		v := verify.Verdict{Name: "during " + p.Name, Type: "during", Evidence: map[string]any{"sql": p.SQL, "while": p.While, "must": p.Must}}
		met := 0
		var firstMiss, firstMet *DuringSample
		for j := range res.Samples {
			s := &res.Samples[j]
			if s.Pass {
				met++
				if firstMet == nil {
					firstMet = s
				}
			} else if firstMiss == nil {
				firstMiss = s
			}
		}
		n := len(res.Samples)
		v.Evidence["samples"], v.Evidence["met"] = n, met
		switch {
		case n == 0:
			v.Summary = fmt.Sprintf("FAIL: never sampled (while: %s)", p.While)
			if p.While == experiments.WhileFault {
				v.Summary += ": no fault was in place during the method"
			}
		case p.Must == experiments.MustOnce && firstMet == nil:
			v.Summary = fmt.Sprintf("FAIL: not seen in %d samples, want once; last: %s", n, res.Samples[n-1].Why)
		case p.Must == experiments.MustOnce:
			v.Pass = true
			v.Summary = fmt.Sprintf("ok: seen at %s (%d of %d samples): %s", firstMet.At.Round(100*time.Millisecond), met, n, firstMet.Why)
		case firstMiss != nil:
			v.Summary = fmt.Sprintf("FAIL: %d of %d samples met it; first miss at %s: %s", met, n, firstMiss.At.Round(100*time.Millisecond), firstMiss.Why)
		default:
			v.Pass = true
			v.Summary = fmt.Sprintf("ok: all %d samples: %s", n, res.Samples[n-1].Why)
		}
		out = append(out, v)
	}
	return out
}
