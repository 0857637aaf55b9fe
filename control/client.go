package control

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/proxy"
)

// Client talks to a running pgchaos's control API.
type Client struct {
	base  string
	http  *http.Client
	token string
	// roots and serverName verify an https API's certificate (nil, "":
	// the system's roots, the URL's host).
	roots      *x509.CertPool
	serverName string
}

// ClientOption secures a Client.
type ClientOption func(*Client)

// WithToken sends token as the bearer token of every request (empty: none).
func WithToken(token string) ClientOption {
	return func(c *Client) { c.token = token }
}

// WithRootCAs verifies an https API's certificate against roots instead of
// the system's.
func WithRootCAs(roots *x509.CertPool) ClientOption {
	return func(c *Client) { c.roots = roots }
}

// WithServerName verifies an https API's certificate for name instead of
// the URL's host: an instance reached at one of the addresses a DNS name
// resolves to presents a certificate for the name, not for its address.
func WithServerName(name string) ClientOption {
	return func(c *Client) { c.serverName = name }
}

// NewClient returns a client for the API at addr: "127.0.0.1:8474", or a
// URL, https:// for an API served with TLS.
func NewClient(addr string, opts ...ClientOption) *Client {
	base := strings.TrimRight(addr, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	c := &Client{base: base, http: &http.Client{Timeout: 30 * time.Second}}
	for _, o := range opts {
		o(c)
	}
	if c.roots != nil || c.serverName != "" {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: c.roots, ServerName: c.serverName, MinVersion: tls.VersionTLS12}
		c.http.Transport = t
	}
	return c
}

// URL is the control API the client talks to.
func (c *Client) URL() string { return c.base }

// LoadCertPool reads a PEM bundle of CA certificates.
func LoadCertPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// APIError is an error answer from the control API.
type APIError struct {
	Status  int    `json:"status"`
	Message string `json:"error"`
	Field   string `json:"field,omitempty"`
}

func (e *APIError) Error() string { return e.Message }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("pgchaos control API at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		apiErr := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(data, apiErr) != nil || apiErr.Message == "" {
			apiErr.Message = fmt.Sprintf("%s %s: %s", method, path, resp.Status)
		}
		return apiErr
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

func ruleQuery(proxyName string) string {
	if proxyName == "" {
		return ""
	}
	return "?proxy=" + url.QueryEscape(proxyName)
}

// AddRule adds a rule; it fails if one of that name exists.
func (c *Client) AddRule(ctx context.Context, r faults.Rule) (faults.RuleStatus, error) {
	var st faults.RuleStatus
	err := c.do(ctx, http.MethodPost, "/rules", r, &st)
	return st, err
}

// PutRule adds or replaces a rule.
func (c *Client) PutRule(ctx context.Context, r faults.Rule) (faults.RuleStatus, error) {
	var st faults.RuleStatus
	err := c.do(ctx, http.MethodPut, "/rules/"+url.PathEscape(r.Name)+ruleQuery(r.Proxy), r, &st)
	return st, err
}

// Rules lists the rules with their counters.
func (c *Client) Rules(ctx context.Context) ([]faults.RuleStatus, error) {
	var list []faults.RuleStatus
	err := c.do(ctx, http.MethodGet, "/rules", nil, &list)
	return list, err
}

// RemoveRule removes one rule.
func (c *Client) RemoveRule(ctx context.Context, proxyName, name string) error {
	return c.do(ctx, http.MethodDelete, "/rules/"+url.PathEscape(name)+ruleQuery(proxyName), nil, nil)
}

// ResetRules removes every rule.
func (c *Client) ResetRules(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "/rules", nil, nil)
}

// Events returns the most recent fired faults (limit 0: all kept).
func (c *Client) Events(ctx context.Context, limit int) ([]faults.Event, error) {
	var list []faults.Event
	err := c.do(ctx, http.MethodGet, fmt.Sprintf("/events?limit=%d", limit), nil, &list)
	return list, err
}

// Sessions lists the live sessions.
func (c *Client) Sessions(ctx context.Context) ([]proxy.SessionInfo, error) {
	var list []proxy.SessionInfo
	err := c.do(ctx, http.MethodGet, "/sessions", nil, &list)
	return list, err
}

// KillSession ends one session.
func (c *Client) KillSession(ctx context.Context, id uint64) error {
	return c.do(ctx, http.MethodDelete, fmt.Sprintf("/sessions/%d", id), nil, nil)
}

// ProxyListen returns where a proxy of the running pgchaos accepts clients.
func (c *Client) ProxyListen(ctx context.Context, name string) (string, error) {
	var p struct {
		Listen string `json:"listen"`
	}
	if err := c.do(ctx, http.MethodGet, "/proxies/"+url.PathEscape(name), nil, &p); err != nil {
		return "", err
	}
	return p.Listen, nil
}

// Health is GET /healthz: nil when the API answers that it is up.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.do(ctx, http.MethodGet, "/healthz", nil, &h)
	return h, err
}

// Health is what GET /healthz answers.
type Health struct {
	Status  string `json:"status"`
	Proxies int    `json:"proxies"`
	Uptime  string `json:"uptime"`
}
