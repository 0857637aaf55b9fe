package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
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
