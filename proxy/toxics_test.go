package proxy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
)

func timeQuery(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string) time.Duration {
	t.Helper()
	start := time.Now()
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return time.Since(start)
}

func TestByteToxics(t *testing.T) {
	e := faults.NewEngine(faults.Options{Seed: 1})
	in := startProxy(t, pg.Addr(), func(c *proxy.Config) { c.Faults = e })
	ctx := testCtx(t)
	dsn := pgtest.ConnString(in.addr(), pgtest.SuperUser, "", "postgres")
	live := connect(t, ctx, dsn, simpleProtocol)
	// The baseline is the median of several queries: one alone may be
	// the one a busy machine slowed down.
	base := medianOf(5, func() { timeQuery(t, ctx, live, "SELECT repeat('x', 100)") })

	t.Run("latency applies to open and new sessions", func(t *testing.T) {
		if _, err := e.Add(faults.Rule{Name: "lat", Action: faults.Action{Type: "latency", Attributes: map[string]any{"latency": 100}}}); err != nil {
			t.Fatal(err)
		}
		if d := timeQuery(t, ctx, live, "SELECT repeat('x', 100)"); d < base+90*time.Millisecond {
			t.Fatalf("open session: %v (base %v); want +100ms", d, base)
		}
		fresh := connect(t, ctx, dsn, simpleProtocol)
		if d := timeQuery(t, ctx, fresh, "SELECT repeat('y', 100)"); d < base+90*time.Millisecond {
			t.Fatalf("new session: %v (base %v); want +100ms", d, base)
		}
		// Removing the toxic lets the stream through unharmed, in order.
		if err := e.Remove("", "lat"); err != nil {
			t.Fatal(err)
		}
		timeQuery(t, ctx, live, "SELECT 'flush'") // the first read after removal may still pass the old toxic
		if d := timeQuery(t, ctx, live, "SELECT repeat('z', 100)"); d > base+50*time.Millisecond {
			t.Fatalf("after removal: %v (base %v)", d, base)
		}
		var s string
		if err := live.QueryRow(ctx, "SELECT string_agg(g::text, ',') FROM generate_series(1, 2000) g").Scan(&s); err != nil || !strings.HasPrefix(s, "1,2,3") || !strings.HasSuffix(s, "1999,2000") {
			t.Fatalf("stream damaged after toxic removal: %.40q %v", s, err)
		}
	})

	t.Run("limit_data closes the session", func(t *testing.T) {
		if _, err := e.Add(faults.Rule{Name: "limit", Match: faults.Match{ApplicationName: "^limited$"},
			Action: faults.Action{Type: "limit_data", Attributes: map[string]any{"bytes": 20000}}}); err != nil {
			t.Fatal(err)
		}
		defer e.Remove("", "limit")
		limited := connect(t, ctx, dsn+"&application_name=limited", simpleProtocol)
		var s string
		err := limited.QueryRow(ctx, "SELECT repeat('x', 50000)").Scan(&s)
		if err == nil {
			t.Fatal("50 kB came through a 20 kB limit")
		}
		if err := live.QueryRow(ctx, "SELECT repeat('x', 50000)").Scan(&s); err != nil {
			t.Fatalf("a session the rule does not match was harmed: %v", err)
		}
	})

	t.Run("invalid attributes name the field", func(t *testing.T) {
		_, err := e.Add(faults.Rule{Name: "bad", Action: faults.Action{Type: "latency", Attributes: map[string]any{"latency": "soon"}}})
		if err == nil || !strings.Contains(err.Error(), "action.attributes") {
			t.Fatalf("want an action.attributes error, got %v", err)
		}
		_, err = e.Add(faults.Rule{Name: "bad", Match: faults.Match{SQL: "x"}, Action: faults.Action{Type: "latency"}})
		if err == nil || !strings.Contains(err.Error(), "match") {
			t.Fatalf("want a match error, got %v", err)
		}
	})
}

// Once a latency toxic is removed, no later query pays for it, in cycle
// after cycle of adding and removing it on an open session (the session
// moves between the goroutine pumps and an event loop each time). A toxic
// left behind delays every query by its 300ms; the median of three is
// judged, so that a machine busy enough to slow one query cannot fail it.
func TestToxicRemovalLeavesNoDelay(t *testing.T) {
	e := faults.NewEngine(faults.Options{Seed: 1})
	in := startProxy(t, pg.Addr(), func(c *proxy.Config) { c.Faults = e })
	ctx := testCtx(t)
	live := connect(t, ctx, pgtest.ConnString(in.addr(), pgtest.SuperUser, "", "postgres"), simpleProtocol)
	for i := range 25 {
		if _, err := e.Add(faults.Rule{Name: "lat", Action: faults.Action{Type: "latency", Attributes: map[string]any{"latency": 300}}}); err != nil {
			t.Fatal(err)
		}
		timeQuery(t, ctx, live, "SELECT 'under the toxic'")
		if err := e.Remove("", "lat"); err != nil {
			t.Fatal(err)
		}
		timeQuery(t, ctx, live, "SELECT 'flush'") // may still meet the toxic it was read under
		if d := medianOf(3, func() { timeQuery(t, ctx, live, "SELECT 'after'") }); d > 150*time.Millisecond {
			t.Fatalf("cycle %d: queries took %v (median of 3) after the toxic was removed", i, d)
		}
	}
}
