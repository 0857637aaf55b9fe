// Package server assembles a running pgchaos: the named proxies of a
// configuration, the shared session registry and metrics, and the control
// API, with an orderly shutdown.
package server

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/pgchaos/pgchaos/control"
	"github.com/pgchaos/pgchaos/faults"
)

// DefaultAPI is where the control API listens unless told otherwise.
const DefaultAPI = "127.0.0.1:8474"

// Config is what `pgchaos proxy` runs, from flags or from a --config file.
type Config struct {
	API            string `yaml:"api"`
	AllowRemoteAPI bool   `yaml:"api_allow_remote"`
	// APITokenFile holds the bearer token the control API requires; it
	// wins over APIToken (e.g. from PGCHAOS_API_TOKEN). With neither, the
	// API needs none, and a non-loopback API is refused unless
	// APIInsecure says so.
	APITokenFile string `yaml:"api_token_file"`
	APIToken     string `yaml:"-"`
	APIInsecure  bool   `yaml:"api_insecure"`
	// APITLSCert and APITLSKey serve the control API over HTTPS.
	APITLSCert string `yaml:"api_tls_cert"`
	APITLSKey  string `yaml:"api_tls_key"`
	// MetricsListen also serves GET /metrics, and nothing else, on this
	// address: for Prometheus, without a token, wherever it listens.
	MetricsListen  string `yaml:"metrics_listen"`
	TLSCert        string `yaml:"tls_cert"`
	TLSKey         string `yaml:"tls_key"`
	UpstreamTLS    bool   `yaml:"upstream_tls"`
	UpstreamCA     string `yaml:"upstream_ca"`
	MaxMessageSize int    `yaml:"max_message_size"`
	// MaxSessions bounds the sessions of every proxy together (0: the
	// default, 10,000); clients beyond it get FATAL 53300.
	MaxSessions int `yaml:"max_sessions"`
	// StartupTimeout bounds a client's whole startup phase, TLS and GSS
	// negotiation included (0: the default, a minute).
	StartupTimeout faults.Duration `yaml:"startup_timeout"`
	// Relay is "loop" (event loops, the default on Linux) or "goroutine".
	Relay string `yaml:"relay"`
	// Loops is how many event loops run (0: one per two CPUs).
	Loops int `yaml:"loops"`
	// Proxies are started with the server; more can be added, changed and
	// removed through the control API.
	Proxies []ProxyConfig `yaml:"proxies"`
	// Rules are fault rules active from the start.
	Rules []faults.Rule `yaml:"rules"`
	// Seed makes rule probabilities and jitter reproducible.
	Seed int64 `yaml:"seed"`
	// LogSQL is how fired events and log lines show SQL: "redacted" (the
	// default: constants replaced by $1, $2, ...) or "full".
	LogSQL string `yaml:"log_sql"`
	// Observe, when set, hears every session's statements and the ends of
	// their responses, on every proxy (faults.Options.Observe says what and
	// how): for a program that runs pgchaos in-process, such as explore,
	// which learns a workload's statements from it. Not in the file.
	Observe   func(proxy string, s *faults.Session, m *faults.Message) `yaml:"-"`
	ruleLines []int
}

// Values of Config.LogSQL.
const (
	LogSQLRedacted = "redacted"
	LogSQLFull     = "full"
)

// ProxyConfig names one proxy: where it listens and where it relays to.
type ProxyConfig struct {
	Name     string `yaml:"name"`
	Listen   string `yaml:"listen"`
	Upstream string `yaml:"upstream"`
	// Enabled false makes the proxy without listening, until the control
	// API enables it (nil: enabled), as in toxiproxy's config file.
	Enabled *bool `yaml:"enabled"`
	line    int
}

// Disabled reports whether the proxy starts without listening.
func (p ProxyConfig) Disabled() bool { return p.Enabled != nil && !*p.Enabled }

// LoadConfig reads a YAML configuration file. Errors name the file and line.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Config{}, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 {
		return Config{}, fmt.Errorf("%s: the file is empty: want proxies (and api, rules, ...); see docs/proxy.md", path)
	}
	if doc.Content[0].Kind == yaml.SequenceNode {
		return loadToxiproxyConfig(path, doc.Content[0])
	}
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, fmt.Errorf("%s: %s", path, readableYAMLError(err))
	}
	// Refuse an empty item (the decoder dropped it), and remember each
	// proxy's and rule's line so that validation errors can point at it.
	if len(doc.Content) > 0 {
		root := doc.Content[0]
		for i := 0; i+1 < len(root.Content); i += 2 {
			key, list := root.Content[i].Value, root.Content[i+1]
			want := "a proxy: name, listen, upstream"
			switch key {
			case "proxies":
				for j, item := range list.Content {
					if j < len(cfg.Proxies) {
						cfg.Proxies[j].line = item.Line
					}
				}
			case "rules":
				want = "a rule: name, match, action"
				for _, item := range list.Content {
					cfg.ruleLines = append(cfg.ruleLines, item.Line)
				}
			default:
				continue
			}
			if j, line := faults.NullItem(list); j >= 0 {
				return Config{}, fmt.Errorf("%s:%d: %s[%d]: is empty (want %s)", path, line, key, j, want)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s:%w", path, err)
	}
	return cfg, nil
}

// loadToxiproxyConfig reads toxiproxy-server's -config file, a JSON list
// of proxies (name, listen, upstream, enabled), as toxiproxy does: fields
// it does not know are ignored, a proxy without listen gets a free port
// (on loopback, where toxiproxy would take every interface).
func loadToxiproxyConfig(path string, list *yaml.Node) (Config, error) {
	var items []struct {
		Name     string `yaml:"name"`
		Listen   string `yaml:"listen"`
		Upstream string `yaml:"upstream"`
		Enabled  *bool  `yaml:"enabled"`
	}
	if err := list.Decode(&items); err != nil {
		return Config{}, fmt.Errorf("%s: a toxiproxy config is a list of proxies (name, listen, upstream, enabled): %s", path, readableYAMLError(err))
	}
	if j, line := faults.NullItem(list); j >= 0 {
		return Config{}, fmt.Errorf("%s:%d: proxy %d is empty (want name, listen, upstream)", path, line, j+1)
	}
	var cfg Config
	for i, it := range items {
		cfg.Proxies = append(cfg.Proxies, ProxyConfig{Name: it.Name, Listen: cmp.Or(it.Listen, "127.0.0.1:0"),
			Upstream: it.Upstream, Enabled: it.Enabled, line: list.Content[i].Line})
	}
	// The file names no API address: the caller's flags (or the default)
	// give it, and the proxies it lists may listen where toxiproxy's would.
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s:%w", path, err)
	}
	cfg.API = ""
	return cfg, nil
}

// Validate checks the configuration and fills in defaults. Errors about a
// proxy from a file start with "LINE: ".
func (c *Config) Validate() error {
	if c.API == "" {
		c.API = DefaultAPI
	}
	if err := control.CheckListen(c.API, c.AllowRemoteAPI); err != nil {
		return errors.New(" " + err.Error())
	}
	if !control.IsLoopbackAddr(c.API) && c.APITokenFile == "" && c.APIToken == "" && !c.APIInsecure {
		return fmt.Errorf(" control address %s is not a loopback address: give it a token with --api-token-file FILE (api_token_file) or %s, or pass --api-insecure (api_insecure: true) to serve it without one", c.API, control.EnvToken)
	}
	if c.MetricsListen != "" {
		if _, port, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return fmt.Errorf(" metrics_listen %q (--metrics-listen): %v", c.MetricsListen, err)
		} else if c.MetricsListen == c.API && port != "0" {
			return fmt.Errorf(" metrics_listen %s (--metrics-listen) is the control API's address; give it a port of its own", c.MetricsListen)
		}
	}
	if (c.APITLSCert == "") != (c.APITLSKey == "") {
		return errors.New(" api_tls_cert and api_tls_key (--api-tls-cert/--api-tls-key) must be given together")
	}
	// No proxies is fine: they can be added through the control API, as
	// with toxiproxy.
	seenName := map[string]bool{}
	seenListen := map[string]bool{}
	for i, p := range c.Proxies {
		where := fmt.Sprintf(" proxies[%d]", i)
		if p.line > 0 {
			where = fmt.Sprintf("%d: proxies[%d]", p.line, i)
		}
		switch {
		case p.Name == "":
			return fmt.Errorf("%s: name is empty", where)
		case seenName[p.Name]:
			return fmt.Errorf("%s: name %q is used twice", where, p.Name)
		case p.Listen == "":
			return fmt.Errorf("%s (%s): listen is empty", where, p.Name)
		case seenListen[p.Listen] && !strings.HasSuffix(p.Listen, ":0"):
			return fmt.Errorf("%s (%s): listen address %s is used twice", where, p.Name, p.Listen)
		case p.Upstream == "":
			return fmt.Errorf("%s (%s): upstream is empty", where, p.Name)
		}
		if _, _, err := net.SplitHostPort(p.Listen); err != nil {
			return fmt.Errorf("%s (%s): listen %q: %v", where, p.Name, p.Listen, err)
		}
		if _, _, err := net.SplitHostPort(p.Upstream); err != nil {
			return fmt.Errorf("%s (%s): upstream %q: %v", where, p.Name, p.Upstream, err)
		}
		seenName[p.Name], seenListen[p.Listen] = true, true
	}
	if c.UpstreamCA != "" && !c.UpstreamTLS {
		return errors.New(" upstream_ca (--upstream-ca) needs upstream_tls (--upstream-tls)")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New(" tls_cert and tls_key (--tls-cert/--tls-key) must be given together")
	}
	switch c.Relay {
	case "":
		c.Relay = "loop"
	case "loop", "goroutine":
	default:
		return fmt.Errorf(" relay %q: want loop or goroutine", c.Relay)
	}
	switch c.LogSQL {
	case "":
		c.LogSQL = LogSQLRedacted
	case LogSQLRedacted, LogSQLFull:
	default:
		return fmt.Errorf(" log_sql %q (--log-sql): want redacted or full", c.LogSQL)
	}
	if c.Loops < 0 {
		return fmt.Errorf(" loops %d is negative", c.Loops)
	}
	names := map[string]bool{}
	for _, p := range c.Proxies {
		names[p.Name] = true
	}
	if err := faults.CheckRules(c.Rules, func(i int) string {
		if i < len(c.ruleLines) {
			return fmt.Sprintf("%d: rules[%d]", c.ruleLines[i], i)
		}
		return fmt.Sprintf(" rules[%d]", i)
	}); err != nil {
		return err
	}
	for i, r := range c.Rules {
		if r.Proxy != "" && !names[r.Proxy] {
			where := fmt.Sprintf(" rules[%d]", i)
			if i < len(c.ruleLines) {
				where = fmt.Sprintf("%d: rules[%d]", c.ruleLines[i], i)
			}
			return fmt.Errorf("%s (%s): proxy: no proxy named %q", where, r.Name, r.Proxy)
		}
	}
	if c.MaxSessions < 0 {
		return fmt.Errorf(" max_sessions %d is negative", c.MaxSessions)
	}
	if c.MaxMessageSize < 0 {
		return fmt.Errorf(" max_message_size %d is negative", c.MaxMessageSize)
	}
	return nil
}

// apiToken is the control API's bearer token ("": none).
func (c *Config) apiToken() (string, error) {
	if c.APITokenFile != "" {
		return control.ReadTokenFile(c.APITokenFile)
	}
	if c.APIToken != "" {
		if err := control.CheckToken(c.APIToken); err != nil {
			return "", fmt.Errorf("API token from %s: %w", control.EnvToken, err)
		}
	}
	return c.APIToken, nil
}

// apiTLS loads the certificate the control API is served with, if any.
func (c *Config) apiTLS() (*tls.Config, error) {
	if c.APITLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.APITLSCert, c.APITLSKey)
	if err != nil {
		return nil, fmt.Errorf("load the control API's TLS certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// clientTLS loads the certificate that terminates client TLS, if any.
func (c *Config) clientTLS() (*tls.Config, error) {
	if c.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// upstreamTLS is the TLS config for dialing upstreams. Without a CA the
// upstream's certificate is not verified, like libpq's sslmode=require.
func (c *Config) upstreamTLS() (*tls.Config, error) {
	if !c.UpstreamTLS {
		return nil, nil
	}
	if c.UpstreamCA == "" {
		return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, nil
	}
	pem, err := os.ReadFile(c.UpstreamCA)
	if err != nil {
		return nil, fmt.Errorf("read upstream CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("upstream CA %s holds no PEM certificate", c.UpstreamCA)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// yamlKinds are the YAML tags the decoder names, in the words a config
// file's author uses.
var yamlKinds = strings.NewReplacer(
	"!!seq", "a list", "!!map", "a mapping", "!!str", "a string", "!!int", "a number",
	"!!float", "a number", "!!bool", "true or false", "!!null", "nothing",
	"into string", "where a string belongs", "into int", "where a whole number belongs",
	"into bool", "where true or false belongs", "into []string", "where a list of strings belongs",
)

var unknownField = regexp.MustCompile(`field (\S+) not found in type (\S+)`)

// structWords say where a field belongs in the file's words.
var structWords = map[string]string{
	"server.Config": "at the top level", "server.ProxyConfig": "in a proxy", "faults.Rule": "in a rule",
	"faults.Match": "in a rule's match", "faults.Action": "in a rule's action", "faults.Limits": "in a rule's limits",
}

// readableYAMLError is a decoding error without the Go type names
// ("cannot unmarshal !!seq into string" reads "cannot use a list where a
// string belongs").
func readableYAMLError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.ReplaceAll(msg, "cannot unmarshal ", "cannot use ")
	msg = yamlKinds.Replace(msg)
	msg = unknownField.ReplaceAllStringFunc(msg, func(m string) string {
		sub := unknownField.FindStringSubmatch(m)
		where, ok := structWords[sub[2]]
		if !ok {
			where = "here"
		}
		return fmt.Sprintf("unknown field %q %s", sub[1], where)
	})
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	return msg
}
