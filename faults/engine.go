// Package faults is pgchaos's fault policy: rules (a matcher, an action and
// limits) as plain data, and an engine that decides, message by message,
// what should happen. It has no sockets: the proxy asks for a verdict and
// carries it out.
package faults

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Side says which connection a disconnect closes.
type Side uint8

const (
	SideBoth Side = iota
	SideClient
	SideServer
)

// ErrorSpec is an ErrorResponse to send.
type ErrorSpec struct {
	Severity, Code, Message string
}

// Verdict is what the engine decided for one message or event.
type Verdict struct {
	Action ActionKind
	Rule   string
	// After: carry the action out after the message is forwarded.
	After bool
	// AtResult (disconnect only): forward the statement and cut in place of
	// its result — the first result of a simple Query, an Execute's own
	// result in a pipeline — unless the server answers with an error.
	AtResult bool
	Delay    time.Duration // delay, slow_connect (jitter applied)
	Side     Side          // disconnect
	Reset    bool          // disconnect with RST
	Error    *ErrorSpec    // error, refuse with a message
	Duration time.Duration // hang, partition: 0 = until the rule is removed
	// Released is closed when the rule is removed or changed; a hang
	// waits on it.
	Released <-chan struct{}
}

// Message is what a rule sees of a protocol message.
type Message struct {
	Dir  Direction
	Type byte
	// SQL of a Query, of the statement an Execute runs, or of a Parse.
	SQL []byte
	// Tag of a CommandComplete.
	Tag []byte
}

// Session is what a rule sees of the session a message belongs to.
type Session struct {
	ID              uint64
	User            string
	Database        string
	ApplicationName string
	Client          netip.Addr
	TxStatus        byte // 'I', 'T', 'E' or 0 before the first ReadyForQuery
	// Fired remembers once_per_session rules that fired in this session.
	// The proxy keeps it with the session.
	Fired []uint64
}

const (
	txIdle = iota
	txInTx
	txFailed
)

type compiledRule struct {
	rule  Rule
	id    uint64
	state *ruleState

	event EventKind
	dir   Direction
	types [256]bool
	sql   *sqlMatcher
	// fingerprint: match.fingerprint, normalised.
	fingerprint *fingerprintMatcher
	classes     uint32
	tag         string
	tx          uint8
	appName     *regexp.Regexp
	cidr        netip.Prefix
	hasCIDR     bool

	action   ActionKind
	after    bool
	atResult bool
	side     Side
	reset    bool
	errSpec  *ErrorSpec
	delay    time.Duration
	jitter   time.Duration
	duration time.Duration

	probability float64
	enabled     bool

	toxicType  string
	toxicAttrs []byte
}

// ruleState outlives snapshots: counters, the random stream and the
// release signal of one rule as added.
type ruleState struct {
	added    time.Time
	matched  atomic.Int64
	fired    atomic.Int64
	rng      atomic.Uint64
	release  chan struct{}
	released sync.Once
}

func (s *ruleState) releaseHeld() { s.released.Do(func() { close(s.release) }) }

// ruleSeries are one rule's counters on one proxy, resolved when the
// snapshot is made so that matching and firing only add to them.
type ruleSeries struct {
	matched, fired prometheus.Counter
}

// seriesKey is the label values (after the proxy) of a rule's series.
type seriesKey struct{ rule, action string }

// RuleSet is an immutable snapshot of the rules that apply to one proxy.
type RuleSet struct {
	rules []*compiledRule
	// series[i] are rules[i]'s counters; toxicSeries[d][i] toxics[d][i]'s.
	series      []ruleSeries
	toxicSeries [2][]ruleSeries
	// keys are the series of every rule that applies to the proxy,
	// enabled or not: those of a rule that no longer applies are dropped.
	keys []seriesKey
	// wants[d][t]: some message rule looks at type t in direction d.
	wants   [2][256]bool
	connect bool
	cancel  bool
	toxics  [2][]*compiledRule
	engine  *Engine
	proxy   string
	// observe is the engine's Options.Observe (nil: none).
	observe func(proxy string, s *Session, m *Message)
}

// observed are the messages an Options.Observe hears: a session's
// statements and the Syncs that end their batches, and how each response
// to them ends.
var observed = [2][256]bool{
	ClientToServer: {'Q': true, 'E': true, 'S': true},
	ServerToClient: {'C': true, 'I': true, 's': true, 'E': true, 'Z': true},
}

// Empty reports whether no rule applies and nothing observes: the proxy's
// fast path.
func (rs *RuleSet) Empty() bool {
	return rs == nil || len(rs.rules) == 0 && len(rs.toxics[0]) == 0 && len(rs.toxics[1]) == 0 && rs.observe == nil
}

// Wants reports whether any rule looks at messages of type typ going in
// direction d. Messages nobody wants are forwarded without a verdict.
func (rs *RuleSet) Wants(d Direction, typ byte) bool { return rs != nil && rs.wants[d][typ] }

// WantsConnect and WantsCancel report whether event rules exist.
func (rs *RuleSet) WantsConnect() bool { return rs != nil && rs.connect }
func (rs *RuleSet) WantsCancel() bool  { return rs != nil && rs.cancel }

// Decide returns the verdict of the first rule that fires for m in session
// s. ok is false when none does. With Options.Observe, it first tells the
// observer of the messages it hears.
func (rs *RuleSet) Decide(s *Session, m *Message) (v Verdict, ok bool) {
	if rs == nil || !rs.wants[m.Dir][m.Type] {
		return Verdict{}, false
	}
	if rs.observe != nil && observed[m.Dir][m.Type] {
		rs.observe(rs.proxy, s, m)
	}
	var class StatementClass = 255
	var lowered loweredSQL
	defer lowered.release()
	for i, r := range rs.rules {
		if r.event != EventNone || r.dir != m.Dir || !r.types[m.Type] || !r.matchSession(s) {
			continue
		}
		if r.classes != 0 {
			if class == 255 {
				class = Classify(m.SQL)
			}
			if r.classes&(1<<class) == 0 {
				continue
			}
		}
		if r.sql != nil && (m.SQL == nil || !r.sql.match(m.SQL, &lowered)) {
			continue
		}
		if r.fingerprint != nil && (m.SQL == nil || !r.fingerprint.match(m.SQL)) {
			continue
		}
		if r.tag != "" && !tagMatches(m.Tag, r.tag) {
			continue
		}
		if v, ok := rs.fire(r, &rs.series[i], s, m); ok {
			return v, true
		}
	}
	return Verdict{}, false
}

// DecideEvent returns the verdict for a connect or cancel event.
func (rs *RuleSet) DecideEvent(s *Session, ev EventKind) (Verdict, bool) {
	if rs == nil {
		return Verdict{}, false
	}
	for i, r := range rs.rules {
		if r.event != ev || !r.matchSession(s) {
			continue
		}
		if v, ok := rs.fire(r, &rs.series[i], s, nil); ok {
			return v, true
		}
	}
	return Verdict{}, false
}

func (r *compiledRule) matchSession(s *Session) bool {
	if !r.enabled {
		return false
	}
	m := &r.rule.Match
	if r.tx != 0 {
		var bit uint8
		switch s.TxStatus {
		case 'I':
			bit = 1 << txIdle
		case 'T':
			bit = 1 << txInTx
		case 'E':
			bit = 1 << txFailed
		}
		if r.tx&bit == 0 {
			return false
		}
	}
	if m.User != "" && m.User != s.User {
		return false
	}
	if m.Database != "" && m.Database != s.Database {
		return false
	}
	if r.appName != nil && !r.appName.MatchString(s.ApplicationName) {
		return false
	}
	if r.hasCIDR && !r.cidr.Contains(s.Client.Unmap()) {
		return false
	}
	return true
}

// tagMatches compares a command tag with a rule's tag: equal, or the rule's
// words followed by the tag's counts ("INSERT" matches "INSERT 0 1").
func tagMatches(tag []byte, want string) bool {
	if len(tag) < len(want) {
		return false
	}
	for i := 0; i < len(want); i++ {
		c := tag[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != want[i] {
			return false
		}
	}
	return len(tag) == len(want) || tag[len(want)] == ' '
}

// fire applies a matching rule's limits and, if it fires, accounts for it.
// A match counts (matched) unless the rule has expired: its window is
// closed, and it is no longer armed (see rulesActive).
func (rs *RuleSet) fire(r *compiledRule, ser *ruleSeries, s *Session, m *Message) (Verdict, bool) {
	st := r.state
	e := rs.engine
	if exp := time.Duration(r.rule.Limits.Expires); exp > 0 && e.now().Sub(st.added) >= exp {
		return Verdict{}, false
	}
	n := st.matched.Add(1)
	ser.matched.Inc()
	if n <= r.rule.Limits.Skip {
		return Verdict{}, false
	}
	if r.rule.Limits.OncePerSession && slices.Contains(s.Fired, r.id) {
		return Verdict{}, false
	}
	if r.probability < 1 && st.random() >= r.probability {
		return Verdict{}, false
	}
	if max := r.rule.Limits.Times; max > 0 {
		for {
			f := st.fired.Load()
			if f >= max {
				return Verdict{}, false
			}
			if st.fired.CompareAndSwap(f, f+1) {
				break
			}
		}
	} else {
		st.fired.Add(1)
	}
	if r.rule.Limits.OncePerSession {
		s.Fired = append(s.Fired, r.id)
	}
	v := Verdict{
		Action: r.action, Rule: r.rule.Name, After: r.after, AtResult: r.atResult, Side: r.side, Reset: r.reset,
		Error: r.errSpec, Duration: r.duration, Released: st.release, Delay: r.delay,
	}
	if r.jitter > 0 {
		v.Delay += time.Duration(st.random() * float64(r.jitter))
	}
	e.record(rs.proxy, r, ser, s, m)
	return v, true
}

// random returns the rule's next number in [0, 1): a splitmix64 stream
// seeded from the engine's seed and the rule's name, so a run with the same
// seed and the same traffic makes the same choices.
func (st *ruleState) random() float64 {
	z := st.rng.Add(0x9e3779b97f4a7c15)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11) / (1 << 53)
}

// Event is one fired fault, as the event log keeps it.
type Event struct {
	Time    time.Time `json:"time"`
	Rule    string    `json:"rule"`
	Proxy   string    `json:"proxy"`
	Action  string    `json:"action"`
	Session uint64    `json:"session,omitempty"`
	Message string    `json:"message"`
}

// RuleStatus is a rule with its counters.
type RuleStatus struct {
	Rule
	Added   time.Time `json:"added"`
	Matched int64     `json:"matched"`
	Fired   int64     `json:"fired"`
}

// ErrExists is returned by Add when a rule of that name is already there.
var ErrExists = errors.New("a rule with this name already exists")

// ErrNotFound is returned for a rule that does not exist.
var ErrNotFound = errors.New("no such rule")

// Options configure an Engine.
type Options struct {
	// Seed makes probabilities and jitter reproducible.
	Seed int64
	// Registerer receives pgchaos_fault_fired_total,
	// pgchaos_fault_matched_total and pgchaos_rules_active (nil: not
	// registered).
	Registerer prometheus.Registerer
	// EventLogSize bounds the event log (default 1000).
	EventLogSize int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// FullSQL keeps the SQL of fired events as sent. By default events show
	// it with its constants replaced by $1, $2, ... (RedactSQL): a statement
	// can carry a password or personal data, and the event log is readable
	// by anyone who may read the control API.
	FullSQL bool
	// Observe, when set, hears every session's statements and the ends of
	// their responses, on every proxy, rules or no rules: the client's
	// Query and Execute messages (m.SQL: the query's text, or the SQL of
	// the statement the Execute runs, nil if pgchaos does not know it) and
	// Syncs, and the server's CommandComplete (m.Tag), EmptyQueryResponse,
	// PortalSuspended, ErrorResponse and ReadyForQuery, in the order each
	// direction carries them. It is called by Decide before any rule is matched, so those
	// messages take the proxy's fault path (still on its event loops: no
	// goroutine is woken for them); nothing else is passed to it.
	//
	// s.TxStatus is the session's transaction status as the message goes
	// by: for a statement, the status it runs in; for a ReadyForQuery, the
	// status that message reports (the proxy reads it before deciding).
	// ReadyForQuery's status is only in s.TxStatus: m has no fields for it.
	// A session's first ReadyForQuery ends its startup phase, not a
	// response to a statement.
	//
	// m.SQL and m.Tag alias the proxy's buffers, and *s is the session's
	// live view: the observer must copy what it keeps before it returns.
	// It runs on the proxy's data path, with the session's fault state
	// locked, for every such message of every session, concurrently for
	// different sessions: it must be quick, safe for concurrent use, and
	// must never block.
	Observe func(proxy string, s *Session, m *Message)
}

// Engine holds the rules of a process and publishes, for each proxy, an
// immutable snapshot. Changing rules never waits on traffic: a session
// reads the snapshot that was current when its message went by.
type Engine struct {
	seed    int64
	now     func() time.Time
	fired   *prometheus.CounterVec
	matched *prometheus.CounterVec
	fullSQL bool
	observe func(proxy string, s *Session, m *Message)

	mu       sync.Mutex // serialises writers; readers use snapshots
	nextID   uint64
	rules    []*compiledRule
	policies map[string]*Policy

	logMu  sync.Mutex
	log    []Event
	logCap int
	logPos int
}

// NewEngine returns an engine with no rules.
func NewEngine(o Options) *Engine {
	e := &Engine{seed: o.Seed, now: o.Now, logCap: o.EventLogSize, fullSQL: o.FullSQL, observe: o.Observe, policies: map[string]*Policy{}}
	if e.now == nil {
		e.now = time.Now
	}
	if e.logCap <= 0 {
		e.logCap = 1000
	}
	e.fired = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgchaos_fault_fired_total", Help: "Faults fired, by proxy, rule and action. A byte toxic fires once per session stream it is applied to.",
	}, []string{"proxy", "rule", "action"})
	e.matched = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgchaos_fault_matched_total", Help: "Messages and events a rule matched before its limits (skip, probability, times, once_per_session) decided whether it fired; fired ones included. A byte toxic matches once per session stream.",
	}, []string{"proxy", "rule"})
	if o.Registerer != nil {
		o.Registerer.MustRegister(e.fired, e.matched, rulesActive{e})
	}
	return e
}

// Policy is one proxy's view of the engine.
type Policy struct {
	proxy string
	cur   atomic.Pointer[RuleSet]
}

// Rules returns the current snapshot. It never blocks.
func (p *Policy) Rules() *RuleSet {
	if p == nil {
		return nil
	}
	return p.cur.Load()
}

// Policy returns the view for the named proxy, creating it on first use.
func (e *Engine) Policy(proxy string) *Policy {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, ok := e.policies[proxy]
	if !ok {
		p = &Policy{proxy: proxy}
		p.cur.Store(e.snapshot(proxy))
		e.policies[proxy] = p
	}
	return p
}

func (e *Engine) snapshot(proxy string) *RuleSet {
	rs := &RuleSet{engine: e, proxy: proxy, observe: e.observe}
	if e.observe != nil {
		rs.wants = observed
	}
	for _, r := range e.rules {
		if r.rule.Proxy != "" && r.rule.Proxy != proxy {
			continue
		}
		// Every rule of the proxy has its series from the start (at 0
		// until it matches): a rate is then defined from the moment the
		// rule is added, and the hot path never hashes label values.
		ser := ruleSeries{
			matched: e.matched.WithLabelValues(proxy, r.rule.Name),
			fired:   e.fired.WithLabelValues(proxy, r.rule.Name, r.rule.Action.Type),
		}
		rs.keys = append(rs.keys, seriesKey{r.rule.Name, r.rule.Action.Type})
		if !r.enabled {
			continue
		}
		if r.action == ActToxic {
			rs.toxics[r.dir] = append(rs.toxics[r.dir], r)
			rs.toxicSeries[r.dir] = append(rs.toxicSeries[r.dir], ser)
			continue
		}
		rs.rules = append(rs.rules, r)
		rs.series = append(rs.series, ser)
		switch r.event {
		case EventConnect:
			rs.connect = true
		case EventCancel:
			rs.cancel = true
		default:
			for t, want := range r.types {
				if want {
					rs.wants[r.dir][t] = true
				}
			}
		}
	}
	return rs
}

// publish installs new snapshots and drops the series of rules that no
// longer apply; called with e.mu held. (A session still on an older
// snapshot may count on a dropped series: that only adds to a counter no
// longer exported, it never brings the series back.)
func (e *Engine) publish() {
	for name, p := range e.policies {
		old, cur := p.cur.Load(), e.snapshot(name)
		p.cur.Store(cur)
		e.dropSeries(name, old, cur)
	}
}

// dropSeries deletes the series of old's rules that cur has not: a
// process that adds and removes rules all day keeps no series, and no
// memory, for the gone ones. Two rules of one name (one for every proxy,
// one for this proxy) share their series; the series go with the last.
func (e *Engine) dropSeries(proxy string, old, cur *RuleSet) {
	if old == nil || len(old.keys) == 0 {
		return
	}
	rules := make(map[string]bool, len(cur.keys))
	keys := make(map[seriesKey]bool, len(cur.keys))
	for _, k := range cur.keys {
		rules[k.rule] = true
		keys[k] = true
	}
	for _, k := range old.keys {
		if !keys[k] {
			e.fired.DeleteLabelValues(proxy, k.rule, k.action)
		}
		if !rules[k.rule] {
			e.matched.DeleteLabelValues(proxy, k.rule)
		}
	}
}

func (e *Engine) find(proxy, name string) int {
	for i, r := range e.rules {
		if r.rule.Name == name && r.rule.Proxy == proxy {
			return i
		}
	}
	return -1
}

func (e *Engine) newState(name string) *ruleState {
	st := &ruleState{added: e.now(), release: make(chan struct{})}
	h := uint64(e.seed)
	for i := 0; i < len(name); i++ {
		h = (h ^ uint64(name[i])) * 0x100000001b3
	}
	st.rng.Store(h)
	return st
}

// Add adds a rule. It fails with a *FieldError for an invalid rule and
// ErrExists for a name already used on the same proxy.
func (e *Engine) Add(r Rule) (RuleStatus, error) {
	c, err := compile(r)
	if err != nil {
		return RuleStatus{}, err
	}
	e.mu.Lock()
	if e.find(r.Proxy, r.Name) >= 0 {
		e.mu.Unlock()
		return RuleStatus{}, fmt.Errorf("rule %q: %w", r.Name, ErrExists)
	}
	e.nextID++
	c.id = e.nextID
	c.state = e.newState(r.Name)
	e.rules = append(e.rules, c)
	e.publish()
	e.mu.Unlock()
	return c.status(), nil
}

// Put adds a rule or replaces the one with the same name and proxy.
// Replacing resets its counters and releases what a hang held.
func (e *Engine) Put(r Rule) (RuleStatus, error) {
	c, err := compile(r)
	if err != nil {
		return RuleStatus{}, err
	}
	e.mu.Lock()
	e.nextID++
	c.id = e.nextID
	c.state = e.newState(r.Name)
	var old *compiledRule
	if i := e.find(r.Proxy, r.Name); i >= 0 {
		old = e.rules[i]
		e.rules[i] = c
	} else {
		e.rules = append(e.rules, c)
	}
	e.publish()
	e.mu.Unlock()
	if old != nil {
		old.state.releaseHeld()
	}
	return c.status(), nil
}

// Remove deletes a rule and releases what it held. It never waits on traffic.
func (e *Engine) Remove(proxy, name string) error {
	e.mu.Lock()
	i := e.find(proxy, name)
	if i < 0 {
		e.mu.Unlock()
		return fmt.Errorf("rule %q: %w", name, ErrNotFound)
	}
	old := e.rules[i]
	e.rules = slices.Delete(e.rules, i, i+1)
	e.publish()
	e.mu.Unlock()
	old.state.releaseHeld()
	return nil
}

// ForgetProxy forgets a proxy that is gone: its view (sessions still
// closing keep the snapshot they have) and its series, those of rules
// for every proxy included. A proxy of the same name made later starts
// afresh.
func (e *Engine) ForgetProxy(proxy string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.policies, proxy)
	match := prometheus.Labels{"proxy": proxy}
	e.fired.DeletePartialMatch(match)
	e.matched.DeletePartialMatch(match)
}

// Reset removes every rule and releases what they held.
func (e *Engine) Reset() {
	e.mu.Lock()
	old := e.rules
	e.rules = nil
	e.publish()
	e.fired.Reset()
	e.matched.Reset()
	e.mu.Unlock()
	for _, r := range old {
		r.state.releaseHeld()
	}
}

// Rules lists the rules with their counters, in the order they are checked.
func (e *Engine) Rules() []RuleStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]RuleStatus, len(e.rules))
	for i, r := range e.rules {
		out[i] = r.status()
	}
	return out
}

// Get returns one rule with its counters.
func (e *Engine) Get(proxy, name string) (RuleStatus, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	i := e.find(proxy, name)
	if i < 0 {
		return RuleStatus{}, fmt.Errorf("rule %q: %w", name, ErrNotFound)
	}
	return e.rules[i].status(), nil
}

func (r *compiledRule) status() RuleStatus {
	return RuleStatus{Rule: r.rule, Added: r.state.added, Matched: r.state.matched.Load(), Fired: r.state.fired.Load()}
}

func (e *Engine) record(proxy string, r *compiledRule, ser *ruleSeries, s *Session, m *Message) {
	ser.fired.Inc()
	ev := Event{Time: e.now(), Rule: r.rule.Name, Proxy: proxy, Action: r.rule.Action.Type, Message: summarize(r, m, e.fullSQL)}
	if s != nil {
		ev.Session = s.ID
	}
	e.logMu.Lock()
	if len(e.log) < e.logCap {
		e.log = append(e.log, ev)
	} else {
		e.log[e.logPos] = ev
		e.logPos = (e.logPos + 1) % e.logCap
	}
	e.logMu.Unlock()
}

// Events returns the most recent fired faults, oldest first, at most limit
// (0: all kept).
func (e *Engine) Events(limit int) []Event {
	e.logMu.Lock()
	out := make([]Event, 0, len(e.log))
	out = append(out, e.log[e.logPos:]...)
	out = append(out, e.log[:e.logPos]...)
	e.logMu.Unlock()
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// summarize says what a fired rule acted on, for the event log.
func summarize(r *compiledRule, m *Message, fullSQL bool) string {
	if m == nil {
		switch {
		case r.event == EventConnect:
			return "connect"
		case r.event == EventCancel:
			return "cancel request"
		}
		return r.toxicType + " toxic on the " + r.dir.String() + " stream"
	}
	name := "message"
	for n, t := range messageTypes[m.Dir] {
		if t == m.Type {
			name = n
			break
		}
	}
	switch {
	case m.Tag != nil:
		return fmt.Sprintf("%s %q", name, clip(m.Tag))
	case m.SQL != nil && fullSQL:
		return fmt.Sprintf("%s %q", name, clip(m.SQL))
	case m.SQL != nil:
		return fmt.Sprintf("%s %q", name, clip([]byte(RedactSQL(m.SQL))))
	}
	return name
}

func clip(b []byte) string {
	if len(b) > 120 {
		return string(b[:120]) + "…"
	}
	return string(b)
}

func sortStrings(s []string) { sort.Strings(s) }

// rulesActiveDesc describes pgchaos_rules_active.
var rulesActiveDesc = prometheus.NewDesc("pgchaos_rules_active",
	"Rules armed on the proxy: enabled, not expired, not used up by times, probability above 0. Above 0 while a fault window is open.",
	[]string{"proxy"}, nil)

// rulesActive computes pgchaos_rules_active when scraped, from each
// proxy's current snapshot: nothing is counted on the data path, and the
// series of a proxy go with its view (ForgetProxy).
type rulesActive struct{ e *Engine }

func (c rulesActive) Describe(ch chan<- *prometheus.Desc) { ch <- rulesActiveDesc }

func (c rulesActive) Collect(ch chan<- prometheus.Metric) {
	type count struct {
		proxy string
		n     int
	}
	e := c.e
	now := e.now()
	e.mu.Lock()
	counts := make([]count, 0, len(e.policies))
	for name, p := range e.policies {
		counts = append(counts, count{name, p.cur.Load().armed(now)})
	}
	e.mu.Unlock()
	for _, c := range counts {
		ch <- prometheus.MustNewConstMetric(rulesActiveDesc, prometheus.GaugeValue, float64(c.n), c.proxy)
	}
}

// armed counts the snapshot's rules that can still fire at now. A rule
// waiting out its skip, or limited to once per session, is armed: it
// fires when traffic comes. Byte toxics are armed while enabled, as
// they are applied to every matching session stream whatever their
// limits besides probability.
func (rs *RuleSet) armed(now time.Time) int {
	n := 0
	for _, r := range rs.rules {
		if r.probability <= 0 {
			continue
		}
		if exp := time.Duration(r.rule.Limits.Expires); exp > 0 && now.Sub(r.state.added) >= exp {
			continue
		}
		if t := r.rule.Limits.Times; t > 0 && r.state.fired.Load() >= t {
			continue
		}
		n++
	}
	for _, list := range rs.toxics {
		for _, r := range list {
			if r.probability <= 0 {
				continue
			}
			n++
		}
	}
	return n
}
