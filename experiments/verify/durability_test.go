package verify_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
	"github.com/pgchaos/pgchaos/experiments/verify"
)

func TestDurability(t *testing.T) {
	db, dsn := newDB(t)
	exec(t, dsn,
		"CREATE TABLE pgchaos_ledger (key text PRIMARY KEY, at timestamptz DEFAULT now())",
		"INSERT INTO pgchaos_ledger (key) VALUES ('ok-1'), ('ok-2'), ('ghost-1'), ('unknown-committed'), ('earlier-run')",
		"CREATE SCHEMA app",
		"CREATE TABLE app.ledger (key text PRIMARY KEY)",
		"INSERT INTO app.ledger (key) VALUES ('app-1')")
	inDoubt := "pgchaos:ledger:" + db + ":1"
	prepare(t, dsn, "pgchaos_ledger", inDoubt)

	healthy := []op{
		{key: "ok-1", outcome: history.OK},
		{key: "ok-2", outcome: history.OK},
		{key: "failed-1", outcome: history.Fail},
		{key: "unknown-committed", outcome: history.Unknown},
		{key: "unknown-aborted", outcome: history.Unknown},
		{key: inDoubt, gid: inDoubt, phase: verify.PhasePrepare, outcome: history.Unknown},
	}
	var manyLost []op
	for i := range 30 {
		manyLost = append(manyLost, op{key: fmt.Sprintf("gone-%02d", i), outcome: history.OK})
	}
	cases := []struct {
		name     string
		ops      []op
		check    experiments.Durability
		loads    map[string]experiments.Workload
		pass     bool
		evidence map[string]any
		summary  string   // in the summary
		absent   []string // evidence keys that must not be there
	}{
		{
			name: "healthy", ops: healthy, pass: true,
			summary: "2 of 2 acknowledged rows present, 0 lost, 0 ghost; 3 unknown: 1 committed, 1 aborted; 1 in doubt (still prepared)",
			absent:  []string{"without_key"},
			evidence: map[string]any{
				"acknowledged": 2, "acknowledged_present": 2, "lost": 0, "ghost": 0, "failed": 1, "failed_absent": 1,
				"unknown": 3, "unknown_committed": 1, "unknown_committed_keys": []string{"unknown-committed"},
				"unknown_aborted": 1, "in_doubt": 1, "in_doubt_gids": []string{inDoubt},
			},
		},
		{
			name: "lost acknowledged row", ops: append(healthy, op{key: "lost-1", outcome: history.OK}),
			evidence: map[string]any{"lost": 1, "lost_keys": []string{"lost-1"}, "acknowledged_present": 2},
		},
		{
			name: "lost row within allowance", ops: append(healthy, op{key: "lost-1", outcome: history.OK}),
			check: experiments.Durability{AllowedLost: 1}, pass: true,
			evidence: map[string]any{"lost": 1, "allowed_lost": 1},
		},
		{
			name: "ghost row", ops: append(healthy, op{key: "ghost-1", outcome: history.Fail}),
			evidence: map[string]any{"ghost": 1, "ghost_keys": []string{"ghost-1"}, "lost": 0},
		},
		{
			name: "ghost row within allowance", ops: append(healthy, op{key: "ghost-1", outcome: history.Fail}),
			check: experiments.Durability{AllowedGhost: 1}, pass: true,
		},
		{
			name: "evidence is bounded", ops: manyLost,
			evidence: map[string]any{"lost": 30, "lost_keys": func() []string {
				var k []string
				for i := range verify.MaxListed {
					k = append(k, fmt.Sprintf("gone-%02d", i))
				}
				return k
			}()},
		},
		{
			name: "no operations",
		},
		{
			name: "operations without a key", ops: []op{{key: "ok-1", outcome: history.OK}, {outcome: history.OK}, {outcome: history.Fail}}, pass: true,
			summary:  "1 of 1 acknowledged rows present, 0 lost, 0 ghost; 0 unknown: 0 committed, 0 aborted",
			evidence: map[string]any{"without_key": 2, "acknowledged": 1},
		},
		{
			name: "the workload's own table", ops: []op{{key: "app-1", outcome: history.OK}, {key: "ok-1", outcome: history.Fail}}, pass: true,
			loads:    map[string]experiments.Workload{"ledger": {Name: "ledger", Type: "ledger", Ledger: &experiments.LedgerOptions{Table: "app.ledger"}}},
			evidence: map[string]any{"table": "app.ledger", "acknowledged_present": 1, "ghost": 0},
		},
		{
			name: "missing table", ops: healthy,
			loads: map[string]experiments.Workload{"ledger": {Name: "ledger", Type: "ledger", Ledger: &experiments.LedgerOptions{Table: "nope"}}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.check
			c.Workload = "ledger"
			v := check(t, &c, verify.Run{History: hist(tc.ops...), VerifyDSN: dsn, Workloads: tc.loads})
			wantPass(t, v, tc.pass)
			if v.Name != "durability(ledger)" {
				t.Errorf("name %q", v.Name)
			}
			for k, want := range tc.evidence {
				wantEvidence(t, v, k, want)
			}
			if !strings.HasSuffix(v.Summary, tc.summary) {
				t.Errorf("summary %q, want it to end %q", v.Summary, tc.summary)
			}
			for _, k := range tc.absent {
				if _, ok := v.Evidence[k]; ok {
					t.Errorf("evidence has %s: %v", k, v.Evidence)
				}
			}
		})
	}
}
