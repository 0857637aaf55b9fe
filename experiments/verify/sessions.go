package verify

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/experiments"
)

// Session is a row of pg_stat_activity in a sessions verdict's evidence.
type Session struct {
	PID             int32  `json:"pid"`
	User            string `json:"user"`
	ApplicationName string `json:"application_name"`
	ClientAddr      string `json:"client_addr"`
	State           string `json:"state"`
	WaitEvent       string `json:"wait_event,omitempty"`
	// For is how long the session has been in State.
	For   string `json:"for"`
	Query string `json:"query"`
}

// Pool is a row of PgBouncer's SHOW POOLS in a sessions verdict's
// evidence.
type Pool struct {
	Database  string `json:"database"`
	User      string `json:"user"`
	ClActive  int64  `json:"cl_active"`
	ClWaiting int64  `json:"cl_waiting"`
	SvActive  int64  `json:"sv_active"`
	SvIdle    int64  `json:"sv_idle"`
	MaxWait   int64  `json:"maxwait"`
	PoolMode  string `json:"pool_mode"`
}

// sessions checks what the run left behind in the target's sessions:
// transactions left open by clients that vanished mid-transaction (they
// hold locks and xmin), sessions waiting on a lock, and, behind PgBouncer,
// clients queued for a server connection.
func sessions(ctx context.Context, c *experiments.Sessions, run Run) Verdict {
	v := newVerdict(c.Type(), "")
	e := v.Evidence
	e["no_idle_in_transaction"] = c.NoIdleInTransaction
	e["no_waiting_clients"] = c.NoWaitingClients
	if !c.NoIdleInTransaction && !c.NoWaitingClients {
		v.judge(true, "nothing to check")
		return v
	}
	conn, err := connect(ctx, run.VerifyDSN)
	if err != nil {
		return failed(v.Type, "", err)
	}
	defer closeConn(ctx, conn)

	var problems, fine []string
	if c.NoIdleInTransaction {
		idle, err := activity(ctx, conn, "state LIKE 'idle in transaction%'")
		if err != nil {
			return failed(v.Type, "", err)
		}
		e["idle_in_transaction"] = len(idle)
		e["idle_in_transaction_sessions"] = bounded(idle)
		if len(idle) > 0 {
			problems = append(problems, fmt.Sprintf("%s idle in transaction (pids %s)", count(len(idle), "session"), pids(idle)))
		} else {
			fine = append(fine, "no session idle in transaction")
		}
	}
	if c.NoWaitingClients {
		waiting, err := activity(ctx, conn, "wait_event_type = 'Lock'")
		if err != nil {
			return failed(v.Type, "", err)
		}
		e["waiting_on_lock"] = len(waiting)
		e["waiting_on_lock_sessions"] = bounded(waiting)
		if len(waiting) > 0 {
			problems = append(problems, fmt.Sprintf("%s waiting on a lock (pids %s)", count(len(waiting), "session"), pids(waiting)))
		} else {
			fine = append(fine, "none waiting on a lock")
		}
		if run.PgBouncerAdminDSN != "" {
			pools, err := showPools(ctx, run.PgBouncerAdminDSN)
			if err != nil {
				return failed(v.Type, "", err)
			}
			var queued []Pool
			var clients int64
			for _, p := range pools {
				if p.ClWaiting > 0 {
					queued = append(queued, p)
					clients += p.ClWaiting
				}
			}
			e["pgbouncer_pools"] = bounded(pools)
			e["pgbouncer_cl_waiting"] = clients
			if len(queued) > 0 {
				names := make([]string, 0, len(queued))
				for _, p := range bounded(queued) {
					names = append(names, p.Database+"/"+p.User)
				}
				problems = append(problems, fmt.Sprintf("%s waiting for a server connection (pools %s)", count(int(clients), "PgBouncer client"), strings.Join(names, ", ")))
			} else {
				fine = append(fine, fmt.Sprintf("no PgBouncer client waiting in %s", count(len(pools), "pool")))
			}
		}
	}
	if len(problems) > 0 {
		v.judge(false, "%s", strings.Join(problems, "; "))
	} else {
		v.judge(true, "%s", strings.Join(fine, ", "))
	}
	return v
}

func pids(ss []Session) string {
	var b strings.Builder
	for i, s := range bounded(ss) {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(int(s.PID)))
	}
	return b.String()
}

// activity returns the other sessions of the connection's database that
// match where. Other databases are left alone: they are not the run's.
func activity(ctx context.Context, conn *pgx.Conn, where string) ([]Session, error) {
	rows, err := conn.Query(ctx, `
		SELECT pid, coalesce(usename::text, ''), coalesce(application_name, ''),
		       coalesce(client_addr::text, ''), coalesce(state, ''),
		       coalesce(wait_event_type || ':' || wait_event, ''),
		       coalesce((now() - state_change)::text, ''), left(coalesce(query, ''), 200)
		FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND `+where+`
		ORDER BY state_change, pid`)
	if err != nil {
		return nil, fmt.Errorf("reading pg_stat_activity: %w", err)
	}
	ss, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Session, error) {
		var s Session
		err := r.Scan(&s.PID, &s.User, &s.ApplicationName, &s.ClientAddr, &s.State, &s.WaitEvent, &s.For, &s.Query)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading pg_stat_activity: %w", err)
	}
	return ss, nil
}

// showPools reads SHOW POOLS on PgBouncer's admin console, which speaks
// only the simple query protocol. Its columns vary between versions
// (cl_active_cancel_req, load_balance_hosts, ...), so they are read by
// name.
func showPools(ctx context.Context, adminDSN string) ([]Pool, error) {
	cfg, err := pgx.ParseConfig(adminDSN)
	if err != nil {
		return nil, fmt.Errorf("parsing the PgBouncer admin DSN: %w", err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to PgBouncer's admin console at %s:%d: %w", cfg.Host, cfg.Port, err)
	}
	defer closeConn(ctx, conn)
	res, err := query(ctx, conn, "SHOW POOLS")
	if err != nil {
		return nil, fmt.Errorf("SHOW POOLS on PgBouncer: %w", err)
	}
	col := map[string]int{}
	for i, name := range res.Columns {
		col[name] = i
	}
	if _, ok := col["cl_waiting"]; !ok {
		return nil, fmt.Errorf("SHOW POOLS on PgBouncer has no cl_waiting column (columns %s)", strings.Join(res.Columns, ", "))
	}
	text := func(row []*string, name string) string {
		if i, ok := col[name]; ok && row[i] != nil {
			return *row[i]
		}
		return ""
	}
	num := func(row []*string, name string) int64 {
		n, _ := strconv.ParseInt(text(row, name), 10, 64)
		return n
	}
	pools := make([]Pool, 0, len(res.Rows))
	for _, row := range res.Rows {
		pools = append(pools, Pool{
			Database:  text(row, "database"),
			User:      text(row, "user"),
			ClActive:  num(row, "cl_active"),
			ClWaiting: num(row, "cl_waiting"),
			SvActive:  num(row, "sv_active"),
			SvIdle:    num(row, "sv_idle"),
			MaxWait:   num(row, "maxwait"),
			PoolMode:  text(row, "pool_mode"),
		})
	}
	return pools, nil
}
