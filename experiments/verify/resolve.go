package verify

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
)

// Why the history policy decided as it did, as counted in a
// resolve_prepared verdict's evidence under "reasons".
const (
	// ReasonAcknowledged: the client was told the entry committed (commit).
	ReasonAcknowledged = "acknowledged"
	// ReasonInDoubt: the client could not tell; the transaction being
	// prepared shows PREPARE TRANSACTION took effect, whether or not its
	// answer arrived, so the entry is committed as the client meant it.
	ReasonInDoubt = "in_doubt"
	// ReasonFailed: the client was told the entry failed (roll back:
	// committing it would make a ghost).
	ReasonFailed = "failed"
	// ReasonNotInHistory: no operation of the run wrote this gid (roll
	// back).
	ReasonNotInHistory = "not_in_history"
)

// ResolvePrepared finishes the transactions prepared in dsn's database
// whose gid starts with spec.GIDPrefix ("" for all), as a transaction
// manager does on recovery. Policy commit commits them all, rollback rolls
// them all back, and history decides each from the operation that wrote it
// (h): commit when the client was told it committed or could not tell
// (outcome unknown: the answer to PREPARE TRANSACTION or COMMIT PREPARED
// was lost, yet the transaction is prepared, so the prepare took effect and
// the workload meant to commit it); roll back when the client was told it
// failed, or when the history does not know the gid.
//
// The verdict's evidence says what was done to which gids. The error is
// non-nil when the transactions could not be listed or some could not be
// finished; a gid that someone else finished meanwhile is counted as
// vanished, not as an error.
func ResolvePrepared(ctx context.Context, spec experiments.ResolvePrepared, dsn string, h *history.History) (Verdict, error) {
	v := newVerdict(spec.Kind(), spec.GIDPrefix)
	switch spec.Policy {
	case experiments.PolicyCommit, experiments.PolicyRollback:
	case experiments.PolicyHistory:
		if h == nil {
			err := errors.New("resolving prepared transactions by history: there is no history")
			return failed(v.Type, spec.GIDPrefix, err), err
		}
	default:
		err := fmt.Errorf("resolving prepared transactions: unknown policy %q (want commit, rollback or history)", spec.Policy)
		return failed(v.Type, spec.GIDPrefix, err), err
	}
	conn, err := connect(ctx, dsn)
	if err != nil {
		err = fmt.Errorf("resolving prepared transactions: %w", err)
		return failed(v.Type, spec.GIDPrefix, err), err
	}
	defer closeConn(ctx, conn)
	xs, err := listPrepared(ctx, conn, spec.GIDPrefix, 0, nil)
	if err != nil {
		err = fmt.Errorf("resolving prepared transactions: %w", err)
		return failed(v.Type, spec.GIDPrefix, err), err
	}

	var byGID map[string][]history.Op
	if spec.Policy == experiments.PolicyHistory {
		byGID = map[string][]history.Op{}
		for _, op := range h.Ops() {
			gid := op.GID
			if gid == "" {
				gid = op.Key
			}
			if gid != "" {
				byGID[gid] = append(byGID[gid], op)
			}
		}
	}

	var (
		committed, rolledBack, vanished []string
		errs                            []error
		reasons                         = map[string]int{}
	)
	for _, x := range xs {
		commit := spec.Policy == experiments.PolicyCommit
		if byGID != nil {
			var reason string
			commit, reason = decide(byGID[x.GID])
			reasons[reason]++
		}
		stmt := "ROLLBACK PREPARED "
		if commit {
			stmt = "COMMIT PREPARED "
		}
		if _, err := conn.Exec(ctx, stmt+quoteLiteral(x.GID)); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "42704" {
				vanished = append(vanished, x.GID)
				continue
			}
			errs = append(errs, fmt.Errorf("%s%q: %w", stmt, x.GID, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if commit {
			committed = append(committed, x.GID)
		} else {
			rolledBack = append(rolledBack, x.GID)
		}
	}

	e := v.Evidence
	e["policy"] = spec.Policy
	e["gid_prefix"] = spec.GIDPrefix
	e["found"] = len(xs)
	e["committed"] = len(committed)
	e["committed_gids"] = bounded(committed)
	e["rolled_back"] = len(rolledBack)
	e["rolled_back_gids"] = bounded(rolledBack)
	e["vanished"] = len(vanished)
	e["vanished_gids"] = bounded(vanished)
	if byGID != nil {
		e["reasons"] = reasons
	}
	what := describePrefix(spec.GIDPrefix, 0)
	detail := fmt.Sprintf("%s %s: %d committed, %d rolled back, %d vanished (policy %s)",
		count(len(xs), "prepared transaction"), what, len(committed), len(rolledBack), len(vanished), spec.Policy)
	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, err := range errs {
			msgs[i] = err.Error()
		}
		e["errors"] = bounded(msgs)
		v.judge(false, "%d could not be finished; %s", len(errs), detail)
		return v, fmt.Errorf("resolving prepared transactions: %w", errors.Join(errs...))
	}
	v.judge(true, "%s", detail)
	return v, nil
}

// decide is the history policy for one prepared gid, given the operations
// that wrote it.
func decide(ops []history.Op) (commit bool, reason string) {
	if len(ops) == 0 {
		return false, ReasonNotInHistory
	}
	for _, op := range ops {
		if op.Outcome == history.OK {
			return true, ReasonAcknowledged
		}
	}
	for _, op := range ops {
		if op.Outcome == history.Fail {
			return false, ReasonFailed
		}
	}
	return true, ReasonInDoubt
}

// quoteLiteral quotes a string for SQL whatever standard_conforming_strings
// says: COMMIT PREPARED takes a literal, not a parameter.
func quoteLiteral(s string) string {
	return "E'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
}
