package runner

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pgchaos/pgchaos/internal/junit"
)

// WriteJSON writes the run's journal.
func WriteJSON(path string, res *Result) error {
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(path, append(data, '\n'))
}

// JUnit renders the run as JUnit XML: a test case per probe, step that
// failed, verifier and rollback, each with the time it took; a failure's
// text is its evidence. On an interrupted run what the interruption cut
// short is skipped, not failed: a Ctrl-C is not a finding.
func JUnit(res *Result) ([]byte, error) {
	s := junit.Suite{Name: res.Experiment, Started: res.Started, Took: res.Ended.Sub(res.Started),
		Properties: []junit.Property{{Name: "seed", Value: fmt.Sprint(res.Seed)}, {Name: "file", Value: res.Source}}}
	if res.Version != "" {
		s.Properties = append(s.Properties, junit.Property{Name: "pgchaos_version", Value: res.Version})
	}
	for _, k := range slices.Sorted(maps.Keys(res.Vars)) {
		s.Properties = append(s.Properties, junit.Property{Name: "var." + k, Value: res.Vars[k]})
	}
	s.Hostname = res.Hostname
	add := func(class, name string, d time.Duration, failMsg, text string) {
		c := junit.Case{Class: class, Name: name, Time: junit.Seconds(d)}
		switch {
		case failMsg != "" && res.Interrupted:
			c.Skipped = &junit.Message{Message: "interrupted: " + failMsg, Text: text}
		case failMsg != "":
			c.Failure = &junit.Message{Message: failMsg, Type: class, Text: text}
		}
		s.Cases = append(s.Cases, c)
	}
	if res.SetupFailed || res.Interrupted {
		add("run", res.Phase, 0, res.Problem, res.Problem)
	}
	for _, p := range res.Probes {
		msg := ""
		if !p.Pass {
			msg = fmt.Sprintf("probe %s: value %v %s", p.Name, p.Value, p.Error)
		}
		add("steady_state."+p.Phase, p.Name, p.Took, msg, msg)
	}
	for _, st := range res.Steps {
		if st.Error != "" {
			add("method", st.Name, st.End.Sub(st.Start), st.Error, st.Error)
		}
	}
	if res.Phase == "recovery" {
		add("recovery", "steady state holds again", res.RecoveryTime, res.Problem, res.Problem)
	}
	for _, v := range res.Verdicts {
		msg, text := "", ""
		if !v.Pass {
			msg = v.Summary
			ev, _ := json.MarshalIndent(v.Evidence, "", "  ")
			text = v.Summary + "\n" + string(ev)
		}
		add("verify."+v.Type, v.Name, v.Took, msg, text)
	}
	for _, rb := range res.Rollbacks {
		add("rollbacks", rb.Name, rb.End.Sub(rb.Start), rb.Error, rb.Error)
	}
	return junit.Marshal(s)
}

// WriteJUnit writes the JUnit XML report.
func WriteJUnit(path string, res *Result) error {
	data, err := JUnit(res)
	if err != nil {
		return err
	}
	return writeFile(path, data)
}

// Markdown is a summary fit for $GITHUB_STEP_SUMMARY.
func Markdown(res *Result) string {
	var b strings.Builder
	verdict := "✅ passed"
	if !res.Pass {
		verdict = "❌ failed"
	}
	if res.Interrupted {
		verdict = "⚠️ interrupted"
	}
	fmt.Fprintf(&b, "## pgchaos: %s — %s\n\n", res.Experiment, verdict)
	if res.Problem != "" {
		fmt.Fprintf(&b, "**%s:** %s\n\n", res.Phase, res.Problem)
	}
	b.WriteString(runLine(res) + "\n\n")
	var rows []string
	for _, p := range res.Probes {
		rows = append(rows, row("steady state ("+p.Phase+"): "+p.Name, passFail(p.Pass), fmt.Sprintf("value %v %s", p.Value, p.Error)))
	}
	for _, st := range res.Steps {
		if st.Error != "" {
			rows = append(rows, row("step: "+st.Name, passFail(false), st.Error))
		}
	}
	for _, v := range res.Verdicts {
		rows = append(rows, row(v.Name, passFail(v.Pass), v.Summary))
	}
	for _, rb := range res.Rollbacks {
		rows = append(rows, row("rollback: "+rb.Name, passFail(rb.Error == ""), rb.Error))
	}
	switch {
	case len(rows) > 0:
		b.WriteString("| check | result | evidence |\n|---|---|---|\n" + strings.Join(rows, ""))
	case res.SetupFailed:
		b.WriteString("Nothing was judged: the run stopped before its workloads started, as the line above says.\n")
	default:
		b.WriteString("Nothing was judged: the experiment has no probes and no verifiers.\n")
	}
	var method []StepResult
	for _, st := range res.Steps {
		if st.Phase == "method" {
			method = append(method, st)
		}
	}
	if len(method) > 0 {
		b.WriteString("\n| step | at | took | result |\n|---|---|---|---|\n")
		for _, st := range method {
			result := "ok"
			if st.Error != "" {
				result = "**FAIL**: " + st.Error
			}
			b.WriteString(row(st.Name, st.Start.Sub(res.Started).Round(100*time.Millisecond).String(), st.End.Sub(st.Start).Round(time.Millisecond).String(), result))
		}
	}
	if len(res.FaultWindows) > 0 {
		b.WriteString("\n| fault | from | to | fired |\n|---|---|---|---|\n")
		for _, w := range res.FaultWindows {
			b.WriteString(row(w.Rule, w.Start.Sub(res.Started).Round(100*time.Millisecond).String(), w.End.Sub(res.Started).Round(100*time.Millisecond).String(), w.FiredText()))
		}
	}
	return b.String()
}

// runLine says how long the run took, with what seed, what its
// operations did and how soon it recovered.
func runLine(res *Result) string {
	line := fmt.Sprintf("Ran %s with seed %d. Operations: %d ok, %d failed, %d unknown.", res.Ended.Sub(res.Started).Round(time.Second), res.Seed,
		res.Operations["ok"], res.Operations["fail"], res.Operations["unknown"])
	if res.Operations["ok"]+res.Operations["fail"]+res.Operations["unknown"] == 0 {
		line = fmt.Sprintf("Ran %s with seed %d. No workload operation was recorded: the steps are the run.", res.Ended.Sub(res.Started).Round(time.Second), res.Seed)
	}
	if res.Recovered {
		line += fmt.Sprintf(" Recovered in %s.", res.RecoveryTime.Round(time.Millisecond))
	}
	return line
}

// row is a Markdown table row, its cells escaped: a | or a line break in
// an error or a value would otherwise break the table.
func row(cells ...string) string {
	var b strings.Builder
	b.WriteString("|")
	for _, c := range cells {
		c = strings.TrimSpace(c)
		c = strings.ReplaceAll(c, "|", "\\|")
		c = strings.ReplaceAll(strings.ReplaceAll(c, "\r\n", "<br>"), "\n", "<br>")
		b.WriteString(" " + c + " |")
	}
	b.WriteString("\n")
	return b.String()
}

func passFail(ok bool) string {
	if ok {
		return "pass"
	}
	return "**FAIL**"
}

func writeFile(path string, data []byte) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(path, data, 0o644)
}
