package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/server"
)

// The client commands send the token of --api-token-file or
// PGCHAOS_API_TOKEN; without it the API refuses them.
func TestCLISendsToken(t *testing.T) {
	s, err := server.Start(server.Config{API: "127.0.0.1:0", APIToken: "s3cret"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	api := s.APIAddr().String()
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	os.WriteFile(good, []byte("s3cret\n"), 0o600)
	os.WriteFile(bad, []byte("guess\n"), 0o600)

	t.Setenv("PGCHAOS_API_TOKEN", "")
	if out := pgchaos(t, 2, "fault", "list", "--api", api); !strings.Contains(out, "missing bearer token") {
		t.Fatalf("without a token:\n%s", out)
	}
	if out := pgchaos(t, 2, "events", "--api", api, "--api-token-file", bad); !strings.Contains(out, "wrong bearer token") {
		t.Fatalf("with a wrong token:\n%s", out)
	}
	pgchaos(t, 0, "fault", "add", "--api", api, "--api-token-file", good, "--name", "d", "--statement", "select", "--action", "delay", "--delay", "1ms")
	pgchaos(t, 0, "sessions", "--api", api, "--api-token-file", good)

	t.Setenv("PGCHAOS_API_TOKEN", "s3cret")
	if out := pgchaos(t, 0, "fault", "list", "--api", api); !strings.Contains(out, "select") {
		t.Fatalf("fault list with PGCHAOS_API_TOKEN:\n%s", out)
	}
	pgchaos(t, 0, "events", "--api", api)
	pgchaos(t, 2, "fault", "list", "--api", api, "--api-token-file", bad) // the file wins over the environment
	pgchaos(t, 0, "fault", "reset", "--api", api)
	t.Setenv("PGCHAOS_API_TOKEN", "two\nlines")
	if out := pgchaos(t, 2, "fault", "list", "--api", api); !strings.Contains(out, "PGCHAOS_API_TOKEN") {
		t.Fatalf("a token that cannot be sent:\n%s", out)
	}
}

// The CLI reaches an API served over HTTPS and verifies it with --api-ca.
func TestCLIOverTLS(t *testing.T) {
	cert, key, err := pgtest.WriteSelfSignedCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.Start(server.Config{API: "127.0.0.1:0", APITLSCert: cert, APITLSKey: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	url := "https://" + s.APIAddr().String()
	t.Setenv("PGCHAOS_API_TOKEN", "")
	pgchaos(t, 0, "fault", "list", "--api", url, "--api-ca", cert)
	if out := pgchaos(t, 1, "fault", "list", "--api", url); !strings.Contains(out, "certificate") {
		t.Fatalf("without --api-ca the self-signed certificate is not trusted:\n%s", out)
	}
	if out := pgchaos(t, 2, "fault", "list", "--api", s.APIAddr().String(), "--api-ca", cert); !strings.Contains(out, "give --api https://HOST:PORT") {
		t.Fatalf("--api-ca with a plain address:\n%s", out)
	}
}
