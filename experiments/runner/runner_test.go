package runner_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/runner"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// The shipped experiments start their own throwaway servers; the small
// experiments of steps_test.go run against this one, each in a database of
// its own. It can prepare transactions, as resolve_prepared needs.
var pg *pgtest.Postgres

func TestMain(m *testing.M) {
	pgtest.Main(m, pgtest.Options{Settings: map[string]string{"max_prepared_transactions": "10"}}, &pg)
}

func shipped(t *testing.T, name string) *experiments.Experiment {
	t.Helper()
	// From its file, as pgchaos demo reads it: exec steps find the
	// runbooks beside it.
	exp, err := experiments.ParseFile(filepath.Join("..", "examples", name), nil, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	return exp
}

func run(t *testing.T, exp *experiments.Experiment) (*runner.Result, string) {
	t.Helper()
	var out strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res := runner.Run(ctx, exp, runner.Options{Out: &out, Embedded: true})
	t.Log(out.String())
	return res, out.String()
}

// The demo: the fault fires mid-PREPARE, in-doubt transactions appear, the
// resolver settles them, and every verifier passes.
func TestTwoPhaseMidPrepare(t *testing.T) {
	res, out := run(t, shipped(t, "2pc-mid-prepare.yaml"))
	if !res.Pass || res.ExitCode() != runner.ExitPass {
		t.Fatalf("run failed in %s: %s\nnot ok: %+v", res.Phase, res.Problem, res.NotOK)
	}
	if len(res.FaultWindows) != 1 || res.FaultWindows[0].Fired < 1 {
		t.Fatalf("fault windows: %+v", res.FaultWindows)
	}
	if res.Operations["unknown"] < 1 || res.Operations["ok"] < 100 {
		t.Fatalf("operations: %v", res.Operations)
	}
	for _, want := range []string{"method: cut-after-prepare", "prepared transactions", "verify durability(ledger): ok: ", "verify prepared_transactions"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q", want)
		}
	}
	if s := junitOf(t, res); s.Failures != 0 || s.Tests < 4 {
		t.Fatalf("JUnit: %d tests, %d failures", s.Tests, s.Failures)
	}
}

// A lost COMMIT acknowledgement leaves ghost writes; pgchaos must catch
// them and fail the run.
func TestCommitAckLostFails(t *testing.T) {
	res, _ := run(t, shipped(t, "commit-ack-lost.yaml"))
	if res.Pass || res.ExitCode() != runner.ExitFailed {
		t.Fatalf("the run passed; it must fail on ghost writes (phase %s)", res.Phase)
	}
	found := map[string]bool{}
	for _, v := range res.Verdicts {
		found[v.Type] = true
		switch v.Type {
		case "durability":
			if v.Pass || !strings.Contains(v.Summary, "ghost") {
				t.Fatalf("durability: %+v", v)
			}
		case "errors":
			// The lie reached the clients: the ghosts are not for want of
			// a fault.
			if !v.Pass {
				t.Fatalf("errors: %+v", v)
			}
		}
	}
	if !found["durability"] || !found["errors"] {
		t.Fatalf("verdicts %+v: want durability and errors", res.Verdicts)
	}
}

// TestShippedExperiments runs the shipped experiments the tests above do
// not, each on the embedded default, and expects each to pass.
func TestShippedExperiments(t *testing.T) {
	for _, name := range []string{"2pc-mid-commit-prepared.yaml", "pgbouncer-server-disconnect.yaml", "serialization-storm.yaml", "latency-spike.yaml"} {
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			exp := shipped(t, name)
			var buf bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			start := time.Now()
			res := runner.Run(ctx, exp, runner.Options{Embedded: true, Out: &buf})
			t.Logf("%s ran in %s\n%s", name, time.Since(start).Round(100*time.Millisecond), buf.String())
			if !res.Pass {
				t.Fatalf("%s failed in %s: %s\nnot ok: %+v\n%s", name, res.Phase, res.Problem, res.NotOK, buf.String())
			}
		})
	}
}
