package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/explore"
)

const exploreUsage = `Usage:
  pgchaos explore EXPERIMENT.yaml [--budget 10m] [--report-dir DIR] [--parallel N]
                  [--seed N] [--var KEY=VALUE]...

Finds the faults that break an application. A clean run through the proxy
learns the fault points (each distinct statement, a new connection, an idle
session); then each trial arms one fault at one point on a fresh copy of
the database, runs the application (the experiment's workloads) and judges
it with the experiment's verifiers and liveness. The file needs an explore
section and target.embedded.

Writes the failure-mode table as explore.md, explore.json, explore.junit.xml
and explore.html, and a reproducer repro/POINT-FAULT.yaml for every broken
cell (pgchaos run runs it). Exit status: 0 nothing broke, 1 a cell broke,
2 invalid file or arguments, 3 the setup or the clean run failed,
130 interrupted.
`

func runExplore(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("pgchaos explore", stderr, exploreUsage)
	budget := flags.Duration("budget", 0, "stop starting trials after this long (default: the file's explore.budget, else 10m)")
	reportDir := flags.String("report-dir", "", "write the table, its reports and the reproducers here (default: explore-NAME)")
	parallel := flags.Int("parallel", 1, "trials at once, each on its own database")
	seed := flags.Int64("seed", 0, "seed for rule probabilities")
	pgBinDir := flags.String("pg-bindir", "", "PostgreSQL binaries (default: pg_config --bindir)")
	varFlags := flags.StringArray("var", nil, "set ${var:KEY}, as KEY=VALUE (repeatable)")
	verbose := flags.Bool("verbose", false, "log what the proxies and workloads do")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() != 1 {
		return errUsage{errors.New("explore: give one experiment file")}
	}
	if *parallel < 1 {
		return errUsage{fmt.Errorf("explore: --parallel %d: want 1 or more", *parallel)}
	}
	if *budget < 0 {
		return errUsage{fmt.Errorf("explore: --budget %s: want a positive duration", *budget)}
	}
	vars, err := parseVars("explore", *varFlags)
	if err != nil {
		return err
	}
	path := flags.Arg(0)
	src, err := os.ReadFile(path)
	if err != nil {
		return errUsage{fmt.Errorf("explore: %w", err)}
	}
	exp, err := experiments.Parse(src, path, vars, os.LookupEnv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errUsage{errors.New("explore: the experiment file has problems")}
	}
	if exp.Explore == nil {
		return errUsage{fmt.Errorf("explore: %s has no explore section (see docs/explore.md)", path)}
	}
	dir := *reportDir
	if dir == "" {
		dir = "explore-" + exp.Name
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var names []string
	for k := range vars {
		names = append(names, k)
	}
	sort.Strings(names)
	rep := explore.Run(ctx, exp, explore.Options{Out: stdout, Logger: logger(stderr, *verbose), PGBinDir: *pgBinDir,
		Budget: *budget, Parallel: *parallel, Seed: *seed, Vars: names})
	if err := explore.WriteReports(dir, rep, exp, src); err != nil {
		fmt.Fprintf(stderr, "pgchaos: writing the reports to %s: %v\n", dir, err)
	}
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, explore.Markdown(rep))
	fmt.Fprintf(stdout, "\nReports in %s (%s, %s, %s, %s)\n", dir, explore.FileMarkdown, explore.FileJSON, explore.FileJUnit, explore.FileHTML)
	if code := rep.ExitCode(); code != 0 {
		return exitError{code}
	}
	return nil
}
