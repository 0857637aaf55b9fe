package runner

import (
	"context"
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
	if err := env.putRule(ctx, faults.Rule{Name: "cut", Proxy: "far", Match: faults.Match{Tag: "COMMIT"}, Action: faults.Action{Type: "disconnect"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Faults.Get("far", "cut"); err != nil {
		t.Fatalf("the rule did not reach the remote pgchaos: %v", err)
	}
}
