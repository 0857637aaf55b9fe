package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/toxiproxy/v2/stream"
	"github.com/Shopify/toxiproxy/v2/toxics"

	"github.com/pgchaos/pgchaos/faults"
)

// toxicReader is a pump's source on the goroutine path: the session's
// socket, or — once byte-level toxics (toxiproxy's latency, bandwidth, ...)
// apply to this stream — the output of those toxics. When the rules change,
// the stream finishes passing through the old toxics before the new ones
// take over, so no byte is lost or reordered.
type toxicReader struct {
	conn net.Conn
	dir  faults.Direction
	fs   *faultSession

	seen    *faults.RuleSet
	key     string
	feeder  *toxicFeeder
	chains  []*toxicChain // chains[0] is being read; later ones wait
	pending []byte
}

func newToxicReader(conn net.Conn, d Direction, fs *faultSession) *toxicReader {
	return &toxicReader{conn: conn, dir: d, fs: fs}
}

func (r *toxicReader) Read(b []byte) (int, error) {
	if rs := r.fs.policy.Rules(); rs != r.seen {
		r.seen = rs
		r.update(rs)
	}
	if r.feeder == nil {
		return r.conn.Read(b)
	}
	for {
		if len(r.pending) > 0 {
			n := copy(b, r.pending)
			r.pending = r.pending[n:]
			return n, nil
		}
		c := r.chains[0]
		var wake chan struct{}
		if r.dir == faults.ServerToClient {
			wake = r.fs.wake
		}
		select {
		case chunk, ok := <-c.out:
			if ok {
				r.pending = chunk.Data
				continue
			}
			c.markDead()
			if c.retired && len(r.chains) > 1 {
				r.chains = r.chains[1:]
				continue
			}
			// A toxic ended the stream (limit_data, timeout...) or the
			// socket did.
			if err := r.feeder.err(); err != nil && !c.retired {
				return 0, err
			}
			return 0, io.EOF
		case <-wake:
			// An injected reply is due: let the pump look (see faultSession.inject).
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// update builds a new chain when the set of toxics for this stream changed.
func (r *toxicReader) update(rs *faults.RuleSet) {
	key := rs.ToxicsKey(r.dir)
	if key == r.key {
		return
	}
	r.key = key
	r.fs.mu.Lock()
	r.fs.view.TxStatus = byte(r.fs.sess.TxStatus())
	r.fs.view.ApplicationName = r.fs.sess.ApplicationName()
	view := r.fs.view
	r.fs.mu.Unlock()
	list := rs.SessionToxics(r.dir, &view)
	if r.feeder == nil && len(list) == 0 {
		return
	}
	c := newToxicChain(list)
	for _, t := range list {
		if t.Wrapper.Type == "reset_peer" {
			// toxiproxy's reset_peer closes with RST; so do we.
			setLingerZero(r.fs.client)
			setLingerZero(r.fs.upstream)
		}
	}
	if r.feeder == nil {
		r.feeder = startFeeder(r.conn, c)
	} else {
		r.chains[len(r.chains)-1].retired = true
		r.feeder.switchTo(c)
	}
	r.chains = append(r.chains, c)
}

// close stops the toxics' goroutines once the pump is done with them.
func (r *toxicReader) close() {
	for _, c := range r.chains {
		go func() {
			for range c.out {
			}
		}()
	}
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

// toxicChain runs toxics one after the other, channel to channel, as
// toxiproxy links them.
type toxicChain struct {
	in       chan *stream.StreamChunk
	out      chan *stream.StreamChunk
	dead     chan struct{} // closed when out was found closed
	deadOnce sync.Once
	retired  bool // replaced by a newer chain: its end is not the stream's
}

func (c *toxicChain) markDead() { c.deadOnce.Do(func() { close(c.dead) }) }

func newToxicChain(list []faults.Toxic) *toxicChain {
	if len(list) == 0 {
		w := &toxics.ToxicWrapper{Type: "noop", Toxicity: 1}
		toxics.New(w)
		list = []faults.Toxic{{Rule: "noop", Wrapper: w}}
	}
	c := &toxicChain{in: make(chan *stream.StreamChunk, list[0].Wrapper.BufferSize), dead: make(chan struct{})}
	input := c.in
	for i, t := range list {
		size := 0
		if i+1 < len(list) {
			size = list[i+1].Wrapper.BufferSize
		}
		output := make(chan *stream.StreamChunk, size)
		stub := toxics.NewToxicStub(input, output)
		if s, ok := t.Wrapper.Toxic.(toxics.StatefulToxic); ok {
			stub.State = s.NewState()
		}
		go stub.Run(t.Wrapper)
		input = output
	}
	c.out = input
	return c
}

// toxicFeeder reads the socket into the current chain.
type toxicFeeder struct {
	mu      sync.Mutex
	next    *toxicChain
	readErr error
}

func startFeeder(conn net.Conn, first *toxicChain) *toxicFeeder {
	f := &toxicFeeder{}
	go f.run(conn, first)
	return f
}

func (f *toxicFeeder) switchTo(c *toxicChain) {
	f.mu.Lock()
	f.next = c
	f.mu.Unlock()
}

func (f *toxicFeeder) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readErr
}

func (f *toxicFeeder) run(conn net.Conn, cur *toxicChain) {
	buf := make([]byte, 32<<10)
	defer func() { close(cur.in) }()
	for {
		n, err := conn.Read(buf)
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && n == 0 {
			// A wake-up meant for the pump, which reads the chain instead.
			conn.SetReadDeadline(time.Time{})
			continue
		}
		f.mu.Lock()
		if f.next != nil {
			close(cur.in) // the old chain drains, then the reader moves on
			cur, f.next = f.next, nil
		}
		if err != nil && !isClosedErr(err) {
			f.readErr = err
		}
		f.mu.Unlock()
		if n > 0 {
			chunk := &stream.StreamChunk{Data: append([]byte(nil), buf[:n]...), Timestamp: time.Now()}
			select {
			case cur.in <- chunk:
			case <-cur.dead:
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "use of closed network connection")
}
