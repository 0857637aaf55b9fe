package experiments

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// sections are the top-level keys of an experiment, in the order the runner
// goes through them.
func sections() []string {
	return []string{"name", "description", "tags", "target", "proxies", "setup", "workloads",
		"steady_state", "during", "method", "recovery", "verify", "rollbacks", "fault_fired", "explore"}
}

// Defaults filled in by Parse.
const (
	DefaultListen        = "127.0.0.1:0"
	DefaultLedgerTable   = "pgchaos_ledger"
	DefaultExecTimeout   = Duration(60 * time.Second)
	DefaultDeadline      = Duration(60 * time.Second)
	DefaultMaxLag        = Duration(10 * time.Second)
	defaultAccounts      = 10
	defaultInitial       = 100
	defaultRetryOnSerial = "40001"
	defaultRetryOnDead   = "40P01"
)

// ParseFile reads and parses an experiment file; see Parse.
func ParseFile(path string, vars map[string]string, env func(string) (string, bool)) (*Experiment, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read experiment: %w", err)
	}
	return Parse(data, path, vars, env)
}

// Parse reads an experiment from YAML. source names the file in errors.
// ${var:KEY} is replaced from vars and ${env:NAME} by env (nil: the
// process's environment).
//
// When anything is wrong the error is an Errors listing every problem,
// each as "FILE:LINE:COLUMN: field.path: message", sorted by position.
func Parse(data []byte, source string, vars map[string]string, env func(string) (string, bool)) (*Experiment, error) {
	if env == nil {
		env = os.LookupEnv
	}
	d := &decoder{src: source, vars: vars, env: env}
	root := d.document(data)
	if root == nil {
		return nil, sorted(d.probs)
	}
	e := d.experiment(root)
	if len(d.probs) > 0 {
		return nil, sorted(d.probs)
	}
	return e, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parserProblem tells the YAML parser's problems from its scanner's: they
// number lines differently.
func parserProblem(msg string) bool {
	return strings.HasPrefix(msg, "did not find expected ',' or") ||
		strings.HasPrefix(msg, "did not find expected <") ||
		msg == "did not find expected key" || msg == "did not find expected node content" ||
		msg == "did not find expected '-' indicator" || msg == "found incompatible YAML document" ||
		msg == "found undefined tag handle" || strings.HasPrefix(msg, "found duplicate %")
}

// readerProblem tells the problems of the YAML reader, which decodes the
// file's characters before the scanner sees them.
func readerProblem(msg string) bool {
	switch msg {
	case "control characters are not allowed", "invalid leading UTF-8 octet", "incomplete UTF-8 octet sequence",
		"invalid trailing UTF-8 octet", "invalid length of a UTF-8 sequence", "invalid Unicode character",
		"incomplete UTF-16 character", "unexpected low surrogate area", "incomplete UTF-16 surrogate pair",
		"expected low surrogate area":
		return true
	}
	return false
}

// unreadable returns the line and column of the first character of data
// that the YAML reader refuses: one outside YAML's printable set, or not
// UTF-8 (or UTF-16 after its byte order mark). Lines and columns count as
// the YAML scanner counts them; 0, 0 when every character is readable.
func unreadable(data []byte) (line, column int) {
	next := func(b []byte) (rune, int) {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n <= 1 {
			return -1, 1
		}
		return r, n
	}
	switch {
	case bytes.HasPrefix(data, []byte{0xFF, 0xFE}), bytes.HasPrefix(data, []byte{0xFE, 0xFF}):
		var order binary.ByteOrder = binary.LittleEndian
		if data[0] == 0xFE {
			order = binary.BigEndian
		}
		data = data[2:]
		next = func(b []byte) (rune, int) {
			if len(b) < 2 {
				return -1, len(b)
			}
			r := rune(order.Uint16(b))
			switch {
			case !utf16.IsSurrogate(r):
				return r, 2
			case r >= 0xDC00 || len(b) < 4:
				return -1, 2
			}
			if r = utf16.DecodeRune(r, rune(order.Uint16(b[2:]))); r == utf8.RuneError {
				return -1, 2
			}
			return r, 4
		}
	case bytes.HasPrefix(data, []byte("\xEF\xBB\xBF")):
		data = data[3:]
	}
	line, column = 1, 1
	for i := 0; i < len(data); {
		r, n := next(data[i:])
		if !yamlPrintable(r) {
			return line, column
		}
		i += n
		crlf := false
		if r == '\r' && i < len(data) {
			nr, _ := next(data[i:])
			crlf = nr == '\n' // one line break, counted at the LF
		}
		switch {
		case !crlf && (r == '\r' || r == '\n' || r == 0x85 || r == 0x2028 || r == 0x2029):
			line, column = line+1, 1
		default:
			column++
		}
	}
	return 0, 0
}

// yamlPrintable is the set of characters YAML 1.1 allows in a stream.
func yamlPrintable(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D || r >= 0x20 && r <= 0x7E || r == 0x85 ||
		r >= 0xA0 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}

// document parses the YAML of a file holding one experiment.
func (d *decoder) document(data []byte) *yaml.Node {
	syntax := func(err error) {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		line, column := 0, 0
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		switch {
		case readerProblem(msg):
			// The YAML reader says what it cannot read, not where.
			line, column = unreadable(data)
		case parserProblem(msg):
			// The YAML parser (not its scanner) counts lines from 0.
			line++
		case line == 0:
			// The scanner counts from 0 too, and leaves the line out of
			// its message on the first.
			line = 1
		}
		d.probs = append(d.probs, Problem{Source: d.src, Line: line, Column: column, Msg: msg})
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.probs = append(d.probs, Problem{Source: d.src, Msg: "the file is empty (an experiment needs at least a name and a target)"})
		} else {
			syntax(err)
		}
		return nil
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		d.errAt(&next, "", "one experiment per file: this second YAML document is not read")
	} else if !errors.Is(err, io.EOF) {
		syntax(err)
	}
	if len(doc.Content) == 0 {
		d.probs = append(d.probs, Problem{Source: d.src, Msg: "the file is empty (an experiment needs at least a name and a target)"})
		return nil
	}
	root := deref(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		d.errAt(root, "", "want a mapping of sections (%s), got %s", strings.Join(sections(), ", "), describe(root))
		return nil
	}
	return root
}

// refs are the names steps and verifiers may refer to, gathered as the
// file is read.
type refs struct {
	proxies   map[string]*Proxy
	proxyList []string
	workloads map[string]*Workload
	loadList  []string
	embedded  *Embedded
	// injected maps a rule name to where a step first injected it.
	injected  map[string]Pos
	ruleOrder []string
	// restored are the nodes restore steps make, and points the restore
	// points of restore_point steps.
	restored []string
	points   []string
	backups  int
	// backedPoints are the restore points made after a base_backup.
	backedPoints []string
	// userNodes are the names of target.nodes.
	userNodes []string
	// faultSteps counts the method's inject and crash steps;
	// methodStepNames lists the names the method's steps were given.
	faultSteps      int
	methodStepNames []string
}

func (d *decoder) experiment(root *yaml.Node) *Experiment {
	e := &Experiment{Source: d.src, FaultFired: true}
	o := d.object(root, "")
	r := &refs{proxies: map[string]*Proxy{}, workloads: map[string]*Workload{}, injected: map[string]Pos{}}

	o.reqStr("name", &e.Name)
	o.str("description", &e.Description)
	if n := o.get("tags"); n != nil {
		e.Tags, _ = d.strings(n, "tags")
	}
	if n := o.get("target"); n != nil {
		e.Target = d.target(n, "target")
		r.embedded = e.Target.Embedded
		for _, nd := range e.Target.Nodes {
			r.userNodes = append(r.userNodes, nd.Name)
		}
	} else {
		o.missing("target", " (dsn: ... or embedded: {})")
	}
	if n := o.get("proxies"); n != nil {
		e.Proxies = d.proxies(n, "proxies", r)
	}
	if em := e.Target.Embedded; em != nil && em.PgBouncerVia != "" {
		switch p, ok := r.proxies[em.PgBouncerVia]; {
		case !ok:
			d.errAt(d.via, d.viaPath, "no proxy named %q%s; want a proxy with upstream: target", em.PgBouncerVia, didYouMean(em.PgBouncerVia, r.proxyList))
		case p.Remote() || p.Upstream != UpstreamTarget:
			d.errAt(d.via, d.viaPath, "proxy %q must be started in-process with upstream: target (PgBouncer connects to PostgreSQL through it)", em.PgBouncerVia)
		}
	}
	if em := e.Target.Embedded; em != nil && em.ReplicationVia != "" {
		switch p, ok := r.proxies[em.ReplicationVia]; {
		case !ok:
			d.errAt(d.replVia, d.replViaPath, "no proxy named %q%s; want a proxy with upstream: primary", em.ReplicationVia, didYouMean(em.ReplicationVia, r.proxyList))
		case p.Remote() || (p.Upstream != NodePrimary && p.Upstream != UpstreamTarget):
			d.errAt(d.replVia, d.replViaPath, "proxy %q must be started in-process with upstream: primary (the standbys stream from the primary through it)", em.ReplicationVia)
		}
	}
	setup := &stepList{active: map[[2]string]int{}}
	for i, item := range d.list(o.get("setup"), "setup") {
		e.Setup = append(e.Setup, d.setupStep(item, index("setup", i), r, setup))
	}
	if n := o.get("workloads"); n != nil {
		e.Workloads = d.workloads(n, "workloads", r)
	}
	if n := o.get("steady_state"); n != nil {
		so := d.object(n, "steady_state")
		for i, item := range d.list(so.get("probes"), "steady_state.probes") {
			e.SteadyState.Probes = append(e.SteadyState.Probes, d.probe(item, index("steady_state.probes", i)))
		}
		so.done()
	}
	seen := map[string]int{}
	for i, item := range d.list(o.get("during"), "during") {
		path := index("during", i)
		p := d.duringProbe(item, path)
		if line, dup := seen[p.Name]; dup && p.Name != "" {
			d.errAt(lookup(deref(item), "name"), join(path, "name"), "%q is the name of the during probe on line %d too", p.Name, line)
		}
		seen[p.Name] = p.Pos.Line
		e.During = append(e.During, p)
	}
	e.Method = d.steps(o.get("method"), "method", r, true)
	e.Recovery.Deadline = DefaultDeadline
	if n := o.get("recovery"); n != nil {
		ro := d.object(n, "recovery")
		ro.positive("deadline", &e.Recovery.Deadline)
		ro.done()
	}
	// Rollbacks may remove rules the method injected, but verifiers judge
	// the method's rules only.
	methodRules := append([]string(nil), r.ruleOrder...)
	e.Rollbacks = d.steps(o.get("rollbacks"), "rollbacks", r, false)
	o.boolean("fault_fired", &e.FaultFired)
	e.Verify = d.verifiers(o.get("verify"), "verify", r, methodRules)
	if n := o.get("explore"); n != nil {
		e.Explore = d.explore(n, "explore", e, r)
	}
	if e.FaultFired {
		explicit, disabled := map[string]bool{}, map[string]bool{}
		for _, st := range e.Method {
			if in, ok := st.Action.(*Inject); ok && in.Rule.Enabled != nil && !*in.Rule.Enabled {
				disabled[in.Rule.Name] = true
			}
		}
		for _, v := range e.Verify {
			if ff, ok := v.Check.(*FaultFired); ok {
				explicit[ff.Rule] = true
			}
		}
		for _, name := range methodRules {
			// A rule injected disabled is not meant to fire.
			if !explicit[name] && !disabled[name] {
				e.Verify = append(e.Verify, Verifier{Name: "fault_fired " + name, Check: &FaultFired{Rule: name, Min: 1}, Implicit: true, Pos: r.injected[name]})
			}
		}
	}
	// x- keys are for the user (a place for YAML anchors), as in Compose
	// files.
	for _, k := range o.keys {
		if strings.HasPrefix(k.Value, "x-") {
			o.know(k.Value)
		}
	}
	o.done()
	return e
}

func (d *decoder) target(n *yaml.Node, path string) Target {
	var t Target
	o := d.object(n, path)
	switch en := o.get("embedded"); {
	case en != nil:
		if o.str("dsn", &t.DSN) {
			d.errAt(o.keyNode("embedded"), o.at("embedded"), "give dsn or embedded, not both")
		}
		o.know("nodes")
		if o.has("nodes") {
			d.errAt(o.keyNode("nodes"), o.at("nodes"), "give nodes or embedded, not both (an embedded target's nodes are its standbys)")
		}
		t.Embedded = d.embedded(en, o.at("embedded"))
	case o.has("nodes"):
		t.Nodes = d.targetNodes(o.get("nodes"), o.at("nodes"))
		if !o.str("dsn", &t.DSN) {
			for _, nd := range t.Nodes {
				if nd.Role == RolePrimary {
					t.DSN = nd.DSN
				}
			}
		}
	case o.has("dsn"):
		o.reqStr("dsn", &t.DSN)
	default:
		o.know("dsn")
		o.know("nodes")
		d.errAt(o.node, path, "want dsn (a server to use), nodes (the servers of your cluster) or embedded (a throwaway server started for the run)")
	}
	for _, k := range []string{"setup_dsn", "verify_dsn"} {
		dst := &t.SetupDSN
		if k == "verify_dsn" {
			dst = &t.VerifyDSN
		}
		if o.str(k, dst) && t.Embedded != nil {
			d.errAt(o.keyNode(k), o.at(k), "applies to a dsn target (an embedded target's DSNs are known when it starts)")
		}
		if *dst == "" {
			*dst = t.DSN
		}
	}
	o.done()
	return t
}

// targetNodes reads the servers of the user's own cluster: one primary,
// each with a name and a DSN.
func (d *decoder) targetNodes(n *yaml.Node, path string) []Node {
	var out []Node
	names := map[string]int{}
	primaries := 0
	for i, item := range d.list(n, path) {
		at := index(path, i)
		o := d.object(item, at)
		nd := Node{Pos: posOf(deref(item))}
		if o.reqStr("name", &nd.Name) {
			switch line, dup := names[nd.Name]; {
			case dup:
				d.errAt(deref(o.get("name")), o.at("name"), "duplicate node name %q (first at line %d)", nd.Name, line)
			case !nodeName.MatchString(nd.Name):
				d.errAt(deref(o.get("name")), o.at("name"), "%q: want a name of lower-case letters, digits and _ (it names environment variables)", nd.Name)
			default:
				names[nd.Name] = deref(o.get("name")).Line
			}
		}
		if !o.enum("role", &nd.Role, RolePrimary, RoleStandby) {
			o.missing("role", " (primary or standby)")
		}
		if nd.Role == RolePrimary {
			primaries++
			if primaries > 1 {
				d.errAt(deref(o.get("role")), o.at("role"), "a second primary: the run starts from one primary and its standbys")
			}
		}
		o.reqStr("dsn", &nd.DSN)
		o.done()
		out = append(out, nd)
	}
	if len(out) > 0 && primaries == 0 {
		d.errAt(deref(n), path, "no node has role: primary")
	}
	return out
}

func (d *decoder) embedded(n *yaml.Node, path string) *Embedded {
	e := &Embedded{PoolMode: PoolSession, Settings: map[string]string{}}
	if s := deref(n); s.Kind == yaml.ScalarNode && s.ShortTag() == "!!bool" {
		// embedded: true is embedded: {}.
		if b, _ := d.boolean(s, path); !b {
			d.errAt(s, path, "want a mapping (or true), got false")
		}
		return e
	}
	o := d.object(n, path)
	o.boolean("pgbouncer", &e.PgBouncer)
	if o.enum("pool_mode", &e.PoolMode, PoolSession, PoolTransaction) && !e.PgBouncer {
		d.errAt(o.keyNode("pool_mode"), o.at("pool_mode"), "applies with pgbouncer: true")
	}
	if o.str("pgbouncer_via", &e.PgBouncerVia) {
		if !e.PgBouncer {
			d.errAt(o.keyNode("pgbouncer_via"), o.at("pgbouncer_via"), "applies with pgbouncer: true")
		}
		// The proxy it names is checked once the proxies are read.
		d.via, d.viaPath = deref(o.get("pgbouncer_via")), o.at("pgbouncer_via")
	}
	if s := o.get("settings"); s != nil {
		e.Settings = d.stringMap(s, o.at("settings"))
	}
	if s := o.get("pgbouncer_settings"); s != nil {
		e.PgBouncerSettings = d.stringMap(s, o.at("pgbouncer_settings"))
		if !e.PgBouncer {
			d.errAt(o.keyNode("pgbouncer_settings"), o.at("pgbouncer_settings"), "applies with pgbouncer: true")
		}
	}
	o.int("standbys", &e.Standbys, 0)
	if e.Standbys > maxStandbys {
		d.errAt(deref(o.get("standbys")), o.at("standbys"), "at most %d (each is a PostgreSQL server on this machine)", maxStandbys)
	}
	e.Synchronous = SyncOff
	if n := deref(o.get("synchronous")); n != nil && n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		// synchronous: true is on, as YAML 1.1 would read on.
		b, _ := d.boolean(n, o.at("synchronous"))
		e.Synchronous = map[bool]string{true: SyncOn, false: SyncOff}[b]
	} else {
		o.enum("synchronous", &e.Synchronous, SyncOff, SyncOn, SyncQuorum)
	}
	if e.Synchronous != SyncOff && e.Standbys == 0 {
		d.errAt(o.keyNode("synchronous"), o.at("synchronous"), "synchronous replication needs standbys: give standbys: 1 or more")
	}
	o.boolean("archive", &e.Archive)
	if o.str("replication_via", &e.ReplicationVia) {
		if e.Standbys == 0 {
			d.errAt(o.keyNode("replication_via"), o.at("replication_via"), "applies with standbys: 1 or more")
		}
		// The proxy it names is checked once the proxies are read.
		d.replVia, d.replViaPath = deref(o.get("replication_via")), o.at("replication_via")
	}
	o.done()
	return e
}

// maxStandbys bounds an embedded cluster.
const maxStandbys = 5

// upstream checks an upstream: host:port or one of the words.
func (d *decoder) upstream(n *yaml.Node, path, v string, r *refs) {
	switch v {
	case UpstreamTarget:
		return
	case UpstreamPgBouncer:
		if r.embedded == nil || !r.embedded.PgBouncer {
			d.errAt(deref(n), path, "pgbouncer means the embedded PgBouncer: set target.embedded.pgbouncer: true")
		}
		return
	}
	if slices.Contains(r.nodes(), v) {
		return
	}
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		words := append([]string{UpstreamTarget, UpstreamPgBouncer}, r.nodes()...)
		d.errAt(deref(n), path, "want host:port, %s, got %q%s", oneOf(words), v, didYouMean(v, words))
	}
}

// nodes lists the embedded nodes a step or verifier may name: those of
// the cluster, and those earlier restore steps made.
func (r *refs) nodes() []string {
	if r.embedded == nil {
		return r.userNodes
	}
	return append(r.embedded.Nodes(), r.restored...)
}

// hasNodes reports whether steps and verifiers may name nodes.
func (r *refs) hasNodes() bool { return r.embedded != nil || len(r.userNodes) > 0 }

// nodeRef checks the name of an embedded node.
func (d *decoder) nodeRef(n *yaml.Node, path, name string, r *refs) {
	if !r.hasNodes() {
		d.errAt(deref(n), path, "no node named %q: nodes are the servers of target.embedded (primary, and standby1... with standbys: N) or of target.nodes", name)
		return
	}
	nodes := r.nodes()
	if !slices.Contains(nodes, name) {
		hint := ""
		if r.embedded != nil && r.embedded.Standbys == 0 && strings.HasPrefix(name, "standby") {
			hint = " (add standbys: N to target.embedded)"
		}
		d.errAt(deref(n), path, "no node named %q%s; want %s%s", name, didYouMean(name, nodes), oneOf(nodes), hint)
	}
}

func (d *decoder) proxies(n *yaml.Node, path string, r *refs) []Proxy {
	var out []Proxy
	listens := map[string]int{}
	names := map[string]int{}
	items := d.list(n, path)
	for i, item := range items {
		at := index(path, i)
		o := d.object(item, at)
		p := Proxy{Pos: posOf(deref(item))}
		if o.reqStr("name", &p.Name) {
			switch line, dup := names[p.Name]; {
			case dup:
				d.errAt(deref(o.get("name")), o.at("name"), "duplicate proxy name %q (first at line %d)", p.Name, line)
			case p.Name == Direct:
				d.errAt(deref(o.get("name")), o.at("name"), "%q is reserved: through: direct bypasses the proxies", Direct)
			default:
				names[p.Name] = deref(o.get("name")).Line
			}
		}
		var remote []string // url, urls, dns: in the order written
		for _, k := range o.keys {
			if k.Value == "url" || k.Value == "urls" || k.Value == "dns" {
				remote = append(remote, k.Value)
			}
		}
		if len(remote) > 0 {
			for _, k := range []string{"listen", "upstream"} {
				if o.get(k) != nil {
					d.errAt(o.keyNode(k), o.at(k), "a proxy with %s is already running; %s applies to a proxy started in-process", remote[0], k)
				}
			}
			for _, k := range remote[1:] {
				d.errAt(o.keyNode(k), o.at(k), "give one of url (one instance), urls or dns (a set of instances), not %s and %s", remote[0], k)
			}
			d.remoteProxy(o, remote[0], &p)
		} else {
			p.Listen = DefaultListen
			if o.str("listen", &p.Listen) {
				if _, _, err := net.SplitHostPort(p.Listen); err != nil {
					d.errAt(deref(o.get("listen")), o.at("listen"), "want host:port, got %q", p.Listen)
				} else if j, dup := listens[p.Listen]; dup && !strings.HasSuffix(p.Listen, ":0") {
					d.errAt(deref(o.get("listen")), o.at("listen"), "%s is also the listen address of proxies[%d]", p.Listen, j)
				}
				listens[p.Listen] = i
			}
			if o.reqStr("upstream", &p.Upstream) {
				d.upstream(o.get("upstream"), o.at("upstream"), p.Upstream, r)
			}
		}
		o.done()
		out = append(out, p)
	}
	for i := range out {
		if out[i].Name != "" {
			if _, dup := r.proxies[out[i].Name]; !dup {
				r.proxies[out[i].Name] = &out[i]
				r.proxyList = append(r.proxyList, out[i].Name)
			}
		}
	}
	return out
}

// remoteProxy reads the key (url, urls or dns) that says where a running
// proxy's control APIs are.
func (d *decoder) remoteProxy(o *object, key string, p *Proxy) {
	for _, k := range []string{"url", "urls", "dns"} {
		o.know(k)
	}
	n := o.get(key)
	switch key {
	case "url":
		if o.str("url", &p.URL) && !apiURL(p.URL) {
			d.errAt(deref(n), o.at("url"), "want the control API's URL, like http://127.0.0.1:8474, got %q", p.URL)
		}
	case "urls":
		items := d.list(n, o.at("urls"))
		if isNull(n) || deref(n).Kind == yaml.SequenceNode && len(items) == 0 {
			d.errAt(deref(n), o.at("urls"), "want the control APIs of at least one instance (a list of http:// or https:// URLs)")
		}
		seen := map[string]int{}
		for i, item := range items {
			at := index(o.at("urls"), i)
			u, ok := d.str(item, at)
			if !ok {
				continue
			}
			switch line, dup := seen[u]; {
			case !apiURL(u):
				d.errAt(deref(item), at, "want the control API's URL, like http://127.0.0.1:8474, got %q", u)
			case dup:
				d.errAt(deref(item), at, "%s is listed twice (first at line %d): each instance would get every rule twice", u, line)
			default:
				seen[u] = deref(item).Line
				p.URLs = append(p.URLs, u)
			}
		}
	case "dns":
		if o.str("dns", &p.DNS) {
			if msg := dnsProblem(p.DNS); msg != "" {
				d.errAt(deref(n), o.at("dns"), "%s, got %q", msg, p.DNS)
			}
		}
	}
}

// apiURL reports whether s is a control API's URL: http(s)://host[:port].
func apiURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.Hostname() != ""
}

// dnsProblem says what is wrong with a proxy's dns ("" nothing): a name
// and the control API's port, optionally after http:// or https://.
func dnsProblem(s string) string {
	const want = "want NAME:PORT, a name whose every address is an instance and the port of their control API"
	rest := s
	for _, scheme := range []string{"http://", "https://"} {
		rest = strings.TrimPrefix(rest, scheme)
	}
	if strings.Contains(rest, "://") || strings.ContainsAny(rest, "/?#@") {
		return want + " (no path)"
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil || host == "" {
		return want
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return want + " (the port is a number)"
	}
	return ""
}

// setupStep reads {sql, dsn}, {exec, timeout} or {inject}.
func (d *decoder) setupStep(n *yaml.Node, path string, r *refs, l *stepList) Step {
	s := Step{Pos: posOf(deref(n))}
	o := d.object(n, path)
	o.str("name", &s.Name)
	hasSQL, hasExec, hasInject := o.has("sql"), o.has("exec"), o.has("inject")
	switch {
	case hasInject && (hasSQL || hasExec):
		o.know("sql")
		o.know("exec")
		o.know("inject")
		d.errAt(o.keyNode("inject"), o.at("inject"), "a setup step does one thing (split it into two steps)")
	case hasInject:
		// A fault in place before the workloads send their first
		// statement; recovery removes it, as a method's.
		s.Action = d.inject(o.get("inject"), o.at("inject"), o, r, l)
		o.elsewhere["dsn"] = "applies to sql steps"
		o.elsewhere["timeout"] = "applies to exec steps"
	case hasSQL && hasExec:
		d.errAt(o.keyNode("exec"), o.at("exec"), "a setup step runs sql or exec, not both (split it into two steps)")
	case hasSQL:
		a := &RunSQL{}
		o.reqStr("sql", &a.SQL)
		o.str("dsn", &a.DSN)
		o.elsewhere["timeout"] = "applies to exec steps"
		s.Action = a
	case hasExec:
		a := &RunCommand{Timeout: DefaultExecTimeout}
		o.reqStr("exec", &a.Command)
		o.positive("timeout", &a.Timeout)
		o.elsewhere["dsn"] = "applies to sql steps"
		s.Action = a
	default:
		o.know("sql")
		o.know("exec")
		o.know("inject")
		o.know("dsn")
		o.know("timeout")
		d.errAt(o.node, path, "want sql (with an optional dsn), exec (with an optional timeout) or inject")
	}
	o.done()
	return s
}

var (
	identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$`)
	sqlstate   = regexp.MustCompile(`^[0-9A-Z]{5}$`)
)

var workloadTypes = []string{WorkloadLedger, WorkloadBank, WorkloadSQL, WorkloadExec}

// workloadOptions are the keys each workload type adds.
var workloadOptions = map[string][]string{
	WorkloadLedger: {"table", "two_phase"},
	WorkloadBank:   {"accounts", "initial_balance", "isolation"},
	WorkloadSQL:    {"statements", "retry"},
	WorkloadExec:   {"command", "env"},
}

func (d *decoder) workloads(n *yaml.Node, path string, r *refs) []Workload {
	var out []Workload
	var names []*yaml.Node
	for i, item := range d.list(n, path) {
		w, name := d.workload(item, index(path, i), r)
		out = append(out, w)
		names = append(names, name)
	}
	for i := range out {
		w := &out[i]
		if w.Name == "" {
			continue
		}
		if prev, dup := r.workloads[w.Name]; dup {
			d.errAt(names[i], index(path, i)+".name", "duplicate workload name %q (first at line %d)", w.Name, prev.Pos.Line)
			continue
		}
		r.workloads[w.Name] = w
		r.loadList = append(r.loadList, w.Name)
	}
	return out
}

// workload reads one workload; name is where its name is written.
func (d *decoder) workload(n *yaml.Node, path string, r *refs) (w Workload, name *yaml.Node) {
	w = Workload{Clients: 1, Pos: posOf(deref(n))}
	o := d.object(n, path)
	o.reqStr("name", &w.Name)
	name = deref(o.get("name"))
	if !o.enum("type", &w.Type, workloadTypes...) {
		o.missing("type", " ("+oneOf(workloadTypes)+")")
	}
	o.int("clients", &w.Clients, 1)
	o.number("rate", &w.Rate, 0, math.Inf(1))
	o.duration("duration", &w.Duration)
	if o.str("through", &w.Through) {
		_, named := r.proxies[w.Through]
		bouncer := w.Through == UpstreamPgBouncer && r.embedded != nil && r.embedded.PgBouncer
		switch {
		case named || bouncer || w.Through == Direct:
		case w.Through == UpstreamPgBouncer:
			d.errAt(deref(o.get("through")), o.at("through"), "pgbouncer means the embedded PgBouncer: set target.embedded.pgbouncer: true")
		default:
			choices := append(append([]string(nil), r.proxyList...), Direct)
			if r.embedded != nil && r.embedded.PgBouncer {
				choices = append(choices, UpstreamPgBouncer)
			}
			d.errAt(deref(o.get("through")), o.at("through"), "no proxy named %q%s; want %s", w.Through, didYouMean(w.Through, choices), oneOf(choices))
		}
	} else {
		switch len(r.proxyList) {
		case 0:
			w.Through = Direct
		case 1:
			w.Through = r.proxyList[0]
		default:
			o.missing("through", " when there are several proxies (want "+oneOf(append(append([]string(nil), r.proxyList...), Direct))+")")
		}
	}
	for _, t := range workloadTypes {
		if t == w.Type {
			continue
		}
		for _, k := range workloadOptions[t] {
			if w.Type == "" {
				o.know(k) // the type is wrong already; say nothing more
			} else {
				o.elsewhere[k] = fmt.Sprintf("applies to %s workloads; this one is a %s workload", t, w.Type)
			}
		}
	}
	switch w.Type {
	case WorkloadLedger:
		w.Ledger = &LedgerOptions{Table: DefaultLedgerTable}
		if o.str("table", &w.Ledger.Table) && !identifier.MatchString(w.Ledger.Table) {
			d.errAt(deref(o.get("table")), o.at("table"), "want a table name like ledger or app.ledger, got %q", w.Ledger.Table)
		}
		o.boolean("two_phase", &w.Ledger.TwoPhase)
	case WorkloadBank:
		w.Bank = &BankOptions{Accounts: defaultAccounts, InitialBalance: defaultInitial, Isolation: "read_committed"}
		o.int("accounts", &w.Bank.Accounts, 2)
		o.integer("initial_balance", &w.Bank.InitialBalance, 0)
		o.enum("isolation", &w.Bank.Isolation, "read_committed", "repeatable_read", "serializable")
	case WorkloadSQL:
		w.SQL = d.sqlOptions(o)
	case WorkloadExec:
		w.Exec = &ExecOptions{Env: map[string]string{}}
		o.reqStr("command", &w.Exec.Command)
		if e := o.get("env"); e != nil {
			w.Exec.Env = d.stringMap(e, o.at("env"))
		}
	}
	o.done()
	return w, name
}

func (d *decoder) sqlOptions(o *object) *SQLOptions {
	s := &SQLOptions{}
	if n := o.get("statements"); n != nil {
		items := d.list(n, o.at("statements"))
		if len(items) == 0 && !isNull(n) && deref(n).Kind == yaml.SequenceNode {
			d.errAt(deref(n), o.at("statements"), "is empty")
		}
		for i, item := range items {
			at := index(o.at("statements"), i)
			st := Statement{Weight: 1, Pos: posOf(deref(item))}
			if it := deref(item); it.Kind == yaml.ScalarNode && !isNull(it) {
				// A bare string is {sql: ...}.
				st.SQL, _ = d.str(it, at)
			} else {
				so := d.object(item, at)
				so.reqStr("sql", &st.SQL)
				so.int("weight", &st.Weight, 1)
				so.boolean("transaction", &st.Transaction)
				so.done()
			}
			s.Statements = append(s.Statements, st)
		}
	} else {
		o.missing("statements", "")
	}
	if n := o.get("retry"); n != nil {
		ro := d.object(n, o.at("retry"))
		ro.int("max", &s.Retry.Max, 0)
		if on := ro.get("on"); on != nil {
			codes, _ := d.strings(on, ro.at("on"))
			for i, c := range codes {
				if c != "" && !sqlstate.MatchString(c) {
					d.errAt(deref(d.list(on, "")[i]), index(ro.at("on"), i), "%q is not a five-character SQLSTATE", c)
				}
			}
			s.Retry.On = codes
		}
		ro.done()
	}
	if s.Retry.Max > 0 && len(s.Retry.On) == 0 {
		s.Retry.On = []string{defaultRetryOnSerial, defaultRetryOnDead}
	}
	return s
}

// expect reads {equals} or {min, max}.
func (d *decoder) expect(n *yaml.Node, path string) Expect {
	var e Expect
	o := d.object(n, path)
	if v := o.get("equals"); v != nil {
		e.HasEquals = true
		if vv := deref(v); vv.Kind != yaml.ScalarNode {
			d.errAt(vv, o.at("equals"), "want a single value, got %s", describe(vv))
		} else if c, ok := d.scalar(vv, o.at("equals"), "a value"); ok {
			_ = c.Decode(&e.Equals)
		}
	}
	for _, k := range []string{"min", "max"} {
		var f float64
		if o.number(k, &f, math.Inf(-1), math.Inf(1)) {
			if k == "min" {
				e.Min = &f
			} else {
				e.Max = &f
			}
		}
	}
	switch {
	case e.HasEquals && (o.has("min") || o.has("max")):
		d.errAt(o.node, path, "give equals, or min and/or max, not both")
	case !e.HasEquals && !o.has("min") && !o.has("max"):
		d.errAt(o.node, path, "want equals, min or max")
	case e.Min != nil && e.Max != nil && *e.Min > *e.Max:
		d.errAt(deref(o.get("max")), o.at("max"), "%v is less than min %v", *e.Max, *e.Min)
	}
	o.done()
	return e
}

func (d *decoder) probe(n *yaml.Node, path string) Probe {
	o := d.object(n, path)
	p := d.probeFields(n, o)
	o.done()
	return p
}

// duringProbe reads a probe with while, every and must.
func (d *decoder) duringProbe(n *yaml.Node, path string) DuringProbe {
	o := d.object(n, path)
	p := DuringProbe{Probe: d.probeFields(n, o), While: WhileMethod, Every: DefaultDuringEvery, Must: MustAlways}
	o.enum("while", &p.While, WhileMethod, WhileFault, WhileSteps)
	if o.positive("every", &p.Every) && p.While == WhileSteps {
		d.errAt(o.keyNode("every"), o.at("every"), "applies to while: method or fault; while: steps samples once after each step")
	}
	o.enum("must", &p.Must, MustAlways, MustOnce)
	o.done()
	return p
}

// probeFields reads what every probe has: name, sql, expect, tolerance.
func (d *decoder) probeFields(n *yaml.Node, o *object) Probe {
	p := Probe{Pos: posOf(deref(n))}
	o.reqStr("name", &p.Name)
	o.reqStr("sql", &p.SQL)
	if en := o.get("expect"); en != nil {
		p.Expect = d.expect(en, o.at("expect"))
	} else {
		o.missing("expect", " (equals, min or max)")
	}
	if o.number("tolerance", &p.Tolerance, 0, math.Inf(1)) && !p.Expect.HasEquals {
		d.errAt(o.keyNode("tolerance"), o.at("tolerance"), "applies to expect.equals")
	}
	return p
}
