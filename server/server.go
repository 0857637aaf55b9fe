package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pgchaos/pgchaos/control"
	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/proxy"
)

// Server is a started pgchaos: named proxies, which the control API can
// add, change and remove while it runs, plus the control API.
type Server struct {
	Registry *proxy.Registry
	Faults   *faults.Engine
	api      *http.Server
	apiLn    net.Listener
	loops    *proxy.EventLoops
	log      *slog.Logger
	// metricsLn serves GET /metrics alone (--metrics-listen); the API's
	// http.Server serves it too, so that shutting the API down closes it.
	metricsLn net.Listener
	// base is what every proxy shares: TLS, limits, metrics, registry,
	// event loops and the fault engine.
	base proxy.Config

	// mu serialises changes to the set of proxies; a change holds it while
	// it binds or closes listeners, so two changes never race on a port.
	mu      sync.Mutex
	closed  bool
	proxies []*namedProxy
}

// namedProxy is one proxy of the set, enabled or not.
type namedProxy struct {
	spec control.ProxySpec // Listen is the bound address once it has listened
	// asked is the listen address as given (e.g. "127.0.0.1:0"): asking
	// for it again is no change.
	asked string
	run   *proxy.Proxy // nil while disabled
}

// ConfigError is a configuration that cannot run: a bad setting, or a file
// it names that cannot be read or used. The command line exits 2 for it,
// as for a bad flag; other errors of Start (a port in use) are failures.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// loadedFiles is what the files a Config names hold.
type loadedFiles struct {
	clientTLS, upstreamTLS, apiTLS *tls.Config
	apiToken                       string
}

// load validates c and reads the files it names: certificates, keys, CAs
// and the API token. Its errors are ConfigErrors.
func (c *Config) load() (loadedFiles, error) {
	var f loadedFiles
	if err := c.Validate(); err != nil {
		return f, &ConfigError{fmt.Errorf("config:%w", err)}
	}
	var err error
	if f.clientTLS, err = c.clientTLS(); err != nil {
		return f, &ConfigError{err}
	}
	if f.upstreamTLS, err = c.upstreamTLS(); err != nil {
		return f, &ConfigError{err}
	}
	if f.apiToken, err = c.apiToken(); err != nil {
		return f, &ConfigError{err}
	}
	if f.apiTLS, err = c.apiTLS(); err != nil {
		return f, &ConfigError{err}
	}
	return f, nil
}

// Check says whether Start would refuse c for a bad setting or a file it
// cannot read or use, without starting anything: a caller that must do
// something costly first (start a database) checks before.
func (c *Config) Check() error {
	_, err := c.load()
	return err
}

// Start validates cfg, binds every listener (failing before anything is
// served if one cannot be bound) and starts serving.
func Start(cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	files, err := cfg.load()
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerBuildInfo(reg)
	s := &Server{Registry: proxy.NewRegistry(), log: log}
	s.Faults = faults.NewEngine(faults.Options{Seed: cfg.Seed, Registerer: reg, FullSQL: cfg.LogSQL == LogSQLFull, Observe: cfg.Observe})
	for _, r := range cfg.Rules {
		if _, err := s.Faults.Add(r); err != nil {
			return nil, &ConfigError{fmt.Errorf("config: rule %q: %w", r.Name, err)}
		}
	}
	if cfg.Relay == "loop" && runtime.GOOS == "linux" {
		loops, err := proxy.NewEventLoops(cfg.Loops)
		if err != nil {
			return nil, fmt.Errorf("start event loops: %w", err)
		}
		s.loops = loops
	}
	s.Registry.SetMaxSessions(cfg.MaxSessions)
	s.base = proxy.Config{
		TLS: files.clientTLS, UpstreamTLS: files.upstreamTLS, MaxMessageSize: cfg.MaxMessageSize, StartupTimeout: time.Duration(cfg.StartupTimeout),
		Logger: log, Metrics: proxy.NewMetrics(reg), Registry: s.Registry, Loops: s.loops, Faults: s.Faults,
	}
	for _, pc := range cfg.Proxies {
		np := &namedProxy{spec: control.ProxySpec{Name: pc.Name, Listen: pc.Listen, Upstream: pc.Upstream}, asked: pc.Listen}
		if !pc.Disabled() {
			if err := s.listen(np); err != nil {
				s.Close()
				return nil, err
			}
		}
		s.proxies = append(s.proxies, np)
	}
	ln, err := net.Listen("tcp", cfg.API)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("control API: listen on %s: %w", cfg.API, err)
	}
	s.apiLn = ln
	var handler http.Handler = control.New(control.Config{
		Proxies: s, Registry: s.Registry, Gatherer: reg, Faults: s.Faults, Logger: log,
		Token: files.apiToken, HostCheck: boundToLoopback(ln), RemoteListen: cfg.AllowRemoteAPI,
	})
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			ln.Close()
			s.Close()
			return nil, fmt.Errorf("metrics: listen on %s: %w", cfg.MetricsListen, err)
		}
		s.metricsLn = metricsListener{mln}
		handler = byListener(handler, control.MetricsHandler(reg, boundToLoopback(mln)))
	}
	s.api = &http.Server{
		Handler:           handler,
		ConnContext:       markMetricsConn,
		TLSConfig:         files.apiTLS,
		ReadHeaderTimeout: 10 * time.Second,
		// TLS handshake failures and the like: the client's problem.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	for _, np := range s.proxies {
		if np.run != nil {
			go np.run.Serve()
		}
	}
	for _, l := range []net.Listener{ln, s.metricsLn} {
		if l == nil {
			continue
		}
		go func() {
			if err := serveHTTP(s.api, l, files.apiTLS != nil); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("control API stopped", "addr", l.Addr().String(), "err", err)
			}
		}()
	}
	if s.metricsLn != nil {
		log.Info("metrics listening", "addr", s.metricsLn.Addr().String(), "path", "/metrics")
	}
	log.Info("control API listening", "addr", ln.Addr().String(), "tls", files.apiTLS != nil, "token", files.apiToken != "")
	if len(s.proxies) == 0 {
		log.Info("no proxies configured yet: add them through the control API (POST /proxies)")
	}
	return s, nil
}

// boundToLoopback reports whether a listener accepts from this machine only.
func boundToLoopback(ln net.Listener) bool {
	a, ok := ln.Addr().(*net.TCPAddr)
	return ok && a.IP.IsLoopback()
}

// metricsListener marks the connections it accepts as the metrics
// listener's (see markMetricsConn).
type metricsListener struct{ net.Listener }

type metricsConn struct{ net.Conn }

func (l metricsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return metricsConn{c}, nil
}

type metricsConnKey struct{}

// markMetricsConn tells the handler which connections came through the
// metrics listener.
func markMetricsConn(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if _, ok := c.(metricsConn); ok {
		return context.WithValue(ctx, metricsConnKey{}, true)
	}
	return ctx
}

// byListener sends the metrics listener's requests to metrics, the rest
// to api.
func byListener(api, metrics http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Context().Value(metricsConnKey{}) != nil {
			metrics.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

// MetricsAddr is the bound --metrics-listen address (nil: none).
func (s *Server) MetricsAddr() net.Addr {
	if s.metricsLn == nil {
		return nil
	}
	return s.metricsLn.Addr()
}

// serveHTTP serves srv on ln, with srv's TLS config or without TLS. (Not
// "when srv.TLSConfig is set": serving sets one up for HTTP/2.)
func serveHTTP(srv *http.Server, ln net.Listener, useTLS bool) error {
	if useTLS {
		return srv.ServeTLS(ln, "", "")
	}
	return srv.Serve(ln)
}

// listen makes np's proxy and binds its listen address, remembering the
// bound address. The caller starts serving.
func (s *Server) listen(np *namedProxy) error {
	cfg := s.base
	cfg.Name, cfg.Listen, cfg.Upstream = np.spec.Name, np.spec.Listen, np.spec.Upstream
	p, err := proxy.New(cfg)
	if err == nil {
		if err = p.Listen(); err != nil {
			// Its series were made; a proxy that never ran keeps none.
			s.base.Metrics.Forget(np.spec.Name)
			s.Faults.ForgetProxy(np.spec.Name)
		}
	}
	if err != nil {
		np.spec.Enabled = false
		return err
	}
	np.run = p
	np.spec.Listen = p.Addr().String()
	np.spec.Enabled = true
	return nil
}

// stop stops np's proxy accepting, so its port is free at once, and adds it
// to closing, whose sessions the caller ends once it has let go of s.mu:
// ending sessions may take a while (bounded), and the control API must
// not wait on the data plane while holding the lock. np keeps its settings.
func (s *Server) stop(np *namedProxy, closing *[]*proxy.Proxy) {
	if np.run != nil {
		if err := np.run.StopAccepting(); err != nil {
			s.log.Warn("closing proxy", "proxy", np.spec.Name, "err", err)
		}
		*closing = append(*closing, np.run)
		np.run = nil
	}
	np.spec.Enabled = false
}

// closeProxies ends the sessions of stopped proxies, all at once, so the
// whole takes no longer than one proxy's bounded close.
func closeProxies(list []*proxy.Proxy) error {
	errs := make([]error, len(list))
	var wg sync.WaitGroup
	for i, p := range list {
		wg.Go(func() { errs[i] = p.Close() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// dropRules removes the rules bound to the named proxy (its toxics).
func (s *Server) dropRules(name string) {
	for _, rs := range s.Faults.Rules() {
		if rs.Proxy == name {
			s.Faults.Remove(name, rs.Name)
		}
	}
}

// sameListen reports whether addr asks for what np listens on already.
func sameListen(np *namedProxy, addr string) bool {
	if addr == np.spec.Listen || addr == np.asked {
		return true
	}
	a, err := net.ResolveTCPAddr("tcp", addr)
	return err == nil && a.String() == np.spec.Listen
}

var errClosed = errors.New("pgchaos is shutting down")

func (s *Server) find(name string) (int, *namedProxy) {
	for i, np := range s.proxies {
		if np.spec.Name == name {
			return i, np
		}
	}
	return -1, nil
}

// Proxies returns the proxies that are listening, in the order added.
func (s *Server) Proxies() []*proxy.Proxy {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*proxy.Proxy
	for _, np := range s.proxies {
		if np.run != nil {
			out = append(out, np.run)
		}
	}
	return out
}

// ListProxies returns every proxy, enabled or not, in the order added.
func (s *Server) ListProxies() []control.ProxySpec {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]control.ProxySpec, len(s.proxies))
	for i, np := range s.proxies {
		out[i] = np.spec
	}
	return out
}

// GetProxy returns one proxy's settings.
func (s *Server) GetProxy(name string) (control.ProxySpec, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, np := s.find(name); np != nil {
		return np.spec, nil
	}
	return control.ProxySpec{}, control.ErrProxyNotFound
}

// AddProxy adds a proxy; an enabled one is listening when AddProxy returns.
func (s *Server) AddProxy(spec control.ProxySpec) (control.ProxySpec, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return control.ProxySpec{}, errClosed
	}
	if _, np := s.find(spec.Name); np != nil {
		return control.ProxySpec{}, fmt.Errorf("proxy %q: %w", spec.Name, control.ErrProxyExists)
	}
	np, err := s.open(spec)
	if err != nil {
		return control.ProxySpec{}, err
	}
	s.proxies = append(s.proxies, np)
	return np.spec, nil
}

// open makes a proxy from spec, listening and serving if it is enabled.
func (s *Server) open(spec control.ProxySpec) (*namedProxy, error) {
	np := &namedProxy{spec: spec, asked: spec.Listen}
	np.spec.Enabled = false
	if spec.Enabled {
		if err := s.listen(np); err != nil {
			return nil, err
		}
		go np.run.Serve()
		s.log.Info("proxy added", "proxy", spec.Name, "listen", np.spec.Listen, "upstream", spec.Upstream)
	}
	return np, nil
}

// PutProxy adds a proxy or replaces the one of the same name. One with the
// same listen address and upstream is kept as it is; a replaced one loses
// its sessions and its rules.
func (s *Server) PutProxy(spec control.ProxySpec) (control.ProxySpec, error) {
	var closing []*proxy.Proxy
	defer func() { closeProxies(closing) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return control.ProxySpec{}, errClosed
	}
	i, old := s.find(spec.Name)
	if old != nil {
		if sameListen(old, spec.Listen) && old.spec.Upstream == spec.Upstream {
			return old.spec, nil
		}
		s.dropRules(spec.Name)
		s.stop(old, &closing)
		s.base.Metrics.Forget(spec.Name) // before its successor makes its own
		s.Faults.ForgetProxy(spec.Name)
		s.proxies = slices.Delete(s.proxies, i, i+1)
	}
	np, err := s.open(spec)
	if err != nil {
		return control.ProxySpec{}, err
	}
	if i >= 0 {
		s.proxies = slices.Insert(s.proxies, i, np)
	} else {
		s.proxies = append(s.proxies, np)
	}
	return np.spec, nil
}

// UpdateProxy gives the proxy named spec.Name spec's listen address,
// upstream and enabled state. A new listen address or upstream restarts it
// (closing its sessions); disabling closes its listener and sessions and
// keeps its rules; enabling listens again on the address it had.
func (s *Server) UpdateProxy(spec control.ProxySpec) (control.ProxySpec, error) {
	var closing []*proxy.Proxy
	defer func() { closeProxies(closing) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return control.ProxySpec{}, errClosed
	}
	_, np := s.find(spec.Name)
	if np == nil {
		return control.ProxySpec{}, control.ErrProxyNotFound
	}
	if !sameListen(np, spec.Listen) || np.spec.Upstream != spec.Upstream {
		s.stop(np, &closing)
		np.spec.Listen, np.asked, np.spec.Upstream = spec.Listen, spec.Listen, spec.Upstream
	}
	switch {
	case spec.Enabled && np.run == nil:
		if err := s.listen(np); err != nil {
			return np.spec, err
		}
		go np.run.Serve()
		s.log.Info("proxy enabled", "proxy", spec.Name, "listen", np.spec.Listen, "upstream", np.spec.Upstream)
	case !spec.Enabled && np.run != nil:
		s.stop(np, &closing)
		s.log.Info("proxy disabled", "proxy", spec.Name)
	}
	return np.spec, nil
}

// RemoveProxy closes a proxy and its sessions and removes its rules.
func (s *Server) RemoveProxy(name string) error {
	var closing []*proxy.Proxy
	defer func() { closeProxies(closing) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	i, np := s.find(name)
	if np == nil {
		return control.ErrProxyNotFound
	}
	// Rules first: removing one releases what a hang holds.
	s.dropRules(name)
	s.stop(np, &closing)
	// The series go now: sessions still closing count on series no
	// longer exported, and a new proxy of the name makes its own.
	s.base.Metrics.Forget(name)
	s.Faults.ForgetProxy(name)
	s.proxies = slices.Delete(s.proxies, i, i+1)
	s.log.Info("proxy removed", "proxy", name)
	return nil
}

// APIAddr is the bound control API address.
func (s *Server) APIAddr() net.Addr { return s.apiLn.Addr() }

// Close removes every fault rule first (releasing whatever a hang holds),
// then stops accepting, closes every session and the control API.
func (s *Server) Close() error {
	if s.Faults != nil {
		s.Faults.Reset()
	}
	var errs []error
	var closing []*proxy.Proxy
	s.mu.Lock()
	s.closed = true
	for _, np := range s.proxies {
		s.stop(np, &closing)
	}
	s.mu.Unlock()
	errs = append(errs, closeProxies(closing))
	if s.loops != nil {
		s.loops.Close()
	}
	if s.api != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		errs = append(errs, s.api.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// Run starts the server and serves until ctx is done, then shuts down.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	s, err := Start(cfg, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	if log != nil {
		log.Info("shutting down")
	}
	return s.Close()
}
