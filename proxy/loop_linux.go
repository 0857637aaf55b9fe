package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// EventLoops relay sessions on a few threads that wait in epoll, instead of
// two goroutines per session. A round trip through a goroutine relay costs
// several scheduler hand-offs and a read that only learns there is nothing
// left; a loop reads each readable socket once, writes once, and goes back
// to epoll_wait with whatever else became ready meanwhile. On a small
// machine that is the difference between a proxy that eats the CPU the
// database needs and one that does not.
//
// Sessions the loops cannot carry (TLS) stay on goroutine pumps.
type EventLoops struct {
	loops []*eventLoop
	mu    sync.Mutex
	next  int
}

// NewEventLoops starts n event loops (n <= 0: one per two CPUs).
func NewEventLoops(n int) (*EventLoops, error) {
	if n <= 0 {
		n = max(1, runtime.GOMAXPROCS(0)/2)
	}
	el := &EventLoops{}
	for range n {
		l, err := newEventLoop()
		if err != nil {
			el.Close()
			return nil, err
		}
		el.loops = append(el.loops, l)
		go l.run()
	}
	return el, nil
}

// Close stops the loops. Sessions still on them are closed.
func (el *EventLoops) Close() {
	for _, l := range el.loops {
		l.stop()
	}
}

// adopt moves a session's two plain TCP connections onto a loop. The loop
// works on duplicates of their descriptors and the originals are closed, so
// that Go's own poller no longer wakes up for the session's traffic. It
// reports false, leaving the connections as they are, when they cannot go
// on a loop (TLS) or the session was killed.
func (el *EventLoops) adopt(r *sessionRelay, client, upstream net.Conn) bool {
	cfd, ok1 := dupFD(client)
	if !ok1 {
		return false
	}
	ufd, ok2 := dupFD(upstream)
	if !ok2 {
		syscall.Close(cfd)
		return false
	}
	el.mu.Lock()
	l := el.loops[el.next%len(el.loops)]
	el.next++
	el.mu.Unlock()

	ls := &loopSession{r: r, fds: [2]int{cfd, ufd}}
	ls.pumps[ClientToServer] = r.c2s
	ls.pumps[ServerToClient] = r.s2c
	if !r.s.setStop(func() { l.request(ls, requestKill) }) {
		syscall.Close(cfd)
		syscall.Close(ufd)
		return false
	}
	client.Close()
	upstream.Close()
	r.s.onLoop.Store(true)
	l.request(ls, requestAdd)
	return true
}

// dupFD returns a non-blocking duplicate of a TCP connection's descriptor.
func dupFD(c net.Conn) (int, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return -1, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1, false
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(orig uintptr) {
		fd, dupErr = syscall.Dup(int(orig))
	}); err != nil || dupErr != nil {
		return -1, false
	}
	syscall.CloseOnExec(fd)
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return -1, false
	}
	return fd, true
}

// loopSession is a session relayed by an event loop. Index 0 of fds is
// the client, 1 the upstream; pumps are indexed by Direction, and the pump
// of direction d reads fds[d] and writes fds[1-d].
type loopSession struct {
	r      *sessionRelay
	fds    [2]int
	pumps  [2]*pump
	events [2]uint32
	perr   [2]error // a protocol error found while the output was blocked
	// closed: the loop is done with the session, because it ended or was
	// released to the fault path (which then owns fds).
	closed bool
}

type requestKind uint8

const (
	requestAdd requestKind = iota
	requestKill
)

type loopRequest struct {
	ls   *loopSession
	kind requestKind
}

type eventLoop struct {
	epfd     int
	wake     [2]int // pipe: a byte written to wake[1] interrupts epoll_wait
	buf      []byte // what a read goes into; a session keeps only leftovers
	mu       sync.Mutex
	requests []loopRequest
	stopping bool
	byFD     []*loopSession
}

func newEventLoop() (*eventLoop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	l := &eventLoop{epfd: epfd, buf: make([]byte, pumpBufferSize)}
	if err := syscall.Pipe2(l.wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(l.wake[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, l.wake[0], &ev); err != nil {
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	return l, nil
}

// request hands the loop a new session, or asks it to kill one. It never waits for the loop beyond a mutex held for a slice append.
func (l *eventLoop) request(ls *loopSession, kind requestKind) {
	l.mu.Lock()
	l.requests = append(l.requests, loopRequest{ls, kind})
	l.mu.Unlock()
	syscall.Write(l.wake[1], []byte{1})
}

func (l *eventLoop) stop() {
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	syscall.Write(l.wake[1], []byte{1})
}

func (l *eventLoop) run() {
	events := make([]syscall.EpollEvent, 128)
	var drain [64]byte
	var pending []loopRequest
	idle := 0
	for {
		var n int
		var err error
		if idle < idleWaits {
			n, err = epollWait(l.epfd, events, epollTimeoutMillis)
		} else {
			n, err = l.waitIdle(events)
		}
		if n == 0 && err == nil {
			idle++
		} else {
			idle = 0
		}
		if n == 0 || err == syscall.EINTR {
			// A timeout or a signal: let the scheduler and the garbage
			// collector have the thread before waiting again.
			runtime.Gosched()
		}
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			panic(fmt.Sprintf("pgchaos event loop: epoll_wait: %v", err))
		}
		for i := range n {
			ev := &events[i]
			fd := int(ev.Fd)
			if fd == l.wake[0] {
				for {
					if n, _ := syscall.Read(fd, drain[:]); n <= 0 {
						break
					}
				}
				continue
			}
			if fd >= len(l.byFD) || l.byFD[fd] == nil {
				continue
			}
			ls := l.byFD[fd]
			side := 0
			if fd == ls.fds[1] {
				side = 1
			}
			if ev.Events&syscall.EPOLLOUT != 0 {
				l.flush(ls, Direction(1-side))
			}
			if !ls.closed && ev.Events&(syscall.EPOLLIN|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
				l.readable(ls, Direction(side))
			}
		}
		l.mu.Lock()
		pending, l.requests = l.requests, pending[:0]
		stopping := l.stopping
		l.mu.Unlock()
		for _, r := range pending {
			switch r.kind {
			case requestAdd:
				l.add(r.ls)
			case requestKill:
				l.finish(r.ls, nil, nil)
			}
		}
		clear(pending)
		if stopping {
			for _, ls := range l.byFD {
				if ls != nil {
					l.finish(ls, nil, nil)
				}
			}
			syscall.Close(l.epfd)
			syscall.Close(l.wake[0])
			syscall.Close(l.wake[1])
			return
		}
	}
}

func (l *eventLoop) add(ls *loopSession) {
	if ls.closed {
		return // killed before the loop got to it; its fds are closed
	}
	for side, fd := range ls.fds {
		for fd >= len(l.byFD) {
			l.byFD = append(l.byFD, nil)
		}
		l.byFD[fd] = ls
		ls.events[side] = syscall.EPOLLIN
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}
		if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
			l.finish(ls, fmt.Errorf("epoll_ctl add: %w", err), nil)
			return
		}
	}
	// A session back from the fault path may hold bytes read there but
	// not yet looked at or written.
	for _, d := range [2]Direction{ClientToServer, ServerToClient} {
		if ls.closed {
			return
		}
		if p := ls.pumps[d]; p.start < p.out {
			if !l.flush(ls, d) {
				continue
			}
		}
		if p := ls.pumps[d]; p.out < p.end {
			l.process(ls, d)
		}
	}
}

func (l *eventLoop) setEvents(ls *loopSession, side int, events uint32) {
	if ls.events[side] == events {
		return
	}
	// epoll reports HUP and ERR even for an empty mask; a socket nobody
	// may read from right now leaves the set, so a reset peer cannot make
	// the loop spin.
	op := syscall.EPOLL_CTL_MOD
	switch {
	case events == 0:
		op = syscall.EPOLL_CTL_DEL
	case ls.events[side] == 0:
		op = syscall.EPOLL_CTL_ADD
	}
	ls.events[side] = events
	ev := syscall.EpollEvent{Events: events, Fd: int32(ls.fds[side])}
	syscall.EpollCtl(l.epfd, op, ls.fds[side], &ev)
}

// readable reads once from the side that is ready and forwards what can be.
func (l *eventLoop) readable(ls *loopSession, d Direction) {
	p := ls.pumps[d]
	if p.f != nil && p.f.fs.needsToxics(p.f.fs.policy.Rules()) {
		// Byte-level toxics work on goroutines and channels.
		l.release(ls)
		return
	}
	if p.out > p.start {
		return // still writing the last read; the peer's EPOLLOUT resumes us
	}
	if p.buf == nil {
		p.buf, p.bufKind = l.buf, bufShared
	}
	if p.end == len(p.buf) {
		p.makeRoom(0)
	}
	n, err := rawRead(ls.fds[d], p.buf[p.end:])
	if err == syscall.EAGAIN || err == syscall.EINTR {
		p.settle()
		return
	}
	if n <= 0 {
		if err == nil {
			err = errEOF
		}
		l.end(ls, d, err)
		return
	}
	p.end += n
	if p.f != nil {
		p.readAt = time.Now()
	}
	l.process(ls, d)
}

// process looks at what direction d has read and forwards what may go.
func (l *eventLoop) process(ls *loopSession, d Direction) {
	p := ls.pumps[d]
	perr := p.scan()
	if p.f.stopped() {
		// A fault verdict: the goroutine pumps carry it out, from the
		// message the scan stopped at.
		l.release(ls)
		return
	}
	if !l.flush(ls, d) {
		// End the session once what came before the bad message is out.
		ls.perr[d] = perr
		if !ls.closed {
			p.settle()
		}
		return
	}
	if perr != nil {
		l.brokeProtocol(ls, d, perr)
		return
	}
	if p.need > 0 {
		p.makeRoom(p.need)
	}
	p.settle()
}

// brokeProtocol ends a session whose side d sent something that is not the
// protocol, once what came before it is out. A client with requests the
// server has not answered yet goes to goroutine pumps, which pass those
// answers on before telling it (sessionRelay.drainAfter).
func (l *eventLoop) brokeProtocol(ls *loopSession, d Direction, perr error) {
	if d == ClientToServer && ls.pumps[ServerToClient].syncs < ls.pumps[ClientToServer].syncs {
		l.release(ls)
		return
	}
	l.end(ls, d, perr)
}

// flush writes what direction d has ready. It reports whether everything
// was written; if not, it waits for the peer to drain before reading more.
func (l *eventLoop) flush(ls *loopSession, d Direction) bool {
	p := ls.pumps[d]
	dst := 1 - int(d)
	for p.start < p.out {
		n, err := rawWrite(ls.fds[dst], p.buf[p.start:p.out])
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			// Stop reading this side but keep its EPOLLOUT: the other
			// direction may be waiting to write to it.
			l.setEvents(ls, int(d), ls.events[int(d)]&syscall.EPOLLOUT)
			l.setEvents(ls, dst, ls.events[dst]|syscall.EPOLLOUT)
			return false
		}
		if err != nil || n <= 0 {
			if err == nil {
				err = errEOF
			}
			// A failed write means the peer is gone.
			l.end(ls, Direction(dst), err)
			return false
		}
		p.start += n
	}
	if p.start == p.end {
		p.releaseBuffer()
	}
	if err := ls.perr[d]; err != nil {
		ls.perr[d] = nil
		l.brokeProtocol(ls, d, err)
		return false
	}
	l.setEvents(ls, dst, ls.events[dst]&^syscall.EPOLLOUT)
	l.setEvents(ls, int(d), syscall.EPOLLIN|ls.events[int(d)]&syscall.EPOLLOUT)
	return true
}

var errEOF = errors.New("EOF")

// end finishes the session because side d's stream ended with err.
func (l *eventLoop) end(ls *loopSession, d Direction, err error) {
	if d == ClientToServer {
		l.finish(ls, err, nil)
	} else {
		l.finish(ls, nil, err)
	}
}

func (l *eventLoop) finish(ls *loopSession, clientErr, serverErr error) {
	if ls.closed {
		return
	}
	ls.closed = true
	var perr *protocolError
	s2c := ls.pumps[ServerToClient]
	if s2c.atBoundary() && s2c.out <= s2c.start {
		// Best effort, like the goroutine relay: the socket is non-blocking
		// and the session is going away either way.
		if errors.As(clientErr, &perr) {
			syscall.Write(ls.fds[0], errorResponse("FATAL", "08P01", "pgchaos: "+perr.msg))
		} else if msg := ls.r.s.farewellMessage(); msg != "" {
			syscall.Write(ls.fds[0], errorResponse("FATAL", "57P01", msg))
		}
	}
	for _, fd := range ls.fds {
		if fd < len(l.byFD) && l.byFD[fd] == ls {
			l.byFD[fd] = nil
		}
		// Closing the only descriptor of a socket also removes it from epoll.
		syscall.Close(fd)
	}
	ls.r.end(clientErr, serverErr)
}

// epollWait waits for events without telling the Go scheduler it is in a
// system call. A blocking syscall.EpollWait makes sysmon poll every 20 µs
// and hand the loop's P to another thread, a context switch or two per
// wake-up: on a busy 2-core machine that was most of the loop's cost. The
// wait is bounded, so the goroutine still reaches a preemption point
// regularly for the garbage collector (and a preemption signal ends the wait
// early with EINTR).
func epollWait(epfd int, events []syscall.EpollEvent, timeoutMillis int) (int, error) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(epfd),
		uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(timeoutMillis), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

const (
	epollTimeoutMillis = 5
	// idleWaits is how many empty waits in a row (5 ms each) make a loop
	// idle: it then waits in Go's network poller, which costs no thread
	// and no wake-up until something happens.
	idleWaits = 20
)

// waitIdle waits, parked in Go's network poller, until the loop's epoll set
// has an event, and returns the events. The epoll descriptor is in Go's
// poller only for the wait (as a duplicate, closed after it): were it there
// always, every event of a busy loop would wake one of Go's threads too.
func (l *eventLoop) waitIdle(events []syscall.EpollEvent) (int, error) {
	dup, err := syscall.Dup(l.epfd)
	if err != nil {
		return epollWait(l.epfd, events, epollTimeoutMillis)
	}
	syscall.CloseOnExec(dup)
	f := os.NewFile(uintptr(dup), "pgchaos-event-loop")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return epollWait(l.epfd, events, epollTimeoutMillis)
	}
	var n int
	var werr error
	err = rc.Read(func(fd uintptr) bool {
		n, werr = epollWait(int(fd), events, 0)
		if werr == syscall.EINTR {
			n, werr = 0, nil
		}
		return n > 0 || werr != nil
	})
	if err != nil {
		// Not pollable here after all: wait the busy way.
		return epollWait(l.epfd, events, epollTimeoutMillis)
	}
	return n, werr
}

// release takes a session off the loop without ending it: goroutine pumps
// carry on with the same pumps on the fault path, from where the loop
// stopped.
func (l *eventLoop) release(ls *loopSession) {
	if ls.closed {
		return
	}
	ls.closed = true
	ls.r.s.onLoop.Store(false)
	for _, fd := range ls.fds {
		syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
		if fd < len(l.byFD) && l.byFD[fd] == ls {
			l.byFD[fd] = nil
		}
	}
	for _, p := range ls.pumps {
		if p.bufKind == bufShared {
			p.keep()
		}
	}
	go ls.r.resume(ls.fds)
}

// resume carries a session released by an event loop on goroutine pumps.
func (r *sessionRelay) resume(fds [2]int) {
	var cs [2]net.Conn
	var err error
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pgchaos-session")
		c, ferr := net.FileConn(f)
		f.Close()
		if ferr != nil {
			err = ferr
		}
		cs[i] = c
	}
	if err != nil {
		for _, c := range cs {
			if c != nil {
				c.Close()
			}
		}
		r.p.log.Error("could not move a session to the fault path; closing it", "session", r.s.ID, "err", err)
		r.end(err, nil)
		return
	}
	r.p.log.Debug("session moved to the fault path", "session", r.s.ID)
	r.runPumps(cs[0], cs[1])
}

// rawRead and rawWrite work on the loop's non-blocking sockets as raw
// system calls, for the same reason as epollWait: a plain syscall.Write
// that is descheduled while it wakes the peer looks like a blocked system
// call to sysmon, which then keeps polling every 20 µs. These calls never
// block, so the scheduler loses nothing by not hearing of them.
func rawRead(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return -1, errno
	}
	return int(n), nil
}

func rawWrite(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return -1, errno
	}
	return int(n), nil
}
