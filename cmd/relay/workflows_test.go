package main

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// workflowFiles are every workflow in the repository: the examples and relay's own.
func workflowFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, g := range []string{"../../examples/workflows/*.yml", "../../.github/workflows/*.yml"} {
		m, _ := filepath.Glob(g)
		files = append(files, m...)
	}
	if len(files) < 4 {
		t.Fatalf("found only %v", files)
	}
	return files
}

type workflow struct {
	Permissions any            `yaml:"permissions"`
	Jobs        map[string]job `yaml:"jobs"`
}

type job struct {
	Permissions any `yaml:"permissions"`
	Steps       []struct {
		Uses string            `yaml:"uses"`
		Run  string            `yaml:"run"`
		With map[string]string `yaml:"with"`
	} `yaml:"steps"`
}

// grants reads a permissions block: none, a map of scope to read/write, or read-all/write-all.
func grants(p any) map[string]string {
	out := map[string]string{}
	switch v := p.(type) {
	case map[string]any:
		for k, x := range v {
			out[k], _ = x.(string)
		}
	case string:
		for _, s := range []string{"contents", "packages", "id-token", "attestations"} {
			out[s] = strings.TrimSuffix(v, "-all")
		}
	}
	return out
}

// needs is what each relay command needs of the job's token in a release to ghcr.io with
// keyless signing and GitHub attestations, as the example workflows do.
var needs = map[string]map[string]string{
	"run":        {"contents": "write", "packages": "write", "id-token": "write", "attestations": "write"},
	"release":    {"contents": "write", "packages": "write", "attestations": "write"},
	"checkout":   {"contents": "read"},
	"build":      {"packages": "write"},
	"copy":       {"packages": "write"},
	"sign":       {"packages": "write", "id-token": "write"},
	"sbom":       {"packages": "write", "id-token": "write"},
	"provenance": {"packages": "write", "id-token": "write"},
	"verify":     {"packages": "read"},
}

var relayCall = regexp.MustCompile(`(?m)(?:^|[\s;&|(])(?:bin/|\./)?relay ([a-z][a-z-]*)`)

// TestWorkflows: every relay command a workflow calls exists, and its job grants the
// permissions that command needs (and the workflow asks for nothing by default).
func TestWorkflows(t *testing.T) {
	app := newApp(nil, nil, func(string) string { return "" }, nil)
	for _, f := range workflowFiles(t) {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var w workflow
		if err := yaml.Unmarshal(raw, &w); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if g := grants(w.Permissions); w.Permissions == nil || len(g) > 0 {
			t.Errorf("%s: the workflow's default permissions should be {} (each job asks for its own), got %v", f, w.Permissions)
		}
		calls := 0
		for name, j := range w.Jobs {
			granted := grants(j.Permissions)
			for _, s := range j.Steps {
				var cmds []string
				if strings.HasPrefix(s.Uses, "relaydev/relay@") {
					if a := strings.Fields(s.With["args"]); len(a) > 0 {
						cmds = append(cmds, a[0])
					}
				}
				for _, m := range relayCall.FindAllStringSubmatch(s.Run, -1) {
					cmds = append(cmds, m[1])
				}
				for _, c := range cmds {
					calls++
					if app.Command(c) == nil {
						t.Errorf("%s job %s: relay %s is not a relay command", f, name, c)
						continue
					}
					var missing []string
					for scope, level := range needs[c] {
						if have := granted[scope]; have != level && have != "write" {
							missing = append(missing, scope+": "+level)
						}
					}
					sort.Strings(missing)
					if len(missing) > 0 {
						t.Errorf("%s job %s: relay %s needs %s", f, name, c, strings.Join(missing, ", "))
					}
				}
			}
		}
		if calls == 0 {
			t.Errorf("%s calls no relay command", f)
		}
	}
}
