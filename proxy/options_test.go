package proxy_test

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
)

// Each test here checks that an option of an action does what
// docs/faults.md says, by what a client or the server can observe — so
// that a fault that silently does less fails a test.

func faultProxy(t *testing.T) (*instance, *faults.Engine, string) {
	t.Helper()
	e := faults.NewEngine(faults.Options{Seed: 1})
	in := startProxy(t, pg.Addr(), func(c *proxy.Config) { c.Faults = e })
	return in, e, pgtest.ConnString(in.addr(), pgtest.SuperUser, "", "postgres")
}

// backendAlive reports whether a server process is still connected.
func backendAlive(t *testing.T, direct *pgx.Conn, pid uint32) bool {
	t.Helper()
	var n int
	if err := direct.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// medianOf times f n times and returns the median.
func medianOf(n int, f func()) time.Duration {
	d := make([]time.Duration, n)
	for i := range d {
		start := time.Now()
		f()
		d[i] = time.Since(start)
	}
	slices.Sort(d)
	return d[n/2]
}

func TestDisconnectSide(t *testing.T) {
	ctx := testCtx(t)
	direct := connect(t, ctx, pg.DSN(pgtest.SuperUser, "", "postgres"))
	for _, side := range []string{"both", "client", "server"} {
		t.Run(side, func(t *testing.T) {
			in, e, dsn := faultProxy(t)
			conn := connect(t, ctx, dsn)
			pid := conn.PgConn().PID()
			addRule(t, e, faults.Rule{Name: "cut", Match: faults.Match{SQL: "cut here"}, Action: faults.Action{Type: "disconnect", Side: side}})
			qctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			_, err := conn.Exec(qctx, "SELECT 'cut here'")
			clientCut := err != nil && qctx.Err() == nil // an error before the deadline: the socket closed
			time.Sleep(200 * time.Millisecond)
			serverCut := !backendAlive(t, direct, pid)
			if want := side != "server"; clientCut != want {
				t.Fatalf("side %s: the client's connection was cut: %v (err %v); want %v", side, clientCut, err, want)
			}
			if want := side != "client"; serverCut != want {
				t.Fatalf("side %s: the server's connection was cut: %v; want %v", side, serverCut, want)
			}
			// A half-open link stays until its peer gives up, the session
			// is killed, or the rule is removed: removing it ends the link.
			if err := e.Remove("", "cut"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the session to end once its rule is gone", func() bool { return len(in.registry.Sessions()) == 0 })
			waitFor(t, "the server connection to go", func() bool { return !backendAlive(t, direct, pid) })
		})
	}
}

// A partition holds both directions: the query and a notification the
// server sends meanwhile both wait for it to end.
func TestPartitionHoldsBothDirections(t *testing.T) {
	in, e, _ := faultProxy(t)
	ctx := testCtx(t)
	direct := connect(t, ctx, pg.DSN(pgtest.SuperUser, "", "postgres"))
	c, fe := login(t, in.addr(), "postgres")
	exchange(t, fe, "LISTEN pgchaos_partition")
	const hold = 600 * time.Millisecond
	addRule(t, e, faults.Rule{Name: "part", Match: faults.Match{SQL: "partitioned"}, Action: faults.Action{Type: "partition", Duration: faults.Duration(hold)}})
	fe.Send(&pgproto3.Query{String: "SELECT 'partitioned'"})
	fe.Flush()
	sent := time.Now()
	waitFor(t, "the partition", func() bool { return fired(t, e, "part") == 1 })
	mustExec(t, ctx, direct, "NOTIFY pgchaos_partition")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var notified, answered time.Duration
	for notified == 0 || answered == 0 {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch msg.(type) {
		case *pgproto3.NotificationResponse:
			notified = time.Since(sent)
		case *pgproto3.ReadyForQuery:
			answered = time.Since(sent)
		}
	}
	if notified < hold-50*time.Millisecond || answered < hold-50*time.Millisecond {
		t.Fatalf("under a %v partition the notification came after %v and the answer after %v; both should wait", hold, notified, answered)
	}
}

// exchange sends a simple query and reads up to its ReadyForQuery.
func exchange(t *testing.T, fe *pgproto3.Frontend, sql string) {
	t.Helper()
	fe.Send(&pgproto3.Query{String: sql})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("%s: %s %s", sql, e.Code, e.Message)
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			return
		}
	}
}

// A hang or partition with a duration lets go by itself, the rule still
// in place.
func TestHoldDuration(t *testing.T) {
	for _, action := range []string{"hang", "partition"} {
		t.Run(action, func(t *testing.T) {
			_, e, dsn := faultProxy(t)
			ctx := testCtx(t)
			conn := connect(t, ctx, dsn)
			const hold = 400 * time.Millisecond
			addRule(t, e, faults.Rule{Name: "hold", Match: faults.Match{SQL: "held"}, Action: faults.Action{Type: action, Duration: faults.Duration(hold)}})
			start := time.Now()
			mustExec(t, ctx, conn, "SELECT 'held'")
			if d := time.Since(start); d < hold-20*time.Millisecond || d > hold+3*time.Second {
				t.Fatalf("a %s of %v held the query %v", action, hold, d)
			}
		})
	}
}

func TestSlowConnect(t *testing.T) {
	in, e, dsn := faultProxy(t)
	ctx := testCtx(t)
	base := medianOf(3, func() { connect(t, ctx, dsn).Close(ctx) })
	const delay = 400 * time.Millisecond
	addRule(t, e, faults.Rule{Name: "slow", Match: faults.Match{Event: "connect"}, Action: faults.Action{Type: "slow_connect", Delay: faults.Duration(delay)}})
	start := time.Now()
	connect(t, ctx, dsn)
	if d := time.Since(start); d < delay {
		t.Fatalf("connecting took %v under a %v slow_connect (baseline %v)", d, delay, base)
	}
	_ = in
}

// A dropped CancelRequest never reaches the server: the query runs to its
// end. A delayed one cancels it, but only after the delay.
func TestCancelEvent(t *testing.T) {
	cancelAfter := func(t *testing.T, conn *pgx.Conn, after time.Duration) (time.Duration, error) {
		t.Helper()
		go func() {
			time.Sleep(after)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn.PgConn().CancelRequest(ctx)
		}()
		start := time.Now()
		_, err := conn.Exec(context.Background(), "SELECT pg_sleep(4)")
		return time.Since(start), err
	}
	isCanceled := func(err error) bool {
		var pgErr *pgconn.PgError
		return errors.As(err, &pgErr) && pgErr.Code == "57014"
	}
	t.Run("none", func(t *testing.T) {
		_, _, dsn := faultProxy(t)
		conn := connect(t, testCtx(t), dsn)
		// Cancelled at all means it landed before the 4s sleep ended;
		// how soon is the load's business.
		if d, err := cancelAfter(t, conn, 100*time.Millisecond); !isCanceled(err) {
			t.Fatalf("without a rule the cancel should land: %v after %v", err, d)
		}
	})
	t.Run("drop", func(t *testing.T) {
		_, e, dsn := faultProxy(t)
		conn := connect(t, testCtx(t), dsn)
		addRule(t, e, faults.Rule{Name: "no-cancel", Match: faults.Match{Event: "cancel"}, Action: faults.Action{Type: "drop"}})
		if d, err := cancelAfter(t, conn, 100*time.Millisecond); err != nil || d < 3900*time.Millisecond {
			t.Fatalf("a dropped cancel still cancelled: %v after %v", err, d)
		}
		if n := fired(t, e, "no-cancel"); n != 1 {
			t.Fatalf("rule fired %d times", n)
		}
	})
	t.Run("delay", func(t *testing.T) {
		_, e, dsn := faultProxy(t)
		conn := connect(t, testCtx(t), dsn)
		addRule(t, e, faults.Rule{Name: "late-cancel", Match: faults.Match{Event: "cancel"}, Action: faults.Action{Type: "delay", Delay: faults.Duration(600 * time.Millisecond)}})
		if d, err := cancelAfter(t, conn, 100*time.Millisecond); !isCanceled(err) || d < 650*time.Millisecond {
			t.Fatalf("a cancel delayed by 600ms: %v after %v", err, d)
		}
	})
}

// Inside a transaction block, an injected error leaves the client's
// transaction failed, as the server's own error would.
func TestErrorInTransactionBlock(t *testing.T) {
	for _, when := range []string{"before", "after"} {
		t.Run(when, func(t *testing.T) {
			_, e, dsn := faultProxy(t)
			ctx := testCtx(t)
			conn := connect(t, ctx, dsn)
			addRule(t, e, faults.Rule{Name: "fail", Match: faults.Match{SQL: "fails here", TxStatus: faults.StringList{"in_transaction"}}, Action: faults.Action{Type: "error", When: when, SQLState: "40001"}})
			mustExec(t, ctx, conn, "BEGIN")
			if _, err := conn.Exec(ctx, "SELECT 'fails here'"); err == nil {
				t.Fatal("no error")
			}
			if st := conn.PgConn().TxStatus(); st != 'E' {
				t.Fatalf("transaction status after the error: %q, want 'E' (failed)", st)
			}
			mustExec(t, ctx, conn, "ROLLBACK")
			if st := conn.PgConn().TxStatus(); st != 'I' {
				t.Fatalf("after ROLLBACK: %q", st)
			}
		})
	}
}

// An error injected before a statement does to the server what the
// server's own error would: the server never runs it, skips the rest of a
// pipelined batch up to its Sync, and aborts the transaction — the implicit
// one of the batch, or the client's block — so a client that carries on as
// if nothing happened meets what it would meet without pgchaos.
func TestErrorBeforeAbortsAsTheServerWould(t *testing.T) {
	ctx := testCtx(t)
	db := newDatabase(t)
	direct := connect(t, ctx, pg.DSN(pgtest.SuperUser, "", db))
	mustExec(t, ctx, direct, "CREATE TABLE t (id int PRIMARY KEY)")
	rows := func() []int {
		r, err := direct.Query(ctx, "SELECT id FROM t ORDER BY id")
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(r, pgx.RowTo[int])
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, ctx, direct, "TRUNCATE t")
		return ids
	}
	for _, proto := range protocols {
		t.Run(proto.name, func(t *testing.T) {
			_, e, dsn := faultProxy(t)
			conn := connect(t, ctx, strings.Replace(dsn, "/postgres?", "/"+db+"?", 1), func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = proto.mode })
			addRule(t, e, faults.Rule{Name: "second", Match: faults.Match{SQL: "VALUES \\(2\\)"}, Action: faults.Action{Type: "error", SQLState: "40P01"}})

			// A pipelined batch, one implicit transaction in the extended
			// protocol (one Sync), one per statement in the simple one.
			b := &pgx.Batch{}
			b.Queue("INSERT INTO t VALUES (1)")
			b.Queue("INSERT INTO t VALUES (2)")
			b.Queue("INSERT INTO t VALUES (3)")
			err := conn.SendBatch(ctx, b).Close()
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "40P01" {
				t.Fatalf("batch: want 40P01, got %v", err)
			}
			// The failed implicit transaction takes the first INSERT with
			// it (pgx sends a simple-protocol batch as one multi-statement
			// Query, itself one implicit transaction).
			if got := rows(); len(got) != 0 {
				t.Fatalf("rows after the batch: %v, want none", got)
			}

			// A transaction block: the client that commits after the error
			// is told ROLLBACK, and nothing of the block is kept.
			mustExec(t, ctx, conn, "BEGIN")
			mustExec(t, ctx, conn, "INSERT INTO t VALUES (1)")
			if _, err := conn.Exec(ctx, "INSERT INTO t VALUES (2)"); err == nil {
				t.Fatal("no error")
			}
			tag, err := conn.Exec(ctx, "COMMIT")
			if err != nil || tag.String() != "ROLLBACK" {
				t.Fatalf("COMMIT after the error: %q %v; want ROLLBACK, as the server says after its own error", tag.String(), err)
			}
			if got := rows(); len(got) != 0 {
				t.Fatalf("rows after the aborted block: %v", got)
			}
			var n int
			if err := conn.QueryRow(ctx, "SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
				t.Fatalf("session afterwards: %d %v", n, err)
			}
		})
	}
}

// Pipelined simple queries, the middle one refused by an error rule: each
// gets its own answer, in order, and the last one still runs.
func TestErrorBeforeInSimplePipeline(t *testing.T) {
	in, e, _ := faultProxy(t)
	c, fe := login(t, in.addr(), "postgres")
	addRule(t, e, faults.Rule{Name: "q2", Match: faults.Match{SQL: "'q2'"}, Action: faults.Action{Type: "error", SQLState: "40001"}})
	for _, q := range []string{"SELECT 'q1'", "SELECT 'q2'", "SELECT 'q3'"} {
		fe.Send(&pgproto3.Query{String: q})
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []string
	for len(got) < 6 {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			got = append(got, string(m.Values[0]))
		case *pgproto3.ErrorResponse:
			got = append(got, m.Code)
		case *pgproto3.ReadyForQuery:
			got = append(got, "Z")
		}
	}
	if want := []string{"q1", "Z", "40001", "Z", "q3", "Z"}; !slices.Equal(got, want) {
		t.Fatalf("client heard %v, want %v", got, want)
	}
}

// notifyDelay measures how long a notification takes from the server to a
// listener behind the proxy: the server-to-client stream alone.
func notifyDelay(t *testing.T, fe *pgproto3.Frontend, c net.Conn, direct *pgx.Conn, channel string) time.Duration {
	t.Helper()
	start := time.Now()
	mustExec(t, context.Background(), direct, "NOTIFY "+channel)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := msg.(*pgproto3.NotificationResponse); ok {
			return time.Since(start)
		}
	}
}

// A byte toxic acts on the stream its direction names, and only there.
func TestByteToxicDirections(t *testing.T) {
	ctx := testCtx(t)
	direct := connect(t, ctx, pg.DSN(pgtest.SuperUser, "", "postgres"))
	toxic := func(name, dir string, attrs map[string]any) faults.Rule {
		return faults.Rule{Name: "toxic", Match: faults.Match{Direction: dir}, Action: faults.Action{Type: name, Attributes: attrs}}
	}
	bigResult := "SELECT repeat('x', 200000)"
	bigRequest := "SELECT length('" + strings.Repeat("y", 200000) + "')"

	t.Run("latency", func(t *testing.T) {
		for _, dir := range []string{"client_to_server", "server_to_client"} {
			t.Run(dir, func(t *testing.T) {
				in, e, _ := faultProxy(t)
				c, fe := login(t, in.addr(), "postgres")
				exchange(t, fe, "LISTEN pgchaos_latency")
				addRule(t, e, toxic("latency", dir, map[string]any{"latency": 400}))
				exchange(t, fe, "SELECT 1") // the stream now runs through the toxic
				if d := notifyDelay(t, fe, c, direct, "pgchaos_latency"); (dir == "server_to_client") != (d >= 350*time.Millisecond) {
					t.Fatalf("latency on %s: a notification took %v", dir, d)
				}
				start := time.Now()
				exchange(t, fe, "SELECT 2")
				if d := time.Since(start); d < 350*time.Millisecond {
					t.Fatalf("latency on %s: a round trip took %v", dir, d)
				}
			})
		}
	})
	t.Run("bandwidth", func(t *testing.T) {
		for _, dir := range []string{"client_to_server", "server_to_client"} {
			t.Run(dir, func(t *testing.T) {
				_, e, dsn := faultProxy(t)
				conn := connect(t, ctx, dsn, simpleProtocol)
				addRule(t, e, toxic("bandwidth", dir, map[string]any{"rate": 100}))
				slow, fast := bigResult, bigRequest
				if dir == "client_to_server" {
					slow, fast = fast, slow
				}
				start := time.Now()
				mustExec(t, ctx, conn, slow)
				if d := time.Since(start); d < 1500*time.Millisecond {
					t.Fatalf("200 kB through 100 kB/s on %s took %v", dir, d)
				}
				start = time.Now()
				mustExec(t, ctx, conn, fast)
				if d := time.Since(start); d > time.Second {
					t.Fatalf("the other direction was slowed too: %v", d)
				}
			})
		}
	})
	t.Run("slicer", func(t *testing.T) {
		_, e, dsn := faultProxy(t)
		conn := connect(t, ctx, dsn, simpleProtocol)
		addRule(t, e, toxic("slicer", "server_to_client", map[string]any{"average_size": 100, "delay": 1000}))
		mustExec(t, ctx, conn, "SELECT 1")
		start := time.Now()
		var s string
		if err := conn.QueryRow(ctx, "SELECT repeat('z', 100000)").Scan(&s); err != nil || len(s) != 100000 {
			t.Fatalf("sliced result: %d bytes, %v", len(s), err)
		}
		if d := time.Since(start); d < 700*time.Millisecond {
			t.Fatalf("100 kB in ~100-byte slices 1 ms apart took %v", d)
		}
	})
	t.Run("slow_close", func(t *testing.T) {
		t.Run("server_to_client", func(t *testing.T) {
			in, e, _ := faultProxy(t)
			c, fe := login(t, in.addr(), "postgres")
			addRule(t, e, toxic("slow_close", "server_to_client", map[string]any{"delay": 500}))
			exchange(t, fe, "SELECT 1")
			fe.Send(&pgproto3.Terminate{})
			fe.Flush()
			start := time.Now()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.Copy(io.Discard, c)
			if d := time.Since(start); d < 450*time.Millisecond {
				t.Fatalf("the server's close reached the client after %v under a 500ms slow_close", d)
			}
		})
		t.Run("client_to_server", func(t *testing.T) {
			in, e, _ := faultProxy(t)
			c, fe := login(t, in.addr(), "postgres")
			var pid uint32
			for _, s := range in.registry.Sessions() {
				pid = uint32(s.BackendPID)
			}
			addRule(t, e, toxic("slow_close", "client_to_server", map[string]any{"delay": 600}))
			exchange(t, fe, "SELECT 2")
			c.Close() // no Terminate: the server learns of it by the close alone
			time.Sleep(300 * time.Millisecond)
			if !backendAlive(t, direct, pid) {
				t.Fatal("the client's close reached the server at once under a 600ms slow_close")
			}
			waitFor(t, "the close to reach the server", func() bool { return !backendAlive(t, direct, pid) })
		})
	})
	// untilClosed sends a query under the toxic and reads until the
	// connection ends: how much came, how, and when.
	untilClosed := func(t *testing.T, rule faults.Rule) (int64, time.Duration, error) {
		in, e, _ := faultProxy(t)
		c, fe := login(t, in.addr(), "postgres")
		addRule(t, e, rule)
		fe.Send(&pgproto3.Query{String: "SELECT 1"})
		fe.Flush()
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := io.Copy(io.Discard, c)
		return n, time.Since(start), err
	}
	t.Run("timeout", func(t *testing.T) {
		n, d, _ := untilClosed(t, toxic("timeout", "server_to_client", map[string]any{"timeout": 400}))
		if n != 0 || d < 350*time.Millisecond || d > 5*time.Second {
			t.Fatalf("under a 400ms timeout the client got %d bytes and the close after %v", n, d)
		}
	})
	t.Run("reset_peer", func(t *testing.T) {
		_, d, err := untilClosed(t, toxic("reset_peer", "server_to_client", map[string]any{"timeout": 300}))
		if err == nil || !isReset(err) || d < 250*time.Millisecond {
			t.Fatalf("reset_peer after 300ms: %v after %v; want a connection reset", err, d)
		}
	})
}
