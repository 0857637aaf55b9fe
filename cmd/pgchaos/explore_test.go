package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pgchaos explore's exit statuses a CI job relies on, other than a broken
// cell (the docs' walk-through has that one): a file it cannot explore is
// 2, and a clean run that fails is 3, with no trial run.
func TestExploreExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	const app = `target: {embedded: {}}
proxies: [{name: app, upstream: target}]
setup:
  - sql: CREATE TABLE marks (n int)
workloads:
  - {name: app, type: exec, through: app, command: 'psql "$PGCHAOS_DSN" -qX -c "INSERT INTO marks VALUES (1)"'}
`
	noSection := write("plain.yaml", "name: plain\n"+app)
	broken := write("broken.yaml", "name: broken\n"+app+`verify:
  - {name: two marks, type: sql, sql: SELECT count(*) FROM marks, expect: {equals: 2}}
explore: {}
`)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no explore section", []string{noSection}, 2, "has no explore section"},
		{"parallel 0", []string{broken, "--parallel", "0"}, 2, "--parallel 0: want 1 or more"},
		{"a clean run that fails", []string{broken, "--pg-bindir", pg.BinDir(), "--report-dir", filepath.Join(dir, "report")}, 3, "the clean run, with no fault, does not pass: two marks: FAIL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, append([]string{"explore"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stdout+stderr, tc.want) {
				t.Fatalf("exit %d, want %d and %q in:\n%s\n%s", code, tc.code, tc.want, stdout, stderr)
			}
		})
	}
	md, err := os.ReadFile(filepath.Join(dir, "report", "explore.md"))
	if err != nil || !strings.Contains(string(md), "**Explore stopped:** the clean run") || strings.Contains(string(md), "## The table") {
		t.Errorf("report of the failed clean run (%v):\n%s", err, md)
	}
}
