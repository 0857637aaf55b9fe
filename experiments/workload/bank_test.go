package workload

import (
	"testing"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// Concurrent transfers under serializable keep the total constant; the
// serialization failures they run into are retried.
func TestBankSerializable(t *testing.T) {
	db, direct := newDB(t)
	spec := experiments.Workload{Name: "bank", Type: experiments.WorkloadBank, Clients: 4,
		Bank: &experiments.BankOptions{Accounts: 5, InitialBalance: 100, Isolation: "serializable"}}
	w, h := newWorkload(t, spec, dsnOf(db), dsnOf(db))
	runUntil(t, w, h, func(ops []history.Op) bool { return history.Counts(ops)[history.OK] >= 50 })

	ops := h.Of("bank")
	counts := history.Counts(ops)
	if counts[history.OK] < 50 || counts[history.Unknown] != 0 {
		t.Fatalf("outcomes %v, want many ok and no unknown", counts)
	}
	for _, op := range byOutcome(ops, history.Fail) {
		if op.SQLState != "40001" && op.SQLState != "40P01" {
			t.Fatalf("failed transfer %+v: want only exhausted retries", op)
		}
	}
	for _, op := range ops {
		for _, state := range op.Retried {
			if state != "40001" && state != "40P01" {
				t.Fatalf("transfer %+v retried on %q", op, state)
			}
		}
	}
	for _, op := range ops {
		if op.Kind != "transfer" || op.Key == "" {
			t.Fatalf("op %+v: want a named transfer", op)
		}
	}
	table := BankTable("bank")
	if n := queryInt(t, direct, "SELECT count(*) FROM "+table); n != 5 {
		t.Fatalf("%d accounts, want 5", n)
	}
	if total := queryInt(t, direct, "SELECT sum(balance) FROM "+table); total != 500 {
		t.Fatalf("total balance %d, want 500", total)
	}
	if moved := queryInt(t, direct, "SELECT count(*) FROM "+table+" WHERE balance <> 100"); moved == 0 {
		t.Fatal("no money moved")
	}

	// Setup again resets the accounts.
	if err := w.Setup(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if moved := queryInt(t, direct, "SELECT count(*) FROM "+table+" WHERE balance <> 100"); moved != 0 {
		t.Fatalf("%d accounts not reset by Setup", moved)
	}
}

// A serialization failure the proxy injects is retried, and the transfer
// that succeeded in the end still records it: the client was told.
func TestBankRecordsRetries(t *testing.T) {
	db, direct := newDB(t)
	addr, engine := faultProxy(t)
	addRule(t, engine, faults.Rule{Name: "conflict", Match: faults.Match{Statement: faults.StringList{"update"}},
		Action: faults.Action{Type: "error", SQLState: "40001"}, Limits: faults.Limits{Times: 3}})
	spec := experiments.Workload{Name: "bank", Type: experiments.WorkloadBank, Clients: 1,
		Bank: &experiments.BankOptions{Accounts: 5, InitialBalance: 100, Isolation: "serializable"}}
	w, h := newWorkload(t, spec, pgtest.ConnString(addr, pgtest.SuperUser, "", db), dsnOf(db))
	// Once the third failure went out, the transfer it hit is retried and
	// recorded, and the one after it too: then every retry is in the history.
	seen := -1
	runUntil(t, w, h, func(ops []history.Op) bool {
		if seen < 0 && fired(t, engine, "conflict") == 3 {
			seen = len(ops)
		}
		return seen >= 0 && len(ops) >= seen+2
	})

	retried := 0
	for _, op := range h.Of("bank") {
		if op.Outcome != history.OK {
			t.Fatalf("transfer %+v: want ok after retries", op)
		}
		for _, state := range op.Retried {
			if state != "40001" {
				t.Fatalf("transfer %+v retried on %q, want 40001", op, state)
			}
			retried++
		}
	}
	if retried != 3 {
		t.Fatalf("%d retried attempts recorded, want the 3 injected", retried)
	}
	if total := queryInt(t, direct, "SELECT sum(balance) FROM "+BankTable("bank")); total != 500 {
		t.Fatalf("total balance %d, want 500", total)
	}
}
