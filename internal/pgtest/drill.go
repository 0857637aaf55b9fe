package pgtest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Timeouts of the drill operations.
const (
	// crashGrace bounds the wait for an immediate or fast shutdown. A fast
	// one can hang on a WAL sender that cannot reach its standby (a
	// faulted proxy in between) until wal_sender_timeout.
	crashGrace = 30 * time.Second
	// promoteWait is pg_promote's wait_seconds.
	promoteWait = 60
)

// Name returns the node's name in its cluster: "primary", "standby1", ...
// A server from StartPostgres is "primary".
func (p *Postgres) Name() string { return p.name }

// Running reports whether the postmaster is up: started and neither crashed,
// stopped, nor exited on its own. A node that is up may still be starting
// or recovering.
func (p *Postgres) Running() bool {
	pr := p.current()
	return pr != nil && !pr.exited()
}

func (p *Postgres) current() *proc {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proc
}

func (p *Postgres) isStopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}

// Crash stops the node as a failure would, and returns once the postmaster
// and every process it forked have exited. mode is
//
//   - "kill": SIGKILL to the postmaster and every process it forked at once
//     (they are frozen first, so none outlives the others; the process
//     group would not do, since each child of the postmaster calls
//     setsid), like a process crash. The OS page cache survives it,
//     so WAL that was written is kept even though fsync is off.
//   - "immediate": pg_ctl stop -m immediate, i.e. SIGQUIT to the postmaster:
//     backends quit without a checkpoint and the next start recovers.
//   - "fast": pg_ctl stop -m fast, i.e. SIGINT: a clean shutdown with a
//     checkpoint. If it does not finish within 30 s, the postmaster and its
//     processes are killed and Crash reports that.
//
// Crashing a node that is not running is an error. Start brings it back.
func (p *Postgres) Crash(mode string) error {
	var sig syscall.Signal
	switch mode {
	case "kill":
		sig = syscall.SIGKILL
	case "immediate":
		sig = syscall.SIGQUIT
	case "fast":
		sig = syscall.SIGINT
	default:
		return fmt.Errorf("crashing %s: invalid mode %q: want \"kill\", \"immediate\" or \"fast\"", p.label(), mode)
	}
	p.ops.Lock()
	defer p.ops.Unlock()
	pr := p.current()
	if pr == nil || pr.exited() {
		return fmt.Errorf("crashing %s (%s): it is not running", p.label(), mode)
	}
	pid := pr.cmd.Process.Pid
	p.log.Info("crashing postgres", "node", p.name, "mode", mode, "pid", pid)
	killed, err := stopPostmaster(pr, sig, crashGrace)
	switch {
	case err != nil:
		return withLog(fmt.Errorf("crashing %s (%s): %w", p.label(), mode, err), p.logPath)
	case killed && sig != syscall.SIGKILL:
		return withLog(fmt.Errorf("crashing %s (%s): the postmaster (pid %d) did not exit within %s, so it and its processes were killed", p.label(), mode, pid, crashGrace), p.logPath)
	}
	return nil
}

// Start starts a node that was crashed, or stopped or exited on its own,
// again on the same port and data directory (crash recovery runs if it
// must), and returns once it accepts connections: a standby, as a hot
// standby. It does not move to another port if one has taken its port in the
// meantime, since clients know it by that port: it fails instead. Starting a
// running node is an error, and so is starting one after Stop.
func (p *Postgres) Start(ctx context.Context) error {
	p.ops.Lock()
	defer p.ops.Unlock()
	if err := p.checkRestartable("starting"); err != nil {
		return err
	}
	return p.restart(ctx)
}

func (p *Postgres) checkRestartable(doing string) error {
	if p.isStopped() {
		return fmt.Errorf("%s %s: it was stopped and its data directory removed", doing, p.label())
	}
	if pr := p.current(); pr != nil && !pr.exited() {
		return fmt.Errorf("%s %s: it is already running (pid %d)", doing, p.label(), pr.cmd.Process.Pid)
	}
	return nil
}

// restart launches the postmaster on p.port, without the port retry of the
// first start.
func (p *Postgres) restart(ctx context.Context) error {
	p.log.Info("starting postgres", "node", p.name, "port", p.port)
	err := p.launch(ctx)
	if errors.Is(err, errPortTaken) {
		return withLog(fmt.Errorf("%s cannot start again on its port %d, which clients know it by (it does not move): %w", p.label(), p.port, err), p.logPath)
	}
	return err
}

// Promote makes a standby the primary with pg_promote. With wait, it returns
// once the node accepts writes and has checkpointed, so that its control
// file, pg_control_checkpoint() and pg_rewind against it show the new
// timeline. Without wait, it returns once promotion was requested.
func (p *Postgres) Promote(ctx context.Context, wait bool) error {
	if !p.Running() {
		return fmt.Errorf("promoting %s: it is not running", p.label())
	}
	p.log.Info("promoting postgres", "node", p.name, "wait", wait)
	conn, err := pgx.Connect(ctx, p.DSN(SuperUser, "", "postgres"))
	if err != nil {
		return withLog(fmt.Errorf("promoting %s: connecting: %w", p.label(), err), p.logPath)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var promoted bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(wait => $1, wait_seconds => $2)", wait, promoteWait).Scan(&promoted); err != nil {
		return withLog(fmt.Errorf("promoting %s: pg_promote: %w", p.label(), err), p.logPath)
	}
	if !promoted {
		return withLog(fmt.Errorf("promoting %s: pg_promote gave up after %d s", p.label(), promoteWait), p.logPath)
	}
	if !wait {
		return nil
	}
	// pg_promote(wait) returns once recovery has ended, which is when
	// the node accepts writes; the end-of-recovery checkpoint that
	// records the new timeline in the control file is only requested.
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return withLog(fmt.Errorf("promoting %s: checkpoint after promotion: %w", p.label(), err), p.logPath)
	}
	return nil
}

// Rewind makes p a streaming standby of source after a failover. It stops p
// (fast shutdown) if it is running, runs pg_rewind --target-pgdata against
// source, a running primary (pg_rewind first recovers a crashed p in
// single-user mode), writes standby.signal and a primary_conninfo pointing
// at source directly (application_name = p's name, replication slot named
// after p, created on source if missing), and starts p on its port,
// returning once it accepts connections as a hot standby.
func (p *Postgres) Rewind(ctx context.Context, source *Postgres) error {
	if source == nil || source == p {
		return fmt.Errorf("rewinding %s: the source must be another node", p.label())
	}
	p.ops.Lock()
	defer p.ops.Unlock()
	if p.isStopped() {
		return fmt.Errorf("rewinding %s: it was stopped and its data directory removed", p.label())
	}
	if !source.Running() {
		return fmt.Errorf("rewinding %s onto %s: the source is not running", p.label(), source.label())
	}
	p.log.Info("rewinding postgres", "node", p.name, "source", source.name)
	if pr := p.current(); pr != nil && !pr.exited() {
		// Killed after the grace is fine: pg_rewind recovers it first.
		if _, err := stopPostmaster(pr, syscall.SIGINT, pgStopGrace); err != nil {
			return withLog(fmt.Errorf("rewinding %s: stopping it: %w", p.label(), err), p.logPath)
		}
	}
	if err := source.prepareRewindSource(ctx, p.name); err != nil {
		return fmt.Errorf("rewinding %s: %w", p.label(), err)
	}
	cmd := p.as.commandContext(ctx, p.dir, filepath.Join(p.binDir, "pg_rewind"),
		"--target-pgdata", p.dataDir,
		"--source-server", replicationConnInfo(source.Addr(), "")+" dbname=postgres",
		"--no-sync",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return fmt.Errorf("rewinding %s: pg_rewind from %s (%s): %w\n%s", p.label(), source.label(), source.Addr(), err, strings.TrimSpace(string(out)))
	}
	p.log.Debug("pg_rewind done", "output", strings.TrimSpace(string(out)))
	// pg_rewind copied source's configuration, pgtest.conf included, with
	// source's port and socket directory.
	if err := p.writeConf(); err != nil {
		return fmt.Errorf("rewinding %s: %w", p.label(), err)
	}
	if err := p.writeStandbyConf(source.Addr()); err != nil {
		return fmt.Errorf("rewinding %s: %w", p.label(), err)
	}
	if err := p.restart(ctx); err != nil {
		return fmt.Errorf("rewinding %s: %w", p.label(), err)
	}
	return nil
}

// prepareRewindSource checkpoints the source, so that its control file
// shows the timeline it promoted to (pg_rewind reads the timeline there, and
// finds "no rewind required" otherwise), and creates the physical slot the
// rewound node will stream from, reserving WAL from now on.
func (p *Postgres) prepareRewindSource(ctx context.Context, slot string) error {
	conn, err := pgx.Connect(ctx, p.DSN(SuperUser, "", "postgres"))
	if err != nil {
		return withLog(fmt.Errorf("connecting to the source %s: %w", p.label(), err), p.logPath)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return withLog(fmt.Errorf("checkpoint on the source %s: %w", p.label(), err), p.logPath)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_create_physical_replication_slot($1, true)
		WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $1)`, slot); err != nil {
		return withLog(fmt.Errorf("creating replication slot %q on the source %s: %w", slot, p.label(), err), p.logPath)
	}
	return nil
}
