package experiments

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one thing wrong with an experiment file, and where.
type Problem struct {
	Source string
	// Line and Column are 1-based; 0 when unknown.
	Line, Column int
	// Path names the field, e.g. "method[1].inject.rule.action.sqlstate".
	Path string
	Msg  string
}

// String is "FILE:LINE:COLUMN: path: message", the form editors jump to,
// on one line: a line break in the path (a quoted key) or the message (a
// regular expression quoted in it) is written as \n or \r.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.Source)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
		if p.Column > 0 {
			fmt.Fprintf(&b, ":%d", p.Column)
		}
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(oneLine.Replace(p.Path))
		b.WriteString(": ")
	}
	b.WriteString(oneLine.Replace(p.Msg))
	return b.String()
}

var oneLine = strings.NewReplacer("\n", `\n`, "\r", `\r`)

// Errors is every problem found in a file, sorted by position. Parse
// returns it as its error.
type Errors []Problem

// Error lists the problems one a line.
func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, p := range e {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// sorted orders problems by position, keeping the order in which they were
// found for equal positions, and drops repeats.
func sorted(ps []Problem) Errors {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Line != ps[j].Line {
			return ps[i].Line < ps[j].Line
		}
		return ps[i].Column < ps[j].Column
	})
	out := Errors{}
	seen := map[Problem]bool{}
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}
