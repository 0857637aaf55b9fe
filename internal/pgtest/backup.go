package pgtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Timeouts of Restore.
const (
	// archiveWait bounds the wait for the WAL that the cluster's nodes had
	// ready for archiving to reach the archive.
	archiveWait = 10 * time.Second
	// restoreWait bounds the wait for a restored node, once it accepts
	// connections, to reach its target and promote.
	restoreWait = 30 * time.Second
)

// Backup is a base backup of a cluster node, kept until the cluster stops.
type Backup struct {
	cluster *Cluster
	tmp     *tempDir
	dir     string
	node    string
	taken   time.Time
}

// Dir returns the directory pg_basebackup wrote the backup to, in plain
// format with its backup_manifest and without WAL (the archive has it). It
// is owned by the server OS user (postgres when running as root). Restore
// copies it, so a backup can be restored more than once; do not change it.
func (b *Backup) Dir() string { return b.dir }

// Node returns the name of the node the backup was taken from.
func (b *Backup) Node() string { return b.node }

// Taken returns when pg_basebackup finished.
func (b *Backup) Taken() time.Time { return b.taken }

// label is how messages name the backup.
func (b *Backup) label() string {
	return fmt.Sprintf("base backup of %s taken at %s (%s)", b.node, b.taken.Format("15:04:05.000"), b.dir)
}

// baseBackupTimeout bounds BaseBackup.
const baseBackupTimeout = 2 * time.Minute

// BaseBackup takes a base backup of node, a running primary or standby of
// c, with pg_basebackup (-X none, --checkpoint=fast, --no-sync), for
// Restore. The cluster must have been started with ClusterOptions.Archive,
// since the WAL the backup needs is taken from the archive. From a primary,
// pg_basebackup waits until the WAL up to the backup's end is archived;
// from a standby it cannot, so the WAL up to the backup's end reaches the
// archive only once the primary completes its segment: the pg_switch_wal
// that Restore asks for covers it. A node that Restore made cannot be
// backed up: it does not archive. The backup is removed when c stops.
func (c *Cluster) BaseBackup(ctx context.Context, node *Postgres) (*Backup, error) {
	if node == nil {
		return nil, errors.New("base backup: the node is nil")
	}
	doing := "base backup of " + node.label()
	if c.archive == nil {
		return nil, fmt.Errorf("%s: the cluster was started without ClusterOptions.Archive, so there is no WAL archive to restore a backup with", doing)
	}
	if !slices.Contains(c.Nodes(), node) {
		return nil, fmt.Errorf("%s: it is not a node of this cluster", doing)
	}
	if node.restoredFrom != nil {
		return nil, fmt.Errorf("%s: it was made by Restore and does not archive its WAL, so a backup of it could not be restored", doing)
	}
	if !node.Running() {
		return nil, fmt.Errorf("%s: it is not running", doing)
	}
	ctx, end, err := c.begin(ctx, doing)
	if err != nil {
		return nil, err
	}
	defer end()
	// pg_basebackup -X none waits for the backup's last segment to be
	// archived: bounded, in case archiving is stuck.
	ctx, cancel := context.WithTimeout(ctx, baseBackupTimeout)
	defer cancel()
	tmp, err := c.as.makeTempDir("backup-" + node.name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", doing, err)
	}
	kept := false
	defer func() {
		if !kept {
			// A cleanup failure would only hide the error that matters.
			_ = tmp.remove()
		}
	}()
	dir := filepath.Join(tmp.path, "data")
	c.log.Debug("pg_basebackup", "node", node.name, "addr", node.Addr(), "dir", dir)
	start := time.Now()
	cmd := c.as.commandContext(ctx, tmp.path, filepath.Join(c.binDir, "pg_basebackup"),
		"-D", dir,
		"-d", replicationConnInfo(node.Addr(), ""),
		"-X", "none", "--checkpoint=fast", "--no-sync",
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctxErr := c.opErr(ctx); ctxErr != nil {
			err = ctxErr
		}
		return nil, withLog(fmt.Errorf("%s: pg_basebackup from %s into %s: %w\n%s", doing, node.Addr(), dir, err, strings.TrimSpace(string(out))), node.logPath)
	}
	b := &Backup{cluster: c, tmp: tmp, dir: dir, node: node.name, taken: time.Now()}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return nil, fmt.Errorf("%s: the cluster was stopped", doing)
	}
	c.backups = append(c.backups, b)
	kept = true
	c.log.Info("base backup taken", "node", node.name, "dir", dir, "took", time.Since(start))
	return b, nil
}

// opErr is why an operation's context ended, nil if it has not: Stop, or
// the caller's context.
func (c *Cluster) opErr(ctx context.Context) error {
	if ctx.Err() == nil {
		return nil
	}
	if c.stopCtx.Err() != nil {
		return errors.New("the cluster is stopping")
	}
	return ctx.Err()
}

// RestoreTarget is where recovery stops. Exactly one of Name (a restore
// point made with pg_create_restore_point), Time (recovery_target_time) or
// LSN (recovery_target_lsn) is set; the zero value recovers to the end of
// the archive. Recovery stops just after the target (the restore point, the
// last transaction committed at or before Time, the WAL record at LSN),
// following the latest timeline in the archive.
//
// The WAL up to the target must be in the archive, and only completed
// segments are archived: after making the restore point, committing the
// transactions, or reaching the LSN the restore is to stop at, switch WAL
// on the primary (SELECT pg_switch_wal()). With Time, recovery can only
// tell it has reached the target from a commit after it, so that commit's
// WAL must be archived too. Recovery that runs out of archive before its
// target fails ("recovery ended before configured recovery target was
// reached"), and so does Restore.
type RestoreTarget struct {
	// Name is the name given to pg_create_restore_point; recovery stops at
	// the first restore point of that name.
	Name string
	// Time is compared with commit timestamps, to the microsecond.
	Time time.Time
	// LSN is a WAL location such as "0/3000148", as pg_current_wal_lsn
	// returns.
	LSN string
}

var lsnPattern = regexp.MustCompile(`^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$`)

// String describes the target for messages.
func (t RestoreTarget) String() string {
	var parts []string
	if t.Name != "" {
		parts = append(parts, fmt.Sprintf("restore point %q", t.Name))
	}
	if !t.Time.IsZero() {
		parts = append(parts, "time "+t.Time.Format(time.RFC3339Nano))
	}
	if t.LSN != "" {
		parts = append(parts, "LSN "+t.LSN)
	}
	if len(parts) == 0 {
		return "the end of the archive"
	}
	return strings.Join(parts, " and ")
}

// settings returns the recovery_target_* setting for t, after checking it.
func (t RestoreTarget) settings() (map[string]string, error) {
	set := 0
	for _, ok := range []bool{t.Name != "", !t.Time.IsZero(), t.LSN != ""} {
		if ok {
			set++
		}
	}
	if set > 1 {
		return nil, fmt.Errorf("RestoreTarget sets %s: want at most one of Name, Time and LSN", t)
	}
	switch {
	case t.Name != "":
		// The server's limits: MAXFNAMELEN, and one line of postgresql.conf.
		if len(t.Name) > 63 || strings.ContainsAny(t.Name, "\x00\r\n") {
			return nil, fmt.Errorf("RestoreTarget.Name %q: want at most 63 bytes and no line break", t.Name)
		}
		return map[string]string{"recovery_target_name": t.Name}, nil
	case !t.Time.IsZero():
		// Microseconds, which commit timestamps have: truncating never
		// includes a commit after t.
		return map[string]string{"recovery_target_time": t.Time.UTC().Format("2006-01-02 15:04:05.999999-07:00")}, nil
	case t.LSN != "":
		if !lsnPattern.MatchString(t.LSN) {
			return nil, fmt.Errorf("RestoreTarget.LSN %q: want a WAL location such as 0/3000148", t.LSN)
		}
		return map[string]string{"recovery_target_lsn": t.LSN}, nil
	}
	return map[string]string{}, nil
}

// recoveryTargetSettings are the settings Restore writes for the recovery
// only, and removes once the node is promoted.
var recoveryTargetSettings = []string{"recovery_target_name", "recovery_target_time", "recovery_target_lsn", "recovery_target_action"}

// restoredNodeManaged reports whether a setting is one pgtest writes itself
// into a restored node's pgtest.conf, so that what the backup's
// postgresql.auto.conf (read last) says must go: the source's replication
// and recovery settings, its archiving and its synchronous standbys.
func restoredNodeManaged(key string) bool {
	switch key {
	case "primary_conninfo", "primary_slot_name", "synchronous_standby_names",
		"archive_mode", "archive_command", "restore_command",
		"port", "unix_socket_directories":
		return true
	}
	return strings.HasPrefix(key, "recovery_target")
}

var nodeName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Restore makes a new node called name from backup b (of c) and c's
// archive, and returns it once it has reached target, been promoted and
// accepts writes. It joins the cluster: Nodes lists it last, Node(name)
// finds it, Stop stops it. It is an error if a node called name exists;
// name is made of lower-case letters, digits and underscores, at most 63,
// since it becomes the node's application_name and replication slot name
// if the node is later rewound into a standby.
//
// The node gets a copy of the backup, so a backup can be restored several
// times, with recovery.signal (not standby.signal, which a backup of a
// standby has), a restore_command copying from ArchiveDir, the target and
// recovery_target_action = promote. Its pgtest.conf is its own (port,
// socket directory), with the cluster's settings; from the backup's
// postgresql.auto.conf, which ALTER SYSTEM writes, it keeps everything but
// the replication settings (primary_conninfo, primary_slot_name: nothing
// of it points at the old primary, and a backup holds no replication
// slots), synchronous_standby_names (it has no standbys, so its commits
// must not wait for any) and archiving: a restored node does not archive
// (archive_mode = off), since on promotion it picks a new timeline the
// cluster's own standbys do not know of, and both would archive files of
// the same names. Once it is promoted, the recovery target settings are
// removed from its configuration, so that a restart or Rewind does not stop
// at the target again.
//
// Restore first waits (up to 10 s) until the WAL that the cluster's
// running nodes had ready for archiving has been archived, so that a
// pg_switch_wal just before it is enough (see RestoreTarget). It starts
// the node on a free port, as the other nodes, and waits up to 30 s for it
// to promote. If recovery fails (a FATAL in the log, typically a target
// that is not in the archive) or times out, Restore stops the node, removes
// it and returns an error with the end of its log. ctx bounds only the
// restore; the node runs until Stop.
func (c *Cluster) Restore(ctx context.Context, b *Backup, target RestoreTarget, name string) (_ *Postgres, err error) {
	if b == nil {
		return nil, fmt.Errorf("restoring postgres %s: the backup is nil", name)
	}
	doing := fmt.Sprintf("restoring postgres %s from the %s to %s", name, b.label(), target)
	if b.cluster != c {
		return nil, fmt.Errorf("%s: the backup is of another cluster", doing)
	}
	if !nodeName.MatchString(name) {
		return nil, fmt.Errorf("%s: invalid node name %q: want lower-case letters, digits and underscores, at most 63", doing, name)
	}
	targetConf, err := target.settings()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", doing, err)
	}
	ctx, end, err := c.begin(ctx, doing)
	if err != nil {
		return nil, err
	}
	defer end()
	if err := c.reserve(name); err != nil {
		return nil, fmt.Errorf("%s: %w", doing, err)
	}
	defer c.release(name)

	pending := c.waitArchived(ctx)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: waiting for the WAL to be archived: %w", doing, c.opErr(ctx))
	}
	p, err := c.prepareNode(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", doing, err)
	}
	p.restoredFrom = b
	defer func() {
		if err == nil {
			return
		}
		if len(pending) > 0 {
			err = fmt.Errorf("%w\n(WAL not archived within %s when recovery began: %s)", err, archiveWait, strings.Join(pending, ", "))
		}
		if stopErr := p.Stop(); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up after the failed restore: %w", stopErr))
		}
	}()

	c.log.Debug("restoring", "node", name, "backup", b.dir, "target", target.String())
	start := time.Now()
	if err := p.copyBackup(ctx, b); err != nil {
		if ctxErr := c.opErr(ctx); ctxErr != nil {
			err = fmt.Errorf("%w: %w", ctxErr, err)
		}
		return nil, fmt.Errorf("%s: %w", doing, err)
	}
	if err := p.rewriteAutoConf(restoredNodeManaged); err != nil {
		return nil, fmt.Errorf("%s: %w", doing, err)
	}
	settings := maps.Clone(c.common)
	maps.DeleteFunc(settings, func(k, _ string) bool { return restoredNodeManaged(strings.ToLower(k)) })
	settings["archive_mode"] = "off"
	settings["synchronous_standby_names"] = ""
	settings["restore_command"] = "cp " + shellQuote(c.archive.path) + "/%f %p"
	settings["recovery_target_action"] = "promote"
	maps.Copy(settings, targetConf)
	if err := p.startServer(ctx, settings); err != nil {
		if ctxErr := c.opErr(ctx); ctxErr != nil {
			err = fmt.Errorf("%w: %w", ctxErr, err)
		}
		return nil, fmt.Errorf("%s: %w", doing, err)
	}
	if err := p.waitPromoted(ctx); err != nil {
		if ctxErr := c.opErr(ctx); ctxErr != nil {
			err = fmt.Errorf("%w: %w", ctxErr, err)
		}
		return nil, fmt.Errorf("%s: %w", doing, err)
	}
	for _, k := range recoveryTargetSettings {
		delete(p.conf, k)
	}
	if err := p.writeConf(); err != nil {
		return nil, fmt.Errorf("%s: removing the recovery target from its configuration: %w", doing, err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return nil, fmt.Errorf("%s: the cluster was stopped", doing)
	}
	c.nodes = append(c.nodes, p)
	c.log.Info("node restored", "node", name, "addr", p.Addr(), "from", b.node, "target", target.String(), "took", time.Since(start))
	return p, nil
}

// reserve claims name for a node being restored.
func (c *Cluster) reserve(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodeLocked(name) != nil || c.reserved[name] {
		return fmt.Errorf("a node called %q exists already", name)
	}
	c.reserved[name] = true
	return nil
}

func (c *Cluster) release(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.reserved, name)
}

// waitArchived waits, up to archiveWait, until the files each running node
// of c had ready for archiving (pg_wal/archive_status/*.ready) when it was
// called have been archived. It returns those that were not, as
// "node: file", having logged them.
func (c *Cluster) waitArchived(ctx context.Context) []string {
	type file struct {
		node *Postgres
		name string
	}
	var waiting []file
	for _, n := range c.Nodes() {
		if n.restoredFrom != nil || !n.Running() {
			continue
		}
		ready, _ := filepath.Glob(filepath.Join(n.dataDir, "pg_wal", "archive_status", "*.ready"))
		for _, r := range ready {
			waiting = append(waiting, file{n, r})
		}
	}
	deadline := time.Now().Add(archiveWait)
	for {
		waiting = slices.DeleteFunc(waiting, func(f file) bool {
			_, err := os.Stat(f.name)
			// A node that went down will not archive before it restarts.
			return errors.Is(err, os.ErrNotExist) || !f.node.Running()
		})
		if len(waiting) == 0 || ctx.Err() != nil {
			return nil
		}
		if time.Now().After(deadline) {
			var pending []string
			for _, f := range waiting {
				pending = append(pending, f.node.name+": "+strings.TrimSuffix(filepath.Base(f.name), ".ready"))
			}
			c.log.Warn("WAL not archived in time, restoring anyway", "pending", pending, "waited", archiveWait)
			return pending
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// copyBackup makes p's data directory a copy of b, with recovery.signal:
// cp -a, run as the server user, keeps the modes the server insists on.
func (p *Postgres) copyBackup(ctx context.Context, b *Backup) error {
	cmd := p.as.commandContext(ctx, p.dir, "cp", "-a", b.dir, p.dataDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("copying the backup into %s as OS user %s: %w\n%s", p.dataDir, p.as.name, err, strings.TrimSpace(string(out)))
	}
	// A backup of a standby has standby.signal, which would win over
	// recovery.signal and never promote.
	if err := os.Remove(filepath.Join(p.dataDir, "standby.signal")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the backup's standby.signal: %w", err)
	}
	return p.as.writeFile(filepath.Join(p.dataDir, "recovery.signal"), "")
}

// errRecovering is a restored node not promoted yet.
var errRecovering = errors.New("still in recovery (pg_is_in_recovery() is true)")

// waitPromoted waits, up to restoreWait, until p has left recovery and
// accepts writes, then checkpoints as Promote does, so that its control file
// shows its new timeline. It fails as soon as the postmaster exits, as it
// does when recovery ends in FATAL.
func (p *Postgres) waitPromoted(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, restoreWait)
	defer cancel()
	pr := p.current()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	check := func() error {
		if conn == nil {
			c, err := pgx.Connect(ctx, p.DSN(SuperUser, "", "postgres"))
			if err != nil {
				return err
			}
			conn = c
		}
		var inRecovery bool
		err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery)
		if err == nil && inRecovery {
			return errRecovering
		}
		if err == nil {
			// Only a server that accepts writes assigns transaction IDs.
			_, err = conn.Exec(ctx, "SELECT txid_current()")
		}
		if err != nil {
			conn.Close(context.WithoutCancel(ctx))
			conn = nil
		}
		return err
	}
	for {
		if pr.exited() {
			return withLog(fmt.Errorf("%s: recovery failed: the postmaster exited (%v)", p.label(), pr.err), p.logPath)
		}
		last := check()
		if last == nil {
			break
		}
		select {
		case <-pr.done:
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return withLog(fmt.Errorf("%s: not promoted within %s: %w (last check: %w)", p.label(), restoreWait, ctx.Err(), last), p.logPath)
		}
	}
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return withLog(fmt.Errorf("%s: checkpoint after promotion: %w", p.label(), err), p.logPath)
	}
	return nil
}
