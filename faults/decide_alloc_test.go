package faults

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// noMatchRules are 20 rules, none of which fires for pgbenchSession's
// pgbenchQuery: SQL regexes, statement classes, tags and session
// attributes. Several of them do want Query messages, so Decide has to
// look at each.
func noMatchRules() []Rule {
	ms := Duration(time.Millisecond)
	delay := Action{Type: "delay", Delay: ms}
	return []Rule{
		{Name: "tellers", Match: Match{SQL: `pgbench_tellers`}, Action: delay},
		{Name: "branches", Match: Match{SQL: `UPDATE\s+pgbench_branches`}, Action: delay},
		{Name: "history", Match: Match{SQL: `^INSERT INTO pgbench_history`}, Action: Action{Type: "error", SQLState: "40001"}},
		{Name: "aid-99", Match: Match{SQL: `aid = 99\b`}, Action: delay},
		{Name: "cs", Match: Match{SQL: `select abalance`, SQLCaseSensitive: true}, Action: delay},
		{Name: "ddl", Match: Match{Statement: StringList{"ddl"}}, Action: Action{Type: "disconnect"}},
		{Name: "writes", Match: Match{Statement: StringList{"insert", "update", "delete"}}, Action: delay},
		{Name: "2pc", Match: Match{Statement: StringList{"prepare_transaction", "commit_prepared"}}, Action: Action{Type: "disconnect", Side: "server"}},
		{Name: "commit", Match: Match{Statement: StringList{"commit"}, TxStatus: StringList{"in_transaction"}}, Action: Action{Type: "error", SQLState: "40001"}},
		{Name: "tag-commit", Match: Match{Tag: "COMMIT"}, Action: Action{Type: "error", SQLState: "40001"}},
		{Name: "tag-insert", Match: Match{Tag: "INSERT"}, Action: delay},
		{Name: "tag-pt", Match: Match{Tag: "PREPARE TRANSACTION"}, Action: Action{Type: "disconnect"}},
		{Name: "admin", Match: Match{User: "admin", SQL: "select"}, Action: Action{Type: "drop"}},
		{Name: "otherdb", Match: Match{Database: "postgres"}, Action: Action{Type: "drop"}},
		{Name: "psql", Match: Match{ApplicationName: `^psql$`}, Action: delay},
		{Name: "lan", Match: Match{ClientCIDR: "192.168.0.0/16", SQL: "pgbench"}, Action: delay},
		{Name: "failed", Match: Match{TxStatus: StringList{"failed"}}, Action: Action{Type: "disconnect"}},
		{Name: "parse", Match: Match{Message: StringList{"parse"}, SQL: "accounts"}, Action: delay},
		{Name: "other-proxy", Proxy: "elsewhere", Match: Match{SQL: "accounts"}, Action: Action{Type: "drop"}},
		{Name: "never", Match: Match{SQL: "accounts"}, Action: Action{Type: "drop"}, Limits: Limits{Probability: floatPtr(0)}},
	}
}

// fingerprintRules match pgbenchQuery's neighbours by fingerprint: one the
// same up to its end (so the comparator numbers the constant and walks it
// all), one that differs at once, one with another constant's place.
func fingerprintRules() []Rule {
	delay := Action{Type: "delay", Delay: Duration(time.Millisecond)}
	return []Rule{
		{Name: "fp-longer", Match: Match{Fingerprint: "SELECT abalance FROM pgbench_accounts WHERE aid = $1 FOR UPDATE"}, Action: delay},
		{Name: "fp-other", Match: Match{Fingerprint: "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"}, Action: delay},
		{Name: "fp-literal", Match: Match{Fingerprint: "SELECT abalance FROM pgbench_accounts WHERE aid = aid + 1"}, Action: delay},
	}
}

func pgbenchSession() *Session {
	return &Session{
		ID: 1, User: "bench", Database: "bench", ApplicationName: "pgbench",
		Client: netip.MustParseAddr("10.0.0.5"), TxStatus: 'I',
	}
}

var pgbenchQuery = &Message{Dir: ClientToServer, Type: 'Q', SQL: []byte("SELECT abalance FROM pgbench_accounts WHERE aid = 42")}

func noMatchRuleSet(tb testing.TB) *RuleSet {
	tb.Helper()
	e := NewEngine(Options{Seed: 1})
	rules := noMatchRules()
	if len(rules) != 20 {
		tb.Fatalf("%d rules, want 20", len(rules))
	}
	for _, r := range rules {
		mustAdd(tb, e, r)
	}
	return e.Policy("pgbench").Rules()
}

func TestNoMatchRulesDoNotFire(t *testing.T) {
	rs := noMatchRuleSet(t)
	if !rs.Wants(ClientToServer, 'Q') {
		t.Fatal("the benchmark's rules do not want queries: it would measure nothing")
	}
	s := pgbenchSession()
	for i := 0; i < 100; i++ {
		if v, ok := rs.Decide(s, pgbenchQuery); ok {
			t.Fatalf("rule %q fired on the pgbench query", v.Rule)
		}
	}
}

func TestDecideUnwantedAllocatesNothing(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "sql", Match: Match{SQL: "accounts"}, Action: Action{Type: "drop"}})
	mustAdd(t, e, Rule{Name: "tag", Match: Match{Tag: "COMMIT"}, Action: Action{Type: "drop"}})
	mustAdd(t, e, Rule{Name: "conn", Match: Match{Event: "connect"}, Action: Action{Type: "refuse"}})
	rs := e.Policy("p").Rules()
	s := pgbenchSession()
	msgs := []*Message{
		{Dir: ClientToServer, Type: 'P', SQL: pgbenchQuery.SQL}, // parse: nobody wants it
		{Dir: ClientToServer, Type: 'S'},
		{Dir: ServerToClient, Type: 'D'},
		{Dir: ServerToClient, Type: 'Z'},
	}
	for _, m := range msgs {
		if rs.Wants(m.Dir, m.Type) {
			t.Fatalf("Wants(%v, %q) is true", m.Dir, m.Type)
		}
		allocs := testing.AllocsPerRun(1000, func() {
			if _, ok := rs.Decide(s, m); ok {
				panic("fired")
			}
		})
		if allocs != 0 {
			t.Errorf("Decide on unwanted %v %q: %v allocs per run, want 0", m.Dir, m.Type, allocs)
		}
	}
	// The empty snapshot too.
	empty := newTestEngine(t, Options{}).Policy("p").Rules()
	if allocs := testing.AllocsPerRun(1000, func() { empty.Decide(s, pgbenchQuery) }); allocs != 0 {
		t.Errorf("Decide on an empty snapshot: %v allocs per run", allocs)
	}
}

func TestDecideNoMatchAllocatesNothing(t *testing.T) {
	// The wanted-but-no-match path: every rule is looked at, none fires.
	if raceEnabled {
		t.Skip("regexp allocates under -race (sync.Pool is randomized)")
	}
	rs := noMatchRuleSet(t)
	s := pgbenchSession()
	allocs := testing.AllocsPerRun(1000, func() {
		if _, ok := rs.Decide(s, pgbenchQuery); ok {
			panic("fired")
		}
	})
	if allocs != 0 {
		t.Errorf("Decide with 20 non-matching rules: %v allocs per run, want 0", allocs)
	}
	// "never" matches and its probability turns it down: the matched
	// count (and its series) is on the measured path.
	if n := rs.series[len(rs.series)-1]; rs.rules[len(rs.rules)-1].rule.Name != "never" || rs.rules[len(rs.rules)-1].state.matched.Load() == 0 || n.matched == nil {
		t.Error("the rule never did not match: the matched path was not measured")
	}
	e := newTestEngine(t, Options{})
	for _, r := range append(noMatchRules(), fingerprintRules()...) {
		mustAdd(t, e, r)
	}
	withFP := e.Policy("pgbench").Rules()
	if a := testing.AllocsPerRun(1000, func() {
		if v, ok := withFP.Decide(s, pgbenchQuery); ok {
			panic("fired: " + v.Rule)
		}
	}); a != 0 {
		t.Errorf("Decide with fingerprint rules too: %v allocs per run, want 0", a)
	}
	tags := []*Message{tagMsg("SELECT 1"), tagMsg("UPDATE 1")}
	for _, m := range tags {
		if a := testing.AllocsPerRun(1000, func() { rs.Decide(s, m) }); a != 0 {
			t.Errorf("Decide(%q): %v allocs per run, want 0", m.Tag, a)
		}
	}
}

// A fingerprint that matches allocates nothing either: the statement is
// never redacted into a string of its own. The rule matches and is let
// through by its skip limit, so Decide walks the whole match and fires
// nothing (firing records an event, which allocates).
func TestDecideFingerprintAllocatesNothing(t *testing.T) {
	e := newTestEngine(t, Options{})
	for _, r := range fingerprintRules() {
		mustAdd(t, e, r)
	}
	mustAdd(t, e, Rule{Name: "fp-match", Match: Match{Fingerprint: "SELECT abalance FROM pgbench_accounts WHERE aid = $1"},
		Action: Action{Type: "drop"}, Limits: Limits{Skip: 1 << 62}})
	rs := e.Policy("pgbench").Rules()
	s := pgbenchSession()
	msgs := []*Message{
		pgbenchQuery,
		{Dir: ClientToServer, Type: 'E', SQL: []byte("SELECT abalance FROM pgbench_accounts WHERE aid = $1")},
		{Dir: ClientToServer, Type: 'Q', SQL: []byte("SELECT abalance FROM pgbench_accounts WHERE aid = 'x' FOR SHARE")},
		{Dir: ClientToServer, Type: 'Q', SQL: []byte("BEGIN")},
	}
	for _, m := range msgs {
		if a := testing.AllocsPerRun(1000, func() {
			if v, ok := rs.Decide(s, m); ok {
				panic("fired: " + v.Rule)
			}
		}); a != 0 {
			t.Errorf("Decide(%q) with fingerprint rules: %v allocs per run, want 0", m.SQL, a)
		}
	}
	st, err := e.Get("", "fp-match")
	if err != nil || st.Matched == 0 {
		t.Fatalf("fp-match never matched (%v): the test measured nothing", err)
	}
	fp := compileFingerprint("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
	if a := testing.AllocsPerRun(1000, func() {
		if !fp.match(pgbenchQuery.SQL) {
			panic("no match")
		}
	}); a != 0 {
		t.Errorf("a matching fingerprint: %v allocs per run, want 0", a)
	}
}

func BenchmarkDecideFingerprint(b *testing.B) {
	fp := compileFingerprint("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
	b.ReportAllocs()
	for b.Loop() {
		if !fp.match(pgbenchQuery.SQL) {
			b.Fatal("no match")
		}
	}
}

func BenchmarkDecideNoMatch(b *testing.B) {
	rs := noMatchRuleSet(b)
	s := pgbenchSession()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, ok := rs.Decide(s, pgbenchQuery); ok {
			b.Fatal("fired")
		}
	}
}

func BenchmarkDecideNoMatchParallel(b *testing.B) {
	rs := noMatchRuleSet(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		s := pgbenchSession()
		for pb.Next() {
			if _, ok := rs.Decide(s, pgbenchQuery); ok {
				panic("fired")
			}
		}
	})
}

func BenchmarkDecideUnwanted(b *testing.B) {
	rs := noMatchRuleSet(b)
	s := pgbenchSession()
	m := &Message{Dir: ServerToClient, Type: 'D'}
	b.ReportAllocs()
	for b.Loop() {
		rs.Decide(s, m)
	}
}

func BenchmarkClassify(b *testing.B) {
	for _, sql := range []string{"SELECT abalance FROM pgbench_accounts WHERE aid = 42", "/* c */ COMMIT PREPARED 'x'"} {
		in := []byte(sql)
		b.Run(fmt.Sprintf("%.12s", sql), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Classify(in)
			}
		})
	}
}
