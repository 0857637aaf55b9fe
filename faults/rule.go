package faults

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// Rule is one fault: which messages or events it matches, what it does to
// them, and how often. Rules are plain data; the Engine compiles them.
type Rule struct {
	Name string `json:"name" yaml:"name"`
	// Proxy limits the rule to one named proxy ("" = every proxy).
	Proxy string `json:"proxy,omitempty" yaml:"proxy,omitempty"`
	// Enabled defaults to true.
	Enabled *bool  `json:"enabled,omitempty" yaml:"enabled,omitempty"`
	Match   Match  `json:"match" yaml:"match"`
	Action  Action `json:"action" yaml:"action"`
	Limits  Limits `json:"limits,omitempty" yaml:"limits,omitempty"`
}

// Match says what a rule applies to. Every field given must hold (AND).
type Match struct {
	// Direction is client_to_server or server_to_client. It defaults from
	// the other fields: sql, fingerprint and statement look at the client's messages,
	// tag at the server's.
	Direction string `json:"direction,omitempty" yaml:"direction,omitempty"`
	// Message is one or more message types: query, parse, bind, execute,
	// sync, command_complete, ready_for_query, error_response, ...
	Message StringList `json:"message,omitempty" yaml:"message,omitempty"`
	// SQL is a regular expression matched against a simple Query's text and
	// against the SQL of the statement an Execute runs. Case-insensitive
	// unless SQLCaseSensitive.
	SQL              string `json:"sql,omitempty" yaml:"sql,omitempty"`
	SQLCaseSensitive bool   `json:"sql_case_sensitive,omitempty" yaml:"sql_case_sensitive,omitempty"`
	// Fingerprint matches the same messages as SQL when the statement,
	// with its constants replaced by $1, $2, ... (RedactSQL), is the
	// fingerprint with its constants replaced the same way:
	// "insert into t values ($1)" matches "insert into t values (7)" and
	// the extended protocol's "insert into t values ($1)". Otherwise the
	// text must be the same, letter case and whitespace included.
	Fingerprint string `json:"fingerprint,omitempty" yaml:"fingerprint,omitempty"`
	// Statement is one or more statement classes: begin, commit, rollback,
	// prepare_transaction, commit_prepared, rollback_prepared, select,
	// insert, update, delete, ddl, other.
	Statement StringList `json:"statement,omitempty" yaml:"statement,omitempty"`
	// Tag matches the command tag of the server's CommandComplete: "COMMIT",
	// "PREPARE TRANSACTION", "INSERT" (which matches "INSERT 0 1").
	Tag string `json:"tag,omitempty" yaml:"tag,omitempty"`
	// TxStatus is one or more of idle, in_transaction, failed: the session's
	// transaction status when the message goes by.
	TxStatus        StringList `json:"tx_status,omitempty" yaml:"tx_status,omitempty"`
	User            string     `json:"user,omitempty" yaml:"user,omitempty"`
	Database        string     `json:"database,omitempty" yaml:"database,omitempty"`
	ApplicationName string     `json:"application_name,omitempty" yaml:"application_name,omitempty"` // regular expression
	ClientCIDR      string     `json:"client_cidr,omitempty" yaml:"client_cidr,omitempty"`
	// Event matches a session event instead of a message: connect (a new
	// client, before the upstream is dialed) or cancel (a CancelRequest).
	Event string `json:"event,omitempty" yaml:"event,omitempty"`
}

// Action is what a rule does when it fires.
type Action struct {
	// Type: delay, disconnect, error, hang, partition, drop, refuse,
	// slow_connect.
	Type string `json:"type" yaml:"type"`
	// When: before the matched message is forwarded (default) or after.
	// For disconnect, also result: the statement goes to the server, which
	// runs it, and the connection is cut when its result (CommandComplete,
	// EmptyQueryResponse, PortalSuspended) comes back, in its place: the
	// client never hears whether it happened. A statement the server fails
	// on gets its ErrorResponse through, and nothing is cut.
	When string `json:"when,omitempty" yaml:"when,omitempty"`
	// Delay and Jitter for delay and slow_connect: the wait is Delay plus
	// a uniform random part in [0, Jitter).
	Delay  Duration `json:"delay,omitempty" yaml:"delay,omitempty"`
	Jitter Duration `json:"jitter,omitempty" yaml:"jitter,omitempty"`
	// Side for disconnect: both (default), client or server.
	Side string `json:"side,omitempty" yaml:"side,omitempty"`
	// Close for disconnect: fin (default, an orderly close) or rst.
	Close string `json:"close,omitempty" yaml:"close,omitempty"`
	// SQLState, Severity (ERROR or FATAL) and Message for error and refuse.
	SQLState string `json:"sqlstate,omitempty" yaml:"sqlstate,omitempty"`
	Severity string `json:"severity,omitempty" yaml:"severity,omitempty"`
	Message  string `json:"message,omitempty" yaml:"message,omitempty"`
	// Duration for hang and partition: how long traffic is held (0: until
	// the rule is removed).
	Duration Duration `json:"duration,omitempty" yaml:"duration,omitempty"`
	// Attributes configure a byte-level toxic (latency, bandwidth, slicer,
	// slow_close, timeout, reset_peer, limit_data), with toxiproxy's names
	// and units: {"latency": 100, "jitter": 10} in milliseconds, ...
	Attributes map[string]any `json:"attributes,omitempty" yaml:"attributes,omitempty"`
}

// Limits bound how often a matching rule fires.
type Limits struct {
	// Probability that a matching message fires the rule (default 1).
	Probability *float64 `json:"probability,omitempty" yaml:"probability,omitempty"`
	// Skip the first N matches.
	Skip int64 `json:"skip,omitempty" yaml:"skip,omitempty"`
	// Times: fire at most N times in all (0: no limit).
	Times int64 `json:"times,omitempty" yaml:"times,omitempty"`
	// OncePerSession: fire at most once in each session.
	OncePerSession bool `json:"once_per_session,omitempty" yaml:"once_per_session,omitempty"`
	// Expires: the rule stops firing this long after it was added.
	Expires Duration `json:"expires,omitempty" yaml:"expires,omitempty"`
}

// StringList is a list that may be written as a single string.
type StringList []string

func (l *StringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = StringList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want a string or a list of strings")
	}
	*l = many
	return nil
}

func (l *StringList) UnmarshalYAML(unmarshal func(any) error) error {
	var one string
	if err := unmarshal(&one); err == nil {
		*l = StringList{one}
		return nil
	}
	var many []string
	if err := unmarshal(&many); err != nil {
		return fmt.Errorf("want a string or a list of strings")
	}
	*l = many
	return nil
}

// Duration is a time.Duration written as "50ms", "2s" (or a number of
// milliseconds in JSON).
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var ms float64
	if err := json.Unmarshal(b, &ms); err == nil {
		if ms < 0 {
			return fmt.Errorf("duration %v is negative", ms)
		}
		ns := ms * float64(time.Millisecond)
		if ns >= 1<<63 {
			// Converted, it would wrap around to a negative duration.
			return fmt.Errorf("duration %v ms is too long", ms)
		}
		*d = Duration(ns)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration like \"50ms\"")
	}
	return d.parse(s)
}

func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func (d *Duration) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return fmt.Errorf("want a duration like \"50ms\"")
	}
	return d.parse(s)
}

func (d *Duration) parse(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration like \"50ms\", got %q", s)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}

// FieldError names the field of a rule that is wrong.
type FieldError struct {
	Field string // e.g. "action.sqlstate"
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Direction of a message through a proxy, as rules name it.
type Direction uint8

const (
	ClientToServer Direction = iota
	ServerToClient
)

func (d Direction) String() string {
	if d == ClientToServer {
		return "client_to_server"
	}
	return "server_to_client"
}

// messageTypes are the message names rules may use, per direction.
var messageTypes = [2]map[string]byte{
	ClientToServer: {
		"query": 'Q', "parse": 'P', "bind": 'B', "execute": 'E', "describe": 'D', "close": 'C',
		"sync": 'S', "flush": 'H', "function_call": 'F', "copy_data": 'd', "copy_done": 'c',
		"copy_fail": 'f', "terminate": 'X',
	},
	ServerToClient: {
		"command_complete": 'C', "ready_for_query": 'Z', "error_response": 'E', "row_description": 'T',
		"data_row": 'D', "notice_response": 'N', "notification_response": 'A', "parse_complete": '1',
		"bind_complete": '2', "close_complete": '3', "no_data": 'n', "portal_suspended": 's',
		"parameter_status": 'S', "empty_query_response": 'I', "copy_in_response": 'G',
		"copy_out_response": 'H', "copy_both_response": 'W', "copy_data": 'd', "copy_done": 'c',
	},
}

// ActionKind is the compiled form of Action.Type.
type ActionKind uint8

const (
	ActNone ActionKind = iota
	ActDelay
	ActDisconnect
	ActError
	ActHang
	ActPartition
	ActDrop
	ActRefuse
	ActSlowConnect
	// ActToxic is one of toxiproxy's byte-level toxics on a session's stream.
	ActToxic
)

var actionNames = map[string]ActionKind{
	"delay": ActDelay, "disconnect": ActDisconnect, "error": ActError, "hang": ActHang,
	"partition": ActPartition, "drop": ActDrop, "refuse": ActRefuse, "slow_connect": ActSlowConnect,
}

// ToxicTypes are the byte-level toxics a rule can apply, by toxiproxy's names.
var ToxicTypes = []string{"latency", "bandwidth", "slicer", "slow_close", "timeout", "reset_peer", "limit_data"}

func isToxic(typ string) bool {
	for _, t := range ToxicTypes {
		if t == typ {
			return true
		}
	}
	return false
}

func (k ActionKind) String() string {
	for n, v := range actionNames {
		if v == k {
			return n
		}
	}
	return "none"
}

// Event kinds a rule can match instead of a message.
type EventKind uint8

const (
	EventNone EventKind = iota
	EventConnect
	EventCancel
)

// compile checks a rule and turns it into its matching form. The error is
// the first problem check finds, a *FieldError naming the field.
func compile(r Rule) (*compiledRule, error) {
	c, probs := check(r)
	if len(probs) > 0 {
		return nil, probs[0]
	}
	return c, nil
}

// Problems returns every problem of a rule, in the order compile checks
// them (its first is the error Validate and Engine.Add return), or nil for
// a valid rule. A file loader reports them all at once, so that a user
// fixes a rule in one edit instead of one run per mistake.
func Problems(r Rule) []*FieldError {
	_, probs := check(r)
	return probs
}

// problems collects what is wrong with a rule.
type problems []*FieldError

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, fieldErr(field, format, args...))
}

// check compiles a rule and lists its problems. A check that depends on a
// field found wrong (the direction, the event, the action type) is skipped:
// it would report a consequence of that problem, not a problem of its own.
func check(r Rule) (*compiledRule, problems) {
	var probs problems
	c := &compiledRule{rule: r, probability: 1}
	if strings.TrimSpace(r.Name) == "" {
		probs.add("name", "is empty")
	}
	m := r.Match
	switch m.Event {
	case "":
	case "connect":
		c.event = EventConnect
	case "cancel":
		c.event = EventCancel
	default:
		probs.add("match.event", "%q: want connect or cancel", m.Event)
	}
	// Which actions fit depends on the event: with an unknown one, say
	// nothing about the action's fit.
	eventKnown := m.Event == "" || c.event != EventNone

	// An unknown direction leaves c.dir at its default, which the checks
	// that compare messages and fields with the direction must not trust.
	dirKnown := true
	switch m.Direction {
	case "":
		c.dir = ClientToServer
		// Byte toxics default to the server's stream, like toxiproxy's
		// "downstream".
		if isToxic(r.Action.Type) {
			c.dir = ServerToClient
		}
		if m.Tag != "" {
			c.dir = ServerToClient
		}
		if len(m.Message) > 0 {
			// Take the direction from the first message name known in one direction only.
			if _, ok := messageTypes[ClientToServer][m.Message[0]]; !ok {
				if _, ok := messageTypes[ServerToClient][m.Message[0]]; ok {
					c.dir = ServerToClient
				}
			}
		}
	case "client_to_server":
		c.dir = ClientToServer
	case "server_to_client":
		c.dir = ServerToClient
	default:
		probs.add("match.direction", "%q: want client_to_server or server_to_client", m.Direction)
		dirKnown = false
	}
	if c.event != EventNone {
		if len(m.Message) > 0 || m.SQL != "" || m.Fingerprint != "" || len(m.Statement) > 0 || m.Tag != "" || len(m.TxStatus) > 0 || m.Direction != "" {
			probs.add("match.event", "an event rule cannot also match messages (message, sql, fingerprint, statement, tag, tx_status, direction)")
		}
	}

	if isToxic(r.Action.Type) {
		if len(m.Message) > 0 || m.SQL != "" || m.Fingerprint != "" || len(m.Statement) > 0 || m.Tag != "" || len(m.TxStatus) > 0 || m.Event != "" {
			probs.add("match", "a byte-level toxic (%s) acts on a session's stream: it can match proxy, direction, user, database, application_name and client_cidr only", r.Action.Type)
		}
	} else if c.event == EventNone && dirKnown {
		for i, name := range m.Message {
			t, ok := messageTypes[c.dir][name]
			if !ok {
				probs.add(fmt.Sprintf("match.message[%d]", i), "%q is not a %s message type (known: %s)", name, c.dir, knownMessages(c.dir))
				continue
			}
			c.types[t] = true
		}
		if len(m.Message) == 0 {
			switch {
			case c.dir == ClientToServer && (m.SQL != "" || m.Fingerprint != "" || len(m.Statement) > 0 || r.Action.When == "result"):
				// A result cut needs a statement, whose result it waits for.
				c.types['Q'], c.types['E'] = true, true
			case c.dir == ServerToClient && m.Tag != "":
				c.types['C'] = true
			default:
				for _, t := range messageTypes[c.dir] {
					c.types[t] = true
				}
			}
		}
		if m.SQL != "" && c.dir != ClientToServer {
			probs.add("match.sql", "sql matches the client's messages; direction is %s", c.dir)
		}
		if m.Fingerprint != "" && c.dir != ClientToServer {
			probs.add("match.fingerprint", "fingerprint matches the client's messages; direction is %s", c.dir)
		}
		if len(m.Statement) > 0 && c.dir != ClientToServer {
			probs.add("match.statement", "statement matches the client's messages; direction is %s", c.dir)
		}
		if m.Tag != "" && c.dir != ServerToClient {
			probs.add("match.tag", "tag matches the server's CommandComplete; direction is %s", c.dir)
		}
	}
	if m.SQL != "" {
		sm, err := compileSQL(m.SQL, m.SQLCaseSensitive)
		if err != nil {
			probs.add("match.sql", "%v", err)
		}
		c.sql = sm
	}
	if m.Fingerprint != "" {
		if strings.TrimSpace(m.Fingerprint) == "" {
			probs.add("match.fingerprint", "is blank: give a statement, e.g. \"insert into t values ($1)\"")
		} else {
			c.fingerprint = compileFingerprint(m.Fingerprint)
		}
	}
	for i, name := range m.Statement {
		cl, ok := parseClass(name)
		if !ok {
			probs.add(fmt.Sprintf("match.statement[%d]", i), "%q is not a statement class (known: %s)", name, strings.Join(StatementClasses(), ", "))
			continue
		}
		c.classes |= 1 << cl
	}
	c.tag = strings.ToUpper(strings.TrimSpace(m.Tag))
	for i, name := range m.TxStatus {
		switch name {
		case "idle":
			c.tx |= 1 << txIdle
		case "in_transaction":
			c.tx |= 1 << txInTx
		case "failed":
			c.tx |= 1 << txFailed
		default:
			probs.add(fmt.Sprintf("match.tx_status[%d]", i), "%q: want idle, in_transaction or failed", name)
		}
	}
	if m.ApplicationName != "" {
		re, err := regexp.Compile(m.ApplicationName)
		if err != nil {
			probs.add("match.application_name", "%v", err)
		}
		c.appName = re
	}
	if m.ClientCIDR != "" {
		p, err := netip.ParsePrefix(m.ClientCIDR)
		if err != nil {
			probs.add("match.client_cidr", "%v", err)
		}
		// Clients are compared unmapped, so an IPv4-mapped range must be too.
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		c.cidr = p.Masked()
		c.hasCIDR = true
	}

	compileAction(c, r.Action, eventKnown, dirKnown, &probs)

	l := r.Limits
	if l.Probability != nil {
		// Not "< 0 || > 1": NaN is neither, and a rule with it would fire
		// on every match.
		if p := *l.Probability; !(p >= 0 && p <= 1) {
			probs.add("limits.probability", "%v is not between 0 and 1", *l.Probability)
		}
		c.probability = *l.Probability
	}
	if l.Skip < 0 {
		probs.add("limits.skip", "%d is negative", l.Skip)
	}
	if l.Times < 0 {
		probs.add("limits.times", "%d is negative", l.Times)
	}
	c.enabled = r.Enabled == nil || *r.Enabled
	return c, probs
}

// compileAction checks the action and adds its problems to probs.
// eventKnown and dirKnown say whether the match's event and direction were
// valid: the checks of how an action fits them are skipped when not.
func compileAction(c *compiledRule, a Action, eventKnown, dirKnown bool, probs *problems) {
	if isToxic(a.Type) {
		compileToxic(c, a, probs)
		return
	}
	if len(a.Attributes) > 0 {
		probs.add("action.attributes", "only byte-level toxics (%s) take attributes", strings.Join(ToxicTypes, ", "))
	}
	kind, ok := actionNames[a.Type]
	if !ok {
		// Every other check of the action depends on its type.
		probs.add("action.type", "%q: want delay, disconnect, error, hang, partition, drop, refuse, slow_connect, or a byte-level toxic: %s", a.Type, strings.Join(ToxicTypes, ", "))
		return
	}
	c.action = kind
	switch a.When {
	case "", "before":
	case "after":
		c.after = true
	case "result":
		c.atResult = true
	default:
		probs.add("action.when", "%q: want before, after or result", a.When)
	}
	if eventKnown {
		switch c.event {
		case EventConnect:
			if kind != ActRefuse && kind != ActSlowConnect && kind != ActDisconnect {
				probs.add("action.type", "%q cannot apply to a connect event (use refuse, slow_connect or disconnect)", a.Type)
			}
		case EventCancel:
			if kind != ActDrop && kind != ActDelay {
				probs.add("action.type", "%q cannot apply to a cancel event (use drop or delay)", a.Type)
			}
		default:
			if kind == ActRefuse || kind == ActSlowConnect {
				probs.add("action.type", "%q applies to connect events only (match.event: connect)", a.Type)
			}
		}
	}
	if c.after && kind != ActDisconnect && kind != ActError {
		probs.add("action.when", "\"after\" applies to disconnect and error only")
	}
	if c.atResult && eventKnown && dirKnown {
		checkAtResult(c, kind, probs)
	}
	switch kind {
	case ActDelay, ActSlowConnect:
		if a.Delay <= 0 {
			probs.add("action.delay", "must be greater than zero")
		}
	case ActDisconnect:
		switch a.Side {
		case "", "both":
			c.side = SideBoth
		case "client":
			c.side = SideClient
		case "server":
			c.side = SideServer
		default:
			probs.add("action.side", "%q: want both, client or server", a.Side)
		}
		switch a.Close {
		case "", "fin":
		case "rst":
			c.reset = true
		default:
			probs.add("action.close", "%q: want fin or rst", a.Close)
		}
	case ActError, ActRefuse:
		if kind == ActRefuse && a.SQLState == "" && a.Message == "" {
			break // refuse by closing the connection at once
		}
		if kind == ActError && c.dir != ClientToServer && !c.after {
			// An error in place of a server message is what "after" means.
			c.after = true
		}
		code := a.SQLState
		switch {
		case code == "":
			probs.add("action.sqlstate", "is required (e.g. 40001)")
		case len(code) != 5 || strings.ToUpper(code) != code:
			probs.add("action.sqlstate", "%q is not a five-character SQLSTATE", code)
		}
		sev := strings.ToUpper(a.Severity)
		switch sev {
		case "":
			sev = "ERROR"
			if kind == ActRefuse {
				sev = "FATAL"
			}
		case "ERROR", "FATAL":
		default:
			probs.add("action.severity", "%q: want ERROR or FATAL", a.Severity)
		}
		msg := a.Message
		if msg == "" {
			msg = "pgchaos: injected fault (rule " + c.rule.Name + ")"
		}
		c.errSpec = &ErrorSpec{Severity: sev, Code: code, Message: msg}
	}
	c.delay = time.Duration(a.Delay)
	c.jitter = time.Duration(a.Jitter)
	c.duration = time.Duration(a.Duration)
}

// checkAtResult refuses a when: result that has no result to cut at: the
// proxy finds a statement's result by counting from the Query or Execute
// that sent it, as error after does.
func checkAtResult(c *compiledRule, kind ActionKind, probs *problems) {
	switch {
	case kind != ActDisconnect:
		probs.add("action.when", "\"result\" applies to disconnect only; error after already replaces the result")
		return
	case c.event != EventNone:
		probs.add("action.when", "\"result\" cuts at a statement's result; a %s event has none", c.rule.Match.Event)
		return
	case c.dir != ClientToServer:
		probs.add("action.when", "\"result\" cuts at the result of a client's statement; direction is %s (to cut at a server message, match it with when: before)", c.dir)
		return
	}
	for t, want := range c.types {
		if want && t != 'Q' && t != 'E' {
			probs.add("match.message", "with when: result, match query and execute messages only: the cut waits for a statement's result")
			return
		}
	}
}

func knownMessages(d Direction) string { return strings.Join(MessageTypes(d), ", ") }

// MessageTypes returns the message type names a rule's match.message may
// use in direction d, sorted. Documentation and schemas list them from
// here, so that a type added to the engine reaches them.
func MessageTypes(d Direction) []string {
	var names []string
	for n := range messageTypes[d] {
		names = append(names, n)
	}
	sortStrings(names)
	return names
}

// ActionTypes returns every action.type a rule may use, the message-level
// actions sorted, then the byte-level toxics (ToxicTypes).
func ActionTypes() []string {
	var names []string
	for n := range actionNames {
		names = append(names, n)
	}
	sortStrings(names)
	return append(names, ToxicTypes...)
}
