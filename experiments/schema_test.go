package experiments

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgchaos/pgchaos/faults"
)

// TestSchema checks docs/experiment.schema.json against the parser: it is
// valid JSON, names every top-level section, and lists the same actions,
// workload options and verifier fields.
func TestSchema(t *testing.T) {
	data, err := os.ReadFile("../docs/experiment.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Schema     string                     `json:"$schema"`
		Properties map[string]json.RawMessage `json:"properties"`
		Defs       map[string]json.RawMessage `json:"$defs"`
	}
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatalf("experiment.schema.json is not valid JSON: %v", err)
	}
	if schema.Schema != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema = %q, want draft 2020-12", schema.Schema)
	}
	if got, want := sortedKeys(schema.Properties), sortedCopy(sections()); !slices.Equal(got, want) {
		t.Errorf("top-level properties %v, want the sections %v", got, want)
	}

	type object struct {
		Properties map[string]json.RawMessage `json:"properties"`
		OneOf      []struct {
			Required []string `json:"required"`
		} `json:"oneOf"`
	}
	type variants struct {
		OneOf []struct {
			Properties map[string]struct {
				Const string `json:"const"`
			} `json:"properties"`
		} `json:"oneOf"`
	}
	def := func(name string, v any) {
		t.Helper()
		if err := json.Unmarshal(schema.Defs[name], v); err != nil {
			t.Fatalf("$defs/%s: %v", name, err)
		}
	}

	var step object
	def("methodStep", &step)
	var kinds []string
	for _, o := range step.OneOf {
		kinds = append(kinds, o.Required...)
	}
	if !slices.Equal(kinds, actionKinds) {
		t.Errorf("methodStep actions %v, want %v", kinds, actionKinds)
	}
	wantStep := append([]string{"name", "at", "after"}, actionKinds...)
	if got := sortedKeys(step.Properties); !slices.Equal(got, sortedCopy(wantStep)) {
		t.Errorf("methodStep properties %v, want %v", got, sortedCopy(wantStep))
	}

	var wl variants
	def("workload", &wl)
	for _, v := range wl.OneOf {
		typ := v.Properties["type"].Const
		want := append([]string{"name", "type", "clients", "rate", "duration", "through"}, workloadOptions[typ]...)
		if got := sortedKeys(v.Properties); !slices.Equal(got, sortedCopy(want)) {
			t.Errorf("%s workload properties %v, want %v", typ, got, sortedCopy(want))
		}
	}
	if len(wl.OneOf) != len(workloadTypes) {
		t.Errorf("%d workload types in the schema, want %d", len(wl.OneOf), len(workloadTypes))
	}

	var vf variants
	def("verifier", &vf)
	for _, v := range vf.OneOf {
		typ := v.Properties["type"].Const
		want := append([]string{"type", "name"}, verifierFields[typ]...)
		if got := sortedKeys(v.Properties); !slices.Equal(got, sortedCopy(want)) {
			t.Errorf("%s verifier properties %v, want %v", typ, got, sortedCopy(want))
		}
	}
	if len(vf.OneOf) != len(verifierTypes) {
		t.Errorf("%d verifier types in the schema, want %d", len(vf.OneOf), len(verifierTypes))
	}

	// The rule follows faults.Rule: a field added there belongs here too.
	var rule struct {
		Properties map[string]struct {
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"properties"`
	}
	def("rule", &rule)
	rt := reflect.TypeFor[faults.Rule]()
	var top []string
	for i := range rt.NumField() {
		f := rt.Field(i)
		name := yamlName(f)
		top = append(top, name)
		if f.Type.Kind() != reflect.Struct {
			continue
		}
		var want []string
		for j := range f.Type.NumField() {
			want = append(want, yamlName(f.Type.Field(j)))
		}
		if got := sortedKeys(rule.Properties[name].Properties); !slices.Equal(got, sortedCopy(want)) {
			t.Errorf("rule.%s properties %v, want faults.%s's %v", name, got, f.Type.Name(), sortedCopy(want))
		}
	}
	if got := sortedKeys(rule.Properties); !slices.Equal(got, sortedCopy(top)) {
		t.Errorf("rule properties %v, want faults.Rule's %v", got, sortedCopy(top))
	}
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

func sortedKeys[V any](m map[string]V) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// TestSchemaRuleChoices checks the values the schema allows in a rule
// against the faults package, so that a message type, statement class or
// action type added there fails here until the schema has it too. The
// fixed choices (tx_status, side, ...) are compared with the list that
// faults' own error message gives for a wrong value: that is what a user is
// told, so it is the list the schema must match.
func TestSchemaRuleChoices(t *testing.T) {
	defs, rule := schemaRule(t)
	enumOf := func(raw json.RawMessage) []string {
		t.Helper()
		var v struct {
			Enum []string `json:"enum"`
		}
		if err := json.Unmarshal(raw, &v); err != nil || v.Enum == nil {
			t.Fatalf("%s: not an enum (%v)", raw, err)
		}
		return sortedCopy(v.Enum)
	}
	// A StringList field takes one name or a list of them.
	listOf := func(field string) []string {
		t.Helper()
		var v struct {
			AnyOf []struct {
				Ref   string `json:"$ref"`
				Items struct {
					Ref string `json:"$ref"`
				} `json:"items"`
			} `json:"anyOf"`
		}
		json.Unmarshal(rule.prop(t, "match", field), &v)
		if len(v.AnyOf) != 2 || v.AnyOf[0].Ref == "" || v.AnyOf[1].Items.Ref != v.AnyOf[0].Ref {
			t.Fatalf("match.%s: want anyOf a $ref and a list of the same $ref", field)
		}
		return enumOf(defs[strings.TrimPrefix(v.AnyOf[0].Ref, "#/$defs/")])
	}
	union := append(faults.MessageTypes(faults.ClientToServer), faults.MessageTypes(faults.ServerToClient)...)
	slices.Sort(union)
	if got, want := listOf("message"), slices.Compact(union); !slices.Equal(got, want) {
		t.Errorf("match.message allows %v, want faults' message types %v", got, want)
	}
	if got, want := listOf("statement"), sortedCopy(faults.StatementClasses()); !slices.Equal(got, want) {
		t.Errorf("match.statement allows %v, want faults' statement classes %v", got, want)
	}
	if got, want := enumOf(rule.prop(t, "action", "type")), sortedCopy(faults.ActionTypes()); !slices.Equal(got, want) {
		t.Errorf("action.type allows %v, want faults' action types %v", got, want)
	}

	disconnect := faults.Action{Type: "disconnect"}
	fixed := []struct {
		field   string // as faults names it
		got     []string
		wrong   faults.Rule // with the value "bogus" in field
		anyCase bool
	}{
		{"match.direction", enumOf(rule.prop(t, "match", "direction")), faults.Rule{Match: faults.Match{Direction: "bogus"}, Action: disconnect}, false},
		{"match.event", enumOf(rule.prop(t, "match", "event")), faults.Rule{Match: faults.Match{Event: "bogus"}, Action: disconnect}, false},
		{"match.tx_status[0]", listOf("tx_status"), faults.Rule{Match: faults.Match{TxStatus: faults.StringList{"bogus"}}, Action: disconnect}, false},
		{"action.when", enumOf(rule.prop(t, "action", "when")), faults.Rule{Action: faults.Action{Type: "disconnect", When: "bogus"}}, false},
		{"action.side", enumOf(rule.prop(t, "action", "side")), faults.Rule{Action: faults.Action{Type: "disconnect", Side: "bogus"}}, false},
		{"action.close", enumOf(rule.prop(t, "action", "close")), faults.Rule{Action: faults.Action{Type: "disconnect", Close: "bogus"}}, false},
		{"action.severity", enumOf(rule.prop(t, "action", "severity")), faults.Rule{Action: faults.Action{Type: "error", SQLState: "40001", Severity: "bogus"}}, true},
	}
	for _, f := range fixed {
		f.wrong.Name = "r"
		want := choicesFromMessage(t, f.field, faults.Problems(f.wrong))
		got := f.got
		if f.anyCase {
			// faults reads severity in any case; the schema spells out
			// the cases people write.
			got = nil
			for _, s := range f.got {
				got = append(got, strings.ToUpper(s))
			}
			got = slices.Compact(sortedCopy(got))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s allows %v, want faults' %v", f.field, f.got, want)
		}
	}
}

// choicesFromMessage reads the choices out of faults' problem with field,
// `"bogus": want a, b or c`.
func choicesFromMessage(t *testing.T, field string, probs []*faults.FieldError) []string {
	t.Helper()
	for _, p := range probs {
		if p.Field != field {
			continue
		}
		_, list, ok := strings.Cut(p.Msg, ": want ")
		if !ok {
			t.Fatalf("%s: %q does not list the choices", field, p.Msg)
		}
		return sortedCopy(strings.FieldsFunc(strings.ReplaceAll(list, " or ", ","), func(r rune) bool { return r == ',' || r == ' ' }))
	}
	t.Fatalf("faults accepts %s: bogus (problems: %v)", field, probs)
	return nil
}

// TestSchemaRuleConditions checks the schema's if/then conditions on a
// rule's action against faults: each field faults requires of an action
// type the schema requires too, and the fields faults forbids on a
// byte-level toxic the schema forbids, and no others.
func TestSchemaRuleConditions(t *testing.T) {
	_, rule := schemaRule(t)
	var action struct {
		AllOf []struct {
			If struct {
				Properties map[string]struct {
					Const string   `json:"const"`
					Enum  []string `json:"enum"`
				} `json:"properties"`
				Required []string `json:"required"`
			} `json:"if"`
			Then struct {
				Required   []string                   `json:"required"`
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"then"`
		} `json:"allOf"`
	}
	if err := json.Unmarshal(rule.Properties["action"], &action); err != nil {
		t.Fatal(err)
	}
	// required evaluates the conditions for an action with the given type
	// and fields; forbidden lists the fields a matching then sets to false.
	eval := func(typ string, fields ...string) (required, forbidden []string) {
		has := append([]string{"type"}, fields...)
		for _, c := range action.AllOf {
			match := true
			for _, r := range c.If.Required {
				match = match && slices.Contains(has, r)
			}
			for name, p := range c.If.Properties {
				if name != "type" {
					match = false // a condition on another field
					continue
				}
				match = match && (p.Const == typ || slices.Contains(p.Enum, typ))
			}
			if !match || len(c.If.Properties) == 0 {
				continue
			}
			required = append(required, c.Then.Required...)
			for name, s := range c.Then.Properties {
				if string(s) == "false" {
					forbidden = append(forbidden, name)
				}
			}
		}
		return sortedCopy(required), sortedCopy(forbidden)
	}
	// missing lists the action fields faults reports on a rule that gives
	// only the type (and the event the type needs).
	missing := func(r faults.Rule) []string {
		var fields []string
		for _, p := range faults.Problems(r) {
			if f, ok := strings.CutPrefix(p.Field, "action."); ok && f != "type" {
				fields = append(fields, f)
			}
		}
		return sortedCopy(fields)
	}
	withEvent := func(typ string) faults.Rule {
		r := faults.Rule{Name: "r", Action: faults.Action{Type: typ}}
		if typ == "refuse" || typ == "slow_connect" {
			r.Match.Event = "connect"
		}
		return r
	}
	for _, typ := range faults.ActionTypes() {
		if got, _ := eval(typ); !slices.Equal(got, missing(withEvent(typ))) {
			t.Errorf("action type %s: the schema requires %v, faults %v", typ, got, missing(withEvent(typ)))
		}
	}
	refuse := withEvent("refuse")
	refuse.Action.Message = "go away"
	if got, _ := eval("refuse", "message"); !slices.Equal(got, missing(refuse)) {
		t.Errorf("refuse with a message: the schema requires %v, faults %v", got, missing(refuse))
	}

	// Each field set on a toxic: faults refuses it ("action") or not.
	ms := faults.Duration(time.Millisecond)
	samples := map[string]func(*faults.Action){
		"when":     func(a *faults.Action) { a.When = "before" },
		"delay":    func(a *faults.Action) { a.Delay = ms },
		"jitter":   func(a *faults.Action) { a.Jitter = ms },
		"side":     func(a *faults.Action) { a.Side = "both" },
		"close":    func(a *faults.Action) { a.Close = "fin" },
		"sqlstate": func(a *faults.Action) { a.SQLState = "40001" },
		"severity": func(a *faults.Action) { a.Severity = "ERROR" },
		"message":  func(a *faults.Action) { a.Message = "x" },
		"duration": func(a *faults.Action) { a.Duration = ms },
	}
	for _, typ := range faults.ToxicTypes {
		var refused []string
		for field, set := range samples {
			r := withEvent(typ)
			set(&r.Action)
			for _, p := range faults.Problems(r) {
				if p.Field == "action" {
					refused = append(refused, field)
				}
			}
		}
		if _, forbidden := eval(typ); !slices.Equal(forbidden, sortedCopy(refused)) {
			t.Errorf("toxic %s: the schema forbids %v, faults refuses %v", typ, forbidden, sortedCopy(refused))
		}
	}
}

type ruleSchema struct {
	Properties map[string]json.RawMessage `json:"properties"`
}

// prop returns the schema of the rule's section.field.
func (r ruleSchema) prop(t *testing.T, section, field string) json.RawMessage {
	t.Helper()
	var s ruleSchema
	if err := json.Unmarshal(r.Properties[section], &s); err != nil || s.Properties[field] == nil {
		t.Fatalf("rule.%s.%s: not in the schema (%v)", section, field, err)
	}
	return s.Properties[field]
}

// schemaRule reads the schema's $defs and its rule.
func schemaRule(t *testing.T) (map[string]json.RawMessage, ruleSchema) {
	t.Helper()
	data, err := os.ReadFile("../docs/experiment.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Defs map[string]json.RawMessage `json:"$defs"`
	}
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatalf("experiment.schema.json is not valid JSON: %v", err)
	}
	var rule ruleSchema
	if err := json.Unmarshal(schema.Defs["rule"], &rule); err != nil {
		t.Fatalf("$defs/rule: %v", err)
	}
	return schema.Defs, rule
}
