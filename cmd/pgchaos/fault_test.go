package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
	"github.com/pgchaos/pgchaos/server"
)

func pgchaos(t *testing.T, wantCode int, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(args, &stdout, &stderr); code != wantCode {
		t.Fatalf("pgchaos %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, wantCode, stdout.String(), stderr.String())
	}
	return stdout.String() + stderr.String()
}

// startServer starts pgchaos in-process with a proxy of each name in front
// of the test's PostgreSQL, until the test ends, and returns its API
// address.
func startServer(t *testing.T, names ...string) (*server.Server, string) {
	t.Helper()
	cfg := server.Config{API: "127.0.0.1:0"}
	for _, n := range names {
		cfg.Proxies = append(cfg.Proxies, server.ProxyConfig{Name: n, Listen: "127.0.0.1:0", Upstream: pg.Addr()})
	}
	s, err := server.Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, s.APIAddr().String()
}

// connectThrough opens a session through s's first proxy with the given
// application_name, closed when the test ends (before s).
func connectThrough(t *testing.T, ctx context.Context, s *server.Server, app string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, pgtest.ConnString(s.Proxies()[0].Addr().String(), pgtest.SuperUser, "", "postgres")+"&application_name="+app)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestFaultCommands(t *testing.T) {
	s, api := startServer(t, "pg")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := connectThrough(t, ctx, s, "cli_test")

	out := pgchaos(t, 0, "fault", "add", "--api", api, "--name", "nope", "--sql", `^select 7$`, "--action", "error", "--sqlstate", "40001", "--times", "1")
	if !strings.Contains(out, "added rule nope") {
		t.Fatal(out)
	}
	pgchaos(t, 2, "fault", "add", "--api", api, "--name", "nope", "--action", "drop")                       // exists
	pgchaos(t, 2, "fault", "add", "--api", api, "--name", "bad", "--action", "error")                       // no sqlstate
	pgchaos(t, 2, "fault", "add", "--api", api, "--name", "bad", "--action", "delay", "--statement", "sel") // bad class

	_, err := conn.Exec(ctx, "SELECT 7")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "40001" {
		t.Fatalf("want 40001, got %v", err)
	}
	if _, err := conn.Exec(ctx, "SELECT 7"); err != nil {
		t.Fatalf("--times 1 fired twice: %v", err)
	}
	list := pgchaos(t, 0, "fault", "list", "--api", api)
	if !strings.Contains(list, "nope") || !strings.Contains(list, "sql=^select 7$") || !strings.Contains(list, "2        1") {
		t.Fatalf("fault list:\n%s", list)
	}
	if ev := pgchaos(t, 0, "events", "--api", api); !strings.Contains(ev, "nope") || !strings.Contains(ev, `"SELECT $1"`) {
		t.Fatalf("events:\n%s", ev)
	}
	pgchaos(t, 0, "fault", "rm", "--api", api, "nope")
	pgchaos(t, 2, "fault", "rm", "--api", api, "nope")

	file := filepath.Join(t.TempDir(), "rules.yaml")
	os.WriteFile(file, []byte("- name: a\n  match: {statement: commit}\n  action: {type: delay, delay: 1ms}\n- name: b\n  match: {tag: COMMIT}\n  action: {type: disconnect, when: after}\n"), 0o644)
	if out := pgchaos(t, 0, "fault", "add", "--api", api, "--file", file); !strings.Contains(out, "added rule a") || !strings.Contains(out, "added rule b") {
		t.Fatal(out)
	}
	os.WriteFile(file, []byte("name: c\naction:\n  type: error\n  sqlstate: 4001\n"), 0o644)
	if out := pgchaos(t, 2, "fault", "add", "--api", api, "--file", file); !strings.Contains(out, file+":1 (c): action.sqlstate") {
		t.Fatalf("want file:line and field:\n%s", out)
	}
	pgchaos(t, 0, "fault", "reset", "--api", api)
	if list := pgchaos(t, 0, "fault", "list", "--api", api); strings.Count(list, "\n") != 1 {
		t.Fatalf("rules left after reset:\n%s", list)
	}

	sessions := pgchaos(t, 0, "sessions", "--api", api)
	if !strings.Contains(sessions, "cli_test") {
		t.Fatalf("sessions:\n%s", sessions)
	}
	id := s.Registry.Sessions()[0].ID
	pgchaos(t, 0, "sessions", "--api", api, "--kill", strings.TrimSpace(strings.Fields(sessions[strings.Index(sessions, "\n")+1:])[0]))
	if err := conn.Ping(ctx); err == nil {
		t.Fatalf("session %d still alive after sessions --kill", id)
	}
	pgchaos(t, 1, "fault", "list", "--api", "127.0.0.1:1") // nothing listening: not a usage error
}

// Every flag of pgchaos fault add reaches the rule the server holds.
func TestFaultAddFlagsReachTheRule(t *testing.T) {
	s, api := startServer(t, "pg")
	p := func(f float64) *float64 { return &f }
	off := false
	ms := func(n int) faults.Duration { return faults.Duration(time.Duration(n) * time.Millisecond) }
	cases := []struct {
		args []string
		want faults.Rule
	}{
		{[]string{"--name", "matchers", "--proxy", "pg", "--direction", "client_to_server", "--message", "query,execute",
			"--sql", "^select", "--sql-case-sensitive", "--statement", "select,insert", "--tx-status", "in_transaction,failed",
			"--user", "app", "--database", "appdb", "--application-name", "^web", "--client-cidr", "10.0.0.0/8",
			"--action", "error", "--when", "after", "--sqlstate", "40001", "--severity", "FATAL", "--error-message", "no luck",
			"--probability", "0.25", "--skip", "2", "--times", "5", "--once-per-session", "--expires", "1m", "--disabled"},
			faults.Rule{Name: "matchers", Proxy: "pg", Enabled: &off,
				Match: faults.Match{Direction: "client_to_server", Message: faults.StringList{"query", "execute"}, SQL: "^select", SQLCaseSensitive: true,
					Statement: faults.StringList{"select", "insert"}, TxStatus: faults.StringList{"in_transaction", "failed"},
					User: "app", Database: "appdb", ApplicationName: "^web", ClientCIDR: "10.0.0.0/8"},
				Action: faults.Action{Type: "error", When: "after", SQLState: "40001", Severity: "FATAL", Message: "no luck"},
				Limits: faults.Limits{Probability: p(0.25), Skip: 2, Times: 5, OncePerSession: true, Expires: faults.Duration(time.Minute)}}},
		{[]string{"--name", "cut", "--tag", "PREPARE TRANSACTION", "--action", "disconnect", "--side", "client", "--close", "rst"},
			faults.Rule{Name: "cut", Match: faults.Match{Tag: "PREPARE TRANSACTION"}, Action: faults.Action{Type: "disconnect", Side: "client", Close: "rst"}}},
		{[]string{"--name", "in-doubt", "--fingerprint", "insert into t values ($1)", "--action", "disconnect", "--when", "result", "--close", "rst"},
			faults.Rule{Name: "in-doubt", Match: faults.Match{Fingerprint: "insert into t values ($1)"}, Action: faults.Action{Type: "disconnect", When: "result", Close: "rst"}}},
		{[]string{"--name", "slow", "--sql", "x", "--action", "delay", "--delay", "50ms", "--jitter", "10ms"},
			faults.Rule{Name: "slow", Match: faults.Match{SQL: "x"}, Action: faults.Action{Type: "delay", Delay: ms(50), Jitter: ms(10)}}},
		{[]string{"--name", "freeze", "--statement", "commit", "--action", "hang", "--duration", "2s"},
			faults.Rule{Name: "freeze", Match: faults.Match{Statement: faults.StringList{"commit"}}, Action: faults.Action{Type: "hang", Duration: ms(2000)}}},
		{[]string{"--name", "dial", "--event", "connect", "--action", "slow_connect", "--delay", "1s", "--jitter", "100ms"},
			faults.Rule{Name: "dial", Match: faults.Match{Event: "connect"}, Action: faults.Action{Type: "slow_connect", Delay: ms(1000), Jitter: ms(100)}}},
		{[]string{"--name", "slow", "--replace", "--sql", "y", "--action", "delay", "--delay", "70ms"},
			faults.Rule{Name: "slow", Match: faults.Match{SQL: "y"}, Action: faults.Action{Type: "delay", Delay: ms(70)}}},
	}
	for _, tc := range cases {
		pgchaos(t, 0, append([]string{"fault", "add", "--api", api}, tc.args...)...)
		st, err := s.Faults.Get(tc.want.Proxy, tc.want.Name)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		got, _ := json.Marshal(st.Rule)
		want, _ := json.Marshal(tc.want)
		if string(got) != string(want) {
			t.Errorf("pgchaos fault add %s\nthe server holds %s\nwant             %s", strings.Join(tc.args, " "), got, want)
		}
	}
}

// The flags of fault rm, fault list, events and sessions reach the API:
// --proxy picks a proxy's own rule, --limit the last events, --json prints
// what the API said.
func TestCommandFlags(t *testing.T) {
	s, api := startServer(t, "a", "b")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := connectThrough(t, ctx, s, "flags_test")

	for _, p := range []string{"a", "b"} {
		pgchaos(t, 0, "fault", "add", "--api", api, "--name", "same", "--proxy", p, "--sql", "^select 9$", "--action", "drop")
	}
	pgchaos(t, 0, "fault", "add", "--api", api, "--name", "every", "--sql", "^select 7$", "--action", "error", "--sqlstate", "40001")
	var rules []faults.RuleStatus
	if err := json.Unmarshal([]byte(pgchaos(t, 0, "fault", "list", "--api", api, "--json")), &rules); err != nil || len(rules) != 3 {
		t.Fatalf("fault list --json: %v %+v", err, rules)
	}
	pgchaos(t, 0, "fault", "rm", "--api", api, "same", "--proxy", "a")
	if _, err := s.Faults.Get("a", "same"); err == nil {
		t.Error("fault rm same --proxy a left a's rule")
	}
	if _, err := s.Faults.Get("b", "same"); err != nil {
		t.Errorf("fault rm same --proxy a removed b's rule too: %v", err)
	}

	for range 4 {
		if _, err := conn.Exec(ctx, "select 7"); err == nil {
			t.Fatal("the rule did not fire")
		}
	}
	var events []faults.Event
	if err := json.Unmarshal([]byte(pgchaos(t, 0, "events", "--api", api, "--json", "--limit", "0")), &events); err != nil || len(events) != 4 {
		t.Fatalf("events --limit 0 --json: %v %+v", err, events)
	}
	var last []faults.Event
	if err := json.Unmarshal([]byte(pgchaos(t, 0, "events", "--api", api, "--json", "--limit", "3")), &last); err != nil || len(last) != 3 || !last[0].Time.Equal(events[1].Time) {
		t.Fatalf("events --limit 3 --json: %v %+v; want the last 3 of %+v", err, last, events)
	}
	if out := pgchaos(t, 0, "events", "--api", api, "--limit", "2"); strings.Count(out, "\n") != 2 || !strings.Contains(out, "every") {
		t.Errorf("events --limit 2:\n%s", out)
	}

	var sessions []proxy.SessionInfo
	if err := json.Unmarshal([]byte(pgchaos(t, 0, "sessions", "--api", api, "--json")), &sessions); err != nil || len(sessions) != 1 ||
		sessions[0].ApplicationName != "flags_test" || sessions[0].Proxy != "a" {
		t.Fatalf("sessions --json: %v %+v", err, sessions)
	}
}

// PGCHAOS_API saves repeating --api, as TOXIPROXY_URL does for toxiproxy-cli;
// --api still wins, and the server's own --api does not read it.
func TestAPIFromEnvironment(t *testing.T) {
	_, api := startServer(t, "pg")
	for i, env := range []string{api, "http://" + api} {
		t.Setenv("PGCHAOS_API", env)
		name := []string{"from-env-addr", "from-env-url"}[i]
		pgchaos(t, 0, "fault", "add", "--name", name, "--sql", "never matches", "--action", "delay", "--delay", "1ms")
		if out := pgchaos(t, 0, "fault", "list"); !strings.Contains(out, name) {
			t.Fatalf("PGCHAOS_API=%s: fault list has no %s:\n%s", env, name, out)
		}
		pgchaos(t, 0, "sessions")
		pgchaos(t, 0, "events")
		pgchaos(t, 0, "fault", "rm", name)
	}
	t.Setenv("PGCHAOS_API", "127.0.0.1:1")
	if out := pgchaos(t, 1, "fault", "list"); !strings.Contains(out, "127.0.0.1:1") {
		t.Errorf("an unreachable PGCHAOS_API: the error does not name it:\n%s", out)
	}
	pgchaos(t, 0, "fault", "list", "--api", api)
	if out := pgchaos(t, 0, "proxy", "--help"); !strings.Contains(out, `(default "`+server.DefaultAPI+`")`) {
		t.Errorf("pgchaos proxy's --api took PGCHAOS_API:\n%s", out)
	}
}
