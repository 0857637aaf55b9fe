package faults

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestAddDuplicate(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "r", Action: Action{Type: "drop"}})
	_, err := e.Add(Rule{Name: "r", Action: Action{Type: "disconnect"}})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second Add: %v, want ErrExists", err)
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		t.Errorf("ErrExists is also a FieldError: %v", err)
	}
	if !strings.Contains(err.Error(), `"r"`) {
		t.Errorf("error %q does not name the rule", err)
	}
	// The original is untouched.
	st, err := e.Get("", "r")
	if err != nil || st.Action.Type != "drop" {
		t.Errorf("Get after a refused Add: %+v %v", st, err)
	}

	// The same name on another proxy is another rule.
	mustAdd(t, e, Rule{Name: "r", Proxy: "a", Action: Action{Type: "disconnect"}})
	mustAdd(t, e, Rule{Name: "r", Proxy: "b", Action: Action{Type: "disconnect"}})
	if _, err := e.Add(Rule{Name: "r", Proxy: "a", Action: Action{Type: "drop"}}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate on proxy a: %v, want ErrExists", err)
	}
	if n := len(e.Rules()); n != 3 {
		t.Errorf("%d rules, want 3", n)
	}
	for _, proxy := range []string{"", "a", "b"} {
		if _, err := e.Get(proxy, "r"); err != nil {
			t.Errorf("Get(%q, r): %v", proxy, err)
		}
	}
	if _, err := e.Get("c", "r"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(c, r): %v, want ErrNotFound", err)
	}
}

func TestAddReturnsStatus(t *testing.T) {
	now := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	e := newTestEngine(t, Options{Now: func() time.Time { return now }})
	r := Rule{Name: "r", Proxy: "p", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}}
	st := mustAdd(t, e, r)
	if st.Name != "r" || st.Proxy != "p" || st.Match.SQL != "x" || !st.Added.Equal(now) || st.Matched != 0 || st.Fired != 0 {
		t.Errorf("status %+v", st)
	}
}

func TestPutReplaces(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "before", Action: Action{Type: "drop"}, Match: Match{SQL: "zzz"}})
	mustAdd(t, e, Rule{Name: "h", Match: Match{SQL: "x"}, Action: Action{Type: "hang"}})
	mustAdd(t, e, Rule{Name: "after", Action: Action{Type: "drop"}, Match: Match{SQL: "zzz"}})
	rs := e.Policy("p").Rules()
	s := baseSession()
	var old Verdict
	for i := 0; i < 3; i++ {
		v, ok := rs.Decide(s, queryMsg("x"))
		if !ok || v.Rule != "h" {
			t.Fatalf("hang rule did not fire: %+v", v)
		}
		old = v
	}
	if st, _ := e.Get("", "h"); st.Matched != 3 || st.Fired != 3 {
		t.Fatalf("before Put: %+v", st)
	}
	if isClosed(old.Released) {
		t.Fatal("Released closed before the rule changed")
	}

	st, err := e.Put(Rule{Name: "h", Match: Match{SQL: "x"}, Action: Action{Type: "disconnect"}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Matched != 0 || st.Fired != 0 || st.Action.Type != "disconnect" {
		t.Errorf("Put returned %+v, want reset counters and the new action", st)
	}
	if !isClosed(old.Released) {
		t.Error("Put did not close the replaced rule's Released channel")
	}
	v, ok := e.Policy("p").Rules().Decide(s, queryMsg("x"))
	if !ok || v.Action != ActDisconnect {
		t.Errorf("after Put: %+v %v", v, ok)
	}
	if isClosed(v.Released) {
		t.Error("the new rule's Released channel is already closed")
	}
	if got, _ := e.Get("", "h"); got.Matched != 1 || got.Fired != 1 {
		t.Errorf("after Put and one decision: %+v", got)
	}

	// Put keeps the place in the order and does not duplicate.
	var names []string
	for _, r := range e.Rules() {
		names = append(names, r.Name)
	}
	if strings.Join(names, ",") != "before,h,after" {
		t.Errorf("order after Put: %v", names)
	}

	// Put of a new name adds it at the end.
	if _, err := e.Put(Rule{Name: "new", Action: Action{Type: "drop"}}); err != nil {
		t.Fatal(err)
	}
	if rules := e.Rules(); len(rules) != 4 || rules[3].Name != "new" {
		t.Errorf("Put of a new rule: %+v", rules)
	}
	// Put of the same name on another proxy is another rule.
	if _, err := e.Put(Rule{Name: "new", Proxy: "q", Action: Action{Type: "drop"}}); err != nil {
		t.Fatal(err)
	}
	if n := len(e.Rules()); n != 5 {
		t.Errorf("%d rules, want 5", n)
	}
}

func TestRemove(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "h", Match: Match{SQL: "x"}, Action: Action{Type: "hang"}})
	mustAdd(t, e, Rule{Name: "h", Proxy: "p", Match: Match{SQL: "y"}, Action: Action{Type: "hang"}})
	pol := e.Policy("p")
	before := pol.Rules()
	v, ok := before.Decide(baseSession(), queryMsg("x"))
	if !ok {
		t.Fatal("hang did not fire")
	}
	vp, _ := before.Decide(baseSession(), queryMsg("y"))

	if err := e.Remove("", "h"); err != nil {
		t.Fatal(err)
	}
	if !isClosed(v.Released) {
		t.Error("Remove did not close Released")
	}
	if isClosed(vp.Released) {
		t.Error("Remove closed the Released of the same name on another proxy")
	}
	if _, err := e.Get("", "h"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Remove: %v, want ErrNotFound", err)
	}
	if _, err := e.Get("p", "h"); err != nil {
		t.Errorf("the rule of the same name on proxy p is gone: %v", err)
	}

	// The old snapshot is immutable: it still has the rule.
	if v, ok := before.Decide(baseSession(), queryMsg("x")); !ok || v.Rule != "h" {
		t.Errorf("the snapshot taken before Remove changed: %+v %v", v, ok)
	}
	if !before.Wants(ClientToServer, 'Q') {
		t.Error("the old snapshot no longer wants queries")
	}
	// The policy's new snapshot does not.
	after := pol.Rules()
	if after == before {
		t.Fatal("Remove did not publish a new snapshot")
	}
	if _, ok := after.Decide(baseSession(), queryMsg("x")); ok {
		t.Error("the removed rule fired in the new snapshot")
	}
	if _, ok := after.Decide(baseSession(), queryMsg("y")); !ok {
		t.Error("the other proxy-scoped rule stopped firing")
	}

	if err := e.Remove("", "h"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove: %v, want ErrNotFound", err)
	}
	if err := e.Remove("", "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove unknown: %v, want ErrNotFound", err)
	}
	if err := e.Remove("other", "h"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove on the wrong proxy: %v, want ErrNotFound", err)
	}
	// Releasing is idempotent: removing after a Put released already.
	mustAdd(t, e, Rule{Name: "z", Action: Action{Type: "hang"}})
	if _, err := e.Put(Rule{Name: "z", Action: Action{Type: "hang"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.Remove("", "z"); err != nil {
		t.Fatal(err)
	}
}

func TestReset(t *testing.T) {
	e := newTestEngine(t, Options{})
	var held []<-chan struct{}
	for i := 0; i < 5; i++ {
		proxy := ""
		if i%2 == 1 {
			proxy = "p"
		}
		mustAdd(t, e, Rule{Name: fmt.Sprintf("h%d", i), Proxy: proxy, Match: Match{SQL: fmt.Sprintf("^q%d$", i)}, Action: Action{Type: "hang"}})
	}
	rs := e.Policy("p").Rules()
	for i := 0; i < 5; i++ {
		v, ok := rs.Decide(baseSession(), queryMsg(fmt.Sprintf("q%d", i)))
		if !ok {
			t.Fatalf("rule h%d did not fire", i)
		}
		held = append(held, v.Released)
	}
	e.Reset()
	for i, ch := range held {
		if !isClosed(ch) {
			t.Errorf("Reset did not release h%d", i)
		}
	}
	if n := len(e.Rules()); n != 0 {
		t.Errorf("%d rules after Reset", n)
	}
	if !e.Policy("p").Rules().Empty() {
		t.Error("the snapshot after Reset is not empty")
	}
	// A reset engine takes the same names again.
	mustAdd(t, e, Rule{Name: "h0", Action: Action{Type: "drop"}})
	e.Reset()
	e.Reset() // on an empty engine
}

func TestRulesCounters(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "a", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}, Limits: Limits{Skip: 2}})
	mustAdd(t, e, Rule{Name: "b", Match: Match{SQL: "x"}, Action: Action{Type: "disconnect"}})
	mustAdd(t, e, Rule{Name: "c", Match: Match{Tag: "COMMIT"}, Action: Action{Type: "drop"}})
	rs := e.Policy("p").Rules()
	s := baseSession()
	for i := 0; i < 5; i++ {
		rs.Decide(s, queryMsg("x"))
	}
	rs.Decide(s, tagMsg("ROLLBACK"))
	// a matches 5 times and fires the last 3; b sees the 2 a skipped.
	want := map[string][2]int64{"a": {5, 3}, "b": {2, 2}, "c": {0, 0}}
	rules := e.Rules()
	if len(rules) != 3 {
		t.Fatalf("%d rules", len(rules))
	}
	for i, name := range []string{"a", "b", "c"} {
		r := rules[i]
		if r.Name != name {
			t.Errorf("Rules()[%d] = %s, want %s", i, r.Name, name)
		}
		if w := want[r.Name]; r.Matched != w[0] || r.Fired != w[1] {
			t.Errorf("%s: Matched %d Fired %d, want %d %d", r.Name, r.Matched, r.Fired, w[0], w[1])
		}
	}
}

func TestEventsLog(t *testing.T) {
	clock := &fakeClock{t: time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)}
	e := newTestEngine(t, Options{EventLogSize: 3, Now: clock.Now})
	mustAdd(t, e, Rule{Name: "sql", Proxy: "pg1", Match: Match{SQL: "accounts"}, Action: Action{Type: "delay", Delay: Duration(time.Millisecond)}})
	mustAdd(t, e, Rule{Name: "tag", Match: Match{Tag: "COMMIT"}, Action: Action{Type: "error", SQLState: "40001"}})
	mustAdd(t, e, Rule{Name: "sync", Match: Match{Message: StringList{"sync"}}, Action: Action{Type: "disconnect"}})
	rs := e.Policy("pg1").Rules()

	if evs := e.Events(0); len(evs) != 0 {
		t.Fatalf("events before any fault: %+v", evs)
	}

	msgs := []*Message{
		queryMsg("SELECT 1 FROM accounts -- 1"),
		queryMsg("SELECT 1 FROM accounts -- 2"),
		tagMsg("COMMIT"),
		{Dir: ClientToServer, Type: 'S'},
		executeMsg("UPDATE accounts SET x = 5"),
	}
	for i, m := range msgs {
		s := baseSession()
		s.ID = uint64(100 + i)
		clock.Advance(time.Second)
		if _, ok := rs.Decide(s, m); !ok {
			t.Fatalf("message %d did not fire", i)
		}
	}
	evs := e.Events(0)
	if len(evs) != 3 {
		t.Fatalf("%d events kept, want EventLogSize=3", len(evs))
	}
	want := []struct {
		rule, action string
		session      uint64
		contains     []string
	}{
		{"tag", "error", 102, []string{"command_complete", "COMMIT"}},
		{"sync", "disconnect", 103, []string{"sync"}},
		{"sql", "delay", 104, []string{"execute", "UPDATE accounts SET x = $1"}},
	}
	for i, w := range want {
		ev := evs[i]
		if ev.Rule != w.rule || ev.Action != w.action || ev.Session != w.session || ev.Proxy != "pg1" {
			t.Errorf("event %d = %+v, want rule %s action %s session %d proxy pg1", i, ev, w.rule, w.action, w.session)
		}
		for _, c := range w.contains {
			if !strings.Contains(ev.Message, c) {
				t.Errorf("event %d message %q does not contain %q", i, ev.Message, c)
			}
		}
		if i > 0 && !ev.Time.After(evs[i-1].Time) {
			t.Errorf("events not oldest first: %v then %v", evs[i-1].Time, ev.Time)
		}
	}
	if got := e.Events(2); len(got) != 2 || got[0].Rule != "sync" || got[1].Rule != "sql" {
		t.Errorf("Events(2) = %+v, want the newest two oldest first", got)
	}
	if got := e.Events(10); len(got) != 3 {
		t.Errorf("Events(10) = %d events, want 3", len(got))
	}
	// The caller may modify what Events returns.
	got := e.Events(0)
	got[0].Rule = "mangled"
	if e.Events(0)[0].Rule == "mangled" {
		t.Error("Events returns the engine's own storage")
	}
	// The query summary includes the SQL, its constants replaced unless
	// the engine keeps full SQL.
	e2 := newTestEngine(t, Options{})
	mustAdd(t, e2, Rule{Name: "q", Match: Match{SQL: "."}, Action: Action{Type: "drop"}})
	e2.Policy("x").Rules().Decide(baseSession(), queryMsg("SELECT abalance FROM pgbench_accounts WHERE aid = 42 AND note = 'TopSecret123'"))
	if evs := e2.Events(0); len(evs) != 1 || !strings.Contains(evs[0].Message, "query") || !strings.Contains(evs[0].Message, "SELECT abalance FROM pgbench_accounts WHERE aid = $1 AND note = $2") {
		t.Errorf("query summary: %+v", evs)
	}
	full := newTestEngine(t, Options{FullSQL: true})
	mustAdd(t, full, Rule{Name: "q", Match: Match{SQL: "."}, Action: Action{Type: "drop"}})
	full.Policy("x").Rules().Decide(baseSession(), queryMsg("SELECT abalance FROM pgbench_accounts WHERE aid = 42"))
	if evs := full.Events(0); len(evs) != 1 || !strings.Contains(evs[0].Message, "SELECT abalance FROM pgbench_accounts WHERE aid = 42") {
		t.Errorf("query summary with FullSQL: %+v", evs)
	}
	// Long SQL is clipped, not dropped.
	long := "SELECT " + strings.Repeat("x", 1000)
	e2.Policy("x").Rules().Decide(baseSession(), queryMsg(long))
	if evs := e2.Events(1); len(evs) != 1 || !strings.Contains(evs[0].Message, "SELECT xxx") || len(evs[0].Message) > 300 {
		t.Errorf("long SQL summary: %q", evs[0].Message)
	}
}

func TestEventsLogDefaultSize(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "r", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}})
	rs := e.Policy("p").Rules()
	for i := 0; i < 1500; i++ {
		s := baseSession()
		s.ID = uint64(i)
		rs.Decide(s, queryMsg("x"))
	}
	evs := e.Events(0)
	if len(evs) != 1000 {
		t.Fatalf("%d events kept, want the default 1000", len(evs))
	}
	if evs[0].Session != 500 || evs[999].Session != 1499 {
		t.Errorf("kept sessions %d..%d, want 500..1499", evs[0].Session, evs[999].Session)
	}
}

func TestSnapshotImmutableUnderChanges(t *testing.T) {
	// Decide on snapshots while rules change, under -race.
	e := newTestEngine(t, Options{})
	pol := e.Policy("p")
	mustAdd(t, e, Rule{Name: "base", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}})
	done := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := baseSession()
			for {
				select {
				case <-done:
					return
				default:
				}
				rs := pol.Rules()
				rs.Decide(s, queryMsg("x"))
				rs.Decide(s, tagMsg("COMMIT"))
				rs.DecideEvent(s, EventConnect)
				s.Fired = s.Fired[:0]
			}
		}()
	}
	for i := 0; i < 200; i++ {
		name := fmt.Sprintf("r%d", i%7)
		e.Put(Rule{Name: name, Match: Match{Tag: "COMMIT"}, Action: Action{Type: "hang"}, Limits: Limits{OncePerSession: true}})
		if i%3 == 0 {
			e.Remove("", name)
		}
		_ = e.Rules()
		_ = e.Events(10)
	}
	close(done)
	wg.Wait()
}

// Every rule of a proxy has its fired and matched series from the start
// (0 until it matches); matched counts what the limits turned down too.
func TestMetricFiredAndMatchedTotal(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newTestEngine(t, Options{Registerer: reg})
	mustAdd(t, e, Rule{Name: "d", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}, Limits: Limits{Skip: 1}})
	mustAdd(t, e, Rule{Name: "c", Match: Match{Tag: "COMMIT"}, Action: Action{Type: "disconnect"}})
	a, b := e.Policy("a").Rules(), e.Policy("b").Rules()
	s := baseSession()
	for i := 0; i < 4; i++ {
		a.Decide(s, queryMsg("x")) // 1 skipped, 3 fired
	}
	b.Decide(s, tagMsg("COMMIT"))
	b.Decide(s, tagMsg("COMMIT"))
	b.Decide(s, tagMsg("ROLLBACK"))

	fired := counterValues(t, reg, "pgchaos_fault_fired_total", "proxy", "rule", "action")
	want := map[string]float64{"a/d/drop": 3, "a/c/disconnect": 0, "b/c/disconnect": 2, "b/d/drop": 0}
	if !maps.Equal(fired, want) {
		t.Errorf("pgchaos_fault_fired_total %v, want %v", fired, want)
	}
	matched := counterValues(t, reg, "pgchaos_fault_matched_total", "proxy", "rule")
	want = map[string]float64{"a/d": 4, "a/c": 0, "b/c": 2, "b/d": 0}
	if !maps.Equal(matched, want) {
		t.Errorf("pgchaos_fault_matched_total %v, want %v", matched, want)
	}

	// A removed rule's series go; a rule of the same name for one proxy
	// keeps that proxy's; a forgotten proxy keeps none.
	mustAdd(t, e, Rule{Name: "c", Proxy: "b", Match: Match{Tag: "COMMIT"}, Action: Action{Type: "error", SQLState: "40001"}})
	if err := e.Remove("", "c"); err != nil {
		t.Fatal(err)
	}
	fired = counterValues(t, reg, "pgchaos_fault_fired_total", "proxy", "rule", "action")
	want = map[string]float64{"a/d/drop": 3, "b/d/drop": 0, "b/c/error": 0}
	if !maps.Equal(fired, want) {
		t.Errorf("after removing c: pgchaos_fault_fired_total %v, want %v", fired, want)
	}
	matched = counterValues(t, reg, "pgchaos_fault_matched_total", "proxy", "rule")
	want = map[string]float64{"a/d": 4, "b/c": 2, "b/d": 0}
	if !maps.Equal(matched, want) {
		t.Errorf("after removing c: pgchaos_fault_matched_total %v, want %v", matched, want)
	}
	e.ForgetProxy("b")
	if got := counterValues(t, reg, "pgchaos_fault_matched_total", "proxy", "rule"); !maps.Equal(got, map[string]float64{"a/d": 4}) {
		t.Errorf("after forgetting b: pgchaos_fault_matched_total %v", got)
	}

	// Two engines cannot share a registry; an engine without one is fine.
	func() {
		defer func() {
			if recover() == nil {
				t.Error("registering a second engine's metric on the same registry did not panic")
			}
		}()
		NewEngine(Options{Registerer: reg})
	}()
	e3 := NewEngine(Options{})
	s = baseSession()
	mustAdd(t, e3, Rule{Name: "d", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}})
	if _, ok := e3.Policy("a").Rules().Decide(s, queryMsg("x")); !ok {
		t.Error("an engine without a registerer did not fire")
	}
}

// An event shows at most 120 bytes of the statement, and says when it cut.
func TestEventClipsLongSQL(t *testing.T) {
	e := newTestEngine(t, Options{FullSQL: true})
	mustAdd(t, e, Rule{Name: "x", Match: Match{SQL: "^x"}, Action: Action{Type: "drop"}})
	rs := e.Policy("p").Rules()
	for _, n := range []int{119, 120, 121, 500} {
		sql := strings.Repeat("x", n)
		if _, ok := rs.Decide(baseSession(), queryMsg(sql)); !ok {
			t.Fatal("the rule did not fire")
		}
		evs := e.Events(1)
		want := `"` + sql + `"`
		if n > 120 {
			want = `"` + sql[:120] + `…"`
		}
		if len(evs) != 1 || !strings.HasSuffix(evs[0].Message, want) {
			t.Errorf("%d bytes of SQL: event %q, want it to end %s", n, evs[0].Message, want)
		}
	}
}

// counterValues gathers the series of a counter (or gauge), keyed by the
// values of labels joined with "/".
func counterValues(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			values := map[string]string{}
			for _, l := range m.GetLabel() {
				values[l.GetName()] = l.GetValue()
			}
			var key []string
			for _, l := range labels {
				key = append(key, values[l])
			}
			v := m.GetCounter().GetValue()
			if m.GetGauge() != nil {
				v = m.GetGauge().GetValue()
			}
			got[strings.Join(key, "/")] = v
		}
	}
	return got
}

// pgchaos_rules_active counts, per proxy, the rules that can still fire:
// not disabled, expired, used up by times, or at probability 0; a rule
// waiting out its skip, and a byte toxic, are armed.
func TestMetricRulesActive(t *testing.T) {
	reg := prometheus.NewRegistry()
	clock := &fakeClock{t: time.Unix(1000, 0)}
	e := newTestEngine(t, Options{Registerer: reg, Now: clock.Now})
	e.Policy("a")
	e.Policy("b")
	active := func() map[string]float64 { return counterValues(t, reg, "pgchaos_rules_active", "proxy") }
	if got := active(); !maps.Equal(got, map[string]float64{"a": 0, "b": 0}) {
		t.Fatalf("no rules: %v", got)
	}
	mustAdd(t, e, Rule{Name: "every", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}, Limits: Limits{Skip: 5}})
	mustAdd(t, e, Rule{Name: "once", Proxy: "a", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}, Limits: Limits{Times: 1}})
	mustAdd(t, e, Rule{Name: "soon", Proxy: "a", Match: Match{SQL: "y"}, Action: Action{Type: "drop"}, Limits: Limits{Expires: Duration(time.Minute)}})
	mustAdd(t, e, Rule{Name: "off", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}, Enabled: boolPtr(false)})
	mustAdd(t, e, Rule{Name: "never", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}, Limits: Limits{Probability: floatPtr(0)}})
	mustAdd(t, e, Rule{Name: "slow", Proxy: "b", Action: Action{Type: "latency", Attributes: map[string]any{"latency": 10}}})
	if got := active(); !maps.Equal(got, map[string]float64{"a": 3, "b": 2}) {
		t.Errorf("armed: %v, want a 3 (every, once, soon), b 2 (every, slow)", got)
	}
	if _, ok := e.Policy("a").Rules().Decide(baseSession(), queryMsg("x")); !ok {
		t.Fatal("once did not fire")
	}
	clock.Advance(time.Minute)
	if got := active(); !maps.Equal(got, map[string]float64{"a": 1, "b": 2}) {
		t.Errorf("once used up, soon expired: %v, want a 1, b 2", got)
	}
	e.ForgetProxy("b")
	if got := active(); !maps.Equal(got, map[string]float64{"a": 1}) {
		t.Errorf("b forgotten: %v", got)
	}
}
