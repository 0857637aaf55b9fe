package pgtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// ClusterOptions configures StartCluster.
type ClusterOptions struct {
	// Options gives BinDir, Settings (applied to every node, over the
	// cluster's defaults; synchronous_standby_names reaches the primary
	// once the standbys stream) and Logger. TLS is refused: an error.
	Options
	// Standbys is the number of streaming replicas, named standby1 to
	// standbyN. 0 starts a primary alone, with the cluster's settings.
	Standbys int
	// Synchronous is "" or "off" (asynchronous replication), "on"
	// (synchronous_standby_names = 'FIRST 1 (standby1, ...)') or "quorum"
	// ('ANY 1 (standby1, ...)'). The setting goes on the primary only, so a
	// promoted standby accepts writes without waiting for standbys that
	// still follow the old primary; set it on the new primary (ALTER SYSTEM,
	// pg_reload_conf) once standbys follow it, if the drill needs that.
	Synchronous string
	// Archive turns on WAL archiving: archive_mode=on and an
	// archive_command that copies each segment into ArchiveDir, refusing to
	// overwrite a file already there. Standbys archive once promoted.
	// Cluster.BaseBackup and Cluster.Restore need it.
	Archive bool
	// ReplicationVia, when set, is called for each standby before it is
	// started, with the standby's name and the primary's host:port. The
	// standby's primary_conninfo uses the host:port it returns instead,
	// typically a pgchaos proxy in front of the primary so that faults can
	// hit the WAL stream. nil: standbys connect to the primary directly.
	// pg_basebackup always copies from the primary directly, and Rewind
	// points a node at its source directly.
	ReplicationVia func(standby, primaryAddr string) (string, error)
}

// Cluster is a running primary with streaming standbys, made for
// disaster-recovery drills: crash, failover, promotion, rewind, base
// backups and point-in-time recovery. Stop it when done.
type Cluster struct {
	archive *tempDir
	// What new nodes are made with: Restore adds nodes after the start.
	binDir string
	as     runAs
	logger *slog.Logger // the caller's, which newNode gives each node
	common map[string]string
	log    *slog.Logger
	life   lifecycle

	// stopCtx is cancelled when Stop begins, to cut short the BaseBackup
	// and Restore calls that Stop then waits for (ops).
	stopCtx    context.Context
	cancelStop context.CancelFunc
	ops        sync.WaitGroup

	// mu guards the fields below. Nodes and Node read them while Restore
	// adds to them from other goroutines.
	mu       sync.Mutex
	nodes    []*Postgres
	backups  []*Backup
	reserved map[string]bool // names of nodes being restored
	stopping bool            // Stop began: no new operations
}

// clusterDefaults are what replication and drills need, over pgtest's
// single-server defaults and under the caller's Settings.
func clusterDefaults(standbys int) map[string]string {
	return map[string]string{
		"wal_level": "replica",
		// pg_rewind needs hint-bit changes in the WAL (or data checksums)
		// on the target, and full_page_writes on the source.
		"wal_log_hints":    "on",
		"full_page_writes": "on",
		"hot_standby":      "on",
		// A drill that kills processes must not lose acknowledged commits
		// from the WAL buffers, and synchronous replication only waits
		// for the standby with it on. fsync stays off: a process kill
		// leaves the page cache, so written WAL survives it.
		"synchronous_commit": "on",
		// pg_basebackup -X stream takes two WAL senders per standby
		// while it runs; keep room for drills' own replication clients.
		"max_wal_senders":       strconv.Itoa(2*standbys + 10),
		"max_replication_slots": strconv.Itoa(standbys + 10),
		// Standbys report often, so waits on replay and failovers stay
		// short.
		"wal_receiver_status_interval": "1s",
		"wal_retrieve_retry_interval":  "1s",
	}
}

// managedByNode are per-node settings that pgtest writes itself.
var managedByNode = []string{"primary_conninfo", "primary_slot_name"}

// clusterSettings returns the settings of every node and those the primary
// adds, after checking opts.
func clusterSettings(opts ClusterOptions, names []string, archiveDir string) (common, primaryOnly map[string]string, err error) {
	extra := clusterDefaults(len(names))
	primaryOnly = map[string]string{}
	var managed []string
	switch opts.Synchronous {
	case "", "off":
	case "on", "quorum":
		method := "FIRST"
		if opts.Synchronous == "quorum" {
			method = "ANY"
		}
		primaryOnly["synchronous_standby_names"] = method + " 1 (" + strings.Join(names, ", ") + ")"
		managed = append(managed, "synchronous_standby_names")
	}
	if opts.Archive {
		extra["archive_mode"] = "on"
		dir := shellQuote(archiveDir)
		// Repeatable and atomic, as contrib's basic_archive: a crash
		// mid-copy leaves only a temporary file, and a segment archived
		// before a crash but not yet recorded as archived is offered
		// again, which succeeds when the copy is the same.
		extra["archive_command"] = "if [ -f " + dir + "/%f ]; then cmp -s %p " + dir + "/%f; else cp %p " + dir + "/%f.tmp && mv " + dir + "/%f.tmp " + dir + "/%f; fi"
		managed = append(managed, "archive_mode", "archive_command")
	}
	for k, v := range opts.Settings {
		lk := strings.ToLower(k)
		if slices.Contains(managedByNode, lk) {
			return nil, nil, fmt.Errorf("setting %q is managed by pgtest in a cluster and cannot be set in ClusterOptions.Settings", k)
		}
		if slices.Contains(managed, lk) {
			return nil, nil, fmt.Errorf("setting %q is managed by pgtest with ClusterOptions.Synchronous = %q, Archive = %v and cannot be set in ClusterOptions.Settings",
				k, opts.Synchronous, opts.Archive)
		}
		extra[k] = v
	}
	common, err = postgresSettings(extra, false)
	if err != nil {
		return nil, nil, err
	}
	return common, primaryOnly, nil
}

// checkClusterOptions rejects what StartCluster cannot do before anything
// is started.
func checkClusterOptions(opts ClusterOptions) error {
	if opts.TLS {
		return errors.New("ClusterOptions.TLS is not supported: cluster nodes run without TLS")
	}
	if opts.Standbys < 0 {
		return fmt.Errorf("ClusterOptions.Standbys = %d: want 0 or more", opts.Standbys)
	}
	switch opts.Synchronous {
	case "", "off":
	case "on", "quorum":
		if opts.Standbys == 0 {
			return fmt.Errorf("ClusterOptions.Synchronous = %q needs at least one standby, but Standbys = 0", opts.Synchronous)
		}
	default:
		return fmt.Errorf("invalid ClusterOptions.Synchronous %q: want \"\", \"off\", \"on\" or \"quorum\"", opts.Synchronous)
	}
	return nil
}

// StartCluster starts a primary, as StartPostgres does, and opts.Standbys
// streaming standbys made from it with pg_basebackup, each with a physical
// replication slot named after it, on free ports of 127.0.0.1. It returns
// once every standby accepts read-only connections and streams from the
// primary, synchronously if asked. If any node fails to start, the nodes
// already started are stopped and every directory removed. ctx bounds only
// the startup.
func StartCluster(ctx context.Context, opts ClusterOptions) (*Cluster, error) {
	if err := checkClusterOptions(opts); err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	names := make([]string, opts.Standbys)
	for i := range names {
		names[i] = "standby" + strconv.Itoa(i+1)
	}
	// Checked before any directory exists, with a placeholder archive dir.
	if _, _, err := clusterSettings(opts, names, "/archive"); err != nil {
		return nil, err
	}
	binDir, err := resolveBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	for _, tool := range []string{"pg_basebackup", "pg_rewind"} {
		if _, err := os.Stat(filepath.Join(binDir, tool)); err != nil {
			return nil, fmt.Errorf("%s %w next to initdb (apt-get install -y postgresql): %w", tool, ErrNotInstalled, err)
		}
	}
	as, err := serverUser()
	if err != nil {
		return nil, err
	}

	c := newCluster(binDir, as, logger)
	started := false
	defer func() {
		if !started {
			// Cleanup failures would only hide the error that matters.
			_ = c.Stop()
		}
	}()
	archiveDir := ""
	if opts.Archive {
		if c.archive, err = as.makeTempDir("archive"); err != nil {
			return nil, fmt.Errorf("preparing the WAL archive: %w", err)
		}
		archiveDir = c.archive.path
	}
	common, primaryOnly, err := clusterSettings(opts, names, archiveDir)
	if err != nil {
		return nil, err
	}
	c.common = common

	primary, err := c.newNode("primary")
	if err != nil {
		return nil, err
	}
	if err := primary.initDataDir(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", primary.label(), err)
	}
	// Synchronous replication comes last, whoever asked for it: with it,
	// every commit, the roles' too, would wait for standbys that do not
	// exist yet.
	bootstrap := maps.Clone(common)
	bootstrap["synchronous_standby_names"] = ""
	if err := primary.startServer(ctx, bootstrap); err != nil {
		return nil, err
	}
	if err := primary.createRoles(ctx); err != nil {
		return nil, withLog(fmt.Errorf("%s: %w", primary.label(), err), primary.logPath)
	}
	c.log.Debug("primary ready", "addr", primary.Addr())

	for _, name := range names {
		s, err := c.newNode(name)
		if err != nil {
			return nil, err
		}
		if err := s.baseBackup(ctx, primary); err != nil {
			return nil, err
		}
		upstream := primary.Addr()
		if opts.ReplicationVia != nil {
			via, err := opts.ReplicationVia(name, upstream)
			if err != nil {
				return nil, fmt.Errorf("%s: ClusterOptions.ReplicationVia(%q, %q): %w", s.label(), name, upstream, err)
			}
			if _, _, err := net.SplitHostPort(via); err != nil {
				return nil, fmt.Errorf("%s: ClusterOptions.ReplicationVia(%q, %q) returned %q, not host:port: %w", s.label(), name, upstream, via, err)
			}
			upstream = via
		}
		if err := s.writeStandbyConf(upstream); err != nil {
			return nil, fmt.Errorf("%s: %w", s.label(), err)
		}
		if err := s.startServer(ctx, common); err != nil {
			return nil, err
		}
		c.log.Debug("standby ready", "name", name, "addr", s.Addr(), "upstream", upstream)
	}
	if err := c.waitStreaming(ctx, primary, names, false); err != nil {
		return nil, err
	}
	final := maps.Clone(common)
	maps.Copy(final, primaryOnly)
	if final["synchronous_standby_names"] != "" {
		maps.Copy(primary.conf, final)
		if err := primary.writeConf(); err != nil {
			return nil, fmt.Errorf("%s: %w", primary.label(), err)
		}
		if err := primary.reloadConf(ctx); err != nil {
			return nil, err
		}
		// Only names pgtest chose are sure to match a standby.
		if err := c.waitStreaming(ctx, primary, names, len(primaryOnly) > 0); err != nil {
			return nil, err
		}
	}
	started = true
	track(c)
	c.log.Info("cluster ready", "primary", primary.Addr(), "standbys", opts.Standbys, "synchronous", opts.Synchronous)
	return c, nil
}

func newCluster(binDir string, as runAs, logger *slog.Logger) *Cluster {
	c := &Cluster{
		binDir:   binDir,
		as:       as,
		logger:   logger,
		log:      logger.With("component", "pgtest.cluster"),
		reserved: map[string]bool{},
	}
	c.stopCtx, c.cancelStop = context.WithCancel(context.Background())
	return c
}

// newNode prepares a node and adds it to c, so that a failed start stops it.
func (c *Cluster) newNode(name string) (*Postgres, error) {
	p, err := c.prepareNode(name)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, p)
	c.mu.Unlock()
	return p, nil
}

// prepareNode prepares a node's temp dir without adding it to c.
func (c *Cluster) prepareNode(name string) (*Postgres, error) {
	p, err := newPostgres(c.binDir, c.as, "postgres-"+name, c.logger.With("node", name))
	if err != nil {
		return nil, fmt.Errorf("postgres %s: %w", name, err)
	}
	p.name = name
	p.inCluster = true
	return p, nil
}

// begin registers an operation that adds to c (BaseBackup, Restore), so
// that Stop cancels it and waits for it rather than leave what it made
// behind. The returned context is ctx, also cancelled when Stop begins;
// call end when the operation is over.
func (c *Cluster) begin(ctx context.Context, doing string) (opCtx context.Context, end func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return nil, nil, fmt.Errorf("%s: the cluster was stopped", doing)
	}
	c.ops.Add(1)
	opCtx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.stopCtx, cancel)
	return opCtx, func() {
		stop()
		cancel()
		c.ops.Done()
	}, nil
}

// baseBackup fills p's data directory from primary, creating the physical
// slot named after p there. -R writes standby.signal and a
// primary_conninfo, which writeStandbyConf then replaces.
func (p *Postgres) baseBackup(ctx context.Context, primary *Postgres) error {
	p.log.Debug("pg_basebackup", "from", primary.Addr())
	start := time.Now()
	cmd := p.as.commandContext(ctx, p.dir, filepath.Join(p.binDir, "pg_basebackup"),
		"-D", p.dataDir,
		"-d", replicationConnInfo(primary.Addr(), ""),
		"-R", "-X", "stream", "-C", "-S", p.name,
		// An immediate checkpoint instead of a spread one that may take
		// minutes; the data is thrown away, so no fsync either.
		"--checkpoint=fast", "--no-sync",
		// Nobody verifies these backups: skip checksumming every file.
		"--no-manifest",
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return withLog(fmt.Errorf("%s: pg_basebackup from %s (%s): %w\n%s", p.label(), primary.label(), primary.Addr(), err, strings.TrimSpace(string(out))), primary.logPath)
	}
	p.log.Debug("pg_basebackup done", "took", time.Since(start))
	return nil
}

// replicationConnInfo is a libpq connection string for the superuser at
// addr, with application_name when it is not "".
func replicationConnInfo(addr, applicationName string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = addr, ""
	}
	kv := []string{"host=" + connInfoQuote(host)}
	if port != "" {
		kv = append(kv, "port="+connInfoQuote(port))
	}
	kv = append(kv, "user="+SuperUser, "sslmode=disable")
	if applicationName != "" {
		kv = append(kv, "application_name="+connInfoQuote(applicationName))
	}
	return strings.Join(kv, " ")
}

// connInfoQuote quotes a libpq keyword value.
func connInfoQuote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// shellQuote quotes a word for /bin/sh, which runs archive_command.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// writeStandbyConf makes p a standby of the server at upstream: it writes
// standby.signal, and primary_conninfo (application_name = p's name, which
// synchronous_standby_names matches) and primary_slot_name into
// postgresql.auto.conf, in place of what pg_basebackup -R or pg_rewind left
// there. That file is read last, so it wins over pgtest.conf.
func (p *Postgres) writeStandbyConf(upstream string) error {
	err := p.rewriteAutoConf(func(key string) bool { return slices.Contains(managedByNode, key) },
		"primary_conninfo = "+quoteConf(replicationConnInfo(upstream, p.name)),
		"primary_slot_name = "+quoteConf(p.name),
	)
	if err != nil {
		return err
	}
	return p.as.writeFile(filepath.Join(p.dataDir, "standby.signal"), "")
}

// rewriteAutoConf rewrites p's postgresql.auto.conf without the settings
// whose lower-case name drop reports, and with lines added at the end.
func (p *Postgres) rewriteAutoConf(drop func(key string) bool, add ...string) error {
	auto := filepath.Join(p.dataDir, "postgresql.auto.conf")
	old, err := os.ReadFile(auto)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", auto, err)
	}
	var lines []string
	for _, line := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		key, _, _ := strings.Cut(line, "=")
		if drop(strings.ToLower(strings.TrimSpace(key))) {
			continue
		}
		lines = append(lines, line)
	}
	lines = append(lines, add...)
	return p.as.writeFile(auto, strings.Join(lines, "\n")+"\n")
}

// reloadConf makes the server read its configuration files again.
func (p *Postgres) reloadConf(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, p.DSN(SuperUser, "", "postgres"))
	if err != nil {
		return withLog(fmt.Errorf("%s: connecting to reload the configuration: %w", p.label(), err), p.logPath)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return withLog(fmt.Errorf("%s: reloading the configuration: %w", p.label(), err), p.logPath)
	}
	return nil
}

// waitStreaming waits until the primary's pg_stat_replication shows every
// standby of names streaming (and, with synchronous, no longer async), so
// that a drill starts from a healthy cluster.
func (c *Cluster) waitStreaming(ctx context.Context, primary *Postgres, names []string, synchronous bool) error {
	if len(names) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, pgReadyTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, primary.DSN(SuperUser, "", "postgres"))
	if err != nil {
		return withLog(fmt.Errorf("%s: connecting to check replication: %w", primary.label(), err), primary.logPath)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var missing []string
	for {
		var streaming []string
		err := func() error {
			rows, err := conn.Query(ctx, `SELECT application_name FROM pg_stat_replication
				WHERE state = 'streaming' AND (sync_state <> 'async' OR NOT $1)`, synchronous)
			if err != nil {
				return err
			}
			streaming, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		}()
		if err != nil {
			if ctx.Err() == nil {
				return withLog(fmt.Errorf("%s: reading pg_stat_replication: %w", primary.label(), err), primary.logPath)
			}
		} else {
			missing = slices.DeleteFunc(slices.Clone(names), func(n string) bool { return slices.Contains(streaming, n) })
			if len(missing) == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			what := "streaming"
			if synchronous {
				what = "synchronous"
			}
			errs := []error{fmt.Errorf("standbys %s not %s from %s within %s: %w", strings.Join(missing, ", "), what, primary.label(), pgReadyTimeout, ctx.Err())}
			for _, n := range missing {
				if s := c.Node(n); s != nil {
					errs = append(errs, withLog(fmt.Errorf("%s", s.label()), s.logPath))
				}
			}
			return errors.Join(errs...)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Nodes returns every node: the primary first, then standby1 to standbyN,
// then the nodes Restore made, in the order it made them. The order and
// names stay what they were, whatever role a failover gave each node
// since. It is safe to call while Restore adds a node.
func (c *Cluster) Nodes() []*Postgres {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// Node returns the node called name ("primary", "standby1", or one that
// Restore made), or nil if there is none.
func (c *Cluster) Node(name string) *Postgres {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodeLocked(name)
}

func (c *Cluster) nodeLocked(name string) *Postgres {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// ArchiveDir returns the directory archive_command copies WAL segments into,
// or "" without ClusterOptions.Archive. Besides the segments (and timeline
// history files, and .partial segments after a promotion) it holds pgtest's
// hidden lock file, .pgtest.lock. Nodes made by Restore read from it
// (restore_command) but do not archive into it. Stop removes it.
func (c *Cluster) ArchiveDir() string {
	if c.archive == nil {
		return ""
	}
	return c.archive.path
}

// Stop stops every node, restored nodes and standbys first (a primary's
// fast shutdown waits for its WAL senders to hand its last WAL to connected
// standbys), and removes every directory, the base backups and the archive
// included. Crashed nodes are fine. BaseBackup and Restore calls still
// running are cancelled, and what they made removed, before it returns. It
// is idempotent and safe for concurrent use.
func (c *Cluster) Stop() error {
	return c.life.do(func() error {
		c.mu.Lock()
		c.stopping = true
		c.mu.Unlock()
		c.cancelStop()
		c.ops.Wait()
		c.mu.Lock()
		nodes, backups := slices.Clone(c.nodes), slices.Clone(c.backups)
		c.mu.Unlock()
		var errs []error
		for _, n := range slices.Backward(nodes) {
			errs = append(errs, n.Stop())
		}
		for _, b := range backups {
			if err := b.tmp.remove(); err != nil {
				errs = append(errs, fmt.Errorf("removing the %s: %w", b.label(), err))
			}
		}
		if c.archive != nil {
			if err := c.archive.remove(); err != nil {
				errs = append(errs, fmt.Errorf("removing the WAL archive: %w", err))
			}
		}
		untrack(c)
		c.log.Debug("cluster stopped")
		return errors.Join(errs...)
	})
}
