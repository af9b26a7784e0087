// Package archtest holds tests of the module's shape: which packages may import which.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/relaydev/relay"

// TestLibrariesImportNoPipeline: DESIGN.md's arrows point down — a library never imports
// the config model, the pipeline or the CLI (pkg/steps adapts the config to the libraries).
func TestLibrariesImportNoPipeline(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := []string{module + "/pkg/config", module + "/pkg/steps", module + "/cmd/relay"}
	libraries := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg := f[0]
		if !strings.HasPrefix(pkg, module+"/pkg/") || pkg == module+"/pkg/steps" || pkg == module+"/pkg/config" {
			continue // the pipeline and the model are no libraries; cmd and internal are not either
		}
		libraries++
		for _, imp := range f[1:] {
			for _, bad := range forbidden {
				if imp == bad {
					t.Errorf("%s imports %s", strings.TrimPrefix(pkg, module+"/"), strings.TrimPrefix(bad, module+"/"))
				}
			}
		}
	}
	if libraries < 5 {
		t.Fatalf("found %d libraries: the listing is wrong, the test proves nothing", libraries)
	}
	// pkg/config is read by the pipeline only: it imports no relay package that could
	// import it back.
	out, err = exec.Command("go", "list", "-f", "{{join .Imports \" \"}}", module+"/pkg/config").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range strings.Fields(string(out)) {
		if strings.HasPrefix(imp, module+"/") {
			t.Errorf("pkg/config imports %s", imp)
		}
	}
}
