// Package explore finds the faults that break an application: it learns
// the fault points of a clean run (each distinct statement, and each
// connection moment), then tries one fault per trial — every kind at every
// point — on a fresh copy of the database, and judges each trial with the
// experiment's verifiers and liveness. The result is a failure-mode table.
package explore

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/runner"
	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// Statuses of a cell.
const (
	// StatusHeld: the rule fired and every verifier passed, and the
	// application finished in time.
	StatusHeld = "held"
	// StatusBroke: the rule fired and a verifier failed, or the
	// application did not finish in time.
	StatusBroke = "broke"
	// StatusNotReached: the rule never fired — the point did not happen
	// that often in this trial. Never a pass.
	StatusNotReached = "not_reached"
	// StatusSkipped: not tried, the budget having run out (or the run
	// interrupted).
	StatusSkipped = "skipped"
	// StatusError: the trial could not be carried out (evidence says why).
	StatusError = "error"
)

// Cell is one fault at one point: one trial.
type Cell struct {
	Point      string      `json:"point"`
	Column     string      `json:"fault"`
	Occurrence int         `json:"occurrence"`
	Rule       faults.Rule `json:"rule"`
	Status     string      `json:"status"`
	// Verifier is what broke: a verifier's name, or "liveness".
	Verifier string `json:"verifier,omitempty"`
	// Evidence is one line: the verifier's summary, or why the trial
	// could not run or was not reached.
	Evidence string `json:"evidence,omitempty"`
	// Output is the tail of the application's output, for a broken cell.
	Output   string        `json:"output,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	// Repro is the experiment file that reproduces a broken cell (set by
	// WriteReports).
	Repro string `json:"repro,omitempty"`
	// Group numbers the breakage this cell shares with others (from 1).
	Group  int `json:"group,omitempty"`
	column Column
}

// Group is a set of broken cells with the same verifier and evidence shape.
type Group struct {
	ID       int    `json:"id"`
	Verifier string `json:"verifier"`
	Shape    string `json:"evidence_shape"`
	Cells    int    `json:"cells"`
	// Smallest is the cell to start from: the earliest occurrence of the
	// point that runs first, with the simplest fault.
	Smallest string `json:"smallest"`
	// Leader is the index in Report.Cells of that cell.
	Leader int    `json:"leader"`
	Repro  string `json:"repro,omitempty"`
}

// Report is the failure-mode table and how it was made.
type Report struct {
	Experiment string        `json:"experiment"`
	Source     string        `json:"source"`
	Proxy      string        `json:"proxy"`
	Started    time.Time     `json:"started"`
	Ended      time.Time     `json:"ended"`
	Budget     time.Duration `json:"budget_ns"`
	Parallel   int           `json:"parallel"`
	// Baseline is the clean run's verdict: explore stops when it fails.
	BaselinePass    bool           `json:"baseline_pass"`
	BaselineProblem string         `json:"baseline_problem,omitempty"`
	BaselineTime    time.Duration  `json:"baseline_ns"`
	Points          []Point        `json:"points"`
	Columns         []string       `json:"faults"`
	Cells           []*Cell        `json:"cells"`
	Groups          []Group        `json:"groups"`
	Counts          map[string]int `json:"counts"`
	// TrialsPerMinute counts the trials carried out (baseline included)
	// per minute of exploring.
	TrialsPerMinute float64 `json:"trials_per_minute"`
	Interrupted     bool    `json:"interrupted"`
	SetupFailed     bool    `json:"setup_failed"`
	// Vars are the names of the --var values the file was read with.
	Vars    []string `json:"vars,omitempty"`
	Problem string   `json:"problem,omitempty"`
}

// Exit codes, as pgchaos run's.
const (
	ExitHeld        = runner.ExitPass
	ExitBroke       = runner.ExitFailed
	ExitSetup       = runner.ExitSetup
	ExitInterrupted = runner.ExitInterrupted
)

// ExitCode is pgchaos explore's exit status: 1 when a cell broke, 3 when
// the setup or the clean run failed (a broken baseline is not a finding).
func (r *Report) ExitCode() int {
	switch {
	case r.Interrupted:
		return ExitInterrupted
	case r.SetupFailed || !r.BaselinePass:
		return ExitSetup
	case r.Counts[StatusBroke] > 0:
		return ExitBroke
	}
	return ExitHeld
}

// Options tune an exploration.
type Options struct {
	// Out receives a line per trial.
	Out io.Writer
	// Logger receives the proxies' and workloads' logs (nil: discarded).
	Logger *slog.Logger
	// PGBinDir locates PostgreSQL's binaries.
	PGBinDir string
	// Budget overrides the file's explore.budget when set.
	Budget time.Duration
	// Parallel runs this many trials at once, each on its own database
	// (default 1).
	Parallel int
	// Seed makes rule probabilities reproducible.
	Seed int64
	// Vars are the names of the --var values the file was read with, for
	// the reproducers' instructions.
	Vars []string
	// Postgres, when set, is the server to explore on instead of one
	// started for the exploration (tests share one); explore makes and
	// drops databases of its own there.
	Postgres *pgtest.Postgres
}

type explorer struct {
	exp  *experiments.Experiment
	x    *experiments.Explore
	opts Options
	pg   *pgtest.Postgres
	rep  *Report
	// prefix names this exploration's databases: the template, and a copy
	// per trial.
	prefix string
	outMu  sync.Mutex   // keeps progress lines whole
	next   atomic.Int64 // trial databases made so far
}

func (e *explorer) template() string { return e.prefix + "template" }

func (e *explorer) logf(format string, args ...any) {
	if e.opts.Out == nil {
		return
	}
	e.outMu.Lock()
	defer e.outMu.Unlock()
	fmt.Fprintf(e.opts.Out, "[%6.1fs] %s\n", time.Since(e.rep.Started).Seconds(), fmt.Sprintf(format, args...))
}

// Run explores exp, whose Explore section must be set. ctx being
// cancelled (Ctrl-C) stops it after the trials under way, which remove
// their faults as a run does; the report says it was interrupted.
func Run(ctx context.Context, exp *experiments.Experiment, opts Options) *Report {
	x := exp.Explore
	if opts.Parallel <= 0 {
		opts.Parallel = 1
	}
	budget := time.Duration(x.Budget)
	if opts.Budget > 0 {
		budget = opts.Budget
	}
	e := &explorer{exp: exp, x: x, opts: opts, rep: &Report{
		Experiment: exp.Name, Source: exp.Source, Proxy: x.Proxy, Started: time.Now(),
		Budget: budget, Parallel: opts.Parallel, Counts: map[string]int{}, Vars: opts.Vars,
	}}
	rep := e.rep
	defer func() { rep.Ended = time.Now() }()
	for _, c := range columns(x) {
		rep.Columns = append(rep.Columns, c.Name())
	}
	fail := func(setup bool, format string, args ...any) *Report {
		rep.SetupFailed = setup
		rep.Interrupted = ctx.Err() != nil
		rep.Problem = fmt.Sprintf(format, args...)
		e.logf("%s", rep.Problem)
		return rep
	}

	e.prefix = fmt.Sprintf("pgchaos_explore_%d_", time.Now().UnixNano()%1e9)
	if e.pg = opts.Postgres; e.pg == nil {
		e.logf("explore %q: starting PostgreSQL", exp.Name)
		pg, err := pgtest.StartPostgres(ctx, pgtest.Options{BinDir: opts.PGBinDir, Settings: runner.EmbeddedSettings(exp.Target.Embedded.Settings), Logger: opts.Logger})
		if err != nil {
			return fail(true, "start the embedded PostgreSQL: %v", err)
		}
		e.pg = pg
		defer pg.Stop()
	}
	defer e.dropTemplate()
	if err := e.prepareTemplate(ctx); err != nil {
		return fail(true, "setup: %v", err)
	}

	// The clean run: it teaches the fault points and must pass.
	rec := newRecorder(x.Proxy)
	base := &Cell{Point: "-", Column: "none"}
	start := time.Now()
	res, err := e.trial(ctx, base, rec.observe)
	rep.BaselineTime = time.Since(start)
	if err != nil {
		return fail(true, "clean run: %v", err)
	}
	if ctx.Err() != nil {
		rep.Interrupted = true
		return rep
	}
	rep.BaselinePass = res.Pass
	if !res.Pass {
		rep.BaselineProblem = verdictLine(res)
		return fail(false, "the clean run, with no fault, does not pass: %s — fix the application or its verifiers first: a broken baseline is not a finding", rep.BaselineProblem)
	}
	rep.Points = rec.learned()
	if len(rep.Points) == 0 {
		// Not a pass: nothing was explored.
		rep.BaselinePass = false
		return fail(false, "the clean run sent no statement through proxy %s: nothing to explore (does the application connect to $PGCHAOS_DSN?)", x.Proxy)
	}
	e.logf("clean run passed in %.1fs: %d fault points, %d statements", rep.BaselineTime.Seconds(), len(rep.Points), statementCount(rep.Points))

	rep.Cells = plan(x.Proxy, rep.Points, columns(x), x)
	e.logf("%d trials to try, %d at a time, within %s", len(rep.Cells), opts.Parallel, budget)
	deadline := rep.Started.Add(budget)
	work := make(chan *Cell)
	var wg sync.WaitGroup
	var tried atomic.Int64 // trials carried out, the clean run aside
	for range opts.Parallel {
		wg.Go(func() {
			for c := range work {
				t0 := time.Now()
				res, err := e.trial(ctx, c, nil)
				c.Duration = time.Since(t0)
				judge(c, res, err)
				e.logf("trial %d/%d: %s at %s (occurrence %d): %s%s", tried.Add(1), len(rep.Cells), c.Column, c.Point, c.Occurrence, c.Status, evidenceSuffix(c))
			}
		})
	}
	budgetOver := time.NewTimer(time.Until(deadline))
	defer budgetOver.Stop()
give:
	for _, c := range rep.Cells {
		if ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		// A trial not started when the budget runs out is not started.
		select {
		case work <- c:
		case <-ctx.Done():
			break give
		case <-budgetOver.C:
			break give
		}
	}
	close(work)
	wg.Wait()
	rep.Interrupted = ctx.Err() != nil
	for _, c := range rep.Cells {
		if c.Status == StatusSkipped {
			if rep.Interrupted {
				c.Evidence = "not tried: interrupted"
			} else {
				c.Evidence = "not tried: the budget of " + budget.String() + " ran out"
			}
		}
		rep.Counts[c.Status]++
	}
	if mins := time.Since(rep.Started).Minutes(); mins > 0 {
		rep.TrialsPerMinute = float64(tried.Load()+1) / mins // with the clean run
	}
	rep.Groups = group(rep.Cells, rep.Points)
	e.logf("explored: %d held, %d broke, %d not reached, %d skipped, %d errors; %.1f trials per minute",
		rep.Counts[StatusHeld], rep.Counts[StatusBroke], rep.Counts[StatusNotReached], rep.Counts[StatusSkipped], rep.Counts[StatusError], rep.TrialsPerMinute)
	return rep
}

func statementCount(points []Point) int {
	n := 0
	for _, p := range points {
		if p.Connection == "" {
			n++
		}
	}
	return n
}

// prepareTemplate runs the experiment's setup once, into the database
// every trial copies: a copy costs milliseconds, an initdb seconds.
func (e *explorer) prepareTemplate(ctx context.Context) error {
	admin := e.pg.DSN(pgtest.SuperUser, "", "postgres")
	if err := execSQL(ctx, admin, "CREATE DATABASE "+e.template()); err != nil {
		return err
	}
	setup := &experiments.Experiment{
		Name: e.exp.Name + " (setup)", Source: e.exp.Source,
		Target:   experiments.Target{DSN: e.pg.DSN(pgtest.SuperUser, "", e.template())},
		Recovery: experiments.Recovery{Deadline: e.exp.Recovery.Deadline},
	}
	// A fault the setup arms is for the application: each trial arms it.
	for _, st := range e.exp.Setup {
		if _, ok := st.Action.(*experiments.Inject); !ok {
			setup.Setup = append(setup.Setup, st)
		}
	}
	res := runner.Run(ctx, setup, runner.Options{Logger: e.opts.Logger, Seed: e.opts.Seed})
	if !res.Pass {
		return fmt.Errorf("%s", res.Problem)
	}
	return nil
}

// dropTrial removes a trial's database. Prepared transactions the trial
// left in doubt would keep it (DROP refuses while they exist) and hold
// max_prepared_transactions slots that later trials need: they go first.
func (e *explorer) dropTrial(ctx context.Context, db string) {
	dsn := e.pg.DSN(pgtest.SuperUser, "", db)
	if err := rollbackPrepared(ctx, dsn); err != nil {
		e.logf("trial database %s: rolling back its prepared transactions: %v", db, err)
	}
	if err := execSQL(ctx, e.pg.DSN(pgtest.SuperUser, "", "postgres"), "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)"); err != nil {
		e.logf("trial database %s: %v", db, err)
	}
}

func rollbackPrepared(ctx context.Context, dsn string) error {
	return withConn(ctx, dsn, func(ctx context.Context, conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()")
		if err != nil {
			return err
		}
		gids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, gid := range gids {
			if _, err := conn.Exec(ctx, "ROLLBACK PREPARED "+quoteLiteral(gid)); err != nil {
				return err
			}
		}
		return nil
	})
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func (e *explorer) dropTemplate() {
	execSQL(context.Background(), e.pg.DSN(pgtest.SuperUser, "", "postgres"), "DROP DATABASE IF EXISTS "+e.template()+" WITH (FORCE)")
}

// trial runs the application once on a fresh copy of the database, with
// c's rule armed before it starts (none for the clean run), and removes
// the copy after.
func (e *explorer) trial(ctx context.Context, c *Cell, observe func(string, *faults.Session, *faults.Message)) (*runner.Result, error) {
	db := e.prefix + strconv.FormatInt(e.next.Add(1), 10)
	admin := e.pg.DSN(pgtest.SuperUser, "", "postgres")
	bg := context.WithoutCancel(ctx)
	if err := execSQL(bg, admin, "CREATE DATABASE "+db+" TEMPLATE "+e.template()); err != nil {
		return nil, fmt.Errorf("copy the database: %w", err)
	}
	defer e.dropTrial(bg, db)

	t := e.trialExperiment(e.pg.DSN(pgtest.SuperUser, "", db), c.Rule)
	return runner.Run(ctx, t, runner.Options{Logger: e.opts.Logger, Seed: e.opts.Seed, Observe: observe}), nil
}

// trialExperiment is the experiment one trial runs, on database dsn with
// rule armed (none: the clean run). Repro writes the same as a file.
func (e *explorer) trialExperiment(dsn string, rule faults.Rule) *experiments.Experiment {
	t := *e.exp
	t.Target = experiments.Target{DSN: dsn}
	t.Explore = nil
	t.FaultFired = false
	// The setup's SQL and commands went into the template; its injects
	// arm faults the application is explored under, in every trial.
	t.Setup = nil
	for _, st := range e.exp.Setup {
		if _, ok := st.Action.(*experiments.Inject); ok {
			t.Setup = append(t.Setup, st)
		}
	}
	if rule.Name != "" {
		t.Setup = append(t.Setup, experiments.Step{Name: "arm " + rule.Name, Action: &experiments.Inject{Rule: rule}})
	}
	// Trials run side by side: their proxies take free ports, and the
	// application finds its proxy in $PGCHAOS_DSN.
	t.Proxies = append([]experiments.Proxy(nil), e.exp.Proxies...)
	for i := range t.Proxies {
		if !t.Proxies[i].Remote() {
			t.Proxies[i].Listen = ""
		}
	}
	t.Method = trialMethod(e.x)
	t.Verify, _ = judging(e.exp.Verify)
	t.Rollbacks = nil
	for _, st := range e.exp.Rollbacks {
		if _, ok := st.Action.(*experiments.Remove); !ok {
			t.Rollbacks = append(t.Rollbacks, st)
		}
	}
	return &t
}

// trialMethod waits for the application, then ends the sessions still on
// the explored proxy before recovery removes the fault: a statement a hang
// still holds must never reach the server after the application gave up
// on it.
func trialMethod(x *experiments.Explore) []experiments.Step {
	return []experiments.Step{
		{Name: "the application runs", Action: &experiments.WaitWorkloads{Timeout: x.Deadline}},
		{Name: "end what the fault holds", Action: &experiments.KillSessions{Proxy: x.Proxy}},
	}
}

// judging are the verifiers a trial is judged by, and the indexes of the
// file's verifiers it leaves out: those that check a fault reached the
// workload (fault_fired, errors, latency's p50_min) — explore sees that
// itself, and says "not reached" — or time a recovery from faults the
// method healed (recovery_time). Checks over the fault window look at the
// whole run, as the clean run has no fault.
func judging(all []experiments.Verifier) (keep []experiments.Verifier, dropped []int) {
	for i, v := range all {
		if v.Implicit {
			continue
		}
		switch c := v.Check.(type) {
		case *experiments.FaultFired, *experiments.ErrorCount, *experiments.RecoveryTime:
			dropped = append(dropped, i)
			continue
		case *experiments.Latency:
			if c.P99Max == 0 {
				dropped = append(dropped, i)
				continue
			}
			cp := *c
			cp.P50Min, cp.Window = 0, experiments.WindowRun
			v.Check = &cp
		case *experiments.Availability:
			cp := *c
			cp.Window = experiments.WindowRun
			v.Check = &cp
		}
		keep = append(keep, v)
	}
	return keep, dropped
}

func execSQL(ctx context.Context, dsn, sql string) error {
	return withConn(ctx, dsn, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, sql)
		return err
	})
}

// withConn runs f on a connection to dsn, within a minute.
func withConn(ctx context.Context, dsn string, f func(context.Context, *pgx.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return f(ctx, conn)
}

// judge fills c from its trial.
func judge(c *Cell, res *runner.Result, err error) {
	fired := int64(0)
	if res != nil {
		for _, w := range res.FaultWindows {
			if w.Rule == c.Rule.Name {
				fired += w.Fired
			}
		}
	}
	switch {
	case err != nil:
		c.Status, c.Evidence = StatusError, err.Error()
	case res.Interrupted:
		c.Status, c.Evidence = StatusSkipped, "interrupted"
	case res.SetupFailed:
		c.Status, c.Evidence = StatusError, res.Problem
	case fired == 0:
		c.Status = StatusNotReached
		c.Evidence = fmt.Sprintf("the rule never fired: occurrence %d of the point did not happen in this trial", c.Occurrence)
	case res.Pass:
		c.Status = StatusHeld
	default:
		c.Status = StatusBroke
		c.Verifier, c.Evidence = breakage(res)
		for _, op := range res.NotOK {
			if op.Kind == "exec" && op.Error != "" {
				c.Output = op.Error
				break
			}
		}
	}
}

// breakage names what broke: the first verifier that failed, or liveness
// when the application did not finish in time.
func breakage(res *runner.Result) (verifier, evidence string) {
	for _, st := range res.Steps {
		if st.Kind == "wait_workloads" && st.Error != "" {
			return "liveness", st.Error
		}
	}
	for _, v := range res.Verdicts {
		if !v.Pass {
			return v.Name, v.Summary
		}
	}
	return res.Phase, res.Problem
}

func verdictLine(res *runner.Result) string {
	v, ev := breakage(res)
	return v + ": " + ev
}

func evidenceSuffix(c *Cell) string {
	if c.Status == StatusHeld || c.Evidence == "" {
		return ""
	}
	return " — " + firstLine(c.Evidence)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// group puts broken cells with the same verifier and evidence shape
// together, each group led by its smallest reproducer.
func group(cells []*Cell, points []Point) []Group {
	order := map[string]int{}
	for i, p := range points {
		order[p.ID] = i
	}
	type key struct{ verifier, shape string }
	byKey := map[key]int{} // index in out
	var out []Group
	for i, c := range cells {
		if c.Status != StatusBroke {
			continue
		}
		k := key{c.Verifier, shape(firstLine(c.Evidence))}
		gi, ok := byKey[k]
		if !ok {
			gi = len(out)
			byKey[k] = gi
			out = append(out, Group{ID: gi + 1, Verifier: k.verifier, Shape: k.shape, Leader: i})
		}
		g := &out[gi]
		g.Cells++
		c.Group = g.ID
		if smaller(c, cells[g.Leader], order) {
			g.Leader = i
		}
	}
	for i := range out {
		l := cells[out[i].Leader]
		out[i].Smallest = l.Column + " at " + l.Point + " (occurrence " + itoa(l.Occurrence) + ")"
	}
	return out
}

// smaller: an earlier occurrence, then a point that runs earlier; on a
// tie the cell tried first (the one leading already) stays.
func smaller(a, b *Cell, order map[string]int) bool {
	if a.Occurrence != b.Occurrence {
		return a.Occurrence < b.Occurrence
	}
	return order[a.Point] < order[b.Point]
}
