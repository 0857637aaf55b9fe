package experiments

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Drill steps and verifiers: what a file may say, and what it is told when
// it says something wrong.
func TestDrillParse(t *testing.T) {
	const ok = `name: x
target:
  embedded:
    standbys: 2
    synchronous: quorum
    replication_via: repl
    archive: true
proxies:
  - {name: vip, upstream: primary}
  - {name: repl, upstream: primary}
workloads:
  - {name: l, type: ledger, through: vip}
method:
  - {name: kill, crash: primary}
  - promote: standby1
  - switch_upstream: {proxy: vip, upstream: standby1}
  - wait_for: {sql: SELECT count(*) FROM pg_stat_replication, node: standby1, expect: {min: 0}, timeout: 5s}
  - rewind: {node: primary, source: standby1}
  - pause_replay: standby2
  - resume_replay: {node: standby2}
  - crash: {node: standby2, mode: immediate}
  - start: standby2
  - sql: {sql: SELECT 1, node: standby2}
  - base_backup:
  - restore_point: p1
  - restore: {point: p1, node: restored}
  - switch_upstream: {proxy: vip, upstream: restored}
verify:
  - {type: pitr, workload: l, point: p1}
  - {type: rpo, workload: l, max_lost: 3, max_window: 2s}
  - {type: rto, workload: l, max: 10s, from: kill}
`
	e, err := Parse([]byte(ok), "x.yaml", nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if em := e.Target.Embedded; em.Standbys != 2 || em.Synchronous != SyncQuorum || em.ReplicationVia != "repl" || strings.Join(em.Nodes(), ",") != "primary,standby1,standby2" {
		t.Fatalf("embedded %+v, nodes %v", em, em.Nodes())
	}
	want := []Action{
		&Crash{Node: "primary", Mode: CrashKill},
		&Promote{Node: "standby1", Wait: true},
		&SwitchUpstream{Proxy: "vip", Upstream: "standby1"},
		nil, // wait_for, checked below
		&Rewind{Node: "primary", Source: "standby1"},
		&PauseReplay{Node: "standby2"},
		&ResumeReplay{Node: "standby2"},
		&Crash{Node: "standby2", Mode: CrashImmediate},
		&Start{Node: "standby2"},
		&RunSQL{SQL: "SELECT 1", Node: "standby2"},
	}
	for i, w := range want {
		got := e.Method[i].Action
		if w == nil {
			wf, ok := got.(*WaitFor)
			if !ok || wf.Node != "standby1" || wf.Expect.Min == nil || *wf.Expect.Min != 0 || time.Duration(wf.Timeout) != 5*time.Second {
				t.Errorf("method[%d]: %#v", i, got)
			}
			continue
		}
		if g, w := fmt.Sprintf("%#v", got), fmt.Sprintf("%#v", w); g != w {
			t.Errorf("method[%d]: %s, want %s", i, g, w)
		}
	}
	if p := e.Verify[0].Check.(*PITR); p.Point != "p1" {
		t.Errorf("pitr %+v", p)
	}
	if r, ok := e.Method[12].Action.(*Restore); !ok || r.Point != "p1" || r.Node != "restored" {
		t.Errorf("restore %#v", e.Method[12].Action)
	}
	if r := e.Verify[1].Check.(*RPO); r.MaxLost != 3 || time.Duration(r.MaxWindow) != 2*time.Second {
		t.Errorf("rpo %+v", r)
	}
	if r := e.Verify[2].Check.(*RTO); time.Duration(r.Max) != 10*time.Second || r.From != "kill" {
		t.Errorf("rto %+v", r)
	}

	for _, tc := range []struct{ name, yaml, want string }{
		{"node of a dsn target", "name: x\ntarget: {dsn: postgres://db}\nmethod:\n- crash: primary\n",
			`x.yaml:4:10: method[0].crash: no node named "primary": nodes are the servers of target.embedded (primary, and standby1... with standbys: N) or of target.nodes`},
		{"misspelt node", "name: x\ntarget: {embedded: {standbys: 1}}\nmethod:\n- start: standy1\n",
			`x.yaml:4:10: method[0].start: no node named "standy1" (did you mean "standby1"?); want primary or standby1`},
		{"standby without standbys", "name: x\ntarget: {embedded: {}}\nmethod:\n- promote: standby1\n",
			`x.yaml:4:12: method[0].promote: no node named "standby1"; want primary (add standbys: N to target.embedded)`},
		{"synchronous: true without standbys", "name: x\ntarget: {embedded: {synchronous: true}}\n",
			`x.yaml:2:21: target.embedded.synchronous: synchronous replication needs standbys: give standbys: 1 or more`},
		{"a backup after the restore point", "name: x\ntarget: {embedded: {archive: true}}\nmethod:\n- restore_point: p\n- base_backup:\n- restore: {point: p, node: r}\n",
			`x.yaml:6:20: method[2].restore.point: no base_backup step comes before restore point "p": recovery starts from a backup taken before the point`},
		{"backup steps on a dsn target", "name: x\ntarget: {dsn: postgres://db}\nmethod:\n- restore_point: p\n",
			`x.yaml:4:3: method[0].restore_point: acts on the servers of target.embedded (with archive: true)`},
		{"crash mode", "name: x\ntarget: {embedded: {}}\nmethod:\n- crash: {node: primary, mode: smart}\n",
			`x.yaml:4:32: method[0].crash.mode: want kill, immediate or fast, got "smart"`},
		{"synchronous without standbys", "name: x\ntarget: {embedded: {synchronous: on}}\n",
			`x.yaml:2:21: target.embedded.synchronous: synchronous replication needs standbys: give standbys: 1 or more`},
		{"too many standbys", "name: x\ntarget: {embedded: {standbys: 9}}\n",
			`x.yaml:2:31: target.embedded.standbys: at most 5 (each is a PostgreSQL server on this machine)`},
		{"rewind onto itself", "name: x\ntarget: {embedded: {standbys: 1}}\nmethod:\n- rewind: {node: primary, source: primary}\n",
			`x.yaml:4:35: method[0].rewind.source: a node cannot follow itself: source is the new primary`},
		{"wait_for without expect", "name: x\ntarget: {embedded: {}}\nmethod:\n- wait_for: {sql: SELECT 1}\n",
			`x.yaml:4:13: method[0].wait_for.expect: is required (equals, min or max)`},
		{"rto without a fault step", "name: x\ntarget: {embedded: {}}\nworkloads: [{name: l, type: ledger}]\nverify:\n- {type: rto, workload: l}\n",
			`x.yaml:5:3: verify[0]: rto is measured from the method's first inject or crash step, and it has none (or name the step to measure from, such as your exec, in from)`},
		{"rpo of a bank", "name: x\ntarget: {embedded: {}}\nworkloads: [{name: b, type: bank}]\nverify:\n- {type: rpo, workload: b}\n",
			`x.yaml:5:25: verify[0].workload: rpo checks a ledger workload; "b" is a bank workload`},
		{"upstream node of a dsn target", "name: x\ntarget: {dsn: postgres://db}\nproxies: [{name: p, upstream: standby1}]\n",
			`x.yaml:3:31: proxies[0].upstream: want host:port, target or pgbouncer, got "standby1"`},
		{"replication_via a missing proxy", "name: x\ntarget: {embedded: {standbys: 1, replication_via: repl}}\nproxies: [{name: rep, upstream: primary}]\n",
			`x.yaml:2:51: target.embedded.replication_via: no proxy named "repl" (did you mean "rep"?); want a proxy with upstream: primary`},
		{"replication_via a proxy to a standby", "name: x\ntarget: {embedded: {standbys: 1, replication_via: rep}}\nproxies: [{name: rep, upstream: standby1}]\n",
			`x.yaml:2:51: target.embedded.replication_via: proxy "rep" must be started in-process with upstream: primary (the standbys stream from the primary through it)`},
		{"replication_via without standbys", "name: x\ntarget: {embedded: {replication_via: rep}}\nproxies: [{name: rep, upstream: primary}]\n",
			`x.yaml:2:21: target.embedded.replication_via: applies with standbys: 1 or more`},
		{"rto from a step that does not exist", "name: x\ntarget: {embedded: {}}\nworkloads: [{name: l, type: ledger}]\nmethod:\n- {name: kill, crash: primary}\n- {name: back, start: primary}\nverify:\n- {type: rto, workload: l, from: bak}\n",
			`x.yaml:8:34: verify[0].from: no step of the method is named "bak" (did you mean "back"?)`},
		{"replication without standbys", "name: x\ntarget: {embedded: {}}\nverify:\n- {type: replication}\n",
			`x.yaml:4:3: verify[0]: there are no standbys to check: give target.embedded standbys: N`},
		{"replication of a misspelt node", "name: x\ntarget: {embedded: {standbys: 1}}\nverify:\n- {type: replication, standbys: [standby2]}\n",
			`x.yaml:4:34: verify[0].standbys[0]: no node named "standby2" (did you mean "standby1"?); want primary or standby1`},
		{"timeline of a dsn target", "name: x\ntarget: {dsn: postgres://db}\nverify:\n- {type: timeline}\n",
			`x.yaml:4:3: verify[0]: timeline checks the nodes of target.embedded or target.nodes`},
		{"backup without an archive", "name: x\ntarget: {embedded: {}}\nmethod:\n- base_backup: primary\n",
			`x.yaml:4:3: method[0].base_backup: needs the WAL archive: set target.embedded.archive: true`},
		{"restore without a backup", "name: x\ntarget: {embedded: {archive: true}}\nmethod:\n- restore_point: p\n- restore: {point: p, node: r}\n",
			`x.yaml:5:3: method[1].restore: no earlier base_backup step took a backup to restore`},
		{"restore to an unknown point", "name: x\ntarget: {embedded: {archive: true}}\nmethod:\n- base_backup:\n- restore_point: before\n- restore: {point: befor, node: r}\n",
			`x.yaml:6:20: method[2].restore.point: no earlier restore_point step makes "befor" (did you mean "before"?)`},
		{"restore onto a node", "name: x\ntarget: {embedded: {archive: true}}\nmethod:\n- base_backup:\n- restore_point: p\n- restore: {point: p, node: primary}\n",
			`x.yaml:6:29: method[2].restore.node: "primary" is a node already: name the restored one anew`},
		{"pitr to an unknown point", "name: x\ntarget: {embedded: {archive: true}}\nworkloads: [{name: l, type: ledger}]\nverify:\n- {type: pitr, workload: l, point: p}\n",
			`x.yaml:5:36: verify[0].point: no restore_point step makes "p"`},
		{"pgbouncer without one", "name: x\ntarget: {embedded: {}}\nmethod:\n- pgbouncer: {command: RELOAD}\n",
			`x.yaml:4:3: method[0].pgbouncer: acts on the embedded PgBouncer: set target.embedded.pgbouncer: true`},
		{"pgbouncer command and upstream", "name: x\ntarget: {embedded: {pgbouncer: true, standbys: 1}}\nmethod:\n- pgbouncer: {command: RECONNECT, upstream: standby1}\n",
			`x.yaml:4:35: method[0].pgbouncer.upstream: give command or upstream, not both (split it into two steps)`},
		{"pgbouncer unknown command", "name: x\ntarget: {embedded: {pgbouncer: true}}\nmethod:\n- pgbouncer: {command: RESTART}\n",
			`x.yaml:4:24: method[0].pgbouncer.command: want RECONNECT, RELOAD, PAUSE or RESUME, got "RESTART"`},
		{"pgbouncer PAUSE in session pooling", "name: x\ntarget: {embedded: {pgbouncer: true}}\nmethod:\n- pgbouncer: {command: PAUSE}\n",
			`x.yaml:4:24: method[0].pgbouncer.command: PAUSE waits for every client's session to end under pool_mode: session, and a workload's never does: use pool_mode: transaction`},
		{"pgbouncer reload of a database", "name: x\ntarget: {embedded: {pgbouncer: true}}\nmethod:\n- pgbouncer: {command: RELOAD, database: app}\n",
			`x.yaml:4:32: method[0].pgbouncer.database: applies to PAUSE, RESUME and RECONNECT`},
		{"pgbouncer_settings without pgbouncer", "name: x\ntarget: {embedded: {pgbouncer_settings: {server_login_retry: 1}}}\n",
			`x.yaml:2:21: target.embedded.pgbouncer_settings: applies with pgbouncer: true`},
		{"crash on your own cluster", "name: x\ntarget:\n  nodes:\n  - {name: pg1, role: primary, dsn: postgres://a}\nmethod:\n- crash: pg1\n",
			`x.yaml:6:3: method[0].crash: acts on the servers of target.embedded; on your own cluster, run your command in an exec step (PGCHAOS_NODE_<NAME>_DSN, _HOST and _PORT are in its environment)`},
		{"two primaries", "name: x\ntarget:\n  nodes:\n  - {name: pg1, role: primary, dsn: postgres://a}\n  - {name: pg2, role: primary, dsn: postgres://b}\n",
			`x.yaml:5:23: target.nodes[1].role: a second primary: the run starts from one primary and its standbys`},
		{"no primary", "name: x\ntarget:\n  nodes:\n  - {name: pg1, role: standby, dsn: postgres://a}\n",
			`x.yaml:4:3: target.nodes: no node has role: primary`},
		{"nodes and embedded", "name: x\ntarget:\n  embedded: {}\n  nodes: []\n",
			`x.yaml:4:3: target.nodes: give nodes or embedded, not both (an embedded target's nodes are its standbys)`},
		{"a node without a dsn", "name: x\ntarget:\n  nodes:\n  - {name: Pg1, role: primary}\n",
			"x.yaml:4:5: target.nodes[0].dsn: is required\nx.yaml:4:12: target.nodes[0].name: \"Pg1\": want a name of lower-case letters, digits and _ (it names environment variables)"},
		{"sql with dsn and node", "name: x\ntarget: {embedded: {}}\nmethod:\n- sql: {sql: SELECT 1, dsn: postgres://a, node: primary}\n",
			`x.yaml:4:43: method[0].sql.node: give dsn or node, not both`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "x.yaml", nil, noEnv)
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("got %v, want: %s", err, tc.want)
			}
			if err.Error() != tc.want {
				t.Fatalf("got:\n%s\nwant:\n%s", err, tc.want)
			}
		})
	}
}

// Your own cluster: nodes by name, role and DSN. The target's DSN is the
// primary's unless given; steps and verifiers that connect may name nodes.
func TestTargetNodes(t *testing.T) {
	e, err := Parse([]byte(`name: x
target:
  nodes:
    - {name: pg1, role: primary, dsn: "postgres://pg1/app"}
    - {name: pg2, role: standby, dsn: "postgres://pg2/app"}
proxies:
  - {name: vip, upstream: pg1}
method:
  - promote: pg2
  - switch_upstream: {proxy: vip, upstream: pg2}
  - wait_for: {sql: SELECT 1, node: pg2, expect: {equals: 1}}
verify:
  - type: timeline
  - {type: replication, standbys: [pg1]}
`), "x.yaml", nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	tg := e.Target
	if tg.DSN != "postgres://pg1/app" || tg.VerifyDSN != tg.DSN || tg.SetupDSN != tg.DSN || len(tg.Nodes) != 2 || tg.Nodes[1].Role != RoleStandby {
		t.Fatalf("target %+v", tg)
	}
	e, err = Parse([]byte("name: x\ntarget:\n  dsn: postgres://vip/app\n  nodes:\n  - {name: pg1, role: primary, dsn: postgres://pg1/app}\n"), "x.yaml", nil, noEnv)
	if err != nil || e.Target.DSN != "postgres://vip/app" || e.Target.VerifyDSN != "postgres://vip/app" {
		t.Fatalf("dsn beside nodes: %+v %v", e.Target, err)
	}
}
