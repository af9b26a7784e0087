//go:build integration

package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/relaydev/relay/internal/report"
)

// actionsEnv is what GitHub Actions sets for a job of acme/hello pushed tag v0.2.0.
func actionsEnv(dir string) []string {
	return []string{
		"GITHUB_ACTIONS=true", "CI=true",
		"GITHUB_REF=refs/tags/v0.2.0", "GITHUB_REF_NAME=v0.2.0", "GITHUB_REF_TYPE=tag",
		"GITHUB_SHA=" + strings.Repeat("0", 40), // a tag push releases the tag, not this
		"GITHUB_SERVER_URL=https://github.com", "GITHUB_REPOSITORY=acme/hello",
		"GITHUB_RUN_ID=42", "GITHUB_RUN_ATTEMPT=1", "GITHUB_WORKFLOW_REF=acme/hello/.github/workflows/release.yml@refs/tags/v0.2.0",
		"GITHUB_OUTPUT=" + filepath.Join(dir, "output"), "GITHUB_STEP_SUMMARY=" + filepath.Join(dir, "summary.md"),
	}
}

// readOutputs parses a GITHUB_OUTPUT file (name=value lines).
func readOutputs(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			t.Fatalf("GITHUB_OUTPUT line %q is not name=value", sc.Text())
		}
		out[k] = v
	}
	return out
}

var (
	sandboxHost = regexp.MustCompile(`127\.0\.0\.1:\d+`)
	anyDigest   = regexp.MustCompile(`sha256:[0-9a-f]{64}`)
	anyCommit   = regexp.MustCompile(`\b[0-9a-f]{40}\b|\b[0-9a-f]{12}\b`)
	anyMillis   = regexp.MustCompile(`\b\d+ ms\b`)
)

// normalize keeps what a summary says and drops what differs between runs by nature.
func normalize(s string, dirs ...string) string {
	for _, d := range dirs {
		s = strings.ReplaceAll(s, d, "DIR")
	}
	s = sandboxHost.ReplaceAllString(s, "SANDBOX")
	s = anyDigest.ReplaceAllString(s, "sha256:DIGEST")
	s = anyCommit.ReplaceAllString(s, "COMMIT")
	return anyMillis.ReplaceAllString(s, "N ms")
}

// TestE2EGitHubActionsEnvironment: relay inside a simulated Actions job, on a git copy of
// the example tagged v0.2.0 whose relay.yaml names no ref: the release is v0.2.0, the step
// outputs and the summary card are what a workflow reads (golden), a failed run's summary
// names the step, its error and how to resume (golden), and a release made one step per
// invocation reads as one summary.
func TestE2EGitHubActionsEnvironment(t *testing.T) {
	dir := exampleWith(t, "  ref: v0.1.0\n", "")
	commitAndTag(t, dir, "v0.2.0")
	gh := t.TempDir()
	env := actionsEnv(gh)

	r := runRelayEnv(t, dir, env, "run", "--local", "--log-format", "json")
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.stderr)
	}
	lock := readLock(t, filepath.Join(dir, "dist"))
	if lock.Release != "v0.2.0" || !strings.Contains(r.stdout, "relay: released v0.2.0") {
		t.Fatalf("released %q:\n%s", lock.Release, r.stdout)
	}
	out := readOutputs(t, filepath.Join(gh, "output"))
	im := lock.Images[0]
	if out["image"] != im.Reference || out["digest"] != im.Digest || out["hello-digest"] != im.Digest || out["pin-file"] != filepath.Join(dir, ".relay", "images.lock.json") ||
		!strings.HasPrefix(out["release-url"], "file://") {
		t.Fatalf("outputs %v, lock %+v", out, im)
	}
	var images []struct {
		Name, Reference, Digest string
		Platforms, Tags         []string
	}
	if err := json.Unmarshal([]byte(out["images"]), &images); err != nil || len(images) != 1 || images[0].Digest != im.Digest ||
		strings.Join(images[0].Platforms, ",") != "linux/amd64,linux/arm64" || len(images[0].Tags) != 2 || !strings.HasSuffix(images[0].Tags[0], ":v0.2.0") {
		t.Fatalf("images output %s: %v", out["images"], err)
	}
	pin, _ := os.ReadFile(out["pin-file"])
	published, _ := os.ReadFile(filepath.Join(dir, "dist", "images.lock.json"))
	if len(pin) == 0 || string(pin) != string(published) {
		t.Fatal("pin-file is not the published images.lock.json")
	}
	summary, _ := os.ReadFile(filepath.Join(gh, "summary.md"))
	golden(t, "actions-summary.golden.md", []byte(normalize(string(summary), dir)))

	// The provenance names the repository's page, from Actions, never ".".
	var prov string
	for _, rec := range r.logs {
		if rec["msg"] == "source settings relay.yaml leaves out taken from GitHub Actions" {
			prov, _ = rec["url"].(string)
		}
	}
	if prov != "https://github.com/acme/hello" {
		t.Fatalf("source url from Actions: %q", prov)
	}

	// A failed run: the release directory is a file, so the release step fails before any tag.
	failed := t.TempDir()
	fenv := actionsEnv(failed)
	blocker := filepath.Join(failed, "not-a-dir")
	os.WriteFile(blocker, []byte("x"), 0o644)
	f := runRelayEnv(t, dir, fenv, "run", "--local", "--log-format", "json", "--restart", "--out", blocker)
	if f.code != exitStepFailed {
		t.Fatalf("failed run: exit %d\n%s", f.code, f.stderr)
	}
	fsum, _ := os.ReadFile(filepath.Join(failed, "summary.md"))
	golden(t, "actions-summary-failed.golden.md", []byte(normalize(string(fsum), dir, failed)))
	if fout := readOutputs(t, filepath.Join(failed, "output")); fout["image"] == "" || fout["release-url"] != "" {
		t.Fatalf("failed run's outputs: %v", fout)
	}

	// Step by step, as a workflow of one step per command would: one coherent summary.
	steps := t.TempDir()
	senv := actionsEnv(steps)
	state := filepath.Join(steps, "state", "state.json")
	var last result
	for _, s := range []string{"checkout", "build", "copy", "sign", "sbom", "provenance", "verify", "release"} {
		if last = runRelayEnv(t, dir, senv, s, "--local", "--log-format", "json", "--state", state, "--out", filepath.Join(steps, "dist"), "--output", "json"); last.code != 0 {
			t.Fatalf("relay %s: exit %d\n%s", s, last.code, last.stderr)
		}
	}
	// --output json: the result on stdout.
	var res report.Result
	if err := json.Unmarshal([]byte(last.stdout), &res); err != nil || !res.OK || res.Command != "relay release" || strings.Join(res.Ran, ",") != "release" ||
		len(res.Completed) != 8 || res.Source.Version != "v0.2.0" || res.Images[0].Digest != im.Digest || res.Release == nil || len(res.Verify) != 2 {
		t.Fatalf("relay release --output json: %v\n%s", err, last.stdout)
	}
	ssum, _ := os.ReadFile(filepath.Join(steps, "summary.md"))
	s := string(ssum)
	if strings.Count(s, "### relay") != 1 || strings.Count(s, "| image |") != 1 || strings.Count(s, "- **relay ") != 7 || strings.Contains(s, "|---|\n\n") {
		t.Fatalf("step-by-step summary is not one card after seven rows:\n%s", s)
	}
	for _, want := range []string{"**relay checkout** done: v0.2.0", "**relay sign** done: 3 signatures", "relay verify SANDBOX/ghcr.io/relaydev/hello@sha256:DIGEST --key relay-signing.pub"} {
		if !strings.Contains(normalize(s), want) {
			t.Errorf("step-by-step summary lacks %q:\n%s", want, s)
		}
	}
}
