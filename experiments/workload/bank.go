package workload

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
)

const (
	// bankRetries is how often a transfer is retried after a
	// serialization failure or deadlock before it counts as failed.
	bankRetries = 10
	// bankMaxAmount bounds a transfer; balances may go negative, only
	// their total matters.
	bankMaxAmount = 10
	// PhaseUpdate is a bank transfer's UPDATE statements.
	PhaseUpdate = "update"
)

// retryableByDefault are the SQLSTATEs a transaction is worth retrying on:
// serialization_failure and deadlock_detected.
var retryableByDefault = []string{"40001", "40P01"}

// bank moves money between accounts; the total must never change.
type bank struct {
	table     string
	accounts  int
	initial   int64
	isolation string // as SQL, e.g. "SERIALIZABLE"
}

func newBank(spec experiments.Workload) (*bank, error) {
	opts := experiments.BankOptions{Accounts: 10, InitialBalance: 100}
	if spec.Bank != nil {
		opts = *spec.Bank
	}
	if opts.Accounts < 2 {
		return nil, fmt.Errorf("workload %q: a bank needs at least 2 accounts, got %d", spec.Name, opts.Accounts)
	}
	if opts.InitialBalance < 0 {
		return nil, fmt.Errorf("workload %q: initial_balance %d is negative", spec.Name, opts.InitialBalance)
	}
	var iso string
	switch opts.Isolation {
	case "", "read_committed":
		iso = "READ COMMITTED"
	case "repeatable_read":
		iso = "REPEATABLE READ"
	case "serializable":
		iso = "SERIALIZABLE"
	default:
		return nil, fmt.Errorf("workload %q: isolation %q: want read_committed, repeatable_read or serializable", spec.Name, opts.Isolation)
	}
	return &bank{table: BankTable(spec.Name), accounts: opts.Accounts, initial: opts.InitialBalance, isolation: iso}, nil
}

// setup creates the accounts, each with the initial balance. Running it
// again resets them: the invariant is the total of a fresh bank.
func (b *bank) setup(ctx context.Context, conn *pgx.Conn) error {
	create := "CREATE TABLE IF NOT EXISTS " + b.table + " (id int PRIMARY KEY, balance bigint NOT NULL)"
	if err := createTable(ctx, conn, create); err != nil {
		return fmt.Errorf("creating bank table %s: %w", b.table, err)
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DELETE FROM "+b.table); err != nil {
			return fmt.Errorf("emptying bank table %s: %w", b.table, err)
		}
		_, err := tx.Exec(ctx, "INSERT INTO "+b.table+" (id, balance) SELECT g, $1 FROM generate_series(0, $2 - 1) g",
			b.initial, b.accounts)
		if err != nil {
			return fmt.Errorf("opening accounts in %s: %w", b.table, err)
		}
		return nil
	})
}

func (b *bank) next(c *client, op *history.Op) { op.Kind = "transfer" }

// do transfers a random amount between two random accounts, retrying on a
// serialization failure or deadlock.
func (b *bank) do(ctx context.Context, c *client, op *history.Op) {
	from := c.rng.IntN(b.accounts)
	to := c.rng.IntN(b.accounts - 1)
	if to >= from {
		to++
	}
	amount := 1 + c.rng.Int64N(bankMaxAmount)
	op.Key = fmt.Sprintf("%d->%d:%d", from, to, amount)
	for attempt := 0; ; attempt++ {
		op.Outcome, op.SQLState, op.Error = "", "", ""
		b.transfer(ctx, c, op, from, to, amount)
		if op.Outcome != history.Fail || c.conn == nil || attempt >= bankRetries ||
			!slices.Contains(retryableByDefault, op.SQLState) {
			return
		}
		op.Retried = append(op.Retried, op.SQLState)
		c.retryPause(ctx, attempt)
	}
}

func (b *bank) transfer(ctx context.Context, c *client, op *history.Op, from, to int, amount int64) {
	if _, err := c.exec(ctx, op, PhaseBegin, false, "BEGIN ISOLATION LEVEL "+b.isolation); err != nil {
		return
	}
	// Rows are updated in id order, so that two transfers between the same
	// accounts do not deadlock (each deadlock costs deadlock_timeout).
	type change struct {
		id    int
		delta int64
	}
	changes := []change{{from, -amount}, {to, amount}}
	if to < from {
		changes[0], changes[1] = changes[1], changes[0]
	}
	for _, ch := range changes {
		tag, err := c.exec(ctx, op, PhaseUpdate, false, "UPDATE "+b.table+" SET balance = balance + $1 WHERE id = $2", ch.delta, ch.id)
		if err != nil {
			return
		}
		if tag.RowsAffected() != 1 {
			c.failTag(ctx, op, fmt.Sprintf("account %d not found in %s", ch.id, b.table))
			return
		}
	}
	tag, err := c.exec(ctx, op, PhaseCommit, true, "COMMIT")
	if err != nil {
		return
	}
	if tag.String() == "ROLLBACK" {
		c.failTag(ctx, op, "COMMIT answered ROLLBACK: the transaction had failed")
		return
	}
	op.Outcome = history.OK
}
