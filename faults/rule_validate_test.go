package faults

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCompileFieldErrors(t *testing.T) {
	ms := Duration(10 * time.Millisecond)
	delay := Action{Type: "delay", Delay: ms}
	tests := []struct {
		name  string
		rule  Rule
		field string
	}{
		{"empty name", Rule{Name: "", Action: delay}, "name"},
		{"blank name", Rule{Name: "  \t", Action: delay}, "name"},
		{"unknown event", Rule{Name: "r", Match: Match{Event: "disconnect"}, Action: delay}, "match.event"},
		{"unknown direction", Rule{Name: "r", Match: Match{Direction: "sideways"}, Action: delay}, "match.direction"},
		{"unknown message first", Rule{Name: "r", Match: Match{Message: StringList{"bogus"}}, Action: delay}, "match.message[0]"},
		{"unknown message second", Rule{Name: "r", Match: Match{Message: StringList{"query", "bogus"}}, Action: delay}, "match.message[1]"},
		{"server message in client direction", Rule{Name: "r", Match: Match{Direction: "client_to_server", Message: StringList{"query", "command_complete"}}, Action: delay}, "match.message[1]"},
		{"client message in server direction", Rule{Name: "r", Match: Match{Direction: "server_to_client", Message: StringList{"parse"}}, Action: delay}, "match.message[0]"},
		{"mixed directions by default", Rule{Name: "r", Match: Match{Message: StringList{"command_complete", "query"}}, Action: delay}, "match.message[1]"},
		{"bad sql regex", Rule{Name: "r", Match: Match{SQL: "(unclosed"}, Action: delay}, "match.sql"},
		{"bad case-sensitive sql regex", Rule{Name: "r", Match: Match{SQL: "[a-", SQLCaseSensitive: true}, Action: delay}, "match.sql"},
		{"unknown statement first", Rule{Name: "r", Match: Match{Statement: StringList{"merge"}}, Action: delay}, "match.statement[0]"},
		{"unknown statement third", Rule{Name: "r", Match: Match{Statement: StringList{"select", "insert", "SELECT"}}, Action: delay}, "match.statement[2]"},
		{"statement none", Rule{Name: "r", Match: Match{Statement: StringList{"none"}}, Action: delay}, "match.statement[0]"},
		{"unknown tx_status", Rule{Name: "r", Match: Match{TxStatus: StringList{"idle", "busy"}}, Action: delay}, "match.tx_status[1]"},
		{"bad application_name regex", Rule{Name: "r", Match: Match{ApplicationName: "*psql"}, Action: delay}, "match.application_name"},
		{"bad client_cidr", Rule{Name: "r", Match: Match{ClientCIDR: "10.0.0.0/33"}, Action: delay}, "match.client_cidr"},
		{"bare address as client_cidr", Rule{Name: "r", Match: Match{ClientCIDR: "10.0.0.1"}, Action: delay}, "match.client_cidr"},
		{"missing action type", Rule{Name: "r", Action: Action{}}, "action.type"},
		{"unknown action type", Rule{Name: "r", Action: Action{Type: "explode"}}, "action.type"},
		{"action type is case-sensitive", Rule{Name: "r", Action: Action{Type: "Delay", Delay: ms}}, "action.type"},
		{"unknown when", Rule{Name: "r", Action: Action{Type: "disconnect", When: "later"}}, "action.when"},
		{"delay without delay", Rule{Name: "r", Action: Action{Type: "delay"}}, "action.delay"},
		{"negative delay", Rule{Name: "r", Action: Action{Type: "delay", Delay: -ms}}, "action.delay"},
		{"slow_connect without delay", Rule{Name: "r", Match: Match{Event: "connect"}, Action: Action{Type: "slow_connect"}}, "action.delay"},
		{"unknown side", Rule{Name: "r", Action: Action{Type: "disconnect", Side: "middle"}}, "action.side"},
		{"unknown close", Rule{Name: "r", Action: Action{Type: "disconnect", Close: "slam"}}, "action.close"},
		{"error without sqlstate", Rule{Name: "r", Action: Action{Type: "error"}}, "action.sqlstate"},
		{"error with message but no sqlstate", Rule{Name: "r", Action: Action{Type: "error", Message: "boom"}}, "action.sqlstate"},
		{"refuse with message but no sqlstate", Rule{Name: "r", Match: Match{Event: "connect"}, Action: Action{Type: "refuse", Message: "go away"}}, "action.sqlstate"},
		{"sqlstate too short", Rule{Name: "r", Action: Action{Type: "error", SQLState: "4000"}}, "action.sqlstate"},
		{"sqlstate too long", Rule{Name: "r", Action: Action{Type: "error", SQLState: "400011"}}, "action.sqlstate"},
		{"sqlstate lower case", Rule{Name: "r", Action: Action{Type: "error", SQLState: "4000a"}}, "action.sqlstate"},
		{"sqlstate all lower case", Rule{Name: "r", Action: Action{Type: "error", SQLState: "xxabc"}}, "action.sqlstate"},
		{"unknown severity", Rule{Name: "r", Action: Action{Type: "error", SQLState: "40001", Severity: "WARNING"}}, "action.severity"},
		{"panic severity", Rule{Name: "r", Action: Action{Type: "error", SQLState: "40001", Severity: "PANIC"}}, "action.severity"},
		{"probability above one", Rule{Name: "r", Action: delay, Limits: Limits{Probability: floatPtr(1.5)}}, "limits.probability"},
		{"probability below zero", Rule{Name: "r", Action: delay, Limits: Limits{Probability: floatPtr(-0.1)}}, "limits.probability"},
		{"probability NaN", Rule{Name: "r", Action: delay, Limits: Limits{Probability: floatPtr(math.NaN())}}, "limits.probability"},
		{"negative skip", Rule{Name: "r", Action: delay, Limits: Limits{Skip: -1}}, "limits.skip"},
		{"negative times", Rule{Name: "r", Action: delay, Limits: Limits{Times: -3}}, "limits.times"},

		// Event rules cannot match messages.
		{"event with message", Rule{Name: "r", Match: Match{Event: "connect", Message: StringList{"query"}}, Action: Action{Type: "refuse"}}, "match.event"},
		{"event with sql", Rule{Name: "r", Match: Match{Event: "connect", SQL: "x"}, Action: Action{Type: "refuse"}}, "match.event"},
		{"event with statement", Rule{Name: "r", Match: Match{Event: "cancel", Statement: StringList{"select"}}, Action: Action{Type: "drop"}}, "match.event"},
		{"event with tag", Rule{Name: "r", Match: Match{Event: "connect", Tag: "COMMIT"}, Action: Action{Type: "refuse"}}, "match.event"},
		{"event with tx_status", Rule{Name: "r", Match: Match{Event: "cancel", TxStatus: StringList{"idle"}}, Action: Action{Type: "drop"}}, "match.event"},
		{"event with direction", Rule{Name: "r", Match: Match{Event: "connect", Direction: "client_to_server"}, Action: Action{Type: "refuse"}}, "match.event"},

		// Which actions fit which events.
		{"refuse on a message", Rule{Name: "r", Action: Action{Type: "refuse"}}, "action.type"},
		{"slow_connect on a message", Rule{Name: "r", Action: Action{Type: "slow_connect", Delay: ms}}, "action.type"},
		{"refuse on cancel", Rule{Name: "r", Match: Match{Event: "cancel"}, Action: Action{Type: "refuse"}}, "action.type"},
		{"slow_connect on cancel", Rule{Name: "r", Match: Match{Event: "cancel"}, Action: Action{Type: "slow_connect", Delay: ms}}, "action.type"},
		{"error on connect", Rule{Name: "r", Match: Match{Event: "connect"}, Action: Action{Type: "error", SQLState: "40001"}}, "action.type"},
		{"hang on connect", Rule{Name: "r", Match: Match{Event: "connect"}, Action: Action{Type: "hang"}}, "action.type"},
		{"disconnect on cancel", Rule{Name: "r", Match: Match{Event: "cancel"}, Action: Action{Type: "disconnect"}}, "action.type"},

		// "after" applies to disconnect and error only.
		{"delay after", Rule{Name: "r", Action: Action{Type: "delay", When: "after", Delay: ms}}, "action.when"},
		{"drop after", Rule{Name: "r", Action: Action{Type: "drop", When: "after"}}, "action.when"},
		{"hang after", Rule{Name: "r", Action: Action{Type: "hang", When: "after"}}, "action.when"},
		{"partition after", Rule{Name: "r", Action: Action{Type: "partition", When: "after"}}, "action.when"},

		// Direction conflicts.
		{"sql on server messages", Rule{Name: "r", Match: Match{Direction: "server_to_client", SQL: "x"}, Action: delay}, "match.sql"},
		{"sql with a server message", Rule{Name: "r", Match: Match{Message: StringList{"command_complete"}, SQL: "x"}, Action: delay}, "match.sql"},
		{"sql with a tag", Rule{Name: "r", Match: Match{Tag: "COMMIT", SQL: "x"}, Action: delay}, "match.sql"},
		{"tag on client messages", Rule{Name: "r", Match: Match{Direction: "client_to_server", Tag: "COMMIT"}, Action: delay}, "match.tag"},
		{"tag with a client message", Rule{Name: "r", Match: Match{Direction: "client_to_server", Message: StringList{"query"}, Tag: "COMMIT"}, Action: delay}, "match.tag"},

		// Fingerprints.
		{"blank fingerprint", Rule{Name: "r", Match: Match{Fingerprint: " \n\t"}, Action: delay}, "match.fingerprint"},
		{"fingerprint on server messages", Rule{Name: "r", Match: Match{Direction: "server_to_client", Fingerprint: "commit"}, Action: delay}, "match.fingerprint"},
		{"fingerprint with a tag", Rule{Name: "r", Match: Match{Tag: "COMMIT", Fingerprint: "commit"}, Action: delay}, "match.fingerprint"},
		{"fingerprint with a server message", Rule{Name: "r", Match: Match{Message: StringList{"ready_for_query"}, Fingerprint: "commit"}, Action: delay}, "match.fingerprint"},
		{"event with fingerprint", Rule{Name: "r", Match: Match{Event: "connect", Fingerprint: "commit"}, Action: Action{Type: "refuse"}}, "match.event"},
		{"toxic with fingerprint", Rule{Name: "r", Match: Match{Fingerprint: "commit"}, Action: Action{Type: "latency", Attributes: map[string]any{"latency": 1}}}, "match"},

		// when: result is a disconnect at a client statement's result.
		{"error at result", Rule{Name: "r", Match: Match{Statement: StringList{"commit"}}, Action: Action{Type: "error", SQLState: "40001", When: "result"}}, "action.when"},
		{"delay at result", Rule{Name: "r", Action: Action{Type: "delay", When: "result", Delay: ms}}, "action.when"},
		{"result on a server message", Rule{Name: "r", Match: Match{Tag: "COMMIT"}, Action: Action{Type: "disconnect", When: "result"}}, "action.when"},
		{"result on connect", Rule{Name: "r", Match: Match{Event: "connect"}, Action: Action{Type: "disconnect", When: "result"}}, "action.when"},
		{"result on a sync", Rule{Name: "r", Match: Match{Message: StringList{"sync"}}, Action: Action{Type: "disconnect", When: "result"}}, "match.message"},
		{"result on a parse", Rule{Name: "r", Match: Match{Message: StringList{"execute", "parse"}, SQL: "x"}, Action: Action{Type: "disconnect", When: "result"}}, "match.message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compile(tt.rule)
			if err == nil {
				t.Fatalf("compile accepted %+v; want an error on %s", tt.rule, tt.field)
			}
			if got := fieldOf(t, err); got != tt.field {
				t.Errorf("error %q names field %q, want %q", err, got, tt.field)
			}
			if !strings.HasPrefix(err.Error(), tt.field+": ") {
				t.Errorf("Error() = %q, want it to start with %q", err, tt.field+": ")
			}

			// Problems lists it first: the first problem is the error.
			if ps := Problems(tt.rule); len(ps) == 0 || *ps[0] != *fieldErrOf(err) {
				t.Errorf("Problems = %v, want %q first", ps, err)
			}

			// The engine reports the same *FieldError, and adds nothing.
			e := newTestEngine(t, Options{})
			_, err = e.Add(tt.rule)
			if got := fieldOf(t, err); got != tt.field {
				t.Errorf("Add: field %q, want %q", got, tt.field)
			}
			_, err = e.Put(tt.rule)
			if got := fieldOf(t, err); got != tt.field {
				t.Errorf("Put: field %q, want %q", got, tt.field)
			}
			if n := len(e.Rules()); n != 0 {
				t.Errorf("an invalid rule was stored: %d rules", n)
			}
		})
	}
}

// TestCompileAfterOnlyDisconnectError: "after" applies to disconnect and
// error only — which is what the error message of action.when says. A
// connect event has no message to act after, so refuse and slow_connect
// with when: after must be refused too.
func TestCompileAfterOnlyDisconnectError(t *testing.T) {
	ms := Duration(time.Millisecond)
	tests := []struct {
		name string
		rule Rule
	}{
		{"refuse after", Rule{Name: "r", Match: Match{Event: "connect"}, Action: Action{Type: "refuse", When: "after"}}},
		{"slow_connect after", Rule{Name: "r", Match: Match{Event: "connect"}, Action: Action{Type: "slow_connect", When: "after", Delay: ms}}},
		{"delay cancel after", Rule{Name: "r", Match: Match{Event: "cancel"}, Action: Action{Type: "delay", When: "after", Delay: ms}}},
		{"drop cancel after", Rule{Name: "r", Match: Match{Event: "cancel"}, Action: Action{Type: "drop", When: "after"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compile(tt.rule)
			if err == nil {
				t.Fatalf("compile accepted action %q with when: after", tt.rule.Action.Type)
			}
			if got := fieldOf(t, err); got != "action.when" {
				t.Errorf("field %q, want action.when", got)
			}
		})
	}
}

func TestCompileValid(t *testing.T) {
	ms := Duration(10 * time.Millisecond)
	tests := []struct {
		name  string
		rule  Rule
		check func(t *testing.T, c *compiledRule)
	}{
		{"minimal delay", Rule{Name: "r", Action: Action{Type: "delay", Delay: ms}}, func(t *testing.T, c *compiledRule) {
			if c.action != ActDelay || c.delay != 10*time.Millisecond || c.after || !c.enabled || c.probability != 1 {
				t.Errorf("got action %v delay %v after %v enabled %v p %v", c.action, c.delay, c.after, c.enabled, c.probability)
			}
		}},
		{"disabled", Rule{Name: "r", Enabled: boolPtr(false), Action: Action{Type: "drop"}}, func(t *testing.T, c *compiledRule) {
			if c.enabled {
				t.Error("Enabled=false compiled as enabled")
			}
		}},
		{"explicit enabled", Rule{Name: "r", Enabled: boolPtr(true), Action: Action{Type: "drop"}}, func(t *testing.T, c *compiledRule) {
			if !c.enabled {
				t.Error("Enabled=true compiled as disabled")
			}
		}},
		{"when before", Rule{Name: "r", Action: Action{Type: "drop", When: "before"}}, nil},
		{"disconnect defaults", Rule{Name: "r", Action: Action{Type: "disconnect"}}, func(t *testing.T, c *compiledRule) {
			if c.side != SideBoth || c.reset {
				t.Errorf("side %v reset %v, want both/fin", c.side, c.reset)
			}
		}},
		{"disconnect after client rst", Rule{Name: "r", Action: Action{Type: "disconnect", When: "after", Side: "client", Close: "rst"}}, func(t *testing.T, c *compiledRule) {
			if c.side != SideClient || !c.reset || !c.after {
				t.Errorf("side %v reset %v after %v", c.side, c.reset, c.after)
			}
		}},
		{"disconnect server fin", Rule{Name: "r", Action: Action{Type: "disconnect", Side: "server", Close: "fin"}}, func(t *testing.T, c *compiledRule) {
			if c.side != SideServer || c.reset {
				t.Errorf("side %v reset %v", c.side, c.reset)
			}
		}},
		{"error defaults", Rule{Name: "r", Action: Action{Type: "error", SQLState: "40001"}}, func(t *testing.T, c *compiledRule) {
			if c.errSpec == nil || c.errSpec.Severity != "ERROR" || c.errSpec.Code != "40001" || !strings.Contains(c.errSpec.Message, "r") {
				t.Errorf("errSpec %+v", c.errSpec)
			}
			if c.after {
				t.Error("a client-side error defaults to before")
			}
		}},
		{"error lower-case severity", Rule{Name: "r", Action: Action{Type: "error", SQLState: "57P01", Severity: "fatal", Message: "bye"}}, func(t *testing.T, c *compiledRule) {
			if c.errSpec == nil || c.errSpec.Severity != "FATAL" || c.errSpec.Message != "bye" || c.errSpec.Code != "57P01" {
				t.Errorf("errSpec %+v", c.errSpec)
			}
		}},
		{"error on server messages is after", Rule{Name: "r", Match: Match{Tag: "COMMIT"}, Action: Action{Type: "error", SQLState: "40001"}}, func(t *testing.T, c *compiledRule) {
			if !c.after {
				t.Error("an error replacing a server message must be carried out after")
			}
		}},
		{"refuse by closing", Rule{Name: "r", Match: Match{Event: "connect"}, Action: Action{Type: "refuse"}}, func(t *testing.T, c *compiledRule) {
			if c.event != EventConnect || c.action != ActRefuse || c.errSpec != nil {
				t.Errorf("event %v action %v errSpec %+v", c.event, c.action, c.errSpec)
			}
		}},
		{"refuse with error is FATAL", Rule{Name: "r", Match: Match{Event: "connect"}, Action: Action{Type: "refuse", SQLState: "53300"}}, func(t *testing.T, c *compiledRule) {
			if c.errSpec == nil || c.errSpec.Severity != "FATAL" {
				t.Errorf("errSpec %+v", c.errSpec)
			}
		}},
		{"slow_connect", Rule{Name: "r", Match: Match{Event: "connect"}, Action: Action{Type: "slow_connect", Delay: ms}}, nil},
		{"disconnect on connect", Rule{Name: "r", Match: Match{Event: "connect"}, Action: Action{Type: "disconnect"}}, nil},
		{"drop cancel", Rule{Name: "r", Match: Match{Event: "cancel"}, Action: Action{Type: "drop"}}, func(t *testing.T, c *compiledRule) {
			if c.event != EventCancel {
				t.Errorf("event %v", c.event)
			}
		}},
		{"delay cancel", Rule{Name: "r", Match: Match{Event: "cancel"}, Action: Action{Type: "delay", Delay: ms}}, nil},
		{"event with session attributes", Rule{Name: "r", Match: Match{Event: "connect", User: "u", Database: "d", ApplicationName: "^psql$", ClientCIDR: "10.0.0.0/8"}, Action: Action{Type: "refuse"}}, nil},
		{"hang and partition", Rule{Name: "r", Action: Action{Type: "hang", Duration: Duration(time.Second)}}, func(t *testing.T, c *compiledRule) {
			if c.duration != time.Second {
				t.Errorf("duration %v", c.duration)
			}
		}},
		{"partition", Rule{Name: "r", Action: Action{Type: "partition"}}, nil},
		{"probability bounds", Rule{Name: "r", Action: Action{Type: "drop"}, Limits: Limits{Probability: floatPtr(0)}}, func(t *testing.T, c *compiledRule) {
			if c.probability != 0 {
				t.Errorf("probability %v, want 0 (an explicit 0 is not the default)", c.probability)
			}
		}},
		{"probability one", Rule{Name: "r", Action: Action{Type: "drop"}, Limits: Limits{Probability: floatPtr(1)}}, nil},
		{"client cidr is masked", Rule{Name: "r", Match: Match{ClientCIDR: "10.1.2.3/8"}, Action: Action{Type: "drop"}}, func(t *testing.T, c *compiledRule) {
			if !c.hasCIDR || c.cidr.String() != "10.0.0.0/8" {
				t.Errorf("cidr %v (has %v)", c.cidr, c.hasCIDR)
			}
		}},
		{"tag is normalised", Rule{Name: "r", Match: Match{Tag: "  insert "}, Action: Action{Type: "drop"}}, func(t *testing.T, c *compiledRule) {
			if c.tag != "INSERT" || c.dir != ServerToClient {
				t.Errorf("tag %q dir %v", c.tag, c.dir)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := compile(tt.rule)
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

// TestProblems: every independent problem of a rule is listed, in the
// order compile checks them; a check that depends on a field already found
// wrong adds nothing of its own.
func TestProblems(t *testing.T) {
	neg := Duration(-time.Millisecond)
	tests := []struct {
		name   string
		rule   Rule
		fields []string
	}{
		{"valid", Rule{Name: "r", Action: Action{Type: "drop"}}, nil},
		{"independent problems", Rule{
			Name:   "",
			Match:  Match{TxStatus: StringList{"busy"}, Statement: StringList{"merge", "select", "upsert"}},
			Action: Action{Type: "error", Severity: "PANIC"},
			Limits: Limits{Skip: -1, Times: -2},
		}, []string{"name", "match.statement[0]", "match.statement[2]", "match.tx_status[0]", "action.sqlstate", "action.severity", "limits.skip", "limits.times"}},
		{"unknown direction hides the messages' direction", Rule{Name: "r", Match: Match{Direction: "up", Message: StringList{"query", "command_complete"}, Tag: "COMMIT"}, Action: Action{Type: "drop"}}, []string{"match.direction"}},
		{"unknown event hides the action's fit", Rule{Name: "r", Match: Match{Event: "conect"}, Action: Action{Type: "refuse"}}, []string{"match.event"}},
		{"unknown action type hides the action's fields", Rule{Name: "r", Action: Action{Type: "explode", When: "sometime", Side: "middle"}, Limits: Limits{Times: -1}}, []string{"action.type", "limits.times"}},
		{"disconnect side and close", Rule{Name: "r", Action: Action{Type: "disconnect", Side: "middle", Close: "slam", When: "later"}}, []string{"action.when", "action.side", "action.close"}},
		{"attributes and a negative delay", Rule{Name: "r", Action: Action{Type: "delay", Delay: neg, Attributes: map[string]any{"latency": 1}}}, []string{"action.attributes", "action.delay"}},
		{"toxic with fields and bad attributes", Rule{Name: "r", Action: Action{Type: "latency", When: "after", Attributes: map[string]any{"latency": "soon"}}}, []string{"action", "action.attributes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := Problems(tt.rule)
			var got []string
			for _, p := range ps {
				got = append(got, p.Field)
				if p.Msg == "" {
					t.Errorf("%s: empty message", p.Field)
				}
			}
			if !slices.Equal(got, tt.fields) {
				t.Errorf("Problems fields %v, want %v\n%v", got, tt.fields, ps)
			}
			err := Validate(tt.rule)
			if len(ps) == 0 {
				if err != nil {
					t.Errorf("Validate: %v, yet no problems", err)
				}
				return
			}
			if fe := fieldErrOf(err); fe == nil || *fe != *ps[0] {
				t.Errorf("Validate = %v, want the first problem %v", err, ps[0])
			}
		})
	}
}

func fieldErrOf(err error) *FieldError {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe
	}
	return nil
}

func TestFieldErrorIsWrapped(t *testing.T) {
	// An error wrapping a *FieldError still yields the field.
	_, err := compile(Rule{Name: "r", Action: Action{Type: "error", SQLState: "abc"}})
	wrapped := errors.Join(errors.New("loading rules.yaml"), err)
	var fe *FieldError
	if !errors.As(wrapped, &fe) || fe.Field != "action.sqlstate" {
		t.Fatalf("errors.As through a wrapper: %v, %+v", wrapped, fe)
	}
	if fe.Msg == "" {
		t.Error("FieldError.Msg is empty")
	}
}
