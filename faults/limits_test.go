package faults

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// fires decides n identical queries and returns which fired.
func fires(rs *RuleSet, s *Session, sql string, n int) []bool {
	out := make([]bool, n)
	for i := range out {
		_, out[i] = rs.Decide(s, queryMsg(sql))
	}
	return out
}

func count(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

func TestLimitsSkipTimes(t *testing.T) {
	tests := []struct {
		name   string
		limits Limits
		n      int
		want   []int // indexes (0-based) of the matches that fire
	}{
		{"no limits", Limits{}, 4, []int{0, 1, 2, 3}},
		{"skip 3", Limits{Skip: 3}, 6, []int{3, 4, 5}},
		{"skip more than matches", Limits{Skip: 10}, 5, nil},
		{"times 2", Limits{Times: 2}, 5, []int{0, 1}},
		{"times 1", Limits{Times: 1}, 3, []int{0}},
		{"skip 2 times 3", Limits{Skip: 2, Times: 3}, 8, []int{2, 3, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, Options{})
			mustAdd(t, e, Rule{Name: "r", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}, Limits: tt.limits})
			got := fires(e.Policy("p").Rules(), baseSession(), "x", tt.n)
			var idx []int
			for i, f := range got {
				if f {
					idx = append(idx, i)
				}
			}
			if !slices.Equal(idx, tt.want) {
				t.Errorf("fired on matches %v, want %v", idx, tt.want)
			}
			st, err := e.Get("", "r")
			if err != nil {
				t.Fatal(err)
			}
			if st.Matched != int64(tt.n) || st.Fired != int64(len(tt.want)) {
				t.Errorf("Matched %d Fired %d, want %d %d", st.Matched, st.Fired, tt.n, len(tt.want))
			}
		})
	}
}

func TestLimitsTimesConcurrent(t *testing.T) {
	const (
		goroutines = 8
		perG       = 2000
		times      = 137
	)
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "r", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}, Limits: Limits{Times: times}})
	rs := e.Policy("p").Rules()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
		start = make(chan struct{})
	)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(id uint64) {
			defer wg.Done()
			s := baseSession()
			s.ID = id
			m := queryMsg("x")
			n := 0
			<-start
			for i := 0; i < perG; i++ {
				if _, ok := rs.Decide(s, m); ok {
					n++
				}
			}
			mu.Lock()
			total += n
			mu.Unlock()
		}(uint64(g))
	}
	close(start)
	wg.Wait()
	if total != times {
		t.Errorf("fired %d times, want exactly %d", total, times)
	}
	st, _ := e.Get("", "r")
	if st.Fired != times || st.Matched != goroutines*perG {
		t.Errorf("Fired %d Matched %d, want %d %d", st.Fired, st.Matched, times, goroutines*perG)
	}
	if n := len(e.Events(0)); n != times {
		t.Errorf("%d events logged, want %d", n, times)
	}
}

func TestLimitsOncePerSession(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "once", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}, Limits: Limits{OncePerSession: true}})
	mustAdd(t, e, Rule{Name: "once-too", Match: Match{SQL: "y"}, Action: Action{Type: "drop"}, Limits: Limits{OncePerSession: true}})
	rs := e.Policy("p").Rules()

	s1 := baseSession()
	if got := fires(rs, s1, "x", 5); count(got) != 1 || !got[0] {
		t.Errorf("session 1: %v, want only the first to fire", got)
	}
	if len(s1.Fired) != 1 {
		t.Errorf("session 1 Fired = %v, want one rule", s1.Fired)
	}
	// Another rule is tracked separately in the same session.
	if got := fires(rs, s1, "y", 3); count(got) != 1 || !got[0] {
		t.Errorf("session 1, second rule: %v", got)
	}
	if len(s1.Fired) != 2 {
		t.Errorf("session 1 Fired = %v, want two rules", s1.Fired)
	}
	// A new session fires again.
	s2 := baseSession()
	s2.ID = 8
	if got := fires(rs, s2, "x", 3); count(got) != 1 || !got[0] {
		t.Errorf("session 2: %v", got)
	}
	// What counts is the Session value's Fired slice, not the ID.
	s3 := baseSession()
	if _, ok := rs.Decide(s3, queryMsg("x")); !ok {
		t.Error("a fresh Session value with a reused ID did not fire")
	}
	s4 := baseSession()
	s4.ID = 99
	s4.Fired = slices.Clone(s1.Fired)
	if _, ok := rs.Decide(s4, queryMsg("x")); ok {
		t.Error("a Session carrying the rule in Fired fired again")
	}
	st, _ := e.Get("", "once")
	if st.Fired != 3 || st.Matched != 10 {
		t.Errorf("Fired %d Matched %d, want 3 10", st.Fired, st.Matched)
	}

	// Replacing the rule (a new rule) lets it fire again in old sessions.
	if _, err := e.Put(Rule{Name: "once", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}, Limits: Limits{OncePerSession: true}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Policy("p").Rules().Decide(s1, queryMsg("x")); !ok {
		t.Error("the replaced rule did not fire in a session the old one fired in")
	}

	// Events too.
	e2 := newTestEngine(t, Options{})
	mustAdd(t, e2, Rule{Name: "c", Match: Match{Event: "connect"}, Action: Action{Type: "refuse"}, Limits: Limits{OncePerSession: true}})
	rs2 := e2.Policy("p").Rules()
	s := baseSession()
	if _, ok := rs2.DecideEvent(s, EventConnect); !ok {
		t.Error("connect rule did not fire")
	}
	if _, ok := rs2.DecideEvent(s, EventConnect); ok {
		t.Error("once_per_session connect rule fired twice in one session")
	}
}

func TestLimitsProbability(t *testing.T) {
	tests := []struct {
		p        float64
		min, max int // fires out of n
	}{
		{0, 0, 0},
		{1, 10000, 10000},
		{0.3, 2500, 3500},
		{0.5, 4500, 5500},
		{0.01, 50, 200},
	}
	const n = 10000
	for _, tt := range tests {
		for _, seed := range []int64{1, 2, 12345} {
			e := NewEngine(Options{Seed: seed})
			mustAdd(t, e, Rule{Name: "r", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}, Limits: Limits{Probability: floatPtr(tt.p)}})
			got := count(fires(e.Policy("p").Rules(), baseSession(), "x", n))
			if got < tt.min || got > tt.max {
				t.Errorf("p=%v seed=%d: fired %d of %d, want %d..%d", tt.p, seed, got, n, tt.min, tt.max)
			}
			st, _ := e.Get("", "r")
			if st.Matched != n || st.Fired != int64(got) {
				t.Errorf("p=%v: Matched %d Fired %d, want %d %d", tt.p, st.Matched, st.Fired, n, got)
			}
		}
	}
}

func TestSeedReproducible(t *testing.T) {
	run := func(seed int64) ([]bool, []time.Duration) {
		e := NewEngine(Options{Seed: seed})
		mustAdd(t, e, Rule{Name: "coin", Match: Match{SQL: "coin"}, Action: Action{Type: "drop"}, Limits: Limits{Probability: floatPtr(0.5)}})
		mustAdd(t, e, Rule{Name: "jit", Match: Match{SQL: "jit"}, Action: Action{Type: "delay", Delay: Duration(time.Millisecond), Jitter: Duration(time.Second)}})
		rs := e.Policy("p").Rules()
		s := baseSession()
		coins := fires(rs, s, "coin", 500)
		var delays []time.Duration
		for i := 0; i < 50; i++ {
			v, _ := rs.Decide(s, queryMsg("jit"))
			delays = append(delays, v.Delay)
		}
		return coins, delays
	}
	c1, d1 := run(42)
	c2, d2 := run(42)
	if !slices.Equal(c1, c2) {
		t.Error("the same seed gave different fire/no-fire sequences")
	}
	if !slices.Equal(d1, d2) {
		t.Error("the same seed gave different jitter")
	}
	c3, d3 := run(43)
	if slices.Equal(c1, c3) {
		t.Error("seeds 42 and 43 gave the same fire/no-fire sequence")
	}
	if slices.Equal(d1, d3) {
		t.Error("seeds 42 and 43 gave the same jitter")
	}

	// Each rule has its own stream: a rule's choices don't depend on the
	// traffic another rule sees.
	e := NewEngine(Options{Seed: 42})
	mustAdd(t, e, Rule{Name: "coin", Match: Match{SQL: "coin"}, Action: Action{Type: "drop"}, Limits: Limits{Probability: floatPtr(0.5)}})
	mustAdd(t, e, Rule{Name: "other", Match: Match{SQL: "other"}, Action: Action{Type: "drop"}, Limits: Limits{Probability: floatPtr(0.5)}})
	rs := e.Policy("p").Rules()
	s := baseSession()
	var interleaved []bool
	for i := 0; i < 500; i++ {
		_, ok := rs.Decide(s, queryMsg("coin"))
		interleaved = append(interleaved, ok)
		rs.Decide(s, queryMsg("other"))
	}
	if !slices.Equal(c1, interleaved) {
		t.Error("another rule's traffic changed a rule's random choices")
	}
}

func TestLimitsExpires(t *testing.T) {
	clock := &fakeClock{t: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
	e := newTestEngine(t, Options{Now: clock.Now})
	st := mustAdd(t, e, Rule{Name: "r", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}, Limits: Limits{Expires: Duration(time.Minute)}})
	if !st.Added.Equal(clock.t) {
		t.Errorf("Added = %v, want the fake clock's %v", st.Added, clock.t)
	}
	mustAdd(t, e, Rule{Name: "forever", Match: Match{SQL: "y"}, Action: Action{Type: "drop"}})
	rs := e.Policy("p").Rules()
	s := baseSession()

	steps := []struct {
		advance time.Duration
		want    bool
	}{
		{0, true},
		{30 * time.Second, true},
		{29*time.Second + 999*time.Millisecond, true}, // 59.999s
		{time.Millisecond, false},                     // exactly 1m
		{time.Hour, false},
	}
	for i, step := range steps {
		clock.Advance(step.advance)
		if _, ok := rs.Decide(s, queryMsg("x")); ok != step.want {
			t.Errorf("step %d (%v after adding): fired %v, want %v", i, clock.t.Sub(st.Added), ok, step.want)
		}
	}
	if _, ok := rs.Decide(s, queryMsg("y")); !ok {
		t.Error("a rule without expires stopped firing")
	}
	got, _ := e.Get("", "r")
	if got.Fired != 3 {
		t.Errorf("Fired %d, want 3", got.Fired)
	}
	// Event time comes from the clock too.
	evs := e.Events(0)
	if last := evs[len(evs)-1]; !last.Time.Equal(clock.t) {
		t.Errorf("event time %v, want %v", last.Time, clock.t)
	}

	// Put restarts the clock of a rule.
	if _, err := e.Put(Rule{Name: "r", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}, Limits: Limits{Expires: Duration(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Policy("p").Rules().Decide(s, queryMsg("x")); !ok {
		t.Error("a rule put again after expiring did not fire")
	}
}

func TestJitter(t *testing.T) {
	const (
		delay  = 50 * time.Millisecond
		jitter = 20 * time.Millisecond
	)
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "j", Match: Match{SQL: "x"}, Action: Action{Type: "delay", Delay: Duration(delay), Jitter: Duration(jitter)}})
	mustAdd(t, e, Rule{Name: "fixed", Match: Match{SQL: "y"}, Action: Action{Type: "delay", Delay: Duration(delay)}})
	mustAdd(t, e, Rule{Name: "slow", Match: Match{Event: "connect"}, Action: Action{Type: "slow_connect", Delay: Duration(delay), Jitter: Duration(jitter)}})
	rs := e.Policy("p").Rules()
	s := baseSession()
	lo, hi := delay+jitter, delay
	for i := 0; i < 2000; i++ {
		v, ok := rs.Decide(s, queryMsg("x"))
		if !ok {
			t.Fatal("delay rule did not fire")
		}
		if v.Delay < delay || v.Delay >= delay+jitter {
			t.Fatalf("delay %v outside [%v, %v)", v.Delay, delay, delay+jitter)
		}
		lo, hi = min(lo, v.Delay), max(hi, v.Delay)
	}
	// The jitter is spread over the range, not stuck at one end.
	if lo > delay+2*time.Millisecond || hi < delay+jitter-2*time.Millisecond {
		t.Errorf("delays span only [%v, %v] of [%v, %v)", lo, hi, delay, delay+jitter)
	}
	for i := 0; i < 10; i++ {
		if v, _ := rs.Decide(s, queryMsg("y")); v.Delay != delay {
			t.Fatalf("delay without jitter %v, want %v", v.Delay, delay)
		}
	}
	for i := 0; i < 200; i++ {
		v, ok := rs.DecideEvent(s, EventConnect)
		if !ok || v.Delay < delay || v.Delay >= delay+jitter {
			t.Fatalf("slow_connect delay %v (%v) outside [%v, %v)", v.Delay, ok, delay, delay+jitter)
		}
	}
}

// A rule's stream is seeded by the engine's seed and the rule's name, and
// is drawn from only for what the rule asks: its probability when below 1,
// its jitter when there is one. So a rule with the same name, probability
// and traffic makes the same choices whatever its action.
func TestRandomStreamPerRule(t *testing.T) {
	e := NewEngine(Options{Seed: 9})
	mustAdd(t, e, Rule{Name: "alpha", Match: Match{SQL: "alpha"}, Action: Action{Type: "drop"}, Limits: Limits{Probability: floatPtr(0.5)}})
	mustAdd(t, e, Rule{Name: "beta", Match: Match{SQL: "beta"}, Action: Action{Type: "drop"}, Limits: Limits{Probability: floatPtr(0.5)}})
	rs := e.Policy("p").Rules()
	s := baseSession()
	if slices.Equal(fires(rs, s, "alpha", 64), fires(rs, s, "beta", 64)) {
		t.Error("rules of different names made the same 64 choices: the name does not seed the stream")
	}

	// Drawn for the probability only: without jitter, message i fires
	// when the stream's i-th number is below the probability.
	for _, a := range []Action{{Type: "drop"}, {Type: "delay", Delay: Duration(time.Millisecond)}} {
		e := NewEngine(Options{Seed: 9})
		mustAdd(t, e, Rule{Name: "coin", Match: Match{SQL: "coin"}, Action: a, Limits: Limits{Probability: floatPtr(0.5)}})
		rs := e.Policy("p").Rules()
		stream := e.newState("coin")
		for i := range 200 {
			_, ok := rs.Decide(s, queryMsg("coin"))
			if want := stream.random() < 0.5; ok != want {
				t.Fatalf("%s rule, message %d: fired %v, want %v: it drew for something else than its probability", a.Type, i, ok, want)
			}
		}
	}

	// Drawn for the jitter only: with probability 1 each delay is the
	// stream's next number.
	e = NewEngine(Options{Seed: 9})
	mustAdd(t, e, Rule{Name: "jit", Match: Match{SQL: "jit"}, Action: Action{Type: "delay", Delay: Duration(time.Second), Jitter: Duration(time.Second)},
		Limits: Limits{Probability: floatPtr(1)}})
	rs = e.Policy("p").Rules()
	stream := e.newState("jit")
	for i := range 50 {
		v, ok := rs.Decide(s, queryMsg("jit"))
		want := time.Second + time.Duration(stream.random()*float64(time.Second))
		if !ok || v.Delay != want {
			t.Fatalf("delay %d: %v, want %v: a rule with probability 1 drew for it", i, v.Delay, want)
		}
	}
}
