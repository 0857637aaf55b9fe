package proxy_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
)

// resources is what a proxy process holds on behalf of its sessions.
type resources struct{ goroutines, fds, sessions int }

func (r resources) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, %d sessions", r.goroutines, r.fds, r.sessions)
}

func measure(reg *proxy.Registry) resources {
	return resources{goroutines: runtime.NumGoroutine(), fds: sessionFDs(), sessions: len(reg.Sessions())}
}

// sessionFDs counts the process's descriptors but epoll sets: an event
// loop that has gone idle waits on a duplicate of its epoll descriptor
// (closed when it wakes), so whether the loop was idle when the baseline
// was taken would decide the count. What a session holds — sockets, delay
// timers — is never an epoll set.
func sessionFDs() int {
	fds, _ := os.ReadDir("/proc/self/fd")
	n := 0
	for _, fd := range fds {
		if link, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && link == "anon_inode:[eventpoll]" {
			continue
		}
		n++
	}
	return n
}

// backToBaseline waits until goroutines, descriptors and sessions are no
// more than they were before the case started.
func backToBaseline(t *testing.T, base resources, reg *proxy.Registry) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		now := measure(reg)
		if now.goroutines <= base.goroutines && now.fds <= base.fds && now.sessions <= base.sessions {
			return
		}
		if os.Getenv("DEBUG_BASELINE") != "" && time.Until(deadline) < 4*time.Second {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Logf("%v %v\n%s", now, base, buf)
			os.Setenv("DEBUG_BASELINE", "")
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("not back to baseline 5s later: %v, baseline %v\n%s", now, base, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// holdingRule is a fault that, once it fires, holds bytes of a session:
// a message, the rest of a stream, or the client's Terminate and FIN.
type holdingRule struct {
	name string
	rule faults.Rule
	// big: the case needs a large message to be held mid-way (byte
	// toxics that pace a stream).
	big bool
}

func holdingRules() []holdingRule {
	c2s := "client_to_server"
	toxic := func(typ string, attrs map[string]any) faults.Rule {
		return faults.Rule{Name: "held", Match: faults.Match{Direction: c2s}, Action: faults.Action{Type: typ, Attributes: attrs}}
	}
	onMessages := faults.StringList{"query", "terminate"}
	return []holdingRule{
		{name: "delay", rule: faults.Rule{Name: "held", Match: faults.Match{Message: onMessages}, Action: faults.Action{Type: "delay", Delay: faults.Duration(time.Minute)}}},
		{name: "hang", rule: faults.Rule{Name: "held", Match: faults.Match{Message: onMessages}, Action: faults.Action{Type: "hang"}}},
		{name: "partition", rule: faults.Rule{Name: "held", Match: faults.Match{Message: onMessages}, Action: faults.Action{Type: "partition"}}},
		{name: "drop", rule: faults.Rule{Name: "held", Match: faults.Match{Message: onMessages}, Action: faults.Action{Type: "drop"}}},
		{name: "latency", rule: toxic("latency", map[string]any{"latency": 60000})},
		{name: "bandwidth", rule: toxic("bandwidth", map[string]any{"rate": 1}), big: true},
		{name: "slicer", rule: toxic("slicer", map[string]any{"average_size": 1, "delay": 10000}), big: true},
		{name: "slow_close", rule: toxic("slow_close", map[string]any{"delay": 60000})},
		{name: "timeout", rule: toxic("timeout", map[string]any{"timeout": 0})},
		{name: "reset_peer", rule: toxic("reset_peer", map[string]any{"timeout": 60000})},
		{name: "limit_data", rule: toxic("limit_data", map[string]any{"bytes": 1 << 30})},
	}
}

// TestRemovalReleases checks, for every action that holds traffic and at
// every moment it can be holding it, that removing the rule (or killing the
// session, or closing the proxy) ends what it held: nothing of the session
// is left behind, and nothing waits on traffic.
func TestRemovalReleases(t *testing.T) {
	moments := []struct {
		name string
		run  func(t *testing.T, m *moment)
	}{
		{"holding Terminate and FIN, rule removed", momentTerminate},
		{"mid-message, rule removed", momentMidMessage},
		{"session killed", momentKill},
		{"proxy closed", momentProxyClose},
	}
	for _, hr := range holdingRules() {
		for _, mo := range moments {
			t.Run(hr.name+"/"+mo.name, func(t *testing.T) {
				e := faults.NewEngine(faults.Options{Seed: 1})
				in := startProxy(t, pg.Addr(), func(c *proxy.Config) { c.Faults = e })
				m := &moment{t: t, e: e, in: in, hr: hr, dsn: pgtest.ConnString(in.addr(), pgtest.SuperUser, "", "postgres")}
				// A first session warms up what the process keeps anyway.
				c := m.connect()
				c.Close(context.Background())
				waitFor(t, "the warm-up session to end", func() bool { return len(in.registry.Sessions()) == 0 })
				m.base = measure(in.registry)
				mo.run(t, m)
			})
		}
	}
}

type moment struct {
	t    *testing.T
	e    *faults.Engine
	in   *instance
	hr   holdingRule
	dsn  string
	base resources
}

func (m *moment) connect() *pgconn.PgConn {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, m.dsn)
	if err != nil {
		m.t.Fatalf("connect: %v", err)
	}
	return c
}

func (m *moment) add() {
	m.t.Helper()
	if _, err := m.e.Add(m.hr.rule); err != nil {
		m.t.Fatalf("add rule: %v", err)
	}
}

func (m *moment) remove() {
	m.t.Helper()
	if err := m.e.Remove("", m.hr.rule.Name); err != nil {
		m.t.Fatalf("remove rule: %v", err)
	}
}

func (m *moment) waitFired() {
	m.t.Helper()
	waitFor(m.t, "the rule to fire", func() bool {
		st, err := m.e.Get("", m.hr.rule.Name)
		return err == nil && st.Fired > 0
	})
}

var bigSQL = "SELECT length('" + strings.Repeat("x", 200<<10) + "')"

// finish closes the client's socket once its query has ended, or cuts it
// under a query that can never end.
func finish(t *testing.T, c *pgconn.PgConn, done <-chan error) {
	t.Helper()
	select {
	case <-done:
		c.Close(context.Background())
		return
	case <-time.After(100 * time.Millisecond):
	}
	c.Conn().Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the client's query did not end after its socket was closed")
	}
}

// query sends a query the rule holds (a large one for the pacing toxics)
// and returns a channel that yields its outcome.
func (m *moment) query(c *pgconn.PgConn) <-chan error {
	sql := "SELECT 1"
	if m.hr.big {
		sql = bigSQL
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, err := c.Exec(ctx, sql).ReadAll()
		done <- err
	}()
	return done
}

// momentTerminate: the client says goodbye (Terminate, then FIN) while the
// rule holds its stream, as psql does right after its last query; the rule
// is removed.
func momentTerminate(t *testing.T, m *moment) {
	c := m.connect()
	m.add()
	var out []byte
	if m.hr.big {
		out, _ = (&pgproto3.Query{String: bigSQL}).Encode(out)
	}
	out, _ = (&pgproto3.Terminate{}).Encode(out)
	if _, err := c.Conn().Write(out); err != nil {
		t.Fatal(err)
	}
	c.Conn().Close()
	m.waitFired()
	m.remove()
	backToBaseline(t, m.base, m.in.registry)
}

// momentMidMessage: a query is held; removing the rule lets it through
// (or, for the rules that throw data away, at least ends the hold).
func momentMidMessage(t *testing.T, m *moment) {
	c := m.connect()
	m.add()
	done := m.query(c)
	m.waitFired()
	time.Sleep(20 * time.Millisecond)
	m.remove()
	switch m.hr.name {
	case "delay", "hang", "partition", "latency", "bandwidth", "slicer", "slow_close", "limit_data":
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("held query after the rule was removed: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("the held query did not complete within 2s of removing the rule")
		}
		c.Close(context.Background())
	default:
		finish(t, c, done)
	}
	backToBaseline(t, m.base, m.in.registry)
}

// momentKill: the session is killed while the rule holds it.
func momentKill(t *testing.T, m *moment) {
	c := m.connect()
	m.add()
	done := m.query(c)
	m.waitFired()
	time.Sleep(20 * time.Millisecond)
	for _, s := range m.in.registry.Sessions() {
		m.in.registry.Kill(s.ID)
	}
	finish(t, c, done)
	backToBaseline(t, m.base, m.in.registry)
	m.remove()
}

// momentProxyClose: the proxy is closed while the rule holds a session; the
// close finishes promptly and takes the session with it.
func momentProxyClose(t *testing.T, m *moment) {
	c := m.connect()
	m.add()
	done := m.query(c)
	m.waitFired()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	m.in.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("closing the proxy took %v", d)
	}
	finish(t, c, done)
	// The listener is gone too.
	m.base.fds--
	backToBaseline(t, m.base, m.in.registry)
	m.remove()
}
