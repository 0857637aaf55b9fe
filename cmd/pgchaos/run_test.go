package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/experiments/history"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/server"
)

var dbSeq atomic.Int64

// newDB creates a database of the test's own on the package's PostgreSQL
// and returns its DSN.
func newDB(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("run%d", dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pg.CreateDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	return pg.DSN(pgtest.SuperUser, "", name)
}

// experimentFile writes a small experiment against ${var:dsn}: a proxy, a
// workload through it, then body.
func experimentFile(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".yaml")
	src := "name: " + name + `
target: {dsn: "${var:dsn}"}
proxies: [{name: pg, upstream: target}]
workloads:
  - {name: w, type: sql, clients: 1, rate: 50, statements: ["SELECT 1"]}
` + body
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// journal is what the tests read of report.json.
type journal struct {
	Experiment  string `json:"experiment"`
	Seed        int64  `json:"seed"`
	Pass        bool   `json:"pass"`
	Phase       string `json:"phase"`
	Problem     string `json:"problem"`
	Interrupted bool   `json:"interrupted"`
	SetupFailed bool   `json:"setup_failed"`
	Steps       []struct {
		Name string `json:"name"`
	} `json:"steps"`
	FaultWindows []struct {
		Rule  string    `json:"rule"`
		End   time.Time `json:"end"`
		Fired int       `json:"fired"`
	} `json:"fault_windows"`
	Verdicts []struct {
		Name string `json:"name"`
		Pass bool   `json:"pass"`
	} `json:"verdicts"`
	Rollbacks []struct {
		Name  string `json:"name"`
		Error string `json:"error"`
	} `json:"rollbacks"`
	Operations map[string]int `json:"operations"`
	PerSecond  []struct {
		Second  int `json:"second"`
		OK      int `json:"ok"`
		Fail    int `json:"fail"`
		Unknown int `json:"unknown"`
	} `json:"per_second"`
	NotOK []history.Op `json:"not_ok"`
}

// checkPerSecond: the journal's per-second counts cover every second of
// the run in order and add up to its operation counts by outcome.
func checkPerSecond(t *testing.T, j journal) {
	t.Helper()
	sum := map[string]int{}
	for i, c := range j.PerSecond {
		if c.Second != i {
			t.Fatalf("per_second[%d] is second %d: %+v", i, c.Second, j.PerSecond)
		}
		sum["ok"] += c.OK
		sum["fail"] += c.Fail
		sum["unknown"] += c.Unknown
	}
	if len(j.PerSecond) == 0 || fmt.Sprint(sum) != fmt.Sprint(j.Operations) {
		t.Fatalf("per_second %+v adds up to %v; operations %v", j.PerSecond, sum, j.Operations)
	}
}

func readJournal(t *testing.T, path string) journal {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the JSON journal: %v", err)
	}
	var j journal
	if err := json.Unmarshal(data, &j); err != nil {
		t.Fatalf("the JSON journal %s: %v\n%s", path, err, data)
	}
	return j
}

type junitReport struct {
	Suites []struct {
		Name     string `xml:"name,attr"`
		Tests    int    `xml:"tests,attr"`
		Failures int    `xml:"failures,attr"`
		Cases    []struct {
			Class   string `xml:"classname,attr"`
			Name    string `xml:"name,attr"`
			Failure *struct {
				Message string `xml:"message,attr"`
			} `xml:"failure"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func readJUnit(t *testing.T, path string) junitReport {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the JUnit report: %v", err)
	}
	var r junitReport
	if err := xml.Unmarshal(data, &r); err != nil || len(r.Suites) != 1 {
		t.Fatalf("the JUnit report %s: %v\n%s", path, err, data)
	}
	return r
}

func readText(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	t.Logf("pgchaos %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

// A run that passes exits 0; --report-dir writes the journal, JUnit and
// the summary there, and --verbose logs what the proxies do.
func TestRunPasses(t *testing.T) {
	dsn := newDB(t)
	file := experimentFile(t, "passes", `method:
  - {name: settle, wait: 300ms}
verify:
  - {name: one, type: sql, sql: SELECT 1, expect: {equals: 1}}
`)
	dir := filepath.Join(t.TempDir(), "reports")
	code, stdout, stderr := runCLI(t, "run", file, "--var", "dsn="+dsn, "--report-dir", dir, "--verbose")
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	j := readJournal(t, filepath.Join(dir, "report.json"))
	if !j.Pass || j.Experiment != "passes" || j.Phase != "done" || len(j.Steps) != 1 || j.Operations["ok"] < 1 {
		t.Errorf("journal %+v", j)
	}
	r := readJUnit(t, filepath.Join(dir, "junit.xml"))
	if s := r.Suites[0]; s.Name != "passes" || s.Failures != 0 || s.Tests != 1 || s.Cases[0].Name != "one" {
		t.Errorf("JUnit %+v", r)
	}
	summary := readText(t, filepath.Join(dir, "summary.md"))
	if !strings.Contains(summary, "## pgchaos: passes — ✅ passed") || !strings.Contains(summary, "| one | pass |") {
		t.Errorf("summary.md:\n%s", summary)
	}
	if !strings.Contains(stdout, summary) {
		t.Errorf("stdout lacks the summary")
	}
	if !strings.Contains(stderr, "level=") || !strings.Contains(stderr, `proxy=pg`) {
		t.Errorf("--verbose: no proxy log on stderr")
	}
}

// A verifier that fails is exit 1, and every report says which; --json,
// --junit and --markdown each write their report where they are told,
// ahead of --report-dir.
func TestRunVerifierFails(t *testing.T) {
	dsn := newDB(t)
	file := experimentFile(t, "fails", `verify:
  - {name: two, type: sql, sql: SELECT 1, expect: {equals: 2}}
`)
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "reports")
	jsonPath, junitPath, mdPath := filepath.Join(tmp, "j.json"), filepath.Join(tmp, "j.xml"), filepath.Join(tmp, "s.md")
	code, stdout, stderr := runCLI(t, "run", file, "--var", "dsn="+dsn, "--json", jsonPath, "--junit", junitPath, "--markdown", mdPath, "--report-dir", dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	j := readJournal(t, jsonPath)
	if j.Pass || j.Phase != "verify" || !strings.HasPrefix(j.Problem, "two: FAIL") || len(j.Verdicts) != 1 || j.Verdicts[0].Pass {
		t.Errorf("journal %+v", j)
	}
	r := readJUnit(t, junitPath)
	if s := r.Suites[0]; s.Failures != 1 || s.Cases[0].Name != "two" || s.Cases[0].Failure == nil || !strings.Contains(s.Cases[0].Failure.Message, "FAIL") {
		t.Errorf("JUnit %+v", r)
	}
	if md := readText(t, mdPath); !strings.Contains(md, "❌ failed") || !strings.Contains(md, "| two | **FAIL** |") {
		t.Errorf("markdown:\n%s", md)
	}
	for _, name := range []string{"report.json", "junit.xml", "summary.md"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("--report-dir wrote %s although a flag named its own file (%v)", name, err)
		}
	}
	if strings.Contains(stderr, "level=") {
		t.Errorf("without --verbose the proxies logged:\n%s", stderr)
	}
	if !strings.Contains(stdout, "❌ failed") {
		t.Errorf("stdout lacks the failed summary")
	}
}

// A steady-state hypothesis that fails is exit 1 without the method.
func TestRunHypothesisFails(t *testing.T) {
	dsn := newDB(t)
	file := experimentFile(t, "hypothesis", `steady_state:
  probes:
    - {name: impossible, sql: SELECT 0, expect: {min: 1}}
method:
  - {name: never, wait: 1s}
`)
	jsonPath := filepath.Join(t.TempDir(), "j.json")
	if code, _, _ := runCLI(t, "run", file, "--var", "dsn="+dsn, "--json", jsonPath); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if j := readJournal(t, jsonPath); j.Pass || j.Phase != "steady_state" || len(j.Steps) != 0 {
		t.Errorf("journal %+v: want failed in steady_state, no step run", j)
	}
}

// Setup that fails is exit 3: an unreachable target, and an embedded
// PostgreSQL whose binaries are not where --pg-bindir says.
func TestRunSetupFails(t *testing.T) {
	file := experimentFile(t, "unreachable", `setup:
  - sql: SELECT 1
`)
	missing := filepath.Join(t.TempDir(), "no-bin")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unreachable target", []string{"--var", "dsn=postgres://postgres@127.0.0.1:1/postgres"}, "127.0.0.1"},
		{"no binaries", []string{"--var", "dsn=postgres://postgres@127.0.0.1:1/postgres", "--embedded", "--pg-bindir", missing}, missing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jsonPath := filepath.Join(t.TempDir(), "j.json")
			code, stdout, _ := runCLI(t, append([]string{"run", file, "--json", jsonPath}, tc.args...)...)
			if code != 3 {
				t.Fatalf("exit %d, want 3", code)
			}
			j := readJournal(t, jsonPath)
			if !j.SetupFailed || j.Phase != "setup" || !strings.Contains(j.Problem, tc.want) {
				t.Errorf("journal %+v: want a setup failure naming %s", j, tc.want)
			}
			if !strings.Contains(stdout, "**setup:**") {
				t.Errorf("the summary does not say setup failed")
			}
		})
	}
}

// --embedded runs against a throwaway PostgreSQL whatever the file's
// target says (here one that does not exist).
func TestRunEmbedded(t *testing.T) {
	file := experimentFile(t, "embedded", `setup:
  - sql: CREATE TABLE here (n int)
verify:
  - {name: fresh, type: sql, sql: "SELECT count(*) FROM pg_database WHERE datname LIKE 'run%'", expect: {equals: 0}}
`)
	code, _, _ := runCLI(t, "run", file, "--var", "dsn=postgres://postgres@127.0.0.1:1/postgres", "--embedded", "--pg-bindir", pg.BinDir())
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// --seed makes a rule's probability choose the same operations again, and
// another seed others.
func TestRunSeed(t *testing.T) {
	dsn := newDB(t)
	file := experimentFile(t, "seed", `method:
  - inject:
      rule: {name: coin, match: {sql: "^SELECT 1$"}, action: {type: error, sqlstate: "40001"}, limits: {probability: 0.5}}
      duration: 1s
`)
	// The gaps between failed operations do not depend on how many ran
	// before the rule went in.
	var lastSeed int64 // the seed the last run recorded
	var lastOut string
	gaps := func(seed string) []int64 {
		jsonPath := filepath.Join(t.TempDir(), "j.json")
		args := []string{"run", file, "--var", "dsn=" + dsn, "--json", jsonPath}
		if seed != "" {
			args = append(args, "--seed", seed)
		}
		code, stdout, _ := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("seed %s: exit %d", seed, code)
		}
		j := readJournal(t, jsonPath)
		lastSeed, lastOut = j.Seed, stdout
		checkPerSecond(t, j)
		if j.Operations["fail"] < 10 {
			t.Fatalf("seed %s: operations %v, want at least 10 failed", seed, j.Operations)
		}
		ops := j.NotOK
		if len(ops) < 10 {
			t.Fatalf("seed %s: %d operations failed, want at least 10 of 50", seed, len(ops))
		}
		var g []int64
		for i := 1; i < len(ops); i++ {
			g = append(g, ops[i].Seq-ops[i-1].Seq)
		}
		return g
	}
	a, b, c := gaps("7"), gaps("7"), gaps("8")
	n := min(len(a), len(b), len(c))
	if fmt.Sprint(a[:n]) != fmt.Sprint(b[:n]) {
		t.Errorf("seed 7 failed different operations: gaps %v and %v", a[:n], b[:n])
	}
	if fmt.Sprint(a[:n]) == fmt.Sprint(c[:n]) {
		t.Errorf("seeds 7 and 8 failed the same operations: gaps %v", a[:n])
	}
	// Without --seed a run draws a seed of its own, says it and records
	// it; --seed with it repeats the run.
	d := gaps("")
	drawn := lastSeed
	if !strings.Contains(lastOut, fmt.Sprintf("seed %d", drawn)) {
		t.Errorf("the run does not say its seed %d:\n%s", drawn, lastOut)
	}
	gaps("")
	if lastSeed == drawn {
		t.Errorf("two runs without --seed both drew seed %d", drawn)
	}
	e := gaps(fmt.Sprint(drawn))
	if n := min(len(d), len(e)); fmt.Sprint(d[:n]) != fmt.Sprint(e[:n]) {
		t.Errorf("--seed %d failed other operations than the run that drew it: gaps %v and %v", drawn, d[:n], e[:n])
	}
}

// A proxy run by another pgchaos whose API needs a token is reached with
// --api-token-file: the method's rule is injected there and fires.
func TestRunRemoteProxyToken(t *testing.T) {
	dsn := newDB(t)
	s, err := server.Start(server.Config{API: "127.0.0.1:0", APIToken: "s3cret-token",
		Proxies: []server.ProxyConfig{{Name: "far", Listen: "127.0.0.1:0", Upstream: pg.Addr()}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	path := filepath.Join(t.TempDir(), "remote.yaml")
	os.WriteFile(path, []byte(`name: remote
target: {dsn: "${var:dsn}"}
proxies: [{name: far, url: "http://`+s.APIAddr().String()+`"}]
workloads:
  - {name: w, type: sql, clients: 1, rate: 50, statements: ["SELECT 1"]}
method:
  - inject:
      rule: {name: refuse, match: {sql: "^SELECT 1$"}, action: {type: error, sqlstate: "42501"}}
      duration: 500ms
verify:
  - {type: errors, workload: w, sqlstate: "42501", min: 5}
`), 0o644)
	token := filepath.Join(t.TempDir(), "token")
	os.WriteFile(token, []byte("s3cret-token\n"), 0o600)
	t.Setenv("PGCHAOS_API_TOKEN", "")
	if code, _, _ := runCLI(t, "run", path, "--var", "dsn="+dsn, "--api-token-file", token); code != 0 {
		t.Fatalf("with the token: exit %d, want 0", code)
	}
	if code, stdout, _ := runCLI(t, "run", path, "--var", "dsn="+dsn); code != 3 || !strings.Contains(stdout, "missing bearer token") {
		t.Fatalf("without the token: exit %d, want 3 saying the token is missing", code)
	}
}

// Ctrl-C (or SIGTERM) in the middle of the method: the fault is removed,
// the rollbacks run, the reports are written and pgchaos exits 130.
func TestRunInterrupted(t *testing.T) {
	bin := buildBinary(t)
	dsn := newDB(t)
	tmp := t.TempDir()
	file := experimentFile(t, "interrupted", `method:
  - inject:
      rule: {name: refuse, match: {sql: "^SELECT 1$"}, action: {type: error, sqlstate: "42501"}}
  - {name: long, wait: 5m}
rollbacks:
  - {name: note, exec: "touch `+tmp+`/rolled-back"}
`)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			os.Remove(filepath.Join(tmp, "rolled-back"))
			jsonPath := filepath.Join(t.TempDir(), "j.json")
			cmd := exec.Command(bin, "run", file, "--var", "dsn="+dsn, "--json", jsonPath)
			stdout, _ := cmd.StdoutPipe()
			cmd.Stderr = io.Discard
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			waitLine(t, bufio.NewScanner(stdout), "method: long")
			go io.Copy(io.Discard, stdout)
			cmd.Process.Signal(sig)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
					t.Fatalf("exit after %v: %v, want status 130", sig, err)
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("still running 60s after %v", sig)
			}
			j := readJournal(t, jsonPath)
			if !j.Interrupted || j.Phase != "interrupted" || len(j.FaultWindows) != 1 || j.FaultWindows[0].End.IsZero() {
				t.Errorf("journal %+v: want interrupted with the fault removed", j)
			}
			if len(j.Rollbacks) != 1 || j.Rollbacks[0].Error != "" {
				t.Errorf("rollbacks %+v", j.Rollbacks)
			}
			if _, err := os.Stat(filepath.Join(tmp, "rolled-back")); err != nil {
				t.Errorf("the rollback did not run: %v", err)
			}
		})
	}
}

// pgchaos demo --list names every shipped experiment with its description.
func TestDemoList(t *testing.T) {
	code, out, _ := runCLI(t, "demo", "--list")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		"2pc-mid-prepare ", "failover-sync ", "crash-restart ",
		"Kill the primary, promote its synchronous standby, repoint the clients; RPO 0.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "runbooks") {
		t.Errorf("the list names the runbooks folder:\n%s", out)
	}
}

// pgchaos demo NAME runs that shipped experiment, from files on disk so
// that its exec steps find the runbooks beside it.
func TestDemoRunbook(t *testing.T) {
	dir := t.TempDir()
	code, out, _ := runCLI(t, "demo", "failover-runbook", "--report-dir", dir)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"runbook: promoting standby1", "runbook: done", "| rpo(ledger) | pass | ok: 0 of"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "junit.xml")); err != nil {
		t.Error(err)
	}
}

// An invalid file still gets the step summary --markdown asks for: a CI
// job's summary then says why the chaos stage failed, not nothing.
func TestRunInvalidWritesItsSummary(t *testing.T) {
	file := experimentFile(t, "typo", "method:\n  - wiat: 1s\n")
	summary := filepath.Join(t.TempDir(), "out", "summary.md")
	code, _, stderr := runCLI(t, "run", file, "--var", "dsn=postgres://127.0.0.1:1/x", "--markdown", summary)
	if code != 2 {
		t.Fatalf("exit %d, want 2:\n%s", code, stderr)
	}
	md, err := os.ReadFile(summary)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "— ❌ invalid") || !strings.Contains(string(md), "typo.yaml:7:5: method[0].wiat: unknown field") {
		t.Errorf("summary of an invalid file:\n%s", md)
	}
}
