package faults

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A duration in milliseconds reads as that many, up to what a
// time.Duration holds; beyond, it is an error rather than a wrapped-around
// negative duration (a jitter, expiry or hang that silently means nothing).
func TestDurationJSON(t *testing.T) {
	for _, tt := range []struct {
		json string
		want time.Duration
		err  string
	}{
		{`100`, 100 * time.Millisecond, ""},
		{`0.5`, 500 * time.Microsecond, ""},
		{`"2s"`, 2 * time.Second, ""},
		{`9e12`, 9e12 * time.Millisecond, ""},
		{`9223372036855`, 0, "duration 9.223372036855e+12 ms is too long"},
		{`1e300`, 0, "duration 1e+300 ms is too long"},
		{`-1`, 0, "duration -1 is negative"},
		{`0`, 0, ""},
		{`"0s"`, 0, ""},
		{`9223372036854.775808`, 0, "ms is too long"}, // exactly 1<<63 ns
	} {
		var d Duration
		err := json.Unmarshal([]byte(tt.json), &d)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s: got %v, %v; want the error %q", tt.json, time.Duration(d), err, tt.err)
		case tt.err == "" && (err != nil || time.Duration(d) != tt.want):
			t.Errorf("%s: got %v, %v; want %v", tt.json, time.Duration(d), err, tt.want)
		}
	}
}

// In YAML a duration is written with its unit; zero is a duration too.
func TestDurationYAML(t *testing.T) {
	rules, err := ParseRules([]byte("name: d\nmatch: {sql: x}\naction: {type: delay, delay: 50ms, jitter: 0s}\nlimits: {expires: 1m}\n"), "d.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if a := rules[0].Action; time.Duration(a.Delay) != 50*time.Millisecond || a.Jitter != 0 || time.Duration(rules[0].Limits.Expires) != time.Minute {
		t.Errorf("rule %+v", rules[0])
	}
	for _, bad := range []string{"delay: 50", "delay: -5ms", "delay: [1]"} {
		if _, err := ParseRules([]byte("name: d\nmatch: {sql: x}\naction: {type: delay, "+bad+"}\n"), "d.yaml"); err == nil || !strings.Contains(err.Error(), "duration") {
			t.Errorf("%s: %v, want a duration error", bad, err)
		}
	}
}
