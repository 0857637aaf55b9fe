package workload

import (
	"context"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// Rate paces all clients together, and Duration ends the run by itself.
func TestRateAndDuration(t *testing.T) {
	db, _ := newDB(t)
	spec := ledgerSpec(false, 3)
	spec.Rate = 50
	spec.Duration = experiments.Duration(time.Second)
	w, h := newWorkload(t, spec, dsnOf(db), dsnOf(db))
	start := time.Now()
	if err := w.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// It ends by itself after its duration; operations in flight may
	// finish within stopGrace.
	if took := time.Since(start); took < time.Second || took > time.Second+stopGrace {
		t.Fatalf("Run took %v, want about the 1s duration", took)
	}
	// The pacer hands out a slot every 20ms and never a burst: at most 51
	// operations start in 1s, whatever the load. Unpaced, 3 clients do
	// hundreds; a machine too loaded to keep up does fewer than 50, so
	// the lower bound only catches a rate off by an order of magnitude.
	ops := h.Of("ledger")
	if n := len(ops); n < 10 || n > 51 {
		t.Fatalf("%d operations in 1s at 50/s", n)
	}
	if counts := history.Counts(ops); counts[history.OK] != len(ops) {
		t.Fatalf("outcomes %v", counts)
	}
}

// While the server cannot be reached, each attempt is a failed operation,
// spaced out by the reconnect backoff.
func TestUnreachable(t *testing.T) {
	// Port 1, where nothing listens: a port that was free a moment ago
	// may be another test's server by the time the workload dials it.
	h := &history.History{}
	w, err := New(ledgerSpec(false, 1), Env{DSN: pgtest.ConnString("127.0.0.1:1", pgtest.SuperUser, "", "postgres"),
		RunID: "r1", History: h, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	runFor(t, w, time.Second)
	ops := h.Of("ledger")
	// 10+20+40+80+160+320ms of backoff fit in a second: about 7 attempts.
	if len(ops) < 3 || len(ops) > 12 {
		t.Fatalf("%d attempts in 1s", len(ops))
	}
	for _, op := range ops {
		if op.Outcome != history.Fail || op.Phase != PhaseConnect || op.Error == "" || op.Key == "" {
			t.Fatalf("op %+v: want a failed connect", op)
		}
	}
}
