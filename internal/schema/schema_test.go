package schema

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/relaydev/relay/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite docs/relay.schema.json")

const schemaFile = "../../docs/relay.schema.json"

// TestSchemaInSync: docs/relay.schema.json is what the config types say today.
func TestSchemaInSync(t *testing.T) {
	got, err := Generate("../../pkg/config")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, schemaFile, got, *update)
}

// TestSchemaValidates: a JSON-Schema validator accepts every relay.yaml in the repository
// and refuses an unknown key, a misspelt nested key and a value outside an enum.
func TestSchemaValidates(t *testing.T) {
	raw, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("relay.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("relay.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	validate := func(yml string) error {
		var v any
		if err := yaml.Unmarshal([]byte(yml), &v); err != nil {
			t.Fatal(err)
		}
		j, _ := json.Marshal(v)
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
		if err != nil {
			t.Fatal(err)
		}
		return sch.Validate(inst)
	}
	for _, f := range []string{"../../docs/relay.example.yaml", "../../examples/hello/relay.yaml", "../../relay.yaml", "../../image/relay-cloud.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate(string(b)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	example, _ := os.ReadFile("../../examples/hello/relay.yaml")
	for _, tc := range []struct{ name, edit, want string }{
		{"unknown top-level key", string(example) + "extra: 1\n", "extra"},
		{"misspelt image key", strings.Replace(string(example), "    tags:", "    tagz:", 1), "tagz"},
		{"builder kind outside the list", strings.Replace(string(example), "kind: local", "kind: docker", 1), "/builder/kind"},
		{"wrong version", strings.Replace(string(example), "version: 1", "version: 2", 1), "version"},
		{"wrong type", strings.Replace(string(example), "platforms: [linux/amd64, linux/arm64]", "platforms: linux/amd64", 1), "platforms"},
	} {
		err := validate(tc.edit)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
