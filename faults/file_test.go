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
