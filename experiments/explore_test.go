package experiments

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// The explore section, inject in setup and wait_workloads: what a file may
// say, and what it is told when it says something wrong.
func TestExploreParse(t *testing.T) {
	const ok = `name: x
target: {embedded: {}}
proxies: [{name: app, upstream: target}]
setup:
  - sql: CREATE TABLE t (id int)
  - inject: {rule: {name: r, match: {statement: commit}, action: {type: disconnect}}}
workloads:
  - {name: shop, type: exec, command: ./shop, through: app}
method:
  - wait_workloads: {timeout: 5s}
explore:
  faults: [hang, cut_after]
  sqlstates_before: ["40001"]
  deadline: 20s
  occurrences: 2
`
	e, err := Parse([]byte(ok), "x.yaml", nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if in, isInject := e.Setup[1].Action.(*Inject); !isInject || in.Rule.Name != "r" {
		t.Fatalf("setup[1] %#v, want the inject", e.Setup[1].Action)
	}
	// A rule armed in setup must fire like a method's.
	if v := e.Verify[len(e.Verify)-1]; !v.Implicit || v.Check.(*FaultFired).Rule != "r" {
		t.Errorf("verify %+v: want an implicit fault_fired r", e.Verify)
	}
	if w, isWait := e.Method[0].Action.(*WaitWorkloads); !isWait || time.Duration(w.Timeout) != 5*time.Second || w.Workloads != nil {
		t.Errorf("method[0] %#v", e.Method[0].Action)
	}
	x := e.Explore
	if x == nil || x.Proxy != "app" || !slices.Equal(x.Kinds, []string{KindHang, KindCutAfter}) ||
		!slices.Equal(x.SQLStatesBefore, []string{"40001"}) || !slices.Equal(x.SQLStatesAfter, DefaultSQLStatesAfter) ||
		x.Deadline != Duration(20*time.Second) || x.Delay != DefaultExploreDelay || x.Budget != DefaultExploreBudget || x.Occurrences != 2 {
		t.Fatalf("explore %+v", x)
	}
	d, err := Parse([]byte("name: x\ntarget: {embedded: {}}\nproxies: [{name: p, upstream: target}]\nworkloads: [{name: w, type: exec, command: ./app, through: p}]\nexplore: {}\n"), "x.yaml", nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.Explore.Kinds, ExploreKinds) || !slices.Equal(d.Explore.SQLStatesBefore, DefaultSQLStatesBefore) || d.Explore.Occurrences != 1 || d.Explore.Proxy != "p" {
		t.Errorf("defaults %+v", d.Explore)
	}

	const app = "proxies: [{name: p, upstream: target}]\nworkloads: [{name: w, type: exec, command: ./app, through: p}]\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown kind", "name: x\ntarget: {embedded: {}}\n" + app + "explore: {faults: [cut_afterr]}\n",
			`x.yaml:5:20: explore.faults[0]: want cut_after, cut_before, error_after, error_before, refuse, idle_cut, hang or delay, got "cut_afterr" (did you mean "cut_after"?)`},
		{"a sqlstate twice", "name: x\ntarget: {embedded: {}}\n" + app + "explore: {sqlstates_after: [\"40001\", \"40001\"]}\n",
			`x.yaml:5:38: explore.sqlstates_after[1]: 40001 is listed twice`},
		{"a workload as long as the deadline", "name: x\ntarget: {embedded: {}}\nproxies: [{name: p, upstream: target}]\nworkloads: [{name: l, type: ledger, duration: 20s, through: p}]\nexplore: {deadline: 20s}\n",
			`x.yaml:5:10: explore: workload l (line 4) runs for 20s, as long as explore's deadline of 20s: every trial would break liveness (give a shorter duration or a longer deadline)`},
		{"a kind twice", "name: x\ntarget: {embedded: {}}\n" + app + "explore: {faults: [hang, hang]}\n",
			`x.yaml:5:26: explore.faults[1]: hang is listed twice`},
		{"not a sqlstate", "name: x\ntarget: {embedded: {}}\n" + app + "explore: {sqlstates_before: [4001]}\n",
			`x.yaml:5:30: explore.sqlstates_before[0]: "4001" is not a SQLSTATE (five digits or capital letters, e.g. "40001")`},
		{"a dsn target", "name: x\ntarget: {dsn: postgres://db}\n" + app + "explore: {}\n",
			`x.yaml:5:10: explore: explore resets the database before every trial, so it runs on target.embedded`},
		{"pgbouncer", "name: x\ntarget: {embedded: {pgbouncer: true}}\n" + app + "explore: {}\n",
			`x.yaml:5:10: explore: explore runs on a single embedded PostgreSQL for now: drop target.embedded's pgbouncer and standbys`},
		{"a workload that never ends", "name: x\ntarget: {embedded: {}}\nproxies: [{name: p, upstream: target}]\nworkloads: [{name: l, type: ledger, through: p}]\nexplore: {}\n",
			`x.yaml:5:10: explore: workload l (line 4) runs until it is stopped; give it a duration, so that each trial ends`},
		{"no proxy", "name: x\ntarget: {embedded: {}}\nworkloads: [{name: w, type: exec, command: ./app}]\nexplore: {}\n",
			`x.yaml:4:10: explore: no workload goes through a proxy started here: explore learns the fault points from the statements one carries (add a proxy and set the workload's through)`},
		{"two proxies", "name: x\ntarget: {embedded: {}}\nproxies: [{name: a, upstream: target}, {name: b, upstream: target}]\nworkloads: [{name: w, type: exec, command: ./app, through: a}, {name: v, type: exec, command: ./app, through: b}]\nexplore: {}\n",
			`x.yaml:5:10: explore: workloads go through a or b: name the one to explore in explore.proxy`},
		{"misspelt proxy", "name: x\ntarget: {embedded: {}}\n" + app + "explore: {proxy: q}\n",
			`x.yaml:5:18: explore.proxy: no proxy named "q" (did you mean "p"?); want p`},
		{"wait for a misspelt workload", "name: x\ntarget: {embedded: {}}\n" + app + "method:\n- wait_workloads: {workloads: [ww]}\n",
			`x.yaml:6:32: method[0].wait_workloads.workloads[0]: no workload named "ww" (did you mean "w"?); want w`},
		{"wait_workloads in rollbacks", "name: x\ntarget: {embedded: {}}\n" + app + "rollbacks:\n- wait_workloads: {}\n",
			`x.yaml:6:3: rollbacks[0].wait_workloads: applies to method steps: rollbacks run after the workloads have stopped`},
		{"inject and sql in one setup step", "name: x\ntarget: {embedded: {}}\n" + app + "setup:\n- {sql: SELECT 1, inject: {rule: {name: r, action: {type: hang}}}}\n",
			`x.yaml:6:19: setup[0].inject: a setup step does one thing (split it into two steps)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "x.yaml", nil, noEnv)
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("got %v, want: %s", err, tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", err, tc.want)
			}
		})
	}
}

// The during section: defaults, and what a file is told when it says
// something wrong.
func TestDuringParse(t *testing.T) {
	e, err := Parse([]byte("name: x\ntarget: {dsn: postgres://db}\nduring:\n- {name: a, sql: SELECT 1, expect: {equals: 1}}\n- {name: b, sql: SELECT 1, expect: {min: 1}, while: fault, must: once, every: 250ms}\n"), "x.yaml", nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := e.During[0], e.During[1]; a.While != WhileMethod || a.Must != MustAlways || a.Every != DefaultDuringEvery ||
		b.While != WhileFault || b.Must != MustOnce || time.Duration(b.Every) != 250*time.Millisecond {
		t.Fatalf("during %+v", e.During)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"every with steps", "name: x\ntarget: {dsn: postgres://db}\nduring:\n- {name: a, sql: SELECT 1, expect: {equals: 1}, while: steps, every: 1s}\n",
			`x.yaml:4:63: during[0].every: applies to while: method or fault; while: steps samples once after each step`},
		{"unknown while", "name: x\ntarget: {dsn: postgres://db}\nduring:\n- {name: a, sql: SELECT 1, expect: {equals: 1}, while: faults}\n",
			`x.yaml:4:56: during[0].while: want method, fault or steps, got "faults" (did you mean "fault"?)`},
		{"two of a name", "name: x\ntarget: {dsn: postgres://db}\nduring:\n- {name: a, sql: SELECT 1, expect: {equals: 1}}\n- {name: a, sql: SELECT 2, expect: {equals: 2}}\n",
			`x.yaml:5:10: during[1].name: "a" is the name of the during probe on line 4 too`},
		{"no expect", "name: x\ntarget: {dsn: postgres://db}\nduring:\n- {name: a, sql: SELECT 1}\n",
			`x.yaml:4:3: during[0].expect: is required (equals, min or max)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "x.yaml", nil, noEnv)
			if err == nil || err.Error() != tc.want {
				t.Errorf("got:\n%v\nwant:\n%s", err, tc.want)
			}
		})
	}
}
