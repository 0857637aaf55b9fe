package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/runner"
	"github.com/pgchaos/pgchaos/experiments/verify"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// These tests run small experiments against the package's PostgreSQL, each
// in a database of its own, and look at what each step did: in the
// database, in files, and in what the workload was told.

var dbSeq atomic.Int64

var notIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// newDB creates a database for the test and returns its DSN.
func newDB(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("r%d_%s", dbSeq.Add(1), notIdent.ReplaceAllString(strings.ToLower(t.Name()), "_"))
	if len(name) > 60 {
		name = name[:60]
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pg.CreateDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	return pg.DSN(pgtest.SuperUser, "", name)
}

// runFile parses src with vars and runs it.
func runFile(t *testing.T, src string, vars map[string]string) *runner.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return runFileCtx(ctx, t, src, vars, &syncWriter{b: &strings.Builder{}})
}

func runFileCtx(ctx context.Context, t *testing.T, src string, vars map[string]string, out *syncWriter) *runner.Result {
	t.Helper()
	exp, err := experiments.Parse([]byte(src), t.Name()+".yaml", vars, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("the test's experiment does not parse:\n%v", err)
	}
	res := runner.Run(ctx, exp, runner.Options{Out: out, StatusEvery: time.Hour})
	t.Log(out.String())
	return res
}

// query returns the first column of the first row.
func query[T any](t *testing.T, dsn, sql string, args ...any) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var v T
	if err := conn.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func step(t *testing.T, steps []runner.StepResult, name string) runner.StepResult {
	t.Helper()
	for _, s := range steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no step %q in %+v", name, steps)
	return runner.StepResult{}
}

func wantPass(t *testing.T, res *runner.Result) {
	t.Helper()
	if !res.Pass || res.ExitCode() != runner.ExitPass {
		t.Fatalf("run failed in %s: %s\nsteps %+v\nverdicts %+v\nrollbacks %+v", res.Phase, res.Problem, res.Steps, res.Verdicts, res.Rollbacks)
	}
}

// inject, wait, remove, sql and exec in a method and in the rollbacks,
// each seen by what it did: the rule refused the workload's inserts from
// its injection to its removal and not outside; the wait lasted; the sql
// and exec steps left their marks.
func TestMethodAndRollbackSteps(t *testing.T) {
	dsn := newDB(t)
	dir := t.TempDir()
	res := runFile(t, `name: steps
target: {dsn: "${var:dsn}"}
proxies: [{name: pg, upstream: target}]
setup:
  - sql: CREATE TABLE ticks (at timestamptz NOT NULL DEFAULT clock_timestamp()); CREATE TABLE marks (k text)
workloads:
  - {name: ticker, type: sql, clients: 1, rate: 50, statements: ["INSERT INTO ticks DEFAULT VALUES"]}
method:
  - name: refuse-ticks
    at: 300ms
    inject:
      rule: {name: refuse, match: {sql: "INSERT INTO ticks"}, action: {type: error, sqlstate: "42501"}}
  - {name: hold, wait: 1s}
  - {name: heal, remove: refuse}
  - {name: after-heal, wait: 1s}
  - {name: mark, sql: "INSERT INTO marks VALUES ('method')"}
  - {name: env, exec: 'printf "%s\n%s\n%s\n%s\n" "$PGCHAOS_PROXY_PG" "$PGCHAOS_DSN" "$PGCHAOS_TARGET_DSN" "$PGCHAOS_PROXY_PG_DSN" > ${var:dir}/env; echo said-so'}
verify:
  - {type: errors, workload: ticker, sqlstate: "42501", min: 10}
rollbacks:
  - {name: unmark, sql: "INSERT INTO marks VALUES ('rollback')"}
  - {name: touch, exec: "touch ${var:dir}/rolled-back"}
`, map[string]string{"dsn": dsn, "dir": dir})
	wantPass(t, res)

	if len(res.FaultWindows) != 1 || res.FaultWindows[0].Rule != "refuse" || res.FaultWindows[0].Fired < 10 {
		t.Fatalf("fault windows %+v: want refuse, fired at least 10 times", res.FaultWindows)
	}
	w := res.FaultWindows[0]
	hold, heal := step(t, res.Steps, "hold"), step(t, res.Steps, "heal")
	if d := hold.End.Sub(hold.Start); d < time.Second {
		t.Errorf("wait: 1s took %v", d)
	}
	// The rule was in place from its step to the remove step, not until
	// the end of the method.
	if w.Start.After(hold.Start) || w.End.Before(heal.Start) || w.End.After(heal.End) {
		t.Errorf("fault window %v..%v; hold started %v, heal ran %v..%v", w.Start, w.End, hold.Start, heal.Start, heal.End)
	}
	// No insert ran while the rule refused them (at 50/s, 1s has about
	// 50), and they ran before it and after it.
	count := func(from, to time.Time) int64 {
		return query[int64](t, dsn, "SELECT count(*) FROM ticks WHERE at > $1 AND at < $2", from, to)
	}
	// An insert decided on just before the rule went in may run a moment
	// after; the margins are a tenth of the window.
	if n := count(w.Start.Add(100*time.Millisecond), w.End.Add(-100*time.Millisecond)); n != 0 {
		t.Errorf("%d inserts ran while the rule refused them", n)
	}
	if n := count(w.End, step(t, res.Steps, "after-heal").End); n < 5 {
		t.Errorf("%d inserts ran in the second after the rule was removed", n)
	}
	for _, op := range res.NotOK {
		if op.SQLState != "42501" || op.Start.Before(w.Start.Add(-100*time.Millisecond)) || !op.Start.Before(w.End) {
			t.Errorf("op %+v failed outside the fault window or not by the rule", op)
		}
	}

	if got := query[string](t, dsn, "SELECT string_agg(k, ',' ORDER BY k) FROM marks"); got != "method,rollback" {
		t.Errorf("marks %q, want the method's and the rollback's", got)
	}
	env, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(env)), "\n")
	if len(lines) != 4 || !regexp.MustCompile(`^127\.0\.0\.1:\d+$`).MatchString(lines[0]) || lines[1] != dsn || lines[2] != dsn {
		t.Fatalf("exec saw PGCHAOS_PROXY_PG, PGCHAOS_DSN and PGCHAOS_TARGET_DSN as %q; want the proxy's address and %s twice", env, dsn)
	}
	// The proxy's full DSN: the target's, at the proxy's address.
	if want := strings.Replace(dsn, pg.Addr(), lines[0], 1); lines[3] != want {
		t.Errorf("PGCHAOS_PROXY_PG_DSN %q, want %q", lines[3], want)
	}
	if d := step(t, res.Steps, "env").Detail; d != "said-so\n" {
		t.Errorf("exec step detail %q, want its output", d)
	}
	if _, err := os.Stat(filepath.Join(dir, "rolled-back")); err != nil {
		t.Errorf("the exec rollback did not run: %v", err)
	}
	if len(res.Rollbacks) != 2 || res.Rollbacks[0].Name != "unmark" || res.Rollbacks[1].Error != "" {
		t.Errorf("rollbacks %+v", res.Rollbacks)
	}
}

// pause_workload holds the workload's clients until resume_workload.
func TestPauseResumeWorkload(t *testing.T) {
	dsn := newDB(t)
	res := runFile(t, `name: pause
target: {dsn: "${var:dsn}"}
setup:
  - sql: CREATE TABLE ticks (at timestamptz NOT NULL DEFAULT clock_timestamp())
workloads:
  - {name: ticker, type: sql, clients: 2, rate: 100, statements: ["INSERT INTO ticks DEFAULT VALUES"]}
method:
  - {name: pause, at: 1s, pause_workload: ticker}
  - {name: paused, wait: 2200ms}
  - {name: resume, resume_workload: ticker}
  - {name: resumed, wait: 1s}
`, map[string]string{"dsn": dsn})
	wantPass(t, res)
	pause, resume, resumed := step(t, res.Steps, "pause"), step(t, res.Steps, "resume"), step(t, res.Steps, "resumed")
	// The journal counts every second of the run, those the pause left
	// without an operation too.
	quiet := 0
	for i, c := range res.PerSecond {
		if c.Second != i {
			t.Fatalf("per_second[%d] is second %d: %+v", i, c.Second, res.PerSecond)
		}
		from := res.Started.Add(time.Duration(i) * time.Second)
		if from.After(pause.End.Add(50*time.Millisecond)) && from.Add(time.Second).Before(resume.Start.Add(-50*time.Millisecond)) {
			if c.OK+c.Fail+c.Unknown > 2 {
				t.Errorf("second %d, inside the pause, counts %+v", i, c)
			}
			quiet++
		}
	}
	if quiet == 0 {
		t.Errorf("no second of per_second %+v lies inside the pause (%v to %v after the start)", res.PerSecond, pause.End.Sub(res.Started), resume.Start.Sub(res.Started))
	}
	count := func(from, to time.Time) int64 {
		return query[int64](t, dsn, "SELECT count(*) FROM ticks WHERE at > $1 AND at < $2", from, to)
	}
	// Each client may have got past the gate just before the pause; no
	// more (at 100/s a second has about 100).
	if n := count(pause.End, resume.Start); n > 2 {
		t.Errorf("%d inserts while the workload was paused", n)
	}
	if n := count(resume.End, resumed.End); n < 1 {
		t.Errorf("%d inserts in the second after resume_workload", n)
	}
	// That it ran at all before the pause is what shows the pause stopped
	// it; how much in the first second is the machine's business.
	if n := count(time.Time{}, pause.Start); n < 1 {
		t.Errorf("%d inserts before the pause", n)
	}
}

// kill_sessions ends the proxy's sessions that match, and its clients see
// their connection go.
func TestKillSessions(t *testing.T) {
	dsn := newDB(t)
	res := runFile(t, `name: kill
target: {dsn: "${var:dsn}"}
proxies: [{name: pg, upstream: target}]
workloads:
  - {name: w, type: sql, clients: 2, rate: 40, statements: ["SELECT 1"]}
method:
  - {name: kill-one, at: 500ms, kill_sessions: {proxy: pg, application_name: "-c1$"}}
  - {name: between, wait: 700ms}
  - {name: kill-all, kill_sessions: {proxy: pg}}
  - {name: after, wait: 700ms}
verify:
  - {type: errors, workload: w, min: 3, window: run}
`, map[string]string{"dsn": dsn})
	wantPass(t, res)
	one, all := step(t, res.Steps, "kill-one"), step(t, res.Steps, "kill-all")
	if got := fmt.Sprint(one.Detail); got != "map[killed:1]" {
		t.Errorf("kill-one: %s, want 1 killed", got)
	}
	if got := fmt.Sprint(all.Detail); got != "map[killed:2]" {
		t.Errorf("kill-all: %s, want 2 killed (the first client reconnected)", got)
	}
	clients := map[int]bool{}
	for _, op := range res.NotOK {
		switch {
		case op.End.Before(one.Start):
			t.Errorf("op %+v failed before any kill", op)
		case op.End.Before(all.Start):
			if op.Client != 1 {
				t.Errorf("op %+v of client %d failed after only client 1's session was killed", op, op.Client)
			}
		default:
			clients[op.Client] = true
		}
	}
	if len(clients) != 2 {
		t.Errorf("after kill-all, clients %v saw an error; want both (not ok: %+v)", clients, res.NotOK)
	}
}

// switch_upstream points a proxy elsewhere: a workload that could not
// connect through it can once it points at the target.
func TestSwitchUpstream(t *testing.T) {
	dsn := newDB(t)
	res := runFile(t, `name: switch
target: {dsn: "${var:dsn}"}
proxies: [{name: pg, upstream: "127.0.0.1:1"}]
workloads:
  - {name: w, type: sql, clients: 1, rate: 20, statements: ["SELECT 1"]}
method:
  - {name: switch, at: 500ms, switch_upstream: {proxy: pg, upstream: target}}
  - {name: after, wait: 2500ms}
verify:
  - {type: errors, workload: w, min: 1, window: run}
`, map[string]string{"dsn": dsn})
	wantPass(t, res)
	sw := step(t, res.Steps, "switch")
	for _, op := range res.NotOK {
		if op.Start.After(sw.End) {
			t.Errorf("op %+v failed after the switch", op)
		}
	}
	if res.Operations["ok"] < 5 {
		t.Errorf("operations %v: want the workload served after the switch", res.Operations)
	}
}

// resolve_prepared commits or rolls back the transactions prepared with a
// gid prefix, and leaves others alone.
func TestResolvePreparedSteps(t *testing.T) {
	dsn := newDB(t)
	prepare := func(gid string) string {
		return fmt.Sprintf(`  - sql: "BEGIN; INSERT INTO t VALUES ('%s'); PREPARE TRANSACTION '%s'"`+"\n", gid, gid)
	}
	res := runFile(t, `name: resolve
target: {dsn: "${var:dsn}"}
setup:
  - sql: CREATE TABLE t (k text)
`+prepare("keep:a")+prepare("keep:b")+prepare("drop:c")+prepare("other:d")+`
method:
  - {name: commit-keep, resolve_prepared: {gid_prefix: "keep:", policy: commit}}
rollbacks:
  - {name: rollback-drop, resolve_prepared: {gid_prefix: "drop:", policy: rollback}}
`, map[string]string{"dsn": dsn})
	defer func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			conn.Exec(ctx, "ROLLBACK PREPARED 'other:d'")
			conn.Close(ctx)
		}
	}()
	wantPass(t, res)
	if got := query[string](t, dsn, "SELECT string_agg(k, ',' ORDER BY k) FROM t"); got != "keep:a,keep:b" {
		t.Errorf("committed rows %q, want keep:a,keep:b", got)
	}
	if got := query[string](t, dsn, "SELECT coalesce(string_agg(gid, ','), '') FROM pg_prepared_xacts WHERE database = current_database()"); got != "other:d" {
		t.Errorf("still prepared: %q, want only other:d", got)
	}
	commit, ok := step(t, res.Steps, "commit-keep").Detail.(verify.Verdict)
	if !ok || commit.Evidence["committed"] != 2 || commit.Evidence["rolled_back"] != 0 {
		t.Errorf("commit-keep: %+v", step(t, res.Steps, "commit-keep").Detail)
	}
	rb, ok := res.Rollbacks[0].Detail.(verify.Verdict)
	if !ok || rb.Evidence["rolled_back"] != 1 || rb.Evidence["committed"] != 0 {
		t.Errorf("rollback-drop: %+v", res.Rollbacks[0].Detail)
	}
}

// A steady-state hypothesis that does not hold stops the run before the
// method: no step runs, the rollbacks do, and the run fails (exit 1) with
// the probe's value as evidence.
func TestSteadyStateFailsBeforeTheMethod(t *testing.T) {
	dsn := newDB(t)
	res := runFile(t, `name: hypothesis
target: {dsn: "${var:dsn}"}
setup:
  - sql: CREATE TABLE marks (k text)
steady_state:
  probes:
    - {name: has-marks, sql: SELECT count(*) FROM marks, expect: {min: 1}}
method:
  - {name: mark, sql: "INSERT INTO marks VALUES ('method')"}
rollbacks:
  - {name: unmark, sql: "INSERT INTO marks VALUES ('rollback')"}
`, map[string]string{"dsn": dsn})
	if res.Pass || res.ExitCode() != runner.ExitFailed || res.Phase != "steady_state" {
		t.Fatalf("pass %v, exit %d, phase %s: want a failed steady state, exit 1", res.Pass, res.ExitCode(), res.Phase)
	}
	if len(res.Steps) != 0 {
		t.Errorf("the method ran: %+v", res.Steps)
	}
	if got := query[string](t, dsn, "SELECT string_agg(k, ',') FROM marks"); got != "rollback" {
		t.Errorf("marks %q, want only the rollback's", got)
	}
	if len(res.Probes) != 1 || res.Probes[0].Pass || res.Probes[0].Phase != "before" || fmt.Sprint(res.Probes[0].Value) != "0" {
		t.Errorf("probes %+v: want has-marks failed before, value 0", res.Probes)
	}
	junit, err := runner.JUnit(res)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(junit), `<testcase classname="steady_state.before" name="has-marks"`) || !strings.Contains(string(junit), `<failure message="probe has-marks: value 0`) {
		t.Errorf("JUnit lacks the failed probe:\n%s", junit)
	}
	if md := runner.Markdown(res); !strings.Contains(md, "❌ failed") || !strings.Contains(md, "**steady_state:**") {
		t.Errorf("summary:\n%s", md)
	}
}

// Probes that hold pass; recovery fails when the steady state does not
// come back within the deadline; a method step that fails stops the
// method and a rollback that fails fails the run.
func TestFailingPhases(t *testing.T) {
	cases := []struct {
		name, phase, body string
		check             func(t *testing.T, res *runner.Result, dsn string)
	}{
		{"recovery", "recovery", `steady_state:
  probes:
    - {name: unmarked, sql: "SELECT count(*) FROM marks WHERE k = 'gone'", expect: {equals: 0}}
    - {name: text, sql: "SELECT 'x'::text", expect: {equals: x}}
method:
  - {name: break, sql: "INSERT INTO marks VALUES ('gone')"}
recovery: {deadline: 1s}
verify:
  - {type: recovery_time, max: 10s}
`, func(t *testing.T, res *runner.Result, dsn string) {
			if res.Recovered || res.RecoveryTime < time.Second {
				t.Errorf("recovered %v after %v: want not recovered after the 1s deadline", res.Recovered, res.RecoveryTime)
			}
			var before, after int
			for _, p := range res.Probes {
				switch {
				case p.Phase == "before" && p.Pass:
					before++
				case p.Phase == "after" && p.Name == "unmarked" && !p.Pass && fmt.Sprint(p.Value) == "1":
					after++
				}
			}
			if before != 2 || after != 1 {
				t.Errorf("probes %+v: want both holding before, unmarked failing after", res.Probes)
			}
			if len(res.Verdicts) != 1 || res.Verdicts[0].Pass {
				t.Errorf("verdicts %+v: recovery_time must fail when the run did not recover", res.Verdicts)
			}
		}},
		{"method step", "method", `method:
  - {name: broken, sql: "INSERT INTO nowhere VALUES (1)"}
  - {name: never, sql: "INSERT INTO marks VALUES ('after')"}
`, func(t *testing.T, res *runner.Result, dsn string) {
			if len(res.Steps) != 1 || !strings.Contains(res.Steps[0].Error, `"nowhere" does not exist`) {
				t.Errorf("steps %+v: want only the broken one, with its error", res.Steps)
			}
			if n := query[int64](t, dsn, "SELECT count(*) FROM marks"); n != 0 {
				t.Errorf("the step after the failed one ran")
			}
		}},
		{"rollback", "rollbacks", `rollbacks:
  - {name: broken, exec: "echo no such luck; exit 3"}
  - {name: next, sql: "INSERT INTO marks VALUES ('rolled')"}
`, func(t *testing.T, res *runner.Result, dsn string) {
			if len(res.Rollbacks) != 2 || !strings.Contains(res.Rollbacks[0].Error, "no such luck") || res.Rollbacks[1].Error != "" {
				t.Errorf("rollbacks %+v: want the broken one's output, and the next one run", res.Rollbacks)
			}
			if n := query[int64](t, dsn, "SELECT count(*) FROM marks"); n != 1 {
				t.Errorf("the rollback after the failed one did not run")
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dsn := newDB(t)
			res := runFile(t, "name: "+tc.name+`
target: {dsn: "${var:dsn}"}
setup:
  - sql: CREATE TABLE marks (k text)
`+tc.body, map[string]string{"dsn": dsn})
			if res.Pass || res.ExitCode() != runner.ExitFailed || res.Phase != tc.phase {
				t.Fatalf("pass %v, exit %d, phase %s (%s): want phase %s, exit 1", res.Pass, res.ExitCode(), res.Phase, res.Problem, tc.phase)
			}
			tc.check(t, res, dsn)
		})
	}
}

// A target that cannot be reached fails the setup: exit 3, not 1.
func TestSetupFails(t *testing.T) {
	res := runFile(t, `name: unreachable
target: {dsn: "postgres://postgres@127.0.0.1:1/postgres?connect_timeout=5"}
setup:
  - sql: SELECT 1
rollbacks:
  - {name: noted, exec: "true"}
`, nil)
	if !res.SetupFailed || res.ExitCode() != runner.ExitSetup || res.Phase != "setup" || !strings.Contains(res.Problem, "127.0.0.1") {
		t.Fatalf("setup failed %v, exit %d, phase %s: %s; want exit 3 naming the address", res.SetupFailed, res.ExitCode(), res.Phase, res.Problem)
	}
	if len(res.Rollbacks) != 1 || res.Rollbacks[0].Error != "" {
		t.Errorf("rollbacks %+v: they run after a failed setup too", res.Rollbacks)
	}
	junit, err := runner.JUnit(res)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(junit), `<testcase classname="run" name="setup"`) {
		t.Errorf("JUnit lacks the setup failure:\n%s", junit)
	}
}

// Interrupted while a setup or method step runs: the run says it was
// interrupted (exit 130), not that the step or the setup failed, and the
// rollbacks run.
func TestInterruptedStep(t *testing.T) {
	cases := []struct{ name, body, phase, waitFor string }{
		{"method", `method:
  - {name: long, wait: 5m}
`, "interrupted", "method: long"},
		{"setup", `  - {name: long, exec: "sleep 300"}
`, "setup", "setup: long"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dsn := newDB(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out := &syncWriter{b: &strings.Builder{}}
			go func() {
				deadline := time.Now().Add(time.Minute)
				for !strings.Contains(out.String(), tc.waitFor) && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				cancel()
			}()
			res := runFileCtx(ctx, t, `name: interrupted
target: {dsn: "${var:dsn}"}
rollbacks:
  - {name: mark, sql: "INSERT INTO marks VALUES ('rollback')"}
setup:
  - sql: CREATE TABLE marks (k text)
`+tc.body, map[string]string{"dsn": dsn}, out)
			if !res.Interrupted || res.ExitCode() != runner.ExitInterrupted || res.Phase != tc.phase {
				t.Fatalf("interrupted %v, exit %d, phase %s (%s): want interrupted in %s, exit 130", res.Interrupted, res.ExitCode(), res.Phase, res.Problem, tc.phase)
			}
			if n := query[int64](t, dsn, "SELECT count(*) FROM marks"); n != 1 {
				t.Errorf("the rollback did not run")
			}
			if md := runner.Markdown(res); !strings.Contains(md, "⚠️ interrupted") || strings.Contains(md, "**method:**") {
				t.Errorf("summary:\n%s", md)
			}
		})
	}
}

// A rule injected in setup is in place before the workload's first
// statement, counts like a method's, and goes at recovery; wait_workloads
// waits for a command to finish, and fails naming one that does not.
func TestSetupInjectAndWaitWorkloads(t *testing.T) {
	dsn := newDB(t)
	out := &syncWriter{b: &strings.Builder{}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res := runFileCtx(ctx, t, `name: armed
target: {dsn: "${var:dsn}"}
proxies: [{name: pg, upstream: target}]
setup:
  - sql: CREATE TABLE marks (n int)
  - inject: {rule: {name: first-insert, match: {sql: "INSERT INTO marks"}, action: {type: error, sqlstate: "40001"}, limits: {times: 1}}}
workloads:
  - name: app
    type: exec
    through: pg
    command: |
      psql "$PGCHAOS_DSN" -qX -c "INSERT INTO marks VALUES (1)"
      sleep 0.3
      psql "$PGCHAOS_DSN" -qX -c "INSERT INTO marks VALUES (2)"
method:
  - {name: app finishes, wait_workloads: {timeout: 20s}}
verify:
  - {type: sql, sql: "SELECT string_agg(n::text, ',') FROM marks", expect: {equals: "2"}}
`, map[string]string{"dsn": dsn}, out)
	wantPass(t, res)
	// Progress says each thing once, in words.
	for _, want := range []string{"fault first-insert removed after firing once\n", "verify sql: ok: value is \"2\" as expected\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, out.String())
		}
	}
	if w := step(t, res.Steps, "app finishes"); w.End.Sub(w.Start) < 300*time.Millisecond || w.End.Sub(w.Start) > 15*time.Second {
		t.Errorf("wait_workloads took %v: want the command's time (over 0.3s)", w.End.Sub(w.Start))
	}
	if len(res.FaultWindows) != 1 || res.FaultWindows[0].Fired != 1 {
		t.Errorf("fault windows %+v: want first-insert, fired once", res.FaultWindows)
	}
	if res.Operations["ok"] != 1 {
		t.Errorf("operations %v: want the command's one, ok", res.Operations)
	}

	res = runFile(t, `name: stuck
target: {dsn: "${var:dsn}"}
workloads:
  - {name: quick, type: exec, command: "true"}
  - {name: stuck, type: exec, command: "sleep 60"}
method:
  - {name: both finish, wait_workloads: {timeout: 700ms}}
`, map[string]string{"dsn": dsn})
	if res.Pass || res.Phase != "method" {
		t.Fatalf("pass %v, phase %s: want the method to fail", res.Pass, res.Phase)
	}
	if w := step(t, res.Steps, "both finish"); w.Error != "workload stuck did not finish within 700ms" {
		t.Errorf("wait_workloads error %q", w.Error)
	}
}

// Steady-state probes judge a value as the sql verifier does, from its
// text: a numeric sum equals an integer (it used to fail as
// "value {1 4 false finite true}"), and bigint, float, bool, text and NULL
// compare as the docs say; a probe that fails says why.
func TestProbesJudgeLikeTheSQLVerifier(t *testing.T) {
	dsn := newDB(t)
	first := &syncWriter{b: &strings.Builder{}}
	fctx, fcancel := context.WithTimeout(context.Background(), time.Minute)
	defer fcancel()
	res := runFileCtx(fctx, t, `name: probes
target: {dsn: "${var:dsn}"}
steady_state:
  probes:
    - {name: numeric sum, sql: "SELECT sum(v) FROM (VALUES (4000::numeric), (6000)) t(v)", expect: {equals: 10000}}
    - {name: numeric within tolerance, sql: "SELECT 2.5::numeric", expect: {equals: 2.4}, tolerance: 0.2}
    - {name: bigint bounds, sql: "SELECT 10::bigint", expect: {min: 10, max: 10}}
    - {name: float, sql: "SELECT 0.5::float8", expect: {equals: 0.5}}
    - {name: bool, sql: "SELECT true", expect: {equals: true}}
    - {name: text, sql: "SELECT 'ok'", expect: {equals: ok}}
    - {name: "null", sql: "SELECT NULL", expect: {equals: null}}
method:
  - wait: 100ms
`, map[string]string{"dsn": dsn}, first)
	wantPass(t, res)
	// Recovery says what it waits for.
	if want := "for the steady state (numeric sum = 10000, numeric within tolerance = 2.4 ± 0.2, bigint bounds ≥ 10 and ≤ 10, float = 0.5, bool = true, text = ok, null is NULL)"; !strings.Contains(first.String(), want) {
		t.Errorf("the recovery line lacks %q:\n%s", want, first.String())
	}
	if v := res.Probes[0].Value; v != "10000" {
		t.Errorf("numeric sum recorded as %#v, want its text", v)
	}

	out := &syncWriter{b: &strings.Builder{}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res = runFileCtx(ctx, t, `name: probe-fails
target: {dsn: "${var:dsn}"}
steady_state:
  probes:
    - {name: numeric, sql: "SELECT 1.5::numeric", expect: {equals: 1}}
`, map[string]string{"dsn": dsn}, out)
	if res.Pass || res.Phase != "steady_state" || len(res.Probes) != 1 || res.Probes[0].Pass || res.Probes[0].Value != "1.5" {
		t.Fatalf("pass %v phase %s probes %+v: want the probe to fail on 1.5", res.Pass, res.Phase, res.Probes)
	}
	if !strings.Contains(out.String(), `probe numeric failed: value is "1.5", want 1`) {
		t.Errorf("the run does not say why the probe failed:\n%s", out.String())
	}
}

// During probes sample while the method runs: what holds under the fault,
// what is seen only while it is in place (clients stalled behind a hang,
// their COMMIT held, so their sessions sit idle in transaction), and a
// sample after each step; each is judged as a verifier.
func TestDuringProbes(t *testing.T) {
	dsn := newDB(t)
	res := runFile(t, `name: during
target: {dsn: "${var:dsn}"}
proxies: [{name: pg, upstream: target}]
workloads:
  - {name: ledger, type: ledger, clients: 2, rate: 50}
during:
  - name: stalled behind the hang
    sql: "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'"
    expect: {min: 2}
    while: fault
    must: once
    every: 200ms
  - {name: server answers, sql: "SELECT 1", expect: {equals: 1}, every: 300ms}
  - {name: after each step, sql: "SELECT 1", expect: {equals: 1}, while: steps}
method:
  - {name: warm, wait: 1s}
  - {name: hold commits, inject: {rule: {name: hold, match: {statement: commit}, action: {type: hang}}}}
  - {name: held, wait: 1500ms}
  - {name: release, remove: hold}
  - {name: after, wait: 500ms}
`, map[string]string{"dsn": dsn})
	wantPass(t, res)
	byName := map[string]runner.DuringResult{}
	for _, d := range res.During {
		byName[d.Name] = d
	}
	hold := res.FaultWindows[0]
	for _, s := range byName["stalled behind the hang"].Samples {
		if at := res.Started.Add(s.At); at.Before(hold.Start) || at.After(hold.End.Add(100*time.Millisecond)) {
			t.Errorf("a while: fault sample at %v, outside the fault %v..%v", s.At, hold.Start.Sub(res.Started), hold.End.Sub(res.Started))
		}
	}
	if n := len(byName["server answers"].Samples); n < 5 {
		t.Errorf("%d samples of while: method every 300ms over a 3 s method, want about 10", n)
	}
	if s := byName["after each step"].Samples; len(s) != 5 || s[1].Step != "hold commits" {
		t.Errorf("while: steps samples %+v, want one after each of the 5 steps", s)
	}

	// Not seen, never sampled, and a miss fail the run, each saying so.
	res = runFile(t, `name: during-fails
target: {dsn: "${var:dsn}"}
during:
  - {name: not seen, sql: "SELECT 0", expect: {min: 1}, must: once, every: 200ms}
  - {name: no fault, sql: "SELECT 1", expect: {equals: 1}, while: fault}
  - {name: a miss, sql: "SELECT 2", expect: {equals: 1}, every: 200ms}
method:
  - {wait: 1s}
`, map[string]string{"dsn": dsn})
	if res.Pass {
		t.Fatal("failing during probes passed")
	}
	want := map[string]string{
		"during not seen": "FAIL: not seen in ",
		"during no fault": "FAIL: never sampled (while: fault): no fault was in place during the method",
		"during a miss":   "FAIL: 0 of ",
	}
	for _, v := range res.Verdicts {
		if w, ok := want[v.Name]; ok {
			if v.Pass || !strings.HasPrefix(v.Summary, w) {
				t.Errorf("%s: %v %q, want a failure starting %q", v.Name, v.Pass, v.Summary, w)
			}
			delete(want, v.Name)
		}
	}
	if len(want) > 0 {
		t.Errorf("no verdict for %v in %+v", want, res.Verdicts)
	}
}

// With the application as a method step and no workload, the status line
// says which step runs and what it last printed, not "0 ops/s", and the
// summary does not count operations that never were.
func TestStatusOfAStep(t *testing.T) {
	dsn := newDB(t)
	exp, err := experiments.Parse([]byte(`name: app-as-step
target: {dsn: "`+dsn+`"}
method:
  - {name: app, exec: 'for i in 1 2 3; do echo tick $i; sleep 0.5; done'}
`), "step.yaml", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := &syncWriter{b: &strings.Builder{}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := runner.Run(ctx, exp, runner.Options{Out: out, StatusEvery: 300 * time.Millisecond})
	wantPass(t, res)
	if !regexp.MustCompile(`status: step app running for \ds; active faults: none; last output: tick \d`).MatchString(out.String()) {
		t.Errorf("no status line of the step:\n%s", out.String())
	}
	if strings.Contains(out.String(), "ops/s") {
		t.Errorf("a run without workloads reports ops/s:\n%s", out.String())
	}
	if md := runner.Markdown(res); !strings.Contains(md, "No workload operation was recorded") {
		t.Errorf("summary:\n%s", md)
	}
}

// --history writes every operation; in Jepsen's form each one is an
// invoke and a completion (ok, fail, or info for the unknown), indexed in
// time order, and a client whose operation ended in doubt comes back as a
// new process. The journal says which pgchaos, host and --var values ran,
// a password in a DSN masked.
func TestHistoryFiles(t *testing.T) {
	dsn := newDB(t)
	exp, err := experiments.Parse([]byte(`name: history
target: {dsn: "`+dsn+`"}
proxies: [{name: pg, upstream: target}]
workloads:
  - {name: ledger, type: ledger, clients: 2, rate: 60}
method:
  - inject: {rule: {name: refuse, match: {statement: insert}, action: {type: error, sqlstate: "40001"}, limits: {times: 3}}}
  - inject: {rule: {name: cut, match: {statement: commit}, action: {type: disconnect, when: result}, limits: {times: 2}}}
  - wait: 2s
`), "history.yaml", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := runner.Run(ctx, exp, runner.Options{Version: "v9", Vars: map[string]string{"dsn": "postgres://app:s3cret@db/app", "n": "1"}})
	wantPass(t, res)
	if res.Version != "v9" || res.Hostname == "" || res.Vars["dsn"] != "postgres://app:xxxxx@db/app" || res.Vars["n"] != "1" {
		t.Errorf("version %q, host %q, vars %v: want v9, this host, the password masked", res.Version, res.Hostname, res.Vars)
	}
	dir := t.TempDir()
	plain, jepsen := filepath.Join(dir, "h.jsonl"), filepath.Join(dir, "j.jsonl")
	if err := runner.WriteHistory(plain, res, runner.HistoryPgchaos); err != nil {
		t.Fatal(err)
	}
	if err := runner.WriteHistory(jepsen, res, runner.HistoryJepsen); err != nil {
		t.Fatal(err)
	}
	lines := func(path string) []string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(data)), "\n")
	}
	ops := len(res.History())
	if n := len(lines(plain)); n != ops || ops != res.Operations["ok"]+res.Operations["fail"]+res.Operations["unknown"] {
		t.Fatalf("%d lines for %d operations (%v)", n, ops, res.Operations)
	}
	var events []runner.JepsenOp
	for _, l := range lines(jepsen) {
		var ev runner.JepsenOp
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		events = append(events, ev)
	}
	if len(events) != 2*ops {
		t.Fatalf("%d events for %d operations", len(events), ops)
	}
	types := map[string]int{}
	open := map[int64]bool{}
	retired := map[int64]bool{}
	for i, ev := range events {
		types[ev.Type]++
		if ev.Index != int64(i) || i > 0 && ev.Time < events[i-1].Time {
			t.Fatalf("event %d: index %d, time %d after %d", i, ev.Index, ev.Time, events[max(i-1, 0)].Time)
		}
		if retired[ev.Process] {
			t.Fatalf("process %d acts after its operation ended in doubt: %+v", ev.Process, ev)
		}
		switch ev.Type {
		case "invoke":
			if open[ev.Process] {
				t.Fatalf("process %d invokes twice without a completion", ev.Process)
			}
			open[ev.Process] = true
		default:
			open[ev.Process] = false
			if ev.Type == "info" {
				retired[ev.Process] = true
			}
		}
	}
	if types["invoke"] != ops || types["ok"] != res.Operations["ok"] || types["fail"] != res.Operations["fail"] || types["info"] != res.Operations["unknown"] {
		t.Errorf("events %v for operations %v", types, res.Operations)
	}
	if types["fail"] == 0 || types["info"] == 0 {
		t.Errorf("events %v: want the refused inserts as fail and the cut commits as info", types)
	}
}
