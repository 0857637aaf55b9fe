package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/proxy"
	"github.com/pgchaos/pgchaos/server"
)

// Each query parameter of the control API does what docs/faults.md and
// the README say: ?limit on /events, ?proxy on /sessions and on /rules.
func TestAPIParameters(t *testing.T) {
	s := start(t, server.Config{API: "127.0.0.1:0", Proxies: []server.ProxyConfig{
		{Name: "a", Listen: "127.0.0.1:0", Upstream: pg.Addr()},
		{Name: "b", Listen: "127.0.0.1:0", Upstream: pg.Addr()},
	}})
	api := "http://" + s.APIAddr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conns := map[string]*pgx.Conn{}
	for i, name := range []string{"a", "b"} {
		conn, err := pgx.Connect(ctx, pgtest.ConnString(s.Proxies()[i].Addr().String(), pgtest.SuperUser, "", "postgres")+"&application_name=on_"+name)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		conns[name] = conn
	}

	// GET /sessions?proxy=NAME: only that proxy's sessions.
	for _, name := range []string{"a", "b"} {
		var list []proxy.SessionInfo
		get(t, api+"/sessions?proxy="+name, 200, &list)
		if len(list) != 1 || list[0].Proxy != name || list[0].ApplicationName != "on_"+name {
			t.Errorf("/sessions?proxy=%s: %+v", name, list)
		}
	}
	var all []proxy.SessionInfo
	get(t, api+"/sessions", 200, &all)
	if len(all) != 2 {
		t.Errorf("/sessions: %d sessions, want 2", len(all))
	}

	// Rules: one for every proxy, and one named "same" on each proxy.
	send(t, "POST", api+"/rules", `{"name": "every", "match": {"sql": "^select 7$"}, "action": {"type": "error", "sqlstate": "40001"}}`, 201)
	send(t, "POST", api+"/rules", `{"name": "same", "proxy": "a", "match": {"sql": "^select 8$"}, "action": {"type": "error", "sqlstate": "42501"}}`, 201)
	// PUT /rules/{name}?proxy=NAME puts the rule on that proxy.
	send(t, "PUT", api+"/rules/same?proxy=b", `{"match": {"sql": "^select 8$"}, "action": {"type": "error", "sqlstate": "53300"}}`, 200)
	if bad := send(t, "PUT", api+"/rules/same?proxy=nope", `{"action": {"type": "drop"}}`, 400); bad["field"] != "proxy" {
		t.Errorf("PUT ?proxy=nope: %v", bad)
	}
	if _, err := s.Faults.Get("b", "same"); err != nil {
		t.Fatalf("PUT /rules/same?proxy=b did not make b's rule: %v", err)
	}
	// GET /rules?proxy=NAME: that proxy's rules and those of every proxy.
	for _, name := range []string{"a", "b"} {
		var rules []faults.RuleStatus
		get(t, api+"/rules?proxy="+name, 200, &rules)
		var got []string
		for _, r := range rules {
			got = append(got, r.Name+"@"+r.Proxy)
		}
		if want := "every@,same@" + name; strings.Join(got, ",") != want {
			t.Errorf("/rules?proxy=%s: %v, want %s", name, got, want)
		}
	}
	// GET /rules/{name}?proxy=NAME: that proxy's rule of the name.
	for name, state := range map[string]string{"a": "42501", "b": "53300"} {
		st := send(t, "GET", api+"/rules/same?proxy="+name, "", 200)
		if st["proxy"] != name || st["action"].(map[string]any)["sqlstate"] != state {
			t.Errorf("/rules/same?proxy=%s: %v", name, st)
		}
	}
	send(t, "GET", api+"/rules/same", "", 404) // no rule "same" for every proxy

	// The rules act where they say: each proxy's own "same".
	for name, state := range map[string]string{"a": "42501", "b": "53300"} {
		if _, err := conns[name].Exec(ctx, "select 8"); err == nil || !strings.Contains(err.Error(), state) {
			t.Errorf("select 8 through %s: %v, want %s", name, err, state)
		}
	}
	// DELETE /rules/{name}?proxy=NAME removes only that proxy's rule.
	send(t, "DELETE", api+"/rules/same?proxy=a", "", 204)
	if _, err := s.Faults.Get("a", "same"); err == nil {
		t.Error("a's rule is still there")
	}
	if _, err := s.Faults.Get("b", "same"); err != nil {
		t.Errorf("b's rule went with a's: %v", err)
	}
	send(t, "DELETE", api+"/rules/same?proxy=a", "", 404)

	// GET /events?limit=N: the last N fired faults, oldest first.
	for range 5 {
		if _, err := conns["a"].Exec(ctx, "select 7"); err == nil {
			t.Fatal("the rule for every proxy did not fire")
		}
	}
	var every []faults.Event
	get(t, api+"/events?limit=0", 200, &every)
	var unlimited []faults.Event
	get(t, api+"/events", 200, &unlimited)
	if len(every) != 7 || len(unlimited) != 7 {
		t.Fatalf("%d events with limit=0, %d without; want the 2 of select 8 and the 5 of select 7", len(every), len(unlimited))
	}
	var last []faults.Event
	get(t, api+"/events?limit=2", 200, &last)
	if len(last) != 2 || !last[0].Time.Equal(every[5].Time) || !last[1].Time.Equal(every[6].Time) || !last[0].Time.Before(last[1].Time) {
		t.Errorf("/events?limit=2: %+v; want the last two of %+v", last, every)
	}
	for _, bad := range []string{"-1", "two"} {
		if e := send(t, "GET", api+"/events?limit="+bad, "", 400); !strings.Contains(fmt.Sprint(e["error"]), bad) {
			t.Errorf("/events?limit=%s: %v", bad, e)
		}
	}
}
