package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
)

// faultTopology is a placement of a fault-injecting pgchaos, like topology
// but with the rules engine wired in.
type faultTopology struct {
	name string
	addr string // where clients connect
	// clientFacing: clients talk to pgchaos itself (not to a PgBouncer in front).
	clientFacing bool
}

var (
	faultOnce   sync.Once
	faultErr    error
	faultEngine *faults.Engine
	faultTopos  []faultTopology
)

func faultTopologies(t *testing.T) ([]faultTopology, *faults.Engine) {
	t.Helper()
	faultOnce.Do(func() {
		faultEngine = faults.NewEngine(faults.Options{Seed: 1})
		bg := &background{}
		withFaults := func(c *proxy.Config) { c.Faults = faultEngine }
		direct := startProxy(bg, pg.Addr(), withFaults)
		faultTopos = append(faultTopos, faultTopology{"direct", direct.addr(), true})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		bouncer, err := pgtest.StartPgBouncer(ctx, pgtest.PgBouncerOptions{Upstream: pg.Addr(), PoolMode: "session"})
		if err != nil {
			faultErr = err
			return
		}
		front := startProxy(bg, bouncer.Addr(), withFaults)
		faultTopos = append(faultTopos, faultTopology{"pgchaos-pgbouncer", front.addr(), true})
		behind := startProxy(bg, pg.Addr(), withFaults)
		bouncer2, err := pgtest.StartPgBouncer(ctx, pgtest.PgBouncerOptions{Upstream: behind.addr(), PoolMode: "session"})
		if err != nil {
			faultErr = err
			return
		}
		faultTopos = append(faultTopos, faultTopology{"pgbouncer-pgchaos", bouncer2.Addr(), false})
	})
	if faultErr != nil {
		pgtest.Unavailable(t, fmt.Errorf("start PgBouncer: %w", faultErr))
	}
	return faultTopos, faultEngine
}

func addRule(t *testing.T, e *faults.Engine, r faults.Rule) {
	t.Helper()
	if _, err := e.Add(r); err != nil {
		t.Fatalf("add rule %s: %v", r.Name, err)
	}
	t.Cleanup(func() { e.Remove(r.Proxy, r.Name) })
}

func fired(t *testing.T, e *faults.Engine, name string) int64 {
	t.Helper()
	st, err := e.Get("", name)
	if err != nil {
		t.Fatal(err)
	}
	return st.Fired
}

var protocols = []struct {
	name string
	mode pgx.QueryExecMode
}{
	{"simple", pgx.QueryExecModeSimpleProtocol},
	{"extended", pgx.QueryExecModeCacheDescribe},
}

// forEachFaultCase runs f for every topology and protocol, each with a
// database of its own and a direct (fault-free) connection for checking.
func forEachFaultCase(t *testing.T, f func(t *testing.T, topo faultTopology, e *faults.Engine, client *pgx.Conn, direct *pgx.Conn, db string)) {
	topos, e := faultTopologies(t)
	for _, topo := range topos {
		for _, proto := range protocols {
			t.Run(topo.name+"/"+proto.name, func(t *testing.T) {
				ctx := testCtx(t)
				db := newDatabase(t)
				direct := connect(t, ctx, pg.DSN(pgtest.SuperUser, "", db))
				mustExec(t, ctx, direct, "CREATE TABLE ledger (id int PRIMARY KEY, n int NOT NULL DEFAULT 0)")
				client := connect(t, ctx, pgtest.ConnString(topo.addr, pgtest.SuperUser, "", db), func(c *pgx.ConnConfig) {
					c.DefaultQueryExecMode = proto.mode
				})
				f(t, topo, e, client, direct, db)
			})
		}
	}
}

func preparedGIDs(t *testing.T, direct *pgx.Conn, db string) []string {
	t.Helper()
	rows, err := direct.Query(context.Background(), "SELECT gid FROM pg_prepared_xacts WHERE database = $1 ORDER BY gid", db)
	if err != nil {
		t.Fatal(err)
	}
	gids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return gids
}

func rowCount(t *testing.T, direct *pgx.Conn) int {
	t.Helper()
	var n int
	if err := direct.QueryRow(context.Background(), "SELECT count(*) FROM ledger").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// isConnectionError: the client lost its connection (or PgBouncer told it
// the server did) rather than getting an answer.
func isConnectionError(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "08P01" || pgErr.Code[:2] == "08"
	}
	return true
}

// a) The connection is cut right after the server prepared the transaction
// and before the client hears: the transaction is in doubt.
func TestFaultDisconnectAfterPrepare(t *testing.T) {
	forEachFaultCase(t, func(t *testing.T, topo faultTopology, e *faults.Engine, client, direct *pgx.Conn, db string) {
		ctx := testCtx(t)
		addRule(t, e, faults.Rule{Name: "cut-after-prepare", Match: faults.Match{Tag: "PREPARE TRANSACTION"}, Action: faults.Action{Type: "disconnect"}})
		gid := "a_" + db
		mustExec(t, ctx, client, "BEGIN")
		mustExec(t, ctx, client, "INSERT INTO ledger (id) VALUES (1)")
		_, err := client.Exec(ctx, "PREPARE TRANSACTION '"+gid+"'")
		if !isConnectionError(err) {
			t.Fatalf("PREPARE TRANSACTION: want a connection error, got %v", err)
		}
		if got := preparedGIDs(t, direct, db); !slices.Equal(got, []string{gid}) {
			t.Fatalf("pg_prepared_xacts: %v, want [%s]", got, gid)
		}
		mustExec(t, ctx, direct, "ROLLBACK PREPARED '"+gid+"'")
		if n := fired(t, e, "cut-after-prepare"); n != 1 {
			t.Fatalf("rule fired %d times", n)
		}
	})
}

// b) Cut before PREPARE TRANSACTION reaches the server: nothing is prepared
// and the transaction rolls back.
func TestFaultDisconnectBeforePrepare(t *testing.T) {
	forEachFaultCase(t, func(t *testing.T, topo faultTopology, e *faults.Engine, client, direct *pgx.Conn, db string) {
		ctx := testCtx(t)
		addRule(t, e, faults.Rule{Name: "cut-before-prepare", Match: faults.Match{Statement: faults.StringList{"prepare_transaction"}}, Action: faults.Action{Type: "disconnect"}})
		gid := "b_" + db
		mustExec(t, ctx, client, "BEGIN")
		mustExec(t, ctx, client, "INSERT INTO ledger (id) VALUES (1)")
		_, err := client.Exec(ctx, "PREPARE TRANSACTION '"+gid+"'")
		if !isConnectionError(err) {
			t.Fatalf("PREPARE TRANSACTION: want a connection error, got %v", err)
		}
		// The server notices the lost connection and rolls back; then the
		// key is free again.
		waitFor(t, "the open transaction to roll back", func() bool {
			var open int
			direct.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'", db).Scan(&open)
			return open == 0
		})
		if got := preparedGIDs(t, direct, db); len(got) != 0 {
			t.Fatalf("pg_prepared_xacts: %v, want none", got)
		}
		mustExec(t, ctx, direct, "INSERT INTO ledger (id) VALUES (1)") // would fail or block if the row had survived
	})
}

// c) Cut right after COMMIT PREPARED ran: committed, though the client
// saw an error.
func TestFaultDisconnectAfterCommitPrepared(t *testing.T) {
	forEachFaultCase(t, func(t *testing.T, topo faultTopology, e *faults.Engine, client, direct *pgx.Conn, db string) {
		ctx := testCtx(t)
		gid := "c_" + db
		mustExec(t, ctx, client, "BEGIN")
		mustExec(t, ctx, client, "INSERT INTO ledger (id) VALUES (1)")
		mustExec(t, ctx, client, "PREPARE TRANSACTION '"+gid+"'")
		addRule(t, e, faults.Rule{Name: "cut-after-commit-prepared", Match: faults.Match{Tag: "COMMIT PREPARED"}, Action: faults.Action{Type: "disconnect", Close: "rst"}})
		_, err := client.Exec(ctx, "COMMIT PREPARED '"+gid+"'")
		if !isConnectionError(err) {
			t.Fatalf("COMMIT PREPARED: want a connection error, got %v", err)
		}
		if got := preparedGIDs(t, direct, db); len(got) != 0 {
			t.Fatalf("pg_prepared_xacts: %v, want none", got)
		}
		if n := rowCount(t, direct); n != 1 {
			t.Fatalf("ledger has %d rows, want the committed one", n)
		}
	})
}

// d) An error in place of COMMIT's reply: the row is committed although
// the client was told 40001 — a ghost write.
func TestFaultErrorAfterCommit(t *testing.T) {
	forEachFaultCase(t, func(t *testing.T, topo faultTopology, e *faults.Engine, client, direct *pgx.Conn, db string) {
		ctx := testCtx(t)
		addRule(t, e, faults.Rule{Name: "lie-about-commit", Match: faults.Match{Statement: faults.StringList{"commit"}},
			Action: faults.Action{Type: "error", When: "after", SQLState: "40001", Message: "could not serialize access"}})
		mustExec(t, ctx, client, "BEGIN")
		mustExec(t, ctx, client, "INSERT INTO ledger (id) VALUES (1)")
		_, err := client.Exec(ctx, "COMMIT")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "40001" {
			t.Fatalf("COMMIT: want 40001, got %v", err)
		}
		if n := rowCount(t, direct); n != 1 {
			t.Fatalf("ledger has %d rows; the commit should have happened", n)
		}
		// The session is still usable and in step with the server.
		var one int
		if err := client.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("session after the fake error: %d, %v", one, err)
		}
	})
}

// e) 40001 instead of running an UPDATE inside a transaction: the client
// rolls back and retries; the server ran the update only once.
func TestFaultErrorBeforeUpdate(t *testing.T) {
	forEachFaultCase(t, func(t *testing.T, topo faultTopology, e *faults.Engine, client, direct *pgx.Conn, db string) {
		ctx := testCtx(t)
		mustExec(t, ctx, direct, "INSERT INTO ledger (id, n) VALUES (1, 0)")
		addRule(t, e, faults.Rule{Name: "serialization-failure", Match: faults.Match{Statement: faults.StringList{"update"}, TxStatus: faults.StringList{"in_transaction"}},
			Action: faults.Action{Type: "error", SQLState: "40001"}, Limits: faults.Limits{Times: 1}})
		attempts := 0
		for {
			attempts++
			mustExec(t, ctx, client, "BEGIN")
			_, err := client.Exec(ctx, "UPDATE ledger SET n = n + $1 WHERE id = 1", 1)
			if err != nil {
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "40001" {
					t.Fatalf("UPDATE: want 40001, got %v", err)
				}
				mustExec(t, ctx, client, "ROLLBACK")
				if attempts > 3 {
					t.Fatal("no success after 3 retries")
				}
				continue
			}
			mustExec(t, ctx, client, "COMMIT")
			break
		}
		var n int
		if err := direct.QueryRow(ctx, "SELECT n FROM ledger WHERE id = 1").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if attempts != 2 || n != 1 {
			t.Fatalf("attempts=%d n=%d; want 2 attempts and the update applied once", attempts, n)
		}
	})
}

// f) A 50 ms delay on SELECTs adds 50 ms to them and nothing to others.
// Load only ever adds time: every delayed SELECT takes at least the delay,
// and the median adds less than a second delay would; an UPDATE's median
// gains less than half the delay.
func TestFaultDelaySelect(t *testing.T) {
	forEachFaultCase(t, func(t *testing.T, topo faultTopology, e *faults.Engine, client, direct *pgx.Conn, db string) {
		ctx := testCtx(t)
		// samples returns the fastest and the median of 9 runs.
		samples := func(sql string) (fastest, median time.Duration) {
			var d []time.Duration
			for range 9 {
				start := time.Now()
				if _, err := client.Exec(ctx, sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
				d = append(d, time.Since(start))
			}
			slices.Sort(d)
			return d[0], d[len(d)/2]
		}
		_, baseSelect := samples("SELECT 1")
		_, baseUpdate := samples("UPDATE ledger SET n = n + 1 WHERE id = 0")
		const delay = 50 * time.Millisecond
		addRule(t, e, faults.Rule{Name: "slow-selects", Match: faults.Match{SQL: `^\s*SELECT`}, Action: faults.Action{Type: "delay", Delay: faults.Duration(delay)}})
		fastest, slowSelect := samples("  select 1")
		_, slowUpdate := samples("UPDATE ledger SET n = n + 1 WHERE id = 0")
		if fastest < delay-2*time.Millisecond {
			t.Fatalf("SELECT under a %v delay took %v at its fastest", delay, fastest)
		}
		if added := slowSelect - baseSelect; added > 2*delay-5*time.Millisecond {
			t.Fatalf("SELECT: median %v -> %v, added %v; want one %v delay, not two", baseSelect, slowSelect, added, delay)
		}
		if extra := slowUpdate - baseUpdate; extra > delay/2 {
			t.Fatalf("UPDATE: median %v -> %v; want no delay", baseUpdate, slowUpdate)
		}
	})
}

// g) New connections are refused with 57P03; sessions already open carry on.
func TestFaultRefuseConnect(t *testing.T) {
	topos, e := faultTopologies(t)
	for _, topo := range topos {
		t.Run(topo.name, func(t *testing.T) {
			ctx := testCtx(t)
			db := newDatabase(t)
			existing := connect(t, ctx, pgtest.ConnString(topo.addr, pgtest.SuperUser, "", db))
			// A second database that exists: through PgBouncer, a client of
			// it needs a new server connection, which pgchaos must refuse.
			other := newDatabase(t)
			addRule(t, e, faults.Rule{Name: "starting-up", Match: faults.Match{Event: "connect"},
				Action: faults.Action{Type: "refuse", SQLState: "57P03", Message: "the database system is starting up"}})
			_, err := pgx.Connect(ctx, pgtest.ConnString(topo.addr, pgtest.SuperUser, "", other))
			var pgErr *pgconn.PgError
			if topo.clientFacing {
				if !errors.As(err, &pgErr) || pgErr.Code != "57P03" {
					t.Fatalf("new connection: want 57P03, got %v", err)
				}
			} else if err == nil {
				// PgBouncer in front: its new server connection is refused.
				t.Fatal("new connection through PgBouncer succeeded; want it refused")
			}
			var one int
			if err := existing.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				t.Fatalf("existing session harmed: %v", err)
			}
		})
	}
}
