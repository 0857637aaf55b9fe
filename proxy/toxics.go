package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/Shopify/toxiproxy/v2/stream"
	"github.com/Shopify/toxiproxy/v2/toxics"

	"github.com/pgchaos/pgchaos/faults"
)

// toxicReader is a pump's source on the goroutine path: the session's
// socket, or — while byte-level toxics (toxiproxy's latency, bandwidth, ...)
// apply to this stream — the output of those toxics, which a feeder
// goroutine fills from the socket.
//
// When the set of toxics changes, the old chain is retired before the new
// one takes over: each of its toxics, from the last to the first, is
// interrupted — which makes it let go of what it holds at once, as
// toxiproxy's own removal does — while its output is collected, so no byte
// is lost or reordered and nothing waits on a consumer that is not there.
// The pump's goroutine does all of this itself, so it never waits for
// anyone but the toxics it interrupts; the session's end interrupts those.
type toxicReader struct {
	conn net.Conn
	dir  faults.Direction
	fs   *faultSession

	seen    *faults.RuleSet
	key     string
	feeder  *toxicFeeder // nil: the pump reads the socket itself
	stages  []*toxicStage
	pending []byte
	// ended is how the stream ended inside the chain: a toxic closed it
	// (limit_data, timeout, reset_peer) or the end of the socket's stream
	// came through.
	ended error
	// changed wakes a read when a rule of the current chain is removed or
	// replaced; unwatch ends the goroutines that watch for that.
	changed chan struct{}
	unwatch chan struct{}
	closed  bool
}

// toxicStage is one toxic of a chain, running in a goroutine of its own as
// toxiproxy runs it.
type toxicStage struct {
	stub        *toxics.ToxicStub
	out         chan *stream.StreamChunk
	done        chan struct{} // closed when the toxic's goroutine has returned
	interrupted bool
}

// interrupt tells the toxic to let go of what it holds and return. A stub
// is never reused, so its Interrupt channel is closed rather than sent on:
// every wait of the toxic on it ends.
func (st *toxicStage) interrupt() {
	if !st.interrupted {
		st.interrupted = true
		close(st.stub.Interrupt)
	}
}

func newToxicReader(conn net.Conn, d Direction, fs *faultSession) *toxicReader {
	return &toxicReader{conn: conn, dir: d, fs: fs, changed: make(chan struct{}, 1)}
}

// errSessionKilled ends a read on the toxic path when the session is killed.
var errSessionKilled = errors.New("session killed")

func (r *toxicReader) Read(b []byte) (int, error) {
	if rs := r.fs.policy.Rules(); rs != r.seen {
		r.seen = rs
		r.update(rs)
	}
	for {
		if len(r.pending) > 0 {
			n := copy(b, r.pending)
			r.pending = r.pending[n:]
			if len(r.pending) == 0 {
				r.pending = nil
			}
			return n, nil
		}
		if r.ended != nil {
			return 0, r.ended
		}
		if r.feeder == nil {
			return r.conn.Read(b)
		}
		var wake chan struct{}
		if r.dir == faults.ServerToClient {
			wake = r.fs.wake
		}
		select {
		case chunk, ok := <-r.output():
			if ok {
				r.pending = chunk.Data
				continue
			}
			if len(r.stages) > 0 {
				// A toxic closed the stream (limit_data, timeout, ...), or
				// the socket's end came through the chain.
				r.ended = io.EOF
				continue
			}
			// The feeder is done: the socket ended, or the feeder was
			// stopped to hand the socket back to the pump.
			f := r.feeder
			r.feeder = nil
			if f.handedBack.Load() {
				// Clear the hand-back's deadline before saying the stream
				// is calm: said first, a park round could set its own
				// deadline in between, this would clear it, and the pump
				// would read on unparked while the round held the other
				// direction parked until it gave up.
				r.conn.SetReadDeadline(time.Time{})
				r.fs.viaToxics[r.dir].Store(false)
				signal(r.fs.calm)
				select {
				case <-wake: // the deadline just cleared may have been drainAfter's
					return 0, os.ErrDeadlineExceeded
				default:
				}
				continue
			}
			r.ended = io.EOF
			if err := f.err; err != nil {
				r.ended = err
			}
		case <-r.changed:
			rs := r.fs.policy.Rules()
			r.seen = rs
			r.update(rs)
		case <-wake:
			// The client broke the protocol: let the pump see whether the
			// server still owes it answers (see sessionRelay.drainAfter).
			return 0, os.ErrDeadlineExceeded
		case <-r.fs.killed:
			return 0, errSessionKilled
		}
	}
}

// output is the channel the pump reads: the last toxic's output, or the
// feeder's while the chain is empty.
func (r *toxicReader) output() <-chan *stream.StreamChunk {
	if n := len(r.stages); n > 0 {
		return r.stages[n-1].out
	}
	return r.feeder.out
}

// update builds a new chain when the set of toxics for this stream changed.
func (r *toxicReader) update(rs *faults.RuleSet) {
	key, list := r.fs.toxics(rs, r.dir)
	if key == r.key || r.ended != nil {
		return
	}
	r.key = key
	if r.feeder == nil {
		if len(list) == 0 {
			return
		}
		r.feeder = startFeeder(r.conn, r.fs.killed)
		r.fs.viaToxics[r.dir].Store(true)
	}
	r.retire()
	if r.ended != nil {
		return
	}
	if len(list) == 0 {
		// Once what the feeder has read comes through, the pump reads the
		// socket itself again.
		r.feeder.handBack(r.conn)
		return
	}
	in := r.feeder.out
	r.unwatch = make(chan struct{})
	for _, t := range list {
		if t.Wrapper.Type == "reset_peer" {
			// toxiproxy's reset_peer closes with RST; so do we.
			setLingerZero(r.fs.client)
			setLingerZero(r.fs.upstream)
		}
		out := make(chan *stream.StreamChunk, t.Wrapper.BufferSize)
		st := &toxicStage{stub: toxics.NewToxicStub(in, out), out: out, done: make(chan struct{})}
		if s, ok := t.Wrapper.Toxic.(toxics.StatefulToxic); ok {
			st.stub.State = s.NewState()
		}
		go func(w *toxics.ToxicWrapper) {
			defer close(st.done)
			st.stub.Run(w)
		}(t.Wrapper)
		r.stages = append(r.stages, st)
		in = out
		go r.watch(t.Released, r.unwatch)
	}
}

// watch wakes the reader when a rule of its chain is removed or replaced.
func (r *toxicReader) watch(released <-chan struct{}, unwatch <-chan struct{}) {
	select {
	case <-released:
		select {
		case r.changed <- struct{}{}:
		default:
		}
	case <-unwatch:
	}
}

// retire stops the toxics of the current chain, last first, keeping in
// order what they held and what sits between them. If one of them had
// already closed the stream, what came after is dropped, as the stream
// ended there.
func (r *toxicReader) retire() {
	if r.unwatch != nil {
		close(r.unwatch)
		r.unwatch = nil
	}
	for k := len(r.stages) - 1; k >= 0; k-- {
		st := r.stages[k]
		st.interrupt()
		out := st.out
		for out != nil {
			select {
			case chunk, ok := <-out:
				if !ok {
					out = nil
					r.ended = io.EOF
				} else if r.ended == nil {
					r.pending = append(r.pending, chunk.Data...)
				}
			case <-st.done:
				// Take what it put out before it returned.
				for {
					chunk, ok := tryReceive(st.out)
					if chunk == nil {
						if !ok {
							r.ended = io.EOF
						}
						break
					}
					if r.ended == nil {
						r.pending = append(r.pending, chunk.Data...)
					}
				}
				out = nil
			case <-r.fs.killed:
				r.stages = r.stages[:k+1]
				return
			}
		}
		select {
		case <-st.done:
		case <-r.fs.killed:
			r.stages = r.stages[:k+1]
			return
		}
	}
	r.stages = nil
}

// tryReceive takes a chunk from c if one is there. ok is false when c is
// closed and empty.
func tryReceive(c chan *stream.StreamChunk) (chunk *stream.StreamChunk, ok bool) {
	select {
	case chunk, ok = <-c:
		return chunk, ok
	default:
		return nil, true
	}
}

// close ends the toxics' and feeder's goroutines once the pump is done
// with them. It never waits: what they hold is thrown away by a goroutine
// that outlives the pump only as long as the toxics take to stop.
func (r *toxicReader) close() {
	if r.closed {
		return
	}
	r.closed = true
	if r.unwatch != nil {
		close(r.unwatch)
		r.unwatch = nil
	}
	stages, f := r.stages, r.feeder
	r.stages, r.feeder = nil, nil
	if len(stages) == 0 && f == nil {
		return
	}
	if f != nil {
		f.quit()
	}
	for _, st := range stages {
		st.interrupt()
	}
	go func() {
		for _, st := range stages {
			for out := st.out; out != nil; {
				select {
				case _, ok := <-out:
					if !ok {
						out = nil
					}
				case <-st.done:
					out = nil
				}
			}
		}
		if f != nil {
			for range f.out {
			}
		}
	}()
}

func setLingerZero(c net.Conn) {
	if c == nil {
		return
	}
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
}

// toxicFeeder reads the socket into the chain. It closes out when the
// socket's stream ends, when it is told to quit, or when it hands the
// socket back to the pump (handedBack is then set first).
type toxicFeeder struct {
	out        chan *stream.StreamChunk
	err        error // the socket's read error, read after out is closed
	stop       chan struct{}
	stopping   atomic.Bool // handBack asked
	handedBack atomic.Bool
	quitOnce   atomic.Bool
}

func startFeeder(conn net.Conn, killed <-chan struct{}) *toxicFeeder {
	f := &toxicFeeder{out: make(chan *stream.StreamChunk), stop: make(chan struct{})}
	go f.run(conn, killed)
	return f
}

// handBack asks the feeder to stop reading and leave the socket to the pump.
func (f *toxicFeeder) handBack(conn net.Conn) {
	f.stopping.Store(true)
	conn.SetReadDeadline(time.Now())
}

// quit ends the feeder without waiting for it.
func (f *toxicFeeder) quit() {
	if f.quitOnce.CompareAndSwap(false, true) {
		close(f.stop)
	}
}

func (f *toxicFeeder) run(conn net.Conn, killed <-chan struct{}) {
	defer close(f.out)
	buf := make([]byte, 32<<10)
	for {
		if f.stopping.Load() {
			f.handedBack.Store(true)
			return
		}
		n, err := conn.Read(buf)
		if n > 0 {
			chunk := &stream.StreamChunk{Data: append([]byte(nil), buf[:n]...), Timestamp: time.Now()}
			select {
			case f.out <- chunk:
			case <-f.stop:
				return
			case <-killed:
				return
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// A wake-up: for the hand-back (checked at the top), or one
				// meant for the pump, which reads the chain instead.
				if !f.stopping.Load() {
					conn.SetReadDeadline(time.Time{})
				}
				continue
			}
			if !isClosedErr(err) {
				f.err = err
			}
			return
		}
	}
}

func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}
