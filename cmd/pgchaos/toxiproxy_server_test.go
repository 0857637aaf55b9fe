package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// waitVersion polls GET /version until it answers 200, as the
// Testcontainers modules' wait strategy does.
func waitVersion(t *testing.T, api string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + api + "/version")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /version on %s: %v", api, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// portOf is the port of host:port.
func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// queryThrough runs SELECT 1 through a proxy's port on 127.0.0.1.
func queryThrough(ctx context.Context, port string) error {
	conn, err := pgx.Connect(ctx, pgtest.ConnString("127.0.0.1:"+port, pgtest.SuperUser, "", "postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "SELECT 1")
	return err
}

// testcontainers-go's toxiproxy module with proxies writes them to
// /tmp/tc-toxiproxy.json (a JSON list, listen 0.0.0.0:8666 and on) and
// starts the image with "-host=0.0.0.0 -config=/tmp/tc-toxiproxy.json",
// then waits for GET /version on 8474. The same command runs pgchaos as
// toxiproxy-server (here with -port, for a free port instead of 8474), its
// proxies listening, driven by toxiproxy's own client.
func TestTestcontainersGoModuleCommand(t *testing.T) {
	bin := buildBinary(t)
	listen := "0.0.0.0:" + portOf(t, freeAddr(t))
	config, err := json.MarshalIndent([]map[string]any{
		{"name": "postgres", "listen": listen, "upstream": pg.Addr(), "enabled": true},
	}, "", "    ")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "tc-toxiproxy.json")
	if err := os.WriteFile(file, config, 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, bin, func(_, api string) []string {
		return []string{"-host=0.0.0.0", "-config=" + file, "-port=" + portOf(t, api)}
	})
	waitVersion(t, p.api)
	if !strings.Contains(p.log.String(), "without a token") {
		t.Errorf("a token-less API beyond loopback was not warned about:\n%s", p.log.String())
	}

	client := toxiproxy.NewClient(p.api)
	proxies, err := client.Proxies()
	if err != nil {
		t.Fatal(err)
	}
	px := proxies["postgres"]
	if px == nil || !px.Enabled || px.Upstream != pg.Addr() {
		t.Fatalf("proxies from the config file: %+v", proxies)
	}
	port := portOf(t, px.Listen)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := queryThrough(ctx, port); err != nil {
		t.Fatalf("through the configured proxy: %v", err)
	}
	// toxiproxy's toxics and pgchaos's pg_* ones, added and removed with
	// toxiproxy's client.
	if _, err := px.AddToxic("slow", "latency", "downstream", 1, toxiproxy.Attributes{"latency": 300}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := queryThrough(ctx, port); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("with 300 ms of latency the session took %v", took)
	}
	if err := px.RemoveToxic("slow"); err != nil {
		t.Fatal(err)
	}
	if _, err := px.AddToxic("refuse-select", "pg_error", "upstream", 1, toxiproxy.Attributes{"sql": "^SELECT", "sqlstate": "40001"}); err != nil {
		t.Fatal(err)
	}
	var pgErr *pgconn.PgError
	if err := queryThrough(ctx, port); !errors.As(err, &pgErr) || pgErr.Code != "40001" {
		t.Fatalf("with a pg_error toxic: %v, want SQLSTATE 40001", err)
	}
	if err := px.RemoveToxic("refuse-select"); err != nil {
		t.Fatal(err)
	}
	if err := queryThrough(ctx, port); err != nil {
		t.Fatalf("with the toxic removed: %v", err)
	}
}

// testcontainers-java's ToxiproxyContainer starts the image as it is
// (toxiproxy's image runs "-host=0.0.0.0"), waits for GET /version, and
// creates proxies named after their upstream ("host:port") on 0.0.0.0 from
// port 8666; it cuts a connection with bandwidth toxics of rate 0 named
// CUT_CONNECTION_DOWNSTREAM/UPSTREAM. testcontainers-node's lists the
// proxies for a free port and turns one off and on with an update of
// enabled, listen and upstream.
func TestTestcontainersJavaAndNodeModuleCalls(t *testing.T) {
	bin := buildBinary(t)
	p := startProxy(t, bin, func(_, api string) []string {
		return []string{"-host=0.0.0.0", "-port=" + portOf(t, api)}
	})
	waitVersion(t, p.api)
	client := toxiproxy.NewClient(p.api)
	if proxies, err := client.Proxies(); err != nil || len(proxies) != 0 {
		t.Fatalf("a server started without a config has proxies: %v %v", proxies, err)
	}
	listen := "0.0.0.0:" + portOf(t, freeAddr(t))
	px, err := client.CreateProxy(pg.Addr(), listen, pg.Addr())
	if err != nil {
		t.Fatalf("a proxy named after its upstream, as Java's module names it: %v", err)
	}
	port := portOf(t, listen)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := queryThrough(ctx, port); err != nil {
		t.Fatal(err)
	}

	// Java: setConnectionCut(true), then (false).
	for _, dir := range []string{"downstream", "upstream"} {
		if _, err := px.AddToxic("CUT_CONNECTION_"+strings.ToUpper(dir), "bandwidth", dir, 1, toxiproxy.Attributes{"rate": 0}); err != nil {
			t.Fatal(err)
		}
	}
	cut, cancelCut := context.WithTimeout(ctx, time.Second)
	if err := queryThrough(cut, port); err == nil {
		t.Error("a query went through a connection cut by bandwidth 0 both ways")
	}
	cancelCut()
	for _, name := range []string{"CUT_CONNECTION_DOWNSTREAM", "CUT_CONNECTION_UPSTREAM"} {
		if err := px.RemoveToxic(name); err != nil {
			t.Fatal(err)
		}
	}
	if err := queryThrough(ctx, port); err != nil {
		t.Fatalf("after the cut was lifted: %v", err)
	}

	// Node: getAll for the ports in use, then setEnabled(false/true).
	all, err := client.Proxies()
	if err != nil || all[pg.Addr()] == nil || !strings.HasSuffix(all[pg.Addr()].Listen, ":"+port) {
		t.Fatalf("GET /proxies: %v %v", all, err)
	}
	px.Enabled = false
	if err := px.Save(); err != nil {
		t.Fatal(err)
	}
	if err := queryThrough(ctx, port); err == nil {
		t.Error("a disabled proxy still relays")
	}
	px.Enabled = true
	if err := px.Save(); err != nil {
		t.Fatal(err)
	}
	if err := queryThrough(ctx, port); err != nil {
		t.Fatalf("re-enabled: %v", err)
	}
}

// With no arguments at all pgchaos is toxiproxy-server on its defaults:
// the API on localhost:8474, no proxies, until SIGTERM. (Run only where
// 8474 is free: a port outside the ephemeral range that another program
// may hold.)
func TestNoArgumentsRunsToxiproxyServerDefaults(t *testing.T) {
	bin := buildBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:8474")
	if err != nil {
		t.Skipf("127.0.0.1:8474 is taken here (%v): toxiproxy-server's default port cannot be tried", err)
	}
	ln.Close()
	cmd := exec.Command(bin)
	log := &logBuffer{}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() { cmd.Process.Kill() }()
	waitVersion(t, "localhost:8474")
	if !strings.Contains(log.String(), "127.0.0.1:8474") {
		t.Errorf("the API does not listen on loopback:\n%s", log.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, log.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("still running 15 s after SIGTERM")
	}
}

// toxiproxy-server's flags and a bad config file get clear errors, exit 2.
func TestToxiproxyServerBadInput(t *testing.T) {
	dir := t.TempDir()
	noUpstream := filepath.Join(dir, "no-upstream.json")
	os.WriteFile(noUpstream, []byte("[\n  {\"name\": \"a\", \"listen\": \"127.0.0.1:0\", \"upstream\": \"127.0.0.1:5432\"},\n  {\"name\": \"b\", \"listen\": \"127.0.0.1:0\"}\n]\n"), 0o644)
	notJSON := filepath.Join(dir, "broken.json")
	os.WriteFile(notJSON, []byte("[{\"name\": \"a\","), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-config=" + noUpstream}, "no-upstream.json:3: proxies[1] (b): upstream is empty"},
		{[]string{"-config", notJSON}, "broken.json"},
		{[]string{"-config=" + filepath.Join(dir, "missing.json")}, "missing.json"},
		{[]string{"-host=127.0.0.1", "extra"}, `unexpected argument "extra"`},
		{[]string{"-port=x", "-host=127.0.0.1"}, "x"},
	} {
		var stdout, stderr strings.Builder
		if code := run(c.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("pgchaos %s: exit %d, stderr %q; want exit 2 naming %q", strings.Join(c.args, " "), code, stderr.String(), c.want)
		}
	}
	var stdout, stderr strings.Builder
	if code := run([]string{"-version"}, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "pgchaos ") {
		t.Errorf("pgchaos -version: exit %d, %q %q", code, stdout.String(), stderr.String())
	}
}
