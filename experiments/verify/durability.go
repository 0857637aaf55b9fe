package verify

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
)

// tableName is what experiments.Parse accepts as a ledger table: an
// unquoted, optionally schema-qualified name, used in SQL as written.
var tableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$`)

// opKey is the ledger row an operation wrote; a two-phase entry's key is
// its gid.
func opKey(op history.Op) string {
	if op.Key != "" {
		return op.Key
	}
	return op.GID
}

func ledgerTable(run Run, workload string) string {
	if w, ok := run.Workloads[workload]; ok && w.Ledger != nil && w.Ledger.Table != "" {
		return w.Ledger.Table
	}
	return experiments.DefaultLedgerTable
}

// durability checks a ledger: every acknowledged key is in the table (else
// it is lost), no key the client was told failed is (else it is a ghost).
// Unknown operations are reported as the database resolved them, and
// entries still prepared as in doubt; neither fails the check, since the
// client was promised nothing about them.
func durability(ctx context.Context, c *experiments.Durability, run Run) Verdict {
	v := newVerdict(c.Type(), c.Workload)
	table := ledgerTable(run, c.Workload)
	v.Evidence["table"] = table
	ops := opsOf(run.History, c.Workload)
	if len(ops) == 0 {
		v.judge(false, "workload %q recorded no operations: nothing to judge", c.Workload)
		return v
	}
	if !tableName.MatchString(table) {
		return failed(v.Type, c.Workload, fmt.Errorf("ledger table %q is not a table name", table))
	}

	conn, err := connect(ctx, run.VerifyDSN)
	if err != nil {
		return failed(v.Type, c.Workload, err)
	}
	defer closeConn(ctx, conn)

	var keys []string
	for _, op := range ops {
		if k := opKey(op); k != "" {
			keys = append(keys, k)
		}
	}
	present, err := presentKeys(ctx, conn, table, keys)
	if err != nil {
		return failed(v.Type, c.Workload, err)
	}
	prepared, err := preparedGIDs(ctx, conn)
	if err != nil {
		return failed(v.Type, c.Workload, err)
	}

	var (
		acked, failedOps, unknown, noKey int
		ackedPresent, failedAbsent       int
		lost, ghost, inDoubt             []string
		unknownCommitted, unknownAborted []string
	)
	for _, op := range ops {
		k := opKey(op)
		if k == "" {
			noKey++
			continue
		}
		_, isPrepared := prepared[k]
		if isPrepared {
			inDoubt = append(inDoubt, k)
		}
		switch op.Outcome {
		case history.OK:
			acked++
			if present[k] {
				ackedPresent++
			} else {
				lost = append(lost, k)
			}
		case history.Fail:
			failedOps++
			if present[k] {
				ghost = append(ghost, k)
			} else {
				failedAbsent++
			}
		case history.Unknown:
			unknown++
			switch {
			case isPrepared:
			case present[k]:
				unknownCommitted = append(unknownCommitted, k)
			default:
				unknownAborted = append(unknownAborted, k)
			}
		}
	}

	e := v.Evidence
	e["operations"] = len(ops)
	e["acknowledged"] = acked
	e["acknowledged_present"] = ackedPresent
	e["lost"] = len(lost)
	e["lost_keys"] = bounded(lost)
	e["failed"] = failedOps
	e["failed_absent"] = failedAbsent
	e["ghost"] = len(ghost)
	e["ghost_keys"] = bounded(ghost)
	e["unknown"] = unknown
	e["unknown_committed"] = len(unknownCommitted)
	e["unknown_committed_keys"] = bounded(unknownCommitted)
	e["unknown_aborted"] = len(unknownAborted)
	e["unknown_aborted_keys"] = bounded(unknownAborted)
	e["in_doubt"] = len(inDoubt)
	e["in_doubt_gids"] = bounded(inDoubt)
	e["allowed_lost"] = c.AllowedLost
	e["allowed_ghost"] = c.AllowedGhost
	if noKey > 0 {
		e["without_key"] = noKey
	}

	var problems []string
	if len(lost) > c.AllowedLost {
		problems = append(problems, fmt.Sprintf("%s lost (allowed %d)", count(len(lost), "acknowledged row"), c.AllowedLost))
	}
	if len(ghost) > c.AllowedGhost {
		problems = append(problems, fmt.Sprintf("%s: told failed, yet committed (allowed %d)", count(len(ghost), "ghost row"), c.AllowedGhost))
	}
	detail := fmt.Sprintf("%d of %d acknowledged rows present, %d lost, %d ghost; %d unknown: %d committed, %d aborted",
		ackedPresent, acked, len(lost), len(ghost), unknown, len(unknownCommitted), len(unknownAborted))
	if len(inDoubt) > 0 {
		detail += fmt.Sprintf("; %d in doubt (still prepared)", len(inDoubt))
	}
	if len(problems) > 0 {
		v.judge(false, "%s; %s", strings.Join(problems, ", "), detail)
	} else {
		v.judge(true, "%s", detail)
	}
	return v
}

// presentKeys returns which of keys are rows of table.
func presentKeys(ctx context.Context, conn *pgx.Conn, table string, keys []string) (map[string]bool, error) {
	present := map[string]bool{}
	if len(keys) == 0 {
		return present, nil
	}
	rows, err := conn.Query(ctx, "SELECT key FROM "+table+" WHERE key = ANY($1)", keys)
	if err != nil {
		return nil, fmt.Errorf("reading ledger table %s: %w", table, err)
	}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return nil, fmt.Errorf("reading ledger table %s: %w", table, err)
		}
		present[k] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading ledger table %s: %w", table, err)
	}
	return present, nil
}

// PreparedXact is a prepared transaction in a verdict's evidence: a row
// of pg_prepared_xacts.
type PreparedXact struct {
	GID      string `json:"gid"`
	Owner    string `json:"owner"`
	Prepared string `json:"prepared"`
	Age      string `json:"age"`
}

// preparedGIDs returns the gids prepared in the connection's database. A
// prepared transaction can only be finished from its own database, so
// those of other databases are someone else's.
func preparedGIDs(ctx context.Context, conn *pgx.Conn) (map[string]struct{}, error) {
	xs, err := listPrepared(ctx, conn, "", 0, nil)
	if err != nil {
		return nil, err
	}
	out := make(map[string]struct{}, len(xs))
	for _, x := range xs {
		out[x.GID] = struct{}{}
	}
	return out, nil
}
