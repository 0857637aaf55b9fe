package runner_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/control"
	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/runner"
)

// pgchaosProcess is a pgchaos started by a test, with one proxy, pg, in
// front of the test's PostgreSQL.
type pgchaosProcess struct {
	cmd  *exec.Cmd
	api  string // its control API's URL
	log  *syncWriter
	done chan struct{}
}

// buildPgchaos builds the pgchaos binary, as a user installs it.
func buildPgchaos(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pgchaos")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/pgchaos/pgchaos/cmd/pgchaos").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

var apiListening = regexp.MustCompile(`msg="control API listening" addr=(\S+)`)

// startPgchaos runs `pgchaos proxy` with its API at api (host:port; port
// 0: any) and its proxy pg on host's free port, and waits for the API.
func startPgchaos(t *testing.T, bin, api string) *pgchaosProcess {
	t.Helper()
	host, _, _ := strings.Cut(api, ":")
	p := &pgchaosProcess{log: &syncWriter{b: &strings.Builder{}}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "proxy", "--name", "pg", "--listen", host+":0", "--upstream", pg.Addr(), "--api", api)
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := apiListening.FindStringSubmatch(p.log.String()); m != nil {
			p.api = "http://" + m[1]
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("pgchaos ended before its API listened:\n%s", p.log.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgchaos: no control API after 30s:\n%s", p.log.String())
		}
	}
}

// rulesOn lists the rules an instance holds, through its API.
func rulesOn(t *testing.T, api string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := control.NewClient(api).Rules(ctx)
	if err != nil {
		t.Fatalf("rules of %s: %v", api, err)
	}
	var names []string
	for _, r := range list {
		names = append(names, r.Name)
	}
	return names
}

func runFleet(t *testing.T, src string, opts runner.Options) (*runner.Result, string, time.Duration) {
	t.Helper()
	exp, err := experiments.Parse([]byte(src), t.Name()+".yaml", nil, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("the test's experiment does not parse:\n%v", err)
	}
	out := &syncWriter{b: &strings.Builder{}}
	opts.Out, opts.StatusEvery = out, time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	res := runner.Run(ctx, exp, opts)
	took := time.Since(start)
	t.Logf("console of the run (%s):\n%s", took.Round(100*time.Millisecond), out.String())
	return res, out.String(), took
}

// Three pgchaos processes are one proxy: every rule goes to all three,
// their fired counts add up, the workload's clients connect to each in
// turn; one is killed mid-run. The run says which instance it could not
// remove which rule from, an injection that can then reach only two of
// three fails its step and is taken back from those two, the survivors
// end with no rule, and the run ends in bounded time, failed.
func TestFleetWithOneInstanceKilled(t *testing.T) {
	bin := buildPgchaos(t)
	var fleet []*pgchaosProcess
	for range 3 {
		fleet = append(fleet, startPgchaos(t, bin, "127.0.0.1:0"))
	}
	victim := fleet[2]
	src := fmt.Sprintf(`name: fleet with one instance killed
target: {dsn: "%s"}
proxies:
- {name: pg, urls: [%s, %s, %s]}
workloads:
- {name: ledger, type: ledger, clients: 3, rate: 150, through: pg}
steady_state:
  probes: [{name: up, sql: SELECT 1, expect: {equals: 1}}]
method:
- name: abort some inserts
  inject:
    rule: {name: abort, proxy: pg, match: {sql: "^INSERT"}, action: {type: error, sqlstate: "40001"}, limits: {probability: 0.3}}
- name: slow inserts for 2s
  inject:
    rule: {name: slow, proxy: pg, match: {sql: "^INSERT"}, action: {type: delay, delay: 2ms}}
    duration: 2s
- wait: 1s
- name: kill one instance
  exec: kill -KILL %d
- wait: 200ms
- name: inject with one instance gone
  inject:
    rule: {name: late, proxy: pg, match: {sql: "^INSERT"}, action: {type: delay, delay: 1ms}}
recovery: {deadline: 10s}
verify:
- {type: durability, workload: ledger}
`, newDB(t), fleet[0].api, fleet[1].api, victim.api, victim.cmd.Process.Pid)

	res, out, took := runFleet(t, src, runner.Options{})

	if res.Pass || res.ExitCode() != runner.ExitFailed {
		t.Errorf("the run passed (exit %d), want it failed: a rule is left on an instance", res.ExitCode())
	}
	if took > 25*time.Second {
		t.Errorf("the run took %s: a dead instance must cost at most the removal deadline", took)
	}
	// The injection that could reach only two of three failed its step
	// and was taken back from both.
	var late *runner.StepResult
	for i := range res.Steps {
		if res.Steps[i].Name == "inject with one instance gone" {
			late = &res.Steps[i]
		}
	}
	if late == nil || !strings.Contains(late.Error, "rule late reached 2 of 3 instances ("+victim.api+": unreachable") ||
		!strings.Contains(late.Error, "removed it from the 2 that took it") {
		t.Errorf("the late injection: %+v", late)
	}
	// The rules in place when the instance died are reported left there,
	// and only there; the one with a duration has a lease.
	left := map[string]runner.LeftArmed{}
	for _, l := range res.LeftArmed {
		if l.Instance != victim.api {
			t.Errorf("left armed on a surviving instance: %+v", l)
		}
		left[l.Rule] = l
	}
	if len(left) != 2 || left["abort"].Attempts < 2 || left["slow"].Expires.IsZero() || !left["abort"].Expires.IsZero() {
		t.Errorf("left armed: %+v, want abort (retried, no lease) and slow (with a lease) on %s", res.LeftArmed, victim.api)
	}
	var removed bool
	for _, v := range res.Verdicts {
		if v.Name == "faults_removed" {
			removed = true
			if v.Pass || !strings.Contains(v.Summary, "rule abort could not be removed from "+victim.api) || !strings.Contains(v.Summary, "rule slow could not be removed from "+victim.api) {
				t.Errorf("faults_removed: %+v", v)
			}
		}
		if v.Name == "durability(ledger)" && !v.Pass {
			t.Errorf("%s: %s", v.Name, v.Summary)
		}
	}
	if !removed {
		t.Errorf("no faults_removed verdict: %+v", res.Verdicts)
	}
	// Counts: each survivor's, which round-robin gave a client each, and
	// the victim's as not known.
	for _, w := range res.FaultWindows {
		if w.Rule != "abort" {
			continue
		}
		if len(w.Instances) != 3 || w.Instances[0].Fired == 0 || w.Instances[1].Fired == 0 || w.Instances[2].Error == "" ||
			w.Fired != w.Instances[0].Fired+w.Instances[1].Fired {
			t.Errorf("abort's counts: %d, %+v", w.Fired, w.Instances)
		}
	}
	for _, p := range fleet[:2] {
		if rules := rulesOn(t, p.api); len(rules) != 0 {
			t.Errorf("%s still has rules %v", p.api, rules)
		}
	}
	for _, want := range []string{
		"fault abort fired", "and was NOT removed everywhere: rule abort could not be removed from " + victim.api,
		"verify faults_removed: FAIL: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the console does not say %q", want)
		}
	}
}

// A dns name's every address is an instance: the rule goes to each, and
// the run passes with each instance's count and the rule removed from all.
func TestFleetByDNS(t *testing.T) {
	bin := buildPgchaos(t)
	first := startPgchaos(t, bin, "127.0.0.1:0")
	port := first.api[strings.LastIndex(first.api, ":")+1:]
	fleet := []*pgchaosProcess{first, startPgchaos(t, bin, "127.0.0.2:"+port), startPgchaos(t, bin, "127.0.0.3:"+port)}
	var mu sync.Mutex
	var looked []string
	lookup := func(_ context.Context, host string) ([]string, error) {
		mu.Lock()
		looked = append(looked, host)
		mu.Unlock()
		return []string{"127.0.0.3", "127.0.0.1", "127.0.0.2"}, nil
	}
	src := fmt.Sprintf(`name: fleet by dns
target: {dsn: "%s"}
proxies:
- {name: pg, dns: "pgchaos-headless.test:%s"}
workloads:
- {name: ledger, type: ledger, clients: 3, rate: 150, through: pg}
method:
- inject:
    rule: {name: abort, proxy: pg, match: {sql: "^INSERT"}, action: {type: error, sqlstate: "40001"}, limits: {probability: 0.3}}
    duration: 1500ms
recovery: {deadline: 10s}
verify:
- {type: durability, workload: ledger}
`, newDB(t), port)

	res, _, _ := runFleet(t, src, runner.Options{LookupHost: lookup})

	if !res.Pass {
		t.Errorf("the run failed: %s: %s", res.Phase, res.Problem)
	}
	if len(looked) != 1 || looked[0] != "pgchaos-headless.test" {
		t.Errorf("looked up %v, want the name once, at the start", looked)
	}
	if len(res.FaultWindows) != 1 || len(res.FaultWindows[0].Instances) != 3 {
		t.Fatalf("fault windows: %+v", res.FaultWindows)
	}
	for i, f := range res.FaultWindows[0].Instances {
		if want := "http://127.0.0." + fmt.Sprint(i+1) + ":" + port; f.Instance != want || f.Fired == 0 || f.Error != "" {
			t.Errorf("instance %d: %+v, want %s with its count", i, f, want)
		}
	}
	for _, p := range fleet {
		if rules := rulesOn(t, p.api); len(rules) != 0 {
			t.Errorf("%s still has rules %v", p.api, rules)
		}
	}
}
