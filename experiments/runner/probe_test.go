package runner

import (
	"testing"
)

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
