package workload

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
)

// PhaseStatement is a sql workload's own statement.
const PhaseStatement = "statement"

// kindMax is how much of a statement names its operations.
const kindMax = 60

// sqlLoad runs statements chosen at random by weight.
type sqlLoad struct {
	stmts []experiments.Statement
	kinds []string
	// cumulative weights, for picking
	cum   []int
	total int
	retry experiments.Retry
}

func newSQL(spec experiments.Workload) (*sqlLoad, error) {
	if spec.SQL == nil || len(spec.SQL.Statements) == 0 {
		return nil, fmt.Errorf("workload %q: no statements", spec.Name)
	}
	s := &sqlLoad{retry: spec.SQL.Retry}
	if s.retry.Max < 0 {
		return nil, fmt.Errorf("workload %q: retry.max %d is negative", spec.Name, s.retry.Max)
	}
	if s.retry.Max > 0 && len(s.retry.On) == 0 {
		s.retry.On = retryableByDefault
	}
	for i, st := range spec.SQL.Statements {
		if strings.TrimSpace(st.SQL) == "" {
			return nil, fmt.Errorf("workload %q: statement %d is empty", spec.Name, i+1)
		}
		if st.Weight <= 0 {
			st.Weight = 1
		}
		s.stmts = append(s.stmts, st)
		s.kinds = append(s.kinds, statementKind(st.SQL))
		s.total += st.Weight
		s.cum = append(s.cum, s.total)
	}
	return s, nil
}

// statementKind names a statement's operations by its first kindMax
// characters, on one line.
func statementKind(sql string) string {
	k := strings.Join(strings.Fields(sql), " ")
	if utf8.RuneCountInString(k) <= kindMax {
		return k
	}
	r := []rune(k)
	return string(r[:kindMax])
}

func (s *sqlLoad) setup(context.Context, *pgx.Conn) error { return nil }

func (s *sqlLoad) next(c *client, op *history.Op) {
	n := c.rng.IntN(s.total)
	c.pick, _ = slices.BinarySearch(s.cum, n+1)
	op.Kind = s.kinds[c.pick]
}

func (s *sqlLoad) do(ctx context.Context, c *client, op *history.Op) {
	st := s.stmts[c.pick]
	for attempt := 0; ; attempt++ {
		op.Outcome, op.SQLState, op.Error = "", "", ""
		s.once(ctx, c, op, st)
		if op.Outcome != history.Fail || c.conn == nil || attempt >= s.retry.Max ||
			!slices.Contains(s.retry.On, op.SQLState) {
			return
		}
		op.Retried = append(op.Retried, op.SQLState)
		c.retryPause(ctx, attempt)
	}
}

func (s *sqlLoad) once(ctx context.Context, c *client, op *history.Op, st experiments.Statement) {
	if !st.Transaction {
		// In autocommit the statement is its own commit point.
		if _, err := c.exec(ctx, op, PhaseStatement, true, st.SQL); err == nil {
			op.Outcome = history.OK
		}
		return
	}
	if _, err := c.exec(ctx, op, PhaseBegin, false, "BEGIN"); err != nil {
		return
	}
	if _, err := c.exec(ctx, op, PhaseStatement, false, st.SQL); err != nil {
		return
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
