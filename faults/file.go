package faults

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Validate checks a rule without adding it anywhere.
func Validate(r Rule) error {
	_, err := compile(r)
	return err
}

// NullItem finds the first empty ("- " or "- null") item of a YAML list
// and returns its index and line, or -1. The YAML decoder drops such items
// without a word, which would skip what the user meant to write and number
// the items after it wrongly; a loader checks first.
func NullItem(list *yaml.Node) (index, line int) {
	if list.Kind != yaml.SequenceNode {
		return -1, 0
	}
	for i, n := range list.Content {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
			return i, n.Line
		}
	}
	return -1, 0
}

// ParseRules reads one rule, or a list of rules, from YAML or JSON. Errors
// start with source and the line of the offending rule.
func ParseRules(data []byte, source string) ([]Rule, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %s", source, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 {
		return nil, fmt.Errorf("%s: no rule in the file", source)
	}
	root := doc.Content[0]
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var rules []Rule
	var nodes []*yaml.Node
	if root.Kind == yaml.SequenceNode {
		if i, line := NullItem(root); i >= 0 {
			return nil, fmt.Errorf("%s:%d: rules[%d]: is empty (want a rule: name, match, action)", source, line, i)
		}
		if err := dec.Decode(&rules); err != nil {
			return nil, fmt.Errorf("%s: %s", source, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		nodes = root.Content
	} else {
		var r Rule
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("%s: %s", source, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		rules, nodes = []Rule{r}, []*yaml.Node{root}
	}
	if err := CheckRules(rules, func(i int) string {
		line := 0
		if i < len(nodes) {
			line = nodes[i].Line
		}
		if len(nodes) == 1 && root.Kind != yaml.SequenceNode {
			return fmt.Sprintf("%s:%d", source, line)
		}
		return fmt.Sprintf("%s:%d: rules[%d]", source, line, i)
	}); err != nil {
		return nil, err
	}
	return rules, nil
}

// CheckRules validates rules and that no two share a proxy and name. where
// says how to name rule i in an error.
func CheckRules(rules []Rule, where func(i int) string) error {
	seen := map[[2]string]bool{}
	for i, r := range rules {
		if err := Validate(r); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) && r.Name != "" {
				return fmt.Errorf("%s (%s): %w", where(i), r.Name, err)
			}
			return fmt.Errorf("%s: %w", where(i), err)
		}
		key := [2]string{r.Proxy, r.Name}
		if seen[key] {
			return fmt.Errorf("%s (%s): name: used twice", where(i), r.Name)
		}
		seen[key] = true
	}
	return nil
}

// Direction is the direction a rule looks at, with the defaults the engine
// applies (sql and statement: the client's messages; tag and byte toxics:
// the server's). An invalid rule reports client_to_server.
func (r Rule) Direction() Direction {
	if r.Name == "" {
		r.Name = "unnamed" // the direction does not depend on it
	}
	c, err := compile(r)
	if err != nil {
		return ClientToServer
	}
	return c.dir
}
