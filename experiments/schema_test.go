package experiments

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

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
