package workload

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
)

var pg *pgtest.Postgres

func TestMain(m *testing.M) { pgtest.Main(m, pgtest.Options{}, &pg) }

var dbSeq atomic.Int64

// newDB creates a database of the test's own and returns its name and a
// direct connection to it. Prepared transactions left in it are rolled back
// when the test ends.
func newDB(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	name := fmt.Sprintf("wl_%d_%s", dbSeq.Add(1), strings.ToLower(t.Name()))
	name = strings.NewReplacer("/", "_", "-", "_", " ", "_").Replace(name)
	if len(name) > 60 {
		name = name[:60]
	}
	ctx := testCtx(t)
	if err := pg.CreateDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsnOf(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, gid := range preparedGIDs(t, conn, name) {
			if _, err := conn.Exec(ctx, "ROLLBACK PREPARED "+quoteLiteral(gid)); err != nil {
				t.Errorf("rolling back %s: %v", gid, err)
			}
		}
		conn.Close(ctx)
	})
	return name, conn
}

func dsnOf(db string) string { return pg.DSN(pgtest.SuperUser, "", db) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newWorkload makes spec's workload against dsn, set up, with a history of
// its own.
func newWorkload(t *testing.T, spec experiments.Workload, dsn, setupDSN string) (Workload, *history.History) {
	t.Helper()
	h := &history.History{}
	w, err := New(spec, Env{DSN: dsn, SetupDSN: setupDSN, RunID: "r1", History: h, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Setup(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	return w, h
}

// runFor runs w for d and checks that it stops promptly.
func runFor(t *testing.T, w Workload, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > d+stopGrace {
		t.Errorf("Run took %v to stop after %v", took, d)
	}
}

// runUntil runs w until done holds of its history (polled), or fails the
// test after a deadline.
func runUntil(t *testing.T, w Workload, h *history.History, done func([]history.Op) bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !done(h.Of(w.Name())) {
		if time.Now().After(deadline) {
			cancel()
			<-stopped
			t.Fatalf("condition not reached in 30s; outcomes %v", history.Counts(h.Of(w.Name())))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// faultProxy starts a pgchaos proxy with its own fault engine in front of
// the test Postgres.
func faultProxy(t *testing.T) (addr string, engine *faults.Engine) {
	t.Helper()
	engine = faults.NewEngine(faults.Options{Seed: 1})
	p, err := proxy.New(proxy.Config{Name: "pg", Listen: "127.0.0.1:0", Upstream: pg.Addr(), Faults: engine})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p.Addr().String(), engine
}

func addRule(t *testing.T, e *faults.Engine, r faults.Rule) {
	t.Helper()
	if _, err := e.Add(r); err != nil {
		t.Fatalf("adding rule %s: %v", r.Name, err)
	}
}

func fired(t *testing.T, e *faults.Engine, name string) int64 {
	t.Helper()
	st, err := e.Get("", name)
	if err != nil {
		t.Fatal(err)
	}
	return st.Fired
}

func preparedGIDs(t *testing.T, conn *pgx.Conn, db string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT gid FROM pg_prepared_xacts WHERE database = $1 ORDER BY gid", db)
	if err != nil {
		t.Fatal(err)
	}
	gids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return gids
}

func queryStrings(t *testing.T, conn *pgx.Conn, sql string, args ...any) map[string]bool {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, v := range vals {
		set[v] = true
	}
	return set
}

func queryInt(t *testing.T, conn *pgx.Conn, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func byOutcome(ops []history.Op, o history.Outcome) []history.Op {
	var out []history.Op
	for _, op := range ops {
		if op.Outcome == o {
			out = append(out, op)
		}
	}
	return out
}

// okAfter reports whether every client that had an op of outcome o later
// had an OK op: it reconnected and went on.
func okAfter(ops []history.Op, o history.Outcome) bool {
	last := map[int]time.Time{}
	for _, op := range ops {
		if op.Outcome == o && op.End.After(last[op.Client]) {
			last[op.Client] = op.End
		}
	}
	for client, end := range last {
		found := false
		for _, op := range ops {
			if op.Client == client && op.Outcome == history.OK && op.Start.After(end) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
