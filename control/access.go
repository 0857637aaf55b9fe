package control

// Who may use the control API: a bearer token when one is set, and, on a
// loopback address, only requests addressed to a loopback name, so that a
// web page cannot reach the API through DNS rebinding.

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

// EnvToken is the environment variable that holds the API token, for the
// server and its clients alike.
const EnvToken = "PGCHAOS_API_TOKEN"

// ReadTokenFile reads a token from a file, without surrounding whitespace.
func ReadTokenFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read API token: %w", err)
	}
	token := strings.TrimSpace(string(data))
	if err := CheckToken(token); err != nil {
		return "", fmt.Errorf("API token file %s: %w", path, err)
	}
	return token, nil
}

// CheckToken refuses a token that cannot travel in an HTTP header.
func CheckToken(token string) error {
	if token == "" {
		return errors.New("the token is empty")
	}
	for _, c := range token {
		if c < ' ' || c == 0x7f {
			return errors.New("the token holds a control character (a line break?); want one line")
		}
	}
	return nil
}

// IsLoopbackHost reports whether host (no port) names this machine only:
// a loopback IP or localhost.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// IsLoopbackAddr reports whether a listen address (host:port) binds only
// loopback. An empty host binds every interface.
func IsLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && IsLoopbackHost(host)
}

// allowedHost reports whether a request's Host header names this machine:
// a loopback IP, localhost or *.localhost, with any port. A request without
// one (HTTP/1.0) comes from no browser and passes.
func allowedHost(hostport string) bool {
	if hostport == "" {
		return true
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	if strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	return IsLoopbackHost(host)
}

// openPath reports whether a request needs no token: liveness probes and
// Testcontainers' wait strategy.
func openPath(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) && (r.URL.Path == "/healthz" || r.URL.Path == "/version")
}

// authorized compares the request's bearer token with want in constant
// time (hashes first, so that not even the length leaks).
func authorized(r *http.Request, want [sha256.Size]byte) (present, ok bool) {
	scheme, token, found := strings.Cut(r.Header.Get("Authorization"), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return false, false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return true, subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// guard answers a request that may not reach the API and reports whether
// it did.
func (s *Server) guard(w http.ResponseWriter, r *http.Request) bool {
	if s.hostCheck && !allowedHost(r.Host) {
		writeError(w, http.StatusForbidden, fmt.Sprintf("host %q not allowed: the control API listens on loopback and answers only requests for localhost or a loopback address (this guards against DNS rebinding)", r.Host))
		return true
	}
	if s.token != nil && !openPath(r) {
		present, ok := authorized(r, *s.token)
		switch {
		case !present:
			w.Header().Set("WWW-Authenticate", `Bearer realm="pgchaos"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token: send Authorization: Bearer TOKEN with the token of --api-token-file or "+EnvToken)
			return true
		case !ok:
			w.Header().Set("WWW-Authenticate", `Bearer realm="pgchaos", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "wrong bearer token")
			return true
		}
	}
	return false
}
