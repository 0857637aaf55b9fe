package verify

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
)

// Phases of a two-phase operation (history.Op.Phase): the step that was in
// flight when the outcome was decided.
const (
	PhasePrepare        = "prepare"
	PhaseCommitPrepared = "commit_prepared"
)

// preparedTransactions checks pg_prepared_xacts. Without ExpectInDoubt no
// transaction with the prefix older than OlderThan may be left: it holds
// locks and xmin until someone finishes it. With ExpectInDoubt the fault
// must really have left transactions in doubt, which the history shows
// (an operation whose PREPARE TRANSACTION or COMMIT PREPARED got no answer)
// or which are still prepared since the run started.
func preparedTransactions(ctx context.Context, c *experiments.PreparedTransactions, run Run) Verdict {
	v := newVerdict(c.Type(), c.GIDPrefix)
	olderThan := time.Duration(c.OlderThan)
	e := v.Evidence
	e["gid_prefix"] = c.GIDPrefix
	e["older_than"] = dur(olderThan)

	conn, err := connect(ctx, run.VerifyDSN)
	if err != nil {
		return failed(v.Type, c.GIDPrefix, err)
	}
	defer closeConn(ctx, conn)
	left, err := listPrepared(ctx, conn, c.GIDPrefix, olderThan, nil)
	if err != nil {
		return failed(v.Type, c.GIDPrefix, err)
	}
	e["prepared"] = len(left)
	e["prepared_transactions"] = bounded(left)
	what := describePrefix(c.GIDPrefix, olderThan)

	if !c.ExpectInDoubt {
		if len(left) == 0 {
			v.judge(true, "no prepared transaction %s is left", what)
			return v
		}
		v.judge(false, "%s %s: %s", count(len(left), "orphaned prepared transaction"), what, strings.Join(gidsOf(bounded(left)), ", "))
		return v
	}

	var inDoubt []string
	for _, op := range ops(run.History) {
		gid := op.GID
		if gid == "" {
			gid = op.Key
		}
		if op.Outcome == history.Unknown && (op.Phase == PhasePrepare || op.Phase == PhaseCommitPrepared) &&
			gid != "" && strings.HasPrefix(gid, c.GIDPrefix) {
			inDoubt = append(inDoubt, gid)
		}
	}
	// A transaction prepared before the run is a leftover, not evidence
	// that this run's fault did anything.
	var since *time.Time
	if !run.RunWindow.Start.IsZero() {
		since = &run.RunWindow.Start
	}
	thisRun, err := listPrepared(ctx, conn, c.GIDPrefix, olderThan, since)
	if err != nil {
		return failed(v.Type, c.GIDPrefix, err)
	}
	e["in_doubt_in_history"] = len(inDoubt)
	e["in_doubt_gids"] = bounded(inDoubt)
	e["prepared_this_run"] = len(thisRun)
	switch {
	case len(inDoubt) > 0:
		v.judge(true, "the fault left %s in doubt (unanswered PREPARE TRANSACTION or COMMIT PREPARED); %s %s left", count(len(inDoubt), "transaction"), count(len(left), "prepared transaction"), what)
	case len(thisRun) > 0:
		v.judge(true, "%s prepared during the run still in doubt %s", count(len(thisRun), "transaction"), what)
	default:
		v.judge(false, "expected in-doubt transactions %s, but the history has no unanswered PREPARE TRANSACTION or COMMIT PREPARED and none is prepared", what)
	}
	return v
}

func describePrefix(prefix string, olderThan time.Duration) string {
	s := "with any gid"
	if prefix != "" {
		s = fmt.Sprintf("with gid prefix %q", prefix)
	}
	if olderThan > 0 {
		s += " older than " + dur(olderThan)
	}
	return s
}

func gidsOf(xs []PreparedXact) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.GID
	}
	return out
}

func ops(h *history.History) []history.Op {
	if h == nil {
		return nil
	}
	return h.Ops()
}

// listPrepared returns the transactions prepared in the connection's
// database whose gid starts with prefix ("" for all), prepared at least
// olderThan ago and, when since is set, not before since; oldest first.
func listPrepared(ctx context.Context, conn *pgx.Conn, prefix string, olderThan time.Duration, since *time.Time) ([]PreparedXact, error) {
	rows, err := conn.Query(ctx, `
		SELECT gid, owner::text, prepared::text, (now() - prepared)::text
		FROM pg_prepared_xacts
		WHERE database = current_database()
		  AND starts_with(gid, $1)
		  AND prepared <= now() - $2::bigint * interval '1 microsecond'
		  AND ($3::timestamptz IS NULL OR prepared >= $3::timestamptz)
		ORDER BY prepared, gid`,
		prefix, olderThan.Microseconds(), since)
	if err != nil {
		return nil, fmt.Errorf("listing prepared transactions: %w", err)
	}
	xs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (PreparedXact, error) {
		var x PreparedXact
		err := r.Scan(&x.GID, &x.Owner, &x.Prepared, &x.Age)
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing prepared transactions: %w", err)
	}
	return xs, nil
}
