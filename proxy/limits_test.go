package proxy_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
)

func wantPgError(t *testing.T, err error, code, msg string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != code || pgErr.Severity != "FATAL" || !strings.Contains(pgErr.Message, msg) {
		t.Fatalf("want FATAL %s containing %q, got %v", code, msg, err)
	}
}

func pgConnect(t *testing.T, addr string) (*pgconn.PgConn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, pgtest.ConnString(addr, pgtest.SuperUser, "", "postgres")+"&sslmode=disable")
	if err == nil {
		t.Cleanup(func() { c.Close(context.Background()) })
	}
	return c, err
}

// Beyond --max-sessions a client is told so, like PostgreSQL's "too many
// clients"; a place freed is a place to take.
func TestMaxSessions(t *testing.T) {
	in := startProxy(t, pg.Addr(), nil)
	in.registry.SetMaxSessions(2)
	first, err := pgConnect(t, in.addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pgConnect(t, in.addr()); err != nil {
		t.Fatal(err)
	}
	_, err = pgConnect(t, in.addr())
	wantPgError(t, err, "53300", "too many clients already (max-sessions 2)")
	if n := in.metric(t, "pgchaos_clients_rejected_total", map[string]string{"reason": "max_sessions"}); n != 1 {
		t.Fatalf("pgchaos_clients_rejected_total{reason=max_sessions} = %v, want 1", n)
	}
	first.Close(context.Background())
	waitFor(t, "the closed session to go", func() bool { return len(in.registry.Sessions()) == 1 })
	if _, err := pgConnect(t, in.addr()); err != nil {
		t.Fatalf("after a session ended: %v", err)
	}
}

// The startup deadline covers the whole startup phase: negotiating SSL
// again and again does not keep a connection open past it.
func TestStartupTimeoutCoversNegotiation(t *testing.T) {
	in := startProxy(t, pg.Addr(), func(c *proxy.Config) { c.StartupTimeout = 500 * time.Millisecond })
	c, err := net.Dial("tcp", in.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	sslRequest := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 80877103)
	var answer [1]byte
	for i := 0; ; i++ {
		if _, err := c.Write(sslRequest); err != nil {
			break
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(answer[:]); err != nil {
			break // closed by the proxy
		}
		if i >= 3 {
			// pgchaos allows a few negotiations, then says no more.
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := c.Read(answer[:]); err != nil {
			break
		}
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("connection kept for %v under a 500ms startup timeout", d)
	}
	waitFor(t, "the timeout to be counted", func() bool {
		return in.metric(t, "pgchaos_startup_timeouts_total", nil) == 1 || in.metric(t, "pgchaos_protocol_errors_total", nil) == 1
	})
}

// A client that gave up while pgchaos held it (here by slow_connect) does
// not cost the upstream a connection.
func TestNoUpstreamForAGoneClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var dialed atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dialed.Add(1)
			c.Close()
		}
	}()
	e := faults.NewEngine(faults.Options{})
	in := startProxy(t, ln.Addr().String(), func(c *proxy.Config) { c.Faults = e })
	addRule(t, e, faults.Rule{Name: "slow", Match: faults.Match{Event: "connect"}, Action: faults.Action{Type: "slow_connect", Delay: faults.Duration(300 * time.Millisecond)}})
	c, err := net.Dial("tcp", in.addr())
	if err != nil {
		t.Fatal(err)
	}
	startup := []byte{0, 0, 0, 0, 0, 3, 0, 0}
	startup = append(startup, "user\x00postgres\x00\x00"...)
	binary.BigEndian.PutUint32(startup, uint32(len(startup)))
	if _, err := c.Write(startup); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slow_connect rule to fire", func() bool { return fired(t, e, "slow") == 1 })
	c.Close()
	time.Sleep(600 * time.Millisecond)
	if n := dialed.Load(); n != 0 {
		t.Fatalf("the upstream was dialed %d times for a client that had left", n)
	}
	// A client that stays is still connected upstream.
	c2, err := net.Dial("tcp", in.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write(startup)
	waitFor(t, "the upstream to be dialed for a client that waited", func() bool { return dialed.Load() == 1 })
}

// Out of file descriptors, pgchaos turns new clients away with a FATAL
// that says why (instead of leaving them to time out), keeps some for the
// control API, and the sessions it has carry on.
func TestOutOfFileDescriptors(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("descriptor limits are checked on Linux")
	}
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	open, _ := os.ReadDir("/proc/self/fd")
	low := orig
	low.Cur = uint64(len(open) + 130)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skipf("cannot lower the descriptor limit: %v", err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })

	in := startProxy(t, pg.Addr(), nil)
	var sessions []*pgconn.PgConn
	var err error
	for range 100 {
		var c *pgconn.PgConn
		if c, err = pgConnect(t, in.addr()); err != nil {
			break
		}
		sessions = append(sessions, c)
	}
	if len(sessions) == 0 {
		t.Fatalf("no session could start: %v", err)
	}
	wantPgError(t, err, "53000", "out of file descriptors")
	t.Logf("%d sessions under a limit of %d descriptors", len(sessions), low.Cur)

	// Use up every descriptor but one, which the next client's socket
	// takes: the proxy's accept fails with EMFILE.
	var hog []*os.File
	defer func() {
		for _, f := range hog {
			f.Close()
		}
	}()
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		hog = append(hog, f)
	}
	hog[len(hog)-1].Close()
	hog = hog[:len(hog)-1]
	c, err := net.Dial("tcp", in.addr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	expectFatal(t, c, "53000", "out of file descriptors")
	c.Close()
	for _, f := range hog {
		f.Close()
	}
	hog = nil
	if n := in.metric(t, "pgchaos_clients_rejected_total", map[string]string{"reason": "out_of_fds"}); n < 2 {
		t.Fatalf("pgchaos_clients_rejected_total{reason=out_of_fds} = %v, want both rejections counted", n)
	}
	for i, s := range sessions {
		if _, err := s.Exec(context.Background(), "SELECT 1").ReadAll(); err != nil {
			t.Fatalf("session %d after the shortage: %v", i, err)
		}
	}
}
