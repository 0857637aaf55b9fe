// Package control is pgchaos's HTTP control plane: health, the proxies and
// their sessions as JSON, and Prometheus metrics.
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/proxy"
)

// Server serves the control API for a set of proxies.
type Server struct {
	proxies  []*proxy.Proxy
	registry *proxy.Registry
	gatherer prometheus.Gatherer
	faults   *faults.Engine
	log      *slog.Logger
	started  time.Time
	mux      *http.ServeMux
}

// Config wires a Server to the data plane.
type Config struct {
	Proxies  []*proxy.Proxy
	Registry *proxy.Registry
	Gatherer prometheus.Gatherer // what /metrics exposes; nil: no metrics
	Faults   *faults.Engine      // rules and events; nil: no fault endpoints
	Logger   *slog.Logger
}

// ProxyInfo is how GET /proxies shows a proxy.
type ProxyInfo struct {
	Name     string `json:"name"`
	Listen   string `json:"listen"`
	Upstream string `json:"upstream"`
	Sessions int    `json:"sessions"`
}

// New returns the control API handler.
func New(cfg Config) *Server {
	s := &Server{
		proxies:  cfg.Proxies,
		registry: cfg.Registry,
		gatherer: cfg.Gatherer,
		faults:   cfg.Faults,
		log:      cfg.Logger,
		started:  time.Now(),
		mux:      http.NewServeMux(),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /proxies", s.listProxies)
	s.mux.HandleFunc("GET /sessions", s.listSessions)
	s.mux.HandleFunc("GET /sessions/{id}", s.getSession)
	s.mux.HandleFunc("DELETE /sessions/{id}", s.killSession)
	if s.faults != nil {
		s.rulesRoutes()
	}
	if s.gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"status":  "ok",
		"proxies": len(s.proxies),
		"uptime":  time.Since(s.started).Round(time.Millisecond).String(),
	})
}

func (s *Server) listProxies(w http.ResponseWriter, r *http.Request) {
	counts := map[string]int{}
	for _, si := range s.registry.Sessions() {
		counts[si.Proxy]++
	}
	out := make([]ProxyInfo, 0, len(s.proxies))
	for _, p := range s.proxies {
		listen := ""
		if a := p.Addr(); a != nil {
			listen = a.String()
		}
		out = append(out, ProxyInfo{Name: p.Name(), Listen: listen, Upstream: p.Upstream(), Sessions: counts[p.Name()]})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) {
	list := s.registry.Sessions()
	if name := r.URL.Query().Get("proxy"); name != "" {
		kept := list[:0]
		for _, si := range list {
			if si.Proxy == name {
				kept = append(kept, si)
			}
		}
		list = kept
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) session(w http.ResponseWriter, r *http.Request) (*proxy.Session, bool) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("session id %q is not a number", r.PathValue("id")))
		return nil, false
	}
	sess, ok := s.registry.Get(id)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no session with id %d", id))
		return nil, false
	}
	return sess, true
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	if sess, ok := s.session(w, r); ok {
		writeJSON(w, http.StatusOK, sess.Info())
	}
}

func (s *Server) killSession(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.session(w, r)
	if !ok {
		return
	}
	sess.Kill()
	s.log.Info("session killed through the control API", "session", sess.ID, "proxy", sess.Proxy)
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// writeError writes the control plane's JSON error shape.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"error": msg, "status": status})
}

// CheckListen refuses a non-loopback control address unless allowed: the
// API can kill sessions and, later, inject faults.
func CheckListen(addr string, allowRemote bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("control address %q: %w", addr, err)
	}
	if allowRemote {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return errors.New("control address " + addr + " is not a loopback address; pass --api-allow-remote to expose the API beyond this machine")
	}
	return nil
}
