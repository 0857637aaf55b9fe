package explore

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pgchaos/pgchaos/experiments"
	"github.com/pgchaos/pgchaos/faults"
)

// Column is one fault of the table: a kind, with its SQLSTATE for the
// error kinds.
type Column struct {
	Kind     string `json:"kind"`
	SQLState string `json:"sqlstate,omitempty"`
}

// Name is how the column reads: cut_after, error_before 40001, ...
func (c Column) Name() string {
	if c.SQLState != "" {
		return c.Kind + " " + c.SQLState
	}
	return c.Kind
}

// slug is the column's name in file names.
func (c Column) slug() string {
	if c.SQLState != "" {
		return c.Kind + "-" + c.SQLState
	}
	return c.Kind
}

// appliesTo says whether the column's fault can be tried at p.
func (c Column) appliesTo(p Point) bool {
	switch c.Kind {
	case experiments.KindRefuse:
		return p.Connection == PointConnect
	case experiments.KindIdleCut:
		return p.Connection == PointIdle
	}
	return p.Connection == ""
}

// columns are the faults explore tries, in its order.
func columns(x *experiments.Explore) []Column {
	var out []Column
	for _, k := range experiments.ExploreKinds {
		if !slices.Contains(x.Kinds, k) {
			continue
		}
		switch k {
		case experiments.KindErrorBefore:
			for _, s := range x.SQLStatesBefore {
				out = append(out, Column{Kind: k, SQLState: s})
			}
		case experiments.KindErrorAfter:
			for _, s := range x.SQLStatesAfter {
				out = append(out, Column{Kind: k, SQLState: s})
			}
		default:
			out = append(out, Column{Kind: k})
		}
	}
	return out
}

// What PostgreSQL itself says with these SQLSTATEs, so that an application
// that reads the message sees what it would see.
var serverMessages = map[string]struct{ severity, message string }{
	"40001": {"ERROR", "could not serialize access due to concurrent update"},
	"40P01": {"ERROR", "deadlock detected"},
	"57P01": {"FATAL", "terminating connection due to administrator command"},
	"57P02": {"FATAL", "terminating connection due to crash of another server process"},
	"57P03": {"FATAL", "the database system is starting up"},
	"08006": {"ERROR", "connection failure"},
	"53300": {"FATAL", "sorry, too many clients already"},
	"25006": {"ERROR", "cannot execute statement in a read-only transaction"},
}

// rule is the one fault of a trial: column c at the occurrence-th time
// point p happens, on proxy.
func rule(proxy string, p Point, c Column, occurrence int) faults.Rule {
	r := faults.Rule{
		Name:   fmt.Sprintf("explore-%s-%s-%d", p.ID, c.slug(), occurrence),
		Proxy:  proxy,
		Limits: faults.Limits{Skip: int64(occurrence - 1), Times: 1},
	}
	if p.Connection == "" {
		r.Match = faults.Match{Fingerprint: p.Fingerprint, Message: faults.StringList{"query"}, TxStatus: faults.StringList{p.TxStatus}}
		if p.Protocol == ProtocolExtended {
			r.Match.Message = faults.StringList{"execute"}
		}
	}
	switch c.Kind {
	case experiments.KindCutBefore:
		r.Action = faults.Action{Type: "disconnect"}
	case experiments.KindCutAfter:
		r.Action = faults.Action{Type: "disconnect", When: "result"}
	case experiments.KindErrorBefore, experiments.KindErrorAfter:
		msg, ok := serverMessages[c.SQLState]
		if !ok {
			msg.severity, msg.message = "ERROR", "pgchaos explore: injected error "+c.SQLState
		}
		r.Action = faults.Action{Type: "error", SQLState: c.SQLState, Severity: msg.severity, Message: msg.message}
		if c.Kind == experiments.KindErrorAfter {
			r.Action.When = "after"
		}
	case experiments.KindHang:
		// Until the trial ends: the application's own deadline must get
		// it out, or the trial's.
		r.Action = faults.Action{Type: "hang"}
	case experiments.KindDelay:
		r.Action = faults.Action{Type: "delay"}
	case experiments.KindRefuse:
		r.Match = faults.Match{Event: "connect"}
		r.Action = faults.Action{Type: "refuse"}
	case experiments.KindIdleCut:
		r.Match = faults.Match{Direction: "server_to_client", Message: faults.StringList{"ready_for_query"}, TxStatus: faults.StringList{"idle"}}
		r.Action = faults.Action{Type: "disconnect", When: "after"}
	}
	return r
}

// plan is every cell to try, in the order explore tries them: each
// column in turn (in-doubt cuts first, on the ends of transactions before
// the other statements), each point in the order it first ran, each
// occurrence from the first.
func plan(proxy string, points []Point, cols []Column, x *experiments.Explore) []*Cell {
	var out []*Cell
	add := func(p Point, c Column) {
		for occ := 1; occ <= x.Occurrences && occ <= max(p.Count, 1); occ++ {
			if (c.Kind == experiments.KindCutAfter || c.Kind == experiments.KindErrorAfter) && !p.AnsweredAt(occ) {
				// The server failed the statement that time: there is no
				// result to cut or lie about, and the rule would fire
				// without acting.
				continue
			}
			r := rule(proxy, p, c, occ)
			if c.Kind == experiments.KindDelay {
				r.Action.Delay = faults.Duration(x.Delay)
			}
			out = append(out, &Cell{Point: p.ID, Column: c.Name(), column: c, Occurrence: occ, Rule: r, Status: StatusSkipped})
		}
	}
	for _, c := range cols {
		if c.Kind == experiments.KindCutAfter {
			for _, p := range points {
				if c.appliesTo(p) && p.InDoubt() {
					add(p, c)
				}
			}
			for _, p := range points {
				if c.appliesTo(p) && !p.InDoubt() {
					add(p, c)
				}
			}
			continue
		}
		for _, p := range points {
			if c.appliesTo(p) {
				add(p, c)
			}
		}
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

// shape is evidence with its numbers and quoted values taken out, so that
// breakages that differ only in counts or ids group together.
func shape(s string) string {
	var b strings.Builder
	inQuote := byte(0)
	digits := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote != 0:
			if c == inQuote {
				inQuote = 0
				b.WriteByte(c)
			}
			continue
		case c == '"' || c == '\'':
			inQuote = c
			b.WriteByte(c)
			b.WriteString("…")
			continue
		case c >= '0' && c <= '9':
			if !digits {
				b.WriteByte('N')
			}
			digits = true
			continue
		}
		digits = false
		b.WriteByte(c)
	}
	return b.String()
}
