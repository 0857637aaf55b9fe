package workload

import (
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
)

// Concurrent transfers under serializable keep the total constant; the
// serialization failures they run into are retried.
func TestBankSerializable(t *testing.T) {
	db, direct := newDB(t)
	spec := experiments.Workload{Name: "bank", Type: experiments.WorkloadBank, Clients: 4,
		Bank: &experiments.BankOptions{Accounts: 5, InitialBalance: 100, Isolation: "serializable"}}
	w, h := newWorkload(t, spec, dsnOf(db), dsnOf(db))
	runFor(t, w, 1500*time.Millisecond)

	ops := h.Of("bank")
	counts := history.Counts(ops)
	if counts[history.OK] < 10 || counts[history.Unknown] != 0 {
		t.Fatalf("outcomes %v, want many ok and no unknown", counts)
	}
	for _, op := range byOutcome(ops, history.Fail) {
		if op.SQLState != "40001" && op.SQLState != "40P01" {
			t.Fatalf("failed transfer %+v: want only exhausted retries", op)
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
