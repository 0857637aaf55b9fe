package main

// The memory mode: what a session costs pgchaos while idle, once it has
// carried a large message, and whether the process gives memory back once
// its sessions are gone, with PgBouncer's own figures beside it from the
// same run; and how often each process wakes up with nothing to do.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// Targets of issue 7 ("Bounded memory").
const (
	idleTargetBytes     = 8 << 10
	bigTargetBytes      = 64 << 10
	afterCloseTolerance = 0.10
	// openConcurrency bounds how many sessions are being opened at once.
	openConcurrency = 32
	// bigConcurrency bounds how many sessions send their large messages
	// at once, per target.
	bigConcurrency = 16
	// gcCycles is how many garbage collections heapAfterGC waits for.
	gcCycles = 3
	// gcTimeout bounds that wait; Go forces a collection every 2 minutes.
	gcTimeout = 3 * time.Minute
	// gcSettle is how long after those collections RSS is read again,
	// for the runtime's background scavenger to return what they freed.
	gcSettle = 10 * time.Second
)

type memoryConfig struct {
	sessions    int
	bigSessions int
	bigSize     int
	closeWait   time.Duration
	window      time.Duration
	jsonPath    string
}

func parseMemoryFlags(args []string) (memoryConfig, error) {
	var cfg memoryConfig
	fs := flag.NewFlagSet("bench memory", flag.ContinueOnError)
	fs.IntVar(&cfg.sessions, "sessions", 1000, "idle sessions opened to each of pgchaos and PgBouncer")
	fs.IntVar(&cfg.bigSessions, "big-sessions", 200, "of those, sessions that then send a large Parse and a large Bind")
	fs.IntVar(&cfg.bigSize, "big-size", 900<<10, "bytes of SQL in the large Parse, and of the parameter in the large Bind")
	fs.DurationVar(&cfg.closeWait, "close-wait", time.Minute, "how long after all sessions closed RSS is read again")
	fs.DurationVar(&cfg.window, "window", 10*time.Second, "length of each idle wake-up measurement")
	fs.StringVar(&cfg.jsonPath, "json", "", "also write the results as JSON to `FILE`")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	switch {
	case fs.NArg() > 0:
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case cfg.sessions < 1:
		return cfg, fmt.Errorf("--sessions %d: want at least 1", cfg.sessions)
	case cfg.bigSessions < 1 || cfg.bigSessions > cfg.sessions:
		return cfg, fmt.Errorf("--big-sessions %d: want 1 to --sessions (%d)", cfg.bigSessions, cfg.sessions)
	case cfg.bigSize < 1:
		return cfg, fmt.Errorf("--big-size %d: want at least 1", cfg.bigSize)
	case cfg.closeWait < 0:
		return cfg, fmt.Errorf("--close-wait %s: want 0 or more", cfg.closeWait)
	case cfg.window < time.Second:
		return cfg, fmt.Errorf("--window %s: want at least 1s", cfg.window)
	}
	return cfg, nil
}

// wakeups is one idle window of one process.
type wakeups struct {
	Sessions        int     `json:"sessions"`
	Seconds         float64 `json:"seconds"`
	ContextSwitches uint64  `json:"context_switches"`
	PerSecond       float64 `json:"wakeups_per_second"`
	CPUTicks        uint64  `json:"cpu_ticks"`
	CPUPercent      float64 `json:"cpu_percent_of_a_core"`
}

// processMemory is one process's figures. Heap figures are pgchaos's only
// (go_memstats_heap_inuse_bytes after garbage collections); sizes are in
// bytes.
type processMemory struct {
	Target      string `json:"target"`
	BaselineRSS int64  `json:"baseline_rss"`
	IdleRSS     int64  `json:"idle_rss"`
	BigRSS      int64  `json:"after_big_rss"`
	ClosedRSS   int64  `json:"after_close_rss"`
	// IdlePerSession is (IdleRSS - BaselineRSS) / sessions; BigExtra is
	// (BigRSS - IdleRSS) / big sessions, and BigPerSession their sum: what
	// a session that once carried the large messages costs once idle.
	IdlePerSession   float64 `json:"idle_rss_per_session"`
	BigExtra         float64 `json:"after_big_rss_extra_per_session"`
	BigPerSession    float64 `json:"after_big_rss_per_session"`
	AfterCloseChange float64 `json:"after_close_rss_change"`

	BaselineHeap int64 `json:"baseline_heap_inuse,omitempty"`
	IdleHeap     int64 `json:"idle_heap_inuse,omitempty"`
	BigHeap      int64 `json:"after_big_heap_inuse,omitempty"`
	ClosedHeap   int64 `json:"after_close_heap_inuse,omitempty"`
	// ClosedRSSAfterGC is pgchaos's RSS gcSettle after the garbage
	// collections that measured ClosedHeap: what the Go runtime gives
	// back once a collection has seen the heap without the sessions.
	ClosedRSSAfterGC  int64   `json:"after_close_rss_after_gc,omitempty"`
	IdleHeapPer       float64 `json:"idle_heap_inuse_per_session,omitempty"`
	BigHeapExtra      float64 `json:"after_big_heap_inuse_extra_per_session,omitempty"`
	BigHeapPer        float64 `json:"after_big_heap_inuse_per_session,omitempty"`
	HeapGCsIncomplete bool    `json:"heap_gcs_incomplete,omitempty"`

	Idle0 wakeups `json:"idle_wakeups_no_sessions"`
	IdleN wakeups `json:"idle_wakeups_idle_sessions"`
	// Relays counts pgchaos's idle sessions by relay (loop, goroutine).
	Relays map[string]int `json:"relays,omitempty"`
}

type memoryResults struct {
	Config struct {
		Sessions         int     `json:"sessions"`
		BigSessions      int     `json:"big_sessions"`
		BigSize          int     `json:"big_size"`
		CloseWaitSeconds float64 `json:"close_wait_seconds"`
		WindowSeconds    float64 `json:"window_seconds"`
	} `json:"config"`
	Environment map[string]string `json:"environment"`
	Pgchaos     *processMemory    `json:"pgchaos"`
	PgBouncer   *processMemory    `json:"pgbouncer"`
	Checks      []check           `json:"targets"`
}

// check is one target and whether the run met it.
type check struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
	// ReportOnly checks are shown but fail nothing.
	ReportOnly bool `json:"report_only,omitempty"`
}

func runMemory(ctx context.Context, cfg memoryConfig, w io.Writer) (err error) {
	st, err := startStack(ctx, map[string]string{"max_connections": "100", "autovacuum": "off", "jit": "off"})
	defer func() { err = errors.Join(err, st.close()) }()
	if err != nil {
		return err
	}
	bouncerSettings := map[string]string{
		"max_client_conn":   strconv.Itoa(cfg.sessions + 100),
		"default_pool_size": "20",
	}
	// Two PgBouncers with the same settings: pgchaos's upstream, and the
	// one measured, which only the direct clients use, so that pgchaos's
	// upstream connections do not count in PgBouncer's figures and both
	// can be measured in the same windows.
	progress("starting PgBouncer (transaction pooling), twice")
	upstream, err := st.startBouncer(ctx, "pgchaos's PgBouncer", st.pg.Addr(), bouncerSettings)
	if err != nil {
		return err
	}
	bouncer, err := st.startBouncer(ctx, "pgbouncer", st.pg.Addr(), bouncerSettings)
	if err != nil {
		return err
	}
	progress("starting pgchaos in front of PgBouncer")
	chaos, api, err := st.startPgchaos(ctx, addrOf(upstream.port))
	if err != nil {
		return err
	}

	res := &memoryResults{
		Environment: environment(ctx, st.root, st.pgbench, st.pg),
		Pgchaos:     &processMemory{Target: "pgchaos"},
		PgBouncer:   &processMemory{Target: "pgbouncer"},
	}
	res.Config.Sessions, res.Config.BigSessions, res.Config.BigSize = cfg.sessions, cfg.bigSessions, cfg.bigSize
	res.Config.CloseWaitSeconds, res.Config.WindowSeconds = cfg.closeWait.Seconds(), cfg.window.Seconds()
	pc, pb := res.Pgchaos, res.PgBouncer

	// One session each first: what a process sets up once, on its first
	// client, is not a session's cost.
	for _, t := range []target{chaos, bouncer} {
		conns, err := openIdle(ctx, t, 1)
		if err != nil {
			return err
		}
		closeAll(conns)
	}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return err
	}

	// rss reads both processes' RSS; heap waits for pgchaos's GCs first.
	rss := func(chaosRSS, bouncerRSS *int64) error {
		var err1, err2 error
		*chaosRSS, err1 = procRSS(chaos.pid)
		*bouncerRSS, err2 = procRSS(bouncer.pid)
		return errors.Join(err1, err2)
	}
	heap := func(what string, out *int64) error {
		progress("%s: waiting for %d garbage collections in pgchaos", what, gcCycles)
		h, complete, err := heapAfterGC(ctx, api)
		if !complete {
			pc.HeapGCsIncomplete = true
		}
		*out = h
		return err
	}

	if err := heap("baseline", &pc.BaselineHeap); err != nil {
		return err
	}
	if err := rss(&pc.BaselineRSS, &pb.BaselineRSS); err != nil {
		return err
	}
	progress("baseline: pgchaos RSS %.1f MiB, heap in use %.1f MiB; PgBouncer RSS %.1f MiB",
		mib(pc.BaselineRSS), mib(pc.BaselineHeap), mib(pb.BaselineRSS))

	progress("idle wake-ups, no sessions: %s", cfg.window)
	if err := measureWakeups(ctx, cfg.window, 0, map[int]*wakeups{chaos.pid: &pc.Idle0, bouncer.pid: &pb.Idle0}); err != nil {
		return err
	}

	progress("opening %d idle sessions to pgchaos and %d to PgBouncer", cfg.sessions, cfg.sessions)
	var chaosConns, bouncerConns []*pgconn.PgConn
	defer func() { closeAll(chaosConns); closeAll(bouncerConns) }()
	if err := both(
		func() (err error) { chaosConns, err = openIdle(ctx, chaos, cfg.sessions); return err },
		func() (err error) { bouncerConns, err = openIdle(ctx, bouncer, cfg.sessions); return err },
	); err != nil {
		return err
	}
	if err := sleepCtx(ctx, 2*time.Second); err != nil {
		return err
	}
	if list, err := api.sessions(ctx); err == nil {
		pc.Relays = relays(list)
	}
	if err := heap("idle sessions", &pc.IdleHeap); err != nil {
		return err
	}
	if err := rss(&pc.IdleRSS, &pb.IdleRSS); err != nil {
		return err
	}

	progress("idle wake-ups, %d idle sessions: %s", cfg.sessions, cfg.window)
	if err := measureWakeups(ctx, cfg.window, cfg.sessions, map[int]*wakeups{chaos.pid: &pc.IdleN, bouncer.pid: &pb.IdleN}); err != nil {
		return err
	}

	progress("%d sessions each: a %d-byte unnamed Parse + Sync, then a Bind of a %d-byte parameter", cfg.bigSessions, cfg.bigSize, cfg.bigSize)
	if err := both(
		func() error { return sendBig(ctx, chaosConns[:cfg.bigSessions], cfg.bigSize) },
		func() error { return sendBig(ctx, bouncerConns[:cfg.bigSessions], cfg.bigSize) },
	); err != nil {
		return err
	}
	if err := sleepCtx(ctx, 2*time.Second); err != nil {
		return err
	}
	if err := heap("after the large messages", &pc.BigHeap); err != nil {
		return err
	}
	if err := rss(&pc.BigRSS, &pb.BigRSS); err != nil {
		return err
	}

	progress("closing every session, then waiting %s", cfg.closeWait)
	closeAll(chaosConns)
	closeAll(bouncerConns)
	chaosConns, bouncerConns = nil, nil
	if err := sleepCtx(ctx, cfg.closeWait); err != nil {
		return err
	}
	// RSS first: waiting for GCs makes pgchaos allocate.
	if err := rss(&pc.ClosedRSS, &pb.ClosedRSS); err != nil {
		return err
	}
	if err := heap("after close", &pc.ClosedHeap); err != nil {
		return err
	}
	if err := sleepCtx(ctx, gcSettle); err != nil {
		return err
	}
	if pc.ClosedRSSAfterGC, err = procRSS(chaos.pid); err != nil {
		return err
	}

	for _, p := range []*processMemory{pc, pb} {
		p.IdlePerSession = float64(p.IdleRSS-p.BaselineRSS) / float64(cfg.sessions)
		p.BigExtra = float64(p.BigRSS-p.IdleRSS) / float64(cfg.bigSessions)
		p.BigPerSession = p.IdlePerSession + p.BigExtra
		p.AfterCloseChange = float64(p.ClosedRSS)/float64(p.BaselineRSS) - 1
	}
	pc.IdleHeapPer = float64(pc.IdleHeap-pc.BaselineHeap) / float64(cfg.sessions)
	pc.BigHeapExtra = float64(pc.BigHeap-pc.IdleHeap) / float64(cfg.bigSessions)
	pc.BigHeapPer = pc.IdleHeapPer + pc.BigHeapExtra

	res.Checks = memoryChecks(pc)
	printMemory(w, cfg, res)
	if cfg.jsonPath != "" {
		return writeJSON(cfg.jsonPath, res)
	}
	return nil
}

func memoryChecks(pc *processMemory) []check {
	within := func(v, limit float64) bool { return v <= limit }
	return []check{
		{Name: "idle session, RSS", Want: "≤ 8 KiB", Got: fmt.Sprintf("%.2f KiB", kib(pc.IdlePerSession)), Met: within(pc.IdlePerSession, idleTargetBytes)},
		{Name: "idle session, heap in use", Want: "≤ 8 KiB", Got: fmt.Sprintf("%.2f KiB", kib(pc.IdleHeapPer)), Met: within(pc.IdleHeapPer, idleTargetBytes)},
		{Name: "after a large Parse/Bind, idle, RSS", Want: "≤ 64 KiB", Got: fmt.Sprintf("%.2f KiB", kib(pc.BigPerSession)), Met: within(pc.BigPerSession, bigTargetBytes)},
		{Name: "after a large Parse/Bind, idle, heap in use", Want: "≤ 64 KiB", Got: fmt.Sprintf("%.2f KiB", kib(pc.BigHeapPer)), Met: within(pc.BigHeapPer, bigTargetBytes)},
		{Name: "RSS after close vs before", Want: "≤ +10%", Got: fmt.Sprintf("%+.1f%%", 100*pc.AfterCloseChange), Met: within(pc.AfterCloseChange, afterCloseTolerance)},
	}
}

// heapAfterGC polls pgchaos's /metrics until gcCycles collections have
// run and returns the lowest go_memstats_heap_inuse_bytes seen after the
// first: the heap as a collection leaves it, without the garbage that
// builds up between collections. The scrapes themselves allocate (about
// 200 KB each), which is what makes the collections come soon on an idle
// process. complete is false if gcTimeout passed first.
func heapAfterGC(ctx context.Context, api rulesAPI) (heap int64, complete bool, err error) {
	deadline := time.Now().Add(gcTimeout)
	start := -1.0
	low := int64(-1)
	for {
		m, err := api.metrics(ctx)
		if err != nil {
			return 0, false, err
		}
		gcs, h := m["go_gc_duration_seconds_count"], int64(m["go_memstats_heap_inuse_bytes"])
		switch {
		case start < 0:
			start = gcs
		case gcs > start && (low < 0 || h < low):
			low = h
		}
		if gcs >= start+gcCycles {
			return low, true, nil
		}
		if time.Now().After(deadline) {
			if low < 0 {
				low = h
			}
			return low, false, nil
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return 0, false, err
		}
	}
}

// measureWakeups counts context switches and CPU ticks of each process
// over one window in which nothing is sent to either.
func measureWakeups(ctx context.Context, window time.Duration, sessions int, procs map[int]*wakeups) error {
	type reading struct{ cs, ticks uint64 }
	read := func() (map[int]reading, error) {
		out := map[int]reading{}
		for pid := range procs {
			cs, err := procContextSwitches(pid)
			if err != nil {
				return nil, err
			}
			ticks, err := cpuTicks(pid)
			if err != nil {
				return nil, err
			}
			out[pid] = reading{cs, ticks}
		}
		return out, nil
	}
	before, err := read()
	if err != nil {
		return err
	}
	start := time.Now()
	if err := sleepCtx(ctx, window); err != nil {
		return err
	}
	after, err := read()
	if err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	for pid, w := range procs {
		b, a := before[pid], after[pid]
		*w = wakeups{Sessions: sessions, Seconds: secs, ContextSwitches: a.cs - b.cs, CPUTicks: a.ticks - b.ticks}
		w.PerSecond = float64(w.ContextSwitches) / secs
		w.CPUPercent = 100 * float64(w.CPUTicks) / clockTicks / secs
	}
	return nil
}

// openIdle opens n sessions to t, each logged in and having run one query.
func openIdle(ctx context.Context, t target, n int) ([]*pgconn.PgConn, error) {
	conns := make([]*pgconn.PgConn, n)
	errs := make([]error, n)
	sem := make(chan struct{}, openConcurrency)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			c, err := pgconn.Connect(cctx, pgtest.ConnString(addrOf(t.port), pgtest.SuperUser, "", "postgres")+"&application_name=pgchaos-bench-memory")
			if err == nil {
				_, err = c.Exec(cctx, "SELECT 1").ReadAll()
				if err != nil {
					c.Close(context.Background())
				}
			}
			conns[i], errs[i] = c, err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeAll(conns)
		return nil, fmt.Errorf("opening %d sessions to %s: %w", n, t.name, err)
	}
	return conns, nil
}

func closeAll(conns []*pgconn.PgConn) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, openConcurrency)
	for _, c := range conns {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c.Close(ctx)
		}()
	}
	wg.Wait()
}

// sendBig has each session send an unnamed Parse of size bytes of SQL
// (with Describe and Sync), then, in a batch of its own, a Parse, a Bind
// carrying a size-byte parameter, Execute and Sync. The second Parse makes
// the Bind independent of which server connection PgBouncer picks.
func sendBig(ctx context.Context, conns []*pgconn.PgConn, size int) error {
	sql := "SELECT length('" + strings.Repeat("x", max(0, size-len("SELECT length('')"))) + "')"
	param := []byte(strings.Repeat("y", size))
	sem := make(chan struct{}, bigConcurrency)
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			qctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if _, err := c.Prepare(qctx, "", sql, nil); err != nil {
				errs[i] = fmt.Errorf("large Parse: %w", err)
				return
			}
			r := c.ExecParams(qctx, "SELECT length($1::text)", [][]byte{param}, nil, nil, nil).Read()
			if r.Err != nil {
				errs[i] = fmt.Errorf("large Bind: %w", r.Err)
			} else if len(r.Rows) != 1 || string(r.Rows[0][0]) != strconv.Itoa(size) {
				errs[i] = fmt.Errorf("large Bind: got %q, want the length %d", r.Rows, size)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// both runs f and g at once and joins their errors.
func both(f, g func() error) error {
	var errF error
	done := make(chan struct{})
	go func() { errF = f(); close(done) }()
	errG := g()
	<-done
	return errors.Join(errF, errG)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func printMemory(w io.Writer, cfg memoryConfig, res *memoryResults) {
	pc, pb := res.Pgchaos, res.PgBouncer
	fmt.Fprintf(w, "\nMemory per session: %d idle sessions to each; then %d of them sent a %d-byte Parse and a %d-byte Bind; RSS %s after all closed\n",
		cfg.sessions, cfg.bigSessions, cfg.bigSize, cfg.bigSize, cfg.closeWait)
	fmt.Fprintln(w, "PgBouncer: its own instance (transaction pooling), clients connect to it directly; pgchaos runs in front of a second, identical one.")
	fmt.Fprintf(w, "RSS: VmRSS deltas / sessions; heap: go_memstats_heap_inuse_bytes, the lowest seen over %d GCs; after-big = idle + (after - idle) / %d\n", gcCycles, cfg.bigSessions)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tpgchaos\tPgBouncer\ttarget (pgchaos)\tverdict\t")
	v := func(c check) string { return verdict(c.Met, "") }
	checks := res.Checks
	fmt.Fprintf(tw, "idle session, RSS\t%.2f KiB\t%.2f KiB\t%s\t%s\t\n", kib(pc.IdlePerSession), kib(pb.IdlePerSession), checks[0].Want, v(checks[0]))
	fmt.Fprintf(tw, "idle session, heap in use\t%.2f KiB\t-\t%s\t%s\t\n", kib(pc.IdleHeapPer), checks[1].Want, v(checks[1]))
	fmt.Fprintf(tw, "after a large Parse/Bind, idle, RSS\t%.2f KiB\t%.2f KiB\t%s\t%s\t\n", kib(pc.BigPerSession), kib(pb.BigPerSession), checks[2].Want, v(checks[2]))
	fmt.Fprintf(tw, "after a large Parse/Bind, idle, heap in use\t%.2f KiB\t-\t%s\t%s\t\n", kib(pc.BigHeapPer), checks[3].Want, v(checks[3]))
	fmt.Fprintf(tw, "RSS before any session\t%.1f MiB\t%.1f MiB\t\t\t\n", mib(pc.BaselineRSS), mib(pb.BaselineRSS))
	fmt.Fprintf(tw, "RSS, %d idle sessions\t%.1f MiB\t%.1f MiB\t\t\t\n", cfg.sessions, mib(pc.IdleRSS), mib(pb.IdleRSS))
	fmt.Fprintf(tw, "RSS, after the large messages\t%.1f MiB\t%.1f MiB\t\t\t\n", mib(pc.BigRSS), mib(pb.BigRSS))
	fmt.Fprintf(tw, "RSS %s after close\t%.1f MiB (%+.1f%%)\t%.1f MiB (%+.1f%%)\t%s\t%s\t\n", cfg.closeWait,
		mib(pc.ClosedRSS), 100*pc.AfterCloseChange, mib(pb.ClosedRSS), 100*pb.AfterCloseChange, checks[4].Want, v(checks[4]))
	fmt.Fprintf(tw, "RSS after close, then %d GCs and %s\t%.1f MiB (%+.1f%%)\t-\treport\t\t\n", gcCycles, gcSettle,
		mib(pc.ClosedRSSAfterGC), 100*(float64(pc.ClosedRSSAfterGC)/float64(pc.BaselineRSS)-1))
	fmt.Fprintf(tw, "heap in use: before / idle / after large / after close\t%.1f / %.1f / %.1f / %.1f MiB\t-\t\t\t\n",
		mib(pc.BaselineHeap), mib(pc.IdleHeap), mib(pc.BigHeap), mib(pc.ClosedHeap))
	wake := func(x wakeups) string { return fmt.Sprintf("%.1f/s, %.2f%% CPU", x.PerSecond, x.CPUPercent) }
	fmt.Fprintf(tw, "idle wake-ups, no sessions (%s)\t%s\t%s\treport (was 1.2%% CPU)\t\t\n", cfg.window, wake(pc.Idle0), wake(pb.Idle0))
	fmt.Fprintf(tw, "idle wake-ups, %d idle sessions (%s)\t%s\t%s\treport\t\t\n", cfg.sessions, cfg.window, wake(pc.IdleN), wake(pb.IdleN))
	tw.Flush()
	if len(pc.Relays) > 0 {
		fmt.Fprintf(w, "pgchaos's idle sessions by relay: loop %d, goroutine %d\n", pc.Relays["loop"], pc.Relays["goroutine"])
	}
	fmt.Fprintln(w, "wake-ups: voluntary + involuntary context switches summed over /proc/PID/task/*/status; CPU: utime+stime ticks from /proc/PID/stat")
	if pc.HeapGCsIncomplete {
		fmt.Fprintf(w, "note: pgchaos did not run %d garbage collections within %s at some point; its heap figure there is the lowest seen\n", gcCycles, gcTimeout)
	}
	missed := 0
	for _, c := range res.Checks {
		if !c.Met {
			missed++
		}
	}
	if missed == 0 {
		fmt.Fprintln(w, "memory targets: all met")
	} else {
		fmt.Fprintf(w, "memory targets: %d NOT MET\n", missed)
	}
}
