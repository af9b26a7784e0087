package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const valid = `version: 1
source:
  repo: .
  ref: v1.0.0
builder:
  kind: local
  registry: registry.example.com/build
images:
  - name: hello
    platforms: [linux/amd64, linux/arm64]
    local:
      go: {main: .}
    targets: [ghcr.io/example/hello]
    tags: ["{{ .Version }}", latest]
release:
  target: dir
`

// TestUserKeysAreNotConfigKeys: a label or build arg may share a name with a boolean key.
func TestUserKeysAreNotConfigKeys(t *testing.T) {
	body := strings.Replace(valid, "      go: {main: .}\n", "      go: {main: .}\n      labels: {insecure: \"yes\", enabled: \"no\"}\n", 1)
	c, err := Parse("relay.yaml", "/cfg", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if c.Images[0].Local.Labels["insecure"] != "yes" {
		t.Fatalf("labels %v", c.Images[0].Local.Labels)
	}
}

func TestParseValidAppliesDefaults(t *testing.T) {
	c, err := Parse("relay.yaml", "/cfg", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if c.Signing.Mode != "keyless" || len(c.SBOM.Formats) != 2 || c.Images[0].Local.Base != "scratch" || c.Images[0].Local.Go.Binary != "/hello" {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if !c.SBOMEnabled() || !c.ProvenanceEnabled() {
		t.Fatal("sbom and provenance default to enabled")
	}
	if !strings.HasPrefix(c.Digest, "sha256:") || c.Dir != "/cfg" {
		t.Fatalf("digest %q dir %q", c.Digest, c.Dir)
	}
	if got := c.ResolvePath("x/y"); got != "/cfg/x/y" {
		t.Fatalf("ResolvePath = %q", got)
	}
	c2, err := Parse("relay.yaml", "/cfg", []byte(valid+"sbom:\n  catalogers: [-file, +sbom-cataloger, go, -go-module-binary-cataloger]\n"))
	if err != nil || len(c2.SBOM.Catalogers) != 4 || c2.Digest == c.Digest {
		t.Fatalf("catalogers: %v %v (a selection must change the config digest)", c2.SBOM.Catalogers, err)
	}
}

func TestParseRegistryBase(t *testing.T) {
	for _, base := range []string{"ghcr.io/actions/actions-runner:2.330.0@sha256:" + strings.Repeat("a", 64), "127.0.0.1:5000/base/debian:12", "localhost/x@sha256:" + strings.Repeat("b", 64)} {
		body := strings.Replace(valid, "      go: {main: .}\n", "      go: {main: .}\n      base: "+base+"\n      files: [{src: \"dist/relay_{{ .Os }}_{{ .Arch }}\", dst: /usr/local/bin/relay, platforms: [linux/arm64]}]\n", 1)
		c, err := Parse("relay.yaml", "/cfg", []byte(body))
		if err != nil {
			t.Fatalf("%s: %v", base, err)
		}
		if c.Images[0].Local.Base != base || c.Images[0].Local.Files[0].Platforms[0] != "linux/arm64" {
			t.Fatalf("%s: %+v", base, c.Images[0].Local)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name     string
		edit     func(string) string
		line     int
		contains []string
	}{
		{"unknown key", func(s string) string { return strings.Replace(s, "    tags:", "    tagz: [x]\n    tags:", 1) }, 14, []string{`unknown key "tagz"`, "image", "docs/config.md"}},
		{"unknown top-level key", func(s string) string { return s + "extra: 1\n" }, 18 - 1, []string{`unknown key "extra"`}},
		{"no images", func(s string) string { return s[:strings.Index(s, "images:")] + "release:\n  target: dir\n" }, 0, []string{"no image to build", "images:"}},
		{"malformed target", func(s string) string {
			return strings.Replace(s, "ghcr.io/example/hello", "ghcr.io/Example/hello:latest", 1)
		}, 13, []string{"target", "not a valid repository"}},
		{"bad platform", func(s string) string { return strings.Replace(s, "linux/arm64", "linux", 1) }, 10, []string{`platform "linux"`}},
		{"wrong version", func(s string) string { return strings.Replace(s, "version: 1", "version: 7", 1) }, 1, []string{"schema version 7", "version: 1"}},
		{"missing ref", func(s string) string { return strings.Replace(s, "  ref: v1.0.0\n", "", 1) }, 2, []string{"source.ref is missing"}},
		{"bad builder", func(s string) string { return strings.Replace(s, "kind: local", "kind: docker", 1) }, 6, []string{`unknown builder kind "docker"`, "local, acr, gcb, codebuild"}},
		{"bad sbom format", func(s string) string { return s + "sbom:\n  formats: [spdx-tag]\n" }, 18, []string{`unknown SBOM format "spdx-tag"`}},
		{"trusted root without signing config", func(s string) string { return s + "signing:\n  trusted_root: tr.json\n" }, 17, []string{"both signing.trusted_root and signing.signing_config", "cosign trusted-root create"}},
		{"bad signing retry budget", func(s string) string { return s + "signing:\n  retry_budget: soon\n" }, 18, []string{`signing.retry_budget "soon"`, "10m"}},
		{"github without repo", func(s string) string { return strings.Replace(s, "target: dir", "target: github", 1) }, 15, []string{"release.github.repository"}},
		{"bad tag", func(s string) string { return strings.Replace(s, "latest]", "-bad]", 1) }, 14, []string{`tag "-bad"`}},
		{"wrong type", func(s string) string {
			return strings.Replace(s, "platforms: [linux/amd64, linux/arm64]", "platforms: linux/amd64", 1)
		}, 10, []string{"cannot unmarshal"}},
		{"local missing", func(s string) string { return strings.Replace(s, "    local:\n      go: {main: .}\n", "", 1) }, 9, []string{"no `local:` build settings"}},
		{"base without registry", func(s string) string {
			return strings.Replace(s, "      go: {main: .}\n", "      go: {main: .}\n      base: debian:12\n", 1)
		}, 13, []string{`base "debian:12" names no registry host`, "REGISTRY/REPO:TAG@sha256:"}},
		{"base without tag or digest", func(s string) string {
			return strings.Replace(s, "      go: {main: .}\n", "      go: {main: .}\n      base: ghcr.io/acme/base\n", 1)
		}, 13, []string{"neither a tag nor a digest"}},
		{"base with a bad digest", func(s string) string {
			return strings.Replace(s, "      go: {main: .}\n", "      go: {main: .}\n      base: ghcr.io/acme/base@md5:abc\n", 1)
		}, 13, []string{"not sha256"}},
		{"file src template typo", func(s string) string {
			return strings.Replace(s, "      go: {main: .}\n", "      go: {main: .}\n      files: [{src: 'dist/relay_{{ .OS }}', dst: /usr/local/bin/relay}]\n", 1)
		}, 13, []string{"files[0].src", "{{ .Os }}"}},
		{"file for a platform not built", func(s string) string {
			return strings.Replace(s, "      go: {main: .}\n", "      go: {main: .}\n      files: [{src: a, dst: /a, platforms: [linux/s390x]}]\n", 1)
		}, 13, []string{"names platform linux/s390x", "linux/amd64, linux/arm64"}},
		{"unknown tag template field", func(s string) string { return strings.Replace(s, `"{{ .Version }}"`, `"{{ .Nope }}"`, 1) }, 14, []string{`tag template "{{ .Nope }}"`, "can't evaluate field Nope", "{{ .ShortCommit }}"}},
		{"broken tag template", func(s string) string { return strings.Replace(s, `"{{ .Version }}"`, `"{{ .Version"`, 1) }, 14, []string{`tag template "{{ .Version"`, "unclosed action"}},
		{"tag template giving no valid tag", func(s string) string {
			return strings.Replace(s, `"{{ .Version }}"`, `"{{ .Commit }}{{ .Commit }}{{ .Commit }}{{ .Commit }}"`, 1)
		}, 14, []string{"which is not a valid tag"}},
		{"build argument template typo", func(s string) string {
			return strings.Replace(s, "    local:\n", "    docker: {build_args: {VERSION: '{{ .Verison }}'}}\n    local:\n", 1)
		}, 11, []string{"image hello: build argument VERSION", "can't evaluate field Verison", "{{ .Version }}"}},
		{"ldflags template typo", func(s string) string {
			return strings.Replace(s, "      go: {main: .}\n", "      go: {main: ., ldflags: ['-X main.version={{ .Vresion }}']}\n", 1)
		}, 12, []string{`image hello: ldflags "-X main.version={{ .Vresion }}"`, "can't evaluate field Vresion", "-X main.version={{ .Version }}"}},
		{"duplicate platform", func(s string) string { return strings.Replace(s, "linux/arm64]", "linux/amd64]", 1) }, 10, []string{"platform linux/amd64 is listed twice"}},
		{"unknown platform", func(s string) string { return strings.Replace(s, "linux/arm64]", "linux/sparc]", 1) }, 10, []string{`platform "linux/sparc" is not one an image can have`, "arm64"}},
		{"version not an integer", func(s string) string { return strings.Replace(s, "version: 1", "version: 1.5", 1) }, 1, []string{`version "1.5" is not the integer 1`}},
		{"version as a string", func(s string) string { return strings.Replace(s, "version: 1", `version: "1"`, 1) }, 1, []string{"cannot unmarshal !!str `1` into int"}},
		{"second document", func(s string) string { return s + "---\nversion: 1\n" }, 17, []string{"a second YAML document", "exactly one"}},
		{"yes as a boolean", func(s string) string { return s + "registries:\n  - {host: r.example.com, insecure: yes}\n" }, 18, []string{`insecure: "yes" is not a boolean`, "true or false"}},
		{"quoted boolean", func(s string) string { return s + "sbom:\n  enabled: \"true\"\n" }, 18, []string{"cannot unmarshal"}},
		{"huge label", func(s string) string {
			return strings.Replace(s, "      go: {main: .}\n", "      go: {main: .}\n      labels: {big: "+strings.Repeat("x", 20<<10)+"}\n", 1)
		}, 13, []string{"label big is 20480 bytes"}},
		{"long target path", func(s string) string {
			return strings.Replace(s, "ghcr.io/example/hello", "ghcr.io/example/"+strings.Repeat("a", 250), 1)
		}, 13, []string{"between 1 and 255 characters"}},
		{"long build repository", func(s string) string {
			return strings.Replace(s, "registry.example.com/build", "registry.example.com/"+strings.Repeat("b", 250), 1)
		}, 9, []string{"the build repository", "over the registries' limit of 255"}},
		{"sbom budget over the cap", func(s string) string { return s + "sbom:\n  budget: 32MiB\n" }, 18, []string{`sbom.budget "32MiB"`, "16MiB"}},
		{"sbom budget not a size", func(s string) string { return s + "sbom:\n  budget: big\n" }, 18, []string{`sbom.budget "big"`}},
		{"sbom cataloger not a selection", func(s string) string { return s + "sbom:\n  catalogers:\n    - -file\n    - \"+Go Module\"\n" }, 20,
			[]string{`sbom.catalogers entry "+Go Module"`, "`-file` leaves out"}},
		{"retry budget out of bounds", func(s string) string { return s + "signing:\n  retry_budget: 48h\n" }, 18, []string{"between 0 and 24h"}},
		{"duplicate image", func(s string) string {
			i := strings.Index(s, "  - name: hello")
			j := strings.Index(s, "release:")
			return s[:j] + s[i:j] + s[j:]
		}, 15, []string{"used twice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("relay.yaml", "/cfg", []byte(tt.edit(valid)))
			if err == nil {
				t.Fatal("no error")
			}
			ce, ok := err.(*Error)
			if !ok {
				t.Fatalf("error is %T, want *config.Error: %v", err, err)
			}
			for _, c := range tt.contains {
				if !strings.Contains(err.Error(), c) {
					t.Errorf("error %q does not mention %q", err, c)
				}
			}
			if tt.line != 0 && ce.Line != tt.line {
				t.Errorf("line = %d, want %d (%v)", ce.Line, tt.line, err)
			}
			if ce.Fix == "" {
				t.Errorf("error %q says no fix", err)
			}
		})
	}
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "cannot read config") || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("missing file: %v", err)
	}
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, nil, 0o644)
	if _, err := Load(empty); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty file: %v", err)
	}
	if os.Geteuid() != 0 { // root reads anything
		unreadable := filepath.Join(dir, "unreadable.yaml")
		os.WriteFile(unreadable, []byte(valid), 0o000)
		if _, err := Load(unreadable); err == nil || !strings.Contains(err.Error(), "permission") {
			t.Fatalf("unreadable file: %v", err)
		}
	}
	dirAsFile := filepath.Join(dir, "sub")
	os.Mkdir(dirAsFile, 0o755)
	if _, err := Load(dirAsFile); err == nil || !strings.Contains(err.Error(), "cannot read config") {
		t.Fatalf("directory: %v", err)
	}
	// Never opened: a FIFO would block until a writer came, /dev/zero never ends.
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, "/dev/zero"} {
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), "--config") {
			t.Errorf("%s: %v", p, err)
		}
	}
	big := filepath.Join(dir, "big.yaml")
	os.WriteFile(big, append([]byte(valid), make([]byte, MaxConfigSize)...), 0o644)
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "over relay's limit") {
		t.Fatalf("oversized file: %v", err)
	}
}

func TestExampleConfigsParse(t *testing.T) {
	for _, p := range []string{"../../examples/hello/relay.yaml", "../../docs/relay.example.yaml"} {
		if _, err := Load(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestRegistries(t *testing.T) {
	ok := valid + "registries:\n  - {host: registry.internal:5000, insecure: true, retry_budget: 10m}\n"
	c, err := Parse("relay.yaml", "/", []byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := c.Registries[0].Budget(); b.Minutes() != 10 || !c.Registries[0].Insecure {
		t.Fatalf("registries %+v", c.Registries)
	}
	for _, bad := range []string{
		"registries:\n  - {host: registry.internal:5000, retry_budget: soon}\n",
		"registries:\n  - {host: 'https://x/y'}\n",
		"registries:\n  - {host: a}\n  - {host: a}\n",
	} {
		if _, err := Parse("relay.yaml", "/", []byte(valid+bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// TestExampleMatchesDocs: docs/relay.example.yaml has every key docs/config.md lists and
// no other, its comments' "default X" agree with the value shown, and a key whose default
// is "unset: decided by relay" is left unset, so the example never contradicts the docs.
func TestExampleMatchesDocs(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{} // key -> default column
	keys := string(doc)[strings.Index(string(doc), "## Keys"):]
	keys = keys[:strings.Index(keys[3:], "\n## ")+3]
	for _, line := range strings.Split(keys, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		base := ""
		for _, part := range strings.Split(cells[1], ",") {
			k := strings.Trim(strings.TrimSpace(part), "`")
			if strings.HasPrefix(k, ".") {
				k = base + k
			} else {
				base = k[:max(strings.LastIndex(k, "."), 0)]
			}
			documented[k] = strings.TrimSpace(cells[3])
		}
	}
	var root yaml.Node
	raw, _ := os.ReadFile("../../docs/relay.example.yaml")
	if err := yaml.Unmarshal(raw, &root); err != nil {
		t.Fatal(err)
	}
	example := map[string]*yaml.Node{}
	var walk func(n *yaml.Node, at string)
	walk = func(n *yaml.Node, at string) {
		switch n.Kind {
		case yaml.DocumentNode:
			walk(n.Content[0], at)
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := strings.TrimPrefix(at+"."+n.Content[i].Value, ".")
				example[k] = n.Content[i+1]
				walk(n.Content[i+1], k)
			}
		case yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, at+"[]")
			}
		}
	}
	walk(&root, "")
	covered := func(k string, set func(string) bool) bool {
		for p := k; p != ""; {
			if set(p) {
				return true
			}
			i := strings.LastIndexAny(p, ".[")
			if i < 0 {
				break
			}
			p = p[:i]
		}
		return false
	}
	for k, n := range example {
		if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode && len(n.Content) > 0 && n.Content[0].Kind == yaml.MappingNode {
			continue // a section: its keys are checked
		}
		if !covered(k, func(p string) bool { _, ok := documented[p]; return ok }) {
			t.Errorf("relay.example.yaml has %s, which docs/config.md does not list", k)
		}
	}
	for k, d := range documented {
		if strings.Contains(d, "where possible") {
			continue // shown commented out: setting it would change what relay decides
		}
		found := false
		for e := range example {
			found = found || e == k || strings.HasPrefix(e, k+".") || strings.HasPrefix(e, k+"[")
		}
		if !found {
			t.Errorf("docs/config.md lists %s, which relay.example.yaml lacks", k)
		}
	}
	for k, n := range example {
		if n.Kind != yaml.ScalarNode {
			continue
		}
		if i := strings.Index(n.LineComment, "default "); i >= 0 {
			said := strings.TrimRight(strings.Fields(n.LineComment[i+len("default "):])[0], ")")
			if d := strings.Trim(documented[k], "`"); d != "" && !strings.ContainsAny(d, " `") && said != d {
				t.Errorf("relay.example.yaml: %s: its comment says default %s, docs/config.md says %s", k, said, d)
			}
		}
		if d := documented[k]; strings.Contains(d, "where possible") || strings.HasPrefix(d, "unset") {
			t.Errorf("relay.example.yaml sets %s: %s, whose documented default (%s) is to leave it unset; comment it out", k, n.Value, d)
		}
	}
}

// TestDurationsParsedOnce: relay.yaml's durations are parsed when the file is read; the
// wiring reads the value, and the file's spelling survives a round trip.
func TestDurationsParsedOnce(t *testing.T) {
	c, err := Parse("relay.yaml", t.TempDir(), []byte(valid+"signing:\n  retry_budget: 90s\nregistries:\n  - {host: r.internal, timeout: 5m, retry_budget: 1m30s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d, err := c.Signing.Budget(); err != nil || d != 90*time.Second {
		t.Fatalf("signing budget %v %v", d, err)
	}
	if d, _ := c.Registries[0].IdleTimeout(); d != 5*time.Minute {
		t.Fatalf("registry timeout %v", d)
	}
	if b, _ := json.Marshal(c.Registries[0]); !strings.Contains(string(b), `"retry_budget":"1m30s"`) {
		t.Fatalf("JSON: %s", b)
	}
	if d := ParseDuration("soon"); d.IsSet() == false || d.err == nil {
		t.Fatalf("a malformed duration: %+v", d)
	}
}

func TestOverrideBase(t *testing.T) {
	c, err := Parse("relay.yaml", "/cfg", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	before := c.Digest
	ref := "127.0.0.1:5000/mirror/debian:12@sha256:" + strings.Repeat("a", 64)
	if err := c.OverrideBase("hello", ref); err != nil {
		t.Fatal(err)
	}
	if c.Images[0].Local.Base != ref || c.Digest == before || !strings.HasPrefix(c.Digest, "sha256:") {
		t.Fatalf("base %q digest %s (was %s): the override must change both", c.Images[0].Local.Base, c.Digest, before)
	}
	for ref, want := range map[string]string{"debian:12": "names no registry host", "ghcr.io/x/y": "neither a tag nor a digest"} {
		if err := c.OverrideBase("hello", ref); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--base hello=%s: %v", ref, err)
		}
	}
	if err := c.OverrideBase("other", "scratch"); err == nil || !strings.Contains(err.Error(), "no image other") || !strings.Contains(err.Error(), "hello") {
		t.Errorf("unknown image: %v", err)
	}
}

func TestOverrideRef(t *testing.T) {
	c, err := Parse("relay.yaml", "/cfg", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	before := c.Digest
	for ref, want := range map[string]string{"refs/tags/v2.0.0": "v2.0.0", "refs/heads/main": "main", "0123456789abcdef0123456789abcdef01234567": "0123456789abcdef0123456789abcdef01234567"} {
		if err := c.OverrideRef(ref); err != nil || c.Source.Ref != want {
			t.Errorf("--ref %s: %q %v, want %q", ref, c.Source.Ref, err, want)
		}
	}
	if c.Digest == before {
		t.Error("--ref did not change the run's inputs")
	}
	for _, bad := range []string{"", " ", "v1 2", "a:b"} {
		if err := c.OverrideRef(bad); err == nil {
			t.Errorf("--ref %q accepted", bad)
		}
	}
}

func TestBrowseURL(t *testing.T) {
	for _, tc := range []struct{ repo, want string }{
		{"https://github.com/acme/app.git", "https://github.com/acme/app"},
		{"https://x-access-token:s3cr3t@github.com/acme/app", "https://github.com/acme/app"},
		{"http://127.0.0.1:8080/acme/app.git/", "http://127.0.0.1:8080/acme/app"},
		{"ssh://git@github.com:22/acme/app.git", "https://github.com/acme/app"},
		{"git@github.com:acme/app.git", "https://github.com/acme/app"},
		{".", ""},
		{"../app", ""},
		{"/srv/git/app.git", ""},
		{"file:///srv/git/app.git", ""},
		{"C:/src/app", ""},
	} {
		if got := BrowseURL(tc.repo); got != tc.want {
			t.Errorf("BrowseURL(%q) = %q, want %q", tc.repo, got, tc.want)
		}
	}
}

// TestFallback: what the environment supplies fills only what relay.yaml leaves out, and
// enters the digest, so a state made for another pushed ref is not resumed.
func TestFallback(t *testing.T) {
	noSource := strings.Replace(valid, "source:\n  repo: .\n  ref: v1.0.0\n", "", 1)
	noRef := strings.Replace(valid, "  ref: v1.0.0\n", "", 1)
	fb := Fallback{Repo: "https://github.com/acme/app.git", URL: "https://github.com/acme/app", Ref: "v0.2.0", TokenEnv: "GITHUB_TOKEN", From: "GitHub Actions"}
	plain, err := Parse("relay.yaml", "/cfg", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, body                     string
		fb                             Fallback
		repo, ref, url, tokenEnv, from string
	}{
		{"relay.yaml wins", valid, fb, ".", "v1.0.0", fb.URL, "", "GitHub Actions"},
		{"ref from the environment", noRef, fb, ".", "v0.2.0", fb.URL, "", "GitHub Actions"},
		{"whole source from the environment", noSource, fb, fb.Repo, "v0.2.0", fb.URL, "GITHUB_TOKEN", "GitHub Actions"},
		{"remote repo names its own page", strings.Replace(valid, "repo: .", "repo: git@example.com:acme/other.git", 1), fb, "git@example.com:acme/other.git", "v1.0.0", "https://example.com/acme/other", "", ""},
		{"explicit url", strings.Replace(valid, "  ref: v1.0.0\n", "  ref: v1.0.0\n  url: https://git.example.com/acme/app\n", 1), fb, ".", "v1.0.0", "https://git.example.com/acme/app", "", ""},
		{"outside Actions", valid, Fallback{}, ".", "v1.0.0", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseWith("relay.yaml", "/cfg", []byte(tc.body), tc.fb)
			if err != nil {
				t.Fatal(err)
			}
			s := c.Source
			if s.Repo != tc.repo || s.Ref != tc.ref || s.URL != tc.url || s.TokenEnv != tc.tokenEnv || c.FilledFrom != tc.from {
				t.Fatalf("source %+v from %q", s, c.FilledFrom)
			}
			if same := c.Digest == plain.Digest; same != (tc.body == valid && tc.from == "") {
				t.Fatalf("digest %s vs plain %s", c.Digest, plain.Digest)
			}
		})
	}
	a, _ := ParseWith("relay.yaml", "/cfg", []byte(noRef), fb)
	b, _ := ParseWith("relay.yaml", "/cfg", []byte(noRef), Fallback{Ref: "v0.3.0", From: "x"})
	if a.Digest == b.Digest {
		t.Fatal("another ref from the environment gave the same digest")
	}
	for _, tc := range []struct {
		body, want string
	}{
		{noRef, "pass --ref (RELAY_REF); inside GitHub Actions relay releases GITHUB_REF"},
		{noSource, "inside GitHub Actions it defaults to the workflow's repository"},
		{strings.Replace(valid, "  ref: v1.0.0\n", "  ref: v1.0.0\n  url: https://tok@github.com/acme/app\n", 1), `source.url "https://tok@github.com/acme/app" is not an http(s) URL without credentials`},
		{strings.Replace(valid, "  ref: v1.0.0\n", "  ref: v1.0.0\n  url: github.com/acme/app\n", 1), "source.url"},
	} {
		_, err := Parse("relay.yaml", "/cfg", []byte(tc.body))
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want a config error with %q, got %v", tc.want, err)
		}
	}
}

func TestTagsFor(t *testing.T) {
	c, err := Parse("relay.yaml", "/cfg", []byte(strings.Replace(valid, `tags: ["{{ .Version }}", latest]`, `tags: ["{{ .Version }}", "v{{ .ShortCommit }}", "{{ .Tag }}"]`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	commit := strings.Repeat("ab", 20)
	got, err := c.TagsFor(NewTagData("v0.2.0", commit))
	if err != nil || strings.Join(got["hello"], " ") != "v0.2.0 vabababababab v0.2.0" {
		t.Fatalf("tag push: %v %v", got, err)
	}
	_, err = c.TagsFor(NewTagData("", commit))
	var ce *Error
	if !errors.As(err, &ce) || ce.File != "relay.yaml" || !strings.Contains(err.Error(), `image hello: tag template "{{ .Tag }}" gives ""`) ||
		!strings.Contains(err.Error(), "release of commit abababababab, which no tag names") || !strings.Contains(err.Error(), "{{ .Version }}") {
		t.Fatalf("commit release: %v", err)
	}
}
