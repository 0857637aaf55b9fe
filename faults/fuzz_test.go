package faults

// Fuzz targets: rule parsing (a rules file, the control API's JSON), SQL
// classification and matching, and Decide. `bash bench/fuzz.sh 10m` runs
// each of them long.

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// docRules returns what the docs and the shipped experiments show as rules:
// YAML and JSON code blocks of README.md and docs/*.md, heredocs fed to
// `pgchaos fault add --file -`, and every rule an example experiment
// injects (as YAML and as JSON). Not all of them are rules; as seeds they
// need not be.
func docRules(tb testing.TB) (yamls, jsons [][]byte) {
	tb.Helper()
	docs, _ := filepath.Glob("../docs/*.md")
	docs = append(docs, "../README.md")
	blocks := regexp.MustCompile("(?s)```(yaml|json)\n(.*?)```")
	heredoc := regexp.MustCompile(`(?s)<<'RULE'\n(.*?\n)RULE\n`)
	for _, f := range docs {
		data, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		for _, m := range blocks.FindAllSubmatch(data, -1) {
			if string(m[1]) == "json" {
				jsons = append(jsons, m[2])
			} else {
				yamls = append(yamls, m[2])
			}
		}
		for _, m := range heredoc.FindAllSubmatch(data, -1) {
			yamls = append(yamls, m[1])
		}
	}
	examples, _ := filepath.Glob("../experiments/examples/*.yaml")
	if len(examples) == 0 {
		tb.Fatal("no experiments/examples/*.yaml")
	}
	for _, f := range examples {
		data, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		var doc any
		if err := yaml.Unmarshal(data, &doc); err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		for _, r := range findRules(doc) {
			y, _ := yaml.Marshal(r)
			j, err := json.Marshal(r)
			if err != nil {
				tb.Fatalf("%s: %v", f, err)
			}
			yamls, jsons = append(yamls, y), append(jsons, j)
		}
	}
	return yamls, jsons
}

// findRules returns the values of every "rule" key in a decoded document.
func findRules(v any) []any {
	var out []any
	switch v := v.(type) {
	case map[string]any:
		// In key order, so that seeds are numbered the same on every run.
		for _, k := range slices.Sorted(maps.Keys(v)) {
			if k == "rule" {
				out = append(out, v[k])
			} else {
				out = append(out, findRules(v[k])...)
			}
		}
	case []any:
		for _, x := range v {
			out = append(out, findRules(x)...)
		}
	}
	return out
}

// testRules are the rules the unit tests build, as JSON.
func testRules(tb testing.TB) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, r := range append(noMatchRules(), decideRules()...) {
		j, err := json.Marshal(r)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, j)
	}
	return out
}

// trickyRules are inputs at the edges of the formats: aliases, merges,
// nulls, numbers where strings go, several documents.
var trickyRules = []string{
	``,
	`null`,
	`[]`,
	`---` + "\n" + `---`,
	`- &r {name: a, action: {type: drop}}` + "\n" + `- *r`,
	`{name: a, proxy: p, action: {type: drop}}` + "\n---\n" + `{name: b}`,
	`x: &m {type: drop}` + "\n" + `name: a` + "\n" + `action: *m`,
	`{<<: {name: a}, action: {type: drop}}`,
	`{name: a, match: {message: [], statement: [], tx_status: []}, action: {type: drop}}`,
	`{name: a, match: {message: query, sql: "(?i)sElEcT\\b", sql_case_sensitive: true}, action: {type: drop}}`,
	`{name: a, action: {type: latency, attributes: {latency: 100, jitter: 10, extra: [1, {a: b}]}}}`,
	`{name: a, action: {type: delay, delay: 1h, jitter: 0s}, limits: {probability: 0.5, skip: 9223372036854775807, expires: 1ns}}`,
	`{"name": "a", "action": {"type": "delay", "delay": 100, "jitter": 10.5}}`,
	`{"name": "a", "enabled": false, "match": {"client_cidr": "::ffff:10.0.0.0/104"}, "action": {"type": "error", "sqlstate": "40001", "severity": "fatal"}}`,
	`{"name": "a", "match": {"event": "cancel"}, "action": {"type": "delay", "delay": "1ms"}}`,
	"name: \"tab\\there\"\naction:\n\ttype: drop\n",
}

func addRuleSeeds(f *testing.F, jsonOnly bool) {
	yamls, jsons := docRules(f)
	jsons = append(jsons, testRules(f)...)
	for _, s := range jsons {
		f.Add(s)
	}
	if jsonOnly {
		for _, s := range trickyRules {
			if strings.HasPrefix(s, "{\"") {
				f.Add([]byte(s))
			}
		}
		return
	}
	for _, s := range yamls {
		f.Add(s)
	}
	for _, s := range trickyRules {
		f.Add([]byte(s))
	}
}

// canonical clears what two equal rules may write differently: an empty
// list or map is no list or map, and attributes say what their JSON says
// (a toxic is configured from that JSON, and the control API receives it).
func canonical(tb testing.TB, r Rule) Rule {
	tb.Helper()
	for _, l := range []*StringList{&r.Match.Message, &r.Match.Statement, &r.Match.TxStatus} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	if len(r.Action.Attributes) == 0 {
		r.Action.Attributes = nil
	} else {
		b, err := json.Marshal(r.Action.Attributes)
		if err != nil {
			tb.Fatalf("attributes of an accepted rule do not marshal: %v", err)
		}
		r.Action.Attributes = nil
		if err := json.Unmarshal(b, &r.Action.Attributes); err != nil {
			tb.Fatal(err)
		}
	}
	return r
}

func sameRule(tb testing.TB, a, b Rule) bool {
	tb.Helper()
	return reflect.DeepEqual(canonical(tb, a), canonical(tb, b))
}

// decodeRuleJSON reads a rule as the control API does (control/rules.go,
// decodeRule): one JSON value, unknown fields rejected.
func decodeRuleJSON(data []byte) (Rule, error) {
	var r Rule
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(&r)
	return r, err
}

// addRule adds r to a fresh engine and checks the error's contract: a
// *FieldError naming a field and saying what is wrong with it.
func addRule(t *testing.T, r Rule) error {
	t.Helper()
	_, err := NewEngine(Options{Seed: 1}).Add(r)
	if err == nil {
		return nil
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("Add(%+v): %v (%T), want a *FieldError", r, err, err)
	}
	if fe.Field == "" || strings.TrimSpace(fe.Msg) == "" || err.Error() != fe.Field+": "+fe.Msg {
		t.Fatalf("Add(%+v): FieldError %q / %q does not name the field and the problem", r, fe.Field, fe.Msg)
	}
	return err
}

// sendRule is what `pgchaos fault add --file` does with a rule it read:
// marshal it for the control API, which decodes and adds it. It must arrive
// as it was sent, and be accepted.
func sendRule(t *testing.T, r Rule) {
	t.Helper()
	j, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("accepted rule %+v does not marshal to JSON: %v", r, err)
	}
	back, err := decodeRuleJSON(j)
	if err != nil {
		t.Fatalf("accepted rule's JSON %s does not decode: %v", j, err)
	}
	if !sameRule(t, r, back) {
		t.Fatalf("rule changed through JSON:\n sent %+v\n got  %+v\n JSON %s", r, back, j)
	}
	if err := addRule(t, back); err != nil {
		t.Fatalf("accepted rule is refused after a JSON round trip: %v\n JSON %s", err, j)
	}
}

// FuzzParseRules: a rules file (YAML or JSON) never panics ParseRules; an
// error names the file and says what is wrong; accepted rules are valid,
// survive a YAML round trip and the trip to the control API as JSON.
func FuzzParseRules(f *testing.F) {
	addRuleSeeds(f, false)
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := ParseRules(data, "rules.yaml")
		if err != nil {
			if rules != nil {
				t.Fatalf("rules %+v with error %v", rules, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "rules.yaml:") || strings.TrimSpace(strings.TrimPrefix(msg, "rules.yaml:")) == "" {
				t.Fatalf("error %q does not start with the file and say what is wrong", msg)
			}
			return
		}
		if n := items(t, data); len(rules) != n {
			t.Fatalf("%d rules read from %d written", len(rules), n)
		}
		for _, r := range rules {
			if err := addRule(t, r); err != nil {
				t.Fatalf("ParseRules accepted a rule the engine refuses: %v", err)
			}
			sendRule(t, r)
		}
		y, err := yaml.Marshal(rules)
		if err != nil {
			t.Fatalf("accepted rules do not marshal to YAML: %v", err)
		}
		again, err := ParseRules(y, "again.yaml")
		if err != nil {
			t.Fatalf("accepted rules are refused after a YAML round trip: %v\n%s", err, y)
		}
		if len(again) != len(rules) {
			t.Fatalf("%d rules became %d through YAML:\n%s", len(rules), len(again), y)
		}
		for i := range rules {
			if !sameRule(t, rules[i], again[i]) {
				t.Fatalf("rule changed through YAML:\n was %+v\n now %+v\n YAML %s", rules[i], again[i], y)
			}
		}
	})
}

// items counts the rules a file holds: a list's items, or one.
func items(t *testing.T, data []byte) int {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 {
		t.Fatalf("ParseRules accepted a file that is not YAML or empty: %v", err)
	}
	if root := doc.Content[0]; root.Kind == yaml.SequenceNode {
		return len(root.Content)
	}
	return 1
}

// FuzzRuleJSON: a control API request body never panics the decoding or
// Engine.Add; a refused rule is a *FieldError; an accepted rule comes back
// equal and accepted from its own JSON (GET /rules, then PUT it back).
func FuzzRuleJSON(f *testing.F) {
	addRuleSeeds(f, true)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRuleJSON(data)
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("empty decoding error")
			}
			return
		}
		if addRule(t, r) != nil {
			return
		}
		if err := Validate(r); err != nil {
			t.Fatalf("Add accepted what Validate refuses: %v", err)
		}
		sendRule(t, r)
	})
}

// FuzzClassify: Classify never panics, returns a known class, ignores
// letter case and anything PostgreSQL skips before the first keyword.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		"", "SELECT 1", "  begin", "START TRANSACTION", "commit prepared 'g'", "ROLLBACK PREPARED 'g'", "END",
		"PREPARE TRANSACTION 'g'", "/* a /* nested */ comment */ -- line\n(COMMIT)", "WITH x AS (SELECT 1) SELECT * FROM x",
		"insert into t values (1)", "UPDATE t SET x = 1", "delete from t", "CREATE TABLE t ()", "vacuum", ";;;BEGIN",
		"--", "/*", "/*/", "*/", "-", "/", "$1", "'COMMIT'", "\"commit\"", "\\set x 1", "ßELECT", "COMMIT\x00PREPARED",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, sql []byte) {
		c := Classify(sql)
		if c >= numClasses || c.String() == "unknown" {
			t.Fatalf("Classify(%q) = %d, not a class", sql, c)
		}
		// Keywords are ASCII: only ASCII letters change case.
		if u, l := Classify(asciiCase(sql, true)), Classify(asciiCase(sql, false)); u != c || l != c {
			t.Fatalf("Classify(%q) = %v, upper case %v, lower case %v", sql, c, u, l)
		}
		for _, prefix := range []string{" \t\r\n\f", "-- comment\n", "/* a /* nested */ comment */", "((", ";"} {
			if p := Classify(append([]byte(prefix), sql...)); p != c {
				t.Fatalf("Classify(%q) = %v, but %v after %q", sql, c, p, prefix)
			}
		}
	})
}

func asciiCase(b []byte, upper bool) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		switch {
		case upper && c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		case !upper && c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return out
}

// FuzzSQLMatch: the rewritten case-insensitive matcher compiles exactly
// the patterns Go's (?i) compiles and answers exactly as it does, on any
// SQL; the case-sensitive one is plain regexp. (TestSQLMatcherAgreesWithFoldCase
// checks fixed cases; this generalises it.)
func FuzzSQLMatch(f *testing.F) {
	sqls := []string{"SELECT 1", "  select abalance FROM pgbench_accounts", "delete   from AUDIT", "USER_ID",
		"COMMIT", "commitment", "STRASSE", "straße", "STRAßE", "PREPARE TRANSACTION 'g1'", "xxY", "a.b", "AbC", "\ncommit\n", ""}
	for i, p := range []string{
		`^\s*SELECT`, `pgbench_tellers`, `DELETE\s+FROM\s+audit`, `[A-Z]+_id`, `[^a-z]`, `\bCOMMIT\b`, `(?-i)SELECT`,
		`Straße`, `prepare transaction '[^']+'`, `^(BEGIN|START TRANSACTION)`, `x{2,}Y`, `\QA.B\E`, `(?i:a)B(?-i:c)`,
		`\pL+`, `[[:upper:]]`, `(?m)^commit$`, `(?s).`, `\x{41}`, `[\d\w]`, ``, `(`, `a**`,
	} {
		// Each pattern with a few of the statements: the fuzzer crosses them.
		for j := range 3 {
			f.Add(p, []byte(sqls[(i+5*j)%len(sqls)]))
		}
	}
	f.Fuzz(func(t *testing.T, pattern string, sql []byte) {
		if len(pattern) > 1000 {
			return // compiling huge patterns measures regexp, not pgchaos
		}
		want, werr := regexp.Compile("(?i)" + pattern)
		got, gerr := compileSQL(pattern, false)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("pattern %q: (?i) compiles: %v, rewritten: %v", pattern, werr, gerr)
		}
		if werr == nil {
			for _, in := range [][]byte{sql, asciiCase(sql, true), asciiCase(sql, false), bytes.ToUpper(sql), bytes.ToLower(sql)} {
				lowered := &loweredSQL{}
				w, g := want.Match(in), got.match(in, lowered)
				lowered.release()
				if w != g {
					t.Fatalf("pattern %q on %q: (?i) says %v, rewritten says %v (rewritten to %s, lowered %v)", pattern, in, w, g, got.re, got.lower)
				}
			}
		}
		want, werr = regexp.Compile(pattern)
		got, gerr = compileSQL(pattern, true)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("pattern %q case-sensitive: regexp compiles: %v, compileSQL: %v", pattern, werr, gerr)
		}
		if werr == nil {
			if w, g := want.Match(sql), got.match(sql, &loweredSQL{}); w != g {
				t.Fatalf("case-sensitive pattern %q on %q: regexp says %v, compileSQL says %v", pattern, sql, w, g)
			}
		}
	})
}

// decideRules cover every matcher, limit and action kind.
func decideRules() []Rule {
	ms := Duration(time.Millisecond)
	delay := Action{Type: "delay", Delay: ms, Jitter: ms}
	return []Rule{
		{Name: "select", Match: Match{SQL: `^\s*SELECT\b.*pgbench_(tellers|branches)`}, Action: delay},
		{Name: "mixed-case", Match: Match{SQL: `(?-i:COMMIT)|savepoint`}, Action: Action{Type: "drop"}, Limits: Limits{Skip: 2}},
		{Name: "cs", Match: Match{SQL: `Select`, SQLCaseSensitive: true, Message: StringList{"parse", "query"}}, Action: delay},
		{Name: "2pc", Match: Match{Statement: StringList{"prepare_transaction", "commit_prepared", "rollback_prepared"}, TxStatus: StringList{"in_transaction", "idle"}}, Action: Action{Type: "disconnect", Side: "server", Close: "rst"}},
		{Name: "ddl", Match: Match{Statement: StringList{"ddl", "other"}, User: "admin"}, Action: Action{Type: "error", SQLState: "42501"}, Limits: Limits{Times: 3}},
		{Name: "tag", Match: Match{Tag: "PREPARE TRANSACTION"}, Action: Action{Type: "disconnect", When: "after"}},
		{Name: "tag-error", Match: Match{Tag: "insert"}, Action: Action{Type: "error", SQLState: "40001", Severity: "FATAL"}, Limits: Limits{OncePerSession: true}},
		{Name: "failed", Match: Match{TxStatus: StringList{"failed"}, ApplicationName: `^psql`}, Action: Action{Type: "hang", Duration: ms}},
		{Name: "lan", Match: Match{ClientCIDR: "10.0.0.0/8", Message: StringList{"sync", "bind"}}, Action: Action{Type: "partition", Duration: ms}, Limits: Limits{Probability: floatPtr(0.5)}},
		{Name: "rows", Match: Match{Message: StringList{"data_row", "ready_for_query"}, Database: "app"}, Action: delay, Limits: Limits{Expires: Duration(time.Hour)}},
		{Name: "connect", Match: Match{Event: "connect", ClientCIDR: "::1/128"}, Action: Action{Type: "refuse", SQLState: "53300"}},
		{Name: "cancel", Match: Match{Event: "cancel"}, Action: Action{Type: "drop"}, Limits: Limits{Probability: floatPtr(0.3)}},
		{Name: "toxic", Match: Match{User: "slow"}, Action: Action{Type: "latency", Attributes: map[string]any{"latency": 1}}},
		{Name: "fingerprint", Match: Match{Fingerprint: "SELECT * FROM pgbench_tellers WHERE tid = $1"}, Action: delay},
		{Name: "in-doubt", Match: Match{Statement: StringList{"commit"}}, Action: Action{Type: "disconnect", When: "result", Close: "rst"}},
	}
}

// FuzzDecide: Decide and DecideEvent never panic on any message and
// session, and a verdict comes from a rule that wants the message.
// (TestDecideNoMatchAllocatesNothing checks that no-match is allocation
// free.)
func FuzzDecide(f *testing.F) {
	e := NewEngine(Options{Seed: 1})
	names := map[string]bool{}
	for _, r := range decideRules() {
		if _, err := e.Add(r); err != nil {
			f.Fatalf("%s: %v", r.Name, err)
		}
		names[r.Name] = true
	}
	rs := e.Policy("p").Rules()
	// Each input starts from fresh counters, so that what it covers does
	// not depend on the inputs before it.
	seeds := make([]uint64, len(e.rules))
	for i, r := range e.rules {
		seeds[i] = r.state.rng.Load()
	}
	reset := func() {
		for i, r := range e.rules {
			r.state.matched.Store(0)
			r.state.fired.Store(0)
			r.state.rng.Store(seeds[i])
		}
	}
	f.Add(byte(0), byte('Q'), []byte("SELECT * FROM pgbench_tellers"), []byte(nil), byte('I'), "bench", "pgbench", "10.1.2.3")
	f.Add(byte(0), byte('E'), []byte("prepare transaction 'g'"), []byte(nil), byte('T'), "admin", "psql", "::1")
	f.Add(byte(1), byte('C'), []byte(nil), []byte("PREPARE TRANSACTION"), byte('T'), "admin", "psql", "::ffff:10.0.0.1")
	f.Add(byte(1), byte('C'), []byte(nil), []byte("INSERT 0 1"), byte('E'), "", "", "")
	f.Add(byte(0), byte('S'), []byte(nil), []byte(nil), byte(0), "slow", "psql -x", "10.0.0.1")
	f.Add(byte(1), byte('D'), []byte("x"), []byte("y"), byte('Z'), "u", "app", "not an address")
	f.Fuzz(func(t *testing.T, dir, typ byte, sql, tag []byte, tx byte, user, app, client string) {
		reset()
		addr, _ := netip.ParseAddr(client)
		s := &Session{ID: 1, User: user, Database: user, ApplicationName: app, Client: addr, TxStatus: tx}
		m := &Message{Dir: Direction(dir & 1), Type: typ, SQL: sql, Tag: tag}
		v, ok := rs.Decide(s, m)
		if ok {
			if !rs.Wants(m.Dir, m.Type) {
				t.Fatalf("rule %q fired on a message no rule wants", v.Rule)
			}
			if !names[v.Rule] {
				t.Fatalf("verdict from unknown rule %q", v.Rule)
			}
		}
		if v, ok := rs.DecideEvent(s, EventKind(dir%3)); ok && !names[v.Rule] {
			t.Fatalf("event verdict from unknown rule %q", v.Rule)
		}
		rs.SessionToxics(m.Dir, s)
	})
}

// FuzzFingerprint: match.fingerprint's comparator, which walks the
// statement without building its redacted text, answers exactly as
// comparing RedactSQL's outputs would — on the fuzzer's pairs, on a
// statement against itself, and against its own redaction.
func FuzzFingerprint(f *testing.F) {
	for _, s := range [][2]string{
		{"insert into t values (1)", "insert into t values ($1)"},
		{"insert into t values ($1)", "insert into t values (5)"},
		{"SELECT $1, 'x', $2, 5", "SELECT $1, $3, $2, $4"},
		{"UPDATE t SET a = $3 WHERE b = 'k'", "UPDATE t SET a = $3 WHERE b = $4"},
		{"SELECT $1'x'", "SELECT $1$2"},
		{"SELECT 'a'5", "SELECT $1$2"},
		{"SELECT $007, 1", "SELECT $007, $8"},
		{"SELECT $9223372036854775807, 1", "SELECT $9223372036854775807, $-9223372036854775808"},
		{"SELECT $99999999999999999999, 1", "SELECT $99999999999999999999, $1"},
		{"SELECT $9223372036854775807, $5, 1", "SELECT $9223372036854775807, $5, $6"},
		{"SELECT $$it's$$, $tag$a $$ b 'c'$tag$, 7", "SELECT $1, $2, $3"},
		{"SELECT 1 -- it's 2\n, 'v' /* don't 3 */", "SELECT $1 -- it's 2\n, $2 /* don't 3 */"},
		{"SELECT E'\\'', 1", "SELECT $1, $2"},
		{"SELECT 'abc", "SELECT $1"},
		{"SELECT 1..2", "SELECT $1.$2"},
		{"SELECT U&'d\\0061t', B'1', X'f', N'n'", "SELECT $1, $2, $3, $4"},
		{"", ""},
		{"COMMIT", "commit"},
	} {
		f.Add([]byte(s[0]), s[1])
	}
	f.Fuzz(func(t *testing.T, sql []byte, fp string) {
		check := func(sql []byte, fp string) {
			want := RedactSQL(sql) == RedactSQL([]byte(fp))
			if got := compileFingerprint(fp).match(sql); got != want {
				t.Fatalf("fingerprint %q on %q: matched %v, but RedactSQL gives %q and %q", fp, sql, got, RedactSQL(sql), RedactSQL([]byte(fp)))
			}
		}
		check(sql, fp)
		check(sql, string(sql))
		check(sql, RedactSQL(sql))
		check([]byte(fp), RedactSQL(sql))
	})
}
