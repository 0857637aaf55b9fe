package explore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/explore"
	"github.com/pgchaos/pgchaos/experiments/runner"
	"github.com/pgchaos/pgchaos/internal/pgtest"
)

var pg *pgtest.Postgres

func TestMain(m *testing.M) { pgtest.Main(m, pgtest.Options{}, &pg) }

var (
	shopOnce sync.Once
	shopBin  string
	shopErr  error
)

// shop builds the sample application once.
func shop(t *testing.T) string {
	t.Helper()
	shopOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pgchaos-shop-")
		if err != nil {
			shopErr = err
			return
		}
		shopBin = filepath.Join(dir, "shop")
		out, err := exec.Command("go", "build", "-o", shopBin, "github.com/pgchaos/pgchaos/internal/sampleapp/shop").CombinedOutput()
		if err != nil {
			shopErr = fmt.Errorf("go build shop: %v\n%s", err, out)
		}
	})
	if shopErr != nil {
		t.Fatal(shopErr)
	}
	return shopBin
}

func exploreShop(t *testing.T, mistake string, change func(*experiments.Explore)) (*explore.Report, *experiments.Experiment, []byte) {
	t.Helper()
	src, err := os.ReadFile("testdata/shop.yaml")
	if err != nil {
		t.Fatal(err)
	}
	flag := ""
	if mistake != "" {
		flag = "-mistake " + mistake
	}
	exp, err := experiments.Parse(src, "testdata/shop.yaml", map[string]string{"shop": shop(t), "mistake": flag}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if change != nil {
		change(exp.Explore)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	rep := explore.Run(ctx, exp, explore.Options{Out: &out, Postgres: pg, Parallel: 2})
	t.Logf("explore %s:\n%s", mistake, out.String())
	return rep, exp, src
}

// cell finds the table cell of a fault at a point (first occurrence).
func cell(t *testing.T, rep *explore.Report, column, point string) *explore.Cell {
	t.Helper()
	for _, c := range rep.Cells {
		if c.Column == column && c.Point == point && c.Occurrence == 1 {
			return c
		}
	}
	t.Fatalf("no cell %s at %s", column, point)
	return nil
}

// pointOf finds the point of a statement by its fingerprint's start.
func pointOf(t *testing.T, rep *explore.Report, prefix string) string {
	t.Helper()
	for _, p := range rep.Points {
		if p.Connection == "" && strings.HasPrefix(p.Fingerprint, prefix) {
			return p.ID
		}
	}
	t.Fatalf("no point for %q in %+v", prefix, rep.Points)
	return ""
}

// The sample shop with each planted mistake: explore flags it at the
// fault that reveals it, and the correct shop survives every fault. Each
// mistake is one a real application makes around connection loss,
// retries, transactions and deadlines.
func TestExploreFindsPlantedMistakes(t *testing.T) {
	const (
		placed = "every order placed, once"
		addsUp = "stock and orders add up"
	)
	for _, tc := range []struct {
		mistake string
		// broke are cells that must break, as fault, statement, verifier.
		broke [][3]string
	}{
		// Retrying an in-doubt COMMIT under a new id: a duplicate order.
		{"retry-new-id", [][3]string{{"cut_after", "COMMIT", placed}, {"error_after 40001", "COMMIT", placed}}},
		// Giving up on a serialization failure or a lost connection.
		{"no-retry", [][3]string{{"error_before 40001", "INSERT", placed}, {"cut_before", "UPDATE", placed}}},
		// No deadline: a statement that is never answered hangs the app.
		{"no-deadline", [][3]string{{"hang", "BEGIN", "liveness"}}},
		// INSERT and UPDATE in two transactions: a cut between them loses
		// the stock update, and the retry thinks the order is done.
		{"split-transaction", [][3]string{{"cut_before", "UPDATE", addsUp}, {"error_before 40001", "UPDATE", addsUp}}},
		// Connecting once: a refused connection loses every order.
		{"no-reconnect", [][3]string{{"refuse", "connect", placed}}},
		// Going on in an aborted transaction instead of rolling back.
		{"reuse-failed-tx", [][3]string{{"error_before 40001", "UPDATE", placed}}},
	} {
		t.Run(tc.mistake, func(t *testing.T) {
			rep, exp, src := exploreShop(t, tc.mistake, nil)
			if !rep.BaselinePass || rep.Problem != "" {
				t.Fatalf("clean run: %s %s", rep.BaselineProblem, rep.Problem)
			}
			if code := rep.ExitCode(); code != explore.ExitBroke {
				t.Errorf("exit %d, want %d", code, explore.ExitBroke)
			}
			for _, want := range tc.broke {
				point := want[1]
				if point != "connect" {
					point = pointOf(t, rep, want[1])
				}
				c := cell(t, rep, want[0], point)
				if c.Status != explore.StatusBroke || c.Verifier != want[2] {
					t.Errorf("%s at %s (%s): %s %s %q, want broke by %s", want[0], point, want[1], c.Status, c.Verifier, c.Evidence, want[2])
				}
			}
			if len(rep.Groups) == 0 || rep.Counts[explore.StatusBroke] != sumGroups(rep.Groups) {
				t.Errorf("groups %+v cover %d broken cells of %d", rep.Groups, sumGroups(rep.Groups), rep.Counts[explore.StatusBroke])
			}
			checkReports(t, rep, exp, src, tc.mistake)
		})
	}

	t.Run("correct", func(t *testing.T) {
		rep, exp, src := exploreShop(t, "", nil)
		if code := rep.ExitCode(); code != explore.ExitHeld {
			t.Errorf("exit %d, want 0", code)
		}
		// Every cell was tried and reached: held means the fault fired
		// and the shop still did its job.
		for _, c := range rep.Cells {
			if c.Status != explore.StatusHeld {
				t.Errorf("%s at %s: %s — %s (output %s)", c.Column, c.Point, c.Status, c.Evidence, c.Output)
			}
		}
		// BEGIN, INSERT, UPDATE, COMMIT, a connection and idle moments; the
		// retry's SELECT never runs in a clean run.
		var ids []string
		for _, p := range rep.Points {
			ids = append(ids, p.ID+":"+p.Tag+":"+p.TxStatus+":"+itoa(p.Count))
		}
		if got, want := strings.Join(ids, " "), "s1:BEGIN:idle:3 s2:INSERT:in_transaction:3 s3:UPDATE:in_transaction:3 s4:COMMIT:in_transaction:3 connect:::1 idle:::4"; got != want {
			t.Errorf("points %s, want %s", got, want)
		}
		if n := len(rep.Cells); n != 4*(len(rep.Columns)-2)+2 {
			t.Errorf("%d cells for %d faults", n, len(rep.Columns))
		}
		if rep.TrialsPerMinute <= 0 {
			t.Errorf("trials per minute %v", rep.TrialsPerMinute)
		}
		dir := t.TempDir()
		if err := explore.WriteReports(dir, rep, exp, src); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, explore.DirRepro)); !os.IsNotExist(err) {
			t.Errorf("a repro directory with nothing broken: %v", err)
		}
	})
}

func sumGroups(gs []explore.Group) int {
	n := 0
	for _, g := range gs {
		n += g.Cells
	}
	return n
}

func itoa(i int) string { return fmt.Sprint(i) }

// checkReports writes the reports of an exploration that broke and checks
// what a user reads in them: a JUnit failure per broken cell, the table in
// Markdown and HTML, and a reproducer per broken cell that parses; the
// reproducer of the no-reconnect breakage fails under pgchaos run with
// the mistake, and passes without it.
func checkReports(t *testing.T, rep *explore.Report, exp *experiments.Experiment, src []byte, mistake string) {
	t.Helper()
	dir := t.TempDir()
	if err := explore.WriteReports(dir, rep, exp, src); err != nil {
		t.Fatal(err)
	}
	var suites struct {
		Suites []struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
			Skipped  int `xml:"skipped,attr"`
			Cases    []struct {
				Name    string    `xml:"name,attr"`
				Failure *struct{} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	data, err := os.ReadFile(filepath.Join(dir, explore.FileJUnit))
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(data, &suites); err != nil {
		t.Fatalf("junit: %v", err)
	}
	if len(suites.Suites) != 1 || suites.Suites[0].Tests != len(rep.Cells) || suites.Suites[0].Failures != rep.Counts[explore.StatusBroke] {
		t.Errorf("junit: %d suites, %+v; want %d cases, %d failures", len(suites.Suites), suites.Suites, len(rep.Cells), rep.Counts[explore.StatusBroke])
	}
	md, _ := os.ReadFile(filepath.Join(dir, explore.FileMarkdown))
	page, _ := os.ReadFile(filepath.Join(dir, explore.FileHTML))
	if n := strings.Count(string(md), "**broke ("); n == 0 || !strings.Contains(string(md), "## What broke") {
		t.Errorf("markdown shows no broken cell:\n%s", md)
	}
	if n := strings.Count(string(page), `<td class="broke">`); n == 0 || n > rep.Counts[explore.StatusBroke] {
		t.Errorf("html shows %d broken cells, %d broke", n, rep.Counts[explore.StatusBroke])
	}
	var js explore.Report
	if raw, err := os.ReadFile(filepath.Join(dir, explore.FileJSON)); err != nil || json.Unmarshal(raw, &js) != nil || len(js.Cells) != len(rep.Cells) {
		t.Errorf("json report: %v", err)
	}
	for _, c := range rep.Cells {
		vars := map[string]string{"shop": shop(t), "mistake": "-mistake " + mistake}
		if c.Status != explore.StatusBroke {
			continue
		}
		if c.Repro == "" {
			t.Errorf("%s at %s broke and has no reproducer", c.Column, c.Point)
			continue
		}
		path := c.Repro
		re, err := experiments.ParseFile(path, vars, nil)
		if err != nil {
			t.Errorf("reproducer %s: %v", c.Repro, err)
			continue
		}
		if re.Explore != nil || len(re.Method) != 2 || re.Setup[len(re.Setup)-1].Action.(*experiments.Inject).Rule.Name != c.Rule.Name {
			t.Errorf("reproducer %s: explore %v, method %+v, setup %+v", c.Repro, re.Explore, re.Method, re.Setup)
		}
		if mistake != "no-reconnect" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		res := runner.Run(ctx, re, runner.Options{})
		if res.ExitCode() != runner.ExitFailed {
			t.Errorf("pgchaos run %s with the mistake: exit %d (%s), want 1", c.Repro, res.ExitCode(), res.Problem)
		}
		vars["mistake"] = ""
		fixed, err := experiments.ParseFile(path, vars, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res := runner.Run(ctx, fixed, runner.Options{}); res.ExitCode() != runner.ExitPass {
			t.Errorf("pgchaos run %s without the mistake: exit %d (%s), want 0", c.Repro, res.ExitCode(), res.Problem)
		}
	}
}

// A file explored beside its method: a fault its setup arms is in place in
// every trial (and in the reproducer), while its method, the verifiers
// that check that method's faults reached the workload and the rollbacks
// that remove them are left out — the clean run passes, and the
// reproducer parses and fails as the trial did.
func TestExploreAFileWithAMethod(t *testing.T) {
	src := []byte(`name: marks
target: {embedded: {}}
proxies: [{name: app, upstream: target, listen: "127.0.0.1:0"}]
setup:
  - sql: CREATE TABLE marks (n int)
  - inject: {rule: {name: no-zero, match: {sql: 'VALUES \(0\)'}, action: {type: error, sqlstate: "42501"}}}
workloads:
  - name: app
    type: exec
    through: app
    command: |
      psql "$PGCHAOS_DSN" -qX -c "INSERT INTO marks VALUES (0)"
      psql "$PGCHAOS_DSN" -qX -v ON_ERROR_STOP=1 -c "INSERT INTO marks VALUES (1)"
method:
  - inject: {rule: {name: slow, action: {type: delay, delay: 1ms}}}
  - wait: 1s
verify:
  - {name: the setup's fault held, type: sql, sql: "SELECT count(*) FROM marks WHERE n = 0", expect: {equals: 0}}
  - {name: one mark, type: sql, sql: "SELECT count(*) FROM marks WHERE n = 1", expect: {equals: 1}}
  - {type: fault_fired, rule: slow}
  - {type: errors, workload: app, min: 1}
  - {type: availability, workload: app, min_ok_ratio: 1}
rollbacks:
  - remove: slow
explore:
  faults: [cut_before]
`)
	exp, err := experiments.Parse(src, "marks.yaml", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep := explore.Run(ctx, exp, explore.Options{Out: &out, Postgres: pg})
	t.Log(out.String())
	if !rep.BaselinePass {
		t.Fatalf("clean run: %s", rep.Problem)
	}
	if len(rep.Cells) != 1 {
		t.Fatalf("cells %+v: want cut_before at the INSERT", rep.Cells)
	}
	c := rep.Cells[0]
	if c.Status != explore.StatusBroke || c.Verifier != "one mark" {
		t.Fatalf("cut_before at the INSERT: %s %s %s", c.Status, c.Verifier, c.Evidence)
	}
	dir := t.TempDir()
	if err := explore.WriteReports(dir, rep, exp, src); err != nil {
		t.Fatal(err)
	}
	re, err := experiments.ParseFile(c.Repro, nil, nil)
	if err != nil {
		data, _ := os.ReadFile(c.Repro)
		t.Fatalf("reproducer: %v\n%s", err, data)
	}
	res := runner.Run(ctx, re, runner.Options{})
	var failed []string
	for _, v := range res.Verdicts {
		if !v.Pass {
			failed = append(failed, v.Name)
		}
	}
	// The cut also fails the script, so availability fails with it; the
	// method's checks are not there to fail.
	if res.ExitCode() != runner.ExitFailed || strings.Join(failed, ",") != "one mark,availability(app)" || len(res.Verdicts) != 5 {
		t.Errorf("pgchaos run of the reproducer: exit %d, failed %v of %d verdicts (%s); want 1, one mark and availability of the two sql checks, availability and the two setup rules' fault_fired", res.ExitCode(), failed, len(res.Verdicts), res.Problem)
	}
}
