package proxy

import (
	"encoding/binary"
	"fmt"
	"io"
)

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

	buf        []byte
	start, end int // buf[start:end] has been read but not yet forwarded
	// remaining counts the body bytes of a streamed message that have not
	// been read yet; while it is non-zero the forwarded stream is mid-message.
	remaining int
}

func newPump(s *Session, dir Direction, src io.Reader, dst io.Writer, m *proxyMetrics, maxMsg int) *pump {
	p := &pump{s: s, dir: dir, src: src, dst: dst, m: m, maxMsg: maxMsg, buf: make([]byte, pumpBufferSize)}
	if dir == ClientToServer {
		p.stmts = &statements{}
	}
	return p
}

// atBoundary reports whether everything forwarded so far ends on a message
// boundary, so that a message of our own could be written next.
func (p *pump) atBoundary() bool { return p.remaining == 0 }

// run relays until either side fails or closes. It returns the read or write
// error, or a *protocolError.
func (p *pump) run() error {
	for {
		if p.end == len(p.buf) {
			p.makeRoom(0)
		}
		n, rerr := p.src.Read(p.buf[p.end:])
		p.end += n
		fwd, need, perr := p.scan()
		if fwd > p.start {
			if _, err := p.dst.Write(p.buf[p.start:fwd]); err != nil {
				return err
			}
			p.start = fwd
		}
		if perr != nil {
			return perr
		}
		if p.start == p.end {
			p.start, p.end = 0, 0
		} else if need > 0 {
			p.makeRoom(need)
		}
		if rerr != nil {
			return rerr
		}
	}
}

// makeRoom moves a held-back partial message to the front of the buffer and
// grows the buffer when the message will not fit.
func (p *pump) makeRoom(need int) {
	pending := p.end - p.start
	if need < pending+1 {
		need = pending + 1
	}
	if need > len(p.buf) {
		nb := make([]byte, need)
		copy(nb, p.buf[p.start:p.end])
		p.buf = nb
	} else {
		copy(p.buf, p.buf[p.start:p.end])
	}
	p.start, p.end = 0, pending
}

// scan walks the unforwarded bytes and returns how far they may be forwarded
// now. A tracked message that is only partly read is held back (need is its
// full size); everything else is forwarded as soon as it is read, even
// mid-message.
func (p *pump) scan() (fwd, need int, err error) {
	buf, i, end := p.buf, p.start, p.end
	var msgs, nbytes uint64
	defer func() {
		if msgs > 0 {
			p.s.msgs[p.dir].Add(msgs)
		}
		if nbytes > 0 {
			p.s.bytes[p.dir].Add(nbytes)
		}
	}()
	for i < end {
		if p.remaining > 0 {
			n := min(p.remaining, end-i)
			p.remaining -= n
			i += n
			continue
		}
		if end-i < 5 {
			break
		}
		typ := buf[i]
		length := int(binary.BigEndian.Uint32(buf[i+1 : i+5]))
		if length < 4 {
			return i, 0, &protocolError{fmt.Sprintf("invalid length %d in %s message (type %q)", length, MessageName(p.dir, typ), typ)}
		}
		if length > p.maxMsg {
			return i, 0, &protocolError{fmt.Sprintf("%s message (type %q) of %d bytes exceeds the maximum message size of %d bytes", MessageName(p.dir, typ), typ, length, p.maxMsg)}
		}
		total := 1 + length
		have := end - i
		if inspected[p.dir][typ] {
			if have < total && total <= inspectLimit {
				return i, total, nil
			}
			p.observe(typ, buf[i+5:i+min(have, total)])
		}
		msgs++
		nbytes += uint64(total)
		p.m.count(p.dir, typ, total)
		if have < total {
			p.remaining = total - have
			return end, 0, nil
		}
		i += total
	}
	return i, 0, nil
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
