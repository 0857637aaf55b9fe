package workload

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
)

// Phases of a ledger operation: the last statement attempted.
const (
	PhaseConnect        = "connect"
	PhaseBegin          = "begin"
	PhaseInsert         = "insert"
	PhaseCommit         = "commit"
	PhasePrepare        = "prepare"
	PhaseCommitPrepared = "commit_prepared"
)

// ledger inserts uniquely keyed rows, one per transaction: every insert
// acknowledged must survive, every insert reported failed must not appear.
type ledger struct {
	name     string
	runID    string
	table    string
	twoPhase bool
	insert   string
}

func newLedger(spec experiments.Workload, env Env) (*ledger, error) {
	opts := experiments.LedgerOptions{}
	if spec.Ledger != nil {
		opts = *spec.Ledger
	}
	if opts.Table == "" {
		opts.Table = experiments.DefaultLedgerTable
	}
	if env.RunID == "" {
		return nil, fmt.Errorf("workload %q: no run ID to make its keys unique", spec.Name)
	}
	// The longest gid this run can make must fit PostgreSQL's limit.
	if g := LedgerGID(spec.Name, env.RunID, 1<<31-1, 1<<62); len(g) > gidMax {
		return nil, fmt.Errorf("workload %q: its gids (like %q) would be longer than %d bytes; use a shorter name or run ID", spec.Name, g, gidMax)
	}
	return &ledger{
		name:     spec.Name,
		runID:    env.RunID,
		table:    opts.Table,
		twoPhase: opts.TwoPhase,
		// The table name was checked to be an identifier (or schema.name)
		// when the experiment was parsed.
		insert: "INSERT INTO " + opts.Table + " (key, workload, client, seq) VALUES ($1, $2, $3, $4)",
	}, nil
}

func (l *ledger) setup(ctx context.Context, conn *pgx.Conn) error {
	create := "CREATE TABLE IF NOT EXISTS " + l.table + ` (
	key text PRIMARY KEY,
	workload text NOT NULL,
	client int NOT NULL,
	seq bigint NOT NULL,
	at timestamptz NOT NULL DEFAULT now()
)`
	if err := createTable(ctx, conn, create); err != nil {
		return fmt.Errorf("creating ledger table %s: %w", l.table, err)
	}
	// A table of that name made by something else fails every insert; say
	// so now rather than through a history of failures.
	if _, err := conn.Exec(ctx, "SELECT key, workload, client, seq, at FROM "+l.table+" LIMIT 0"); err != nil {
		return fmt.Errorf("ledger table %s lacks the columns key, workload, client, seq, at: %w", l.table, err)
	}
	if l.twoPhase {
		var s string
		if err := conn.QueryRow(ctx, "SHOW max_prepared_transactions").Scan(&s); err != nil {
			return fmt.Errorf("reading max_prepared_transactions: %w", err)
		}
		if n, _ := strconv.Atoi(s); n <= 0 {
			return fmt.Errorf("two_phase needs max_prepared_transactions > 0 on the server (it is %s)", s)
		}
	}
	return nil
}

// createTable runs a CREATE TABLE IF NOT EXISTS, once more if a concurrent
// one (another workload on the same table) won the race for the name.
func createTable(ctx context.Context, conn *pgx.Conn, sql string) error {
	_, err := conn.Exec(ctx, sql)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == "42P07") {
		_, err = conn.Exec(ctx, sql)
	}
	return err
}

func (l *ledger) next(c *client, op *history.Op) {
	op.Kind = "insert"
	op.Key = LedgerKey(l.name, l.runID, c.id, c.seq)
	if l.twoPhase {
		op.GID = LedgerGID(l.name, l.runID, c.id, c.seq)
	}
}

// do writes one entry. One phase: BEGIN; INSERT; COMMIT. Two phases:
// BEGIN; INSERT; PREPARE TRANSACTION; COMMIT PREPARED.
func (l *ledger) do(ctx context.Context, c *client, op *history.Op) {
	if _, err := c.exec(ctx, op, PhaseBegin, false, "BEGIN"); err != nil {
		return
	}
	if _, err := c.exec(ctx, op, PhaseInsert, false, l.insert, op.Key, l.name, c.id, c.seq); err != nil {
		return
	}
	if !l.twoPhase {
		tag, err := c.exec(ctx, op, PhaseCommit, true, "COMMIT")
		if err != nil {
			return
		}
		if tag.String() == "ROLLBACK" {
			c.failTag(ctx, op, "COMMIT answered ROLLBACK: the transaction had failed")
			return
		}
		op.Outcome = history.OK
		return
	}
	tag, err := c.exec(ctx, op, PhasePrepare, true, "PREPARE TRANSACTION "+quoteLiteral(op.GID))
	if err != nil {
		return
	}
	if tag.String() == "ROLLBACK" {
		// What PREPARE TRANSACTION says in a failed transaction: nothing
		// was prepared.
		c.failTag(ctx, op, "PREPARE TRANSACTION answered ROLLBACK: the transaction had failed and was not prepared")
		return
	}
	if _, err := c.exec(ctx, op, PhaseCommitPrepared, true, "COMMIT PREPARED "+quoteLiteral(op.GID)); err != nil {
		// The transaction is prepared, whatever COMMIT PREPARED ran into:
		// an error does not abort a prepared transaction, and a lost
		// connection may have come after the commit. Its fate is decided
		// by whoever resolves it (resolve_prepared), so it is in doubt.
		op.Outcome = history.Unknown
		return
	}
	op.Outcome = history.OK
}
