package experiments

// Fuzz targets: experiment files as `pgchaos validate` reads them, and
// ${env:...}/${var:...} substitution. `bash bench/fuzz.sh 10m` runs each of
// them long.

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/pgchaos/pgchaos/faults"
)

var fuzzVars = map[string]string{
	"name": "fuzz", "host": "db.internal", "clients": "3", "pattern": "^SELECT", "delay": "25ms",
	"dsn": "postgres://db", "empty": "", "nested": "${var:name}", "list": "[1, 2]",
}

func fuzzEnv(k string) (string, bool) {
	switch k {
	case "PGCHAOS_DSN":
		return "postgres://db", true
	case "PGUSER":
		return "alice", true
	case "EMPTY":
		return "", true
	}
	return "", false
}

// trickyExperiments are inputs at the edges of YAML and of the format.
var trickyExperiments = []string{
	"",
	"null",
	"[]",
	"---\n---\n",
	"name: a\n---\nname: b\n",
	"\ufeffname: bom\ntarget: {dsn: x}\n",
	"name: x\ntarget: {dsn: x}\n\tworkloads: []\n",
	"name: x\ntarget: {dsn: x}\nbad: \x01\n",
	"name: x\r\ntarget: {dsn: \xff}\n",
	"\xff\xfen\x00:\x00\n\x00 \x00\x00\xdc",
	"name: &n x\ntarget: {dsn: *n}\nx-a: &a {name: w, type: ledger}\nworkloads: [*a, {<<: *a, name: w2}]\n",
	"name: x\ntarget: {embedded: true}\nproxies: [{name: pg, upstream: target}]\nmethod:\n- inject: {rule: {name: r, action: {type: drop}}}\n- inject: {rule: {name: r, action: {type: drop}}}\n",
	"name: ${var:name}\ntarget: {dsn: \"${env:PGCHAOS_DSN}\"}\nworkloads: [{name: w, type: bank, clients: \"${var:clients}\", accounts: ${var:undefined}}]\n",
	"name: \"$${literal} ${env:NOPE} ${var:nested} ${bad} ${\"\n",
	"name: x\ntarget: {dsn: x}\nverify: [{type: fault_fired, rule: nope}, {type: mistery, windw: fault}, {typ: sql}]\n",
	"name: x\ntarget: {dsn: x, embedded: {pgbouncer: true, pgbouncer_via: pg}}\nproxies: [{name: pg, url: http://h:1}]\n",
	"name: x\ntarget: {dsn: x}\nmethod: [{at: 2s, wait: 1s}, {at: 1s, wait: 0s}, {after: 1s, at: 3s, sql: SELECT}]\nrollbacks: [{at: 1s, exec: true}]\n",
	"name: x\ntarget: {dsn: x}\nsteady_state: {probes: [{name: p, sql: s, expect: {equals: [1], min: 2}, tolerance: -1}]}\n",
	"name: !!binary aGVsbG8=\ntarget: {dsn: !!timestamp 2001-12-14}\nrecovery: {deadline: 99999999999999999999h}\n",
}

// FuzzParse: experiment files never panic Parse, which `pgchaos validate`
// calls; every problem is reported as FILE:LINE:COLUMN: field.path:
// message (a line only where the YAML itself is broken, and the YAML
// library knows no column), one a line, sorted; the same file gives the
// same answer; an accepted experiment's rules are valid.
func FuzzParse(f *testing.F) {
	examples, _ := filepath.Glob("examples/*.yaml")
	if len(examples) == 0 {
		f.Fatal("no examples/*.yaml")
	}
	for _, p := range examples {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	docs, err := os.ReadFile("../docs/experiments.md")
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(docs, -1) {
		f.Add(m[1])
	}
	for _, s := range trickyExperiments {
		f.Add([]byte(s))
	}
	positioned := regexp.MustCompile(`^exp\.yaml:[1-9][0-9]*:[1-9][0-9]*: \S`)
	lineOnly := regexp.MustCompile(`^exp\.yaml:[1-9][0-9]*: \S`)
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data, "exp.yaml", fuzzVars, fuzzEnv)
		if (e == nil) == (err == nil) {
			t.Fatalf("experiment %v with error %v", e, err)
		}
		e2, err2 := Parse(data, "exp.yaml", fuzzVars, fuzzEnv)
		if !reflect.DeepEqual(e, e2) || (err == nil) != (err2 == nil) || err != nil && err.Error() != err2.Error() {
			t.Fatalf("the same file parses differently:\n%v\n---\n%v", err, err2)
		}
		if err == nil {
			checkAccepted(t, e)
			return
		}
		var probs Errors
		if !errors.As(err, &probs) || len(probs) == 0 {
			t.Fatalf("error %v (%T) is not a list of problems", err, err)
		}
		if err.Error() != strings.Join(lines(probs), "\n") {
			t.Fatalf("Error() is not the problems one a line:\n%v", err)
		}
		yamlOK := decodesAsYAML(data)
		for i, p := range probs {
			s := p.String()
			switch {
			case p.Source != "exp.yaml" || strings.TrimSpace(p.Msg) == "":
				t.Fatalf("problem %d %+v has no source or no message", i, p)
			case strings.ContainsAny(s, "\n\r"):
				t.Fatalf("problem %d takes more than a line: %q", i, s)
			case positioned.MatchString(s):
			case !yamlOK && p.Column == 0 && lineOnly.MatchString(s):
				// The YAML library says the line of a syntax error, not its column.
			case p.Line == 0 && yamlOK && strings.HasPrefix(p.Msg, "the file is empty") && noContent(data):
				// A problem of the whole file.
			default:
				t.Fatalf("problem %d is not FILE:LINE:COLUMN: message: %q\n(YAML decodes: %v)", i, s, yamlOK)
			}
			if i > 0 {
				q := probs[i-1]
				if p.Line < q.Line || p.Line == q.Line && p.Column < q.Column {
					t.Fatalf("problems out of order: %q before %q", q, p)
				}
			}
		}
	})
}

func lines(ps Errors) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// decodesAsYAML reports whether every document in data is well-formed
// YAML.
func decodesAsYAML(data []byte) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			return errors.Is(err, io.EOF)
		}
	}
}

// noContent reports whether data holds no YAML node: nothing, comments,
// an empty document.
func noContent(data []byte) bool {
	var n yaml.Node
	err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&n)
	return errors.Is(err, io.EOF) || err == nil && len(n.Content) == 0
}

// checkAccepted: what Parse promises a runner about an experiment it
// returns.
func checkAccepted(t *testing.T, e *Experiment) {
	t.Helper()
	if strings.TrimSpace(e.Name) == "" {
		t.Fatal("accepted an experiment with no name")
	}
	if (e.Target.DSN == "") == (e.Target.Embedded == nil) {
		t.Fatalf("accepted target %+v: want a dsn or embedded", e.Target)
	}
	for _, steps := range [][]Step{e.Method, e.Rollbacks} {
		for _, s := range steps {
			if s.Action == nil {
				t.Fatalf("accepted a step with no action at %+v", s.Pos)
			}
			if in, ok := s.Action.(*Inject); ok {
				if err := faults.Validate(in.Rule); err != nil {
					t.Fatalf("accepted an invalid rule at %+v: %v", s.Pos, err)
				}
			}
		}
	}
	for _, v := range e.Verify {
		if v.Check == nil {
			t.Fatalf("accepted verifier %q with no check", v.Name)
		}
	}
}

// refExpand is substitution written another way: one regexp pass.
var refRef = regexp.MustCompile(`\$\$\{|\$\{[^}]*\}?`)

func refExpand(s string, vars map[string]string, env func(string) (string, bool)) (out string, problems int, ok bool) {
	ok = true
	unclosed := false
	out = refRef.ReplaceAllStringFunc(s, func(m string) string {
		if unclosed {
			return ""
		}
		if m == "$${" {
			return "${"
		}
		if !strings.HasSuffix(m, "}") {
			unclosed = true
			problems++
			return ""
		}
		kind, name, _ := strings.Cut(m[2:len(m)-1], ":")
		name, fallback, hasDefault := strings.Cut(name, ":-")
		var v string
		var def bool
		switch {
		case name == "" || kind != "env" && kind != "var":
			hasDefault = false
		case kind == "var":
			v, def = vars[name]
		default:
			v, def = env(name)
		}
		if !def && hasDefault {
			v, def = fallback, true
		}
		if !def {
			problems++
		}
		return v
	})
	return out, problems, problems == 0
}

// FuzzExpand: substitution never panics, agrees with refExpand, reports a
// problem for each bad reference (an unclosed one ends the value) and does
// not substitute into what it substituted.
func FuzzExpand(f *testing.F) {
	for _, s := range []string{
		"", "plain", "${var:name}", "${env:PGUSER}@${var:host}", "$${var:name}", "$$${var:name}", "${var:nested}",
		"${", "${}", "${var:}", "${env}", "${other:x}", "${var:undefined} ${env:NOPE}", "a ${var:name", "}${var:empty}{",
		"${var:a:b}", "${env:EMPTY}x", "$", "$$", "${${var:name}}", "ö${var:name}ü",
		"${var:undefined:-fallback}", "${var:name:-unused}", "${env:NOPE:-}", "${var::-x}", "${PATH}",
	} {
		f.Add(s, "value")
		f.Add(s, "${var:name}")
	}
	f.Fuzz(func(t *testing.T, s, value string) {
		vars := map[string]string{"a:b": value}
		for k, v := range fuzzVars {
			vars[k] = v
		}
		vars["value"] = value
		env := func(k string) (string, bool) {
			if k == "VALUE" {
				return value, true
			}
			return fuzzEnv(k)
		}
		d := &decoder{src: "exp.yaml", vars: vars, env: env}
		n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Line: 1, Column: 7}
		got, ok := d.expand(n, "name")
		want, problems, wantOK := refExpand(s, vars, env)
		if ok != wantOK || len(d.probs) != problems {
			t.Fatalf("expand(%q): ok %v with %d problems %v; want ok %v with %d", s, ok, len(d.probs), d.probs, wantOK, problems)
		}
		if ok && got != want {
			t.Fatalf("expand(%q) = %q, want %q", s, got, want)
		}
		for _, p := range d.probs {
			if p.Line != 1 || p.Column != 7 || p.Path != "name" {
				t.Fatalf("problem %+v is not where the value is", p)
			}
		}
		// A substituted value is typed afresh; that must not panic either.
		d.scalar(n, "name", "a value")
	})
}
