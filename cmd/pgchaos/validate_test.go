package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("name: good\ntarget: {dsn: \"${var:dsn}\"}\n"), 0o644)
	os.WriteFile(bad, []byte("name: bad\ntarget: {embedded: {}}\nworkloads:\n- name: w\n  type: ledger\n  clinets: 4\n"), 0o644)
	// A rule with three problems: each is a line of its own.
	badRule := filepath.Join(dir, "bad-rule.yaml")
	os.WriteFile(badRule, []byte("name: r\ntarget: {embedded: {}}\nproxies: [{name: pg, upstream: target}]\nmethod:\n- inject:\n    rule:\n      name: lie\n      match: {tx_status: busy}\n      action: {type: error}\n      limits: {skip: -1}\n"), 0o644)
	examples, _ := filepath.Glob("../../experiments/examples/*.yaml")
	if len(examples) == 0 {
		t.Fatal("no shipped examples")
	}

	cases := []struct {
		name       string
		args       []string
		code       int
		wantOut    []string
		wantErr    []string
		notWantOut string
	}{
		{"examples", append([]string{"validate"}, examples...), 0, []string{"2pc-mid-prepare.yaml: ok", "commit-ack-lost.yaml: ok", "latency-spike.yaml: ok"}, nil, ""},
		{"var given", []string{"validate", good, "--var", "dsn=postgres://db"}, 0, []string{good + ": ok"}, nil, ""},
		{"var missing", []string{"validate", good}, 2, nil, []string{
			good + ":2:15: target.dsn: undefined variable ${var:dsn} (give --var dsn=VALUE, or write ${var:dsn:-DEFAULT})",
			"pgchaos: validate: 1 of 1 files have problems"}, good + ": ok"},
		{"one bad of two", []string{"validate", "--var", "dsn=x", good, bad}, 2, []string{good + ": ok"}, []string{
			bad + `:6:3: workloads[0].clinets: unknown field (did you mean "clients"?)`,
			"pgchaos: validate: 1 of 2 files have problems"}, bad + ": ok"},
		{"every problem of a rule", []string{"validate", badRule}, 2, nil, []string{
			badRule + `:8:26: method[0].inject.rule.match.tx_status[0]: "busy": want idle, in_transaction or failed`,
			badRule + ":9:15: method[0].inject.rule.action.sqlstate: is required (e.g. 40001)",
			badRule + ":10:22: method[0].inject.rule.limits.skip: -1 is negative",
			"pgchaos: validate: 1 of 1 files have problems"}, badRule + ": ok"},
		{"no file", []string{"validate"}, 2, nil, []string{"validate: give one or more experiment files"}, ""},
		{"unreadable", []string{"validate", filepath.Join(dir, "nope.yaml")}, 2, nil, []string{filepath.Join(dir, "nope.yaml") + ": no such file or directory"}, ""},
		{"bad var", []string{"validate", "--var", "dsn", good}, 2, nil, []string{`validate: --var "dsn": want KEY=VALUE`}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q", w)
				}
			}
			// Each problem is a line of its own that starts with the file,
			// so that editors can jump to it.
			lines := strings.Split(stderr.String(), "\n")
			for _, w := range tc.wantErr {
				found := false
				for _, l := range lines {
					found = found || l == w || strings.HasPrefix(l, "pgchaos: ") && strings.HasSuffix(l, w)
				}
				if !found {
					t.Errorf("stderr lacks the line %q", w)
				}
			}
			if tc.notWantOut != "" && strings.Contains(stdout.String(), tc.notWantOut) {
				t.Errorf("stdout has %q", tc.notWantOut)
			}
			if t.Failed() {
				t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			}
		})
	}
}

func TestRunRejectsInvalidFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte("name: x\nworkloads:\n  - name: w\n    type: ledgr\n"), 0o644)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"run", path}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), path+":4:") {
		t.Fatalf("exit %d, want 2 with file:line\n%s%s", code, stdout.String(), stderr.String())
	}
}
