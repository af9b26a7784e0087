package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// TestDryRunChecksWithoutWriting runs --dry-run against a loopback registry and a local git
// repository: every check passes, and no state, release or registry write happens.
func TestDryRunChecksWithoutWriting(t *testing.T) {
	var writes int
	host := testutil.Registry(t, false, func(h http.Handler) http.Handler { return countWrites(h, &writes) })

	dir := t.TempDir()
	repo, _ := git.PlainInit(filepath.Join(dir, "src"), false)
	wt, _ := repo.Worktree()
	os.WriteFile(filepath.Join(dir, "src", "main.go"), []byte("package main\nfunc main() {}\n"), 0o644)
	wt.Add("main.go")
	sig := &object.Signature{Name: "t", Email: "t@e", When: time.Unix(0, 0)}
	h, _ := wt.Commit("c", &git.CommitOptions{Author: sig, Committer: sig})
	repo.CreateTag("v1.0.0", h, nil)

	cfg := writeConfig(t, `version: 1
source: {repo: `+filepath.Join(dir, "src")+`, ref: v1.0.0}
builder: {kind: local, registry: `+host+`/build}
images:
  - name: hello
    local: {go: {main: .}}
    targets: [`+host+`/acme/hello]
    tags: [v1.0.0]
signing: {mode: keyless}
`)
	state := filepath.Join(dir, ".relay", "state.json")
	out := filepath.Join(dir, "dist")
	env := map[string]string{"SIGSTORE_ID_TOKEN": "eyJ.test.token"}
	code, stdout, stderr := runCLI(t, env, "run", "--dry-run", "--config", cfg, "--state", state, "--out", out)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, w := range []string{"ok   source", "found refs/tags/v1.0.0", "ok   build repository", "ok   target " + host + "/acme/hello", "does not exist yet",
		"ok   signing identity (keyless): identity token from SIGSTORE_ID_TOKEN", "ok   release directory: " + out + " writable", "nothing was written"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("output lacks %q:\n%s", w, stdout)
		}
	}
	for _, p := range []string{state, out} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("dry run wrote %s", p)
		}
	}
	if writes != 0 {
		t.Errorf("dry run made %d write requests", writes)
	}
	// A release directory that cannot be: found before a run, as the release step would
	// find it before its first tag.
	notDir := filepath.Join(dir, "a-file")
	os.WriteFile(notDir, nil, 0o644)
	if code, stdout, _ := runCLI(t, env, "run", "--dry-run", "--config", cfg, "--state", state, "--out", filepath.Join(notDir, "dist")); code != exitStepFailed || !strings.Contains(stdout, "FAIL release directory: "+notDir+" is not a directory") {
		t.Errorf("--out under a file: exit %d\n%s", code, stdout)
	}

	// No identity token, and a GitHub release without credentials: both named before a run.
	gh := string(mustRead(t, cfg)) + "release: {target: github, github: {repository: acme/hello}}\n"
	os.WriteFile(cfg, []byte(gh), 0o644)
	code, stdout, _ = runCLI(t, nil, "run", "--dry-run", "--config", cfg, "--state", state, "--out", out)
	if code != exitStepFailed || !strings.Contains(stdout, "FAIL signing identity (keyless): keyless signing needs an OIDC identity token") ||
		!strings.Contains(stdout, "FAIL GitHub release credentials for acme/hello: no GITHUB_TOKEN") {
		t.Fatalf("missing credentials: exit %d\n%s", code, stdout)
	}
	if code, stdout, _ = runCLI(t, map[string]string{"SIGSTORE_ID_TOKEN": "t", "GITHUB_TOKEN": "ghs_x"}, "run", "--dry-run", "--config", cfg, "--state", state, "--out", out); code != 0 || strings.Contains(stdout, "ghs_x") {
		t.Fatalf("with credentials: exit %d\n%s", code, stdout)
	}

	bad := strings.Replace(string(mustRead(t, cfg)), "ref: v1.0.0", "ref: v9", 1)
	os.WriteFile(cfg, []byte(bad), 0o644)
	code, stdout, _ = runCLI(t, env, "run", "--dry-run", "--config", cfg, "--state", state, "--out", out)
	if code != exitStepFailed || !strings.Contains(stdout, `FAIL source`) || !strings.Contains(stdout, `ref "v9" not found`) {
		t.Fatalf("missing ref: exit %d\n%s", code, stdout)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func countWrites(h http.Handler, n *int) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			mu.Lock()
			*n++
			mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}
