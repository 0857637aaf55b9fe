// Command bench is pgchaos's benchmark. The first argument picks the mode:
//
//	go run ./bench [flags]          throughput, CPU, rules and delays (below)
//	go run ./bench memory [flags]   memory per session and idle wake-ups (memory.go)
//	go run ./bench soak [flags]     a fault a second for minutes: leaks, errors, release (soak.go)
//	go run ./bench explore [flags]  pgchaos explore of a ten-statement application: trials per minute (explore.go)
//
// The throughput mode measures what putting pgchaos (with no faults
// injected) between pgbench and PostgreSQL costs, next to PgBouncer and,
// when installed, toxiproxy; what fault rules that match none of the
// traffic cost; and how accurately a delay rule delays.
//
// Usage, from anywhere inside the module:
//
//	go run ./bench                                   # 5 rounds × 5 s, 1 and 16 clients, about 6 min
//	go run ./bench --rounds 3 --duration 5 --json bench.json
//	go run ./bench memory                            # about 2 min
//	go run ./bench soak --duration 10m               # about 11 min
//
// It needs PostgreSQL's server binaries, pgbench and pgbouncer installed (see
// internal/pgtest); toxiproxy joins the comparison when toxiproxy-server is
// on $PATH. Everything runs on 127.0.0.1 in temp dirs that are removed on
// exit, Ctrl-C included.
//
// Three measurements interleaved round by round, so that drift in a
// shared, noisy machine hits every target alike:
//
//   - Throughput: `pgbench -n -S -T DURATION -c C` against each target. The
//     ratio to connecting directly matters; absolute TPS mostly reflects the
//     machine, since pgbench, Postgres and the proxy share its cores.
//   - Proxy CPU per transaction at a fixed --rate (16 clients), from the
//     proxy process's utime+stime in /proc/PID/stat: unlike TPS it does not
//     depend on how the cores were shared.
//   - Sparse-rule phase: proxy CPU at --rate with no rules, then with one
//     rule that delays 0.1% of pgbench's SELECTs by 1 ms. A verdict moves a
//     session to goroutine pumps; it must come back to its event loop, so
//     the target is at most +5% CPU per transaction.
//   - Rules phase: throughput at 16 clients and proxy CPU at --rate through
//     pgchaos with no rules, then with 20 rules that match none of
//     pgbench's traffic (loaded with POST /rules before the run and removed
//     with DELETE /rules after it). The target is a with/without TPS ratio
//     of at least 0.95. A rule that matches anything fails the run.
//
// Then, once, the delay phase: for delays of 10, 50 and 100 ms, a delay
// rule on `^SELECT /\*delay\*/` and --delay-samples timings each of
// `SELECT /*delay*/ 1` and `SELECT 1` (the baseline) on one pgx connection
// through pgchaos, simple protocol. It reports the median and p99 of the
// delayed latency less the baseline median; the target is a p99 within
// 1 ms of the delay.
//
// Flags:
//
//	--rounds N        rounds; medians are taken over them (default 5)
//	--duration D      length of each pgbench run: seconds or a Go duration (default 5s)
//	--warmup D        one unrecorded run per target before round 1; 0 disables (default 2s)
//	--clients LIST    comma-separated pgbench client counts (default 1,16)
//	--rate TPS        pgbench -R for the CPU measurement; 0 skips it (default 3000)
//	--scale N         pgbench -i scale factor (default 10)
//	--mode M          pgbench -M: simple, extended or prepared (default simple)
//	--pool-mode M     PgBouncer pool_mode (default transaction)
//	--rules-phase     measure 20 rules that match nothing (default true)
//	--sparse-phase    measure a rule that fires on 0.1% of statements (default true)
//	--baseline REV    also measure pgchaos built at git revision REV (e.g. main~3)
//	--delay-phase     measure delay accuracy (default true)
//	--delay-samples N timings per delay in the delay phase (default 200)
//	--json FILE       also write the results as JSON
//	--keep-going      record failed runs (and targets other than Postgres and
//	                  pgchaos that fail to start) and carry on; still exits 1
//
// -M prepared through PgBouncer older than 1.21 in transaction mode fails
// ("prepared statement does not exist"); use --pool-mode session for it.
//
// # Memory mode
//
// PostgreSQL, two PgBouncers with the same settings (transaction pooling),
// and pgchaos in front of one of them. The other is measured on its own,
// clients connecting to it directly, so that PgBouncer's figures sit
// beside pgchaos's from the same run without pgchaos's upstream
// connections in them. For both processes, at the same moments: RSS
// (VmRSS) before any session; per session with --sessions idle ones (logged
// in, nothing in flight); per session once --big-sessions of them sent an
// unnamed Parse of --big-size bytes of SQL and then a Bind with a
// --big-size parameter and went idle again; and --close-wait after every
// session closed. For pgchaos also go_memstats_heap_inuse_bytes from its
// /metrics, the lowest seen over three garbage collections (the scrapes
// make them come). And the idle wake-ups of each: context switches summed
// over /proc/PID/task/*/status and CPU ticks over --window, with no
// sessions and with the idle ones. Targets (issue 7): idle session ≤ 8 KiB,
// after the large messages ≤ 64 KiB, RSS after close within 10% of before.
// Flags: --sessions N (1000), --big-sessions N (200), --big-size BYTES
// (921600), --close-wait D (1m), --window D (10s), --json FILE.
//
// # Soak mode
//
// PostgreSQL, PgBouncer (transaction pooling) and pgchaos in front of it;
// --sessions sessions through pgchaos, of which --victims are victims
// (application_name pgchaos-soak-victim-K) and the rest bystanders
// (pgchaos-soak-bystander-K), each running an operation every 1–2 s (a
// simple or an extended query, or a transaction of both), beside pgbench
// -c --pgbench-clients -R --rate. Every --interval a fault is removed and
// the next added, cycling through every action type, each matched to
// application_name ^pgchaos-soak-victim- only. Victims' errors are
// explained by the faults; any bystander or pgbench error is not, and is
// printed with its time. A probe victim has a query held by each hang,
// partition, long delay and latency fault and times, from DELETE
// /rules/NAME returning, how long the query takes to complete. Goroutines,
// fds, RSS and sessions are printed at the start, every --report-every and
// at the end, once every session closed and every rule went. Targets:
// goroutines and fds back to the start (give or take 5 for the control
// API), sessions back to the start, the mean RSS of the last minute within
// 10% of the second minute's, no unexplained error, release p99 < 10 ms,
// every held query released, every fault fired. A missed target makes the
// exit status 1. Flags: --duration D (10m), --sessions N (1000), --victims
// N (200), --pgbench-clients N (16), --rate TPS (100), --interval D (1s),
// --report-every D (1m), --release-target D (10ms), --seed N, --json FILE.
//
// Beside this command, bench/ holds the checks too slow for CI:
// `bash bench/fuzz.sh 10m` runs every fuzz target for 10 minutes, and
// `bash bench/mutation.sh [PKG...]` runs mutation testing (gremlins, one
// worker) over faults/, experiments/verify/, experiments/runner/ and the
// fault path of proxy/ (faultpump.go, toxics.go, relay.go), printing each
// package's efficacy (killed of killed and lived mutants), its mutant
// coverage and the mutants that lived. faults/ takes about 20 minutes,
// proxy/ hours.
//
// Exit status: 0 done (and, for the soak, every target met), 1 a failure
// or a missed soak target, 2 bad flags, 3 PostgreSQL, PgBouncer or pgbench
// not installed, 130 interrupted.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/internal/pgtest"
)

const (
	// clockTicks is sysconf(_SC_CLK_TCK), the unit of utime and stime in
	// /proc/PID/stat. Linux has reported 100 to user space on every
	// architecture for decades, and Go's standard library cannot ask.
	clockTicks = 100
	// rateClients is the client count of the CPU measurement: enough
	// concurrency to look like a real pool without saturating 2 cores.
	rateClients = 16
	// startTimeout bounds each server's startup; PgBouncer and Postgres
	// have their own, inside pgtest.
	startTimeout = 20 * time.Second
	stopGrace    = 5 * time.Second
	// portAttempts bounds retries after losing a free port to another
	// process between pgtest.FreePort and the bind.
	portAttempts = 3
)

type config struct {
	rounds    int
	duration  time.Duration
	warmup    time.Duration
	clients   []int
	rate      int
	scale     int
	mode      string
	poolMode  string
	jsonPath  string
	keepGoing bool
	// rulesPhase and delayPhase enable the fault-rule measurements.
	rulesPhase  bool
	sparsePhase bool
	delayPhase  bool
	// baseline is a git revision of pgchaos to measure beside this one.
	baseline     string
	delaySamples int
}

func main() {
	start, err := parseArgs(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	finished := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			// Restore the default handler so that a second Ctrl-C kills
			// us at once if cleanup hangs; the children we started die
			// with us through Pdeathsig.
			stop()
			fmt.Fprintln(os.Stderr, "bench: interrupted, cleaning up (Ctrl-C again to force)")
		case <-finished:
		}
	}()
	err = start(ctx)
	close(finished)
	interrupted := ctx.Err() != nil
	stop()
	if err != nil {
		if interrupted {
			// Runs killed by the interruption fail with context.Canceled;
			// only other errors, e.g. from cleanup, are worth showing.
			if !errors.Is(err, context.Canceled) {
				fmt.Fprintln(os.Stderr, "bench:", err)
			}
			fmt.Fprintln(os.Stderr, "bench: interrupted")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		if errors.Is(err, pgtest.ErrNotInstalled) {
			os.Exit(exitNotInstalled)
		}
		os.Exit(1)
	}
}

// exitNotInstalled is the exit status when PostgreSQL, PgBouncer or
// pgbench is missing, so that a caller (the soak test) can tell "cannot
// run here" from "failed".
const exitNotInstalled = 3

// parseArgs picks the mode from the first argument — soak, memory, or
// the throughput benchmark when it is a flag or absent — and parses the
// mode's flags.
func parseArgs(args []string) (func(context.Context) error, error) {
	if len(args) > 0 {
		switch args[0] {
		case "soak":
			cfg, err := parseSoakFlags(args[1:])
			return func(ctx context.Context) error { return runSoakCommand(ctx, cfg) }, err
		case "memory":
			cfg, err := parseMemoryFlags(args[1:])
			return func(ctx context.Context) error { return runMemory(ctx, cfg, os.Stdout) }, err
		case "explore":
			cfg, err := parseExploreFlags(args[1:])
			return func(ctx context.Context) error { return runExplore(ctx, cfg, os.Stdout) }, err
		}
	}
	cfg, err := parseFlags(args)
	return func(ctx context.Context) error { return run(ctx, cfg) }, err
}

func parseFlags(args []string) (config, error) {
	cfg := config{duration: 5 * time.Second, warmup: 2 * time.Second}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.IntVar(&cfg.rounds, "rounds", 5, "rounds; medians are taken over them")
	fs.Var((*secondsFlag)(&cfg.duration), "duration", "length of each pgbench run: seconds or a Go duration")
	fs.Var((*secondsFlag)(&cfg.warmup), "warmup", "length of the unrecorded warm-up run per target; 0 disables")
	clients := fs.String("clients", "1,16", "comma-separated pgbench client counts")
	fs.IntVar(&cfg.rate, "rate", 3000, "pgbench -R (tps) for the proxy CPU measurement; 0 skips it")
	fs.IntVar(&cfg.scale, "scale", 10, "pgbench -i scale factor")
	fs.StringVar(&cfg.mode, "mode", "simple", "pgbench -M query mode: simple, extended or prepared")
	fs.StringVar(&cfg.poolMode, "pool-mode", "transaction", "PgBouncer pool_mode")
	fs.StringVar(&cfg.jsonPath, "json", "", "also write the results as JSON to `FILE`")
	fs.BoolVar(&cfg.keepGoing, "keep-going", false, "record failures and carry on (exit status is still 1)")
	fs.BoolVar(&cfg.rulesPhase, "rules-phase", true, "measure pgchaos with 20 fault rules that match none of the traffic against no rules")
	fs.StringVar(&cfg.baseline, "baseline", "", "also measure pgchaos built at this git `REV` (e.g. main~3), as target pgchaos@REV")
	fs.BoolVar(&cfg.sparsePhase, "sparse-phase", true, "measure pgchaos's CPU per transaction with a rule that fires on 0.1% of statements against no rules (needs --rate)")
	fs.BoolVar(&cfg.delayPhase, "delay-phase", true, "measure how accurately delay rules of 10, 50 and 100 ms delay a query")
	fs.IntVar(&cfg.delaySamples, "delay-samples", 200, "timings per delay in the delay phase")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.rounds < 1 {
		return cfg, fmt.Errorf("--rounds %d: want at least 1", cfg.rounds)
	}
	if cfg.duration < time.Second {
		return cfg, fmt.Errorf("--duration %s: want at least 1s", cfg.duration)
	}
	if cfg.rate < 0 {
		return cfg, fmt.Errorf("--rate %d: want 0 (skip) or more", cfg.rate)
	}
	if cfg.delaySamples < 1 {
		return cfg, fmt.Errorf("--delay-samples %d: want at least 1", cfg.delaySamples)
	}
	if cfg.scale < 1 {
		return cfg, fmt.Errorf("--scale %d: want at least 1", cfg.scale)
	}
	switch cfg.mode {
	case "simple", "extended", "prepared":
	default:
		return cfg, fmt.Errorf("--mode %q: want simple, extended or prepared", cfg.mode)
	}
	switch cfg.poolMode {
	case "session", "transaction", "statement":
	default:
		return cfg, fmt.Errorf("--pool-mode %q: want session, transaction or statement", cfg.poolMode)
	}
	for _, s := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return cfg, fmt.Errorf("--clients %q: want positive integers separated by commas", *clients)
		}
		if !slices.Contains(cfg.clients, n) {
			cfg.clients = append(cfg.clients, n)
		}
	}
	return cfg, nil
}

// secondsFlag is a duration flag that also takes bare seconds, because
// pgbench -T counts whole seconds and "--duration 5" is the natural spelling.
type secondsFlag time.Duration

func (f *secondsFlag) String() string { return time.Duration(*f).String() }

func (f *secondsFlag) Set(s string) error {
	if n, err := strconv.Atoi(s); err == nil {
		*f = secondsFlag(time.Duration(n) * time.Second)
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want seconds or a duration like 5s: %w", err)
	}
	*f = secondsFlag(d)
	return nil
}

// seconds rounds up to pgbench's whole seconds.
func seconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }

// target is one way for pgbench to reach Postgres.
type target struct {
	name string
	port int
	// pid is the proxy process whose CPU is measured; 0 for direct.
	pid int
}

func run(ctx context.Context, cfg config) (err error) {
	var cl cleanups
	defer func() { err = errors.Join(err, cl.run()) }()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	tmp, err := os.MkdirTemp("", "pgchaos-bench-")
	if err != nil {
		return fmt.Errorf("creating temp dir: %w", err)
	}
	cl.add(func() error { return os.RemoveAll(tmp) })

	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	progress("building pgchaos")
	pgchaosBin := filepath.Join(tmp, "pgchaos")
	if err := buildPgchaos(ctx, root, pgchaosBin); err != nil {
		return err
	}

	progress("starting PostgreSQL")
	pgCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	pg, err := pgtest.StartPostgres(pgCtx, pgtest.Options{
		Logger: logger,
		Settings: map[string]string{
			"max_connections": "200",
			// pgbench -S only reads and -i vacuums by itself; a worker
			// waking up mid-run would only add noise.
			"autovacuum": "off",
			// Room for the whole scale-10 data set plus indexes, so runs
			// read from shared buffers rather than the page cache.
			"shared_buffers": "256MB",
			"jit":            "off",
		},
	})
	cancel()
	if err != nil {
		return fmt.Errorf("starting PostgreSQL: %w", err)
	}
	cl.add(pg.Stop)

	bench, err := newPgbench(pg.BinDir())
	if err != nil {
		return err
	}
	progress("initialising pgbench data, scale %d", cfg.scale)
	if out, err := bench.run(ctx, pg.Port(), "-i", "-q", "-s", strconv.Itoa(cfg.scale)); err != nil {
		return fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}

	targets := []target{{name: "direct", port: pg.Port()}}
	var failures []string
	// optional reports an optional target that failed to start: fatal
	// unless --keep-going, and always remembered for the exit status.
	optional := func(name string, err error) error {
		if !cfg.keepGoing {
			return fmt.Errorf("starting %s: %w", name, err)
		}
		msg := fmt.Sprintf("%s did not start, skipped: %v", name, err)
		progress("%s", msg)
		failures = append(failures, msg)
		return nil
	}

	progress("starting pgchaos")
	chaos, chaosPort, chaosAPI, err := startPgchaos(ctx, pgchaosBin, tmp, pg.Addr())
	if err != nil {
		return fmt.Errorf("starting pgchaos: %w", err)
	}
	cl.add(func() error { return chaos.stop(syscall.SIGTERM) })
	chaosTarget := target{name: "pgchaos", port: chaosPort, pid: chaos.pid()}
	targets = append(targets, chaosTarget)

	if cfg.baseline != "" {
		progress("building pgchaos at %s", cfg.baseline)
		bin := filepath.Join(tmp, "pgchaos-baseline")
		if err := buildPgchaosAt(ctx, root, cfg.baseline, filepath.Join(tmp, "baseline-src"), bin); err != nil {
			return err
		}
		c, port, _, err := startPgchaos(ctx, bin, tmp, pg.Addr())
		if err != nil {
			return fmt.Errorf("starting pgchaos@%s: %w", cfg.baseline, err)
		}
		cl.add(func() error { return c.stop(syscall.SIGTERM) })
		targets = append(targets, target{name: "pgchaos@" + cfg.baseline, port: port, pid: c.pid()})
	}

	progress("starting PgBouncer (%s pooling)", cfg.poolMode)
	if tg, stop, err := startPgBouncer(ctx, cfg, pg.Addr(), logger); err != nil {
		if err := optional("pgbouncer", err); err != nil {
			return err
		}
	} else {
		cl.add(stop)
		targets = append(targets, tg)
	}

	if toxi, err := exec.LookPath("toxiproxy-server"); err != nil {
		progress("toxiproxy-server is not on $PATH, leaving toxiproxy out")
	} else {
		progress("starting toxiproxy")
		if c, port, err := startToxiproxy(ctx, toxi, tmp, pg.Addr()); err != nil {
			if err := optional("toxiproxy", err); err != nil {
				return err
			}
		} else {
			cl.add(func() error { return c.stop(syscall.SIGTERM) })
			targets = append(targets, target{name: "toxiproxy", port: port, pid: c.pid()})
		}
	}

	res := &results{
		Config: jsonConfig{
			Rounds: cfg.rounds, DurationSeconds: seconds(cfg.duration), Clients: cfg.clients,
			Rate: cfg.rate, RateClients: rateClients, Scale: cfg.scale, Mode: cfg.mode,
			PgBouncerPoolMode: cfg.poolMode, RulesPhase: cfg.rulesPhase, SparsePhase: cfg.sparsePhase && cfg.rate > 0, DelayPhase: cfg.delayPhase,
		},
		Environment: environment(ctx, root, bench, pg),
	}
	for _, t := range targets {
		res.Config.Targets = append(res.Config.Targets, t.name)
	}
	failures = append(failures, measure(ctx, cfg, bench, targets, chaosTarget, newRulesAPI(chaosAPI), res)...)
	if err := ctx.Err(); err != nil {
		return err
	}
	res.Failures = failures

	printResults(os.Stdout, cfg, res)
	if cfg.jsonPath != "" {
		data, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding JSON results: %w", err)
		}
		if err := os.WriteFile(cfg.jsonPath, append(data, '\n'), 0o644); err != nil {
			return fmt.Errorf("writing JSON results: %w", err)
		}
		progress("wrote %s", cfg.jsonPath)
	}
	if len(failures) > 0 {
		return fmt.Errorf("%d failure(s), first: %s", len(failures), failures[0])
	}
	return nil
}

// measure runs the warm-up, every round and the delay phase, filling res.
// chaos is the pgchaos target and api its control API, for the fault-rule
// measurements. It returns the failed runs when --keep-going is set, and
// stops at the first otherwise.
func measure(ctx context.Context, cfg config, bench *pgbench, targets []target, chaos target, api rulesAPI, res *results) []string {
	var failures []string
	// fail records a failed run; it reports whether to stop measuring.
	fail := func(what string, err error) bool {
		if ctx.Err() != nil {
			return true
		}
		msg := fmt.Sprintf("%s: %v", what, err)
		progress("FAILED %s", msg)
		failures = append(failures, msg)
		return !cfg.keepGoing
	}
	maxClients := slices.Max(cfg.clients)

	if cfg.warmup > 0 {
		for _, t := range targets {
			progress("warm-up %s", t.name)
			if _, err := bench.runTPS(ctx, t.port, cfg.mode, seconds(cfg.warmup), maxClients, 0); err != nil {
				if fail("warm-up "+t.name, err) {
					return failures
				}
			}
		}
	}

	tput := map[int]map[string]*throughput{}
	for _, c := range cfg.clients {
		tput[c] = map[string]*throughput{}
		for _, t := range targets {
			tp := &throughput{Clients: c, Target: t.name, RoundTPS: make([]*float64, cfg.rounds)}
			tput[c][t.name] = tp
			res.Throughput = append(res.Throughput, tp)
		}
	}
	cpu := map[string]*proxyCPU{}
	for _, t := range targets {
		if t.pid != 0 && cfg.rate > 0 {
			pc := &proxyCPU{
				Target: t.name, RoundMicros: make([]*float64, cfg.rounds),
				RoundTPS: make([]*float64, cfg.rounds),
			}
			cpu[t.name] = pc
			res.CPU = append(res.CPU, pc)
		}
	}

	var rules *rulesOverhead
	runsPerRound := len(cfg.clients)*len(targets) + len(cpu)
	if cfg.rulesPhase {
		// Start from no rules, whatever pgchaos was started with.
		if err := api.reset(ctx); err != nil {
			if fail("removing fault rules", err) {
				return failures
			}
		}
		rules = newRulesOverhead(cfg.rounds, cfg.rate)
		res.Rules = rules
		runsPerRound += rules.runs()
	}
	var sparse *sparseOverhead
	if cfg.sparsePhase && cfg.rate > 0 {
		sparse = newSparseOverhead(cfg.rounds)
		res.Sparse = sparse
		runsPerRound += 2
	}

	progress("measuring: %d rounds, about %s", cfg.rounds,
		time.Duration(cfg.rounds*runsPerRound)*time.Duration(seconds(cfg.duration))*time.Second)
	for r := range cfg.rounds {
		for _, c := range cfg.clients {
			for _, t := range targets {
				what := fmt.Sprintf("round %d/%d clients=%d %s", r+1, cfg.rounds, c, t.name)
				out, err := bench.runTPS(ctx, t.port, cfg.mode, seconds(cfg.duration), c, 0)
				if err != nil {
					if fail(what, err) {
						return failures
					}
					continue
				}
				tput[c][t.name].RoundTPS[r] = &out.tps
				progress("%s: %.0f tps", what, out.tps)
			}
		}
		for _, t := range targets {
			pc := cpu[t.name]
			if pc == nil {
				continue
			}
			what := fmt.Sprintf("round %d/%d cpu at %d tps %s", r+1, cfg.rounds, cfg.rate, t.name)
			us, out, err := measureCPU(ctx, bench, t, cfg)
			if err != nil {
				if fail(what, err) {
					return failures
				}
				continue
			}
			pc.RoundMicros[r], pc.RoundTPS[r] = &us, &out.tps
			progress("%s: %.1f µs/txn (%.0f tps achieved)", what, us, out.tps)
		}
		if rules != nil && rules.round(ctx, r, cfg, bench, chaos, api, fail) {
			return failures
		}
		if sparse != nil && sparse.round(ctx, r, cfg, bench, chaos, api, fail) {
			return failures
		}
	}

	for _, c := range cfg.clients {
		direct := tput[c]["direct"]
		for _, t := range targets {
			tput[c][t.name].summarise(direct)
		}
	}
	for _, pc := range cpu {
		pc.summarise(cfg.rate)
	}
	if rules != nil {
		rules.summarise(cfg.rate)
	}
	if sparse != nil {
		sparse.summarise(cfg.rate)
	}

	if cfg.delayPhase {
		var stop bool
		res.Delay, stop = measureDelays(ctx, cfg, addrOf(chaos.port), api, fail)
		if stop {
			return failures
		}
	}
	return failures
}

// measureCPU runs pgbench at the fixed rate and returns the proxy's CPU
// time per transaction in µs.
func measureCPU(ctx context.Context, bench *pgbench, t target, cfg config) (float64, pgbenchOutput, error) {
	before, err := cpuTicks(t.pid)
	if err != nil {
		return 0, pgbenchOutput{}, err
	}
	out, err := bench.runTPS(ctx, t.port, cfg.mode, seconds(cfg.duration), rateClients, cfg.rate)
	if err != nil {
		return 0, out, err
	}
	after, err := cpuTicks(t.pid)
	if err != nil {
		return 0, out, err
	}
	if out.txns == 0 {
		return 0, out, errors.New("pgbench processed no transactions")
	}
	us := float64(after-before) * (1e6 / clockTicks) / float64(out.txns)
	return us, out, nil
}

// cpuTicks returns utime+stime of pid, in clock ticks, summed over all its
// threads by the kernel.
func cpuTicks(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading CPU time: %w", err)
	}
	// The command name (field 2) is in parentheses and may contain
	// spaces or parentheses itself, so split after its last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("parsing /proc/%d/stat: no ')'", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state), so field n is fields[n-3].
	if len(fields) < 13 {
		return 0, fmt.Errorf("parsing /proc/%d/stat: only %d fields", pid, len(fields)+2)
	}
	var total uint64
	for _, f := range fields[14-3 : 15-3+1] {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing /proc/%d/stat: %w", pid, err)
		}
		total += n
	}
	return total, nil
}

// pgbench runs the pgbench binary of the Postgres under test.
type pgbench struct {
	path string
	env  []string
}

func newPgbench(binDir string) (*pgbench, error) {
	path := filepath.Join(binDir, "pgbench")
	if _, err := os.Stat(path); err != nil {
		// Debian splits the client tools from the server package in some
		// layouts; fall back to whatever pgbench is on $PATH.
		p, lerr := exec.LookPath("pgbench")
		if lerr != nil {
			return nil, fmt.Errorf("pgbench not found in %s nor on $PATH (apt-get install -y postgresql-contrib or postgresql-client): %w", binDir, lerr)
		}
		path = p
	}
	// The caller's PG* variables (PGOPTIONS, PGSSLMODE, ...) would change
	// what is measured, and LC_ALL=C keeps the output parseable.
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || strings.HasPrefix(k, "LC_") || k == "LANG" || k == "LANGUAGE" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "LC_ALL=C", "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=10", "PGAPPNAME=pgchaos-bench")
	return &pgbench{path: path, env: env}, nil
}

func (b *pgbench) run(ctx context.Context, port int, args ...string) (string, error) {
	args = append(args, "-h", pgtest.Host, "-p", strconv.Itoa(port), "-U", pgtest.SuperUser, "postgres")
	cmd := exec.CommandContext(ctx, b.path, args...)
	cmd.Env = b.env
	cmd.WaitDelay = stopGrace
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return string(out), ctxErr
		}
		return string(out), fmt.Errorf("%s %s: %w", filepath.Base(b.path), strings.Join(args, " "), err)
	}
	return string(out), nil
}

type pgbenchOutput struct {
	tps  float64
	txns int64
}

var (
	tpsRe    = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	txnsRe   = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	failedRe = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
)

// runTPS runs the select-only script; rate 0 means as fast as possible.
func (b *pgbench) runTPS(ctx context.Context, port int, mode string, secs, clients, rate int) (pgbenchOutput, error) {
	args := []string{"-n", "-S", "-M", mode, "-T", strconv.Itoa(secs),
		"-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, 2))}
	if rate > 0 {
		args = append(args, "-R", strconv.Itoa(rate))
	}
	out, err := b.run(ctx, port, args...)
	if err != nil {
		return pgbenchOutput{}, fmt.Errorf("%w\n%s", err, tail(out, 10))
	}
	var res pgbenchOutput
	m := tpsRe.FindStringSubmatch(out)
	if m == nil {
		return res, fmt.Errorf("no tps line in pgbench output:\n%s", tail(out, 10))
	}
	if res.tps, err = strconv.ParseFloat(m[1], 64); err != nil {
		return res, fmt.Errorf("parsing pgbench tps: %w", err)
	}
	m = txnsRe.FindStringSubmatch(out)
	if m == nil {
		return res, fmt.Errorf("no transaction count in pgbench output:\n%s", tail(out, 10))
	}
	if res.txns, err = strconv.ParseInt(m[1], 10, 64); err != nil {
		return res, fmt.Errorf("parsing pgbench transaction count: %w", err)
	}
	// A proxy that breaks some transactions must not look fast.
	if m := failedRe.FindStringSubmatch(out); m != nil && m[1] != "0" {
		return res, fmt.Errorf("%s failed transactions:\n%s", m[1], tail(out, 10))
	}
	return res, nil
}

func (b *pgbench) version(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, b.path, "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// child is a server process the benchmark starts itself, so that it knows
// its PID and owns its lifetime.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once reaped
	err     error         // Wait's result, valid after done
}

func startChild(name, logPath, bin string, args ...string) (*child, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating %s log: %w", name, err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group keeps a terminal Ctrl-C from killing it
		// before we stop it in order.
		Setpgid: true,
		// Dies with us if we are killed before cleanup can run. We never
		// lock OS threads, so the forking thread lives as long as we do.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop signals the child and kills it if it outlives the grace period.
func (c *child) stop(sig syscall.Signal) error {
	if c.exited() {
		return nil
	}
	if err := c.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signalling %s: %w", c.name, err)
	}
	select {
	case <-c.done:
		return nil
	case <-time.After(stopGrace):
	}
	if err := syscall.Kill(-c.pid(), syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing %s: %w", c.name, err)
	}
	<-c.done
	return fmt.Errorf("%s ignored %v for %s and was killed", c.name, sig, stopGrace)
}

// logTail is for error messages: why a server refused to start is in
// the last lines of its output.
func (c *child) logTail() string {
	data, err := os.ReadFile(c.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", c.logPath, err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return "(no output)"
	}
	return tail(string(data), 20)
}

// waitReady polls probe until it passes, the child exits, or startTimeout.
func (c *child) waitReady(ctx context.Context, probe func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if c.exited() {
			return fmt.Errorf("%s exited during startup (%v):\n%s", c.name, c.err, c.logTail())
		}
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		last = probe(pctx)
		pcancel()
		if last == nil {
			return nil
		}
		select {
		case <-c.done:
		case <-tick.C:
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("%s not ready within %s: %w\n%s", c.name, startTimeout, last, c.logTail())
			}
			return ctx.Err()
		}
	}
}

// startPgchaos starts pgchaos and returns it, its port and the address of
// its control API.
func startPgchaos(ctx context.Context, bin, dir, upstream string) (*child, int, string, error) {
	for attempt := 1; ; attempt++ {
		port, err := pgtest.FreePort()
		if err != nil {
			return nil, 0, "", err
		}
		apiPort, err := pgtest.FreePort()
		if err != nil {
			return nil, 0, "", err
		}
		addr := addrOf(port)
		api := addrOf(apiPort)
		c, err := startChild("pgchaos", filepath.Join(dir, "pgchaos.log"), bin, "proxy",
			"--listen", addr, "--upstream", upstream, "--name", "pg", "--api", api, "--log-level", "warn")
		if err != nil {
			return nil, 0, "", err
		}
		err = c.waitReady(ctx, func(ctx context.Context) error {
			if err := httpOK(ctx, "http://"+api+"/healthz"); err != nil {
				return err
			}
			return pgLogin(ctx, addr)
		})
		if err == nil {
			return c, port, api, nil
		}
		_ = c.stop(syscall.SIGTERM)
		if attempt == portAttempts || !strings.Contains(c.logTail(), "address already in use") {
			return nil, 0, "", err
		}
	}
}

func startPgBouncer(ctx context.Context, cfg config, upstream string, logger *slog.Logger) (target, func() error, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	b, err := pgtest.StartPgBouncer(ctx, pgtest.PgBouncerOptions{
		Upstream: upstream,
		PoolMode: cfg.poolMode,
		Logger:   logger,
		Settings: map[string]string{
			// One server connection per client, or clients would queue in
			// PgBouncer and the comparison would measure the queue.
			"default_pool_size": strconv.Itoa(max(rateClients, slices.Max(cfg.clients))),
		},
	})
	if err != nil {
		return target{}, nil, err
	}
	// pgtest does not expose the PID; the owner of the listening socket is
	// PgBouncer itself (it does not fork).
	pid, err := listenerPID(b.Port())
	if err != nil {
		return target{}, nil, errors.Join(fmt.Errorf("finding PgBouncer's PID: %w", err), b.Stop())
	}
	return target{name: "pgbouncer", port: b.Port(), pid: pid}, b.Stop, nil
}

func startToxiproxy(ctx context.Context, bin, dir, upstream string) (*child, int, error) {
	for attempt := 1; ; attempt++ {
		apiPort, err := pgtest.FreePort()
		if err != nil {
			return nil, 0, err
		}
		api := "http://" + addrOf(apiPort)
		c, err := startChild("toxiproxy", filepath.Join(dir, "toxiproxy.log"), bin,
			"-host", pgtest.Host, "-port", strconv.Itoa(apiPort))
		if err != nil {
			return nil, 0, err
		}
		err = c.waitReady(ctx, func(ctx context.Context) error { return httpOK(ctx, api+"/version") })
		var port int
		if err == nil {
			port, err = createToxiproxy(ctx, api, upstream)
		}
		if err == nil {
			err = c.waitReady(ctx, func(ctx context.Context) error { return pgLogin(ctx, addrOf(port)) })
		}
		if err == nil {
			return c, port, nil
		}
		_ = c.stop(syscall.SIGTERM)
		if attempt == portAttempts || !strings.Contains(err.Error()+c.logTail(), "address already in use") {
			return nil, 0, err
		}
	}
}

// createToxiproxy adds the proxy through the HTTP API and returns its port.
func createToxiproxy(ctx context.Context, api, upstream string) (int, error) {
	port, err := pgtest.FreePort()
	if err != nil {
		return 0, err
	}
	body, err := json.Marshal(map[string]any{
		"name": "pg", "listen": addrOf(port), "upstream": upstream, "enabled": true,
	})
	if err != nil {
		return 0, fmt.Errorf("encoding toxiproxy request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api+"/proxies", bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("creating toxiproxy proxy: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("creating toxiproxy proxy: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusCreated {
		return 0, fmt.Errorf("creating toxiproxy proxy: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return port, nil
}

func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// pgLogin checks that a login and a query go all the way through to
// Postgres: a listening socket alone says nothing about the upstream side.
func pgLogin(ctx context.Context, addr string) error {
	conn, err := pgx.Connect(ctx, pgtest.ConnString(addr, pgtest.SuperUser, "", "postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var one int
	// Simple protocol: it works through every target and pool mode.
	return conn.QueryRow(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol).Scan(&one)
}

// listenerPID finds the process owning the TCP listener on 127.0.0.1:port.
func listenerPID(port int) (int, error) {
	sockets := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			// 0A is TCP_LISTEN; f[1] is local address:port in hex and
			// f[9] the socket's inode.
			if len(f) < 10 || f[3] != "0A" {
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil && int(p) == port {
				sockets["socket:["+f[9]+"]"] = true
			}
		}
	}
	if len(sockets) == 0 {
		return 0, fmt.Errorf("no TCP listener on port %d", port)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("listing processes: %w", err)
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue // gone, or not ours to look at
		}
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err == nil && sockets[link] {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no visible process owns the listener on port %d", port)
}

func buildPgchaos(ctx context.Context, root, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/pgchaos")
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/pgchaos: %w\n%s", err, msg)
	}
	return nil
}

// buildPgchaosAt builds pgchaos as it was at git revision rev, from a copy
// of that revision's tree in src.
func buildPgchaosAt(ctx context.Context, root, rev, src, out string) error {
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	archive := exec.CommandContext(ctx, "git", "-C", root, "archive", "--format=tar", rev)
	extract := exec.CommandContext(ctx, "tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return err
	}
	extract.Stdin = pipe
	var msg bytes.Buffer
	archive.Stderr, extract.Stderr = &msg, &msg
	if err := extract.Start(); err != nil {
		return err
	}
	if err := archive.Run(); err != nil {
		return fmt.Errorf("git archive %s: %w\n%s", rev, err, msg.String())
	}
	if err := extract.Wait(); err != nil {
		return fmt.Errorf("extracting %s: %w\n%s", rev, err, msg.String())
	}
	return buildPgchaos(ctx, src, out)
}

// moduleRoot finds the directory of go.mod, so the benchmark can be run from
// any directory of the module.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if gomod := strings.TrimSpace(string(out)); err == nil && gomod != "" && gomod != os.DevNull {
		return filepath.Dir(gomod), nil
	}
	dir, werr := os.Getwd()
	if werr != nil {
		return "", fmt.Errorf("finding the module root: %w", werr)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding the module root: no go.mod above the working directory; run from inside the pgchaos module")
		}
		dir = parent
	}
}

func addrOf(port int) string { return pgtest.Host + ":" + strconv.Itoa(port) }

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cleanups runs the registered functions in reverse order, so each process
// stops before what it depends on.
type cleanups []func() error

func (c *cleanups) add(f func() error) { *c = append(*c, f) }

func (c *cleanups) run() error {
	var errs []error
	for i := len(*c) - 1; i >= 0; i-- {
		if err := (*c)[i](); err != nil {
			errs = append(errs, err)
		}
	}
	*c = nil
	return errors.Join(errs...)
}

type results struct {
	Config      jsonConfig        `json:"config"`
	Environment map[string]string `json:"environment"`
	Throughput  []*throughput     `json:"throughput"`
	CPU         []*proxyCPU       `json:"proxy_cpu,omitempty"`
	Rules       *rulesOverhead    `json:"rules_phase,omitempty"`
	Sparse      *sparseOverhead   `json:"sparse_rule_phase,omitempty"`
	Delay       *delayResults     `json:"delay_phase,omitempty"`
	Failures    []string          `json:"failures,omitempty"`
}

type jsonConfig struct {
	Rounds            int      `json:"rounds"`
	DurationSeconds   int      `json:"duration_seconds"`
	Clients           []int    `json:"clients"`
	Rate              int      `json:"rate"`
	RateClients       int      `json:"rate_clients"`
	Scale             int      `json:"scale"`
	Mode              string   `json:"mode"`
	PgBouncerPoolMode string   `json:"pgbouncer_pool_mode"`
	Targets           []string `json:"targets"`
	RulesPhase        bool     `json:"rules_phase"`
	SparsePhase       bool     `json:"sparse_rule_phase"`
	DelayPhase        bool     `json:"delay_phase"`
}

// throughput is one client count and target. Round values are nil where
// the run failed (--keep-going), so rounds stay aligned across targets.
type throughput struct {
	Clients   int        `json:"clients"`
	Target    string     `json:"target"`
	RoundTPS  []*float64 `json:"round_tps"`
	MedianTPS float64    `json:"median_tps"`
	// Ratio is MedianTPS over direct's MedianTPS.
	Ratio float64 `json:"ratio"`
	// RatioMin and RatioMax are over the rounds, each against direct in
	// the same round.
	RatioMin float64 `json:"ratio_min"`
	RatioMax float64 `json:"ratio_max"`
}

func (t *throughput) summarise(direct *throughput) {
	t.MedianTPS = median(t.RoundTPS)
	if direct == nil {
		return
	}
	dm := median(direct.RoundTPS)
	if dm == 0 {
		return
	}
	t.Ratio = t.MedianTPS / dm
	var ratios []*float64
	for r, v := range t.RoundTPS {
		if d := direct.RoundTPS[r]; v != nil && d != nil && *d > 0 {
			x := *v / *d
			ratios = append(ratios, &x)
		}
	}
	t.RatioMin, t.RatioMax = minMax(ratios)
}

type proxyCPU struct {
	Target      string     `json:"target"`
	RoundMicros []*float64 `json:"round_us_per_txn"`
	RoundTPS    []*float64 `json:"round_tps"`
	// MedianMicros is the proxy's user+system CPU per transaction in µs.
	MedianMicros float64 `json:"median_us_per_txn"`
	MinMicros    float64 `json:"min_us_per_txn"`
	MaxMicros    float64 `json:"max_us_per_txn"`
	MedianTPS    float64 `json:"median_tps"`
	// BelowRate is set when the target could not keep up with --rate,
	// which makes its figure incomparable with the others'.
	BelowRate bool `json:"below_rate"`
}

func (p *proxyCPU) summarise(rate int) {
	p.MedianMicros = median(p.RoundMicros)
	p.MinMicros, p.MaxMicros = minMax(p.RoundMicros)
	p.MedianTPS = median(p.RoundTPS)
	p.BelowRate = p.MedianTPS > 0 && p.MedianTPS < 0.95*float64(rate)
}

func values(xs []*float64) []float64 {
	var v []float64
	for _, x := range xs {
		if x != nil {
			v = append(v, *x)
		}
	}
	slices.Sort(v)
	return v
}

func median(xs []*float64) float64 {
	v := values(xs)
	switch n := len(v); {
	case n == 0:
		return 0
	case n%2 == 1:
		return v[n/2]
	default:
		return (v[n/2-1] + v[n/2]) / 2
	}
}

func minMax(xs []*float64) (float64, float64) {
	v := values(xs)
	if len(v) == 0 {
		return 0, 0
	}
	return v[0], v[len(v)-1]
}

func environment(ctx context.Context, root string, bench *pgbench, pg *pgtest.Postgres) map[string]string {
	env := map[string]string{
		"go":       runtime.Version(),
		"os_arch":  runtime.GOOS + "/" + runtime.GOARCH,
		"cpus":     strconv.Itoa(runtime.NumCPU()),
		"pgbench":  bench.version(ctx),
		"postgres": serverVersion(ctx, pg.Addr()),
		"time":     time.Now().UTC().Format(time.RFC3339),
	}
	if out, err := exec.CommandContext(ctx, "pgbouncer", "--version").Output(); err == nil {
		env["pgbouncer"], _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	}
	// The pgchaos measured is built from the working tree, which may
	// differ from its commit.
	if out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		env["pgchaos_commit"] = strings.TrimSpace(string(out))
		if st, err := exec.CommandContext(ctx, "git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
			env["pgchaos_commit"] += "-dirty"
		}
	}
	return env
}

func serverVersion(ctx context.Context, addr string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgtest.ConnString(addr, pgtest.SuperUser, "", "postgres"))
	if err != nil {
		return ""
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var v string
	_ = conn.QueryRow(ctx, "SHOW server_version", pgx.QueryExecModeSimpleProtocol).Scan(&v)
	return v
}

func printResults(w io.Writer, cfg config, res *results) {
	fmt.Fprintf(w, "\nThroughput: pgbench -S -M %s, scale %d, %d round(s) × %ds; ratio = target median / direct median\n",
		cfg.mode, cfg.scale, cfg.rounds, seconds(cfg.duration))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients\ttarget\tmedian tps\tratio\tround ratios min..max\t")
	for _, t := range res.Throughput {
		ratio, spread := "-", "-"
		if t.Target == "direct" {
			ratio = "1.000"
		} else if t.Ratio > 0 {
			ratio = fmt.Sprintf("%.3f", t.Ratio)
			spread = fmt.Sprintf("%.3f..%.3f", t.RatioMin, t.RatioMax)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t\n", t.Clients, t.Target, fmtNum(t.MedianTPS, "%.0f"), ratio, spread)
	}
	tw.Flush()

	if len(res.CPU) > 0 {
		printCPU(w, cfg, res)
	}
	if res.Rules != nil {
		printRulesOverhead(w, cfg, res.Rules)
	}
	if res.Sparse != nil {
		printSparseOverhead(w, cfg, res.Sparse)
	}
	if res.Delay != nil {
		printDelays(w, res.Delay)
	}
}

func printCPU(w io.Writer, cfg config, res *results) {
	fmt.Fprintf(w, "\nProxy CPU (user+system) per transaction at -R %d, %d clients, %d round(s) × %ds; tick %d ms\n",
		cfg.rate, rateClients, cfg.rounds, seconds(cfg.duration), 1000/clockTicks)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tmedian µs/txn\tmin..max\tachieved tps\t")
	for _, p := range res.CPU {
		note := ""
		if p.BelowRate {
			note = " (below rate)"
		}
		spread := "-"
		if p.MedianMicros > 0 {
			spread = fmt.Sprintf("%.1f..%.1f", p.MinMicros, p.MaxMicros)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", p.Target, fmtNum(p.MedianMicros, "%.1f"), spread, fmtNum(p.MedianTPS, "%.0f")+note)
	}
	tw.Flush()
}

// fmtNum shows a missing value (every round failed) as "-" rather than 0.
func fmtNum(v float64, format string) string {
	if v == 0 || math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf(format, v)
}
