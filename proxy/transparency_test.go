package proxy_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
)

// relays are the two ways pgchaos carries a session.
var relays = []struct {
	name string
	mod  func(*proxy.Config)
}{
	{"loop", nil},
	{"goroutine", func(c *proxy.Config) { c.Loops = nil }},
}

// startupPacket3x is a StartupMessage asking for protocol 3.minor, with a
// protocol option the server does not know.
func startupPacket3x(minor uint32, db string) []byte {
	b := []byte{0, 0, 0, 0}
	b = binary.BigEndian.AppendUint32(b, 3<<16|minor)
	for _, kv := range [][2]string{{"user", pgtest.SuperUser}, {"database", db}, {"_pq_.pgchaos_test", "on"}} {
		b = append(append(append(append(b, kv[0]...), 0), kv[1]...), 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// A client asking for a newer minor protocol version is negotiated down
// by the server, as without pgchaos: it hears NegotiateProtocolVersion and
// carries on.
func TestStartupAnyMinorVersion(t *testing.T) {
	in := startProxy(t, pg.Addr(), nil)
	for _, minor := range []uint32{1, 2, 99} {
		t.Run(fmt.Sprintf("3.%d", minor), func(t *testing.T) {
			c, err := net.Dial("tcp", in.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(startupPacket3x(minor, "postgres")); err != nil {
				t.Fatal(err)
			}
			fe := pgproto3.NewFrontend(c, c)
			var negotiated *pgproto3.NegotiateProtocolVersion
			for {
				msg, err := fe.Receive()
				if err != nil {
					t.Fatalf("startup: %v", err)
				}
				switch m := msg.(type) {
				case *pgproto3.NegotiateProtocolVersion:
					cp := *m
					negotiated = &cp
				case *pgproto3.ErrorResponse:
					t.Fatalf("startup refused: %s %s", m.Code, m.Message)
				}
				if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
					break
				}
			}
			// The field carries the whole version: 3.0 is 196608.
			if negotiated == nil || negotiated.NewestMinorProtocol != 3<<16 {
				t.Fatalf("NegotiateProtocolVersion = %+v, want the server's 3.0", negotiated)
			}
			exchange(t, fe, "SELECT 1")
		})
	}
}

// A CancelRequest with protocol 3.2's longer key reaches the upstream as
// it was sent.
func TestCancelRequestLongKey(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	key := bytes.Repeat([]byte{0xAB}, 32)
	pkt := binary.BigEndian.AppendUint32(nil, uint32(12+len(key)))
	pkt = binary.BigEndian.AppendUint32(pkt, 80877102)
	pkt = binary.BigEndian.AppendUint32(pkt, 4242)
	pkt = append(pkt, key...)
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close() // a server closes once it has read the request
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, len(pkt)+1)
		n, _ := io.ReadAtLeast(c, b, len(pkt))
		got <- b[:n]
	}()
	in := startProxy(t, ln.Addr().String(), nil)
	c, err := net.Dial("tcp", in.addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Write(pkt)
	c.Close()
	select {
	case b := <-got:
		if !bytes.Equal(b, pkt) {
			t.Fatalf("upstream got %x, want %x", b, pkt)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cancel request never reached the upstream")
	}
}

// Five pipelined INSERTs, then a message that breaks the protocol, in one
// write: the server commits the five, and the client is told so before
// pgchaos's FATAL — it is never left in doubt by the proxy itself.
func TestMalformedAfterValidRequests(t *testing.T) {
	for _, r := range relays {
		t.Run(r.name, func(t *testing.T) {
			in := startProxy(t, pg.Addr(), r.mod)
			db := newDatabase(t)
			ctx := testCtx(t)
			direct := connect(t, ctx, pg.DSN(pgtest.SuperUser, "", db))
			mustExec(t, ctx, direct, "CREATE TABLE t (id int PRIMARY KEY)")
			c, _ := login(t, in.addr(), db)
			var out []byte
			for i := range 5 {
				out, _ = (&pgproto3.Query{String: fmt.Sprintf("INSERT INTO t VALUES (%d)", i)}).Encode(out)
			}
			out = append(out, 'Q', 0, 0, 0, 2) // a length below the header's own
			if _, err := c.Write(out); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			fe := pgproto3.NewFrontend(c, c)
			inserted, ready := 0, 0
			var fatal *pgproto3.ErrorResponse
			for fatal == nil {
				msg, err := fe.Receive()
				if err != nil {
					t.Fatalf("after %d INSERT tags and %d ReadyForQuery: %v", inserted, ready, err)
				}
				switch m := msg.(type) {
				case *pgproto3.CommandComplete:
					if string(m.CommandTag) == "INSERT 0 1" {
						inserted++
					}
				case *pgproto3.ReadyForQuery:
					ready++
				case *pgproto3.ErrorResponse:
					cp := *m
					fatal = &cp
				}
			}
			if inserted != 5 || ready != 5 || fatal.Code != "08P01" {
				t.Fatalf("client heard %d INSERT tags and %d ReadyForQuery, then %s %q; want 5, 5, then 08P01", inserted, ready, fatal.Code, fatal.Message)
			}
			var n int
			if err := direct.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 5 {
				t.Fatalf("table has %d rows (%v)", n, err)
			}
		})
	}
}

// A session is told why when pgchaos shuts down — one held by a fault as
// well as an idle one — as PostgreSQL tells its clients.
func TestShutdownTellsSessions(t *testing.T) {
	for _, r := range relays {
		t.Run(r.name, func(t *testing.T) {
			e := faults.NewEngine(faults.Options{})
			in := startProxy(t, pg.Addr(), func(c *proxy.Config) {
				c.Faults = e
				if r.mod != nil {
					r.mod(c)
				}
			})
			idle, _ := login(t, in.addr(), "postgres")
			held, heldFE := login(t, in.addr(), "postgres")
			addRule(t, e, faults.Rule{Name: "hold", Match: faults.Match{SQL: "held"}, Action: faults.Action{Type: "hang"}})
			heldFE.Send(&pgproto3.Query{String: "SELECT 'held'"})
			heldFE.Flush()
			waitFor(t, "the hang to fire", func() bool { return fired(t, e, "hold") == 1 })
			in.Close()
			for name, c := range map[string]net.Conn{"idle": idle, "held": held} {
				if err := readFatal(c, "57P01", "shutting down"); err != nil {
					t.Errorf("%s session: %v", name, err)
				}
			}
		})
	}
}

// readFatal reads until c closes and checks the last message was the FATAL.
func readFatal(c net.Conn, code, want string) error {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	var last *pgproto3.ErrorResponse
	for {
		msg, err := fe.Receive()
		if err != nil {
			if last == nil {
				return fmt.Errorf("closed (%v) without an ErrorResponse", err)
			}
			if last.Code != code || !bytes.Contains([]byte(last.Message), []byte(want)) {
				return fmt.Errorf("got %s %q, want %s containing %q", last.Code, last.Message, code, want)
			}
			return nil
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			cp := *e
			last = &cp
		}
	}
}
