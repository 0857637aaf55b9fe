package experiments

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func noEnv(string) (string, bool) { return "", false }

// TestParseErrors checks the exact report for broken files: position, field
// path and message.
func TestParseErrors(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		vars map[string]string
		want []string
	}{
		{
			name: "unknown key with a suggestion",
			yaml: `name: x
target: {dsn: postgres://db}
workloads:
- name: w
  type: ledger
  clinets: 4
`,
			want: []string{`exp.yaml:6:3: workloads[0].clinets: unknown field (did you mean "clients"?)`},
		},
		{
			name: "unknown section with a shared prefix",
			yaml: `name: x
target: {dsn: postgres://db}
verifiers: []
`,
			want: []string{`exp.yaml:3:1: verifiers: unknown field (did you mean "verify"?)`},
		},
		{
			name: "wrong types",
			yaml: `name: x
target: {dsn: postgres://db}
proxies: {name: pg}
workloads:
- {name: w, type: ledger, clients: many, two_phase: "yes", rate: fast}
`,
			want: []string{
				`exp.yaml:3:10: proxies: want a list, got a mapping`,
				`exp.yaml:5:36: workloads[0].clients: want an integer, got "many"`,
				`exp.yaml:5:53: workloads[0].two_phase: want true or false, got "yes"`,
				`exp.yaml:5:66: workloads[0].rate: want a number, got "fast"`,
			},
		},
		{
			name: "missing name and target",
			yaml: `description: nameless
`,
			want: []string{
				`exp.yaml:1:1: name: is required`,
				`exp.yaml:1:1: target: is required (dsn: ... or embedded: {})`,
			},
		},
		{
			name: "missing field points at its mapping",
			yaml: `name: x
target: {dsn: postgres://db}
workloads:
- name: w
  clients: 2
`,
			want: []string{`exp.yaml:4:3: workloads[0].type: is required (ledger, bank, sql or exec)`},
		},
		{
			name: "bad durations",
			yaml: `name: x
target: {embedded: {}}
recovery:
  deadline: 30
method:
- wait: 5 seconds
- after: -1s
  wait: 1s
`,
			want: []string{
				`exp.yaml:4:13: recovery.deadline: want a duration like "30s" or "500ms", got 30`,
				`exp.yaml:6:9: method[0].wait: want a duration like "30s" or "500ms", got "5 seconds"`,
				`exp.yaml:7:10: method[1].after: -1s is negative`,
			},
		},
		{
			name: "bad rule field inside inject",
			yaml: `name: x
target: {embedded: {}}
proxies: [{name: pg, upstream: target}]
method:
- at: 1s
  inject:
    rule:
      name: lie
      match: {statement: commit}
      action:
        type: error
        when: after
`,
			want: []string{`exp.yaml:11:9: method[0].inject.rule.action.sqlstate: is required (e.g. 40001)`},
		},
		{
			// Every problem of one rule, each at its own field, sorted by
			// position though the rule's checks find them in another order.
			name: "every problem of an injected rule",
			yaml: `name: x
target: {embedded: {}}
proxies: [{name: pg, upstream: target}]
setup:
- inject: {rule: {name: s, action: {type: disconnect, side: middle, close: slam}}}
method:
- at: 1s
  inject:
    rule:
      name: lie
      limits: {times: -1}
      match: {statement: commit, tx_status: [idle, busy]}
      action:
        type: error
        severity: PANIC
`,
			want: []string{
				`exp.yaml:5:61: setup[0].inject.rule.action.side: "middle": want both, client or server`,
				`exp.yaml:5:76: setup[0].inject.rule.action.close: "slam": want fin or rst`,
				`exp.yaml:11:23: method[0].inject.rule.limits.times: -1 is negative`,
				`exp.yaml:12:52: method[0].inject.rule.match.tx_status[1]: "busy": want idle, in_transaction or failed`,
				`exp.yaml:14:9: method[0].inject.rule.action.sqlstate: is required (e.g. 40001)`,
				`exp.yaml:15:19: method[0].inject.rule.action.severity: "PANIC": want ERROR or FATAL`,
			},
		},
		{
			name: "bad rule value inside inject",
			yaml: `name: x
target: {embedded: {}}
proxies: [{name: pg, upstream: target}]
method:
- inject:
    rule:
      name: cut
      match: {tag: COMMIT, message: [query]}
      action: {type: disconnect, side: nobody}
`,
			want: []string{`exp.yaml:8:38: method[0].inject.rule.match.message[0]: "query" is not a server_to_client message type (known: bind_complete, close_complete, command_complete, copy_both_response, copy_data, copy_done, copy_in_response, copy_out_response, data_row, empty_query_response, error_response, no_data, notice_response, notification_response, parameter_status, parse_complete, portal_suspended, ready_for_query, row_description)`,
				`exp.yaml:9:40: method[0].inject.rule.action.side: "nobody": want both, client or server`},
		},
		{
			name: "unknown rule key and wrong rule type",
			yaml: `name: x
target: {embedded: {}}
proxies: [{name: pg, upstream: target}]
method:
- inject:
    rule:
      name: cut
      match: {tagg: COMMIT}
      action: {type: disconnect}
      limits: {times: twice}
`,
			want: []string{
				`exp.yaml:8:15: method[0].inject.rule.match.tagg: unknown field (did you mean "tag"?)`,
				`exp.yaml:10:23: method[0].inject.rule.limits.times: want an integer, got "twice"`,
			},
		},
		{
			name: "undefined variables",
			yaml: `name: x
target:
  dsn: postgres://${var:host}/app
  verify_dsn: ${env:VERIFY_DSN}
tags: ["${tag}", "${x:y}"]
`,
			want: []string{
				`exp.yaml:3:8: target.dsn: undefined variable ${var:host} (give --var host=VALUE, or write ${var:host:-DEFAULT})`,
				`exp.yaml:4:15: target.verify_dsn: undefined variable ${env:VERIFY_DSN} (the environment variable VERIFY_DSN is not set; ${env:VERIFY_DSN:-DEFAULT} gives a default)`,
				`exp.yaml:5:8: tags[0]: ${tag}: pgchaos reads ${env:NAME} and ${var:KEY} here; for the shell's variable write $tag or $${tag}`,
				`exp.yaml:5:18: tags[1]: ${x:y}: want ${env:NAME} or ${var:KEY}, with an optional :-default`,
			},
		},
		{
			name: "duplicate workload",
			yaml: `name: x
target: {dsn: postgres://db}
workloads:
- {name: w, type: ledger}
- {name: w, type: bank}
`,
			want: []string{`exp.yaml:5:10: workloads[1].name: duplicate workload name "w" (first at line 4)`},
		},
		{
			name: "dangling through",
			yaml: `name: x
target: {dsn: postgres://db}
proxies:
- {name: pg, upstream: target}
workloads:
- {name: w, type: ledger, through: pgg}
`,
			want: []string{`exp.yaml:6:36: workloads[0].through: no proxy named "pgg" (did you mean "pg"?); want pg or direct`},
		},
		{
			name: "dangling references in steps and verifiers",
			yaml: `name: x
target: {dsn: postgres://db}
proxies: [{name: pg, upstream: target}]
workloads: [{name: bank, type: bank}]
method:
- inject: {rule: {name: slow, action: {type: delay, delay: 1s}}}
- remove: slo
- pause_workload: bnak
- kill_sessions: {proxy: gp}
verify:
- {type: fault_fired, rule: fast}
- {type: durability, workload: bank}
`,
			want: []string{
				`exp.yaml:7:11: method[1].remove: no earlier step injects a rule named "slo" (did you mean "slow"?)`,
				`exp.yaml:8:19: method[2].pause_workload: no workload named "bnak" (did you mean "bank"?); want bank`,
				`exp.yaml:9:26: method[3].kill_sessions.proxy: no proxy named "gp" (did you mean "pg"?); want pg`,
				`exp.yaml:11:29: verify[0].rule: no method step injects a rule named "fast"`,
				`exp.yaml:12:32: verify[1].workload: durability checks a ledger workload; "bank" is a bank workload`,
			},
		},
		{
			name: "latency and errors bounds",
			yaml: `name: x
target: {dsn: postgres://db}
workloads: [{name: w, type: ledger}]
verify:
- {type: latency, workload: w}
- {type: latency, workload: w, p50_min: 0s}
- {type: errors, workload: w, sqlstate: 4001, min: 3, max: 2}
- {type: errors, workload: w, min: -1, max: many}
`,
			want: []string{
				`exp.yaml:5:3: verify[0].p99_max: is required (or p50_min, or both)`,
				`exp.yaml:6:41: verify[1].p50_min: must be greater than zero`,
				`exp.yaml:7:41: verify[2].sqlstate: "4001" is not a five-character SQLSTATE`,
				`exp.yaml:7:60: verify[2].max: 2 is less than min 3`,
				`exp.yaml:8:36: verify[3].min: -1 is less than 0`,
				`exp.yaml:8:45: verify[3].max: want an integer, got "many"`,
			},
		},
		{
			name: "a step with two actions or none",
			yaml: `name: x
target: {dsn: postgres://db}
method:
- wait: 1s
  sql: SELECT 1
- name: idle
`,
			want: []string{
				`exp.yaml:5:3: method[0].sql: a step does one thing and this one does wait already (split it into two steps)`,
				`exp.yaml:6:3: method[1]: want one action: inject, remove, wait, sql, exec, kill_sessions, switch_upstream, pause_workload, resume_workload, wait_workloads, resolve_prepared, crash, start, promote, rewind, wait_for, pause_replay, resume_replay, base_backup, restore_point, restore, pgbouncer`,
			},
		},
		{
			name: "option of another workload type",
			yaml: `name: x
target: {dsn: postgres://db}
workloads:
- {name: w, type: bank, two_phase: true}
`,
			want: []string{`exp.yaml:4:25: workloads[0].two_phase: applies to ledger workloads; this one is a bank workload`},
		},
		{
			name: "rule still in place",
			yaml: `name: x
target: {dsn: postgres://db}
proxies: [{name: pg, upstream: target}]
method:
- inject: {rule: {name: cut, action: {type: disconnect}}}
- inject: {rule: {name: cut, action: {type: disconnect}}}
`,
			want: []string{`exp.yaml:6:25: method[1].inject.rule.name: rule "cut" is still in place (injected on line 5): remove it first, or give that inject a duration`},
		},
		{
			name: "yaml syntax error",
			yaml: "name: x\ntarget: {dsn: a\n",
			want: []string{`exp.yaml:2: did not find expected ',' or '}'`},
		},
		{
			// The YAML library leaves the line out of errors on the first.
			name: "yaml syntax error on the first line",
			yaml: "name: \"x",
			want: []string{`exp.yaml:1: found unexpected end of stream`},
		},
		{
			// ... and says nothing of where it found a character it
			// cannot read.
			name: "control character",
			yaml: "name: x\ntarget: {dsn: a}\ndescription: \x01\n",
			want: []string{`exp.yaml:3:14: control characters are not allowed`},
		},
		{
			name: "invalid UTF-8 after a CR LF and a BOM",
			yaml: "\ufeffname: x\r\ntarget: {dsn: \xff}\n",
			want: []string{`exp.yaml:2:15: invalid leading UTF-8 octet`},
		},
		{
			name: "UTF-16",
			yaml: "\xff\xfen\x00:\x00\n\x00 \x00\x00\xdc",
			want: []string{`exp.yaml:2:2: unexpected low surrogate area`},
		},
		{
			// Each problem takes one line, whatever the path and message hold.
			name: "line breaks in a key and in a message",
			yaml: "name: x\ntarget: {dsn: a}\n\"a\\nb\": 1\nproxies: [{name: pg, upstream: target}]\nmethod:\n- kill_sessions: {proxy: pg, application_name: \"(\\r\\n\"}\n",
			want: []string{
				`exp.yaml:3:1: a\nb: unknown field`,
				"exp.yaml:6:48: method[0].kill_sessions.application_name: error parsing regexp: missing closing ): `(\\r\\n`",
			},
		},
		{
			name: "key given twice",
			yaml: "name: x\ntarget: {dsn: a}\nname: y\n",
			want: []string{`exp.yaml:3:1: name: given twice (first at line 1)`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "exp.yaml", tc.vars, noEnv)
			if err == nil {
				t.Fatalf("no error; want:\n%s", strings.Join(tc.want, "\n"))
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want Errors", err)
			}
			if got, want := err.Error(), strings.Join(tc.want, "\n"); got != want {
				t.Fatalf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestParseReportsEveryProblem checks that one pass finds problems in every
// section, sorted by position.
func TestParseReportsEveryProblem(t *testing.T) {
	src := `name: ""
target: {embedded: {pool_mode: session}}
proxies:
- {name: pg, upstream: nowhere}
workloads:
- {name: w, type: ledgr, through: pg}
method:
- at: soon
  inject: {rule: {name: r, action: {type: error}}}
recovery: {deadline: 0s}
verify:
- {type: sessions, no_waiting_client: true}
rollbacks:
- at: 1s
  wait: 1s
`
	_, err := Parse([]byte(src), "exp.yaml", nil, noEnv)
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("err = %v, want Errors", err)
	}
	want := []string{
		`exp.yaml:1:7: name: is empty`,
		`exp.yaml:2:21: target.embedded.pool_mode: applies with pgbouncer: true`,
		`exp.yaml:4:24: proxies[0].upstream: want host:port, target, pgbouncer or primary, got "nowhere"`,
		`exp.yaml:6:19: workloads[0].type: want ledger, bank, sql or exec, got "ledgr" (did you mean "ledger"?)`,
		`exp.yaml:8:7: method[0].at: want a duration like "30s" or "500ms", got "soon"`,
		`exp.yaml:9:36: method[0].inject.rule.action.sqlstate: is required (e.g. 40001)`,
		`exp.yaml:10:22: recovery.deadline: must be greater than zero`,
		`exp.yaml:12:20: verify[0].no_waiting_client: unknown field (did you mean "no_waiting_clients"?)`,
		`exp.yaml:14:3: rollbacks[0].at: applies to method steps; rollbacks run one after another (use after)`,
	}
	if len(errs) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(errs), len(want), err)
	}
	for i, p := range errs {
		if p.String() != want[i] {
			t.Errorf("problem %d:\n got  %s\n want %s", i, p, want[i])
		}
	}
}

// TestSameFileSameReport: a verifier of an unknown type knows the keys of
// every type, and "mix" is as close to max as to min; the suggestion must
// not depend on map order.
func TestSameFileSameReport(t *testing.T) {
	src := "name: x\ntarget: {dsn: x}\nverify: [{type: mistery, mix: 1}]\n"
	want := `exp.yaml:3:26: verify[0].mix: unknown field (did you mean "max"?)`
	for range 20 {
		_, err := Parse([]byte(src), "exp.yaml", nil, noEnv)
		if err == nil || !strings.HasSuffix(err.Error(), "\n"+want) {
			t.Fatalf("got:\n%v\nwant it to end with:\n%s", err, want)
		}
	}
}

func TestVariables(t *testing.T) {
	src := `name: ${var:name}
target:
  dsn: postgres://${env:PGUSER}@${var:host}/app
proxies:
- {name: pg, upstream: "${var:host}:5432"}
workloads:
- name: w
  type: sql
  clients: ${var:clients}
  statements: ["SELECT '$${not a variable}'", "SELECT $1"]
method:
- inject:
    rule:
      name: slow
      match: {sql: "${var:pattern}"}
      action: {type: delay, delay: "${var:delay}"}
`
	vars := map[string]string{"name": "vars", "host": "db.internal", "clients": "3", "pattern": "^SELECT", "delay": "25ms"}
	env := func(k string) (string, bool) {
		if k == "PGUSER" {
			return "alice", true
		}
		return "", false
	}
	e, err := Parse([]byte(src), "exp.yaml", vars, env)
	if err != nil {
		t.Fatal(err)
	}
	in := e.Method[0].Action.(*Inject)
	for _, c := range []struct{ got, want any }{
		{e.Name, "vars"},
		{e.Target.DSN, "postgres://alice@db.internal/app"},
		{e.Target.VerifyDSN, "postgres://alice@db.internal/app"},
		{e.Proxies[0].Upstream, "db.internal:5432"},
		{e.Workloads[0].Clients, 3},
		{e.Workloads[0].SQL.Statements[0].SQL, "SELECT '${not a variable}'"},
		{e.Workloads[0].SQL.Statements[1].SQL, "SELECT $1"},
		{in.Rule.Match.SQL, "^SELECT"},
		{time.Duration(in.Rule.Action.Delay), 25 * time.Millisecond},
	} {
		if c.got != c.want {
			t.Errorf("got %#v, want %#v", c.got, c.want)
		}
	}

	// A variable that makes a value of the wrong type is reported as such.
	vars["clients"] = "three"
	_, err = Parse([]byte(src), "exp.yaml", vars, env)
	if want := `exp.yaml:9:12: workloads[0].clients: want an integer, got "three"`; err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

// TestAnchors checks that rules can share a YAML anchor kept under an x-
// key, and that keys written next to a merge override it.
func TestAnchors(t *testing.T) {
	src := `name: anchors
target: {dsn: postgres://db}
x-cut: &cut
  match: {tag: COMMIT}
  action: {type: disconnect}
proxies: [{name: pg, upstream: target}]
method:
- inject: {rule: {<<: *cut, name: one}, duration: 1s}
- inject:
    rule:
      <<: *cut
      name: two
      action: {type: disconnect, close: rst}
`
	e, err := Parse([]byte(src), "exp.yaml", nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	one, two := e.Method[0].Action.(*Inject).Rule, e.Method[1].Action.(*Inject).Rule
	if one.Match.Tag != "COMMIT" || one.Action.Close != "" || two.Match.Tag != "COMMIT" || two.Action.Close != "rst" {
		t.Fatalf("rules %+v and %+v", one, two)
	}

	_, err = Parse([]byte(strings.Replace(src, "type: disconnect}", "type: disconect}", 1)), "exp.yaml", nil, noEnv)
	if want := "exp.yaml:5:18: method[0].inject.rule.action.type: \"disconect\": want delay, disconnect"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("got %v, want a problem at the anchor: %s...", err, want)
	}
}

func TestDefaults(t *testing.T) {
	src := `name: defaults
target: {dsn: postgres://db}
proxies: [{name: pg, upstream: target}]
workloads:
- {name: l, type: ledger}
- {name: b, type: bank, through: direct}
- {name: s, type: sql, statements: [SELECT 1], retry: {max: 2}}
method:
- inject: {rule: {name: a, action: {type: disconnect}}, duration: 5s}
- inject: {rule: {name: b, action: {type: disconnect}}}
- exec: ./failover.sh
verify:
- {type: fault_fired, rule: b, min: 3}
- {type: latency, workload: s, p99_max: 50ms}
- {type: sessions}
- {type: errors, workload: s}
`
	e, err := Parse([]byte(src), "exp.yaml", nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	l, b, s := e.Workloads[0], e.Workloads[1], e.Workloads[2]
	lat := e.Verify[1].Check.(*Latency)
	sess := e.Verify[2].Check.(*Sessions)
	errs := e.Verify[3].Check.(*ErrorCount)
	for _, c := range []struct{ got, want any }{
		{e.Target.SetupDSN, "postgres://db"},
		{e.Proxies[0].Listen, DefaultListen},
		{l.Clients, 1},
		{l.Through, "pg"},
		{l.Ledger.Table, DefaultLedgerTable},
		{b.Through, Direct},
		{b.Bank.Accounts, 10},
		{b.Bank.Isolation, "read_committed"},
		{strings.Join(s.SQL.Retry.On, ","), "40001,40P01"},
		{s.SQL.Statements[0].Weight, 1},
		{e.Method[2].Action.(*RunCommand).Timeout, DefaultExecTimeout},
		{e.Recovery.Deadline, DefaultDeadline},
		{lat.Window, WindowFault},
		{sess.NoIdleInTransaction && sess.NoWaitingClients, true},
		{lat.P50Min, Duration(0)},
		{errs.Min, 1},
		{errs.Max == nil, true},
		{errs.SQLState, ""},
		{errs.Window, WindowFault},
		{len(e.Verify), 5},
	} {
		if c.got != c.want {
			t.Errorf("got %#v, want %#v", c.got, c.want)
		}
	}
	// Rule b has an explicit check; rule a gets an implicit one.
	last := e.Verify[4]
	if ff, ok := last.Check.(*FaultFired); !ok || !last.Implicit || ff.Rule != "a" || ff.Min != 1 || last.Pos.Line != 9 {
		t.Fatalf("implicit verifier = %+v (%+v)", last, last.Check)
	}

	off, err := Parse([]byte(src+"fault_fired: false\n"), "exp.yaml", nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if len(off.Verify) != 4 || off.FaultFired {
		t.Fatalf("fault_fired: false left %d verifiers", len(off.Verify))
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"name", "type", "clients", "rate", "duration", "through", "verify"}
	for _, c := range []struct{ word, want string }{
		{"clinets", "clients"},
		{"Name", "name"},
		{"typ", "type"},
		{"verifiers", "verify"},
		{"durations", "duration"},
		{"thru", ""},
		{"xyzzy", ""},
	} {
		if got := suggest(c.word, known); got != c.want {
			t.Errorf("suggest(%q) = %q, want %q", c.word, got, c.want)
		}
	}
}

// ${var:KEY:-default} and ${env:NAME:-default} give a default when the
// variable is not set, and the variable wins when it is.
func TestVariableDefaults(t *testing.T) {
	src := []byte("name: x\ntarget: {dsn: \"postgres://${env:PGHOST_X:-localhost}/${var:db:-app}\"}\nworkloads:\n- {name: w, type: ledger, clients: \"${var:clients:-4}\"}\n")
	for _, tc := range []struct {
		vars    map[string]string
		env     map[string]string
		dsn     string
		clients int
	}{
		{nil, nil, "postgres://localhost/app", 4},
		{map[string]string{"db": "shop", "clients": "2"}, map[string]string{"PGHOST_X": "db1"}, "postgres://db1/shop", 2},
		{map[string]string{"db": ""}, nil, "postgres://localhost/", 4}, // set, if empty
	} {
		e, err := Parse(src, "x.yaml", tc.vars, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
		if err != nil {
			t.Fatal(err)
		}
		if e.Target.DSN != tc.dsn || e.Workloads[0].Clients != tc.clients {
			t.Errorf("vars %v env %v: dsn %q, clients %d; want %q, %d", tc.vars, tc.env, e.Target.DSN, e.Workloads[0].Clients, tc.dsn, tc.clients)
		}
	}
}
