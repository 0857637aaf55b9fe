// Package proxy is pgchaos's data plane: it accepts PostgreSQL clients,
// relays each one to its upstream frame by frame, and keeps cheap per-session
// state (startup parameters, transaction status, prepared statements) that
// fault rules match against.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgchaos/pgchaos/faults"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxMessageSize = 1 << 30
	DefaultConnectTimeout = 10 * time.Second
	// DefaultStartupTimeout bounds the whole startup phase of a client —
	// TLS and GSS negotiation included — up to its StartupMessage
	// (PostgreSQL's authentication_timeout defaults to a minute).
	DefaultStartupTimeout = time.Minute
	// fdReserve is how many file descriptors the proxy leaves free for the
	// control API and for upstream connections: a client accepted beyond
	// that is turned away, so that the API still answers at the limit.
	fdReserve = 64
)

// Config describes one named proxy.
type Config struct {
	Name     string
	Listen   string // host:port to accept clients on
	Upstream string // host:port of PostgreSQL or PgBouncer
	// TLS, when set, terminates client TLS: SSLRequest is answered 'S' and a
	// PG17 direct-TLS hello is accepted. Nil answers SSLRequest with 'N'.
	TLS *tls.Config
	// UpstreamTLS, when set, dials the upstream over TLS.
	UpstreamTLS    *tls.Config
	MaxMessageSize int
	ConnectTimeout time.Duration
	StartupTimeout time.Duration
	Logger         *slog.Logger
	Metrics        *Metrics
	Registry       *Registry
	// Loops relay plain-TCP sessions on event loops shared between proxies.
	// Nil relays every session with a pair of goroutines.
	Loops *EventLoops
	// Faults, when set, decides what happens to this proxy's traffic.
	// Sessions that rules may touch leave the event loops for goroutine pumps.
	Faults *faults.Engine
}

// Proxy accepts clients on one address and relays them to one upstream.
type Proxy struct {
	cfg      Config
	log      *slog.Logger
	m        *proxyMetrics
	reg      *Registry
	loops    *EventLoops
	policy   *faults.Policy
	upstream atomic.Pointer[string]
	// directTLS is cfg.TLS plus the ALPN protocol that PG17 clients
	// require for direct TLS.
	directTLS *tls.Config

	mu     sync.Mutex
	ln     net.Listener
	closed bool
	// closing is cancelled by Close: waits of the startup phase (a
	// slow_connect, a delayed cancel, a dial) end with it.
	closing     context.Context
	stopClosing context.CancelFunc
	// live counts clients from accept until their session has ended (or
	// their startup failed). Sessions on an event loop have no goroutine
	// of their own, so this, not a goroutine count, is what Close awaits.
	live sync.WaitGroup
	// accepted holds connections of the startup phase (clients and
	// forwarded cancels), so that Close does not wait for a client that
	// never finishes it.
	accepted map[net.Conn]struct{}
	// spare is a descriptor held back so that, out of descriptors, the
	// proxy can still accept a client to tell it why it is turned away.
	spare   *os.File
	fdLimit int
	// lastFDWarning rate-limits the log line about running out (unix nanos).
	lastFDWarning atomic.Int64
}

// New checks cfg and returns a proxy that is not yet listening.
func New(cfg Config) (*Proxy, error) {
	if cfg.Name == "" {
		return nil, errors.New("proxy: name is empty")
	}
	if cfg.Listen == "" {
		return nil, fmt.Errorf("proxy %q: listen address is empty", cfg.Name)
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return nil, fmt.Errorf("proxy %q: listen address %q: %w", cfg.Name, cfg.Listen, err)
	}
	if _, _, err := net.SplitHostPort(cfg.Upstream); err != nil {
		return nil, fmt.Errorf("proxy %q: upstream address %q: %w", cfg.Name, cfg.Upstream, err)
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.StartupTimeout <= 0 {
		cfg.StartupTimeout = DefaultStartupTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Registry == nil {
		cfg.Registry = NewRegistry()
	}
	p := &Proxy{
		cfg:      cfg,
		log:      cfg.Logger.With("proxy", cfg.Name),
		m:        cfg.Metrics.forProxy(cfg.Name),
		reg:      cfg.Registry,
		loops:    cfg.Loops,
		accepted: make(map[net.Conn]struct{}),
	}
	p.closing, p.stopClosing = context.WithCancel(context.Background())
	p.fdLimit = fdLimit()
	if cfg.Faults != nil {
		p.policy = cfg.Faults.Policy(cfg.Name)
	}
	if cfg.TLS != nil {
		p.directTLS = cfg.TLS.Clone()
		p.directTLS.NextProtos = append(slices.Clip(p.directTLS.NextProtos), "postgresql")
	}
	up := cfg.Upstream
	p.upstream.Store(&up)
	return p, nil
}

// Name is the proxy's name.
func (p *Proxy) Name() string { return p.cfg.Name }

// Upstream is the address new sessions are relayed to.
func (p *Proxy) Upstream() string { return *p.upstream.Load() }

// SetUpstream switches where new sessions go; live sessions stay where they are.
func (p *Proxy) SetUpstream(addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("proxy %q: upstream address %q: %w", p.cfg.Name, addr, err)
	}
	p.upstream.Store(&addr)
	return nil
}

// Listen binds the listen address. Serve accepts on it.
func (p *Proxy) Listen() error {
	ln, err := net.Listen("tcp", p.cfg.Listen)
	if err != nil {
		return fmt.Errorf("proxy %q: listen on %s: %w", p.cfg.Name, p.cfg.Listen, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		ln.Close()
		return fmt.Errorf("proxy %q: closed", p.cfg.Name)
	}
	p.ln = ln
	p.spare, _ = os.Open(os.DevNull)
	return nil
}

// Addr is the bound listen address (after Listen).
func (p *Proxy) Addr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return nil
	}
	return p.ln.Addr()
}

// Start listens and serves in the background until Close.
func (p *Proxy) Start() error {
	if err := p.Listen(); err != nil {
		return err
	}
	go p.Serve()
	return nil
}

// Serve accepts clients until Close. It returns nil after Close.
func (p *Proxy) Serve() error {
	p.mu.Lock()
	ln := p.ln
	p.mu.Unlock()
	if ln == nil {
		return fmt.Errorf("proxy %q: Serve before Listen", p.cfg.Name)
	}
	p.log.Info("proxy listening", "listen", ln.Addr().String(), "upstream", p.Upstream())
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return nil
			}
			if isOutOfFDs(err) {
				p.turnAwayOutOfFDs(ln)
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporaryAccept(err) {
				// Out of file descriptors and the like: back off rather than spin.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				p.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("proxy %q: accept: %w", p.cfg.Name, err)
		}
		backoff = 0
		if fd := fdOf(c); p.fdLimit > 0 && fd >= p.fdLimit-fdReserve {
			p.rejectOutOfFDs(c, fmt.Sprintf("only %d of %d file descriptors are left, kept for the control API and upstream connections", p.fdLimit-fd, p.fdLimit))
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return nil
		}
		p.live.Add(1)
		p.accepted[c] = struct{}{}
		p.mu.Unlock()
		go func() {
			if !p.handle(c) {
				p.live.Done()
			}
		}()
	}
}

// closeWait bounds how long Close waits for sessions to finish after it
// has ended them: whatever a session is doing, Close returns.
const closeWait = 2 * time.Second

// StopAccepting closes the listener and the connections still in their
// startup phase. It never waits; Close ends the sessions.
func (p *Proxy) StopAccepting() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.stopClosing()
	if p.spare != nil {
		p.spare.Close()
		p.spare = nil
	}
	ln := p.ln
	for c := range p.accepted {
		c.Close()
	}
	p.mu.Unlock()
	if ln != nil {
		return ln.Close()
	}
	return nil
}

// Close stops accepting, ends every session of this proxy and waits, at
// most closeWait, for them to be gone.
func (p *Proxy) Close() error {
	err := p.StopAccepting()
	farewell := fmt.Sprintf("pgchaos: terminating connection because proxy %q is shutting down", p.cfg.Name)
	for _, s := range p.reg.sessionsOf(p) {
		s.terminate(farewell)
	}
	done := make(chan struct{})
	go func() {
		p.live.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(closeWait):
		p.log.Error("sessions still running after the proxy was closed; leaving them", "wait", closeWait.String(), "sessions", len(p.reg.sessionsOf(p)))
	}
	return err
}

// track and untrack keep a startup-phase connection where Close finds it.
// track reports false if the proxy is closing (and closes c).
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.accepted[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.accepted, c)
	p.mu.Unlock()
}

// sleep waits for d, or until released is closed or the proxy closes. It
// reports false when the proxy closed.
func (p *Proxy) sleep(d time.Duration, released <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-released:
	case <-p.closing.Done():
		return false
	}
	return true
}

// Sessions lists this proxy's live sessions.
func (p *Proxy) Sessions() []SessionInfo {
	var out []SessionInfo
	for _, info := range p.reg.Sessions() {
		if info.Proxy == p.cfg.Name {
			out = append(out, info)
		}
	}
	return out
}

// turnAwayOutOfFDs is accept failing for want of a descriptor (EMFILE,
// ENFILE): the spare descriptor makes room to accept the client waiting
// first and tell it why, instead of leaving it to time out in silence.
func (p *Proxy) turnAwayOutOfFDs(ln net.Listener) {
	p.mu.Lock()
	spare := p.spare
	p.spare = nil
	p.mu.Unlock()
	if spare == nil {
		p.rejected(nil, "out of file descriptors")
		time.Sleep(10 * time.Millisecond) // nothing to make room with: do not spin
		return
	}
	spare.Close()
	c, err := ln.Accept()
	if err == nil {
		p.rejectOutOfFDs(c, "out of file descriptors")
	}
	p.mu.Lock()
	if !p.closed {
		p.spare, _ = os.Open(os.DevNull)
	}
	p.mu.Unlock()
}

// rejectOutOfFDs turns a client away with FATAL 53000 and says so.
func (p *Proxy) rejectOutOfFDs(c net.Conn, why string) {
	p.rejected(c, why)
	writeError(c, "FATAL", "53000", "pgchaos: proxy "+p.cfg.Name+" is out of file descriptors; try again later")
	c.Close()
}

func (p *Proxy) rejected(c net.Conn, why string) {
	p.m.outOfFDs.Inc()
	now := time.Now().UnixNano()
	if last := p.lastFDWarning.Load(); now-last > int64(time.Second) && p.lastFDWarning.CompareAndSwap(last, now) {
		args := []any{"reason", why, "limit", p.fdLimit}
		if c != nil {
			args = append(args, "client", c.RemoteAddr().String())
		}
		p.log.Warn("turning clients away: out of file descriptors (logged at most once a second; see pgchaos_clients_rejected_total)", args...)
	}
}

func isTemporaryAccept(err error) bool {
	var se interface{ Temporary() bool }
	return errors.As(err, &se) && se.Temporary()
}

// started marks a client connection as past its startup phase: from now
// on the session registry ends it. It reports false if the proxy is closing.
func (p *Proxy) started(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.accepted, c)
	return !p.closed
}

// logEnd logs why a session ended and counts protocol errors.
func (p *Proxy) logEnd(s *Session, clientErr, serverErr error, upstream string) {
	var perr *protocolError
	switch {
	case errors.As(clientErr, &perr):
		p.m.protocolErrors.Inc()
		p.log.Warn("closing session: client broke the protocol", "session", s.ID, "client", s.Client.String(), "reason", perr.msg)
	case errors.As(serverErr, &perr):
		p.m.protocolErrors.Inc()
		p.log.Warn("closing session: upstream broke the protocol", "session", s.ID, "client", s.Client.String(), "upstream", upstream, "reason", perr.msg)
	default:
		p.log.Debug("session ended", "session", s.ID, "client", s.Client.String(),
			"killed", s.wasKilled(), "duration", time.Since(s.Started).String())
	}
}

// writeError sends an ErrorResponse to a peer, ignoring failures: the
// session is being torn down either way.
func writeError(c net.Conn, severity, code, msg string) {
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Write(errorResponse(severity, code, msg))
}
