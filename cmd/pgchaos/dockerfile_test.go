package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// dockerStage is one FROM ... AS NAME stage of the Dockerfile, with its
// instructions (continuation lines joined).
type dockerStage struct {
	name  string
	lines []string
}

func readDockerfile(t *testing.T) []dockerStage {
	t.Helper()
	data, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	joined := regexp.MustCompile(`\\\n\s*`).ReplaceAllString(string(data), " ")
	var stages []dockerStage
	for _, line := range strings.Split(joined, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "FROM ") {
			f := strings.Fields(line)
			stages = append(stages, dockerStage{name: f[len(f)-1]})
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
		}
	}
	return stages
}

// execForm is the JSON array of an instruction (ENTRYPOINT ["a", "b"]),
// after its keyword and any options before the array.
func (s dockerStage) execForm(t *testing.T, keyword string) []string {
	t.Helper()
	for _, l := range s.lines {
		if rest, ok := strings.CutPrefix(l, keyword+" "); ok {
			var form []string
			if err := json.Unmarshal([]byte(rest[strings.Index(rest, "["):]), &form); err != nil {
				t.Fatalf("%s of stage %s is not in exec form (no shell in distroless): %q", keyword, s.name, l)
			}
			return form
		}
	}
	t.Fatalf("stage %s has no %s", s.name, keyword)
	return nil
}

func (s dockerStage) has(text string) bool {
	for _, l := range s.lines {
		if strings.Contains(l, text) {
			return true
		}
	}
	return false
}

// The default image starts as toxiproxy's does: the Dockerfile's last
// stage's ENTRYPOINT and CMD, run with the binary (on a free port instead
// of 8474), serve toxiproxy's API, and its HEALTHCHECK command passes
// while that runs and fails once it is gone. The full image has what
// `pgchaos run` with exec steps and --embedded needs.
func TestDockerfileImages(t *testing.T) {
	stages := readDockerfile(t)
	static := stages[len(stages)-1]
	if static.name != "static" {
		t.Fatalf("the default (last) stage is %q, want the static image", static.name)
	}
	for _, label := range []string{"org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.source", "org.opencontainers.image.licenses"} {
		if !static.has(label) {
			t.Errorf("the static image has no %s label", label)
		}
	}
	entry, cmd := static.execForm(t, "ENTRYPOINT"), static.execForm(t, "CMD")
	health := static.execForm(t, "HEALTHCHECK")
	if entry[0] != "pgchaos" || health[0] != "pgchaos" {
		t.Fatalf("ENTRYPOINT %q, HEALTHCHECK %q: want the pgchaos binary", entry, health)
	}
	bin := buildBinary(t)
	p := startProxy(t, bin, func(_, api string) []string {
		return append(append(append([]string{}, entry[1:]...), cmd...), "-port="+portOf(t, api))
	})
	waitVersion(t, p.api)
	check := func() error {
		args := append(append([]string{}, health[1:]...), "--api", p.api)
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Logf("pgchaos %s: %s", strings.Join(args, " "), out)
		}
		return err
	}
	if err := check(); err != nil {
		t.Fatalf("HEALTHCHECK fails on a running image: %v", err)
	}
	p.cmd.Process.Kill()
	<-p.done
	if err := check(); err == nil {
		t.Fatal("HEALTHCHECK passes with pgchaos gone")
	}

	var full *dockerStage
	for i := range stages {
		if stages[i].name == "full" {
			full = &stages[i]
		}
	}
	if full == nil {
		t.Fatal("no full stage (PostgreSQL, PgBouncer and a shell for pgchaos run)")
	}
	for _, pkg := range []string{"postgresql-15", "pgbouncer", "postgresql-client"} {
		if !full.has(pkg) {
			t.Errorf("the full image does not install %s", pkg)
		}
	}
	if !full.has("USER pgchaos") {
		t.Error("the full image runs as root: initdb refuses root")
	}
}
