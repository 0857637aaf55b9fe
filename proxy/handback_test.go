package proxy_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
)

// relayOf is how the proxy carries its only session now.
func relayOf(t *testing.T, in *instance) string {
	t.Helper()
	list := in.registry.Sessions()
	if len(list) != 1 {
		t.Fatalf("%d sessions, want 1", len(list))
	}
	return list[0].Relay
}

func waitRelay(t *testing.T, in *instance, want string) {
	t.Helper()
	waitFor(t, "the session to be relayed by "+want, func() bool { return relayOf(t, in) == want })
}

// checkInStep runs simple, extended and pipelined queries and checks every
// answer: after moving between drivers the session must still be in step
// with the server.
func checkInStep(t *testing.T, ctx context.Context, conn *pgx.Conn) {
	t.Helper()
	var s string
	if err := conn.QueryRow(ctx, "SELECT 'simple'", pgx.QueryExecModeSimpleProtocol).Scan(&s); err != nil || s != "simple" {
		t.Fatalf("simple query: %q %v", s, err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT $1::int + 1", 41).Scan(&n); err != nil || n != 42 {
		t.Fatalf("extended query: %d %v", n, err)
	}
	b := &pgx.Batch{}
	for i := range 20 {
		b.Queue("SELECT $1::int", i)
	}
	br := conn.SendBatch(ctx, b)
	for i := range 20 {
		if err := br.QueryRow().Scan(&n); err != nil || n != i {
			t.Fatalf("pipelined query %d: %d %v", i, n, err)
		}
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT length(string_agg(g::text, ',')) FROM generate_series(1, 50000) g").Scan(&n); err != nil || n != 288893 {
		t.Fatalf("large result: %d %v", n, err)
	}
}

// TestFaultPathReturnsToLoop: a session that a verdict or byte toxic moved
// to goroutine pumps goes back to an event loop once it is done, in step
// with the server.
func TestFaultPathReturnsToLoop(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops are Linux-only")
	}
	e := faults.NewEngine(faults.Options{Seed: 1})
	in := startProxy(t, pg.Addr(), func(c *proxy.Config) { c.Faults = e })
	ctx := testCtx(t)
	conn := connect(t, ctx, pgtest.ConnString(in.addr(), pgtest.SuperUser, "", "postgres"))
	checkInStep(t, ctx, conn)
	if got := relayOf(t, in); got != "loop" {
		t.Fatalf("a session no rule touched is relayed by %q", got)
	}

	cases := []struct {
		name string
		rule faults.Rule
		// run sends what the rule acts on; it checks the outcome.
		run func(t *testing.T)
	}{
		{"delay", faults.Rule{Match: faults.Match{SQL: "marker"}, Action: faults.Action{Type: "delay", Delay: faults.Duration(20 * time.Millisecond)}, Limits: faults.Limits{Times: 1}},
			func(t *testing.T) {
				start := time.Now()
				mustExec(t, ctx, conn, "SELECT 'marker'")
				if d := time.Since(start); d < 20*time.Millisecond {
					t.Fatalf("delayed query took %v", d)
				}
			}},
		{"error after", faults.Rule{Match: faults.Match{SQL: "marker"}, Action: faults.Action{Type: "error", When: "after", SQLState: "40001"}, Limits: faults.Limits{Times: 1}},
			func(t *testing.T) {
				_, err := conn.Exec(ctx, "SELECT 'marker'")
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "40001" {
					t.Fatalf("want 40001, got %v", err)
				}
			}},
		{"error before in a batch", faults.Rule{Match: faults.Match{SQL: "marker"}, Action: faults.Action{Type: "error", SQLState: "40P01"}, Limits: faults.Limits{Times: 1}},
			func(t *testing.T) {
				b := &pgx.Batch{}
				b.Queue("SELECT 1")
				b.Queue("SELECT 'marker'")
				b.Queue("SELECT 3")
				err := conn.SendBatch(ctx, b).Close()
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "40P01" {
					t.Fatalf("want 40P01, got %v", err)
				}
			}},
		{"hang with a duration", faults.Rule{Match: faults.Match{SQL: "marker"}, Action: faults.Action{Type: "hang", Duration: faults.Duration(30 * time.Millisecond)}, Limits: faults.Limits{Times: 1}},
			func(t *testing.T) { mustExec(t, ctx, conn, "SELECT 'marker'") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.rule.Name = strings.ReplaceAll(c.name, " ", "-")
			addRule(t, e, c.rule)
			c.run(t)
			if n := fired(t, e, c.rule.Name); n != 1 {
				t.Fatalf("rule fired %d times", n)
			}
			waitRelay(t, in, "loop")
			checkInStep(t, ctx, conn)
			if got := relayOf(t, in); got != "loop" {
				t.Fatalf("relayed by %q after queries no rule matches", got)
			}
		})
	}

	t.Run("byte toxic added and removed", func(t *testing.T) {
		if _, err := e.Add(faults.Rule{Name: "lat", Action: faults.Action{Type: "latency", Attributes: map[string]any{"latency": 30}}}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		mustExec(t, ctx, conn, "SELECT 1")
		if d := time.Since(start); d < 30*time.Millisecond {
			t.Fatalf("query under a 30ms latency toxic took %v", d)
		}
		if got := relayOf(t, in); got != "goroutine" {
			t.Fatalf("a session under a byte toxic is relayed by %q", got)
		}
		if err := e.Remove("", "lat"); err != nil {
			t.Fatal(err)
		}
		mustExec(t, ctx, conn, "SELECT 1") // the first read after removal notices it
		waitRelay(t, in, "loop")
		checkInStep(t, ctx, conn)
	})
}
