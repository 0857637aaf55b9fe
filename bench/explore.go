package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/explore"
)

// exploreApp is an application of ten distinct statements, written as a
// careful one is (one transaction under an idempotency key, retried, each
// attempt bounded, sessions left mid-transaction ended by the server), so
// that every trial runs it to its end.
const exploreApp = `#!/bin/sh
export PGOPTIONS="-c idle_in_transaction_session_timeout=2s"
order() {
  timeout 3 psql "$PGCHAOS_DSN" -qX -v ON_ERROR_STOP=1 <<'SQL'
BEGIN;
INSERT INTO orders (id, customer, total) VALUES ('o-1', 7, 30);
SELECT balance FROM accounts WHERE customer = 7 FOR UPDATE;
UPDATE accounts SET balance = balance - 30 WHERE customer = 7;
UPDATE stock SET qty = qty - 3 WHERE item = 'apple';
INSERT INTO ledger (order_id, amount) VALUES ('o-1', -30);
INSERT INTO audit (what) VALUES ('order o-1 placed');
UPDATE customers SET orders = orders + 1 WHERE id = 7;
DELETE FROM carts WHERE customer = 7;
COMMIT;
SQL
}
placed() {
  [ "$(timeout 3 psql "$PGCHAOS_DSN" -qAtX -c "SELECT count(*) FROM orders WHERE id = 'o-1'")" = 1 ]
}
for attempt in 1 2 3 4 5 6; do
  order && exit 0
  placed && exit 0
  sleep 0.2
done
exit 1
`

const exploreExperiment = `name: bench-explore
target: {embedded: {}}
proxies: [{name: app, upstream: target}]
setup:
  - sql: |
      CREATE TABLE orders (id text PRIMARY KEY, customer int, total int);
      CREATE TABLE accounts (customer int PRIMARY KEY, balance int);
      CREATE TABLE stock (item text PRIMARY KEY, qty int);
      CREATE TABLE ledger (order_id text, amount int);
      CREATE TABLE audit (what text);
      CREATE TABLE customers (id int PRIMARY KEY, orders int);
      CREATE TABLE carts (customer int);
      INSERT INTO accounts VALUES (7, 100); INSERT INTO stock VALUES ('apple', 10);
      INSERT INTO customers VALUES (7, 0); INSERT INTO carts VALUES (7);
workloads:
  - {name: app, type: exec, command: ./app.sh, through: app}
verify:
  - {name: placed once, type: sql, sql: "SELECT count(*) FROM orders", expect: {equals: 1}}
  - {name: charged once, type: sql, sql: "SELECT balance FROM accounts", expect: {equals: 70}}
explore:
  deadline: 15s
`

type exploreConfig struct {
	parallel []int
	pgBinDir string
}

func parseExploreFlags(args []string) (exploreConfig, error) {
	cfg := exploreConfig{}
	fs := flag.NewFlagSet("bench explore", flag.ContinueOnError)
	parallel := fs.String("parallel", "1,2", "comma-separated --parallel values, one full exploration each")
	fs.StringVar(&cfg.pgBinDir, "pg-bindir", "", "PostgreSQL binaries (default: pg_config --bindir)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	for _, p := range strings.Split(*parallel, ",") {
		var n int
		if _, err := fmt.Sscan(p, &n); err != nil || n < 1 {
			return cfg, fmt.Errorf("--parallel %q: want numbers of 1 or more", *parallel)
		}
		cfg.parallel = append(cfg.parallel, n)
	}
	return cfg, nil
}

// runExplore explores the ten-statement application with the default
// fault kinds once per --parallel value, and prints trials per minute.
func runExplore(ctx context.Context, cfg exploreConfig, out io.Writer) error {
	dir, err := os.MkdirTemp("", "pgchaos-bench-explore-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "app.sh"), []byte(exploreApp), 0o755); err != nil {
		return err
	}
	exp, err := experiments.Parse([]byte(exploreExperiment), "bench-explore.yaml", nil, nil)
	if err != nil {
		return err
	}
	// The app's command is relative, as a user's is: run from its folder.
	wd, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		return err
	}
	defer os.Chdir(wd)
	fmt.Fprintf(out, "%-9s %7s %7s %6s %6s %12s %12s\n", "parallel", "trials", "points", "held", "broke", "time", "trials/min")
	for _, p := range cfg.parallel {
		start := time.Now()
		rep := explore.Run(ctx, exp, explore.Options{Parallel: p, PGBinDir: cfg.pgBinDir})
		if rep.Problem != "" {
			return fmt.Errorf("explore: %s", rep.Problem)
		}
		fmt.Fprintf(out, "%-9d %7d %7d %6d %6d %12s %12.1f\n", p, len(rep.Cells), len(rep.Points), rep.Counts[explore.StatusHeld],
			rep.Counts[explore.StatusBroke], time.Since(start).Round(100*time.Millisecond), rep.TrialsPerMinute)
		if n := rep.Counts[explore.StatusHeld]; n != len(rep.Cells) {
			return fmt.Errorf("%d of %d cells held: the application is meant to survive every fault:\n%s", n, len(rep.Cells), explore.Markdown(rep))
		}
	}
	return nil
}
