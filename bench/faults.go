package main

// The two fault-rule measurements: what rules that match nothing cost the
// traffic they are checked against, and how closely a delay rule keeps to
// its delay. Both drive the running pgchaos through its control API, as a
// user would.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/internal/pgtest"
)

const (
	// rulesClients is the pgbench client count of the rules measurement.
	rulesClients = 16
	// rulesTargetRatio is the with/without TPS ratio the rules engine aims
	// for with rules that match none of the traffic.
	rulesTargetRatio = 0.95
	// delayTolerance is how far the p99 of a delay may be from the
	// configured delay.
	delayTolerance = time.Millisecond
	// delayWarmup is the number of unrecorded query pairs before each
	// delay's samples: connection setup and first-query costs stay out.
	delayWarmup = 10
	// delaySQL is the delayed query; baselineSQL is its undelayed twin.
	delaySQL    = "SELECT /*delay*/ 1"
	baselineSQL = "SELECT 1"
	// delayPattern is the delay rule's match.sql: it matches delaySQL and
	// not baselineSQL.
	delayPattern = `^SELECT /\*delay\*/`
)

// delays are the delays whose accuracy is measured.
var delays = []time.Duration{10 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond}

// idleRules are rules that pgbench -S never sets off, in the control API's
// JSON. Together they exercise every kind of matcher: SQL patterns on
// tables and statements pgbench -S does not run, command tags it never
// gets, statement classes it does send but with session attributes (user,
// database, application_name, client address) that do not hold, and
// connect events for users that do not exist.
//
// pgbench does read pgbench_branches (it counts the rows to learn the
// scale when it starts), so that table is only named with an UPDATE.
var idleRules = []string{
	`{"name": "bench-tellers", "match": {"sql": "pgbench_tellers"}, "action": {"type": "error", "sqlstate": "40001"}}`,
	`{"name": "bench-branches-update", "match": {"sql": "^\\s*UPDATE\\s+pgbench_branches"}, "action": {"type": "error", "sqlstate": "40001"}}`,
	`{"name": "bench-history-insert", "match": {"sql": "INSERT INTO pgbench_history"}, "action": {"type": "delay", "delay": "5ms"}}`,
	`{"name": "bench-audit-delete", "match": {"sql": "DELETE FROM audit"}, "action": {"type": "error", "sqlstate": "42501"}}`,
	`{"name": "bench-audit-insert", "match": {"sql": "^\\s*INSERT\\s+INTO\\s+audit_log\\b"}, "action": {"type": "drop"}}`,
	`{"name": "bench-skip-locked", "match": {"sql": "FOR UPDATE SKIP LOCKED"}, "action": {"type": "delay", "delay": "20ms"}}`,
	`{"name": "bench-advisory-lock", "match": {"sql": "pg_advisory_x?lock"}, "action": {"type": "error", "sqlstate": "55P03"}}`,
	`{"name": "bench-prepare-tag", "match": {"tag": "PREPARE TRANSACTION"}, "action": {"type": "disconnect"}}`,
	`{"name": "bench-commit-prepared-tag", "match": {"tag": "COMMIT PREPARED"}, "action": {"type": "disconnect", "close": "rst"}}`,
	`{"name": "bench-rollback-prepared-tag", "match": {"tag": "ROLLBACK PREPARED"}, "action": {"type": "error", "sqlstate": "40001"}}`,
	`{"name": "bench-truncate-tag", "match": {"tag": "TRUNCATE TABLE"}, "action": {"type": "error", "sqlstate": "57014"}}`,
	`{"name": "bench-update-nobody", "match": {"user": "nobody", "statement": "update"}, "action": {"type": "delay", "delay": "5ms"}}`,
	`{"name": "bench-select-nobody", "match": {"user": "nobody", "statement": "select"}, "action": {"type": "error", "sqlstate": "40001"}}`,
	`{"name": "bench-select-billing-db", "match": {"database": "billing", "statement": "select"}, "action": {"type": "delay", "delay": "50ms"}}`,
	`{"name": "bench-select-billing-app", "match": {"application_name": "^billing$", "statement": "select"}, "action": {"type": "drop"}}`,
	`{"name": "bench-select-10-8", "match": {"client_cidr": "10.0.0.0/8", "statement": "select"}, "action": {"type": "disconnect"}}`,
	`{"name": "bench-commit-nobody", "match": {"user": "nobody", "statement": "commit", "tx_status": "in_transaction"}, "action": {"type": "error", "sqlstate": "40001", "when": "after"}}`,
	`{"name": "bench-prepare-billing-db", "match": {"database": "billing", "statement": "prepare_transaction"}, "action": {"type": "disconnect"}}`,
	`{"name": "bench-connect-ghost", "match": {"event": "connect", "user": "ghost"}, "action": {"type": "refuse", "sqlstate": "53300", "message": "sorry, too many clients already"}}`,
	`{"name": "bench-connect-ghost-reader", "match": {"event": "connect", "user": "ghost_reader"}, "action": {"type": "slow_connect", "delay": "100ms"}}`,
}

// rulesAPI is the part of pgchaos's control API the benchmark uses.
type rulesAPI struct{ base string }

func newRulesAPI(addr string) rulesAPI { return rulesAPI{base: "http://" + addr} }

// ruleStatus is the part of a GET /rules entry the benchmark reads.
type ruleStatus struct {
	Name    string `json:"name"`
	Matched int64  `json:"matched"`
	Fired   int64  `json:"fired"`
}

func (a rulesAPI) do(ctx context.Context, method, path string, body []byte, want int, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
		}
	}
	return nil
}

func (a rulesAPI) add(ctx context.Context, rule string) error {
	return a.do(ctx, http.MethodPost, "/rules", []byte(rule), http.StatusCreated, nil)
}

// load adds every rule, in order; on failure it removes them all again.
func (a rulesAPI) load(ctx context.Context, rules []string) error {
	for _, r := range rules {
		if err := a.add(ctx, r); err != nil {
			return errors.Join(err, a.reset(ctx))
		}
	}
	return nil
}

// reset removes every rule.
func (a rulesAPI) reset(ctx context.Context) error {
	return a.do(ctx, http.MethodDelete, "/rules", nil, http.StatusNoContent, nil)
}

func (a rulesAPI) remove(ctx context.Context, name string) error {
	return a.do(ctx, http.MethodDelete, "/rules/"+url.PathEscape(name), nil, http.StatusNoContent, nil)
}

func (a rulesAPI) list(ctx context.Context) ([]ruleStatus, error) {
	var list []ruleStatus
	err := a.do(ctx, http.MethodGet, "/rules", nil, http.StatusOK, &list)
	return list, err
}

func (a rulesAPI) get(ctx context.Context, name string) (ruleStatus, error) {
	var st ruleStatus
	err := a.do(ctx, http.MethodGet, "/rules/"+url.PathEscape(name), nil, http.StatusOK, &st)
	return st, err
}

// withIdleRules loads idleRules, runs f and removes the rules again,
// whatever f returned. A rule that matched anything is an error: the
// measurement is of rules that match nothing.
func withIdleRules(ctx context.Context, api rulesAPI, f func() error) error {
	if err := api.load(ctx, idleRules); err != nil {
		return fmt.Errorf("loading %d rules: %w", len(idleRules), err)
	}
	err := f()
	list, lerr := api.list(ctx)
	if lerr == nil {
		if len(list) != len(idleRules) {
			err = fmt.Errorf("pgchaos lists %d rules, want %d", len(list), len(idleRules))
		}
		for _, st := range list {
			if st.Matched != 0 || st.Fired != 0 {
				err = errors.Join(err, fmt.Errorf("rule %s matched %d and fired %d times: it should match none of pgbench's traffic", st.Name, st.Matched, st.Fired))
			}
		}
	}
	return errors.Join(err, lerr, api.reset(ctx))
}

// rulesOverhead compares pgchaos with no rules to pgchaos with idleRules.
// Round values are nil where a run failed (--keep-going).
type rulesOverhead struct {
	Rules       int        `json:"rules"`
	Clients     int        `json:"clients"`
	TargetRatio float64    `json:"target_ratio"`
	RoundTPS    []*float64 `json:"round_tps_without_rules"`
	// RoundTPSRules is with the rules loaded, run right after RoundTPS.
	RoundTPSRules   []*float64 `json:"round_tps_with_rules"`
	MedianTPS       float64    `json:"median_tps_without_rules"`
	MedianTPSRules  float64    `json:"median_tps_with_rules"`
	Ratio           float64    `json:"ratio"`
	RatioMin        float64    `json:"ratio_min"`
	RatioMax        float64    `json:"ratio_max"`
	MeetsTarget     bool       `json:"meets_target"`
	CPUWithoutRules *proxyCPU  `json:"proxy_cpu_without_rules,omitempty"`
	CPUWithRules    *proxyCPU  `json:"proxy_cpu_with_rules,omitempty"`
}

func newRulesOverhead(rounds, rate int) *rulesOverhead {
	ro := &rulesOverhead{
		Rules: len(idleRules), Clients: rulesClients, TargetRatio: rulesTargetRatio,
		RoundTPS: make([]*float64, rounds), RoundTPSRules: make([]*float64, rounds),
	}
	if rate > 0 {
		ro.CPUWithoutRules = &proxyCPU{Target: "pgchaos, no rules", RoundMicros: make([]*float64, rounds), RoundTPS: make([]*float64, rounds)}
		ro.CPUWithRules = &proxyCPU{Target: fmt.Sprintf("pgchaos, %d rules", len(idleRules)), RoundMicros: make([]*float64, rounds), RoundTPS: make([]*float64, rounds)}
	}
	return ro
}

// runs is the number of pgbench runs per round, for the time estimate.
func (ro *rulesOverhead) runs() int {
	if ro.CPUWithRules != nil {
		return 4
	}
	return 2
}

// round runs round r: without rules, then with them, for throughput and
// then for CPU, so that each pair runs back to back. fail is measure's:
// it records a failure and reports whether to stop.
func (ro *rulesOverhead) round(ctx context.Context, r int, cfg config, bench *pgbench, t target, api rulesAPI, fail func(string, error) bool) (stop bool) {
	prefix := fmt.Sprintf("round %d/%d rules phase", r+1, cfg.rounds)
	label := func(with bool) string {
		if with {
			return fmt.Sprintf("%d rules", len(idleRules))
		}
		return "no rules"
	}
	tps := func(with bool) error {
		out, err := bench.runTPS(ctx, t.port, cfg.mode, seconds(cfg.duration), rulesClients, 0)
		if err != nil {
			return err
		}
		if with {
			ro.RoundTPSRules[r] = &out.tps
		} else {
			ro.RoundTPS[r] = &out.tps
		}
		progress("%s clients=%d pgchaos %s: %.0f tps", prefix, rulesClients, label(with), out.tps)
		return nil
	}
	cpu := func(with bool) error {
		us, out, err := measureCPU(ctx, bench, t, cfg)
		if err != nil {
			return err
		}
		pc := ro.CPUWithoutRules
		if with {
			pc = ro.CPUWithRules
		}
		pc.RoundMicros[r], pc.RoundTPS[r] = &us, &out.tps
		progress("%s cpu at %d tps pgchaos %s: %.1f µs/txn (%.0f tps achieved)", prefix, cfg.rate, label(with), us, out.tps)
		return nil
	}
	steps := []func(bool) error{tps}
	if ro.CPUWithRules != nil {
		steps = append(steps, cpu)
	}
	for i, step := range steps {
		what := prefix
		if i == 1 {
			what += " cpu"
		}
		if err := step(false); err != nil && fail(what+" no rules", err) {
			return true
		}
		if err := withIdleRules(ctx, api, func() error { return step(true) }); err != nil && fail(what+" "+label(true), err) {
			return true
		}
	}
	return false
}

func (ro *rulesOverhead) summarise(rate int) {
	ro.MedianTPS = median(ro.RoundTPS)
	ro.MedianTPSRules = median(ro.RoundTPSRules)
	if ro.MedianTPS > 0 {
		ro.Ratio = ro.MedianTPSRules / ro.MedianTPS
	}
	var ratios []*float64
	for r, v := range ro.RoundTPSRules {
		if w := ro.RoundTPS[r]; v != nil && w != nil && *w > 0 {
			x := *v / *w
			ratios = append(ratios, &x)
		}
	}
	ro.RatioMin, ro.RatioMax = minMax(ratios)
	ro.MeetsTarget = ro.Ratio >= rulesTargetRatio
	for _, pc := range []*proxyCPU{ro.CPUWithoutRules, ro.CPUWithRules} {
		if pc != nil {
			pc.summarise(rate)
		}
	}
}

func printRulesOverhead(w io.Writer, cfg config, ro *rulesOverhead) {
	fmt.Fprintf(w, "\nRules that match none of the traffic: pgbench -S -M %s, %d clients, pgchaos with no rules vs %d rules, %d round(s) × %ds\n",
		cfg.mode, ro.Clients, ro.Rules, cfg.rounds, seconds(cfg.duration))
	fmt.Fprintf(w, "ratio = median with rules / median without; round ratios pair runs of the same round; target ratio ≥ %.2f\n", ro.TargetRatio)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "rules\tmedian tps\tratio\tround ratios min..max\t"
	if ro.CPUWithRules != nil {
		header += fmt.Sprintf("µs/txn at -R %d\tmin..max\tachieved tps\t", cfg.rate)
	}
	fmt.Fprintln(tw, header)
	row := func(name string, tps float64, ratio, spread string, pc *proxyCPU) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t", name, fmtNum(tps, "%.0f"), ratio, spread)
		if pc != nil {
			cpuSpread, note := "-", ""
			if pc.MedianMicros > 0 {
				cpuSpread = fmt.Sprintf("%.1f..%.1f", pc.MinMicros, pc.MaxMicros)
			}
			if pc.BelowRate {
				note = " (below rate)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t", fmtNum(pc.MedianMicros, "%.1f"), cpuSpread, fmtNum(pc.MedianTPS, "%.0f")+note)
		}
		fmt.Fprintln(tw)
	}
	row("none", ro.MedianTPS, "1.000", "-", ro.CPUWithoutRules)
	ratio, spread := "-", "-"
	if ro.Ratio > 0 {
		ratio = fmt.Sprintf("%.3f", ro.Ratio)
		spread = fmt.Sprintf("%.3f..%.3f", ro.RatioMin, ro.RatioMax)
	}
	row(fmt.Sprintf("%d", ro.Rules), ro.MedianTPSRules, ratio, spread, ro.CPUWithRules)
	tw.Flush()
	if ro.Ratio > 0 {
		fmt.Fprintf(w, "with/without %.3f: %s\n", ro.Ratio, verdict(ro.MeetsTarget, fmt.Sprintf("target ≥ %.2f", ro.TargetRatio)))
	}
	if a, b := ro.CPUWithoutRules, ro.CPUWithRules; a != nil && b != nil && a.MedianMicros > 0 && b.MedianMicros > 0 {
		fmt.Fprintf(w, "proxy CPU with rules: %+.1f µs/txn (%+.0f%%)\n", b.MedianMicros-a.MedianMicros, 100*(b.MedianMicros/a.MedianMicros-1))
	}
}

// delayAccuracy is one delay's result. Times are in milliseconds; excess
// is a delayed query's latency less the median latency of the undelayed
// query on the same connection.
type delayAccuracy struct {
	DelayMS          float64 `json:"delay_ms"`
	Samples          int     `json:"samples"`
	BaselineMedianMS float64 `json:"baseline_median_ms"`
	BaselineP99MS    float64 `json:"baseline_p99_ms"`
	ExcessMedianMS   float64 `json:"excess_median_ms"`
	ExcessP99MS      float64 `json:"excess_p99_ms"`
	ExcessMaxMS      float64 `json:"excess_max_ms"`
	ExcessMinMS      float64 `json:"excess_min_ms"`
	P99ErrorMS       float64 `json:"p99_error_ms"`
	MeetsTarget      bool    `json:"meets_target"`
	// ProxyLatenessP99MS bounds, from pgchaos's own histogram, how late the
	// proxy forwarded the delayed queries (arrival + delay): the delay's
	// precision without the client's and the server's jitter.
	ProxyLatenessP99MS float64   `json:"proxy_lateness_p99_ms"`
	ProxyLatenessMeets bool      `json:"proxy_lateness_meets_target"`
	Fired              int64     `json:"fired"`
	ExcessMS           []float64 `json:"excess_ms,omitempty"`
}

type delayResults struct {
	Query         string           `json:"query"`
	BaselineQuery string           `json:"baseline_query"`
	Pattern       string           `json:"pattern"`
	Samples       int              `json:"samples"`
	ToleranceMS   float64          `json:"tolerance_ms"`
	Delays        []*delayAccuracy `json:"delays"`
}

// measureDelays measures each of delays in turn; failures are reported
// through fail, as in measure.
func measureDelays(ctx context.Context, cfg config, addr string, api rulesAPI, fail func(string, error) bool) (*delayResults, bool) {
	res := &delayResults{
		Query: delaySQL, BaselineQuery: baselineSQL, Pattern: delayPattern,
		Samples: cfg.delaySamples, ToleranceMS: ms(delayTolerance),
	}
	for _, d := range delays {
		progress("delay accuracy %s: %d samples", d, cfg.delaySamples)
		da, err := measureDelay(ctx, addr, api, d, cfg.delaySamples)
		if err != nil {
			if fail(fmt.Sprintf("delay accuracy %s", d), err) {
				return res, true
			}
			continue
		}
		progress("delay accuracy %s: excess median %.3f ms, p99 %.3f ms", d, da.ExcessMedianMS, da.ExcessP99MS)
		res.Delays = append(res.Delays, da)
	}
	return res, false
}

// measureDelay adds a delay rule for delaySQL, then times n pairs of
// baselineSQL and delaySQL on one connection through pgchaos with the
// simple protocol. The pairs interleave so that drift hits both alike.
func measureDelay(ctx context.Context, addr string, api rulesAPI, d time.Duration, n int) (_ *delayAccuracy, err error) {
	name := "bench-delay-" + d.String()
	rule, err := json.Marshal(map[string]any{
		"name":   name,
		"match":  map[string]any{"sql": delayPattern},
		"action": map[string]any{"type": "delay", "delay": d.String()},
	})
	if err != nil {
		return nil, err
	}
	before, err := api.lateness(ctx)
	if err != nil {
		return nil, err
	}
	if err := api.add(ctx, string(rule)); err != nil {
		return nil, fmt.Errorf("adding the delay rule: %w", err)
	}
	defer func() { err = errors.Join(err, api.remove(context.WithoutCancel(ctx), name)) }()

	qctx, cancel := context.WithTimeout(ctx, time.Duration(n+delayWarmup)*(d+time.Second)+30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(qctx, pgtest.ConnString(addr, pgtest.SuperUser, "", "postgres"))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	timed := func(sql string) (time.Duration, error) {
		start := time.Now()
		_, err := conn.Exec(qctx, sql, pgx.QueryExecModeSimpleProtocol)
		return time.Since(start), err
	}

	base := make([]float64, 0, n)
	delayed := make([]float64, 0, n)
	for i := range n + delayWarmup {
		b, err := timed(baselineSQL)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", baselineSQL, err)
		}
		l, err := timed(delaySQL)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", delaySQL, err)
		}
		if i >= delayWarmup {
			base = append(base, ms(b))
			delayed = append(delayed, ms(l))
		}
	}

	st, err := api.get(ctx, name)
	if err != nil {
		return nil, err
	}
	if want := int64(n + delayWarmup); st.Fired != want || st.Matched != want {
		return nil, fmt.Errorf("rule %s matched %d and fired %d times, want %d: the rule did not match exactly the delayed queries", name, st.Matched, st.Fired, want)
	}

	slices.Sort(base)
	baseMedian := quantile(base, 0.5)
	excess := make([]float64, n)
	for i, l := range delayed {
		excess[i] = l - baseMedian
	}
	sorted := slices.Sorted(slices.Values(excess))
	da := &delayAccuracy{
		DelayMS: ms(d), Samples: n, Fired: st.Fired,
		BaselineMedianMS: baseMedian, BaselineP99MS: percentile(base, 0.99),
		ExcessMedianMS: quantile(sorted, 0.5), ExcessP99MS: percentile(sorted, 0.99),
		ExcessMinMS: sorted[0], ExcessMaxMS: sorted[len(sorted)-1],
		ExcessMS: excess,
	}
	da.P99ErrorMS = da.ExcessP99MS - da.DelayMS
	da.MeetsTarget = math.Abs(da.P99ErrorMS) <= ms(delayTolerance)
	after, err := api.lateness(ctx)
	if err != nil {
		return nil, err
	}
	da.ProxyLatenessP99MS = 1000 * bucketQuantile(before, after, 0.99)
	da.ProxyLatenessMeets = da.ProxyLatenessP99MS <= ms(delayTolerance)
	return da, nil
}

// lateness reads pgchaos's pgchaos_fault_delay_lateness_seconds histogram:
// cumulative counts by upper bound (seconds; +Inf as math.Inf(1)).
func (a rulesAPI) lateness(ctx context.Context) (map[float64]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading pgchaos metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[float64]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, "pgchaos_fault_delay_lateness_seconds_bucket{") {
			continue
		}
		i := strings.Index(line, `le="`)
		j := strings.Index(line[i+4:], `"`)
		if i < 0 || j < 0 {
			continue
		}
		le, err1 := strconv.ParseFloat(line[i+4:i+4+j], 64)
		v, err2 := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndex(line, " ")+1:]), 64)
		if err1 == nil && err2 == nil {
			out[le] += v
		}
	}
	return out, nil
}

// bucketQuantile returns the upper bound of the histogram bucket holding
// quantile q of the observations made between two scrapes.
func bucketQuantile(before, after map[float64]float64, q float64) float64 {
	bounds := make([]float64, 0, len(after))
	for le := range after {
		bounds = append(bounds, le)
	}
	slices.Sort(bounds)
	total := after[math.Inf(1)] - before[math.Inf(1)]
	if total <= 0 {
		return math.NaN()
	}
	for _, le := range bounds {
		if after[le]-before[le] >= q*total {
			return le
		}
	}
	return math.Inf(1)
}

func printDelays(w io.Writer, res *delayResults) {
	fmt.Fprintf(w, "\nDelay accuracy: %q through pgchaos (rule sql %s, simple protocol), %d samples per delay\n",
		res.Query, res.Pattern, res.Samples)
	fmt.Fprintf(w, "excess = latency - median latency of %q on the same connection; p99 error = excess p99 - delay; target |p99 error| ≤ %g ms\n",
		res.BaselineQuery, res.ToleranceMS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "delay ms\tbaseline median ms\tbaseline p99 ms\texcess median ms\texcess p99 ms\texcess min..max ms\tp99 error ms\ttarget\tproxy lateness p99 ≤ ms\ttarget\t")
	for _, d := range res.Delays {
		fmt.Fprintf(tw, "%g\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f..%.3f\t%+.3f\t%s\t%g\t%s\t\n", d.DelayMS, d.BaselineMedianMS, d.BaselineP99MS,
			d.ExcessMedianMS, d.ExcessP99MS, d.ExcessMinMS, d.ExcessMaxMS, d.P99ErrorMS, verdict(d.MeetsTarget, ""),
			d.ProxyLatenessP99MS, verdict(d.ProxyLatenessMeets, ""))
	}
	tw.Flush()
	fmt.Fprintln(w, "proxy lateness: pgchaos_fault_delay_lateness_seconds, how late the proxy forwarded a delayed message relative to arrival + delay (histogram bucket bound)")
}

func verdict(ok bool, what string) string {
	s := "NOT MET"
	if ok {
		s = "met"
	}
	if what != "" {
		s += " (" + what + ")"
	}
	return s
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// quantile interpolates linearly in sorted v (the median for q = 0.5).
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	pos := q * float64(len(v)-1)
	i := int(pos)
	if i+1 >= len(v) {
		return v[len(v)-1]
	}
	return v[i] + (pos-float64(i))*(v[i+1]-v[i])
}

// percentile is the nearest-rank percentile of sorted v: the smallest
// value that at least q of the samples do not exceed.
func percentile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[min(max(i, 0), len(v)-1)]
}
