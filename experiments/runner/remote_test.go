package runner

import (
	"context"
	"net"
	"strings"
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
