package main

// The soak mode: many sessions through pgchaos in front of PgBouncer for a
// long time, with faults of every action type coming and going every
// second on some of them (the victims) and none on the others (the
// bystanders, and a pgbench beside them). It checks what issue 7 asks of a
// proxy that runs for days: what the process holds goes back to where it
// started, memory has no trend, no client the faults did not aim at sees an
// error, and removing a fault lets go of what it held at once.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/internal/pgtest"
)

const (
	victimPrefix    = "pgchaos-soak-victim-"
	bystanderPrefix = "pgchaos-soak-bystander-"
	// victimMatch is every fault's match.application_name.
	victimMatch = "^pgchaos-soak-victim-"
	// probeName is the probe's application_name, and probeMatch the
	// match of the rule of its own that a holding fault also gets: its
	// removal releases the probe's query alone, so the time it takes is
	// pgchaos's release and not a herd of victims' round trips.
	probeName  = "pgchaos-soak-probe"
	probeMatch = "^pgchaos-soak-probe$"
	// victimDatabase is the victims' database: through PgBouncer it gives
	// them a pool of their own, so that victims whose transactions a fault
	// holds cannot make bystanders queue for a server connection. Queueing
	// is PgBouncer's doing, not pgchaos's.
	victimDatabase = "pgchaos_soak"
	// probeDatabase gives the probe a pool of its own too: its released
	// query must not wait for a server connection behind the other
	// victims the same removal lets go, which would time PgBouncer's
	// queue rather than pgchaos's release.
	probeDatabase = "pgchaos_soak_probe"
	// A session waits thinkMin plus up to thinkJitter between operations.
	thinkMin    = time.Second
	thinkJitter = time.Second
	// victimTimeout ends a victim's operation that a fault swallowed
	// (drop, a one-sided disconnect, a timeout toxic); the victim then
	// reconnects. It is short so that victims stuck on one fault are
	// soon there for the next; a held operation is let go within about
	// an interval. victimConnectTimeout likewise.
	victimTimeout        = 2 * time.Second
	victimConnectTimeout = 3 * time.Second
	// bystanderTimeout is generous: a bystander operation that takes this
	// long is an error that no fault explains.
	bystanderTimeout = 30 * time.Second
	connectTimeout   = 15 * time.Second
	// Victims reconnect after every error and now and then without one,
	// so that faults on the connect event meet clients; bystanders
	// reconnect now and then too, under those same faults.
	victimReconnect    = 0.1
	bystanderReconnect = 0.02
	// releaseWait is how long a held probe query may take to complete
	// once its rule is gone before it counts as never released.
	releaseWait = 5 * time.Second
	// bouncerIdleTimeout and bouncerBusyTimeout bound a one-sided
	// disconnect: side: client leaves pgchaos's upstream connection open
	// and unanswered until PgBouncer gives up on it, as a server would,
	// and PgBouncer gives up on a client only after its
	// client_idle_timeout (idle), idle_transaction_timeout (idle in a
	// transaction) or query_timeout (cut in the middle of a query, e.g.
	// after Parse, Bind and Describe but before Execute and Sync). With
	// them the end of the run can expect every session to be gone, and a
	// victim connection left holding a server connection frees it soon.
	// Bystanders never idle longer than thinkMin + thinkJitter, and
	// their statements take milliseconds.
	bouncerIdleTimeout = 10 * time.Second
	bouncerBusyTimeout = 5 * time.Second
	// endWait bounds the wait for the counts to return after the run.
	endWait = 3*bouncerIdleTimeout + 15*time.Second
	// resourceAllowance is how many goroutines and descriptors above the
	// start pgchaos may keep at the end: the control API's own (the
	// connection serving the scrape, an HTTP/1 keep-alive closing).
	resourceAllowance = 5
	// rssTrendTolerance: the mean RSS of the last minute may exceed that
	// of the second (see rssTrend) by this much.
	rssTrendTolerance = 0.10
	rssEvery          = 5 * time.Second
	// maxListedErrors bounds how many unexplained errors are kept for the
	// report; all are counted and each is printed as it happens.
	maxListedErrors = 200
	// firedMetric is the counter of fired faults, by rule.
	firedMetric = "pgchaos_fault_fired_total"
	// maxErrorKinds bounds the distinct victim error messages kept per
	// fault.
	maxErrorKinds = 20
)

type soakConfig struct {
	duration       time.Duration
	sessions       int
	victims        int
	pgbenchClients int
	rate           int
	interval       time.Duration
	reportEvery    time.Duration
	seed           uint64
	jsonPath       string
	// releaseTarget is the removal-to-release p99 to meet: issue 7's
	// 10 ms unless --release-target says otherwise.
	releaseTarget time.Duration
}

func defaultSoakConfig() soakConfig {
	return soakConfig{
		duration: 10 * time.Minute, sessions: 1000, victims: 200, pgbenchClients: 16, rate: 100,
		interval: time.Second, reportEvery: time.Minute, seed: 1,
		releaseTarget: 10 * time.Millisecond,
	}
}

func parseSoakFlags(args []string) (soakConfig, error) {
	cfg := defaultSoakConfig()
	fs := flag.NewFlagSet("bench soak", flag.ContinueOnError)
	fs.Var((*secondsFlag)(&cfg.duration), "duration", "how long faults come and go: seconds or a Go duration")
	fs.IntVar(&cfg.sessions, "sessions", cfg.sessions, "concurrent sessions through pgchaos, victims included")
	fs.IntVar(&cfg.victims, "victims", cfg.victims, "of those, sessions the faults aim at")
	fs.IntVar(&cfg.pgbenchClients, "pgbench-clients", cfg.pgbenchClients, "pgbench -c beside the sessions; 0 runs no pgbench")
	fs.IntVar(&cfg.rate, "rate", cfg.rate, "pgbench -R (tps)")
	fs.DurationVar(&cfg.interval, "interval", cfg.interval, "how often a fault is added and the previous one removed")
	fs.DurationVar(&cfg.reportEvery, "report-every", cfg.reportEvery, "how often goroutines, fds, RSS and sessions are printed")
	fs.Uint64Var(&cfg.seed, "seed", cfg.seed, "seed of the sessions' random choices")
	fs.StringVar(&cfg.jsonPath, "json", "", "also write the results as JSON to `FILE`")
	fs.DurationVar(&cfg.releaseTarget, "release-target", cfg.releaseTarget, "the removal-to-release p99 to meet")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	switch {
	case fs.NArg() > 0:
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case cfg.releaseTarget <= 0:
		return cfg, fmt.Errorf("--release-target %s: want a positive duration", cfg.releaseTarget)
	case cfg.duration < 10*time.Second:
		return cfg, fmt.Errorf("--duration %s: want at least 10s", cfg.duration)
	case cfg.sessions < 2:
		return cfg, fmt.Errorf("--sessions %d: want at least 2", cfg.sessions)
	case cfg.victims < 1 || cfg.victims >= cfg.sessions:
		return cfg, fmt.Errorf("--victims %d: want at least 1 and fewer than --sessions (%d)", cfg.victims, cfg.sessions)
	case cfg.pgbenchClients < 0:
		return cfg, fmt.Errorf("--pgbench-clients %d: want 0 or more", cfg.pgbenchClients)
	case cfg.pgbenchClients > 0 && cfg.rate < 1:
		return cfg, fmt.Errorf("--rate %d: want at least 1", cfg.rate)
	case cfg.interval < 100*time.Millisecond:
		return cfg, fmt.Errorf("--interval %s: want at least 100ms", cfg.interval)
	case cfg.reportEvery < time.Second:
		return cfg, fmt.Errorf("--report-every %s: want at least 1s", cfg.reportEvery)
	}
	return cfg, nil
}

// soakFault is one entry of the cycle of faults. Every fault matches the
// victims only.
type soakFault struct {
	Label  string         `json:"label"`
	match  map[string]any // besides application_name
	action map[string]any
	// holds: the fault holds a query until it is removed, so the probe
	// times its release.
	holds bool
}

// soakFaults cycles through every action type, in the variants that take
// different paths through the proxy. Holding faults last far longer than
// the interval, so that their removal, not their end, lets traffic go.
func soakFaults() []soakFault {
	sel := map[string]any{"statement": "select"}
	connect := map[string]any{"event": "connect"}
	toxic := func(typ string, attrs map[string]any) map[string]any {
		return map[string]any{"type": typ, "attributes": attrs}
	}
	// Faults on the connect event follow faults that make victims
	// reconnect, so that they meet connecting clients; the one-sided
	// disconnects, which leave victims' server connections held in
	// PgBouncer for a while, come last.
	return []soakFault{
		{Label: "delay-long", action: map[string]any{"type": "delay", "delay": "30s"}, holds: true},
		{Label: "delay-short", action: map[string]any{"type": "delay", "delay": "20ms", "jitter": "20ms"}},
		{Label: "hang", action: map[string]any{"type": "hang"}, holds: true},
		{Label: "hang-300ms", action: map[string]any{"type": "hang", "duration": "300ms"}},
		{Label: "partition", action: map[string]any{"type": "partition"}, holds: true},
		{Label: "error-before", match: sel, action: map[string]any{"type": "error", "sqlstate": "40001"}},
		{Label: "refuse-57P03", match: connect, action: map[string]any{"type": "refuse", "sqlstate": "57P03", "message": "the database system is starting up"}},
		{Label: "error-after", match: map[string]any{"statement": []string{"select", "commit"}}, action: map[string]any{"type": "error", "when": "after", "sqlstate": "40001"}},
		{Label: "refuse-close", match: connect, action: map[string]any{"type": "refuse"}},
		{Label: "disconnect-fin", match: sel, action: map[string]any{"type": "disconnect"}},
		{Label: "slow-connect", match: connect, action: map[string]any{"type": "slow_connect", "delay": "30s"}},
		{Label: "disconnect-rst", match: sel, action: map[string]any{"type": "disconnect", "close": "rst"}},
		{Label: "disconnect-after-commit", match: map[string]any{"tag": "COMMIT"}, action: map[string]any{"type": "disconnect", "when": "after"}},
		{Label: "latency", action: toxic("latency", map[string]any{"latency": 30000}), holds: true},
		{Label: "bandwidth", action: toxic("bandwidth", map[string]any{"rate": 1})},
		{Label: "slicer", action: toxic("slicer", map[string]any{"average_size": 16, "size_variation": 8, "delay": 2000})},
		{Label: "slow-close", action: toxic("slow_close", map[string]any{"delay": 30000})},
		{Label: "timeout", action: toxic("timeout", map[string]any{"timeout": 500})},
		{Label: "reset-peer", action: toxic("reset_peer", map[string]any{"timeout": 200})},
		{Label: "limit-data", action: toxic("limit_data", map[string]any{"bytes": 500})},
		{Label: "drop", action: map[string]any{"type": "drop"}},
		{Label: "disconnect-server", match: sel, action: map[string]any{"type": "disconnect", "side": "server", "close": "rst"}},
		{Label: "disconnect-client", match: sel, action: map[string]any{"type": "disconnect", "side": "client"}},
	}
}

func (f soakFault) rule(name string) map[string]any { return f.ruleFor(name, victimMatch) }

func (f soakFault) ruleFor(name, appMatch string) map[string]any {
	m := map[string]any{"application_name": appMatch}
	for k, v := range f.match {
		m[k] = v
	}
	return map[string]any{"name": name, "match": m, "action": f.action}
}

// resourceSample is what pgchaos holds at one moment.
type resourceSample struct {
	Label          string         `json:"label"`
	ElapsedSeconds float64        `json:"elapsed_seconds"`
	Goroutines     int            `json:"goroutines"`
	FDs            int            `json:"fds"`
	RSS            int64          `json:"rss"`
	HeapInuse      int64          `json:"heap_inuse"`
	Sessions       int            `json:"sessions"`
	Relays         map[string]int `json:"relays,omitempty"`
	// Memstats are pgchaos's go_memstats_*_bytes.
	Memstats     map[string]float64 `json:"memstats,omitempty"`
	VictimErrors int64              `json:"victim_errors"`
	Unexplained  int64              `json:"unexplained_errors"`
}

type soakError struct {
	Time           time.Time `json:"time"`
	ElapsedSeconds float64   `json:"elapsed_seconds"`
	Client         string    `json:"client"`
	Op             string    `json:"op"`
	Error          string    `json:"error"`
	// Fault is the fault in place, or last removed, when the error came.
	Fault string `json:"fault,omitempty"`
}

type faultStats struct {
	Label        string `json:"label"`
	Added        int    `json:"added"`
	Fired        int64  `json:"fired"`
	VictimErrors int64  `json:"victim_errors"`
	// VictimErrorKinds counts what the victims were told, by message.
	VictimErrorKinds map[string]int64 `json:"victim_error_kinds,omitempty"`
	ReleaseMS        []float64        `json:"release_ms,omitempty"`
	// ReleaseHerd is, for each release timed, how often the victims'
	// rule of the same fault had fired: the victims it still held while
	// the probe's own rule was removed and timed, and let go right after.
	ReleaseHerd []int64 `json:"release_herd,omitempty"`
	// NotHeld counts probe queries that had completed before the rule
	// was removed; ReleaseFailures those that failed, or did not complete
	// within releaseWait, after it.
	NotHeld         int      `json:"not_held,omitempty"`
	ReleaseFailures []string `json:"release_failures,omitempty"`
}

type latencyStats struct {
	Samples int     `json:"samples"`
	P50MS   float64 `json:"p50_ms"`
	P99MS   float64 `json:"p99_ms"`
	MaxMS   float64 `json:"max_ms"`
}

func latencies(ms []float64) latencyStats {
	v := slices.Sorted(slices.Values(ms))
	if len(v) == 0 {
		return latencyStats{}
	}
	return latencyStats{Samples: len(v), P50MS: percentile(v, 0.5), P99MS: percentile(v, 0.99), MaxMS: v[len(v)-1]}
}

type pgbenchSummary struct {
	Clients      int     `json:"clients"`
	Rate         int     `json:"rate"`
	Transactions int64   `json:"transactions"`
	Failed       int64   `json:"failed"`
	TPS          float64 `json:"tps"`
	ExitStatus   int     `json:"exit_status"`
}

type soakResults struct {
	Config struct {
		DurationSeconds    float64 `json:"duration_seconds"`
		Sessions           int     `json:"sessions"`
		Victims            int     `json:"victims"`
		PgbenchClients     int     `json:"pgbench_clients"`
		Rate               int     `json:"rate"`
		IntervalSeconds    float64 `json:"interval_seconds"`
		ReportEverySeconds float64 `json:"report_every_seconds"`
		Seed               uint64  `json:"seed"`
	} `json:"config"`
	Environment map[string]string `json:"environment"`
	startTime   time.Time
	Samples     []resourceSample `json:"samples"`
	// RSS is sampled every rssEvery during the run, for the trend.
	RSS              []resourceSample `json:"rss_samples"`
	RSSTrend         string           `json:"rss_trend"`
	Faults           []*faultStats    `json:"faults"`
	Release          latencyStats     `json:"release"`
	RuleRemoval      latencyStats     `json:"rule_removal"`
	VictimErrors     int64            `json:"victim_errors"`
	Operations       int64            `json:"operations"`
	UnexplainedCount int64            `json:"unexplained_count"`
	Unexplained      []soakError      `json:"unexplained"`
	Pgbench          *pgbenchSummary  `json:"pgbench,omitempty"`
	// RelaysAfterRules counts sessions by relay a few seconds after the
	// last rule went, before the sessions closed.
	RelaysAfterRules map[string]int `json:"relays_after_rules,omitempty"`
	// LeftSessions are the sessions still open at the end, if any.
	LeftSessions []sessionInfo `json:"left_sessions,omitempty"`
	// FiredSeries counts pgchaos_fault_fired_total's label sets at the
	// start and the end: one per rule that ever fired.
	FiredSeriesStart int     `json:"fired_series_start"`
	FiredSeriesEnd   int     `json:"fired_series_end"`
	Checks           []check `json:"targets"`
}

// soakRun is the state of one soak shared by its goroutines.
type soakRun struct {
	cfg   soakConfig
	start time.Time
	api   rulesAPI

	// fault is the label of the fault in place or last removed.
	fault atomic.Pointer[string]
	ops   atomic.Int64

	mu           sync.Mutex
	victimErrors int64
	byFault      map[string]int64
	// victimKinds counts victims' error messages by fault.
	victimKinds  map[string]map[string]int64
	unexplained  []soakError
	unexplainedN int64
}

func (r *soakRun) currentFault() string {
	if p := r.fault.Load(); p != nil {
		return *p
	}
	return ""
}

// victimError counts an error of a victim, in an operation begun while
// fault f was in place (or last removed): the faults explain it.
func (r *soakRun) victimError(f, op string, err error) {
	msg := op + ": " + err.Error()
	if len(msg) > 160 {
		msg = msg[:160] + "..."
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.victimErrors++
	r.byFault[f]++
	kinds := r.victimKinds[f]
	if kinds == nil {
		kinds = map[string]int64{}
		r.victimKinds[f] = kinds
	}
	if _, ok := kinds[msg]; ok || len(kinds) < maxErrorKinds {
		kinds[msg]++
	}
}

// unexplainedError records an error that no injected fault explains and
// prints it at once.
func (r *soakRun) unexplainedError(client, op string, err error) {
	now := time.Now()
	e := soakError{Time: now, ElapsedSeconds: now.Sub(r.start).Seconds(), Client: client, Op: op, Error: err.Error(), Fault: r.currentFault()}
	progress("UNEXPLAINED ERROR at %s (+%.1fs, fault %q): %s %s: %s", now.Format("15:04:05.000"), e.ElapsedSeconds, e.Fault, client, op, e.Error)
	r.mu.Lock()
	r.unexplainedN++
	if len(r.unexplained) < maxListedErrors {
		r.unexplained = append(r.unexplained, e)
	}
	r.mu.Unlock()
}

func (r *soakRun) errorCounts() (victims, unexplained int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.victimErrors, r.unexplainedN
}

// errNotMet marks a soak that completed but missed a target.
var errNotMet = errors.New("target missed")

// runSoakCommand is the soak as the CLI runs it: a missed target is an
// error, so the exit status tells CI.
func runSoakCommand(ctx context.Context, cfg soakConfig) error {
	res, err := runSoak(ctx, cfg, os.Stdout)
	if err != nil {
		return err
	}
	if cfg.jsonPath != "" {
		if err := writeJSON(cfg.jsonPath, res); err != nil {
			return err
		}
	}
	var missed []string
	for _, c := range res.Checks {
		if !c.Met && !c.ReportOnly {
			missed = append(missed, fmt.Sprintf("%s (want %s, got %s)", c.Name, c.Want, c.Got))
		}
	}
	if len(missed) > 0 {
		return fmt.Errorf("soak: %w: %s", errNotMet, strings.Join(missed, "; "))
	}
	return nil
}

// runSoak runs the soak and prints its tables to w. It returns an error
// only when the run itself failed; missed targets are in the results.
func runSoak(ctx context.Context, cfg soakConfig, w io.Writer) (res *soakResults, err error) {
	st, err := startStack(ctx, map[string]string{"max_connections": "200", "jit": "off"})
	defer func() { err = errors.Join(err, st.close()) }()
	if err != nil {
		return nil, err
	}
	progress("initialising pgbench data and the victims' database")
	if out, err := st.pgbench.run(ctx, st.pg.Port(), "-i", "-q", "-s", "1"); err != nil {
		return nil, fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}
	for _, db := range []string{victimDatabase, probeDatabase} {
		if err := createDatabase(ctx, st.pg.Addr(), db); err != nil {
			return nil, err
		}
	}
	progress("starting PgBouncer (transaction pooling)")
	bouncer, err := st.startBouncer(ctx, "pgbouncer", st.pg.Addr(), map[string]string{
		// Room for every session, pgbench, victims reconnecting while
		// their old connection is still being closed, and one-sided
		// disconnects waiting for client_idle_timeout.
		"max_client_conn": strconv.Itoa(2*(cfg.sessions+1) + cfg.pgbenchClients + 100),
		// Three pools (bystanders and pgbench, victims, the probe) within
		// max_connections.
		"default_pool_size":        "50",
		"client_idle_timeout":      strconv.Itoa(int(bouncerIdleTimeout / time.Second)),
		"idle_transaction_timeout": strconv.Itoa(int(bouncerBusyTimeout / time.Second)),
		"query_timeout":            strconv.Itoa(int(bouncerBusyTimeout / time.Second)),
	})
	if err != nil {
		return nil, err
	}
	progress("starting pgchaos in front of PgBouncer")
	chaos, api, err := st.startPgchaos(ctx, addrOf(bouncer.port))
	if err != nil {
		return nil, err
	}
	addr := addrOf(chaos.port)

	res = &soakResults{Environment: environment(ctx, st.root, st.pgbench, st.pg)}
	res.Config.DurationSeconds, res.Config.Sessions, res.Config.Victims = cfg.duration.Seconds(), cfg.sessions, cfg.victims
	res.Config.PgbenchClients, res.Config.Rate, res.Config.Seed = cfg.pgbenchClients, cfg.rate, cfg.seed
	res.Config.IntervalSeconds, res.Config.ReportEverySeconds = cfg.interval.Seconds(), cfg.reportEvery.Seconds()
	run := &soakRun{cfg: cfg, api: api, byFault: map[string]int64{}, victimKinds: map[string]map[string]int64{}, start: time.Now()}

	if err := warmUp(ctx, api, addr); err != nil {
		return nil, fmt.Errorf("warming up pgchaos: %w", err)
	}
	sample := func(label string, withRelays bool) (resourceSample, error) {
		if !withRelays {
			// The start and the end count no API connection kept
			// alive for later requests.
			http.DefaultClient.CloseIdleConnections()
		}
		s, err := sampleResources(ctx, api, chaos.pid, withRelays)
		s.Label, s.ElapsedSeconds = label, time.Since(run.start).Seconds()
		s.VictimErrors, s.Unexplained = run.errorCounts()
		return s, err
	}
	startSample, err := sample("start", false)
	if err != nil {
		return nil, err
	}
	// The heap as garbage collections leave it, at the start and the
	// end: what the run left behind, without the garbage of the moment.
	if startSample.HeapInuse, _, err = heapAfterGC(ctx, api); err != nil {
		return nil, err
	}
	if res.FiredSeriesStart, err = api.series(ctx, firedMetric); err != nil {
		return nil, err
	}
	startSample.ElapsedSeconds = 0
	res.Samples = append(res.Samples, startSample)
	progress("start: %d goroutines, %d fds, RSS %.1f MiB, %d sessions", startSample.Goroutines, startSample.FDs, mib(startSample.RSS), startSample.Sessions)

	progress("opening %d sessions (%d victims) and the probe", cfg.sessions, cfg.victims)
	clients, err := openSoakClients(ctx, cfg, addr)
	if err != nil {
		return nil, err
	}
	probe := &soakProbe{dsn: soakDSN(addr, probeName, probeDatabase)}
	defer probe.close()
	if err := probe.ensure(); err != nil {
		closeClients(clients)
		return nil, fmt.Errorf("connecting the probe: %w", err)
	}

	run.start = time.Now()
	res.startTime = run.start
	phaseCtx, endPhase := context.WithDeadline(ctx, run.start.Add(cfg.duration))
	defer endPhase()

	stop := make(chan struct{})
	var workers sync.WaitGroup
	for _, c := range clients {
		workers.Add(1)
		go func() {
			defer workers.Done()
			c.run(run, stop)
		}()
	}
	stopWorkers := sync.OnceFunc(func() { close(stop); workers.Wait() })
	defer stopWorkers()

	var pgbenchDone chan *pgbenchSummary
	if cfg.pgbenchClients > 0 {
		pgbenchDone = make(chan *pgbenchSummary, 1)
		go func() { pgbenchDone <- runSoakPgbench(ctx, st.pgbench, chaos.port, cfg, run) }()
	}

	cycler := &faultCycler{run: run, probe: probe, faults: soakFaults()}
	cyclerDone := make(chan struct{})
	go func() { defer close(cyclerDone); cycler.loop(phaseCtx) }()

	progress("soaking for %s: one fault every %s on %d victims, %d bystanders, pgbench -c %d -R %d",
		cfg.duration, cfg.interval, cfg.victims, cfg.sessions-cfg.victims, cfg.pgbenchClients, cfg.rate)
	rssTick := time.NewTicker(rssEvery)
	reportTick := time.NewTicker(cfg.reportEvery)
	reports := 0
loop:
	for {
		select {
		case <-phaseCtx.Done():
			break loop
		case <-rssTick.C:
			if rss, err := procRSS(chaos.pid); err == nil {
				res.RSS = append(res.RSS, resourceSample{Label: "rss", ElapsedSeconds: time.Since(run.start).Seconds(), RSS: rss})
			}
		case <-reportTick.C:
			reports++
			s, err := sample(fmt.Sprintf("%s %d", reportUnit(cfg.reportEvery), reports), true)
			if err != nil {
				progress("sampling pgchaos: %v", err)
				continue
			}
			res.Samples = append(res.Samples, s)
			progress("%s: %d goroutines, %d fds, RSS %.1f MiB, %d sessions (loop %d, goroutine %d), victim errors %d, unexplained %d",
				s.Label, s.Goroutines, s.FDs, mib(s.RSS), s.Sessions, s.Relays["loop"], s.Relays["goroutine"], s.VictimErrors, s.Unexplained)
		}
	}
	rssTick.Stop()
	reportTick.Stop()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	<-cyclerDone
	progress("faults done; removing every rule")
	if err := api.reset(ctx); err != nil {
		run.unexplainedError("control API", "DELETE /rules", err)
	}
	res.RelaysAfterRules = waitOnLoops(ctx, api, 5*time.Second)

	progress("closing the sessions")
	stopWorkers()
	closeClients(clients)
	probe.close()
	if pgbenchDone != nil {
		select {
		case res.Pgbench = <-pgbenchDone:
		case <-time.After(2 * bystanderTimeout):
			run.unexplainedError("pgbench", "run", errors.New("still running long after its -T"))
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	progress("waiting up to %s for goroutines, fds and sessions to return", endWait)
	endSample, err := waitForBaseline(ctx, startSample, func() (resourceSample, error) { return sample("end", false) })
	if err != nil {
		return nil, err
	}
	if endSample.HeapInuse, _, err = heapAfterGC(ctx, api); err != nil {
		return nil, err
	}
	if res.FiredSeriesEnd, err = api.series(ctx, firedMetric); err != nil {
		return nil, err
	}
	res.Samples = append(res.Samples, endSample)
	if endSample.Sessions > startSample.Sessions {
		if list, err := api.sessions(ctx); err == nil {
			res.LeftSessions = list
		}
	}

	res.Faults = cycler.stats()
	var release []float64
	for _, f := range res.Faults {
		release = append(release, f.ReleaseMS...)
		f.VictimErrors = run.byFault[f.Label]
		f.VictimErrorKinds = run.victimKinds[f.Label]
	}
	res.Release = latencies(release)
	res.RuleRemoval = latencies(cycler.removalMS)
	res.VictimErrors, res.UnexplainedCount = run.errorCounts()
	res.Unexplained = run.unexplained
	res.Operations = run.ops.Load()
	res.RSSTrend, res.Checks = soakChecks(cfg, res, startSample, endSample)
	printSoak(w, cfg, res)
	return res, nil
}

func reportUnit(every time.Duration) string {
	if every == time.Minute {
		return "minute"
	}
	return "sample"
}

// warmUp makes pgchaos set up what it sets up once — a session on a loop,
// the fault path, a byte toxic — before the start is measured.
func warmUp(ctx context.Context, api rulesAPI, addr string) error {
	conn, err := pgconn.Connect(ctx, soakDSN(addr, victimPrefix+"warm-up", "postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, f := range []soakFault{
		{action: map[string]any{"type": "delay", "delay": "1ms"}},
		{action: map[string]any{"type": "latency", "attributes": map[string]any{"latency": 1}}},
	} {
		rule, err := jsonRule(f.rule("soak-warm-up"))
		if err != nil {
			return err
		}
		if err := api.add(ctx, rule); err != nil {
			return err
		}
		_, qerr := conn.Exec(ctx, "SELECT 1").ReadAll()
		if err := errors.Join(qerr, api.remove(ctx, "soak-warm-up")); err != nil {
			return err
		}
	}
	if _, err := conn.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		return err
	}
	conn.Close(ctx)
	if err := waitSessions(ctx, api, 0, 10*time.Second); err != nil {
		return err
	}
	return sleepCtx(ctx, time.Second)
}

func waitSessions(ctx context.Context, api rulesAPI, want int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		m, err := api.metrics(ctx)
		if err != nil {
			return err
		}
		if int(m["pgchaos_sessions_active"]) == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgchaos has %v sessions %s later, want %d", m["pgchaos_sessions_active"], within, want)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

func sampleResources(ctx context.Context, api rulesAPI, pid int, withRelays bool) (resourceSample, error) {
	var s resourceSample
	m, err := api.metrics(ctx)
	if err != nil {
		return s, err
	}
	s.Goroutines, s.Sessions = int(m["go_goroutines"]), int(m["pgchaos_sessions_active"])
	s.HeapInuse = int64(m["go_memstats_heap_inuse_bytes"])
	s.Memstats = map[string]float64{}
	for k, v := range m {
		if strings.HasPrefix(k, "go_memstats_") && strings.HasSuffix(k, "_bytes") {
			s.Memstats[k] = v
		}
	}
	if s.FDs, err = procFDs(pid); err != nil {
		return s, err
	}
	if s.RSS, err = procRSS(pid); err != nil {
		return s, err
	}
	if withRelays {
		if list, err := api.sessions(ctx); err == nil {
			s.Relays = relays(list)
		}
	}
	return s, nil
}

// waitForBaseline polls until goroutines, fds and sessions are back to the
// start (within resourceAllowance) or endWait passes, and returns the last
// sample either way.
func waitForBaseline(ctx context.Context, start resourceSample, sample func() (resourceSample, error)) (resourceSample, error) {
	deadline := time.Now().Add(endWait)
	for {
		s, err := sample()
		if err != nil {
			return s, err
		}
		if backToStart(start, s) || time.Now().After(deadline) {
			return s, nil
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return s, err
		}
	}
}

func backToStart(start, s resourceSample) bool {
	return s.Goroutines <= start.Goroutines+resourceAllowance && s.FDs <= start.FDs+resourceAllowance && s.Sessions <= start.Sessions
}

// waitOnLoops waits up to within for every session to be back on an
// event loop and returns the sessions by relay.
func waitOnLoops(ctx context.Context, api rulesAPI, within time.Duration) map[string]int {
	deadline := time.Now().Add(within)
	for {
		list, err := api.sessions(ctx)
		if err != nil {
			return nil
		}
		r := relays(list)
		if r["goroutine"] == 0 || time.Now().After(deadline) || sleepCtx(ctx, 200*time.Millisecond) != nil {
			return r
		}
	}
}

func createDatabase(ctx context.Context, addr, name string) error {
	conn, err := pgx.Connect(ctx, pgtest.ConnString(addr, pgtest.SuperUser, "", "postgres"))
	if err != nil {
		return fmt.Errorf("creating database %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("creating database %s: %w", name, err)
	}
	return nil
}

func soakDSN(addr, app, database string) string {
	return pgtest.ConnString(addr, pgtest.SuperUser, "", database) + "&application_name=" + url.QueryEscape(app)
}

// soakClient is one session's client: a victim or a bystander.
type soakClient struct {
	name    string
	victim  bool
	dsn     string
	rng     *rand.Rand
	conn    *pgconn.PgConn
	timeout time.Duration
	// connectTimeout bounds a reconnection.
	connectTimeout time.Duration
}

func openSoakClients(ctx context.Context, cfg soakConfig, addr string) ([]*soakClient, error) {
	clients := make([]*soakClient, cfg.sessions)
	for i := range clients {
		c := &soakClient{rng: rand.New(rand.NewPCG(cfg.seed, uint64(i))), timeout: bystanderTimeout, connectTimeout: connectTimeout}
		if i < cfg.victims {
			c.name, c.victim, c.timeout, c.connectTimeout = victimPrefix+strconv.Itoa(i), true, victimTimeout, victimConnectTimeout
			c.dsn = soakDSN(addr, c.name, victimDatabase)
		} else {
			c.name = bystanderPrefix + strconv.Itoa(i-cfg.victims)
			c.dsn = soakDSN(addr, c.name, "postgres")
		}
		clients[i] = c
	}
	errs := make([]error, len(clients))
	sem := make(chan struct{}, openConcurrency)
	var wg sync.WaitGroup
	for i, c := range clients {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			cctx, cancel := context.WithTimeout(ctx, connectTimeout)
			defer cancel()
			c.conn, errs[i] = pgconn.Connect(cctx, c.dsn)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeClients(clients)
		return nil, fmt.Errorf("opening the sessions (no fault yet): %w", err)
	}
	return clients, nil
}

func closeClients(clients []*soakClient) {
	conns := make([]*pgconn.PgConn, 0, len(clients))
	for _, c := range clients {
		if c.conn != nil {
			conns = append(conns, c.conn)
			c.conn = nil
		}
	}
	closeAll(conns)
}

// run is the session's light loop until stop: an operation every 1–2 s,
// reconnecting after any error.
func (c *soakClient) run(r *soakRun, stop <-chan struct{}) {
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-stop:
			return false
		}
	}
	// fail records an error and drops the connection; a victim pauses
	// briefly before reconnecting, so that its reconnection may meet the
	// next fault too (faults on the connect event need connecting
	// clients).
	fail := func(op, fault string, err error) bool {
		if c.victim {
			r.victimError(fault, op, err)
		} else {
			r.unexplainedError(c.name, op, err)
		}
		c.disconnect()
		return wait(100*time.Millisecond + time.Duration(c.rng.Int64N(int64(500*time.Millisecond))))
	}
	// Spread the sessions' operations over the think time.
	if !wait(time.Duration(c.rng.Int64N(int64(thinkMin + thinkJitter)))) {
		return
	}
	for {
		if c.conn == nil {
			fault := r.currentFault()
			ctx, cancel := context.WithTimeout(context.Background(), c.connectTimeout)
			conn, err := pgconn.Connect(ctx, c.dsn)
			cancel()
			if err != nil {
				if !fail("connect", fault, err) {
					return
				}
				continue
			}
			c.conn = conn
		}
		if !wait(thinkMin + time.Duration(c.rng.Int64N(int64(thinkJitter)))) {
			return
		}
		fault := r.currentFault()
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		op, err := c.operation(ctx)
		cancel()
		r.ops.Add(1)
		if err != nil {
			if !fail(op, fault, err) {
				return
			}
			continue
		}
		chance := bystanderReconnect
		if c.victim {
			chance = victimReconnect
		}
		if c.rng.Float64() < chance {
			c.disconnect()
		}
	}
}

func (c *soakClient) disconnect() {
	if c.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	c.conn.Close(ctx)
	cancel()
	c.conn = nil
}

// operation runs one of: a simple-protocol query, an extended-protocol
// query (unnamed statement, so it works through transaction pooling), or
// a transaction of the two. A wrong answer is an error too.
func (c *soakClient) operation(ctx context.Context) (string, error) {
	switch n := c.rng.IntN(10); {
	case n < 4:
		return "simple query", simpleQuery(ctx, c.conn, "SELECT 1", "1")
	case n < 7:
		return "extended query", extendedQuery(ctx, c.conn)
	default:
		if err := simpleQuery(ctx, c.conn, "BEGIN", ""); err != nil {
			return "BEGIN", err
		}
		if err := extendedQuery(ctx, c.conn); err != nil {
			return "query in a transaction", err
		}
		res, err := c.conn.Exec(ctx, "COMMIT").ReadAll()
		if err == nil && (len(res) != 1 || res[0].CommandTag.String() != "COMMIT") {
			err = fmt.Errorf("COMMIT answered %v", commandTags(res))
		}
		return "COMMIT", err
	}
}

func simpleQuery(ctx context.Context, conn *pgconn.PgConn, sql, want string) error {
	res, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return err
	}
	if len(res) != 1 {
		return fmt.Errorf("%s: %d results", sql, len(res))
	}
	if want != "" && (len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 || string(res[0].Rows[0][0]) != want) {
		return fmt.Errorf("%s: got %q, want %q", sql, res[0].Rows, want)
	}
	return nil
}

func extendedQuery(ctx context.Context, conn *pgconn.PgConn) error {
	r := conn.ExecParams(ctx, "SELECT $1::int + 1", [][]byte{[]byte("41")}, nil, nil, nil).Read()
	if r.Err != nil {
		return r.Err
	}
	if len(r.Rows) != 1 || len(r.Rows[0]) != 1 || string(r.Rows[0][0]) != "42" {
		return fmt.Errorf("SELECT $1::int + 1 with 41: got %q, want 42", r.Rows)
	}
	return nil
}

func commandTags(res []*pgconn.Result) []string {
	var tags []string
	for _, r := range res {
		tags = append(tags, r.CommandTag.String())
	}
	return tags
}

// soakProbe is a victim session whose query the cycler has a holding
// fault hold, to time its release when the fault is removed.
type soakProbe struct {
	dsn  string
	conn *pgconn.PgConn
}

type probeQuery struct {
	done chan struct{}
	at   time.Time
	err  error
}

// ensure connects the probe if need be. A query checks that the
// connection is alive: PgBouncer closes a client idle for
// client_idle_timeout, and the probe idles between holding faults.
func (p *soakProbe) ensure() error {
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	if p.conn != nil && simpleQuery(ctx, p.conn, "SELECT 1", "1") == nil {
		return nil
	}
	p.close()
	conn, err := pgconn.Connect(ctx, p.dsn)
	if err != nil {
		return err
	}
	p.conn = conn
	return nil
}

func (p *soakProbe) close() {
	if p.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		p.conn.Close(ctx)
		cancel()
		p.conn = nil
	}
}

// query starts SELECT 1 on the probe; it must not outlive a hold plus
// releaseWait.
func (p *soakProbe) query(hold time.Duration) *probeQuery {
	q := &probeQuery{done: make(chan struct{})}
	conn := p.conn
	go func() {
		defer close(q.done)
		ctx, cancel := context.WithTimeout(context.Background(), hold+2*releaseWait)
		defer cancel()
		q.err = simpleQuery(ctx, conn, "SELECT 1", "1")
		q.at = time.Now()
	}()
	return q
}

// faultCycler adds a fault every interval and removes the previous one.
type faultCycler struct {
	run       *soakRun
	probe     *soakProbe
	faults    []soakFault
	byLabel   map[string]*faultStats
	order     []string
	removalMS []float64
}

type activeFault struct {
	added time.Time
	name  string
	fault soakFault
	// probeRule is the holding fault's rule for the probe alone.
	probeRule string
	probe     *probeQuery
}

func (fc *faultCycler) loop(ctx context.Context) {
	fc.byLabel = map[string]*faultStats{}
	for _, f := range fc.faults {
		fc.byLabel[f.Label] = &faultStats{Label: f.Label}
		fc.order = append(fc.order, f.Label)
	}
	tick := time.NewTicker(fc.run.cfg.interval)
	defer tick.Stop()
	var cur *activeFault
	for i := 0; ; i++ {
		if cur != nil {
			// Remove before adding, so that a held probe query meets no
			// other fault on its way out.
			fc.remove(cur)
			cur = nil
		}
		if ctx.Err() != nil {
			return
		}
		// The probe reconnects while no fault is in place.
		if err := fc.probe.ensure(); err != nil {
			fc.run.victimError(fc.run.currentFault(), "probe connect", err)
		}
		f := fc.faults[i%len(fc.faults)]
		cur = fc.add(i, f)
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

func (fc *faultCycler) add(i int, f soakFault) *activeFault {
	name := fmt.Sprintf("soak-%05d-%s", i, f.Label)
	rule, err := jsonRule(f.rule(name))
	if err == nil {
		err = fc.run.api.add(context.Background(), rule)
	}
	if err != nil {
		fc.run.unexplainedError("control API", "POST /rules "+name, err)
		return nil
	}
	label := f.Label
	fc.run.fault.Store(&label)
	fc.byLabel[f.Label].Added++
	a := &activeFault{name: name, fault: f, added: time.Now()}
	if f.holds && fc.probe.conn != nil {
		a.probeRule = name + "-probe"
		rule, err := jsonRule(f.ruleFor(a.probeRule, probeMatch))
		if err == nil {
			err = fc.run.api.add(context.Background(), rule)
		}
		if err != nil {
			fc.run.unexplainedError("control API", "POST /rules "+a.probeRule, err)
			a.probeRule = ""
			return a
		}
		a.probe = fc.probe.query(fc.run.cfg.interval)
	}
	return a
}

func (fc *faultCycler) remove(a *activeFault) {
	stats := fc.byLabel[a.fault.Label]
	var fired int64
	if st, err := fc.run.api.get(context.Background(), a.name); err != nil {
		fc.run.unexplainedError("control API", "GET /rules/"+a.name, err)
	} else {
		fired = st.Fired
		stats.Fired += fired
	}
	held := false
	if a.probe != nil {
		select {
		case <-a.probe.done:
			stats.NotHeld++
			progress("probe query not held by %s: it completed %.1f ms after the rule was added: %v", a.name, ms(a.probe.at.Sub(a.added)), a.probe.err)
			if a.probe.err != nil {
				fc.probe.close()
			}
		default:
			held = true
		}
	}
	// The probe's rule goes first and alone: what its removal lets go is
	// the probe's query; the victims' herd follows once it is timed.
	defer func() {
		t0 := time.Now()
		err := fc.run.api.remove(context.Background(), a.name)
		fc.removalMS = append(fc.removalMS, ms(time.Since(t0)))
		if err != nil {
			fc.run.unexplainedError("control API", "DELETE /rules/"+a.name, err)
		}
	}()
	if a.probeRule == "" {
		return
	}
	if st, err := fc.run.api.get(context.Background(), a.probeRule); err == nil {
		stats.Fired += st.Fired
	}
	t0 := time.Now()
	err := fc.run.api.remove(context.Background(), a.probeRule)
	removed := time.Now()
	fc.removalMS = append(fc.removalMS, ms(removed.Sub(t0)))
	if err != nil {
		fc.run.unexplainedError("control API", "DELETE /rules/"+a.probeRule, err)
	}
	if !held {
		return
	}
	select {
	case <-a.probe.done:
		if a.probe.err != nil {
			stats.ReleaseFailures = append(stats.ReleaseFailures, fmt.Sprintf("%s: %v", a.name, a.probe.err))
			fc.probe.close()
			return
		}
		stats.ReleaseMS = append(stats.ReleaseMS, max(0, ms(a.probe.at.Sub(removed))))
		stats.ReleaseHerd = append(stats.ReleaseHerd, fired)
	case <-time.After(releaseWait):
		stats.ReleaseFailures = append(stats.ReleaseFailures, fmt.Sprintf("%s: the held query had not completed %s after the rule was removed", a.name, releaseWait))
		progress("RELEASE FAILED: the probe query held by %s had not completed %s after DELETE /rules/%s returned", a.name, releaseWait, a.name)
		<-a.probe.done
		fc.probe.close()
	}
}

func (fc *faultCycler) stats() []*faultStats {
	var out []*faultStats
	for _, l := range fc.order {
		out = append(out, fc.byLabel[l])
	}
	return out
}

func jsonRule(rule map[string]any) (string, error) {
	b, err := json.Marshal(rule)
	return string(b), err
}

var (
	pgbenchTxnsRe   = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	pgbenchFailedRe = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
)

// runSoakPgbench runs pgbench through pgchaos for the soak's duration.
// Every error it reports is unexplained: it is a bystander.
func runSoakPgbench(ctx context.Context, b *pgbench, port int, cfg soakConfig, r *soakRun) *pgbenchSummary {
	sum := &pgbenchSummary{Clients: cfg.pgbenchClients, Rate: cfg.rate}
	args := []string{"-n", "-b", "simple-update", "-M", "simple", "-T", strconv.Itoa(seconds(cfg.duration)),
		"-c", strconv.Itoa(cfg.pgbenchClients), "-j", strconv.Itoa(min(cfg.pgbenchClients, 2)), "-R", strconv.Itoa(cfg.rate),
		"-h", pgtest.Host, "-p", strconv.Itoa(port), "-U", pgtest.SuperUser, "postgres"}
	cmd := exec.CommandContext(ctx, b.path, args...)
	for _, kv := range b.env {
		if !strings.HasPrefix(kv, "PGAPPNAME=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PGAPPNAME=pgbench")
	cmd.WaitDelay = stopGrace
	var stdout strings.Builder
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		r.unexplainedError("pgbench", "start", err)
		sum.ExitStatus = -1
		return sum
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		if l := strings.ToLower(line); strings.Contains(l, "error") || strings.Contains(l, "abort") || strings.Contains(l, "fatal") {
			r.unexplainedError("pgbench", "transaction", errors.New(line))
		} else {
			progress("pgbench: %s", line)
		}
	}
	if err := cmd.Wait(); err != nil {
		sum.ExitStatus = -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			sum.ExitStatus = ee.ExitCode()
		}
		if ctx.Err() == nil {
			r.unexplainedError("pgbench", "exit", fmt.Errorf("%w\n%s", err, tail(stdout.String(), 10)))
		}
	}
	out := stdout.String()
	if m := pgbenchTxnsRe.FindStringSubmatch(out); m != nil {
		sum.Transactions, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := pgbenchFailedRe.FindStringSubmatch(out); m != nil {
		sum.Failed, _ = strconv.ParseInt(m[1], 10, 64)
		if sum.Failed > 0 {
			r.unexplainedError("pgbench", "run", fmt.Errorf("%d failed transactions", sum.Failed))
		}
	}
	if m := tpsRe.FindStringSubmatch(out); m != nil {
		sum.TPS, _ = strconv.ParseFloat(m[1], 64)
	}
	return sum
}

// rssTrend compares the mean RSS of the last window of the run with that
// of the first window after a warm-up, in which sessions open and buffers
// and the Go heap grow to their working size: a minute each for a run of
// three minutes or more (the second minute against the last), shorter for
// a shorter run. It returns the description and the ratio of the means.
func rssTrend(samples []resourceSample, duration time.Duration) (string, float64, bool) {
	warmup := min(time.Minute, duration/4)
	window := min(time.Minute, (duration-warmup)/2)
	mean := func(from, to time.Duration) (float64, bool) {
		var sum float64
		n := 0
		for _, s := range samples {
			if s.ElapsedSeconds >= from.Seconds() && s.ElapsedSeconds <= to.Seconds() {
				sum += float64(s.RSS)
				n++
			}
		}
		return sum / float64(max(n, 1)), n > 0
	}
	what := fmt.Sprintf("%s-%s vs %s-%s", toSecond(duration-window), toSecond(duration), toSecond(warmup), toSecond(warmup+window))
	first, ok1 := mean(warmup, warmup+window)
	last, ok2 := mean(duration-window, duration)
	if !ok1 || !ok2 || first == 0 {
		return what + ": too few samples", 0, false
	}
	ratio := last / first
	return fmt.Sprintf("mean RSS %s %.1f MiB vs %.1f MiB (%+.1f%%)", what, last/(1<<20), first/(1<<20), 100*(ratio-1)), ratio, true
}

func toSecond(d time.Duration) time.Duration { return d.Round(time.Second) }

func soakChecks(cfg soakConfig, res *soakResults, start, end resourceSample) (string, []check) {
	var checks []check
	back := func(name string, startV, endV, allow int) {
		want := fmt.Sprintf("≤ %d (start %d + %d)", startV+allow, startV, allow)
		if allow == 0 {
			want = fmt.Sprintf("%d (the start)", startV)
		}
		checks = append(checks, check{Name: name + " back to start", Want: want, Got: strconv.Itoa(endV), Met: endV <= startV+allow})
	}
	back("goroutines", start.Goroutines, end.Goroutines, resourceAllowance)
	back("fds", start.FDs, end.FDs, resourceAllowance)
	back("sessions", start.Sessions, end.Sessions, 0)

	trend, ratio, ok := rssTrend(res.RSS, cfg.duration)
	checks = append(checks, check{
		Name: "RSS without a trend", Want: fmt.Sprintf("≤ %+.0f%%", 100*rssTrendTolerance), Got: trend,
		Met: ok && ratio <= 1+rssTrendTolerance, ReportOnly: cfg.duration < 2*time.Minute,
	})
	checks = append(checks, check{Name: "unexplained errors", Want: "0", Got: strconv.FormatInt(res.UnexplainedCount, 10), Met: res.UnexplainedCount == 0})

	failures, notHeld := 0, 0
	for _, f := range res.Faults {
		failures += len(f.ReleaseFailures)
		notHeld += f.NotHeld
	}
	checks = append(checks, check{
		Name: "removal-to-release p99", Want: fmt.Sprintf("< %g ms", ms(cfg.releaseTarget)),
		Got: fmt.Sprintf("%.2f ms over %d held queries", res.Release.P99MS, res.Release.Samples),
		Met: res.Release.Samples > 0 && res.Release.P99MS < ms(cfg.releaseTarget),
	})
	checks = append(checks, check{
		Name: "held queries released", Want: "all, within " + releaseWait.String(),
		Got: fmt.Sprintf("%d failed (%d probe queries were not held)", failures, notHeld), Met: failures == 0,
	})
	checks = append(checks, check{
		Name: firedMetric + " series back to start", Want: strconv.Itoa(res.FiredSeriesStart),
		Got: strconv.Itoa(res.FiredSeriesEnd), Met: res.FiredSeriesEnd <= res.FiredSeriesStart, ReportOnly: true,
	})
	var never []string
	for _, f := range res.Faults {
		if f.Added > 0 && f.Fired == 0 {
			never = append(never, f.Label)
		}
	}
	got := "all"
	if len(never) > 0 {
		got = "never fired: " + strings.Join(never, ", ")
	}
	checks = append(checks, check{Name: "every fault fired", Want: "all", Got: got, Met: len(never) == 0})
	return trend, checks
}

func printSoak(w io.Writer, cfg soakConfig, res *soakResults) {
	fmt.Fprintf(w, "\nSoak: %d sessions (%d victims, %d bystanders) + 1 probe through pgchaos -> PgBouncer (transaction pooling) -> PostgreSQL,\n",
		cfg.sessions, cfg.victims, cfg.sessions-cfg.victims)
	fmt.Fprintf(w, "pgbench -b simple-update -c %d -R %d beside them; one fault every %s on the victims for %s; %d operations by the sessions\n",
		cfg.pgbenchClients, cfg.rate, cfg.interval, cfg.duration, res.Operations)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "sample\telapsed\tgoroutines\tfds\tRSS MiB\theap MiB\tsessions\ton loops\ton goroutines\tvictim errors\tunexplained\t")
	for _, s := range res.Samples {
		loops, gor := "-", "-"
		if s.Relays != nil {
			loops, gor = strconv.Itoa(s.Relays["loop"]), strconv.Itoa(s.Relays["goroutine"])
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.1f\t%.1f\t%d\t%s\t%s\t%d\t%d\t\n", s.Label, (time.Duration(s.ElapsedSeconds) * time.Second).String(),
			s.Goroutines, s.FDs, mib(s.RSS), mib(s.HeapInuse), s.Sessions, loops, gor, s.VictimErrors, s.Unexplained)
	}
	tw.Flush()
	fmt.Fprintln(w, "goroutines: go_goroutines; fds: /proc/PID/fd; RSS: VmRSS; heap: go_memstats_heap_inuse_bytes (at start and end: the lowest over 3 GCs); sessions: pgchaos_sessions_active; end: after every session closed and every rule removed")
	if r := res.RelaysAfterRules; r != nil {
		fmt.Fprintf(w, "5 s after the last rule went, before the sessions closed: %d sessions on loops, %d on goroutines\n", r["loop"], r["goroutine"])
	}

	fmt.Fprintf(w, "\nFaults (each matched application_name %s; victim errors by the fault in place, or last removed, when the failed operation began)\n", victimMatch)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "fault\tadded\tfired\tvictim errors\treleases\tp50 ms\tmax ms\tvictims held meanwhile\tnot held\trelease failures\t")
	for _, f := range res.Faults {
		rel, p50, mx, herd, nh, fails := "-", "-", "-", "-", "-", "-"
		if f.ReleaseMS != nil || f.NotHeld > 0 || len(f.ReleaseFailures) > 0 {
			l := latencies(f.ReleaseMS)
			rel, p50, mx = strconv.Itoa(l.Samples), fmt.Sprintf("%.2f", l.P50MS), fmt.Sprintf("%.2f", l.MaxMS)
			nh, fails = strconv.Itoa(f.NotHeld), strconv.Itoa(len(f.ReleaseFailures))
			var sum int64
			for _, h := range f.ReleaseHerd {
				sum += h
			}
			if len(f.ReleaseHerd) > 0 {
				herd = strconv.FormatInt(sum/int64(len(f.ReleaseHerd)), 10)
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", f.Label, f.Added, f.Fired, f.VictimErrors, rel, p50, mx, herd, nh, fails)
	}
	tw.Flush()
	for _, f := range res.Faults {
		for _, msg := range f.ReleaseFailures {
			fmt.Fprintf(w, "release failure: %s\n", msg)
		}
	}
	fmt.Fprintf(w, "removal-to-release (DELETE of the probe's own rule returned -> its held query completed, victims still held): %d samples, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		res.Release.Samples, res.Release.P50MS, res.Release.P99MS, res.Release.MaxMS)
	fmt.Fprintf(w, "DELETE /rules/NAME itself: %d calls, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		res.RuleRemoval.Samples, res.RuleRemoval.P50MS, res.RuleRemoval.P99MS, res.RuleRemoval.MaxMS)
	if p := res.Pgbench; p != nil {
		fmt.Fprintf(w, "pgbench: %d transactions, %.1f tps, %d failed, exit status %d\n", p.Transactions, p.TPS, p.Failed, p.ExitStatus)
	}
	fmt.Fprintf(w, "victim errors (explained): %d; unexplained errors: %d\n", res.VictimErrors, res.UnexplainedCount)
	for _, e := range res.Unexplained {
		fmt.Fprintf(w, "  %s (+%.1fs, fault %q) %s %s: %s\n", e.Time.Format("15:04:05.000"), e.ElapsedSeconds, e.Fault, e.Client, e.Op, e.Error)
	}
	if n := res.UnexplainedCount - int64(len(res.Unexplained)); n > 0 {
		fmt.Fprintf(w, "  ... and %d more\n", n)
	}

	if n := len(res.LeftSessions); n > 0 {
		fmt.Fprintf(w, "sessions still open at the end (%d):\n", n)
		for i, s := range res.LeftSessions {
			if i == 20 {
				fmt.Fprintf(w, "  ... and %d more\n", n-i)
				break
			}
			fmt.Fprintf(w, "  id %d %s %s/%s started +%.1fs, relay %s, tx %s, messages %d/%d, bytes %d/%d\n", s.ID, s.Client, s.Database, s.ApplicationName,
				s.Started.Sub(res.startTime).Seconds(), s.Relay, s.TxStatus, s.MessagesIn, s.MessagesOut, s.BytesIn, s.BytesOut)
		}
	}
	fmt.Fprintln(w, "\nTargets")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\twant\tgot\tverdict\t")
	missed := 0
	for _, c := range res.Checks {
		v := verdict(c.Met, "")
		if c.ReportOnly {
			v = "report only"
		} else if !c.Met {
			missed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", c.Name, c.Want, c.Got, v)
	}
	tw.Flush()
	if missed == 0 {
		fmt.Fprintln(w, "soak targets: all met")
	} else {
		fmt.Fprintf(w, "soak targets: %d NOT MET\n", missed)
	}
}
