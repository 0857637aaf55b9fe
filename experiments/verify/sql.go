package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/experiments"
)

// result is a query's rows as PostgreSQL's text output; nil is NULL.
type result struct {
	Columns []string
	Rows    [][]*string
}

// query runs sql with the simple protocol, so every value is PostgreSQL's
// own text output and compares as the user would see it in psql.
func query(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, sql string) (result, error) {
	var res result
	rows, err := q.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return res, err
	}
	defer rows.Close()
	for _, f := range rows.FieldDescriptions() {
		res.Columns = append(res.Columns, f.Name)
	}
	for rows.Next() {
		raw := rows.RawValues()
		row := make([]*string, len(raw))
		for i, b := range raw {
			if b != nil {
				s := string(b)
				row[i] = &s
			}
		}
		res.Rows = append(res.Rows, row)
	}
	return res, rows.Err()
}

// shown is a row for evidence: strings and nulls.
func shown(row []*string) []any {
	out := make([]any, len(row))
	for i, v := range row {
		out[i] = deref(v)
	}
	return out
}

func shownRows(rows [][]*string) [][]any {
	out := make([][]any, 0, min(len(rows), MaxListed))
	for _, r := range bounded(rows) {
		out = append(out, shown(r))
	}
	return out
}

func dsnOr(dsn string, run Run) string {
	if dsn != "" {
		return dsn
	}
	return run.VerifyDSN
}

// sqlCheck runs a query and checks its single value, or that it returns no
// rows.
func sqlCheck(ctx context.Context, c *experiments.SQLCheck, run Run) Verdict {
	v := newVerdict(c.Type(), "")
	v.Evidence["sql"] = c.SQL
	conn, err := connect(ctx, dsnOr(c.DSN, run))
	if err != nil {
		return failed(v.Type, "", err)
	}
	defer closeConn(ctx, conn)
	res, err := query(ctx, conn, c.SQL)
	if err != nil {
		vd := failed(v.Type, "", fmt.Errorf("running the query: %w", err))
		vd.Evidence["sql"] = c.SQL
		return vd
	}
	e := v.Evidence
	e["columns"] = res.Columns
	e["row_count"] = len(res.Rows)
	if c.ExpectNoRows {
		if len(res.Rows) == 0 {
			v.judge(true, "the query returned no rows")
			return v
		}
		e["rows"] = shownRows(res.Rows)
		v.judge(false, "the query returned %s, want none; first: %s", count(len(res.Rows), "row"), rowText(res.Rows[0]))
		return v
	}
	if len(res.Rows) != 1 || len(res.Columns) != 1 {
		e["rows"] = shownRows(res.Rows)
		v.judge(false, "the query returned %s of %s, want one value", count(len(res.Rows), "row"), count(len(res.Columns), "column"))
		return v
	}
	value := res.Rows[0][0]
	e["value"] = deref(value)
	e["expect"] = describeExpect(c.Expect)
	ok, why := Meets(c.Expect, value, 0)
	v.judge(ok, "%s", why)
	return v
}

func rowText(row []*string) string {
	b, _ := json.Marshal(shown(row))
	return string(b)
}

func describeExpect(e experiments.Expect) map[string]any {
	out := map[string]any{}
	if e.HasEquals {
		out["equals"] = e.Equals
	}
	if e.Min != nil {
		out["min"] = *e.Min
	}
	if e.Max != nil {
		out["max"] = *e.Max
	}
	return out
}

// Meets reports whether a query's value (PostgreSQL's text output, nil for
// NULL) meets e, and says why in words. A number may be within tolerance
// of Equals. Steady-state probes use it too.
func Meets(e experiments.Expect, value *string, tolerance float64) (bool, string) {
	show := "NULL"
	if value != nil {
		show = strconv.Quote(*value)
	}
	if e.HasEquals {
		ok, err := equals(e.Equals, value, tolerance)
		switch {
		case err != nil:
			return false, fmt.Sprintf("value is %s, want %v: %v", show, e.Equals, err)
		case !ok && tolerance > 0:
			return false, fmt.Sprintf("value is %s, want %v ± %v", show, e.Equals, tolerance)
		case !ok:
			return false, fmt.Sprintf("value is %s, want %v", show, showWant(e.Equals))
		}
	}
	if e.Min != nil || e.Max != nil {
		if value == nil {
			return false, "value is NULL, want a number"
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(*value), 64)
		if err != nil {
			return false, fmt.Sprintf("value is %s, want a number", show)
		}
		if e.Min != nil && f < *e.Min {
			return false, fmt.Sprintf("value is %s, want at least %v", show, *e.Min)
		}
		if e.Max != nil && f > *e.Max {
			return false, fmt.Sprintf("value is %s, want at most %v", show, *e.Max)
		}
	}
	return true, fmt.Sprintf("value is %s as expected", show)
}

func showWant(want any) string {
	switch w := want.(type) {
	case nil:
		return "NULL"
	case string:
		return strconv.Quote(w)
	}
	return fmt.Sprint(want)
}

func equals(want any, value *string, tolerance float64) (bool, error) {
	if want == nil {
		return value == nil, nil
	}
	if value == nil {
		return false, nil
	}
	s := strings.TrimSpace(*value)
	switch w := want.(type) {
	case string:
		return *value == w, nil
	case bool:
		switch strings.ToLower(s) {
		case "t", "true", "on", "yes", "1":
			return w, nil
		case "f", "false", "off", "no", "0":
			return !w, nil
		}
		return false, fmt.Errorf("not a boolean")
	}
	wantNum, ok := number(want)
	if !ok {
		return false, fmt.Errorf("cannot compare with a %T", want)
	}
	got, ok := new(big.Rat).SetString(s)
	if !ok {
		return false, fmt.Errorf("not a number")
	}
	if tolerance > 0 {
		diff, _ := new(big.Rat).Sub(got, wantNum).Float64()
		return math.Abs(diff) <= tolerance, nil
	}
	return got.Cmp(wantNum) == 0, nil
}

func number(v any) (*big.Rat, bool) {
	switch n := v.(type) {
	case int:
		return new(big.Rat).SetInt64(int64(n)), true
	case int64:
		return new(big.Rat).SetInt64(n), true
	case uint64:
		return new(big.Rat).SetInt(new(big.Int).SetUint64(n)), true
	case float64:
		if math.IsNaN(n) || math.IsInf(n, 0) {
			return nil, false
		}
		return new(big.Rat).SetFloat64(n), true
	}
	return nil, false
}

// sqlEqual checks that two queries return the same multiset of rows,
// compared as text, both read from one snapshot.
func sqlEqual(ctx context.Context, c *experiments.SQLEqual, run Run) Verdict {
	v := newVerdict(c.Type(), "")
	e := v.Evidence
	e["left_sql"] = c.Left
	e["right_sql"] = c.Right
	conn, err := connect(ctx, dsnOr(c.DSN, run))
	if err != nil {
		return failed(v.Type, "", err)
	}
	defer closeConn(ctx, conn)
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return failed(v.Type, "", fmt.Errorf("starting a snapshot: %w", err))
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	left, err := query(ctx, tx, c.Left)
	if err != nil {
		return failed(v.Type, "", fmt.Errorf("running the left query: %w", err))
	}
	right, err := query(ctx, tx, c.Right)
	if err != nil {
		return failed(v.Type, "", fmt.Errorf("running the right query: %w", err))
	}
	e["left_columns"] = left.Columns
	e["right_columns"] = right.Columns
	e["left_rows"] = len(left.Rows)
	e["right_rows"] = len(right.Rows)
	if len(left.Columns) != len(right.Columns) {
		v.judge(false, "the left query returns %d columns, the right %d", len(left.Columns), len(right.Columns))
		return v
	}
	onlyLeft, onlyRight := multisetDiff(left.Rows, right.Rows)
	e["only_left"] = len(onlyLeft)
	e["only_left_rows"] = shownRows(onlyLeft)
	e["only_right"] = len(onlyRight)
	e["only_right_rows"] = shownRows(onlyRight)
	if len(onlyLeft) == 0 && len(onlyRight) == 0 {
		v.judge(true, "both queries return the same %d rows", len(left.Rows))
		return v
	}
	first := ""
	switch {
	case len(onlyLeft) > 0:
		first = "; first only on the left: " + rowText(onlyLeft[0])
	default:
		first = "; first only on the right: " + rowText(onlyRight[0])
	}
	v.judge(false, "the queries differ: %s only on the left, %d only on the right (of %d and %d)%s",
		count(len(onlyLeft), "row"), len(onlyRight), len(left.Rows), len(right.Rows), first)
	return v
}

// multisetDiff returns the rows of a missing from b and those of b missing
// from a, counting duplicates, in the order they were returned.
func multisetDiff(a, b [][]*string) (onlyA, onlyB [][]*string) {
	key := func(r []*string) string {
		k, _ := json.Marshal(r)
		return string(k)
	}
	count := map[string]int{}
	for _, r := range b {
		count[key(r)]++
	}
	for _, r := range a {
		k := key(r)
		if count[k] > 0 {
			count[k]--
		} else {
			onlyA = append(onlyA, r)
		}
	}
	// What is left in count is b's surplus; take it in b's order.
	for _, r := range b {
		k := key(r)
		if count[k] > 0 {
			count[k]--
			onlyB = append(onlyB, r)
		}
	}
	return onlyA, onlyB
}
