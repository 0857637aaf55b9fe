// Command shop is a test fixture for `pgchaos explore`: a small application
// that places orders, with mistakes planted in it on purpose. Explore runs it
// once per trial with one fault injected on one statement and judges the
// result with SQL verifiers and a liveness deadline. The correct version (no
// -mistake) survives every single fault; each planted mistake is revealed by
// the fault it was planted for. It is not part of the product.
//
// The schema it expects (also printed by -schema):
//
//	CREATE TABLE orders (id text PRIMARY KEY, item text, qty int);
//	CREATE TABLE stock (item text PRIMARY KEY, qty int);
//	INSERT INTO stock VALUES ('apple', 100), ('pear', 100);
//
// Order i (1..N) is for item apple when i is odd, pear when even, quantity i,
// and has the id RUN-i, so that a retry of the same order is recognisable.
// Each order is one transaction:
//
//	BEGIN
//	INSERT INTO orders (id, item, qty) VALUES ($1, $2, $3)
//	UPDATE stock SET qty = qty - $1 WHERE item = $2
//	COMMIT
//
// and a retry first asks SELECT 1 FROM orders WHERE id = $1, since an
// in-doubt COMMIT may have committed. Every statement goes as a simple Query
// message (see dial), pgx quoting the arguments into the text, so that on
// the wire order 1 of run "run" reads as below, each argument padded with a
// space either side (so the last two lines end in a space):
//
//	INSERT INTO orders (id, item, qty) VALUES ( 'run-1' ,  'apple' ,  '1' )
//	UPDATE stock SET qty = qty -  '1'  WHERE item =  'apple'
//	SELECT 1 FROM orders WHERE id =  'run-1'
//
// The invariants a verifier checks: exactly N orders;
// sum(stock.qty) + sum(orders.qty) = 200; no order twice.
//
// The planted mistakes (-mistake NAME), each a small deviation marked
// "MISTAKE" in the code:
//
//	retry-new-id       a failed COMMIT is retried under a new id, unchecked
//	no-retry           every error is final: the order is dropped
//	no-deadline        statements run without a timeout
//	split-transaction  INSERT and UPDATE run as two autocommit statements
//	no-reconnect       connecting is tried once, not retried
//	reuse-failed-tx    after an error the connection is kept, no ROLLBACK
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const schema = `CREATE TABLE orders (id text PRIMARY KEY, item text, qty int);
CREATE TABLE stock (item text PRIMARY KEY, qty int);
INSERT INTO stock VALUES ('apple', 100), ('pear', 100);
`

// The statements, so that faults can be aimed at them; pgx replaces each $n
// with the argument, quoted, before sending.
const (
	sqlBegin     = "BEGIN"
	sqlInsert    = "INSERT INTO orders (id, item, qty) VALUES ($1, $2, $3)"
	sqlUpdate    = "UPDATE stock SET qty = qty - $1 WHERE item = $2"
	sqlCommit    = "COMMIT"
	sqlCommitted = "SELECT 1 FROM orders WHERE id = $1"
)

// Time bounds. An attempt covers connecting plus one order's statements; 2 s
// leaves room for an injected 1 s delay. The overall bound stays below the
// 15 s a trial is given, so that the app reports its own failure.
const (
	attemptTimeout = 2 * time.Second
	overallTimeout = 12 * time.Second
	firstBackoff   = 50 * time.Millisecond
	maxBackoff     = 500 * time.Millisecond
	// idleTxTimeout is longer than the app ever idles in a transaction of
	// its own (an injected 1 s delay included), and short enough that a
	// retry waiting on an abandoned attempt's locks gets them in time.
	idleTxTimeout = "2s"
)

// Mistake names.
const (
	retryNewID       = "retry-new-id"
	noRetry          = "no-retry"
	noDeadline       = "no-deadline"
	splitTransaction = "split-transaction"
	noReconnect      = "no-reconnect"
	reuseFailedTx    = "reuse-failed-tx"
)

var mistakes = []string{retryNewID, noRetry, noDeadline, splitTransaction, noReconnect, reuseFailedTx}

var items = [2]string{"apple", "pear"}

type app struct {
	dsn     string
	mistake string
	conn    *pgx.Conn // nil until connected, and after a failure
}

func main() {
	dsn := flag.String("dsn", "", "PostgreSQL connection string (PGCHAOS_DSN wins)")
	orders := flag.Int("orders", 3, "how many orders to place")
	run := flag.String("run", "", "prefix of the order ids (default $PGCHAOS_RUN_ID, else \"run\")")
	mistake := flag.String("mistake", "", "planted mistake: "+strings.Join(mistakes, ", "))
	printSchema := flag.Bool("schema", false, "print the schema the app expects and exit")
	flag.Parse()
	if *printSchema {
		fmt.Print(schema)
		return
	}
	if *mistake != "" && !known(*mistake) {
		fail("unknown -mistake %q (known: %s)", *mistake, strings.Join(mistakes, ", "))
	}
	a := &app{dsn: cmp.Or(os.Getenv("PGCHAOS_DSN"), *dsn), mistake: *mistake}
	if a.dsn == "" {
		fail("no database: set PGCHAOS_DSN or pass -dsn")
	}
	prefix := cmp.Or(*run, os.Getenv("PGCHAOS_RUN_ID"), "run")

	ctx, cancel := context.WithTimeout(context.Background(), overallTimeout)
	defer cancel()
	if a.mistake == noReconnect {
		// MISTAKE no-reconnect: one connection attempt at start; if the
		// database refuses it, give up rather than try again.
		conn, err := a.dial(ctx)
		if err != nil {
			fail("connect: %v", err)
		}
		a.conn = conn
	}
	lost := 0
	for i := 1; i <= *orders; i++ {
		id := fmt.Sprintf("%s-%d", prefix, i)
		item, qty := items[(i-1)%2], i
		placed, err := a.place(ctx, id, item, qty)
		if err != nil && a.mistake == noRetry {
			// MISTAKE no-retry (continued): the failed order is reported
			// and dropped, and the run goes on and ends "successfully".
			fmt.Printf("order %s failed: %v\n", id, err)
			lost++
			continue
		}
		if err != nil {
			a.close()
			fail("order %s: %v", id, err)
		}
		fmt.Printf("order %s placed: %d %s\n", placed, qty, item)
	}
	a.close()
	if lost > 0 {
		fmt.Printf("%d of %d orders failed\n", lost, *orders)
	}
}

// place places one order, retrying what is worth retrying until ctx ends.
// It returns the id the order was placed under.
func (a *app) place(ctx context.Context, id, item string, qty int) (string, error) {
	retry := false // whether an earlier attempt may have committed
	for attempt := 1; ; attempt++ {
		err := a.attempt(ctx, id, item, qty, retry)
		if err == nil {
			return id, nil
		}
		if a.mistake == noRetry {
			// MISTAKE no-retry: every error is taken as final, even one
			// that says "try again" (40001) or a lost connection.
			a.close()
			return id, err
		}
		if !retryable(err) {
			a.close()
			return id, err
		}
		if a.mistake == reuseFailedTx && a.conn != nil && !a.conn.IsClosed() {
			// MISTAKE reuse-failed-tx: the connection still looks fine, so
			// it is kept as it is, with no ROLLBACK of the failed
			// transaction.
		} else {
			// After an error the connection's state is unknown (a
			// transaction may still be open on it): start afresh.
			a.close()
		}
		fmt.Fprintf(os.Stderr, "order %s: attempt %d: %v; retrying\n", id, attempt, err)
		retry = true
		if a.mistake == retryNewID && errors.Is(err, errCommit) {
			// MISTAKE retry-new-id: the COMMIT failed, so the order is
			// taken not to exist and placed again under a new id, without
			// asking whether the first attempt committed.
			id, retry = fmt.Sprintf("%s-r%d", id, attempt), false
		}
		if !sleep(ctx, backoff(attempt)) {
			return id, fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
	}
}

var (
	// errCommit marks an error of the COMMIT, the statement after which
	// the order's fate may be unknown.
	errCommit = errors.New("COMMIT")
	// errConnLost marks a statement's error that cost the connection.
	errConnLost = errors.New("connection lost")
)

// lost marks err with errConnLost when the statement that returned it left
// a.conn closed (a broken socket, a timeout, a FATAL error): whatever the
// error says, another connection may do better.
func (a *app) lost(err error) error {
	if a.conn.IsClosed() {
		return fmt.Errorf("%w (%w)", err, errConnLost)
	}
	return err
}

// attempt makes one try at an order, bounded by attemptTimeout. When retry
// is set, an earlier attempt may have committed the order (its COMMIT's
// answer was lost), so it first looks for it.
func (a *app) attempt(ctx context.Context, id, item string, qty int, retry bool) error {
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	if err := a.connect(actx); err != nil {
		return err
	}
	sctx := actx
	if a.mistake == noDeadline {
		// MISTAKE no-deadline: the statements run without a timeout; a
		// statement whose answer never comes waits for it forever.
		sctx = context.Background()
	}
	if retry {
		var one int
		err := a.conn.QueryRow(sctx, sqlCommitted, id).Scan(&one)
		switch {
		case err == nil:
			return nil // the earlier attempt committed
		case !errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("looking for order %s: %w", id, a.lost(err))
		}
	}
	if a.mistake == splitTransaction {
		// MISTAKE split-transaction: no BEGIN/COMMIT, so the INSERT
		// commits on its own before the UPDATE runs.
		if _, err := a.conn.Exec(sctx, sqlInsert, id, item, qty); err != nil {
			return fmt.Errorf("INSERT: %w", a.lost(err))
		}
		if _, err := a.conn.Exec(sctx, sqlUpdate, qty, item); err != nil {
			return fmt.Errorf("UPDATE: %w", a.lost(err))
		}
		return nil
	}
	if _, err := a.conn.Exec(sctx, sqlBegin); err != nil {
		return fmt.Errorf("BEGIN: %w", a.lost(err))
	}
	if _, err := a.conn.Exec(sctx, sqlInsert, id, item, qty); err != nil {
		return fmt.Errorf("INSERT: %w", a.lost(err))
	}
	if _, err := a.conn.Exec(sctx, sqlUpdate, qty, item); err != nil {
		return fmt.Errorf("UPDATE: %w", a.lost(err))
	}
	if _, err := a.conn.Exec(sctx, sqlCommit); err != nil {
		return fmt.Errorf("%w: %w", errCommit, a.lost(err))
	}
	return nil
}

// connect makes sure a.conn is open, retrying with backoff until ctx ends:
// a database that refuses a connection (restarting, or too busy) is often
// fine a moment later.
func (a *app) connect(ctx context.Context) error {
	if a.conn != nil {
		return nil
	}
	for attempt := 1; ; attempt++ {
		conn, err := a.dial(ctx)
		if err == nil {
			a.conn = conn
			return nil
		}
		if !retryable(err) {
			return fmt.Errorf("connect: %w", err)
		}
		fmt.Fprintf(os.Stderr, "connect: attempt %d: %v; retrying\n", attempt, err)
		if !sleep(ctx, backoff(attempt)) {
			return fmt.Errorf("connect: gave up after %d attempts: %w", attempt, err)
		}
	}
}

// dial opens one connection.
//
// An attempt the app gave up on (its statement hung on the way to the
// server) may leave its session open on the server, in the transaction,
// holding the locks of the order's rows: the retry of that order would wait
// on them until that session ended. So the server is asked to end a
// transaction left idle for idleTxTimeout. That timeout only runs while the
// server waits for a new statement, not in the middle of an extended-protocol
// batch (Bind received, Execute not yet), which is why statements go as
// simple Query messages, with their arguments quoted into the text.
func (a *app) dial(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(a.dsn)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["idle_in_transaction_session_timeout"] = idleTxTimeout
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return pgx.ConnectConfig(ctx, cfg)
}

// close closes a.conn, if any, without waiting long: a connection that
// broke may not answer the Terminate.
func (a *app) close() {
	if a.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	a.conn.Close(ctx)
	a.conn = nil
}

// retryable reports whether err is worth another attempt: a lost or refused
// connection, a timeout, or an error PostgreSQL says may pass (serialization
// failure, deadlock, shutdown, cannot connect now, connection exceptions).
func retryable(err error) bool {
	if errors.Is(err, errConnLost) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", "40P01", "57P01", "57P02", "57P03":
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08")
	}
	var netErr net.Error
	return errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) ||
		errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

func backoff(attempt int) time.Duration {
	return min(firstBackoff<<(attempt-1), maxBackoff)
}

// sleep waits d, or less if ctx ends first; it reports whether ctx has time
// left for another attempt.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return ctx.Err() == nil
	case <-ctx.Done():
		return false
	}
}

func known(m string) bool {
	for _, k := range mistakes {
		if k == m {
			return true
		}
	}
	return false
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "shop: "+format+"\n", args...)
	os.Exit(1)
}
