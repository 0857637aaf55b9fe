package server_test

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"

	"github.com/pgchaos/pgchaos/internal/buildinfo"
)

// A process that creates and deletes proxies and rules all day keeps no
// series for the gone ones: their memory would grow without bound.
func TestMetricsForgetGoneProxiesAndRules(t *testing.T) {
	_, client, api := startEmpty(t)
	ctx := testCtx(t)
	// A rule for every proxy, kept throughout: its series of each proxy
	// go with that proxy.
	send(t, "POST", api+"/rules", `{"name": "everywhere", "match": {"sql": "everywhere"}, "action": {"type": "delay", "delay": "1ms"}}`, 201)
	for i := range 5 {
		name := fmt.Sprintf("gone%d", i)
		p, err := client.CreateProxy(name, "127.0.0.1:0", pg.Addr())
		if err != nil {
			t.Fatal(err)
		}
		rule := fmt.Sprintf(`{"name": "rule-%d", "match": {"sql": "marker"}, "action": {"type": "delay", "delay": "1ms"}}`, i)
		send(t, "POST", api+"/rules", rule, 201)
		conn := connect(t, ctx, p.Listen, "postgres")
		mustExec(t, ctx, conn, "SELECT 'marker', 'everywhere'")
		conn.Close(context.Background())
		send(t, "DELETE", fmt.Sprintf("%s/rules/rule-%d", api, i), "", 204)
		if err := p.Delete(); err != nil {
			t.Fatal(err)
		}
	}
	// A create that fails (its port is taken) leaves nothing behind either.
	keep, err := client.CreateProxy("kept", "127.0.0.1:0", pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CreateProxy("failed", keep.Listen, pg.Addr()); err == nil {
		t.Fatal("a proxy on a port in use was created")
	}
	metrics := get(t, api+"/metrics", http.StatusOK, nil)
	for _, gone := range []string{`proxy="gone`, `rule="rule-`, `proxy="failed"`} {
		if strings.Contains(metrics, gone) {
			t.Errorf("/metrics still has series with %s", gone)
		}
	}
	if !strings.Contains(metrics, `pgchaos_sessions_total{proxy="kept"}`) {
		t.Error("/metrics lost the series of a proxy that is still there")
	}
}

// metricValue is the value of one series in a /metrics page (labels as
// Prometheus prints them, sorted by name), or -1 when it is not there.
func metricValue(page, series string) float64 {
	for line := range strings.Lines(page) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return -1
}

// A byte toxic fires once for each session stream it is applied to, not
// per message or chunk: when a session's stream starts under it, and
// again when the set of toxics on that stream changes while the session
// runs (each toxic of the new set is a fresh instance).
func TestMetricsByteToxicFiresPerStream(t *testing.T) {
	_, client, api := startEmpty(t)
	ctx := testCtx(t)
	p, err := client.CreateProxy("pg", "127.0.0.1:0", pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.AddToxic("lat", "latency", "downstream", 1.0, toxiproxy.Attributes{"latency": 1}); err != nil {
		t.Fatal(err)
	}
	lat := `pgchaos_fault_fired_total{action="latency",proxy="pg",rule="lat"}`
	latMatched := `pgchaos_fault_matched_total{proxy="pg",rule="lat"}`
	if v := metricValue(get(t, api+"/metrics", http.StatusOK, nil), lat); v != 0 {
		t.Fatalf("%s = %v before any session, want 0", lat, v)
	}
	a := connect(t, ctx, p.Listen, "postgres")
	for range 5 {
		mustExec(t, ctx, a, "SELECT 1")
	}
	page := get(t, api+"/metrics", http.StatusOK, nil)
	if v := metricValue(page, lat); v != 1 {
		t.Errorf("one session, five queries: %s = %v, want 1", lat, v)
	}
	if v := metricValue(page, latMatched); v != 1 {
		t.Errorf("one session: %s = %v, want 1", latMatched, v)
	}
	b := connect(t, ctx, p.Listen, "postgres")
	mustExec(t, ctx, b, "SELECT 1")
	b.Close(ctx)
	if v := metricValue(get(t, api+"/metrics", http.StatusOK, nil), lat); v != 2 {
		t.Errorf("two sessions: %s = %v, want 2", lat, v)
	}
	if _, err := p.AddToxic("slice", "slicer", "downstream", 1.0, toxiproxy.Attributes{"average_size": 8}); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, a, "SELECT 1")
	page = get(t, api+"/metrics", http.StatusOK, nil)
	if v := metricValue(page, lat); v != 3 {
		t.Errorf("a toxic added to a running session's stream: %s = %v, want 3", lat, v)
	}
	if v := metricValue(page, `pgchaos_fault_fired_total{action="slicer",proxy="pg",rule="slice"}`); v != 1 {
		t.Errorf("slicer on one running session: fired %v, want 1", v)
	}
}

// countSeries counts the series of a /metrics page (its lines that are
// not comments), all of them and pgchaos's own.
func countSeries(page string) (all, own int) {
	for line := range strings.Lines(page) {
		if line == "\n" || strings.HasPrefix(line, "#") {
			continue
		}
		all++
		if strings.HasPrefix(line, "pgchaos_") {
			own++
		}
	}
	return all, own
}

// A hundred proxies created, used (a session, a rule of their own that
// fires, a rule for every proxy) and deleted leave the series as they
// were: the count stays flat however long the process runs.
func TestMetricsSeriesAfter100Cycles(t *testing.T) {
	_, client, api := startEmpty(t)
	ctx := testCtx(t)
	send(t, "POST", api+"/rules", `{"name": "everywhere", "match": {"sql": "everywhere"}, "action": {"type": "delay", "delay": "1ms"}}`, 201)
	kept, err := client.CreateProxy("kept", "127.0.0.1:0", pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	conn := connect(t, ctx, kept.Listen, "postgres")
	mustExec(t, ctx, conn, "SELECT 'everywhere'")
	conn.Close(ctx)
	waitSessions(t, api, "kept", 0)
	before, ownBefore := countSeries(get(t, api+"/metrics", http.StatusOK, nil))

	for i := range 100 {
		name := fmt.Sprintf("cycle%d", i)
		p, err := client.CreateProxy(name, "127.0.0.1:0", pg.Addr())
		if err != nil {
			t.Fatal(err)
		}
		send(t, "POST", api+"/rules", fmt.Sprintf(`{"name": "rule-%d", "proxy": %q, "match": {"sql": "marker"}, "action": {"type": "delay", "delay": "1ms"}}`, i, name), 201)
		conn := connect(t, ctx, p.Listen, "postgres")
		mustExec(t, ctx, conn, "SELECT 'marker', 'everywhere'")
		conn.Close(ctx)
		if err := p.Delete(); err != nil {
			t.Fatal(err)
		}
	}
	page := get(t, api+"/metrics", http.StatusOK, nil)
	after, ownAfter := countSeries(page)
	t.Logf("series on /metrics: %d before 100 proxy create/delete cycles, %d after (pgchaos_*: %d before, %d after)", before, after, ownBefore, ownAfter)
	if ownAfter != ownBefore || after != before {
		t.Errorf("series: %d before, %d after (pgchaos_*: %d, %d): the gone proxies and rules left some", before, after, ownBefore, ownAfter)
	}
	if v := metricValue(page, `pgchaos_fault_fired_total{action="delay",proxy="kept",rule="everywhere"}`); v != 1 {
		t.Errorf("the kept proxy's fired count is %v, want 1", v)
	}
}

// waitSessions waits until the proxy relays n sessions, as its gauge says.
func waitSessions(t *testing.T, api, proxy string, n int) {
	t.Helper()
	series := fmt.Sprintf(`pgchaos_sessions_active{proxy=%q}`, proxy)
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(get(t, api+"/metrics", http.StatusOK, nil), series) != float64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never came to %d", series, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Each connect to the upstream, a session's or a forwarded cancel's, is
// timed once.
func TestMetricsUpstreamConnectSeconds(t *testing.T) {
	_, api, ctx, conn := withSession(t)
	count := `pgchaos_upstream_connect_seconds_count{proxy="pg"}`
	if v := metricValue(get(t, api+"/metrics", http.StatusOK, nil), count); v != 1 {
		t.Errorf("one session: %s = %v, want 1", count, v)
	}
	// A cancel of a statement that sleeps: pgx sends a CancelRequest on a
	// connection of its own when the context ends.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := conn.Exec(short, "SELECT pg_sleep(5)"); err == nil {
		t.Fatal("pg_sleep(5) was not cancelled")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		page := get(t, api+"/metrics", http.StatusOK, nil)
		// One scrape is no snapshot: its metrics are collected one after
		// another, so the connect may show on the next one.
		if metricValue(page, `pgchaos_cancel_requests_total{proxy="pg"}`) == 1 && metricValue(page, count) >= 2 {
			if v := metricValue(page, count); v != 2 {
				t.Errorf("a session and a cancel: %s = %v, want 2", count, v)
			}
			if v := metricValue(page, `pgchaos_upstream_connect_seconds_sum{proxy="pg"}`); v <= 0 || v > 10 {
				t.Errorf("two connects took %v s in all", v)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cancel was never forwarded, or its connect never timed: %s = %v", count, metricValue(page, count))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Dashboards and alerts tell builds apart by pgchaos_build_info's labels.
func TestMetricsBuildInfo(t *testing.T) {
	_, _, api := startEmpty(t)
	info := buildinfo.Get()
	want := fmt.Sprintf(`pgchaos_build_info{commit=%q,goversion=%q,version=%q} 1`, info.Commit, info.GoVersion, info.Version)
	if metrics := get(t, api+"/metrics", http.StatusOK, nil); !strings.Contains(metrics, "\n"+want+"\n") {
		t.Errorf("/metrics has no %s", want)
	}
	if info.GoVersion != runtime.Version() {
		t.Errorf("goversion %q, want %q", info.GoVersion, runtime.Version())
	}
}
