package workload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/history"
)

const (
	// Reconnect backoff after a lost connection: doubles from min to max,
	// back to min after an operation that kept its connection.
	minBackoff = 10 * time.Millisecond
	maxBackoff = time.Second
	// connectTimeout bounds one connection attempt (a hung or refused
	// connect is a fault worth surviving, not waiting on forever).
	connectTimeout = 10 * time.Second
	// stopGrace is how long operations in flight when the run ends may
	// take to finish before their connections are cut.
	stopGrace = 5 * time.Second
	// closeTimeout bounds saying goodbye to the server.
	closeTimeout = 2 * time.Second
)

// txKind is what a database workload does in one operation.
type txKind interface {
	// setup creates the workload's tables on a direct connection.
	setup(ctx context.Context, conn *pgx.Conn) error
	// next chooses the client's next operation and names it in op (Kind,
	// Key, GID), before it is attempted.
	next(c *client, op *history.Op)
	// do attempts the operation chosen by next on c.conn and records what
	// the client learned in op (Phase, Outcome, SQLState, Error).
	do(ctx context.Context, c *client, op *history.Op)
}

// dbWorkload runs clients that each hold a connection and perform one
// operation after another.
type dbWorkload struct {
	spec    experiments.Workload
	env     Env
	log     *slog.Logger
	connCfg *pgx.ConnConfig
	// connCfgs are the configs of Env.DSNs, which clients take in turn
	// (nil: every client uses connCfg).
	connCfgs []*pgx.ConnConfig
	kind     txKind
	gate     gate
	ran      atomic.Bool
}

func newDBWorkload(spec experiments.Workload, env Env, log *slog.Logger, kind txKind) (*dbWorkload, error) {
	if env.DSN == "" {
		return nil, fmt.Errorf("workload %q: no DSN to connect to", spec.Name)
	}
	parse := func(dsn string) (*pgx.ConnConfig, error) {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, fmt.Errorf("workload %q: parsing its DSN: %w", spec.Name, err)
		}
		// pgx prepares statements by default; the simple protocol is what
		// psql, PgBouncer in transaction mode and most chaos scenarios
		// expect. A DSN that names default_query_exec_mode keeps its choice.
		if !strings.Contains(dsn, "default_query_exec_mode") {
			cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		}
		return cfg, nil
	}
	cfg, err := parse(env.DSN)
	if err != nil {
		return nil, err
	}
	w := &dbWorkload{spec: spec, env: env, log: log, connCfg: cfg, kind: kind}
	for _, dsn := range env.DSNs {
		c, err := parse(dsn)
		if err != nil {
			return nil, err
		}
		w.connCfgs = append(w.connCfgs, c)
	}
	return w, nil
}

func (w *dbWorkload) Name() string { return w.spec.Name }
func (w *dbWorkload) Pause()       { w.gate.pause() }
func (w *dbWorkload) Resume()      { w.gate.resume() }

func (w *dbWorkload) Setup(ctx context.Context) error {
	conn, err := connect(ctx, w.env.SetupDSN)
	if err != nil {
		return fmt.Errorf("workload %q: connecting for setup: %w", w.spec.Name, err)
	}
	defer closeConn(conn)
	if err := w.kind.setup(ctx, conn); err != nil {
		return fmt.Errorf("workload %q: setup: %w", w.spec.Name, err)
	}
	return nil
}

func (w *dbWorkload) Run(ctx context.Context) error {
	if w.ran.Swap(true) {
		return fmt.Errorf("workload %q: Run called twice", w.spec.Name)
	}
	runCtx, cancel := runContext(ctx, w.spec.Duration)
	defer cancel()
	// Statements run on a context of their own, so that an operation in
	// flight when the run ends is allowed to finish (and be judged on what
	// the server said) instead of being cut into an unknown outcome.
	opCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	defer stopOps()
	finished := make(chan struct{})
	go func() {
		select {
		case <-runCtx.Done():
		case <-finished:
			return
		}
		t := time.NewTimer(stopGrace)
		defer t.Stop()
		select {
		case <-t.C:
			stopOps()
		case <-finished:
		}
	}()

	pace := newPacer(w.spec.Rate)
	seed := uint64(time.Now().UnixNano())
	w.log.Info("workload starting", "clients", w.spec.Clients, "rate", w.spec.Rate, "duration", w.spec.Duration)
	var wg sync.WaitGroup
	for i := 1; i <= w.spec.Clients; i++ {
		cfg := w.connCfg.Copy()
		if n := len(w.connCfgs); n > 0 {
			cfg = w.connCfgs[(i-1)%n].Copy()
		}
		if _, ok := cfg.RuntimeParams["application_name"]; !ok {
			// Lets kill_sessions and pg_stat_activity pick out a client.
			cfg.RuntimeParams["application_name"] = fmt.Sprintf("pgchaos-%s-c%d", w.spec.Name, i)
		}
		c := &client{
			w:   w,
			id:  i,
			cfg: cfg,
			rng: rand.New(rand.NewPCG(seed, uint64(i))),
			log: w.log.With("client", i),
		}
		wg.Go(func() { c.run(runCtx, opCtx, pace) })
	}
	wg.Wait()
	close(finished)
	counts := history.Counts(w.env.History.Of(w.spec.Name))
	w.log.Info("workload stopped", "ok", counts[history.OK], "fail", counts[history.Fail], "unknown", counts[history.Unknown])
	return nil
}

// runContext bounds ctx by the workload's duration, if it has one.
func runContext(ctx context.Context, d experiments.Duration) (context.Context, context.CancelFunc) {
	if d > 0 {
		return context.WithTimeout(ctx, time.Duration(d))
	}
	return context.WithCancel(ctx)
}

// client is one connection's worth of a workload: it performs operations
// one after another, and reconnects when its connection is lost.
type client struct {
	w    *dbWorkload
	id   int
	seq  int64
	cfg  *pgx.ConnConfig
	conn *pgx.Conn
	rng  *rand.Rand
	log  *slog.Logger
	// pick is the statement of a sql workload chosen by next.
	pick int
}

func (c *client) run(runCtx, opCtx context.Context, pace *pacer) {
	defer c.closeConn()
	backoff := minBackoff
	hadConn := false
	for {
		if !pace.wait(runCtx) || !c.w.gate.wait(runCtx) {
			return
		}
		c.seq++
		op := history.Op{Workload: c.w.spec.Name, Client: c.id, Seq: c.seq}
		c.w.kind.next(c, &op)
		op.Start = time.Now()
		if c.conn == nil {
			if err := c.connect(runCtx); err != nil {
				if runCtx.Err() != nil {
					return // the run ended while connecting: nothing was attempted
				}
				// The operation was attempted and definitely did not
				// happen; recording it keeps availability honest while
				// the server is unreachable.
				op.End = time.Now()
				op.Phase = PhaseConnect
				op.Outcome = history.Fail
				op.Error = err.Error()
				_, op.SQLState, _ = classify(err, false)
				c.record(op)
				if !sleep(runCtx, backoff) {
					return
				}
				backoff = min(2*backoff, maxBackoff)
				continue
			}
			if hadConn {
				c.log.Info("client reconnected")
			}
			hadConn = true
		}
		c.w.kind.do(opCtx, c, &op)
		op.End = time.Now()
		c.record(op)
		if c.conn != nil {
			backoff = minBackoff
			continue
		}
		c.log.Info("client lost its connection", "phase", op.Phase, "error", op.Error, "retry_in", backoff)
		if !sleep(runCtx, backoff) {
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (c *client) record(op history.Op) {
	switch op.Outcome {
	case history.Unknown:
		c.log.Info("operation in doubt", "seq", op.Seq, "kind", op.Kind, "key", op.Key, "phase", op.Phase, "error", op.Error)
	case history.Fail:
		c.log.Debug("operation failed", "seq", op.Seq, "kind", op.Kind, "key", op.Key, "phase", op.Phase, "sqlstate", op.SQLState, "error", op.Error)
	}
	c.w.env.History.Add(op)
}

func (c *client) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, c.cfg)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	c.conn = conn
	return nil
}

// closeConn closes the client's connection, which makes the server roll
// back whatever transaction it still has open for it.
func (c *client) closeConn() {
	if c.conn != nil {
		closeConn(c.conn)
		c.conn = nil
	}
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_ = conn.Close(ctx)
}

// exec runs one statement of op as its phase. On an error it records the
// outcome (see classify), leaves the session out of any transaction, and
// returns the error.
func (c *client) exec(ctx context.Context, op *history.Op, phase string, commitPoint bool, sql string, args ...any) (pgconn.CommandTag, error) {
	op.Phase = phase
	// A statement that cannot be sent cannot commit anything; the session,
	// and any transaction open in it, is gone or about to be closed.
	var notSent error
	switch {
	case c.conn.IsClosed():
		notSent = errors.New("connection already closed")
	case ctx.Err() != nil:
		notSent = fmt.Errorf("stopped: %w", context.Cause(ctx))
	}
	if notSent != nil {
		op.Outcome, op.Error = history.Fail, fmt.Sprintf("%s not sent: %v", phase, notSent)
		c.closeConn()
		return pgconn.CommandTag{}, notSent
	}
	tag, err := c.conn.Exec(ctx, sql, args...)
	if err != nil {
		c.fail(ctx, op, err, commitPoint)
	}
	return tag, err
}

// fail records err as op's outcome and cleans up: a lost (or untrusted)
// connection is closed; after a server error the transaction is rolled
// back, so that nothing of the failed operation can be committed by the
// next one.
func (c *client) fail(ctx context.Context, op *history.Op, err error, commitPoint bool) {
	outcome, state, lost := classify(err, commitPoint)
	op.Outcome, op.SQLState, op.Error = outcome, state, err.Error()
	if lost {
		op.Error = fmt.Sprintf("connection lost during %s: %v", op.Phase, err)
		c.closeConn()
		return
	}
	c.rollback(ctx)
}

// failTag records a statement that succeeded with a tag saying it did not
// do its job (COMMIT answered ROLLBACK) as a failure.
func (c *client) failTag(ctx context.Context, op *history.Op, msg string) {
	op.Outcome, op.Error = history.Fail, msg
	c.rollback(ctx)
}

// rollback ends any transaction the session may be in. It is sent even when
// the session looks idle: a fault may have lied about the transaction
// status. If it fails the connection is closed instead.
func (c *client) rollback(ctx context.Context) {
	if c.conn == nil || c.conn.IsClosed() {
		c.conn = nil
		return
	}
	if _, err := c.conn.Exec(ctx, "ROLLBACK"); err != nil {
		c.log.Debug("rollback failed; closing the connection", "error", err)
		c.closeConn()
	}
}

// retryPause waits a little, at random and longer with each attempt, before
// a transaction is retried, so that the transactions that conflicted do not
// meet again at once.
func (c *client) retryPause(ctx context.Context, attempt int) {
	limit := min(time.Duration(attempt+1)*2*time.Millisecond, 50*time.Millisecond)
	sleep(ctx, time.Duration(c.rng.Int64N(int64(limit))))
}

// sleep waits for d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// pacer spreads operations over time at a rate shared by all clients. Slots
// are handed out one interval apart; a slot in the past is moved to now, so
// a slow spell is not followed by a burst.
type pacer struct {
	interval time.Duration
	mu       sync.Mutex
	next     time.Time
}

// newPacer returns nil (no pacing) for rate 0.
func newPacer(rate float64) *pacer {
	if rate <= 0 {
		return nil
	}
	return &pacer{interval: time.Duration(float64(time.Second) / rate)}
}

// wait blocks until the caller's slot; false when ctx ended first.
func (p *pacer) wait(ctx context.Context) bool {
	if p == nil {
		return ctx.Err() == nil
	}
	p.mu.Lock()
	now := time.Now()
	slot := p.next
	if slot.Before(now) {
		slot = now
	}
	p.next = slot.Add(p.interval)
	p.mu.Unlock()
	if d := time.Until(slot); d > 0 {
		return sleep(ctx, d)
	}
	return ctx.Err() == nil
}

// gate holds clients back while a workload is paused.
type gate struct {
	mu   sync.Mutex
	hold chan struct{} // non-nil while paused; closed on resume
}

func (g *gate) pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hold == nil {
		g.hold = make(chan struct{})
	}
}

func (g *gate) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hold != nil {
		close(g.hold)
		g.hold = nil
	}
}

// wait blocks while the gate is paused; false when ctx ended first.
func (g *gate) wait(ctx context.Context) bool {
	for {
		g.mu.Lock()
		hold := g.hold
		g.mu.Unlock()
		if hold == nil {
			return ctx.Err() == nil
		}
		select {
		case <-hold:
		case <-ctx.Done():
			return false
		}
	}
}
