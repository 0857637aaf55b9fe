package workload

import (
	"context"
	"strconv"
	"testing"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// Statements run in proportion to their weights, each named by its SQL.
func TestSQLWeights(t *testing.T) {
	db, direct := newDB(t)
	if _, err := direct.Exec(context.Background(), "CREATE TABLE a (n int); CREATE TABLE b (n int)"); err != nil {
		t.Fatal(err)
	}
	spec := experiments.Workload{Name: "mix", Type: experiments.WorkloadSQL, Clients: 2, SQL: &experiments.SQLOptions{
		Statements: []experiments.Statement{
			{SQL: "INSERT INTO a VALUES (1)", Weight: 3},
			{SQL: "INSERT INTO b VALUES (1)", Weight: 1, Transaction: true},
		},
	}}
	w, h := newWorkload(t, spec, dsnOf(db), dsnOf(db))
	// 400 operations, however long they take: enough that the 3:1 split
	// lands within the bounds below but for one run in a thousand.
	runUntil(t, w, h, func(ops []history.Op) bool { return len(ops) >= 400 })

	kinds := map[string]int{}
	for _, op := range h.Of("mix") {
		if op.Outcome != history.OK {
			t.Fatalf("op %+v: want ok", op)
		}
		kinds[op.Kind]++
	}
	na, nb := kinds["INSERT INTO a VALUES (1)"], kinds["INSERT INTO b VALUES (1)"]
	if len(kinds) != 2 || nb < 10 || float64(na) < 2*float64(nb) || float64(na) > 4.5*float64(nb) {
		t.Fatalf("ops by kind %v, want about 3:1", kinds)
	}
	if rows := queryInt(t, direct, "SELECT count(*) FROM a"); rows != int64(na) {
		t.Fatalf("a has %d rows, %d acknowledged", rows, na)
	}
	if rows := queryInt(t, direct, "SELECT count(*) FROM b"); rows != int64(nb) {
		t.Fatalf("b has %d rows, %d acknowledged", rows, nb)
	}
}

// A statement that fails with 40001 twice out of three calls (counted by a
// sequence, which does not roll back) succeeds with enough retries, fails
// without, and an SQLSTATE not listed is not retried.
func TestSQLRetry(t *testing.T) {
	flaky := func(every int, code string) string {
		return `DO $$ BEGIN IF nextval('calls') % ` + strconv.Itoa(every) + ` <> 0 THEN RAISE EXCEPTION 'flaky' USING ERRCODE = '` + code + `'; END IF; END $$`
	}
	cases := []struct {
		name        string
		stmt        experiments.Statement
		retry       experiments.Retry
		callsPerOK  int64
		callsPerErr int64
		wantState   string
	}{
		{"recovers", experiments.Statement{SQL: flaky(3, "40001")}, experiments.Retry{Max: 2, On: []string{"40001"}}, 3, 0, ""},
		{"recovers in a transaction", experiments.Statement{SQL: flaky(3, "40001"), Transaction: true}, experiments.Retry{Max: 5}, 3, 0, ""},
		{"retries exhausted", experiments.Statement{SQL: flaky(3, "40001")}, experiments.Retry{Max: 1, On: []string{"40001"}}, 1, 2, "40001"},
		{"not retried", experiments.Statement{SQL: flaky(1000000, "23505")}, experiments.Retry{Max: 3, On: []string{"40001"}}, 0, 1, "23505"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, direct := newDB(t)
			if _, err := direct.Exec(context.Background(), "CREATE SEQUENCE calls"); err != nil {
				t.Fatal(err)
			}
			spec := experiments.Workload{Name: "flaky", Type: experiments.WorkloadSQL, Clients: 1,
				SQL: &experiments.SQLOptions{Statements: []experiments.Statement{tc.stmt}, Retry: tc.retry}}
			w, h := newWorkload(t, spec, dsnOf(db), dsnOf(db))
			runUntil(t, w, h, func(ops []history.Op) bool { return len(ops) >= 5 })

			ops := h.Of("flaky")
			counts := history.Counts(ops)
			if len(ops) < 3 || counts[history.Unknown] != 0 || (tc.callsPerOK == 0) != (counts[history.OK] == 0) || (tc.callsPerErr == 0) != (counts[history.Fail] == 0) {
				t.Fatalf("outcomes %v", counts)
			}
			for _, op := range byOutcome(ops, history.Fail) {
				if op.SQLState != tc.wantState {
					t.Fatalf("failed op %+v: want %s", op, tc.wantState)
				}
			}
			want := tc.callsPerOK*int64(counts[history.OK]) + tc.callsPerErr*int64(counts[history.Fail])
			if calls := queryInt(t, direct, "SELECT last_value FROM calls"); calls != want {
				t.Fatalf("statement ran %d times; want %d for outcomes %v", calls, want, counts)
			}
			// Each attempt but the last of an operation failed and was
			// retried: the op says so, with the SQLSTATE the client saw.
			for _, op := range ops {
				calls := tc.callsPerOK
				if op.Outcome == history.Fail {
					calls = tc.callsPerErr
				}
				if int64(len(op.Retried)) != calls-1 {
					t.Fatalf("op %+v: %d retried attempts, want %d", op, len(op.Retried), calls-1)
				}
				for _, state := range op.Retried {
					if state != "40001" {
						t.Fatalf("op %+v: retried on %q, want 40001", op, state)
					}
				}
			}
		})
	}
}

// A cut after the server ran an autocommit statement leaves it unknown (it
// was its own commit); inside a transaction the same cut fails it.
func TestSQLCut(t *testing.T) {
	for _, tx := range []bool{false, true} {
		want, phase := history.Unknown, PhaseStatement
		if tx {
			want = history.Fail
		}
		t.Run(string(want), func(t *testing.T) {
			db, direct := newDB(t)
			if _, err := direct.Exec(context.Background(), "CREATE TABLE a (n int)"); err != nil {
				t.Fatal(err)
			}
			addr, engine := faultProxy(t)
			addRule(t, engine, faults.Rule{Name: "cut", Match: faults.Match{Tag: "INSERT"},
				Action: faults.Action{Type: "disconnect"}, Limits: faults.Limits{Times: 1}})
			spec := experiments.Workload{Name: "ins", Type: experiments.WorkloadSQL, Clients: 1,
				SQL: &experiments.SQLOptions{Statements: []experiments.Statement{{SQL: "INSERT INTO a VALUES (1)", Transaction: tx}}}}
			w, h := newWorkload(t, spec, pgtest.ConnString(addr, pgtest.SuperUser, "", db), dsnOf(db))
			runUntil(t, w, h, func(ops []history.Op) bool {
				return len(ops) > 0 && ops[0].Outcome != history.OK && okAfter(ops, ops[0].Outcome)
			})
			ops := h.Of("ins")
			counts := history.Counts(ops)
			if counts[want] != 1 || counts[history.OK] != len(ops)-1 {
				t.Fatalf("outcomes %v, want one %s", counts, want)
			}
			if ops[0].Outcome != want || ops[0].Phase != phase {
				t.Fatalf("first op %+v: want %s at %s", ops[0], want, phase)
			}
			rows := queryInt(t, direct, "SELECT count(*) FROM a")
			if wantRows := int64(counts[history.OK]) + map[bool]int64{false: 1, true: 0}[tx]; rows != wantRows {
				t.Fatalf("a has %d rows, want %d", rows, wantRows)
			}
		})
	}
}
