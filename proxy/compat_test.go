package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
)

func connect(t testing.TB, ctx context.Context, dsn string, mod ...func(*pgx.ConnConfig)) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse %s: %v", dsn, err)
	}
	for _, m := range mod {
		m(cfg)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect through %s: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// simpleProtocol suits transaction pooling, where prepared statements
// cannot follow a client from one server connection to the next.
func simpleProtocol(c *pgx.ConnConfig) { c.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol }

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestPgx runs the pgx compatibility cases in every topology.
func TestPgx(t *testing.T) {
	for _, topo := range allTopologies(t) {
		t.Run(topo.name, func(t *testing.T) {
			db := newDatabase(t)
			sessionDSN := pgtest.ConnString(topo.session, pgtest.SuperUser, "", db)

			t.Run("queries", func(t *testing.T) {
				ctx := testCtx(t)
				for _, addr := range []string{topo.session, topo.transaction} {
					conn := connect(t, ctx, pgtest.ConnString(addr, pgtest.SuperUser, "", db), simpleProtocol)
					var n int
					var s string
					if err := conn.QueryRow(ctx, "SELECT 40 + $1::int, $2::text", 2, "héllo").Scan(&n, &s); err != nil {
						t.Fatalf("query via %s: %v", addr, err)
					}
					if n != 42 || s != "héllo" {
						t.Fatalf("got %d %q", n, s)
					}
				}
				conn := connect(t, ctx, sessionDSN)
				rows, err := conn.Query(ctx, "SELECT g, repeat('x', g) FROM generate_series(1, 1000) g")
				if err != nil {
					t.Fatal(err)
				}
				count := 0
				for rows.Next() {
					var g int
					var x string
					if err := rows.Scan(&g, &x); err != nil {
						t.Fatal(err)
					}
					if len(x) != g {
						t.Fatalf("row %d: got %d bytes", g, len(x))
					}
					count++
				}
				if err := rows.Err(); err != nil || count != 1000 {
					t.Fatalf("rows: %d, %v", count, err)
				}
				// A server error passes through with its SQLSTATE and the session goes on.
				_, err = conn.Exec(ctx, "SELECT 1/0")
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "22012" {
					t.Fatalf("want division_by_zero 22012, got %v", err)
				}
				if err := conn.Ping(ctx); err != nil {
					t.Fatalf("session unusable after an error: %v", err)
				}
			})

			t.Run("pipelined batch", func(t *testing.T) {
				ctx := testCtx(t)
				conn := connect(t, ctx, sessionDSN)
				mustExec(t, ctx, conn, "CREATE TABLE batch (id int PRIMARY KEY, v text)")
				b := &pgx.Batch{}
				for i := range 100 {
					b.Queue("INSERT INTO batch VALUES ($1, $2)", i, fmt.Sprint("v", i))
				}
				b.Queue("SELECT count(*), sum(id) FROM batch")
				br := conn.SendBatch(ctx, b)
				for i := range 100 {
					if _, err := br.Exec(); err != nil {
						t.Fatalf("batch insert %d: %v", i, err)
					}
				}
				var count, sum int
				if err := br.QueryRow().Scan(&count, &sum); err != nil {
					t.Fatal(err)
				}
				if err := br.Close(); err != nil {
					t.Fatal(err)
				}
				if count != 100 || sum != 4950 {
					t.Fatalf("count=%d sum=%d", count, sum)
				}
			})

			t.Run("copy", func(t *testing.T) {
				ctx := testCtx(t)
				conn := connect(t, ctx, sessionDSN)
				mustExec(t, ctx, conn, "CREATE TABLE copied (id int, payload text)")
				rows := make([][]any, 5000)
				for i := range rows {
					rows[i] = []any{i, strings.Repeat("p", i%300)}
				}
				n, err := conn.CopyFrom(ctx, pgx.Identifier{"copied"}, []string{"id", "payload"}, pgx.CopyFromRows(rows))
				if err != nil || n != int64(len(rows)) {
					t.Fatalf("COPY FROM: %d rows, %v", n, err)
				}
				var out bytes.Buffer
				tag, err := conn.PgConn().CopyTo(ctx, &out, "COPY (SELECT id, payload FROM copied ORDER BY id) TO STDOUT")
				if err != nil {
					t.Fatalf("COPY TO: %v", err)
				}
				if tag.RowsAffected() != int64(len(rows)) {
					t.Fatalf("COPY TO: %d rows", tag.RowsAffected())
				}
				lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
				if len(lines) != len(rows) || lines[299] != "299\t"+strings.Repeat("p", 299) {
					t.Fatalf("COPY TO returned %d lines; line 299 = %.40q", len(lines), lines[299])
				}
			})

			t.Run("listen notify", func(t *testing.T) {
				ctx := testCtx(t)
				listener := connect(t, ctx, sessionDSN)
				mustExec(t, ctx, listener, "LISTEN chaos")
				notifier := connect(t, ctx, pgtest.ConnString(topo.transaction, pgtest.SuperUser, "", db), simpleProtocol)
				mustExec(t, ctx, notifier, "SELECT pg_notify('chaos', 'hello through the proxy')")
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				n, err := listener.WaitForNotification(wctx)
				if err != nil {
					t.Fatalf("wait for notification: %v", err)
				}
				if n.Channel != "chaos" || n.Payload != "hello through the proxy" {
					t.Fatalf("notification %+v", n)
				}
			})

			t.Run("20 MiB value", func(t *testing.T) {
				ctx := testCtx(t)
				conn := connect(t, ctx, sessionDSN)
				mustExec(t, ctx, conn, "CREATE TABLE big (v text)")
				value := strings.Repeat("0123456789abcdef", 20<<20/16)
				if _, err := conn.Exec(ctx, "INSERT INTO big VALUES ($1)", value); err != nil {
					t.Fatalf("insert 20 MiB: %v", err)
				}
				var got string
				if err := conn.QueryRow(ctx, "SELECT v FROM big").Scan(&got); err != nil {
					t.Fatalf("select 20 MiB: %v", err)
				}
				if got != value {
					t.Fatalf("20 MiB value came back as %d bytes, different", len(got))
				}
			})

			t.Run("cancel", func(t *testing.T) {
				ctx := testCtx(t)
				before := topo.chaos.metric(t, "pgchaos_cancel_requests_total", nil)
				conn := connect(t, ctx, sessionDSN, func(c *pgx.ConnConfig) {
					c.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler { return &libpqCancel{conn: pc} }
				})
				qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
				start := time.Now()
				_, err := conn.Exec(qctx, "SELECT pg_sleep(30)")
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
					t.Fatalf("want query_canceled 57014, got %v", err)
				}
				if time.Since(start) > 10*time.Second {
					t.Fatalf("cancel took %v", time.Since(start))
				}
				if after := topo.chaos.metric(t, "pgchaos_cancel_requests_total", nil); after <= before {
					t.Fatalf("pgchaos forwarded no CancelRequest (counter %v -> %v)", before, after)
				}
				if err := conn.Ping(ctx); err != nil {
					t.Fatalf("session unusable after cancel: %v", err)
				}
			})

			t.Run("password logins", func(t *testing.T) {
				ctx := testCtx(t)
				for _, u := range []struct{ user, password string }{
					{pgtest.MD5User, pgtest.MD5Password},
					{pgtest.SCRAMUser, pgtest.SCRAMPassword},
				} {
					conn := connect(t, ctx, pgtest.ConnString(topo.session, u.user, u.password, db))
					var who string
					if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != u.user {
						t.Fatalf("%s: current_user %q, %v", u.user, who, err)
					}
					_, err := pgx.Connect(ctx, pgtest.ConnString(topo.session, u.user, "wrong", db))
					// PgBouncer checks passwords itself and reports 08P01.
					want := "28P01"
					if topo.pgbouncer {
						want = "08P01"
					}
					var pgErr *pgconn.PgError
					if !errors.As(err, &pgErr) || pgErr.Code != want || !strings.Contains(pgErr.Message, "authentication failed") {
						t.Fatalf("%s with a wrong password: want %s authentication failed, got %v", u.user, want, err)
					}
				}
			})

			t.Run("prepared transaction", func(t *testing.T) {
				ctx := testCtx(t)
				a := connect(t, ctx, sessionDSN)
				mustExec(t, ctx, a, "CREATE TABLE ledger (id int PRIMARY KEY)")
				gid := "g_" + db
				mustExec(t, ctx, a, "BEGIN")
				mustExec(t, ctx, a, "INSERT INTO ledger VALUES (1)")
				mustExec(t, ctx, a, "PREPARE TRANSACTION '"+gid+"'")
				b := connect(t, ctx, pgtest.ConnString(topo.transaction, pgtest.SuperUser, "", db), simpleProtocol)
				var prepared int
				if err := b.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1", gid).Scan(&prepared); err != nil || prepared != 1 {
					t.Fatalf("pg_prepared_xacts: %d, %v", prepared, err)
				}
				mustExec(t, ctx, b, "COMMIT PREPARED '"+gid+"'")
				var rows int
				if err := b.QueryRow(ctx, "SELECT count(*) FROM ledger").Scan(&rows); err != nil || rows != 1 {
					t.Fatalf("after COMMIT PREPARED: %d rows, %v", rows, err)
				}
			})

			if topo.clientFacing {
				t.Run("tls", func(t *testing.T) {
					ctx := testCtx(t)
					upstream := topo.chaos.Upstream()
					tlsProxy := startProxy(t, upstream, func(c *proxy.Config) { c.TLS = selfSignedTLS(t) })
					conn := connect(t, ctx, strings.Replace(pgtest.ConnString(tlsProxy.addr(), pgtest.SCRAMUser, pgtest.SCRAMPassword, db), "sslmode=disable", "sslmode=require", 1))
					if !conn.PgConn().Conn().(interface{ ConnectionState() tls.ConnectionState }).ConnectionState().HandshakeComplete {
						t.Fatal("connection is not TLS")
					}
					var one int
					if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
						t.Fatal(err)
					}
				})
			}
		})
	}
}

// libpqCancel answers a cancelled context the way libpq does: it sends a
// CancelRequest and waits for the server to close the cancel connection.
// pgx's own CancelRequestContextWatcherHandler closes the cancel connection
// as soon as the query returns, which makes PgBouncer 1.18 abort ("bad
// client state: 0", fixed in 1.19) when the cancel takes a hop longer.
type libpqCancel struct {
	conn *pgconn.PgConn
	done chan struct{}
}

func (h *libpqCancel) HandleCancel(context.Context) {
	h.done = make(chan struct{})
	go func() {
		defer close(h.done)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.conn.CancelRequest(ctx)
	}()
}

func (h *libpqCancel) HandleUnwatchAfterCancel() { <-h.done }

func mustExec(t testing.TB, ctx context.Context, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestPgbench runs pgbench's built-in workload in each protocol mode.
func TestPgbench(t *testing.T) {
	bin := filepath.Join(pg.BinDir(), "pgbench")
	for _, topo := range allTopologies(t) {
		t.Run(topo.name, func(t *testing.T) {
			db := newDatabase(t)
			run := func(t *testing.T, addr string, args ...string) string {
				t.Helper()
				host, port := splitAddr(t, addr)
				cmd := exec.Command(bin, append([]string{"-h", host, "-p", port, "-U", pgtest.SuperUser}, append(args, db)...)...)
				cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("pgbench %v: %v\n%s", args, err, out)
				}
				return string(out)
			}
			run(t, topo.session, "-i", "-s", "1", "-q")
			modes := []struct{ mode, addr string }{
				{"simple", topo.transaction},
				{"extended", topo.transaction},
				// PgBouncer 1.18 cannot carry prepared statements across
				// transaction-pooled server connections; session pooling can.
				{"prepared", topo.session},
			}
			for _, m := range modes {
				t.Run(m.mode, func(t *testing.T) {
					out := run(t, m.addr, "-M", m.mode, "-c", "4", "-j", "2", "-t", "50", "-n")
					if !strings.Contains(out, "number of transactions actually processed: 200/200") {
						t.Fatalf("pgbench -M %s did not complete every transaction:\n%s", m.mode, out)
					}
					if strings.Contains(out, "number of failed transactions: ") && !strings.Contains(out, "number of failed transactions: 0 ") {
						t.Fatalf("pgbench -M %s had failures:\n%s", m.mode, out)
					}
				})
			}
		})
	}
}

// TestPsql runs a psql script with meta-commands, COPY, errors and
// transactions through every topology.
func TestPsql(t *testing.T) {
	bin := filepath.Join(pg.BinDir(), "psql")
	script := `
\set ON_ERROR_STOP 1
CREATE TABLE fruit (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO fruit (name) VALUES ('apple'), ('pear');
COPY fruit (name) FROM STDIN;
plum
cherry
\.
BEGIN;
INSERT INTO fruit (name) VALUES ('ghost');
ROLLBACK;
\set ON_ERROR_STOP 0
SELECT 1/0;
\set ON_ERROR_STOP 1
SELECT string_agg(name, ',' ORDER BY id) AS fruits FROM fruit \gset
\echo fruits=:fruits
\copy (SELECT name FROM fruit ORDER BY id) TO STDOUT
`
	for _, topo := range allTopologies(t) {
		t.Run(topo.name, func(t *testing.T) {
			db := newDatabase(t)
			host, port := splitAddr(t, topo.transaction)
			cmd := exec.Command(bin, "-X", "-q", "-h", host, "-p", port, "-U", pgtest.SuperUser, "-d", db, "-f", "-")
			cmd.Stdin = strings.NewReader(script)
			cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("psql: %v\n%s", err, out)
			}
			got := string(out)
			for _, want := range []string{"fruits=apple,pear,plum,cherry", "division by zero", "apple\npear\nplum\ncherry\n"} {
				if !strings.Contains(got, want) {
					t.Fatalf("psql output lacks %q:\n%s", want, got)
				}
			}
		})
	}
}

func splitAddr(t testing.TB, addr string) (string, string) {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		t.Fatalf("bad address %q", addr)
	}
	return addr[:i], addr[i+1:]
}
