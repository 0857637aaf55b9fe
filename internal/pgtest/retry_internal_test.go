package pgtest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// takenThenFree makes pickPort hand out port first, then free ports, to
// force the port-conflict retry path that is otherwise a rare race.
func takenThenFree(t *testing.T, port int) {
	t.Helper()
	calls := 0
	pickPort = func() (int, error) {
		calls++
		if calls == 1 {
			return port, nil
		}
		return FreePort()
	}
	t.Cleanup(func() { pickPort = FreePort })
}

func TestRetriesWhenPortTaken(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	// A bare listener: the server fails to bind and exits.
	l, err := net.Listen("tcp", net.JoinHostPort(Host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port

	takenThenFree(t, taken)
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := StartPostgres(ctx, Options{Logger: logger})
	if err != nil {
		t.Fatalf("StartPostgres with its first port taken: %v", err)
	}
	defer p.Stop()
	if p.Port() == taken {
		t.Fatalf("Postgres claims port %d, which another listener holds", taken)
	}
	if tail := tailFile(p.LogFile(), 50); !strings.Contains(tail, addrInUse) {
		t.Errorf("expected the failed first attempt in the log, got:\n%s", tail)
	}

	// A live Postgres on the port: PgBouncer must not mistake it for itself.
	takenThenFree(t, p.Port())
	b, err := StartPgBouncer(ctx, PgBouncerOptions{Upstream: p.Addr(), Logger: logger})
	if err != nil {
		t.Fatalf("StartPgBouncer with its first port taken by Postgres: %v", err)
	}
	defer b.Stop()
	if b.Port() == p.Port() {
		t.Fatalf("PgBouncer claims Postgres's port %d", p.Port())
	}

	running.mu.Lock()
	tracked := slices.Contains(running.servers, interface{ Stop() error }(p)) && slices.Contains(running.servers, interface{ Stop() error }(b))
	running.mu.Unlock()
	if !tracked {
		t.Error("started servers are not tracked for StopAll")
	}
	b.Stop()
	p.Stop()
	running.mu.Lock()
	tracked = slices.Contains(running.servers, interface{ Stop() error }(p)) || slices.Contains(running.servers, interface{ Stop() error }(b))
	running.mu.Unlock()
	if tracked {
		t.Error("stopped servers are still tracked for StopAll")
	}
}

func TestNewestFirst(t *testing.T) {
	got := newestFirst([]string{
		"/usr/lib/postgresql/9.6/bin",
		"/usr/lib/postgresql/15/bin",
		"/usr/lib/postgresql/10/bin",
		"/usr/lib/postgresql/16/bin",
	})
	want := []string{
		"/usr/lib/postgresql/16/bin",
		"/usr/lib/postgresql/15/bin",
		"/usr/lib/postgresql/10/bin",
		"/usr/lib/postgresql/9.6/bin",
	}
	if !slices.Equal(got, want) {
		t.Errorf("newestFirst = %v, want %v", got, want)
	}
}

func TestSweepAbandoned(t *testing.T) {
	as, err := serverUser()
	if err != nil {
		t.Skip(err)
	}
	live, err := as.makeTempDir("sweeptest")
	if err != nil {
		t.Fatal(err)
	}
	defer live.remove()
	dead, err := as.makeTempDir("sweeptest")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.remove()
	// What the kernel does when the owner dies.
	dead.lock.Close()
	foreign := filepath.Join(os.TempDir(), tempDirPrefix+"sweeptest-foreign")
	if err := os.Mkdir(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(foreign)

	sweepAbandoned()

	for dir, wantKept := range map[string]bool{live.path: true, dead.path: false, foreign: true} {
		_, err := os.Stat(dir)
		if kept := err == nil; kept != wantKept {
			t.Errorf("%s: kept=%v (%v), want kept=%v", dir, kept, err, wantKept)
		}
	}
}

type fakeServer struct {
	name    string
	stopped *[]string
}

func (f *fakeServer) Stop() error {
	*f.stopped = append(*f.stopped, f.name)
	return nil
}

func TestStopAllNewestFirst(t *testing.T) {
	running.mu.Lock()
	saved := running.servers
	running.servers = nil
	running.mu.Unlock()
	t.Cleanup(func() {
		running.mu.Lock()
		running.servers = saved
		running.mu.Unlock()
	})

	var stopped []string
	pg, bouncer := &fakeServer{"postgres", &stopped}, &fakeServer{"pgbouncer", &stopped}
	track(pg)
	track(bouncer)
	if err := StopAll(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"pgbouncer", "postgres"}; !slices.Equal(stopped, want) {
		t.Errorf("StopAll order %v, want %v", stopped, want)
	}
	untrack(pg)
	untrack(bouncer)
	if len(running.servers) != 0 {
		t.Errorf("untrack left %d servers", len(running.servers))
	}
}
