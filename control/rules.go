package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/pgchaos/pgchaos/faults"
)

// maxBody bounds a request body: rules are small.
const maxBody = 1 << 20

func (s *Server) rulesRoutes() {
	s.mux.HandleFunc("GET /rules", s.listRules)
	s.mux.HandleFunc("POST /rules", s.addRule)
	s.mux.HandleFunc("DELETE /rules", s.resetRules)
	s.mux.HandleFunc("GET /rules/{name}", s.getRule)
	s.mux.HandleFunc("PUT /rules/{name}", s.putRule)
	s.mux.HandleFunc("DELETE /rules/{name}", s.removeRule)
	s.mux.HandleFunc("GET /events", s.listEvents)
}

func (s *Server) listRules(w http.ResponseWriter, r *http.Request) {
	list := s.faults.Rules()
	if proxy := r.URL.Query().Get("proxy"); proxy != "" {
		kept := list[:0]
		for _, rs := range list {
			if rs.Proxy == proxy || rs.Proxy == "" {
				kept = append(kept, rs)
			}
		}
		list = kept
	}
	writeJSON(w, http.StatusOK, list)
}

// decodeRule reads a rule from a request body, rejecting unknown fields.
func decodeRule(w http.ResponseWriter, r *http.Request) (faults.Rule, bool) {
	var rule faults.Rule
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rule); err != nil {
		writeError(w, http.StatusBadRequest, "invalid rule: "+err.Error())
		return rule, false
	}
	return rule, true
}

// writeRuleError maps engine errors to statuses; a rule that does not
// validate names its field.
func writeRuleError(w http.ResponseWriter, err error) {
	var fe *faults.FieldError
	switch {
	case errors.As(err, &fe):
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid rule: " + fe.Error(), "field": fe.Field, "status": http.StatusBadRequest})
	case errors.Is(err, faults.ErrExists):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, faults.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

func (s *Server) checkProxy(w http.ResponseWriter, name string) bool {
	if name == "" {
		return true
	}
	if _, err := s.proxies.GetProxy(name); err == nil {
		return true
	}
	writeJSON(w, http.StatusBadRequest, map[string]any{"error": fmt.Sprintf("invalid rule: proxy: no proxy named %q", name), "field": "proxy", "status": http.StatusBadRequest})
	return false
}

func (s *Server) addRule(w http.ResponseWriter, r *http.Request) {
	rule, ok := decodeRule(w, r)
	if !ok || !s.checkProxy(w, rule.Proxy) {
		return
	}
	st, err := s.faults.Add(rule)
	if err != nil {
		writeRuleError(w, err)
		return
	}
	s.log.Info("fault rule added", "rule", rule.Name, "proxy", rule.Proxy, "action", rule.Action.Type)
	writeJSON(w, http.StatusCreated, st)
}

func (s *Server) putRule(w http.ResponseWriter, r *http.Request) {
	rule, ok := decodeRule(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if rule.Name == "" {
		rule.Name = name
	}
	if rule.Name != name {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": fmt.Sprintf("invalid rule: name: %q does not match the URL's %q", rule.Name, name), "field": "name", "status": http.StatusBadRequest})
		return
	}
	if q := r.URL.Query().Get("proxy"); q != "" && rule.Proxy == "" {
		rule.Proxy = q
	}
	if !s.checkProxy(w, rule.Proxy) {
		return
	}
	st, err := s.faults.Put(rule)
	if err != nil {
		writeRuleError(w, err)
		return
	}
	s.log.Info("fault rule set", "rule", rule.Name, "proxy", rule.Proxy, "action", rule.Action.Type)
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) getRule(w http.ResponseWriter, r *http.Request) {
	st, err := s.faults.Get(r.URL.Query().Get("proxy"), r.PathValue("name"))
	if err != nil {
		writeRuleError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) removeRule(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.faults.Remove(r.URL.Query().Get("proxy"), name); err != nil {
		writeRuleError(w, err)
		return
	}
	s.log.Info("fault rule removed", "rule", name)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) resetRules(w http.ResponseWriter, r *http.Request) {
	s.faults.Reset()
	s.log.Info("all fault rules removed")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	limit := 0
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q is not a non-negative number", v))
			return
		}
		limit = n
	}
	writeJSON(w, http.StatusOK, s.faults.Events(limit))
}
