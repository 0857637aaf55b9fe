package faults

import (
	"strings"
	"testing"
)

// A null item in a list of rules is an error at that item: the YAML decoder
// would drop it and name the rules after it by the wrong index and line.
func TestParseRulesNullItem(t *testing.T) {
	for _, tt := range []struct{ file, want string }{
		{"-", "rules.yaml:1: rules[0]: is empty (want a rule: name, match, action)"},
		{"- {name: a, action: {type: drop}}\n- ~\n- {name: b, action: {type: boom}}", "rules.yaml:2: rules[1]: is empty (want a rule: name, match, action)"},
		{"- &n null\n- *n", "rules.yaml:1: rules[0]: is empty (want a rule: name, match, action)"},
	} {
		rules, err := ParseRules([]byte(tt.file), "rules.yaml")
		if err == nil || err.Error() != tt.want {
			t.Errorf("ParseRules(%q) = %v, %v; want the error %s", tt.file, rules, err, tt.want)
		}
	}
	rules, err := ParseRules([]byte("- {name: a, action: {type: drop}}\n- {name: b, action: {type: boom}}"), "rules.yaml")
	if want := `rules.yaml:2: rules[1] (b): action.type: "boom"`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %v, %v; want %s...", rules, err, want)
	}
}

// A problem in a file of one rule is at the file's line; in a list, at the
// item's index as well.
func TestParseRulesWhere(t *testing.T) {
	for _, tt := range []struct{ file, want string }{
		{"name: c\naction: {type: error, sqlstate: 4001}\n", "r.yaml:1 (c): action.sqlstate"},
		{"- name: c\n  action: {type: error, sqlstate: 4001}\n", "r.yaml:1: rules[0] (c): action.sqlstate"},
		// An alias to a null item is an empty item too.
		{"- name: a\n  match: {user: &n null}\n  action: {type: drop}\n- *n\n", "r.yaml:2: rules[1]: is empty"},
	} {
		if _, err := ParseRules([]byte(tt.file), "r.yaml"); err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("ParseRules(%q): %v; want %s...", tt.file, err, tt.want)
		}
	}
	// One string where a list is wanted is a list of one.
	rules, err := ParseRules([]byte("name: s\nmatch: {statement: commit, tx_status: idle, message: query}\naction: {type: drop}\n"), "r.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if m := rules[0].Match; len(m.Statement) != 1 || m.Statement[0] != "commit" || len(m.TxStatus) != 1 || m.TxStatus[0] != "idle" || len(m.Message) != 1 {
		t.Errorf("match %+v", m)
	}
}
