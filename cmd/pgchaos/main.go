// Command pgchaos is a PostgreSQL wire-protocol chaos proxy.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/pgchaos/pgchaos/control"
	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/proxy"
	"github.com/pgchaos/pgchaos/server"
)

const usage = `pgchaos — a PostgreSQL wire-protocol chaos proxy

Usage:
  pgchaos proxy --listen 127.0.0.1:6543 --upstream 127.0.0.1:5432 [--name pg] [--api 127.0.0.1:8474]
  pgchaos proxy --config FILE
  pgchaos fault add|list|rm|reset [--api ADDR] ...
  pgchaos sessions [--kill ID]
  pgchaos events
  pgchaos validate EXPERIMENT.yaml... [--var KEY=VALUE]...
  pgchaos run EXPERIMENT.yaml [--embedded] [--report-dir DIR] [--junit FILE] [--json FILE]
  pgchaos explore EXPERIMENT.yaml [--budget 10m] [--report-dir DIR] [--parallel N]
  pgchaos demo [NAME | --list]
  pgchaos healthcheck [--api ADDR]
  pgchaos version [--json]
  pgchaos completion bash|zsh|fish
  pgchaos [-host localhost] [-port 8474] [-config FILE]   toxiproxy-server's flags: the API alone, as toxiproxy-server

Run "pgchaos COMMAND --help" for a command's flags.
`

// commands are the ones run() knows.
var commands = []string{"proxy", "fault", "sessions", "events", "run", "explore", "demo", "validate", "healthcheck", "version", "completion", "help"}

// errUsage marks bad flags or configuration: exit status 2.
type errUsage struct{ err error }

func (e errUsage) Error() string { return e.err.Error() }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if isToxiproxyServerArgs(args) {
		// No arguments, or toxiproxy-server's flags: the API alone, as
		// toxiproxy-server runs (an image or Testcontainers module made
		// for toxiproxy starts pgchaos this way).
		return exitCode(runToxiproxyServer(args, stdout, stderr), stderr)
	}
	var err error
	switch args[0] {
	case "proxy":
		err = runProxy(args[1:], stderr)
	case "fault", "faults":
		err = runFault(args[1:], stdout, stderr)
	case "sessions":
		err = runSessions(args[1:], stdout, stderr)
	case "events":
		err = runEvents(args[1:], stdout, stderr)
	case "run":
		err = runRun(args[1:], stdout, stderr)
	case "explore":
		err = runExplore(args[1:], stdout, stderr)
	case "demo":
		err = runDemo(args[1:], stdout, stderr)
	case "validate":
		err = runValidate(args[1:], stdout, stderr)
	case "healthcheck":
		err = runHealthcheck(args[1:], stdout, stderr)
	case "version", "--version":
		err = runVersion(args[1:], stdout, stderr)
	case "completion":
		err = runCompletion(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		if len(args) > 1 && args[0] == "help" && slices.Contains(commands, args[1]) {
			// pgchaos help CMD is pgchaos CMD --help.
			return run([]string{args[1], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
	default:
		hint := "try: pgchaos --help"
		if s := experiments.Suggest(args[0], commands); s != "" {
			hint = fmt.Sprintf("did you mean %q? pgchaos --help lists them", s)
		}
		err = errUsage{fmt.Errorf("unknown command %q (%s)", args[0], hint)}
	}
	return exitCode(err, stderr)
}

// exitCode prints err and says the exit status it means: 0 for none (or a
// help request), an exitError's own, 2 for bad usage, else 1.
func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintln(stderr, "pgchaos:", err)
	var ue errUsage
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func runProxy(args []string, stderr io.Writer) error {
	fs := newFlagSet("pgchaos proxy", stderr, "")
	var (
		cfg        server.Config
		one        server.ProxyConfig
		configFile string
		embedded   bool
		pgBinDir   string
		logLevel   string
		logFormat  string
	)
	fs.StringVar(&one.Name, "name", "pg", "name of the proxy (with --listen/--upstream)")
	fs.StringVar(&one.Listen, "listen", "", "address to accept PostgreSQL clients on, e.g. 127.0.0.1:6543")
	fs.StringVar(&one.Upstream, "upstream", "", "address of the PostgreSQL server or PgBouncer to relay to")
	fs.StringVar(&configFile, "config", "", "YAML file with several named proxies (instead of --listen/--upstream)")
	fs.BoolVar(&embedded, "embedded", false, "start a throwaway local PostgreSQL and relay to it (instead of --upstream)")
	fs.StringVar(&pgBinDir, "pg-bindir", "", "PostgreSQL binaries for --embedded (default: pg_config --bindir)")
	fs.StringVar(&cfg.API, "api", server.DefaultAPI, "address of the control API (health, sessions, metrics)")
	fs.BoolVar(&cfg.AllowRemoteAPI, "api-allow-remote", false, "allow the control API on a non-loopback address (needs a token or --api-insecure)")
	fs.StringVar(&cfg.APITokenFile, "api-token-file", "", "file holding the bearer token the control API requires (default: $"+control.EnvToken+"; neither: no token)")
	fs.BoolVar(&cfg.APIInsecure, "api-insecure", false, "serve a non-loopback control API without a token (e.g. for toxiproxy clients in a container)")
	fs.StringVar(&cfg.APITLSCert, "api-tls-cert", "", "PEM certificate to serve the control API over HTTPS")
	fs.StringVar(&cfg.APITLSKey, "api-tls-key", "", "PEM private key for --api-tls-cert")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "also serve GET /metrics alone on this address, without a token (e.g. 0.0.0.0:9187 for Prometheus)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate for terminating client TLS")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key for --tls-cert")
	fs.BoolVar(&cfg.UpstreamTLS, "upstream-tls", false, "connect to the upstream with TLS")
	fs.StringVar(&cfg.UpstreamCA, "upstream-ca", "", "CA bundle to verify the upstream's certificate (default: not verified, like sslmode=require)")
	fs.IntVar(&cfg.MaxMessageSize, "max-message-size", 1<<30, "largest protocol message accepted, in bytes")
	fs.IntVar(&cfg.MaxSessions, "max-sessions", proxy.DefaultMaxSessions, "most sessions relayed at once, all proxies together; clients beyond get FATAL 53300")
	fs.DurationVar((*time.Duration)(&cfg.StartupTimeout), "startup-timeout", proxy.DefaultStartupTimeout, "longest a client may take over its startup phase (TLS/GSS negotiation and StartupMessage)")
	fs.StringVar(&cfg.Relay, "relay", "loop", "how sessions are relayed: loop (epoll event loops, Linux) or goroutine")
	fs.IntVar(&cfg.Loops, "loops", 0, "number of event loops (0: one per two CPUs)")
	fs.Int64Var(&cfg.Seed, "seed", 0, "seed for rule probabilities and jitter, for reproducible runs")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	fs.StringVar(&cfg.LogSQL, "log-sql", server.LogSQLRedacted, "how /events and logs show SQL: redacted (constants replaced by $1, $2, ...) or full")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage:\n  pgchaos proxy --listen ADDR --upstream ADDR [--name NAME] [--api ADDR]\n  pgchaos proxy --config FILE\n\nFlags:\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return errUsage{err}
	}
	if fs.NArg() > 0 {
		return errUsage{fmt.Errorf("proxy: unexpected argument %q", fs.Arg(0))}
	}
	log, err := newLogger(stderr, logLevel, logFormat)
	if err != nil {
		return errUsage{err}
	}
	if configFile != "" {
		if fs.Changed("listen") || fs.Changed("upstream") || fs.Changed("name") {
			return errUsage{errors.New("proxy: give either --config or --listen/--upstream, not both")}
		}
		fileCfg, err := server.LoadConfig(configFile)
		if err != nil {
			return errUsage{err}
		}
		// Flags given on the command line override the file's settings:
		// parsing again sets only the flags that were given.
		cfg = fileCfg
		if err := fs.Parse(args); err != nil {
			return errUsage{err}
		}
	} else {
		if embedded {
			if one.Upstream != "" {
				return errUsage{errors.New("proxy: give either --embedded or --upstream, not both")}
			}
			one.Upstream = "127.0.0.1:1" // replaced once the database is up
		}
		if one.Listen == "" || one.Upstream == "" {
			return errUsage{errors.New("proxy: --listen and --upstream are required (or --config FILE)")}
		}
		cfg.Proxies = []server.ProxyConfig{one}
	}
	cfg.APIToken = os.Getenv(control.EnvToken)
	if err := cfg.Validate(); err != nil {
		return errUsage{fmt.Errorf("proxy:%w", err)}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if embedded {
		if configFile != "" {
			return errUsage{errors.New("proxy: --embedded works with --listen, not --config")}
		}
		// Every file the settings name is read before the database
		// starts: a bad one is a usage error, not an initdb later.
		if err := cfg.Check(); err != nil {
			return errUsage{err}
		}
		db, err := server.StartEmbedded(ctx, pgBinDir, log)
		if err != nil {
			return err
		}
		defer db.Stop()
		cfg.Proxies[0].Upstream = db.Addr()
		log.Info("embedded PostgreSQL is up; connect through pgchaos with: psql '" + db.ConnString(cfg.Proxies[0].Listen) + "'")
	}
	return serve(ctx, cfg, log)
}

// serve runs the server until ctx ends; a configuration it refuses is a
// usage error (exit 2).
func serve(ctx context.Context, cfg server.Config, log *slog.Logger) error {
	err := server.Run(ctx, cfg, log)
	var ce *server.ConfigError
	if errors.As(err, &ce) {
		return errUsage{err}
	}
	return err
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
