package faults

import (
	"slices"
	"testing"
)

// Options.Observe hears a session's statements and the ends of their
// responses, rules or no rules, before any rule is matched; nothing else.
func TestObserve(t *testing.T) {
	type heard struct {
		dir      Direction
		typ      byte
		sql, tag string
		tx       byte
	}
	var got []heard
	e := newTestEngine(t, Options{Observe: func(proxy string, s *Session, m *Message) {
		if proxy != "p" {
			t.Errorf("observer told proxy %q, want p", proxy)
		}
		// What it keeps, it copies.
		got = append(got, heard{m.Dir, m.Type, string(m.SQL), string(m.Tag), s.TxStatus})
	}})
	rs := e.Policy("p").Rules()
	if rs.Empty() {
		t.Fatal("a snapshot with an observer is Empty: the proxy would not show it anything")
	}
	for _, w := range []struct {
		d Direction
		t byte
	}{{ClientToServer, 'Q'}, {ClientToServer, 'E'}, {ClientToServer, 'S'}, {ServerToClient, 'C'}, {ServerToClient, 'I'}, {ServerToClient, 's'}, {ServerToClient, 'E'}, {ServerToClient, 'Z'}} {
		if !rs.Wants(w.d, w.t) {
			t.Errorf("with no rules, the snapshot does not want %v %q", w.d, w.t)
		}
	}
	for _, w := range []struct {
		d Direction
		t byte
	}{{ClientToServer, 'P'}, {ClientToServer, 'B'}, {ServerToClient, 'D'}, {ServerToClient, 'T'}} {
		if rs.Wants(w.d, w.t) {
			t.Errorf("with no rules, the snapshot wants %v %q", w.d, w.t)
		}
	}
	s := baseSession()
	msgs := []*Message{
		queryMsg("BEGIN"),
		tagMsg("BEGIN"),
		{Dir: ServerToClient, Type: 'Z'},
		{Dir: ClientToServer, Type: 'P', SQL: []byte("INSERT INTO t VALUES ($1)")}, // not observed
		executeMsg("INSERT INTO t VALUES ($1)"),
		{Dir: ServerToClient, Type: 'D'}, // not observed
		tagMsg("INSERT 0 1"),
		{Dir: ServerToClient, Type: 'E'},
		{Dir: ServerToClient, Type: 'I'},
	}
	for _, m := range msgs {
		if m.Type == 'E' && m.Dir == ClientToServer {
			s.TxStatus = 'T'
		}
		rs.Decide(s, m)
	}
	want := []heard{
		{ClientToServer, 'Q', "BEGIN", "", 'I'},
		{ServerToClient, 'C', "", "BEGIN", 'I'},
		{ServerToClient, 'Z', "", "", 'I'},
		{ClientToServer, 'E', "INSERT INTO t VALUES ($1)", "", 'T'},
		{ServerToClient, 'C', "", "INSERT 0 1", 'T'},
		{ServerToClient, 'E', "", "", 'T'},
		{ServerToClient, 'I', "", "", 'T'},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("observer heard\n%v\nwant\n%v", got, want)
	}

	// Before the rules: a rule that fires does not hide the message, and
	// the rules' own messages (a Parse here) still go only to them.
	mustAdd(t, e, Rule{Name: "cut", Match: Match{Statement: StringList{"commit"}}, Action: Action{Type: "disconnect"}})
	mustAdd(t, e, Rule{Name: "parse", Match: Match{Message: StringList{"parse"}, SQL: "x"}, Action: Action{Type: "drop"}})
	rs = e.Policy("p").Rules()
	got = nil
	if v, ok := rs.Decide(s, queryMsg("COMMIT")); !ok || v.Rule != "cut" {
		t.Fatalf("COMMIT: %+v %v; want the cut rule", v, ok)
	}
	if _, ok := rs.Decide(s, &Message{Dir: ClientToServer, Type: 'P', SQL: []byte("x")}); !ok {
		t.Fatal("the parse rule did not fire")
	}
	if want := []heard{{ClientToServer, 'Q', "COMMIT", "", 'T'}}; !slices.Equal(got, want) {
		t.Fatalf("observer heard %v, want %v", got, want)
	}
}

// An observer costs Decide no allocation of its own.
func TestObserveAllocatesNothing(t *testing.T) {
	n := 0
	e := newTestEngine(t, Options{Observe: func(string, *Session, *Message) { n++ }})
	rs := e.Policy("p").Rules()
	s := pgbenchSession()
	for _, m := range []*Message{pgbenchQuery, tagMsg("SELECT 1"), {Dir: ServerToClient, Type: 'D'}} {
		if a := testing.AllocsPerRun(1000, func() { rs.Decide(s, m) }); a != 0 {
			t.Errorf("Decide(%v %q) with an observer: %v allocs per run", m.Dir, m.Type, a)
		}
	}
	if n == 0 {
		t.Fatal("the observer heard nothing")
	}
}
