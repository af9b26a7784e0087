package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relaydev/relay/pkg/build"
	"github.com/relaydev/relay/pkg/oci"
	"github.com/relaydev/relay/pkg/steps"
)

func TestGitHubOutputs(t *testing.T) {
	dir := t.TempDir()
	out, sum := filepath.Join(dir, "output"), filepath.Join(dir, "summary")
	os.WriteFile(out, []byte("earlier=1\n"), 0o644)
	st := &steps.State{
		Builds:    []steps.BuiltImage{{Name: "hello", Result: build.Result{Digest: "sha256:aa"}}},
		Copies:    []steps.CopiedImage{{Name: "hello", Repository: "ghcr.io/acme/hello", Digest: "sha256:aa", Platforms: []oci.Manifest{{Platform: "linux/amd64"}, {Platform: "linux/arm64"}}}},
		Completed: []steps.StepRecord{{Name: "checkout", DurationMS: 12}, {Name: "build", DurationMS: 340}},
		Release:   &steps.ReleaseRecord{URL: "file:///dist"},
	}
	env := map[string]string{"GITHUB_OUTPUT": out, "GITHUB_STEP_SUMMARY": sum}
	if err := writeGitHubOutputs(func(k string) string { return env[k] }, st); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	want := "earlier=1\nhello-digest=sha256:aa\nhello-ref=ghcr.io/acme/hello@sha256:aa\nrelease-url=file:///dist\ncompleted-steps=[\"checkout\",\"build\"]\n"
	if string(got) != want {
		t.Fatalf("GITHUB_OUTPUT:\n%s\nwant:\n%s", got, want)
	}
	s, _ := os.ReadFile(sum)
	for _, w := range []string{"| hello | `ghcr.io/acme/hello@sha256:aa` | linux/amd64, linux/arm64 |", "| build | 340 ms |"} {
		if !strings.Contains(string(s), w) {
			t.Errorf("summary lacks %q:\n%s", w, s)
		}
	}
	// Outside Actions nothing is written.
	if err := writeGitHubOutputs(func(string) string { return "" }, st); err != nil {
		t.Fatal(err)
	}
}
