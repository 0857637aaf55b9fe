package runner

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/control"
	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/server"
)

// A remote proxy's control API that requires a token is reached with the
// token of Options.API, for its address and for the rules a method injects.
func TestRemoteProxyWithToken(t *testing.T) {
	s, err := server.Start(server.Config{API: "127.0.0.1:0", APIToken: "s3cret",
		Proxies: []server.ProxyConfig{{Name: "far", Listen: "127.0.0.1:0", Upstream: "127.0.0.1:1"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	exp := &experiments.Experiment{
		Target:  experiments.Target{DSN: "postgres://postgres@127.0.0.1:1/postgres"},
		Proxies: []experiments.Proxy{{Name: "far", URL: "http://" + s.APIAddr().String()}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := startEnvironment(ctx, exp, Options{}); err == nil || !strings.Contains(err.Error(), "missing bearer token") {
		t.Fatalf("without the token: %v", err)
	}
	env, err := startEnvironment(ctx, exp, Options{API: []control.ClientOption{control.WithToken("s3cret")}})
	if err != nil {
		t.Fatal(err)
	}
	defer env.close()
	if got, want := env.listen["far"], s.Proxies()[0].Addr().String(); got != want {
		t.Fatalf("listen of the remote proxy: %s, want %s", got, want)
	}
	if err := env.putRule(ctx, faults.Rule{Name: "cut", Proxy: "far", Match: faults.Match{Tag: "COMMIT"}, Action: faults.Action{Type: "disconnect"}}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Faults.Get("far", "cut"); err != nil {
		t.Fatalf("the rule did not reach the remote pgchaos: %v", err)
	}
}

// A rule put for a while on a remote instance carries a lease: the
// instance ends it by itself a removal deadline after its duration, unless
// the rule's own limits.expires is sooner. Where the remote proxy listens
// on every address, clients reach it at its API's host.
func TestRemoteLease(t *testing.T) {
	s, err := server.Start(server.Config{API: "127.0.0.1:0",
		Proxies: []server.ProxyConfig{{Name: "far", Listen: "0.0.0.0:0", Upstream: "127.0.0.1:1"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	exp := &experiments.Experiment{
		Target:  experiments.Target{DSN: "postgres://postgres@127.0.0.1:1/postgres"},
		Proxies: []experiments.Proxy{{Name: "far", URLs: []string{"http://" + s.APIAddr().String()}}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env, err := startEnvironment(ctx, exp, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer env.close()
	_, port, _ := net.SplitHostPort(s.Proxies()[0].Addr().String())
	if got, want := env.listen["far"], "127.0.0.1:"+port; port == "" || got != want {
		t.Errorf("clients reach the remote proxy at %s, want %s (it listens on %s)", got, want, s.Proxies()[0].Addr())
	}
	cases := []struct {
		rule           string
		lease, expires time.Duration
		want           time.Duration
	}{
		{"for-a-while", 2 * time.Second, 0, 2*time.Second + removeDeadline},
		{"own-expiry-sooner", 2 * time.Second, time.Second, time.Second},
		{"until-removed", 0, 0, 0},
	}
	for _, c := range cases {
		r := faults.Rule{Name: c.rule, Proxy: "far", Match: faults.Match{Tag: "COMMIT"}, Action: faults.Action{Type: "disconnect"},
			Limits: faults.Limits{Expires: faults.Duration(c.expires)}}
		if err := env.putRule(ctx, r, c.lease); err != nil {
			t.Fatal(err)
		}
		st, err := s.Faults.Get("far", c.rule)
		if err != nil {
			t.Fatal(err)
		}
		if got := time.Duration(st.Rule.Limits.Expires); got != c.want {
			t.Errorf("%s: expires %s, want %s", c.rule, got, c.want)
		}
		if err := env.removeRule(ctx, r); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Faults.Get("far", c.rule); err == nil {
			t.Errorf("%s is still there after its removal", c.rule)
		}
	}
}

// Instances found through dns: https://NAME:PORT are reached at their
// addresses and their certificates verified for NAME, as a certificate
// for a headless Service's name is issued; reached by address alone, the
// same certificate does not verify.
func TestRemoteDNSOverHTTPS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pgchaos.test"}, DNSNames: []string{"pgchaos.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "api.crt"), filepath.Join(dir, "api.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := server.Start(server.Config{API: "127.0.0.1:0", APITLSCert: certFile, APITLSKey: keyFile,
		Proxies: []server.ProxyConfig{{Name: "far", Listen: "127.0.0.1:0", Upstream: "127.0.0.1:1"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	_, port, _ := net.SplitHostPort(s.APIAddr().String())
	opts := Options{API: []control.ClientOption{control.WithRootCAs(roots)},
		LookupHost: func(context.Context, string) ([]string, error) { return []string{"127.0.0.1"}, nil }}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	byName := &experiments.Experiment{Target: experiments.Target{DSN: "postgres://postgres@127.0.0.1:1/postgres"},
		Proxies: []experiments.Proxy{{Name: "far", DNS: "https://pgchaos.test:" + port}}}
	env, err := startEnvironment(ctx, byName, opts)
	if err != nil {
		t.Fatalf("by name: %v", err)
	}
	env.close()
	byAddr := &experiments.Experiment{Target: byName.Target,
		Proxies: []experiments.Proxy{{Name: "far", URLs: []string{"https://127.0.0.1:" + port}}}}
	if env, err := startEnvironment(ctx, byAddr, opts); err == nil || !strings.Contains(err.Error(), "certificate") {
		if env != nil {
			env.close()
		}
		t.Fatalf("by address: %v, want a certificate error", err)
	}
}

// A put whose answer is lost may have reached its instance: when the
// injection fails for it, the rule is removed there too, not left armed
// on an instance the run believes never took it.
func TestFleetPutWithLostAnswerIsTakenBack(t *testing.T) {
	var servers []*server.Server
	for range 2 {
		s, err := server.Start(server.Config{API: "127.0.0.1:0",
			Proxies: []server.ProxyConfig{{Name: "pg", Listen: "127.0.0.1:0", Upstream: "127.0.0.1:1"}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		servers = append(servers, s)
	}
	// The second instance is reached through a relay that passes every
	// request on but drops the answer to the first PUT of a rule.
	target, _ := url.Parse("http://" + servers[1].APIAddr().String())
	relay := httputil.NewSingleHostReverseProxy(target)
	var dropped atomic.Bool
	lossy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/rules") && !dropped.Swap(true) {
			relay.ServeHTTP(httptest.NewRecorder(), r) // the instance takes it ...
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close() // ... and its answer is lost
			}
			return
		}
		relay.ServeHTTP(w, r)
	}))
	defer lossy.Close()
	exp := &experiments.Experiment{
		Target:  experiments.Target{DSN: "postgres://postgres@127.0.0.1:1/postgres"},
		Proxies: []experiments.Proxy{{Name: "pg", URLs: []string{"http://" + servers[0].APIAddr().String(), lossy.URL}}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env, err := startEnvironment(ctx, exp, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer env.close()
	rule := faults.Rule{Name: "cut", Proxy: "pg", Match: faults.Match{Tag: "COMMIT"}, Action: faults.Action{Type: "disconnect"}}
	err = env.putRule(ctx, rule, 0)
	if err == nil || !strings.Contains(err.Error(), "reached 1 of 2 instances") || !strings.Contains(err.Error(), "or may have") {
		t.Fatalf("a put whose answer was lost: %v", err)
	}
	if !dropped.Load() {
		t.Fatal("the relay dropped no answer")
	}
	for i, s := range servers {
		if rules := s.Faults.Rules(); len(rules) != 0 {
			t.Errorf("instance %d still holds %d rules after the failed injection", i, len(rules))
		}
	}
}
