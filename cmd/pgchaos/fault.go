package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/pgchaos/pgchaos/control"
	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/faults"
	"github.com/pgchaos/pgchaos/server"
)

const faultUsage = `Usage:
  pgchaos fault add  [--api ADDR] --name NAME --action TYPE [matcher and action flags]
  pgchaos fault add  [--api ADDR] --file RULES.yaml      (one rule or a list; YAML or JSON)
  pgchaos fault list [--api ADDR] [--json]
  pgchaos fault rm   [--api ADDR] NAME [--proxy PROXY]
  pgchaos fault reset [--api ADDR]

Example — cut the connection right after the server prepared a transaction:
  pgchaos fault add --name cut-after-prepare --tag "PREPARE TRANSACTION" --action disconnect
`

// apiFlags say how to reach a pgchaos control API.
type apiFlags struct {
	addr, tokenFile, ca string
}

// envAPI gives the client commands the control API's address when --api is
// not given, as TOXIPROXY_URL does for toxiproxy-cli. pgchaos proxy does not
// read it: a server binds the address it is told on its command line.
const envAPI = "PGCHAOS_API"

func addAPIFlags(fs *pflag.FlagSet) *apiFlags {
	a := &apiFlags{}
	fs.StringVar(&a.addr, "api", cmp.Or(os.Getenv(envAPI), server.DefaultAPI), "address or URL of the pgchaos control API, https://... when it is served with TLS; the default is $"+envAPI+" when set")
	fs.StringVar(&a.tokenFile, "api-token-file", "", "file holding the control API's bearer token (default: $"+control.EnvToken+")")
	fs.StringVar(&a.ca, "api-ca", "", "CA bundle to verify an https control API (default: the system's)")
	return a
}

// options are the client options the flags and the environment give: the
// token of --api-token-file or PGCHAOS_API_TOKEN, and --api-ca's roots.
// A file that cannot be used is a usage error.
func (a *apiFlags) options(hint string, urls ...string) ([]control.ClientOption, error) {
	var opts []control.ClientOption
	token := os.Getenv(control.EnvToken)
	if a.tokenFile != "" {
		var err error
		if token, err = control.ReadTokenFile(a.tokenFile); err != nil {
			return nil, errUsage{err}
		}
	} else if token != "" {
		if err := control.CheckToken(token); err != nil {
			return nil, errUsage{fmt.Errorf("API token from %s: %w", control.EnvToken, err)}
		}
	}
	if token != "" {
		opts = append(opts, control.WithToken(token))
	}
	if a.ca != "" {
		https := false
		for _, u := range urls {
			https = https || strings.HasPrefix(strings.ToLower(u), "https://")
		}
		if !https {
			return nil, errUsage{errors.New("--api-ca verifies an https:// control API; " + hint)}
		}
		roots, err := control.LoadCertPool(a.ca)
		if err != nil {
			return nil, errUsage{err}
		}
		opts = append(opts, control.WithRootCAs(roots))
	}
	return opts, nil
}

// client is a client for --api.
func (a *apiFlags) client() (*control.Client, error) {
	opts, err := a.options("give --api https://HOST:PORT", a.addr)
	if err != nil {
		return nil, err
	}
	return control.NewClient(a.addr, opts...), nil
}

func newFlagSet(name string, stderr io.Writer, usage string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "%s\nFlags:\n%s", usage, fs.FlagUsages()) }
	recordFlagSet(stderr, fs) // for pgchaos completion
	return fs
}

func parseFlags(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return errUsage{withFlagSuggestion(fs, err)}
	}
	return nil
}

// withFlagSuggestion adds the closest flag to pflag's "unknown flag: --x".
func withFlagSuggestion(fs *pflag.FlagSet, err error) error {
	name, ok := strings.CutPrefix(err.Error(), "unknown flag: --")
	if !ok {
		return err
	}
	var names []string
	fs.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	if s := experiments.Suggest(name, names); s != "" {
		return fmt.Errorf("%w (did you mean --%s?)", err, s)
	}
	return err
}

// apiErr makes a rejected request a usage error (exit 2): the rule or
// argument was wrong, not the machinery.
func apiErr(err error) error {
	var ae *control.APIError
	if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 {
		return errUsage{err}
	}
	return err
}

func runFault(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, faultUsage)
		return errUsage{errors.New("fault: missing subcommand (add, list, rm, reset)")}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch args[0] {
	case "add":
		return faultAdd(ctx, args[1:], stdout, stderr)
	case "list", "ls":
		fs := newFlagSet("pgchaos fault list", stderr, faultUsage)
		api := addAPIFlags(fs)
		asJSON := fs.Bool("json", false, "print JSON")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		c, err := api.client()
		if err != nil {
			return err
		}
		rules, err := c.Rules(ctx)
		if err != nil {
			return apiErr(err)
		}
		if *asJSON {
			return printJSON(stdout, rules)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tPROXY\tACTION\tMATCH\tMATCHED\tFIRED")
		for _, r := range rules {
			proxyName := r.Proxy
			if proxyName == "" {
				proxyName = "*"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", r.Name, proxyName, r.Action.Type, describeMatch(r.Match), r.Matched, r.Fired)
		}
		return tw.Flush()
	case "rm", "remove":
		fs := newFlagSet("pgchaos fault rm", stderr, faultUsage)
		api := addAPIFlags(fs)
		proxyName := fs.String("proxy", "", "the rule's proxy, for a rule limited to one proxy")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errUsage{errors.New("fault rm: give the rule's name")}
		}
		c, err := api.client()
		if err != nil {
			return err
		}
		if err := c.RemoveRule(ctx, *proxyName, fs.Arg(0)); err != nil {
			return apiErr(err)
		}
		fmt.Fprintf(stdout, "removed rule %s\n", fs.Arg(0))
		return nil
	case "reset":
		fs := newFlagSet("pgchaos fault reset", stderr, faultUsage)
		api := addAPIFlags(fs)
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		c, err := api.client()
		if err != nil {
			return err
		}
		if err := c.ResetRules(ctx); err != nil {
			return apiErr(err)
		}
		fmt.Fprintln(stdout, "removed all rules")
		return nil
	case "-h", "--help", "help":
		fmt.Fprint(stdout, faultUsage)
		return nil
	}
	return errUsage{fmt.Errorf("fault: unknown subcommand %q (add, list, rm, reset)", args[0])}
}

func describeMatch(m faults.Match) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("event", m.Event)
	add("direction", m.Direction)
	add("message", strings.Join(m.Message, ","))
	add("sql", m.SQL)
	add("fingerprint", m.Fingerprint)
	add("statement", strings.Join(m.Statement, ","))
	add("tag", m.Tag)
	add("tx", strings.Join(m.TxStatus, ","))
	add("user", m.User)
	add("database", m.Database)
	add("app", m.ApplicationName)
	add("client", m.ClientCIDR)
	if len(parts) == 0 {
		return "*"
	}
	return strings.Join(parts, " ")
}

func faultAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pgchaos fault add", stderr, faultUsage)
	api := addAPIFlags(fs)
	var (
		r                       faults.Rule
		file                    string
		replace, disabled       bool
		delay, jitter, duration time.Duration
		expires                 time.Duration
		probability             float64
		messages, stmts, txs    []string
	)
	fs.StringVar(&file, "file", "", "read the rule(s) from a YAML or JSON file (- for standard input)")
	fs.BoolVar(&replace, "replace", false, "replace a rule of the same name instead of failing")
	fs.StringVar(&r.Name, "name", "", "rule name")
	fs.StringVar(&r.Proxy, "proxy", "", "apply to this proxy only (default: every proxy)")
	fs.BoolVar(&disabled, "disabled", false, "add the rule disabled")
	fs.StringVar(&r.Match.Direction, "direction", "", "client_to_server or server_to_client")
	fs.StringSliceVar(&messages, "message", nil, "message types: query, parse, bind, execute, sync, command_complete, ready_for_query, error_response, ...")
	fs.StringVar(&r.Match.SQL, "sql", "", "regular expression on the SQL of a Query or of the statement an Execute runs")
	fs.BoolVar(&r.Match.SQLCaseSensitive, "sql-case-sensitive", false, "match --sql case-sensitively")
	fs.StringVar(&r.Match.Fingerprint, "fingerprint", "", "the statement with its constants as $1, $2, ..., e.g. \"insert into t values ($1)\": matches it with any constants")
	fs.StringSliceVar(&stmts, "statement", nil, "statement classes: begin, commit, rollback, prepare_transaction, commit_prepared, rollback_prepared, select, insert, update, delete, ddl, other")
	fs.StringVar(&r.Match.Tag, "tag", "", "command tag of the server's CommandComplete, e.g. \"PREPARE TRANSACTION\"")
	fs.StringSliceVar(&txs, "tx-status", nil, "idle, in_transaction, failed")
	fs.StringVar(&r.Match.User, "user", "", "session user")
	fs.StringVar(&r.Match.Database, "database", "", "session database")
	fs.StringVar(&r.Match.ApplicationName, "application-name", "", "regular expression on application_name")
	fs.StringVar(&r.Match.ClientCIDR, "client-cidr", "", "client address range, e.g. 10.0.0.0/8")
	fs.StringVar(&r.Match.Event, "event", "", "connect or cancel instead of a message")
	fs.StringVar(&r.Action.Type, "action", "", "delay, disconnect, error, hang, partition, drop, refuse, slow_connect")
	fs.StringVar(&r.Action.When, "when", "", "before (default) or after the matched message is forwarded; disconnect: also result (cut where the statement's result comes back)")
	fs.DurationVar(&delay, "delay", 0, "delay for delay and slow_connect")
	fs.DurationVar(&jitter, "jitter", 0, "random extra delay, up to this much")
	fs.StringVar(&r.Action.Side, "side", "", "disconnect: both (default), client or server")
	fs.StringVar(&r.Action.Close, "close", "", "disconnect: fin (default) or rst")
	fs.StringVar(&r.Action.SQLState, "sqlstate", "", "error/refuse: SQLSTATE, e.g. 40001")
	fs.StringVar(&r.Action.Severity, "severity", "", "error/refuse: ERROR or FATAL")
	fs.StringVar(&r.Action.Message, "error-message", "", "error/refuse: message text")
	fs.DurationVar(&duration, "duration", 0, "hang/partition: how long (default: until removed)")
	fs.Float64Var(&probability, "probability", 1, "chance that a matching message fires the rule")
	fs.Int64Var(&r.Limits.Skip, "skip", 0, "let the first N matches through")
	fs.Int64Var(&r.Limits.Times, "times", 0, "fire at most N times (0: no limit)")
	fs.BoolVar(&r.Limits.OncePerSession, "once-per-session", false, "fire at most once per session")
	fs.DurationVar(&expires, "expires", 0, "stop firing this long after the rule is added")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errUsage{fmt.Errorf("fault add: unexpected argument %q", fs.Arg(0))}
	}
	var rules []faults.Rule
	if file != "" {
		var data []byte
		var err error
		if file == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(file)
		}
		if err != nil {
			return errUsage{err}
		}
		if rules, err = faults.ParseRules(data, file); err != nil {
			return errUsage{err}
		}
	} else {
		r.Match.Message, r.Match.Statement, r.Match.TxStatus = messages, stmts, txs
		r.Action.Delay, r.Action.Jitter, r.Action.Duration = faults.Duration(delay), faults.Duration(jitter), faults.Duration(duration)
		r.Limits.Expires = faults.Duration(expires)
		if fs.Changed("probability") {
			r.Limits.Probability = &probability
		}
		if disabled {
			f := false
			r.Enabled = &f
		}
		if err := faults.Validate(r); err != nil {
			return errUsage{fmt.Errorf("fault add: %w", err)}
		}
		rules = []faults.Rule{r}
	}
	c, err := api.client()
	if err != nil {
		return err
	}
	for _, rule := range rules {
		var st faults.RuleStatus
		var err error
		if replace {
			st, err = c.PutRule(ctx, rule)
		} else {
			st, err = c.AddRule(ctx, rule)
		}
		if err != nil {
			return apiErr(fmt.Errorf("rule %s: %w", rule.Name, err))
		}
		fmt.Fprintf(stdout, "added rule %s (%s; %s)\n", st.Name, st.Action.Type, describeMatch(st.Match))
	}
	return nil
}

func runSessions(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pgchaos sessions", stderr, "Usage:\n  pgchaos sessions [--api ADDR] [--json]\n  pgchaos sessions [--api ADDR] --kill ID\n")
	api := addAPIFlags(fs)
	kill := fs.Uint64("kill", 0, "end the session with this id")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := api.client()
	if err != nil {
		return err
	}
	if fs.Changed("kill") {
		if err := c.KillSession(ctx, *kill); err != nil {
			return apiErr(err)
		}
		fmt.Fprintf(stdout, "killed session %d\n", *kill)
		return nil
	}
	list, err := c.Sessions(ctx)
	if err != nil {
		return apiErr(err)
	}
	if *asJSON {
		return printJSON(stdout, list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPROXY\tCLIENT\tUSER\tDATABASE\tAPPLICATION\tTX\tBACKEND\tSINCE\tMSGS IN/OUT")
	for _, s := range list {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d/%d\n", s.ID, s.Proxy, s.Client, s.User, s.Database, s.ApplicationName,
			s.TxStatus, s.BackendPID, time.Since(s.Started).Round(time.Second), s.MessagesIn, s.MessagesOut)
	}
	return tw.Flush()
}

func runEvents(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pgchaos events", stderr, "Usage:\n  pgchaos events [--api ADDR] [--limit N] [--json]\n")
	api := addAPIFlags(fs)
	limit := fs.Int("limit", 50, "show the last N fired faults (0: all kept)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := api.client()
	if err != nil {
		return err
	}
	list, err := c.Events(ctx, *limit)
	if err != nil {
		return apiErr(err)
	}
	if *asJSON {
		return printJSON(stdout, list)
	}
	for _, e := range list {
		fmt.Fprintf(stdout, "%s  %-10s %-20s %-12s session=%s  %s\n", e.Time.Format(time.RFC3339Nano), e.Proxy, e.Rule, e.Action, strconv.FormatUint(e.Session, 10), e.Message)
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
