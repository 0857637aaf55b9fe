package runner_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/experiments/runner"
)

// Ctrl-C in the middle of the method: the faults are removed, the
// rollbacks still run, and the run reports exit status 130.
func TestInterruptRunsRollbacks(t *testing.T) {
	exp := shipped(t, "2pc-mid-prepare.yaml")
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncWriter{b: &strings.Builder{}}
	done := make(chan *runner.Result, 1)
	go func() { done <- runner.Run(ctx, exp, runner.Options{Out: out, Embedded: true}) }()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "method: cut-after-prepare") {
		if time.Now().After(deadline) {
			t.Fatal("the method never started")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	cancel()
	res := <-done
	t.Log(out.String())
	if !res.Interrupted || res.ExitCode() != runner.ExitInterrupted {
		t.Fatalf("interrupted=%v exit=%d", res.Interrupted, res.ExitCode())
	}
	if len(res.Rollbacks) != 1 || res.Rollbacks[0].Error != "" {
		t.Fatalf("rollbacks: %+v", res.Rollbacks)
	}
	if len(res.FaultWindows) != 1 || res.FaultWindows[0].End.IsZero() {
		t.Fatalf("the fault was not removed: %+v", res.FaultWindows)
	}
}

// syncWriter lets the test read what the run writes from other goroutines.
type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
