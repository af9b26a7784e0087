package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"

	"github.com/relaydev/relay/pkg/config"
)

// TestInit: relay init writes a relay.yaml that relay reads, for Go main packages (the
// local builder) or a Dockerfile (a cloud builder to fill in), names images and the
// release after the origin remote, and never replaces a file without --force.
func TestInit(t *testing.T) {
	mainGo := "package main\n\nfunc main() {}\n"
	for _, tc := range []struct {
		name   string
		files  map[string]string
		origin string
		args   []string
		code   int
		want   []string
	}{
		{"Go main at the root and in cmd/", map[string]string{"go.mod": "module x\n", "main.go": mainGo, "cmd/tool/main.go": mainGo, "cmd/lib/lib.go": "package lib\n"}, "", nil, 0,
			[]string{"kind: local", "main: .", "main: ./cmd/tool", "target: dir"}},
		{"github origin", map[string]string{"main.go": mainGo}, "git@github.com:Acme/Shop.git", nil, 0,
			[]string{"- name: shop", "ghcr.io/acme/shop", "repository: Acme/Shop", "attestations: true"}},
		{"registry flag", map[string]string{"main.go": mainGo}, "", []string{"--registry", "registry.example.com/team/"}, 0,
			[]string{"registry: registry.example.com/team/build", "- registry.example.com/team/"}},
		{"a Dockerfile", map[string]string{"Dockerfile": "FROM scratch\n"}, "", nil, 0, []string{"kind: acr", "dockerfile: Dockerfile", "VERSION"}},
		{"nothing to build", map[string]string{"README.md": "hi"}, "", nil, exitUsage, []string{"no Go main package", "docs/relay.example.yaml"}},
		{"existing relay.yaml", map[string]string{"main.go": mainGo, "relay.yaml": "mine\n"}, "", nil, exitUsage, []string{"relay init never replaces it"}},
		{"existing relay.yaml, --force", map[string]string{"main.go": mainGo, "relay.yaml": "mine\n"}, "", []string{"--force"}, 0, []string{"main: ."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "My App")
			for p, b := range tc.files {
				os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
				os.WriteFile(filepath.Join(dir, p), []byte(b), 0o644)
			}
			if tc.origin != "" {
				repo, _ := git.PlainInit(dir, false)
				repo.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{tc.origin}})
			}
			path := filepath.Join(dir, "relay.yaml")
			code, stdout, stderr := runCLI(t, nil, append([]string{"init", "--config", path}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s%s", code, tc.code, stdout, stderr)
			}
			got, _ := os.ReadFile(path)
			for _, w := range tc.want {
				if !strings.Contains(string(got)+stderr, w) {
					t.Errorf("lacks %q:\n%s%s", w, got, stderr)
				}
			}
			if code != 0 {
				return
			}
			// What it wrote relay reads, as a tag push would, and relay check agrees.
			if _, err := config.LoadWith(path, config.Fallback{Ref: "v0.1.0"}); err != nil {
				t.Fatalf("relay init wrote a relay.yaml relay refuses: %v\n%s", err, got)
			}
			if code, _, stderr := runCLI(t, nil, "check", "--config", path, "--ref", "v0.1.0"); code != 0 {
				t.Fatalf("relay check: exit %d %s", code, stderr)
			}
		})
	}
}
