package faults

import (
	"errors"
	"testing"
	"time"
)

// Test helpers shared by the faults tests.

func boolPtr(b bool) *bool        { return &b }
func floatPtr(f float64) *float64 { return &f }

// newTestEngine returns an engine with a fixed seed and no metrics.
func newTestEngine(t testing.TB, o Options) *Engine {
	t.Helper()
	if o.Seed == 0 {
		o.Seed = 1
	}
	return NewEngine(o)
}

func mustAdd(t testing.TB, e *Engine, r Rule) RuleStatus {
	t.Helper()
	st, err := e.Add(r)
	if err != nil {
		t.Fatalf("Add(%q): %v", r.Name, err)
	}
	return st
}

// queryMsg is a simple Query from the client.
func queryMsg(sql string) *Message {
	return &Message{Dir: ClientToServer, Type: 'Q', SQL: []byte(sql)}
}

// executeMsg is an Execute of a prepared statement with the given SQL.
func executeMsg(sql string) *Message {
	return &Message{Dir: ClientToServer, Type: 'E', SQL: []byte(sql)}
}

// tagMsg is a CommandComplete from the server.
func tagMsg(tag string) *Message {
	return &Message{Dir: ServerToClient, Type: 'C', Tag: []byte(tag)}
}

// delayRule is a minimal valid message rule.
func delayRule(name string, m Match) Rule {
	return Rule{Name: name, Match: m, Action: Action{Type: "delay", Delay: Duration(time.Millisecond)}}
}

// fieldOf returns the Field of the *FieldError in err's chain, failing the
// test if there is none.
func fieldOf(t testing.TB, err error) string {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *FieldError", err, err)
	}
	return fe.Field
}

// fakeClock is a settable clock for Options.Now.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time          { return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.t = c.t.Add(d) }
