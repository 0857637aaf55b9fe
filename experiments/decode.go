package experiments

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder walks the YAML nodes of one file by hand, so that every problem
// can be reported with its position, and keeps going after one.
type decoder struct {
	src   string
	vars  map[string]string
	env   func(string) (string, bool)
	probs []Problem
	// via is where target.embedded.pgbouncer_via is written (at viaPath),
	// checked once the proxies are read.
	via     *yaml.Node
	viaPath string
	// replVia is where target.embedded.replication_via is written.
	replVia     *yaml.Node
	replViaPath string
}

func (d *decoder) errAt(n *yaml.Node, path, format string, args ...any) {
	p := Problem{Source: d.src, Path: path, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		p.Line, p.Column = n.Line, n.Column
	}
	d.probs = append(d.probs, p)
}

func posOf(n *yaml.Node) Pos {
	if n == nil {
		return Pos{}
	}
	return Pos{Line: n.Line, Column: n.Column}
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n == nil || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe says what a node holds, for "want X, got Y".
func describe(n *yaml.Node) string {
	n = deref(n)
	switch {
	case isNull(n):
		return "nothing"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.ShortTag() == "!!str":
		return strconv.Quote(n.Value)
	}
	return n.Value
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// object is a YAML mapping being read. Every key the reader asks for is a
// known key; done reports the others.
type object struct {
	d         *decoder
	node      *yaml.Node
	path      string
	keys      []*yaml.Node
	vals      []*yaml.Node
	known     []string
	knownSet  map[string]bool
	elsewhere map[string]string // key → why it does not apply here
}

// object starts reading a mapping. A null node is an empty mapping; any
// other non-mapping is reported and read as empty.
func (d *decoder) object(n *yaml.Node, path string) *object {
	o := &object{d: d, node: deref(n), path: path, knownSet: map[string]bool{}, elsewhere: map[string]string{}}
	if o.node == nil || isNull(o.node) {
		return o
	}
	if o.node.Kind != yaml.MappingNode {
		d.errAt(o.node, path, "want a mapping, got %s", describe(o.node))
		return o
	}
	first := map[string]*yaml.Node{}
	var add func(m *yaml.Node, merged bool)
	add = func(m *yaml.Node, merged bool) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			if k.Value == "<<" && k.ShortTag() == "!!merge" {
				switch src := deref(v); src.Kind {
				case yaml.MappingNode:
					add(src, true)
				case yaml.SequenceNode:
					for _, s := range src.Content {
						if s = deref(s); s.Kind == yaml.MappingNode {
							add(s, true)
						}
					}
				default:
					d.errAt(v, join(path, "<<"), "want a mapping to merge, got %s", describe(v))
				}
				continue
			}
			if f, dup := first[k.Value]; dup {
				if !merged {
					if f.Line > 0 {
						d.errAt(k, join(path, k.Value), "given twice (first at line %d)", f.Line)
					} else {
						// A merged key is overridden by one written here.
						o.replace(k.Value, k, v)
						first[k.Value] = k
					}
				}
				continue
			}
			if merged {
				// A merged key is marked with a node of no line: a key
				// written in the mapping itself overrides it rather than
				// repeating it.
				first[k.Value] = &yaml.Node{}
			} else {
				first[k.Value] = k
			}
			o.keys = append(o.keys, k)
			o.vals = append(o.vals, v)
		}
	}
	add(o.node, false)
	return o
}

func (o *object) replace(key string, k, v *yaml.Node) {
	for i, kk := range o.keys {
		if kk.Value == key {
			o.keys[i], o.vals[i] = k, v
		}
	}
}

func (o *object) know(key string) {
	if !o.knownSet[key] {
		o.knownSet[key] = true
		o.known = append(o.known, key)
	}
}

// get returns the value of key, or nil when the key is absent.
func (o *object) get(key string) *yaml.Node {
	o.know(key)
	for i, k := range o.keys {
		if k.Value == key {
			return o.vals[i]
		}
	}
	return nil
}

// keyNode returns the key itself, for errors about its presence.
func (o *object) keyNode(key string) *yaml.Node {
	for _, k := range o.keys {
		if k.Value == key {
			return k
		}
	}
	return o.node
}

func (o *object) has(key string) bool {
	for _, k := range o.keys {
		if k.Value == key {
			return true
		}
	}
	return false
}

func (o *object) at(key string) string { return join(o.path, key) }

// missing reports a required key that is absent, at the mapping.
func (o *object) missing(key, hint string) {
	o.d.errAt(o.node, o.at(key), "is required%s", hint)
}

// done reports every key that no reader asked for.
func (o *object) done() {
	for _, k := range o.keys {
		if o.knownSet[k.Value] {
			continue
		}
		if why, ok := o.elsewhere[k.Value]; ok {
			o.d.errAt(k, o.at(k.Value), "%s", why)
			continue
		}
		o.d.errAt(k, o.at(shownKey(k.Value)), "unknown field%s", didYouMean(k.Value, o.known))
	}
}

// shownKey is a key a user wrote as a problem shows it: quoted when it is
// empty or starts or ends with a space, which would be lost in the line.
func shownKey(key string) string {
	if key == "" || strings.TrimSpace(key) != key {
		return strconv.Quote(key)
	}
	return key
}

// expand substitutes ${env:NAME} and ${var:KEY} in a scalar, or their
// default in ${var:KEY:-default} when they are not set; $${ is a literal
// ${.
func (d *decoder) expand(n *yaml.Node, path string) (string, bool) {
	s := n.Value
	if !strings.Contains(s, "${") {
		return s, true
	}
	var b strings.Builder
	ok := true
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "$${") {
			b.WriteString("${")
			i += 3
			continue
		}
		if !strings.HasPrefix(s[i:], "${") {
			b.WriteByte(s[i])
			i++
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			d.errAt(n, path, "unclosed ${ (write $${ for a literal ${)")
			return "", false
		}
		ref := s[i+2 : i+2+end]
		i += 2 + end + 1
		kind, name, _ := strings.Cut(ref, ":")
		// ${var:KEY:-default}, as a shell writes a default.
		name, fallback, hasDefault := strings.Cut(name, ":-")
		switch {
		case (kind != "env" && kind != "var") && !strings.Contains(ref, ":"):
			// A shell's ${VAR} in a command: pgchaos reads ${...} first.
			d.errAt(n, path, "${%s}: pgchaos reads ${env:NAME} and ${var:KEY} here; for the shell's variable write $%s or $${%s}", ref, ref, ref)
			ok = false
		case name == "" || kind != "env" && kind != "var":
			d.errAt(n, path, "${%s}: want ${env:NAME} or ${var:KEY}, with an optional :-default", ref)
			ok = false
		case kind == "var":
			v, def := d.vars[name]
			switch {
			case !def && hasDefault:
				v = fallback
			case !def:
				d.errAt(n, path, "undefined variable ${var:%s} (give --var %s=VALUE, or write ${var:%s:-DEFAULT})", name, name, name)
				ok = false
			}
			b.WriteString(v)
		default:
			v, def := d.env(name)
			switch {
			case !def && hasDefault:
				v = fallback
			case !def:
				d.errAt(n, path, "undefined variable ${env:%s} (the environment variable %s is not set; ${env:%s:-DEFAULT} gives a default)", name, name, name)
				ok = false
			}
			b.WriteString(v)
		}
	}
	return b.String(), ok
}

// scalar returns a scalar node with variables substituted. A substituted
// value is typed afresh, so that clients: ${var:n} is an integer.
func (d *decoder) scalar(n *yaml.Node, path, want string) (*yaml.Node, bool) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode {
		d.errAt(n, path, "want %s, got %s", want, describe(n))
		return nil, false
	}
	s, ok := d.expand(n, path)
	if !ok {
		return nil, false
	}
	if s == n.Value {
		return n, true
	}
	c := *n
	c.Value, c.Tag, c.Style = s, "", 0
	return &c, true
}

// expandTree copies a subtree with variables substituted in its scalars.
func (d *decoder) expandTree(n *yaml.Node, path string) (*yaml.Node, bool) {
	n = deref(n)
	switch n.Kind {
	case yaml.ScalarNode:
		return d.scalar(n, path, "a value")
	case yaml.SequenceNode, yaml.MappingNode:
		c := *n
		c.Content = make([]*yaml.Node, len(n.Content))
		ok := true
		for i, child := range n.Content {
			p := index(path, i)
			if n.Kind == yaml.MappingNode {
				if i%2 == 0 {
					c.Content[i] = deref(child)
					continue
				}
				p = join(path, n.Content[i-1].Value)
			}
			var cok bool
			if c.Content[i], cok = d.expandTree(child, p); !cok {
				ok = false
				c.Content[i] = deref(child)
			}
		}
		return &c, ok
	}
	return n, true
}

func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	if isNull(n) {
		return "", true
	}
	s, ok := d.scalar(n, path, "a string")
	if !ok {
		return "", false
	}
	return s.Value, true
}

func (d *decoder) boolean(n *yaml.Node, path string) (bool, bool) {
	s, ok := d.scalar(n, path, "true or false")
	if !ok {
		return false, false
	}
	var b bool
	if s.ShortTag() != "!!bool" || s.Decode(&b) != nil {
		d.errAt(n, path, "want true or false, got %s", describe(s))
		return false, false
	}
	return b, true
}

func (d *decoder) integer(n *yaml.Node, path string) (int64, bool) {
	s, ok := d.scalar(n, path, "an integer")
	if !ok {
		return 0, false
	}
	var v int64
	if s.ShortTag() != "!!int" || s.Decode(&v) != nil {
		d.errAt(n, path, "want an integer, got %s", describe(s))
		return 0, false
	}
	return v, true
}

func (d *decoder) number(n *yaml.Node, path string) (float64, bool) {
	s, ok := d.scalar(n, path, "a number")
	if !ok {
		return 0, false
	}
	var v float64
	if t := s.ShortTag(); t != "!!int" && t != "!!float" || s.Decode(&v) != nil {
		d.errAt(n, path, "want a number, got %s", describe(s))
		return 0, false
	}
	return v, true
}

func (d *decoder) duration(n *yaml.Node, path string) (Duration, bool) {
	s, ok := d.scalar(n, path, `a duration like "30s"`)
	if !ok {
		return 0, false
	}
	v, err := time.ParseDuration(s.Value)
	if err != nil || s.ShortTag() != "!!str" {
		d.errAt(n, path, `want a duration like "30s" or "500ms", got %s`, describe(s))
		return 0, false
	}
	if v < 0 {
		d.errAt(n, path, "%s is negative", s.Value)
		return 0, false
	}
	return Duration(v), true
}

// list returns a sequence's items; null is an empty list.
func (d *decoder) list(n *yaml.Node, path string) []*yaml.Node {
	n = deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.errAt(n, path, "want a list, got %s", describe(n))
		return nil
	}
	return n.Content
}

func (d *decoder) strings(n *yaml.Node, path string) ([]string, bool) {
	items := d.list(n, path)
	out := make([]string, 0, len(items))
	ok := true
	for i, item := range items {
		s, sok := d.str(item, index(path, i))
		ok = ok && sok
		out = append(out, s)
	}
	return out, ok
}

// stringMap reads a mapping of scalars, such as environment variables or
// postgresql.conf settings.
func (d *decoder) stringMap(n *yaml.Node, path string) map[string]string {
	n = deref(n)
	out := map[string]string{}
	if isNull(n) {
		return out
	}
	if n.Kind != yaml.MappingNode {
		d.errAt(n, path, "want a mapping, got %s", describe(n))
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if _, dup := out[k]; dup {
			d.errAt(n.Content[i], join(path, k), "given twice")
			continue
		}
		v, _ := d.str(n.Content[i+1], join(path, k))
		out[k] = v
	}
	return out
}

// Typed readers of an object's keys. Each returns whether the key was
// given; a problem with the value is reported where it is.

func (o *object) str(key string, dst *string) bool {
	n := o.get(key)
	if n == nil {
		return false
	}
	if v, ok := o.d.str(n, o.at(key)); ok {
		*dst = v
	}
	return true
}

// reqStr reads a string that must be given and not be empty.
func (o *object) reqStr(key string, dst *string) bool {
	n := o.get(key)
	if n == nil {
		o.missing(key, "")
		return false
	}
	v, ok := o.d.str(n, o.at(key))
	if !ok {
		return false
	}
	if strings.TrimSpace(v) == "" {
		o.d.errAt(deref(n), o.at(key), "is empty")
		return false
	}
	*dst = v
	return true
}

func (o *object) boolean(key string, dst *bool) bool {
	n := o.get(key)
	if n == nil {
		return false
	}
	if v, ok := o.d.boolean(n, o.at(key)); ok {
		*dst = v
	}
	return true
}

// integer reads an integer no smaller than least.
func (o *object) integer(key string, dst *int64, least int64) bool {
	n := o.get(key)
	if n == nil {
		return false
	}
	v, ok := o.d.integer(n, o.at(key))
	if !ok {
		return true
	}
	if v < least {
		o.d.errAt(deref(n), o.at(key), "%d is less than %d", v, least)
		return true
	}
	*dst = v
	return true
}

func (o *object) int(key string, dst *int, least int64) bool {
	v := int64(*dst)
	given := o.integer(key, &v, least)
	*dst = int(v)
	return given
}

// number reads a number within [least, most].
func (o *object) number(key string, dst *float64, least, most float64) bool {
	n := o.get(key)
	if n == nil {
		return false
	}
	v, ok := o.d.number(n, o.at(key))
	if !ok {
		return true
	}
	if v < least || v > most {
		if math.IsInf(most, 1) {
			o.d.errAt(deref(n), o.at(key), "%v is less than %v", v, least)
		} else {
			o.d.errAt(deref(n), o.at(key), "%v is not between %v and %v", v, least, most)
		}
		return true
	}
	*dst = v
	return true
}

func (o *object) duration(key string, dst *Duration) bool {
	n := o.get(key)
	if n == nil {
		return false
	}
	if v, ok := o.d.duration(n, o.at(key)); ok {
		*dst = v
	}
	return true
}

// positive reads a duration that must be greater than zero.
func (o *object) positive(key string, dst *Duration) bool {
	n := o.get(key)
	if n == nil {
		return false
	}
	v, ok := o.d.duration(n, o.at(key))
	switch {
	case !ok:
	case v == 0:
		o.d.errAt(deref(n), o.at(key), "must be greater than zero")
	default:
		*dst = v
	}
	return true
}

// enum reads a string that must be one of choices.
func (o *object) enum(key string, dst *string, choices ...string) bool {
	n := o.get(key)
	if n == nil {
		return false
	}
	v, ok := o.d.str(n, o.at(key))
	if !ok {
		return true
	}
	for _, c := range choices {
		if v == c {
			*dst = v
			return true
		}
	}
	o.d.errAt(deref(n), o.at(key), "want %s, got %q%s", oneOf(choices), v, didYouMean(v, choices))
	return true
}
