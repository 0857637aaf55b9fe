package verify_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/verify"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// eventually runs the check until it passes as wanted or 15s pass.
func eventually(t *testing.T, c experiments.Check, run verify.Run, pass bool, until func(verify.Verdict) bool) verify.Verdict {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		v := verify.Check(ctx(t), experiments.Verifier{Check: c}, run)
		if v.Pass == pass && (until == nil || until(v)) {
			return check(t, c, run)
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %v after 15s: %s %v", v.Pass, v.Summary, v.Evidence)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func all() *experiments.Sessions {
	return &experiments.Sessions{NoIdleInTransaction: true, NoWaitingClients: true}
}

func TestSessionsIdleInTransaction(t *testing.T) {
	_, dsn := newDB(t)
	run := verify.Run{VerifyDSN: dsn}
	wantPass(t, check(t, all(), run), true)

	conn := connect(t, dsn)
	if _, err := conn.Exec(ctx(t), "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx(t), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	v := eventually(t, all(), run, false, nil)
	wantEvidence(t, v, "idle_in_transaction", 1)
	if ss := v.Evidence["idle_in_transaction_sessions"].([]verify.Session); ss[0].PID != int32(conn.PgConn().PID()) {
		t.Errorf("evidence names pid %d, want %d", ss[0].PID, conn.PgConn().PID())
	}
	wantPass(t, check(t, &experiments.Sessions{NoWaitingClients: true}, run), true)

	// A second one: the summary lists both.
	other := connect(t, dsn)
	if _, err := other.Exec(ctx(t), "BEGIN; SELECT 1"); err != nil {
		t.Fatal(err)
	}
	v = eventually(t, all(), run, false, func(v verify.Verdict) bool { return fmt.Sprint(v.Evidence["idle_in_transaction"]) == "2" })
	a, b := conn.PgConn().PID(), other.PgConn().PID()
	if !strings.Contains(v.Summary, fmt.Sprintf("2 sessions idle in transaction (pids %d, %d)", a, b)) &&
		!strings.Contains(v.Summary, fmt.Sprintf("2 sessions idle in transaction (pids %d, %d)", b, a)) {
		t.Errorf("summary %q: want both pids", v.Summary)
	}
	if _, err := other.Exec(ctx(t), "COMMIT"); err != nil {
		t.Fatal(err)
	}

	if _, err := conn.Exec(ctx(t), "COMMIT"); err != nil {
		t.Fatal(err)
	}
	eventually(t, all(), run, true, nil)
}

func TestSessionsWaitingOnALock(t *testing.T) {
	_, dsn := newDB(t)
	exec(t, dsn, "CREATE TABLE t (n int)")
	run := verify.Run{VerifyDSN: dsn}
	holder := connect(t, dsn)
	tx, err := holder.Begin(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx(t), "LOCK TABLE t"); err != nil {
		t.Fatal(err)
	}
	waiter := connect(t, dsn)
	done := make(chan error, 1)
	go func() {
		_, err := waiter.Exec(ctx(t), "SELECT * FROM t")
		done <- err
	}()
	v := eventually(t, &experiments.Sessions{NoWaitingClients: true}, run, false, nil)
	wantEvidence(t, v, "waiting_on_lock", 1)

	if err := tx.Rollback(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	eventually(t, all(), run, true, nil)
}

func TestSessionsPgBouncer(t *testing.T) {
	db, dsn := newDB(t)
	b, err := pgtest.StartPgBouncer(ctx(t), pgtest.PgBouncerOptions{
		Upstream: pg.Addr(),
		Settings: map[string]string{"default_pool_size": "1"},
	})
	pgtest.Unavailable(t, err)
	t.Cleanup(func() { _ = b.Stop() })
	run := verify.Run{VerifyDSN: dsn, PgBouncerAdminDSN: b.DSN(pgtest.SuperUser, "", "pgbouncer")}
	through := b.DSN(pgtest.SuperUser, "", db)

	// In session mode the one server connection stays with the first
	// client, so the second queues in PgBouncer.
	first := connect(t, through)
	if _, err := first.Exec(ctx(t), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	v := check(t, all(), run)
	wantPass(t, v, true)

	secondCtx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	done := make(chan error, 1)
	go func() {
		conn, err := pgx.Connect(secondCtx, through)
		if err == nil {
			_, err = conn.Exec(secondCtx, "SELECT 1")
			conn.Close(context.Background())
		}
		done <- err
	}()
	v = eventually(t, all(), run, false, func(v verify.Verdict) bool { return v.Evidence["pgbouncer_cl_waiting"] == int64(1) })
	wantEvidence(t, v, "pgbouncer_cl_waiting", 1)

	first.Close(ctx(t))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	eventually(t, all(), run, true, nil)
}

func TestSessionsNothingToCheck(t *testing.T) {
	wantPass(t, check(t, &experiments.Sessions{}, verify.Run{}), true)
	wantPass(t, check(t, all(), verify.Run{VerifyDSN: "postgres://127.0.0.1:1/nowhere?connect_timeout=1"}), false)
}
