package workload

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/experiments/history"
)

// connectionLost reports whether err means the session is gone (or can no
// longer be trusted), as opposed to the server answering with an error and
// carrying on. Without a SQLSTATE — a TCP reset, EOF, a timeout, a closed
// connection — the connection is lost. With one, class 08 (PgBouncer reports
// a dead server as 08P01), admin/crash/cannot-connect shutdowns (57P01,
// 57P02, 57P03) and a PANIC (the server is crashing, perhaps after its
// commit record was written) are losses too.
func connectionLost(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return true
	}
	switch {
	case strings.HasPrefix(pgErr.Code, "08"),
		pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03",
		pgErr.Severity == "PANIC":
		return true
	}
	return false
}

// classify says what a client knows about an operation whose statement
// failed with err. commitPoint is true for a statement that commits (COMMIT,
// PREPARE TRANSACTION, a statement in autocommit): the server finishes a
// transaction before it answers, so losing the connection while one is in
// flight leaves the outcome unknown. Losing it earlier is a failure: the
// server rolls back an open transaction when its session ends. A server
// ErrorResponse means the transaction aborted: a failure. lost reports a
// lost connection, which the caller must close.
//
// pgconn.SafeToRetry is no help in telling a statement that was never sent:
// pgx v5.12 reports a connection lost while it waits for the reply as the
// retry-safe "conn closed" of a connection that was closed beforehand. The
// caller checks beforehand instead (client.exec).
func classify(err error, commitPoint bool) (outcome history.Outcome, sqlstate string, lost bool) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		sqlstate = pgErr.Code
	}
	if !connectionLost(err) {
		return history.Fail, sqlstate, false
	}
	if commitPoint {
		return history.Unknown, sqlstate, true
	}
	return history.Fail, sqlstate, true
}
