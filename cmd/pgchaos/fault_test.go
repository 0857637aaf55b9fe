package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/server"
)

func pgchaos(t *testing.T, wantCode int, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(args, &stdout, &stderr); code != wantCode {
		t.Fatalf("pgchaos %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, wantCode, stdout.String(), stderr.String())
	}
	return stdout.String() + stderr.String()
}

func TestFaultCommands(t *testing.T) {
	s, err := server.Start(server.Config{API: "127.0.0.1:0", Proxies: []server.ProxyConfig{{Name: "pg", Listen: "127.0.0.1:0", Upstream: pg.Addr()}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	api := s.APIAddr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgtest.ConnString(s.Proxies()[0].Addr().String(), pgtest.SuperUser, "", "postgres")+"&application_name=cli_test")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	out := pgchaos(t, 0, "fault", "add", "--api", api, "--name", "nope", "--sql", `^select 7$`, "--action", "error", "--sqlstate", "40001", "--times", "1")
	if !strings.Contains(out, "added rule nope") {
		t.Fatal(out)
	}
	pgchaos(t, 2, "fault", "add", "--api", api, "--name", "nope", "--action", "drop")                       // exists
	pgchaos(t, 2, "fault", "add", "--api", api, "--name", "bad", "--action", "error")                       // no sqlstate
	pgchaos(t, 2, "fault", "add", "--api", api, "--name", "bad", "--action", "delay", "--statement", "sel") // bad class

	_, err = conn.Exec(ctx, "SELECT 7")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "40001" {
		t.Fatalf("want 40001, got %v", err)
	}
	if _, err := conn.Exec(ctx, "SELECT 7"); err != nil {
		t.Fatalf("--times 1 fired twice: %v", err)
	}
	list := pgchaos(t, 0, "fault", "list", "--api", api)
	if !strings.Contains(list, "nope") || !strings.Contains(list, "sql=^select 7$") || !strings.Contains(list, "2        1") {
		t.Fatalf("fault list:\n%s", list)
	}
	if ev := pgchaos(t, 0, "events", "--api", api); !strings.Contains(ev, "nope") || !strings.Contains(ev, `"SELECT $1"`) {
		t.Fatalf("events:\n%s", ev)
	}
	pgchaos(t, 0, "fault", "rm", "--api", api, "nope")
	pgchaos(t, 2, "fault", "rm", "--api", api, "nope")

	file := filepath.Join(t.TempDir(), "rules.yaml")
	os.WriteFile(file, []byte("- name: a\n  match: {statement: commit}\n  action: {type: delay, delay: 1ms}\n- name: b\n  match: {tag: COMMIT}\n  action: {type: disconnect, when: after}\n"), 0o644)
	if out := pgchaos(t, 0, "fault", "add", "--api", api, "--file", file); !strings.Contains(out, "added rule a") || !strings.Contains(out, "added rule b") {
		t.Fatal(out)
	}
	os.WriteFile(file, []byte("name: c\naction:\n  type: error\n  sqlstate: 4001\n"), 0o644)
	if out := pgchaos(t, 2, "fault", "add", "--api", api, "--file", file); !strings.Contains(out, file+":1 (c): action.sqlstate") {
		t.Fatalf("want file:line and field:\n%s", out)
	}
	pgchaos(t, 0, "fault", "reset", "--api", api)
	if list := pgchaos(t, 0, "fault", "list", "--api", api); strings.Count(list, "\n") != 1 {
		t.Fatalf("rules left after reset:\n%s", list)
	}

	sessions := pgchaos(t, 0, "sessions", "--api", api)
	if !strings.Contains(sessions, "cli_test") {
		t.Fatalf("sessions:\n%s", sessions)
	}
	id := s.Registry.Sessions()[0].ID
	pgchaos(t, 0, "sessions", "--api", api, "--kill", strings.TrimSpace(strings.Fields(sessions[strings.Index(sessions, "\n")+1:])[0]))
	if err := conn.Ping(ctx); err == nil {
		t.Fatalf("session %d still alive after sessions --kill", id)
	}
	pgchaos(t, 1, "fault", "list", "--api", "127.0.0.1:1") // nothing listening: not a usage error
}
