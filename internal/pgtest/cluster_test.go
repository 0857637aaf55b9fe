package pgtest_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	osexec "os/exec"
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

func startCluster(t *testing.T, opts pgtest.ClusterOptions) *pgtest.Cluster {
	t.Helper()
	start := time.Now()
	// Progress goes to the test's output, shown when it fails or with -v.
	opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := pgtest.StartCluster(testContext(t), opts)
	pgtest.Unavailable(t, err)
	t.Logf("cluster with %d standbys started in %v", opts.Standbys, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping the cluster: %v", err)
		}
	})
	return c
}

// superConn connects to node as SuperUser; the connection is closed at the
// end of the test.
func superConn(ctx context.Context, t *testing.T, node *pgtest.Postgres) *pgx.Conn {
	t.Helper()
	conn, err := connect(ctx, t, node.DSN(pgtest.SuperUser, "", ""))
	if err != nil {
		t.Fatalf("connecting to %s: %v", node.Name(), err)
	}
	return conn
}

func mustExec(ctx context.Context, t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// waitFor polls cond on a fresh connection to node until it holds, for up
// to 10 s: replication is fast but not instant.
func waitFor(ctx context.Context, t *testing.T, node *pgtest.Postgres, what string, cond func(*pgx.Conn) (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	conn := superConn(ctx, t, node)
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond(conn)
		if ok && err == nil {
			return
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: %s did not happen within 10s (last error: %v)", node.Name(), what, last)
}

// waitRows waits until table holds want rows on node.
func waitRows(ctx context.Context, t *testing.T, node *pgtest.Postgres, table string, want int) {
	t.Helper()
	waitFor(ctx, t, node, table+" has "+strconv.Itoa(want)+" rows", func(conn *pgx.Conn) (bool, error) {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n)
		return n == want, err
	})
}

// replicationStates maps application_name to sync_state in pg_stat_replication.
func replicationStates(ctx context.Context, t *testing.T, conn *pgx.Conn) map[string]string {
	t.Helper()
	rows, err := conn.Query(ctx, "SELECT application_name, sync_state FROM pg_stat_replication")
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for rows.Next() {
		var name, state string
		if err := rows.Scan(&name, &state); err != nil {
			t.Fatal(err)
		}
		states[name] = state
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return states
}

func TestClusterSynchronous(t *testing.T) {
	if pg.Name() != "primary" {
		t.Errorf("StartPostgres's server is called %q, want primary", pg.Name())
	}
	t.Run("on", func(t *testing.T) {
		c := startCluster(t, pgtest.ClusterOptions{Standbys: 1, Synchronous: "on"})
		ctx := testContext(t)
		var names []string
		for _, n := range c.Nodes() {
			names = append(names, n.Name())
		}
		if want := []string{"primary", "standby1"}; !slices.Equal(names, want) {
			t.Fatalf("Nodes() = %v, want %v", names, want)
		}
		if c.Node("standby2") != nil || c.ArchiveDir() != "" {
			t.Errorf("Node(standby2) = %v, ArchiveDir() = %q; want nil and \"\"", c.Node("standby2"), c.ArchiveDir())
		}
		primary, standby := c.Node("primary"), c.Node("standby1")
		pc, sc := superConn(ctx, t, primary), superConn(ctx, t, standby)
		for _, n := range []struct {
			node *pgtest.Postgres
			conn *pgx.Conn
		}{{primary, pc}, {standby, sc}} {
			for setting, want := range map[string]string{
				"synchronous_commit": "on", "wal_log_hints": "on", "fsync": "off",
				"max_prepared_transactions": "50", "hot_standby": "on",
			} {
				if got := queryString(ctx, t, n.conn, "SHOW "+setting); got != want {
					t.Errorf("%s: %s = %q, want %q", n.node.Name(), setting, got, want)
				}
			}
		}
		if got := queryString(ctx, t, sc, "SELECT pg_is_in_recovery()::text"); got != "true" {
			t.Errorf("standby1 in recovery = %s, want true", got)
		}
		if got := replicationStates(ctx, t, pc); got["standby1"] != "sync" {
			t.Errorf("pg_stat_replication sync_state by application_name = %v, want standby1: sync", got)
		}
		mustExec(ctx, t, pc, "CREATE TABLE sync_t (id int); INSERT INTO sync_t VALUES (1)")
		waitRows(ctx, t, standby, "sync_t", 1)
	})
	t.Run("quorum", func(t *testing.T) {
		c := startCluster(t, pgtest.ClusterOptions{Standbys: 2, Synchronous: "quorum"})
		ctx := testContext(t)
		got := replicationStates(ctx, t, superConn(ctx, t, c.Node("primary")))
		if want := map[string]string{"standby1": "quorum", "standby2": "quorum"}; !equalMaps(got, want) {
			t.Errorf("pg_stat_replication sync_state = %v, want %v", got, want)
		}
	})
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestClusterCrashRestart(t *testing.T) {
	c := startCluster(t, pgtest.ClusterOptions{Standbys: 1})
	ctx := testContext(t)
	primary, standby := c.Node("primary"), c.Node("standby1")
	port := primary.Port()
	pc := superConn(ctx, t, primary)
	mustExec(ctx, t, pc, "CREATE TABLE crash_t (id int)")
	const committed = 50
	for i := range committed {
		// One commit per row: every one was acknowledged before the kill.
		if _, err := pc.Exec(ctx, "INSERT INTO crash_t VALUES ($1)", i); err != nil {
			t.Fatal(err)
		}
	}

	// A backend busy computing never looks at the postmaster: it must be
	// killed with it, or the restart finds the shared memory still in use.
	busy := superConn(ctx, t, primary)
	busyPID := queryString(ctx, t, busy, "SELECT pg_backend_pid()::text")
	busyDone := make(chan error, 1)
	go func() {
		_, err := busy.Exec(ctx, "SELECT count(*) FROM generate_series(1, 10000000000)")
		busyDone <- err
	}()
	waitFor(ctx, t, primary, "the busy query running", func(conn *pgx.Conn) (bool, error) {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid = "+busyPID).Scan(&n)
		return n == 1, err
	})

	if err := primary.Crash("kill"); err != nil {
		t.Fatalf("Crash(kill): %v", err)
	}
	if err := <-busyDone; err == nil {
		t.Error("the busy query on the killed primary succeeded")
	}
	if stat, err := os.ReadFile("/proc/" + busyPID + "/stat"); err == nil && !strings.Contains(string(stat), ") Z ") {
		t.Errorf("the busy backend (pid %s) outlived Crash(kill): %s", busyPID, stat)
	}
	if primary.Running() {
		t.Error("Running() after Crash(kill) = true")
	}
	if _, err := pc.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("a connection to the killed primary still works")
	}
	if _, err := connect(ctx, t, primary.DSN(pgtest.SuperUser, "", "")); err == nil {
		t.Error("connecting to the killed primary succeeded")
	}
	if err := primary.Crash("kill"); err == nil || !strings.Contains(err.Error(), "not running") || !strings.Contains(err.Error(), "primary") {
		t.Errorf("Crash of a crashed node: %v, want an error naming the node and saying it is not running", err)
	}
	if err := primary.Start(ctx); err != nil {
		t.Fatalf("Start after Crash(kill): %v", err)
	}
	if !primary.Running() || primary.Port() != port {
		t.Errorf("after Start: Running() = %v, port %d; want true, port %d", primary.Running(), primary.Port(), port)
	}
	waitRows(ctx, t, primary, "crash_t", committed)
	if err := primary.Start(ctx); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("Start of a running node: %v, want an error", err)
	}
	if err := primary.Crash("gently"); err == nil || !strings.Contains(err.Error(), `"gently"`) {
		t.Errorf("Crash(gently): %v, want an error naming the mode", err)
	}

	rows := committed
	for _, mode := range []string{"immediate", "fast"} {
		for _, node := range []*pgtest.Postgres{standby, primary} {
			if err := node.Crash(mode); err != nil {
				t.Fatalf("%s.Crash(%s): %v", node.Name(), mode, err)
			}
			if node.Running() {
				t.Errorf("%s.Running() after Crash(%s) = true", node.Name(), mode)
			}
			if err := node.Start(ctx); err != nil {
				t.Fatalf("%s.Start after Crash(%s): %v", node.Name(), mode, err)
			}
			// A write after each restart reaches the standby: the primary
			// accepts writes again and the standby streams again.
			mustExec(ctx, t, superConn(ctx, t, primary), "INSERT INTO crash_t VALUES (-1)")
			rows++
			waitRows(ctx, t, standby, "crash_t", rows)
		}
	}

	// Stop after a kill leaves nothing behind.
	if err := standby.Crash("kill"); err != nil {
		t.Fatal(err)
	}
	if err := standby.Stop(); err != nil {
		t.Fatalf("Stop of a killed standby: %v", err)
	}
	if _, err := os.Stat(standby.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("standby1's dir %s after Stop: %v, want it removed", standby.Dir(), err)
	}
	if err := standby.Start(ctx); err == nil {
		t.Error("Start after Stop succeeded")
	}
}

func TestClusterFailover(t *testing.T) {
	// Synchronous: the promoted standby must accept writes although no
	// standby follows it yet.
	c := startCluster(t, pgtest.ClusterOptions{Standbys: 2, Synchronous: "on"})
	ctx := testContext(t)
	oldPrimary, newPrimary, other := c.Node("primary"), c.Node("standby1"), c.Node("standby2")
	mustExec(ctx, t, superConn(ctx, t, oldPrimary), "CREATE TABLE failover_t (id int); INSERT INTO failover_t VALUES (1)")
	if err := oldPrimary.Crash("kill"); err != nil {
		t.Fatal(err)
	}
	if err := newPrimary.Promote(ctx, true); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	writeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc := superConn(ctx, t, newPrimary)
	mustExec(writeCtx, t, nc, "INSERT INTO failover_t VALUES (2)")
	if got := queryString(ctx, t, nc, "SELECT timeline_id::text FROM pg_control_checkpoint()"); got != "2" {
		t.Errorf("timeline of the promoted standby = %s, want 2", got)
	}
	if err := oldPrimary.Promote(ctx, true); err == nil {
		t.Error("Promote of a crashed node succeeded")
	}

	// The crashed old primary, and the other standby, which still
	// follows it, both become standbys of the new primary.
	for _, node := range []*pgtest.Postgres{oldPrimary, other} {
		port := node.Port()
		if err := node.Rewind(ctx, newPrimary); err != nil {
			t.Fatalf("Rewind(%s): %v", node.Name(), err)
		}
		if !node.Running() || node.Port() != port {
			t.Errorf("%s after Rewind: Running() = %v, port %d; want true, port %d", node.Name(), node.Running(), node.Port(), port)
		}
		if got := queryString(ctx, t, superConn(ctx, t, node), "SELECT pg_is_in_recovery()::text"); got != "true" {
			t.Errorf("rewound %s in recovery = %s, want true", node.Name(), got)
		}
	}
	mustExec(writeCtx, t, nc, "INSERT INTO failover_t VALUES (3)")
	for _, node := range []*pgtest.Postgres{oldPrimary, other} {
		waitRows(ctx, t, node, "failover_t", 3)
		waitFor(ctx, t, node, "streaming on timeline 2", func(conn *pgx.Conn) (bool, error) {
			var tli int
			err := conn.QueryRow(ctx, "SELECT received_tli FROM pg_stat_wal_receiver WHERE status = 'streaming'").Scan(&tli)
			return tli == 2, err
		})
	}
	if got := replicationStates(ctx, t, nc); got["primary"] == "" || got["standby2"] == "" {
		t.Errorf("standby1's pg_stat_replication = %v, want primary and standby2", got)
	}
}

// forwarder relays TCP connections to upstream and records the local port
// of each connection it makes there, which the upstream sees as client_port.
type forwarder struct {
	l        net.Listener
	upstream string
	mu       sync.Mutex
	ports    []int
	conns    []net.Conn
}

func startForwarder(t *testing.T, upstream string) *forwarder {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{l: l, upstream: upstream}
	go func() {
		for {
			down, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				down.Close()
				continue
			}
			f.mu.Lock()
			f.ports = append(f.ports, up.LocalAddr().(*net.TCPAddr).Port)
			f.conns = append(f.conns, down, up)
			f.mu.Unlock()
			go func() { io.Copy(up, down); up.Close() }()
			go func() { io.Copy(down, up); down.Close() }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.conns {
			c.Close()
		}
	})
	return f
}

func (f *forwarder) dialedPorts() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ports)
}

func TestClusterReplicationVia(t *testing.T) {
	var (
		fwd                  *forwarder
		gotName, gotUpstream string
	)
	c := startCluster(t, pgtest.ClusterOptions{
		Standbys: 1,
		ReplicationVia: func(standby, primaryAddr string) (string, error) {
			gotName, gotUpstream = standby, primaryAddr
			fwd = startForwarder(t, primaryAddr)
			return fwd.l.Addr().String(), nil
		},
	})
	ctx := testContext(t)
	primary, standby := c.Node("primary"), c.Node("standby1")
	if gotName != "standby1" || gotUpstream != primary.Addr() {
		t.Fatalf("ReplicationVia(%q, %q), want (standby1, %q)", gotName, gotUpstream, primary.Addr())
	}
	pc := superConn(ctx, t, primary)
	var clientPort int
	if err := pc.QueryRow(ctx, "SELECT client_port FROM pg_stat_replication WHERE application_name = 'standby1'").Scan(&clientPort); err != nil {
		t.Fatalf("reading standby1's client_port: %v", err)
	}
	if ports := fwd.dialedPorts(); !slices.Contains(ports, clientPort) {
		t.Errorf("standby1 replicates from client port %d, not one of the forwarder's %v", clientPort, ports)
	}
	senderPort := queryString(ctx, t, superConn(ctx, t, standby), "SELECT sender_port::text FROM pg_stat_wal_receiver")
	if want := strconv.Itoa(fwd.l.Addr().(*net.TCPAddr).Port); senderPort != want {
		t.Errorf("standby1's WAL receiver streams from port %s, want the forwarder's %s", senderPort, want)
	}
	mustExec(ctx, t, pc, "CREATE TABLE via_t (id int); INSERT INTO via_t VALUES (1)")
	waitRows(ctx, t, standby, "via_t", 1)
}

// TestClusterStartFailureCleansUp: a standby that cannot start takes the
// nodes started before it down too, and the error says which one failed.
func TestClusterStartFailureCleansUp(t *testing.T) {
	var primaryAddr string
	_, err := pgtest.StartCluster(testContext(t), pgtest.ClusterOptions{
		Standbys: 1,
		ReplicationVia: func(_, addr string) (string, error) {
			primaryAddr = addr
			return "", errors.New("no proxy today")
		},
	})
	if err == nil || !strings.Contains(err.Error(), "standby1") || !strings.Contains(err.Error(), "no proxy today") {
		t.Fatalf("StartCluster with a failing ReplicationVia: %v, want an error naming standby1 and the cause", err)
	}
	if primaryAddr == "" {
		t.Fatal("ReplicationVia was not called")
	}
	if _, err := connect(testContext(t), t, pgtest.ConnString(primaryAddr, pgtest.SuperUser, "", "")); err == nil {
		t.Error("the primary still accepts connections after StartCluster failed")
	}
}

func TestClusterArchive(t *testing.T) {
	c := startCluster(t, pgtest.ClusterOptions{Archive: true})
	ctx := testContext(t)
	dir := c.ArchiveDir()
	if dir == "" {
		t.Fatal("ArchiveDir() = \"\" with Archive")
	}
	pc := superConn(ctx, t, c.Node("primary"))
	mustExec(ctx, t, pc, "CREATE TABLE archive_t AS SELECT 1 AS id")
	segment := queryString(ctx, t, pc, "SELECT pg_walfile_name(pg_switch_wal())")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, segment)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			entries, _ := os.ReadDir(dir)
			t.Fatalf("segment %s not in %s within 10s; it holds %v", segment, dir, entries)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("archive dir after Stop: %v, want it removed", err)
	}
}

func TestClusterBadOptions(t *testing.T) {
	for _, c := range []struct {
		opts pgtest.ClusterOptions
		want []string
	}{
		{pgtest.ClusterOptions{Standbys: 1, Synchronous: "sometimes"}, []string{"Synchronous", `"sometimes"`}},
		{pgtest.ClusterOptions{Standbys: 1, Options: pgtest.Options{TLS: true}}, []string{"TLS"}},
		{pgtest.ClusterOptions{Standbys: -1}, []string{"Standbys", "-1"}},
		{pgtest.ClusterOptions{Synchronous: "on"}, []string{"Synchronous", "standby"}},
		{pgtest.ClusterOptions{Archive: true, Options: pgtest.Options{Settings: map[string]string{"archive_command": "true"}}}, []string{"archive_command"}},
		{pgtest.ClusterOptions{Options: pgtest.Options{Settings: map[string]string{"primary_conninfo": "x"}}}, []string{"primary_conninfo"}},
	} {
		c2, err := pgtest.StartCluster(testContext(t), c.opts)
		if err == nil {
			c2.Stop()
			t.Errorf("StartCluster(%+v) succeeded", c.opts)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("StartCluster(%+v): %v, want it to mention %s", c.opts, err, w)
			}
		}
	}
}

// A runbook that starts a crashed node itself (pg_ctl, as the server's
// owner) leaves a postmaster pgtest did not start; Stop kills it too
// before it removes the data directory under it.
func TestStopKillsAStrayPostmaster(t *testing.T) {
	c := startCluster(t, pgtest.ClusterOptions{})
	p := c.Node("primary")
	if err := p.Crash("fast"); err != nil {
		t.Fatal(err)
	}
	start := filepath.Join(p.BinDir(), "pg_ctl") + " start -w -s -D " + p.DataDir() + " -l " + filepath.Join(p.Dir(), "stray.log")
	cmd := osexec.Command("sh", "-c", start)
	if os.Geteuid() == 0 {
		cmd = osexec.Command("su", "postgres", "-s", "/bin/sh", "-c", start)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl start: %v\n%s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(p.DataDir(), "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(first)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	// Gone, or a zombie: its parent is pg_ctl's, which reaps it or not.
	if stat, err := os.ReadFile("/proc/" + first + "/stat"); err == nil {
		if _, rest, _ := strings.Cut(string(stat), ") "); !strings.HasPrefix(rest, "Z") {
			t.Errorf("the postmaster pg_ctl started (pid %d) outlived Stop: %s", pid, stat)
		}
	} else if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the postmaster pg_ctl started (pid %d) outlived Stop: %v", pid, err)
	}
	if _, err := os.Stat(p.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there: %v", p.Dir(), err)
	}
}
