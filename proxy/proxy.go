// Package proxy is pgchaos's data plane: it accepts PostgreSQL clients,
// relays each one to its upstream frame by frame, and keeps cheap per-session
// state (startup parameters, transaction status, prepared statements) that
// fault rules match against.
package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
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
	// startupTimeout bounds how long a client may take to send its startup
	// packet (PostgreSQL's authentication_timeout defaults to a minute).
	startupTimeout = time.Minute
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

	mu       sync.Mutex
	ln       net.Listener
	closed   bool
	handlers sync.WaitGroup
	// accepted holds client connections still in their startup phase, so
	// that Close does not wait for a client that never finishes it.
	accepted map[net.Conn]struct{}
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
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return nil
		}
		p.handlers.Add(1)
		p.accepted[c] = struct{}{}
		p.mu.Unlock()
		go func() {
			defer p.handlers.Done()
			p.handle(c)
		}()
	}
}

// Close stops accepting, closes every session of this proxy and waits for
// their handlers to finish.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	ln := p.ln
	for c := range p.accepted {
		c.Close()
	}
	p.mu.Unlock()
	var err error
	if ln != nil {
		err = ln.Close()
	}
	for _, s := range p.reg.sessionsOf(p) {
		s.Kill()
	}
	p.handlers.Wait()
	return err
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

// relay runs a session's two pumps until the session ends.
func (p *Proxy) relay(s *Session, client, upstream net.Conn) {
	p.reg.add(s)
	if !p.started(s.conn) {
		s.Kill()
	}
	p.m.active.Inc()
	p.m.total.Inc()
	defer func() {
		client.Close()
		upstream.Close()
		p.reg.remove(s)
		p.m.active.Dec()
		p.m.duration.Observe(time.Since(s.Started).Seconds())
	}()
	c2s := newPump(s, ClientToServer, client, upstream, p.m, p.cfg.MaxMessageSize)
	s2c := newPump(s, ServerToClient, upstream, client, p.m, p.cfg.MaxMessageSize)
	var fs *faultSession
	if p.policy != nil {
		fs = newFaultSession(p.policy, s)
		c2s.f = &faultPump{fs: fs, dir: ClientToServer}
		s2c.f = &faultPump{fs: fs, dir: ServerToClient}
	}
	if p.loops != nil {
		// The loop checks the rules too; the first verdict that needs
		// acting on hands the session to goroutine pumps, stop included.
		if ls, ok := p.loops.adopt(s, client, upstream, c2s, s2c); ok {
			<-ls.done
			if !ls.released {
				p.logEnd(s, ls.clientErr, ls.serverErr, ls.upstreamAddr)
				return
			}
			var err error
			if client, upstream, err = ls.conns(); err != nil {
				p.log.Error("could not move a session to the fault path; closing it", "session", s.ID, "err", err)
				return
			}
			defer client.Close()
			defer upstream.Close()
			c2s.src, c2s.dst = client, upstream
			s2c.src, s2c.dst = upstream, client
			p.log.Debug("session moved to the fault path", "session", s.ID)
		}
	}
	p.runPumps(s, client, upstream, c2s, s2c, fs)
}

// runPumps relays a session with a goroutine per direction: the path for
// TLS sessions and for sessions a fault verdict acts on.
func (p *Proxy) runPumps(s *Session, client, upstream net.Conn, c2s, s2c *pump, fs *faultSession) {
	if fs != nil {
		fs.client, fs.upstream = client, upstream
		up, down := newToxicReader(client, ClientToServer, fs), newToxicReader(upstream, ServerToClient, fs)
		c2s.src, s2c.src = up, down
		defer up.close()
		defer down.close()
	}
	if !s.setStop(func() {
		client.Close()
		upstream.Close()
		if fs != nil {
			fs.kill()
		}
	}) {
		return
	}
	lingering := func(which int32) bool { return fs != nil && fs.linger.Load() == which }

	done := make(chan error, 1)
	go func() {
		err := c2s.run()
		// Report before closing the upstream, so that when s2c ends because
		// of this close, the reason is already waiting in done.
		done <- err
		if !lingering(lingerUpstream) {
			upstream.Close()
			if fs != nil && !lingering(lingerClient) {
				fs.kill() // s2c may be held by a hang, waiting on no socket
			}
		}
	}()
	s2cErr := s2c.run()
	var c2sErr error
	select {
	case c2sErr = <-done:
	default:
		if !lingering(lingerClient) {
			client.Close()
			// A pump held by a hang, delay or partition waits on no
			// socket: end the wait too.
			if fs != nil && !lingering(lingerUpstream) {
				fs.kill()
			}
		}
		c2sErr = <-done
	}

	// s2c has stopped, so nothing else writes to the client; an
	// ErrorResponse is only legal between server messages.
	var perr *protocolError
	if errors.As(c2sErr, &perr) && s2c.atBoundary() {
		writeError(client, "FATAL", "08P01", "pgchaos: "+perr.msg)
	}
	// After a one-sided disconnect the other connection stays open and
	// unanswered until its peer gives up or the session is killed.
	switch {
	case lingering(lingerUpstream):
		io.Copy(io.Discard, upstream)
	case lingering(lingerClient):
		io.Copy(io.Discard, client)
	}
	p.logEnd(s, c2sErr, s2cErr, upstream.RemoteAddr().String())
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
