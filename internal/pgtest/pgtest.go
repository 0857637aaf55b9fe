// Package pgtest starts throwaway PostgreSQL and PgBouncer servers from the
// binaries installed on the machine, bound to 127.0.0.1 on free ports.
//
// StartCluster adds streaming standbys to a primary, for disaster-recovery
// drills: crash and restart a node, promote a standby, rewind an old
// primary into a standby of the new one, take a base backup and restore it
// to a point in time from the WAL archive as a new node.
//
// It backs the integration tests and is meant to be reused by the product's
// --embedded mode, so apart from testmain.go it must not import "testing".
//
// PostgreSQL and PgBouncer refuse to run as root; when the caller is root the
// servers run as the "postgres" OS user in temp directories that user owns.
//
// Servers die with the process that started them (Pdeathsig on Linux);
// their temp dirs, left behind when that process dies without Stop, are
// removed by the next start in any process.
package pgtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
)

// Roles created in every Postgres started by StartPostgres. The passwords are
// deliberately fixed so tests and proxies in front can log in without plumbing.
const (
	// SuperUser logs in without a password (trust) over TCP and the socket.
	SuperUser = "postgres"
	// MD5User's password is stored as an MD5 hash and pg_hba.conf demands md5.
	MD5User     = "md5user"
	MD5Password = "md5pass"
	// SCRAMUser's password is stored as a SCRAM secret and pg_hba.conf
	// demands scram-sha-256.
	SCRAMUser     = "scramuser"
	SCRAMPassword = "scrampass"
)

// Host is the only address the servers listen on: the harness must work
// without a network and must not expose trust-authenticated servers.
const Host = "127.0.0.1"

// ErrNotInstalled is wrapped by the Start functions when a required binary or
// OS user is missing, so callers can tell "cannot run here" from "broke".
var ErrNotInstalled = errors.New("not installed")

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another
// process may grab it before it is used, which is why the Start functions
// retry with a new port when the server reports the address in use.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(Host, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port on %s: %w", Host, err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("releasing probe listener on port %d: %w", port, err)
	}
	return port, nil
}

// ConnString builds a URL-form connection string for a server at addr
// (host:port). database "" means "postgres", because the default (the user's
// name) does not exist for the test roles. sslmode=disable because neither
// server has TLS configured and the probe would only add a round trip.
func ConnString(addr, user, password, database string) string {
	if database == "" {
		database = "postgres"
	}
	u := url.URL{
		Scheme:   "postgres",
		Host:     addr,
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	if password != "" {
		u.User = url.UserPassword(user, password)
	} else {
		u.User = url.User(user)
	}
	return u.String()
}

// quoteConf quotes a value for postgresql.conf / pgbouncer.ini. Quoting every
// value is accepted for numeric settings too and keeps paths with spaces safe.
func quoteConf(v string) string {
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// tailFile returns roughly the last lines of a log, for error messages: the
// reason a server died is almost always in its final few lines.
func tailFile(path string, maxLines int) string {
	const maxBytes = 8 << 10
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot stat %s: %v)", path, err)
	}
	off := max(st.Size()-maxBytes, 0)
	buf := make([]byte, st.Size()-off)
	n, _ := f.ReadAt(buf, off)
	lines := strings.Split(strings.TrimRight(string(buf[:n]), "\n"), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // first line is probably cut in the middle
	}
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	s := strings.Join(lines, "\n")
	if strings.TrimSpace(s) == "" {
		return fmt.Sprintf("(%s is empty)", path)
	}
	return s
}

// withLog appends the log tail to err so the cause shows up in test output;
// the log itself is deleted with the temp dir when a start fails.
func withLog(err error, logPath string) error {
	return fmt.Errorf("%w\n--- last lines of %s ---\n%s", err, logPath, tailFile(logPath, 30))
}
