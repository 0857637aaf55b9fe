package explore

import (
	"encoding/json"
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/internal/junit"
)

// Files a report directory holds.
const (
	FileJSON     = "explore.json"
	FileMarkdown = "explore.md"
	FileJUnit    = "explore.junit.xml"
	FileHTML     = "explore.html"
	DirRepro     = "repro"
)

// WriteReports writes the table as JSON, Markdown, JUnit and HTML into
// dir, and for every broken cell a reproducer, repro/POINT-FAULT.yaml,
// made from src (the explored file as written). Cell.Repro is its path:
// dir joined with repro/....
func WriteReports(dir string, rep *Report, exp *experiments.Experiment, src []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// Reproducers of an earlier exploration into the same directory would
	// pass for this one's.
	if err := os.RemoveAll(filepath.Join(dir, DirRepro)); err != nil {
		return err
	}
	points := map[string]Point{}
	for _, p := range rep.Points {
		points[p.ID] = p
	}
	for _, c := range rep.Cells {
		if c.Status != StatusBroke {
			continue
		}
		name := c.Point + "-" + c.column.slug()
		if c.Occurrence > 1 {
			name += "-" + itoa(c.Occurrence)
		}
		rel := filepath.Join(DirRepro, name+".yaml")
		data, err := Repro(src, exp, points[c.Point], c, rep.Vars)
		if err != nil {
			return fmt.Errorf("reproducer of %s: %w", name, err)
		}
		if err := os.MkdirAll(filepath.Join(dir, DirRepro), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, rel), data, 0o644); err != nil {
			return err
		}
		// As the user named the directory, so that the path can be pasted.
		c.Repro = filepath.Join(dir, rel)
	}
	for i := range rep.Groups {
		if l := rep.Groups[i].Leader; l >= 0 && l < len(rep.Cells) {
			rep.Groups[i].Repro = rep.Cells[l].Repro
		}
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	junit, err := JUnit(rep)
	if err != nil {
		return err
	}
	page, err := HTML(rep)
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		FileJSON: append(js, '\n'), FileMarkdown: []byte(Markdown(rep)), FileJUnit: junit, FileHTML: page,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// cellsAt are the cells of one point and column, one per occurrence.
func (r *Report) cellsAt(point, column string) []*Cell {
	var out []*Cell
	for _, c := range r.Cells {
		if c.Point == point && c.Column == column {
			out = append(out, c)
		}
	}
	return out
}

// verdict sums up the occurrences of one table cell: the worst status
// wins, and a broken one names its group.
func verdict(cells []*Cell) (status string, group int) {
	rank := map[string]int{StatusBroke: 5, StatusError: 4, StatusHeld: 3, StatusNotReached: 2, StatusSkipped: 1}
	best := 0
	for _, c := range cells {
		if rank[c.Status] > best {
			best, status, group = rank[c.Status], c.Status, c.Group
		}
	}
	return status, group
}

var statusWords = map[string]string{
	StatusHeld: "held", StatusBroke: "broke", StatusNotReached: "not reached",
	StatusSkipped: "skipped", StatusError: "error",
}

// Markdown renders the report for a failure-mode analysis document.
func Markdown(r *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Failure modes: %s\n\n", r.Experiment)
	if r.Problem != "" {
		fmt.Fprintf(&b, "**Explore stopped:** %s\n\n", r.Problem)
	}
	fmt.Fprintf(&b, "%s\n\n", r.summaryLine())
	if len(r.Points) == 0 {
		return b.String()
	}
	b.WriteString("## Fault points\n\nWhat the clean run sent through proxy `" + r.Proxy + "`, each statement with its constants taken out.\n\n")
	b.WriteString("| point | statement | protocol | transaction | tag | times |\n|---|---|---|---|---|---|\n")
	for _, p := range r.Points {
		if p.Connection != "" {
			fmt.Fprintf(&b, "| %s | %s | | | | %d |\n", p.ID, p.Name(), p.Count)
			continue
		}
		fmt.Fprintf(&b, "| %s | `%s` | %s | %s | %s | %d |\n", p.ID, mdCode(p.Fingerprint), p.Protocol, p.TxStatus, p.Tag, p.Count)
	}
	b.WriteString("\n## The table\n\nEach cell is one trial (per occurrence tried): **broke** (with its group below), held, not reached (the fault never fired), skipped (budget).\n\n")
	b.WriteString("| point |")
	for _, c := range r.Columns {
		fmt.Fprintf(&b, " %s |", c)
	}
	b.WriteString("\n|---|")
	for range r.Columns {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, p := range r.Points {
		fmt.Fprintf(&b, "| %s |", p.ID)
		for _, col := range r.Columns {
			cells := r.cellsAt(p.ID, col)
			if len(cells) == 0 {
				b.WriteString(" — |")
				continue
			}
			st, g := verdict(cells)
			if st == StatusBroke {
				fmt.Fprintf(&b, " **broke (%d)** |", g)
				continue
			}
			fmt.Fprintf(&b, " %s |", statusWords[st])
		}
		b.WriteString("\n")
	}
	if len(r.Groups) > 0 {
		b.WriteString("\n## What broke\n")
		for _, g := range r.Groups {
			fmt.Fprintf(&b, "\n### %d. %s: %s\n\n", g.ID, g.Verifier, g.Shape)
			fmt.Fprintf(&b, "%d cell(s). Smallest reproducer: %s", g.Cells, g.Smallest)
			if g.Repro != "" {
				fmt.Fprintf(&b, " — `pgchaos run %s`", g.Repro)
			}
			b.WriteString("\n\n| fault | point | occurrence | evidence |\n|---|---|---|---|\n")
			for _, c := range r.Cells {
				if c.Group == g.ID {
					fmt.Fprintf(&b, "| %s | %s | %d | %s |\n", c.Column, c.Point, c.Occurrence, mdCell(oneLine(c.Evidence)))
				}
			}
		}
	}
	var unreached []string
	for _, c := range r.Cells {
		if c.Status == StatusNotReached || c.Status == StatusError {
			unreached = append(unreached, fmt.Sprintf("- %s at %s (occurrence %d): %s — %s", c.Column, c.Point, c.Occurrence, statusWords[c.Status], mdCell(oneLine(c.Evidence))))
		}
	}
	if len(unreached) > 0 {
		b.WriteString("\n## Not judged\n\n" + strings.Join(unreached, "\n") + "\n")
	}
	return b.String()
}

func (r *Report) summaryLine() string {
	tried := len(r.Cells) - r.Counts[StatusSkipped]
	return fmt.Sprintf("%d fault points × %d faults: %d trials of %d tried — %d broke, %d held, %d not reached, %d skipped, %d errors · %s, %.1f trials per minute · clean run %.1fs",
		len(r.Points), len(r.Columns), tried, len(r.Cells), r.Counts[StatusBroke], r.Counts[StatusHeld], r.Counts[StatusNotReached],
		r.Counts[StatusSkipped], r.Counts[StatusError], r.Ended.Sub(r.Started).Round(time.Second), r.TrialsPerMinute, r.BaselineTime.Seconds())
}

func mdCode(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "`", "'"), "|", "\\|") }
func mdCell(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

// JUnit renders a test case per cell: broke is a failure, error an error,
// not reached and skipped are skipped — never passes.
func JUnit(r *Report) ([]byte, error) {
	s := junit.Suite{Name: "pgchaos explore: " + r.Experiment, Started: r.Started, Took: r.Ended.Sub(r.Started)}
	if r.Problem != "" {
		s.Cases = append(s.Cases, junit.Case{Class: "explore", Name: "clean run", Error: &junit.Message{Message: r.Problem, Text: r.Problem}})
	}
	points := map[string]Point{}
	for _, p := range r.Points {
		points[p.ID] = p
	}
	for _, c := range r.Cells {
		p := points[c.Point]
		jc := junit.Case{Class: "explore." + c.Point, Name: fmt.Sprintf("%s at %s #%d", c.Column, p.Name(), c.Occurrence),
			Time: junit.Seconds(c.Duration)}
		msg := &junit.Message{Message: oneLine(c.Evidence), Text: c.Evidence}
		switch c.Status {
		case StatusBroke:
			msg.Message = c.Verifier + ": " + msg.Message
			if c.Repro != "" {
				msg.Text += "\nreproduce: pgchaos run " + c.Repro
			}
			if c.Output != "" {
				msg.Text += "\napplication: " + c.Output
			}
			jc.Failure = msg
		case StatusError:
			jc.Error = msg
		case StatusNotReached, StatusSkipped:
			jc.Skipped = msg
		}
		s.Cases = append(s.Cases, jc)
	}
	return junit.Marshal(s)
}

var page = template.Must(template.New("explore").Funcs(template.FuncMap{
	"cells": func(r *Report, p, c string) []*Cell { return r.cellsAt(p, c) },
	"verdict": func(cells []*Cell) map[string]any {
		st, g := verdict(cells)
		return map[string]any{"Status": st, "Group": g, "Word": statusWords[st]}
	},
	"oneLine": oneLine,
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Failure modes: {{.R.Experiment}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}
td.broke{background:#f8d0d0;font-weight:bold}
td.held{background:#d6f0d6}
td.not_reached,td.skipped{background:#eee;color:#666}
td.error{background:#fbe7b5}
code{font-size:90%}
</style></head><body>
<h1>Failure modes: {{.R.Experiment}}</h1>
{{if .R.Problem}}<p><strong>Explore stopped:</strong> {{.R.Problem}}</p>{{end}}
<p>{{.Summary}}</p>
{{if .R.Points}}
<h2>Fault points</h2>
<table><tr><th>point</th><th>statement</th><th>protocol</th><th>transaction</th><th>tag</th><th>times</th></tr>
{{range .R.Points}}<tr><td>{{.ID}}</td><td>{{if .Connection}}{{.Name}}{{else}}<code>{{.Fingerprint}}</code>{{end}}</td><td>{{.Protocol}}</td><td>{{.TxStatus}}</td><td>{{.Tag}}</td><td>{{.Count}}</td></tr>
{{end}}</table>
<h2>The table</h2>
<table id="failure-modes"><tr><th>point</th>{{range .R.Columns}}<th>{{.}}</th>{{end}}</tr>
{{range $p := .R.Points}}<tr><th>{{$p.ID}}</th>{{range $c := $.R.Columns}}{{with cells $.R $p.ID $c}}{{with verdict .}}<td class="{{.Status}}">{{.Word}}{{if .Group}} ({{.Group}}){{end}}</td>{{end}}{{else}}<td>—</td>{{end}}{{end}}</tr>
{{end}}</table>
{{end}}
{{if .R.Groups}}<h2>What broke</h2>
{{range $g := .R.Groups}}<h3>{{$g.ID}}. {{$g.Verifier}}: {{$g.Shape}}</h3>
<p>{{$g.Cells}} cell(s). Smallest reproducer: {{$g.Smallest}}{{if $g.Repro}} — <code>pgchaos run {{$g.Repro}}</code>{{end}}</p>
<table><tr><th>fault</th><th>point</th><th>occurrence</th><th>evidence</th></tr>
{{range $.R.Cells}}{{if eq .Group $g.ID}}<tr><td>{{.Column}}</td><td>{{.Point}}</td><td>{{.Occurrence}}</td><td>{{oneLine .Evidence}}</td></tr>{{end}}{{end}}
</table>
{{end}}{{end}}
</body></html>
`))

// HTML renders the report as a page.
func HTML(r *Report) ([]byte, error) {
	var b strings.Builder
	if err := page.Execute(&b, map[string]any{"R": r, "Summary": r.summaryLine()}); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}
