package explore

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/pgchaos/pgchaos/experiments"
)

// Repro is the standalone experiment that reproduces cell c: the explored
// file as written, with its explore section and method taken out, c's
// rule injected as the last setup step (in place before the application
// starts), and the method, verifiers and rollbacks of a trial. pgchaos run
// runs it; fault_fired checks the rule fired. vars are the names of the
// --var values the file needs.
func Repro(src []byte, exp *experiments.Experiment, p Point, c *Cell, vars []string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("read %s: %w", exp.Source, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: not a mapping", exp.Source)
	}
	root := doc.Content[0]
	remove(root, "explore")
	remove(root, "fault_fired")
	set(root, "name", scalar(fmt.Sprintf("%s-%s-%s", exp.Name, p.ID, c.column.slug())))
	set(root, "description", scalar(fmt.Sprintf("pgchaos explore found this: %s at %s (occurrence %d) broke %s.", c.Column, pointLabel(p), c.Occurrence, c.Verifier)))

	var ruleNode yaml.Node
	if err := ruleNode.Encode(c.Rule); err != nil {
		return nil, err
	}
	inject := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		scalar("name"), scalar("arm the fault before the application starts"),
		scalar("inject"), {Kind: yaml.MappingNode, Content: []*yaml.Node{scalar("rule"), &ruleNode}},
	}}
	setup := get(root, "setup")
	if setup == nil || setup.Kind != yaml.SequenceNode {
		setup = &yaml.Node{Kind: yaml.SequenceNode}
		set(root, "setup", setup)
	}
	setup.Content = append(setup.Content, inject)
	// The trial's method: the application runs, then what the fault
	// still holds is ended before recovery removes it (trialMethod).
	type step struct {
		Name string            `yaml:"name"`
		Wait map[string]string `yaml:"wait_workloads,omitempty"`
		Kill map[string]string `yaml:"kill_sessions,omitempty"`
	}
	var method yaml.Node
	if err := method.Encode([]step{
		{Name: "the application runs", Wait: map[string]string{"timeout": exp.Explore.Deadline.String()}},
		{Name: "end what the fault holds", Kill: map[string]string{"proxy": exp.Explore.Proxy}},
	}); err != nil {
		return nil, err
	}
	set(root, "method", &method)

	// The verifiers and rollbacks a trial has (judging, trialExperiment).
	_, dropped := judging(exp.Verify)
	if v := get(root, "verify"); v != nil && v.Kind == yaml.SequenceNode {
		var keep []*yaml.Node
		for i, item := range v.Content {
			if slices.Contains(dropped, i) {
				continue
			}
			if i < len(exp.Verify) && item.Kind == yaml.MappingNode {
				switch exp.Verify[i].Check.(type) {
				case *experiments.Availability, *experiments.Latency:
					set(item, "window", scalar(experiments.WindowRun))
					remove(item, "p50_min")
				}
			}
			keep = append(keep, item)
		}
		v.Content = keep
	}
	if rb := get(root, "rollbacks"); rb != nil && rb.Kind == yaml.SequenceNode {
		var keep []*yaml.Node
		for i, item := range rb.Content {
			if i < len(exp.Rollbacks) {
				if _, isRemove := exp.Rollbacks[i].Action.(*experiments.Remove); isRemove {
					continue
				}
			}
			keep = append(keep, item)
		}
		rb.Content = keep
	}

	var out bytes.Buffer
	fmt.Fprintf(&out, "# Reproduces a breakage pgchaos explore found in %s:\n", exp.Source)
	fmt.Fprintf(&out, "#   %s at %s, occurrence %d\n", c.Column, pointLabel(p), c.Occurrence)
	fmt.Fprintf(&out, "#   broke %s: %s\n", c.Verifier, oneLine(c.Evidence))
	run := "pgchaos run FILE"
	for _, v := range vars {
		run += " --var " + v + "=..."
	}
	fmt.Fprintf(&out, "# Run it with: %s (with the values explore had).\n", run)
	fmt.Fprintf(&out, "# It fails while the breakage is there, by %s; fault_fired fails instead\n", c.Verifier)
	fmt.Fprintf(&out, "# if the application no longer reaches the point.\n")
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func pointLabel(p Point) string {
	if p.Connection != "" {
		return p.ID + " (" + p.Name() + ")"
	}
	return fmt.Sprintf("%s (%s, %s, %s)", p.ID, p.Fingerprint, p.Protocol, p.TxStatus)
}

func oneLine(s string) string {
	s = strings.ReplaceAll(firstLine(s), "\r", "")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }

func get(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func set(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, scalar(key), v)
}

func remove(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}
