package faults

import (
	"net/netip"
	"testing"
	"time"
)

func baseSession() *Session {
	return &Session{
		ID: 7, User: "app", Database: "shop", ApplicationName: "pgbench",
		Client: netip.MustParseAddr("10.1.2.3"), TxStatus: 'I',
	}
}

func TestDecideMatching(t *testing.T) {
	type sessFn func(*Session)
	withTx := func(b byte) sessFn { return func(s *Session) { s.TxStatus = b } }
	withClient := func(a string) sessFn { return func(s *Session) { s.Client = netip.MustParseAddr(a) } }
	withUser := func(u string) sessFn { return func(s *Session) { s.User = u } }
	withDB := func(d string) sessFn { return func(s *Session) { s.Database = d } }
	withApp := func(a string) sessFn { return func(s *Session) { s.ApplicationName = a } }

	tests := []struct {
		name  string
		match Match
		msg   *Message
		sess  sessFn
		want  bool
	}{
		// Direction defaulting.
		{"sql defaults to query", Match{SQL: "select"}, queryMsg("SELECT 1"), nil, true},
		{"sql defaults to execute", Match{SQL: "select"}, executeMsg("SELECT 1"), nil, true},
		{"sql does not look at parse", Match{SQL: "select"}, &Message{Dir: ClientToServer, Type: 'P', SQL: []byte("SELECT 1")}, nil, false},
		{"sql does not look at server messages", Match{SQL: "select"}, &Message{Dir: ServerToClient, Type: 'E', SQL: []byte("SELECT 1")}, nil, false},
		{"sql with explicit parse", Match{SQL: "select", Message: StringList{"parse"}}, &Message{Dir: ClientToServer, Type: 'P', SQL: []byte("SELECT 1")}, nil, true},
		{"statement defaults to query", Match{Statement: StringList{"commit"}}, queryMsg("COMMIT"), nil, true},
		{"statement defaults to execute", Match{Statement: StringList{"commit"}}, executeMsg("COMMIT"), nil, true},
		{"tag defaults to command_complete", Match{Tag: "COMMIT"}, tagMsg("COMMIT"), nil, true},
		{"tag not on ready_for_query", Match{Tag: "COMMIT"}, &Message{Dir: ServerToClient, Type: 'Z', Tag: []byte("COMMIT")}, nil, false},
		{"tag not on client close", Match{Tag: "COMMIT"}, &Message{Dir: ClientToServer, Type: 'C', Tag: []byte("COMMIT")}, nil, false},
		{"server message name sets direction", Match{Message: StringList{"ready_for_query"}}, &Message{Dir: ServerToClient, Type: 'Z'}, nil, true},
		{"server message name not on client", Match{Message: StringList{"error_response"}}, &Message{Dir: ClientToServer, Type: 'E'}, nil, false},
		{"error_response on server", Match{Message: StringList{"error_response"}}, &Message{Dir: ServerToClient, Type: 'E'}, nil, true},
		{"client message name", Match{Message: StringList{"sync"}}, &Message{Dir: ClientToServer, Type: 'S'}, nil, true},
		{"client message name not on server", Match{Message: StringList{"sync"}}, &Message{Dir: ServerToClient, Type: 'S'}, nil, false},
		{"ambiguous name defaults to client", Match{Message: StringList{"copy_data"}}, &Message{Dir: ClientToServer, Type: 'd'}, nil, true},
		{"ambiguous name not on server by default", Match{Message: StringList{"copy_data"}}, &Message{Dir: ServerToClient, Type: 'd'}, nil, false},
		{"ambiguous name with explicit direction", Match{Direction: "server_to_client", Message: StringList{"copy_data"}}, &Message{Dir: ServerToClient, Type: 'd'}, nil, true},
		{"several message names", Match{Message: StringList{"parse", "bind"}}, &Message{Dir: ClientToServer, Type: 'B'}, nil, true},
		{"several message names, other type", Match{Message: StringList{"parse", "bind"}}, &Message{Dir: ClientToServer, Type: 'E'}, nil, false},
		{"no fields: every client message", Match{}, &Message{Dir: ClientToServer, Type: 'X'}, nil, true},
		{"no fields: no server message", Match{}, &Message{Dir: ServerToClient, Type: 'Z'}, nil, false},
		{"explicit server direction: every server message", Match{Direction: "server_to_client"}, &Message{Dir: ServerToClient, Type: 'D'}, nil, true},

		// SQL regex.
		{"sql case-insensitive by default", Match{SQL: "pgbench_accounts"}, queryMsg("select * from PGBENCH_ACCOUNTS"), nil, true},
		{"sql case-insensitive pattern upper", Match{SQL: "UPDATE"}, queryMsg("update t set a=1"), nil, true},
		{"sql case-sensitive match", Match{SQL: "UPDATE", SQLCaseSensitive: true}, queryMsg("UPDATE t SET a=1"), nil, true},
		{"sql case-sensitive miss", Match{SQL: "UPDATE", SQLCaseSensitive: true}, queryMsg("update t set a=1"), nil, false},
		{"sql anchored", Match{SQL: "^\\s*insert"}, queryMsg("  INSERT INTO t VALUES (1)"), nil, true},
		{"sql anchored miss", Match{SQL: "^insert"}, queryMsg("WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x"), nil, false},
		{"sql sees later statements", Match{SQL: "delete"}, queryMsg("SELECT 1; DELETE FROM t"), nil, true},
		{"sql execute same as query", Match{SQL: "pgbench_branches"}, executeMsg("UPDATE pgbench_branches SET bbalance = bbalance + $1"), nil, true},
		{"sql no match", Match{SQL: "pgbench_tellers"}, queryMsg("SELECT 1"), nil, false},
		{"sql on nil SQL", Match{SQL: ".*"}, &Message{Dir: ClientToServer, Type: 'E'}, nil, false},

		// Fingerprints: the statement with its constants normalised.
		{"fingerprint placeholder matches a literal", Match{Fingerprint: "insert into t values ($1)"}, queryMsg("insert into t values (1)"), nil, true},
		{"fingerprint placeholder matches another literal", Match{Fingerprint: "insert into t values ($1)"}, queryMsg("insert into t values ('two')"), nil, true},
		{"fingerprint matches the extended protocol", Match{Fingerprint: "insert into t values ($1)"}, executeMsg("insert into t values ($1)"), nil, true},
		{"fingerprint written with a literal", Match{Fingerprint: "insert into t values (5)"}, queryMsg("insert into t values (2.5e3)"), nil, true},
		{"fingerprint with several constants", Match{Fingerprint: "select $1, $2 from t where a = $3"}, queryMsg("select 1, 'x' from t where a = E'y'"), nil, true},
		{"fingerprint constants after placeholders", Match{Fingerprint: "select $2, $1"}, executeMsg("select $2, 7"), nil, false},
		{"fingerprint numbering as RedactSQL", Match{Fingerprint: "select $2, $3"}, executeMsg("select $1, 7"), nil, false},
		{"fingerprint numbering after a placeholder", Match{Fingerprint: "select $1, $2"}, executeMsg("select $1, 7"), nil, true},
		{"fingerprint is case-sensitive", Match{Fingerprint: "INSERT INTO t VALUES ($1)"}, queryMsg("insert into t values (1)"), nil, false},
		{"fingerprint keeps whitespace", Match{Fingerprint: "insert into t values ($1)"}, queryMsg("insert into t  values (1)"), nil, false},
		{"fingerprint is the whole statement", Match{Fingerprint: "insert into t values ($1)"}, queryMsg("insert into t values (1); select 1"), nil, false},
		{"fingerprint is not a prefix", Match{Fingerprint: "insert into t values ($1); select $2"}, queryMsg("insert into t values (1)"), nil, false},
		{"fingerprint other table", Match{Fingerprint: "insert into t values ($1)"}, queryMsg("insert into t2 values (1)"), nil, false},
		{"fingerprint identifiers stay", Match{Fingerprint: "select t1"}, queryMsg("select t2"), nil, false},
		{"fingerprint not on parse by default", Match{Fingerprint: "select $1"}, &Message{Dir: ClientToServer, Type: 'P', SQL: []byte("select 1")}, nil, false},
		{"fingerprint with explicit parse", Match{Fingerprint: "select $1", Message: StringList{"parse"}}, &Message{Dir: ClientToServer, Type: 'P', SQL: []byte("select $1")}, nil, true},
		{"fingerprint on nil SQL", Match{Fingerprint: "select $1"}, &Message{Dir: ClientToServer, Type: 'E'}, nil, false},
		{"fingerprint and statement both hold", Match{Fingerprint: "commit", Statement: StringList{"commit"}}, queryMsg("commit"), nil, true},

		// Statement classes.
		{"statement select", Match{Statement: StringList{"select"}}, queryMsg("select 1"), nil, true},
		{"statement select miss", Match{Statement: StringList{"select"}}, queryMsg("insert into t values (1)"), nil, false},
		{"statement one of several", Match{Statement: StringList{"insert", "update", "delete"}}, executeMsg("UPDATE t SET a = $1"), nil, true},
		{"statement prepare_transaction", Match{Statement: StringList{"prepare_transaction"}}, queryMsg("PREPARE TRANSACTION 'g1'"), nil, true},
		{"statement prepare is other", Match{Statement: StringList{"prepare_transaction"}}, queryMsg("PREPARE s AS SELECT 1"), nil, false},
		{"statement commit_prepared", Match{Statement: StringList{"commit_prepared"}}, queryMsg("COMMIT PREPARED 'g1'"), nil, true},
		{"statement commit not commit_prepared", Match{Statement: StringList{"commit"}}, queryMsg("COMMIT PREPARED 'g1'"), nil, false},
		{"statement ddl", Match{Statement: StringList{"ddl"}}, queryMsg("/* migrate */ ALTER TABLE t ADD c int"), nil, true},
		{"statement other", Match{Statement: StringList{"other"}}, queryMsg("SET x = 1"), nil, true},
		{"statement and sql both hold", Match{Statement: StringList{"select"}, SQL: "accounts"}, queryMsg("SELECT * FROM accounts"), nil, true},
		{"statement holds, sql does not", Match{Statement: StringList{"select"}, SQL: "accounts"}, queryMsg("SELECT * FROM tellers"), nil, false},
		{"statement on empty query", Match{Statement: StringList{"select", "other"}}, queryMsg(""), nil, false},

		// Tags.
		{"tag exact", Match{Tag: "COMMIT"}, tagMsg("COMMIT"), nil, true},
		{"tag with counts", Match{Tag: "INSERT"}, tagMsg("INSERT 0 1"), nil, true},
		{"tag prefix of a longer word", Match{Tag: "INSERT"}, tagMsg("INSERTED"), nil, false},
		{"tag longer than message", Match{Tag: "INSERT"}, tagMsg("INS"), nil, false},
		{"tag two words", Match{Tag: "PREPARE TRANSACTION"}, tagMsg("PREPARE TRANSACTION"), nil, true},
		{"tag first word only of two", Match{Tag: "PREPARE"}, tagMsg("PREPARE TRANSACTION"), nil, true},
		{"tag two words not a prefix", Match{Tag: "PREPARE TRANSACTION"}, tagMsg("PREPARE"), nil, false},
		{"tag lower-case rule", Match{Tag: "insert"}, tagMsg("INSERT 0 5"), nil, true},
		{"tag lower-case message", Match{Tag: "UPDATE"}, tagMsg("update 3"), nil, true},
		{"tag mixed case", Match{Tag: "Commit Prepared"}, tagMsg("COMMIT PREPARED"), nil, true},
		{"tag other command", Match{Tag: "COMMIT"}, tagMsg("ROLLBACK"), nil, false},
		{"tag on nil tag", Match{Tag: "COMMIT"}, &Message{Dir: ServerToClient, Type: 'C'}, nil, false},

		// Transaction status.
		{"tx idle", Match{TxStatus: StringList{"idle"}}, queryMsg("SELECT 1"), withTx('I'), true},
		{"tx idle miss", Match{TxStatus: StringList{"idle"}}, queryMsg("SELECT 1"), withTx('T'), false},
		{"tx in_transaction", Match{TxStatus: StringList{"in_transaction"}}, queryMsg("COMMIT"), withTx('T'), true},
		{"tx failed", Match{TxStatus: StringList{"failed"}}, queryMsg("ROLLBACK"), withTx('E'), true},
		{"tx one of two", Match{TxStatus: StringList{"in_transaction", "failed"}}, queryMsg("COMMIT"), withTx('E'), true},
		{"tx unknown before first ready", Match{TxStatus: StringList{"idle", "in_transaction", "failed"}}, queryMsg("SELECT 1"), withTx(0), false},
		{"tx with tag", Match{Tag: "COMMIT", TxStatus: StringList{"in_transaction"}}, tagMsg("COMMIT"), withTx('T'), true},

		// Session attributes.
		{"user exact", Match{User: "app"}, queryMsg("SELECT 1"), nil, true},
		{"user other", Match{User: "app"}, queryMsg("SELECT 1"), withUser("admin"), false},
		{"user is not a pattern", Match{User: "ap"}, queryMsg("SELECT 1"), nil, false},
		{"user is case-sensitive", Match{User: "APP"}, queryMsg("SELECT 1"), nil, false},
		{"database exact", Match{Database: "shop"}, queryMsg("SELECT 1"), nil, true},
		{"database other", Match{Database: "shop"}, queryMsg("SELECT 1"), withDB("shop2"), false},
		{"user and database", Match{User: "app", Database: "shop"}, queryMsg("SELECT 1"), nil, true},
		{"user and wrong database", Match{User: "app", Database: "postgres"}, queryMsg("SELECT 1"), nil, false},
		{"application_name regex", Match{ApplicationName: "^pg"}, queryMsg("SELECT 1"), nil, true},
		{"application_name regex substring", Match{ApplicationName: "bench"}, queryMsg("SELECT 1"), nil, true},
		{"application_name regex miss", Match{ApplicationName: "^psql$"}, queryMsg("SELECT 1"), nil, false},
		{"application_name empty", Match{ApplicationName: "^$"}, queryMsg("SELECT 1"), withApp(""), true},
		{"client cidr v4", Match{ClientCIDR: "10.0.0.0/8"}, queryMsg("SELECT 1"), nil, true},
		{"client cidr v4 miss", Match{ClientCIDR: "192.168.0.0/16"}, queryMsg("SELECT 1"), nil, false},
		{"client cidr host", Match{ClientCIDR: "10.1.2.3/32"}, queryMsg("SELECT 1"), nil, true},
		{"client cidr v4-mapped v6 client", Match{ClientCIDR: "10.0.0.0/8"}, queryMsg("SELECT 1"), withClient("::ffff:10.9.8.7"), true},
		{"client cidr v4-mapped v6 client miss", Match{ClientCIDR: "10.0.0.0/8"}, queryMsg("SELECT 1"), withClient("::ffff:192.168.1.1"), false},
		{"client cidr v6", Match{ClientCIDR: "2001:db8::/32"}, queryMsg("SELECT 1"), withClient("2001:db8::1"), true},
		{"client cidr v6 rule, v4 client", Match{ClientCIDR: "2001:db8::/32"}, queryMsg("SELECT 1"), nil, false},
		{"client cidr no client address", Match{ClientCIDR: "0.0.0.0/0"}, queryMsg("SELECT 1"), func(s *Session) { s.Client = netip.Addr{} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, Options{})
			mustAdd(t, e, Rule{Name: "r", Match: tt.match, Action: Action{Type: "drop"}})
			rs := e.Policy("p").Rules()
			s := baseSession()
			if tt.sess != nil {
				tt.sess(s)
			}
			v, ok := rs.Decide(s, tt.msg)
			if ok != tt.want {
				t.Fatalf("Decide(%+v) fired = %v, want %v", tt.msg, ok, tt.want)
			}
			if ok {
				if v.Rule != "r" || v.Action != ActDrop {
					t.Errorf("verdict %+v", v)
				}
				if !rs.Wants(tt.msg.Dir, tt.msg.Type) {
					t.Errorf("rule fired on %v %q but Wants is false", tt.msg.Dir, tt.msg.Type)
				}
			}
		})
	}
}

func TestWants(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, delayRule("sql", Match{SQL: "x"}))
	mustAdd(t, e, delayRule("tag", Match{Tag: "COMMIT"}))
	mustAdd(t, e, delayRule("parse", Match{Message: StringList{"parse"}}))
	mustAdd(t, e, Rule{Name: "off", Enabled: boolPtr(false), Match: Match{Message: StringList{"sync"}}, Action: Action{Type: "drop"}})
	mustAdd(t, e, Rule{Name: "conn", Match: Match{Event: "connect"}, Action: Action{Type: "refuse"}})
	rs := e.Policy("p").Rules()

	tests := []struct {
		dir  Direction
		typ  byte
		want bool
	}{
		{ClientToServer, 'Q', true},
		{ClientToServer, 'E', true},
		{ClientToServer, 'P', true},
		{ServerToClient, 'C', true},
		{ClientToServer, 'S', false}, // only the disabled rule looks at sync
		{ClientToServer, 'B', false},
		{ClientToServer, 'C', false}, // a client Close, not CommandComplete
		{ServerToClient, 'E', false}, // an ErrorResponse, not Execute
		{ServerToClient, 'Z', false},
		{ServerToClient, 'D', false},
		{ServerToClient, 'Q', false},
	}
	for _, tt := range tests {
		if got := rs.Wants(tt.dir, tt.typ); got != tt.want {
			t.Errorf("Wants(%v, %q) = %v, want %v", tt.dir, tt.typ, got, tt.want)
		}
	}
	if !rs.WantsConnect() || rs.WantsCancel() {
		t.Errorf("WantsConnect %v WantsCancel %v, want true false", rs.WantsConnect(), rs.WantsCancel())
	}
	if rs.Empty() {
		t.Error("Empty() with rules")
	}

	// A message nobody wants gets no verdict even though a rule would
	// otherwise match it: the disabled sync rule does not fire.
	if v, ok := rs.Decide(baseSession(), &Message{Dir: ClientToServer, Type: 'S'}); ok {
		t.Errorf("disabled rule fired: %+v", v)
	}

	var nilRS *RuleSet
	if nilRS.Wants(ClientToServer, 'Q') || nilRS.WantsConnect() || nilRS.WantsCancel() || !nilRS.Empty() {
		t.Error("a nil RuleSet wants something")
	}
	if _, ok := nilRS.Decide(baseSession(), queryMsg("SELECT 1")); ok {
		t.Error("a nil RuleSet decided")
	}
	if _, ok := nilRS.DecideEvent(baseSession(), EventConnect); ok {
		t.Error("a nil RuleSet decided an event")
	}

	empty := newTestEngine(t, Options{}).Policy("p").Rules()
	if !empty.Empty() {
		t.Error("a new engine's snapshot is not Empty")
	}
	for typ := 0; typ < 256; typ++ {
		if empty.Wants(ClientToServer, byte(typ)) || empty.Wants(ServerToClient, byte(typ)) {
			t.Fatalf("an empty snapshot wants %q", byte(typ))
		}
	}
}

func TestDisabledRule(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "off", Enabled: boolPtr(false), Match: Match{SQL: "select"}, Action: Action{Type: "drop"}})
	rs := e.Policy("p").Rules()
	if rs.Wants(ClientToServer, 'Q') {
		t.Error("a disabled rule makes the snapshot want queries")
	}
	if !rs.Empty() {
		t.Error("a snapshot with only a disabled rule is not Empty")
	}
	if _, ok := rs.Decide(baseSession(), queryMsg("SELECT 1")); ok {
		t.Error("a disabled rule fired")
	}
	mustAdd(t, e, Rule{Name: "conn-off", Enabled: boolPtr(false), Match: Match{Event: "connect"}, Action: Action{Type: "refuse"}})
	rs = e.Policy("p").Rules()
	if rs.WantsConnect() {
		t.Error("a disabled connect rule makes the snapshot want connects")
	}
	if _, ok := rs.DecideEvent(baseSession(), EventConnect); ok {
		t.Error("a disabled connect rule fired")
	}
	// It is still listed.
	if n := len(e.Rules()); n != 2 {
		t.Errorf("Rules() lists %d rules, want 2", n)
	}

	// Enabling it by Put makes it fire.
	if _, err := e.Put(Rule{Name: "off", Enabled: boolPtr(true), Match: Match{SQL: "select"}, Action: Action{Type: "drop"}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Policy("p").Rules().Decide(baseSession(), queryMsg("SELECT 1")); !ok {
		t.Error("the rule did not fire once enabled")
	}
}

func TestProxyScope(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "only-a", Proxy: "a", Match: Match{SQL: "select"}, Action: Action{Type: "drop"}})
	mustAdd(t, e, Rule{Name: "every", Match: Match{Tag: "COMMIT"}, Action: Action{Type: "drop"}})
	a, b := e.Policy("a").Rules(), e.Policy("b").Rules()
	s := baseSession()

	if v, ok := a.Decide(s, queryMsg("SELECT 1")); !ok || v.Rule != "only-a" {
		t.Errorf("proxy a: %+v %v, want only-a", v, ok)
	}
	if _, ok := b.Decide(s, queryMsg("SELECT 1")); ok {
		t.Error("a rule for proxy a fired on proxy b")
	}
	if b.Wants(ClientToServer, 'Q') {
		t.Error("proxy b wants queries though only proxy a's rule looks at them")
	}
	for name, rs := range map[string]*RuleSet{"a": a, "b": b} {
		if v, ok := rs.Decide(s, tagMsg("COMMIT")); !ok || v.Rule != "every" {
			t.Errorf("proxy %s: rule without proxy did not fire: %+v %v", name, v, ok)
		}
	}
	// A policy created after the rules sees them too.
	if v, ok := e.Policy("late").Rules().Decide(s, tagMsg("COMMIT")); !ok || v.Rule != "every" {
		t.Errorf("late proxy: %+v %v", v, ok)
	}
	// Policy returns the same view each time.
	if e.Policy("a") != e.Policy("a") {
		t.Error("Policy(a) returned two different views")
	}
	// Events record the proxy that decided.
	evs := e.Events(0)
	if len(evs) == 0 || evs[0].Proxy != "a" {
		t.Errorf("events %+v, want the first from proxy a", evs)
	}
}

func TestFirstMatchingRuleWins(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "first", Match: Match{SQL: "accounts"}, Action: Action{Type: "drop"}})
	mustAdd(t, e, Rule{Name: "second", Match: Match{Statement: StringList{"select"}}, Action: Action{Type: "error", SQLState: "40001"}})
	mustAdd(t, e, Rule{Name: "third", Match: Match{}, Action: Action{Type: "delay", Delay: Duration(time.Millisecond)}})
	rs := e.Policy("p").Rules()
	s := baseSession()

	tests := []struct {
		sql    string
		rule   string
		action ActionKind
	}{
		{"SELECT * FROM accounts", "first", ActDrop},
		{"SELECT * FROM tellers", "second", ActError},
		{"UPDATE tellers SET x = 1", "third", ActDelay},
		{"UPDATE accounts SET x = 1", "first", ActDrop},
	}
	for _, tt := range tests {
		v, ok := rs.Decide(s, queryMsg(tt.sql))
		if !ok || v.Rule != tt.rule || v.Action != tt.action {
			t.Errorf("Decide(%q) = %+v %v, want rule %s action %v", tt.sql, v, ok, tt.rule, tt.action)
		}
	}

	// A later Put of the first rule keeps its place in the order.
	if _, err := e.Put(Rule{Name: "first", Match: Match{SQL: "accounts"}, Action: Action{Type: "disconnect"}}); err != nil {
		t.Fatal(err)
	}
	if v, ok := e.Policy("p").Rules().Decide(s, queryMsg("SELECT * FROM accounts")); !ok || v.Rule != "first" || v.Action != ActDisconnect {
		t.Errorf("after Put: %+v %v, want first/disconnect", v, ok)
	}

	// A rule that matches but does not fire (here: its limit is used up)
	// lets the next matching rule decide.
	e2 := newTestEngine(t, Options{})
	mustAdd(t, e2, Rule{Name: "once", Match: Match{SQL: "x"}, Action: Action{Type: "drop"}, Limits: Limits{Times: 1}})
	mustAdd(t, e2, Rule{Name: "always", Match: Match{SQL: "x"}, Action: Action{Type: "disconnect"}})
	rs2 := e2.Policy("p").Rules()
	if v, _ := rs2.Decide(s, queryMsg("x")); v.Rule != "once" {
		t.Errorf("first decision by %q, want once", v.Rule)
	}
	if v, _ := rs2.Decide(s, queryMsg("x")); v.Rule != "always" {
		t.Errorf("second decision by %q, want always", v.Rule)
	}
}

func TestVerdictFields(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "err", Match: Match{SQL: "^err"}, Action: Action{Type: "error", SQLState: "40P01", Message: "deadlock (injected)"}})
	mustAdd(t, e, Rule{Name: "disc", Match: Match{SQL: "^disc"}, Action: Action{Type: "disconnect", When: "after", Side: "server", Close: "rst"}})
	mustAdd(t, e, Rule{Name: "hang", Match: Match{SQL: "^hang"}, Action: Action{Type: "hang", Duration: Duration(3 * time.Second)}})
	mustAdd(t, e, Rule{Name: "part", Match: Match{SQL: "^part"}, Action: Action{Type: "partition"}})
	mustAdd(t, e, Rule{Name: "tagerr", Match: Match{Tag: "COMMIT"}, Action: Action{Type: "error", SQLState: "40001", Severity: "FATAL"}})
	rs := e.Policy("p").Rules()
	s := baseSession()

	v, ok := rs.Decide(s, queryMsg("err"))
	if !ok || v.Action != ActError || v.After || v.Error == nil || *v.Error != (ErrorSpec{Severity: "ERROR", Code: "40P01", Message: "deadlock (injected)"}) {
		t.Errorf("error verdict %+v (error %+v)", v, v.Error)
	}
	v, ok = rs.Decide(s, queryMsg("disc"))
	if !ok || v.Action != ActDisconnect || !v.After || v.Side != SideServer || !v.Reset {
		t.Errorf("disconnect verdict %+v", v)
	}
	v, ok = rs.Decide(s, queryMsg("hang"))
	if !ok || v.Action != ActHang || v.Duration != 3*time.Second || v.Released == nil {
		t.Errorf("hang verdict %+v", v)
	}
	v, ok = rs.Decide(s, queryMsg("part"))
	if !ok || v.Action != ActPartition || v.Duration != 0 {
		t.Errorf("partition verdict %+v", v)
	}
	v, ok = rs.Decide(s, tagMsg("COMMIT"))
	if !ok || v.Action != ActError || !v.After || v.Error == nil || v.Error.Severity != "FATAL" || v.Error.Code != "40001" {
		t.Errorf("error on a tag %+v (error %+v)", v, v.Error)
	}
}

func TestDecideEvent(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "refuse-admin", Match: Match{Event: "connect", User: "admin"}, Action: Action{Type: "refuse", SQLState: "53300", Message: "too many"}})
	mustAdd(t, e, Rule{Name: "slow", Match: Match{Event: "connect", ClientCIDR: "10.0.0.0/8"}, Action: Action{Type: "slow_connect", Delay: Duration(time.Second)}})
	mustAdd(t, e, Rule{Name: "drop-cancel", Match: Match{Event: "cancel"}, Action: Action{Type: "drop"}})
	rs := e.Policy("p").Rules()
	if !rs.WantsConnect() || !rs.WantsCancel() {
		t.Fatal("event rules not wanted")
	}
	for typ := 0; typ < 256; typ++ {
		if rs.Wants(ClientToServer, byte(typ)) || rs.Wants(ServerToClient, byte(typ)) {
			t.Fatalf("event rules make the snapshot want message %q", byte(typ))
		}
	}

	admin := baseSession()
	admin.User = "admin"
	v, ok := rs.DecideEvent(admin, EventConnect)
	if !ok || v.Rule != "refuse-admin" || v.Action != ActRefuse || v.Error == nil || v.Error.Severity != "FATAL" || v.Error.Code != "53300" {
		t.Errorf("admin connect: %+v %v", v, ok)
	}
	v, ok = rs.DecideEvent(baseSession(), EventConnect)
	if !ok || v.Rule != "slow" || v.Action != ActSlowConnect || v.Delay != time.Second {
		t.Errorf("app connect: %+v %v", v, ok)
	}
	outside := baseSession()
	outside.Client = netip.MustParseAddr("192.168.0.1")
	if v, ok := rs.DecideEvent(outside, EventConnect); ok {
		t.Errorf("connect from outside the CIDR fired: %+v", v)
	}
	v, ok = rs.DecideEvent(baseSession(), EventCancel)
	if !ok || v.Rule != "drop-cancel" || v.Action != ActDrop {
		t.Errorf("cancel: %+v %v", v, ok)
	}
	if _, ok := rs.DecideEvent(baseSession(), EventNone); ok {
		t.Error("EventNone matched a rule")
	}
	// A message rule does not fire for events.
	e2 := newTestEngine(t, Options{})
	mustAdd(t, e2, Rule{Name: "m", Action: Action{Type: "disconnect"}})
	if _, ok := e2.Policy("p").Rules().DecideEvent(baseSession(), EventConnect); ok {
		t.Error("a message rule fired on a connect event")
	}
	// An event rule does not fire for messages.
	if _, ok := rs.Decide(baseSession(), queryMsg("SELECT 1")); ok {
		t.Error("an event rule fired on a message")
	}

	evs := e.Events(0)
	if len(evs) != 3 || evs[0].Message != "connect" || evs[2].Message != "cancel request" {
		t.Errorf("event summaries: %+v", evs)
	}
}

// TestClientCIDRMappedPrefix: a client_cidr written in IPv4-mapped IPv6
// form ("::ffff:10.0.0.0/104") must either be refused when the rule is
// compiled or match the clients it names. The session's address is
// unmapped before the check, so an accepted mapped prefix can never match
// any client — not even "::ffff:10.1.2.3" itself.
func TestClientCIDRMappedPrefix(t *testing.T) {
	r := Rule{Name: "r", Match: Match{ClientCIDR: "::ffff:10.0.0.0/104"}, Action: Action{Type: "drop"}}
	if _, err := compile(r); err != nil {
		if f := fieldOf(t, err); f != "match.client_cidr" {
			t.Errorf("refused on field %q, want match.client_cidr", f)
		}
		return
	}
	e := newTestEngine(t, Options{})
	mustAdd(t, e, r)
	rs := e.Policy("p").Rules()
	for _, addr := range []string{"::ffff:10.1.2.3", "10.1.2.3"} {
		s := baseSession()
		s.Client = netip.MustParseAddr(addr)
		if _, ok := rs.Decide(s, queryMsg("SELECT 1")); !ok {
			t.Errorf("client_cidr %q was accepted but does not match client %s", r.Match.ClientCIDR, addr)
		}
	}
	s := baseSession()
	s.Client = netip.MustParseAddr("192.168.1.1")
	if _, ok := rs.Decide(s, queryMsg("SELECT 1")); ok {
		t.Error("client_cidr ::ffff:10.0.0.0/104 matched 192.168.1.1")
	}
}

// A client range written as IPv4-mapped IPv6 at exactly /96 is every IPv4
// client.
func TestClientCIDRMappedAll(t *testing.T) {
	e := newTestEngine(t, Options{})
	mustAdd(t, e, Rule{Name: "r", Match: Match{ClientCIDR: "::ffff:0.0.0.0/96"}, Action: Action{Type: "drop"}})
	rs := e.Policy("p").Rules()
	for addr, want := range map[string]bool{"10.1.2.3": true, "192.168.1.1": true, "2001:db8::1": false} {
		s := baseSession()
		s.Client = netip.MustParseAddr(addr)
		if _, ok := rs.Decide(s, queryMsg("SELECT 1")); ok != want {
			t.Errorf("client %s: fired %v, want %v", addr, ok, want)
		}
	}
}

func TestDirectionNames(t *testing.T) {
	if ClientToServer.String() != "client_to_server" || ServerToClient.String() != "server_to_client" {
		t.Errorf("directions are named %q and %q", ClientToServer, ServerToClient)
	}
}

// A tag matches whatever its case, up to the end or a space.
func TestTagMatches(t *testing.T) {
	for _, tt := range []struct {
		tag, want string
		match     bool
	}{
		{"ANALYZE", "ANALYZE", true},
		{"analyze", "ANALYZE", true},
		{"Analyze", "ANALYZE", true},
		{"INSERT 0 1", "INSERT", true},
		{"INSERTED", "INSERT", false},
		{"INS", "INSERT", false},
		{"COMMIT", "COMMIT PREPARED", false},
	} {
		if got := tagMatches([]byte(tt.tag), tt.want); got != tt.match {
			t.Errorf("tagMatches(%q, %q) = %v, want %v", tt.tag, tt.want, got, tt.match)
		}
	}
}
