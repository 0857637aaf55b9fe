package proxy_test

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// More of docs/faults.md's actions and their options, each by what a
// client or the server sees.

// A disconnect's close: fin ends the client's stream, rst resets it.
func TestDisconnectClose(t *testing.T) {
	for _, how := range []string{"fin", "rst"} {
		t.Run(how, func(t *testing.T) {
			in, e, _ := faultProxy(t)
			c, fe := login(t, in.addr(), "postgres")
			addRule(t, e, faults.Rule{Name: "cut", Match: faults.Match{SQL: "cut here"}, Action: faults.Action{Type: "disconnect", Close: how}})
			fe.Send(&pgproto3.Query{String: "SELECT 'cut here'"})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := io.Copy(io.Discard, c)
			if n != 0 {
				t.Fatalf("the client got %d bytes before the cut", n)
			}
			if reset := err != nil && isReset(err); reset != (how == "rst") {
				t.Fatalf("close %s: the client's read ended with %v", how, err)
			}
			if how == "fin" && err != nil {
				t.Fatalf("close fin: want a clean end of stream, got %v", err)
			}
		})
	}
}

// A disconnect before a statement keeps it from the server; one after it
// lets the server run it first.
func TestDisconnectWhen(t *testing.T) {
	ctx := testCtx(t)
	for _, when := range []string{"before", "after"} {
		t.Run(when, func(t *testing.T) {
			db := newDatabase(t)
			direct := connect(t, ctx, pg.DSN(pgtest.SuperUser, "", db))
			mustExec(t, ctx, direct, "CREATE TABLE t (id int)")
			in, e, _ := faultProxy(t)
			conn := connect(t, ctx, pgtest.ConnString(in.addr(), pgtest.SuperUser, "", db))
			pid := conn.PgConn().PID()
			// pgx sends a CancelRequest when its connection breaks
			// mid-statement, which can cancel the INSERT the server is
			// still running after the cut: dropped here, so that what
			// the server was given is all that decides.
			addRule(t, e, faults.Rule{Name: "keep", Match: faults.Match{Event: "cancel"}, Action: faults.Action{Type: "drop"}})
			addRule(t, e, faults.Rule{Name: "cut", Match: faults.Match{Statement: faults.StringList{"insert"}}, Action: faults.Action{Type: "disconnect", When: when}})
			if _, err := conn.Exec(ctx, "INSERT INTO t VALUES (1)"); !isConnectionError(err) {
				t.Fatalf("INSERT: want a connection error, got %v", err)
			}
			// Once the server's connection is gone, it has done all it will.
			waitFor(t, "the server connection to go", func() bool { return !backendAlive(t, direct, pid) })
			waitFor(t, "pgx's cancel request", func() bool { return fired(t, e, "keep") == 1 })
			var n int
			if err := direct.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if want := map[string]int{"before": 0, "after": 1}[when]; n != want {
				t.Fatalf("disconnect %s the INSERT: %d rows, want %d", when, n, want)
			}
		})
	}
}

// messageTypes runs a simple query and lists the types of the messages
// the client gets, up to ReadyForQuery.
func messageTypes(t *testing.T, c net.Conn, fe *pgproto3.Frontend, sql string) []string {
	t.Helper()
	fe.Send(&pgproto3.Query{String: sql})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []string
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		switch msg.(type) {
		case *pgproto3.NoticeResponse:
			got = append(got, "notice")
		case *pgproto3.CommandComplete:
			got = append(got, "complete")
		case *pgproto3.ErrorResponse:
			got = append(got, "error")
		case *pgproto3.ReadyForQuery:
			return append(got, "ready")
		}
	}
}

// drop swallows the message it matches, and only that one.
func TestDropMessage(t *testing.T) {
	in, e, _ := faultProxy(t)
	c, fe := login(t, in.addr(), "postgres")
	const notice = "DO $$BEGIN RAISE NOTICE 'hello'; END$$"
	if got, want := messageTypes(t, c, fe, notice), []string{"notice", "complete", "ready"}; !slices.Equal(got, want) {
		t.Fatalf("without a rule: %v, want %v", got, want)
	}
	addRule(t, e, faults.Rule{Name: "hush", Match: faults.Match{Direction: "server_to_client", Message: faults.StringList{"notice_response"}}, Action: faults.Action{Type: "drop"}})
	if got, want := messageTypes(t, c, fe, notice), []string{"complete", "ready"}; !slices.Equal(got, want) {
		t.Fatalf("with the notice dropped: %v, want %v", got, want)
	}
	if n := fired(t, e, "hush"); n != 1 {
		t.Fatalf("fired %d times", n)
	}
}

// An error on a server message replaces it: the server committed, the
// client hears 40001 in place of COMMIT's tag, and the session goes on.
func TestErrorReplacesServerMessage(t *testing.T) {
	ctx := testCtx(t)
	db := newDatabase(t)
	direct := connect(t, ctx, pg.DSN(pgtest.SuperUser, "", db))
	mustExec(t, ctx, direct, "CREATE TABLE t (id int)")
	in, e, _ := faultProxy(t)
	conn := connect(t, ctx, pgtest.ConnString(in.addr(), pgtest.SuperUser, "", db))
	addRule(t, e, faults.Rule{Name: "lie", Match: faults.Match{Tag: "COMMIT"}, Action: faults.Action{Type: "error", SQLState: "40001"}})
	mustExec(t, ctx, conn, "BEGIN")
	mustExec(t, ctx, conn, "INSERT INTO t VALUES (1)")
	_, err := conn.Exec(ctx, "COMMIT")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "40001" {
		t.Fatalf("COMMIT: want 40001 in place of its tag, got %v", err)
	}
	var n int
	if err := direct.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows: %d %v; the server committed", n, err)
	}
	if err := conn.QueryRow(ctx, "SELECT 42").Scan(&n); err != nil || n != 42 {
		t.Fatalf("session afterwards: %d %v", n, err)
	}
}

// refuse without a sqlstate closes a new client at once, saying nothing;
// with one, the client is told the rule's FATAL error and message.
func TestRefuse(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		in, e, _ := faultProxy(t)
		addRule(t, e, faults.Rule{Name: "no", Match: faults.Match{Event: "connect"}, Action: faults.Action{Type: "refuse"}})
		c, err := net.Dial("tcp", in.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fe := pgproto3.NewFrontend(c, c)
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": pgtest.SuperUser, "database": "postgres"}})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := io.Copy(io.Discard, c); n != 0 || (err != nil && !isReset(err)) {
			t.Fatalf("a refused client got %d bytes, then %v; want the connection closed at once", n, err)
		}
	})
	t.Run("told", func(t *testing.T) {
		_, e, dsn := faultProxy(t)
		addRule(t, e, faults.Rule{Name: "no", Match: faults.Match{Event: "connect"}, Action: faults.Action{Type: "refuse", SQLState: "53300", Message: "pgchaos says not now"}})
		_, err := pgx.Connect(testCtx(t), dsn)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Severity != "FATAL" || pgErr.Code != "53300" || pgErr.Message != "pgchaos says not now" {
			t.Fatalf("want FATAL 53300 \"pgchaos says not now\", got %v", err)
		}
	})
}

// A slow_connect ends when its rule is removed: the waiting client's
// upstream is dialed then, not when the delay would have run out.
func TestSlowConnectEndsWithItsRule(t *testing.T) {
	_, e, dsn := faultProxy(t)
	addRule(t, e, faults.Rule{Name: "slow", Match: faults.Match{Event: "connect"}, Action: faults.Action{Type: "slow_connect", Delay: faults.Duration(time.Minute)}})
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			conn.Close(ctx)
		}
		done <- err
	}()
	waitFor(t, "the slow_connect to fire", func() bool { return fired(t, e, "slow") == 1 })
	select {
	case err := <-done:
		t.Fatalf("connected (%v) under a one-minute slow_connect", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := e.Remove("", "slow"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("connect after the rule was removed: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting 10s after the slow_connect rule was removed")
	}
}

// An error's severity and message reach the client as the rule gives them.
func TestErrorSeverityAndMessage(t *testing.T) {
	for _, sev := range []string{"ERROR", "FATAL"} {
		t.Run(sev, func(t *testing.T) {
			_, e, dsn := faultProxy(t)
			conn := connect(t, testCtx(t), dsn)
			addRule(t, e, faults.Rule{Name: "told", Match: faults.Match{SQL: "'probe'"}, Action: faults.Action{Type: "error", SQLState: "57P01", Severity: sev, Message: "pgchaos says bye"}})
			_, err := conn.Exec(testCtx(t), "SELECT 'probe'")
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Severity != sev || pgErr.Code != "57P01" || pgErr.Message != "pgchaos says bye" {
				t.Fatalf("want %s 57P01 \"pgchaos says bye\", got %v", sev, err)
			}
		})
	}
}

// A FATAL error ends the session, as PostgreSQL's own does: nothing
// follows it, the client's stream ends, and so does the server's
// connection (which rolls back what the session left open). Before a
// statement, after it, and in place of a server message alike.
func TestFatalEndsTheSession(t *testing.T) {
	ctx := testCtx(t)
	direct := connect(t, ctx, pg.DSN(pgtest.SuperUser, "", "postgres"))
	for _, c := range []struct {
		name  string
		match faults.Match
		when  string
	}{
		{"before", faults.Match{SQL: "'probe'"}, "before"},
		{"after", faults.Match{SQL: "'probe'"}, "after"},
		{"server message", faults.Match{Tag: "SELECT"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			in, e, _ := faultProxy(t)
			c2, fe := login(t, in.addr(), "postgres")
			var pid uint32
			for _, s := range in.registry.Sessions() {
				pid = uint32(s.BackendPID)
			}
			exchange(t, fe, "BEGIN")
			addRule(t, e, faults.Rule{Name: "bye", Match: c.match, Action: faults.Action{Type: "error", When: c.when, SQLState: "57P01", Severity: "FATAL", Message: "pgchaos says bye"}})
			fe.Send(&pgproto3.Query{String: "SELECT 'probe'"})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			c2.SetReadDeadline(time.Now().Add(10 * time.Second))
			var fatal bool
			for {
				msg, err := fe.Receive()
				if err != nil {
					if !fatal {
						t.Fatalf("the stream ended (%v) before the FATAL", err)
					}
					if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) && !isReset(err) {
						t.Fatalf("after the FATAL: %v; want the stream to end", err)
					}
					break
				}
				if fatal {
					t.Fatalf("%T after the FATAL; PostgreSQL sends nothing after one", msg)
				}
				if m, ok := msg.(*pgproto3.ErrorResponse); ok {
					if m.Severity != "FATAL" || m.Code != "57P01" || m.Message != "pgchaos says bye" {
						t.Fatalf("got %s %s %q", m.Severity, m.Code, m.Message)
					}
					fatal = true
				}
			}
			waitFor(t, "the server connection to end", func() bool { return !backendAlive(t, direct, pid) })
			waitFor(t, "the session to end", func() bool { return len(in.registry.Sessions()) == 0 })
		})
	}
}

// A delay counts from the message's arrival at the proxy, and order is
// kept: two delayed queries pipelined in one write both go out one delay
// after they arrived, not one after the other, and their answers come in
// order. Each delayed message goes into the lateness histogram.
func TestDelayCountsFromArrival(t *testing.T) {
	in, e, _ := faultProxy(t)
	c, fe := login(t, in.addr(), "postgres")
	const delay = 400 * time.Millisecond
	addRule(t, e, faults.Rule{Name: "slow", Match: faults.Match{SQL: "'slow"}, Action: faults.Action{Type: "delay", Delay: faults.Duration(delay)}})
	var order []string
	took := medianOf(3, func() {
		fe.Send(&pgproto3.Query{String: "SELECT 'slow 1'"})
		fe.Send(&pgproto3.Query{String: "SELECT 'slow 2'"})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for ready := 0; ready < 2; {
			msg, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			switch m := msg.(type) {
			case *pgproto3.DataRow:
				order = append(order, string(m.Values[0]))
			case *pgproto3.ReadyForQuery:
				ready++
			}
		}
	})
	if took < delay-50*time.Millisecond || took > delay+250*time.Millisecond {
		t.Fatalf("two pipelined queries under a %v delay took %v (median of 3); want about one delay, not two", delay, took)
	}
	for i := 0; i < len(order); i += 2 {
		if order[i] != "slow 1" || order[i+1] != "slow 2" {
			t.Fatalf("answers in the order %v", order)
		}
	}
	families, err := in.gatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var observed uint64
	for _, f := range families {
		if f.GetName() == "pgchaos_fault_delay_lateness_seconds" {
			for _, m := range f.GetMetric() {
				observed += m.GetHistogram().GetSampleCount()
			}
		}
	}
	if observed != 6 {
		t.Fatalf("pgchaos_fault_delay_lateness_seconds has %d samples for 6 delayed messages", observed)
	}
}

// A hang stops its own direction only: while a query is held, what the
// server sends (a notification) still reaches the client.
func TestHangHoldsOneDirection(t *testing.T) {
	in, e, _ := faultProxy(t)
	ctx := testCtx(t)
	direct := connect(t, ctx, pg.DSN(pgtest.SuperUser, "", "postgres"))
	c, fe := login(t, in.addr(), "postgres")
	exchange(t, fe, "LISTEN pgchaos_hang")
	addRule(t, e, faults.Rule{Name: "hold", Match: faults.Match{SQL: "'held'"}, Action: faults.Action{Type: "hang"}})
	fe.Send(&pgproto3.Query{String: "SELECT 'held'"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the hang", func() bool { return fired(t, e, "hold") == 1 })
	mustExec(t, ctx, direct, "NOTIFY pgchaos_hang")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for notified := false; !notified; {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("waiting for the notification during the hang: %v", err)
		}
		switch msg.(type) {
		case *pgproto3.NotificationResponse:
			notified = true
		case *pgproto3.ReadyForQuery, *pgproto3.DataRow:
			t.Fatalf("%T: the held query was answered before the rule was removed", msg)
		}
	}
	if err := e.Remove("", "hold"); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("the held query after the rule was removed: %v", err)
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			return
		}
	}
}
