package proxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgchaos/pgchaos/faults"
)

// errFaultDisconnect ends a pump because a disconnect fault fired.
var errFaultDisconnect = errors.New("disconnected by a fault rule")

// What a disconnect leaves open: after cutting only one side, the other
// connection stays up, silent, until its peer closes it or the session is
// killed — a half-open link.
const (
	lingerNone int32 = iota
	lingerUpstream
	lingerClient
)

// faultSession is what the two pumps of a session on the fault path share:
// the rules' view of the session and changes to make to the server's
// responses.
type faultSession struct {
	policy   *faults.Policy
	sess     *Session
	client   net.Conn
	upstream net.Conn
	killed   chan struct{}
	killOnce sync.Once
	// timers serve delays, one per direction, made when first needed and
	// closed by kill (which ends a wait).
	timers [2]*preciseTimer
	// wake interrupts the server pump's wait for the upstream when it reads
	// through byte toxics (a read deadline does that for a plain socket).
	wake chan struct{}

	mu   sync.Mutex // guards view, msg, overrides
	view faults.Session
	// msg is the message being decided. It lives here, not on decide's
	// stack, because Decide may hand it to an Options.Observe: a message
	// passed to a function value escapes, and would cost an allocation per
	// message.
	msg       faults.Message
	overrides []override
	// pending is len(overrides), read without the lock by the server pump
	// to skip all of this when nothing is to change.
	pending   atomic.Int32
	partition atomic.Pointer[hold]
	linger    atomic.Int32
	// viaToxics: a direction's pump reads through byte toxics (a feeder
	// goroutine owns its socket).
	viaToxics [2]atomic.Bool
	// toxicKey and toxicList remember, per direction, which byte toxics
	// apply to this session for a set of toxic rules: the probability of
	// each is drawn once per session stream, like toxiproxy's toxicity.
	toxicKey  [2]string
	toxicList [2][]faults.Toxic

	// Handing the session back to an event loop (see sessionRelay.park):
	// calm says a verdict was carried out or something owed was paid, busy
	// that a pump is about to wait on a verdict; parked and resume are how
	// a pump stops at a read and hears whether to go on or hand back.
	calm    chan struct{}
	busy    chan struct{}
	parkMu  sync.Mutex
	parking bool
	// draining: the upstream's read deadline is drainAfter's; a park
	// round ending must not clear it.
	draining  bool
	parkedAt  [2]bool
	parkWake  chan struct{}
	resume    [2]chan bool
	toxicRS   *faults.RuleSet
	toxicNeed bool
}

type overrideMode uint8

const (
	// replaceResult puts msg in place of the (skip+1)-th result of the
	// response, then drops what follows until ReadyForQuery; with cut, the
	// session is cut there instead.
	replaceResult overrideMode = iota
	// replaceError puts msg in place of the response's first
	// ErrorResponse: the server's answer to failingBind.
	replaceError
)

// failingBind is what goes to the server in place of a statement that an
// error rule stops before it: a Bind of a prepared statement that does not
// exist. The server fails on it and does what its own errors do — aborts
// the transaction (a pipeline's implicit one too) and skips what follows up
// to the next Sync — so that the server and the client agree on what
// happened; the client hears the rule's error in place of the server's.
var failingBind = func() []byte {
	b, _ := (&pgproto3.Bind{PreparedStatement: "pgchaos: statement refused by a fault rule"}).Encode(nil)
	return b
}()

// failingQuery is failingBind for a simple query, which is a request of its
// own: a Sync follows, for its ReadyForQuery.
var failingQuery = append(append([]byte(nil), failingBind...), 'S', 0, 0, 0, 4)

// override changes the server's response that ends with its response-th
// ReadyForQuery.
type override struct {
	response uint64
	mode     overrideMode
	skip     int
	msg      []byte
	fired    bool
	// fatal: msg is a FATAL error, after which the session ends.
	fatal bool
	// cut: a disconnect at the result (when: result) — a FATAL without
	// the message: the connections close where the result would have
	// gone, as the rule's side and close say, and released is its rule's.
	cut      bool
	side     faults.Side
	reset    bool
	released <-chan struct{}
}

type hold struct {
	released <-chan struct{}
	until    time.Time // zero: until released
}

// newFaultSession starts a session's fault state. The connections are set
// when the session reaches the goroutine pumps: on an event loop, faults
// are only decided, never carried out.
func newFaultSession(policy *faults.Policy, s *Session) *faultSession {
	fs := &faultSession{policy: policy, sess: s, killed: make(chan struct{}), wake: make(chan struct{}, 1),
		calm: make(chan struct{}, 1), busy: make(chan struct{}, 1), parkWake: make(chan struct{}, 2),
		resume: [2]chan bool{make(chan bool, 1), make(chan bool, 1)}}
	fs.view = s.faultView()
	return fs
}

// signal makes a non-blocking wake-up on a channel of capacity one.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// signalBusy tells a hand-back in progress that this pump is about to wait
// on a verdict, so the other pump must not stay parked meanwhile.
func (fs *faultSession) signalBusy() {
	fs.parkMu.Lock()
	parking := fs.parking
	fs.parkMu.Unlock()
	if parking {
		signal(fs.busy)
	}
}

// calmNow reports whether nothing the fault path carries out is under way
// or owed: no made-up reply or changed response pending, no partition, no
// half-open link, and no byte toxic for this session. The pumps' own state
// (a batch being skipped) is checked once they are parked.
func (fs *faultSession) calmNow() bool {
	if fs.pending.Load() != 0 || fs.partition.Load() != nil || fs.linger.Load() != lingerNone ||
		fs.viaToxics[ClientToServer].Load() || fs.viaToxics[ServerToClient].Load() {
		return false
	}
	return !fs.needsToxics(fs.policy.Rules())
}

// needsToxics reports whether byte toxics apply to this session under rs:
// such a session belongs on the goroutine path. The answer is kept per
// rule snapshot, so an event loop can ask it on every read.
func (fs *faultSession) needsToxics(rs *faults.RuleSet) bool {
	if !rs.HasToxics(ClientToServer) && !rs.HasToxics(ServerToClient) {
		return false
	}
	fs.parkMu.Lock()
	if fs.toxicRS == rs {
		need := fs.toxicNeed
		fs.parkMu.Unlock()
		return need
	}
	fs.parkMu.Unlock()
	_, c2s := fs.toxics(rs, ClientToServer)
	_, s2c := fs.toxics(rs, ServerToClient)
	need := len(c2s) > 0 || len(s2c) > 0
	fs.parkMu.Lock()
	fs.toxicRS, fs.toxicNeed = rs, need
	fs.parkMu.Unlock()
	return need
}

// idle reports whether the pump has no verdict or batch in hand. Only
// read while the pump is parked.
func (fp *faultPump) idle() bool {
	return fp.st.kind == stopNone
}

func (fs *faultSession) kill() {
	fs.killOnce.Do(func() {
		close(fs.killed)
		fs.closeTimers()
	})
}

// closeTimers closes the delay timers, when the session ends or leaves the
// goroutine pumps: an idle session keeps no descriptor for them.
func (fs *faultSession) closeTimers() {
	fs.mu.Lock()
	for i, t := range fs.timers {
		t.close()
		fs.timers[i] = nil
	}
	fs.mu.Unlock()
}

// sleep holds direction dir for exactly d as far as the machine allows;
// the session's end, or the removal of the rule (released), cuts it short.
func (fs *faultSession) sleep(dir Direction, d time.Duration, released <-chan struct{}) {
	fs.mu.Lock()
	select {
	case <-fs.killed:
		fs.mu.Unlock()
		return
	case <-released:
		fs.mu.Unlock()
		return
	default:
	}
	t := fs.timers[dir]
	if t == nil {
		t = newPreciseTimer()
		fs.timers[dir] = t
	}
	fs.mu.Unlock()
	slept := make(chan struct{})
	finished := false // guarded by fs.mu: the timer may serve the next delay
	go func() {
		select {
		case <-released:
			fs.mu.Lock()
			select {
			case <-fs.killed: // the timer is closed
			default:
				if !finished {
					t.expireNow()
				}
			}
			fs.mu.Unlock()
		case <-slept:
		}
	}()
	t.sleep(d, fs.killed, released)
	fs.mu.Lock()
	finished = true
	fs.mu.Unlock()
	close(slept)
}

// wait blocks for d, or until released is closed, or the session is
// killed. d == 0 waits for release alone.
func (fs *faultSession) wait(d time.Duration, released <-chan struct{}) {
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-timer:
	case <-released:
	case <-fs.killed:
	}
}

func (fs *faultSession) decide(rs *faults.RuleSet, p *pump, typ byte, body []byte) (faults.Verdict, bool) {
	if !rs.Wants(p.dir, typ) {
		return faults.Verdict{}, false
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	m := &fs.msg
	*m = faults.Message{Dir: p.dir, Type: typ}
	// Not kept past the decision: the message aliases the pump's buffer.
	defer func() { *m = faults.Message{} }()
	switch {
	case p.dir == ClientToServer && typ == 'Q':
		m.SQL = trimNul(body)
	case p.dir == ClientToServer && typ == 'E':
		if portal, _, ok := cstring(body); ok {
			m.SQL = p.stmts.portalSQL(portal)
		}
	case p.dir == ClientToServer && typ == 'P':
		if _, rest, ok := cstring(body); ok {
			m.SQL, _, _ = cstring(rest)
		}
	case p.dir == ServerToClient && typ == 'C':
		m.Tag = trimNul(body)
	}
	fs.view.TxStatus = byte(fs.sess.TxStatus())
	fs.view.ApplicationName = fs.sess.ApplicationName()
	return rs.Decide(&fs.view, m)
}

// toxics returns the byte toxics that apply to direction d of the session
// under rs, and a key that changes when the set of toxic rules does.
func (fs *faultSession) toxics(rs *faults.RuleSet, d Direction) (string, []faults.Toxic) {
	key := rs.ToxicsKey(d)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if key == fs.toxicKey[d] {
		return key, fs.toxicList[d]
	}
	fs.view.TxStatus = byte(fs.sess.TxStatus())
	fs.view.ApplicationName = fs.sess.ApplicationName()
	fs.toxicKey[d], fs.toxicList[d] = key, rs.SessionToxics(d, &fs.view)
	return key, fs.toxicList[d]
}

func trimNul(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == 0 {
		return b[:n-1]
	}
	return b
}

// atResult puts o in place of the result of the statement st is about to
// forward: the first result of a simple query, an Execute's own result in
// its pipeline.
func (fs *faultSession) atResult(p *pump, st stop, o override) {
	o.response, o.mode, o.skip = p.syncs+1, replaceResult, 0
	if st.typ == 'E' {
		o.skip = p.executes
	}
	fs.addOverride(o)
}

func (fs *faultSession) addOverride(o override) {
	fs.mu.Lock()
	fs.overrides = append(fs.overrides, o)
	fs.pending.Add(1)
	fs.mu.Unlock()
}

// disconnect cuts one side of the session, or both. A one-sided cut leaves
// the other connection open and silent — a half-open link — until its peer
// gives up, the session is killed, or the rule is removed (released):
// removing the rule ends what it left behind, so that no server backend
// waits on a dead client, its transaction open, for ever.
func (fs *faultSession) disconnect(side faults.Side, reset bool, released <-chan struct{}) {
	var left net.Conn
	switch side {
	case faults.SideClient:
		fs.linger.Store(lingerUpstream)
		closeConn(fs.client, reset)
		left = fs.upstream
	case faults.SideServer:
		fs.linger.Store(lingerClient)
		closeConn(fs.upstream, reset)
		left = fs.client
	default:
		closeConn(fs.client, reset)
		closeConn(fs.upstream, reset)
		return
	}
	go func() {
		select {
		case <-released:
			left.Close()
		case <-fs.killed:
		}
	}()
}

// endAfterFatal ends the session once a FATAL error a rule made has been
// written to the client: PostgreSQL's backend exits after a FATAL, so the
// client hears nothing more and the server's connection goes too (its
// backend rolls back what the session left open), as after the server's
// own FATAL.
func (fs *faultSession) endAfterFatal() error {
	fs.disconnect(faults.SideBoth, false, nil)
	return errFaultDisconnect
}

// closeConn closes c, with a TCP RST instead of a FIN when reset is set.
func closeConn(c net.Conn, reset bool) {
	if reset {
		raw := c
		if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
			raw = nc.NetConn()
		}
		if tc, ok := raw.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}
	c.Close()
}

type stopKind uint8

const (
	stopNone    stopKind = iota
	stopVerdict          // a rule fired on the message
	stopDrop             // the message goes nowhere
	stopReplace          // the message is replaced by msg
	stopReady            // a ReadyForQuery that ends a changed response
	stopCut              // a result a disconnect at the result cuts in place of
)

type stop struct {
	kind        stopKind
	verdict     faults.Verdict
	typ         byte
	total, have int
	msg         []byte
	fatal       bool // msg is a FATAL error: the session ends after it
	// stopCut: which side to cut, how, and the rule's release (for what a
	// one-sided cut leaves open).
	side     faults.Side
	reset    bool
	released <-chan struct{}
}

// faultPump is one pump's side of the fault path.
type faultPump struct {
	fs *faultSession
	// rs is the rule snapshot of the current scan: one atomic load per
	// read rather than one per message and another per decision.
	rs  *faults.RuleSet
	dir Direction
	st  stop
}

// wants reports whether scan must look at (and so hold whole) a message.
func (fp *faultPump) wants(d Direction, typ byte) bool {
	if fp.dir == ServerToClient && fp.fs.pending.Load() > 0 {
		return true
	}
	return fp.rs.Wants(d, typ)
}

// stopAt decides whether scan stops in front of the message at p.out
// (which is not yet counted by tally), recording what act() must do.
func (fp *faultPump) stopAt(p *pump, typ byte, body []byte, total, have int) bool {
	st := stop{typ: typ, total: total, have: have}
	if fp.dir == ServerToClient && fp.fs.pending.Load() > 0 {
		if ch := fp.fs.changeResponse(p, typ); ch.kind != stopNone {
			ch.typ, ch.total, ch.have = typ, total, have
			fp.st = ch
			return true
		}
	}
	if v, ok := fp.fs.decide(fp.rs, p, typ, body); ok {
		st.kind, st.verdict = stopVerdict, v
		fp.st = st
		return true
	}
	return false
}

// changeResponse applies the overrides of the response the server pump is
// in to one of its messages: what to do instead of forwarding it (kind
// stopNone: forward it).
func (fs *faultSession) changeResponse(p *pump, typ byte) stop {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	current := p.syncs + 1
	for i := range fs.overrides {
		o := &fs.overrides[i]
		if o.response != current {
			continue
		}
		if typ == 'Z' {
			fired := o.fired
			msg, fatal := o.msg, o.fatal
			fs.dropOverride(i)
			switch {
			case o.mode == replaceResult && !fired:
				return stop{} // the response ended before the result came
			case o.mode == replaceResult:
				// Already sent in place of the result; the client was told
				// the statement failed, so a transaction block has too.
				return stop{kind: stopReady}
			case fired:
				return stop{} // the server failed: its status stands
			}
			// The server did not fail on failingBind (it cannot happen
			// short of a statement of that name): tell the client anyway.
			return stop{kind: stopReady, msg: msg, fatal: fatal}
		}
		if o.mode == replaceError {
			if typ == 'E' && !o.fired {
				o.fired = true
				return stop{kind: stopReplace, msg: o.msg, fatal: o.fatal}
			}
			continue
		}
		if o.fired {
			switch typ {
			case 'N', 'A', 'S': // asynchronous messages still reach the client
				return stop{}
			}
			return stop{kind: stopDrop}
		}
		switch typ {
		case 'C', 'I', 's':
			if p.completions == o.skip {
				o.fired = true
				if o.cut {
					// The session ends here; the override goes with it.
					return stop{kind: stopCut, side: o.side, reset: o.reset, released: o.released}
				}
				return stop{kind: stopReplace, msg: o.msg, fatal: o.fatal}
			}
		case 'E':
			if p.completions == o.skip {
				// The server failed the statement itself: nothing to fake,
				// and nothing in doubt to cut at.
				fs.dropOverride(i)
				return stop{}
			}
		}
	}
	return stop{}
}

func (fs *faultSession) dropOverride(i int) {
	fs.overrides = append(fs.overrides[:i], fs.overrides[i+1:]...)
	if fs.pending.Add(-1) == 0 {
		signal(fs.calm)
	}
}

// stopped reports whether a verdict waits to be carried out.
func (fp *faultPump) stopped() bool { return fp != nil && fp.st.kind != stopNone }

// act runs after everything before the stop has been written. It reports
// whether the pump should scan again before reading.
func (fp *faultPump) act(p *pump) (bool, error) {
	st := fp.st
	if st.kind == stopNone {
		return false, nil
	}
	fp.st = stop{}
	switch st.kind {
	case stopDrop:
		p.dropMessage(st)
	case stopReplace:
		if _, err := p.dst.Write(st.msg); err != nil {
			return false, err
		}
		if st.fatal {
			return false, fp.fs.endAfterFatal()
		}
		p.dropMessage(st)
		p.tally(st.typ)
	case stopReady:
		if st.msg != nil {
			if _, err := p.dst.Write(st.msg); err != nil {
				return false, err
			}
			if st.fatal {
				return false, fp.fs.endAfterFatal()
			}
		}
		p.setReadyStatusAfterError()
		p.forwardMessage(st)
	case stopCut:
		// Everything before the result is written; the result is not.
		fp.fs.disconnect(st.side, st.reset, st.released)
		return false, errFaultDisconnect
	case stopVerdict:
		again, err := fp.execute(p, st)
		signal(fp.fs.calm)
		return again, err
	}
	return true, nil
}

// setReadyStatusAfterError makes the ReadyForQuery at p.out say what the
// server would after an error: a transaction block is now failed.
func (p *pump) setReadyStatusAfterError() {
	if p.out+5 < p.end && p.buf[p.out+5] == 'T' {
		p.buf[p.out+5] = 'E'
		p.s.txStatus.Store(uint32('E'))
	}
}

// forwardMessage lets the stopped message at p.out through.
func (p *pump) forwardMessage(st stop) {
	p.tally(st.typ)
	if st.have < st.total {
		p.remaining = st.total - st.have
		p.out = p.end
		return
	}
	p.out += st.total
}

// dropMessage discards the stopped message at p.out (== p.start).
func (p *pump) dropMessage(st stop) {
	if st.have < st.total {
		p.remaining = st.total - st.have
		p.discard = true
		p.start, p.out = p.end, p.end
		return
	}
	p.start += st.total
	p.out = p.start
}

func (fp *faultPump) execute(p *pump, st stop) (bool, error) {
	v := st.verdict
	fs := fp.fs
	switch v.Action {
	case faults.ActDelay, faults.ActHang, faults.ActPartition:
		fs.signalBusy()
	}
	switch v.Action {
	case faults.ActDelay:
		arrived := p.readAt
		if arrived.IsZero() {
			arrived = time.Now()
		}
		due := arrived.Add(v.Delay)
		if d := time.Until(due); d > 0 {
			fs.sleep(fp.dir, d, v.Released)
		}
		p.m.delayLateness.Observe(max(time.Since(due), 0).Seconds())
		p.forwardMessage(st)
	case faults.ActDrop:
		p.dropMessage(st)
		if fp.dir == ServerToClient {
			// Still a response the client's request got (in the count).
			p.tally(st.typ)
		}
	case faults.ActHang:
		fs.wait(v.Duration, v.Released)
		p.forwardMessage(st)
	case faults.ActPartition:
		h := &hold{released: v.Released}
		if v.Duration > 0 {
			h.until = time.Now().Add(v.Duration)
		}
		fs.partition.Store(h)
		fs.wait(v.Duration, v.Released)
		fs.partition.CompareAndSwap(h, nil)
		p.forwardMessage(st)
	case faults.ActDisconnect:
		if v.AtResult && fp.dir == ClientToServer {
			// The server runs the statement; the server pump cuts the
			// session where its result comes back (changeResponse), as
			// error after puts its error there.
			fs.atResult(p, st, override{cut: true, side: v.Side, reset: v.Reset, released: v.Released})
			p.forwardMessage(st)
			break
		}
		if v.After {
			p.forwardMessage(st)
			if _, err := p.dst.Write(p.buf[p.start:p.out]); err != nil {
				return false, err
			}
			p.start = p.out
		}
		fs.disconnect(v.Side, v.Reset, v.Released)
		return false, errFaultDisconnect
	case faults.ActError:
		msg := errorResponse(v.Error.Severity, v.Error.Code, v.Error.Message)
		fatal := v.Error.Severity == "FATAL"
		if fp.dir == ServerToClient {
			// In place of the server's message, as if the statement failed.
			if _, err := p.dst.Write(msg); err != nil {
				return false, err
			}
			if fatal {
				return false, fs.endAfterFatal()
			}
			if st.typ == 'Z' {
				p.setReadyStatusAfterError()
				p.forwardMessage(st)
				break
			}
			fs.addOverride(override{response: p.syncs + 1, mode: replaceResult, fired: true})
			p.dropMessage(st)
			p.tally(st.typ)
			break
		}
		switch {
		case v.After:
			// The server runs the statement; the client hears an error.
			fs.atResult(p, st, override{msg: msg, fatal: fatal})
			p.forwardMessage(st)
		default:
			// The server never runs the statement: failingBind goes in its
			// place, so the server fails as it would on its own error, and
			// the client hears ours in place of the server's.
			fake := failingBind
			if st.typ == 'Q' || st.typ == 'F' {
				fake = failingQuery
			}
			// The override goes in before the fake goes out: the server
			// answers at once, and the server pump must not find nothing
			// to replace and pass the server's own error on.
			fs.addOverride(override{response: p.syncs + 1, mode: replaceError, msg: msg, fatal: fatal})
			if _, err := p.dst.Write(fake); err != nil {
				return false, err
			}
			switch st.typ {
			case 'S':
				p.forwardMessage(st) // the Sync still ends the batch
			case 'Q', 'F':
				p.dropMessage(st)
				p.syncs++ // in place of the query's own request
			default:
				p.dropMessage(st) // the server skips the rest up to the Sync
			}
		}
	default:
		p.forwardMessage(st)
	}
	return true, nil
}

// holdIfPartitioned stops a direction while a partition fault holds the session.
func (fp *faultPump) holdIfPartitioned() {
	h := fp.fs.partition.Load()
	if h == nil {
		return
	}
	var d time.Duration
	if !h.until.IsZero() {
		d = time.Until(h.until)
		if d <= 0 {
			return
		}
	}
	fp.fs.wait(d, h.released)
}
