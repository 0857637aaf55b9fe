package main

// The sparse-rule measurement: what a rule that fires on a small share of
// the traffic costs the rest of it. A verdict moves a session from its
// event loop to goroutine pumps; the proxy's CPU per transaction stays
// close to no rules only if the session comes back once the verdict is
// carried out.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"
)

const (
	sparseRuleName = "bench-sparse-delay"
	// sparseProbability is the share of pgbench's SELECTs the rule fires on.
	sparseProbability = 0.001
	// sparseTarget is the most the rule may add to the proxy's CPU per
	// transaction, as a fraction of no rules.
	sparseTarget = 0.05
)

// sparseRule delays 0.1% of pgbench -S's SELECTs by 1 ms.
var sparseRule = fmt.Sprintf(`{"name": %q, "match": {"sql": "pgbench_accounts"}, "action": {"type": "delay", "delay": "1ms"}, "limits": {"probability": %g}}`,
	sparseRuleName, sparseProbability)

type sparseOverhead struct {
	Rule        string    `json:"rule"`
	Probability float64   `json:"probability"`
	TargetExtra float64   `json:"target_extra_fraction"`
	Without     *proxyCPU `json:"proxy_cpu_without_rules"`
	With        *proxyCPU `json:"proxy_cpu_with_rule"`
	// Fired and Transactions are summed over the runs with the rule.
	Fired        int64 `json:"fired"`
	Transactions int64 `json:"transactions"`
	// OnGoroutines is the most sessions seen on goroutine pumps in a
	// sample taken half-way through each run with the rule.
	OnGoroutines int     `json:"max_sessions_on_goroutine_pumps"`
	Sessions     int     `json:"sessions_sampled"`
	Extra        float64 `json:"extra_fraction"`
	MeetsTarget  bool    `json:"meets_target"`
}

func newSparseOverhead(rounds int) *sparseOverhead {
	return &sparseOverhead{
		Rule: sparseRule, Probability: sparseProbability, TargetExtra: sparseTarget,
		Without: &proxyCPU{Target: "pgchaos, no rules", RoundMicros: make([]*float64, rounds), RoundTPS: make([]*float64, rounds)},
		With:    &proxyCPU{Target: "pgchaos, 0.1% rule", RoundMicros: make([]*float64, rounds), RoundTPS: make([]*float64, rounds)},
	}
}

// round measures proxy CPU at the fixed rate without the rule, then with
// it, back to back.
func (so *sparseOverhead) round(ctx context.Context, r int, cfg config, bench *pgbench, t target, api rulesAPI, fail func(string, error) bool) (stop bool) {
	prefix := fmt.Sprintf("round %d/%d sparse-rule phase", r+1, cfg.rounds)
	base, baseOut, err := measureCPU(ctx, bench, t, cfg)
	if err != nil {
		return fail(prefix+" no rules", err)
	}
	so.Without.RoundMicros[r], so.Without.RoundTPS[r] = &base, &baseOut.tps
	progress("%s cpu at %d tps pgchaos no rules: %.1f µs/txn", prefix, cfg.rate, base)

	if err := api.add(ctx, sparseRule); err != nil {
		return fail(prefix+" adding the rule", err)
	}
	sample := make(chan [2]int, 1)
	go func() {
		select {
		case <-time.After(cfg.duration / 2):
			onGoroutines, n, _ := api.relays(ctx)
			sample <- [2]int{onGoroutines, n}
		case <-ctx.Done():
			sample <- [2]int{}
		}
	}()
	us, out, err := measureCPU(ctx, bench, t, cfg)
	s := <-sample
	st, gerr := api.get(ctx, sparseRuleName)
	rerr := api.remove(ctx, sparseRuleName)
	if err != nil {
		return fail(prefix+" 0.1% rule", err)
	}
	if gerr != nil || rerr != nil {
		return fail(prefix+" reading the rule", fmt.Errorf("%v %v", gerr, rerr))
	}
	// The rule must have fired on about 0.1% of the transactions, or the
	// measurement is of something else.
	if share := float64(st.Fired) / float64(max(out.txns, 1)); share < sparseProbability/4 || share > sparseProbability*4 {
		return fail(prefix, fmt.Errorf("the rule fired %d times in %d transactions (%.3f%%); want about %.1f%%", st.Fired, out.txns, 100*share, 100*sparseProbability))
	}
	so.With.RoundMicros[r], so.With.RoundTPS[r] = &us, &out.tps
	so.Fired += st.Fired
	so.Transactions += int64(out.txns)
	so.OnGoroutines = max(so.OnGoroutines, s[0])
	so.Sessions = max(so.Sessions, s[1])
	progress("%s cpu at %d tps pgchaos 0.1%% rule: %.1f µs/txn (fired %d times; %d of %d sessions on goroutine pumps half-way)", prefix, cfg.rate, us, st.Fired, s[0], s[1])
	return false
}

func (so *sparseOverhead) summarise(rate int) {
	so.Without.summarise(rate)
	so.With.summarise(rate)
	if so.Without.MedianMicros > 0 {
		so.Extra = so.With.MedianMicros/so.Without.MedianMicros - 1
		so.MeetsTarget = so.Extra <= sparseTarget
	}
}

func printSparseOverhead(w io.Writer, cfg config, so *sparseOverhead) {
	fmt.Fprintf(w, "\nA rule that fires on %.1f%% of statements (a 1 ms delay): proxy CPU at -R %d, %d clients, %d round(s) × %ds\n",
		100*sparseProbability, cfg.rate, rateClients, cfg.rounds, seconds(cfg.duration))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rules\tµs/txn\tmin..max\tachieved tps\t")
	for _, pc := range []*proxyCPU{so.Without, so.With} {
		spread := "-"
		if pc.MedianMicros > 0 {
			spread = fmt.Sprintf("%.1f..%.1f", pc.MinMicros, pc.MaxMicros)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", pc.Target, fmtNum(pc.MedianMicros, "%.1f"), spread, fmtNum(pc.MedianTPS, "%.0f"))
	}
	tw.Flush()
	fmt.Fprintf(w, "fired %d times in %d transactions; at most %d of %d sessions on goroutine pumps half-way through a run\n",
		so.Fired, so.Transactions, so.OnGoroutines, so.Sessions)
	if so.Without.MedianMicros > 0 {
		fmt.Fprintf(w, "proxy CPU with the rule: %+.1f%%: %s\n", 100*so.Extra, verdict(so.MeetsTarget, fmt.Sprintf("target ≤ +%.0f%%", 100*sparseTarget)))
	}
}

// relays counts the sessions on goroutine pumps, and all sessions.
func (a rulesAPI) relays(ctx context.Context) (onGoroutines, all int, err error) {
	var list []struct {
		Relay string `json:"relay"`
	}
	if err := a.do(ctx, http.MethodGet, "/sessions", nil, http.StatusOK, &list); err != nil {
		return 0, 0, err
	}
	for _, s := range list {
		if s.Relay == "goroutine" {
			onGoroutines++
		}
	}
	return onGoroutines, len(list), nil
}
