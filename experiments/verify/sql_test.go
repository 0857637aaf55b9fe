package verify_test

import (
	"strings"
	"testing"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/verify"
)

func TestBankInvariant(t *testing.T) {
	_, dsn := newDB(t)
	exec(t, dsn,
		"CREATE TABLE pgchaos_bank_bank (id int PRIMARY KEY, balance bigint NOT NULL)",
		"INSERT INTO pgchaos_bank_bank SELECT i, 100 FROM generate_series(1, 10) i",
		// Transfers move money around without changing the total.
		"UPDATE pgchaos_bank_bank SET balance = balance - 30 WHERE id = 1",
		"UPDATE pgchaos_bank_bank SET balance = balance + 30 WHERE id = 2",
		// An unquoted name folds to lower case.
		"CREATE TABLE pgchaos_bank_Mixed (id int PRIMARY KEY, balance bigint NOT NULL)",
		"INSERT INTO pgchaos_bank_Mixed SELECT i, 7 FROM generate_series(1, 3) i")
	loads := map[string]experiments.Workload{
		"bank":  {Name: "bank", Type: "bank", Bank: &experiments.BankOptions{Accounts: 10, InitialBalance: 100}},
		"Mixed": {Name: "Mixed", Type: "bank", Bank: &experiments.BankOptions{Accounts: 3, InitialBalance: 7}},
	}
	run := verify.Run{VerifyDSN: dsn, Workloads: loads}

	v := check(t, &experiments.BankInvariant{Workload: "bank"}, run)
	wantPass(t, v, true)
	wantEvidence(t, v, "total", "1000")
	wantPass(t, check(t, &experiments.BankInvariant{Workload: "Mixed"}, run), true)

	// Defaults (10 × 100) when the spec is not at hand, or does not say
	// how many accounts.
	wantPass(t, check(t, &experiments.BankInvariant{Workload: "bank"}, verify.Run{VerifyDSN: dsn}), true)
	unsaid := map[string]experiments.Workload{"bank": {Name: "bank", Type: "bank", Bank: &experiments.BankOptions{InitialBalance: 100}}}
	wantPass(t, check(t, &experiments.BankInvariant{Workload: "bank"}, verify.Run{VerifyDSN: dsn, Workloads: unsaid}), true)

	exec(t, dsn, "UPDATE pgchaos_bank_bank SET balance = balance + 7 WHERE id = 3")
	v = check(t, &experiments.BankInvariant{Workload: "bank"}, run)
	wantPass(t, v, false)
	wantEvidence(t, v, "total", "1007")
	wantEvidence(t, v, "difference", "7")
	if !strings.HasSuffix(v.Summary, ": 7 was created") {
		t.Errorf("summary %q: want it to say 7 was created", v.Summary)
	}

	exec(t, dsn, "DELETE FROM pgchaos_bank_bank WHERE id = 4")
	v = check(t, &experiments.BankInvariant{Workload: "bank"}, run)
	wantPass(t, v, false)
	wantEvidence(t, v, "difference", "-93")
	wantEvidence(t, v, "accounts", 9)
	if !strings.HasSuffix(v.Summary, ": 93 was destroyed") {
		t.Errorf("summary %q: want it to say 93 was destroyed", v.Summary)
	}

	wantPass(t, check(t, &experiments.BankInvariant{Workload: "none"}, run), false)
}

func TestSQLCheck(t *testing.T) {
	_, dsn := newDB(t)
	exec(t, dsn, "CREATE TABLE t (n int, s text, b bool)",
		"INSERT INTO t VALUES (1, 'one', true), (2, 'two', false), (3, NULL, NULL)")
	f := func(x float64) *float64 { return &x }
	eq := func(v any) experiments.Expect { return experiments.Expect{Equals: v, HasEquals: true} }
	cases := []struct {
		name  string
		check experiments.SQLCheck
		pass  bool
		value any
	}{
		{"count equals", experiments.SQLCheck{SQL: "SELECT count(*) FROM t", Expect: eq(3)}, true, "3"},
		{"count differs", experiments.SQLCheck{SQL: "SELECT count(*) FROM t", Expect: eq(4)}, false, "3"},
		{"numeric equals a float", experiments.SQLCheck{SQL: "SELECT avg(n) FROM t", Expect: eq(2.0)}, true, "2.0000000000000000"},
		{"text", experiments.SQLCheck{SQL: "SELECT s FROM t WHERE n = 1", Expect: eq("one")}, true, "one"},
		{"text differs", experiments.SQLCheck{SQL: "SELECT s FROM t WHERE n = 2", Expect: eq("one")}, false, "two"},
		{"bool", experiments.SQLCheck{SQL: "SELECT b FROM t WHERE n = 1", Expect: eq(true)}, true, "t"},
		{"null", experiments.SQLCheck{SQL: "SELECT s FROM t WHERE n = 3", Expect: eq(nil)}, true, nil},
		{"null is not a number", experiments.SQLCheck{SQL: "SELECT s FROM t WHERE n = 3", Expect: eq(0)}, false, nil},
		{"within min and max", experiments.SQLCheck{SQL: "SELECT max(n) FROM t", Expect: experiments.Expect{Min: f(1), Max: f(3)}}, true, "3"},
		{"above max", experiments.SQLCheck{SQL: "SELECT max(n) FROM t", Expect: experiments.Expect{Max: f(2)}}, false, "3"},
		{"below min", experiments.SQLCheck{SQL: "SELECT min(n) FROM t", Expect: experiments.Expect{Min: f(2)}}, false, "1"},
		{"at min", experiments.SQLCheck{SQL: "SELECT min(n) FROM t", Expect: experiments.Expect{Min: f(1)}}, true, "1"},
		{"at max", experiments.SQLCheck{SQL: "SELECT max(n) FROM t", Expect: experiments.Expect{Max: f(3)}}, true, "3"},
		// Without a tolerance numbers compare exactly, beyond what a float
		// can tell apart.
		{"exact beyond a float", experiments.SQLCheck{SQL: "SELECT 1 + 1e-400::numeric", Expect: eq(1)}, false, "1." + strings.Repeat("0", 399) + "1"},
		{"no rows", experiments.SQLCheck{SQL: "SELECT * FROM t WHERE n > 5", ExpectNoRows: true}, true, nil},
		{"rows where none are expected", experiments.SQLCheck{SQL: "SELECT * FROM t WHERE n > 1", ExpectNoRows: true}, false, nil},
		{"several rows for one value", experiments.SQLCheck{SQL: "SELECT n FROM t", Expect: eq(1)}, false, nil},
		{"broken query", experiments.SQLCheck{SQL: "SELECT nope FROM t", Expect: eq(1)}, false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := check(t, &tc.check, verify.Run{VerifyDSN: dsn})
			wantPass(t, v, tc.pass)
			if tc.value != nil {
				wantEvidence(t, v, "value", tc.value)
			}
			if tc.check.ExpectNoRows && !tc.pass {
				if rows := v.Evidence["rows"].([][]any); len(rows) != 2 {
					t.Errorf("evidence rows %v, want the 2 returned", rows)
				}
			}
		})
	}
	t.Run("its own dsn", func(t *testing.T) {
		v := check(t, &experiments.SQLCheck{SQL: "SELECT count(*) FROM t", DSN: dsn, Expect: eq(3)}, verify.Run{VerifyDSN: "postgres://127.0.0.1:1/nowhere"})
		wantPass(t, v, true)
	})
}

func TestMeetsTolerance(t *testing.T) {
	v := "10.4"
	e := experiments.Expect{Equals: 10, HasEquals: true}
	if ok, why := verify.Meets(e, &v, 0.5); !ok {
		t.Errorf("10.4 within 0.5 of 10: %s", why)
	}
	if ok, _ := verify.Meets(e, &v, 0.1); ok {
		t.Error("10.4 within 0.1 of 10")
	}
	at := "10.5"
	if ok, why := verify.Meets(e, &at, 0.5); !ok {
		t.Errorf("10.5 is at the tolerance 0.5 of 10: %s", why)
	}
}

func TestSQLEqual(t *testing.T) {
	_, dsn := newDB(t)
	exec(t, dsn,
		"CREATE TABLE orders (id int, customer text, amount numeric)",
		"INSERT INTO orders VALUES (1, 'ann', 10), (2, 'bob', 5), (3, 'ann', 2.5), (4, NULL, 1)",
		"CREATE MATERIALIZED VIEW totals AS SELECT customer, sum(amount) AS total FROM orders GROUP BY customer")
	definition := "SELECT customer, sum(amount) AS total FROM orders GROUP BY customer"
	run := verify.Run{VerifyDSN: dsn}

	v := check(t, &experiments.SQLEqual{Left: "SELECT * FROM totals", Right: definition}, run)
	wantPass(t, v, true)
	wantEvidence(t, v, "left_rows", 3)

	// Order does not matter, multiplicity does.
	wantPass(t, check(t, &experiments.SQLEqual{Left: "SELECT 1 UNION ALL SELECT 2", Right: "SELECT 2 UNION ALL SELECT 1"}, run), true)
	v = check(t, &experiments.SQLEqual{Left: "SELECT 1 UNION ALL SELECT 1", Right: "SELECT 1"}, run)
	wantPass(t, v, false)
	wantEvidence(t, v, "only_left_rows", [][]any{{"1"}})
	wantEvidence(t, v, "only_right", 0)
	v = check(t, &experiments.SQLEqual{Left: "SELECT 1", Right: "SELECT 1 FROM generate_series(1, 3)"}, run)
	wantPass(t, v, false)
	wantEvidence(t, v, "only_right", 2)
	wantEvidence(t, v, "only_left", 0)

	// NULL and the text 'NULL' are different values.
	wantPass(t, check(t, &experiments.SQLEqual{Left: "SELECT NULL::text", Right: "SELECT 'NULL'"}, run), false)

	// A stale materialized view.
	exec(t, dsn, "INSERT INTO orders VALUES (5, 'bob', 1)")
	v = check(t, &experiments.SQLEqual{Left: "SELECT * FROM totals", Right: definition}, run)
	wantPass(t, v, false)
	wantEvidence(t, v, "only_left_rows", [][]any{{"bob", "5"}})
	wantEvidence(t, v, "only_right_rows", [][]any{{"bob", "6"}})
	// The summary shows a row that differs, not only how many.
	if want := `; first only on the left: ["bob","5"]`; !strings.HasSuffix(v.Summary, want) {
		t.Errorf("summary %q, want it to end %q", v.Summary, want)
	}

	v = check(t, &experiments.SQLEqual{Left: "SELECT 1, 2", Right: "SELECT 1"}, run)
	wantPass(t, v, false)
	wantPass(t, check(t, &experiments.SQLEqual{Left: "SELECT nope", Right: "SELECT 1"}, run), false)
}
