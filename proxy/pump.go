package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// errDrained ends a server pump that has passed on every answer the server
// owed a client that broke the protocol.
var errDrained = errors.New("answers owed to the client passed on")

const (
	pumpBufferSize = 32 << 10
	// inspectLimit is the largest message a pump holds back whole in order
	// to read it. Larger messages are streamed and only their first bytes
	// are read (the names at the front of a Bind, a prefix of the SQL).
	inspectLimit = 1 << 20
)

// protocolError is a violation of the wire protocol by a peer: the session
// cannot go on, and the client is told why where the protocol allows.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return e.msg }

// inspected marks, per direction, the message types whose contents the
// session tracks. Every other message is forwarded by its header alone.
var inspected = [2][256]bool{
	ClientToServer: {'P': true, 'B': true, 'C': true},
	ServerToClient: {'Z': true, 'S': true, 'K': true},
}

// pump relays one direction of a session: it reads what is available,
// finds the message boundaries, lets the session observe the few message
// types it tracks, and writes every complete run of bytes in one write, so
// a pipeline stays a pipeline and a round trip costs one write each way.
type pump struct {
	s      *Session
	dir    Direction
	src    io.Reader
	dst    io.Writer
	m      *proxyMetrics
	maxMsg int
	stmts  *statements // client-to-server only

	// buf is nil while the pump holds nothing. On an event loop the read
	// goes into the loop's buffer and only what must wait (an incomplete
	// message, bytes the peer cannot take yet) is kept in a buffer of the
	// session's own; goroutine pumps own a buffer while they run.
	buf     []byte
	bufKind bufferKind
	// buf[start:out] is scanned and waits to be written; buf[out:end] is
	// read but not scanned yet, or held back (a tracked message that is not
	// whole yet; need is then its size).
	start, out, end int
	need            int
	// remaining counts the body bytes of a streamed message that have not
	// been read yet; while it is non-zero the forwarded stream is mid-message.
	remaining int
	// discard: the streamed message is being dropped rather than forwarded.
	discard bool
	readErr error
	// readAt is when the last read returned, kept on the fault path so a
	// delay counts from the message's arrival, not from when it was looked at.
	readAt time.Time

	// syncs: requests sent (client to server) or ReadyForQuery messages
	// forwarded (server to client). executes: Executes since the last Sync.
	// completions: results (CommandComplete, EmptyQueryResponse,
	// PortalSuspended, ErrorResponse) since the last ReadyForQuery.
	syncs       uint64
	executes    int
	completions int
	startupDone bool
	// answered mirrors syncs of the server pump for other goroutines. When
	// the client broke the protocol, drainTo is the number of answers the
	// server still owes it: the server pump stops (drained) once they are
	// through, so the client hears everything before pgchaos's error.
	answered atomic.Uint64
	drainTo  atomic.Uint64
	drained  bool

	// f carries out fault verdicts; nil on the fast path.
	f *faultPump
}

func newPump(s *Session, dir Direction, src io.Reader, dst io.Writer, m *proxyMetrics, maxMsg int) *pump {
	p := &pump{s: s, dir: dir, src: src, dst: dst, m: m, maxMsg: maxMsg}
	if dir == ClientToServer {
		p.stmts = &statements{}
	}
	return p
}

// bufferKind says where a pump's buffer comes from, and so where it goes
// when the pump no longer needs it.
type bufferKind uint8

const (
	bufNone      bufferKind = iota
	bufPooled               // from bufferPool, pumpBufferSize bytes
	bufShared               // an event loop's, lent for one read
	bufAllocated            // grown for a large message
)

var bufferPool = sync.Pool{New: func() any {
	b := make([]byte, pumpBufferSize)
	return &b
}}

// ownBuffer makes sure the pump has a buffer of its own, keeping what it
// holds: goroutine pumps block in a read with it.
func (p *pump) ownBuffer() {
	switch p.bufKind {
	case bufNone:
		p.buf, p.bufKind = *bufferPool.Get().(*[]byte), bufPooled
	case bufShared:
		p.keep()
	}
}

// keep moves what the pump holds out of a borrowed buffer into one of its
// own, sized to fit (at least what a held-back message needs).
func (p *pump) keep() {
	pending := p.end - p.start
	var nb []byte
	kind := bufPooled
	if size := max(pending, p.need); size <= pumpBufferSize {
		nb = *bufferPool.Get().(*[]byte)
	} else {
		nb, kind = make([]byte, size), bufAllocated
	}
	copy(nb, p.buf[p.start:p.end])
	p.out -= p.start
	p.start, p.end = 0, pending
	p.buf, p.bufKind = nb, kind
}

// releaseBuffer lets go of the buffer when the pump holds nothing, so an
// idle session costs no buffer memory. It keeps a buffer with bytes in it.
func (p *pump) releaseBuffer() {
	if p.start == p.end {
		p.start, p.out, p.end = 0, 0, 0
		p.dropBuffer()
	}
}

// settle ends an event loop's handling of a read: a pump that holds
// nothing lets go of its buffer, and one that holds bytes in the loop's
// buffer moves them to one of its own.
func (p *pump) settle() {
	switch {
	case p.start == p.end:
		p.releaseBuffer()
	case p.bufKind == bufShared:
		p.keep()
	}
}

// dropBuffer gives the buffer back, whatever it holds.
func (p *pump) dropBuffer() {
	if p.bufKind == bufPooled && len(p.buf) == pumpBufferSize {
		b := p.buf
		bufferPool.Put(&b)
	}
	p.buf, p.bufKind = nil, bufNone
}

// atBoundary reports whether everything forwarded so far ends on a message
// boundary, so that a message of our own could be written next.
func (p *pump) atBoundary() bool { return p.remaining == 0 || p.discard }

// run relays until either side fails or closes. It returns the read or write
// error, or a *protocolError.
func (p *pump) run() error {
	p.ownBuffer()
	for {
		var perr error
		// A session handed over by an event loop may arrive with a verdict
		// already decided for the message at out.
		if !p.f.stopped() {
			perr = p.scan()
		}
		if p.start < p.out {
			if p.f != nil {
				p.f.holdIfPartitioned()
			}
			if _, err := p.dst.Write(p.buf[p.start:p.out]); err != nil {
				return err
			}
			p.start = p.out
		}
		if perr != nil {
			return perr
		}
		if p.drained {
			return errDrained
		}
		if p.f != nil {
			again, err := p.f.act(p)
			if err != nil {
				return err
			}
			if again {
				continue
			}
		}
		if p.readErr != nil {
			return p.readErr
		}
		if p.start == p.end {
			p.start, p.out, p.end = 0, 0, 0
			if p.bufKind == bufAllocated {
				// Shrink back once a large message is through.
				p.dropBuffer()
				p.ownBuffer()
			}
		} else if p.need > 0 {
			p.makeRoom(p.need)
		}
		if p.end == len(p.buf) {
			p.makeRoom(0)
		}
		n, err := p.src.Read(p.buf[p.end:])
		p.end += n
		if p.f != nil && n > 0 {
			p.readAt = time.Now()
		}
		if err != nil {
			if t := p.drainTo.Load(); t != 0 {
				if p.syncs >= t {
					return errDrained // woken up: nothing more is owed
				}
				// Otherwise the drain's deadline: stop waiting for answers.
			} else if handled, stop := p.f.parkOnDeadline(err); handled {
				if stop != nil {
					return stop
				}
				continue
			}
			p.readErr = err
		}
	}
}

// makeRoom moves the unwritten bytes to the front of the buffer and grows
// the buffer when a held-back message will not fit.
func (p *pump) makeRoom(need int) {
	pending := p.end - p.start
	if need < pending+1 {
		need = pending + 1
	}
	if need > len(p.buf) {
		nb := make([]byte, need)
		copy(nb, p.buf[p.start:p.end])
		if p.bufKind == bufPooled {
			p.dropBuffer()
		}
		p.buf, p.bufKind = nb, bufAllocated
	} else {
		copy(p.buf, p.buf[p.start:p.end])
	}
	p.out -= p.start
	p.start, p.end = 0, pending
}

// scan walks the unscanned bytes and moves out as far as they may be
// forwarded now. A tracked message that is only partly read is held back;
// everything else is forwarded as soon as it is read, even mid-message. With
// faults, scan also stops in front of a message that a verdict applies to.
func (p *pump) scan() error {
	buf, i, end := p.buf, p.out, p.end
	p.need = 0
	if p.f != nil {
		p.f.rs = p.f.fs.policy.Rules()
	}
	var msgs, nbytes uint64
	defer func() {
		p.out = i
		if msgs > 0 {
			p.s.msgs[p.dir].Add(msgs)
		}
		if nbytes > 0 {
			p.s.bytes[p.dir].Add(nbytes)
		}
	}()
	for i < end && !p.drained {
		if p.remaining > 0 {
			n := min(p.remaining, end-i)
			if p.discard {
				if i != p.start {
					break // write what comes before the dropped bytes first
				}
				p.start += n
			}
			p.remaining -= n
			i += n
			if p.remaining == 0 {
				p.discard = false
			}
			continue
		}
		if end-i < 5 {
			break
		}
		typ := buf[i]
		length := int(binary.BigEndian.Uint32(buf[i+1 : i+5]))
		if length < 4 {
			return &protocolError{fmt.Sprintf("invalid length %d in %s message (type %q)", length, MessageName(p.dir, typ), typ)}
		}
		if length > p.maxMsg {
			return &protocolError{fmt.Sprintf("%s message (type %q) of %d bytes exceeds the maximum message size of %d bytes", MessageName(p.dir, typ), typ, length, p.maxMsg)}
		}
		total := 1 + length
		have := end - i
		tracked := inspected[p.dir][typ]
		faulted := p.f != nil && p.f.wants(p.dir, typ)
		if (tracked || faulted) && have < total && total <= inspectLimit {
			p.need = total
			break
		}
		body := buf[i+5 : i+min(have, total)]
		if tracked {
			p.observe(typ, body)
		}
		msgs++
		nbytes += uint64(total)
		p.m.count(p.dir, typ, total)
		if faulted && p.f.stopAt(p, typ, body, total, have) {
			break // act() carries out the verdict on the message at out
		}
		p.tally(typ)
		if have < total {
			p.remaining = total - have
			i = end
			break
		}
		i += total
	}
	return nil
}

// tally counts the messages that delimit requests and responses: every
// Query, Sync and FunctionCall the client sends is answered by exactly one
// ReadyForQuery. Faults use the counts to find the response that belongs to
// a request; they are kept on the fast path too, so that a session moved to
// the fault path mid-stream stays in step.
func (p *pump) tally(typ byte) {
	if p.dir == ClientToServer {
		switch typ {
		case 'Q', 'F':
			p.syncs++
		case 'S':
			p.syncs++
			p.executes = 0
		case 'E':
			p.executes++
		}
		return
	}
	switch typ {
	case 'Z':
		// The first ReadyForQuery ends the startup phase and answers no
		// request of the client's.
		if p.startupDone {
			p.syncs++
			p.answered.Store(p.syncs)
			if t := p.drainTo.Load(); t != 0 && p.syncs >= t {
				p.drained = true
			}
		}
		p.startupDone = true
		p.completions = 0
	case 'C', 'I', 's', 'E':
		p.completions++
	}
}

// observe updates the session from a tracked message. body may be a prefix
// of the message when the message is too large to hold; each case reads only
// what is there.
func (p *pump) observe(typ byte, body []byte) {
	if p.dir == ClientToServer {
		switch typ {
		case 'P':
			name, rest, ok := cstring(body)
			if !ok {
				return
			}
			if sql, _, ok := cstring(rest); ok {
				rest = sql
			}
			p.stmts.parse(name, rest)
		case 'B':
			portal, rest, ok := cstring(body)
			if !ok {
				return
			}
			if stmt, _, ok := cstring(rest); ok {
				p.stmts.bind(portal, stmt)
			}
		case 'C':
			if len(body) > 0 {
				if name, _, ok := cstring(body[1:]); ok {
					p.stmts.close(body[0], name)
				}
			}
		}
		return
	}
	switch typ {
	case 'Z':
		if len(body) > 0 {
			p.s.txStatus.Store(uint32(body[0]))
		}
	case 'K':
		if len(body) >= 4 {
			p.s.backendPID.Store(int32(binary.BigEndian.Uint32(body)))
		}
	case 'S':
		name, rest, ok := cstring(body)
		if ok && string(name) == "application_name" {
			if v, _, ok := cstring(rest); ok {
				s := string(v)
				p.s.appName.Store(&s)
			}
		}
	}
}
