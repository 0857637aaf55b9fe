package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// The soak's cycle covers every action type, and each of its rules is one
// pgchaos accepts: a typo would otherwise only show as a soak that fails
// to add its rule once a second.
func TestSoakFaultsCoverEveryAction(t *testing.T) {
	want := map[string]bool{"delay": false, "disconnect": false, "error": false, "hang": false,
		"partition": false, "drop": false, "refuse": false, "slow_connect": false}
	for _, typ := range faults.ToxicTypes {
		want[typ] = false
	}
	e := faults.NewEngine(faults.Options{Seed: 1})
	for _, f := range soakFaults() {
		data, err := json.Marshal(f.rule("soak-" + f.Label))
		if err != nil {
			t.Fatal(err)
		}
		var r faults.Rule
		if err := json.Unmarshal(data, &r); err != nil {
			t.Fatalf("%s: %v", f.Label, err)
		}
		if _, err := e.Add(r); err != nil {
			t.Errorf("%s: pgchaos refuses the rule %s: %v", f.Label, data, err)
		}
		if r.Match.ApplicationName != victimMatch {
			t.Errorf("%s matches application_name %q, want %q", f.Label, r.Match.ApplicationName, victimMatch)
		}
		want[r.Action.Type] = true
	}
	for typ, covered := range want {
		if !covered {
			t.Errorf("no soak fault of action type %s", typ)
		}
	}
}

// TestSoak is the soak as CI runs it: 60 s of faults on 1,000 sessions with
// the real PostgreSQL, PgBouncer and a pgchaos process. Every target but
// the RSS trend, which a minute is too short to judge, fails the test.
//
// The soak runs as its own process, built without -race: the race
// detector slows the thousand clients several times over, and their delay
// would be measured as pgchaos's (removal-to-release above all). It has 20
// victims rather than 200, so that a removal lets go of some fifteen
// queries at once rather than a hundred and more: on two cores, a hundred
// round trips through PgBouncer and PostgreSQL take longer than the 10 ms
// release target whether or not a fault held them (30 already come close),
// and the 10-minute run reports that case.
//
// The release target here is 500 ms, not the 10 ms the documented
// 10-minute run holds: this run shares the two cores with the -race test
// packages `go test ./...` runs beside it — explore's trials and the docs'
// walk-throughs start PostgreSQL sessions and psql by the hundred — and
// with a dozen held queries its p99 is its slowest one, which one
// descheduled moment decides (99.7 ms and 410 ms seen beside them). What
// the short run must catch is a release that does not happen on removal:
// the long delay would then hold its query for its full 30 s, and a poll
// would show as a second or so. 500 ms fails both.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak takes about 90 s")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bench")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build ./bench: %v\n%s", err, out)
	}
	results := filepath.Join(dir, "soak.json")
	cmd := exec.Command(bin, "soak", "--duration", "60s", "--sessions", "1000", "--victims", "20",
		"--report-every", "20s", "--release-target", "500ms", "--json", results)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	t.Logf("bench soak:\n%s", out)
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == exitNotInstalled {
		pgtest.Unavailable(t, errors.New(strings.TrimSpace(tail(stderr.String(), 1))))
	}
	data, rerr := os.ReadFile(results)
	if rerr != nil {
		t.Fatalf("bench soak wrote no results (%v): %v\n%s", rerr, err, tail(stderr.String(), 40))
	}
	var res soakResults
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatalf("reading %s: %v", results, err)
	}
	missed := 0
	for _, c := range res.Checks {
		if !c.Met && !c.ReportOnly {
			missed++
			t.Errorf("soak target missed: %s: want %s, got %s", c.Name, c.Want, c.Got)
		}
	}
	if err != nil && missed == 0 {
		t.Errorf("bench soak: %v\n%s", err, tail(stderr.String(), 40))
	}
	if len(res.Checks) == 0 {
		t.Error("bench soak reported no targets")
	}
}
