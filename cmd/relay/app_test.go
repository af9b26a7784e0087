package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/logging"
	"github.com/relaydev/relay/pkg/oci"
	"github.com/relaydev/relay/pkg/steps"
)

func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"relay"}, args...), &out, &errb, func(k string) string { return env[k] })
	return code, out.String(), errb.String()
}

const goodConfig = `version: 1
source: {repo: ., ref: v0.1.0, url: https://github.com/acme/app}
builder: {kind: local, registry: registry.example.com/build}
images:
  - name: hello
    local: {go: {main: .}}
    targets: [ghcr.io/acme/hello]
`

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadConfigExitsTwo(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string
	}{
		{"unknown key", strings.Replace(goodConfig, "source:", "sourc:", 1), []string{`unknown key "sourc"`, ":2:"}},
		{"missing image", strings.Split(goodConfig, "images:")[0], []string{"no image to build"}},
		{"malformed reference", strings.Replace(goodConfig, "ghcr.io/acme/hello", "ghcr.io/acme/hello@sha256:xyz", 1), []string{"not a valid repository", "tags go under"}},
		{"unknown tag template field", goodConfig + "    tags: [\"{{ .Nope }}\"]\n", []string{`tag template "{{ .Nope }}"`, "can't evaluate field Nope", ":8:"}},
		{"broken tag template", goodConfig + "    tags: [\"{{ .Version\"]\n", []string{`tag template "{{ .Version"`, ":8:"}},
		{"duplicate platform", strings.Replace(goodConfig, "    local:", "    platforms: [linux/amd64, linux/amd64]\n    local:", 1), []string{"platform linux/amd64 is listed twice", ":6:"}},
		{"version 1.5", strings.Replace(goodConfig, "version: 1", "version: 1.5", 1), []string{`version "1.5" is not the integer 1`, ":1:"}},
		{"second document", goodConfig + "---\nversion: 1\n", []string{"a second YAML document", ":8:"}},
		{"insecure: yes", goodConfig + "registries: [{host: registry.example.com, insecure: yes}]\n", []string{`insecure: "yes" is not a boolean`, ":8:"}},
		{"huge label", strings.Replace(goodConfig, "local: {go: {main: .}}", "local: {go: {main: .}, labels: {big: "+strings.Repeat("x", 20<<10)+"}}", 1), []string{"label big is 20480 bytes", ":6:"}},
		{"long build repository", strings.Replace(goodConfig, "registry.example.com/build", "registry.example.com/"+strings.Repeat("b", 250), 1), []string{"over the registries' limit of 255", ":5:"}},
		{"sbom budget over the cap", goodConfig + "sbom: {budget: 32MiB}\n", []string{`sbom.budget "32MiB"`, ":8:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := writeConfig(t, tt.body)
			out := filepath.Join(filepath.Dir(cfg), "dist")
			state := filepath.Join(filepath.Dir(cfg), ".relay", "state.json")
			code, stdout, stderr := runCLI(t, nil, "run", "--local", "--config", cfg, "--out", out, "--state", state)
			if code != exitUsage {
				t.Fatalf("exit %d, want 2; stderr: %s", code, stderr)
			}
			// A real run against a registry that logs every request: not one is made.
			var requests atomic.Int64
			host := testutil.Registry(t, true, func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1); h.ServeHTTP(w, r) })
			})
			real := writeConfig(t, strings.ReplaceAll(strings.ReplaceAll(tt.body, "registry.example.com/", host+"/"), "ghcr.io/", host+"/"))
			if code, _, stderr := runCLI(t, nil, "run", "--config", real, "--out", out, "--state", state); code != exitUsage || requests.Load() != 0 {
				t.Fatalf("real run: exit %d after %d registry requests, want 2 after none: %s", code, requests.Load(), stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not mention %q: %s", w, stderr)
				}
			}
			if !strings.Contains(stderr, "fix:") {
				t.Errorf("no fix offered: %s", stderr)
			}
			if stdout != "" {
				t.Errorf("something was claimed on stdout: %q", stdout)
			}
			for _, p := range []string{out, state} {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					t.Errorf("%s was written by a failed config", p)
				}
			}
		})
	}
	t.Run("unreadable file", func(t *testing.T) {
		code, _, stderr := runCLI(t, nil, "plan", "--config", filepath.Join(t.TempDir(), "nope.yaml"))
		if code != exitUsage || !strings.Contains(stderr, "cannot read config") {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	})
}

func TestUsageErrors(t *testing.T) {
	cfg := writeConfig(t, goodConfig)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"run", "--bogus"}, "flag provided but not defined"},
		{[]string{"run", "--only", "deploy", "--config", cfg}, `unknown step "deploy"`},
		{[]string{"run", "--log-format", "xml", "--config", cfg}, "unknown log format"},
		{[]string{"run", "--jobs", "0", "--config", cfg}, "--jobs must be at least 1"},
		{[]string{"sign", "extra"}, "takes no arguments"},
		{[]string{"run", "--local", "--dry-run", "--config", cfg, "--state", filepath.Join(t.TempDir(), "s.json")}, "cannot be combined"},
	}
	for _, tt := range tests {
		code, _, stderr := runCLI(t, nil, tt.args...)
		if code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tt.args, code, stderr, tt.want)
		}
	}
}

func TestMissingInputExitsThree(t *testing.T) {
	cfg := writeConfig(t, goodConfig)
	dir := t.TempDir()
	code, _, stderr := runCLI(t, nil, "sign", "--local", "--config", cfg, "--state", filepath.Join(dir, "state.json"), "--out", filepath.Join(dir, "dist"))
	if code != exitMissing || !strings.Contains(stderr, "missing the copies of hello (step copy)") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestEnvironmentVariablesSetFlags(t *testing.T) {
	cfg := writeConfig(t, goodConfig)
	dir := t.TempDir()
	env := map[string]string{"RELAY_CONFIG": cfg, "RELAY_STATE": filepath.Join(dir, "s.json"), "RELAY_LOCAL": "true", "RELAY_LOG_FORMAT": "text", "RELAY_OUT": filepath.Join(dir, "out")}
	code, stdout, stderr := runCLI(t, env, "plan")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, w := range []string{"relay plan for " + cfg, "--local", "1. checkout", "8. release", "sandbox", filepath.Join(dir, "out")} {
		if !strings.Contains(stdout, w) {
			t.Errorf("plan output lacks %q:\n%s", w, stdout)
		}
	}
}

func TestRealRunRefusesLocalState(t *testing.T) {
	cfg := writeConfig(t, strings.Replace(goodConfig, "version: 1", "version: 1\nsigning: {mode: keyless}", 1))
	state := filepath.Join(t.TempDir(), "state.json")
	os.WriteFile(state, []byte(`{"version":1,"mode":"local","inputs":{},"completed":[{"name":"checkout"}]}`), 0o644)
	code, _, stderr := runCLI(t, nil, "run", "--config", cfg, "--state", state)
	if code != exitUsage || !strings.Contains(stderr, "made by relay run --local") || !strings.Contains(stderr, "--restart") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestHelpAndVersion(t *testing.T) {
	code, stdout, _ := runCLI(t, nil, "--help")
	if code != 0 || !strings.Contains(stdout, "relay run --local") || !strings.Contains(stdout, "RELAY_") || !strings.Contains(stdout, "130 interrupted") {
		t.Fatalf("help:\n%s", stdout)
	}
	for _, cmd := range append([]string{"run", "plan"}, "checkout", "release") {
		code, stdout, _ := runCLI(t, nil, cmd, "--help")
		if code != 0 || !strings.Contains(stdout, "relay "+cmd) || !strings.Contains(stdout, "RELAY_STATE") {
			t.Errorf("%s --help:\n%s", cmd, stdout)
		}
	}
	code, stdout, _ = runCLI(t, nil, "version")
	if code != 0 || !strings.HasPrefix(stdout, "relay ") {
		t.Fatalf("version: %q", stdout)
	}
	code, _, stderr := runCLI(t, nil, "deploy")
	if code != exitUsage || !strings.Contains(stderr, `unknown command "deploy"`) {
		t.Fatalf("unknown command: exit %d %q", code, stderr)
	}
	code, stdout, stderr = runCLI(t, nil, "--version")
	if code != 0 || stdout != "relay "+version+"\n" || stderr != "" {
		t.Fatalf("--version: exit %d %q %q", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, nil)
	if code != 0 || !strings.Contains(stdout, "relay run --local") {
		t.Fatalf("no command: exit %d\n%s", code, stdout)
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	// The repository URL carries a token and GITHUB_TOKEN is set; the source check fails
	// (nothing listens on port 1), so the token would be in the error if not redacted.
	cfg := writeConfig(t, strings.Replace(goodConfig, "repo: .", "repo: 'https://x-access-token:url-s3cr3t@127.0.0.1:1/acme/app.git'", 1))
	dir := t.TempDir()
	env := map[string]string{"GITHUB_TOKEN": "ghp_envs3cr3t"}
	for _, format := range []string{"json", "text", "github"} {
		code, stdout, stderr := runCLI(t, env, "run", "--dry-run", "--log-format", format, "--config", cfg, "--state", filepath.Join(dir, "s.json"))
		if code != exitStepFailed {
			t.Fatalf("%s: exit %d\n%s\n%s", format, code, stdout, stderr)
		}
		for _, secret := range []string{"url-s3cr3t", "ghp_envs3cr3t"} {
			// Only an ::add-mask:: command may carry the value itself.
			if strings.Contains(stdout, secret) || strings.Count(stderr, secret) != strings.Count(stderr, "::add-mask::"+secret+"\n") {
				t.Errorf("%s: %s printed:\n%s\n%s", format, secret, stdout, stderr)
			}
		}
		if format == "github" && !strings.Contains(stderr, "::add-mask::ghp_envs3cr3t") {
			t.Errorf("github format did not mask the token:\n%s", stderr)
		}
	}
}

func TestCopyStandalone(t *testing.T) {
	ctx := context.Background()
	src, dst := testutil.Registry(t, true), testutil.Registry(t, false)
	c, _ := oci.New()
	img, _ := random.Image(128, 2)
	srcRepo, _ := name.NewRepository(src + "/acme/app")
	d, err := c.Write(ctx, srcRepo, img)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Tag(ctx, d, "v1"); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, nil, "copy", src+"/acme/app:v1", dst+"/mirror/app")
	if code != 0 || strings.TrimSpace(stdout) != dst+"/mirror/app@"+d.DigestStr() {
		t.Fatalf("exit %d stdout %q stderr %s", code, stdout, stderr)
	}
	dstRepo, _ := name.NewRepository(dst + "/mirror/app")
	if got, _ := c.TagDigest(ctx, dstRepo.Tag("v1")); got != "" {
		t.Fatalf("copy without --tag tagged the destination: %s", got)
	}
	code, _, stderr = runCLI(t, nil, "copy", "--tag", "v1", "--tag", "latest", d.String(), dst+"/mirror/app")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, tag := range []string{"v1", "latest"} {
		if got, _ := c.TagDigest(ctx, dstRepo.Tag(tag)); got != d.DigestStr() {
			t.Fatalf("tag %s -> %q", tag, got)
		}
	}
	for _, bad := range [][]string{
		{"copy", src + "/acme/app:v1", dst + "/mirror/app:v1"},
		{"copy", "NOT A REF", dst + "/x"},
		{"copy", "--tag", "-x", src + "/acme/app:v1", dst + "/x"},
		{"copy", src + "/acme/app:v1"},
		{"copy", "--platform", "arm64", src + "/acme/app:v1", dst + "/x"},
	} {
		if code, _, stderr := runCLI(t, nil, bad...); code != exitUsage {
			t.Errorf("%v: exit %d, want 2: %s", bad, code, stderr)
		}
	}
	other := testutil.Registry(t, true)
	code, stdout, stderr = runCLI(t, nil, "copy", "--tag", "v2", d.String(), dst+"/two/app", other+"/two/app")
	if code != 0 || stdout != dst+"/two/app@"+d.DigestStr()+"\n"+other+"/two/app@"+d.DigestStr()+"\n" {
		t.Fatalf("two destinations: exit %d stdout %q stderr %s", code, stdout, stderr)
	}
	for _, h := range []string{dst, other} {
		r, _ := name.NewRepository(h + "/two/app")
		if got, _ := c.TagDigest(ctx, r.Tag("v2")); got != d.DigestStr() {
			t.Fatalf("%s: tag v2 -> %q", h, got)
		}
	}
	code, _, stderr = runCLI(t, nil, "copy", src+"/acme/app:nope", dst+"/x")
	if code != exitStepFailed || !strings.Contains(stderr, "nope") {
		t.Errorf("missing source tag: exit %d: %s", code, stderr)
	}
}

// Only steps that sign or verify need the signing credentials: a build-only run must not
// fail for a missing key or identity token, a signing run must.
func TestSigningCredentialsOnlyForSigningSteps(t *testing.T) {
	cfg := writeConfig(t, strings.Replace(goodConfig, "version: 1", "version: 1\nsigning: {mode: key, key: missing.key}", 1))
	for _, tc := range []struct {
		only string
		code int
		want string
	}{
		{"build,copy", exitMissing, "missing the checkout"},
		{"sign", exitUsage, "missing.key"},
		{"verify", exitUsage, "missing.key"},
	} {
		code, _, stderr := runCLI(t, nil, "run", "--only", tc.only, "--config", cfg, "--state", filepath.Join(t.TempDir(), "state.json"))
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("--only %s: exit %d, want %d with %q: %s", tc.only, code, tc.code, tc.want, stderr)
		}
	}
}

func TestStateInUseExitsTwo(t *testing.T) {
	cfg := writeConfig(t, goodConfig)
	dir := t.TempDir()
	state, out := filepath.Join(dir, "state.json"), filepath.Join(dir, "dist")
	held, err := steps.LockState(context.Background(), state, steps.LockOptions{Command: "relay run"})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock()
	for _, args := range [][]string{
		{"run", "--local"},
		{"sign", "--local"},
		{"run", "--local", "--wait-lock", "1ms"},
	} {
		code, stdout, stderr := runCLI(t, nil, append(args, "--config", cfg, "--state", state, "--out", out)...)
		if code != exitUsage || !strings.Contains(stderr, "is in use by pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(stderr, "(relay run)") || stdout != "" {
			t.Errorf("%v while another run holds the state: exit %d\n%s", args, code, stderr)
		}
	}
	for _, p := range []string{state, out, filepath.Join(dir, "local")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s was written while another run held the state", p)
		}
	}
	code, _, stderr := runCLI(t, nil, "run", "--local", "--wait-lock", "-1s", "--config", cfg, "--state", state)
	if code != exitUsage || !strings.Contains(stderr, "--wait-lock must not be negative") {
		t.Errorf("negative --wait-lock: exit %d: %s", code, stderr)
	}
}

// TestPermanentInputErrorsExitTwo: errors only a later step finds, but that a retry cannot
// fix, exit 2 (fix the input), not 1 (retry).
func TestPermanentInputErrorsExitTwo(t *testing.T) {
	cfg := writeConfig(t, strings.Replace(goodConfig, "local: {go: {main: .}}", "local: {files: [{src: nope, dst: /srv/nope}]}", 1))
	dir := t.TempDir()
	code, _, stderr := runCLI(t, nil, "run", "--local", "--only", "checkout,build", "--config", cfg, "--state", filepath.Join(dir, "state.json"), "--out", filepath.Join(dir, "dist"))
	if code != exitUsage || !strings.Contains(stderr, "files: nope") {
		t.Fatalf("missing files[].src: exit %d\n%s", code, stderr)
	}
}

// TestPlanReportsAbsentFiles: relay plan names the key and trust files relay.yaml points at
// that do not exist, before any step runs.
func TestPlanReportsAbsentFiles(t *testing.T) {
	for _, tc := range []struct{ signing, want string }{
		{"signing: {mode: key, key: keys/cosign.key}", "! missing: signing.key "},
		{"signing: {mode: keyless, trusted_root: tr.json, signing_config: sc.json}", "! missing: signing.trusted_root "},
		{"signing: {mode: keyless, token_file: token}", "! missing: signing.token_file "},
	} {
		cfg := writeConfig(t, goodConfig+tc.signing+"\n")
		code, stdout, stderr := runCLI(t, nil, "plan", "--config", cfg, "--state", filepath.Join(t.TempDir(), "s.json"))
		if code != 0 || !strings.Contains(stdout, tc.want+filepath.Dir(cfg)) || !strings.Contains(stdout, "(no such file)") {
			t.Errorf("%s: exit %d\n%s%s", tc.signing, code, stdout, stderr)
		}
	}
	// Present files are not reported.
	cfg := writeConfig(t, goodConfig+"signing: {mode: key, key: cosign.key}\n")
	os.WriteFile(filepath.Join(filepath.Dir(cfg), "cosign.key"), []byte("x"), 0o600)
	if _, stdout, _ := runCLI(t, nil, "plan", "--config", cfg, "--state", filepath.Join(t.TempDir(), "s.json")); strings.Contains(stdout, "signing.key") {
		t.Errorf("a present key was reported:\n%s", stdout)
	}
}

// TestCopyDryRunRunsTheCopy: relay copy --dry-run runs the copy and the tags into an
// overlay of the destination: it names the digest the copy would have there and its
// writes, and the registry gets none; over a finished copy it predicts none.
func TestCopyDryRunRunsTheCopy(t *testing.T) {
	ctx := context.Background()
	src := testutil.Registry(t, true)
	var writes int
	dst := testutil.Registry(t, false, func(h http.Handler) http.Handler { return countWrites(h, &writes) })
	c, _ := oci.New()
	img, _ := random.Image(128, 3)
	srcRepo, _ := name.NewRepository(src + "/acme/app")
	d, err := c.Write(ctx, srcRepo, img)
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, nil, "copy", "--dry-run", "--tag", "v1", d.String(), dst+"/mirror/app")
	if code != 0 || writes != 0 {
		t.Fatalf("exit %d, %d writes\n%s\n%s", code, writes, stdout, stderr)
	}
	for _, want := range []string{"would copy " + d.String() + " (1 platform(s), with referrers) to " + dst + "/mirror/app@" + d.DigestStr(),
		dst + "/mirror/app: 4 blobs", "1 manifests", "1 tag writes to [v1]", "dry run: nothing was written"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if code, _, stderr := runCLI(t, nil, "copy", "--tag", "v1", d.String(), dst+"/mirror/app"); code != 0 {
		t.Fatalf("real copy: exit %d: %s", code, stderr)
	}
	before := writes
	code, stdout, _ = runCLI(t, nil, "copy", "--dry-run", "--tag", "v1", d.String(), dst+"/mirror/app")
	if code != 0 || writes != before || !strings.Contains(stdout, "none: every destination holds the image and its tags already") {
		t.Fatalf("over the copy: exit %d, %d writes\n%s", code, writes-before, stdout)
	}
}

// Inside GitHub Actions the log format defaults to github (groups and annotations); an
// explicit --log-format wins, and outside Actions the default stays json off a terminal.
func TestLogFormatDefaultsToGitHubInActions(t *testing.T) {
	for _, tc := range []struct {
		actions, format string
		want            string
	}{
		{actions: "true", want: "::warning::"},
		{actions: "true", format: "json", want: `"level":"WARN"`},
		{actions: "", want: `"level":"WARN"`},
		{actions: "false", want: `"level":"WARN"`},
	} {
		var buf bytes.Buffer
		env := map[string]string{"GITHUB_ACTIONS": tc.actions}
		l, _, err := newLogger(Options{LogFormat: tc.format, LogLevel: "info", Stderr: &buf, Getenv: func(k string) string { return env[k] }, Redactor: logging.NewRedactor()})
		if err != nil {
			t.Fatal(err)
		}
		l.Warn("base tag resolved")
		if !strings.Contains(buf.String(), tc.want) {
			t.Errorf("GITHUB_ACTIONS=%q --log-format=%q: %q, want %q in it", tc.actions, tc.format, buf.String(), tc.want)
		}
	}
}

// TestRegistryRefusalExitsTwo: a registry's 403 on push is exit 2, naming the registry,
// the repository, the access and the fix, never a printed Go map.
func TestRegistryRefusalExitsTwo(t *testing.T) {
	src := testutil.Registry(t, true)
	img, _ := random.Image(64, 1)
	ref, _ := name.ParseReference(src + "/acme/app:v1")
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	deny := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
		case r.Method == http.MethodHead || r.Method == http.MethodGet:
			w.WriteHeader(http.StatusNotFound)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"errors":[{"code":"DENIED","message":"requested access to the resource is denied","detail":[{"Type":"repository","Name":"acme/app","Action":"push"}]}]}`))
		}
	}))
	defer deny.Close()
	dst := strings.TrimPrefix(deny.URL, "http://") + "/acme/app"
	code, _, stderr := runCLI(t, nil, "copy", src+"/acme/app:v1", dst, "--log-format", "json")
	if code != exitUsage || !strings.Contains(stderr, "denied push access: relay may not push to "+dst) || !strings.Contains(stderr, "requested access to the resource is denied") ||
		!strings.Contains(stderr, "fix: ") || strings.Contains(stderr, "map[") {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
}
