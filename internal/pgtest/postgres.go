package pgtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options configures StartPostgres.
type Options struct {
	// BinDir holds initdb and postgres. "" means $PGCHAOS_PG_BINDIR, then
	// `pg_config --bindir`, then the newest /usr/lib/postgresql/*/bin.
	BinDir string
	// Settings are extra postgresql.conf settings; they override the
	// defaults, e.g. {"max_connections": "20"}.
	Settings map[string]string
	// TLS makes the server accept TLS (ssl=on) with a self-signed
	// certificate that pgtest generates for 127.0.0.1 and localhost;
	// CACertPEM and CACertFile give clients what they need to verify it.
	// Plaintext connections stay allowed, so DSN (sslmode=disable) works
	// as before and clients choose TLS with their own sslmode. The ssl,
	// ssl_cert_file and ssl_key_file settings are then managed by pgtest.
	TLS bool
	// Logger receives progress messages; nil discards them.
	Logger *slog.Logger
}

// Timeouts for the phases of StartPostgres and Stop.
const (
	pgReadyTimeout = 30 * time.Second
	pgStopGrace    = 10 * time.Second
)

// Postgres is a throwaway PostgreSQL server, alone (StartPostgres) or a node
// of a Cluster. Stop it when done.
type Postgres struct {
	// name is the node's name in a Cluster; "primary" for StartPostgres.
	name string
	// inCluster makes messages name the node: a cluster has several.
	inCluster bool
	binDir    string
	tmp       *tempDir
	dir       string
	dataDir   string
	logPath   string
	port      int
	as        runAs
	log       *slog.Logger
	life      lifecycle
	// certPEM is the server's certificate, nil without Options.TLS.
	certPEM []byte
	// conf is what pgtest.conf holds, port included. Rewind writes it back
	// because pg_rewind copies the source's configuration files.
	conf map[string]string
	// restoredFrom is the backup Cluster.Restore made the node from, nil
	// for the other nodes.
	restoredFrom *Backup

	// ops serialises the operations that start or stop the postmaster
	// (Start, Crash, Rewind, Stop), which take seconds; mu guards the
	// fields below and is only held briefly, so Running never waits.
	ops     sync.Mutex
	mu      sync.Mutex
	proc    *proc // the current postmaster, nil before the first start
	stopped bool  // Stop ran: the data directory is gone
}

// StartPostgres creates a fresh cluster in a temp dir and starts it on a
// free port of 127.0.0.1, with the roles SuperUser, MD5User and SCRAMUser.
// ctx bounds only the startup; the server runs until Stop.
func StartPostgres(ctx context.Context, opts Options) (*Postgres, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	settings, err := postgresSettings(opts.Settings, opts.TLS)
	if err != nil {
		return nil, err
	}
	binDir, err := resolveBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	as, err := serverUser()
	if err != nil {
		return nil, err
	}
	p, err := newPostgres(binDir, as, "postgres", logger)
	if err != nil {
		return nil, err
	}
	started := false
	defer func() {
		if !started {
			// Cleanup failures would only hide the error that matters.
			_ = p.Stop()
		}
	}()

	if err := p.initDataDir(ctx); err != nil {
		return nil, err
	}
	if opts.TLS {
		certPEM, tlsConf, err := as.writeServerCert(p.dir)
		if err != nil {
			return nil, err
		}
		p.certPEM = certPEM
		maps.Copy(settings, tlsConf)
	}
	if err := p.startServer(ctx, settings); err != nil {
		return nil, err
	}
	if err := p.createRoles(ctx); err != nil {
		return nil, err
	}
	started = true
	track(p)
	p.log.Info("postgres ready", "addr", p.Addr())
	return p, nil
}

// newPostgres prepares a node's temp dir (named after kind) without
// creating a data directory in it.
func newPostgres(binDir string, as runAs, kind string, logger *slog.Logger) (*Postgres, error) {
	tmp, err := as.makeTempDir(kind)
	if err != nil {
		return nil, fmt.Errorf("preparing %s: %w", kind, err)
	}
	dir := tmp.path
	return &Postgres{
		name:    "primary",
		binDir:  binDir,
		tmp:     tmp,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "postgres.log"),
		as:      as,
		log:     logger.With("component", "pgtest.postgres", "dir", dir),
	}, nil
}

// initDataDir runs initdb and writes pgtest's pg_hba.conf.
func (p *Postgres) initDataDir(ctx context.Context) error {
	p.log.Debug("initdb", "bindir", p.binDir, "os_user", p.as.name)
	if err := p.initdb(ctx); err != nil {
		return err
	}
	return p.writeHBA()
}

// label is how messages name the server: which node, in a cluster.
func (p *Postgres) label() string {
	if p.inCluster {
		return "postgres " + p.name
	}
	return "postgres"
}

// Host returns the address the server listens on, always 127.0.0.1.
func (p *Postgres) Host() string { return Host }

// Port returns the TCP port the server listens on.
func (p *Postgres) Port() int { return p.port }

// Addr returns host:port.
func (p *Postgres) Addr() string { return Host + ":" + strconv.Itoa(p.port) }

// BinDir returns the directory initdb and postgres were run from, which also
// holds psql and pgbench of the same version.
func (p *Postgres) BinDir() string { return p.binDir }

// Dir returns the temp dir holding the data dir, log and unix socket.
func (p *Postgres) Dir() string { return p.dir }

// DataDir returns the cluster's data directory.
func (p *Postgres) DataDir() string { return p.dataDir }

// LogFile returns the path of the server log (deleted by Stop).
func (p *Postgres) LogFile() string { return p.logPath }

// DSN returns a URL connection string for this server.
func (p *Postgres) DSN(user, password, database string) string {
	return ConnString(p.Addr(), user, password, database)
}

// ConnString returns a connection string like DSN but for another address,
// typically a proxy or PgBouncer in front of this server.
func (p *Postgres) ConnString(addr, user, password, database string) string {
	return ConnString(addr, user, password, database)
}

// CreateDatabase creates database name, owned by SuperUser.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, p.DSN(SuperUser, "", "postgres"))
	if err != nil {
		return fmt.Errorf("connecting to create database %q: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("creating database %q: %w", name, err)
	}
	return nil
}

// Stop shuts the server down (fast shutdown; after 10 s, SIGKILL to the
// postmaster and every process it forked) and
// removes its temp dir. It is idempotent and safe for concurrent use, and
// works on a node that crashed or was crashed: nothing of it stays behind.
func (p *Postgres) Stop() error {
	return p.life.do(func() error {
		p.ops.Lock()
		defer p.ops.Unlock()
		p.mu.Lock()
		p.stopped = true
		pr := p.proc
		p.mu.Unlock()
		var errs []error
		if pr != nil {
			if _, err := stopPostmaster(pr, syscall.SIGINT, pgStopGrace); err != nil {
				errs = append(errs, fmt.Errorf("stopping %s: %w", p.label(), err))
			}
		}
		// A postmaster someone else started on this data directory (a
		// drill's runbook with pg_ctl) goes too, before its files do.
		if err := killStrayPostmaster(p.dataDir); err != nil {
			errs = append(errs, fmt.Errorf("stopping a server %s did not start on its data directory: %w", p.label(), err))
		}
		if err := p.tmp.remove(); err != nil {
			errs = append(errs, fmt.Errorf("cleaning up after %s: %w", p.label(), err))
		}
		untrack(p)
		p.log.Debug("postgres stopped")
		return errors.Join(errs...)
	})
}

func (p *Postgres) initdb(ctx context.Context) error {
	cmd := p.as.commandContext(ctx, p.dir, filepath.Join(p.binDir, "initdb"),
		"-D", p.dataDir,
		"-U", SuperUser,
		"--auth=trust",
		"-E", "UTF8",
		// C collation: any encoding is allowed with it, whatever locales the
		// machine has, and it is the fastest.
		"--locale=C",
		"--no-sync",
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return fmt.Errorf("running initdb as OS user %s: %w\n%s", p.as.name, err, strings.TrimSpace(string(out)))
	}
	// Our settings live in their own file so a port retry can rewrite them
	// without touching what initdb generated.
	conf := filepath.Join(p.dataDir, "postgresql.conf")
	f, err := os.OpenFile(conf, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("opening %s to include pgtest settings: %w", conf, err)
	}
	_, err = f.WriteString("\n# Added by pgtest; later settings win.\ninclude 'pgtest.conf'\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("appending include to %s: %w", conf, err)
	}
	return nil
}

// writeHBA replaces initdb's pg_hba.conf. Order matters: the first matching
// line wins, so the password users come before the catch-all trust line.
func (p *Postgres) writeHBA() error {
	hba := strings.Join([]string{
		"# TYPE  DATABASE     USER       ADDRESS       METHOD",
		"local   all          all                      trust",
		"host    all          " + MD5User + "    127.0.0.1/32  md5",
		"host    all          " + SCRAMUser + "  127.0.0.1/32  scram-sha-256",
		"host    all          all        127.0.0.1/32  trust",
		"host    replication  all        127.0.0.1/32  trust",
	}, "\n") + "\n"
	return p.as.writeFile(filepath.Join(p.dataDir, "pg_hba.conf"), hba)
}

// startServer starts postgres, retrying on a new port when it loses the race
// for the one FreePort returned.
func (p *Postgres) startServer(ctx context.Context, settings map[string]string) error {
	return onFreePort(p.log, func(port int) error {
		p.port = port
		conf := maps.Clone(settings)
		conf["port"] = strconv.Itoa(port)
		conf["unix_socket_directories"] = p.dir
		p.conf = conf
		if err := p.writeConf(); err != nil {
			return err
		}
		return p.launch(ctx)
	})
}

// writeConf writes p.conf to pgtest.conf.
func (p *Postgres) writeConf() error {
	return p.as.writeFile(filepath.Join(p.dataDir, "pgtest.conf"), renderConf(p.conf))
}

// launch starts the postmaster on p.port with the configuration on disk
// and waits until it accepts connections.
func (p *Postgres) launch(ctx context.Context) error {
	cmd := p.as.command(p.dir, filepath.Join(p.binDir, "postgres"), "-D", p.dataDir)
	// The postmaster's children each call setsid(): its process group is
	// not all of it, so a failed start is stopped as a crash is.
	stop := func(pr *proc) error {
		_, err := stopPostmaster(pr, syscall.SIGINT, 2*time.Second)
		return err
	}
	pr, err := launch(ctx, p.label(), cmd, p.logPath, p.port, pgReadyTimeout, stop, p.probe)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.proc = pr
	p.mu.Unlock()
	p.log.Debug("postgres started", "pid", cmd.Process.Pid, "port", p.port)
	return nil
}

// probe checks that our postmaster, not some other server that happened to
// hold the port, accepts connections.
func (p *Postgres) probe(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, p.DSN(SuperUser, "", "postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var dataDir string
	if err := conn.QueryRow(ctx, "SELECT current_setting('data_directory')", pgx.QueryExecModeSimpleProtocol).Scan(&dataDir); err != nil {
		return fmt.Errorf("reading data_directory: %w", err)
	}
	if dataDir != p.dataDir {
		return fmt.Errorf("%w: its data_directory is %q", errWrongServer, dataDir)
	}
	return nil
}

// createRoles creates the password roles. password_encryption decides how
// each password is stored, and so which method the server can use for it.
func (p *Postgres) createRoles(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, p.DSN(SuperUser, "", "postgres"))
	if err != nil {
		return fmt.Errorf("connecting to create roles: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, r := range []struct{ name, password, encryption string }{
		{MD5User, MD5Password, "md5"},
		{SCRAMUser, SCRAMPassword, "scram-sha-256"},
	} {
		sql := fmt.Sprintf("SET password_encryption = %s; CREATE ROLE %s LOGIN SUPERUSER PASSWORD %s",
			quoteLiteral(r.encryption), pgx.Identifier{r.name}.Sanitize(), quoteLiteral(r.password))
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("creating role %s with %s password: %w", r.name, r.encryption, err)
		}
	}
	return nil
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// defaultSettings favour speed over durability (the data is thrown away)
// and leave room for the connection- and 2PC-heavy chaos scenarios.
var defaultSettings = map[string]string{
	"listen_addresses":          Host,
	"max_connections":           "200",
	"max_prepared_transactions": "50",
	"fsync":                     "off",
	"synchronous_commit":        "off",
	"full_page_writes":          "off",
	"wal_level":                 "replica",
	"max_wal_senders":           "10",
	"shared_buffers":            "128MB",
	"log_min_messages":          "warning",
}

var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// postgresSettings merges user settings over the defaults. port and
// unix_socket_directories are owned by the harness: the port is retried on
// conflict and the socket must live in the private temp dir. With TLS, so
// are the settings that choose the certificate.
func postgresSettings(extra map[string]string, tls bool) (map[string]string, error) {
	s := maps.Clone(defaultSettings)
	for k, v := range extra {
		if !settingName.MatchString(k) || strings.ContainsAny(v, "\r\n") {
			return nil, fmt.Errorf("invalid postgresql.conf setting %q = %q", k, v)
		}
		switch strings.ToLower(k) {
		case "port", "unix_socket_directories":
			return nil, fmt.Errorf("setting %q is managed by pgtest and cannot be overridden", k)
		}
		if tls && slices.Contains(tlsSettings, strings.ToLower(k)) {
			return nil, fmt.Errorf("setting %q is managed by pgtest when Options.TLS is set and cannot be overridden", k)
		}
		s[k] = v
	}
	return s, nil
}

func renderConf(settings map[string]string) string {
	var b strings.Builder
	b.WriteString("# Written by pgtest.\n")
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&b, "%s = %s\n", k, quoteConf(settings[k]))
	}
	return b.String()
}

// resolveBinDir finds initdb and postgres. An explicit choice must work;
// the automatic ones fall through, because pg_config often comes from
// libpq-dev of a different major version than the installed server.
func resolveBinDir(explicit string) (string, error) {
	if explicit != "" {
		if err := checkBinDir(explicit); err != nil {
			return "", fmt.Errorf("Options.BinDir: %w", err)
		}
		return explicit, nil
	}
	if env := os.Getenv("PGCHAOS_PG_BINDIR"); env != "" {
		if err := checkBinDir(env); err != nil {
			return "", fmt.Errorf("$PGCHAOS_PG_BINDIR: %w", err)
		}
		return env, nil
	}
	var candidates []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	candidates = append(candidates, installedBinDirs()...)
	for _, dir := range candidates {
		if checkBinDir(dir) == nil {
			return dir, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, postgres) %w: looked in `pg_config --bindir` and /usr/lib/postgresql/*/bin; "+
		"install with `apt-get install -y postgresql` or point $PGCHAOS_PG_BINDIR at the bin directory", ErrNotInstalled)
}

// installedBinDirs lists Debian-style server installs, newest major first.
func installedBinDirs() []string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	return newestFirst(dirs)
}

// newestFirst sorts .../<version>/bin paths by version, numerically, so that
// 10 beats 9.6.
func newestFirst(dirs []string) []string {
	version := func(dir string) []int {
		var v []int
		for _, part := range strings.Split(filepath.Base(filepath.Dir(dir)), ".") {
			n, _ := strconv.Atoi(part)
			v = append(v, n)
		}
		return v
	}
	slices.SortStableFunc(dirs, func(a, b string) int { return slices.Compare(version(b), version(a)) })
	return dirs
}

func checkBinDir(dir string) error {
	for _, name := range []string{"initdb", "postgres"} {
		path := filepath.Join(dir, name)
		st, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("%s %w (apt-get install -y postgresql): %w", path, ErrNotInstalled, err)
		}
		if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s is not an executable file: %w", path, ErrNotInstalled)
		}
	}
	return nil
}
