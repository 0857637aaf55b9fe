package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// runAs is the OS identity the servers run under.
type runAs struct {
	name string
	uid  int
	gid  int
	// cred is nil when the servers run as the current user, so that a
	// non-root caller does not need CAP_SETUID.
	cred *syscall.Credential
}

// serverUser picks the identity for initdb, postgres and pgbouncer: all
// three refuse to start as root, so root hands them to the "postgres" user.
func serverUser() (runAs, error) {
	if os.Geteuid() != 0 {
		name := strconv.Itoa(os.Geteuid())
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
		return runAs{name: name, uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup(SuperUser)
	if err != nil {
		return runAs{}, fmt.Errorf("running as root, so the servers must run as OS user %q, but looking it up failed (apt-get install -y postgresql creates it): %w: %w",
			SuperUser, ErrNotInstalled, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return runAs{}, fmt.Errorf("parsing uid %q of OS user %q: %w", u.Uid, SuperUser, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return runAs{}, fmt.Errorf("parsing gid %q of OS user %q: %w", u.Gid, SuperUser, err)
	}
	return runAs{
		name: SuperUser,
		uid:  uid,
		gid:  gid,
		// Groups left empty on purpose: root's supplementary groups must not
		// leak to the server, and it needs none of its own.
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)},
	}, nil
}

// chown hands path to the server user; a no-op when we already are that user.
func (r runAs) chown(path string) error {
	if r.cred == nil {
		return nil
	}
	if err := os.Lchown(path, r.uid, r.gid); err != nil {
		return fmt.Errorf("handing %s to OS user %s: %w", path, r.name, err)
	}
	return nil
}

// writeFile writes a config file the server user can read.
func (r runAs) writeFile(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return r.chown(path)
}

// checkReachable reports whether every directory from / down to dir can be
// searched by r, approximating the kernel's permission check.
func (r runAs) checkReachable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("checking access to %s: %w", d, err)
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if ok {
			mode := st.Mode().Perm()
			var bit fs.FileMode = 0o001
			switch {
			case int(sys.Uid) == r.uid:
				bit = 0o100
			case int(sys.Gid) == r.gid:
				bit = 0o010
			}
			if mode&bit == 0 {
				return fmt.Errorf("OS user %s cannot search %s (mode %v)", r.name, d, mode)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// childEnv is the environment for server processes. PG* variables from the
// caller (PGDATA, PGPORT, ...) must not steer the servers, and a C locale
// keeps messages English so errors like "Address already in use" can be
// recognised, and keeps initdb from rejecting UTF8 under an odd locale.
func childEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || strings.HasPrefix(k, "LC_") || k == "LANG" || k == "LANGUAGE" || k == "HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "HOME="+home)
}

// command prepares a server-side command run as r in dir.
func (r runAs) command(dir, bin string, args ...string) *exec.Cmd {
	return r.setup(exec.Command(bin, args...), dir)
}

// commandContext is command for short-lived tools (initdb) that should die
// when ctx is cancelled, together with everything they forked.
func (r runAs) commandContext(ctx context.Context, dir, bin string, args ...string) *exec.Cmd {
	cmd := r.setup(exec.CommandContext(ctx, bin, args...), dir)
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

func (r runAs) setup(cmd *exec.Cmd, dir string) *exec.Cmd {
	cmd.Dir = dir
	cmd.Env = childEnv(dir)
	cmd.SysProcAttr = sysProcAttr(r.cred)
	return cmd
}

// proc is a long-running server child (postgres or pgbouncer).
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
	err  error         // Wait's result, valid after done is closed
}

// startProc starts cmd with stdout and stderr appended to logPath. The log
// is opened here, by the caller's user, so the server needs no write access
// to create it.
func startProc(name string, cmd *exec.Cmd, logPath string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening %s log %s: %w", name, logPath, err)
	}
	cmd.Stdout = f
	cmd.Stderr = f
	err = cmd.Start()
	// The child holds its own copy of the descriptor.
	f.Close()
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, exec.ErrNotFound) {
			err = fmt.Errorf("%w: %w", ErrNotInstalled, err)
		}
		return nil, fmt.Errorf("starting %s (%s): %w", name, cmd.Path, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig, waits up to grace, then kills the whole process group so
// that no backend or helper outlives the test. It reports only failures to
// stop, not the server's exit status, which is non-zero after a kill anyway.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) error {
	if p.exited() {
		return nil
	}
	pid := p.cmd.Process.Pid
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling %s (pid %d) with %v: %w", p.name, pid, sig, err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		// Children of a cleanly stopped postmaster are gone already; the
		// group kill below is for the unclean path only.
		return nil
	case <-t.C:
	}
	// Negative pid: the group created by Setpgid, i.e. the server and
	// every process it forked.
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing %s process group %d: %w", p.name, pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s (pid %d) still running 5s after SIGKILL", p.name, pid)
	}
}

// lifecycle makes Stop idempotent and safe to call concurrently.
type lifecycle struct {
	once sync.Once
	err  error
}

func (l *lifecycle) do(f func() error) error {
	l.once.Do(func() { l.err = f() })
	return l.err
}

// running lists the servers started by this process and not yet stopped,
// oldest first, for StopAll.
var running struct {
	mu      sync.Mutex
	servers []interface{ Stop() error }
}

func track(s interface{ Stop() error }) {
	running.mu.Lock()
	defer running.mu.Unlock()
	running.servers = append(running.servers, s)
}

func untrack(s interface{ Stop() error }) {
	running.mu.Lock()
	defer running.mu.Unlock()
	running.servers = slices.DeleteFunc(running.servers, func(x interface{ Stop() error }) bool { return x == s })
}

// StopAll stops every Postgres, Cluster and PgBouncer this process started
// and has not stopped yet, newest first so that PgBouncers go before the
// Postgres behind them. Main calls it after the tests, so fixtures shared across
// tests need no cleanup of their own; an --embedded process should call it
// on shutdown.
func StopAll() error {
	running.mu.Lock()
	servers := slices.Clone(running.servers)
	running.mu.Unlock()
	var errs []error
	for _, s := range slices.Backward(servers) {
		errs = append(errs, s.Stop())
	}
	return errors.Join(errs...)
}

// errWrongServer means a readiness probe reached a server that is not ours:
// another process owned the port we picked, and ours will fail to bind.
var errWrongServer = errors.New("a different server answered on the port")

// waitReady polls probe until it succeeds, the process exits, or timeout.
func waitReady(ctx context.Context, p *proc, timeout time.Duration, probe func(context.Context) error) error {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if p.exited() {
			if last == nil {
				return fmt.Errorf("%s exited during startup: %w", p.name, p.err)
			}
			return fmt.Errorf("%s exited during startup (%v); last probe: %w", p.name, p.err, last)
		}
		// A probe can hang on a listener that is not ours (a port thief
		// that accepts but never answers), so give up on it as soon as our
		// process dies: that is the fastest signal of a lost port race.
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		go func() {
			select {
			case <-p.done:
				pcancel()
			case <-pctx.Done():
			}
		}()
		last = probe(pctx)
		pcancel()
		if last == nil || errors.Is(last, errWrongServer) {
			return last
		}
		select {
		case <-p.done:
		case <-tick.C:
		case <-ctx.Done():
			if err := parent.Err(); err != nil {
				return fmt.Errorf("waiting for %s to accept connections: %w", p.name, err)
			}
			return fmt.Errorf("%s did not accept connections within %s; last probe: %w", p.name, timeout, last)
		}
	}
}

// logSize is where the next start attempt's output will begin in the log.
func logSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// logSince reports whether the log, from offset on, contains s.
func logSince(path string, offset int64, s string) bool {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return false
	}
	return strings.Contains(string(b[offset:]), s)
}

// addrInUse is the strerror(EADDRINUSE) both servers log under LC_ALL=C.
const addrInUse = "Address already in use"

// onFreePort calls start with ports from pickPort until one is not lost to
// another process in the race between FreePort and the server's bind.
func onFreePort(log *slog.Logger, start func(port int) error) error {
	for attempt := 1; ; attempt++ {
		port, err := pickPort()
		if err != nil {
			return err
		}
		err = start(port)
		if err == nil || !errors.Is(err, errPortTaken) || attempt == maxPortAttempts {
			return err
		}
		log.Warn("port taken, retrying with another", "port", port, "attempt", attempt)
	}
}

var errPortTaken = errors.New("port taken by another process")

// launch starts a server and waits until probe accepts it. A failed start
// leaves no process behind: stop ends it (it has no clients yet, so a
// short grace is plenty). A lost port race is reported as errPortTaken.
func launch(ctx context.Context, name string, cmd *exec.Cmd, logPath string, port int, timeout time.Duration, stop func(*proc) error, probe func(context.Context) error) (*proc, error) {
	logStart := logSize(logPath)
	pr, err := startProc(name, cmd, logPath)
	if err != nil {
		return nil, err
	}
	err = waitReady(ctx, pr, timeout, probe)
	if err == nil {
		return pr, nil
	}
	stopErr := stop(pr)
	if errors.Is(err, errWrongServer) || logSince(logPath, logStart, addrInUse) {
		return nil, fmt.Errorf("starting %s on port %d: %w: %w", name, port, errPortTaken, err)
	}
	return nil, withLog(errors.Join(fmt.Errorf("starting %s on port %d: %w", name, port, err), stopErr), logPath)
}

// pickPort is FreePort, replaceable so tests can force a port conflict.
var pickPort = FreePort

// maxPortAttempts bounds retries after losing a port race with another
// process; losing more than a couple in a row means something else is wrong.
const maxPortAttempts = 5
