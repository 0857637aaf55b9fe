package runner

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/pgchaos/pgchaos/experiments/history"
)

// History formats --history-format takes.
const (
	// HistoryPgchaos writes each operation as it is recorded, a JSON object
	// per line.
	HistoryPgchaos = "pgchaos"
	// HistoryJepsen writes Jepsen's history form, so that Elle-style
	// checkers can read a run: an invoke and a completion per operation.
	HistoryJepsen = "jepsen"
)

// History is every operation of the run, in the order they were recorded.
func (r *Result) History() []history.Op { return r.history }

// JepsenOp is one event of a Jepsen history.
type JepsenOp struct {
	Index int64 `json:"index"`
	// Process is the client: a new number once a client's operation ended
	// in doubt (info), as Jepsen retires a process that may still act.
	Process int64 `json:"process"`
	// Type is invoke, then ok, fail (it did not happen) or info (unknown).
	Type string `json:"type"`
	F    string `json:"f"`
	// Value is the operation's key (a ledger entry, a transfer), or null.
	Value any `json:"value"`
	// Time is nanoseconds since the run started.
	Time int64 `json:"time"`
	// Workload and Error are pgchaos's, for a reader who wants them.
	Workload string `json:"workload"`
	Error    string `json:"error,omitempty"`
}

// Jepsen turns a run's operations into Jepsen's history form.
func Jepsen(res *Result) []JepsenOp {
	ops := append([]history.Op(nil), res.history...)
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Start.Before(ops[j].Start) })
	type client struct {
		workload string
		n        int
	}
	process := map[client]int64{}
	next := int64(0)
	var events []JepsenOp
	for _, op := range ops {
		c := client{op.Workload, op.Client}
		p, ok := process[c]
		if !ok {
			p = next
			next++
			process[c] = p
		}
		var value any
		if op.Key != "" {
			value = op.Key
		}
		t := "ok"
		switch op.Outcome {
		case history.Fail:
			t = "fail"
		case history.Unknown:
			t = "info"
			// It may still take effect: Jepsen retires the process.
			process[c] = next
			next++
		}
		base := JepsenOp{Process: p, F: op.Kind, Value: value, Workload: op.Workload}
		invoke, done := base, base
		invoke.Type, invoke.Time = "invoke", op.Start.Sub(res.Started).Nanoseconds()
		done.Type, done.Time, done.Error = t, op.End.Sub(res.Started).Nanoseconds(), op.Error
		events = append(events, invoke, done)
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].Time < events[j].Time })
	for i := range events {
		events[i].Index = int64(i)
	}
	return events
}

// WriteHistory writes the run's operations to path, a JSON object per line,
// in format (HistoryPgchaos or HistoryJepsen).
func WriteHistory(path string, res *Result, format string) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	switch format {
	case HistoryPgchaos, "":
		for _, op := range res.history {
			if err := enc.Encode(op); err != nil {
				f.Close()
				return err
			}
		}
	case HistoryJepsen:
		for _, ev := range Jepsen(res) {
			if err := enc.Encode(ev); err != nil {
				f.Close()
				return err
			}
		}
	default:
		f.Close()
		return fmt.Errorf("history format %q: want %s or %s", format, HistoryPgchaos, HistoryJepsen)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
