package workload

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/experiments/history"
)

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Pause stops new operations, keeps the clients' connections, and Resume
// goes on where they left off.
func TestPause(t *testing.T) {
	db, direct := newDB(t)
	w, h := newWorkload(t, ledgerSpec(false, 2), dsnOf(db), dsnOf(db))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stop := sync.OnceValue(func() error { cancel(); return <-done })
	defer stop()
	waitFor(t, func() bool { return len(h.Of("ledger")) >= 20 })

	sessions := func() int64 {
		return queryInt(t, direct, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'pgchaos-ledger-c%'", db)
	}
	w.Pause()
	paused := time.Now()
	// Unpaced, two clients do dozens of operations in half a second.
	time.Sleep(500 * time.Millisecond)
	// A client that got past the gate just before Pause may start one
	// operation after it, however late the machine lets it run; none may
	// start a second.
	after := map[int]int{}
	for _, op := range h.Of("ledger") {
		if op.Start.After(paused) {
			after[op.Client]++
			if after[op.Client] > 1 {
				t.Fatalf("client %d started %d operations after Pause, the last %+v", op.Client, after[op.Client], op)
			}
		}
	}
	if s := sessions(); s != 2 {
		t.Fatalf("%d client sessions while paused, want 2", s)
	}

	resumed := time.Now()
	w.Resume()
	waitFor(t, func() bool {
		after := map[int]bool{}
		for _, op := range h.Of("ledger") {
			if op.Start.After(resumed) && op.Outcome == history.OK {
				after[op.Client] = true
			}
		}
		return len(after) == 2
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if counts := history.Counts(h.Of("ledger")); counts[history.Fail]+counts[history.Unknown] != 0 {
		t.Fatalf("outcomes %v, want all ok", counts)
	}
}
