package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
)

// mainStartTimeout covers initdb plus startup on a loaded CI machine.
const mainStartTimeout = 2 * time.Minute

// inCI reports whether missing servers must fail tests rather than skip
// them: a CI job that silently skips every database test proves nothing.
func inCI() bool { return os.Getenv("CI") != "" }

// Main starts one Postgres for a test package, stores it in *pg, runs m,
// stops Postgres and every other server the tests left running, and exits. Use it from TestMain:
//
//	var pg *pgtest.Postgres
//	func TestMain(m *testing.M) { pgtest.Main(m, pgtest.Options{}, &pg) }
//
// If PostgreSQL is not installed, it prints "skipping: <reason>" and exits
// 0 so machines without it can still run `go test ./...` — unless $CI is
// set, where it exits 1. Any other failure to start exits 1 everywhere: a
// broken harness must not hide every database test behind a skip.
func Main(m *testing.M, opts Options, pg **Postgres) {
	ctx, cancel := context.WithTimeout(context.Background(), mainStartTimeout)
	p, err := StartPostgres(ctx, opts)
	cancel()
	if err != nil {
		switch {
		case !errors.Is(err, ErrNotInstalled):
			fmt.Fprintf(os.Stderr, "pgtest: cannot start PostgreSQL: %v\n", err)
			os.Exit(1)
		case inCI():
			fmt.Fprintf(os.Stderr, "pgtest: cannot start PostgreSQL (failing because $CI is set): %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("skipping: cannot start PostgreSQL: %v\n", err)
		os.Exit(0)
	}
	*pg = p
	code := m.Run()
	// StopAll rather than p.Stop: PgBouncers that tests shared and never
	// stopped go first, then p.
	if err := StopAll(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: stopping servers: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// Unavailable reports that a server (typically PgBouncer) the test needs
// could not be started. It skips the test only when the server is not
// installed and $CI is not set; it fails it otherwise, with the reason
// either way. It does nothing when err is nil.
//
//	b, err := pgtest.StartPgBouncer(ctx, opts)
//	pgtest.Unavailable(t, err)
func Unavailable(tb testing.TB, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	switch {
	case !errors.Is(err, ErrNotInstalled):
		tb.Fatalf("required server failed to start: %v", err)
	case inCI():
		tb.Fatalf("required server unavailable (failing because $CI is set): %v", err)
	}
	tb.Skipf("skipping: required server not installed: %v", err)
}
