package proxy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
)

var (
	pg *pgtest.Postgres
	// loops are shared by every proxy in the tests, as in the product.
	loops *proxy.EventLoops
)

func TestMain(m *testing.M) {
	if runtime.GOOS == "linux" {
		var err error
		if loops, err = proxy.NewEventLoops(0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	pgtest.Main(m, pgtest.Options{}, &pg)
}

// instance is one pgchaos proxy under test, with its own metrics.
type instance struct {
	*proxy.Proxy
	gatherer *prometheus.Registry
	registry *proxy.Registry
}

// startProxy runs a proxy on a free port in front of upstream until the test ends.
func startProxy(t testing.TB, upstream string, mod func(*proxy.Config)) *instance {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := proxy.Config{
		Name:     "pg",
		Listen:   "127.0.0.1:0",
		Upstream: upstream,
		Logger:   testLogger(t),
		Metrics:  proxy.NewMetrics(reg),
		Registry: proxy.NewRegistry(),
		Loops:    loops,
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatalf("new proxy: %v", err)
	}
	if err := p.Start(); err != nil {
		t.Fatalf("start proxy: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return &instance{Proxy: p, gatherer: reg, registry: cfg.Registry}
}

func (in *instance) addr() string { return in.Addr().String() }

// metric sums the samples of a counter or gauge whose labels include want.
func (in *instance) metric(t testing.TB, name string, want map[string]string) float64 {
	t.Helper()
	families, err := in.gatherer.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

// topology is a way of placing pgchaos in front of Postgres. Clients that
// need session state (prepared statements, LISTEN) connect to session; the
// transaction-pooled address is where PgBouncer runs in transaction mode
// (the same as session when there is no PgBouncer).
type topology struct {
	name        string
	session     string
	transaction string
	pgbouncer   bool
	// chaos is the pgchaos proxy that sees the session address's traffic.
	chaos *instance
	// clientFacing: clients talk to pgchaos directly (so TLS termination applies).
	clientFacing bool
}

var (
	bouncerOnce sync.Once
	bouncerErr  error
	topologies  []*topology
)

// allTopologies builds, once per test binary, the three placements the
// compatibility suite runs in. PgBouncer failures fail in CI and skip elsewhere.
func allTopologies(t *testing.T) []*topology {
	t.Helper()
	bouncerOnce.Do(func() {
		// The topologies outlive the test that first asks for them, so they
		// get a testing.TB that never ends: a background cleanup list.
		bg := &background{}
		direct := startProxy(bg, pg.Addr(), nil)
		topologies = append(topologies, &topology{name: "direct", session: direct.addr(), transaction: direct.addr(), chaos: direct, clientFacing: true})

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		bS, err := pgtest.StartPgBouncer(ctx, pgtest.PgBouncerOptions{Upstream: pg.Addr(), PoolMode: "session"})
		if err != nil {
			bouncerErr = err
			return
		}
		bg.add(func() { bS.Stop() })
		bT, err := pgtest.StartPgBouncer(ctx, pgtest.PgBouncerOptions{Upstream: pg.Addr(), PoolMode: "transaction"})
		if err != nil {
			bouncerErr = err
			return
		}
		bg.add(func() { bT.Stop() })
		inFrontS := startProxy(bg, bS.Addr(), nil)
		inFrontT := startProxy(bg, bT.Addr(), nil)
		topologies = append(topologies, &topology{name: "pgchaos-pgbouncer", session: inFrontS.addr(), transaction: inFrontT.addr(), pgbouncer: true, chaos: inFrontS, clientFacing: true})

		behind := startProxy(bg, pg.Addr(), nil)
		b2S, err := pgtest.StartPgBouncer(ctx, pgtest.PgBouncerOptions{Upstream: behind.addr(), PoolMode: "session"})
		if err != nil {
			bouncerErr = err
			return
		}
		bg.add(func() { b2S.Stop() })
		b2T, err := pgtest.StartPgBouncer(ctx, pgtest.PgBouncerOptions{Upstream: behind.addr(), PoolMode: "transaction"})
		if err != nil {
			bouncerErr = err
			return
		}
		bg.add(func() { b2T.Stop() })
		topologies = append(topologies, &topology{name: "pgbouncer-pgchaos", session: b2S.Addr(), transaction: b2T.Addr(), pgbouncer: true, chaos: behind})
		backgrounds = append(backgrounds, bg)
	})
	if bouncerErr != nil {
		pgtest.Unavailable(t, fmt.Errorf("start PgBouncer: %w", bouncerErr))
	}
	return topologies
}

var backgrounds []*background

// background is a testing.TB for fixtures shared by many tests. Its
// cleanups run when the process exits (pgtest.Main stops Postgres, which
// ends every session anyway).
type background struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
}

func (b *background) add(f func())     { b.mu.Lock(); b.cleanups = append(b.cleanups, f); b.mu.Unlock() }
func (b *background) Cleanup(f func()) { b.add(f) }
func (b *background) Helper()          {}
func (b *background) Name() string     { return "background" }
func (b *background) Fatalf(f string, a ...any) {
	panic(fmt.Sprintf("test fixture: "+f, a...))
}
func (b *background) Logf(f string, a ...any) {
	if os.Getenv("PGCHAOS_TEST_LOG") != "" {
		fmt.Fprintf(os.Stderr, f+"\n", a...)
	}
}

var dbCounter atomic.Int64

// newDatabase creates a database of the test's own, so tests never see
// each other's tables.
func newDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%s", dbCounter.Add(1), strings.ToLower(strings.NewReplacer("/", "_", "-", "_", " ", "_").Replace(t.Name())))
	if len(name) > 60 {
		name = name[:60]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.CreateDatabase(ctx, name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return name
}

// testLogger sends the proxy's log to the test log, so a failing test shows
// what the proxy saw.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// selfSignedTLS makes a server certificate for 127.0.0.1/localhost.
func selfSignedTLS(t testing.TB) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pgchaos test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}
