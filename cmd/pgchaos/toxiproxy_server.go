package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/pgchaos/pgchaos/control"
	"github.com/pgchaos/pgchaos/server"
)

// toxiproxyServerFlags are toxiproxy-server's flags: started with them, or
// with no arguments at all, pgchaos runs as toxiproxy-server would, so that
// an image or a Testcontainers module made for toxiproxy runs pgchaos
// unchanged.
var toxiproxyServerFlags = []string{"host", "port", "config", "seed", "proxy-metrics", "runtime-metrics", "version"}

// isToxiproxyServerArgs reports whether args are toxiproxy-server's: none,
// or a first one that is one of its flags (-host=0.0.0.0, --port 8474, ...).
func isToxiproxyServerArgs(args []string) bool {
	if len(args) == 0 {
		return true
	}
	if args[0] == "--version" {
		return false // pgchaos's own, like pgchaos version
	}
	name, ok := strings.CutPrefix(args[0], "-")
	if !ok {
		return false
	}
	name = strings.TrimPrefix(name, "-")
	name, _, _ = strings.Cut(name, "=")
	return slices.Contains(toxiproxyServerFlags, name)
}

// runToxiproxyServer runs the control API as toxiproxy-server does with
// the same flags: on -host:-port (localhost:8474), with the proxies of a
// -config file (toxiproxy's JSON list, or a pgchaos YAML file) or none
// until clients create them. A -host beyond loopback serves the API
// without a token, as toxiproxy does, unless PGCHAOS_API_TOKEN gives one.
func runToxiproxyServer(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pgchaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("host", "localhost", "host for the control API to listen on")
	port := fs.String("port", "8474", "port for the control API to listen on")
	configFile := fs.String("config", "", "JSON file of proxies to create on startup (toxiproxy's format), or a pgchaos YAML config")
	seed := fs.Int64("seed", 0, "seed for rule probabilities, jitter and toxics' toxicity")
	fs.Bool("proxy-metrics", false, "accepted for toxiproxy-server compatibility: pgchaos always serves its metrics on GET /metrics")
	fs.Bool("runtime-metrics", false, "accepted for toxiproxy-server compatibility: Go runtime and process metrics are always on GET /metrics")
	printVersion := fs.Bool("version", false, "print the version")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage of pgchaos as toxiproxy-server (pgchaos --help lists pgchaos's own commands):\n  pgchaos [-host localhost] [-port 8474] [-config FILE] [-seed N]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage{err}
	}
	if fs.NArg() > 0 {
		return errUsage{fmt.Errorf("unexpected argument %q (toxiproxy-server's flags are -host, -port, -config, -seed, -proxy-metrics, -runtime-metrics, -version; pgchaos --help lists pgchaos's commands)", fs.Arg(0))}
	}
	if *printVersion {
		fmt.Fprintln(stdout, "pgchaos", versionString(), "(toxiproxy-server API "+control.ToxiproxyVersion+")")
		return nil
	}
	if n, err := strconv.Atoi(*port); err != nil || n < 0 || n > 65535 {
		return errUsage{fmt.Errorf("-port %q: want a port number", *port)}
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	var cfg server.Config
	if *configFile != "" {
		fileCfg, err := server.LoadConfig(*configFile)
		if err != nil {
			return errUsage{err}
		}
		cfg = fileCfg
	}
	if cfg.API == "" || given["host"] || given["port"] {
		cfg.API = net.JoinHostPort(*host, *port)
	}
	if given["seed"] {
		cfg.Seed = *seed
	}
	cfg.APIToken = os.Getenv(control.EnvToken)
	if !control.IsLoopbackAddr(cfg.API) {
		// toxiproxy-server serves any -host without a token, and its
		// clients cannot send one: so does pgchaos started its way.
		cfg.AllowRemoteAPI = true
		if cfg.APIToken == "" && cfg.APITokenFile == "" {
			cfg.APIInsecure = true
		}
	}
	level := "info"
	if lv := os.Getenv("LOG_LEVEL"); lv != "" { // toxiproxy-server's
		level = strings.ToLower(lv)
		if level == "trace" {
			level = "debug"
		}
	}
	log, err := newLogger(stderr, level, "text")
	if err != nil {
		return errUsage{fmt.Errorf("LOG_LEVEL: %w", err)}
	}
	if err := cfg.Validate(); err != nil {
		return errUsage{fmt.Errorf("config:%w", err)}
	}
	if cfg.APIInsecure {
		log.Warn("the control API listens beyond loopback without a token, as toxiproxy-server's does: whoever reaches it can inject faults (set " + control.EnvToken + " to require one)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, cfg, log)
}
