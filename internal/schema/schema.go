// Package schema writes the JSON Schema of relay.yaml (docs/relay.schema.json) from the
// config types themselves and their doc comments, so editors complete and check relay.yaml
// with what relay decodes. Its test keeps the file in sync (go test ./internal/schema -update).
package schema

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/relaydev/relay/pkg/config"
)

// enums are the keys whose values relay checks against a list.
var enums = map[string][]string{
	"Builder.Kind":   config.BuilderKinds,
	"Signing.Mode":   config.SigningModes,
	"Release.Target": config.ReleaseTargets,
}

// itemEnums are list keys whose items relay checks against a list.
var itemEnums = map[string][]string{
	"SBOM.Formats": config.SBOMFormats,
}

var durationType = reflect.TypeOf(config.Duration{})

// Generate is the schema of config.Config; srcDir holds pkg/config's source, whose field
// comments become the descriptions.
func Generate(srcDir string) ([]byte, error) {
	docs, err := fieldDocs(srcDir)
	if err != nil {
		return nil, err
	}
	g := &gen{docs: docs, defs: map[string]any{}}
	root := g.object(reflect.TypeOf(config.Config{}))
	root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	root["$id"] = "https://github.com/relaydev/relay/docs/relay.schema.json"
	root["title"] = "relay.yaml"
	root["description"] = "relay's configuration (docs/config.md). relay decodes strictly: an unknown key is an error."
	root["required"] = []string{"version", "images"}
	root["properties"].(map[string]any)["version"] = map[string]any{"const": 1, "description": "schema version; only 1 exists"}
	root["$defs"] = g.defs
	b, err := json.MarshalIndent(root, "", "  ")
	return append(b, '\n'), err
}

type gen struct {
	docs map[string]string // "Type.Field" -> doc comment
	defs map[string]any
}

// object is the schema of a struct: its yaml keys, nothing else.
func (g *gen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" || !f.IsExported() {
			continue
		}
		s := g.of(f.Type)
		if d := g.docs[t.Name()+"."+f.Name]; d != "" {
			s["description"] = d
		}
		if e, ok := enums[t.Name()+"."+f.Name]; ok {
			s["enum"] = e
		}
		if e, ok := itemEnums[t.Name()+"."+f.Name]; ok {
			s["items"] = map[string]any{"enum": e}
		}
		props[key] = s
	}
	return map[string]any{"type": "object", "properties": props, "additionalProperties": false}
}

// of is the schema of a field's type; structs go to $defs, by name.
func (g *gen) of(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		return map[string]any{"type": "string", "description": "a duration, e.g. 90s, 10m, 2h"}
	case t.Kind() == reflect.Struct:
		if _, ok := g.defs[t.Name()]; !ok {
			g.defs[t.Name()] = nil // placeholder: a type that refers to itself ends here
			g.defs[t.Name()] = g.object(t)
		}
		return map[string]any{"$ref": "#/$defs/" + t.Name()}
	case t.Kind() == reflect.Slice:
		return map[string]any{"type": "array", "items": g.of(t.Elem())}
	case t.Kind() == reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.of(t.Elem())}
	case t.Kind() == reflect.String:
		return map[string]any{"type": "string"}
	case t.Kind() == reflect.Bool:
		return map[string]any{"type": "boolean"}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return map[string]any{"type": "integer"}
	}
	return map[string]any{}
}

// fieldDocs reads the doc comment (or trailing comment) of every struct field in dir.
func fieldDocs(dir string) (map[string]string, error) {
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	docs := map[string]string{}
	for _, p := range files {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
		if err != nil {
			return nil, err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return false
			}
			for _, fl := range st.Fields.List {
				text := ""
				if fl.Doc != nil {
					text = fl.Doc.Text()
				} else if fl.Comment != nil {
					text = fl.Comment.Text()
				}
				text = strings.Join(strings.Fields(text), " ")
				for _, name := range fl.Names {
					if text != "" {
						docs[ts.Name.Name+"."+name.Name] = text
					}
				}
			}
			return false
		})
	}
	return docs, nil
}
