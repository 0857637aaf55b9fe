package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/pgchaos/pgchaos/faults"
)

func msg(typ byte, body ...[]byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	for _, p := range body {
		b = append(b, p...)
	}
	binary.BigEndian.PutUint32(b[1:], uint32(len(b)-1))
	return b
}

func cstr(s string) []byte { return append([]byte(s), 0) }

// chunkReader returns its data in reads of the given sizes, then EOF.
type chunkReader struct {
	data  []byte
	sizes []int
}

func (r *chunkReader) Read(b []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.sizes) > 0 {
		n = min(n, r.sizes[0])
		r.sizes = r.sizes[1:]
	}
	n = copy(b, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func testPump(dir Direction, src io.Reader, dst io.Writer) *pump {
	return newPump(&Session{}, dir, src, dst, NewMetrics(nil).forProxy("t"), DefaultMaxMessageSize)
}

// The stream must come out byte for byte, however it is split into reads,
// and the tracked state must be the same.
func TestPumpSplitsAnywhere(t *testing.T) {
	var stream []byte
	stream = append(stream, msg('P', cstr("s1"), cstr("SELECT 1"), []byte{0, 0})...)
	stream = append(stream, msg('P', cstr(""), cstr("SELECT $1::int"), []byte{0, 0})...)
	stream = append(stream, msg('B', cstr("p1"), cstr("s1"), []byte{0, 0, 0, 0, 0, 0})...)
	stream = append(stream, msg('B', cstr(""), cstr(""), []byte{0, 0, 0, 0, 0, 0})...)
	stream = append(stream, msg('E', cstr(""), []byte{0, 0, 0, 0})...)
	stream = append(stream, msg('d', bytes.Repeat([]byte("x"), 100000))...)
	stream = append(stream, msg('S')...)
	for _, sizes := range [][]int{nil, {1}, {3, 2, 1, 7}, {5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5}} {
		var repeated []int
		for len(repeated) < len(stream) && len(sizes) > 0 {
			repeated = append(repeated, sizes...)
		}
		var out bytes.Buffer
		p := testPump(ClientToServer, &chunkReader{data: stream, sizes: repeated}, &out)
		if err := p.run(); !errors.Is(err, io.EOF) {
			t.Fatalf("sizes %v: run: %v", sizes, err)
		}
		if !bytes.Equal(out.Bytes(), stream) {
			t.Fatalf("sizes %v: stream changed (%d bytes in, %d out)", sizes, len(stream), out.Len())
		}
		if got := string(p.stmts.portalSQL(nil)); got != "SELECT $1::int" {
			t.Fatalf("sizes %v: unnamed portal runs %q", sizes, got)
		}
		if got := string(p.stmts.portalSQL([]byte("p1"))); got != "SELECT 1" {
			t.Fatalf("sizes %v: portal p1 runs %q", sizes, got)
		}
		if got := p.s.msgs[ClientToServer].Load(); got != 7 {
			t.Fatalf("sizes %v: counted %d messages", sizes, got)
		}
	}
}

func TestPumpClose(t *testing.T) {
	var stream []byte
	stream = append(stream, msg('P', cstr("s1"), cstr("SELECT 1"), []byte{0, 0})...)
	stream = append(stream, msg('B', cstr("p1"), cstr("s1"), []byte{0, 0, 0, 0, 0, 0})...)
	stream = append(stream, msg('C', []byte{'P'}, cstr("p1"))...)
	p := testPump(ClientToServer, &chunkReader{data: stream}, io.Discard)
	p.run()
	if got := p.stmts.portalSQL([]byte("p1")); got != nil {
		t.Fatalf("closed portal still runs %q", got)
	}
	if got := string(p.stmts.statementSQL([]byte("s1"))); got != "SELECT 1" {
		t.Fatalf("statement s1 = %q", got)
	}
}

func TestPumpServerState(t *testing.T) {
	var stream []byte
	stream = append(stream, msg('K', []byte{0, 0, 0x30, 0x39, 1, 2, 3, 4})...)
	stream = append(stream, msg('S', cstr("application_name"), cstr("app"))...)
	stream = append(stream, msg('Z', []byte{'T'})...)
	p := testPump(ServerToClient, &chunkReader{data: stream, sizes: []int{2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}}, io.Discard)
	p.run()
	if p.s.backendPID.Load() != 12345 || p.s.ApplicationName() != "app" || p.s.TxStatus() != TxInTx {
		t.Fatalf("pid %d app %q tx %v", p.s.backendPID.Load(), p.s.ApplicationName(), p.s.TxStatus())
	}
}

func TestPumpProtocolErrors(t *testing.T) {
	for name, c := range map[string]struct {
		stream []byte
		max    int
	}{
		"short length": {append(msg('S'), 'Q', 0, 0, 0, 3), DefaultMaxMessageSize},
		"too large":    {append(msg('S'), 'd', 0, 0, 1, 0), 200},
	} {
		var out bytes.Buffer
		p := testPump(ClientToServer, &chunkReader{data: c.stream}, &out)
		p.maxMsg = c.max
		var perr *protocolError
		if err := p.run(); !errors.As(err, &perr) {
			t.Fatalf("%s: want a protocol error, got %v", name, err)
		}
		// The valid message before the bad one was still delivered.
		if !bytes.Equal(out.Bytes(), msg('S')) {
			t.Fatalf("%s: forwarded %q", name, out.Bytes())
		}
	}
}

// loopReader serves the same batch of messages on every read, forever.
type loopReader struct{ batch []byte }

func (r *loopReader) Read(b []byte) (int, error) { return copy(b, r.batch), nil }

// countingWriter stops the benchmark loop after n writes.
type countingWriter struct{ left int }

var errDone = errors.New("done")

func (w *countingWriter) Write(b []byte) (int, error) {
	w.left--
	if w.left < 0 {
		return 0, errDone
	}
	return len(b), nil
}

// BenchmarkPump measures the forwarding loop on a pgbench -S reply
// (RowDescription, DataRow, CommandComplete, ReadyForQuery) per read: the
// cost per forwarded message and that it allocates nothing.
func BenchmarkPump(b *testing.B) {
	var batch []byte
	batch = append(batch, msg('T', []byte{0, 1}, cstr("abalance"), make([]byte, 18))...)
	batch = append(batch, msg('D', []byte{0, 1, 0, 0, 0, 4}, []byte("1234"))...)
	batch = append(batch, msg('C', cstr("SELECT 1"))...)
	batch = append(batch, msg('Z', []byte{'I'})...)
	const perBatch = 4
	w := &countingWriter{left: b.N}
	p := testPump(ServerToClient, &loopReader{batch: batch}, w)
	b.SetBytes(int64(len(batch)))
	b.ReportAllocs()
	b.ResetTimer()
	if err := p.run(); !errors.Is(err, errDone) {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perBatch), "ns/msg")
}

func BenchmarkPumpExtended(b *testing.B) {
	var batch []byte
	batch = append(batch, msg('P', cstr(""), cstr("SELECT abalance FROM pgbench_accounts WHERE aid = $1"), []byte{0, 0})...)
	batch = append(batch, msg('B', cstr(""), cstr(""), []byte{0, 0, 0, 1, 0, 0, 0, 4}, []byte("1234"), []byte{0, 0})...)
	batch = append(batch, msg('D', []byte{'P'}, cstr(""))...)
	batch = append(batch, msg('E', cstr(""), []byte{0, 0, 0, 0})...)
	batch = append(batch, msg('S')...)
	w := &countingWriter{left: b.N}
	p := testPump(ClientToServer, &loopReader{batch: batch}, w)
	b.SetBytes(int64(len(batch)))
	b.ReportAllocs()
	b.ResetTimer()
	if err := p.run(); !errors.Is(err, errDone) {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*5), "ns/msg")
}

// The hot path allocates nothing per message: forwarding pgbench's
// replies and requests, with fault rules present that match none of them.
// (CI runs the tests named Alloc without -race, which allocates itself.)
func TestPumpAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; CI runs this without -race")
	}
	var reply, request []byte
	reply = append(reply, msg('T', []byte{0, 1}, cstr("abalance"), make([]byte, 18))...)
	reply = append(reply, msg('D', []byte{0, 1, 0, 0, 0, 4}, []byte("1234"))...)
	reply = append(reply, msg('C', cstr("SELECT 1"))...)
	reply = append(reply, msg('Z', []byte{'I'})...)
	request = append(request, msg('P', cstr(""), cstr("SELECT abalance FROM pgbench_accounts WHERE aid = $1"), []byte{0, 0})...)
	request = append(request, msg('B', cstr(""), cstr(""), []byte{0, 0, 0, 1, 0, 0, 0, 4}, []byte("1234"), []byte{0, 0})...)
	request = append(request, msg('E', cstr(""), []byte{0, 0, 0, 0})...)
	request = append(request, msg('S')...)
	request = append(request, msg('Q', cstr("SELECT abalance FROM pgbench_accounts WHERE aid = 1"))...)
	e := faults.NewEngine(faults.Options{})
	for _, r := range []faults.Rule{
		{Name: "other-table", Match: faults.Match{SQL: "pgbench_tellers"}, Action: faults.Action{Type: "error", SQLState: "40001"}},
		{Name: "other-tag", Match: faults.Match{Tag: "COMMIT"}, Action: faults.Action{Type: "disconnect"}},
		{Name: "other-user", Match: faults.Match{User: "nobody", Statement: faults.StringList{"select"}}, Action: faults.Action{Type: "drop"}},
	} {
		if _, err := e.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name  string
		dir   Direction
		batch []byte
	}{{"replies", ServerToClient, reply}, {"requests", ClientToServer, request}} {
		t.Run(c.name, func(t *testing.T) {
			s := &Session{User: "bench"}
			p := testPump(c.dir, &loopReader{batch: c.batch}, io.Discard)
			p.s = s
			p.f = &faultPump{fs: newFaultSession(e.Policy("t"), s), dir: c.dir}
			w := &countingWriter{}
			p.dst = w
			p.startupDone = true
			allocs := testing.AllocsPerRun(100, func() {
				w.left = 50
				p.start, p.out, p.end = 0, 0, 0
				if err := p.run(); !errors.Is(err, errDone) {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Fatalf("%.1f allocations per 50 batches", allocs)
			}
		})
	}
}
