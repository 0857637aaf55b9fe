package workload

import (
	"slices"
	"testing"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

func ledgerSpec(twoPhase bool, clients int) experiments.Workload {
	return experiments.Workload{
		Name: "ledger", Type: experiments.WorkloadLedger, Clients: clients,
		Ledger: &experiments.LedgerOptions{Table: experiments.DefaultLedgerTable, TwoPhase: twoPhase},
	}
}

// Without faults every entry is acknowledged and in the table, and two
// phases leave no prepared transaction behind.
func TestLedger(t *testing.T) {
	for _, twoPhase := range []bool{false, true} {
		name := "plain"
		if twoPhase {
			name = "two_phase"
		}
		t.Run(name, func(t *testing.T) {
			db, direct := newDB(t)
			w, h := newWorkload(t, ledgerSpec(twoPhase, 3), dsnOf(db), dsnOf(db))
			if err := w.Setup(testCtx(t)); err != nil { // idempotent
				t.Fatalf("second setup: %v", err)
			}
			// Until every client has done a few, however slow the machine.
			runUntil(t, w, h, func(ops []history.Op) bool {
				per := map[int]int{}
				for _, op := range ops {
					per[op.Client]++
				}
				return len(per) == 3 && min(per[1], per[2], per[3]) >= 5
			})

			ops := h.Of("ledger")
			keys := queryStrings(t, direct, "SELECT key FROM pgchaos_ledger WHERE workload = 'ledger'")
			seen := map[string]bool{}
			clients := map[int]bool{}
			for _, op := range ops {
				if op.Outcome != history.OK || op.Kind != "insert" || op.SQLState != "" || op.Error != "" {
					t.Fatalf("op %+v: want ok", op)
				}
				if !keys[op.Key] || seen[op.Key] {
					t.Fatalf("op %+v: key missing from the table or recorded twice", op)
				}
				seen[op.Key] = true
				clients[op.Client] = true
				wantPhase, wantGID := PhaseCommit, ""
				if twoPhase {
					wantPhase, wantGID = PhaseCommitPrepared, op.Key
				}
				if op.Phase != wantPhase || op.GID != wantGID || op.Key != LedgerKey("ledger", "r1", op.Client, op.Seq) {
					t.Fatalf("op %+v: want phase %q, gid %q and the key of its client and seq", op, wantPhase, wantGID)
				}
				if op.End.Before(op.Start) || op.Latency <= 0 {
					t.Fatalf("op %+v: bad timing", op)
				}
			}
			if len(keys) != len(ops) {
				t.Fatalf("table has %d entries, history %d", len(keys), len(ops))
			}
			if len(clients) != 3 {
				t.Fatalf("ops from clients %v, want 3 clients", clients)
			}
			if gids := preparedGIDs(t, direct, db); len(gids) != 0 {
				t.Fatalf("prepared transactions left: %v", gids)
			}
		})
	}
}

// The connection is cut as PREPARE TRANSACTION's reply goes by: the entry
// is prepared but the client cannot know, so it is unknown; the client
// reconnects and goes on.
func TestLedgerCutAfterPrepare(t *testing.T) {
	db, direct := newDB(t)
	addr, engine := faultProxy(t)
	addRule(t, engine, faults.Rule{Name: "cut", Match: faults.Match{Tag: "PREPARE TRANSACTION"},
		Action: faults.Action{Type: "disconnect"}, Limits: faults.Limits{Times: 3}})
	w, h := newWorkload(t, ledgerSpec(true, 2), pgtest.ConnString(addr, pgtest.SuperUser, "", db), dsnOf(db))
	runUntil(t, w, h, func(ops []history.Op) bool {
		return len(byOutcome(ops, history.Unknown)) >= 3 && okAfter(ops, history.Unknown)
	})

	ops := h.Of("ledger")
	unknown := byOutcome(ops, history.Unknown)
	if len(unknown) != 3 {
		t.Fatalf("%d unknown operations, want 3: %v", len(unknown), unknown)
	}
	if n := fired(t, engine, "cut"); n != 3 {
		t.Fatalf("rule fired %d times, want 3", n)
	}
	if fails := byOutcome(ops, history.Fail); len(fails) != 0 {
		t.Fatalf("failed operations: %v", fails)
	}
	var inDoubt []string
	for _, op := range unknown {
		if op.Phase != PhasePrepare || op.GID == "" || op.SQLState != "" || op.Error == "" {
			t.Fatalf("unknown op %+v: want phase prepare, a gid and the connection error", op)
		}
		inDoubt = append(inDoubt, op.GID)
	}
	slices.Sort(inDoubt)
	if got := preparedGIDs(t, direct, db); !slices.Equal(got, inDoubt) {
		t.Fatalf("pg_prepared_xacts has %v, want the unknown gids %v", got, inDoubt)
	}
	keys := queryStrings(t, direct, "SELECT key FROM pgchaos_ledger")
	ok := byOutcome(ops, history.OK)
	for _, op := range ok {
		if !keys[op.Key] {
			t.Fatalf("acknowledged entry %s is missing", op.Key)
		}
	}
	if len(keys) != len(ok) {
		t.Fatalf("table has %d entries, %d acknowledged", len(keys), len(ok))
	}
}

// The proxy tells the client COMMIT failed with 40001 after the server
// committed: the client records failures whose rows are in the table —
// ghost writes, which the durability verifier must catch.
func TestLedgerErrorAfterCommit(t *testing.T) {
	db, direct := newDB(t)
	addr, engine := faultProxy(t)
	addRule(t, engine, faults.Rule{Name: "lie", Match: faults.Match{Statement: faults.StringList{"commit"}},
		Action: faults.Action{Type: "error", When: "after", SQLState: "40001"}, Limits: faults.Limits{Times: 2}})
	w, h := newWorkload(t, ledgerSpec(false, 2), pgtest.ConnString(addr, pgtest.SuperUser, "", db), dsnOf(db))
	runUntil(t, w, h, func(ops []history.Op) bool {
		return len(byOutcome(ops, history.Fail)) >= 2 && okAfter(ops, history.Fail)
	})

	ops := h.Of("ledger")
	fails := byOutcome(ops, history.Fail)
	if len(fails) != 2 {
		t.Fatalf("%d failed operations, want 2: %v", len(fails), fails)
	}
	if unknown := byOutcome(ops, history.Unknown); len(unknown) != 0 {
		t.Fatalf("unknown operations: %v", unknown)
	}
	keys := queryStrings(t, direct, "SELECT key FROM pgchaos_ledger")
	for _, op := range fails {
		if op.SQLState != "40001" || op.Phase != PhaseCommit {
			t.Fatalf("failed op %+v: want 40001 at commit", op)
		}
		if !keys[op.Key] {
			t.Fatalf("ghost entry %s is not in the table: the commit should have happened", op.Key)
		}
	}
	ok := byOutcome(ops, history.OK)
	for _, op := range ok {
		if !keys[op.Key] {
			t.Fatalf("acknowledged entry %s is missing", op.Key)
		}
	}
	if len(keys) != len(ok)+2 {
		t.Fatalf("table has %d entries; want %d acknowledged + 2 ghosts", len(keys), len(ok))
	}
}

// An error before the commit point fails the entry and leaves nothing:
// INSERT refused with 40001, INSERT's connection cut after the server ran
// it (the server rolls back), BEGIN refused.
func TestLedgerFailBeforeCommit(t *testing.T) {
	cases := []struct {
		name      string
		rule      faults.Rule
		wantPhase string
		wantState string
	}{
		{"insert refused", faults.Rule{Match: faults.Match{Statement: faults.StringList{"insert"}},
			Action: faults.Action{Type: "error", SQLState: "40001"}}, PhaseInsert, "40001"},
		{"insert cut after", faults.Rule{Match: faults.Match{Tag: "INSERT"},
			Action: faults.Action{Type: "disconnect"}}, PhaseInsert, ""},
		{"insert lied about", faults.Rule{Match: faults.Match{Statement: faults.StringList{"insert"}},
			Action: faults.Action{Type: "error", When: "after", SQLState: "40P01"}}, PhaseInsert, "40P01"},
		{"begin refused", faults.Rule{Match: faults.Match{Statement: faults.StringList{"begin"}},
			Action: faults.Action{Type: "error", SQLState: "57014"}}, PhaseBegin, "57014"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, direct := newDB(t)
			addr, engine := faultProxy(t)
			tc.rule.Name = "fault"
			tc.rule.Limits.Times = 2
			addRule(t, engine, tc.rule)
			w, h := newWorkload(t, ledgerSpec(false, 1), pgtest.ConnString(addr, pgtest.SuperUser, "", db), dsnOf(db))
			runUntil(t, w, h, func(ops []history.Op) bool {
				return len(byOutcome(ops, history.Fail)) >= 2 && okAfter(ops, history.Fail)
			})
			ops := h.Of("ledger")
			fails := byOutcome(ops, history.Fail)
			if len(fails) != 2 || len(byOutcome(ops, history.Unknown)) != 0 {
				t.Fatalf("outcomes %v, want exactly 2 failures", history.Counts(ops))
			}
			keys := queryStrings(t, direct, "SELECT key FROM pgchaos_ledger")
			for _, op := range fails {
				if op.Phase != tc.wantPhase || op.SQLState != tc.wantState {
					t.Fatalf("failed op %+v: want phase %q, sqlstate %q", op, tc.wantPhase, tc.wantState)
				}
				if keys[op.Key] {
					t.Fatalf("failed entry %s is in the table", op.Key)
				}
			}
			if ok := byOutcome(ops, history.OK); len(keys) != len(ok) {
				t.Fatalf("table has %d entries, %d acknowledged", len(keys), len(ok))
			}
		})
	}
}

// Losing the connection while COMMIT is in flight leaves the entry unknown,
// and so does losing it during COMMIT PREPARED, when the entry was
// certainly prepared.
func TestLedgerCutAtCommit(t *testing.T) {
	cases := []struct {
		name      string
		twoPhase  bool
		rule      faults.Rule
		wantPhase string
		committed bool // whether the server committed before the cut
		prepared  bool // whether it is left prepared
	}{
		{"commit cut after", false, faults.Rule{Match: faults.Match{Tag: "COMMIT"}, Action: faults.Action{Type: "disconnect"}},
			PhaseCommit, true, false},
		{"commit cut before", false, faults.Rule{Match: faults.Match{Statement: faults.StringList{"commit"}}, Action: faults.Action{Type: "disconnect"}},
			PhaseCommit, false, false},
		{"commit prepared cut before", true, faults.Rule{Match: faults.Match{Statement: faults.StringList{"commit_prepared"}}, Action: faults.Action{Type: "disconnect"}},
			PhaseCommitPrepared, false, true},
		{"commit prepared refused", true, faults.Rule{Match: faults.Match{Statement: faults.StringList{"commit_prepared"}}, Action: faults.Action{Type: "error", SQLState: "40001"}},
			PhaseCommitPrepared, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, direct := newDB(t)
			addr, engine := faultProxy(t)
			tc.rule.Name = "fault"
			tc.rule.Limits.Times = 1
			addRule(t, engine, tc.rule)
			w, h := newWorkload(t, ledgerSpec(tc.twoPhase, 1), pgtest.ConnString(addr, pgtest.SuperUser, "", db), dsnOf(db))
			runUntil(t, w, h, func(ops []history.Op) bool {
				return len(byOutcome(ops, history.Unknown)) >= 1 && okAfter(ops, history.Unknown)
			})
			ops := h.Of("ledger")
			unknown := byOutcome(ops, history.Unknown)
			if len(unknown) != 1 || len(byOutcome(ops, history.Fail)) != 0 {
				t.Fatalf("outcomes %v, want exactly 1 unknown", history.Counts(ops))
			}
			op := unknown[0]
			if op.Phase != tc.wantPhase {
				t.Fatalf("unknown op %+v: want phase %q", op, tc.wantPhase)
			}
			keys := queryStrings(t, direct, "SELECT key FROM pgchaos_ledger")
			if keys[op.Key] != tc.committed {
				t.Fatalf("entry %s in the table: %v, want %v", op.Key, keys[op.Key], tc.committed)
			}
			gids := preparedGIDs(t, direct, db)
			if want := tc.prepared; slices.Contains(gids, op.GID) != want || len(gids) != map[bool]int{false: 0, true: 1}[want] {
				t.Fatalf("prepared transactions %v; want %s prepared: %v", gids, op.GID, want)
			}
		})
	}
}
