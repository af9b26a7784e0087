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
	code, stdout, stderr := runCLI(t, nil, "run", "--dry-run", "--config", cfg, "--state", state, "--out", out)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, w := range []string{"ok   source", "found refs/tags/v1.0.0", "ok   build repository", "ok   target " + host + "/acme/hello", "does not exist yet", "nothing was written"} {
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

	bad := strings.Replace(string(mustRead(t, cfg)), "ref: v1.0.0", "ref: v9", 1)
	os.WriteFile(cfg, []byte(bad), 0o644)
	code, stdout, _ = runCLI(t, nil, "run", "--dry-run", "--config", cfg, "--state", state, "--out", out)
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
