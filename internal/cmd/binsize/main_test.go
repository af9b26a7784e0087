package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestModuleOf(t *testing.T) {
	mods := []string{"github.com/aws/aws-sdk-go-v2/service/s3", "github.com/aws/aws-sdk-go-v2", "gopkg.in/yaml.v3", "github.com/a/b"}
	for sym, want := range map[string]string{
		"github.com/aws/aws-sdk-go-v2/service/s3/types.Bucket": "github.com/aws/aws-sdk-go-v2/service/s3",
		"type:*github.com/aws/aws-sdk-go-v2/service/s3.Client": "github.com/aws/aws-sdk-go-v2/service/s3",
		"github.com/aws/aws-sdk-go-v2/aws.Config":              "github.com/aws/aws-sdk-go-v2",
		"gopkg.in/yaml.v3.(*decoder).unmarshal":                "gopkg.in/yaml.v3",
		"github.com/a/b.Map[go.shape.string,github.com/c/d.T]": "github.com/a/b",
		"go:itab.*net/http.Transport,github.com/a/b.I":         "std (and runtime tables)",
		"github.com/a/bc.F":   "std (and runtime tables)",
		"runtime.findfunctab": "std (and runtime tables)",
	} {
		if got := moduleOf(symbolPath(sym), mods); got != want {
			t.Errorf("%q: %q, want %q", sym, got, want)
		}
	}
}

// TestAttribute builds this command with its symbols and finds its bytes, std first; a
// stripped build is refused.
func TestAttribute(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin := filepath.Join(t.TempDir(), "binsize")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	rows, total, _, err := attribute(bin)
	if err != nil || total == 0 || len(rows) == 0 || rows[0].module != "std (and runtime tables)" {
		t.Fatalf("%+v %d %v", rows, total, err)
	}
	stripped := filepath.Join(t.TempDir(), "stripped")
	if out, err := exec.Command("go", "build", "-ldflags=-s", "-o", stripped, ".").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, _, _, err := attribute(stripped); err == nil {
		t.Error("a stripped binary gave a table")
	}
	_ = os.Remove(stripped)
}
