package verify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
	"github.com/pgchaos/pgchaos/experiments/verify"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

var pg *pgtest.Postgres

func TestMain(m *testing.M) { pgtest.Main(m, pgtest.Options{}, &pg) }

var dbSeq atomic.Int64

var notIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// newDB creates a database of the test's own and returns its name and DSN.
// Verifiers look only at their own database, so tests do not see each
// other's tables, sessions or prepared transactions.
func newDB(t *testing.T) (name, dsn string) {
	t.Helper()
	name = fmt.Sprintf("v%d_%s", dbSeq.Add(1), notIdent.ReplaceAllString(strings.ToLower(t.Name()), "_"))
	if len(name) > 60 {
		name = name[:60]
	}
	if err := pg.CreateDatabase(ctx(t), name); err != nil {
		t.Fatal(err)
	}
	return name, pg.DSN(pgtest.SuperUser, "", name)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx(t), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec(t *testing.T, dsn string, sqls ...string) {
	t.Helper()
	conn, err := pgx.Connect(ctx(t), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, sql := range sqls {
		if _, err := conn.Exec(ctx(t), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// prepare leaves a prepared transaction with gid that inserts key into
// table, and rolls it back at the end of the test if it is still there.
func prepare(t *testing.T, dsn, table, gid string) {
	t.Helper()
	exec(t, dsn, "BEGIN",
		fmt.Sprintf("INSERT INTO %s (key) VALUES ('%s')", table, gid),
		fmt.Sprintf("PREPARE TRANSACTION '%s'", gid))
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Errorf("cleaning up %s: %v", gid, err)
			return
		}
		defer conn.Close(context.Background())
		var n int
		_ = conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1", gid).Scan(&n)
		if n > 0 {
			if _, err := conn.Exec(context.Background(), fmt.Sprintf("ROLLBACK PREPARED '%s'", gid)); err != nil {
				t.Errorf("cleaning up %s: %v", gid, err)
			}
		}
	})
}

func preparedGIDs(t *testing.T, dsn string) []string {
	t.Helper()
	conn := connect(t, dsn)
	rows, _ := conn.Query(ctx(t), "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid")
	gids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return gids
}

func keysIn(t *testing.T, dsn, table string) []string {
	t.Helper()
	conn := connect(t, dsn)
	rows, _ := conn.Query(ctx(t), "SELECT key FROM "+table+" ORDER BY key")
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// op is a history entry; at is its start as an offset from t0.
type op struct {
	workload string
	key, gid string
	phase    string
	outcome  history.Outcome
	at, took time.Duration
}

func hist(ops ...op) *history.History {
	h := &history.History{}
	for i, o := range ops {
		took := o.took
		if took == 0 {
			took = time.Millisecond
		}
		wl := o.workload
		if wl == "" {
			wl = "ledger"
		}
		h.Add(history.Op{
			Workload: wl, Client: i % 3, Seq: int64(i), Kind: "insert",
			Key: o.key, GID: o.gid, Phase: o.phase,
			Start: t0.Add(o.at), End: t0.Add(o.at + took), Outcome: o.outcome,
		})
	}
	return h
}

// check runs a verifier and makes sure its verdict can be reported.
func check(t *testing.T, c experiments.Check, run verify.Run) verify.Verdict {
	t.Helper()
	v := verify.Check(ctx(t), experiments.Verifier{Name: c.Type(), Check: c}, run)
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("verdict does not marshal: %v", err)
	}
	t.Logf("%s", b)
	if v.Type != c.Type() {
		t.Errorf("type %q, want %q", v.Type, c.Type())
	}
	if v.Summary == "" {
		t.Error("empty summary")
	}
	if v.Pass != strings.HasPrefix(v.Summary, "ok: ") {
		t.Errorf("pass %v but summary %q", v.Pass, v.Summary)
	}
	return v
}

func wantPass(t *testing.T, v verify.Verdict, pass bool) {
	t.Helper()
	if v.Pass != pass {
		t.Fatalf("pass = %v, want %v: %s", v.Pass, pass, v.Summary)
	}
}

func wantEvidence(t *testing.T, v verify.Verdict, key string, want any) {
	t.Helper()
	got, ok := v.Evidence[key]
	if !ok {
		t.Errorf("evidence has no %q: %v", key, v.Evidence)
		return
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("evidence %s = %v, want %v", key, got, want)
	}
}

func TestCheckNames(t *testing.T) {
	run := verify.Run{Fired: map[string]int64{"cut": 1}}
	v := verify.Check(ctx(t), experiments.Verifier{Name: "fault_fired", Check: &experiments.FaultFired{Rule: "cut", Min: 1}}, run)
	if v.Name != "fault_fired(cut)" || v.Type != "fault_fired" || !v.Pass {
		t.Errorf("got %+v", v)
	}
	v = verify.Check(ctx(t), experiments.Verifier{Name: "cut-really-cut", Check: &experiments.FaultFired{Rule: "cut", Min: 1}}, run)
	if v.Name != "cut-really-cut" {
		t.Errorf("name %q, want the verifier's own", v.Name)
	}
	v = verify.Check(ctx(t), experiments.Verifier{Name: "x"}, run)
	if v.Pass || v.Evidence == nil {
		t.Errorf("a verifier without a check: %+v", v)
	}
}
