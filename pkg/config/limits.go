package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// maxRepoPath is the longest repository path (after the host) the distribution spec's
// reference grammar allows registries to refuse beyond.
const maxRepoPath = 255

// Label limits: labels go into every image config, which registries and runtimes read
// whole (and cap at a few MiB).
const (
	maxLabelKey    = 256
	maxLabelValue  = 16 << 10
	maxLabelsTotal = 64 << 10
)

func checkLabels(labels map[string]string) error {
	total := 0
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := labels[k]
		switch {
		case k == "":
			return fmt.Errorf("a label has an empty key")
		case len(k) > maxLabelKey:
			return fmt.Errorf("label key %.40q... is %d bytes, over %d", k, len(k), maxLabelKey)
		case len(v) > maxLabelValue:
			return fmt.Errorf("label %s is %d bytes, over %d", k, len(v), maxLabelValue)
		}
		total += len(k) + len(v)
	}
	if total > maxLabelsTotal {
		return fmt.Errorf("the labels take %d bytes, over %d", total, maxLabelsTotal)
	}
	return nil
}

// registryHost is the host part of a repository reference.
func registryHost(repo string) string {
	host, _, _ := strings.Cut(repo, "/")
	return host
}

// boolKeys are the keys of relay.yaml whose values are booleans (found from the types, so
// a new one cannot be forgotten), on first use.
var boolKeys = sync.OnceValue(func() map[string]bool {
	out := map[string]bool{}
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Bool {
				out[name] = true
			}
			walk(f.Type)
		}
	}
	walk(reflect.TypeOf(Config{}))
	return out
})

// freeForm are the keys whose values are maps of the user's own keys.
var freeForm = map[string]bool{"labels": true, "build_args": true}

// checkDocument checks what decoding lets through: `version: 1.5` decodes as 1, and YAML
// 1.1's yes/no/on/off decode as booleans while a quoted "true" does not; relay takes the
// integer 1 and the booleans true and false, written plainly.
func checkDocument(file string, root *yaml.Node) error {
	doc := root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		doc = doc.Content[0]
	}
	if doc.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if k, v := doc.Content[i], doc.Content[i+1]; k.Value == "version" && (v.Tag != "!!int" || v.Value != fmt.Sprint(SchemaVersion)) {
			return &Error{File: file, Line: v.Line, Msg: fmt.Sprintf("version %q is not the integer %d", v.Value, SchemaVersion), Fix: fmt.Sprintf("write `version: %d`", SchemaVersion)}
		}
	}
	var bad *yaml.Node
	var key string
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if bad != nil {
			return
		}
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				if freeForm[k.Value] {
					continue // labels and build args are the user's own keys: a label may be called insecure
				}
				if boolKeys()[k.Value] && v.Kind == yaml.ScalarNode && !(v.Tag == "!!bool" && (v.Value == "true" || v.Value == "false")) {
					bad, key = v, k.Value
					return
				}
				walk(v)
			}
			return
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(doc)
	if bad != nil {
		return &Error{File: file, Line: bad.Line, Msg: fmt.Sprintf("%s: %q is not a boolean", key, bad.Value), Fix: "write true or false, unquoted"}
	}
	return nil
}
