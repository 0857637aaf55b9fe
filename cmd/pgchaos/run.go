package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/pgchaos/pgchaos/control"
	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/experiments/examples"
	"github.com/pgchaos/pgchaos/experiments/runner"
)

const runUsage = `Usage:
  pgchaos run EXPERIMENT.yaml [--embedded] [--report-dir DIR] [--junit FILE] [--json FILE]
              [--markdown FILE] [--html FILE] [--history FILE [--history-format jepsen]]
              [--seed N] [--var KEY=VALUE]... [--litmus-result]
  pgchaos demo

Runs an experiment: target and proxies up, workloads on, steady state checked,
the method's faults injected, recovery measured, verifiers judged, rollbacks
always run. Exit status: 0 pass, 1 a hypothesis or verifier failed, 2 invalid
file or arguments, 3 could not set up or reach the target, 130 interrupted
(after rollbacks). With --litmus-result (in a pod of Litmus's chaos-runner) the
verdict goes to the engine's ChaosResult, and the exit status is 0 once it is
recorded there.
`

// exitError carries a run's exit status out of run().
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func runRun(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("pgchaos run", stderr, runUsage)
	embedded := flags.Bool("embedded", false, "run against a throwaway local PostgreSQL, whatever the file's target")
	reportDir := flags.String("report-dir", "", "write report.json, junit.xml, summary.md and report.html here")
	junit := flags.String("junit", "", "write a JUnit XML report")
	jsonOut := flags.String("json", "", "write the JSON journal")
	markdown := flags.String("markdown", "", "write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)")
	htmlOut := flags.String("html", "", "write the HTML report: a timeline per workload, the faults shaded, then the checks")
	historyOut := flags.String("history", "", "write every operation, a JSON object per line")
	historyFormat := flags.String("history-format", runner.HistoryPgchaos, "--history's form: pgchaos, or jepsen (invoke/ok/fail/info events, for Elle-style checkers)")
	seed := flags.Int64("seed", 0, "seed for rule probabilities and jitter: a run's seed, from its report, draws the same faults (default: a random one)")
	pgBinDir := flags.String("pg-bindir", "", "PostgreSQL binaries for an embedded target (default: pg_config --bindir)")
	varFlags := flags.StringArray("var", nil, "set ${var:KEY}, as KEY=VALUE (repeatable)")
	verbose := flags.Bool("verbose", false, "log what the proxies do")
	litmus := flags.Bool("litmus-result", false, "create LitmusChaos's ChaosResult (CHAOSENGINE-EXPERIMENT_NAME) through the API server and record the verdict in it")
	api := &apiFlags{}
	flags.StringVar(&api.tokenFile, "api-token-file", "", "file holding the bearer token of the remote proxies' control APIs (default: $"+control.EnvToken+")")
	flags.StringVar(&api.ca, "api-ca", "", "CA bundle to verify remote proxies' https control APIs (default: the system's)")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() != 1 {
		return errUsage{errors.New("run: give one experiment file")}
	}
	vars, err := parseVars("run", *varFlags)
	if err != nil {
		return err
	}
	if *historyFormat != runner.HistoryPgchaos && *historyFormat != runner.HistoryJepsen {
		return errUsage{fmt.Errorf("run: --history-format %q: want %s or %s", *historyFormat, runner.HistoryPgchaos, runner.HistoryJepsen)}
	}
	runIt := func() (*runner.Result, error) {
		return runFile(flags.Arg(0), vars, *embedded, *seed, flags.Changed("seed"), *pgBinDir, *verbose, api,
			reports{json: *jsonOut, junit: *junit, markdown: *markdown, html: *htmlOut, history: *historyOut, historyFormat: *historyFormat, dir: *reportDir}, stdout, stderr)
	}
	if !*litmus {
		_, err := runIt()
		return err
	}
	l, err := newLitmusResult(os.Getenv)
	if err != nil {
		return errUsage{fmt.Errorf("run: --litmus-result: %w", err)}
	}
	return runLitmus(l, runIt, stderr)
}

// runFile reads the experiment file and runs it; the result is nil when
// nothing ran.
func runFile(file string, vars map[string]string, embedded bool, seed int64, seedGiven bool, pgBinDir string, verbose bool, api *apiFlags,
	out reports, stdout, stderr io.Writer) (*runner.Result, error) {
	if out.dir != "" {
		out.json = cmp.Or(out.json, filepath.Join(out.dir, "report.json"))
		out.junit = cmp.Or(out.junit, filepath.Join(out.dir, "junit.xml"))
		out.markdown = cmp.Or(out.markdown, filepath.Join(out.dir, "summary.md"))
		out.html = cmp.Or(out.html, filepath.Join(out.dir, "report.html"))
	}
	exp, err := experiments.ParseFile(file, vars, os.LookupEnv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		// A CI job's step summary says why the stage failed, even here.
		if out.markdown != "" {
			if werr := writeInvalidSummary(out.markdown, file, err); werr != nil {
				fmt.Fprintf(stderr, "pgchaos: writing %s: %v\n", out.markdown, werr)
			}
		}
		return nil, errUsage{errors.New("run: the experiment file has problems")}
	}
	var urls []string
	for _, p := range exp.Proxies {
		urls = append(append(urls, p.URL, p.DNS), p.URLs...)
	}
	apiOpts, err := api.options("no proxy of the experiment has an https:// url", urls...)
	if err != nil {
		return nil, err
	}
	if !seedGiven {
		seed = randomSeed()
	}
	return execute(exp, runner.Options{Out: stdout, Live: isTerminal(stdout), Embedded: embedded, Seed: seed, PGBinDir: pgBinDir, Logger: logger(stderr, verbose), API: apiOpts,
		Version: versionString(), Vars: vars}, out, stdout, stderr)
}

// reports are the files a run writes its results to ("" none); dir is
// --report-dir, for the reports not named on their own.
type reports struct{ json, junit, markdown, html, history, historyFormat, dir string }

// reportsIn are the reports of a --report-dir.
func reportsIn(dir string) reports {
	if dir == "" {
		return reports{}
	}
	return reports{json: filepath.Join(dir, "report.json"), junit: filepath.Join(dir, "junit.xml"),
		markdown: filepath.Join(dir, "summary.md"), html: filepath.Join(dir, "report.html")}
}

// writeInvalidSummary writes the Markdown summary of a file that did not
// parse: its problems, one per line, where they are.
func writeInvalidSummary(path, file string, err error) error {
	var b strings.Builder
	fmt.Fprintf(&b, "## pgchaos: %s — ❌ invalid\n\nThe experiment file has problems; nothing ran (exit 2):\n\n", file)
	for _, line := range strings.Split(strings.TrimSpace(err.Error()), "\n") {
		fmt.Fprintf(&b, "- `%s`\n", strings.ReplaceAll(line, "`", "'"))
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// randomSeed is a run's seed when --seed is not given: runs differ, and
// the reports say how to repeat one.
func randomSeed() int64 { return rand.Int64N(1 << 53) }

// parseVars reads the --var flags of a command.
func parseVars(cmd string, flags []string) (map[string]string, error) {
	vars := map[string]string{}
	for _, kv := range flags {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, errUsage{fmt.Errorf("%s: --var %q: want KEY=VALUE", cmd, kv)}
		}
		vars[k] = v
	}
	return vars, nil
}

func logger(w io.Writer, verbose bool) *slog.Logger {
	if !verbose {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// execute runs the experiment, writes the reports and turns the result
// into the exit status.
func execute(exp *experiments.Experiment, opts runner.Options, out reports, stdout, stderr io.Writer) (*runner.Result, error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res := runner.Run(ctx, exp, opts)
	for _, w := range []struct {
		path  string
		write func(string, *runner.Result) error
	}{
		{out.json, runner.WriteJSON},
		{out.junit, runner.WriteJUnit},
		{out.markdown, func(p string, r *runner.Result) error { return os.WriteFile(p, []byte(runner.Markdown(r)), 0o644) }},
		{out.html, runner.WriteHTML},
		{out.history, func(p string, r *runner.Result) error { return runner.WriteHistory(p, r, out.historyFormat) }},
	} {
		if w.path != "" {
			if err := w.write(w.path, res); err != nil {
				fmt.Fprintf(stderr, "pgchaos: writing %s: %v\n", w.path, err)
			}
		}
	}
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, runner.Markdown(res))
	if code := res.ExitCode(); code != 0 {
		return res, exitError{code}
	}
	return res, nil
}

func runDemo(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("pgchaos demo", stderr, "Usage:\n  pgchaos demo [NAME] [--pg-bindir DIR] [--report-dir DIR]\n  pgchaos demo --list\n\n"+
		"Runs a shipped experiment (default 2pc-mid-prepare) on a throwaway local PostgreSQL.\n")
	pgBinDir := flags.String("pg-bindir", "", "PostgreSQL binaries (default: pg_config --bindir)")
	reportDir := flags.String("report-dir", "", "write report.json, junit.xml, summary.md and report.html here")
	list := flags.Bool("list", false, "list the shipped experiments")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	names := shippedExperiments()
	if *list {
		for _, n := range names {
			data, _ := examples.Files.ReadFile(n + ".yaml")
			desc := ""
			if exp, err := experiments.Parse(data, n+".yaml", nil, os.LookupEnv); err == nil {
				desc = exp.Description
			}
			fmt.Fprintf(stdout, "%-28s %s\n", n, desc)
		}
		return nil
	}
	name := "2pc-mid-prepare"
	switch rest := flags.Args(); len(rest) {
	case 0:
	case 1:
		name = strings.TrimSuffix(rest[0], ".yaml")
	default:
		return errUsage{fmt.Errorf("pgchaos demo runs one experiment, got %d: %s", len(rest), strings.Join(rest, " "))}
	}
	if !slices.Contains(names, name) {
		return errUsage{fmt.Errorf("no shipped experiment named %q; pgchaos demo --list shows them: %s", name, strings.Join(names, ", "))}
	}
	// On disk, so that exec steps find the runbooks beside the file.
	dir, err := os.MkdirTemp("", "pgchaos-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.CopyFS(dir, examples.Files); err != nil {
		return fmt.Errorf("writing the shipped experiments to %s: %w", dir, err)
	}
	exp, err := experiments.ParseFile(filepath.Join(dir, name+".yaml"), nil, os.LookupEnv)
	if err != nil {
		return err
	}
	_, err = execute(exp, runner.Options{Out: stdout, Live: isTerminal(stdout), Embedded: true, PGBinDir: *pgBinDir, Seed: randomSeed(), Version: versionString()}, reportsIn(*reportDir), stdout, stderr)
	return err
}

// shippedExperiments lists the experiments pgchaos ships, by name.
func shippedExperiments() []string {
	entries, _ := examples.Files.ReadDir(".")
	var out []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".yaml"); ok {
			out = append(out, n)
		}
	}
	return out
}

// isTerminal: a live status line on a terminal, plain log lines otherwise.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
