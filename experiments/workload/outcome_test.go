package workload

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
)

// notSent is an error pgconn marks as safe to retry, like its "conn
// closed".
type notSent struct{}

func (notSent) Error() string     { return "conn closed" }
func (notSent) SafeToRetry() bool { return true }

func TestClassify(t *testing.T) {
	pgErr := func(code, severity string) error {
		return fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code, Severity: severity, Message: "m"})
	}
	cases := []struct {
		name        string
		err         error
		commitPoint bool
		want        history.Outcome
		state       string
		lost        bool
	}{
		{"serialization failure at commit", pgErr("40001", "ERROR"), true, history.Fail, "40001", false},
		{"deadlock before commit", pgErr("40P01", "ERROR"), false, history.Fail, "40P01", false},
		{"any server error at commit", pgErr("23505", "ERROR"), true, history.Fail, "23505", false},
		{"fatal with another code", pgErr("53300", "FATAL"), true, history.Fail, "53300", false},
		{"EOF at commit", io.ErrUnexpectedEOF, true, history.Unknown, "", true},
		{"EOF before commit", io.EOF, false, history.Fail, "", true},
		{"reset at commit", &net.OpError{Op: "read", Err: errors.New("connection reset by peer")}, true, history.Unknown, "", true},
		{"PgBouncer lost its server at commit", pgErr("08P01", "ERROR"), true, history.Unknown, "08P01", true},
		{"admin shutdown at commit", pgErr("57P01", "FATAL"), true, history.Unknown, "57P01", true},
		{"crash shutdown before commit", pgErr("57P02", "FATAL"), false, history.Fail, "57P02", true},
		{"panic at commit", pgErr("XX000", "PANIC"), true, history.Unknown, "XX000", true},
		// pgx v5.12 says this when the connection is lost mid-statement.
		{"retry-safe conn closed at commit", notSent{}, true, history.Unknown, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, state, lost := classify(tc.err, tc.commitPoint)
			if got != tc.want || state != tc.state || lost != tc.lost {
				t.Fatalf("classify = %s, %q, lost %v; want %s, %q, lost %v", got, state, lost, tc.want, tc.state, tc.lost)
			}
		})
	}
}

func TestNames(t *testing.T) {
	gid := LedgerGID("ledger", "r123", 2, 17)
	if gid != "pgchaos:ledger:r123:c2:s17" || LedgerKey("ledger", "r123", 2, 17) != gid {
		t.Fatalf("gid %q", gid)
	}
	for _, name := range []string{"ledger", "a:b"} {
		g := LedgerGID(name, "r1", 3, 99)
		if len(g) <= len(LedgerGIDPrefix(name)) || g[:len(LedgerGIDPrefix(name))] != "pgchaos:"+name+":" {
			t.Fatalf("%q lacks its prefix", g)
		}
		w, run, c, s, ok := ParseLedgerGID(g)
		if !ok || w != name || run != "r1" || c != 3 || s != 99 {
			t.Fatalf("ParseLedgerGID(%q) = %q %q %d %d %v", g, w, run, c, s, ok)
		}
	}
	for _, bad := range []string{"", "pgchaos:", "pgchaos:ledger:r1:c1", "pgchaos:ledger:r1:x1:s2", "other:ledger:r1:c1:s1", "pgchaos::r1:c1:s1"} {
		if _, _, _, _, ok := ParseLedgerGID(bad); ok {
			t.Fatalf("ParseLedgerGID(%q) succeeded", bad)
		}
	}
	if got := BankTable("My-Bank.1"); got != "pgchaos_bank_my_bank_1" {
		t.Fatalf("BankTable = %q", got)
	}
}

func TestNewRejects(t *testing.T) {
	h := &history.History{}
	env := Env{DSN: "postgres://localhost/db", RunID: "r1", History: h}
	cases := []struct {
		name string
		spec experiments.Workload
		env  Env
	}{
		{"unknown type", experiments.Workload{Name: "w", Type: "nope"}, env},
		{"no history", experiments.Workload{Name: "w", Type: experiments.WorkloadLedger}, Env{DSN: env.DSN, RunID: "r1"}},
		{"no run id", experiments.Workload{Name: "w", Type: experiments.WorkloadLedger}, Env{DSN: env.DSN, History: h}},
		{"no dsn", experiments.Workload{Name: "w", Type: experiments.WorkloadLedger}, Env{RunID: "r1", History: h}},
		{"bad dsn", experiments.Workload{Name: "w", Type: experiments.WorkloadLedger}, Env{DSN: "postgres://[::1", RunID: "r1", History: h}},
		{"long gid", experiments.Workload{Name: string(make([]byte, 180)), Type: experiments.WorkloadLedger}, env},
		{"one account", experiments.Workload{Name: "w", Type: experiments.WorkloadBank, Bank: &experiments.BankOptions{Accounts: 1}}, env},
		{"bad isolation", experiments.Workload{Name: "w", Type: experiments.WorkloadBank, Bank: &experiments.BankOptions{Accounts: 2, Isolation: "snapshot"}}, env},
		{"no statements", experiments.Workload{Name: "w", Type: experiments.WorkloadSQL, SQL: &experiments.SQLOptions{}}, env},
		{"no command", experiments.Workload{Name: "w", Type: experiments.WorkloadExec, Exec: &experiments.ExecOptions{}}, env},
	}
	for _, tc := range cases {
		if _, err := New(tc.spec, tc.env); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
}
