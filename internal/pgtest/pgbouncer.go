package pgtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PgBouncerOptions configures StartPgBouncer.
type PgBouncerOptions struct {
	// Upstream is host:port of Postgres, or of a proxy in front of it.
	// Required.
	Upstream string
	// PoolMode is "session" (default), "transaction" or "statement".
	PoolMode string
	// Binary is the pgbouncer executable; "" means a PATH lookup of
	// "pgbouncer", then /usr/sbin/pgbouncer.
	Binary string
	// Settings are extra [pgbouncer] settings; they override the defaults.
	Settings map[string]string
	// Users adds auth_file entries (name -> plaintext password). PgBouncer
	// rejects users missing from auth_file even where hba says trust, so
	// roles a test creates must be listed here to log in through it.
	Users map[string]string
	// Logger receives progress messages; nil discards them.
	Logger *slog.Logger
}

const (
	pgbReadyTimeout = 15 * time.Second
	pgbStopGrace    = 5 * time.Second
)

// PgBouncer is a running throwaway PgBouncer. Stop it when done.
type PgBouncer struct {
	tmp      *tempDir
	dir      string
	logPath  string
	pidPath  string
	port     int
	poolMode string
	as       runAs
	proc     *proc
	log      *slog.Logger
	life     lifecycle
	// settings are the [pgbouncer] section, kept to rewrite the file.
	settings map[string]string
}

// StartPgBouncer starts PgBouncer on a free port of 127.0.0.1 in front of
// opts.Upstream, routing every database name there and accepting SuperUser
// (trust), MD5User (md5) and SCRAMUser (scram-sha-256). It returns once a
// login through it to the upstream works. ctx bounds only the startup.
func StartPgBouncer(ctx context.Context, opts PgBouncerOptions) (*PgBouncer, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	upHost, upPort, err := net.SplitHostPort(opts.Upstream)
	if err != nil {
		return nil, fmt.Errorf("parsing PgBouncer upstream %q: %w", opts.Upstream, err)
	}
	poolMode := opts.PoolMode
	if poolMode == "" {
		poolMode = "session"
	}
	switch poolMode {
	case "session", "transaction", "statement":
	default:
		return nil, fmt.Errorf("invalid PgBouncer pool mode %q: want session, transaction or statement", opts.PoolMode)
	}
	binary, err := resolvePgBouncer(opts.Binary)
	if err != nil {
		return nil, err
	}
	as, err := serverUser()
	if err != nil {
		return nil, err
	}
	tmp, err := as.makeTempDir("pgbouncer")
	if err != nil {
		return nil, fmt.Errorf("preparing pgbouncer: %w", err)
	}
	dir := tmp.path
	b := &PgBouncer{
		tmp:      tmp,
		dir:      dir,
		logPath:  filepath.Join(dir, "pgbouncer.log"),
		pidPath:  filepath.Join(dir, "pgbouncer.pid"),
		poolMode: poolMode,
		as:       as,
		log:      logger.With("component", "pgtest.pgbouncer", "dir", dir),
	}
	started := false
	defer func() {
		if !started {
			_ = b.Stop()
		}
	}()

	settings := map[string]string{
		"listen_addr": Host,
		// Empty disables the unix socket: clients use TCP only, and the
		// default location, the shared /tmp, would keep a stale socket
		// every time PgBouncer is killed rather than stopped.
		"unix_socket_dir": "",
		"auth_type":       "hba",
		"auth_hba_file":   filepath.Join(dir, "hba.conf"),
		"auth_file":       filepath.Join(dir, "userlist.txt"),
		"pidfile":         b.pidPath,
		"pool_mode":       poolMode,
		"max_client_conn": "500",
		// Above the default 20 so pgbench -c 32 style runs do not queue
		// in PgBouncer instead of exercising the upstream.
		"default_pool_size": "40",
		// Clients (pgbench, JDBC, psql with PGOPTIONS) send these and
		// PgBouncer refuses unknown startup parameters by default.
		"ignore_startup_parameters": "extra_float_digits,options",
		"admin_users":               SuperUser,
	}
	for k, v := range opts.Settings {
		if !settingName.MatchString(k) || strings.ContainsAny(v, "\r\n") {
			return nil, fmt.Errorf("invalid pgbouncer setting %q = %q", k, v)
		}
		switch k {
		case "listen_port", "pidfile":
			return nil, fmt.Errorf("pgbouncer setting %q is managed by pgtest and cannot be overridden", k)
		}
		settings[k] = v
	}
	users := map[string]string{SuperUser: "", MD5User: MD5Password, SCRAMUser: SCRAMPassword}
	maps.Copy(users, opts.Users)
	if err := b.writeAuthFiles(users); err != nil {
		return nil, err
	}
	databases := fmt.Sprintf("* = host=%s port=%s\n", upHost, upPort)

	err = onFreePort(b.log, func(port int) error {
		b.port = port
		settings["listen_port"] = strconv.Itoa(port)
		return b.startOnce(ctx, binary, databases, settings)
	})
	if err != nil {
		return nil, err
	}
	started = true
	track(b)
	b.log.Info("pgbouncer ready", "addr", b.Addr(), "upstream", opts.Upstream, "pool_mode", poolMode)
	return b, nil
}

// Host returns the address PgBouncer listens on, always 127.0.0.1.
func (b *PgBouncer) Host() string { return Host }

// Port returns the TCP port PgBouncer listens on.
func (b *PgBouncer) Port() int { return b.port }

// Addr returns host:port.
func (b *PgBouncer) Addr() string { return Host + ":" + strconv.Itoa(b.port) }

// DSN returns a URL connection string that goes through PgBouncer.
func (b *PgBouncer) DSN(user, password, database string) string {
	return ConnString(b.Addr(), user, password, database)
}

// PoolMode returns the effective pool mode.
func (b *PgBouncer) PoolMode() string { return b.poolMode }

// Dir returns PgBouncer's temp dir (config, auth files, log).
func (b *PgBouncer) Dir() string { return b.dir }

// LogFile returns the path of PgBouncer's log (deleted by Stop).
func (b *PgBouncer) LogFile() string { return b.logPath }

// Stop shuts PgBouncer down and removes its temp dir. It is idempotent and
// safe for concurrent use.
func (b *PgBouncer) Stop() error {
	return b.life.do(func() error {
		var errs []error
		if b.proc != nil {
			// SIGTERM is an immediate shutdown in 1.18 (SIGINT would wait
			// for clients to let go of their servers). From 1.23 it waits
			// for clients to disconnect; the SIGKILL after the grace
			// period bounds that.
			if err := b.proc.stop(syscall.SIGTERM, pgbStopGrace); err != nil {
				errs = append(errs, fmt.Errorf("stopping pgbouncer: %w", err))
			}
		}
		if err := b.tmp.remove(); err != nil {
			errs = append(errs, fmt.Errorf("cleaning up after pgbouncer: %w", err))
		}
		untrack(b)
		b.log.Debug("pgbouncer stopped")
		return errors.Join(errs...)
	})
}

// writeAuthFiles writes PgBouncer's own hba and auth_file. Passwords are
// plaintext because PgBouncer must log in to the upstream as the client's
// user: with plaintext it can answer both the md5 and the SCRAM challenge,
// whereas an md5 hash in auth_file cannot do SCRAM.
func (b *PgBouncer) writeAuthFiles(users map[string]string) error {
	hba := strings.Join([]string{
		"host all " + MD5User + " 127.0.0.1/32 md5",
		"host all " + SCRAMUser + " 127.0.0.1/32 scram-sha-256",
		"host all all 127.0.0.1/32 trust",
	}, "\n") + "\n"
	if err := b.as.writeFile(filepath.Join(b.dir, "hba.conf"), hba); err != nil {
		return err
	}
	var list strings.Builder
	for _, name := range slices.Sorted(maps.Keys(users)) {
		fmt.Fprintf(&list, "%s %s\n", quoteUserlist(name), quoteUserlist(users[name]))
	}
	return b.as.writeFile(filepath.Join(b.dir, "userlist.txt"), list.String())
}

func quoteUserlist(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// writeIni writes pgbouncer.ini with databases as its [databases] section.
func (b *PgBouncer) writeIni(databases string, settings map[string]string) (string, error) {
	var ini strings.Builder
	ini.WriteString("; Written by pgtest.\n[databases]\n")
	ini.WriteString(databases)
	ini.WriteString("\n[pgbouncer]\n")
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		// PgBouncer reads the value verbatim to end of line; it has no
		// quoting, so an empty value is written as nothing at all.
		fmt.Fprintf(&ini, "%s = %s\n", k, settings[k])
	}
	iniPath := filepath.Join(b.dir, "pgbouncer.ini")
	return iniPath, b.as.writeFile(iniPath, ini.String())
}

// SetUpstream points every database at upstream (host:port), as an
// operator repoints [databases] in a failover, and has PgBouncer RELOAD:
// new server connections go there, and those to the old upstream are
// closed once their clients let go of them (RECONNECT closes them sooner).
func (b *PgBouncer) SetUpstream(ctx context.Context, upstream string) error {
	host, port, err := net.SplitHostPort(upstream)
	if err != nil {
		return fmt.Errorf("pgbouncer upstream %q: %w", upstream, err)
	}
	if _, err := b.writeIni(fmt.Sprintf("* = host=%s port=%s\n", host, port), b.settings); err != nil {
		return err
	}
	return b.Admin(ctx, "RELOAD")
}

// Admin runs a command on PgBouncer's admin console (RELOAD, PAUSE,
// RESUME, RECONNECT, ...), which speaks only the simple query protocol.
func (b *PgBouncer) Admin(ctx context.Context, command string) error {
	conn, err := pgx.Connect(ctx, b.DSN(SuperUser, "", "pgbouncer"))
	if err != nil {
		return fmt.Errorf("pgbouncer admin console: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, command, pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("pgbouncer %s: %w", command, err)
	}
	return nil
}

func (b *PgBouncer) startOnce(ctx context.Context, binary, databases string, settings map[string]string) error {
	b.settings = settings
	iniPath, err := b.writeIni(databases, settings)
	if err != nil {
		return err
	}

	// Foreground, and no logfile setting: stderr is captured instead,
	// since a logfile would duplicate every line on stderr, and -q would
	// also hide errors raised before the config (and logfile) is loaded.
	cmd := b.as.command(b.dir, binary, iniPath)
	// SIGTERM: in 1.18 SIGINT waits for clients to let go.
	stop := func(pr *proc) error { return pr.stop(syscall.SIGTERM, 2*time.Second) }
	pr, err := launch(ctx, "pgbouncer", cmd, b.logPath, b.port, pgbReadyTimeout, stop, b.probe)
	if err != nil {
		return err
	}
	b.proc = pr
	b.log.Debug("pgbouncer started", "pid", cmd.Process.Pid, "port", b.port)
	return nil
}

// probe checks, cheapest first, that the port is open, that the listener is
// our PgBouncer (its admin console reports our pidfile), and that a real
// login through it to the upstream works.
func (b *PgBouncer) probe(ctx context.Context) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", b.Addr())
	if err != nil {
		return err
	}
	c.Close()

	admin, err := pgx.Connect(ctx, b.DSN(SuperUser, "", "pgbouncer"))
	if err != nil {
		return fmt.Errorf("connecting to the admin console: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	pidfile, err := showConfig(ctx, admin, "pidfile")
	if err != nil {
		// Another server on the port, e.g. a Postgres, has no such database
		// or command; ours would have answered.
		return fmt.Errorf("%w: SHOW CONFIG on its admin console failed: %w", errWrongServer, err)
	}
	if pidfile != b.pidPath {
		return fmt.Errorf("%w: its pidfile is %q", errWrongServer, pidfile)
	}

	conn, err := pgx.Connect(ctx, b.DSN(SuperUser, "", "postgres"))
	if err != nil {
		return fmt.Errorf("logging in through pgbouncer: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Simple protocol: named prepared statements do not survive transaction
	// pooling in PgBouncer < 1.21.
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol).Scan(&one); err != nil {
		return fmt.Errorf("querying upstream through pgbouncer: %w", err)
	}
	return nil
}

// showConfig reads one setting from the admin console, which speaks only
// the simple query protocol.
func showConfig(ctx context.Context, admin *pgx.Conn, key string) (string, error) {
	rows, err := admin.Query(ctx, "SHOW CONFIG", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return "", err
		}
		if len(vals) >= 2 && fmt.Sprint(vals[0]) == key {
			return fmt.Sprint(vals[1]), nil
		}
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("SHOW CONFIG has no %q", key)
}

func resolvePgBouncer(explicit string) (string, error) {
	const hint = "install with `apt-get install -y pgbouncer`"
	if explicit != "" {
		path, err := exec.LookPath(explicit)
		if err != nil {
			return "", fmt.Errorf("PgBouncerOptions.Binary %q: %w (%s): %w", explicit, ErrNotInstalled, hint, err)
		}
		return path, nil
	}
	if path, err := exec.LookPath("pgbouncer"); err == nil {
		return path, nil
	}
	// root's PATH normally has /usr/sbin, but sudo/CI environments often
	// trim it.
	if path, err := exec.LookPath("/usr/sbin/pgbouncer"); err == nil {
		return path, nil
	}
	return "", fmt.Errorf("pgbouncer %w: not in $PATH nor /usr/sbin; %s", ErrNotInstalled, hint)
}
