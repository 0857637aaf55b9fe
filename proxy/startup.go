package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgchaos/pgchaos/faults"
)

// handle takes a new client through the startup phase — TLS and GSS
// negotiation, CancelRequest, StartupMessage — then connects upstream and
// relays. Authentication is not performed here: it is relayed like any
// other message. It reports whether a session was started (which then
// accounts for itself in p.live).
func (p *Proxy) handle(c net.Conn) (session bool) {
	client := c
	defer func() {
		if !session {
			client.Close()
		}
		p.started(c)
	}()
	log := p.log.With("client", c.RemoteAddr().String())
	fail := func(reason string, args ...any) {
		msg := fmt.Sprintf(reason, args...)
		p.m.protocolErrors.Inc()
		log.Warn("closing client during startup", "reason", msg)
		writeError(client, "FATAL", "08P01", "pgchaos: "+msg)
	}

	// One deadline for the whole startup phase: negotiating TLS or GSS
	// again does not buy more time.
	c.SetDeadline(time.Now().Add(p.cfg.StartupTimeout))
	left := func(err error) {
		switch {
		case isTimeout(err):
			p.m.startupTimeouts.Inc()
			log.Info("closing client: it did not finish the startup phase in time", "startup_timeout", p.cfg.StartupTimeout.String())
		case !errors.Is(err, io.EOF):
			log.Debug("client left during startup", "err", err)
		}
	}

	isTLS := false
	for negotiations := 0; ; negotiations++ {
		var hdr [8]byte
		if _, err := io.ReadFull(client, hdr[:4]); err != nil {
			left(err)
			return
		}
		if hdr[0] == tlsHandshake && !isTLS {
			if p.cfg.TLS == nil {
				p.m.protocolErrors.Inc()
				log.Warn("closing client: it opened with a TLS handshake (PG17 sslnegotiation=direct) but this proxy has no TLS certificate (--tls-cert/--tls-key)")
				return
			}
			tc := tls.Server(&prefixConn{Conn: client, prefix: hdr[:4]}, p.directTLS)
			if err := tc.HandshakeContext(context.Background()); err != nil {
				if isTimeout(err) {
					left(err)
				} else {
					log.Warn("closing client: direct TLS handshake failed", "err", err)
				}
				return
			}
			client, isTLS = tc, true
			continue
		}
		length := int(binary.BigEndian.Uint32(hdr[:4]))
		if length < 8 || length > maxStartupBytes {
			fail("invalid startup packet length %d", length)
			return
		}
		pkt := make([]byte, length)
		copy(pkt, hdr[:4])
		if _, err := io.ReadFull(client, pkt[4:]); err != nil {
			left(err)
			return
		}
		if negotiations >= 4 {
			fail("too many startup negotiation requests")
			return
		}
		code := binary.BigEndian.Uint32(pkt[4:8])
		switch {
		case code == codeSSLRequest:
			if isTLS || p.cfg.TLS == nil {
				if _, err := client.Write([]byte{'N'}); err != nil {
					return
				}
				continue
			}
			if _, err := client.Write([]byte{'S'}); err != nil {
				return
			}
			tc := tls.Server(client, p.cfg.TLS)
			if err := tc.HandshakeContext(context.Background()); err != nil {
				if isTimeout(err) {
					left(err)
				} else {
					log.Warn("closing client: TLS handshake failed", "err", err)
				}
				return
			}
			client, isTLS = tc, true
		case code == codeGSSENC:
			if _, err := client.Write([]byte{'N'}); err != nil {
				return
			}
		case code == codeCancel:
			c.SetDeadline(time.Time{})
			p.forwardCancel(pkt, log)
			return
		case code>>16 == 3:
			c.SetDeadline(time.Time{})
			return p.startSession(client, c, pkt, log)
		default:
			fail("unsupported frontend protocol or request code %d.%d", code>>16, code&0xffff)
			return
		}
	}
}

// startSession connects the upstream for a client's StartupMessage and
// relays the session. It reports false if no session was started.
func (p *Proxy) startSession(client, rawClient net.Conn, pkt []byte, log interface {
	Warn(string, ...any)
	Debug(string, ...any)
}) (started bool) {
	if !p.reg.reserve() {
		p.m.tooMany.Inc()
		log.Warn("closing client: too many sessions", "max_sessions", p.reg.MaxSessions())
		writeError(client, "FATAL", "53300", fmt.Sprintf("pgchaos: sorry, too many clients already (max-sessions %d)", p.reg.MaxSessions()))
		return false
	}
	defer func() {
		if !started {
			p.reg.unreserve()
		}
	}()
	params, err := startupParameters(pkt[8:])
	if err != nil {
		p.m.protocolErrors.Inc()
		log.Warn("closing client: malformed startup message", "err", err)
		writeError(client, "FATAL", "08P01", "pgchaos: malformed startup message: "+err.Error())
		return false
	}
	s := &Session{
		Proxy:       p.cfg.Name,
		Client:      rawClient.RemoteAddr(),
		Started:     time.Now(),
		User:        params["user"],
		Database:    params["database"],
		Replication: params["replication"],
		owner:       p,
		conn:        rawClient,
	}
	if s.Database == "" {
		s.Database = s.User
	}
	if app, ok := params["application_name"]; ok {
		s.appName.Store(&app)
	}

	if rs := p.policy.Rules(); rs.WantsConnect() {
		view := s.faultView()
		if v, ok := rs.DecideEvent(&view, faults.EventConnect); ok {
			switch v.Action {
			case faults.ActSlowConnect:
				if !p.sleep(v.Delay, v.Released) {
					return false
				}
			case faults.ActRefuse:
				if v.Error != nil {
					writeError(client, v.Error.Severity, v.Error.Code, v.Error.Message)
				}
				log.Warn("connection refused by fault rule", "rule", v.Rule)
				return false
			case faults.ActDisconnect:
				closeConn(client, v.Reset)
				return false
			}
		}
	}

	if clientGone(rawClient) {
		// It gave up (a slow_connect, a long wait to be accepted): do not
		// open a server connection nobody will use.
		log.Debug("client left before the upstream was dialed")
		return false
	}
	upstream, err := p.dialUpstream()
	if err != nil {
		p.m.connectFailures.Inc()
		log.Warn("upstream unreachable", "upstream", p.Upstream(), "err", err)
		writeError(client, "FATAL", "08006", fmt.Sprintf("pgchaos: proxy %q could not connect to upstream %s: %v", p.cfg.Name, p.Upstream(), err))
		return false
	}
	if _, err := upstream.Write(pkt); err != nil {
		upstream.Close()
		p.m.connectFailures.Inc()
		writeError(client, "FATAL", "08006", fmt.Sprintf("pgchaos: proxy %q lost upstream %s during startup: %v", p.cfg.Name, p.Upstream(), err))
		return false
	}
	p.relay(s, client, upstream)
	return true
}

// startupParameters reads the name/value pairs of a StartupMessage after
// its protocol version. Any protocol 3.x is accepted: the packet goes to the
// server as it came, and the server negotiates the minor version and the
// _pq_ options it does not know (NegotiateProtocolVersion), as it would
// without pgchaos in between.
func startupParameters(b []byte) (map[string]string, error) {
	params := map[string]string{}
	for {
		name, rest, ok := cstring(b)
		if !ok {
			return nil, errors.New("the parameter list is not terminated")
		}
		if len(name) == 0 {
			if len(rest) != 0 {
				return nil, errors.New("bytes after the end of the parameter list")
			}
			return params, nil
		}
		value, rest, ok := cstring(rest)
		if !ok {
			return nil, fmt.Errorf("parameter %q has no value", name)
		}
		params[string(name)] = string(value)
		b = rest
	}
}

// dialUpstream connects to the current upstream, negotiating TLS when
// configured, and observes how long a successful connect took.
func (p *Proxy) dialUpstream() (net.Conn, error) {
	start := time.Now()
	addr := p.Upstream()
	d := net.Dialer{Timeout: p.cfg.ConnectTimeout}
	c, err := d.DialContext(p.closing, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if p.cfg.UpstreamTLS == nil {
		p.m.connectLatency.Observe(time.Since(start).Seconds())
		return c, nil
	}
	c.SetDeadline(time.Now().Add(p.cfg.ConnectTimeout))
	req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), codeSSLRequest)
	var answer [1]byte
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, fmt.Errorf("request TLS: %w", err)
	}
	if _, err := io.ReadFull(c, answer[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("request TLS: %w", err)
	}
	if answer[0] != 'S' {
		c.Close()
		return nil, errors.New("upstream does not accept TLS")
	}
	cfg := p.cfg.UpstreamTLS
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		cfg = cfg.Clone()
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	c.SetDeadline(time.Time{})
	p.m.connectLatency.Observe(time.Since(start).Seconds())
	return tc, nil
}

// forwardCancel relays a CancelRequest to the upstream on a connection of
// its own, as the protocol requires. The server answers nothing; it closes.
func (p *Proxy) forwardCancel(pkt []byte, log interface {
	Warn(string, ...any)
	Debug(string, ...any)
}) {
	if rs := p.policy.Rules(); rs.WantsCancel() {
		if v, ok := rs.DecideEvent(&faults.Session{}, faults.EventCancel); ok {
			switch v.Action {
			case faults.ActDrop:
				log.Warn("cancel request dropped by fault rule", "rule", v.Rule)
				return
			case faults.ActDelay:
				if !p.sleep(v.Delay, v.Released) {
					return
				}
			}
		}
	}
	up, err := p.dialUpstream()
	if err != nil {
		p.m.connectFailures.Inc()
		log.Warn("could not forward cancel request: upstream unreachable", "upstream", p.Upstream(), "err", err)
		return
	}
	defer up.Close()
	if !p.track(up) {
		return
	}
	defer p.untrack(up)
	p.m.cancels.Inc()
	up.SetDeadline(time.Now().Add(p.cfg.ConnectTimeout))
	if _, err := up.Write(pkt); err != nil {
		log.Warn("could not forward cancel request", "err", err)
		return
	}
	// Wait for the server to close, so the cancel has been read before we go.
	io.Copy(io.Discard, up)
	log.Debug("forwarded cancel request", "upstream", p.Upstream())
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// prefixConn replays bytes already read from a connection before reading
// from it again: the first bytes of a direct-TLS hello.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// errorResponse encodes an ErrorResponse message.
func errorResponse(severity, code, msg string) []byte {
	e := pgproto3.ErrorResponse{Severity: severity, SeverityUnlocalized: severity, Code: code, Message: msg}
	b, err := e.Encode(nil)
	if err != nil {
		// Only a field with a NUL byte can fail to encode; drop them.
		e.Message = string(bytes.ReplaceAll([]byte(msg), []byte{0}, nil))
		b, _ = e.Encode(nil)
	}
	return b
}
