package main

import (
	"encoding/json"
	"strings"
	"testing"
)

const checkConfig = `version: 1
source: {repo: ., url: https://github.com/acme/app}
builder: {kind: local, registry: registry.example.com/build}
images:
  - name: hello
    platforms: [linux/amd64, linux/arm64]
    local: {go: {main: .}}
    targets: [ghcr.io/acme/hello]
    tags: ["{{ .Version }}", latest]
`

// TestCheck: relay check validates offline, sees the source the run would (Actions'
// GITHUB_REF, --ref), shows the tags each release gets, and fails with exit 2 before any
// step for a template this release cannot fill.
func TestCheck(t *testing.T) {
	actions := map[string]string{"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/tags/v0.2.0", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/app",
		"GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567"}
	branch := map[string]string{}
	for k, v := range actions {
		branch[k] = v
	}
	branch["GITHUB_REF"] = "refs/heads/main"
	for _, tc := range []struct {
		name   string
		body   string
		env    map[string]string
		args   []string
		code   int
		output []string // in stdout (text) or the JSON's error
		tags   string
	}{
		{"tag push in Actions", checkConfig, actions, nil, 0, []string{"valid", "https://github.com/acme/app at v0.2.0", "from GitHub Actions"}, "v0.2.0,latest"},
		{"branch push releases the commit", checkConfig, branch, nil, 0, []string{"at 0123456789abcdef0123456789abcdef01234567"}, "0123456789ab,latest"},
		{"--ref outside Actions", checkConfig, nil, []string{"--ref", "refs/tags/v1.0.0"}, 0, []string{"at v1.0.0"}, "v1.0.0,latest"},
		{"no ref anywhere", checkConfig, nil, nil, 2, []string{"source.ref is missing", "--ref"}, ""},
		{"template typo", strings.Replace(checkConfig, "{{ .Version }}", "{{ .Versoin }}", 1), actions, nil, 2, []string{"can't evaluate field Versoin"}, ""},
		{"{{ .Tag }} for a commit no tag names", strings.Replace(checkConfig, "{{ .Version }}", "{{ .Tag }}", 1), branch, nil, 2,
			[]string{"release of commit 0123456789ab, which no tag names", "{{ .Version }}"}, ""},
		{"bad platform", strings.Replace(checkConfig, "linux/arm64", "linux/sparc", 1), actions, nil, 2, []string{`platform "linux/sparc"`}, ""},
		{"unknown key", checkConfig + "releases: {}\n", actions, nil, 2, []string{`unknown key "releases"`}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeConfig(t, tc.body)
			code, stdout, stderr := runCLI(t, tc.env, append([]string{"check", "--config", cfg}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s\n%s", code, tc.code, stdout, stderr)
			}
			text := stdout
			if code != 0 {
				text = stderr
			}
			for _, want := range tc.output {
				if !strings.Contains(text, want) {
					t.Errorf("output lacks %q:\n%s", want, text)
				}
			}
			// The same, as JSON.
			code, stdout, _ = runCLI(t, tc.env, append([]string{"check", "--output", "json", "--config", cfg}, tc.args...)...)
			var rep checkReport
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != tc.code || rep.Valid != (tc.code == 0) {
				t.Fatalf("json: exit %d %v\n%s", code, err, stdout)
			}
			if tc.code == 0 {
				if got := strings.Join(rep.Images[0].Tags, ","); got != tc.tags {
					t.Errorf("tags %s, want %s", got, tc.tags)
				}
			} else if rep.Error == "" || rep.Line == 0 && !strings.Contains(tc.name, "commit") {
				t.Errorf("json error without message or line: %+v", rep)
			}
		})
	}
	if code, _, stderr := runCLI(t, nil, "check", "--output", "yaml"); code != exitUsage || !strings.Contains(stderr, "use text or json") {
		t.Fatalf("--output yaml: exit %d %s", code, stderr)
	}
}
