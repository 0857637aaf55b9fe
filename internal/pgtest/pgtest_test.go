package pgtest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/internal/pgtest"
)

var pg *pgtest.Postgres

func TestMain(m *testing.M) {
	pgtest.Main(m, pgtest.Options{}, &pg)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// connect opens a connection with the simple protocol, because named
// prepared statements break under PgBouncer transaction pooling (< 1.21).
func connect(ctx context.Context, t *testing.T, dsn string) (*pgx.Conn, error) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parsing %s: %v", dsn, err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn, nil
}

// exec runs a statement on a connection of its own; for cleanups, which
// run after the test's context is cancelled.
func exec(t *testing.T, dsn, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Errorf("connecting for %s: %v", sql, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Errorf("%s: %v", sql, err)
	}
}

func queryString(ctx context.Context, t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

type login struct {
	name, user, password string
	wantOK               bool
}

var logins = []login{
	{"postgres/ok", pgtest.SuperUser, "", true},
	{"md5user/ok", pgtest.MD5User, pgtest.MD5Password, true},
	{"scramuser/ok", pgtest.SCRAMUser, pgtest.SCRAMPassword, true},
	{"md5user/bad-password", pgtest.MD5User, "wrong", false},
	{"scramuser/bad-password", pgtest.SCRAMUser, "wrong", false},
	{"md5user/no-password", pgtest.MD5User, "", false},
	{"scramuser/no-password", pgtest.SCRAMUser, "", false},
}

// SQLSTATEs of a rejected password: Postgres says invalid_password, while
// PgBouncer (1.18 at least) reports protocol_violation.
const (
	postgresBadPassword  = "28P01"
	pgbouncerBadPassword = "08P01"
)

// checkLogins logs in with each of logins at addr and checks who the server
// thinks we are, and that bad passwords fail with badPasswordCode.
func checkLogins(t *testing.T, addr, badPasswordCode string) {
	for _, l := range logins {
		t.Run(l.name, func(t *testing.T) {
			ctx := testContext(t)
			conn, err := connect(ctx, t, pgtest.ConnString(addr, l.user, l.password, "postgres"))
			if !l.wantOK {
				var pgErr *pgconn.PgError
				if err == nil {
					t.Fatalf("login as %s with password %q succeeded", l.user, l.password)
				}
				if !errors.As(err, &pgErr) || pgErr.Code != badPasswordCode {
					t.Fatalf("login as %s with password %q: got %v, want SQLSTATE %s", l.user, l.password, err, badPasswordCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("login as %s: %v", l.user, err)
			}
			if got := queryString(ctx, t, conn, "SELECT current_user"); got != l.user {
				t.Errorf("current_user = %q, want %q", got, l.user)
			}
		})
	}
}

func TestPostgresLogins(t *testing.T) {
	if got, want := pg.Addr(), "127.0.0.1:"+strconv.Itoa(pg.Port()); got != want {
		t.Errorf("Addr() = %q, want %q", got, want)
	}
	checkLogins(t, pg.Addr(), postgresBadPassword)
}

// TestPasswordStorage pins the storage formats: they decide which
// authentication exchange the server can run, which is the point of having
// two password users.
func TestPasswordStorage(t *testing.T) {
	ctx := testContext(t)
	conn, err := connect(ctx, t, pg.DSN(pgtest.SuperUser, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	for user, prefix := range map[string]string{
		pgtest.MD5User:   "md5",
		pgtest.SCRAMUser: "SCRAM-SHA-256$",
	} {
		var stored string
		if err := conn.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", user).Scan(&stored); err != nil {
			t.Fatalf("reading password of %s: %v", user, err)
		}
		if !strings.HasPrefix(stored, prefix) {
			t.Errorf("password of %s stored as %.16q..., want prefix %q", user, stored, prefix)
		}
	}
}

func TestPostgresSettings(t *testing.T) {
	ctx := testContext(t)
	conn, err := connect(ctx, t, pg.DSN(pgtest.SuperUser, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(queryString(ctx, t, conn, "SHOW max_prepared_transactions"))
	if err != nil || n <= 0 {
		t.Errorf("max_prepared_transactions = %d (%v), want > 0", n, err)
	}
	for setting, want := range map[string]string{
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(pg.Port()),
		"unix_socket_directories": pg.Dir(),
		"fsync":                   "off",
		"wal_level":               "replica",
		"max_connections":         "200",
	} {
		if got := queryString(ctx, t, conn, "SHOW "+setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if _, err := os.Stat(pg.LogFile()); err != nil {
		t.Errorf("log file: %v", err)
	}
}

func TestCreateDatabase(t *testing.T) {
	ctx := testContext(t)
	const name = "Mixed Case-db"
	if err := pg.CreateDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec(t, pg.DSN(pgtest.SuperUser, "", ""), "DROP DATABASE "+pgx.Identifier{name}.Sanitize()) })
	conn, err := connect(ctx, t, pg.DSN(pgtest.MD5User, pgtest.MD5Password, name))
	if err != nil {
		t.Fatalf("connecting to the new database: %v", err)
	}
	if got := queryString(ctx, t, conn, "SELECT current_database()"); got != name {
		t.Errorf("current_database() = %q, want %q", got, name)
	}
	if err := pg.CreateDatabase(ctx, name); err == nil {
		t.Error("creating the database a second time succeeded")
	}
}

func startPgBouncer(t *testing.T, opts pgtest.PgBouncerOptions) *pgtest.PgBouncer {
	t.Helper()
	b, err := pgtest.StartPgBouncer(testContext(t), opts)
	pgtest.Unavailable(t, err)
	t.Cleanup(func() {
		if err := b.Stop(); err != nil {
			t.Errorf("stopping pgbouncer: %v", err)
		}
	})
	return b
}

func TestPgBouncerLogins(t *testing.T) {
	for _, mode := range []string{"transaction", "session"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			b := startPgBouncer(t, pgtest.PgBouncerOptions{Upstream: pg.Addr(), PoolMode: mode})
			ctx := testContext(t)
			admin, err := connect(ctx, t, b.DSN(pgtest.SuperUser, "", "pgbouncer"))
			if err != nil {
				t.Fatalf("connecting to the admin console: %v", err)
			}
			rows, err := admin.Query(ctx, "SHOW CONFIG")
			if err != nil {
				t.Fatal(err)
			}
			config := map[string]string{}
			for rows.Next() {
				vals, err := rows.Values()
				if err != nil {
					t.Fatal(err)
				}
				if len(vals) >= 2 {
					key, _ := vals[0].(string)
					value, _ := vals[1].(string) // NULL for some unset settings
					config[key] = value
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if config["pool_mode"] != mode {
				t.Errorf("pool_mode = %q, want %q", config["pool_mode"], mode)
			}
			if b.PoolMode() != mode {
				t.Errorf("PoolMode() = %q, want %q", b.PoolMode(), mode)
			}
			checkLogins(t, b.Addr(), pgbouncerBadPassword)

			// pgbench, JDBC and libpq with PGOPTIONS send these; PgBouncer
			// rejects startup parameters it does not know unless told to
			// ignore them.
			dsn := b.DSN(pgtest.SuperUser, "", "") + "&extra_float_digits=3&options=-c%20work_mem%3D8MB"
			if _, err := connect(ctx, t, dsn); err != nil {
				t.Errorf("connecting with extra_float_digits and options: %v", err)
			}
		})
	}
}

func TestPgBouncerDefaultsToSession(t *testing.T) {
	b := startPgBouncer(t, pgtest.PgBouncerOptions{Upstream: pg.Addr()})
	if b.PoolMode() != "session" {
		t.Errorf("PoolMode() = %q, want session", b.PoolMode())
	}
}

// TestPgBouncerExtraUsers covers roles a test creates itself: PgBouncer only
// admits users listed in its auth_file, even under trust.
func TestPgBouncerExtraUsers(t *testing.T) {
	ctx := testContext(t)
	super, err := connect(ctx, t, pg.DSN(pgtest.SuperUser, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := super.Exec(ctx, "CREATE ROLE extrauser LOGIN PASSWORD 'extrapass'"); err != nil {
		t.Fatal(err)
	}
	// Registered before PgBouncer starts, so it runs after PgBouncer has
	// stopped and closed its server connections as extrauser.
	t.Cleanup(func() { exec(t, pg.DSN(pgtest.SuperUser, "", ""), "DROP ROLE IF EXISTS extrauser, unlisted") })

	b := startPgBouncer(t, pgtest.PgBouncerOptions{
		Upstream: pg.Addr(),
		Users:    map[string]string{"extrauser": "extrapass"},
	})
	conn, err := connect(ctx, t, b.DSN("extrauser", "extrapass", "postgres"))
	if err != nil {
		t.Fatalf("login as a listed extra user: %v", err)
	}
	if got := queryString(ctx, t, conn, "SELECT current_user"); got != "extrauser" {
		t.Errorf("current_user = %q, want extrauser", got)
	}

	if _, err := super.Exec(ctx, "CREATE ROLE unlisted LOGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(ctx, t, b.DSN("unlisted", "", "postgres")); err == nil {
		t.Error("login as a user missing from auth_file succeeded; PgBouncer behaviour changed, update the Users doc")
	}
}

func TestStopRemovesTempDirs(t *testing.T) {
	ctx := testContext(t)
	p, err := pgtest.StartPostgres(ctx, pgtest.Options{
		Settings: map[string]string{"max_connections": "20"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	conn, err := connect(ctx, t, p.DSN(pgtest.SuperUser, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	if got := queryString(ctx, t, conn, "SHOW max_connections"); got != "20" {
		t.Errorf("max_connections = %q, want the override 20", got)
	}

	b, err := pgtest.StartPgBouncer(ctx, pgtest.PgBouncerOptions{Upstream: p.Addr()})
	pgtest.Unavailable(t, err)
	defer b.Stop()
	// A client still connected must not stall either Stop.
	if _, err := connect(ctx, t, b.DSN(pgtest.SuperUser, "", "")); err != nil {
		t.Fatal(err)
	}

	for _, s := range []struct {
		name string
		dir  string
		stop func() error
		addr string
	}{
		{"pgbouncer", b.Dir(), b.Stop, b.Addr()},
		{"postgres", p.Dir(), p.Stop, p.Addr()},
	} {
		start := time.Now()
		if err := s.stop(); err != nil {
			t.Errorf("stopping %s: %v", s.name, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("stopping %s took %v; it should not wait for clients", s.name, d)
		}
		if _, err := os.Stat(s.dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s temp dir %s after Stop: %v, want it removed", s.name, s.dir, err)
		}
		if err := s.stop(); err != nil {
			t.Errorf("second Stop of %s: %v", s.name, err)
		}
		if _, err := connect(ctx, t, pgtest.ConnString(s.addr, pgtest.SuperUser, "", "")); err == nil {
			t.Errorf("%s still accepts connections after Stop", s.name)
		}
	}
}

func TestMissingBinaries(t *testing.T) {
	ctx := testContext(t)
	_, err := pgtest.StartPostgres(ctx, pgtest.Options{BinDir: t.TempDir()})
	if !errors.Is(err, pgtest.ErrNotInstalled) || !strings.Contains(err.Error(), "apt-get install") {
		t.Errorf("StartPostgres with an empty BinDir: %v, want ErrNotInstalled with an install hint", err)
	}
	_, err = pgtest.StartPgBouncer(ctx, pgtest.PgBouncerOptions{Upstream: pg.Addr(), Binary: "/nonexistent/pgbouncer"})
	if !errors.Is(err, pgtest.ErrNotInstalled) || !strings.Contains(err.Error(), "apt-get install -y pgbouncer") {
		t.Errorf("StartPgBouncer with a missing binary: %v, want ErrNotInstalled with an install hint", err)
	}
}

func TestConnString(t *testing.T) {
	got := pgtest.ConnString("127.0.0.1:5432", "u@x", "p:w/d", "my db")
	want := "postgres://u%40x:p%3Aw%2Fd@127.0.0.1:5432/my%20db?sslmode=disable"
	if got != want {
		t.Errorf("ConnString = %q, want %q", got, want)
	}
	if _, err := pgx.ParseConfig(got); err != nil {
		t.Errorf("pgx cannot parse %q: %v", got, err)
	}
	if got, want := pg.DSN("a", "", ""), "postgres://a@"+pg.Addr()+"/postgres?sslmode=disable"; got != want {
		t.Errorf("DSN without password/database = %q, want %q", got, want)
	}
}

// recorder is a testing.TB that notes how a test would end.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Fatalf(f string, a ...any) { r.fatal = fmt.Sprintf(f, a...); runtime.Goexit() }
func (r *recorder) Skipf(f string, a ...any)  { r.skip = fmt.Sprintf(f, a...); runtime.Goexit() }

// A server that is not installed skips a test outside CI; any other
// failure to start fails it everywhere, so that a broken harness cannot
// hide the tests behind skips.
func TestUnavailableSkipsOnlyWhatIsNotInstalled(t *testing.T) {
	notInstalled := fmt.Errorf("pgbouncer %w", pgtest.ErrNotInstalled)
	broken := errors.New("pgbouncer exited: bad config")
	for _, c := range []struct {
		ci       string
		err      error
		wantSkip bool
	}{
		{"", notInstalled, true},
		{"true", notInstalled, false},
		{"", broken, false},
		{"true", broken, false},
	} {
		t.Setenv("CI", c.ci)
		r := &recorder{}
		done := make(chan struct{})
		go func() { // Fatalf and Skipf end the goroutine, as testing's do
			defer close(done)
			pgtest.Unavailable(r, c.err)
		}()
		<-done
		if skipped := r.skip != ""; skipped != c.wantSkip || skipped == (r.fatal != "") {
			t.Errorf("CI=%q, %v: skip %q, fatal %q; want skip=%v", c.ci, c.err, r.skip, r.fatal, c.wantSkip)
		}
	}
}

// SetUpstream repoints PgBouncer, as a failover runbook does: new server
// connections go to the new upstream once RECONNECT let go of the old.
func TestPgBouncerSetUpstream(t *testing.T) {
	ctx := testContext(t)
	other, err := pgtest.StartPostgres(ctx, pgtest.Options{})
	pgtest.Unavailable(t, err)
	t.Cleanup(func() { other.Stop() })
	b := startPgBouncer(t, pgtest.PgBouncerOptions{Upstream: pg.Addr()})
	port := func() int {
		t.Helper()
		conn, err := connect(ctx, t, b.DSN(pgtest.SuperUser, "", "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var p int
		if err := conn.QueryRow(ctx, "SELECT current_setting('port')::int", pgx.QueryExecModeSimpleProtocol).Scan(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if got := port(); got != pg.Port() {
		t.Fatalf("before: through port %d, want %d", got, pg.Port())
	}
	if err := b.SetUpstream(ctx, other.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := b.Admin(ctx, "RECONNECT"); err != nil {
		t.Fatal(err)
	}
	if got := port(); got != other.Port() {
		t.Fatalf("after: through port %d, want %d", got, other.Port())
	}
	if err := b.SetUpstream(ctx, "nowhere"); err == nil || !strings.Contains(err.Error(), `pgbouncer upstream "nowhere"`) {
		t.Errorf("a bad upstream: %v", err)
	}
	if err := b.Admin(ctx, "FROBNICATE"); err == nil || !strings.Contains(err.Error(), "pgbouncer FROBNICATE") {
		t.Errorf("a bad command: %v", err)
	}
}
