package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/server"
)

// startEmpty starts pgchaos with no proxies, as toxiproxy-server starts:
// the toxiproxy client creates them.
func startEmpty(t *testing.T) (*server.Server, *toxiproxy.Client, string) {
	t.Helper()
	s := start(t, server.Config{API: "127.0.0.1:0"})
	api := "http://" + s.APIAddr().String()
	return s, toxiproxy.NewClient(s.APIAddr().String()), api
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func connect(t *testing.T, ctx context.Context, addr, db string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, pgtest.ConnString(addr, pgtest.SuperUser, "", db))
	if err != nil {
		t.Fatalf("connect through %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

var dbCounter atomic.Int64

// newDatabase isolates a test's tables from the others'.
func newDatabase(t *testing.T, ctx context.Context) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%s", dbCounter.Add(1), strings.ToLower(strings.ReplaceAll(t.Name(), "/", "_")))
	if err := pg.CreateDatabase(ctx, name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return name
}

func apiError(err error) *toxiproxy.ApiError {
	var ae *toxiproxy.ApiError
	if errors.As(err, &ae) {
		return ae
	}
	return nil
}

// Create, list, disable, enable and delete a proxy with toxiproxy's client.
func TestToxiproxyProxyLifecycle(t *testing.T) {
	_, client, _ := startEmpty(t)
	ctx := testCtx(t)

	p, err := client.CreateProxy("pg", "127.0.0.1:0", pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if !p.Enabled || p.Upstream != pg.Addr() || strings.HasSuffix(p.Listen, ":0") || len(p.ActiveToxics) != 0 {
		t.Fatalf("created: %+v", p)
	}
	conn := connect(t, ctx, p.Listen, "postgres")
	var n int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("SELECT 1 through the proxy: %d %v", n, err)
	}
	list, err := client.Proxies()
	if err != nil {
		t.Fatal(err)
	}
	if got := list["pg"]; len(list) != 1 || got == nil || got.Listen != p.Listen || !got.Enabled || got.Upstream != pg.Addr() {
		t.Fatalf("proxies: %+v", list)
	}
	if _, err := client.CreateProxy("pg", "127.0.0.1:0", pg.Addr()); apiError(err) == nil || apiError(err).Status != 409 {
		t.Fatalf("a second proxy named pg: want 409, got %v", err)
	}

	// Disabling closes the listener and the open session.
	if err := p.Disable(); err != nil {
		t.Fatal(err)
	}
	if p.Enabled {
		t.Fatalf("disabled proxy says enabled: %+v", p)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("the session survived Disable")
	}
	if c, err := pgx.Connect(ctx, pgtest.ConnString(p.Listen, pgtest.SuperUser, "", "postgres")); err == nil {
		c.Close(ctx)
		t.Fatal("a disabled proxy accepted a connection")
	}
	got, err := client.Proxy("pg")
	if err != nil || got.Enabled || got.Listen != p.Listen {
		t.Fatalf("disabled proxy: %+v %v", got, err)
	}

	// Enabling listens again on the same address.
	listen := p.Listen
	if err := p.Enable(); err != nil {
		t.Fatal(err)
	}
	if p.Listen != listen || !p.Enabled {
		t.Fatalf("enabled again: %+v, want listen %s", p, listen)
	}
	conn = connect(t, ctx, p.Listen, "postgres")
	mustExec(t, ctx, conn, "SELECT 1")

	if err := p.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Proxy("pg"); apiError(err) == nil || apiError(err).Status != 404 || apiError(err).Message != "proxy not found" {
		t.Fatalf("deleted proxy: want 404 proxy not found, got %v", err)
	}
	if list, err := client.Proxies(); err != nil || len(list) != 0 {
		t.Fatalf("proxies after delete: %+v %v", list, err)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("the session survived Delete")
	}
}

// pgchaos's protocol actions are toxics too: pg_error on UPDATE, a
// disconnect right after PREPARE TRANSACTION.
func TestToxiproxyPGToxics(t *testing.T) {
	s, client, _ := startEmpty(t)
	ctx := testCtx(t)
	db := newDatabase(t, ctx)
	p, err := client.CreateProxy("pg", "127.0.0.1:0", pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	direct := connect(t, ctx, pg.Addr(), db)
	mustExec(t, ctx, direct, "CREATE TABLE accounts (id int PRIMARY KEY, balance int)")
	mustExec(t, ctx, direct, "INSERT INTO accounts VALUES (1, 100)")
	conn := connect(t, ctx, p.Listen, db)

	tox, err := p.AddToxic("", "pg_error", "upstream", 1.0, toxiproxy.Attributes{"sql": "^UPDATE", "sqlstate": "40001"})
	if err != nil {
		t.Fatal(err)
	}
	if tox.Name != "pg_error_upstream" || tox.Type != "pg_error" || tox.Stream != "upstream" || tox.Toxicity != 1 ||
		tox.Attributes["sql"] != "^UPDATE" || tox.Attributes["sqlstate"] != "40001" {
		t.Fatalf("added toxic: %+v", tox)
	}
	update := func() error {
		_, err := conn.Exec(ctx, "UPDATE accounts SET balance = balance + 1 WHERE id = 1")
		return err
	}
	code := func(err error) string {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return pgErr.Code
		}
		return fmt.Sprint(err)
	}
	if got := code(update()); got != "40001" {
		t.Fatalf("UPDATE: want 40001, got %s", got)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT balance FROM accounts WHERE id = 1").Scan(&n); err != nil || n != 100 {
		t.Fatalf("SELECT after the injected error: %d %v", n, err)
	}
	list, err := p.Toxics()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "pg_error_upstream" || list[0].Type != "pg_error" || list[0].Stream != "upstream" {
		t.Fatalf("toxics: %+v", list)
	}
	// The toxic is a rule of the proxy, visible to the native API too.
	if st, err := s.Faults.Get("pg", "pg_error_upstream"); err != nil || st.Fired != 1 || st.Action.Type != "error" {
		t.Fatalf("rule behind the toxic: %+v %v", st, err)
	}

	// Attributes merge; toxicity stays.
	tox, err = p.UpdateToxic("pg_error_upstream", -1, toxiproxy.Attributes{"sqlstate": "40P01", "error_message": "deadlock, injected"})
	if err != nil {
		t.Fatal(err)
	}
	if tox.Attributes["sql"] != "^UPDATE" || tox.Attributes["sqlstate"] != "40P01" || tox.Toxicity != 1 {
		t.Fatalf("updated toxic: %+v", tox)
	}
	// A change replaces the rule: its counters start again.
	if st, err := s.Faults.Get("pg", "pg_error_upstream"); err != nil || st.Fired != 0 {
		t.Fatalf("rule behind the changed toxic: %+v %v; want its counters started again", st, err)
	}
	var pgErr *pgconn.PgError
	if err := update(); !errors.As(err, &pgErr) || pgErr.Code != "40P01" || pgErr.Message != "deadlock, injected" {
		t.Fatalf("UPDATE after the change: want 40P01 with the new message, got %v", err)
	}
	if st, err := s.Faults.Get("pg", "pg_error_upstream"); err != nil || st.Fired != 1 {
		t.Fatalf("rule behind the changed toxic after one UPDATE: %+v %v; want fired once", st, err)
	}
	if err := p.RemoveToxic("pg_error_upstream"); err != nil {
		t.Fatal(err)
	}
	if err := update(); err != nil {
		t.Fatalf("UPDATE after the toxic was removed: %v", err)
	}

	// Unknown attributes are named.
	_, err = p.AddToxic("typo", "pg_error", "upstream", 1, toxiproxy.Attributes{"sqlstat": "40001"})
	if ae := apiError(err); ae == nil || ae.Status != 400 || !strings.Contains(ae.Message, "sqlstat") {
		t.Fatalf("unknown attribute: want 400 naming it, got %v", err)
	}
	// Engine validation errors speak of attributes.
	_, err = p.AddToxic("no-code", "pg_error", "upstream", 1, toxiproxy.Attributes{"sql": "x"})
	if ae := apiError(err); ae == nil || ae.Status != 400 || !strings.Contains(ae.Message, "sqlstate") {
		t.Fatalf("missing sqlstate: want 400 naming it, got %v", err)
	}

	// The in-doubt moment: cut right after the server prepared.
	tox, err = p.AddToxic("", "pg_disconnect", "downstream", 1, toxiproxy.Attributes{"tag": "PREPARE TRANSACTION"})
	if err != nil {
		t.Fatal(err)
	}
	if tox.Name != "pg_disconnect_downstream" || tox.Stream != "downstream" || tox.Attributes["tag"] != "PREPARE TRANSACTION" {
		t.Fatalf("disconnect toxic: %+v", tox)
	}
	gid := "tp_" + db
	mustExec(t, ctx, conn, "BEGIN")
	mustExec(t, ctx, conn, "INSERT INTO accounts VALUES (2, 5)")
	if _, err := conn.Exec(ctx, "PREPARE TRANSACTION '"+gid+"'"); err == nil {
		t.Fatal("PREPARE TRANSACTION: the client was told it succeeded")
	}
	var prepared []string
	rows, _ := direct.Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE database = $1", db)
	prepared, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(prepared) != 1 || prepared[0] != gid {
		t.Fatalf("pg_prepared_xacts: %v %v, want [%s]", prepared, err, gid)
	}
	mustExec(t, ctx, direct, "ROLLBACK PREPARED '"+gid+"'")

	// Without a stream, a pg_* toxic's direction follows its matchers.
	tox, err = p.AddToxic("", "pg_delay", "", 0.5, toxiproxy.Attributes{"statement": "select", "delay": 20})
	if err != nil {
		t.Fatal(err)
	}
	if tox.Name != "pg_delay_upstream" || tox.Stream != "upstream" || tox.Toxicity != 0.5 || tox.Attributes["delay"] != "20ms" {
		t.Fatalf("pg_delay: %+v", tox)
	}
	tox, err = p.AddToxic("", "pg_refuse", "", 1, toxiproxy.Attributes{"sqlstate": "57P03", "error_message": "starting up"})
	if err != nil {
		t.Fatal(err)
	}
	if tox.Attributes["event"] != "connect" {
		t.Fatalf("pg_refuse defaults to the connect event: %+v", tox)
	}
	_, err = pgx.Connect(ctx, pgtest.ConnString(p.Listen, pgtest.SuperUser, "", db))
	if !errors.As(err, &pgErr) || pgErr.Code != "57P03" {
		t.Fatalf("connect with pg_refuse: want 57P03, got %v", err)
	}
}

// toxiproxy's latency toxic delays the server's bytes of a new connection.
// (It needs the proxy's byte-level toxics.)
func TestToxiproxyLatency(t *testing.T) {
	_, client, _ := startEmpty(t)
	ctx := testCtx(t)
	p, err := client.CreateProxy("pg", "127.0.0.1:0", pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	// The median of a few: one query on a loaded machine may take long
	// for reasons of its own.
	timeSelect := func() time.Duration {
		conn := connect(t, ctx, p.Listen, "postgres")
		defer conn.Close(ctx)
		var took []time.Duration
		for range 5 {
			start := time.Now()
			mustExec(t, ctx, conn, "SELECT 1")
			took = append(took, time.Since(start))
		}
		slices.Sort(took)
		return took[len(took)/2]
	}
	without := timeSelect()
	tox, err := p.AddToxic("lat", "latency", "downstream", 1.0, toxiproxy.Attributes{"latency": 100})
	if err != nil {
		t.Fatal(err)
	}
	if tox.Name != "lat" || tox.Type != "latency" || tox.Stream != "downstream" || tox.Attributes["latency"] != float64(100) || tox.Attributes["jitter"] != float64(0) {
		t.Fatalf("latency toxic: %+v", tox)
	}
	// Each reply waits 100ms in the toxic: no query can be faster, and
	// the toxic is what makes it slower (a query alone takes about 1ms).
	with := timeSelect()
	if with < 100*time.Millisecond || with-without < 50*time.Millisecond {
		t.Fatalf("SELECT 1 took %v (median) with 100 ms latency, %v without", with, without)
	}
}

// Populate, reset, and toxiproxy's error answers.
func TestToxiproxyPopulateResetErrors(t *testing.T) {
	s, client, api := startEmpty(t)
	ctx := testCtx(t)

	config := []toxiproxy.Proxy{
		{Name: "one", Listen: "127.0.0.1:0", Upstream: pg.Addr(), Enabled: true},
		{Name: "two", Listen: "127.0.0.1:0", Upstream: pg.Addr(), Enabled: true},
	}
	created, err := client.Populate(config)
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 2 || created[0].Name != "one" || created[1].Name != "two" || !created[0].Enabled || strings.HasSuffix(created[0].Listen, ":0") {
		t.Fatalf("populated: %+v", created)
	}
	conn := connect(t, ctx, created[0].Listen, "postgres")
	// The same configuration again keeps the proxies and their sessions.
	again, err := client.Populate(config)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 2 || again[0].Listen != created[0].Listen || again[1].Listen != created[1].Listen {
		t.Fatalf("populated again: %+v, first %+v", again, created)
	}
	mustExec(t, ctx, conn, "SELECT 1")

	one, err := client.Proxy("one")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := one.AddToxic("", "latency", "", 1, toxiproxy.Attributes{"latency": 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := one.AddToxic("slow", "bandwidth", "upstream", 1, toxiproxy.Attributes{"rate": 1000}); err != nil {
		t.Fatal(err)
	}
	// Upstream toxics first, then downstream.
	list, err := one.Toxics()
	if err != nil || len(list) != 2 || list[0].Name != "slow" || list[1].Name != "latency_downstream" {
		t.Fatalf("toxics: %+v %v", list, err)
	}
	// Byte toxics merge attributes too.
	tox, err := one.UpdateToxic("latency_downstream", 0.25, toxiproxy.Attributes{"jitter": 5})
	if err != nil || tox.Attributes["latency"] != float64(10) || tox.Attributes["jitter"] != float64(5) || tox.Toxicity != 0.25 {
		t.Fatalf("updated latency: %+v %v", tox, err)
	}
	// (Populate's results cannot Save: the client does not mark them created.)
	two, err := client.Proxy("two")
	if err != nil {
		t.Fatal(err)
	}
	if err := two.Disable(); err != nil {
		t.Fatal(err)
	}

	if err := client.ResetState(); err != nil {
		t.Fatal(err)
	}
	proxies, err := client.Proxies()
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range proxies {
		if !p.Enabled || len(p.ActiveToxics) != 0 {
			t.Fatalf("after reset, %s: %+v", name, p)
		}
	}
	if proxies["two"].Listen != created[1].Listen {
		t.Fatalf("reset re-enabled two on %s, want %s", proxies["two"].Listen, created[1].Listen)
	}
	connect(t, ctx, proxies["two"].Listen, "postgres")
	if n := len(s.Faults.Rules()); n != 0 {
		t.Fatalf("%d rules left after reset", n)
	}

	// A changed configuration replaces a proxy.
	moved, err := client.Populate([]toxiproxy.Proxy{{Name: "one", Listen: "127.0.0.1:0", Upstream: "127.0.0.1:1", Enabled: true}})
	if err != nil || len(moved) != 1 || moved[0].Upstream != "127.0.0.1:1" {
		t.Fatalf("populate with a new upstream: %+v %v", moved, err)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("a session of a replaced proxy survived")
	}

	errorCases := []struct {
		name, method, path, body string
		status                   int
		msg                      string
	}{
		{"duplicate proxy", "POST", "/proxies", `{"name": "one", "upstream": "127.0.0.1:1"}`, 409, "proxy already exists"},
		{"no name", "POST", "/proxies", `{"upstream": "127.0.0.1:1"}`, 400, "missing required field: name"},
		{"no upstream", "POST", "/proxies", `{"name": "x"}`, 400, "missing required field: upstream"},
		{"bad body", "POST", "/proxies", `{`, 400, "bad request body: unexpected EOF"},
		{"unknown proxy", "GET", "/proxies/nope", "", 404, "proxy not found"},
		{"unknown proxy's toxics", "POST", "/proxies/nope/toxics", `{"type": "latency"}`, 404, "proxy not found"},
		{"unknown toxic type", "POST", "/proxies/one/toxics", `{"type": "nope"}`, 400, "invalid toxic type"},
		{"invalid stream", "POST", "/proxies/one/toxics", `{"type": "latency", "stream": "sideways"}`, 400, "stream was invalid, can be either upstream or downstream"},
		{"unknown toxic", "GET", "/proxies/one/toxics/nope", "", 404, "toxic not found"},
		{"remove unknown toxic", "DELETE", "/proxies/one/toxics/nope", "", 404, "toxic not found"},
		{"populate without upstream", "POST", "/populate", `[{"name": "x"}]`, 400, "missing required field: upstream at proxy 1"},
		{"method", "PUT", "/proxies", "", 405, "method PUT not allowed"},
	}
	for _, tc := range errorCases {
		out := send(t, tc.method, api+tc.path, tc.body, tc.status)
		if msg, _ := out["error"].(string); !strings.HasPrefix(msg, tc.msg) || out["status"] != float64(tc.status) {
			t.Errorf("%s: %v, want error %q", tc.name, out, tc.msg)
		}
	}
	send(t, "POST", api+"/proxies/one/toxics", `{"name": "dup", "type": "latency"}`, 200)
	if out := send(t, "POST", api+"/proxies/one/toxics", `{"name": "dup", "type": "slicer"}`, 409); out["error"] != "toxic already exists" {
		t.Errorf("duplicate toxic: %v", out)
	}
	if out := send(t, "POST", api+"/populate", `[{"name": "x"}]`, 400); out["proxies"] != nil {
		t.Errorf("populate error: %v", out)
	}
	if out := send(t, "POST", api+"/proxies", `{"name": "off", "upstream": "`+pg.Addr()+`", "enabled": false}`, 201); out["enabled"] != false || out["listen"] != "127.0.0.1:0" {
		t.Errorf("a proxy created disabled: %v", out)
	}

	resp, err := http.Get(api + "/version")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json;charset=utf-8" || !strings.HasPrefix(string(body), `{"version": "2.12.0`) {
		t.Fatalf("version: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if v, err := client.Version(); err != nil || !strings.Contains(string(v), "2.12.0") {
		t.Fatalf("client.Version: %s %v", v, err)
	}

	// A browser may read, not change.
	req, _ := http.NewRequest("DELETE", api+"/proxies/one", nil)
	req.Header.Set("User-Agent", "Mozilla/5.0")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("a browser's DELETE: %d, want 403", resp.StatusCode)
	}

	// Rules of a deleted proxy go with it.
	send(t, "POST", api+"/rules", `{"name": "r", "proxy": "one", "action": {"type": "drop"}}`, 201)
	send(t, "DELETE", api+"/proxies/one", "", 204)
	for _, rs := range s.Faults.Rules() {
		if rs.Proxy == "one" {
			t.Fatalf("rule %s of the deleted proxy one is left", rs.Name)
		}
	}
}

// The pattern every toxiproxy user writes — add a toxic, test, remove it,
// delete the proxy — while psql's Terminate and FIN are still inside the
// toxic: the session goes, the delete finishes promptly and the API keeps
// answering meanwhile.
func TestToxicRemovedWhileHoldingTheLastMessage(t *testing.T) {
	s, client, api := startEmpty(t)
	p, err := client.CreateProxy("pg", "127.0.0.1:0", pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := p.AddToxic("lat", "latency", "upstream", 1, toxiproxy.Attributes{"latency": 2000}); err != nil {
			t.Fatal(err)
		}
		host, port, _ := strings.Cut(p.Listen, ":")
		cmd := exec.Command(filepath.Join(pg.BinDir(), "psql"), "-X", "-q", "-h", host, "-p", port, "-U", pgtest.SuperUser, "-d", "postgres", "-c", "select 1")
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
		// psql waits for its answer, which the toxic delays by 2 s, then
		// sends Terminate and closes: remove the toxic while those are held.
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("psql: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("psql did not finish")
		}
		if err := p.RemoveToxic("lat"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(s.Registry.Sessions()) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("try %d: %d sessions left 5s after the toxic was removed", i, len(s.Registry.Sessions()))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// A session that is still held when the proxy goes must not hold up
	// the delete, nor the API meanwhile.
	if _, err := p.AddToxic("lat", "latency", "upstream", 1, toxiproxy.Attributes{"latency": 60000}); err != nil {
		t.Fatal(err)
	}
	conn, err := pgconn.Connect(testCtx(t), pgtest.ConnString(p.Listen, pgtest.SuperUser, "", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan struct{})
	go func() {
		conn.Exec(context.Background(), "select 1").ReadAll()
		close(held)
	}()
	defer func() {
		<-held
		conn.Close(context.Background())
	}()
	deleted := make(chan error, 1)
	start := time.Now()
	go func() { deleted <- p.Delete() }()
	get(t, api+"/healthz", http.StatusOK, nil)
	select {
	case err := <-deleted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("DELETE /proxies/pg did not finish")
	}
	// The toxic holds the session for 60s: a delete that waited for it
	// would take that long; only the order of magnitude matters.
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("DELETE /proxies/pg took %v", d)
	}
}

// Changing a toxic without a toxicity keeps the one it had; disabling its
// proxy keeps it; /reset removes the toxics, and leaves alone a rule for
// every proxy, which is no proxy's toxic.
func TestToxiproxyUpdateAndResetKeep(t *testing.T) {
	s, client, _ := startEmpty(t)
	p, err := client.CreateProxy("pg", "127.0.0.1:0", pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	for typ, attrs := range map[string]toxiproxy.Attributes{"latency": {"latency": 10}, "pg_delay": {"delay": 10}} {
		if _, err := p.AddToxic(typ, typ, "downstream", 0.5, attrs); err != nil {
			t.Fatal(err)
		}
		for k := range attrs {
			attrs[k] = 20
		}
		tox, err := p.UpdateToxic(typ, -1, attrs) // -1: the client sends no toxicity
		if err != nil || tox.Toxicity != 0.5 {
			t.Fatalf("%s changed without a toxicity: %+v %v; want toxicity 0.5 kept", typ, tox, err)
		}
		got, err := p.Toxics()
		if err != nil {
			t.Fatal(err)
		}
		for _, tox := range got {
			if tox.Name == typ && tox.Toxicity != 0.5 {
				t.Fatalf("%s listed with toxicity %v after the change, want 0.5", typ, tox.Toxicity)
			}
		}
	}
	// Disabling a proxy closes it and keeps its toxics.
	if err := p.Disable(); err != nil {
		t.Fatal(err)
	}
	if got, err := p.Toxics(); err != nil || len(got) != 2 {
		t.Fatalf("toxics of the disabled proxy: %+v %v; want both kept", got, err)
	}
	if _, err := s.Faults.Add(faults.Rule{Name: "everywhere", Match: faults.Match{SQL: "never"}, Action: faults.Action{Type: "drop"}}); err != nil {
		t.Fatal(err)
	}
	if err := client.ResetState(); err != nil {
		t.Fatal(err)
	}
	rules := s.Faults.Rules()
	if len(rules) != 1 || rules[0].Name != "everywhere" || rules[0].Proxy != "" {
		t.Fatalf("rules after reset: %+v; want only the rule for every proxy", rules)
	}
}

// A toxic of toxicity 0 is kept and never fires, for pg_* toxics (drawn
// per message) and byte toxics (drawn per connection) alike.
func TestToxiproxyToxicityZeroNeverFires(t *testing.T) {
	s, client, _ := startEmpty(t)
	ctx := testCtx(t)
	p, err := client.CreateProxy("pg", "127.0.0.1:0", pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.AddToxic("never", "pg_error", "upstream", 0, toxiproxy.Attributes{"sql": "never_me", "sqlstate": "40001"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.AddToxic("slow", "latency", "downstream", 0, toxiproxy.Attributes{"latency": 1000}); err != nil {
		t.Fatal(err)
	}
	if list, err := p.Toxics(); err != nil || len(list) != 2 || list[0].Toxicity != 0 || list[1].Toxicity != 0 {
		t.Fatalf("toxics: %+v %v; want both kept with toxicity 0", list, err)
	}
	for i := range 5 {
		conn := connect(t, ctx, p.Listen, "postgres")
		start := time.Now()
		for range 10 {
			mustExec(t, ctx, conn, "SELECT 'never_me'")
		}
		// 10 round trips under a 1 s latency would take 10 s.
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("connection %d: 10 queries took %v under a latency toxic of toxicity 0", i, d)
		}
		conn.Close(ctx)
	}
	if st, err := s.Faults.Get("pg", "never"); err != nil || st.Fired != 0 {
		t.Fatalf("pg_error of toxicity 0: %+v %v; want it never fired", st, err)
	}
}

// toxiproxy-server's -config file, a JSON list of proxies, is a pgchaos
// config too (for pgchaos proxy --config and pgchaos -config): an enabled
// proxy listens from the start, a disabled one once the API enables it,
// one without listen gets a free port, fields toxiproxy ignores are ignored.
func TestToxiproxyConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "toxiproxy.json")
	os.WriteFile(path, []byte(`[
    {"name": "on", "listen": "127.0.0.1:0", "upstream": "`+pg.Addr()+`", "enabled": true},
    {"name": "off", "listen": "127.0.0.1:0", "upstream": "`+pg.Addr()+`", "enabled": false, "toxics": []},
    {"name": "default", "upstream": "`+pg.Addr()+`"}
]`), 0o644)
	cfg, err := server.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.API = "127.0.0.1:0"
	s := start(t, cfg)
	client := toxiproxy.NewClient(s.APIAddr().String())
	proxies, err := client.Proxies()
	if err != nil {
		t.Fatal(err)
	}
	if len(proxies) != 3 || !proxies["on"].Enabled || proxies["off"].Enabled || !proxies["default"].Enabled {
		t.Fatalf("proxies from the file: %+v", proxies)
	}
	ctx := testCtx(t)
	connect(t, ctx, proxies["on"].Listen, "postgres").Close(ctx)
	connect(t, ctx, proxies["default"].Listen, "postgres").Close(ctx)
	off := proxies["off"]
	off.Enabled = true
	if err := off.Save(); err != nil {
		t.Fatal(err)
	}
	connect(t, ctx, off.Listen, "postgres").Close(ctx)

	for body, want := range map[string]string{
		`[{"name": "a", "listen": "127.0.0.1:0"}]`:     ":1: proxies[0] (a): upstream is empty",
		`[{"name": "a", "upstream": "x"}]`:             `upstream "x"`,
		`[{"name": "a", "upstream": ["127.0.0.1:1"]}]`: "a toxiproxy config is a list of proxies",
		`[null]`: "proxy 1 is empty",
	} {
		os.WriteFile(path, []byte(body), 0o644)
		if _, err := server.LoadConfig(path); err == nil || !strings.HasPrefix(err.Error(), path) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error from %s naming %q", body, err, path, want)
		}
	}
}
