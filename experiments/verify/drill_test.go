package verify_test

import (
	"strings"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
	"github.com/pgchaos/pgchaos/experiments/verify"
)

// rpo reads the node that serves and counts the acknowledged entries it
// does not have, with the window of their acknowledgements.
func TestRPO(t *testing.T) {
	_, dsn := newDB(t)
	exec(t, dsn, "CREATE TABLE pgchaos_ledger (key text PRIMARY KEY)",
		"INSERT INTO pgchaos_ledger (key) VALUES ('k1'), ('k2'), ('k5')")
	// k3 and k4 were acknowledged at 3s and 4.5s and are gone; k6 failed
	// and is absent, which is no loss.
	h := hist(
		op{key: "k1", outcome: history.OK, at: time.Second},
		op{key: "k2", outcome: history.OK, at: 2 * time.Second},
		op{key: "k3", outcome: history.OK, at: 3 * time.Second},
		op{key: "k4", outcome: history.OK, at: 4500 * time.Millisecond},
		op{key: "k5", outcome: history.OK, at: 6 * time.Second},
		op{key: "k6", outcome: history.Fail, at: 7 * time.Second},
		op{key: "k7", outcome: history.Unknown, at: 7 * time.Second},
	)
	run := verify.Run{History: h, VerifyDSN: dsn}

	v := check(t, &experiments.RPO{Workload: "ledger"}, run)
	wantPass(t, v, false)
	wantEvidence(t, v, "lost", 2)
	wantEvidence(t, v, "acknowledged", 5)
	wantEvidence(t, v, "lost_keys", []string{"k3", "k4"})
	// From k2, the last write kept before them, to k4.
	wantEvidence(t, v, "window", "2.5s")
	wantEvidence(t, v, "last_kept_ack_before", t0.Add(2*time.Second+time.Millisecond))
	if want := "2 of 5 acknowledged writes lost, a window of 2.5s"; !strings.Contains(v.Summary, want) {
		t.Errorf("summary %q, want %q in it", v.Summary, want)
	}

	wantPass(t, check(t, &experiments.RPO{Workload: "ledger", MaxLost: 2}, run), true)
	v = check(t, &experiments.RPO{Workload: "ledger", MaxLost: 2, MaxWindow: experiments.Duration(time.Second)}, run)
	wantPass(t, v, false)
	if !strings.Contains(v.Summary, "max_window 1s") {
		t.Errorf("summary %q does not name max_window", v.Summary)
	}
	wantPass(t, check(t, &experiments.RPO{Workload: "ledger", MaxLost: 2, MaxWindow: experiments.Duration(3 * time.Second)}, run), true)

	// One write lost: its window still runs from the last one kept.
	exec(t, dsn, "INSERT INTO pgchaos_ledger (key) VALUES ('k3')")
	v = check(t, &experiments.RPO{Workload: "ledger", MaxLost: 1}, run)
	wantEvidence(t, v, "window", "1.5s")
	wantEvidence(t, v, "last_kept_ack_before", t0.Add(3*time.Second+time.Millisecond))

	exec(t, dsn, "INSERT INTO pgchaos_ledger (key) VALUES ('k4')")
	v = check(t, &experiments.RPO{Workload: "ledger"}, run)
	wantPass(t, v, true)
	wantEvidence(t, v, "lost", 0)

	// Nothing acknowledged: nothing to judge.
	wantPass(t, check(t, &experiments.RPO{Workload: "ledger"}, verify.Run{History: hist(op{key: "x", outcome: history.Fail}), VerifyDSN: dsn}), false)
}

func TestRTO(t *testing.T) {
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	ms := time.Millisecond
	// The fault step ran from 10s to 10.01s.
	fault := []verify.Step{{Name: "crash", Window: verify.Window{Start: at(10 * time.Second), End: at(10*time.Second + 10*ms)}}}
	mk := func(kind string, start, end time.Duration, o history.Outcome) history.Op {
		return history.Op{Workload: "w", Kind: kind, Start: at(start), End: at(end), Outcome: o}
	}
	s := time.Second
	ops := []history.Op{
		mk("insert", 9*s, 9*s+5*ms, history.OK),            // before: the last ack before
		mk("insert", 9*s+995*ms, 10*s+5*ms, history.OK),    // started before the fault: not a recovery
		mk("insert", 10*s+1*ms, 10*s+3*ms, history.OK),     // done before the step ended: not one either
		mk("insert", 10*s+20*ms, 10*s+30*ms, history.Fail), // the outage
		mk("insert", 10*s+40*ms, 11*s, history.Unknown),    // the outage
		mk("insert", 11*s+100*ms, 12*s+345*ms, history.OK), // back: 2.345s after the fault began
		mk("insert", 11*s+200*ms, 12*s+500*ms, history.OK), // later
		mk("insert", 13*s, 13*s+10*ms, history.Fail),       // after recovery: not counted
	}
	h := &history.History{}
	for _, op := range ops {
		h.Add(op)
	}
	run := verify.Run{History: h, FaultSteps: fault, Workloads: map[string]experiments.Workload{"w": {Name: "w", Type: experiments.WorkloadLedger}}}

	v := check(t, &experiments.RTO{Workload: "w"}, run)
	wantPass(t, v, true)
	w := v.Evidence["writes"].(map[string]any)
	if w["rto"] != "2.345s" || w["failed_or_unknown"] != 2 || !w["last_ack_before"].(time.Time).Equal(at(9*s+5*ms)) {
		t.Errorf("writes evidence %v", w)
	}
	if _, ok := v.Evidence["reads"]; ok {
		t.Errorf("a ledger has no reads: %v", v.Evidence)
	}
	if !strings.Contains(v.Summary, "writes back after 2.345s (2 failed or unknown)") {
		t.Errorf("summary %q", v.Summary)
	}
	wantPass(t, check(t, &experiments.RTO{Workload: "w", Max: experiments.Duration(3 * s)}, run), true)
	v = check(t, &experiments.RTO{Workload: "w", Max: experiments.Duration(2 * s)}, run)
	wantPass(t, v, false)
	if !strings.Contains(v.Summary, "over max 2s") {
		t.Errorf("summary %q", v.Summary)
	}

	// Writes that never came back.
	h = &history.History{}
	h.Add(mk("insert", 9*s, 9*s+5*ms, history.OK))
	h.Add(mk("insert", 10*s+20*ms, 10*s+30*ms, history.Fail))
	v = check(t, &experiments.RTO{Workload: "w"}, verify.Run{History: h, FaultSteps: fault})
	wantPass(t, v, false)
	if !strings.Contains(v.Summary, "writes never came back") {
		t.Errorf("summary %q", v.Summary)
	}

	// A sql workload's SELECTs are reads, measured apart from its writes.
	sqlLoad := experiments.Workload{Name: "w", Type: experiments.WorkloadSQL, SQL: &experiments.SQLOptions{Statements: []experiments.Statement{
		{SQL: "SELECT count(*) FROM t"}, {SQL: "INSERT INTO t VALUES (1)"},
	}}}
	h = &history.History{}
	h.Add(mk("SELECT count(*) FROM t", 10*s+20*ms, 10*s+500*ms, history.OK))
	h.Add(mk("INSERT INTO t VALUES (1)", 10*s+20*ms, 10*s+30*ms, history.Fail))
	h.Add(mk("INSERT INTO t VALUES (1)", 10*s+600*ms, 11*s+10*ms, history.OK))
	v = check(t, &experiments.RTO{Workload: "w"}, verify.Run{History: h, FaultSteps: fault, Workloads: map[string]experiments.Workload{"w": sqlLoad}})
	wantPass(t, v, true)
	if r := v.Evidence["reads"].(map[string]any); r["rto"] != "500ms" {
		t.Errorf("reads %v", r)
	}
	if w := v.Evidence["writes"].(map[string]any); w["rto"] != "1.01s" {
		t.Errorf("writes %v", w)
	}

	// A replication delay injected at 5s hurt nobody; the crash at 10s
	// began the outage, and rto measures from it, or from the step named.
	h = &history.History{}
	h.Add(mk("insert", 5*s+100*ms, 5*s+110*ms, history.OK))
	h.Add(mk("insert", 10*s+20*ms, 10*s+30*ms, history.Fail))
	h.Add(mk("insert", 10*s+600*ms, 11*s, history.OK))
	steps := append([]verify.Step{{Name: "lag", Window: verify.Window{Start: at(5 * s), End: at(5 * s)}}}, fault...)
	v = check(t, &experiments.RTO{Workload: "w"}, verify.Run{History: h, FaultSteps: steps})
	wantEvidence(t, v, "measured_from", "crash")
	if w := v.Evidence["writes"].(map[string]any); w["rto"] != "1s" {
		t.Errorf("writes %v", w)
	}
	v = check(t, &experiments.RTO{Workload: "w", From: "lag"}, verify.Run{History: h, FaultSteps: steps})
	wantEvidence(t, v, "measured_from", "lag")
	if w := v.Evidence["writes"].(map[string]any); w["rto"] != "110ms" {
		t.Errorf("from lag: writes %v", w)
	}
	wantPass(t, check(t, &experiments.RTO{Workload: "w", From: "nope"}, verify.Run{History: h, FaultSteps: steps}), false)
	// Nothing failed: measured from the first fault step.
	h = &history.History{}
	h.Add(mk("insert", 5*s+100*ms, 5*s+110*ms, history.OK))
	wantEvidence(t, check(t, &experiments.RTO{Workload: "w"}, verify.Run{History: h, FaultSteps: steps}), "measured_from", "lag")

	// No fault step: nothing to measure from.
	wantPass(t, check(t, &experiments.RTO{Workload: "w"}, verify.Run{History: h}), false)
}

// pitr: entries acknowledged before the restore point must be there, and
// none begun after it; those in flight at the point may be either way.
func TestPITR(t *testing.T) {
	_, dsn := newDB(t)
	exec(t, dsn, "CREATE TABLE pgchaos_ledger (key text PRIMARY KEY)",
		"INSERT INTO pgchaos_ledger (key) VALUES ('before-1'), ('before-2'), ('in-flight')")
	s := time.Second
	h := hist(
		op{key: "before-1", outcome: history.OK, at: 1 * s},
		op{key: "before-2", outcome: history.OK, at: 2 * s},
		op{key: "failed-before", outcome: history.Fail, at: 2 * s},
		op{key: "in-flight", outcome: history.OK, at: 5*s - 10*time.Millisecond, took: 50 * time.Millisecond},
		op{key: "after-1", outcome: history.OK, at: 6 * s},
	)
	point := verify.Window{Start: t0.Add(5 * s), End: t0.Add(5*s + 20*time.Millisecond)}
	run := verify.Run{History: h, VerifyDSN: dsn, Serving: "restored", RestorePoints: map[string]verify.Window{"p": point}}

	v := check(t, &experiments.PITR{Workload: "ledger", Point: "p"}, run)
	wantPass(t, v, true)
	wantEvidence(t, v, "acknowledged_before", 2)
	wantEvidence(t, v, "begun_after", 1)
	if want := `restored, restored to "p", has 2 of the 2 entries acknowledged before the point and 0 of the 1 begun after it`; !strings.Contains(v.Summary, want) {
		t.Errorf("summary %q", v.Summary)
	}

	// Not restored: an entry begun after the point is there.
	exec(t, dsn, "INSERT INTO pgchaos_ledger (key) VALUES ('after-1')")
	v = check(t, &experiments.PITR{Workload: "ledger", Point: "p"}, run)
	wantPass(t, v, false)
	wantEvidence(t, v, "after_the_point_keys", []string{"after-1"})

	// The mistake reached the restore: entries before the point are gone.
	exec(t, dsn, "DELETE FROM pgchaos_ledger")
	v = check(t, &experiments.PITR{Workload: "ledger", Point: "p"}, run)
	wantPass(t, v, false)
	wantEvidence(t, v, "missing", 2)

	wantPass(t, check(t, &experiments.PITR{Workload: "ledger", Point: "other"}, run), false)
}
