package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
)

// sslDSN is pgtest.ConnString with other TLS parameters than sslmode=disable.
func sslDSN(addr, user, password, database, params string) string {
	return strings.Replace(pgtest.ConnString(addr, user, password, database), "sslmode=disable", params, 1)
}

// serverSeesTLS asks the backend whether its own connection, the one from
// the proxy, is encrypted: the client cannot tell what the proxy dialled.
func serverSeesTLS(t testing.TB, ctx context.Context, conn *pgx.Conn) bool {
	t.Helper()
	var ssl bool
	if err := conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
		t.Fatalf("reading pg_stat_ssl: %v", err)
	}
	return ssl
}

// clientTLS returns the TLS state of a pgx connection's socket, or nil when
// the client talks plaintext.
func clientTLS(conn *pgx.Conn) *tls.ConnectionState {
	tc, ok := conn.PgConn().Conn().(*tls.Conn)
	if !ok {
		return nil
	}
	st := tc.ConnectionState()
	return &st
}

// connectErr connects expecting failure, within a bound: a proxy that
// drops a client must not leave it hanging.
func connectErr(t testing.TB, ctx context.Context, dsn string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	conn, err := pgx.Connect(ctx, dsn)
	if err == nil {
		conn.Close(ctx)
		t.Fatalf("connecting through %s succeeded", dsn)
	}
	if ctx.Err() != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("connecting through %s failed only after %v (%v): the proxy left the client hanging", dsn, time.Since(start), err)
	}
	return err
}

// wantFatal checks that err carries a FATAL ErrorResponse with code and a
// message containing each of parts.
func wantFatal(t testing.TB, err error, code string, parts ...string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("want FATAL %s from the proxy, got %v", code, err)
	}
	if pgErr.Severity != "FATAL" || pgErr.Code != code {
		t.Fatalf("want FATAL %s, got %s %s: %s", code, pgErr.Severity, pgErr.Code, pgErr.Message)
	}
	for _, p := range parts {
		if !strings.Contains(pgErr.Message, p) {
			t.Fatalf("message %q lacks %q", pgErr.Message, p)
		}
	}
}

// certPool trusts the given PEM certificates.
func certPool(t testing.TB, pem []byte) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %q", pem)
	}
	return pool
}

// TestUpstreamTLS relays plaintext clients to a Postgres that serves TLS and
// checks, from the server side, that the proxy's leg is encrypted.
func TestUpstreamTLS(t *testing.T) {
	ctx := testCtx(t)
	tlsPG, err := pgtest.StartPostgres(ctx, pgtest.Options{TLS: true})
	if err != nil {
		t.Fatalf("start a TLS Postgres: %v", err)
	}
	t.Cleanup(func() {
		if err := tlsPG.Stop(); err != nil {
			t.Errorf("stop the TLS Postgres: %v", err)
		}
	})
	pool := certPool(t, tlsPG.CACertPEM())

	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"verified", &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}},
		// The proxy must take the name to verify from the upstream address.
		{"verified, name from address", &tls.Config{RootCAs: pool}},
		{"insecure", &tls.Config{InsecureSkipVerify: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			in := startProxy(t, tlsPG.Addr(), func(c *proxy.Config) { c.UpstreamTLS = tc.cfg })
			// SCRAM too: authentication is relayed inside the upstream TLS.
			for _, u := range []struct{ user, password string }{
				{pgtest.SuperUser, ""},
				{pgtest.SCRAMUser, pgtest.SCRAMPassword},
			} {
				conn := connect(t, ctx, pgtest.ConnString(in.addr(), u.user, u.password, ""))
				if clientTLS(conn) != nil {
					t.Fatal("client leg is TLS although the client asked for sslmode=disable")
				}
				if !serverSeesTLS(t, ctx, conn) {
					t.Fatalf("%s: Postgres sees a plaintext connection from a proxy with UpstreamTLS", u.user)
				}
				var n int
				if err := conn.QueryRow(ctx, "SELECT count(*) FROM generate_series(1, 100000)").Scan(&n); err != nil || n != 100000 {
					t.Fatalf("query over upstream TLS: %d, %v", n, err)
				}
			}
		})
	}

	t.Run("both legs", func(t *testing.T) {
		ctx := testCtx(t)
		in := startProxy(t, tlsPG.Addr(), func(c *proxy.Config) {
			c.TLS = selfSignedTLS(t)
			c.UpstreamTLS = &tls.Config{RootCAs: pool}
		})
		conn := connect(t, ctx, sslDSN(in.addr(), pgtest.SuperUser, "", "", "sslmode=require"))
		if clientTLS(conn) == nil {
			t.Fatal("client leg is not TLS")
		}
		if !serverSeesTLS(t, ctx, conn) {
			t.Fatal("upstream leg is not TLS")
		}
		// Large enough to span many TLS records and pump buffers each way.
		value := strings.Repeat("0123456789abcdef", 8<<20/16)
		var got string
		if err := conn.QueryRow(ctx, "SELECT $1::text || 'x'", value).Scan(&got); err != nil {
			t.Fatalf("8 MiB round trip over two TLS legs: %v", err)
		}
		if got != value+"x" {
			t.Fatalf("8 MiB value came back as %d bytes, different", len(got))
		}
	})

	// A CancelRequest travels on a connection of its own, which the proxy
	// must dial with TLS too.
	t.Run("cancel", func(t *testing.T) {
		ctx := testCtx(t)
		in := startProxy(t, tlsPG.Addr(), func(c *proxy.Config) { c.UpstreamTLS = &tls.Config{RootCAs: pool} })
		conn := connect(t, ctx, pgtest.ConnString(in.addr(), pgtest.SuperUser, "", ""), withLibpqCancel)
		before := in.metric(t, "pgchaos_cancel_requests_total", nil)
		cancelSleep(t, ctx, conn)
		if after := in.metric(t, "pgchaos_cancel_requests_total", nil); after != before+1 {
			t.Fatalf("pgchaos_cancel_requests_total %v -> %v, want one more", before, after)
		}
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		ctx := testCtx(t)
		other, err := x509.ParseCertificate(selfSignedTLS(t).Certificates[0].Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		wrong := x509.NewCertPool()
		wrong.AddCert(other)
		in := startProxy(t, tlsPG.Addr(), func(c *proxy.Config) { c.UpstreamTLS = &tls.Config{RootCAs: wrong} })
		err = connectErr(t, ctx, pgtest.ConnString(in.addr(), pgtest.SuperUser, "", ""))
		wantFatal(t, err, "08006", "could not connect to upstream", "TLS handshake", "certificate")
		if got := in.metric(t, "pgchaos_upstream_connect_failures_total", nil); got != 1 {
			t.Errorf("pgchaos_upstream_connect_failures_total = %v, want 1", got)
		}
		if got := in.metric(t, "pgchaos_sessions_total", nil); got != 0 {
			t.Errorf("pgchaos_sessions_total = %v after a failed upstream handshake, want 0", got)
		}
	})

	t.Run("upstream without TLS", func(t *testing.T) {
		ctx := testCtx(t)
		in := startProxy(t, pg.Addr(), func(c *proxy.Config) { c.UpstreamTLS = &tls.Config{InsecureSkipVerify: true} })
		err := connectErr(t, ctx, pgtest.ConnString(in.addr(), pgtest.SuperUser, "", ""))
		wantFatal(t, err, "08006", "upstream does not accept TLS")
		if got := in.metric(t, "pgchaos_upstream_connect_failures_total", nil); got != 1 {
			t.Errorf("pgchaos_upstream_connect_failures_total = %v, want 1", got)
		}
	})
}

// TestDirectTLS covers PG17's sslnegotiation=direct, where the client opens
// with a TLS ClientHello instead of an SSLRequest.
func TestDirectTLS(t *testing.T) {
	const direct = "sslmode=require&sslnegotiation=direct"

	t.Run("terminated", func(t *testing.T) {
		ctx := testCtx(t)
		in := startProxy(t, pg.Addr(), func(c *proxy.Config) { c.TLS = selfSignedTLS(t) })
		for _, u := range []struct{ user, password string }{
			{pgtest.SuperUser, ""},
			{pgtest.SCRAMUser, pgtest.SCRAMPassword},
		} {
			conn := connect(t, ctx, sslDSN(in.addr(), u.user, u.password, "", direct))
			st := clientTLS(conn)
			if st == nil || !st.HandshakeComplete {
				t.Fatal("direct-TLS connection is not TLS")
			}
			// libpq (PG17+) drops a direct-TLS connection without this ALPN.
			if st.NegotiatedProtocol != "postgresql" {
				t.Errorf("negotiated ALPN %q, want postgresql", st.NegotiatedProtocol)
			}
			var who string
			if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != u.user {
				t.Fatalf("current_user over direct TLS: %q, %v", who, err)
			}
		}
		if got := in.metric(t, "pgchaos_protocol_errors_total", nil); got != 0 {
			t.Errorf("pgchaos_protocol_errors_total = %v, want 0", got)
		}
	})

	t.Run("proxy without certificate", func(t *testing.T) {
		ctx := testCtx(t)
		in := startProxy(t, pg.Addr(), nil)
		err := connectErr(t, ctx, sslDSN(in.addr(), pgtest.SuperUser, "", "", direct))
		t.Logf("client error, as expected: %v", err)
		if got := in.metric(t, "pgchaos_protocol_errors_total", nil); got != 1 {
			t.Errorf("pgchaos_protocol_errors_total = %v, want 1", got)
		}
		// The refusal is per client: the proxy still serves plaintext ones.
		conn := connect(t, ctx, pgtest.ConnString(in.addr(), pgtest.SuperUser, "", ""))
		if err := conn.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// dialRecorder records the first bytes each connection of a pgx client
// sends, to show what a cancel connection opened with.
type dialRecorder struct {
	mu    sync.Mutex
	first [][]byte
}

func (r *dialRecorder) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.first = append(r.first, nil)
	return &recordingConn{Conn: c, r: r, i: len(r.first) - 1}, nil
}

func (r *dialRecorder) firstWrites() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.first...)
}

type recordingConn struct {
	net.Conn
	r    *dialRecorder
	i    int
	once sync.Once
}

func (c *recordingConn) Write(b []byte) (int, error) {
	c.once.Do(func() {
		c.r.mu.Lock()
		c.r.first[c.i] = bytes.Clone(b)
		c.r.mu.Unlock()
	})
	return c.Conn.Write(b)
}

// sslRequest is the 8-byte SSLRequest packet.
var sslRequest = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 80877103)

func withLibpqCancel(c *pgx.ConnConfig) {
	c.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler { return &libpqCancel{conn: pc} }
}

// cancelSleep cancels a long query through the connection's context and
// checks that the server, not a timeout, ended it and the session survived.
func cancelSleep(t testing.TB, ctx context.Context, conn *pgx.Conn) {
	t.Helper()
	qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := conn.Exec(qctx, "SELECT pg_sleep(30)")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Fatalf("want query_canceled 57014, got %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("session unusable after cancel: %v", err)
	}
}

// TestCancelOverTLS cancels a query of a TLS client: pgx, like libpq 17,
// sends the CancelRequest over TLS when the session is TLS (and by the same
// negotiation), so the proxy must set up TLS on the cancel connection before
// it can read the request.
func TestCancelOverTLS(t *testing.T) {
	in := startProxy(t, pg.Addr(), func(c *proxy.Config) { c.TLS = selfSignedTLS(t) })
	for _, tc := range []struct {
		negotiation string
		// opening is how the cancel connection must start for the request
		// inside it to be encrypted.
		opening []byte
	}{
		{"postgres", sslRequest},
		{"direct", []byte{0x16}}, // a TLS handshake record
	} {
		t.Run(tc.negotiation, func(t *testing.T) {
			ctx := testCtx(t)
			rec := &dialRecorder{}
			conn := connect(t, ctx, sslDSN(in.addr(), pgtest.SuperUser, "", "", "sslmode=require&sslnegotiation="+tc.negotiation),
				withLibpqCancel, func(c *pgx.ConnConfig) { c.DialFunc = rec.dial })
			if clientTLS(conn) == nil {
				t.Fatal("session is not TLS")
			}
			before := in.metric(t, "pgchaos_cancel_requests_total", nil)
			cancelSleep(t, ctx, conn)
			if after := in.metric(t, "pgchaos_cancel_requests_total", nil); after != before+1 {
				t.Fatalf("pgchaos_cancel_requests_total %v -> %v, want one more", before, after)
			}
			first := rec.firstWrites()
			if len(first) != 2 {
				t.Fatalf("client dialled %d connections, want the session and one cancel connection", len(first))
			}
			if !bytes.HasPrefix(first[1], tc.opening) {
				t.Fatalf("cancel connection opened with %x, want %x...: the cancel went in plaintext", first[1], tc.opening)
			}
		})
	}
}

// TestPsqlTLS runs libpq (via psql) against the TLS-terminating proxy: its
// TLS stack is OpenSSL, not Go's, and it is what most clients use.
func TestPsqlTLS(t *testing.T) {
	bin := filepath.Join(pg.BinDir(), "psql")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no psql next to the server: %v", err)
	}
	psql := func(t *testing.T, addr string, env ...string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(testCtx(t), 30*time.Second)
		defer cancel()
		host, port := splitAddr(t, addr)
		cmd := exec.CommandContext(ctx, bin, "-X", "-At", "-h", host, "-p", port, "-U", pgtest.SuperUser, "-d", "postgres",
			"-c", "SELECT 1", "-c", `\conninfo`)
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "PG") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("psql hung: %v\n%s", err, out)
		}
		return string(out), err
	}

	tlsProxy := startProxy(t, pg.Addr(), func(c *proxy.Config) { c.TLS = selfSignedTLS(t) })

	t.Run("sslmode=require", func(t *testing.T) {
		out, err := psql(t, tlsProxy.addr(), "PGSSLMODE=require")
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, out)
		}
		if !strings.HasPrefix(out, "1\n") || !strings.Contains(out, "SSL connection") {
			t.Fatalf("psql output lacks the row or the SSL connection info:\n%s", out)
		}
	})

	// Pins that a proxy without TLS says 'N' rather than dropping the
	// client, so libpq can report why.
	t.Run("proxy without TLS", func(t *testing.T) {
		plain := startProxy(t, pg.Addr(), nil)
		out, err := psql(t, plain.addr(), "PGSSLMODE=require")
		if err == nil {
			t.Fatalf("psql with sslmode=require connected to a proxy without TLS:\n%s", out)
		}
		if !strings.Contains(out, "server does not support SSL") {
			t.Fatalf("psql failed, but not because TLS was refused:\n%s", out)
		}
	})

	t.Run("sslnegotiation=direct", func(t *testing.T) {
		ver, err := exec.Command(bin, "--version").Output()
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(\d+)\.`).FindSubmatch(ver)
		if m == nil {
			t.Fatalf("cannot parse %q", ver)
		}
		if major, _ := strconv.Atoi(string(m[1])); major < 17 {
			t.Skipf("psql %s predates sslnegotiation=direct (PG17)", strings.TrimSpace(string(ver)))
		}
		out, err := psql(t, tlsProxy.addr(), "PGSSLMODE=require", "PGSSLNEGOTIATION=direct")
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, out)
		}
		if !strings.HasPrefix(out, "1\n") || !strings.Contains(out, "SSL connection") {
			t.Fatalf("psql output lacks the row or the SSL connection info:\n%s", out)
		}
	})
}
