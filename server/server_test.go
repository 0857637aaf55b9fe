package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
	"github.com/pgchaos/pgchaos/server"
)

var pg *pgtest.Postgres

func TestMain(m *testing.M) { pgtest.Main(m, pgtest.Options{}, &pg) }

func start(t *testing.T, cfg server.Config) *server.Server {
	t.Helper()
	s, err := server.Start(cfg, nil)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func get(t *testing.T, url string, wantStatus int, into any) string {
	t.Helper()
	return do(t, http.MethodGet, url, wantStatus, into)
}

func do(t *testing.T, method, url string, wantStatus int, into any) string {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("%s %s: status %d, want %d: %s", method, url, resp.StatusCode, wantStatus, body)
	}
	if into != nil {
		if err := json.Unmarshal(body, into); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, url, body, err)
		}
	}
	return string(body)
}

func TestControlAPI(t *testing.T) {
	s := start(t, server.Config{
		API: "127.0.0.1:0",
		Proxies: []server.ProxyConfig{
			{Name: "a", Listen: "127.0.0.1:0", Upstream: pg.Addr()},
			{Name: "b", Listen: "127.0.0.1:0", Upstream: "127.0.0.1:1"},
		},
	})
	api := "http://" + s.APIAddr().String()

	var health map[string]any
	get(t, api+"/healthz", 200, &health)
	if health["status"] != "ok" {
		t.Fatalf("healthz: %v", health)
	}
	// toxiproxy's shape: an object keyed by name, plus live sessions.
	var proxies map[string]map[string]any
	get(t, api+"/proxies", 200, &proxies)
	if a := proxies["a"]; len(proxies) != 2 || a["name"] != "a" || a["upstream"] != pg.Addr() || a["listen"] != s.Proxies()[0].Addr().String() ||
		a["enabled"] != true || a["sessions"] != float64(0) || fmt.Sprint(a["toxics"]) != "[]" || proxies["b"]["name"] != "b" {
		t.Fatalf("proxies: %v", proxies)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addrA := s.Proxies()[0].Addr().String()
	conn, err := pgx.Connect(ctx, pgtest.ConnString(addrA, pgtest.SuperUser, "", "postgres")+"&application_name=api_test")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}

	var sessions []proxy.SessionInfo
	get(t, api+"/sessions", 200, &sessions)
	if len(sessions) != 1 {
		t.Fatalf("sessions: %+v", sessions)
	}
	sess := sessions[0]
	if sess.Proxy != "a" || sess.User != pgtest.SuperUser || sess.Database != "postgres" || sess.ApplicationName != "api_test" ||
		sess.TxStatus != "in_transaction" || sess.MessagesIn == 0 || sess.BytesOut == 0 || sess.Client == "" {
		t.Fatalf("session: %+v", sess)
	}
	get(t, api+"/sessions?proxy=b", 200, &sessions)
	if len(sessions) != 0 {
		t.Fatalf("sessions of b: %+v", sessions)
	}

	// Metrics move while the session is open.
	metrics := get(t, api+"/metrics", 200, nil)
	for _, want := range []string{
		`pgchaos_sessions_active{proxy="a"} 1`,
		`pgchaos_messages_total{direction="client_to_server",proxy="a",type="query"}`,
		`pgchaos_bytes_total{direction="server_to_client",proxy="a",type="ready_for_query"}`,
		`pgchaos_session_duration_seconds_bucket`,
		`pgchaos_upstream_connect_failures_total{proxy="b"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("/metrics lacks %s", want)
		}
	}

	var apiErr struct {
		Error  string `json:"error"`
		Status int    `json:"status"`
	}
	get(t, api+"/sessions/nope", 400, &apiErr)
	if apiErr.Status != 400 || !strings.Contains(apiErr.Error, `"nope"`) {
		t.Fatalf("error shape: %+v", apiErr)
	}
	get(t, api+"/sessions/99999", 404, &apiErr)
	get(t, api+"/no/such/thing", 404, &apiErr)
	do(t, http.MethodPut, api+"/healthz", 405, &apiErr)
	if apiErr.Status != 405 || !strings.Contains(apiErr.Error, "GET") {
		t.Fatalf("405 shape: %+v", apiErr)
	}
	get(t, api+"/proxies", 200, &proxies)
	if proxies["a"]["sessions"] != float64(1) {
		t.Fatalf("sessions of a: %v", proxies["a"])
	}

	do(t, http.MethodDelete, fmt.Sprintf("%s/sessions/%d", api, sess.ID), 204, nil)
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("killed session still answers")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		get(t, api+"/sessions", 200, &sessions)
		if len(sessions) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("killed session still listed: %+v", sessions)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRemoteAPINeedsAllow(t *testing.T) {
	cfg := server.Config{API: "0.0.0.0:0", Proxies: []server.ProxyConfig{{Name: "a", Listen: "127.0.0.1:0", Upstream: pg.Addr()}}}
	var ce *server.ConfigError
	if _, err := server.Start(cfg, nil); !errors.As(err, &ce) || !strings.Contains(err.Error(), "--api-allow-remote") {
		t.Fatalf("want a configuration error naming --api-allow-remote, got %v", err)
	}
	// Beyond loopback the API needs a token, or to be told it may go
	// without one.
	cfg.AllowRemoteAPI = true
	if _, err := server.Start(cfg, nil); !errors.As(err, &ce) || !strings.Contains(err.Error(), "--api-token-file") || !strings.Contains(err.Error(), "--api-insecure") {
		t.Fatalf("want a configuration error naming --api-token-file and --api-insecure, got %v", err)
	}
	cfg.APIToken = "s3cret"
	start(t, cfg)
	cfg.APIToken, cfg.APIInsecure = "", true
	start(t, cfg)
}

func TestCloseEndsSessions(t *testing.T) {
	s, err := server.Start(server.Config{API: "127.0.0.1:0", Proxies: []server.ProxyConfig{{Name: "a", Listen: "127.0.0.1:0", Upstream: pg.Addr()}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := s.Proxies()[0].Addr().String()
	conn, err := pgx.Connect(ctx, pgtest.ConnString(addr, pgtest.SuperUser, "", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// A client that connected but never sent its startup packet must not
	// hold up the shutdown either.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	waitSessions := time.Now().Add(5 * time.Second)
	for len(s.Registry.Sessions()) != 1 && time.Now().Before(waitSessions) {
		time.Sleep(10 * time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung with a session open")
	}
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("session survived Close")
	}
	if _, err := pgx.Connect(ctx, pgtest.ConnString(addr, pgtest.SuperUser, "", "postgres")); err == nil {
		t.Fatal("proxy still accepts after Close")
	}
}

func TestLoadConfig(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"ok", "proxies:\n  - name: pg\n    listen: 127.0.0.1:6543\n    upstream: 127.0.0.1:5432\n", ""},
		{"unknown key", "proxies:\n  - name: pg\n    listen: 127.0.0.1:6543\n    upstrem: 127.0.0.1:5432\n", `line 4: unknown field "upstrem" in a proxy`},
		{"a list for a string", "proxies:\n  - name: pg\n    listen: 127.0.0.1:6543\n    upstream: [a, b]\n", "line 4: cannot use a list where a string belongs"},
		{"empty file", "", ": the file is empty: want proxies"},
		{"comments only", "# nothing yet\n", ": the file is empty: want proxies"},
		{"missing upstream", "api: 127.0.0.1:8474\nproxies:\n  - name: a\n    listen: 127.0.0.1:1\n    upstream: 127.0.0.1:2\n  - name: b\n    listen: 127.0.0.1:3\n", ":6: proxies[1] (b): upstream is empty"},
		{"duplicate name", "proxies:\n  - {name: a, listen: '127.0.0.1:1', upstream: '127.0.0.1:2'}\n  - {name: a, listen: '127.0.0.1:3', upstream: '127.0.0.1:2'}\n", `:3: proxies[1]: name "a" is used twice`},
		{"bad address", "proxies:\n  - {name: a, listen: 'nope', upstream: '127.0.0.1:2'}\n", `:2: proxies[0] (a): listen "nope"`},
		{"bad relay", "relay: threads\nproxies:\n  - {name: a, listen: '127.0.0.1:1', upstream: '127.0.0.1:2'}\n", `relay "threads": want loop or goroutine`},
		{"bad log_sql", "log_sql: everything\nproxies:\n  - {name: a, listen: '127.0.0.1:1', upstream: '127.0.0.1:2'}\n", `log_sql "everything" (--log-sql): want redacted or full`},
		{"not yaml", "proxies: [\n", "pgchaos.yaml"},
		{"empty proxy", "proxies:\n  -\n  - {name: a, listen: '127.0.0.1:1', upstream: '127.0.0.1:2'}\n", ":2: proxies[0]: is empty (want a proxy: name, listen, upstream)"},
		{"empty rule", "proxies:\n  - {name: a, listen: '127.0.0.1:1', upstream: '127.0.0.1:2'}\nrules:\n  - {name: r, action: {type: drop}}\n  - null\n", ":5: rules[1]: is empty (want a rule: name, match, action)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pgchaos.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := server.LoadConfig(path)
			if tc.want == "" {
				if err != nil || len(cfg.Proxies) != 1 || cfg.API != server.DefaultAPI {
					t.Fatalf("got %+v, %v", cfg, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), path) {
				t.Fatalf("want an error starting with the path and containing %q, got %v", tc.want, err)
			}
		})
	}
	// The security settings have keys of their own.
	path := filepath.Join(t.TempDir(), "pgchaos.yaml")
	os.WriteFile(path, []byte("api: 0.0.0.0:8474\napi_allow_remote: true\napi_token_file: /run/token\napi_insecure: true\n"+
		"api_tls_cert: api.crt\napi_tls_key: api.key\nmetrics_listen: 0.0.0.0:9187\nlog_sql: full\n"), 0o644)
	cfg, err := server.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := (server.Config{API: "0.0.0.0:8474", AllowRemoteAPI: true, APITokenFile: "/run/token", APIInsecure: true,
		APITLSCert: "api.crt", APITLSKey: "api.key", MetricsListen: "0.0.0.0:9187", LogSQL: "full", Relay: "loop"}); !reflect.DeepEqual(cfg, want) {
		t.Fatalf("security keys:\n got %+v\nwant %+v", cfg, want)
	}
	// No proxies is a valid start: they come through the control API.
	path = filepath.Join(t.TempDir(), "pgchaos.yaml")
	os.WriteFile(path, []byte("api: 127.0.0.1:8474\n"), 0o644)
	if cfg, err := server.LoadConfig(path); err != nil || len(cfg.Proxies) != 0 {
		t.Fatalf("a file without proxies: %+v, %v", cfg, err)
	}
}
