package experiments

import (
	"fmt"
	"slices"

	"go.yaml.in/yaml/v3"
)

var verifierTypes = []string{"durability", "bank_invariant", "prepared_transactions", "sql", "sql_equal",
	"recovery_time", "availability", "latency", "errors", "fault_fired", "sessions", "rpo", "rto", "timeline", "replication", "pitr"}

// verifierFields are the keys each verifier type takes besides type and
// name.
var verifierFields = map[string][]string{
	"durability":            {"workload", "allowed_lost", "allowed_ghost"},
	"bank_invariant":        {"workload"},
	"prepared_transactions": {"gid_prefix", "older_than", "expect_in_doubt"},
	"sql":                   {"sql", "dsn", "expect", "expect_no_rows"},
	"sql_equal":             {"left", "right", "dsn"},
	"recovery_time":         {"max"},
	"availability":          {"workload", "min_ok_ratio", "window"},
	"latency":               {"workload", "p99_max", "p50_min", "window"},
	"errors":                {"workload", "sqlstate", "min", "max", "window"},
	"fault_fired":           {"rule", "min"},
	"sessions":              {"no_idle_in_transaction", "no_waiting_clients"},
	"rpo":                   {"workload", "max_lost", "max_window"},
	"rto":                   {"workload", "max", "from"},
	"timeline":              {},
	"replication":           {"standbys", "max_lag"},
	"pitr":                  {"workload", "point"},
}

func (d *decoder) verifiers(n *yaml.Node, path string, r *refs, methodRules []string) []Verifier {
	var out []Verifier
	for i, item := range d.list(n, path) {
		if v, ok := d.verifier(item, index(path, i), r, methodRules); ok {
			out = append(out, v)
		}
	}
	return out
}

func (d *decoder) verifier(n *yaml.Node, path string, r *refs, methodRules []string) (Verifier, bool) {
	v := Verifier{Pos: posOf(deref(n))}
	o := d.object(n, path)
	defer o.done()
	o.str("name", &v.Name)
	var typ string
	if !o.enum("type", &typ, verifierTypes...) {
		o.missing("type", " ("+oneOf(verifierTypes)+")")
	}
	if typ == "" {
		// In a fixed order: the known keys are the candidates of "did
		// you mean", which takes the first of equally close ones.
		for _, t := range verifierTypes {
			for _, k := range verifierFields[t] {
				o.know(k)
			}
		}
		return v, false
	}
	mine := map[string]bool{}
	for _, k := range verifierFields[typ] {
		mine[k] = true
	}
	others := map[string][]string{}
	for _, t := range verifierTypes {
		for _, k := range verifierFields[t] {
			if !mine[k] {
				others[k] = append(others[k], t)
			}
		}
	}
	for k, ts := range others {
		o.elsewhere[k] = fmt.Sprintf("is a field of %s verifiers, not of %s", oneOf(ts), typ)
	}
	if v.Name == "" {
		v.Name = typ
	}
	workload := func(wantType string) string {
		var name string
		if o.reqStr("workload", &name) {
			if wantType == "" {
				d.workloadRef(o.get("workload"), o.at("workload"), name, r)
			} else {
				d.typedWorkloadRef(o.get("workload"), o.at("workload"), name, wantType, typ, r)
			}
		}
		return name
	}
	window := func() string {
		w := WindowFault
		o.enum("window", &w, WindowFault, WindowRun)
		return w
	}
	switch typ {
	case "durability":
		c := &Durability{Workload: workload(WorkloadLedger)}
		o.int("allowed_lost", &c.AllowedLost, 0)
		o.int("allowed_ghost", &c.AllowedGhost, 0)
		v.Check = c
	case "rpo":
		c := &RPO{Workload: workload(WorkloadLedger)}
		o.int("max_lost", &c.MaxLost, 0)
		o.duration("max_window", &c.MaxWindow)
		v.Check = c
	case "rto":
		c := &RTO{Workload: workload("")}
		o.positive("max", &c.Max)
		if o.str("from", &c.From) {
			if !slices.Contains(r.methodStepNames, c.From) {
				d.errAt(deref(o.get("from")), o.at("from"), "no step of the method is named %q%s", c.From, didYouMean(c.From, r.methodStepNames))
			}
		} else if r.faultSteps == 0 {
			d.errAt(o.node, path, "rto is measured from the method's first inject or crash step, and it has none (or name the step to measure from, such as your exec, in from)")
		}
		v.Check = c
	case "timeline":
		if !r.hasNodes() {
			d.errAt(o.node, path, "timeline checks the nodes of target.embedded or target.nodes")
		}
		d.notAfterRestore(o, path, typ, r)
		v.Check = &Timeline{}
	case "replication":
		c := &Replication{MaxLag: DefaultMaxLag}
		if !r.hasNodes() {
			d.errAt(o.node, path, "replication checks the standbys of target.embedded or target.nodes")
		}
		d.notAfterRestore(o, path, typ, r)
		if n := o.get("standbys"); n != nil {
			for i, item := range d.list(n, o.at("standbys")) {
				var name string
				if d.reqScalar(item, index(o.at("standbys"), i), &name) {
					d.nodeRef(item, index(o.at("standbys"), i), name, r)
					c.Standbys = append(c.Standbys, name)
				}
			}
		} else if r.embedded != nil && r.embedded.Standbys == 0 {
			d.errAt(o.node, path, "there are no standbys to check: give target.embedded standbys: N")
		}
		o.positive("max_lag", &c.MaxLag)
		v.Check = c
	case "pitr":
		c := &PITR{Workload: workload(WorkloadLedger)}
		if o.reqStr("point", &c.Point) && !slices.Contains(r.points, c.Point) {
			d.errAt(deref(o.get("point")), o.at("point"), "no restore_point step makes %q%s", c.Point, didYouMean(c.Point, r.points))
		}
		v.Check = c
	case "bank_invariant":
		v.Check = &BankInvariant{Workload: workload(WorkloadBank)}
	case "prepared_transactions":
		c := &PreparedTransactions{}
		o.str("gid_prefix", &c.GIDPrefix)
		o.duration("older_than", &c.OlderThan)
		o.boolean("expect_in_doubt", &c.ExpectInDoubt)
		v.Check = c
	case "sql":
		c := &SQLCheck{}
		o.reqStr("sql", &c.SQL)
		o.str("dsn", &c.DSN)
		if en := o.get("expect"); en != nil {
			c.Expect = d.expect(en, o.at("expect"))
		}
		o.boolean("expect_no_rows", &c.ExpectNoRows)
		switch {
		case o.has("expect") && c.ExpectNoRows:
			d.errAt(o.keyNode("expect_no_rows"), o.at("expect_no_rows"), "give expect or expect_no_rows, not both")
		case !o.has("expect") && !c.ExpectNoRows:
			d.errAt(o.node, path, "want expect (equals, min or max) or expect_no_rows: true")
		}
		v.Check = c
	case "sql_equal":
		c := &SQLEqual{}
		o.reqStr("left", &c.Left)
		o.reqStr("right", &c.Right)
		o.str("dsn", &c.DSN)
		v.Check = c
	case "recovery_time":
		c := &RecoveryTime{}
		if !o.positive("max", &c.Max) {
			o.missing("max", "")
		}
		v.Check = c
	case "availability":
		c := &Availability{Workload: workload("")}
		if !o.number("min_ok_ratio", &c.MinOKRatio, 0, 1) {
			o.missing("min_ok_ratio", " (between 0 and 1)")
		}
		c.Window = window()
		v.Check = c
	case "latency":
		c := &Latency{Workload: workload("")}
		upper := o.positive("p99_max", &c.P99Max)
		lower := o.positive("p50_min", &c.P50Min)
		if !upper && !lower {
			o.missing("p99_max", " (or p50_min, or both)")
		}
		c.Window = window()
		v.Check = c
	case "errors":
		c := &ErrorCount{Workload: workload(""), Min: 1}
		if o.str("sqlstate", &c.SQLState) && !sqlstate.MatchString(c.SQLState) {
			d.errAt(deref(o.get("sqlstate")), o.at("sqlstate"), "%q is not a five-character SQLSTATE", c.SQLState)
		}
		o.int("min", &c.Min, 0)
		most := -1 // stays so when max is not a valid count
		if o.int("max", &most, 0) && most >= 0 {
			c.Max = &most
			if most < c.Min {
				d.errAt(deref(o.get("max")), o.at("max"), "%d is less than min %d", most, c.Min)
			}
		}
		c.Window = window()
		v.Check = c
	case "fault_fired":
		c := &FaultFired{Min: 1}
		if o.reqStr("rule", &c.Rule) {
			if _, ok := r.injected[c.Rule]; !ok || !contains(methodRules, c.Rule) {
				d.errAt(deref(o.get("rule")), o.at("rule"), "no method step injects a rule named %q%s", c.Rule, didYouMean(c.Rule, methodRules))
			}
		}
		o.int("min", &c.Min, 1)
		v.Check = c
	case "sessions":
		c := &Sessions{NoIdleInTransaction: true, NoWaitingClients: true}
		o.boolean("no_idle_in_transaction", &c.NoIdleInTransaction)
		o.boolean("no_waiting_clients", &c.NoWaitingClients)
		v.Check = c
	}
	return v, true
}

// notAfterRestore refuses a failover verifier in a run that restores: the
// restored node is a new cluster of its own, beside the old primary.
func (d *decoder) notAfterRestore(o *object, path, typ string, r *refs) {
	if len(r.restored) > 0 {
		d.errAt(o.node, path, "%s judges a failover; a restore makes a new cluster of its own beside the old one (judge it with pitr)", typ)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
