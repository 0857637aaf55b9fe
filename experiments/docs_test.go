package experiments

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDocsExample parses the first experiment of docs/experiments.md, and
// checks that the errors shown for its typo'd copy are what Parse says.
func TestDocsExample(t *testing.T) {
	data, err := os.ReadFile("../docs/experiments.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	m := regexp.MustCompile("(?s)```yaml\n(# first.yaml\n.*?)```").FindStringSubmatch(doc)
	if m == nil {
		t.Fatal("docs/experiments.md has no first.yaml block")
	}
	first := m[1]
	env := func(k string) (string, bool) { return "postgres://db", k == "PGCHAOS_DSN" }
	if _, err := Parse([]byte(first), "first.yaml", nil, env); err != nil {
		t.Fatalf("the first experiment of the docs:\n%v", err)
	}

	typo := first
	for _, r := range [][2]string{{"clients: 2", "clinets: 2"}, {"delay: 100ms}", "delay: 100}"}, {"workload: ledger\n", "workload: ledgr\n"}} {
		typo = strings.ReplaceAll(typo, r[0], r[1])
	}
	_, err = Parse([]byte(typo), "typo.yaml", nil, env)
	if err == nil {
		t.Fatal("the typo'd copy parses")
	}
	if !strings.Contains(doc, "$ pgchaos validate typo.yaml\n"+err.Error()+"\n") {
		t.Errorf("docs/experiments.md should show these errors for typo.yaml:\n%v", err)
	}
}

// The during example of docs/experiments.md parses, as the section of an
// experiment.
func TestDocsDuringExample(t *testing.T) {
	data, err := os.ReadFile("../docs/experiments.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(during:\n.*?)```").FindStringSubmatch(string(data))
	if m == nil {
		t.Fatal("docs/experiments.md has no during example")
	}
	e, err := Parse([]byte("name: x\ntarget: {dsn: postgres://db}\n"+m[1]), "during.yaml", nil, noEnv)
	if err != nil {
		t.Fatalf("the during example:\n%v", err)
	}
	if len(e.During) != 2 || e.During[0].While != WhileFault || e.During[0].Must != MustOnce {
		t.Errorf("the during example reads as %+v", e.During)
	}
}
