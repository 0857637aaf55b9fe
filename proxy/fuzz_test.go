package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/faults"
)

// seedStreams are message streams from both sides of real sessions, for
// the framing and fault targets to start from.
func seedStreams() [][]byte {
	var c2s, s2c, extended []byte
	c2s = append(c2s, msg('Q', cstr("BEGIN"))...)
	c2s = append(c2s, msg('Q', cstr("INSERT INTO t VALUES (1)"))...)
	c2s = append(c2s, msg('Q', cstr("PREPARE TRANSACTION 'g1'"))...)
	c2s = append(c2s, msg('X')...)
	extended = append(extended, msg('P', cstr("s1"), cstr("UPDATE t SET n = $1"), []byte{0, 1, 0, 0, 0, 23})...)
	extended = append(extended, msg('B', cstr("p1"), cstr("s1"), []byte{0, 0, 0, 1, 0, 0, 0, 1, '1', 0, 0})...)
	extended = append(extended, msg('D', []byte{'P'}, cstr("p1"))...)
	extended = append(extended, msg('E', cstr("p1"), []byte{0, 0, 0, 0})...)
	extended = append(extended, msg('C', []byte{'S'}, cstr("s1"))...)
	extended = append(extended, msg('S')...)
	extended = append(extended, msg('d', bytes.Repeat([]byte("row\n"), 100))...)
	extended = append(extended, msg('c')...)
	s2c = append(s2c, msg('R', []byte{0, 0, 0, 0})...)
	s2c = append(s2c, msg('S', cstr("application_name"), cstr("app"))...)
	s2c = append(s2c, msg('K', []byte{0, 0, 0x30, 0x39}, bytes.Repeat([]byte{7}, 32))...)
	s2c = append(s2c, msg('Z', []byte{'I'})...)
	s2c = append(s2c, msg('T', []byte{0, 1}, cstr("n"), make([]byte, 18))...)
	s2c = append(s2c, msg('D', []byte{0, 1, 0, 0, 0, 1, '1'})...)
	s2c = append(s2c, msg('C', cstr("PREPARE TRANSACTION"))...)
	s2c = append(s2c, msg('E', []byte("SERROR\x00C40001\x00Mx\x00\x00"))...)
	s2c = append(s2c, msg('Z', []byte{'T'})...)
	return [][]byte{c2s, extended, s2c, append(msg('Q', cstr("x")), 'Q', 0, 0, 0, 2), msg('P', cstr("unterminated"))}
}

// splits turns a seed into read sizes, so the same stream is also read in
// pieces.
func splits(seed uint64, n int) []int {
	var sizes []int
	for total := 0; total < n; {
		seed = seed*6364136223846793005 + 1442695040888963407
		size := int(seed>>59) + 1 // 1..32
		if seed&(1<<20) != 0 {
			size *= 257
		}
		sizes = append(sizes, size)
		total += size
	}
	return sizes
}

// pumpOutcome is what a pump made of a stream: what it forwarded, how it
// ended and the session state it tracked.
type pumpOutcome struct {
	out       []byte
	protocol  bool
	msgs      uint64
	tx        TxStatus
	pid       int32
	app       string
	unnamed   string
	named     string
	syncs     uint64
	completed int
}

// fuzzMetrics are resolved once: making them per run would cost more than
// the run.
var fuzzMetrics = NewMetrics(nil).forProxy("fuzz")

func fuzzPump(dir Direction, src *chunkReader, dst *bytes.Buffer) *pump {
	return newPump(&Session{}, dir, src, dst, fuzzMetrics, DefaultMaxMessageSize)
}

func runPumpOn(dir Direction, data []byte, sizes []int) pumpOutcome {
	var out bytes.Buffer
	p := fuzzPump(dir, &chunkReader{data: data, sizes: sizes}, &out)
	p.maxMsg = 1 << 16
	err := p.run()
	var perr *protocolError
	o := pumpOutcome{out: out.Bytes(), protocol: errors.As(err, &perr), msgs: p.s.msgs[dir].Load(),
		tx: p.s.TxStatus(), pid: p.s.backendPID.Load(), app: p.s.ApplicationName(), syncs: p.syncs, completed: p.completions}
	if p.stmts != nil {
		o.unnamed = string(p.stmts.portalSQL(nil))
		o.named = string(p.stmts.statementSQL([]byte("s1")))
	}
	return o
}

// FuzzPumpFraming: whatever bytes a peer sends, and however they are split
// into reads, a pump forwards a prefix of them, ends the same way and
// tracks the same session state — and never panics.
func FuzzPumpFraming(f *testing.F) {
	for _, s := range seedStreams() {
		f.Add(s, uint64(1), false)
		f.Add(s, uint64(7), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, server bool) {
		dir := ClientToServer
		if server {
			dir = ServerToClient
		}
		whole := runPumpOn(dir, data, nil)
		split := runPumpOn(dir, data, splits(seed, len(data)))
		if !bytes.HasPrefix(data, whole.out) {
			t.Fatalf("forwarded bytes that were not sent: %q of %q", whole.out, data)
		}
		if !bytes.Equal(whole.out, split.out) || whole.protocol != split.protocol || whole.msgs != split.msgs ||
			whole.tx != split.tx || whole.pid != split.pid || whole.app != split.app ||
			whole.unnamed != split.unnamed || whole.named != split.named || whole.syncs != split.syncs || whole.completed != split.completed {
			t.Fatalf("the split stream came out differently:\nwhole %+v\nsplit %+v", whole, split)
		}
	})
}

// fuzzRules are rules whose verdicts the fault path carries out without
// waiting: every way a message can be changed, dropped or made up.
var fuzzRules = []faults.Rule{
	{Name: "err-before-update", Match: faults.Match{Statement: faults.StringList{"update"}}, Action: faults.Action{Type: "error", SQLState: "40001"}},
	{Name: "err-after-insert", Match: faults.Match{SQL: "insert"}, Action: faults.Action{Type: "error", When: "after", SQLState: "40P01"}},
	{Name: "err-on-sync", Match: faults.Match{Message: faults.StringList{"sync"}}, Action: faults.Action{Type: "error", SQLState: "57014"}, Limits: faults.Limits{Probability: ptr(0.3)}},
	{Name: "drop-describe", Match: faults.Match{Message: faults.StringList{"describe"}}, Action: faults.Action{Type: "drop"}, Limits: faults.Limits{Probability: ptr(0.5)}},
	{Name: "lie-about-prepare", Match: faults.Match{Tag: "PREPARE TRANSACTION"}, Action: faults.Action{Type: "error", SQLState: "08006"}},
	{Name: "drop-rows", Match: faults.Match{Message: faults.StringList{"data_row"}}, Action: faults.Action{Type: "drop"}, Limits: faults.Limits{Probability: ptr(0.5)}},
	{Name: "err-on-ready", Match: faults.Match{Message: faults.StringList{"ready_for_query"}}, Action: faults.Action{Type: "error", SQLState: "XX000"}, Limits: faults.Limits{Probability: ptr(0.2)}},
	{Name: "delay-parse", Match: faults.Match{Message: faults.StringList{"parse"}}, Action: faults.Action{Type: "delay", Delay: faults.Duration(time.Microsecond)}},
	{Name: "delay-tag", Match: faults.Match{Message: faults.StringList{"command_complete"}}, Action: faults.Action{Type: "delay", Delay: faults.Duration(time.Microsecond)}},
}

func ptr[T any](v T) *T { return &v }

// FuzzFaultPath: the fault path carries out verdicts on any stream, in
// both directions of one session, without panicking or hanging, and
// writes only whole messages of its own between the peer's.
func FuzzFaultPath(f *testing.F) {
	streams := seedStreams()
	f.Add(streams[0], streams[2], int64(1))
	f.Add(streams[1], streams[2], int64(2))
	f.Add(streams[3], streams[4], int64(3))
	f.Fuzz(func(t *testing.T, client, server []byte, seed int64) {
		e := faults.NewEngine(faults.Options{Seed: seed})
		for _, r := range fuzzRules {
			if _, err := e.Add(r); err != nil {
				t.Fatal(err)
			}
		}
		s := &Session{Client: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}}
		fs := newFaultSession(e.Policy("t"), s)
		defer fs.kill()
		var toServer, toClient bytes.Buffer
		c2s := fuzzPump(ClientToServer, &chunkReader{data: client, sizes: splits(uint64(seed), len(client))}, &toServer)
		s2c := fuzzPump(ServerToClient, &chunkReader{data: server}, &toClient)
		c2s.s, s2c.s = s, s
		c2s.maxMsg, s2c.maxMsg = 1<<16, 1<<16
		c2s.f = &faultPump{fs: fs, dir: ClientToServer}
		s2c.f = &faultPump{fs: fs, dir: ServerToClient}
		done := make(chan struct{})
		go func() {
			defer close(done)
			c2s.run()
			s2c.run()
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the fault path did not finish on a stream that ends")
		}
		// From whole messages, the fault path makes whole messages: what it
		// drops, replaces or makes up never cuts one.
		for _, c := range []struct {
			name     string
			in, sent []byte
		}{{"to the server", client, toServer.Bytes()}, {"to the client", server, toClient.Bytes()}} {
			if _, whole := wholeMessages(c.in); whole {
				if _, ok := wholeMessages(c.sent); !ok {
					t.Fatalf("%s: whole messages in, %q out", c.name, c.sent)
				}
			}
		}
	})
}

// wholeMessages reports whether b is a run of complete messages.
func wholeMessages(b []byte) (int, bool) {
	n := 0
	for len(b) > 0 {
		if len(b) < 5 {
			return n, false
		}
		l := int(binary.BigEndian.Uint32(b[1:5]))
		if l < 4 || 1+l > len(b) {
			return n, false
		}
		b = b[1+l:]
		n++
	}
	return n, true
}

// FuzzStartup feeds the startup phase any bytes a client could send —
// StartupMessage, SSLRequest, GSSENCRequest, CancelRequest or garbage — and
// checks that the proxy answers or closes, never panics nor hangs, and
// parses the parameters of a StartupMessage as they were written.
func FuzzStartup(f *testing.F) {
	startup := func(version uint32, kv ...string) []byte {
		b := binary.BigEndian.AppendUint32([]byte{0, 0, 0, 0}, version)
		for _, s := range kv {
			b = append(append(b, s...), 0)
		}
		b = append(b, 0)
		binary.BigEndian.PutUint32(b, uint32(len(b)))
		return b
	}
	request := func(code uint32, extra ...byte) []byte {
		b := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(8+len(extra))), code)
		return append(b, extra...)
	}
	f.Add(startup(3<<16, "user", "postgres", "database", "db", "application_name", "app"))
	f.Add(startup(3<<16|2, "user", "u", "_pq_.x", "1"))
	f.Add(append(request(codeSSLRequest), startup(3<<16, "user", "u")...))
	f.Add(append(request(codeGSSENC), request(codeSSLRequest)...))
	f.Add(request(codeCancel, 0, 0, 0, 1, 1, 2, 3, 4))
	f.Add([]byte{0x16, 3, 1, 0, 5})
	f.Add([]byte{0, 0, 0, 4})
	f.Add(startup(2 << 16))
	p, err := New(Config{Name: "fuzz", Listen: "127.0.0.1:0", Upstream: "127.0.0.1:1", StartupTimeout: time.Second, ConnectTimeout: time.Second})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var length [4]byte
		copy(length[:], data)
		if n := int(binary.BigEndian.Uint32(length[:])); n >= 8 && n <= len(data) && binary.BigEndian.Uint32(data[4:8])>>16 == 3 {
			if params, err := startupParameters(data[8:n]); err == nil {
				var again []byte
				keys := make([]string, 0, len(params))
				for k := range params {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				for _, k := range keys {
					again = append(append(append(append(again, k...), 0), params[k]...), 0)
				}
				back, err := startupParameters(append(again, 0))
				if err != nil || len(back) != len(params) {
					t.Fatalf("parameters %v do not read back: %v %v", params, back, err)
				}
			}
		}
		handled := make(chan struct{})
		go func() {
			defer close(handled)
			p.live.Add(1)
			if !p.handle(&scriptedClient{r: bytes.NewReader(data)}) {
				p.live.Done()
			}
		}()
		select {
		case <-handled:
		case <-time.After(5 * time.Second):
			t.Fatal("the startup phase did not end")
		}
	})
}

// scriptedClient is a client connection that sends data, then closes its
// end; what the proxy writes to it is thrown away.
type scriptedClient struct {
	r *bytes.Reader
}

func (c *scriptedClient) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *scriptedClient) Write(b []byte) (int, error) { return len(b), nil }
func (c *scriptedClient) Close() error                { return nil }
func (c *scriptedClient) LocalAddr() net.Addr         { return &net.TCPAddr{} }
func (c *scriptedClient) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
}
func (c *scriptedClient) SetDeadline(time.Time) error      { return nil }
func (c *scriptedClient) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptedClient) SetWriteDeadline(time.Time) error { return nil }
