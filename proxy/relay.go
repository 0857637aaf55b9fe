package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// sessionRelay is one session's relay, whichever driver carries it: an
// event loop (the fast path) or a pair of goroutine pumps (the fault path,
// and TLS sessions). The protocol state lives in the pumps and the fault
// session; a driver only moves bytes, so a session can go from one driver
// to the other and back, as often as its faults need.
type sessionRelay struct {
	p            *Proxy
	s            *Session
	c2s, s2c     *pump
	fs           *faultSession // nil without fault rules
	upstreamAddr string
	ended        atomic.Bool
}

// relay starts relaying a session whose startup packet has reached the
// upstream. It returns once the session is on an event loop, or when it
// has ended on goroutine pumps.
func (p *Proxy) relay(s *Session, client, upstream net.Conn) {
	p.reg.add(s)
	p.m.active.Inc()
	p.m.total.Inc()
	r := &sessionRelay{
		p:            p,
		s:            s,
		c2s:          newPump(s, ClientToServer, client, upstream, p.m, p.cfg.MaxMessageSize),
		s2c:          newPump(s, ServerToClient, upstream, client, p.m, p.cfg.MaxMessageSize),
		upstreamAddr: upstream.RemoteAddr().String(),
	}
	if p.policy != nil {
		r.fs = newFaultSession(p.policy, s)
		r.c2s.f = &faultPump{fs: r.fs, dir: ClientToServer}
		r.s2c.f = &faultPump{fs: r.fs, dir: ServerToClient}
	}
	if !p.started(s.conn) {
		s.Kill()
	}
	r.run(client, upstream)
}

// run relays on an event loop when the connections allow it, else on
// goroutine pumps.
func (r *sessionRelay) run(client, upstream net.Conn) {
	if r.p.loops != nil && r.p.loops.adopt(r, client, upstream) {
		return
	}
	r.runPumps(client, upstream)
}

// end finishes the session, once: it leaves the registry and the active
// count, and the proxy stops waiting for it.
func (r *sessionRelay) end(clientErr, serverErr error) {
	if !r.ended.CompareAndSwap(false, true) {
		return
	}
	p := r.p
	p.reg.remove(r.s)
	p.reg.unreserve()
	p.m.active.Dec()
	p.m.duration.Observe(time.Since(r.s.Started).Seconds())
	p.logEnd(r.s, clientErr, serverErr, r.upstreamAddr)
	if r.fs != nil {
		r.fs.kill()
	}
	r.c2s.dropBuffer()
	r.s2c.dropBuffer()
	p.live.Done()
}

// drainWait bounds how long pgchaos waits for the server's answers to
// what a client sent before it broke the protocol.
const drainWait = 10 * time.Second

// drainAfter is the client pump's end: when the client broke the protocol
// after requests the server has not answered yet, the server pump passes
// those answers on first (or gives up after drainWait), so that the client
// is never told less than the server did — five INSERTs that committed are
// acknowledged before pgchaos's FATAL. It reports whether the server pump
// was left to finish so.
func (r *sessionRelay) drainAfter(err error, upstream net.Conn) bool {
	var perr *protocolError
	if !errors.As(err, &perr) {
		return false
	}
	owed := r.c2s.syncs
	if r.s2c.answered.Load() >= owed {
		return false
	}
	r.s2c.drainTo.Store(owed)
	deadline := time.Now().Add(drainWait)
	if r.s2c.answered.Load() >= owed {
		deadline = time.Now() // it got there meanwhile: wake it to stop
	}
	if fs := r.fs; fs != nil {
		// A park round that ends as the client pump did clears the
		// deadlines it set; under parkMu, it leaves this one alone.
		fs.parkMu.Lock()
		fs.draining = true
		upstream.SetReadDeadline(deadline)
		fs.parkMu.Unlock()
		signal(fs.wake) // a server pump reading through byte toxics
		return true
	}
	upstream.SetReadDeadline(deadline)
	return true
}

// canHandBack reports whether the session can go back to an event loop
// once its faults are carried out.
func (r *sessionRelay) canHandBack(client, upstream net.Conn) bool {
	if r.p.loops == nil || r.fs == nil {
		return false
	}
	_, ok1 := client.(*net.TCPConn)
	_, ok2 := upstream.(*net.TCPConn)
	return ok1 && ok2
}

// errHandBack ends a pump whose session goes back to an event loop.
var errHandBack = errors.New("session handed back to an event loop")

type pumpResult struct {
	dir Direction
	err error
}

// runPumps relays a session with a goroutine per direction: the path for
// TLS sessions and for sessions a fault verdict acts on. A session that can
// go back to an event loop does so once its verdicts are carried out.
func (r *sessionRelay) runPumps(client, upstream net.Conn) {
	c2s, s2c, fs := r.c2s, r.s2c, r.fs
	c2s.src, c2s.dst = client, upstream
	s2c.src, s2c.dst = upstream, &clientWriter{s: r.s, p: s2c, c: client}
	r.s.clientMu.Lock()
	r.s.clientBoundary = s2c.atBoundary()
	r.s.clientMu.Unlock()
	c2s.ownBuffer()
	s2c.ownBuffer()
	var up, down *toxicReader
	if fs != nil {
		fs.client, fs.upstream = client, upstream
		up, down = newToxicReader(client, ClientToServer, fs), newToxicReader(upstream, ServerToClient, fs)
		c2s.src, s2c.src = up, down
	}
	closeReaders := func() {
		if fs != nil {
			up.close()
			down.close()
		}
	}
	if !r.s.setStop(func() {
		r.s.sayFarewell(client)
		client.Close()
		upstream.Close()
		if fs != nil {
			fs.kill()
		}
	}) {
		// Killed on the way here (from an event loop, say).
		r.s.sayFarewell(client)
		client.Close()
		upstream.Close()
		closeReaders()
		r.end(nil, nil)
		return
	}
	lingering := func(which int32) bool { return fs != nil && fs.linger.Load() == which }

	done := make(chan pumpResult, 2)
	go func() {
		err := c2s.run()
		// Report before closing the upstream, so that when s2c ends because
		// of this close, the reason is already waiting in done.
		done <- pumpResult{ClientToServer, err}
		if err == errHandBack || r.drainAfter(err, upstream) {
			return
		}
		if !lingering(lingerUpstream) {
			upstream.Close()
			if fs != nil && !lingering(lingerClient) {
				fs.kill() // s2c may be held by a hang, waiting on no socket
			}
		}
	}()
	var s2cErr, c2sErr error
	handBack := r.canHandBack(client, upstream)
	if handBack {
		go func() { done <- pumpResult{ServerToClient, s2c.run()} }()
		// Try from the start: what brought the session here (a byte toxic,
		// say) may be gone already.
		signal(fs.calm)
		outcome, first := r.coordinate(client, upstream, done)
		switch outcome {
		case parkHandedBack:
			closeReaders()
			c2s.releaseBuffer()
			s2c.releaseBuffer()
			fs.closeTimers()
			fs.client, fs.upstream = nil, nil
			r.run(client, upstream)
			return
		case parkKilled:
			client.Close()
			upstream.Close()
			closeReaders()
			r.end(nil, nil)
			return
		}
		if first.dir == ServerToClient {
			s2cErr = first.err
		} else {
			// c2s ended first; s2c follows once its upstream is closed.
			c2sErr = first.err
			s2cErr = (<-done).err
		}
	} else {
		s2cErr = s2c.run()
	}
	if c2sErr == nil {
		select {
		case res := <-done:
			c2sErr = res.err
		default:
			if !lingering(lingerClient) {
				client.Close()
				// A pump held by a hang, delay or partition waits on no
				// socket: end the wait too.
				if fs != nil && !lingering(lingerUpstream) {
					fs.kill()
				}
			}
			c2sErr = (<-done).err
		}
	}
	closeReaders()

	// s2c has stopped, so nothing else writes to the client; an
	// ErrorResponse is only legal between server messages.
	var perr *protocolError
	if errors.As(c2sErr, &perr) && s2c.atBoundary() {
		writeError(client, "FATAL", "08P01", "pgchaos: "+perr.msg)
	}
	// After a one-sided disconnect the other connection stays open and
	// unanswered until its peer gives up or the session is killed.
	switch {
	case lingering(lingerUpstream):
		io.Copy(io.Discard, upstream)
	case lingering(lingerClient):
		io.Copy(io.Discard, client)
	}
	client.Close()
	upstream.Close()
	r.end(c2sErr, s2cErr)
}

// coordinate watches a session's two pumps until one of them ends (first
// is its result; the other goes on, unless the outcome is parkKilled) or
// both have stopped to hand the session back to an event loop
// (parkHandedBack).
//
// A hand-back stops both pumps at a read, with nothing held and nothing
// owed: the pumps are asked to park (a read deadline in the past
// interrupts their reads), and the session goes back if, once both are
// parked, it is still calm; otherwise they resume. A pump that is about to
// carry out a verdict that waits (delay, hang, partition) makes the other
// resume at once, so a direction is never held up by the other's fault.
func (r *sessionRelay) coordinate(client, upstream net.Conn, done <-chan pumpResult) (parkOutcome, pumpResult) {
	fs := r.fs
	var retry <-chan time.Time
	backoff := 100 * time.Millisecond
	for {
		select {
		case first := <-done:
			return parkEnded, first
		case <-fs.calm:
		case <-retry:
			retry = nil
		}
		if !fs.calmNow() {
			continue
		}
		outcome, res := r.park(client, upstream, done)
		switch outcome {
		case parkEnded, parkHandedBack, parkKilled:
			return outcome, res
		case parkTimedOut:
			// A pump was busy writing: try again later, less often.
			retry = time.After(backoff)
			backoff = min(2*backoff, time.Minute)
		}
	}
}

type parkOutcome uint8

const (
	parkResumed parkOutcome = iota
	parkHandedBack
	parkTimedOut
	parkEnded
	parkKilled // both pumps have returned
)

// parkWait bounds how long a hand-back waits for both pumps to reach a
// read. A pump that parked holds its direction meanwhile (what arrives
// waits), so it is short: two pumps at a read park within microseconds,
// and one that is not (busy writing to a slow peer) is tried again later.
const parkWait = 20 * time.Millisecond

func (r *sessionRelay) park(client, upstream net.Conn, done <-chan pumpResult) (parkOutcome, pumpResult) {
	fs := r.fs
	fs.parkMu.Lock()
	fs.parking = true
	fs.parkMu.Unlock()
	past := time.Unix(1, 0)
	client.SetReadDeadline(past)
	upstream.SetReadDeadline(past)
	// end stops the round; go tells parked pumps whether to hand back.
	end := func(goBack bool) {
		fs.parkMu.Lock()
		fs.parking = false
		client.SetReadDeadline(time.Time{})
		if !fs.draining {
			upstream.SetReadDeadline(time.Time{})
		}
		for d := range fs.parkedAt {
			if fs.parkedAt[d] {
				fs.parkedAt[d] = false
				fs.resume[d] <- goBack
			}
		}
		fs.parkMu.Unlock()
	}
	timeout := time.NewTimer(parkWait)
	defer timeout.Stop()
	for {
		fs.parkMu.Lock()
		both := fs.parkedAt[ClientToServer] && fs.parkedAt[ServerToClient]
		fs.parkMu.Unlock()
		if both {
			break
		}
		select {
		case <-fs.parkWake:
		case <-fs.busy:
			end(false)
			return parkResumed, pumpResult{}
		case <-timeout.C:
			end(false)
			return parkTimedOut, pumpResult{}
		case res := <-done:
			end(false)
			return parkEnded, res
		}
	}
	// Both pumps wait in parkOnDeadline: their state can be read.
	if !fs.calmNow() || !r.c2s.f.idle() || !r.s2c.f.idle() || r.s.wasKilled() {
		end(false)
		return parkResumed, pumpResult{}
	}
	end(true)
	var other pumpResult
	for range 2 {
		if res := <-done; res.err != errHandBack {
			// Killed while parked: the pump took the kill, not the go-ahead.
			other = res
		}
	}
	if other.err != nil {
		return parkKilled, other
	}
	return parkHandedBack, pumpResult{}
}

// parkOnDeadline is how a pump on the fault path takes a read that ended
// at a deadline: a hand-back asked it to park. handled is false for any
// other error; stop is errHandBack when the pump must stop because its
// session goes back to an event loop.
func (fp *faultPump) parkOnDeadline(err error) (handled bool, stop error) {
	if fp == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false, nil
	}
	fs := fp.fs
	fs.parkMu.Lock()
	if !fs.parking {
		// A round that ended as the read did: its deadline is cleared.
		fs.parkMu.Unlock()
		return true, nil
	}
	fs.parkedAt[fp.dir] = true
	fs.parkMu.Unlock()
	signal(fs.parkWake)
	select {
	case goBack := <-fs.resume[fp.dir]:
		if goBack {
			return true, errHandBack
		}
	case <-fs.killed:
	}
	return true, nil
}
