package experiments

import (
	"go.yaml.in/yaml/v3"
)

// explore reads the explore section: what pgchaos explore tries. The
// workloads are the application, so each must end by itself.
func (d *decoder) explore(n *yaml.Node, path string, e *Experiment, r *refs) *Explore {
	x := &Explore{
		Delay: DefaultExploreDelay, Deadline: DefaultExploreDeadline, Budget: DefaultExploreBudget,
		Occurrences: 1, Pos: posOf(deref(n)),
	}
	o := d.object(n, path)
	if o.str("proxy", &x.Proxy) {
		d.proxyRef(o.get("proxy"), o.at("proxy"), x.Proxy, r)
		if p := r.proxies[x.Proxy]; p != nil && p.Remote() {
			d.errAt(deref(o.get("proxy")), o.at("proxy"), "proxy %q is reached through a control API; explore learns its fault points from a proxy it starts itself", x.Proxy)
		}
	}
	if kn := o.get("faults"); kn != nil {
		seen := map[string]bool{}
		for i, item := range d.list(kn, o.at("faults")) {
			p := index(o.at("faults"), i)
			k, ok := d.str(item, p)
			switch {
			case !ok:
			case !contains(ExploreKinds, k):
				d.errAt(deref(item), p, "want %s, got %q%s", oneOf(ExploreKinds), k, didYouMean(k, ExploreKinds))
			case seen[k]:
				d.errAt(deref(item), p, "%s is listed twice", k)
			default:
				seen[k] = true
				x.Kinds = append(x.Kinds, k)
			}
		}
		if len(x.Kinds) == 0 && len(d.list(kn, o.at("faults"))) == 0 {
			d.errAt(deref(kn), o.at("faults"), "is empty: leave it out to try every kind (%s)", oneOf(ExploreKinds))
		}
	} else {
		x.Kinds = append([]string(nil), ExploreKinds...)
	}
	x.SQLStatesBefore = d.sqlstates(o, "sqlstates_before", DefaultSQLStatesBefore)
	x.SQLStatesAfter = d.sqlstates(o, "sqlstates_after", DefaultSQLStatesAfter)
	o.positive("delay", &x.Delay)
	o.positive("deadline", &x.Deadline)
	o.positive("budget", &x.Budget)
	o.int("occurrences", &x.Occurrences, 1)
	o.done()

	if e.Target.Embedded == nil {
		d.errAt(deref(n), path, "explore resets the database before every trial, so it runs on target.embedded")
	} else if em := e.Target.Embedded; em.PgBouncer || em.Standbys > 0 {
		d.errAt(deref(n), path, "explore runs on a single embedded PostgreSQL for now: drop target.embedded's pgbouncer and standbys")
	}
	if len(e.Workloads) == 0 {
		d.errAt(deref(n), path, "explore needs the application as a workload (type: exec runs your program)")
	}
	for _, w := range e.Workloads {
		switch {
		case w.Type != WorkloadExec && w.Duration == 0:
			d.errAt(deref(n), path, "workload %s (line %d) runs until it is stopped; give it a duration, so that each trial ends", w.Name, w.Pos.Line)
		case w.Duration >= x.Deadline:
			d.errAt(deref(n), path, "workload %s (line %d) runs for %s, as long as explore's deadline of %s: every trial would break liveness (give a shorter duration or a longer deadline)", w.Name, w.Pos.Line, w.Duration, x.Deadline)
		}
	}
	if x.Proxy == "" {
		var through []string
		for _, w := range e.Workloads {
			if p, ok := r.proxies[w.Through]; ok && !p.Remote() && !contains(through, w.Through) {
				through = append(through, w.Through)
			}
		}
		switch len(through) {
		case 1:
			x.Proxy = through[0]
		case 0:
			d.errAt(deref(n), path, "no workload goes through a proxy started here: explore learns the fault points from the statements one carries (add a proxy and set the workload's through)")
		default:
			d.errAt(deref(n), path, "workloads go through %s: name the one to explore in explore.proxy", oneOf(through))
		}
	}
	return x
}

func (d *decoder) sqlstates(o *object, key string, def []string) []string {
	n := o.get(key)
	if n == nil {
		return append([]string(nil), def...)
	}
	var out []string
	items := d.list(n, o.at(key))
	for i, item := range items {
		p := index(o.at(key), i)
		if s, ok := d.str(item, p); ok {
			switch {
			case !sqlstate.MatchString(s):
				d.errAt(deref(item), p, "%q is not a SQLSTATE (five digits or capital letters, e.g. \"40001\")", s)
			case contains(out, s):
				d.errAt(deref(item), p, "%s is listed twice", s)
			default:
				out = append(out, s)
			}
		}
	}
	if len(items) == 0 {
		d.errAt(deref(n), o.at(key), "is empty: leave it out for the default %v", def)
	}
	return out
}
