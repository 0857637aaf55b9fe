// Package verify judges a chaos run: each verifier of an experiment looks at
// the workloads' history and at the database and returns a Verdict that
// says whether the run passed and why, with the evidence (keys, gids,
// counts, query results) a reader needs to believe it.
//
// Verifiers are honest rather than lenient: a check that has nothing to
// judge (no operations in its window, a rule that never fired) fails, since
// a chaos run that proved nothing must not pass silently.
package verify

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
)

// MaxListed bounds every list of ids or rows in a verdict's evidence; the
// full count is always reported next to it.
const MaxListed = 20

// ApplicationName is what verifiers call themselves in pg_stat_activity.
const ApplicationName = "pgchaos-verify"

// Verdict is a verifier's judgement of a run.
type Verdict struct {
	// Name is the verifier's name, e.g. "durability(ledger)".
	Name string `json:"name"`
	// Type is the verifier's type in the experiment file, e.g. "durability".
	Type string `json:"type"`
	Pass bool   `json:"pass"`
	// Summary is one line, e.g. "ok: 1520 acknowledged rows present, 0
	// lost, 0 ghost; 3 unknown: 2 committed, 1 aborted".
	Summary string `json:"summary"`
	// Evidence holds ids, counts and query results; every list in it has at
	// most MaxListed entries.
	Evidence map[string]any `json:"evidence"`
	// Took is how long the check took (set by the runner).
	Took time.Duration `json:"took_ns,omitempty"`
}

// Run is what the runner knows about a run that verifiers need.
type Run struct {
	History *history.History
	// VerifyDSN connects to the target directly, not through any fault.
	VerifyDSN string
	// FaultWindows are the times faults were active.
	FaultWindows []Window
	// RunWindow is the whole time the workloads ran.
	RunWindow Window
	// RecoveryTime is how long the steady state took to hold again after
	// the faults were removed; Recovered is false if it never did.
	RecoveryTime time.Duration
	Recovered    bool
	// Fired counts, by rule name, how often each rule fired.
	Fired map[string]int64
	// PgBouncerAdminDSN reaches PgBouncer's admin console (database
	// "pgbouncer"); "" when there is no PgBouncer.
	PgBouncerAdminDSN string
	// Workloads are the experiment's workloads by name.
	Workloads map[string]experiments.Workload
	// FaultSteps are the method's inject and crash steps that ran, in
	// order: what rto measures from; MethodSteps are all its steps that
	// ran, which rto's from may name.
	FaultSteps  []Step
	MethodSteps []Step
	// Nodes are an embedded cluster's servers, Serving the name of the one
	// that serves (whose DSN is VerifyDSN); none for another target.
	Nodes   []Node
	Serving string
	// Primary is the node that served when the method began.
	Primary string
	// StartTimeline is the serving node's timeline when the method began
	// (0: not known).
	StartTimeline int64
	// Promotions are the promote steps that ran: Name is the node, End
	// when it accepted writes.
	Promotions []Step
	// RestorePoints are when each restore point was made, by name.
	RestorePoints map[string]Window
}

// Node is a server of an embedded cluster.
type Node struct {
	Name    string `json:"name"`
	DSN     string `json:"dsn"`
	Running bool   `json:"running"`
}

// Step is a method step that ran.
type Step struct {
	Name string `json:"name"`
	Window
}

// Window is a span of time; a zero End means it was still open when the
// run ended.
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Contains reports whether t falls in the window.
func (w Window) Contains(t time.Time) bool {
	return !t.Before(w.Start) && (w.End.IsZero() || t.Before(w.End))
}

// Check runs one verifier against a run. It never panics on a broken
// database or a missing workload: those make a failing verdict whose
// evidence says what went wrong.
func Check(ctx context.Context, v experiments.Verifier, run Run) Verdict {
	var vd Verdict
	switch c := v.Check.(type) {
	case *experiments.Durability:
		vd = durability(ctx, c, run)
	case *experiments.BankInvariant:
		vd = bankInvariant(ctx, c, run)
	case *experiments.PreparedTransactions:
		vd = preparedTransactions(ctx, c, run)
	case *experiments.SQLCheck:
		vd = sqlCheck(ctx, c, run)
	case *experiments.SQLEqual:
		vd = sqlEqual(ctx, c, run)
	case *experiments.RecoveryTime:
		vd = recoveryTime(c, run)
	case *experiments.Availability:
		vd = availability(c, run)
	case *experiments.Latency:
		vd = latency(c, run)
	case *experiments.ErrorCount:
		vd = errorCount(c, run)
	case *experiments.FaultFired:
		vd = faultFired(c, run)
	case *experiments.Sessions:
		vd = sessions(ctx, c, run)
	case *experiments.RPO:
		vd = rpo(ctx, c, run)
	case *experiments.RTO:
		vd = rto(c, run)
	case *experiments.Timeline:
		vd = timeline(ctx, run)
	case *experiments.Replication:
		vd = replication(ctx, c, run)
	case *experiments.PITR:
		vd = pitr(ctx, c, run)
	case nil:
		vd = failed("", "", fmt.Errorf("the verifier has no check"))
	default:
		vd = failed(c.Type(), "", fmt.Errorf("no verifier judges %q", c.Type()))
	}
	if v.Name != "" && v.Name != vd.Type {
		vd.Name = v.Name
	}
	if vd.Evidence == nil {
		vd.Evidence = map[string]any{}
	}
	return vd
}

// newVerdict starts a verdict of type typ about subject (a workload, a
// rule; "" for none).
func newVerdict(typ, subject string) Verdict {
	name := typ
	if subject != "" {
		name = typ + "(" + subject + ")"
	}
	return Verdict{Name: name, Type: typ, Evidence: map[string]any{}}
}

// failed is the verdict of a verifier that could not judge.
func failed(typ, subject string, err error) Verdict {
	v := newVerdict(typ, subject)
	v.Summary = "error: " + err.Error()
	v.Evidence["error"] = err.Error()
	return v
}

// judge sets Pass and prefixes the summary with ok or FAIL.
func (v *Verdict) judge(pass bool, format string, args ...any) {
	v.Pass = pass
	word := "FAIL: "
	if pass {
		word = "ok: "
	}
	v.Summary = word + fmt.Sprintf(format, args...)
}

// bounded returns at most MaxListed of list.
func bounded[T any](list []T) []T {
	if len(list) > MaxListed {
		return list[:MaxListed:MaxListed]
	}
	if list == nil {
		return []T{}
	}
	return list
}

// connect opens a connection for a verifier. Simple protocol makes every
// value arrive as PostgreSQL's text output, which is what the SQL verifiers
// compare.
func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	if dsn == "" {
		return nil, fmt.Errorf("no DSN to verify against")
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parsing the verify DSN: %w", err)
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = ApplicationName
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s:%d to verify: %w", cfg.Host, cfg.Port, err)
	}
	return conn, nil
}

func closeConn(ctx context.Context, conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// opsOf returns a workload's operations, none when there is no history.
func opsOf(h *history.History, workload string) []history.Op {
	if h == nil {
		return nil
	}
	return h.Of(workload)
}

func dur(d time.Duration) string { return d.String() }

// count says "1 row" or "2 rows".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
