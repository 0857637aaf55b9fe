// Package runner executes an experiment: it brings up the target and the
// proxies, runs the workloads, checks the steady state, carries out the
// method, heals and measures recovery, runs the verifiers and — always —
// the rollbacks, and writes the reports.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pgchaos/pgchaos/control"
	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
	"github.com/pgchaos/pgchaos/experiments/verify"
	"github.com/pgchaos/pgchaos/experiments/workload"
	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// Exit codes of a run, as pgchaos run documents them.
const (
	ExitPass        = 0
	ExitFailed      = 1
	ExitInvalid     = 2
	ExitSetup       = 3
	ExitInterrupted = 130
)

// Options tune a run.
type Options struct {
	// Out receives progress lines.
	Out io.Writer
	// Logger receives the proxies' logs (nil: discarded).
	Logger *slog.Logger
	// Embedded runs against a throwaway PostgreSQL whatever the file's target says.
	Embedded bool
	// PGBinDir locates PostgreSQL's binaries for an embedded target.
	PGBinDir string
	// Seed makes rule probabilities reproducible: the same seed draws the
	// same faults. pgchaos run picks a random one unless --seed is given,
	// and every report records it.
	Seed int64
	// StatusEvery is how often a progress line is printed (default 5s;
	// 1s with Live).
	StatusEvery time.Duration
	// Live keeps one status line at the bottom of a terminal, rewritten in
	// place, instead of printing progress lines.
	Live bool
	// API secures the clients of remote proxies' control APIs: their
	// bearer token, the roots that verify an https API.
	API []control.ClientOption
	// Version and Vars go into the reports as they are given (Vars with
	// any URL password masked).
	Version string
	Vars    map[string]string
	// Observe hears the statements, results and ReadyForQuery messages of
	// the in-process proxies (faults.Options.Observe): pgchaos explore
	// learns the fault points from it.
	Observe func(proxy string, s *faults.Session, m *faults.Message)
	// LookupHost resolves the name of a proxy's dns to its instances'
	// addresses (nil: the system's resolver).
	LookupHost func(ctx context.Context, host string) ([]string, error)
}

// StepResult is what one step did.
type StepResult struct {
	Phase string    `json:"phase"`
	Name  string    `json:"name"`
	Kind  string    `json:"kind"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Error string    `json:"error,omitempty"`
	// Detail is what the step found or did (e.g. resolve_prepared's counts).
	Detail any `json:"detail,omitempty"`
}

// ProbeResult is one steady-state probe.
type ProbeResult struct {
	Phase string `json:"phase"` // before or after
	Name  string `json:"name"`
	Pass  bool   `json:"pass"`
	Value any    `json:"value"`
	Error string `json:"error,omitempty"`
	// Took is how long the query took.
	Took time.Duration `json:"took_ns"`
}

// FaultWindow is when an injected rule was in place.
type FaultWindow struct {
	Rule  string    `json:"rule"`
	Proxy string    `json:"proxy,omitempty"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Fired int64     `json:"fired"`
	// Instances are the counts of each instance of a remote proxy that
	// Fired adds up.
	Instances []InstanceFired `json:"instances,omitempty"`
}

// SecondCount is the operations that ended in one second of the run.
type SecondCount struct {
	Second  int `json:"second"`
	OK      int `json:"ok"`
	Fail    int `json:"fail"`
	Unknown int `json:"unknown"`
}

// WorkloadTimeline is one workload's seconds.
type WorkloadTimeline struct {
	Name    string          `json:"name"`
	Seconds []SecondLatency `json:"seconds"`
}

// SecondLatency is the operations of one workload that ended in one second
// of the run, by outcome, and the 50th and 99th percentiles of their
// latency in milliseconds (0 without operations).
type SecondLatency struct {
	SecondCount
	P50MS float64 `json:"p50_ms"`
	P99MS float64 `json:"p99_ms"`
}

// Result is the journal of a run.
type Result struct {
	Experiment string `json:"experiment"`
	Source     string `json:"source"`
	// Seed is the seed the rules drew from: --seed reproduces the run.
	Seed int64 `json:"seed"`
	// Version is pgchaos's, Hostname the machine's, and Vars the --var
	// values the file was read with (passwords in URLs masked).
	Version      string            `json:"pgchaos_version,omitempty"`
	Hostname     string            `json:"hostname,omitempty"`
	Vars         map[string]string `json:"vars,omitempty"`
	Pass         bool              `json:"pass"`
	Phase        string            `json:"phase"` // the phase that failed, or "done"
	Problem      string            `json:"problem,omitempty"`
	Interrupted  bool              `json:"interrupted"`
	SetupFailed  bool              `json:"setup_failed"`
	Started      time.Time         `json:"started"`
	Ended        time.Time         `json:"ended"`
	Probes       []ProbeResult     `json:"steady_state"`
	Steps        []StepResult      `json:"steps"`
	FaultWindows []FaultWindow     `json:"fault_windows"`
	RecoveryTime time.Duration     `json:"recovery_time_ns"`
	Recovered    bool              `json:"recovered"`
	Verdicts     []verify.Verdict  `json:"verdicts"`
	// During are the samples of the during probes.
	During     []DuringResult `json:"during,omitempty"`
	Rollbacks  []StepResult   `json:"rollbacks"`
	Operations map[string]int `json:"operations"`
	PerSecond  []SecondCount  `json:"per_second"`
	// Workloads are each workload's operations per second, with their
	// latency percentiles: the timeline of the HTML report.
	Workloads []WorkloadTimeline `json:"workloads,omitempty"`
	// MethodEnd is when the method ended and recovery began.
	MethodEnd time.Time `json:"method_end"`
	// LeftArmed are the rules that could not be removed from an instance
	// of a remote proxy.
	LeftArmed []LeftArmed `json:"left_armed,omitempty"`
	// NotOK are the first operations that did not succeed, as evidence.
	NotOK []history.Op `json:"not_ok,omitempty"`
	// history is every operation (WriteHistory writes it).
	history []history.Op
}

// ExitCode maps the result to pgchaos run's exit status.
func (r *Result) ExitCode() int {
	switch {
	case r.Interrupted:
		return ExitInterrupted
	case r.SetupFailed:
		return ExitSetup
	case r.Pass:
		return ExitPass
	}
	return ExitFailed
}

// run is the state of one run.
type run struct {
	exp  *experiments.Experiment
	opts Options
	res  *Result
	env  *environment
	hist *history.History

	mu      sync.Mutex
	windows map[string]*FaultWindow // active injected rules by name
	// healing counts removals under way (a duration's timer may be
	// removing a rule from a remote proxy as recovery starts); healAll
	// waits on healed until none is, so "faults healed" is true when it
	// is said. Both go with mu.
	healing   int
	healed    *sync.Cond
	workloads map[string]workload.Workload
	// during are the during probes' samples so far (under mu).
	during []DuringResult
	// finished is closed, per workload, when its Run returns.
	finished map[string]chan struct{}
	started  time.Time
	// methodEnd is when the method ended and recovery began.
	methodEnd time.Time
	// startTimeline is the serving node's timeline when the method
	// began; promotions are the promote steps that ran (under mu).
	startTimeline int64
	startServing  string
	promotions    []verify.Step
	// backups are the base backups taken, oldest first, and points the
	// restore points made (under mu).
	backups []*pgtest.Backup
	points  map[string]verify.Window
	// current is the step under way, since currentStart, and currentOut
	// its command's output (under mu): the status line of a run whose
	// application is a step rather than a workload.
	current      string
	currentStart time.Time
	currentOut   *workload.OutputTail
	// leftJudged is how many of res.LeftArmed the verifiers saw (under mu).
	leftJudged int
	// faultsUntil is when the last fault injected for a duration ends.
	faultsUntil time.Time
	// outMu keeps progress lines whole: steps, timers and the status line
	// write from different goroutines.
	outMu      sync.Mutex
	statusLine string // the live status line currently shown
	phase      string
}

func (r *run) logf(format string, args ...any) {
	if r.opts.Out == nil {
		return
	}
	r.outMu.Lock()
	defer r.outMu.Unlock()
	if r.statusLine != "" {
		fmt.Fprint(r.opts.Out, "\r\033[K")
	}
	fmt.Fprintf(r.opts.Out, "[%6.1fs] %s\n", time.Since(r.started).Seconds(), fmt.Sprintf(format, args...))
	if r.statusLine != "" {
		fmt.Fprint(r.opts.Out, r.statusLine)
	}
}

// setPhase names the phase the live status line shows.
func (r *run) setPhase(p string) {
	r.outMu.Lock()
	r.phase = p
	r.outMu.Unlock()
}

// showStatus rewrites the live status line in place.
func (r *run) showStatus(line string) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	r.statusLine = line
	fmt.Fprint(r.opts.Out, "\r\033[K"+line)
}

// clearStatus removes the live status line for good.
func (r *run) clearStatus() {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	if r.statusLine != "" {
		fmt.Fprint(r.opts.Out, "\r\033[K")
		r.statusLine = ""
	}
}

// fail records the first problem of the run.
func (r *run) fail(phase string, err error) {
	if r.res.Phase == "done" || r.res.Phase == "" {
		r.res.Phase = phase
		r.res.Problem = err.Error()
	}
	r.res.Pass = false
	r.logf("%s: %v", phase, err)
}

// Run executes exp. ctx being cancelled (Ctrl-C) stops the method early;
// rollbacks still run, and the result says it was interrupted.
func Run(ctx context.Context, exp *experiments.Experiment, opts Options) *Result {
	if opts.StatusEvery <= 0 {
		opts.StatusEvery = 5 * time.Second
		if opts.Live {
			opts.StatusEvery = time.Second
		}
	}
	if opts.Out == nil {
		opts.Live = false
	}
	r := &run{
		exp: exp, opts: opts, hist: &history.History{},
		res:       &Result{Experiment: exp.Name, Source: exp.Source, Seed: opts.Seed, Version: opts.Version, Vars: maskedVars(opts.Vars), Pass: true, Phase: "done", Started: time.Now()},
		windows:   map[string]*FaultWindow{},
		points:    map[string]verify.Window{},
		workloads: map[string]workload.Workload{},
		finished:  map[string]chan struct{}{},
		started:   time.Now(),
	}
	r.healed = sync.NewCond(&r.mu)
	r.res.Hostname, _ = os.Hostname()
	for _, p := range exp.During {
		r.during = append(r.during, DuringResult{Name: p.Name, While: p.While, Must: p.Must, Samples: []DuringSample{}})
	}
	defer func() { r.res.Ended = time.Now() }()
	// Cleanup, rollbacks and teardown must run even after Ctrl-C.
	bg := context.WithoutCancel(ctx)

	r.logf("experiment %q, seed %d (--seed %d draws the same faults)", exp.Name, opts.Seed, opts.Seed)
	// Setup cut short by Ctrl-C was interrupted, not broken.
	setupFailed := func(err error) {
		r.res.SetupFailed = true
		r.res.Interrupted = ctx.Err() != nil
		r.fail("setup", err)
	}
	env, err := startEnvironment(ctx, exp, opts)
	if err != nil {
		setupFailed(err)
		return r.res
	}
	r.env = env
	env.leftArmed = func(l []LeftArmed) {
		r.mu.Lock()
		r.res.LeftArmed = append(r.res.LeftArmed, l...)
		r.mu.Unlock()
	}
	defer env.close()
	defer r.rollbacks(bg)
	for _, name := range env.remoteOrder {
		if rp := env.remote[name]; len(rp.instances) > 1 {
			var urls []string
			for _, in := range rp.instances {
				urls = append(urls, in.url)
			}
			r.logf("proxy %s: %d instances (%s); rules go to all of them, clients connect to each in turn", name, len(urls), strings.Join(urls, ", "))
		}
	}

	if err := r.setup(ctx); err != nil {
		setupFailed(err)
		return r.res
	}
	runCtx, stopWorkloads := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for name, w := range r.workloads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(r.finished[name])
			if err := w.Run(runCtx); err != nil && runCtx.Err() == nil {
				r.logf("workload %s: %v", w.Name(), err)
			}
		}()
	}
	statusDone := make(chan struct{})
	go r.status(runCtx, statusDone)
	stop := func() {
		stopWorkloads()
		wg.Wait()
		<-statusDone
		r.clearStatus()
	}

	r.setPhase("steady state")
	if !r.steadyState(ctx, "before") {
		r.fail("steady_state", errors.New("the steady-state hypothesis did not hold before the method"))
		stop()
		r.finish(bg)
		return r.res
	}
	r.setPhase("method")
	r.startServing = r.env.serving
	if r.env.serving != "" {
		if tli, _, err := verify.NodeTimeline(ctx, r.env.verifyDSN); err == nil {
			r.startTimeline = tli
		}
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go r.watch(watchCtx, watched)
	r.method(ctx)
	stopWatch()
	<-watched
	r.methodEnd = time.Now()
	r.setPhase("recovery")
	r.recover(ctx)
	stop()
	if ctx.Err() != nil {
		r.res.Interrupted = true
		r.fail("interrupted", ctx.Err())
	}
	r.verify(bg)
	r.finish(bg)
	return r.res
}

// finish fills the operation counts.
func (r *run) finish(ctx context.Context) {
	ops := r.hist.Ops()
	r.res.history = ops
	counts := history.Counts(ops)
	r.res.Operations = map[string]int{"ok": counts[history.OK], "fail": counts[history.Fail], "unknown": counts[history.Unknown]}
	last := 0
	for _, op := range ops {
		if op.Outcome != history.OK && len(r.res.NotOK) < 20 {
			r.res.NotOK = append(r.res.NotOK, op)
		}
		last = max(last, secondOf(op, r.started))
	}
	r.res.Workloads = timelines(ops, r.started, last)
	// The run's seconds are its workloads' added up.
	if len(ops) > 0 {
		r.res.PerSecond = make([]SecondCount, last+1)
		for s := range r.res.PerSecond {
			r.res.PerSecond[s].Second = s
		}
		for _, w := range r.res.Workloads {
			for s, c := range w.Seconds {
				r.res.PerSecond[s].OK += c.OK
				r.res.PerSecond[s].Fail += c.Fail
				r.res.PerSecond[s].Unknown += c.Unknown
			}
		}
	}
	r.res.MethodEnd = r.methodEnd
}

// secondOf is the second of the run in which op ended.
func secondOf(op history.Op, started time.Time) int {
	return max(int(op.End.Sub(started).Seconds()), 0)
}

// add counts one operation of outcome o.
func (c *SecondCount) add(o history.Outcome) {
	switch o {
	case history.OK:
		c.OK++
	case history.Fail:
		c.Fail++
	case history.Unknown:
		c.Unknown++
	}
}

// timelines are each workload's seconds 0..last, with their percentiles.
func timelines(ops []history.Op, started time.Time, last int) []WorkloadTimeline {
	type sec struct {
		c   SecondCount
		lat []time.Duration
	}
	byName := map[string][]sec{}
	var names []string
	for _, op := range ops {
		secs, ok := byName[op.Workload]
		if !ok {
			names = append(names, op.Workload)
			secs = make([]sec, last+1)
			for i := range secs {
				secs[i].c.Second = i
			}
		}
		i := min(secondOf(op, started), last)
		secs[i].c.add(op.Outcome)
		secs[i].lat = append(secs[i].lat, op.Latency)
		byName[op.Workload] = secs
	}
	sort.Strings(names)
	var out []WorkloadTimeline
	for _, n := range names {
		w := WorkloadTimeline{Name: n}
		for _, s := range byName[n] {
			sl := SecondLatency{SecondCount: s.c}
			if len(s.lat) > 0 {
				slices.Sort(s.lat)
				sl.P50MS = ms(s.lat[(len(s.lat)-1)/2])
				sl.P99MS = ms(s.lat[(len(s.lat)*99-1)/100])
			}
			w.Seconds = append(w.Seconds, sl)
		}
		out = append(out, w)
	}
	return out
}

// maskedVars are vars with the password of every URL in them masked: a
// DSN given with --var must not land in a CI artifact with its secret.
func maskedVars(vars map[string]string) map[string]string {
	if len(vars) == 0 {
		return nil
	}
	out := map[string]string{}
	for k, v := range vars {
		if u, err := url.Parse(v); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), "xxxxx")
				v = u.String()
			}
		}
		out[k] = v
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (r *run) setup(ctx context.Context) error {
	for i, st := range r.exp.Setup {
		res := r.step(ctx, "setup", i, st)
		if res.Error != "" {
			return fmt.Errorf("setup step %s: %s", res.Name, res.Error)
		}
	}
	runID := fmt.Sprintf("r%s", time.Now().UTC().Format("20060102t150405"))
	for _, spec := range r.exp.Workloads {
		dsns, err := r.env.dsnsThrough(spec.Through)
		if err != nil {
			return fmt.Errorf("workload %s: %w", spec.Name, err)
		}
		wenv := workload.Env{DSN: dsns[0], SetupDSN: r.env.setupDSN, RunID: runID, History: r.hist, Logger: r.opts.Logger}
		if len(dsns) > 1 {
			wenv.DSNs = dsns
		}
		w, err := workload.New(spec, wenv)
		if err != nil {
			return fmt.Errorf("workload %s: %w", spec.Name, err)
		}
		if err := w.Setup(ctx); err != nil {
			return fmt.Errorf("workload %s: setup: %w", spec.Name, err)
		}
		r.workloads[spec.Name] = w
		r.finished[spec.Name] = make(chan struct{})
	}
	return nil
}

// status prints a progress line now and then.
func (r *run) status(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(r.opts.StatusEvery)
	defer t.Stop()
	prev := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			ops := r.hist.Ops()
			c := history.Counts(ops)
			r.mu.Lock()
			var active []string
			for name := range r.windows {
				active = append(active, name)
			}
			r.mu.Unlock()
			rate := float64(len(ops)-prev) / r.opts.StatusEvery.Seconds()
			prev = len(ops)
			faultsNow := "none"
			if len(active) > 0 {
				faultsNow = strings.Join(active, ", ")
			}
			if len(r.workloads) == 0 {
				// No operations to count: say what the step under way does.
				r.mu.Lock()
				step, since, out := r.current, r.currentStart, r.currentOut
				r.mu.Unlock()
				if step == "" {
					continue
				}
				line := fmt.Sprintf("status: step %s running for %s; active faults: %s", step, time.Since(since).Round(time.Second), faultsNow)
				if out != nil {
					if last := out.LastLine(); last != "" {
						line += "; last output: " + last
					}
				}
				if r.opts.Live {
					r.showStatus(line)
				} else {
					r.logf("%s", line)
				}
				continue
			}
			if r.opts.Live {
				r.outMu.Lock()
				phase := r.phase
				r.outMu.Unlock()
				r.showStatus(fmt.Sprintf("%6.1fs  %-12s %5.0f ops/s  ok %d  fail %d  unknown %d  faults: %s",
					time.Since(r.started).Seconds(), phase, rate, c[history.OK], c[history.Fail], c[history.Unknown], faultsNow))
				continue
			}
			r.logf("status: %.0f ops/s, ok %d, fail %d, unknown %d; active faults: %s", rate, c[history.OK], c[history.Fail], c[history.Unknown], faultsNow)
		}
	}
}

func (r *run) rollbacks(ctx context.Context) {
	// Faults first: a rollback must not run through a fault left behind.
	r.healAll(ctx)
	r.mu.Lock()
	late := r.res.LeftArmed[min(r.leftJudged, len(r.res.LeftArmed)):]
	r.mu.Unlock()
	if len(late) > 0 {
		// Left armed after the verifiers judged (a run that ended before
		// its recovery): the run fails all the same.
		r.fail("rollbacks", errors.New(late[0].String()))
	}
	for i, st := range r.exp.Rollbacks {
		res := r.step(ctx, "rollbacks", i, st)
		r.res.Rollbacks = append(r.res.Rollbacks, res)
		if res.Error != "" {
			r.fail("rollbacks", fmt.Errorf("rollback %s: %s", res.Name, res.Error))
		}
	}
}
