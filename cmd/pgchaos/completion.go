package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/pflag"
)

// commandSummary is each command's line in the completion menus of zsh and
// fish. Every entry of commands has one.
var commandSummary = map[string]string{
	"proxy":       "relay PostgreSQL clients through fault rules; serve the control API",
	"fault":       "add, list and remove the fault rules of a running pgchaos",
	"sessions":    "list or kill the sessions of a running pgchaos",
	"events":      "show the faults that fired",
	"run":         "run an experiment file",
	"explore":     "try faults at every statement an application sends",
	"demo":        "run a shipped experiment on a throwaway PostgreSQL",
	"validate":    "check experiment files",
	"healthcheck": "exit 0 when a running pgchaos answers GET /healthz, 1 when not",
	"version":     "print the version, commit, build date and Go version",
	"completion":  "print a shell completion script: bash, zsh or fish",
	"help":        "show the usage, or a command's flags",
}

// faultSubcommands are pgchaos fault's, with their summaries.
var faultSubcommands = [][2]string{
	{"add", "add a fault rule"},
	{"list", "list the rules with their matched and fired counts"},
	{"rm", "remove a rule"},
	{"reset", "remove every rule"},
}

var completionShells = []string{"bash", "zsh", "fish"}

const completionUsage = `Usage:
  pgchaos completion bash|zsh|fish

Prints a script that completes pgchaos's commands, subcommands and flags:
  bash:  source <(pgchaos completion bash)        (in ~/.bashrc)
  zsh:   source <(pgchaos completion zsh)         (in ~/.zshrc, after compinit)
  fish:  pgchaos completion fish | source         (in ~/.config/fish/config.fish)
`

func runCompletion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pgchaos completion", stderr, completionUsage)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || !slices.Contains(completionShells, fs.Arg(0)) {
		return errUsage{errors.New("completion: name one shell: bash, zsh or fish")}
	}
	cmds := completionCommands()
	var script string
	switch fs.Arg(0) {
	case "bash":
		script = bashCompletion(cmds)
	case "zsh":
		script = zshCompletion(cmds)
	case "fish":
		script = fishCompletion(cmds)
	}
	_, err := io.WriteString(stdout, script)
	return err
}

// completionCommand is one command path ("proxy", "fault add") and what
// follows it.
type completionCommand struct {
	path    string
	summary string
	flags   []*pflag.Flag
	words   []string // the words its arguments may be; none: files
}

// flagRecorder is the stderr completionCommands runs a command's --help
// with: newFlagSet hands it the flag set it builds, and it discards output.
type flagRecorder struct{ sets []*pflag.FlagSet }

func (*flagRecorder) Write(p []byte) (int, error) { return len(p), nil }

// recordFlagSet tells w about fs when w is a flagRecorder.
func recordFlagSet(w io.Writer, fs *pflag.FlagSet) {
	if r, ok := w.(*flagRecorder); ok {
		r.sets = append(r.sets, fs)
	}
}

// flagsOf runs `pgchaos ARGS... --help` and returns the flags of the flag
// set it built (nil: it built none). A command parses its flags before it
// does anything, so --help only builds them.
func flagsOf(args ...string) ([]*pflag.Flag, bool) {
	rec := &flagRecorder{}
	run(append(slices.Clone(args), "--help"), io.Discard, rec)
	if len(rec.sets) == 0 {
		return nil, false
	}
	var flags []*pflag.Flag
	rec.sets[len(rec.sets)-1].VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			flags = append(flags, f)
		}
	})
	return flags, true
}

// completionCommands are every command of commands, in order, then the
// fault subcommands.
func completionCommands() []completionCommand {
	var out []completionCommand
	for _, name := range commands {
		c := completionCommand{path: name, summary: commandSummary[name]}
		c.flags, _ = flagsOf(name)
		switch name {
		case "fault":
			for _, s := range faultSubcommands {
				c.words = append(c.words, s[0])
			}
		case "help":
			c.words = commands
		case "completion":
			c.words = completionShells
		case "demo":
			c.words = shippedExperiments()
		}
		out = append(out, c)
	}
	for _, s := range faultSubcommands {
		flags, _ := flagsOf("fault", s[0])
		out = append(out, completionCommand{path: "fault " + s[0], summary: s[1], flags: flags})
	}
	return out
}

// takesValue: the flag needs a value (--name NAME), unlike a bool.
func takesValue(f *pflag.Flag) bool { return f.NoOptDefVal == "" }

func repeatable(f *pflag.Flag) bool {
	t := f.Value.Type()
	return strings.HasSuffix(t, "Array") || strings.HasSuffix(t, "Slice")
}

// summary is a flag's usage up to its first ";" or " (", for a menu.
func summary(usage string) string {
	for _, sep := range []string{"; ", " ("} {
		if i := strings.Index(usage, sep); i > 0 {
			usage = usage[:i]
		}
	}
	return usage
}

func bashCompletion(cmds []completionCommand) string {
	var b strings.Builder
	b.WriteString(`# bash completion for pgchaos. Load it with: source <(pgchaos completion bash)
_pgchaos() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local path="" flags="" values="" words=""
    if ((COMP_CWORD > 1)); then
        path="${COMP_WORDS[1]}"
        if [[ $path == fault ]] && ((COMP_CWORD > 2)); then path="fault ${COMP_WORDS[2]}"; fi
    fi
    case "$path" in
`)
	var top []string
	for _, c := range cmds {
		if !strings.Contains(c.path, " ") {
			top = append(top, c.path)
		}
	}
	fmt.Fprintf(&b, "    \"\") flags=\"--help --version\"; words=%q ;;\n", strings.Join(top, " "))
	for _, c := range cmds {
		flags := []string{"--help"}
		var values []string
		for _, f := range c.flags {
			flags = append(flags, "--"+f.Name)
			if takesValue(f) {
				values = append(values, "--"+f.Name)
			}
		}
		fmt.Fprintf(&b, "    %q) flags=%q; values=%q; words=%q ;;\n", c.path, strings.Join(flags, " "), strings.Join(values, " "), strings.Join(c.words, " "))
	}
	b.WriteString(`    esac
    # A flag's value, or an argument with no fixed words: the shell's
    # default (file names).
    if [[ -n $values && " $values " == *" $prev "* ]]; then return 0; fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    elif [[ -n $words ]]; then
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
    fi
}
complete -o default -F _pgchaos pgchaos
`)
	return b.String()
}

// zshQuote quotes s for a single-quoted zsh word.
func zshQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// zshDesc escapes s for the [description] of an _arguments spec or the
// description after a _describe item's colon.
func zshDesc(s string) string {
	return strings.NewReplacer(`\`, `\\`, "[", `\[`, "]", `\]`, ":", `\:`).Replace(s)
}

func zshCompletion(cmds []completionCommand) string {
	var b strings.Builder
	b.WriteString(`#compdef pgchaos
# zsh completion for pgchaos. Load it with: source <(pgchaos completion zsh)
# after compinit, or save it as _pgchaos in a directory of $fpath.
_pgchaos() {
    local cmd_path=${words[2]} shift_by=1
    local -a items
    if (( CURRENT == 2 )); then
        items=(
`)
	for _, c := range cmds {
		if !strings.Contains(c.path, " ") {
			fmt.Fprintf(&b, "            %s\n", zshQuote(c.path+":"+zshDesc(c.summary)))
		}
	}
	b.WriteString(`        )
        _describe -t commands 'pgchaos command' items
        return
    fi
    if [[ $cmd_path == fault ]]; then
        if (( CURRENT == 3 )); then
            items=(
`)
	for _, s := range faultSubcommands {
		fmt.Fprintf(&b, "                %s\n", zshQuote(s[0]+":"+zshDesc(s[1])))
	}
	b.WriteString(`            )
            _describe -t commands 'pgchaos fault subcommand' items
            return
        fi
        cmd_path="fault ${words[3]}"
        shift_by=2
    fi
    shift $shift_by words
    (( CURRENT -= shift_by ))
    case $cmd_path in
`)
	for _, c := range cmds {
		if c.path == "fault" {
			continue
		}
		var specs []string
		for _, f := range c.flags {
			spec := "--" + f.Name + "[" + zshDesc(summary(f.Usage)) + "]"
			if repeatable(f) {
				spec = "*" + spec
			}
			if takesValue(f) {
				spec += ":" + f.Name + ":_files"
			}
			specs = append(specs, zshQuote(spec))
		}
		rest := zshQuote("*:file:_files")
		if len(c.words) > 0 {
			rest = zshQuote("*:argument:(" + strings.Join(c.words, " ") + ")")
		}
		specs = append(specs, rest)
		fmt.Fprintf(&b, "        (%s)\n            _arguments -s \\\n                %s ;;\n", zshQuote(c.path), strings.Join(specs, " \\\n                "))
	}
	b.WriteString(`        (*) _files ;;
    esac
}
if [[ $funcstack[1] == _pgchaos ]]; then
    _pgchaos "$@"
else
    compdef _pgchaos pgchaos
fi
`)
	return b.String()
}

// fishQuote quotes s for a single-quoted fish word.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(s) + "'"
}

func fishCompletion(cmds []completionCommand) string {
	var b strings.Builder
	b.WriteString(`# fish completion for pgchaos. Load it with: pgchaos completion fish | source
# The command path so far: "" before a command, "proxy", "fault", "fault add".
function __pgchaos_path
    set -l w (commandline -opc)
    if test (count $w) -lt 2
        echo ''
    else if test "$w[2]" = fault; and test (count $w) -ge 3
        echo "fault $w[3]"
    else
        echo $w[2]
    end
end
function __pgchaos_at
    set -l p (__pgchaos_path)
    test "$p" = "$argv[1]"
end
complete -c pgchaos -e
`)
	for _, c := range cmds {
		if !strings.Contains(c.path, " ") {
			fmt.Fprintf(&b, "complete -c pgchaos -n '__pgchaos_at \"\"' -f -a %s -d %s\n", c.path, fishQuote(c.summary))
		}
	}
	for _, s := range faultSubcommands {
		fmt.Fprintf(&b, "complete -c pgchaos -n '__pgchaos_at fault' -f -a %s -d %s\n", s[0], fishQuote(s[1]))
	}
	for _, c := range cmds {
		cond := fishQuote("__pgchaos_at " + fishQuote(c.path))
		for _, f := range c.flags {
			line := fmt.Sprintf("complete -c pgchaos -n %s -l %s -d %s", cond, f.Name, fishQuote(summary(f.Usage)))
			if takesValue(f) {
				line += " -r"
			}
			b.WriteString(line + "\n")
		}
		if len(c.words) > 0 && c.path != "fault" {
			fmt.Fprintf(&b, "complete -c pgchaos -n %s -f -a %s\n", cond, fishQuote(strings.Join(c.words, " ")))
		}
	}
	return b.String()
}
