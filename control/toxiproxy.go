package control

// The toxiproxy-compatible API: toxiproxy's endpoints, JSON shapes, methods
// and status codes (as of toxiproxy v2.12.0), so that toxiproxy's clients,
// its CLI and Testcontainers' toxiproxy module drive pgchaos unchanged.
// A toxic is a fault rule of one proxy: toxiproxy's byte-level toxics keep
// their names, and pgchaos's protocol actions are the toxic types pg_*.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/Shopify/toxiproxy/v2/toxics"

	"github.com/pgchaos/pgchaos/faults"
)

// ToxiproxyVersion is what GET /version reports: the toxiproxy API version
// pgchaos speaks, with build metadata that says it is pgchaos.
const ToxiproxyVersion = "2.12.0+pgchaos"

// DefaultToxiproxyListen is where a proxy created without a listen address
// listens: a free port on the loopback interface.
const DefaultToxiproxyListen = "127.0.0.1:0"

// ProxySpec is a named proxy as the API shows it. Listen is the bound
// address once the proxy has listened.
type ProxySpec struct {
	Name     string `json:"name"`
	Listen   string `json:"listen"`
	Upstream string `json:"upstream"`
	Enabled  bool   `json:"enabled"`
}

// ProxyManager is the set of named proxies, changeable while pgchaos runs.
// server.Server implements it.
type ProxyManager interface {
	// ListProxies returns every proxy, enabled or not, in the order added.
	ListProxies() []ProxySpec
	// GetProxy fails with ErrProxyNotFound.
	GetProxy(name string) (ProxySpec, error)
	// AddProxy creates a proxy, listening before it returns when enabled.
	// It fails with ErrProxyExists.
	AddProxy(p ProxySpec) (ProxySpec, error)
	// PutProxy adds a proxy or replaces the one of that name. One with the
	// same listen address and upstream is kept unchanged; a replaced one
	// loses its sessions and its rules.
	PutProxy(p ProxySpec) (ProxySpec, error)
	// UpdateProxy applies p's listen, upstream and enabled to the proxy
	// named p.Name. Disabling closes the listener and every session and
	// keeps the rules; a new listen address or upstream restarts it.
	UpdateProxy(p ProxySpec) (ProxySpec, error)
	// RemoveProxy closes the proxy and its sessions and removes its rules.
	RemoveProxy(name string) error
}

// Errors a ProxyManager returns.
var (
	ErrProxyExists   = errors.New("proxy already exists")
	ErrProxyNotFound = errors.New("proxy not found")
)

// Toxic is a fault rule of one proxy as toxiproxy shows a toxic.
type Toxic struct {
	Attributes map[string]any `json:"attributes"`
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream"`
	Toxicity   float32        `json:"toxicity"`
}

// ProxyView is how GET /proxies and toxiproxy's endpoints show a proxy:
// toxiproxy's shape plus the number of live sessions.
type ProxyView struct {
	ProxySpec
	Toxics   []Toxic `json:"toxics"`
	Sessions int     `json:"sessions"`
}

const (
	streamUpstream   = "upstream"   // client to server
	streamDownstream = "downstream" // server to client
	pgToxicPrefix    = "pg_"
)

// pgActions are the rule actions addressable as toxic types pg_<action>.
var pgActions = []string{"delay", "disconnect", "error", "hang", "partition", "drop", "refuse", "slow_connect"}

func isByteToxic(typ string) bool {
	for _, t := range faults.ToxicTypes {
		if t == typ {
			return true
		}
	}
	return false
}

func isPGAction(action string) bool {
	for _, a := range pgActions {
		if a == action {
			return true
		}
	}
	return false
}

// pgAttr is one attribute of a pg_* toxic and the rule field it sets.
type pgAttr struct {
	key   string
	field func(r *faults.Rule) any // pointer to the field
}

// pgAttrs are the attributes of pg_* toxics, named as the CLI's flags are
// (error_message is the error's text; message matches message types).
var pgAttrs = []pgAttr{
	{"direction", func(r *faults.Rule) any { return &r.Match.Direction }},
	{"event", func(r *faults.Rule) any { return &r.Match.Event }},
	{"message", func(r *faults.Rule) any { return &r.Match.Message }},
	{"sql", func(r *faults.Rule) any { return &r.Match.SQL }},
	{"sql_case_sensitive", func(r *faults.Rule) any { return &r.Match.SQLCaseSensitive }},
	{"fingerprint", func(r *faults.Rule) any { return &r.Match.Fingerprint }},
	{"statement", func(r *faults.Rule) any { return &r.Match.Statement }},
	{"tag", func(r *faults.Rule) any { return &r.Match.Tag }},
	{"tx_status", func(r *faults.Rule) any { return &r.Match.TxStatus }},
	{"user", func(r *faults.Rule) any { return &r.Match.User }},
	{"database", func(r *faults.Rule) any { return &r.Match.Database }},
	{"application_name", func(r *faults.Rule) any { return &r.Match.ApplicationName }},
	{"client_cidr", func(r *faults.Rule) any { return &r.Match.ClientCIDR }},
	{"when", func(r *faults.Rule) any { return &r.Action.When }},
	{"delay", func(r *faults.Rule) any { return &r.Action.Delay }},
	{"jitter", func(r *faults.Rule) any { return &r.Action.Jitter }},
	{"side", func(r *faults.Rule) any { return &r.Action.Side }},
	{"close", func(r *faults.Rule) any { return &r.Action.Close }},
	{"sqlstate", func(r *faults.Rule) any { return &r.Action.SQLState }},
	{"severity", func(r *faults.Rule) any { return &r.Action.Severity }},
	{"error_message", func(r *faults.Rule) any { return &r.Action.Message }},
	{"duration", func(r *faults.Rule) any { return &r.Action.Duration }},
	{"skip", func(r *faults.Rule) any { return &r.Limits.Skip }},
	{"times", func(r *faults.Rule) any { return &r.Limits.Times }},
	{"once_per_session", func(r *faults.Rule) any { return &r.Limits.OncePerSession }},
	{"expires", func(r *faults.Rule) any { return &r.Limits.Expires }},
}

// attrName names, in the toxiproxy API's terms, the rule field an engine
// validation error is about ("action.sqlstate" is the attribute sqlstate).
func attrName(field string) string {
	base, index, _ := strings.Cut(field, "[")
	switch base {
	case "match.direction":
		base = "stream"
	case "limits.probability":
		base = "toxicity"
	case "action.message":
		base = "error_message"
	default:
		if _, rest, ok := strings.Cut(base, "."); ok {
			base = rest
		}
	}
	if index != "" {
		return base + "[" + index
	}
	return base
}

// knownPGAttrs lists the pg_* attribute names for error messages.
func knownPGAttrs() string {
	keys := make([]string, len(pgAttrs))
	for i, a := range pgAttrs {
		keys[i] = a.key
	}
	return strings.Join(keys, ", ")
}

// applyPGAttrs sets the rule fields named by attrs. A null value clears the
// field. Unknown names are an error that lists them.
func applyPGAttrs(r *faults.Rule, typ string, attrs map[string]any) (explicitDirection bool, err error) {
	var unknown []string
	for k := range attrs {
		if !isPGAttr(k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return false, fmt.Errorf("unknown attribute(s) for %s: %s (known: %s)", typ, strings.Join(unknown, ", "), knownPGAttrs())
	}
	for _, a := range pgAttrs {
		v, ok := attrs[a.key]
		if !ok {
			continue
		}
		ptr := a.field(r)
		if v == nil {
			reflect.ValueOf(ptr).Elem().SetZero()
			continue
		}
		raw, err := json.Marshal(coerceAttr(a.key, v, ptr))
		if err == nil {
			err = json.Unmarshal(raw, ptr)
		}
		if err != nil {
			return false, fmt.Errorf("attribute %s: %v", a.key, err)
		}
		if a.key == "direction" {
			explicitDirection = true
		}
	}
	return explicitDirection, nil
}

// coerceAttr adapts a value to its field's type the way toxiproxy's CLI
// needs: `-a sqlstate=40001` arrives as the number 40001 (and 08006 as
// 8006), `-a once_per_session=true` as a string.
func coerceAttr(key string, v any, ptr any) any {
	switch ptr.(type) {
	case *string:
		if f, ok := v.(float64); ok {
			str := strconv.FormatFloat(f, 'f', -1, 64)
			if key == "sqlstate" && f >= 0 && f == math.Trunc(f) && len(str) < 5 {
				str = strings.Repeat("0", 5-len(str)) + str
			}
			return str
		}
	case *bool:
		if str, ok := v.(string); ok {
			if b, err := strconv.ParseBool(str); err == nil {
				return b
			}
		}
	}
	return v
}

func isPGAttr(k string) bool {
	for _, a := range pgAttrs {
		if a.key == k {
			return true
		}
	}
	return false
}

// ruleStream is the toxiproxy stream of a rule's direction, defaulted as
// the engine defaults it.
func ruleStream(r faults.Rule) string {
	if r.Direction() == faults.ServerToClient {
		return streamDownstream
	}
	return streamUpstream
}

// parseStream maps toxiproxy's stream names to rule directions.
func parseStream(s string) (string, bool) {
	switch strings.ToLower(s) {
	case streamUpstream:
		return "client_to_server", true
	case streamDownstream:
		return "server_to_client", true
	}
	return "", false
}

// toxicOf shows a rule as a toxic.
func toxicOf(r faults.Rule) Toxic {
	t := Toxic{Name: r.Name, Stream: ruleStream(r), Toxicity: 1}
	if p := r.Limits.Probability; p != nil {
		t.Toxicity = float32(*p)
	}
	if isByteToxic(r.Action.Type) {
		t.Type = r.Action.Type
		t.Attributes = byteToxicAttributes(r.Action.Type, r.Action.Attributes)
		return t
	}
	t.Type = pgToxicPrefix + r.Action.Type
	t.Attributes = map[string]any{}
	for _, a := range pgAttrs {
		if a.key == "direction" {
			continue // the stream shows it
		}
		v := reflect.ValueOf(a.field(&r)).Elem()
		if !v.IsZero() {
			t.Attributes[a.key] = v.Interface()
		}
	}
	return t
}

// byteToxicAttributes shows a byte toxic's attributes as toxiproxy does:
// every attribute of its type, defaults included.
func byteToxicAttributes(typ string, attrs map[string]any) map[string]any {
	w := &toxics.ToxicWrapper{Type: typ}
	if toxics.New(w) == nil {
		return attrs
	}
	out := map[string]any{}
	raw, err := json.Marshal(attrs)
	if err == nil {
		err = json.Unmarshal(raw, w.Toxic)
	}
	if err == nil {
		raw, err = json.Marshal(w.Toxic)
	}
	if err == nil {
		err = json.Unmarshal(raw, &out)
	}
	if err != nil {
		return attrs
	}
	return out
}

// probability turns a toxicity into a rule probability. toxiproxy accepts
// any number; below 0 never fires and above 1 always does.
func probability(t float32) *float64 {
	p := min(max(float64(t), 0), 1)
	return &p
}

// toxicRequest is the body of POST /proxies/{proxy}/toxics.
type toxicRequest struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     *string        `json:"stream"`
	Toxicity   *float32       `json:"toxicity"`
	Attributes map[string]any `json:"attributes"`
}

// tpError is an error answer of the toxiproxy API.
type tpError struct {
	status int
	msg    string
}

func (e *tpError) Error() string { return e.msg }

var (
	errTPProxyNotFound = &tpError{http.StatusNotFound, "proxy not found"}
	errTPProxyExists   = &tpError{http.StatusConflict, "proxy already exists"}
	errTPInvalidStream = &tpError{http.StatusBadRequest, "stream was invalid, can be either upstream or downstream"}
	errTPInvalidType   = &tpError{http.StatusBadRequest, "invalid toxic type"}
	errTPToxicExists   = &tpError{http.StatusConflict, "toxic already exists"}
	errTPToxicNotFound = &tpError{http.StatusNotFound, "toxic not found"}
)

func badBody(format string, args ...any) *tpError {
	return &tpError{http.StatusBadRequest, "bad request body: " + fmt.Sprintf(format, args...)}
}

// tpErr maps errors of the proxy manager and the engine to toxiproxy's.
func tpErr(err error) *tpError {
	var te *tpError
	var fe *faults.FieldError
	switch {
	case errors.As(err, &te):
		return te
	case errors.Is(err, ErrProxyNotFound):
		return errTPProxyNotFound
	case errors.Is(err, ErrProxyExists):
		return errTPProxyExists
	case errors.Is(err, faults.ErrExists):
		return errTPToxicExists
	case errors.Is(err, faults.ErrNotFound):
		return errTPToxicNotFound
	case errors.As(err, &fe):
		return badBody("%s: %s", attrName(fe.Field), fe.Msg)
	}
	return &tpError{http.StatusInternalServerError, err.Error()}
}

func writeTPError(w http.ResponseWriter, err error) {
	te := tpErr(err)
	writeError(w, te.status, te.msg)
}

func (s *Server) toxiproxyRoutes() {
	s.mux.HandleFunc("GET /proxies", s.listProxies)
	s.mux.HandleFunc("POST /proxies", s.createProxy)
	s.mux.HandleFunc("GET /proxies/{proxy}", s.showProxy)
	s.mux.HandleFunc("POST /proxies/{proxy}", s.updateProxy)
	s.mux.HandleFunc("PATCH /proxies/{proxy}", s.updateProxy)
	s.mux.HandleFunc("DELETE /proxies/{proxy}", s.deleteProxy)
	s.mux.HandleFunc("GET /proxies/{proxy}/toxics", s.listToxics)
	s.mux.HandleFunc("POST /proxies/{proxy}/toxics", s.createToxic)
	s.mux.HandleFunc("GET /proxies/{proxy}/toxics/{toxic}", s.showToxic)
	s.mux.HandleFunc("POST /proxies/{proxy}/toxics/{toxic}", s.updateToxic)
	s.mux.HandleFunc("PATCH /proxies/{proxy}/toxics/{toxic}", s.updateToxic)
	s.mux.HandleFunc("DELETE /proxies/{proxy}/toxics/{toxic}", s.deleteToxic)
	s.mux.HandleFunc("POST /populate", s.populate)
	s.mux.HandleFunc("POST /reset", s.reset)
	s.mux.HandleFunc("GET /version", s.version)
}

// toxicsByProxy groups the rules bound to a proxy as toxics: upstream
// toxics first, then downstream, each in the order rules are checked.
func (s *Server) toxicsByProxy() map[string][]Toxic {
	out := map[string][]Toxic{}
	if s.faults == nil {
		return out
	}
	var down []Toxic
	var downProxy []string
	for _, rs := range s.faults.Rules() {
		if rs.Proxy == "" {
			continue
		}
		t := toxicOf(rs.Rule)
		if t.Stream == streamDownstream {
			down, downProxy = append(down, t), append(downProxy, rs.Proxy)
			continue
		}
		out[rs.Proxy] = append(out[rs.Proxy], t)
	}
	for i, t := range down {
		out[downProxy[i]] = append(out[downProxy[i]], t)
	}
	return out
}

func (s *Server) toxicsOf(proxy string) []Toxic {
	list := s.toxicsByProxy()[proxy]
	if list == nil {
		list = []Toxic{}
	}
	return list
}

func (s *Server) sessionCounts() map[string]int {
	counts := map[string]int{}
	for _, si := range s.registry.Sessions() {
		counts[si.Proxy]++
	}
	return counts
}

func (s *Server) view(p ProxySpec) ProxyView {
	return ProxyView{ProxySpec: p, Toxics: s.toxicsOf(p.Name), Sessions: s.sessionCounts()[p.Name]}
}

// listProxies is toxiproxy's GET /proxies: an object keyed by name.
func (s *Server) listProxies(w http.ResponseWriter, r *http.Request) {
	tox := s.toxicsByProxy()
	counts := s.sessionCounts()
	out := map[string]ProxyView{}
	for _, p := range s.proxies.ListProxies() {
		list := tox[p.Name]
		if list == nil {
			list = []Toxic{}
		}
		out[p.Name] = ProxyView{ProxySpec: p, Toxics: list, Sessions: counts[p.Name]}
	}
	writeJSON(w, http.StatusOK, out)
}

// proxyRequest is a proxy in a request body; enabled defaults to true.
type proxyRequest struct {
	Name     string `json:"name"`
	Listen   string `json:"listen"`
	Upstream string `json:"upstream"`
	Enabled  *bool  `json:"enabled"`
}

// spec checks a proxy from a request and fills in defaults. suffix goes
// after a missing field's name (populate says which proxy).
func (in proxyRequest) spec(suffix string) (ProxySpec, *tpError) {
	if in.Name == "" {
		return ProxySpec{}, &tpError{http.StatusBadRequest, "missing required field: name" + suffix}
	}
	if in.Upstream == "" {
		return ProxySpec{}, &tpError{http.StatusBadRequest, "missing required field: upstream" + suffix}
	}
	p := ProxySpec{Name: in.Name, Listen: in.Listen, Upstream: in.Upstream, Enabled: in.Enabled == nil || *in.Enabled}
	if p.Listen == "" {
		p.Listen = DefaultToxiproxyListen
	}
	if te := checkAddrs(p); te != nil {
		return ProxySpec{}, te
	}
	return p, nil
}

func checkAddrs(p ProxySpec) *tpError {
	if _, _, err := net.SplitHostPort(p.Listen); err != nil {
		return badBody("listen %q: %v", p.Listen, err)
	}
	if _, _, err := net.SplitHostPort(p.Upstream); err != nil {
		return badBody("upstream %q: %v", p.Upstream, err)
	}
	return nil
}

// checkListen refuses a proxy listen address beyond loopback unless the
// API may open such listeners.
func (s *Server) checkListen(listen string) *tpError {
	if s.remoteListen || IsLoopbackAddr(listen) {
		return nil
	}
	return &tpError{http.StatusForbidden, fmt.Sprintf("listen address %s is not a loopback address: start pgchaos with --api-allow-remote (api_allow_remote: true) to let the API open listeners beyond this machine", listen)}
}

func decodeBody(r *http.Request, v any) *tpError {
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(v); err != nil {
		return badBody("%v", err)
	}
	return nil
}

func (s *Server) createProxy(w http.ResponseWriter, r *http.Request) {
	var in proxyRequest
	if te := decodeBody(r, &in); te != nil {
		writeTPError(w, te)
		return
	}
	spec, te := in.spec("")
	if te == nil {
		te = s.checkListen(spec.Listen)
	}
	if te != nil {
		writeTPError(w, te)
		return
	}
	p, err := s.proxies.AddProxy(spec)
	if err != nil {
		writeTPError(w, err)
		return
	}
	s.log.Info("proxy created through the toxiproxy API", "proxy", p.Name, "listen", p.Listen, "upstream", p.Upstream, "enabled", p.Enabled)
	writeJSON(w, http.StatusCreated, s.view(p))
}

func (s *Server) showProxy(w http.ResponseWriter, r *http.Request) {
	p, err := s.proxies.GetProxy(r.PathValue("proxy"))
	if err != nil {
		writeTPError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.view(p))
}

// updateProxy applies any of listen, upstream and enabled; the rest of
// the body (name, toxics) is ignored, as toxiproxy does.
func (s *Server) updateProxy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("proxy")
	cur, err := s.proxies.GetProxy(name)
	if err != nil {
		writeTPError(w, err)
		return
	}
	in := cur
	if te := decodeBody(r, &in); te != nil {
		writeTPError(w, te)
		return
	}
	in.Name = name
	if in.Listen == "" {
		in.Listen = DefaultToxiproxyListen
	}
	te := checkAddrs(in)
	if te == nil && in.Listen != cur.Listen {
		te = s.checkListen(in.Listen)
	}
	if te != nil {
		writeTPError(w, te)
		return
	}
	p, err := s.proxies.UpdateProxy(in)
	if err != nil {
		writeTPError(w, err)
		return
	}
	if p != cur {
		s.log.Info("proxy changed through the toxiproxy API", "proxy", p.Name, "listen", p.Listen, "upstream", p.Upstream, "enabled", p.Enabled)
	}
	writeJSON(w, http.StatusOK, s.view(p))
}

func (s *Server) deleteProxy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("proxy")
	if err := s.proxies.RemoveProxy(name); err != nil {
		writeTPError(w, err)
		return
	}
	s.log.Info("proxy deleted through the toxiproxy API", "proxy", name)
	w.WriteHeader(http.StatusNoContent)
}

// populate is toxiproxy's POST /populate: add or replace several proxies.
// Errors carry the proxies done so far.
func (s *Server) populate(w http.ResponseWriter, r *http.Request) {
	views := []ProxyView(nil)
	fail := func(err error) {
		te := tpErr(err)
		writeJSON(w, te.status, map[string]any{"error": te.msg, "status": te.status, "proxies": views})
	}
	var in []proxyRequest
	if te := decodeBody(r, &in); te != nil {
		fail(te)
		return
	}
	specs := make([]ProxySpec, len(in))
	for i, p := range in {
		spec, te := p.spec(fmt.Sprintf(" at proxy %d", i+1))
		if te == nil {
			// A proxy kept as it is opens nothing new.
			if cur, err := s.proxies.GetProxy(spec.Name); err != nil || cur.Listen != spec.Listen {
				te = s.checkListen(spec.Listen)
			}
		}
		if te != nil {
			fail(te)
			return
		}
		specs[i] = spec
	}
	for _, spec := range specs {
		p, err := s.proxies.PutProxy(spec)
		if err != nil {
			fail(err)
			return
		}
		views = append(views, s.view(p))
	}
	if views == nil {
		views = []ProxyView{}
	}
	s.log.Info("proxies populated through the toxiproxy API", "proxies", len(views))
	writeJSON(w, http.StatusCreated, map[string]any{"proxies": views})
}

// reset is toxiproxy's POST /reset: every toxic goes (the rules bound to a
// proxy; rules for every proxy stay) and every proxy is enabled.
func (s *Server) reset(w http.ResponseWriter, r *http.Request) {
	var firstErr error
	if s.faults != nil {
		for _, rs := range s.faults.Rules() {
			if rs.Proxy == "" {
				continue
			}
			if err := s.faults.Remove(rs.Proxy, rs.Name); err != nil && !errors.Is(err, faults.ErrNotFound) && firstErr == nil {
				firstErr = err
			}
		}
	}
	for _, p := range s.proxies.ListProxies() {
		if p.Enabled {
			continue
		}
		p.Enabled = true
		if _, err := s.proxies.UpdateProxy(p); err != nil && !errors.Is(err, ErrProxyNotFound) && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		writeTPError(w, firstErr)
		return
	}
	s.log.Info("toxics removed and proxies enabled through the toxiproxy API (reset)")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	fmt.Fprintf(w, "{\"version\": %q}\n", ToxiproxyVersion)
}

// proxyOf answers 404 unless the path's proxy exists.
func (s *Server) proxyOf(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("proxy")
	if _, err := s.proxies.GetProxy(name); err != nil {
		writeTPError(w, err)
		return "", false
	}
	if s.faults == nil {
		writeError(w, http.StatusInternalServerError, "fault rules are not available")
		return "", false
	}
	return name, true
}

func (s *Server) listToxics(w http.ResponseWriter, r *http.Request) {
	if name, ok := s.proxyOf(w, r); ok {
		writeJSON(w, http.StatusOK, s.toxicsOf(name))
	}
}

func (s *Server) showToxic(w http.ResponseWriter, r *http.Request) {
	proxy, ok := s.proxyOf(w, r)
	if !ok {
		return
	}
	st, err := s.faults.Get(proxy, r.PathValue("toxic"))
	if err != nil {
		writeTPError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toxicOf(st.Rule))
}

// createToxic is toxiproxy's POST /proxies/{proxy}/toxics. It answers 200
// (not 201), as toxiproxy does.
func (s *Server) createToxic(w http.ResponseWriter, r *http.Request) {
	proxy, ok := s.proxyOf(w, r)
	if !ok {
		return
	}
	var in toxicRequest
	if te := decodeBody(r, &in); te != nil {
		writeTPError(w, te)
		return
	}
	rule, err := toxicRule(proxy, in)
	if err != nil {
		writeTPError(w, err)
		return
	}
	if _, err := s.faults.Get(proxy, rule.Name); err == nil {
		writeTPError(w, errTPToxicExists)
		return
	}
	st, err := s.faults.Add(rule)
	if err != nil {
		writeTPError(w, err)
		return
	}
	s.log.Info("toxic added through the toxiproxy API", "proxy", proxy, "toxic", rule.Name, "type", in.Type)
	writeJSON(w, http.StatusOK, toxicOf(st.Rule))
}

// toxicRule turns a toxic into the rule that carries it out. The engine
// validates the rule when it is added.
func toxicRule(proxy string, in toxicRequest) (faults.Rule, error) {
	dir, stream := "", ""
	if in.Stream != nil {
		var ok bool
		if dir, ok = parseStream(*in.Stream); !ok {
			return faults.Rule{}, errTPInvalidStream
		}
		stream = strings.ToLower(*in.Stream)
	}
	rule := faults.Rule{Name: in.Name, Proxy: proxy}
	if in.Toxicity != nil {
		rule.Limits.Probability = probability(*in.Toxicity)
	}
	switch action, pg := strings.CutPrefix(in.Type, pgToxicPrefix); {
	case isByteToxic(in.Type):
		if dir == "" {
			dir, stream = "server_to_client", streamDownstream
		}
		rule.Match.Direction = dir
		rule.Action = faults.Action{Type: in.Type, Attributes: in.Attributes}
	case pg && isPGAction(action):
		rule.Action.Type = action
		explicit, err := applyPGAttrs(&rule, in.Type, in.Attributes)
		if err != nil {
			return faults.Rule{}, badBody("%v", err)
		}
		if rule.Match.Event == "" && (action == "refuse" || action == "slow_connect") {
			rule.Match.Event = "connect"
		}
		// A connect or cancel event has no stream; otherwise the stream
		// sets the direction unless an attribute did. Without either, the
		// engine takes it from the matchers (sql: upstream, tag: downstream).
		if !explicit && rule.Match.Event == "" {
			rule.Match.Direction = dir
		}
		stream = ruleStream(rule)
	default:
		return faults.Rule{}, errTPInvalidType
	}
	if rule.Name == "" {
		rule.Name = in.Type + "_" + stream
	}
	return rule, nil
}

// toxicUpdate is the body of POST/PATCH /proxies/{proxy}/toxics/{toxic}:
// attributes merge into the toxic's, toxicity stays unless given.
type toxicUpdate struct {
	Attributes map[string]any `json:"attributes"`
	Toxicity   *float32       `json:"toxicity"`
}

func (s *Server) updateToxic(w http.ResponseWriter, r *http.Request) {
	proxy, ok := s.proxyOf(w, r)
	if !ok {
		return
	}
	st, err := s.faults.Get(proxy, r.PathValue("toxic"))
	if err != nil {
		writeTPError(w, err)
		return
	}
	var in toxicUpdate
	if te := decodeBody(r, &in); te != nil {
		writeTPError(w, te)
		return
	}
	rule := st.Rule
	if isByteToxic(rule.Action.Type) {
		merged := make(map[string]any, len(rule.Action.Attributes)+len(in.Attributes))
		for k, v := range rule.Action.Attributes {
			merged[k] = v
		}
		for k, v := range in.Attributes {
			merged[k] = v
		}
		rule.Action.Attributes = merged
	} else if _, err := applyPGAttrs(&rule, pgToxicPrefix+rule.Action.Type, in.Attributes); err != nil {
		writeTPError(w, badBody("%v", err))
		return
	}
	if in.Toxicity != nil {
		rule.Limits.Probability = probability(*in.Toxicity)
	}
	st, err = s.faults.Put(rule)
	if err != nil {
		writeTPError(w, err)
		return
	}
	s.log.Info("toxic changed through the toxiproxy API", "proxy", proxy, "toxic", rule.Name)
	writeJSON(w, http.StatusOK, toxicOf(st.Rule))
}

func (s *Server) deleteToxic(w http.ResponseWriter, r *http.Request) {
	proxy, ok := s.proxyOf(w, r)
	if !ok {
		return
	}
	name := r.PathValue("toxic")
	if err := s.faults.Remove(proxy, name); err != nil {
		writeTPError(w, err)
		return
	}
	s.log.Info("toxic removed through the toxiproxy API", "proxy", proxy, "toxic", name)
	w.WriteHeader(http.StatusNoContent)
}
