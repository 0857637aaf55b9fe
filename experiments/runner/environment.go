package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgchaos/pgchaos/control"
	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/verify"
	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
	"github.com/pgchaos/pgchaos/server"
)

// environment is what the experiment runs against: the target (given or
// embedded), an optional embedded PgBouncer, and the proxies.
type environment struct {
	dsn, setupDSN, verifyDSN string
	targetAddr               string
	bouncerAddr              string
	bouncerAdminDSN          string

	pg      *pgtest.Postgres // the embedded primary, as started
	cluster *pgtest.Cluster  // every embedded node
	// serving names the node that serves: the primary, or the standby a
	// promote step made primary ("" without nodes).
	serving string
	// userNodes are target.nodes.
	userNodes []nodeInfo
	bouncer   *pgtest.PgBouncer
	srv       *server.Server // in-process proxies
	// remote proxies by name: the instances that run each, in the order
	// of the file (remoteOrder).
	remote      map[string]*remoteProxy
	remoteOrder []string
	// listen addresses of every proxy by name (a set's: its first
	// instance's).
	listen map[string]string

	// mu guards placed: a rule's removal after its duration runs on a
	// timer of its own.
	mu sync.Mutex
	// placed are the remote instances each injected rule landed on, and
	// touched every instance a rule landed on in the run.
	placed  map[string]*placement
	touched []string
	// leftArmed hears of rules that could not be removed from an
	// instance (nil: nobody listens).
	leftArmed func([]LeftArmed)
}

func startEnvironment(ctx context.Context, exp *experiments.Experiment, opts Options) (*environment, error) {
	env := &environment{remote: map[string]*remoteProxy{}, listen: map[string]string{}, placed: map[string]*placement{}}
	embedded := exp.Target.Embedded
	if opts.Embedded && embedded == nil {
		embedded = &experiments.Embedded{}
	}
	if embedded != nil {
		copts := pgtest.ClusterOptions{
			Options:     pgtest.Options{BinDir: opts.PGBinDir, Settings: EmbeddedSettings(embedded.Settings), Logger: opts.Logger},
			Standbys:    embedded.Standbys,
			Synchronous: embedded.Synchronous,
			Archive:     embedded.Archive,
		}
		if via := embedded.ReplicationVia; via != "" {
			// The proxy the standbys stream through starts before they
			// do, in front of the primary.
			copts.ReplicationVia = func(_, primaryAddr string) (string, error) {
				if addr, ok := env.listen[via]; ok {
					return addr, nil
				}
				return env.startProxies(opts, []server.ProxyConfig{{Name: via, Listen: listenOf(exp, via), Upstream: primaryAddr}})
			}
		}
		cluster, err := pgtest.StartCluster(ctx, copts)
		if err != nil {
			env.close()
			return nil, fmt.Errorf("start the embedded PostgreSQL: %w", err)
		}
		pg := cluster.Node(experiments.NodePrimary)
		env.cluster, env.pg, env.serving = cluster, pg, experiments.NodePrimary
		env.dsn = pg.DSN(pgtest.SuperUser, "", "postgres")
		env.setupDSN, env.verifyDSN, env.targetAddr = env.dsn, env.dsn, pg.Addr()
		// With pgbouncer_via, PgBouncer starts once the proxy it goes
		// through listens.
		if embedded.PgBouncer && embedded.PgBouncerVia == "" {
			if err := env.startBouncer(ctx, embedded, pg.Addr(), opts); err != nil {
				env.close()
				return nil, err
			}
		}
	} else {
		t := exp.Target
		env.dsn, env.setupDSN, env.verifyDSN = t.DSN, cmp.Or(t.SetupDSN, t.DSN), cmp.Or(t.VerifyDSN, t.DSN)
		nodes, err := userNodes(t.Nodes)
		if err != nil {
			return nil, err
		}
		env.userNodes = nodes
		for _, n := range t.Nodes {
			if n.Role == experiments.RolePrimary {
				env.serving = n.Name
			}
		}
		cfg, err := pgconn.ParseConfig(t.DSN)
		if err != nil {
			return nil, fmt.Errorf("target.dsn: %w", err)
		}
		env.targetAddr = net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	}

	var local []server.ProxyConfig
	var later []experiments.Proxy
	for _, p := range exp.Proxies {
		if p.Remote() {
			// A dns name is resolved once, here: the set is fixed for the
			// run, so that each rule's removal goes to exactly the
			// instances it was put on and an instance that disappears is
			// reported unreachable instead of dropped from the set.
			rp, err := connectRemote(ctx, p, opts)
			if err != nil {
				env.close()
				return nil, err
			}
			env.remote[p.Name] = rp
			env.remoteOrder = append(env.remoteOrder, p.Name)
			env.listen[p.Name] = rp.listens[0]
			continue
		}
		if _, started := env.listen[p.Name]; started {
			continue // replication_via's, started with the cluster
		}
		if p.Upstream == experiments.UpstreamPgBouncer && env.bouncer == nil {
			// PgBouncer is not started yet (pgbouncer_via): add this
			// proxy once it is.
			later = append(later, p)
			continue
		}
		up, err := env.resolve(p.Upstream)
		if err != nil {
			env.close()
			return nil, fmt.Errorf("proxy %s: %w", p.Name, err)
		}
		local = append(local, server.ProxyConfig{Name: p.Name, Listen: cmp.Or(p.Listen, "127.0.0.1:0"), Upstream: up})
	}
	if len(local) > 0 || (len(later) > 0 && env.srv == nil) {
		if _, err := env.startProxies(opts, local); err != nil {
			env.close()
			return nil, err
		}
	}
	if embedded != nil && embedded.PgBouncerVia != "" {
		via, ok := env.listen[embedded.PgBouncerVia]
		if !ok || env.remote[embedded.PgBouncerVia] != nil {
			env.close()
			return nil, fmt.Errorf("pgbouncer_via: no in-process proxy named %q", embedded.PgBouncerVia)
		}
		if err := env.startBouncer(ctx, embedded, via, opts); err != nil {
			env.close()
			return nil, err
		}
	}
	for _, p := range later {
		up, err := env.resolve(p.Upstream)
		if err != nil {
			env.close()
			return nil, fmt.Errorf("proxy %s: %w", p.Name, err)
		}
		spec, err := env.srv.AddProxy(control.ProxySpec{Name: p.Name, Listen: cmp.Or(p.Listen, "127.0.0.1:0"), Upstream: up, Enabled: true})
		if err != nil {
			env.close()
			return nil, fmt.Errorf("start proxy %s: %w", p.Name, err)
		}
		env.listen[p.Name] = spec.Listen
	}
	return env, nil
}

// startProxies starts in-process proxies: the first call starts the
// server that runs them, later ones add to it. It returns the listen
// address of the first proxy.
func (env *environment) startProxies(opts Options, proxies []server.ProxyConfig) (string, error) {
	if env.srv == nil {
		srv, err := server.Start(server.Config{API: "127.0.0.1:0", Proxies: proxies, Seed: opts.Seed, Observe: opts.Observe}, opts.Logger)
		if err != nil {
			return "", fmt.Errorf("start the proxies: %w", err)
		}
		env.srv = srv
		for _, p := range srv.Proxies() {
			env.listen[p.Name()] = p.Addr().String()
		}
	} else {
		for _, p := range proxies {
			spec, err := env.srv.AddProxy(control.ProxySpec{Name: p.Name, Listen: p.Listen, Upstream: p.Upstream, Enabled: true})
			if err != nil {
				return "", fmt.Errorf("start proxy %s: %w", p.Name, err)
			}
			env.listen[p.Name] = spec.Listen
		}
	}
	if len(proxies) == 0 {
		return "", nil
	}
	return env.listen[proxies[0].Name], nil
}

// listenOf is the listen address a proxy of the experiment asks for.
func listenOf(exp *experiments.Experiment, name string) string {
	for _, p := range exp.Proxies {
		if p.Name == name {
			return cmp.Or(p.Listen, "127.0.0.1:0")
		}
	}
	return "127.0.0.1:0"
}

// startBouncer starts the embedded PgBouncer in front of upstream.
func (env *environment) startBouncer(ctx context.Context, embedded *experiments.Embedded, upstream string, opts Options) error {
	b, err := pgtest.StartPgBouncer(ctx, pgtest.PgBouncerOptions{Upstream: upstream, PoolMode: embedded.PoolMode, Settings: embedded.PgBouncerSettings, Logger: opts.Logger})
	if err != nil {
		return fmt.Errorf("start the embedded PgBouncer (install it with: apt-get install -y pgbouncer): %w", err)
	}
	env.bouncer = b
	env.bouncerAddr = b.Addr()
	env.bouncerAdminDSN = pgtest.ConnString(b.Addr(), pgtest.SuperUser, "", "pgbouncer")
	return nil
}

// EmbeddedSettings are the postgresql.conf settings of an embedded server
// for target.embedded.settings s: the file's, and room to prepare
// transactions (the two-phase experiments need it; PostgreSQL's default
// is 0). pgchaos explore starts its server with them too.
func EmbeddedSettings(s map[string]string) map[string]string {
	out := map[string]string{"max_prepared_transactions": "100"}
	for k, v := range s {
		out[k] = v
	}
	return out
}

// resolve turns a proxy upstream or switch_upstream target into host:port.
func (env *environment) resolve(up string) (string, error) {
	switch up {
	case experiments.UpstreamTarget:
		return env.targetAddr, nil
	case experiments.UpstreamPgBouncer:
		if env.bouncerAddr == "" {
			return "", fmt.Errorf("upstream %q: no embedded PgBouncer", up)
		}
		return env.bouncerAddr, nil
	}
	if n, ok := env.lookup(up); ok {
		return net.JoinHostPort(n.host, strconv.Itoa(n.port)), nil
	}
	return up, nil
}

// dsnsThrough are the DSNs of the named proxy: one for each instance of
// a remote set, whose clients connect to each in turn, as a fleet of
// application pods each use their own; one otherwise.
func (env *environment) dsnsThrough(through string) ([]string, error) {
	rp, ok := env.remote[through]
	if !ok || len(rp.listens) < 2 {
		dsn, err := env.dsnThrough(through)
		return []string{dsn}, err
	}
	var out []string
	for _, addr := range rp.listens {
		out = append(out, env.dsnAt(addr))
	}
	return out, nil
}

// dsnThrough is the target's DSN with its address replaced by the named
// proxy's ("direct": unchanged).
func (env *environment) dsnThrough(through string) (string, error) {
	if through == "" || through == experiments.Direct {
		return env.dsn, nil
	}
	addr, ok := env.listen[through]
	if !ok && through == experiments.UpstreamPgBouncer && env.bouncerAddr != "" {
		// The embedded PgBouncer, connected to directly.
		addr, ok = env.bouncerAddr, true
	}
	if !ok {
		return "", fmt.Errorf("no proxy named %q", through)
	}
	return env.dsnAt(addr), nil
}

// dsnAt is the target's DSN with its address replaced by addr.
func (env *environment) dsnAt(addr string) string {
	u, err := url.Parse(env.dsn)
	if err != nil || u.Scheme == "" {
		// A keyword/value DSN: override host and port.
		host, port, _ := net.SplitHostPort(addr)
		return fmt.Sprintf("%s host=%s port=%s", env.dsn, host, port)
	}
	u.Host = addr
	return u.String()
}

func (env *environment) close() {
	if env.srv != nil {
		env.srv.Close()
	}
	if env.bouncer != nil {
		env.bouncer.Stop()
	}
	if env.cluster != nil {
		env.cluster.Stop()
	}
}

// node is an embedded server by name.
func (env *environment) node(name string) (*pgtest.Postgres, error) {
	if env.cluster != nil {
		if n := env.cluster.Node(name); n != nil {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no embedded node named %q", name)
}

// nodeInfo is a server steps and verifiers may name: an embedded node,
// or one of target.nodes.
type nodeInfo struct {
	name, dsn  string
	host, data string
	port       int
	pg         *pgtest.Postgres // an embedded node's server
}

// running reports whether the node is up: an embedded node's postmaster
// runs, another node answers.
func (n nodeInfo) running(ctx context.Context) bool {
	if n.pg != nil {
		return n.pg.Running()
	}
	_, err := queryValue(ctx, n.dsn, "SELECT 1")
	return err == nil
}

// nodes lists the servers steps and verifiers may name, the first
// primary first.
func (env *environment) nodes() []nodeInfo {
	if env.cluster == nil {
		return env.userNodes
	}
	var out []nodeInfo
	for _, n := range env.cluster.Nodes() {
		out = append(out, nodeInfo{name: n.Name(), dsn: n.DSN(pgtest.SuperUser, "", "postgres"), host: n.Host(), port: n.Port(), data: n.DataDir(), pg: n})
	}
	return out
}

// lookup finds a node by name.
func (env *environment) lookup(name string) (nodeInfo, bool) {
	for _, n := range env.nodes() {
		if n.name == name {
			return n, true
		}
	}
	return nodeInfo{}, false
}

// userNodes reads target.nodes.
func userNodes(nodes []experiments.Node) ([]nodeInfo, error) {
	var out []nodeInfo
	for _, n := range nodes {
		cfg, err := pgconn.ParseConfig(n.DSN)
		if err != nil {
			return nil, fmt.Errorf("target.nodes %s: %w", n.Name, err)
		}
		out = append(out, nodeInfo{name: n.Name, dsn: n.DSN, host: cfg.Host, port: int(cfg.Port)})
	}
	return out, nil
}

// nodeDSN is the DSN of a node ("": the one that serves).
func (env *environment) nodeDSN(name string) (string, error) {
	if name == "" {
		if env.serving == "" {
			return env.verifyDSN, nil
		}
		name = env.serving
	}
	n, ok := env.lookup(name)
	if !ok {
		return "", fmt.Errorf("no node named %q", name)
	}
	return n.dsn, nil
}

// serve makes a promoted node the one that serves: sql steps, probes and
// verifiers connect to it from now on.
func (env *environment) serve(name string) error {
	dsn, err := env.nodeDSN(name)
	if err != nil {
		return err
	}
	env.serving = name
	env.dsn, env.setupDSN, env.verifyDSN = dsn, dsn, dsn
	return nil
}

// findServing makes sure the node that serves is the running primary
// with the newest timeline: after a failover done by a runbook (an exec
// step) rather than a promote step, the node the runbook promoted, even
// if the old primary still accepts writes too (split brain, which the
// timeline verifier reports). It reports the node when that changed.
func (env *environment) findServing(ctx context.Context) (string, bool) {
	if env.serving == "" {
		return "", false
	}
	best, bestTLI := "", int64(-1)
	for _, n := range env.nodes() {
		if n.pg != nil && !n.pg.Running() {
			continue
		}
		tli, primary, err := verify.NodeTimeline(ctx, n.dsn)
		// On a tie the node that serves stays.
		if err == nil && primary && (tli > bestTLI || tli == bestTLI && n.name == env.serving) {
			best, bestTLI = n.name, tli
		}
	}
	if best == "" || best == env.serving || env.serve(best) != nil {
		return "", false
	}
	return best, true
}

// nodeEnv describes every node for an exec step:
// PGCHAOS_NODE_<NAME>_{DSN,HOST,PORT,DATA}, PGCHAOS_SERVING_NODE and, for
// an embedded target, PGCHAOS_PG_BINDIR.
func (env *environment) nodeEnv() []string {
	var out []string
	for _, n := range env.nodes() {
		prefix := "PGCHAOS_NODE_" + strings.ToUpper(n.name) + "_"
		out = append(out, prefix+"DSN="+n.dsn, prefix+"HOST="+n.host, prefix+"PORT="+strconv.Itoa(n.port))
		if n.data != "" {
			out = append(out, prefix+"DATA="+n.data)
		}
	}
	if env.serving != "" {
		out = append(out, "PGCHAOS_SERVING_NODE="+env.serving)
	}
	if env.pg != nil {
		out = append(out, "PGCHAOS_PG_BINDIR="+env.pg.BinDir())
	}
	return out
}

// putRule adds or replaces an injected rule wherever its proxy runs: on
// every instance of a remote proxy, or on none of them (see putRemote).
// lease is how long the rule is meant to stay (0: until removed); remote
// instances end it by themselves a removal deadline after that.
func (env *environment) putRule(ctx context.Context, r faults.Rule, lease time.Duration) error {
	_, remote := env.remote[r.Proxy]
	if remote || r.Proxy == "" {
		if lease > 0 {
			lease += removeDeadline
		}
		if err := env.putRemote(ctx, r, lease); err != nil {
			return err
		}
		if remote {
			return nil
		}
	}
	if env.srv == nil {
		if r.Proxy == "" && len(env.remote) > 0 {
			return nil
		}
		return fmt.Errorf("no proxy to inject rule %s into", r.Name)
	}
	if _, err := env.srv.Faults.Put(r); err != nil {
		if left := env.removeRemote(ctx, r); len(left) > 0 {
			return fmt.Errorf("%w (and %s)", err, left[0])
		}
		return err
	}
	return nil
}

// removeRule removes an injected rule from wherever it was put. A remote
// instance it could not be removed from is reported to env.leftArmed and
// in the error.
func (env *environment) removeRule(ctx context.Context, r faults.Rule) error {
	var errs []error
	for _, l := range env.removeRemote(ctx, r) {
		errs = append(errs, errors.New(l.String()))
	}
	if _, remote := env.remote[r.Proxy]; !remote && env.srv != nil {
		if err := env.srv.Faults.Remove(r.Proxy, r.Name); err != nil && !isNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// fired is how often an injected rule fired, summed over where it ran,
// with each remote instance's count (nil without remote instances).
func (env *environment) fired(ctx context.Context, r faults.Rule) (int64, []InstanceFired) {
	var n int64
	if _, remote := env.remote[r.Proxy]; !remote && env.srv != nil {
		if st, err := env.srv.Faults.Get(r.Proxy, r.Name); err == nil {
			n += st.Fired
		}
	}
	m, per := env.firedRemote(ctx, r)
	return n + m, per
}

// killSessions ends a proxy's sessions that match.
func (env *environment) killSessions(ctx context.Context, k *experiments.KillSessions) (int, error) {
	var app *regexp.Regexp
	if k.ApplicationName != "" {
		var err error
		if app, err = regexp.Compile(k.ApplicationName); err != nil {
			return 0, err
		}
	}
	match := func(s proxy.SessionInfo) bool {
		return s.Proxy == k.Proxy && (k.User == "" || s.User == k.User) && (app == nil || app.MatchString(s.ApplicationName))
	}
	killed := 0
	if rp, ok := env.remote[k.Proxy]; ok {
		return env.killRemote(ctx, rp, match)
	}
	if env.srv == nil {
		return 0, fmt.Errorf("no proxy named %q", k.Proxy)
	}
	for _, s := range env.srv.Registry.Sessions() {
		if match(s) && env.srv.Registry.Kill(s.ID) {
			killed++
		}
	}
	return killed, nil
}

func (env *environment) switchUpstream(sw *experiments.SwitchUpstream) error {
	up, err := env.resolve(sw.Upstream)
	if err != nil {
		return err
	}
	if env.srv != nil {
		for _, p := range env.srv.Proxies() {
			if p.Name() == sw.Proxy {
				return p.SetUpstream(up)
			}
		}
	}
	return fmt.Errorf("switch_upstream: proxy %q is not run by this experiment", sw.Proxy)
}

func isNotFound(err error) bool { return errors.Is(err, faults.ErrNotFound) }

func firstErr(errs []error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
