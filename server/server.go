package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pgchaos/pgchaos/control"
	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/proxy"
)

// Server is a started pgchaos: proxies plus control API.
type Server struct {
	Proxies  []*proxy.Proxy
	Registry *proxy.Registry
	Faults   *faults.Engine
	api      *http.Server
	apiLn    net.Listener
	loops    *proxy.EventLoops
	log      *slog.Logger
}

// Start validates cfg, binds every listener (failing before anything is
// served if one cannot be bound) and starts serving.
func Start(cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config:%w", err)
	}
	if err := control.CheckListen(cfg.API, cfg.AllowRemoteAPI); err != nil {
		return nil, err
	}
	clientTLS, err := cfg.clientTLS()
	if err != nil {
		return nil, err
	}
	upTLS, err := cfg.upstreamTLS()
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := proxy.NewMetrics(reg)
	s := &Server{Registry: proxy.NewRegistry(), log: log}
	s.Faults = faults.NewEngine(faults.Options{Seed: cfg.Seed, Registerer: reg})
	for _, r := range cfg.Rules {
		if _, err := s.Faults.Add(r); err != nil {
			return nil, fmt.Errorf("config: rule %q: %w", r.Name, err)
		}
	}
	if cfg.Relay == "loop" && runtime.GOOS == "linux" {
		loops, err := proxy.NewEventLoops(cfg.Loops)
		if err != nil {
			return nil, fmt.Errorf("start event loops: %w", err)
		}
		s.loops = loops
	}
	for _, pc := range cfg.Proxies {
		p, err := proxy.New(proxy.Config{
			Name: pc.Name, Listen: pc.Listen, Upstream: pc.Upstream,
			TLS: clientTLS, UpstreamTLS: upTLS, MaxMessageSize: cfg.MaxMessageSize,
			Logger: log, Metrics: metrics, Registry: s.Registry, Loops: s.loops, Faults: s.Faults,
		})
		if err == nil {
			err = p.Listen()
		}
		if err != nil {
			s.Close()
			return nil, err
		}
		s.Proxies = append(s.Proxies, p)
	}
	ln, err := net.Listen("tcp", cfg.API)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("control API: listen on %s: %w", cfg.API, err)
	}
	s.apiLn = ln
	s.api = &http.Server{
		Handler:           control.New(control.Config{Proxies: s.Proxies, Registry: s.Registry, Gatherer: reg, Faults: s.Faults, Logger: log}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	for _, p := range s.Proxies {
		go p.Serve()
	}
	go func() {
		if err := s.api.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("control API stopped", "err", err)
		}
	}()
	log.Info("control API listening", "addr", ln.Addr().String())
	return s, nil
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
	for _, p := range s.Proxies {
		errs = append(errs, p.Close())
	}
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
