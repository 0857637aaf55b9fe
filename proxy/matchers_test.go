package proxy_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// probe runs the statement every rule here aims at and reports whether the
// client was told the rule's error.
func probe(t *testing.T, ctx context.Context, conn *pgx.Conn) bool {
	t.Helper()
	var s string
	err := conn.QueryRow(ctx, "SELECT 'probe'").Scan(&s)
	var pgErr *pgconn.PgError
	switch {
	case err == nil && s == "probe":
		return false
	case errors.As(err, &pgErr) && pgErr.Code == "40001":
		return true
	}
	t.Fatalf("probe: %q %v", s, err)
	return false
}

// who is a session: its startup user, password, database and
// application_name.
type who struct{ user, password, db, app string }

func (w who) dsn(addr string) string {
	user := w.user
	if user == "" {
		user = pgtest.SuperUser
	}
	dsn := pgtest.ConnString(addr, user, w.password, w.db)
	if w.app != "" {
		dsn += "&application_name=" + w.app
	}
	return dsn
}

// The session matchers see what the proxy knows of each session: its
// startup user and database, its current application_name and its
// client's address. A rule with one fires in the sessions it names and in
// no other.
func TestSessionMatchers(t *testing.T) {
	ctx := testCtx(t)
	db := newDatabase(t)
	cases := []struct {
		name      string
		match     faults.Match
		hit, miss who
		// SQL each session runs first.
		hitSQL, missSQL string
		// Every client here comes from 127.0.0.1: a rule for it has no
		// session to miss, one for another network none to hit.
		noHit, noMiss bool
	}{
		{name: "user", match: faults.Match{User: pgtest.MD5User}, hit: who{user: pgtest.MD5User, password: pgtest.MD5Password}},
		{name: "database", match: faults.Match{Database: db}, hit: who{db: db}},
		{name: "application_name", match: faults.Match{ApplicationName: "^vic"}, hit: who{app: "victim"}, miss: who{app: "bystander"}},
		// The application_name a session has now, not the one it started with.
		{name: "application_name after SET", match: faults.Match{ApplicationName: "^renamed$"},
			hit: who{app: "other"}, hitSQL: "SET application_name = 'renamed'",
			miss: who{app: "renamed"}, missSQL: "SET application_name = 'other'"},
		{name: "client_cidr", match: faults.Match{ClientCIDR: "127.0.0.1/32"}, hit: who{}, noMiss: true},
		{name: "client_cidr elsewhere", match: faults.Match{ClientCIDR: "10.0.0.0/8"}, miss: who{}, noHit: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in, e, _ := faultProxy(t)
			match := c.match
			match.SQL = "'probe'"
			addRule(t, e, faults.Rule{Name: "aimed", Match: match, Action: faults.Action{Type: "error", SQLState: "40001"}})
			session := func(w who, sql string) *pgx.Conn {
				conn := connect(t, ctx, w.dsn(in.addr()))
				if sql != "" {
					mustExec(t, ctx, conn, sql)
				}
				return conn
			}
			if !c.noHit {
				if !probe(t, ctx, session(c.hit, c.hitSQL)) {
					t.Fatalf("session %+v: the rule did not fire", c.hit)
				}
			}
			if !c.noMiss {
				if probe(t, ctx, session(c.miss, c.missSQL)) {
					t.Fatalf("session %+v: the rule fired; it does not match", c.miss)
				}
			}
		})
	}
}

// A connect rule sees the startup packet's user, database and
// application_name: it refuses the clients it names and lets others in.
func TestConnectMatchers(t *testing.T) {
	ctx := testCtx(t)
	in, e, _ := faultProxy(t)
	addRule(t, e, faults.Rule{Name: "keep-out", Match: faults.Match{Event: "connect", ApplicationName: "^vic", User: pgtest.SuperUser, Database: "postgres"},
		Action: faults.Action{Type: "refuse", SQLState: "57P03", Message: "not you"}})
	_, err := pgx.Connect(ctx, who{app: "victim"}.dsn(in.addr()))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57P03" {
		t.Fatalf("a client the rule names: want 57P03, got %v", err)
	}
	for _, w := range []who{{app: "bystander"}, {app: "victim", user: pgtest.MD5User, password: pgtest.MD5Password}, {app: "victim", db: newDatabase(t)}} {
		connect(t, ctx, w.dsn(in.addr())) // fails the test if refused
	}
}

// once_per_session counts per session: a second statement of the session
// it fired in goes through, the first of another session does not.
func TestOncePerSession(t *testing.T) {
	ctx := testCtx(t)
	_, e, dsn := faultProxy(t)
	addRule(t, e, faults.Rule{Name: "once", Match: faults.Match{SQL: "'probe'"}, Action: faults.Action{Type: "error", SQLState: "40001"},
		Limits: faults.Limits{OncePerSession: true}})
	for i := range 2 {
		conn := connect(t, ctx, dsn)
		if !probe(t, ctx, conn) {
			t.Fatalf("session %d: the first probe went through", i)
		}
		for range 3 {
			if probe(t, ctx, conn) {
				t.Fatalf("session %d: the rule fired again in the same session", i)
			}
		}
	}
	if n := fired(t, e, "once"); n != 2 {
		t.Fatalf("fired %d times over two sessions, want 2", n)
	}
}

// A sql rule on Parse messages sees the SQL the Parse carries.
func TestSQLOnParse(t *testing.T) {
	ctx := testCtx(t)
	_, e, dsn := faultProxy(t)
	conn := connect(t, ctx, dsn, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = pgx.QueryExecModeCacheStatement })
	addRule(t, e, faults.Rule{Name: "on-parse", Match: faults.Match{Message: faults.StringList{"parse"}, SQL: "'probe'"}, Action: faults.Action{Type: "error", SQLState: "40001"}})
	if !probe(t, ctx, conn) {
		t.Fatal("the Parse of SELECT 'probe' went through a rule on its SQL")
	}
}

// A fired fault's event names the session it acted in, by the id
// GET /sessions shows.
func TestEventNamesTheSession(t *testing.T) {
	ctx := testCtx(t)
	in, e, dsn := faultProxy(t)
	connect(t, ctx, dsn) // another session first, so that ids differ
	conn := connect(t, ctx, dsn)
	addRule(t, e, faults.Rule{Name: "seen", Match: faults.Match{SQL: "'probe'"}, Action: faults.Action{Type: "error", SQLState: "40001"}})
	if !probe(t, ctx, conn) {
		t.Fatal("the rule did not fire")
	}
	var id uint64
	for _, s := range in.registry.Sessions() {
		if uint32(s.BackendPID) == conn.PgConn().PID() {
			id = s.ID
		}
	}
	events := e.Events(0)
	if id == 0 || len(events) != 1 || events[0].Session != id || events[0].Rule != "seen" {
		t.Fatalf("events %+v; want one of rule seen in session %d", events, id)
	}
}
