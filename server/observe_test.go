package server_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/server"
)

// Config.Observe hears a session's statements — SQL, protocol (Query or
// Execute) and the transaction status each runs in — their tags and the
// ReadyForQuery ending each response, in order, with no rules; and the
// session's traffic is what it would be without it.
func TestObserve(t *testing.T) {
	var mu sync.Mutex
	var heard []string
	sessions := map[uint64]bool{}
	observe := func(proxy string, s *faults.Session, m *faults.Message) {
		var what string
		switch {
		case m.Dir == faults.ClientToServer && m.Type == 'Q':
			what = fmt.Sprintf("simple %c %s", s.TxStatus, m.SQL)
		case m.Dir == faults.ClientToServer && m.Type == 'E':
			what = fmt.Sprintf("extended %c %s", s.TxStatus, m.SQL)
		case m.Type == 'C':
			what = "tag " + string(m.Tag)
		case m.Type == 'Z':
			what = fmt.Sprintf("ready %c", s.TxStatus)
		default:
			what = fmt.Sprintf("%v %c", m.Dir, m.Type)
		}
		mu.Lock()
		heard = append(heard, proxy+": "+what)
		sessions[s.ID] = true
		mu.Unlock()
	}
	s := start(t, server.Config{API: "127.0.0.1:0", Observe: observe,
		Proxies: []server.ProxyConfig{{Name: "pg", Listen: "127.0.0.1:0", Upstream: pg.Addr()}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	direct, err := pgx.Connect(ctx, pg.DSN(pgtest.SuperUser, "", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(context.Background())
	table := fmt.Sprintf("observed_%d", time.Now().UnixNano())
	if _, err := direct.Exec(ctx, "CREATE TABLE "+table+" (id int)"); err != nil {
		t.Fatal(err)
	}
	defer direct.Exec(context.Background(), "DROP TABLE "+table)

	conn, err := pgx.Connect(ctx, pgtest.ConnString(s.Proxies()[0].Addr().String(), pgtest.SuperUser, "", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol).Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1: %d %v", one, err)
	}
	// Without arguments pgx sends BEGIN and COMMIT as simple queries; the
	// INSERT goes as Parse/Describe/Sync, then Bind/Execute/Sync.
	tags := []string{}
	for _, q := range []struct {
		sql  string
		args []any
	}{{"BEGIN", nil}, {"INSERT INTO " + table + " VALUES ($1)", []any{7}}, {"COMMIT", nil}} {
		tag, err := conn.Exec(ctx, q.sql, q.args...)
		if err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
		tags = append(tags, tag.String())
	}
	if want := []string{"BEGIN", "INSERT 0 1", "COMMIT"}; !slices.Equal(tags, want) {
		t.Fatalf("the client was told %v, want %v", tags, want)
	}
	var n int
	if err := direct.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE id = 7").Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows: %d %v", n, err)
	}

	want := []string{
		"ready I", // the end of the startup phase
		"simple I SELECT 1", "tag SELECT 1", "ready I",
		"simple I BEGIN", "tag BEGIN", "ready T", // a ReadyForQuery's own status
		"client_to_server S", "ready T", // the INSERT's Parse/Describe/Sync: no statement runs
		"extended T INSERT INTO " + table + " VALUES ($1)", "client_to_server S", "tag INSERT 0 1", "ready T",
		"simple T COMMIT", "tag COMMIT", "ready I",
	}
	for i := range want {
		want[i] = "pg: " + want[i]
	}
	// The last ReadyForQuery may still be on its way to the observer as
	// the client reads it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := slices.Clone(heard)
		nsess := len(sessions)
		mu.Unlock()
		if slices.Equal(got, want) {
			if nsess != 1 {
				t.Fatalf("heard %d sessions, want 1", nsess)
			}
			break
		}
		if len(got) > len(want) || time.Now().After(deadline) {
			t.Fatalf("the observer heard\n%q\nwant\n%q", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Observing alone keeps the session on its event loop.
	if list := s.Registry.Sessions(); len(list) != 1 || list[0].Relay != "loop" {
		t.Fatalf("sessions: %+v; want one, on an event loop", list)
	}
}
