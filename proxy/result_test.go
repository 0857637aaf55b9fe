package proxy_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// resultCase is a database with a table t, a direct connection to check
// it, and a proxy with its own engine to run the client through.
type resultCase struct {
	ctx    context.Context
	e      *faults.Engine
	direct *pgx.Conn
	addr   string // the proxy's
	db     string
	dsn    string // through the proxy
}

func newResultCase(t *testing.T) resultCase {
	t.Helper()
	ctx := testCtx(t)
	db := newDatabase(t)
	direct := connect(t, ctx, pg.DSN(pgtest.SuperUser, "", db))
	mustExec(t, ctx, direct, "CREATE TABLE t (id int PRIMARY KEY)")
	in, e, _ := faultProxy(t)
	return resultCase{ctx, e, direct, in.addr(), db, pgtest.ConnString(in.addr(), pgtest.SuperUser, "", db)}
}

// rows counts t's rows once the client's server connection is gone, so
// that the server has done all it will.
func (rc resultCase) rows(t *testing.T) int {
	t.Helper()
	waitFor(t, "the server connection to go", func() bool {
		var others int
		err := rc.direct.QueryRow(rc.ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()").Scan(&others)
		if err != nil {
			t.Fatal(err)
		}
		return others == 0
	})
	var n int
	if err := rc.direct.QueryRow(rc.ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A disconnect when: result lets the server run the statement and cuts the
// session where its result comes back: done, and the client in doubt.
func TestDisconnectAtResult(t *testing.T) {
	// COMMIT of a simple-protocol transaction block, with either close:
	// the client hears not a byte of COMMIT's answer, only the end of its
	// connection (a reset with rst), and the rows are committed.
	for _, how := range []string{"fin", "rst"} {
		t.Run("commit/"+how, func(t *testing.T) {
			rc := newResultCase(t)
			c, fe := login(t, rc.addr, rc.db)
			addRule(t, rc.e, faults.Rule{Name: "cut-at-commit", Match: faults.Match{Statement: faults.StringList{"commit"}},
				Action: faults.Action{Type: "disconnect", When: "result", Close: how}})
			exchange(t, fe, "BEGIN")
			exchange(t, fe, "INSERT INTO t VALUES (1)")
			fe.Send(&pgproto3.Query{String: "COMMIT"})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := io.Copy(io.Discard, c)
			if n != 0 {
				t.Fatalf("the client got %d bytes of COMMIT's answer", n)
			}
			if reset := err != nil && isReset(err); reset != (how == "rst") || how == "fin" && err != nil {
				t.Fatalf("close %s: the client's read ended with %v", how, err)
			}
			if n := rc.rows(t); n != 1 {
				t.Fatalf("%d rows after the cut COMMIT, want 1: the server commits before it answers", n)
			}
		})
	}

	// An INSERT in autocommit through the extended protocol, matched by its
	// fingerprint.
	t.Run("insert/extended", func(t *testing.T) {
		rc := newResultCase(t)
		conn := connect(t, rc.ctx, rc.dsn, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe })
		addRule(t, rc.e, faults.Rule{Name: "cut-at-insert", Match: faults.Match{Fingerprint: "INSERT INTO t VALUES ($1)"},
			Action: faults.Action{Type: "disconnect", When: "result"}})
		if tag, err := conn.Exec(rc.ctx, "INSERT INTO t VALUES ($1)", 1); !isConnectionError(err) {
			t.Fatalf("INSERT: want a connection error, got tag %q, %v", tag.String(), err)
		}
		if n := rc.rows(t); n != 1 {
			t.Fatalf("%d rows after the cut INSERT, want 1", n)
		}
		if n := fired(t, rc.e, "cut-at-insert"); n != 1 {
			t.Fatalf("fired %d times", n)
		}
	})

	// A pipelined batch (one Sync) whose second statement the rule
	// matches: the first statement's result reaches the client, the cut
	// comes at the second's.
	t.Run("pipeline", func(t *testing.T) {
		rc := newResultCase(t)
		conn := connect(t, rc.ctx, rc.dsn, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = pgx.QueryExecModeCacheStatement })
		// Not a fingerprint: all three statements have the same one.
		addRule(t, rc.e, faults.Rule{Name: "cut-at-second", Match: faults.Match{SQL: `VALUES \(2\)`},
			Action: faults.Action{Type: "disconnect", When: "result"}})
		b := &pgx.Batch{}
		b.Queue("INSERT INTO t VALUES (1)")
		b.Queue("INSERT INTO t VALUES (2)")
		b.Queue("INSERT INTO t VALUES (3)")
		br := conn.SendBatch(rc.ctx, b)
		if tag, err := br.Exec(); err != nil || tag.String() != "INSERT 0 1" {
			t.Fatalf("first statement: %q %v; want its result, which came before the cut", tag.String(), err)
		}
		if tag, err := br.Exec(); !isConnectionError(err) {
			t.Fatalf("second statement: want a connection error, got %q %v", tag.String(), err)
		}
		br.Close()
		// The batch's Sync went with it: the server ran the whole batch,
		// and committed it, before its answers came back.
		if n := rc.rows(t); n != 3 {
			t.Fatalf("%d rows after the batch, want 3", n)
		}
	})

	// A statement the server fails on: the client hears the server's
	// error, nothing is cut, and the session goes on.
	for _, proto := range protocols {
		t.Run("server-error/"+proto.name, func(t *testing.T) {
			rc := newResultCase(t)
			conn := connect(t, rc.ctx, rc.dsn, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = proto.mode })
			addRule(t, rc.e, faults.Rule{Name: "cut-at-division", Match: faults.Match{SQL: `1 / 0`},
				Action: faults.Action{Type: "disconnect", When: "result"}})
			var n int
			err := conn.QueryRow(rc.ctx, "SELECT 1 / 0").Scan(&n)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "22012" {
				t.Fatalf("SELECT 1 / 0: want the server's 22012, got %v", err)
			}
			if f := fired(t, rc.e, "cut-at-division"); f != 1 {
				t.Fatalf("the rule fired %d times: the test measured nothing", f)
			}
			if err := conn.QueryRow(rc.ctx, "SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
				t.Fatalf("session afterwards: %d %v", n, err)
			}
			mustExec(t, rc.ctx, conn, "INSERT INTO t VALUES (1)")
		})
	}
}
