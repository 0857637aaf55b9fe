package experiments

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExamples parses every shipped example, with no variables and an
// empty environment, as a user's first `pgchaos validate` would.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	parsed := map[string]*Experiment{}
	for _, f := range files {
		e, err := ParseFile(f, nil, noEnv)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		parsed[filepath.Base(f)] = e
	}
	for _, name := range []string{"2pc-mid-prepare.yaml", "2pc-mid-commit-prepared.yaml", "commit-ack-lost.yaml", "latency-spike.yaml",
		"pgbouncer-server-disconnect.yaml", "serialization-storm.yaml", "crash-restart.yaml", "failover-sync.yaml", "failover-runbook.yaml", "failover-async-lag.yaml", "failover-rewind.yaml", "crash-restart-2pc.yaml", "pitr.yaml"} {
		if parsed[name] == nil {
			t.Fatalf("examples/%s is missing or invalid", name)
		}
	}

	e := parsed["2pc-mid-prepare.yaml"]
	if e.Target.Embedded == nil || len(e.Proxies) != 1 || e.Proxies[0].Name != "pg" || e.Proxies[0].Upstream != UpstreamTarget {
		t.Errorf("2pc: target %+v, proxies %+v", e.Target, e.Proxies)
	}
	if w := e.Workloads[0]; w.Type != WorkloadLedger || !w.Ledger.TwoPhase || w.Through != "pg" {
		t.Errorf("2pc: workload %+v", w)
	}
	in, ok := e.Method[0].Action.(*Inject)
	if !ok || in.Rule.Match.Tag != "PREPARE TRANSACTION" || in.Rule.Action.Type != "disconnect" ||
		in.Rule.Limits.Times != 5 || time.Duration(in.Duration) != 8*time.Second {
		t.Errorf("2pc: first step %+v", e.Method[0].Action)
	}
	if time.Duration(e.Recovery.Deadline) != 30*time.Second {
		t.Errorf("2pc: recovery %v", e.Recovery.Deadline)
	}
	wantTypes(t, "2pc", e, "durability", "prepared_transactions", "fault_fired")
	if pt := e.Verify[1].Check.(*PreparedTransactions); !pt.ExpectInDoubt {
		t.Errorf("2pc: %+v", pt)
	}
	if rp, ok := e.Rollbacks[0].Action.(*ResolvePrepared); !ok || rp.Policy != PolicyHistory {
		t.Errorf("2pc: rollbacks %+v", e.Rollbacks)
	}

	e = parsed["commit-ack-lost.yaml"]
	in = e.Method[0].Action.(*Inject)
	if in.Rule.Action.Type != "error" || in.Rule.Action.SQLState != "40001" || in.Rule.Action.When != "after" {
		t.Errorf("commit-ack-lost: rule %+v", in.Rule)
	}
	if d := e.Verify[0].Check.(*Durability); d.AllowedGhost != 0 || d.Workload != "ledger" {
		t.Errorf("commit-ack-lost: %+v", d)
	}

	e = parsed["latency-spike.yaml"]
	in = e.Method[0].Action.(*Inject)
	if in.Rule.Action.Type != "delay" || time.Duration(in.Rule.Action.Delay) != 200*time.Millisecond {
		t.Errorf("latency-spike: rule %+v", in.Rule)
	}
	if l := e.Verify[0].Check.(*Latency); time.Duration(l.P99Max) != 400*time.Millisecond || time.Duration(l.P50Min) != 150*time.Millisecond {
		t.Errorf("latency-spike: %+v", l)
	}

	e = parsed["crash-restart.yaml"]
	if c, ok := e.Method[0].Action.(*Crash); !ok || c.Node != NodePrimary || c.Mode != CrashKill {
		t.Errorf("crash-restart: first step %+v", e.Method[0].Action)
	}
	if s, ok := e.Method[1].Action.(*Start); !ok || s.Node != NodePrimary {
		t.Errorf("crash-restart: second step %+v", e.Method[1].Action)
	}
	wantTypes(t, "crash-restart", e, "rpo", "durability", "rto", "errors", "timeline")

	e = parsed["failover-sync.yaml"]
	if em := e.Target.Embedded; em.Standbys != 1 || em.Synchronous != SyncOn {
		t.Errorf("failover-sync: target %+v", em)
	}
	if p, ok := e.Method[1].Action.(*Promote); !ok || p.Node != "standby1" || !p.Wait {
		t.Errorf("failover-sync: second step %+v", e.Method[1].Action)
	}
	if sw, ok := e.Method[2].Action.(*SwitchUpstream); !ok || sw.Upstream != "standby1" {
		t.Errorf("failover-sync: third step %+v", e.Method[2].Action)
	}
	if r := e.Verify[0].Check.(*RPO); r.MaxLost != 0 || r.Workload != "ledger" {
		t.Errorf("failover-sync: %+v", r)
	}

	e = parsed["2pc-mid-commit-prepared.yaml"]
	in = e.Method[0].Action.(*Inject)
	if in.Rule.Match.Tag != "COMMIT PREPARED" || in.Rule.Action.Type != "disconnect" || in.Rule.Limits.Times != 5 {
		t.Errorf("2pc-mid-commit-prepared: rule %+v", in.Rule)
	}
	wantTypes(t, "2pc-mid-commit-prepared", e, "durability", "prepared_transactions", "fault_fired")

	e = parsed["pgbouncer-server-disconnect.yaml"]
	if em := e.Target.Embedded; em == nil || !em.PgBouncer || em.PoolMode != PoolTransaction || em.PgBouncerVia != "pg-server" {
		t.Errorf("pgbouncer-server-disconnect: target %+v", e.Target.Embedded)
	}
	if w := e.Workloads[0]; w.Through != UpstreamPgBouncer || w.Ledger.TwoPhase {
		t.Errorf("pgbouncer-server-disconnect: workload %+v", w)
	}
	wantTypes(t, "pgbouncer-server-disconnect", e, "durability", "availability", "errors", "sessions", "fault_fired")

	e = parsed["serialization-storm.yaml"]
	if w := e.Workloads[0]; w.Type != WorkloadBank || w.Bank.Isolation != "serializable" {
		t.Errorf("serialization-storm: workload %+v", w)
	}
	wantTypes(t, "serialization-storm", e, "bank_invariant", "availability", "errors", "fault_fired")
	if c := e.Verify[2].Check.(*ErrorCount); c.SQLState != "40001" || c.Min < 20 {
		t.Errorf("serialization-storm: %+v", c)
	}
}

// Every shipped experiment asserts a lower bound on what its fault did to
// the workload's clients, not only that the rule fired and upper bounds:
// a fault made a no-op must fail it.
func TestExamplesAssertTheFaultWasFelt(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatal(files, err)
	}
	for _, f := range files {
		e, err := ParseFile(f, nil, noEnv)
		if err != nil {
			t.Fatal(err)
		}
		var felt []string
		for _, v := range e.Verify {
			switch c := v.Check.(type) {
			case *Latency:
				if c.P50Min > 0 && c.Window != WindowRun {
					felt = append(felt, v.Name)
				}
			case *ErrorCount:
				if c.Min > 0 && c.Window != WindowRun {
					felt = append(felt, v.Name)
				}
			case *PreparedTransactions:
				if c.ExpectInDoubt {
					felt = append(felt, v.Name)
				}
			case *PITR:
				// Fails both when the restore did not happen (entries
				// begun after the point are there) and when the mistake
				// reached it (entries before the point are gone).
				felt = append(felt, v.Name)
			}
		}
		if len(felt) == 0 {
			t.Errorf("%s: no verifier shows that the fault reached the workload (latency p50_min, errors min, prepared_transactions expect_in_doubt, pitr)", f)
		}
	}
}

// TestPgBouncerVia checks target.embedded.pgbouncer_via and through:
// pgbouncer.
func TestPgBouncerVia(t *testing.T) {
	const base = `name: x
target:
  embedded:
    pgbouncer: %s
    pgbouncer_via: %s
proxies:
  - name: pg-server
    upstream: target
  - name: app
    upstream: pgbouncer
workloads:
  - name: l
    type: ledger
    through: %s
`
	for _, c := range []struct {
		bouncer, via, through, want string
	}{
		{"true", "pg-server", "pgbouncer", ""},
		{"true", "pg-servr", "app", `x.yaml:5:20: target.embedded.pgbouncer_via: no proxy named "pg-servr" (did you mean "pg-server"?)`},
		{"true", "app", "app", `x.yaml:5:20: target.embedded.pgbouncer_via: proxy "app" must be started in-process with upstream: target`},
		{"false", "pg-server", "direct", `x.yaml:5:5: target.embedded.pgbouncer_via: applies with pgbouncer: true`},
		{"true", "pg-server", "pgbouncr", `x.yaml:14:14: workloads[0].through: no proxy named "pgbouncr" (did you mean "pgbouncer"?)`},
	} {
		src := fmt.Sprintf(base, c.bouncer, c.via, c.through)
		_, err := Parse([]byte(src), "x.yaml", nil, noEnv)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: got %v, want %s", c, err, c.want)
		}
	}
}

// wantTypes checks the verifiers' types, implicit ones included.
func wantTypes(t *testing.T, name string, e *Experiment, types ...string) {
	t.Helper()
	if len(e.Verify) != len(types) {
		t.Errorf("%s: %d verifiers, want %d", name, len(e.Verify), len(types))
		return
	}
	for i, v := range e.Verify {
		if v.Check.Type() != types[i] {
			t.Errorf("%s: verify[%d] is %s, want %s", name, i, v.Check.Type(), types[i])
		}
	}
}

// TestExamplesDeclareSchema: every shipped example starts with the
// yaml-language-server modeline, so that an editor opening it checks it
// against the schema, and the path in it reaches the schema from the file.
func TestExamplesDeclareSchema(t *testing.T) {
	const modeline = "# yaml-language-server: $schema="
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	schema, err := os.Stat("../docs/experiment.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(data), "\n")
		ref, ok := strings.CutPrefix(first, modeline)
		if !ok {
			t.Errorf("%s: first line is %q, want %q", f, first, modeline+"../../docs/experiment.schema.json")
			continue
		}
		if st, err := os.Stat(filepath.Join(filepath.Dir(f), ref)); err != nil || !os.SameFile(st, schema) {
			t.Errorf("%s: $schema=%s does not name docs/experiment.schema.json (%v)", f, ref, err)
		}
	}
}
