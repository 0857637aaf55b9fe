package proxy

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// fakePG: reads a startup packet, then for each message read, writes a reply
// of the same size (blocking on the write, not reading meanwhile, like a backend).
func fakePG(t *testing.T, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var hdr [5]byte
			if _, err := io.ReadFull(c, hdr[:4]); err != nil {
				return
			}
			n := binary.BigEndian.Uint32(hdr[:4])
			io.CopyN(io.Discard, c, int64(n-4))
			for {
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				n := binary.BigEndian.Uint32(hdr[1:])
				body := make([]byte, n-4)
				if _, err := io.ReadFull(c, body); err != nil {
					return
				}
				if _, err := c.Write(append(hdr[:], body...)); err != nil {
					return
				}
			}
		}()
	}
}

func runBidi(t *testing.T, loops *EventLoops) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go fakePG(t, ln)
	p, err := New(Config{Name: "t", Listen: "127.0.0.1:0", Upstream: ln.Addr().String(), Loops: loops})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	params := []byte("user\x00x\x00\x00")
	startup := binary.BigEndian.AppendUint32(nil, uint32(8+len(params)))
	startup = binary.BigEndian.AppendUint32(startup, 3<<16)
	startup = append(startup, params...)
	c.Write(startup)

	const msgs, size = 1000, 16 << 10
	m := make([]byte, 5+size)
	m[0] = 'd'
	binary.BigEndian.PutUint32(m[1:], size+4)
	go func() {
		for range msgs {
			if _, err := c.Write(m); err != nil {
				return
			}
		}
	}()
	time.Sleep(500 * time.Millisecond) // the client reads its results a little later
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.CopyN(io.Discard, c, int64(msgs*len(m)))
	if err != nil {
		t.Fatalf("read %d of %d bytes: %v", got, msgs*len(m), err)
	}
}

func TestGoroutinesBothDirectionsBackedUp(t *testing.T) { runBidi(t, nil) }
func TestLoopBothDirectionsBackedUp(t *testing.T) {
	l, err := NewEventLoops(1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	runBidi(t, l)
}
