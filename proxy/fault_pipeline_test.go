package proxy

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/faults"
)

// blockingReader returns data in one read, then blocks forever (like an idle server).
type blockingReader struct{ chunks [][]byte }

func (r *blockingReader) Read(b []byte) (int, error) {
	if len(r.chunks) > 0 {
		c := r.chunks[0]
		r.chunks = r.chunks[1:]
		return copy(b, c), nil
	}
	select {}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuf) Write(p []byte) (int, error) { w.mu.Lock(); defer w.mu.Unlock(); return w.b.Write(p) }
func (w *syncBuf) Bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]byte(nil), w.b.Bytes()...)
}

// A pipelined client: Q1, Q2 (answered by pgchaos with an injected error), Q3.
// The server answers Q1 and Q3 in one TCP segment. The s2c pump must deliver
// Q3's answer too.
func TestInjectedReplyKeepsPipelineFlowing(t *testing.T) {
	e := faults.NewEngine(faults.Options{})
	s := &Session{Client: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}}
	fs := newFaultSession(e.Policy("t"), s)
	// What execute(ActError, 'Q') would queue for Q2: afterZ = 1 (c2s syncs before Q2).
	fs.injections = append(fs.injections, injection{afterZ: 1, msg: errorResponse("ERROR", "XX000", "injected")})
	fs.pending.Add(1)

	startup := msg('Z', []byte{'I'}) // end of startup, its own read
	var in []byte
	in = append(in, msg('C', cstr("SELECT 1"))...) // Q1
	in = append(in, msg('Z', []byte{'I'})...)
	in = append(in, msg('C', cstr("SELECT 3"))...) // Q3
	q3z := msg('Z', []byte{'I'})
	in = append(in, q3z...)

	out := &syncBuf{}
	p := testPump(ServerToClient, &blockingReader{chunks: [][]byte{startup, in}}, out)
	p.s = s
	p.f = &faultPump{fs: fs, dir: ServerToClient}
	go p.run()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if bytes.Contains(out.Bytes(), msg('C', cstr("SELECT 3"))) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("Q3's response never reached the client; client got %q", out.Bytes())
}
