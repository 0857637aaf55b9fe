package experiments

import (
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// actionKinds are the keys that make a step's action, one per step.
var actionKinds = []string{"inject", "remove", "wait", "sql", "exec", "kill_sessions", "switch_upstream",
	"pause_workload", "resume_workload", "wait_workloads", "resolve_prepared",
	"crash", "start", "promote", "rewind", "wait_for", "pause_replay", "resume_replay",
	"base_backup", "restore_point", "restore", "pgbouncer"}

// stepList reads the method (timed) or the rollbacks.
type stepList struct {
	method bool
	// active holds rules injected without a duration and not yet removed,
	// by proxy and name, with the line that injected them.
	active map[[2]string]int
	lastAt *Duration
	atLine int
}

func (d *decoder) steps(n *yaml.Node, path string, r *refs, method bool) []Step {
	var out []Step
	l := &stepList{method: method, active: map[[2]string]int{}}
	for i, item := range d.list(n, path) {
		out = append(out, d.step(item, index(path, i), r, l))
	}
	return out
}

func (d *decoder) step(n *yaml.Node, path string, r *refs, l *stepList) Step {
	s := Step{Pos: posOf(deref(n))}
	o := d.object(n, path)
	o.str("name", &s.Name)
	if !l.method {
		o.know("at")
		if o.has("at") {
			d.errAt(o.keyNode("at"), o.at("at"), "applies to method steps; rollbacks run one after another (use after)")
		}
	} else {
		at := Duration(-1)
		if o.duration("at", &at) && at >= 0 {
			s.At = &at
			if l.lastAt != nil && at < *l.lastAt {
				d.errAt(deref(o.get("at")), o.at("at"), "%s is earlier than %s, the at of the step on line %d (steps run in order)", at, *l.lastAt, l.atLine)
			}
			l.lastAt, l.atLine = s.At, deref(o.get("at")).Line
		}
	}
	if o.duration("after", &s.After) && o.has("at") && l.method {
		d.errAt(o.keyNode("after"), o.at("after"), "give at or after, not both")
	}
	var kinds []string
	for _, k := range actionKinds {
		o.know(k)
		if o.has(k) {
			kinds = append(kinds, k)
		}
	}
	switch len(kinds) {
	case 0:
		d.errAt(o.node, path, "want one action: %s", strings.Join(actionKinds, ", "))
	case 1:
		s.Action = d.action(kinds[0], o, r, l)
		if l.method && s.Name != "" {
			r.methodStepNames = append(r.methodStepNames, s.Name)
		}
	default:
		for _, k := range kinds[1:] {
			d.errAt(o.keyNode(k), o.at(k), "a step does one thing and this one does %s already (split it into two steps)", kinds[0])
		}
	}
	o.done()
	return s
}

func (d *decoder) action(kind string, step *object, r *refs, l *stepList) Action {
	n, at := step.get(kind), step.at(kind)
	if l.method && (kind == "inject" || kind == "crash") {
		r.faultSteps++
	}
	switch kind {
	case "crash", "start", "rewind", "base_backup", "restore_point", "restore":
		if r.embedded == nil && len(r.userNodes) > 0 {
			d.errAt(step.keyNode(kind), at, "acts on the servers of target.embedded; on your own cluster, run your command in an exec step (PGCHAOS_NODE_<NAME>_DSN, _HOST and _PORT are in its environment)")
		}
	}
	switch kind {
	case "inject":
		return d.inject(n, at, step, r, l)
	case "remove":
		a := &Remove{}
		if d.reqScalar(n, at, &a.Rule) {
			if _, ok := r.injected[a.Rule]; !ok {
				d.errAt(deref(n), at, "no earlier step injects a rule named %q%s", a.Rule, didYouMean(a.Rule, r.ruleOrder))
			}
			for k := range l.active {
				if k[1] == a.Rule {
					delete(l.active, k)
				}
			}
		}
		return a
	case "wait":
		a := &Wait{}
		if v, ok := d.duration(n, at); ok {
			if v == 0 {
				d.errAt(deref(n), at, "must be greater than zero")
			}
			a.Duration = v
		}
		return a
	case "sql":
		a := &RunSQL{}
		if s := deref(n); s.Kind == yaml.ScalarNode {
			d.reqScalar(s, at, &a.SQL)
			return a
		}
		o := d.object(n, at)
		o.reqStr("sql", &a.SQL)
		o.str("dsn", &a.DSN)
		if o.str("node", &a.Node) {
			d.nodeRef(o.get("node"), o.at("node"), a.Node, r)
			if a.DSN != "" {
				d.errAt(o.keyNode("node"), o.at("node"), "give dsn or node, not both")
			}
		}
		o.done()
		return a
	case "exec":
		a := &RunCommand{Timeout: DefaultExecTimeout}
		if s := deref(n); s.Kind == yaml.ScalarNode {
			d.reqScalar(s, at, &a.Command)
			return a
		}
		o := d.object(n, at)
		o.reqStr("command", &a.Command)
		o.positive("timeout", &a.Timeout)
		o.done()
		return a
	case "kill_sessions":
		a := &KillSessions{}
		o := d.object(n, at)
		if o.reqStr("proxy", &a.Proxy) {
			d.proxyRef(o.get("proxy"), o.at("proxy"), a.Proxy, r)
		}
		if o.str("application_name", &a.ApplicationName) {
			if _, err := regexp.Compile(a.ApplicationName); err != nil {
				d.errAt(deref(o.get("application_name")), o.at("application_name"), "%v", err)
			}
		}
		o.str("user", &a.User)
		o.done()
		return a
	case "switch_upstream":
		a := &SwitchUpstream{}
		o := d.object(n, at)
		if o.reqStr("proxy", &a.Proxy) {
			d.proxyRef(o.get("proxy"), o.at("proxy"), a.Proxy, r)
		}
		if o.reqStr("upstream", &a.Upstream) {
			d.upstream(o.get("upstream"), o.at("upstream"), a.Upstream, r)
		}
		o.done()
		return a
	case "pause_workload", "resume_workload":
		var name string
		if d.reqScalar(n, at, &name) {
			d.workloadRef(n, at, name, r)
		}
		if kind == "pause_workload" {
			return &PauseWorkload{Workload: name}
		}
		return &ResumeWorkload{Workload: name}
	case "wait_workloads":
		a := &WaitWorkloads{Timeout: DefaultDeadline}
		if !l.method {
			d.errAt(step.keyNode(kind), at, "applies to method steps: rollbacks run after the workloads have stopped")
		}
		o := d.object(n, at)
		if wn := o.get("workloads"); wn != nil {
			for i, item := range d.list(wn, o.at("workloads")) {
				p := index(o.at("workloads"), i)
				if name, ok := d.str(item, p); ok {
					d.workloadRef(item, p, name, r)
					a.Workloads = append(a.Workloads, name)
				}
			}
		} else if len(r.loadList) == 0 {
			d.errAt(step.keyNode(kind), at, "there are no workloads to wait for")
		}
		o.positive("timeout", &a.Timeout)
		o.done()
		return a
	case "resolve_prepared":
		a := &ResolvePrepared{}
		o := d.object(n, at)
		o.str("gid_prefix", &a.GIDPrefix)
		if !o.enum("policy", &a.Policy, PolicyCommit, PolicyRollback, PolicyHistory) {
			o.missing("policy", " (commit, rollback or history)")
		}
		if a.Policy == PolicyHistory && !hasTwoPhaseLedger(r) {
			d.errAt(deref(o.get("policy")), o.at("policy"), "history decides from a ledger workload with two_phase: true, and there is none")
		}
		o.done()
		return a
	case "crash":
		a := &Crash{Mode: CrashKill}
		o := d.nodeStep(n, at, &a.Node, r)
		o.enum("mode", &a.Mode, CrashKill, CrashImmediate, CrashFast)
		o.done()
		return a
	case "start":
		a := &Start{}
		d.nodeStep(n, at, &a.Node, r).done()
		return a
	case "promote":
		a := &Promote{Wait: true}
		o := d.nodeStep(n, at, &a.Node, r)
		o.boolean("wait", &a.Wait)
		o.done()
		return a
	case "rewind":
		a := &Rewind{}
		o := d.object(n, at)
		if o.reqStr("node", &a.Node) {
			d.nodeRef(o.get("node"), o.at("node"), a.Node, r)
		}
		if o.reqStr("source", &a.Source) {
			d.nodeRef(o.get("source"), o.at("source"), a.Source, r)
			if a.Source == a.Node {
				d.errAt(deref(o.get("source")), o.at("source"), "a node cannot follow itself: source is the new primary")
			}
		}
		o.done()
		return a
	case "wait_for":
		a := &WaitFor{Timeout: DefaultDeadline}
		o := d.object(n, at)
		o.reqStr("sql", &a.SQL)
		if o.str("node", &a.Node) {
			d.nodeRef(o.get("node"), o.at("node"), a.Node, r)
		}
		if en := o.get("expect"); en != nil {
			a.Expect = d.expect(en, o.at("expect"))
		} else {
			o.missing("expect", " (equals, min or max)")
		}
		o.positive("timeout", &a.Timeout)
		o.done()
		return a
	case "base_backup":
		a := &BaseBackup{}
		// base_backup: with no node backs up the node that serves.
		if !isNull(deref(n)) {
			d.nodeStep(n, at, &a.Node, r).done()
		}
		d.needArchive(step, kind, r)
		r.backups++
		return a
	case "restore_point":
		a := &RestorePoint{}
		if d.reqScalar(n, at, &a.Name) {
			if slices.Contains(r.points, a.Name) {
				d.errAt(deref(n), at, "restore point %q is made by an earlier step already", a.Name)
			}
			r.points = append(r.points, a.Name)
			if r.backups > 0 {
				r.backedPoints = append(r.backedPoints, a.Name)
			}
		}
		d.needArchive(step, kind, r)
		return a
	case "restore":
		a := &Restore{}
		o := d.object(n, at)
		if o.reqStr("point", &a.Point) && !slices.Contains(r.points, a.Point) {
			d.errAt(deref(o.get("point")), o.at("point"), "no earlier restore_point step makes %q%s", a.Point, didYouMean(a.Point, r.points))
		}
		if o.reqStr("node", &a.Node) {
			if slices.Contains(r.nodes(), a.Node) {
				d.errAt(deref(o.get("node")), o.at("node"), "%q is a node already: name the restored one anew", a.Node)
			} else if !nodeName.MatchString(a.Node) {
				d.errAt(deref(o.get("node")), o.at("node"), "%q: want a name of lower-case letters, digits and _ (it names a replication slot and environment variables)", a.Node)
			} else {
				r.restored = append(r.restored, a.Node)
			}
		}
		o.done()
		d.needArchive(step, kind, r)
		switch {
		case r.backups == 0:
			d.errAt(step.keyNode(kind), at, "no earlier base_backup step took a backup to restore")
		case slices.Contains(r.points, a.Point) && !slices.Contains(r.backedPoints, a.Point):
			d.errAt(deref(o.get("point")), o.at("point"), "no base_backup step comes before restore point %q: recovery starts from a backup taken before the point", a.Point)
		}
		return a
	case "pgbouncer":
		a := &PgBouncer{}
		o := d.object(n, at)
		hasCmd := o.enum("command", &a.Command, PgBouncerCommands...)
		if o.str("database", &a.Database) && !nodeName.MatchString(strings.ToLower(a.Database)) {
			d.errAt(deref(o.get("database")), o.at("database"), "%q: want a database name of letters, digits and _", a.Database)
		}
		if o.str("upstream", &a.Upstream) {
			d.upstream(o.get("upstream"), o.at("upstream"), a.Upstream, r)
			if a.Upstream == UpstreamPgBouncer {
				d.errAt(deref(o.get("upstream")), o.at("upstream"), "PgBouncer cannot be its own upstream")
			}
		}
		switch {
		case hasCmd && a.Upstream != "":
			d.errAt(o.keyNode("upstream"), o.at("upstream"), "give command or upstream, not both (split it into two steps)")
		case !hasCmd && a.Upstream == "":
			d.errAt(o.node, at, "want command (%s) or upstream (where [databases] points)", strings.Join(PgBouncerCommands, ", "))
		case a.Database != "" && (a.Upstream != "" || a.Command == "RELOAD"):
			d.errAt(o.keyNode("database"), o.at("database"), "applies to PAUSE, RESUME and RECONNECT")
		case a.Command == "PAUSE" && r.embedded != nil && r.embedded.PgBouncer && r.embedded.PoolMode == PoolSession:
			// pgbouncer#369: with session pooling PAUSE waits for every
			// client to disconnect, and the workloads never do.
			d.errAt(deref(o.get("command")), o.at("command"), "PAUSE waits for every client's session to end under pool_mode: session, and a workload's never does: use pool_mode: transaction")
		}
		if r.embedded == nil || !r.embedded.PgBouncer {
			d.errAt(step.keyNode(kind), at, "acts on the embedded PgBouncer: set target.embedded.pgbouncer: true")
		}
		o.done()
		return a
	case "pause_replay", "resume_replay":
		var node string
		d.nodeStep(n, at, &node, r).done()
		if kind == "pause_replay" {
			return &PauseReplay{Node: node}
		}
		return &ResumeReplay{Node: node}
	}
	return nil
}

// nodeName is what a restored node may be called: it becomes part of
// environment variable names.
var nodeName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// needArchive reports a backup or restore step without an archive.
func (d *decoder) needArchive(step *object, kind string, r *refs) {
	switch {
	case r.embedded == nil && len(r.userNodes) == 0:
		d.errAt(step.keyNode(kind), step.at(kind), "acts on the servers of target.embedded (with archive: true)")
	case r.embedded != nil && !r.embedded.Archive:
		d.errAt(step.keyNode(kind), step.at(kind), "needs the WAL archive: set target.embedded.archive: true")
	}
}

// nodeStep reads a step that names a node: the name alone, or a mapping
// with node and the step's other fields, which the caller reads before
// calling done on the object returned.
func (d *decoder) nodeStep(n *yaml.Node, path string, dst *string, r *refs) *object {
	if s := deref(n); s.Kind == yaml.ScalarNode {
		if d.reqScalar(s, path, dst) {
			d.nodeRef(s, path, *dst, r)
		}
		// An empty object: nothing more to read.
		return d.object(&yaml.Node{Kind: yaml.MappingNode, Line: s.Line, Column: s.Column}, path)
	}
	o := d.object(n, path)
	if o.reqStr("node", dst) {
		d.nodeRef(o.get("node"), o.at("node"), *dst, r)
	}
	return o
}

func hasTwoPhaseLedger(r *refs) bool {
	for _, w := range r.workloads {
		if w.Ledger != nil && w.Ledger.TwoPhase {
			return true
		}
	}
	return false
}

func (d *decoder) inject(n *yaml.Node, at string, step *object, r *refs, l *stepList) Action {
	a := &Inject{}
	o := d.object(n, at)
	rn := o.get("rule")
	if rn != nil {
		a.Rule, _ = d.rule(rn, o.at("rule"))
	} else {
		o.missing("rule", " (a fault rule: name, match, action, limits)")
	}
	o.duration("duration", &a.Duration)
	o.done()
	if len(r.proxyList) == 0 {
		d.errAt(step.keyNode("inject"), at, "there is no proxy to inject into: add one under proxies")
	}
	if rn == nil || a.Rule.Name == "" {
		return a
	}
	ro := deref(rn)
	if a.Rule.Proxy != "" {
		d.proxyRef(lookup(ro, "proxy"), join(o.at("rule"), "proxy"), a.Rule.Proxy, r)
	}
	key := [2]string{a.Rule.Proxy, a.Rule.Name}
	if line, ok := l.active[key]; ok {
		d.errAt(lookup(ro, "name"), join(o.at("rule"), "name"), "rule %q is still in place (injected on line %d): remove it first, or give that inject a duration", a.Rule.Name, line)
	}
	if a.Duration == 0 {
		l.active[key] = step.node.Line
	}
	if _, ok := r.injected[a.Rule.Name]; !ok {
		r.injected[a.Rule.Name] = posOf(step.node)
		r.ruleOrder = append(r.ruleOrder, a.Rule.Name)
	}
	return a
}

// lookup returns the value of key in a mapping node, or the mapping.
func lookup(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return deref(m.Content[i+1])
		}
	}
	return m
}

// reqScalar reads a string that must not be empty.
func (d *decoder) reqScalar(n *yaml.Node, path string, dst *string) bool {
	v, ok := d.str(n, path)
	if !ok {
		return false
	}
	if strings.TrimSpace(v) == "" {
		d.errAt(deref(n), path, "is empty")
		return false
	}
	*dst = v
	return true
}

func (d *decoder) proxyRef(n *yaml.Node, path, name string, r *refs) {
	if _, ok := r.proxies[name]; ok {
		return
	}
	if len(r.proxyList) == 0 {
		d.errAt(deref(n), path, "no proxy named %q: there are no proxies", name)
		return
	}
	d.errAt(deref(n), path, "no proxy named %q%s; want %s", name, didYouMean(name, r.proxyList), oneOf(r.proxyList))
}

func (d *decoder) workloadRef(n *yaml.Node, path, name string, r *refs) *Workload {
	if w, ok := r.workloads[name]; ok {
		return w
	}
	if len(r.loadList) == 0 {
		d.errAt(deref(n), path, "no workload named %q: there are no workloads", name)
		return nil
	}
	d.errAt(deref(n), path, "no workload named %q%s; want %s", name, didYouMean(name, r.loadList), oneOf(r.loadList))
	return nil
}

// typedWorkloadRef checks that a workload exists and is of type typ.
func (d *decoder) typedWorkloadRef(n *yaml.Node, path, name, typ, verifier string, r *refs) {
	w := d.workloadRef(n, path, name, r)
	if w != nil && w.Type != typ && w.Type != "" {
		d.errAt(deref(n), path, "%s checks a %s workload; %q is a %s workload", verifier, typ, name, w.Type)
	}
}
