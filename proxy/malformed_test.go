package proxy_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
)

// healthyBeside keeps a session busy with queries through addr until the
// test ends, and fails the test if any of them fails: one client's bad
// input must never hurt another session.
func healthyBeside(t *testing.T, addr, db string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn := connect(t, ctx, pgtest.ConnString(addr, pgtest.SuperUser, "", db))
	var wg sync.WaitGroup
	var queries atomic.Int64
	var finished atomic.Bool
	var failure error
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer finished.Store(true)
		for ctx.Err() == nil {
			var n int
			if err := conn.QueryRow(ctx, "SELECT $1::int", queries.Load()).Scan(&n); err != nil {
				if ctx.Err() == nil {
					failure = err
				}
				return
			}
			queries.Add(1)
		}
	}()
	t.Cleanup(func() {
		waitFor(t, "a query on the healthy session", func() bool { return queries.Load() > 0 || finished.Load() })
		cancel()
		wg.Wait()
		if failure != nil {
			t.Errorf("the healthy session beside failed: %v", failure)
		}
		if queries.Load() == 0 {
			t.Errorf("the healthy session beside ran no query")
		}
	})
}

// login opens a raw protocol session through addr and returns once the
// server is ready for a query.
func login(t *testing.T, addr, db string) (net.Conn, *pgproto3.Frontend) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": pgtest.SuperUser, "database": db}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			t.Fatalf("login: %s %s", m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return c, fe
		}
	}
}

// expectFatal reads from c until it is closed and checks that the last
// thing said was an ErrorResponse with the code and a message containing want.
func expectFatal(t *testing.T, c net.Conn, code, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	var last *pgproto3.ErrorResponse
	for {
		msg, err := fe.Receive()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
				break
			}
			t.Fatalf("waiting for the proxy to close the session: %v", err)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			cp := *e
			last = &cp
		}
	}
	if last == nil {
		t.Fatalf("session closed without an ErrorResponse; want %s %q", code, want)
	}
	if last.Code != code || !strings.Contains(last.Message, want) {
		t.Fatalf("got ErrorResponse %s %q; want %s containing %q", last.Code, last.Message, code, want)
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

func TestBadInput(t *testing.T) {
	cases := []badInput{
		{"message length below 4", true, []byte{'Q', 0, 0, 0, 2}, "08P01", "invalid length 2 in query message"},
		{"message above max size", true, []byte{'Q', 0, 0x20, 0, 0}, "08P01", "exceeds the maximum message size of 1048576 bytes"},
		{"unknown startup code", false, startupPacket(1234<<16 | 1), "08P01", "unsupported frontend protocol or request code 1234.1"},
		{"startup length too small", false, []byte{0, 0, 0, 3, 0, 0, 0, 0}, "08P01", "invalid startup packet length 3"},
		{"startup length too large", false, []byte{0, 1, 0, 0, 0, 3, 0, 0}, "08P01", "invalid startup packet length 65536"},
		{"direct TLS without a certificate", false, []byte{0x16, 3, 1, 0, 100, 1, 0, 0, 96, 3, 3}, "", ""},
	}
	db := newDatabase(t)
	for _, relay := range []string{"loop", "goroutine"} {
		t.Run(relay, func(t *testing.T) {
			in := startProxy(t, pg.Addr(), func(c *proxy.Config) {
				c.MaxMessageSize = 1 << 20
				if relay == "goroutine" {
					c.Loops = nil
				}
			})
			healthyBeside(t, in.addr(), db)
			testBadInput(t, in, db, cases)
		})
	}
}

type badInput struct {
	name       string
	afterLogin bool
	send       []byte
	code, want string // empty code: the proxy just closes
}

func testBadInput(t *testing.T, in *instance, db string, cases []badInput) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := in.metric(t, "pgchaos_protocol_errors_total", nil)
			var c net.Conn
			if tc.afterLogin {
				c, _ = login(t, in.addr(), db)
			} else {
				var err error
				if c, err = net.Dial("tcp", in.addr()); err != nil {
					t.Fatal(err)
				}
				defer c.Close()
			}
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.code != "" {
				expectFatal(t, c, tc.code, tc.want)
			} else {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if n, err := io.ReadAll(c); len(n) != 0 || (err != nil && !isReset(err)) {
					t.Fatalf("want the session closed without a reply; got %q, %v", n, err)
				}
			}
			waitFor(t, "protocol error counted", func() bool {
				return in.metric(t, "pgchaos_protocol_errors_total", nil) > before
			})
		})
	}
}

func startupPacket(code uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, 8)
	return binary.BigEndian.AppendUint32(b, code)
}

func TestUpstreamUnreachable(t *testing.T) {
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("127.0.0.1:%d", port)
	in := startProxy(t, dead, nil)
	healthy := startProxy(t, pg.Addr(), nil)
	healthyBeside(t, healthy.addr(), "postgres")
	_, err = pgx.Connect(testCtx(t), pgtest.ConnString(in.addr(), pgtest.SuperUser, "", "postgres"))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "08006" || pgErr.Severity != "FATAL" || !strings.Contains(pgErr.Message, dead) {
		t.Fatalf("want FATAL 08006 naming %s, got %v", dead, err)
	}
	if got := in.metric(t, "pgchaos_upstream_connect_failures_total", nil); got != 1 {
		t.Fatalf("upstream connect failures = %v, want 1", got)
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
