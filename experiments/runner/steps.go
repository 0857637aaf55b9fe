package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/verify"
	"github.com/pgchaos/pgchaos/experiments/workload"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// step runs one setup, method or rollback step.
func (r *run) step(ctx context.Context, phase string, i int, st experiments.Step) StepResult {
	name := st.Name
	if name == "" {
		name = fmt.Sprintf("%s[%d] %s", phase, i, st.Action.Kind())
	}
	if st.After > 0 {
		sleep(ctx, time.Duration(st.After))
	}
	// The step starts after its after: rto and the fault windows count
	// from here.
	res := StepResult{Phase: phase, Name: name, Kind: st.Action.Kind(), Start: time.Now()}
	r.logf("%s: %s", phase, name)
	r.mu.Lock()
	r.current, r.currentStart, r.currentOut = name, res.Start, nil
	r.mu.Unlock()
	detail, err := r.act(ctx, phase, st.Action)
	r.mu.Lock()
	r.current, r.currentOut = "", nil
	r.mu.Unlock()
	res.End, res.Detail = time.Now(), detail
	if err != nil {
		res.Error = err.Error()
	}
	return res
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (r *run) act(ctx context.Context, phase string, a experiments.Action) (any, error) {
	env := r.env
	switch a.(type) {
	case *experiments.Crash, *experiments.Start, *experiments.Promote, *experiments.Rewind,
		*experiments.BaseBackup, *experiments.Restore:
		// Rollbacks run without a deadline of their own, and these wait on
		// servers: bounded, so that a stuck server cannot hang the run.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, drillStepTimeout)
		defer cancel()
	}
	switch a := a.(type) {
	case *experiments.Inject:
		if err := env.putRule(ctx, a.Rule, time.Duration(a.Duration)); err != nil {
			return nil, err
		}
		w := &FaultWindow{Rule: a.Rule.Name, Proxy: a.Rule.Proxy, Start: time.Now()}
		r.mu.Lock()
		r.windows[a.Rule.Name] = w
		r.mu.Unlock()
		if a.Duration > 0 {
			r.mu.Lock()
			if end := w.Start.Add(time.Duration(a.Duration)); end.After(r.faultsUntil) {
				r.faultsUntil = end
			}
			r.mu.Unlock()
			name := a.Rule.Name
			time.AfterFunc(time.Duration(a.Duration), func() { r.healByName(context.WithoutCancel(ctx), name) })
		}
		return nil, nil
	case *experiments.Remove:
		r.mu.Lock()
		w := r.windows[a.Rule]
		r.mu.Unlock()
		if w == nil {
			return nil, fmt.Errorf("rule %s is not in place", a.Rule)
		}
		r.healByName(ctx, a.Rule)
		return nil, nil
	case *experiments.Wait:
		// Cut short by an interruption, a wait has not failed: the run
		// says it was interrupted.
		sleep(ctx, time.Duration(a.Duration))
		return nil, nil
	case *experiments.RunSQL:
		dsn := a.DSN
		switch {
		case a.Node != "":
			var err error
			if dsn, err = env.nodeDSN(a.Node); err != nil {
				return nil, err
			}
		case dsn == "" && phase == "setup":
			dsn = env.setupDSN
		case dsn == "":
			dsn = env.dsn
		}
		return nil, execSQL(ctx, dsn, a.SQL)
	case *experiments.Crash:
		n, err := env.node(a.Node)
		if err != nil {
			return nil, err
		}
		return map[string]string{"node": a.Node, "mode": a.Mode}, n.Crash(a.Mode)
	case *experiments.Start:
		n, err := env.node(a.Node)
		if err != nil {
			return nil, err
		}
		return map[string]string{"node": a.Node}, n.Start(ctx)
	case *experiments.Promote:
		start := time.Now()
		if n, err := env.node(a.Node); err == nil {
			if err := n.Promote(ctx, a.Wait); err != nil {
				return nil, err
			}
		} else {
			// A node of the user's own: pg_promote, as a runbook would.
			dsn, err := env.nodeDSN(a.Node)
			if err != nil {
				return nil, err
			}
			if err := promoteSQL(ctx, dsn, a.Wait); err != nil {
				return nil, fmt.Errorf("promote %s: %w", a.Node, err)
			}
		}
		r.mu.Lock()
		r.promotions = append(r.promotions, verify.Step{Name: a.Node, Window: verify.Window{Start: start, End: time.Now()}})
		r.mu.Unlock()
		if err := env.serve(a.Node); err != nil {
			return nil, err
		}
		r.logf("%s: %s promoted; it serves from now on", phase, a.Node)
		return map[string]any{"node": a.Node, "serving": a.Node}, nil
	case *experiments.Rewind:
		n, err := env.node(a.Node)
		if err != nil {
			return nil, err
		}
		src, err := env.node(a.Source)
		if err != nil {
			return nil, err
		}
		return map[string]string{"node": a.Node, "source": a.Source}, n.Rewind(ctx, src)
	case *experiments.WaitFor:
		return r.waitFor(ctx, a)
	case *experiments.PgBouncer:
		if env.bouncer == nil {
			return nil, errors.New("no embedded PgBouncer")
		}
		cctx, cancel := context.WithTimeout(ctx, pgbouncerTimeout)
		defer cancel()
		if a.Upstream != "" {
			up, err := env.resolve(a.Upstream)
			if err != nil {
				return nil, err
			}
			return map[string]string{"upstream": up}, env.bouncer.SetUpstream(cctx, up)
		}
		command := a.Command
		if a.Database != "" {
			command += " " + a.Database
		}
		if err := env.bouncer.Admin(cctx, command); err != nil {
			if a.Command == "PAUSE" {
				// A PAUSE cut short stays in force in PgBouncer: lift it,
				// or every client waits for the rest of the run.
				resume := strings.Replace(command, "PAUSE", "RESUME", 1)
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				if rerr := env.bouncer.Admin(rctx, resume); rerr != nil {
					r.logf("%s: %s after the failed PAUSE: %v", phase, resume, rerr)
				}
				rcancel()
			}
			if cctx.Err() == context.DeadlineExceeded {
				return nil, fmt.Errorf("pgbouncer %s did not return within %s", command, pgbouncerTimeout)
			}
			return nil, err
		}
		return map[string]string{"command": command}, nil
	case *experiments.BaseBackup:
		name := cmp.Or(a.Node, env.serving)
		n, err := env.node(name)
		if err != nil {
			return nil, err
		}
		b, err := env.cluster.BaseBackup(ctx, n)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.backups = append(r.backups, b)
		r.mu.Unlock()
		return map[string]string{"node": name, "dir": b.Dir()}, nil
	case *experiments.RestorePoint:
		dsn, err := env.nodeDSN("")
		if err != nil {
			return nil, err
		}
		start := time.Now()
		if err := execSQL(ctx, dsn, "SELECT pg_create_restore_point("+quoteLiteral(a.Name)+")"); err != nil {
			return nil, err
		}
		end := time.Now()
		// The restore point's WAL goes to the archive now, not when the
		// segment fills.
		if err := execSQL(ctx, dsn, "SELECT pg_switch_wal()"); err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.points[a.Name] = verify.Window{Start: start, End: end}
		r.mu.Unlock()
		return map[string]string{"point": a.Name, "node": env.serving}, nil
	case *experiments.Restore:
		// The newest backup taken before the point: recovery cannot stop
		// before the end of the backup it starts from.
		var b *pgtest.Backup
		r.mu.Lock()
		point, made := r.points[a.Point]
		for _, bk := range r.backups {
			if bk.Taken().Before(point.Start) {
				b = bk
			}
		}
		r.mu.Unlock()
		if !made {
			return nil, fmt.Errorf("restore point %q was not made", a.Point)
		}
		if b == nil {
			return nil, fmt.Errorf("no base backup was taken before restore point %q", a.Point)
		}
		n, err := env.cluster.Restore(ctx, b, pgtest.RestoreTarget{Name: a.Point}, a.Node)
		if err != nil {
			return nil, err
		}
		if err := env.serve(n.Name()); err != nil {
			return nil, err
		}
		r.logf("%s: %s restored to %q from the backup of %s; it serves from now on", phase, a.Node, a.Point, b.Node())
		return map[string]string{"node": a.Node, "point": a.Point, "backup_of": b.Node()}, nil
	case *experiments.PauseReplay:
		dsn, err := env.nodeDSN(a.Node)
		if err != nil {
			return nil, err
		}
		return nil, execSQL(ctx, dsn, "SELECT pg_wal_replay_pause()")
	case *experiments.ResumeReplay:
		dsn, err := env.nodeDSN(a.Node)
		if err != nil {
			return nil, err
		}
		return nil, execSQL(ctx, dsn, "SELECT pg_wal_replay_resume()")
	case *experiments.RunCommand:
		out, err := r.command(ctx, a)
		// A runbook's own account of what it did belongs in the log.
		for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			if line != "" {
				r.logf("%s:   | %s", phase, line)
			}
		}
		return out, err
	case *experiments.KillSessions:
		n, err := env.killSessions(ctx, a)
		return map[string]int{"killed": n}, err
	case *experiments.SwitchUpstream:
		return nil, env.switchUpstream(a)
	case *experiments.WaitWorkloads:
		return nil, r.waitWorkloads(ctx, a)
	case *experiments.PauseWorkload:
		r.workloads[a.Workload].Pause()
		return nil, nil
	case *experiments.ResumeWorkload:
		r.workloads[a.Workload].Resume()
		return nil, nil
	case *experiments.ResolvePrepared:
		v, err := verify.ResolvePrepared(ctx, *a, env.setupDSN, r.hist)
		if err == nil {
			r.logf("%s: %s", phase, v.Summary)
		}
		return v, err
	}
	return nil, fmt.Errorf("unknown step %s", a.Kind())
}

// waitFor polls a query until its value meets what is expected.
func (r *run) waitFor(ctx context.Context, a *experiments.WaitFor) (any, error) {
	dsn, err := r.env.nodeDSN(a.Node)
	if err != nil {
		return nil, err
	}
	timeout := time.Duration(a.Timeout)
	start := time.Now()
	for polls := 1; ; polls++ {
		value, err := queryText(ctx, dsn, a.SQL)
		ok, why := false, ""
		if err == nil {
			ok, why = verify.Meets(a.Expect, value, 0)
		}
		if ok {
			return map[string]any{"value": shownValue(value), "polls": polls, "took": time.Since(start).String()}, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Since(start) > timeout {
			if err != nil {
				return nil, fmt.Errorf("did not hold within %s: %v", timeout, err)
			}
			return nil, fmt.Errorf("did not hold within %s: %s", timeout, why)
		}
		sleep(ctx, waitForEvery)
	}
}

// promoteSQL promotes a standby with pg_promote; with wait, until it
// accepts writes (at most a minute).
func promoteSQL(ctx context.Context, dsn string, wait bool) error {
	ctx, cancel := context.WithTimeout(ctx, 70*time.Second)
	defer cancel()
	v, err := queryValueWithin(ctx, dsn, fmt.Sprintf("SELECT pg_promote(wait => %t, wait_seconds => 60)", wait))
	if err != nil {
		return err
	}
	if v != true {
		return errors.New("pg_promote returned false: not promoted within 60 s")
	}
	return nil
}

// promotedAt is when a primary's latest promotion happened: the time its
// newest timeline history file was written.
func promotedAt(ctx context.Context, dsn string) (time.Time, error) {
	v, err := queryValue(ctx, dsn, "SELECT max(modification) FROM pg_ls_waldir() WHERE name LIKE '%.history'")
	if err != nil {
		return time.Time{}, err
	}
	t, ok := v.(time.Time)
	if !ok {
		return time.Time{}, errors.New("no timeline history file")
	}
	return t, nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// pgbouncerTimeout bounds a pgbouncer step: PAUSE waits for the clients'
// transactions (session pooling: their sessions) to end.
const pgbouncerTimeout = 30 * time.Second

// drillStepTimeout bounds a drill step that waits on servers.
const drillStepTimeout = 5 * time.Minute

// waitForEvery is how often wait_for polls.
const waitForEvery = 100 * time.Millisecond

func execSQL(ctx context.Context, dsn, sql string) error {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(cctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(cctx, sql, pgx.QueryExecModeSimpleProtocol)
	return err
}

// command runs a shell command with the run's DSNs in its environment.
func (r *run) command(ctx context.Context, a *experiments.RunCommand) (string, error) {
	timeout := time.Duration(a.Timeout)
	if timeout <= 0 {
		timeout = time.Minute
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, "sh", "-c", a.Command)
	// PGCHAOS_DSN is the target's here, for files written before
	// PGCHAOS_TARGET_DSN; an exec workload's PGCHAOS_DSN goes through its
	// proxy, and PGCHAOS_PROXY_<NAME>_DSN is that from a step.
	cmd.Env = append(os.Environ(), "PGCHAOS_DSN="+r.env.dsn, "PGCHAOS_TARGET_DSN="+r.env.dsn,
		"PGCHAOS_SETUP_DSN="+r.env.setupDSN, "PGCHAOS_VERIFY_DSN="+r.env.verifyDSN)
	cmd.Env = append(cmd.Env, r.env.nodeEnv()...)
	if r.env.srv != nil {
		cmd.Env = append(cmd.Env, "PGCHAOS_API=http://"+r.env.srv.APIAddr().String())
	}
	if r.exp.Source != "" {
		if dir, err := filepath.Abs(filepath.Dir(r.exp.Source)); err == nil {
			cmd.Env = append(cmd.Env, "PGCHAOS_EXPERIMENT_DIR="+dir)
		}
	}
	for name, addr := range r.env.listen {
		key := "PGCHAOS_PROXY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		cmd.Env = append(cmd.Env, key+"="+addr)
		if dsn, err := r.env.dsnThrough(name); err == nil {
			cmd.Env = append(cmd.Env, key+"_DSN="+dsn)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// The output's tail, also for the status line while the command runs.
	out := workload.NewOutputTail(4096)
	cmd.Stdout, cmd.Stderr = out, out
	r.mu.Lock()
	r.currentOut = out
	r.mu.Unlock()
	err := cmd.Run()
	tail := out.Raw()
	if cctx.Err() == context.DeadlineExceeded {
		return tail, fmt.Errorf("timed out after %s", timeout)
	}
	if err != nil {
		return tail, fmt.Errorf("%v: %s", err, strings.TrimSpace(tail))
	}
	return tail, nil
}

// method runs the method's steps on their schedule.
func (r *run) method(ctx context.Context) {
	start := time.Now()
	for i, st := range r.exp.Method {
		if st.At != nil {
			sleep(ctx, time.Until(start.Add(time.Duration(*st.At))))
		}
		if ctx.Err() != nil {
			return
		}
		res := r.step(ctx, "method", i, st)
		r.res.Steps = append(r.res.Steps, res)
		r.sampleSteps(ctx, res.Name)
		if res.Error != "" {
			// A step cut short by Ctrl-C did not fail on its own: Run
			// records the interruption.
			if ctx.Err() == nil {
				r.fail("method", fmt.Errorf("step %s failed: %s", res.Name, res.Error))
			}
			return
		}
	}
	// The method lasts until the faults it injected for a while are over.
	r.mu.Lock()
	until := r.faultsUntil
	r.mu.Unlock()
	sleep(ctx, time.Until(until))
}

// healByName removes one injected rule and closes its window.
func (r *run) healByName(ctx context.Context, name string) {
	r.mu.Lock()
	w := r.windows[name]
	delete(r.windows, name)
	if w != nil {
		r.healing++
	}
	r.mu.Unlock()
	if w == nil {
		return
	}
	defer func() {
		r.mu.Lock()
		r.healing--
		r.healed.Broadcast()
		r.mu.Unlock()
	}()
	rule := r.ruleOf(name).Rule
	// Counters go with the rule: read them first.
	w.Fired, w.Instances = r.env.fired(ctx, rule)
	err := r.env.removeRule(ctx, rule)
	w.End = time.Now()
	r.mu.Lock()
	r.res.FaultWindows = append(r.res.FaultWindows, *w)
	r.mu.Unlock()
	if err != nil {
		r.logf("fault %s fired %s%s and was NOT removed everywhere: %v", name, times(w.Fired), perInstance(w.Instances), err)
		return
	}
	r.logf("fault %s removed after firing %s%s", name, times(w.Fired), perInstance(w.Instances))
}

// healAll removes every fault still in place.
func (r *run) healAll(ctx context.Context) {
	r.mu.Lock()
	var names []string
	for name := range r.windows {
		names = append(names, name)
	}
	r.mu.Unlock()
	// At once: a remote instance that does not answer holds its rules'
	// removals for up to removeDeadline each.
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Go(func() { r.healByName(ctx, name) })
	}
	wg.Wait()
	r.mu.Lock()
	for r.healing > 0 {
		r.healed.Wait()
	}
	r.mu.Unlock()
}

// ruleOf finds an injected rule by name, in the setup (a fault armed
// before the workloads start) or the method.
func (r *run) ruleOf(name string) (rule experiments.Inject) {
	for _, steps := range [][]experiments.Step{r.exp.Setup, r.exp.Method} {
		for _, st := range steps {
			if in, ok := st.Action.(*experiments.Inject); ok && in.Rule.Name == name {
				return *in
			}
		}
	}
	return rule
}

// recover heals every fault and waits for the steady state to hold again.
func (r *run) recover(ctx context.Context) {
	r.healAll(ctx)
	if name, changed := r.env.findServing(ctx); changed {
		r.logf("recovery: %s accepts writes: it serves from now on", name)
		// A promotion no step made (a runbook's): when it happened is
		// when the new timeline's history file was written.
		if at, err := promotedAt(ctx, r.env.verifyDSN); err == nil {
			r.mu.Lock()
			r.promotions = append(r.promotions, verify.Step{Name: name, Window: verify.Window{Start: at, End: at}})
			r.mu.Unlock()
		} else {
			r.logf("recovery: when %s was promoted is not known (%v): split-brain writes are not looked for", name, err)
		}
	}
	deadline := time.Duration(r.exp.Recovery.Deadline)
	if deadline <= 0 {
		deadline = time.Minute
	}
	start := time.Now()
	r.logf("recovery: faults healed; waiting up to %s for the steady state (%s)", deadline, r.hypothesis())
	for {
		if r.steadyState(ctx, "") {
			r.res.RecoveryTime, r.res.Recovered = time.Since(start), true
			r.steadyState(ctx, "after") // record the passing probes
			r.logf("recovery: steady state holds again after %s", r.res.RecoveryTime.Round(time.Millisecond))
			return
		}
		if time.Since(start) > deadline || ctx.Err() != nil {
			r.res.RecoveryTime = time.Since(start)
			r.steadyState(ctx, "after")
			r.fail("recovery", fmt.Errorf("the steady state did not hold again within %s", deadline))
			return
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

// steadyState runs the probes; phase "" checks without recording.
func (r *run) steadyState(ctx context.Context, phase string) bool {
	ok := true
	for _, p := range r.exp.SteadyState.Probes {
		// As the sql verifier judges a value: its text, so that numeric,
		// bigint and float compare alike.
		start := time.Now()
		value, err := queryText(ctx, r.env.verifyDSN, p.SQL)
		took := time.Since(start)
		pass, why := false, ""
		if err == nil {
			pass, why = verify.Meets(p.Expect, value, p.Tolerance)
		} else {
			why = err.Error()
		}
		if !pass {
			ok = false
		}
		if phase != "" {
			pr := ProbeResult{Phase: phase, Name: p.Name, Pass: pass, Value: shownValue(value), Took: took}
			if err != nil {
				pr.Error = err.Error()
			}
			r.res.Probes = append(r.res.Probes, pr)
			if !pass {
				r.logf("steady state %s: probe %s failed: %s", phase, p.Name, why)
			}
		}
	}
	return ok
}

func queryValue(ctx context.Context, dsn, sql string) (any, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return queryValueWithin(cctx, dsn, sql)
}

// queryValueWithin is queryValue bounded by ctx alone.
func queryValueWithin(cctx context.Context, dsn, sql string) (any, error) {
	conn, err := pgx.Connect(cctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(cctx))
	var v any
	err = conn.QueryRow(cctx, sql, pgx.QueryExecModeSimpleProtocol).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errors.New("no rows")
	}
	return v, err
}

// queryText runs sql and returns the first column of its first row as
// PostgreSQL writes it (nil for NULL): what the sql verifier judges too.
func queryText(ctx context.Context, dsn, sql string) (*string, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(cctx))
	results, err := conn.PgConn().Exec(cctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	for i := len(results) - 1; i >= 0; i-- {
		if res := results[i]; len(res.FieldDescriptions) > 0 {
			if len(res.Rows) == 0 || len(res.Rows[0]) == 0 {
				return nil, errors.New("no rows")
			}
			if res.Rows[0][0] == nil {
				return nil, nil
			}
			s := string(res.Rows[0][0])
			return &s, nil
		}
	}
	return nil, errors.New("no rows")
}

// shownValue is a probe's value in the journal: its text, or nil for NULL.
func shownValue(v *string) any {
	if v == nil {
		return nil
	}
	return *v
}

// waitWorkloads waits for workloads to finish on their own. One still
// running after the timeout is not live: the step fails, naming it.
func (r *run) waitWorkloads(ctx context.Context, a *experiments.WaitWorkloads) error {
	names := a.Workloads
	if len(names) == 0 {
		for _, w := range r.exp.Workloads {
			names = append(names, w.Name)
		}
	}
	timer := time.NewTimer(time.Duration(a.Timeout))
	defer timer.Stop()
	for _, name := range names {
		select {
		case <-r.finished[name]:
		case <-timer.C:
			return fmt.Errorf("workload %s did not finish within %s", name, a.Timeout)
		case <-ctx.Done():
			return nil // the run says it was interrupted
		}
	}
	return nil
}

// times is a count of firings in words: never, once, twice, 3 times.
func times(n int64) string {
	switch n {
	case 0:
		return "never"
	case 1:
		return "once"
	case 2:
		return "twice"
	}
	return fmt.Sprintf("%d times", n)
}

// hypothesis says what the steady state expects, for the recovery line.
func (r *run) hypothesis() string {
	if len(r.exp.SteadyState.Probes) == 0 {
		return "no probes: it holds at once"
	}
	var parts []string
	for _, p := range r.exp.SteadyState.Probes {
		parts = append(parts, p.Name+" "+describeExpect(p.Expect, p.Tolerance))
	}
	return strings.Join(parts, ", ")
}

// describeExpect is an expectation in words: "= 1000", "≥ 1", "1 to 5".
func describeExpect(e experiments.Expect, tol float64) string {
	var parts []string
	if e.HasEquals {
		eq := fmt.Sprintf("= %v", e.Equals)
		if e.Equals == nil {
			eq = "is NULL"
		}
		if tol > 0 {
			eq += fmt.Sprintf(" ± %v", tol)
		}
		parts = append(parts, eq)
	}
	if e.Min != nil {
		parts = append(parts, fmt.Sprintf("≥ %v", *e.Min))
	}
	if e.Max != nil {
		parts = append(parts, fmt.Sprintf("≤ %v", *e.Max))
	}
	return strings.Join(parts, " and ")
}
