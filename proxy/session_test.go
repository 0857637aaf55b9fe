package proxy_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
)

func TestSessionState(t *testing.T) {
	ctx := testCtx(t)
	db := newDatabase(t)
	in := startProxy(t, pg.Addr(), nil)
	conn := connect(t, ctx, pgtest.ConnString(in.addr(), pgtest.SuperUser, "", db)+"&application_name=state_test")

	one := func() proxy.SessionInfo {
		t.Helper()
		list := in.Sessions()
		if len(list) != 1 {
			t.Fatalf("want 1 session, got %d", len(list))
		}
		return list[0]
	}
	s := one()
	if s.User != pgtest.SuperUser || s.Database != db || s.ApplicationName != "state_test" || s.TxStatus != "idle" || s.BackendPID == 0 {
		t.Fatalf("session state: %+v", s)
	}
	var pid int32
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil || pid != s.BackendPID {
		t.Fatalf("backend pid %d, session says %d (%v)", pid, s.BackendPID, err)
	}
	mustExec(t, ctx, conn, "BEGIN")
	if s := one(); s.TxStatus != "in_transaction" {
		t.Fatalf("after BEGIN: %s", s.TxStatus)
	}
	conn.Exec(ctx, "SELECT 1/0")
	if s := one(); s.TxStatus != "failed" {
		t.Fatalf("after an error in a transaction: %s", s.TxStatus)
	}
	mustExec(t, ctx, conn, "ROLLBACK")
	mustExec(t, ctx, conn, "SET application_name = 'renamed'")
	s = one()
	if s.TxStatus != "idle" || s.ApplicationName != "renamed" {
		t.Fatalf("after ROLLBACK and SET application_name: %+v", s)
	}
	if s.MessagesIn == 0 || s.MessagesOut == 0 || s.BytesIn == 0 || s.BytesOut <= s.BytesIn {
		t.Fatalf("counters: %+v", s)
	}
	// Metrics move while the session is open, not only when it ends.
	if got := in.metric(t, "pgchaos_messages_total", map[string]string{"direction": "client_to_server", "type": "query"}); got < 4 {
		t.Fatalf("query messages counted: %v", got)
	}
	if got := in.metric(t, "pgchaos_sessions_active", nil); got != 1 {
		t.Fatalf("active sessions: %v", got)
	}

	if !in.registry.Kill(s.ID) {
		t.Fatal("Kill found no session")
	}
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("session still works after Kill")
	}
	waitFor(t, "killed session removed", func() bool { return len(in.Sessions()) == 0 })
	if got := in.metric(t, "pgchaos_sessions_active", nil); got != 0 {
		t.Fatalf("active sessions after kill: %v", got)
	}
}

// TestReplication streams a base backup through the proxy: replication
// startup, CopyOut and the CopyBoth WAL stream of pg_basebackup -X stream.
func TestReplication(t *testing.T) {
	in := startProxy(t, pg.Addr(), nil)
	dir := t.TempDir()
	host, port := splitAddr(t, in.addr())
	cmd := exec.CommandContext(context.Background(), filepath.Join(pg.BinDir(), "pg_basebackup"),
		"-h", host, "-p", port, "-U", pgtest.SuperUser, "-D", filepath.Join(dir, "backup"), "-X", "stream", "-c", "fast", "--no-sync")
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pg_basebackup through the proxy: %v\n%s", err, out)
	}
	for _, f := range []string{"PG_VERSION", "backup_label", "pg_wal"} {
		if _, err := os.Stat(filepath.Join(dir, "backup", f)); err != nil {
			t.Fatalf("backup lacks %s: %v", f, err)
		}
	}
	if got := in.metric(t, "pgchaos_messages_total", map[string]string{"type": "copy_both_response"}); got < 1 {
		t.Fatalf("no CopyBoth stream went through the proxy (%v): %s", got, strings.TrimSpace(string(out)))
	}
}
