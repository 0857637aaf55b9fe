package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// completionScript writes pgchaos completion SHELL's script to a file.
func completionScript(t *testing.T, shell string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"completion", shell}, &stdout, &stderr); code != 0 {
		t.Fatalf("completion %s: exit %d: %s", shell, code, stderr.String())
	}
	path := filepath.Join(t.TempDir(), "pgchaos."+shell)
	if err := os.WriteFile(path, stdout.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// needShell is the path of a shell the test runs; CI installs them all.
func needShell(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed (.ci/run installs it)", name)
		}
		t.Skipf("%s is not installed (apt-get install -y %s)", name, name)
	}
	return path
}

// bashComplete sources the script in a real bash and asks the function
// that `complete -p pgchaos` names for each command line's completions,
// as bash does on TAB at the line's end.
func bashComplete(t *testing.T, script string, lines ...string) [][]string {
	t.Helper()
	driver := `source "$1"; shift
spec=$(complete -p pgchaos) || exit 3
[[ $spec =~ -F\ ([^ ]+) ]] || exit 4
fn=${BASH_REMATCH[1]}
for line in "$@"; do
    read -ra COMP_WORDS <<<"$line"
    [[ $line == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1)) COMP_LINE=$line COMP_POINT=${#line}
    COMPREPLY=()
    "$fn" pgchaos "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    printf '%s\n' "${COMPREPLY[@]}" "--"
done
`
	out, err := exec.Command(needShell(t, "bash"), append([]string{"-c", driver, "bash", script}, lines...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	var got [][]string
	var cur []string
	for _, w := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		if w == "--" {
			got = append(got, cur)
			cur = nil
		} else if w != "" {
			cur = append(cur, w)
		}
	}
	if len(got) != len(lines) {
		t.Fatalf("bash answered %d completions for %d lines:\n%s", len(got), len(lines), out)
	}
	return got
}

func TestCompletionBash(t *testing.T) {
	script := completionScript(t, "bash")
	cases := []struct {
		line string
		want []string
	}{
		{"pgchaos fa", []string{"fault"}},
		{"pgchaos fault add --na", []string{"--name"}},
		{"pgchaos fault ", []string{"add", "list", "rm", "reset"}},
		{"pgchaos fault r", []string{"rm", "reset"}},
		{"pgchaos fault add --name x --sq", []string{"--sql", "--sql-case-sensitive", "--sqlstate"}},
		{"pgchaos fault add --name ", nil}, // a value: the shell's default
		{"pgchaos proxy --upstream", []string{"--upstream", "--upstream-ca", "--upstream-tls"}},
		{"pgchaos completion ", []string{"bash", "zsh", "fish"}},
		{"pgchaos demo pit", []string{"pitr"}},
		{"pgchaos version --j", []string{"--json"}},
		{"pgchaos help fa", []string{"fault"}},
	}
	var lines []string
	for _, c := range cases {
		lines = append(lines, c.line)
	}
	// Every command, and every command's every flag.
	lines = append(lines, "pgchaos ")
	paths := completionCommands()
	for _, c := range paths {
		lines = append(lines, "pgchaos "+c.path+" --")
	}
	got := bashComplete(t, script, lines...)
	for i, c := range cases {
		if !slices.Equal(got[i], c.want) {
			t.Errorf("%q<TAB>: %q, want %q", c.line, got[i], c.want)
		}
	}
	if all := got[len(cases)]; !slices.Equal(all, commands) {
		t.Errorf("pgchaos <TAB>: %q, want every command %q", all, commands)
	}
	for i, c := range paths {
		want := []string{"--help"}
		for _, f := range c.flags {
			want = append(want, "--"+f.Name)
		}
		slices.Sort(want)
		have := slices.Sorted(slices.Values(got[len(cases)+1+i]))
		if !slices.Equal(have, want) {
			t.Errorf("pgchaos %s --<TAB>: %q, want %q", c.path, have, want)
		}
	}
}

// The completion knows every command, and finds the flags of each that
// has any: a command whose flag set it cannot see would complete none.
func TestCompletionCoversEveryCommand(t *testing.T) {
	for _, name := range commands {
		if commandSummary[name] == "" {
			t.Errorf("command %q has no summary in commandSummary", name)
		}
		if name == "help" || name == "fault" {
			continue // help prints the usage; fault's subcommands have the flags
		}
		if _, ok := flagsOf(name); !ok {
			t.Errorf("pgchaos %s --help builds no flag set through newFlagSet: completion cannot see its flags", name)
		}
	}
	for _, s := range faultSubcommands {
		if flags, ok := flagsOf("fault", s[0]); !ok || !slices.ContainsFunc(flags, func(f *pflag.Flag) bool { return f.Name == "api" }) {
			t.Errorf("pgchaos fault %s: no --api among its completed flags", s[0])
		}
	}
	if len(commandSummary) != len(commands) {
		t.Errorf("commandSummary has %d entries, commands %d", len(commandSummary), len(commands))
	}
	if code := run([]string{"completion", "tcsh"}, &bytes.Buffer{}, &bytes.Buffer{}); code != 2 {
		t.Errorf("completion tcsh: exit %d, want 2", code)
	}
}

func TestCompletionZsh(t *testing.T) {
	zsh := needShell(t, "zsh")
	script := completionScript(t, "zsh")
	if out, err := exec.Command(zsh, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	// Loaded after compinit as a user's .zshrc would, it registers itself.
	out, err := exec.Command(zsh, "-f", "-c", `autoload -U compinit && compinit -u -D && source "$1" && print -r -- $_comps[pgchaos] && whence -w _pgchaos`, "zsh", script).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "_pgchaos\n_pgchaos: function") {
		t.Fatalf("zsh: %v\n%s", err, out)
	}
}

func TestCompletionFish(t *testing.T) {
	fish := needShell(t, "fish")
	script := completionScript(t, "fish")
	if out, err := exec.Command(fish, "--no-execute", script).CombinedOutput(); err != nil {
		t.Fatalf("fish --no-execute: %v\n%s", err, out)
	}
	complete := func(line string) []string {
		t.Helper()
		cmd := exec.Command(fish, "--no-config", "-c", `source $argv[1]; complete -C $argv[2]`, script, line)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fish: complete -C %q: %v\n%s", line, err, out)
		}
		var words []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if w, _, _ := strings.Cut(l, "\t"); w != "" {
				words = append(words, w)
			}
		}
		return words
	}
	for line, want := range map[string][]string{
		"pgchaos fa":                      {"fault"},
		"pgchaos fault add --na":          {"--name"},
		"pgchaos fault r":                 {"reset", "rm"},
		"pgchaos fault add --name x --sq": {"--sql", "--sql-case-sensitive", "--sqlstate"},
		"pgchaos completion z":            {"zsh"},
	} {
		if got := slices.Sorted(slices.Values(complete(line))); !slices.Equal(got, want) {
			t.Errorf("fish %q<TAB>: %q, want %q", line, got, want)
		}
	}
	if got := complete("pgchaos "); !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(commands))) {
		t.Errorf("fish pgchaos <TAB>: %q, want every command %q", got, commands)
	}
}
