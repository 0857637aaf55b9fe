package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/server"
)

// A fired rule's event shows the statement without its constants unless
// log_sql is full.
func TestEventsRedactSQL(t *testing.T) {
	const query = `SELECT 'TopSecret123' AS password, 42 AS n`
	for _, tc := range []struct {
		logSQL string
		want   string
	}{
		{"", `SELECT $1 AS password, $2 AS n`},
		{server.LogSQLRedacted, `SELECT $1 AS password, $2 AS n`},
		{server.LogSQLFull, query},
	} {
		t.Run("log_sql="+tc.logSQL, func(t *testing.T) {
			s := start(t, server.Config{API: "127.0.0.1:0", LogSQL: tc.logSQL, Proxies: []server.ProxyConfig{{Name: "pg", Listen: "127.0.0.1:0", Upstream: pg.Addr()}}})
			api := "http://" + s.APIAddr().String()
			send(t, "POST", api+"/rules", `{"name": "slow-password", "match": {"sql": "AS password"}, "action": {"type": "delay", "delay": "1ms"}}`, 201)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, pgtest.ConnString(s.Proxies()[0].Addr().String(), pgtest.SuperUser, "", "postgres"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, query); err != nil {
				t.Fatal(err)
			}
			waitFired(t, api, "slow-password", 1)
			var events []faults.Event
			get(t, api+"/events", 200, &events)
			if len(events) != 1 || !strings.Contains(events[0].Message, tc.want) {
				t.Fatalf("events: %+v, want the SQL shown as %s", events, tc.want)
			}
			if tc.logSQL != server.LogSQLFull && strings.Contains(events[0].Message, "TopSecret123") {
				t.Fatalf("the event shows the constant: %s", events[0].Message)
			}
		})
	}
}
