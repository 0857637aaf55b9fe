package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/server"
)

func send(t *testing.T, method, url, body string, wantStatus int) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("%s %s: status %d, want %d: %s", method, url, resp.StatusCode, wantStatus, data)
	}
	var out map[string]any
	if len(bytes.TrimSpace(data)) > 0 && data[0] == '{' {
		json.Unmarshal(data, &out)
	}
	return out
}

// withSession starts pgchaos with one proxy "pg" and opens a session
// through it; everything ends with the test.
func withSession(t *testing.T) (*server.Server, string, context.Context, *pgx.Conn) {
	t.Helper()
	s := start(t, server.Config{API: "127.0.0.1:0", Proxies: []server.ProxyConfig{{Name: "pg", Listen: "127.0.0.1:0", Upstream: pg.Addr()}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	conn, err := pgx.Connect(ctx, pgtest.ConnString(s.Proxies()[0].Addr().String(), pgtest.SuperUser, "", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return s, "http://" + s.APIAddr().String(), ctx, conn
}

// waitFired waits until the rule has fired n times.
func waitFired(t *testing.T, api, rule string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for send(t, "GET", api+"/rules/"+rule, "", 200)["fired"] != float64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("rule %s never fired %d times", rule, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRulesAPI(t *testing.T) {
	_, api, ctx, conn := withSession(t)

	rule := `{"name": "deny-42", "match": {"sql": "SELECT 42"}, "action": {"type": "error", "sqlstate": "42501", "message": "no 42 for you"}}`
	st := send(t, "POST", api+"/rules", rule, 201)
	if st["name"] != "deny-42" || st["fired"] != float64(0) {
		t.Fatalf("added: %v", st)
	}
	send(t, "POST", api+"/rules", rule, 409)
	bad := send(t, "POST", api+"/rules", `{"name": "bad", "action": {"type": "error"}}`, 400)
	if bad["field"] != "action.sqlstate" || !strings.Contains(bad["error"].(string), "action.sqlstate") || bad["status"] != float64(400) {
		t.Fatalf("validation error: %v", bad)
	}
	bad = send(t, "POST", api+"/rules", `{"name": "bad", "acton": {}}`, 400)
	if !strings.Contains(bad["error"].(string), `unknown field "acton"`) {
		t.Fatalf("unknown field: %v", bad)
	}
	bad = send(t, "POST", api+"/rules", `{"name": "bad", "proxy": "nope", "action": {"type": "drop"}}`, 400)
	if bad["field"] != "proxy" {
		t.Fatalf("unknown proxy: %v", bad)
	}

	// The rule acts on the session that was open before it was added.
	_, err := conn.Exec(ctx, "SELECT 42")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" || pgErr.Message != "no 42 for you" {
		t.Fatalf("want the injected 42501, got %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Fatalf("other queries: %d %v", n, err)
	}
	st = send(t, "GET", api+"/rules/deny-42", "", 200)
	if st["fired"] != float64(1) {
		t.Fatalf("fired count: %v", st)
	}
	var events []faults.Event
	get(t, api+"/events", 200, &events)
	if len(events) != 1 || events[0].Rule != "deny-42" || !strings.Contains(events[0].Message, `"SELECT $1"`) || events[0].Proxy != "pg" {
		t.Fatalf("events: %+v", events)
	}
	if !strings.Contains(get(t, api+"/metrics", 200, nil), `pgchaos_fault_fired_total{action="error",proxy="pg",rule="deny-42"} 1`) {
		t.Fatal("fired metric missing")
	}

	// Disable it through PUT, then remove it.
	send(t, "PUT", api+"/rules/deny-42", `{"enabled": false, "match": {"sql": "SELECT 42"}, "action": {"type": "error", "sqlstate": "42501"}}`, 200)
	if _, err := conn.Exec(ctx, "SELECT 42"); err != nil {
		t.Fatalf("disabled rule still fires: %v", err)
	}
	send(t, "DELETE", api+"/rules/deny-42", "", 204)
	send(t, "DELETE", api+"/rules/deny-42", "", 404)
	send(t, "POST", api+"/rules", rule, 201)
	send(t, "DELETE", api+"/rules", "", 204)
	var rules []faults.RuleStatus
	get(t, api+"/rules", 200, &rules)
	if len(rules) != 0 {
		t.Fatalf("rules after reset: %+v", rules)
	}
}

// Removing a hang releases the traffic it held, and never waits for it.
func TestRemoveHangReleases(t *testing.T) {
	_, api, ctx, conn := withSession(t)
	send(t, "POST", api+"/rules", `{"name": "freeze", "match": {"statement": "select"}, "action": {"type": "hang"}}`, 201)
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "SELECT pg_sleep(0)")
		done <- err
	}()
	waitFired(t, api, "freeze", 1)
	select {
	case err := <-done:
		t.Fatalf("query finished while hung: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	// The hang holds the query for ever: a removal that waited for it
	// would not return; on a loaded machine a request may take a while.
	start := time.Now()
	send(t, "DELETE", api+"/rules/freeze", "", 204)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("removing the hang took %v", took)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("released query: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("query still held after the hang was removed")
	}
}

func TestConfigRules(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(`
proxies:
  - {name: pg, listen: "127.0.0.1:0", upstream: "`+pg.Addr()+`"}
rules:
  - name: slow-start
    match: {event: connect}
    action: {type: refuse, sqlstate: 57P03, message: "the database system is starting up"}
`), 0o644)
	cfg, err := server.LoadConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	cfg.API = "127.0.0.1:0"
	s := start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = pgx.Connect(ctx, pgtest.ConnString(s.Proxies()[0].Addr().String(), pgtest.SuperUser, "", "postgres"))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57P03" {
		t.Fatalf("rule from the config file: want 57P03, got %v", err)
	}
	// Close removes every rule first.
	s.Close()
	if n := len(s.Faults.Rules()); n != 0 {
		t.Fatalf("%d rules left after Close", n)
	}

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("proxies:\n  - {name: pg, listen: '127.0.0.1:1', upstream: '127.0.0.1:2'}\nrules:\n  - name: ok\n    action: {type: drop}\n  - name: broken\n    action: {type: error, sqlstate: 4001}\n"), 0o644)
	if _, err := server.LoadConfig(bad); err == nil || !strings.Contains(err.Error(), bad+":6: rules[1] (broken): action.sqlstate:") {
		t.Fatalf("want file:line and field, got %v", err)
	}
}

// A client that gives up while a hang holds its session ends the session:
// nothing waits on forever, and the session leaves the registry.
func TestHangEndsWithItsClient(t *testing.T) {
	s, api, ctx, conn := withSession(t)
	send(t, "POST", api+"/rules", `{"name": "freeze-replies", "match": {"message": "ready_for_query"}, "action": {"type": "hang"}}`, 201)
	go conn.Exec(ctx, "SELECT 1") // its reply is held by the hang
	waitFired(t, api, "freeze-replies", 1)
	conn.PgConn().Conn().Close() // the client gives up: its socket closes
	deadline := time.Now().Add(10 * time.Second)
	for len(s.Registry.Sessions()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("session still registered after its client left: %+v", s.Registry.Sessions())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
