package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/internal/pgtest"
	"github.com/pgchaos/pgchaos/server"
)

var pg *pgtest.Postgres

func TestMain(m *testing.M) { pgtest.Main(m, pgtest.Options{}, &pg) }

const (
	nOrders = 3
	// seeded is the stock the schema starts with, which orders only move.
	seeded = 200
	// liveness is the trial deadline pgchaos explore gives the app.
	liveness = 15 * time.Second
	runID    = "trial"
)

// What a trial can find wrong, as the explorer's verifiers would.
const (
	brokeLiveness = "liveness"  // did not finish within the deadline
	brokeExit     = "exit"      // finished with a non-zero status
	brokeCount    = "count"     // not exactly nOrders orders
	brokeSum      = "sum"       // stock + ordered != seeded
	brokeDup      = "duplicate" // an order placed under an id not its own
)

// The statements the app sends, as match.sql regexes, and the command tags
// of their answers.
var statements = []struct{ name, sql, tag string }{
	{"BEGIN", `^BEGIN$`, "BEGIN"},
	{"INSERT", `^INSERT INTO orders`, "INSERT"},
	{"UPDATE", `^UPDATE stock`, "UPDATE"},
	{"COMMIT", `^COMMIT$`, "COMMIT"},
}

// Fault builders: one rule each, firing once.
func onSQL(sql string, a faults.Action) faults.Rule {
	return faults.Rule{Name: "fault", Match: faults.Match{SQL: sql}, Action: a, Limits: faults.Limits{Times: 1}}
}

func onTag(tag string, a faults.Action) faults.Rule {
	return faults.Rule{Name: "fault", Match: faults.Match{Tag: tag}, Action: a, Limits: faults.Limits{Times: 1}}
}

func refuse(a faults.Action) faults.Rule {
	a.Type = "refuse"
	return faults.Rule{Name: "fault", Match: faults.Match{Event: "connect"}, Action: a, Limits: faults.Limits{Times: 1}}
}

// idleCut closes the connection just after the server said it is idle
// again after the first COMMIT (skipping the ReadyForQuery that ends the
// startup): between two transactions, where the app notices only when it
// sends the next BEGIN.
func idleCut() faults.Rule {
	return faults.Rule{
		Name:   "fault",
		Match:  faults.Match{Message: faults.StringList{"ready_for_query"}, TxStatus: faults.StringList{"idle"}},
		Action: faults.Action{Type: "disconnect", When: "after"},
		Limits: faults.Limits{Skip: 1, Times: 1},
	}
}

func errBefore(code, severity string) faults.Action {
	return faults.Action{Type: "error", SQLState: code, Severity: severity}
}

func errAfter(code, severity string) faults.Action {
	return faults.Action{Type: "error", When: "after", SQLState: code, Severity: severity}
}

var (
	disconnectBefore = faults.Action{Type: "disconnect"}
	disconnectAfter  = faults.Action{Type: "disconnect", When: "after"}
	hang             = faults.Action{Type: "hang"}
	delay1s          = faults.Action{Type: "delay", Delay: faults.Duration(time.Second)}
	delay1ms         = faults.Action{Type: "delay", Delay: faults.Duration(time.Millisecond)}
)

// TestShop builds the app once and runs it through the proxy: every mode
// without a fault, each planted mistake under the fault that reveals it
// (next to the correct version under the same fault), and the correct
// version under every fault it claims to survive.
func TestShop(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "shop")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// The SQL text on the wire, which rules and fingerprints are aimed at
	// (the package comment shows it): one order whose COMMIT is in doubt,
	// so that the retry's lookup shows too. A 1 ms delay on every
	// statement records the others.
	t.Run("wire", func(t *testing.T) {
		t.Parallel()
		all := faults.Rule{Name: "every-statement", Match: faults.Match{SQL: "."}, Action: delay1ms}
		broke, events := run(t, bin, []string{"-orders", "1"}, "", []faults.Rule{onSQL(`^COMMIT$`, errAfter("08006", "FATAL")), all})
		if len(broke) > 0 {
			t.Errorf("broke %v", broke)
		}
		var got []string
		for _, e := range events {
			got = append(got, e.Message)
		}
		want := []string{
			`query "BEGIN"`,
			`query "INSERT INTO orders (id, item, qty) VALUES ( 'trial-1' ,  'apple' ,  '1' )"`,
			`query "UPDATE stock SET qty = qty -  '1'  WHERE item =  'apple' "`,
			`query "COMMIT"`,
			`query "SELECT 1 FROM orders WHERE id =  'trial-1' "`,
		}
		if !slices.Equal(got, want) {
			t.Errorf("statements sent:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})

	t.Run("no-fault", func(t *testing.T) {
		for _, m := range append([]string{""}, mistakes...) {
			t.Run(cmp.Or(m, "correct"), func(t *testing.T) {
				t.Parallel()
				if got := trial(t, bin, m, nil); len(got) > 0 {
					t.Errorf("without a fault: broke %v", got)
				}
			})
		}
	})

	t.Run("reveals", func(t *testing.T) {
		reveals := []struct {
			mistake, fault string
			rule           faults.Rule
			breaks         []string
		}{
			// An in-doubt COMMIT, three ways: the server committed, the
			// client hears an error or nothing.
			{retryNewID, "COMMIT ran, then FATAL 08006", onSQL(`^COMMIT$`, errAfter("08006", "FATAL")), []string{brokeCount, brokeDup}},
			{retryNewID, "COMMIT ran, then ERROR 40001", onSQL(`^COMMIT$`, errAfter("40001", "")), []string{brokeCount, brokeDup}},
			{retryNewID, "cut in place of COMMIT's CommandComplete", onTag("COMMIT", disconnectBefore), []string{brokeCount, brokeDup}},
			{noRetry, "40001 before INSERT", onSQL(`^INSERT INTO orders`, errBefore("40001", "")), []string{brokeCount}},
			{noRetry, "cut before UPDATE", onSQL(`^UPDATE stock`, disconnectBefore), []string{brokeCount}},
			// BEGIN, not a statement inside the transaction: there the
			// server's idle_in_transaction_session_timeout ends the held
			// session and the app hears of it, deadline or not.
			{noDeadline, "BEGIN hangs", onSQL(`^BEGIN$`, hang), []string{brokeLiveness}},
			{splitTransaction, "cut before UPDATE", onSQL(`^UPDATE stock`, disconnectBefore), []string{brokeSum}},
			{splitTransaction, "40001 before UPDATE", onSQL(`^UPDATE stock`, errBefore("40001", "")), []string{brokeSum}},
			{noReconnect, "first connection closed at once", refuse(faults.Action{}), []string{brokeExit, brokeCount}},
			{noReconnect, "first connection refused with 57P03", refuse(faults.Action{SQLState: "57P03"}), []string{brokeExit, brokeCount}},
			{reuseFailedTx, "40001 before UPDATE", onSQL(`^UPDATE stock`, errBefore("40001", "")), []string{brokeExit, brokeCount}},
		}
		for _, rv := range reveals {
			for _, m := range []string{rv.mistake, ""} {
				t.Run(rv.mistake+"/"+rv.fault+"/"+cmp.Or(m, "correct"), func(t *testing.T) {
					t.Parallel()
					got := trial(t, bin, m, &rv.rule)
					want := slices.Sorted(slices.Values(rv.breaks))
					if m == "" {
						want = nil
					}
					if !slices.Equal(got, want) {
						t.Errorf("broke %v, want %v", got, want)
					}
				})
			}
		}
	})

	t.Run("survives", func(t *testing.T) {
		type fault struct {
			name string
			rule faults.Rule
		}
		var all []fault
		for _, st := range statements {
			for _, f := range []struct {
				name string
				a    faults.Action
			}{
				{"cut before", disconnectBefore},
				{"cut after", disconnectAfter},
				{"40001 before", errBefore("40001", "")},
				{"40P01 before", errBefore("40P01", "")},
				{"FATAL 57P01 before", errBefore("57P01", "FATAL")},
				{"08006 before", errBefore("08006", "")},
				{"40001 after", errAfter("40001", "")},
				{"FATAL 08006 after", errAfter("08006", "FATAL")},
				{"hang", hang},
				{"delay 1s", delay1s},
			} {
				all = append(all, fault{st.name + " " + f.name, onSQL(st.sql, f.a)})
			}
			all = append(all, fault{st.name + " answer cut", onTag(st.tag, disconnectBefore)})
		}
		all = append(all,
			fault{"first connection closed at once", refuse(faults.Action{})},
			fault{"first connection refused with 57P03", refuse(faults.Action{SQLState: "57P03"})},
			fault{"idle connection cut between transactions", idleCut()},
		)
		for _, f := range all {
			t.Run(f.name, func(t *testing.T) {
				t.Parallel()
				if got := trial(t, bin, "", &f.rule); len(got) > 0 {
					t.Errorf("correct version broke %v", got)
				}
			})
		}
	})
}

var dbSeq atomic.Int64

// trial runs the app in mode mistake against a fresh database behind a
// fresh proxy with rule (if any) in force, and returns what broke, sorted.
// It fails the test if the rule never fired: a fault that did not happen
// proves nothing.
func trial(t *testing.T, bin, mistake string, rule *faults.Rule) []string {
	t.Helper()
	var rules []faults.Rule
	if rule != nil {
		rules = append(rules, *rule)
	}
	broke, _ := run(t, bin, []string{"-orders", fmt.Sprint(nOrders)}, mistake, rules)
	return broke
}

// run is trial with the app's flags and any number of rules, the first of
// which must fire; it also returns the events of the rules that fired, with
// their SQL in full.
func run(t *testing.T, bin string, args []string, mistake string, rules []faults.Rule) ([]string, []faults.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), liveness+30*time.Second)
	defer cancel()

	db := fmt.Sprintf("shop_%d", dbSeq.Add(1))
	if err := pg.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	direct, err := pgx.Connect(ctx, pg.DSN(pgtest.SuperUser, "", db))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(context.Background())
	if _, err := direct.Exec(ctx, schema); err != nil {
		t.Fatalf("schema: %v", err)
	}

	cfg := server.Config{
		API: "127.0.0.1:0", Proxies: []server.ProxyConfig{{Name: "pg", Listen: "127.0.0.1:0", Upstream: pg.Addr()}},
		Rules: rules, LogSQL: server.LogSQLFull,
	}
	srv, err := server.Start(cfg, nil)
	if err != nil {
		t.Fatalf("start proxy: %v", err)
	}
	defer srv.Close()

	runCtx, stop := context.WithTimeout(ctx, liveness)
	defer stop()
	if mistake != "" {
		args = append(args, "-mistake", mistake)
	}
	cmd := exec.CommandContext(runCtx, bin, args...)
	// sslmode=disable (ConnString's): with pgx's default "prefer" a
	// refused first try would be retried in plain text within the same
	// Connect, hiding the refusal from the app.
	cmd.Env = append(cmd.Environ(),
		"PGCHAOS_DSN="+pgtest.ConnString(srv.Proxies()[0].Addr().String(), pgtest.SuperUser, "", db),
		"PGCHAOS_RUN_ID="+runID)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	runErr := cmd.Run()
	took := time.Since(start)
	t.Logf("%s in %v: %v\n%s", cmp.Or(mistake, "correct"), took.Round(time.Millisecond), runErr, out.String())

	if len(rules) > 0 {
		st, err := srv.Faults.Get("", rules[0].Name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Fired == 0 {
			t.Fatalf("rule %q never fired", rules[0].Name)
		}
	}
	events := srv.Faults.Events(0)
	if runCtx.Err() != nil {
		// Killed: what it left in the database says nothing more.
		return []string{brokeLiveness}, events
	}
	broke := map[string]bool{}
	var exitErr *exec.ExitError
	switch {
	case errors.As(runErr, &exitErr):
		broke[brokeExit] = true
	case runErr != nil:
		t.Fatalf("running the app: %v", runErr)
	}

	rows, _ := direct.Query(ctx, "SELECT id FROM orders ORDER BY id")
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var total int
	if err := direct.QueryRow(ctx, "SELECT (SELECT sum(qty) FROM stock) + (SELECT coalesce(sum(qty), 0) FROM orders)").Scan(&total); err != nil {
		t.Fatal(err)
	}
	if len(ids) != nOrdersOf(args) {
		broke[brokeCount] = true
	}
	if total != seeded {
		broke[brokeSum] = true
	}
	for _, id := range ids {
		if !isOrderID(id) {
			broke[brokeDup] = true
		}
	}
	if len(broke) > 0 {
		t.Logf("orders %v, stock+ordered %d", ids, total)
	}
	return slices.Sorted(maps.Keys(broke)), events
}

func nOrdersOf(args []string) int {
	if i := slices.Index(args, "-orders"); i >= 0 {
		n, _ := strconv.Atoi(args[i+1])
		return n
	}
	return 3 // the app's default
}

// isOrderID reports whether id is one the app gives an order on its first
// attempt; any other id is an order placed a second time.
func isOrderID(id string) bool {
	for i := 1; i <= nOrders; i++ {
		if id == fmt.Sprintf("%s-%d", runID, i) {
			return true
		}
	}
	return false
}
