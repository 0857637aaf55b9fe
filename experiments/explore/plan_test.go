package explore

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/faults"
)

// The recorder turns what the engine shows it into fault points: one per
// statement shape, protocol and transaction status, with the tag of its
// first result and how often it ran; connections and idle moments too.
func TestRecorderLearnsPoints(t *testing.T) {
	rc := newRecorder("app")
	sess := func(id uint64, tx byte) *faults.Session { return &faults.Session{ID: id, TxStatus: tx} }
	c2s := func(typ byte, sql string) *faults.Message {
		return &faults.Message{Dir: faults.ClientToServer, Type: typ, SQL: []byte(sql)}
	}
	s2c := func(typ byte, tag string) *faults.Message {
		m := &faults.Message{Dir: faults.ServerToClient, Type: typ}
		if tag != "" {
			m.Tag = []byte(tag)
		}
		return m
	}
	sync := &faults.Message{Dir: faults.ClientToServer, Type: 'S'}
	for order := 1; order <= 2; order++ {
		id := uint64(order)
		rc.observe("app", sess(id, 'I'), c2s('Q', "begin"))
		rc.observe("app", sess(id, 'I'), s2c('C', "BEGIN"))
		rc.observe("app", sess(id, 'T'), s2c('Z', ""))
		// Two pipelined batches: each result goes to its own statement,
		// and the second batch's survive the first's ReadyForQuery.
		rc.observe("app", sess(id, 'T'), c2s('E', "INSERT INTO orders VALUES ('o"+itoa(order)+"', 3)"))
		rc.observe("app", sess(id, 'T'), sync)
		rc.observe("app", sess(id, 'T'), c2s('E', "UPDATE stock SET qty = qty - 3"))
		rc.observe("app", sess(id, 'T'), sync)
		rc.observe("app", sess(id, 'T'), s2c('C', "INSERT 0 1"))
		rc.observe("app", sess(id, 'T'), s2c('Z', ""))
		if order == 1 {
			rc.observe("app", sess(id, 'T'), s2c('C', "UPDATE 1"))
		} else {
			rc.observe("app", sess(id, 'E'), s2c('E', "")) // the server failed it
		}
		rc.observe("app", sess(id, 'T'), s2c('Z', ""))
		rc.observe("app", sess(id, 'T'), c2s('Q', "commit"))
		rc.observe("app", sess(id, 'T'), s2c('C', "COMMIT"))
		rc.observe("app", sess(id, 'I'), s2c('Z', ""))
	}
	rc.observe("other", sess(9, 'I'), c2s('Q', "SELECT 1")) // another proxy's
	got := rc.learned()
	want := []Point{
		{ID: "s1", Fingerprint: "begin", Protocol: ProtocolSimple, TxStatus: "idle", Tag: "BEGIN", Count: 2, Answered: 2},
		{ID: "s2", Fingerprint: "INSERT INTO orders VALUES ($1, $2)", Protocol: ProtocolExtended, TxStatus: "in_transaction", Tag: "INSERT", Count: 2, Answered: 2},
		{ID: "s3", Fingerprint: "UPDATE stock SET qty = qty - $1", Protocol: ProtocolExtended, TxStatus: "in_transaction", Tag: "UPDATE", Count: 2, Answered: 1},
		{ID: "s4", Fingerprint: "commit", Protocol: ProtocolSimple, TxStatus: "in_transaction", Tag: "COMMIT", Count: 2, Answered: 2},
		{ID: PointConnect, Connection: PointConnect, Count: 2},
		{ID: PointIdle, Connection: PointIdle, Count: 2},
	}
	if fmt.Sprintf("%+v", exported(got)) != fmt.Sprintf("%+v", want) {
		t.Fatalf("learned\n%+v\nwant\n%+v", exported(got), want)
	}
	if s3 := got[2]; !s3.AnsweredAt(1) || s3.AnsweredAt(2) {
		t.Errorf("UPDATE answered at 1 %v, at 2 %v: want the first only", s3.AnsweredAt(1), s3.AnsweredAt(2))
	}
	// No cut after a result the server never sent.
	x := &experiments.Explore{Kinds: []string{experiments.KindCutAfter}, Occurrences: 2}
	var cut []string
	for _, c := range plan("app", got, columns(x), x) {
		cut = append(cut, c.Point+"#"+itoa(c.Occurrence))
	}
	if want := "s4#1 s4#2 s1#1 s1#2 s2#1 s2#2 s3#1"; strings.Join(cut, " ") != want {
		t.Errorf("cut_after cells %v, want %s", cut, want)
	}
}

// exported drops what a Point keeps for the plan alone.
func exported(ps []Point) []Point {
	out := make([]Point, len(ps))
	for i, p := range ps {
		p.answered = nil
		out[i] = p
	}
	return out
}

// Trials go in-doubt moments first (a cut after COMMIT before a cut after
// anything else), then errors, connection faults, hangs and delays; each
// arms one rule for one occurrence.
func TestPlanOrder(t *testing.T) {
	points := []Point{
		{ID: "s1", Fingerprint: "begin", Protocol: ProtocolSimple, TxStatus: "idle", Tag: "BEGIN", Count: 3, answered: []bool{true, true, true}},
		{ID: "s2", Fingerprint: "commit", Protocol: ProtocolSimple, TxStatus: "in_transaction", Tag: "COMMIT", Count: 3, answered: []bool{true, true, true}},
		{ID: PointConnect, Connection: PointConnect, Count: 1},
	}
	x := &experiments.Explore{Kinds: experiments.ExploreKinds, SQLStatesBefore: []string{"40001", "57P01"}, SQLStatesAfter: []string{"40001"}, Occurrences: 2, Delay: experiments.DefaultExploreDelay}
	cells := plan("app", points, columns(x), x)
	var got []string
	for _, c := range cells {
		got = append(got, c.Column+"@"+c.Point+"#"+itoa(c.Occurrence))
	}
	want := []string{
		"cut_after@s2#1", "cut_after@s2#2", "cut_after@s1#1", "cut_after@s1#2",
		"cut_before@s1#1", "cut_before@s1#2", "cut_before@s2#1", "cut_before@s2#2",
		"error_after 40001@s1#1", "error_after 40001@s1#2", "error_after 40001@s2#1", "error_after 40001@s2#2",
		"error_before 40001@s1#1", "error_before 40001@s1#2", "error_before 40001@s2#1", "error_before 40001@s2#2",
		"error_before 57P01@s1#1", "error_before 57P01@s1#2", "error_before 57P01@s2#1", "error_before 57P01@s2#2",
		"refuse@connect#1", // it happened once: a second occurrence is not tried
		"hang@s1#1", "hang@s1#2", "hang@s2#1", "hang@s2#2",
		"delay@s1#1", "delay@s1#2", "delay@s2#1", "delay@s2#2",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("plan\n%v\nwant\n%v", got, want)
	}
	byName := map[string]*Cell{}
	for _, c := range cells {
		byName[c.Column+"@"+c.Point+"#"+itoa(c.Occurrence)] = c
	}
	r := byName["cut_after@s2#2"].Rule
	if r.Proxy != "app" || r.Match.Fingerprint != "commit" || !slices.Equal(r.Match.Message, faults.StringList{"query"}) ||
		!slices.Equal(r.Match.TxStatus, faults.StringList{"in_transaction"}) || r.Action.Type != "disconnect" || r.Action.When != "result" ||
		r.Limits.Skip != 1 || r.Limits.Times != 1 {
		t.Errorf("cut_after at s2, occurrence 2: %+v", r)
	}
	if a := byName["error_before 57P01@s1#1"].Rule.Action; a.Type != "error" || a.When != "" || a.Severity != "FATAL" || a.SQLState != "57P01" {
		t.Errorf("error_before 57P01: %+v", a)
	}
	if a := byName["error_after 40001@s2#1"].Rule.Action; a.Type != "error" || a.When != "after" || a.Severity != "ERROR" {
		t.Errorf("error_after 40001: %+v", a)
	}
	if r := byName["refuse@connect#1"].Rule; r.Match.Event != "connect" || r.Action.Type != "refuse" || r.Match.Fingerprint != "" {
		t.Errorf("refuse: %+v", r)
	}
	if a := byName["delay@s1#1"].Rule.Action; a.Type != "delay" || a.Delay != faults.Duration(experiments.DefaultExploreDelay) {
		t.Errorf("delay: %+v", a)
	}
	// Every rule is one the engine takes.
	e := faults.NewEngine(faults.Options{})
	for _, c := range cells {
		if _, err := e.Add(c.Rule); err != nil {
			t.Errorf("%s at %s: %v", c.Column, c.Point, err)
		}
	}
}

func TestShapeAndTags(t *testing.T) {
	for in, want := range map[string]string{
		`want 3 rows, got 4`:                      `want N rows, got N`,
		`order "o-17" is there twice`:             `order "…" is there twice`,
		`workload shop did not finish within 15s`: `workload shop did not finish within Ns`,
	} {
		if got := shape(in); got != want {
			t.Errorf("shape(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"INSERT 0 1": "INSERT", "UPDATE 12": "UPDATE", "COMMIT": "COMMIT", "PREPARE TRANSACTION": "PREPARE TRANSACTION", "SELECT 3": "SELECT"} {
		if got := tagWord([]byte(in)); got != want {
			t.Errorf("tagWord(%q) = %q, want %q", in, got, want)
		}
	}
}
