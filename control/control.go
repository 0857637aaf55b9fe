// Package control is pgchaos's HTTP control plane: health, the proxies and
// their sessions as JSON, fault rules, a toxiproxy-compatible API, and
// Prometheus metrics.
package control

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/proxy"
)

// Server serves the control API for a set of proxies.
type Server struct {
	proxies  ProxyManager
	registry *proxy.Registry
	gatherer prometheus.Gatherer
	faults   *faults.Engine
	log      *slog.Logger
	started  time.Time
	mux      *http.ServeMux
	// token is the hash of the bearer token every request but liveness
	// needs (nil: none).
	token     *[sha256.Size]byte
	hostCheck bool
	// remoteListen lets toxiproxy's API open listeners beyond loopback.
	remoteListen bool
}

// Config wires a Server to the data plane.
type Config struct {
	Proxies  ProxyManager
	Registry *proxy.Registry
	Gatherer prometheus.Gatherer // what /metrics exposes; nil: no metrics
	Faults   *faults.Engine      // rules and events; nil: no fault endpoints
	Logger   *slog.Logger
	// Token, when set, is the bearer token every request must carry
	// (Authorization: Bearer TOKEN) except GET /healthz and GET /version.
	Token string
	// HostCheck answers 403 to a request whose Host header is not a
	// loopback address, localhost or *.localhost. Set it when the API
	// listens on loopback: a web page can then reach it only through DNS
	// rebinding, and that request names the page's host.
	HostCheck bool
	// RemoteListen lets the toxiproxy-compatible API create proxies that
	// listen beyond loopback (pgchaos proxy --api-allow-remote). Without
	// it such a listen address is a 403: an API client is not trusted to
	// open ports on every interface of the machine.
	RemoteListen bool
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

		hostCheck:    cfg.HostCheck,
		remoteListen: cfg.RemoteListen,
	}
	if cfg.Token != "" {
		sum := sha256.Sum256([]byte(cfg.Token))
		s.token = &sum
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.toxiproxyRoutes()
	s.mux.HandleFunc("GET /sessions", s.listSessions)
	s.mux.HandleFunc("GET /sessions/{id}", s.getSession)
	s.mux.HandleFunc("DELETE /sessions/{id}", s.killSession)
	if s.faults != nil {
		s.rulesRoutes()
	}
	if s.gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))
	}
	s.mux.HandleFunc("/", s.noRoute)
	return s
}

// MetricsHandler serves GET /metrics alone, for a listener of its own
// (pgchaos proxy --metrics-listen) that Prometheus scrapes: read-only and
// without SQL, so it needs no token. With hostCheck it refuses Host
// headers as the API does on loopback.
func MetricsHandler(g prometheus.Gatherer, hostCheck bool) http.Handler {
	metrics := promhttp.HandlerFor(g, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case hostCheck && !allowedHost(r.Host):
			writeError(w, http.StatusForbidden, fmt.Sprintf("host %q not allowed: this address listens on loopback and answers only requests for localhost or a loopback address", r.Host))
		case r.URL.Path != "/metrics":
			writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s (this address serves only GET /metrics)", r.Method, r.URL.Path))
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on /metrics (allowed: GET)", r.Method))
		default:
			metrics.ServeHTTP(w, r)
		}
	})
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.guard(w, r) {
		s.log.Debug("control API request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "host", r.Host)
		return
	}
	// A web page must not change faults or proxies through the visitor's
	// browser (toxiproxy refuses browsers outright; reading stays allowed).
	if r.Method != http.MethodGet && r.Method != http.MethodHead && strings.HasPrefix(r.UserAgent(), "Mozilla/") {
		writeError(w, http.StatusForbidden, "user agent not allowed: browsers may only read the control API")
		return
	}
	s.mux.ServeHTTP(w, r)
}

// noRoute answers a request no endpoint takes: 405 with the methods the
// path takes, or 404. Both are JSON, since toxiproxy's clients decode every
// error body.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := *r
		probe.Method = m
		if _, pattern := s.mux.Handler(&probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", ")))
		return
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"status":  "ok",
		"proxies": len(s.proxies.ListProxies()),
		"uptime":  time.Since(s.started).Round(time.Millisecond).String(),
	})
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
// API kills sessions, injects faults and opens listeners.
func CheckListen(addr string, allowRemote bool) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("control address %q: %w", addr, err)
	}
	if allowRemote || IsLoopbackAddr(addr) {
		return nil
	}
	return errors.New("control address " + addr + " is not a loopback address; pass --api-allow-remote (api_allow_remote: true) to expose the API beyond this machine")
}
