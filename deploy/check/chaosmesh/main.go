// Command chaosmesh validates Chaos Mesh objects offline, with Chaos Mesh's
// own Go API types (github.com/chaos-mesh/chaos-mesh/api/v1alpha1):
//
//	go run . [-others OUT] FILE...
//
// Every chaos-mesh.org object in the YAML files is decoded strictly into its
// v1alpha1 type, as an API server with strict field validation decodes a
// request: unknown fields, duplicate fields, fields of the wrong case and
// values of the wrong type are errors. It is then defaulted and validated by
// the kind's admission webhook code (Default, ValidateCreate), which needs no
// cluster. For a Workflow that is the structure of its templates (the entry
// and each child exist, names are DNS-1123 and unique, each template type
// has only its own fields, embedded chaos specs); its StatusCheck templates
// are also validated as the StatusCheck objects the workflow controller
// creates from them are (type HTTP with an http block, a request URL, a
// status code or range, durations).
//
// The other objects (built-in kinds, which Kubernetes' schemas cover) are
// written, unchanged, to OUT for kubectl-validate. The CRDs' OpenAPI
// constraints (enums, minimums) are not checked: they are not in the types.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	gw "github.com/chaos-mesh/chaos-mesh/api/genericwebhook"
	chaosmesh "github.com/chaos-mesh/chaos-mesh/api/v1alpha1"
	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

func main() {
	others := flag.String("others", "", "write the objects that are not Chaos Mesh's to this `file`")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: chaosmesh [-others OUT] FILE...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	// The webhooks log through controller-runtime; nothing to say here.
	ctrllog.SetLogger(logr.Discard())

	scheme := runtime.NewScheme()
	if err := chaosmesh.AddToScheme(scheme); err != nil {
		fmt.Fprintln(os.Stderr, "chaosmesh:", err)
		os.Exit(1)
	}

	var rest bytes.Buffer
	failed := false
	for _, file := range flag.Args() {
		n, err := checkFile(scheme, file, &rest)
		if err != nil {
			fmt.Println(err)
			failed = true
			continue
		}
		fmt.Printf("%s: %d Chaos Mesh objects valid\n", file, n)
	}
	if *others != "" {
		if err := os.WriteFile(*others, rest.Bytes(), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "chaosmesh:", err)
			os.Exit(1)
		}
	}
	if failed {
		os.Exit(1)
	}
}

// checkFile validates the Chaos Mesh objects of one YAML stream and appends
// the other documents to rest. It returns how many Chaos Mesh objects it
// validated, or every error found.
func checkFile(scheme *runtime.Scheme, file string, rest *bytes.Buffer) (int, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var errs []error
	n := 0
	for i := 0; ; i++ {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, fmt.Errorf("%s: %v", file, err)
		}
		where := fmt.Sprintf("%s: document %d", file, i+1)
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", where, err))
			continue
		}
		if string(bytes.TrimSpace(js)) == "null" {
			continue // an empty document
		}
		var tm metav1.TypeMeta
		if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", where, err))
			continue
		}
		gvk := schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind)
		if gvk.Group != chaosmesh.SchemeGroupVersion.Group {
			rest.WriteString("---\n")
			rest.Write(doc)
			continue
		}
		where = fmt.Sprintf("%s: %s", where, tm.Kind)
		n++
		for _, err := range checkObject(scheme, gvk, js) {
			errs = append(errs, fmt.Errorf("%s: %v", where, err))
		}
	}
	return n, errors.Join(errs...)
}

// checkObject decodes one Chaos Mesh object strictly and runs its webhooks.
func checkObject(scheme *runtime.Scheme, gvk schema.GroupVersionKind, js []byte) []error {
	obj, err := scheme.New(gvk)
	if err != nil {
		return []error{err} // a kind or version the API does not have
	}
	// Unknown and duplicate fields are strict errors; a wrong type is a
	// plain one: both refuse the object.
	strict, err := kjson.UnmarshalStrict(js, obj, kjson.DisallowUnknownFields, kjson.DisallowDuplicateFields)
	if err != nil {
		return []error{err}
	}
	if len(strict) > 0 {
		return strict
	}
	ctx := context.Background()
	if d, ok := obj.(webhook.CustomDefaulter); ok {
		if err := d.Default(ctx, obj); err != nil {
			return []error{fmt.Errorf("default: %v", err)}
		}
	}
	var errs []error
	if v, ok := obj.(webhook.CustomValidator); ok {
		if _, err := v.ValidateCreate(ctx, obj); err != nil {
			errs = append(errs, err)
		}
	}
	if wf, ok := obj.(*chaosmesh.Workflow); ok {
		errs = append(errs, checkStatusChecks(ctx, wf)...)
	}
	return errs
}

// checkStatusChecks validates each StatusCheck template of a Workflow as
// the StatusCheck object that the workflow controller makes of it when the
// template runs (the Workflow's own webhook leaves its fields alone).
func checkStatusChecks(ctx context.Context, wf *chaosmesh.Workflow) []error {
	var errs []error
	for i, t := range wf.Spec.Templates {
		if t.Type != chaosmesh.TypeStatusCheck || t.StatusCheck == nil {
			continue
		}
		sc := &chaosmesh.StatusCheck{
			ObjectMeta: metav1.ObjectMeta{Name: t.Name, Namespace: wf.Namespace},
			Spec:       *t.StatusCheck.DeepCopy(),
		}
		if err := sc.Default(ctx, sc); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := sc.ValidateCreate(ctx, sc); err != nil {
			// ValidateCreate runs genericwebhook.Validate and flattens its
			// errors into a string: run it again for them one by one.
			list := gw.Validate(sc)
			if len(list) == 0 {
				errs = append(errs, err)
			}
			for _, e := range list {
				errs = append(errs, statusCheckError(i, e))
			}
		}
	}
	return errs
}

// statusCheckError rewrites the path of a StatusCheck validation error,
// made of Go field names from its Spec, as the template's path in the
// Workflow's YAML: "Spec.EmbedStatusCheck.HTTPStatusCheck.Criteria.StatusCode"
// becomes "spec.templates[1].statusCheck.http.criteria.statusCode".
func statusCheckError(template int, fe *field.Error) error {
	out := *fe
	path := strings.TrimPrefix(fe.Field, "Spec.")
	out.Field = fmt.Sprintf("spec.templates[%d].statusCheck.%s", template, jsonPath(reflect.TypeOf(chaosmesh.StatusCheckSpec{}), path))
	return &out
}

// jsonPath maps a dotted path of Go field names in t to the JSON names,
// leaving out inlined structs; a segment that is no field of t is kept as it
// is, and so is the rest after it.
func jsonPath(t reflect.Type, path string) string {
	segs := strings.Split(path, ".")
	var out []string
	for i, seg := range segs {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		f, ok := reflect.StructField{}, false
		if t.Kind() == reflect.Struct {
			f, ok = t.FieldByName(seg)
		}
		if !ok {
			return strings.Join(append(out, segs[i:]...), ".")
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !(f.Anonymous && name == "") {
			if name == "" {
				name = f.Name
			}
			out = append(out, name)
		}
		t = f.Type
	}
	return strings.Join(out, ".")
}
