package verify_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
	"github.com/pgchaos/pgchaos/experiments/verify"
)

func TestPreparedTransactions(t *testing.T) {
	db, dsn := newDB(t)
	exec(t, dsn, "CREATE TABLE pgchaos_ledger (key text PRIMARY KEY)")
	before := time.Now()
	orphan := "pgchaos:ledger:" + db + ":x"
	prepare(t, dsn, "pgchaos_ledger", orphan)
	prefix := "pgchaos:ledger:"

	inDoubt := hist(
		op{key: "a", outcome: history.OK},
		op{key: orphan, gid: orphan, phase: verify.PhasePrepare, outcome: history.Unknown},
	)
	answered := hist(op{key: "a", outcome: history.OK}, op{key: "b", gid: "b", phase: verify.PhaseCommitPrepared, outcome: history.OK})
	cases := []struct {
		name     string
		check    experiments.PreparedTransactions
		run      verify.Run
		pass     bool
		evidence map[string]any
		summary  string // in the summary
	}{
		{
			name: "orphan", check: experiments.PreparedTransactions{GIDPrefix: prefix},
			evidence: map[string]any{"prepared": 1},
			summary:  `1 orphaned prepared transaction with gid prefix "pgchaos:ledger:": `,
		},
		{
			name: "orphan of any gid", check: experiments.PreparedTransactions{},
			evidence: map[string]any{"prepared": 1},
			summary:  "1 orphaned prepared transaction with any gid: ",
		},
		{
			name: "orphan older than", check: experiments.PreparedTransactions{GIDPrefix: prefix, OlderThan: experiments.Duration(time.Millisecond)},
			summary: `with gid prefix "pgchaos:ledger:" older than 1ms: `,
		},
		{
			name: "in doubt at COMMIT PREPARED, gid as key", check: experiments.PreparedTransactions{GIDPrefix: prefix, ExpectInDoubt: true},
			run: verify.Run{History: hist(op{key: prefix + "y", phase: verify.PhaseCommitPrepared, outcome: history.Unknown})}, pass: true,
			evidence: map[string]any{"in_doubt_in_history": 1, "in_doubt_gids": []string{prefix + "y"}},
		},
		{
			name: "unknown before the prepare is not in doubt", check: experiments.PreparedTransactions{GIDPrefix: "pgchaos:none:", ExpectInDoubt: true},
			run:      verify.Run{History: hist(op{key: "pgchaos:none:z", gid: "pgchaos:none:z", phase: "insert", outcome: history.Unknown})},
			evidence: map[string]any{"in_doubt_in_history": 0},
		},
		{
			name: "another prefix", check: experiments.PreparedTransactions{GIDPrefix: "pgchaos:other:"}, pass: true,
		},
		{
			name: "too young to be orphaned", check: experiments.PreparedTransactions{GIDPrefix: prefix, OlderThan: experiments.Duration(time.Hour)}, pass: true,
		},
		{
			name: "in doubt in the history", check: experiments.PreparedTransactions{GIDPrefix: prefix, ExpectInDoubt: true},
			run: verify.Run{History: inDoubt}, pass: true,
			evidence: map[string]any{"in_doubt_in_history": 1, "in_doubt_gids": []string{orphan}},
		},
		{
			name: "in doubt since the run started", check: experiments.PreparedTransactions{GIDPrefix: prefix, ExpectInDoubt: true},
			run: verify.Run{History: answered, RunWindow: verify.Window{Start: before.Add(-time.Minute)}}, pass: true,
			evidence: map[string]any{"in_doubt_in_history": 0, "prepared_this_run": 1},
		},
		{
			name: "prepared before the run is no evidence", check: experiments.PreparedTransactions{GIDPrefix: prefix, ExpectInDoubt: true},
			run:      verify.Run{History: answered, RunWindow: verify.Window{Start: time.Now().Add(time.Minute)}},
			evidence: map[string]any{"in_doubt_in_history": 0, "prepared_this_run": 0, "prepared": 1},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			run := tc.run
			run.VerifyDSN = dsn
			v := check(t, &tc.check, run)
			wantPass(t, v, tc.pass)
			for k, want := range tc.evidence {
				wantEvidence(t, v, k, want)
			}
			if !strings.Contains(v.Summary, tc.summary) {
				t.Errorf("summary %q lacks %q", v.Summary, tc.summary)
			}
			if !tc.pass && !tc.check.ExpectInDoubt {
				if got := v.Evidence["prepared_transactions"]; len(got.([]verify.PreparedXact)) != 1 || got.([]verify.PreparedXact)[0].GID != orphan {
					t.Errorf("evidence names %v, want %s", got, orphan)
				}
			}
		})
	}

	exec(t, dsn, "ROLLBACK PREPARED '"+orphan+"'")
	t.Run("resolved", func(t *testing.T) {
		v := check(t, &experiments.PreparedTransactions{GIDPrefix: prefix}, verify.Run{VerifyDSN: dsn})
		wantPass(t, v, true)
	})
	t.Run("nothing was in doubt", func(t *testing.T) {
		v := check(t, &experiments.PreparedTransactions{GIDPrefix: prefix, ExpectInDoubt: true}, verify.Run{VerifyDSN: dsn, History: answered})
		wantPass(t, v, false)
	})
}

func TestResolvePrepared(t *testing.T) {
	type gids struct{ ok, commitPrepared, prepare, failed, stranger, other string }
	setup := func(t *testing.T) (dsn string, g gids, h *history.History) {
		db, dsn := newDB(t)
		exec(t, dsn, "CREATE TABLE pgchaos_ledger (key text PRIMARY KEY)")
		p := "pgchaos:ledger:" + db + ":"
		g = gids{ok: p + "ok", commitPrepared: p + "cp", prepare: p + "pp", failed: p + "fail", stranger: p + "stranger", other: "other:" + db}
		for _, gid := range []string{g.ok, g.commitPrepared, g.prepare, g.failed, g.stranger, g.other} {
			prepare(t, dsn, "pgchaos_ledger", gid)
		}
		h = hist(
			// Told OK yet still prepared: the acknowledgement must win.
			op{key: g.ok, gid: g.ok, phase: verify.PhaseCommitPrepared, outcome: history.OK},
			op{key: g.commitPrepared, gid: g.commitPrepared, phase: verify.PhaseCommitPrepared, outcome: history.Unknown},
			// A one-phase-style op names its gid as its key only.
			op{key: g.prepare, phase: verify.PhasePrepare, outcome: history.Unknown},
			op{key: g.failed, gid: g.failed, phase: verify.PhaseCommitPrepared, outcome: history.Fail},
		)
		return dsn, g, h
	}
	sorted := func(s ...string) []string { slices.Sort(s); return s }

	cases := []struct {
		policy               string
		committed, rolledBck func(gids) []string
	}{
		{
			policy:    experiments.PolicyCommit,
			committed: func(g gids) []string { return sorted(g.ok, g.commitPrepared, g.prepare, g.failed, g.stranger) },
			rolledBck: func(gids) []string { return nil },
		},
		{
			policy:    experiments.PolicyRollback,
			committed: func(gids) []string { return nil },
			rolledBck: func(g gids) []string { return sorted(g.ok, g.commitPrepared, g.prepare, g.failed, g.stranger) },
		},
		{
			policy:    experiments.PolicyHistory,
			committed: func(g gids) []string { return sorted(g.ok, g.commitPrepared, g.prepare) },
			rolledBck: func(g gids) []string { return sorted(g.failed, g.stranger) },
		},
	}
	for _, tc := range cases {
		t.Run(tc.policy, func(t *testing.T) {
			dsn, g, h := setup(t)
			prefix := g.ok[:len(g.ok)-len("ok")]
			v, err := verify.ResolvePrepared(ctx(t), experiments.ResolvePrepared{GIDPrefix: prefix, Policy: tc.policy}, dsn, h)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s %v", v.Summary, v.Evidence)
			wantPass(t, v, true)
			if v.Type != "resolve_prepared" {
				t.Errorf("type %q", v.Type)
			}
			committed, rolledBack := tc.committed(g), tc.rolledBck(g)
			wantEvidence(t, v, "found", 5)
			wantEvidence(t, v, "committed", len(committed))
			wantEvidence(t, v, "rolled_back", len(rolledBack))
			gotC := sorted(v.Evidence["committed_gids"].([]string)...)
			gotR := sorted(v.Evidence["rolled_back_gids"].([]string)...)
			if !slices.Equal(gotC, committed) && len(gotC)+len(committed) > 0 {
				t.Errorf("committed %v, want %v", gotC, committed)
			}
			if !slices.Equal(gotR, rolledBack) && len(gotR)+len(rolledBack) > 0 {
				t.Errorf("rolled back %v, want %v", gotR, rolledBack)
			}
			// The table shows what was done; the other prefix is untouched.
			if got := keysIn(t, dsn, "pgchaos_ledger"); !slices.Equal(got, committed) && len(got)+len(committed) > 0 {
				t.Errorf("ledger rows %v, want %v", got, committed)
			}
			if got := preparedGIDs(t, dsn); !slices.Equal(got, []string{g.other}) {
				t.Errorf("still prepared %v, want only %s", got, g.other)
			}
			if tc.policy == experiments.PolicyHistory {
				wantEvidence(t, v, "reasons", map[string]int{
					verify.ReasonAcknowledged: 1, verify.ReasonInDoubt: 2,
					verify.ReasonFailed: 1, verify.ReasonNotInHistory: 1,
				})
				// A transaction manager's recovery leaves the ledger durable:
				// nothing acknowledged lost, nothing failed committed.
				d := check(t, &experiments.Durability{Workload: "ledger"}, verify.Run{History: h, VerifyDSN: dsn})
				wantPass(t, d, true)
				wantEvidence(t, d, "unknown_committed", 2)
				wantEvidence(t, d, "unknown_aborted", 0)
				wantEvidence(t, d, "in_doubt", 0)
			}
		})
	}

	t.Run("nothing to do", func(t *testing.T) {
		_, dsn := newDB(t)
		v, err := verify.ResolvePrepared(ctx(t), experiments.ResolvePrepared{GIDPrefix: "pgchaos:", Policy: experiments.PolicyHistory}, dsn, hist())
		if err != nil {
			t.Fatal(err)
		}
		wantPass(t, v, true)
		wantEvidence(t, v, "found", 0)
	})
	t.Run("unknown policy", func(t *testing.T) {
		_, err := verify.ResolvePrepared(ctx(t), experiments.ResolvePrepared{Policy: "maybe"}, "postgres://127.0.0.1:1/x", nil)
		if err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("history policy without a history", func(t *testing.T) {
		v, err := verify.ResolvePrepared(ctx(t), experiments.ResolvePrepared{Policy: experiments.PolicyHistory}, "postgres://127.0.0.1:1/x", nil)
		if err == nil || v.Pass {
			t.Fatalf("err %v, verdict %+v", err, v)
		}
	})
}
