package pgtest_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// withSSL swaps ConnString's sslmode=disable for the given TLS parameters.
func withSSL(dsn, params string) string {
	return strings.Replace(dsn, "sslmode=disable", params, 1)
}

// serverSeesTLS asks the backend itself whether its connection is
// encrypted, which the client's view alone cannot prove.
func serverSeesTLS(t *testing.T, conn *pgx.Conn) bool {
	t.Helper()
	var ssl bool
	if err := conn.QueryRow(t.Context(), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
		t.Fatalf("reading pg_stat_ssl: %v", err)
	}
	return ssl
}

func TestTLS(t *testing.T) {
	ctx := testContext(t)
	p, err := pgtest.StartPostgres(ctx, pgtest.Options{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("stopping postgres: %v", err)
		}
	})

	caPEM := p.CACertPEM()
	block, _ := pem.Decode(caPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("CACertPEM is not a PEM certificate: %q", caPEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got := cert.PublicKeyAlgorithm; got != x509.ECDSA {
		t.Errorf("certificate key algorithm %v, want ECDSA", got)
	}
	if !slices.Contains(cert.DNSNames, "localhost") || !slices.ContainsFunc(cert.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.ParseIP(pgtest.Host)) }) {
		t.Errorf("certificate SANs: DNS %v, IP %v; want localhost and %s", cert.DNSNames, cert.IPAddresses, pgtest.Host)
	}
	fromFile, err := os.ReadFile(p.CACertFile())
	if err != nil || string(fromFile) != string(caPEM) {
		t.Errorf("CACertFile %s does not hold CACertPEM (%v)", p.CACertFile(), err)
	}

	t.Run("key file", func(t *testing.T) {
		conn, err := connect(ctx, t, p.DSN(pgtest.SuperUser, "", ""))
		if err != nil {
			t.Fatal(err)
		}
		keyPath := queryString(ctx, t, conn, "SHOW ssl_key_file")
		st, err := os.Stat(keyPath)
		if err != nil {
			t.Fatal(err)
		}
		if perm := st.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %v, want 0600 (Postgres refuses group- or world-readable keys)", keyPath, perm)
		}
		dir, err := os.Stat(p.Dir())
		if err != nil {
			t.Fatal(err)
		}
		// The temp dir belongs to the server's OS user; so must the key.
		if st.Sys().(*syscall.Stat_t).Uid != dir.Sys().(*syscall.Stat_t).Uid {
			t.Errorf("%s is owned by uid %d, want the server's uid %d", keyPath, st.Sys().(*syscall.Stat_t).Uid, dir.Sys().(*syscall.Stat_t).Uid)
		}
		if got := queryString(ctx, t, conn, "SHOW ssl"); got != "on" {
			t.Errorf("ssl = %q, want on", got)
		}
		// The harness's own DSN stays plaintext.
		if serverSeesTLS(t, conn) {
			t.Error("DSN with sslmode=disable got a TLS connection")
		}
	})

	t.Run("require", func(t *testing.T) {
		conn, err := connect(ctx, t, withSSL(p.DSN(pgtest.SCRAMUser, pgtest.SCRAMPassword, ""), "sslmode=require"))
		if err != nil {
			t.Fatal(err)
		}
		if !serverSeesTLS(t, conn) {
			t.Error("pg_stat_ssl says the sslmode=require connection is not encrypted")
		}
	})

	t.Run("verify-full", func(t *testing.T) {
		dsn := withSSL(p.DSN(pgtest.SuperUser, "", ""), "sslmode=verify-full&sslrootcert="+url.QueryEscape(p.CACertFile()))
		conn, err := connect(ctx, t, dsn)
		if err != nil {
			t.Fatalf("verify-full against CACertFile: %v", err)
		}
		if !serverSeesTLS(t, conn) {
			t.Error("pg_stat_ssl says the verify-full connection is not encrypted")
		}
		state := conn.PgConn().Conn().(*tls.Conn).ConnectionState()
		if len(state.VerifiedChains) == 0 {
			t.Error("verify-full connection has no verified chain")
		}

		// Same CA, other names: localhost is in the certificate, and a
		// name that is not must fail, or verification proves nothing.
		for name, wantOK := range map[string]bool{"localhost": true, "db.example.com": false} {
			cfg, err := pgx.ParseConfig(dsn)
			if err != nil {
				t.Fatal(err)
			}
			cfg.TLSConfig.ServerName = name
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err == nil {
				conn.Close(ctx)
			}
			var hostErr x509.HostnameError
			switch {
			case wantOK && err != nil:
				t.Errorf("verify-full as %q: %v", name, err)
			case !wantOK && !errors.As(err, &hostErr):
				t.Errorf("verify-full as %q: got %v, want a hostname mismatch", name, err)
			}
		}
	})

	t.Run("psql verify-full", func(t *testing.T) {
		bin := filepath.Join(p.BinDir(), "psql")
		if _, err := os.Stat(bin); err != nil {
			t.Skipf("no psql next to the server: %v", err)
		}
		// libpq verifies with OpenSSL, which is stricter than Go about
		// self-signed trust anchors.
		dsn := withSSL(p.DSN(pgtest.SuperUser, "", ""), "sslmode=verify-full&sslrootcert="+url.QueryEscape(p.CACertFile()))
		cmd := osexec.CommandContext(ctx, bin, "-X", "-At", "-d", dsn, "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
		cmd.Env = cleanPGEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != "t" {
			t.Errorf("psql over verify-full: pg_stat_ssl.ssl = %q, want t", got)
		}
	})

	t.Run("overrides rejected", func(t *testing.T) {
		_, err := pgtest.StartPostgres(ctx, pgtest.Options{TLS: true, Settings: map[string]string{"SSL_Key_File": "/etc/ssl/private/x.key"}})
		if err == nil || !strings.Contains(err.Error(), "managed by pgtest") {
			t.Errorf("overriding ssl_key_file with TLS: %v, want a managed-by-pgtest error", err)
		}
	})
}

// TestNoTLSByDefault pins that servers without Options.TLS refuse TLS, which
// the proxy's "upstream does not accept TLS" path relies on.
func TestNoTLSByDefault(t *testing.T) {
	ctx := testContext(t)
	if pem, file := pg.CACertPEM(), pg.CACertFile(); pem != nil || file != "" {
		t.Errorf("server without TLS has CACertPEM %q, CACertFile %q", pem, file)
	}
	if _, err := connect(ctx, t, withSSL(pg.DSN(pgtest.SuperUser, "", ""), "sslmode=require")); err == nil {
		t.Error("sslmode=require connected to a server started without TLS")
	}
}

// cleanPGEnv keeps the caller's PG* variables from steering psql.
func cleanPGEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}
