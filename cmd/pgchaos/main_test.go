package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/internal/buildinfo"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

var pg *pgtest.Postgres

func TestMain(m *testing.M) { pgtest.Main(m, pgtest.Options{}, &pg) }

func TestUsageErrors(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(cfgPath, []byte("proxies:\n  - name: a\n    listen: 127.0.0.1:1\n"), 0o644)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644)
	emptyToken := filepath.Join(dir, "empty-token")
	os.WriteFile(emptyToken, []byte("\n"), 0o600)
	t.Setenv("PGCHAOS_API_TOKEN", "")
	remoteCfg := filepath.Join(dir, "remote.yaml")
	os.WriteFile(remoteCfg, []byte("api: 0.0.0.0:0\napi_allow_remote: true\nlog_sql: full\n"), 0o644)
	exp := "../../experiments/examples/latency-spike.yaml"
	pgOK := []string{"proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--api", "127.0.0.1:0"}
	with := func(extra ...string) []string { return append(append([]string{}, pgOK...), extra...) }
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate" (try: pgchaos --help)`},
		{[]string{"exlpore"}, 2, `unknown command "exlpore" (did you mean "explore"?`},
		{[]string{"run", "--sed", "1", exp}, 2, "unknown flag: --sed (did you mean --seed?)"},
		{[]string{"help", "explore"}, 0, "pgchaos explore EXPERIMENT.yaml [--budget 10m]"},
		{[]string{"proxy"}, 2, "--listen and --upstream are required"},
		{[]string{"proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"proxy", "--listen", "nope", "--upstream", "127.0.0.1:1"}, 2, `listen "nope"`},
		{[]string{"proxy", "--config", cfgPath}, 2, cfgPath + ":2: proxies[0] (a): upstream is empty"},
		{[]string{"proxy", "--config", cfgPath, "--listen", "127.0.0.1:1"}, 2, "either --config or --listen/--upstream"},
		{[]string{"proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--log-level", "loud"}, 2, `--log-level "loud"`},
		{[]string{"proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--tls-cert", "x.pem"}, 2, "must be given together"},
		{[]string{"proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--log-sql", "all"}, 2, `log_sql "all" (--log-sql): want redacted or full`},
		{[]string{"proxy", "--config", missing}, 2, "read config: open " + missing},
		{with("--api", "0.0.0.0:8474"), 2, "control address 0.0.0.0:8474 is not a loopback address"},
		{with("--tls-cert", missing, "--tls-key", missing), 2, "load TLS certificate: open " + missing},
		{with("--tls-cert", notPEM, "--tls-key", notPEM), 2, "load TLS certificate"},
		{with("--upstream-tls", "--upstream-ca", missing), 2, "read upstream CA: open " + missing},
		{with("--upstream-tls", "--upstream-ca", notPEM), 2, "holds no PEM certificate"},
		{with("--upstream-ca", notPEM), 2, "upstream_ca (--upstream-ca) needs upstream_tls (--upstream-tls)"},
		{with("--api", "0.0.0.0:0", "--api-allow-remote"), 2, "give it a token with --api-token-file FILE (api_token_file) or PGCHAOS_API_TOKEN, or pass --api-insecure"},
		{with("--api-token-file", missing), 2, "read API token: open " + missing},
		{[]string{"proxy", "--embedded", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0", "--pg-bindir", dir, "--api-token-file", missing}, 2, "read API token: open " + missing},
		{with("--api-token-file", emptyToken), 2, "API token file " + emptyToken + ": the token is empty"},
		{with("--api-tls-cert", notPEM), 2, "api_tls_cert and api_tls_key (--api-tls-cert/--api-tls-key) must be given together"},
		{with("--api-tls-cert", missing, "--api-tls-key", missing), 2, "load the control API's TLS certificate: open " + missing},
		{[]string{"fault", "list", "--api-token-file", missing}, 2, "read API token: open " + missing},
		{[]string{"sessions", "--api", "https://127.0.0.1:1", "--api-ca", missing}, 2, "read CA: open " + missing},
		{[]string{"events", "--api", "https://127.0.0.1:1", "--api-ca", notPEM}, 2, "holds no PEM certificate"},
		{[]string{"fault", "rm", "x", "--api", "127.0.0.1:1", "--api-ca", notPEM}, 2, "--api-ca verifies an https:// control API"},
		{with("--metrics-listen", "9187"), 2, `metrics_listen "9187" (--metrics-listen): address 9187: missing port in address`},
		{with("--api", "127.0.0.1:8474", "--metrics-listen", "127.0.0.1:8474"), 2, "metrics_listen 127.0.0.1:8474 (--metrics-listen) is the control API's address"},
		{[]string{"proxy", "--config", remoteCfg}, 2, remoteCfg + ": control address 0.0.0.0:0 is not a loopback address: give it a token"},
		{[]string{"run", exp, "--api-token-file", missing}, 2, "read API token: open " + missing},
		{[]string{"run", exp, "--api-ca", notPEM}, 2, "--api-ca verifies an https:// control API; no proxy of the experiment has an https:// url"},
		{with("--max-sessions", "-1"), 2, "max_sessions -1 is negative"},
		{with("--startup-timeout", "soon"), 2, `invalid argument "soon" for "--startup-timeout"`},
		{[]string{"proxy", "--help"}, 0, "--upstream string"},
		{[]string{"demo", "failover-snyc"}, 2, `no shipped experiment named "failover-snyc"; pgchaos demo --list shows them: 2pc-mid-commit-prepared, 2pc-mid-prepare,`},
		{[]string{"demo", "crash-restart", "failover-sync"}, 2, "pgchaos demo runs one experiment, got 2: crash-restart failover-sync"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stdout.String()+stderr.String(), tc.want) {
				t.Fatalf("exit %d (want %d); output lacks %q:\n%s%s", code, tc.code, tc.want, stdout.String(), stderr.String())
			}
			if tc.code == 2 && len(tc.args) > 0 && tc.args[len(tc.args)-1] != "--bogus" {
				if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n"); lines > 0 {
					t.Fatalf("want one line on a usage error, got:\n%s", stderr.String())
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var stdout bytes.Buffer
		if code := run(args, &stdout, io.Discard); code != 0 || !strings.HasPrefix(stdout.String(), "pgchaos ") ||
			!strings.Contains(stdout.String(), "\ngo:      "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+"\n") {
			t.Fatalf("%s: %d %q", args[0], code, stdout.String())
		}
	}
	var stdout bytes.Buffer
	if code := run([]string{"version", "--json"}, &stdout, io.Discard); code != 0 {
		t.Fatalf("version --json: exit %d", code)
	}
	var info buildinfo.Info
	if err := json.Unmarshal(stdout.Bytes(), &info); err != nil || info.Version == "" || info.Commit == "" || info.Date == "" || info.GoVersion != runtime.Version() {
		t.Fatalf("version --json: %v %q", err, stdout.String())
	}
}

// buildBinary compiles pgchaos for the tests that need a real process.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pgchaos")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestSignals runs the binary, opens a session through it, and checks that
// SIGINT and SIGTERM each close the session and exit 0.
func TestSignals(t *testing.T) {
	bin := buildBinary(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startProxy(t, bin, func(listen, api string) []string {
				return []string{"proxy", "--listen", listen, "--upstream", pg.Addr(), "--api", api, "--name", "sig"}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, pgtest.ConnString(p.listen, pgtest.SuperUser, "", "postgres"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			p.cmd.Process.Signal(sig)
			if err := p.wait(15 * time.Second); err != nil {
				t.Fatalf("after %v: %v (want exit status 0)", sig, err)
			}
			// The session was told why, as PostgreSQL tells its clients.
			err = conn.Ping(ctx)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "57P01" || !strings.Contains(pgErr.Message, `proxy "sig" is shutting down`) {
				t.Fatalf("after %v the session got %v; want FATAL 57P01 naming the proxy", sig, err)
			}
		})
	}
}

// The limit flags reach the proxy: a second session is refused as from
// PostgreSQL, and a client that never finishes its startup is closed.
func TestLimitFlags(t *testing.T) {
	bin := buildBinary(t)
	p := startProxy(t, bin, func(listen, api string) []string {
		return []string{"proxy", "--listen", listen, "--upstream", pg.Addr(), "--api", api, "--max-sessions", "1", "--startup-timeout", "300ms"}
	})
	wantSecondRefused(t, p.listen, "")
	idle, err := net.Dial("tcp", p.listen)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	start := time.Now()
	idle.SetReadDeadline(time.Now().Add(30 * time.Second))
	io.Copy(io.Discard, idle)
	// Only the order of magnitude matters: closed at about 300ms, not
	// held until the 30s read deadline.
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("a client silent in its startup phase was kept %v under --startup-timeout 300ms", d)
	}
}

// Flags given beside --config override the file's settings: here the
// control API's address and the session limit.
func TestConfigFlagsOverride(t *testing.T) {
	bin := buildBinary(t)
	file := filepath.Join(t.TempDir(), "pgchaos.yaml")
	var fileAPI string
	p := startProxy(t, bin, func(listen, api string) []string {
		fileAPI = freeAddr(t)
		os.WriteFile(file, []byte(fmt.Sprintf("api: %s\nmax_sessions: 100\nproxies:\n  - {name: pg, listen: %q, upstream: %q}\n", fileAPI, listen, pg.Addr())), 0o644)
		return []string{"proxy", "--config", file, "--api", api, "--max-sessions", "1"}
	})
	if !regexp.MustCompile(`control API listening"? addr=` + regexp.QuoteMeta(p.api) + `\b`).MatchString(p.log.String()) {
		t.Fatalf("the control API does not listen on --api %s:\n%s", p.api, p.log.String())
	}
	if resp, err := http.Get("http://" + p.api + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz on --api: %v %v", resp, err)
	}
	if resp, err := http.Get("http://" + fileAPI + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("the file's api %s answers too", fileAPI)
	}
	wantSecondRefused(t, p.listen, " from --max-sessions 1 over the file's 100")
}

// wantSecondRefused opens a session to listen and holds it while a second
// is refused as PostgreSQL refuses one too many (FATAL 53300).
func wantSecondRefused(t *testing.T, listen, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := pgx.Connect(ctx, pgtest.ConnString(listen, pgtest.SuperUser, "", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close(ctx)
	_, err = pgx.Connect(ctx, pgtest.ConnString(listen, pgtest.SuperUser, "", "postgres"))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "53300" {
		t.Fatalf("second session: %v; want FATAL 53300%s", err, why)
	}
}

// TestEmbedded checks the README's first command: a throwaway database
// behind the proxy, reachable with the printed connection string, removed
// on Ctrl-C.
func TestEmbedded(t *testing.T) {
	bin := buildBinary(t)
	p := startProxy(t, bin, func(listen, api string) []string {
		return []string{"proxy", "--embedded", "--listen", listen, "--api", api}
	})
	dsn := regexp.MustCompile(`embedded PostgreSQL is up.*psql '([^']+)'`).FindStringSubmatch(p.log.String())
	if dsn == nil {
		t.Fatalf("no connection string in the log:\n%s", p.log.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn[1])
	if err != nil {
		t.Fatalf("connect with the printed string %s: %v", dsn[1], err)
	}
	var dataDir string
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&dataDir); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	p.cmd.Process.Signal(syscall.SIGINT)
	if err := p.wait(30 * time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Fatalf("embedded data directory %s left behind (%v)", dataDir, err)
	}
}

// proxyProcess is a `pgchaos proxy` a test started.
type proxyProcess struct {
	cmd         *exec.Cmd
	listen, api string
	log         *logBuffer
	done        chan struct{}
	err         error // once done is closed
}

// wait waits for the process to exit and returns its error, or fails
// after d.
func (p *proxyProcess) wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("still running after %v", d)
	}
}

// startProxy starts `pgchaos proxy` with the arguments args gives for a
// listen and an API address on free ports, and waits until its control API
// listens. A port that another process took between pgtest.FreePort and
// pgchaos's bind is retried on new ones. The process is killed when the
// test ends.
func startProxy(t *testing.T, bin string, args func(listen, api string) []string) *proxyProcess {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p := &proxyProcess{listen: freeAddr(t), api: freeAddr(t), log: &logBuffer{}, done: make(chan struct{})}
		a := args(p.listen, p.api)
		p.cmd = exec.Command(bin, a...)
		p.cmd.Stderr = p.log
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.err = p.cmd.Wait(); close(p.done) }()
		t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
		err := p.waitAPI(60 * time.Second)
		if err == nil {
			return p
		}
		if attempt < 3 && strings.Contains(p.log.String(), "address already in use") {
			t.Logf("pgchaos %s lost a port to another process; retrying on others:\n%s", strings.Join(a, " "), p.log.String())
			continue
		}
		t.Fatalf("pgchaos %s: no control API: %v\n%s", strings.Join(a, " "), err, p.log.String())
	}
}

// waitAPI polls the log until the control API listens; it says why not
// when the process ends first or d passes.
func (p *proxyProcess) waitAPI(d time.Duration) error {
	deadline := time.Now().Add(d)
	for !strings.Contains(p.log.String(), "control API listening") {
		select {
		case <-p.done:
			return fmt.Errorf("it ended: %v", p.err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still starting after %v", d)
		}
	}
	return nil
}

// logBuffer collects what a process writes, for reading while it runs.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func waitLine(t *testing.T, lines *bufio.Scanner, want string) string {
	t.Helper()
	found := make(chan string, 1)
	go func() {
		for lines.Scan() {
			if strings.Contains(lines.Text(), want) {
				found <- lines.Text()
				return
			}
		}
		close(found)
	}()
	select {
	case l, ok := <-found:
		if !ok {
			t.Fatalf("process ended before logging %q", want)
		}
		return l
	case <-time.After(60 * time.Second):
		t.Fatalf("no %q in the log after 60s", want)
	}
	return ""
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}
