package pgtest_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/internal/pgtest"
)

// ids returns the ids in pitr_t, in order.
func ids(ctx context.Context, t *testing.T, conn *pgx.Conn) []int {
	t.Helper()
	rows, err := conn.Query(ctx, "SELECT id FROM pitr_t ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func span(from, to int) []int {
	var s []int
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func nodeNames(c *pgtest.Cluster) []string {
	var names []string
	for _, n := range c.Nodes() {
		names = append(names, n.Name())
	}
	return names
}

func mustBackup(ctx context.Context, t *testing.T, c *pgtest.Cluster, node *pgtest.Postgres) *pgtest.Backup {
	t.Helper()
	start := time.Now()
	b, err := c.BaseBackup(ctx, node)
	if err != nil {
		t.Fatalf("BaseBackup(%s): %v", node.Name(), err)
	}
	t.Logf("base backup of %s took %v", node.Name(), time.Since(start).Round(time.Millisecond))
	return b
}

func mustRestore(ctx context.Context, t *testing.T, c *pgtest.Cluster, b *pgtest.Backup, target pgtest.RestoreTarget, name string) *pgtest.Postgres {
	t.Helper()
	start := time.Now()
	r, err := c.Restore(ctx, b, target, name)
	if err != nil {
		t.Fatalf("Restore(%s, %+v): %v", name, target, err)
	}
	t.Logf("restore of %s to %v took %v", name, target, time.Since(start).Round(time.Millisecond))
	return r
}

// checkRestored checks that r is a primary of its own, with nothing of the
// source's replication or recovery settings, and accepts writes.
func checkRestored(ctx context.Context, t *testing.T, r *pgtest.Postgres) *pgx.Conn {
	t.Helper()
	rc := superConn(ctx, t, r)
	for sql, want := range map[string]string{
		"SELECT pg_is_in_recovery()::text":                      "false",
		"SHOW port":                                             strconv.Itoa(r.Port()),
		"SHOW unix_socket_directories":                          r.Dir(),
		"SHOW data_directory":                                   r.DataDir(),
		"SHOW primary_conninfo":                                 "",
		"SHOW primary_slot_name":                                "",
		"SHOW synchronous_standby_names":                        "",
		"SHOW archive_mode":                                     "off",
		"SELECT count(*)::text FROM pg_replication_slots":       "0",
		"SELECT timeline_id::text FROM pg_control_checkpoint()": "2",
	} {
		if got := queryString(ctx, t, rc, sql); got != want {
			t.Errorf("%s: %s = %q, want %q", r.Name(), sql, got, want)
		}
	}
	for _, f := range []string{"standby.signal", "recovery.signal"} {
		if _, err := os.Stat(filepath.Join(r.DataDir(), f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %s after promotion: %v, want it absent", r.Name(), f, err)
		}
	}
	conf, err := os.ReadFile(filepath.Join(r.DataDir(), "pgtest.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(conf), "recovery_target") {
		t.Errorf("%s: pgtest.conf still has the recovery target after promotion:\n%s", r.Name(), conf)
	}
	if !r.Running() {
		t.Errorf("%s: Running() = false", r.Name())
	}
	mustExec(ctx, t, rc, "INSERT INTO pitr_t VALUES (100); DELETE FROM pitr_t WHERE id = 100")
	return rc
}

func TestClusterBackupRestore(t *testing.T) {
	c := startCluster(t, pgtest.ClusterOptions{Archive: true})
	ctx := testContext(t)
	primary := c.Node("primary")
	pc := superConn(ctx, t, primary)
	mustExec(ctx, t, pc, "CREATE TABLE pitr_t (id int); INSERT INTO pitr_t SELECT generate_series(1, 3)")
	before := time.Now()
	b := mustBackup(ctx, t, c, primary)
	if b.Node() != "primary" || b.Taken().Before(before) || b.Taken().After(time.Now()) {
		t.Errorf("Node() = %q, Taken() = %v; want primary, between %v and now", b.Node(), b.Taken(), before)
	}
	st, err := os.Stat(filepath.Join(b.Dir(), "PG_VERSION"))
	if err != nil {
		t.Fatalf("the backup in %s: %v", b.Dir(), err)
	}
	if os.Geteuid() == 0 {
		if uid := st.Sys().(*syscall.Stat_t).Uid; uid == 0 {
			t.Errorf("the backup's PG_VERSION is owned by root, want the postgres OS user")
		}
	}

	mustExec(ctx, t, pc, "INSERT INTO pitr_t SELECT generate_series(4, 6)")
	mustExec(ctx, t, pc, "SELECT pg_create_restore_point('mid')")
	lsn := queryString(ctx, t, pc, "SELECT pg_current_wal_lsn()::text")
	var at time.Time
	if err := pc.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&at); err != nil {
		t.Fatal(err)
	}
	mustExec(ctx, t, pc, "INSERT INTO pitr_t SELECT generate_series(7, 9)")
	mustExec(ctx, t, pc, "SELECT pg_switch_wal()")

	// The runner reads the nodes while a step restores.
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			for _, n := range c.Nodes() {
				_ = c.Node(n.Name())
			}
			time.Sleep(time.Millisecond)
		}
	})
	r := mustRestore(ctx, t, c, b, pgtest.RestoreTarget{Name: "mid"}, "restored")
	close(done)
	wg.Wait()

	if got, want := nodeNames(c), []string{"primary", "restored"}; !slices.Equal(got, want) {
		t.Errorf("Nodes() = %v, want %v", got, want)
	}
	if c.Node("restored") != r || r.Name() != "restored" || r.Port() == primary.Port() {
		t.Errorf("Node(restored) = %p, want %p, named restored, on a port other than the primary's", c.Node("restored"), r)
	}
	rc := checkRestored(ctx, t, r)
	if got := ids(ctx, t, rc); !slices.Equal(got, span(1, 6)) {
		t.Errorf("restored to mid: ids %v, want 1..6", got)
	}
	if got := ids(ctx, t, pc); !slices.Equal(got, span(1, 9)) || !primary.Running() {
		t.Errorf("the primary after the restore: ids %v, Running() = %v; want 1..9, true", got, primary.Running())
	}

	// The backup can be restored again, to the same point by time and LSN.
	for name, target := range map[string]pgtest.RestoreTarget{
		"by_time": {Time: at},
		"by_lsn":  {LSN: lsn},
	} {
		r := mustRestore(ctx, t, c, b, target, name)
		if got := ids(ctx, t, checkRestored(ctx, t, r)); !slices.Equal(got, span(1, 6)) {
			t.Errorf("restored to %v: ids %v, want 1..6", target, got)
		}
	}
	if got := nodeNames(c); len(got) != 4 {
		t.Errorf("Nodes() = %v, want the primary and 3 restored nodes", got)
	}

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Dir(b.Dir()), r.Dir()} {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Stop: %v, want it removed", dir, err)
		}
	}
	if _, err := c.BaseBackup(ctx, primary); err == nil {
		t.Error("BaseBackup after Stop succeeded")
	}
	if _, err := c.Restore(ctx, b, pgtest.RestoreTarget{}, "late"); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("Restore after Stop: %v, want an error saying the cluster was stopped", err)
	}
}

// TestClusterRestoreEndOfArchive restores a backup of a standby, whose
// replication settings must not survive, to the end of the archive.
func TestClusterRestoreEndOfArchive(t *testing.T) {
	c := startCluster(t, pgtest.ClusterOptions{Standbys: 1, Archive: true})
	ctx := testContext(t)
	primary, standby := c.Node("primary"), c.Node("standby1")
	pc := superConn(ctx, t, primary)
	mustExec(ctx, t, pc, "CREATE TABLE pitr_t (id int); INSERT INTO pitr_t SELECT generate_series(1, 3)")
	b := mustBackup(ctx, t, c, standby)
	if b.Node() != "standby1" {
		t.Errorf("Node() = %q, want standby1", b.Node())
	}
	mustExec(ctx, t, pc, "INSERT INTO pitr_t SELECT generate_series(4, 6)")
	mustExec(ctx, t, pc, "SELECT pg_switch_wal()")
	r := mustRestore(ctx, t, c, b, pgtest.RestoreTarget{}, "latest")
	if got := ids(ctx, t, checkRestored(ctx, t, r)); !slices.Equal(got, span(1, 6)) {
		t.Errorf("restored to the end of the archive: ids %v, want 1..6", got)
	}
	if got, want := nodeNames(c), []string{"primary", "standby1", "latest"}; !slices.Equal(got, want) {
		t.Errorf("Nodes() = %v, want %v", got, want)
	}
	// The standby the backup came from still follows the primary.
	mustExec(ctx, t, pc, "INSERT INTO pitr_t VALUES (7)")
	waitRows(ctx, t, standby, "pitr_t", 7)
}

func TestClusterBackupNeedsArchive(t *testing.T) {
	c := startCluster(t, pgtest.ClusterOptions{})
	_, err := c.BaseBackup(testContext(t), c.Node("primary"))
	if err == nil || !strings.Contains(err.Error(), "Archive") || !strings.Contains(err.Error(), "primary") {
		t.Fatalf("BaseBackup without Archive: %v, want an error naming the node and ClusterOptions.Archive", err)
	}
}

// postgresProcsIn lists the processes whose command line names a directory
// under a temp dir whose name starts with prefix.
func postgresProcsIn(prefix string) []string {
	var found []string
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		b, err := os.ReadFile(f)
		if err == nil && strings.Contains(string(b), filepath.Join(os.TempDir(), prefix)) {
			found = append(found, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return found
}

func TestClusterRestoreErrors(t *testing.T) {
	c := startCluster(t, pgtest.ClusterOptions{Archive: true})
	ctx := testContext(t)
	primary := c.Node("primary")
	pc := superConn(ctx, t, primary)
	mustExec(ctx, t, pc, "CREATE TABLE pitr_t (id int); INSERT INTO pitr_t VALUES (1)")
	b := mustBackup(ctx, t, c, primary)
	mustExec(ctx, t, pc, "SELECT pg_switch_wal()")

	for _, bad := range []struct {
		target pgtest.RestoreTarget
		name   string
		want   []string
	}{
		{pgtest.RestoreTarget{}, "primary", []string{"primary", "exists"}},
		{pgtest.RestoreTarget{Name: "mid", LSN: "0/1"}, "two", []string{"two", "Name", "LSN"}},
		{pgtest.RestoreTarget{LSN: "somewhere"}, "lsn", []string{"lsn", `"somewhere"`}},
		{pgtest.RestoreTarget{}, "Bad-Name", []string{`"Bad-Name"`}},
	} {
		if r, err := c.Restore(ctx, b, bad.target, bad.name); err == nil {
			t.Errorf("Restore(%+v, %q) succeeded (%s)", bad.target, bad.name, r.Name())
		} else {
			for _, w := range bad.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Restore(%+v, %q): %v\nwant it to mention %s", bad.target, bad.name, err, w)
				}
			}
		}
	}
	if _, err := c.Restore(ctx, nil, pgtest.RestoreTarget{}, "nil_backup"); err == nil {
		t.Error("Restore of a nil backup succeeded")
	}

	// Recovery runs out of archive before it finds the restore point: the
	// server gives up, and Restore must say so rather than wait for ever.
	start := time.Now()
	_, err := c.Restore(ctx, b, pgtest.RestoreTarget{Name: "no_such_point"}, "missing")
	took := time.Since(start)
	t.Logf("Restore to a missing restore point failed after %v: %v", took.Round(time.Millisecond), err)
	if err == nil {
		t.Fatal("Restore to a restore point that does not exist succeeded")
	}
	for _, w := range []string{"postgres missing", `"no_such_point"`, "recovery target"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error does not mention %s", w)
		}
	}
	if took > 40*time.Second {
		t.Errorf("Restore took %v to fail, want within its 30 s bound", took)
	}
	if procs := postgresProcsIn("pgtest-postgres-missing-"); len(procs) > 0 {
		t.Errorf("processes of the failed restore still run: %v", procs)
	}
	if dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "pgtest-postgres-missing-*")); len(dirs) > 0 {
		t.Errorf("the failed restore left %v behind", dirs)
	}
	if c.Node("missing") != nil || len(c.Nodes()) != 1 {
		t.Errorf("after the failed restore, Nodes() = %v, want only the primary", nodeNames(c))
	}
	// The name is free again and the backup intact.
	r := mustRestore(ctx, t, c, b, pgtest.RestoreTarget{}, "missing")
	if got := ids(ctx, t, checkRestored(ctx, t, r)); !slices.Equal(got, []int{1}) {
		t.Errorf("restored after a failed restore: ids %v, want [1]", got)
	}
	if _, err := c.BaseBackup(ctx, r); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("BaseBackup of a restored node: %v, want an error naming it", err)
	}

	// Stop during a Restore: whichever wins, nothing of it stays behind.
	restored := make(chan error, 1)
	go func() {
		_, err := c.Restore(ctx, b, pgtest.RestoreTarget{}, "racy")
		restored <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if err := c.Stop(); err != nil {
		t.Errorf("Stop during a Restore: %v", err)
	}
	t.Logf("Restore during Stop: %v", <-restored)
	if procs := postgresProcsIn("pgtest-postgres-racy-"); len(procs) > 0 {
		t.Errorf("processes of the restore cut short by Stop still run: %v", procs)
	}
	if dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "pgtest-postgres-racy-*")); len(dirs) > 0 {
		t.Errorf("the restore cut short by Stop left %v behind", dirs)
	}
}
