// Package workload is the load an experiment runs while faults come and go.
// Every operation a client attempts is recorded in a history.History as ok
// (it definitely happened), fail (it definitely did not) or unknown (the
// connection was lost while it was committing), so that verifiers can judge
// afterwards whether the database kept its promises.
//
// The types are those of an experiment file: ledger (uniquely keyed inserts,
// optionally through PREPARE TRANSACTION / COMMIT PREPARED), bank (transfers
// whose total must not change), sql (weighted statements) and exec (a shell
// command).
package workload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
)

// Env is what a workload needs from the runner.
type Env struct {
	// DSN is where its clients connect (through a proxy or direct): a
	// libpq URL or key=value string. Clients use the simple query protocol
	// unless it sets default_query_exec_mode.
	DSN string
	// DSNs, when set, are where the clients connect in turn — client 1
	// to the first, client 2 to the second, ... — as the pods of an
	// application each use their own pgchaos of a set. DSN is then the
	// first.
	DSNs []string
	// SetupDSN is a direct connection for creating tables, not through
	// faults (default: DSN).
	SetupDSN string
	// RunID is unique per run, e.g. "r20261125t200501"; it is part of
	// ledger keys and gids.
	RunID   string
	History *history.History
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Workload is a started workload.
type Workload interface {
	Name() string
	// Setup creates what it needs (tables, accounts) through SetupDSN. It
	// is idempotent; a bank's accounts are reset to their initial balance.
	Setup(ctx context.Context) error
	// Run runs clients until ctx is done or the workload's duration
	// passes; it returns when all clients stopped. Operations in flight
	// when ctx ends get a few seconds to finish before they are cut off
	// (and recorded as what the client then knows). Run once.
	Run(ctx context.Context) error
	// Pause stops clients from starting new operations (in-flight ones
	// finish; connections stay open); Resume lets them go on. An exec
	// workload's command is stopped with SIGSTOP and resumed with SIGCONT.
	Pause()
	Resume()
}

// New returns the workload spec describes, not yet set up or running.
func New(spec experiments.Workload, env Env) (Workload, error) {
	if spec.Name == "" {
		return nil, errors.New("workload: name is empty")
	}
	if env.History == nil {
		return nil, fmt.Errorf("workload %q: no history to record into", spec.Name)
	}
	if env.Logger == nil {
		env.Logger = slog.New(slog.DiscardHandler)
	}
	if env.SetupDSN == "" {
		env.SetupDSN = env.DSN
	}
	if spec.Clients <= 0 {
		spec.Clients = 1
	}
	if spec.Rate < 0 {
		return nil, fmt.Errorf("workload %q: rate %v is negative", spec.Name, spec.Rate)
	}
	log := env.Logger.With("workload", spec.Name, "type", spec.Type)

	var kind txKind
	switch spec.Type {
	case experiments.WorkloadExec:
		return newExec(spec, env, log)
	case experiments.WorkloadLedger:
		l, err := newLedger(spec, env)
		if err != nil {
			return nil, err
		}
		kind = l
	case experiments.WorkloadBank:
		b, err := newBank(spec)
		if err != nil {
			return nil, err
		}
		kind = b
	case experiments.WorkloadSQL:
		s, err := newSQL(spec)
		if err != nil {
			return nil, err
		}
		kind = s
	default:
		return nil, fmt.Errorf("workload %q: unknown type %q: want ledger, bank, sql or exec", spec.Name, spec.Type)
	}
	return newDBWorkload(spec, env, log, kind)
}

// gidMax is the longest gid PostgreSQL accepts (GIDSIZE 200 with its NUL).
const gidMax = 199

// LedgerGIDPrefix is what every gid and key of a ledger workload starts
// with: "pgchaos:WORKLOAD:".
func LedgerGIDPrefix(workload string) string { return "pgchaos:" + workload + ":" }

// LedgerGID names the prepared transaction of a two-phase ledger entry:
// "pgchaos:WORKLOAD:RUNID:cCLIENT:sSEQ", e.g. "pgchaos:ledger:r123:c2:s17".
// Clients are numbered from 1 and each counts its operations from 1.
func LedgerGID(workload, runID string, client int, seq int64) string {
	return LedgerGIDPrefix(workload) + runID + ":c" + strconv.Itoa(client) + ":s" + strconv.FormatInt(seq, 10)
}

// LedgerKey is the key of a ledger row, which is its gid: the same in one-
// and two-phase ledgers, so verifiers and resolve_prepared can match rows,
// operations and prepared transactions by one string.
func LedgerKey(workload, runID string, client int, seq int64) string {
	return LedgerGID(workload, runID, client, seq)
}

// ParseLedgerGID splits a gid or key made by LedgerGID. The workload name
// may contain colons; the run ID may not.
func ParseLedgerGID(gid string) (workload, runID string, client int, seq int64, ok bool) {
	rest, found := strings.CutPrefix(gid, "pgchaos:")
	if !found {
		return "", "", 0, 0, false
	}
	parts := strings.Split(rest, ":")
	if len(parts) < 4 {
		return "", "", 0, 0, false
	}
	n := len(parts)
	c, cok := strings.CutPrefix(parts[n-2], "c")
	s, sok := strings.CutPrefix(parts[n-1], "s")
	if !cok || !sok {
		return "", "", 0, 0, false
	}
	ci, err1 := strconv.Atoi(c)
	si, err2 := strconv.ParseInt(s, 10, 64)
	workload = strings.Join(parts[:n-3], ":")
	if err1 != nil || err2 != nil || workload == "" || parts[n-3] == "" {
		return "", "", 0, 0, false
	}
	return workload, parts[n-3], ci, si, true
}

// BankTable is the accounts table of a bank workload:
// pgchaos_bank_WORKLOAD, with the name lower-cased and every character
// other than a letter, digit or underscore replaced by an underscore.
func BankTable(workload string) string {
	var b strings.Builder
	b.WriteString("pgchaos_bank_")
	for _, r := range strings.ToLower(workload) {
		if r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// connect opens one connection to dsn for setup work.
func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parsing the setup DSN: %w", err)
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// quoteLiteral quotes s as an SQL string literal (standard_conforming_strings).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
