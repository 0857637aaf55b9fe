package runner

import (
	"testing"

	"github.com/pgchaos/pgchaos/experiments"
)

// A probe's value meets its expectation as docs/experiments.md says:
// equals (numbers within tolerance, anything else as text), min and max
// (numbers only), each bound inclusive.
func TestProbeMeets(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	eq := func(v any) experiments.Expect { return experiments.Expect{Equals: v, HasEquals: true} }
	cases := []struct {
		name  string
		value any
		want  experiments.Expect
		tol   float64
		meets bool
	}{
		{"equal numbers", int64(3), eq(3), 0, true},
		{"different numbers", int64(3), eq(4), 0, false},
		{"number types differ", int32(3), eq(float64(3)), 0, true},
		{"within tolerance", float64(3.4), eq(3), 0.5, true},
		{"at the tolerance", float64(3.5), eq(3), 0.5, true},
		{"beyond tolerance", float64(3.6), eq(3), 0.5, false},
		{"below, within tolerance", int16(2), eq(3), 1, true},
		{"below, beyond tolerance", int(1), eq(3), 1, false},
		{"equal text", "ok", eq("ok"), 0, true},
		{"different text", "ko", eq("ok"), 0, false},
		{"text against a number", "3", eq(3), 0, true}, // compared as text
		{"null against a number", nil, eq(0), 0, false},
		{"at min", int64(5), experiments.Expect{Min: f(5)}, 0, true},
		{"below min", int64(4), experiments.Expect{Min: f(5)}, 0, false},
		{"at max", float32(5), experiments.Expect{Max: f(5)}, 0, true},
		{"above max", int64(6), experiments.Expect{Max: f(5)}, 0, false},
		{"between", int64(5), experiments.Expect{Min: f(1), Max: f(9)}, 0, true},
		{"text has no min", "7", experiments.Expect{Min: f(1)}, 0, false},
		{"text has no max", "7", experiments.Expect{Max: f(9)}, 0, false},
		{"null has no max", nil, experiments.Expect{Max: f(9)}, 0, false},
		{"equals and a bound", int64(5), experiments.Expect{Equals: 5, HasEquals: true, Max: f(4)}, 0, false},
	}
	for _, tc := range cases {
		if got := meets(tc.value, tc.want, tc.tol); got != tc.meets {
			t.Errorf("%s: meets(%#v, %+v, %v) = %v, want %v", tc.name, tc.value, tc.want, tc.tol, got, tc.meets)
		}
	}
}

// The exit status follows the most serious thing that happened.
func TestExitCode(t *testing.T) {
	cases := []struct {
		res  Result
		want int
	}{
		{Result{Pass: true}, ExitPass},
		{Result{Pass: false}, ExitFailed},
		{Result{Pass: false, SetupFailed: true}, ExitSetup},
		{Result{Pass: false, Interrupted: true}, ExitInterrupted},
		{Result{Pass: false, SetupFailed: true, Interrupted: true}, ExitInterrupted},
		{Result{Pass: true, SetupFailed: true}, ExitSetup},
	}
	for _, tc := range cases {
		if got := tc.res.ExitCode(); got != tc.want {
			t.Errorf("%+v: exit %d, want %d", tc.res, got, tc.want)
		}
	}
	for _, c := range [][2]int{{ExitPass, 0}, {ExitFailed, 1}, {ExitInvalid, 2}, {ExitSetup, 3}, {ExitInterrupted, 130}} {
		if c[0] != c[1] {
			t.Errorf("exit status %d, want %d as documented", c[0], c[1])
		}
	}
}
