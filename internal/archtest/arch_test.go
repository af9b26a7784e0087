// Package archtest holds tests of the module's shape: which packages may import which.
package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
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

// TestCLIStaysThin: cmd/relay parses flags, calls a library and maps errors to exit
// codes; a function of it over 60 lines is wiring or policy that belongs in internal/wire
// or a library.
func TestCLIStaysThin(t *testing.T) {
	files, err := filepath.Glob("../../cmd/relay/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no cmd/relay sources: %v", err)
	}
	fs := token.NewFileSet()
	funcs := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fs, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok {
				continue
			}
			funcs++
			if n := fs.Position(fd.End()).Line - fs.Position(fd.Pos()).Line + 1; n > 60 {
				t.Errorf("%s: %s is %d lines (at most 60)", filepath.Base(f), fd.Name.Name, n)
			}
		}
	}
	if funcs < 10 {
		t.Fatalf("found only %d functions: the test reads the wrong directory", funcs)
	}
}

// TestGoModHasNoReplace: `go install github.com/relaydev/relay/cmd/relay@VERSION` refuses a
// module whose go.mod replaces anything, so relay's never does; a dependency whose newest
// version cannot be fetched is pinned to one that can, with a require.
func TestGoModHasNoReplace(t *testing.T) {
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	f, err := modfile.Parse("go.mod", b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.Module.Mod.Path != "github.com/relaydev/relay" {
		t.Fatalf("module %s", f.Module.Mod.Path)
	}
	for _, r := range f.Replace {
		t.Errorf("go.mod:%d replaces %s with %s: go install refuses it; require a version that can be fetched instead", r.Syntax.Start.Line, r.Old, r.New)
	}
	for _, x := range f.Exclude {
		t.Errorf("go.mod:%d excludes %s: go install refuses it, as it does a replace", x.Syntax.Start.Line, x.Mod)
	}
}
