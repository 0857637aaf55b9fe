package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/control"
	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/server"
)

// A fired rule's event shows the statement without its constants unless
// log_sql is full.
func TestEventsRedactSQL(t *testing.T) {
	const query = `SELECT 'TopSecret123' AS password, 42 AS n`
	for _, tc := range []struct {
		logSQL string
		want   string
	}{
		{"", `SELECT $1 AS password, $2 AS n`},
		{server.LogSQLRedacted, `SELECT $1 AS password, $2 AS n`},
		{server.LogSQLFull, query},
	} {
		t.Run("log_sql="+tc.logSQL, func(t *testing.T) {
			s := start(t, server.Config{API: "127.0.0.1:0", LogSQL: tc.logSQL, Proxies: []server.ProxyConfig{{Name: "pg", Listen: "127.0.0.1:0", Upstream: pg.Addr()}}})
			api := "http://" + s.APIAddr().String()
			send(t, "POST", api+"/rules", `{"name": "slow-password", "match": {"sql": "AS password"}, "action": {"type": "delay", "delay": "1ms"}}`, 201)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, pgtest.ConnString(s.Proxies()[0].Addr().String(), pgtest.SuperUser, "", "postgres"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, query); err != nil {
				t.Fatal(err)
			}
			waitFired(t, api, "slow-password", 1)
			var events []faults.Event
			get(t, api+"/events", 200, &events)
			if len(events) != 1 || !strings.Contains(events[0].Message, tc.want) {
				t.Fatalf("events: %+v, want the SQL shown as %s", events, tc.want)
			}
			if tc.logSQL != server.LogSQLFull && strings.Contains(events[0].Message, "TopSecret123") {
				t.Fatalf("the event shows the constant: %s", events[0].Message)
			}
		})
	}
}

// request sends a request with the given headers (Host sets the Host
// header) through client and returns the status, headers and body.
func request(t *testing.T, client *http.Client, method, url string, headers map[string]string) (int, http.Header, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// jsonError decodes the control API's error shape.
func jsonError(t *testing.T, body string) (string, int) {
	t.Helper()
	var e struct {
		Error  string `json:"error"`
		Status int    `json:"status"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Fatalf("not the JSON error shape: %s", body)
	}
	return e.Error, e.Status
}

func TestAPIToken(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("  s3cret-token\n"), 0o600)
	for name, cfg := range map[string]server.Config{
		"token file":        {APITokenFile: tokenFile, APIToken: "the file wins"},
		"token from caller": {APIToken: "s3cret-token"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.API = "127.0.0.1:0"
			cfg.Proxies = []server.ProxyConfig{{Name: "pg", Listen: "127.0.0.1:0", Upstream: pg.Addr()}}
			s := start(t, cfg)
			api := "http://" + s.APIAddr().String()
			bearer := map[string]string{"Authorization": "Bearer s3cret-token"}

			// Liveness stays open: probes and Testcontainers' wait strategy.
			for _, path := range []string{"/healthz", "/version"} {
				if code, _, body := request(t, http.DefaultClient, "GET", api+path, nil); code != 200 {
					t.Fatalf("GET %s without a token: %d %s", path, code, body)
				}
			}
			for _, tc := range []struct {
				method, path string
				headers      map[string]string
				want         int
				wantError    string
			}{
				{"GET", "/rules", nil, 401, "missing bearer token"},
				{"GET", "/events", nil, 401, "missing bearer token"},
				{"GET", "/metrics", nil, 401, "missing bearer token"},
				{"GET", "/sessions", map[string]string{"Authorization": "Basic czNjcmV0LXRva2Vu"}, 401, "missing bearer token"},
				{"POST", "/proxies", nil, 401, "missing bearer token"},
				{"DELETE", "/rules", nil, 401, "missing bearer token"},
				{"GET", "/healthz/", nil, 401, "missing bearer token"},
				{"GET", "/rules", map[string]string{"Authorization": "Bearer s3cret-tokenX"}, 401, "wrong bearer token"},
				{"GET", "/rules", map[string]string{"Authorization": "Bearer the file wins"}, 401, "wrong bearer token"},
				{"GET", "/rules", map[string]string{"Authorization": "Bearer "}, 401, "missing bearer token"},
				{"GET", "/rules", bearer, 200, ""},
				{"GET", "/rules", map[string]string{"Authorization": "bearer s3cret-token"}, 200, ""},
				{"GET", "/metrics", bearer, 200, ""},
				{"GET", "/proxies", bearer, 200, ""},
				{"GET", "/sessions", bearer, 200, ""},
			} {
				code, hdr, body := request(t, http.DefaultClient, tc.method, api+tc.path, tc.headers)
				if code != tc.want {
					t.Fatalf("%s %s %v: status %d, want %d: %s", tc.method, tc.path, tc.headers, code, tc.want, body)
				}
				if tc.want != 401 {
					continue
				}
				if msg, status := jsonError(t, body); status != 401 || !strings.Contains(msg, tc.wantError) {
					t.Fatalf("%s %s: error %d %q, want 401 %q", tc.method, tc.path, status, msg, tc.wantError)
				}
				if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
					t.Fatalf("%s %s: WWW-Authenticate %q", tc.method, tc.path, hdr.Get("WWW-Authenticate"))
				}
			}
		})
	}
}

func TestAPIHostCheck(t *testing.T) {
	s := start(t, server.Config{API: "127.0.0.1:0"})
	addr := s.APIAddr().String()
	_, port, _ := net.SplitHostPort(addr)
	for _, host := range []string{"", addr, "127.0.0.1", "localhost:" + port, "LOCALHOST", "app.localhost:" + port, "127.1.2.3:" + port, "[::1]:" + port} {
		if code, _, body := request(t, http.DefaultClient, "GET", "http://"+addr+"/rules", map[string]string{"Host": host}); code != 200 {
			t.Errorf("Host %q: status %d: %s", host, code, body)
		}
	}
	for _, host := range []string{"evil.example", "evil.example:" + port, "localhost.evil.example", "10.0.0.1:" + port, "127.0.0.1.nip.io"} {
		code, _, body := request(t, http.DefaultClient, "GET", "http://"+addr+"/healthz", map[string]string{"Host": host})
		if code != 403 {
			t.Errorf("Host %q: status %d, want 403: %s", host, code, body)
			continue
		}
		if msg, status := jsonError(t, body); status != 403 || !strings.Contains(msg, fmt.Sprintf("%q", host)) {
			t.Errorf("Host %q: error %d %q should name the host", host, status, msg)
		}
	}

	// On an address beyond loopback the Host is whatever name reaches it.
	remote := start(t, server.Config{API: "0.0.0.0:0", AllowRemoteAPI: true, APIInsecure: true})
	_, port, _ = net.SplitHostPort(remote.APIAddr().String())
	if code, _, body := request(t, http.DefaultClient, "GET", "http://127.0.0.1:"+port+"/rules", map[string]string{"Host": "pgchaos.example:" + port}); code != 200 {
		t.Fatalf("a non-loopback API checks the Host: %d %s", code, body)
	}
}

func TestAPITLS(t *testing.T) {
	cert, key, err := pgtest.WriteSelfSignedCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, server.Config{API: "127.0.0.1:0", APITLSCert: cert, APITLSKey: key})
	addr := s.APIAddr().String()
	pemData, _ := os.ReadFile(cert)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemData)
	verified := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	if code, _, body := request(t, verified, "GET", "https://"+addr+"/rules", nil); code != 200 {
		t.Fatalf("GET https://%s/rules: %d %s", addr, code, body)
	}
	if code, _, body := request(t, verified, "GET", "https://localhost:"+strings.Split(addr, ":")[1]+"/healthz", nil); code != 200 {
		t.Fatalf("by the name localhost: %d %s", code, body)
	}
	if code, _, _ := request(t, http.DefaultClient, "GET", "http://"+addr+"/rules", nil); code != http.StatusBadRequest {
		t.Fatalf("plain HTTP to the TLS API: status %d, want Go's 400", code)
	}
	if _, err := http.Get("https://" + addr + "/healthz"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("an unverified certificate should fail the request, got %v", err)
	}
}

// toxiproxy's POST /proxies opens listeners on loopback only, unless
// pgchaos runs with --api-allow-remote.
func TestToxiproxyListenLoopbackOnly(t *testing.T) {
	s := start(t, server.Config{API: "127.0.0.1:0"})
	api := "http://" + s.APIAddr().String()
	up := pg.Addr()
	for _, listen := range []string{"0.0.0.0:0", ":0", "[::]:0", "db.example:0"} {
		body := send(t, "POST", api+"/proxies", fmt.Sprintf(`{"name": "wide", "listen": %q, "upstream": %q}`, listen, up), 403)
		if msg, _ := body["error"].(string); !strings.Contains(msg, "listen address "+listen+" is not a loopback address") || !strings.Contains(msg, "--api-allow-remote") || body["status"] != float64(403) {
			t.Fatalf("POST /proxies with listen %s: %v", listen, body)
		}
	}
	// toxiproxy's own client shows the reason.
	if _, err := toxiproxy.NewClient(s.APIAddr().String()).CreateProxy("wide", "0.0.0.0:0", up); err == nil || !strings.Contains(err.Error(), "--api-allow-remote") {
		t.Fatalf("toxiproxy client: %v", err)
	}
	if len(s.ListProxies()) != 0 {
		t.Fatalf("a refused proxy was created: %+v", s.ListProxies())
	}
	send(t, "POST", api+"/proxies", fmt.Sprintf(`{"name": "a", "upstream": %q}`, up), 201)
	send(t, "POST", api+"/proxies", fmt.Sprintf(`{"name": "b", "listen": "localhost:0", "upstream": %q}`, up), 201)
	send(t, "POST", api+"/proxies", fmt.Sprintf(`{"name": "c", "listen": "[::1]:0", "upstream": %q}`, up), 201)
	// Changing where a proxy listens is checked the same way; other
	// changes are not.
	send(t, "POST", api+"/proxies/a", `{"listen": "0.0.0.0:0"}`, 403)
	send(t, "PATCH", api+"/proxies/a", `{"enabled": false}`, 200)
	send(t, "POST", api+"/proxies/a", `{"enabled": true}`, 200)
	send(t, "POST", api+"/populate", fmt.Sprintf(`[{"name": "d", "listen": "0.0.0.0:0", "upstream": %q}]`, up), 403)
	send(t, "POST", api+"/populate", fmt.Sprintf(`[{"name": "d", "listen": "127.0.0.1:0", "upstream": %q}]`, up), 201)
	for _, p := range s.ListProxies() {
		if !control.IsLoopbackAddr(p.Listen) {
			t.Fatalf("proxy %s listens on %s", p.Name, p.Listen)
		}
	}

	remote := start(t, server.Config{API: "127.0.0.1:0", AllowRemoteAPI: true})
	api = "http://" + remote.APIAddr().String()
	send(t, "POST", api+"/proxies", fmt.Sprintf(`{"name": "wide", "listen": "0.0.0.0:0", "upstream": %q}`, up), 201)
	send(t, "POST", api+"/populate", fmt.Sprintf(`[{"name": "d", "listen": "0.0.0.0:0", "upstream": %q}]`, up), 201)
	send(t, "POST", api+"/proxies/d", `{"listen": "[::]:0"}`, 200)
}

// The container configuration of docs/toxiproxy.md serves toxiproxy
// clients, which send no token, and lets them create proxies that the
// container's published ports reach.
func TestToxiproxyDocsContainerConfig(t *testing.T) {
	doc, err := os.ReadFile("../docs/toxiproxy.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(# pgchaos.yaml in the container\n.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/toxiproxy.md has no container configuration")
	}
	path := filepath.Join(t.TempDir(), "pgchaos.yaml")
	os.WriteFile(path, bytes.ReplaceAll(m[1], []byte(":8474"), []byte(":0")), 0o644)
	cfg, err := server.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, cfg)
	_, port, _ := net.SplitHostPort(s.APIAddr().String())
	client := toxiproxy.NewClient("127.0.0.1:" + port)
	if _, err := client.Version(); err != nil {
		t.Fatal(err)
	}
	p, err := client.CreateProxy("pg", "0.0.0.0:0", pg.Addr())
	if err != nil {
		t.Fatalf("create a proxy for the published ports: %v", err)
	}
	if _, err := p.AddToxic("", "pg_error", "upstream", 1, toxiproxy.Attributes{"sql": "^UPDATE", "sqlstate": "40001"}); err != nil {
		t.Fatal(err)
	}
}

// --metrics-listen serves /metrics, without a token, and nothing else; the
// API keeps its own /metrics behind the token.
func TestMetricsListen(t *testing.T) {
	s, err := server.Start(server.Config{API: "127.0.0.1:0", APIToken: "s3cret", MetricsListen: "127.0.0.1:0",
		Proxies: []server.ProxyConfig{{Name: "pg", Listen: "127.0.0.1:0", Upstream: pg.Addr()}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	metrics := "http://" + s.MetricsAddr().String()
	code, _, body := request(t, http.DefaultClient, "GET", metrics+"/metrics", nil)
	if code != 200 || !strings.Contains(body, `pgchaos_sessions_active{proxy="pg"} 0`) {
		t.Fatalf("GET /metrics on --metrics-listen: %d\n%.300s", code, body)
	}
	for _, tc := range []struct {
		method, path string
		headers      map[string]string
		want         int
	}{
		{"GET", "/rules", nil, 404},
		{"GET", "/rules", map[string]string{"Authorization": "Bearer s3cret"}, 404},
		{"GET", "/events", nil, 404},
		{"GET", "/healthz", nil, 404},
		{"GET", "/proxies", nil, 404},
		{"DELETE", "/sessions/1", nil, 404},
		{"GET", "/metrics/", nil, 404},
		{"POST", "/metrics", nil, 405},
		{"GET", "/metrics", map[string]string{"Host": "evil.example"}, 403},
	} {
		code, _, body := request(t, http.DefaultClient, tc.method, metrics+tc.path, tc.headers)
		if code != tc.want {
			t.Fatalf("%s %s on --metrics-listen: %d, want %d: %s", tc.method, tc.path, code, tc.want, body)
		}
		if _, status := jsonError(t, body); status != tc.want {
			t.Fatalf("%s %s: error status %d", tc.method, tc.path, status)
		}
	}
	api := "http://" + s.APIAddr().String()
	if code, _, _ := request(t, http.DefaultClient, "GET", api+"/metrics", nil); code != 401 {
		t.Fatalf("the API's /metrics without a token: %d", code)
	}
	if code, _, _ := request(t, http.DefaultClient, "GET", api+"/metrics", map[string]string{"Authorization": "Bearer s3cret"}); code != 200 {
		t.Fatalf("the API's /metrics: %d", code)
	}
	// Close ends the metrics listener with the API.
	addr := s.MetricsAddr().String()
	s.Close()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("the metrics listener %s still accepts after Close", addr)
	}
}

// Over TLS the metrics listener uses the API's certificate.
func TestMetricsListenTLS(t *testing.T) {
	cert, key, err := pgtest.WriteSelfSignedCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, server.Config{API: "127.0.0.1:0", APITLSCert: cert, APITLSKey: key, MetricsListen: "127.0.0.1:0"})
	pemData, _ := os.ReadFile(cert)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemData)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	if code, _, body := request(t, client, "GET", "https://"+s.MetricsAddr().String()+"/metrics", nil); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("GET https://.../metrics: %d %.200s", code, body)
	}
}
