package experiments

import (
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/pgchaos/pgchaos/faults"
)

// rule reads a fault rule field by field, by the yaml tags of faults.Rule so
// that it keeps up with the rule format, then checks it with
// faults.Problems, reporting every problem at its field, as for the rest of
// the file. ok is false when the rule has a problem.
func (d *decoder) rule(n *yaml.Node, path string) (r faults.Rule, ok bool) {
	before := len(d.probs)
	nodes := map[string]*yaml.Node{"": deref(n)}
	d.reflectValue(n, path, "", reflect.ValueOf(&r).Elem(), nodes)
	if len(d.probs) > before {
		// Validating a rule that was not read whole would mostly repeat
		// what was already said.
		return r, false
	}
	check := r
	if strings.TrimSpace(r.Name) == "" {
		d.errAt(nodes[""], join(path, "name"), "is required")
		check.Name = "unnamed"
	}
	for _, fe := range faults.Problems(check) {
		d.errAt(locate(fe.Field, nodes), join(path, fe.Field), "%s", fe.Msg)
	}
	return r, len(d.probs) == before
}

// locate finds the node of a rule field, or of its nearest parent when the
// field is not written (a missing field is reported at its mapping).
func locate(field string, nodes map[string]*yaml.Node) *yaml.Node {
	for f := field; f != ""; {
		if n, ok := nodes[f]; ok {
			return n
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return nodes[""]
}

var unmarshalerType = reflect.TypeFor[interface{ UnmarshalYAML(func(any) error) error }]()

// reflectValue reads n into v. rel is the field's path within the rule, as
// faults.FieldError names it; nodes records where each field is written.
func (d *decoder) reflectValue(n *yaml.Node, path, rel string, v reflect.Value, nodes map[string]*yaml.Node) {
	n = deref(n)
	nodes[rel] = n
	if n.Kind == yaml.SequenceNode {
		for i, item := range n.Content {
			nodes[index(rel, i)] = deref(item)
		}
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) || reflect.PointerTo(v.Type()).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
		c, ok := d.expandTree(n, path)
		if !ok {
			return
		}
		if err := c.Decode(v.Addr().Interface()); err != nil {
			d.errAt(n, path, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		o := d.object(n, path)
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			if child := o.get(name); child != nil {
				d.reflectValue(child, join(path, name), join(rel, name), v.Field(i), nodes)
			}
		}
		o.done()
	case reflect.Pointer:
		if isNull(n) {
			return
		}
		p := reflect.New(v.Type().Elem())
		d.reflectValue(n, path, rel, p.Elem(), nodes)
		v.Set(p)
	case reflect.String:
		if s, ok := d.str(n, path); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		if b, ok := d.boolean(n, path); ok {
			v.SetBool(b)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if i, ok := d.integer(n, path); ok {
			if v.OverflowInt(i) {
				d.errAt(n, path, "%d is too large", i)
				return
			}
			v.SetInt(i)
		}
	case reflect.Float32, reflect.Float64:
		if f, ok := d.number(n, path); ok {
			v.SetFloat(f)
		}
	default:
		c, ok := d.expandTree(n, path)
		if !ok {
			return
		}
		if err := c.Decode(v.Addr().Interface()); err != nil {
			d.errAt(n, path, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
	}
}
