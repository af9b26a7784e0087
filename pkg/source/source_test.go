package source

import (
	"context"
	"errors"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/relaydev/relay/internal/testutil"
)

var when = time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)

// fixture makes a repository with two commits; v1.0.0 tags the first.
func fixture(t *testing.T) (dir, first, second string) {
	t.Helper()
	dir = t.TempDir()
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	wt, _ := repo.Worktree()
	commit := func(content string) string {
		os.WriteFile(filepath.Join(dir, "f.txt"), []byte(content), 0o644)
		wt.Add("f.txt")
		sig := &object.Signature{Name: "t", Email: "t@example.com", When: when}
		h, err := wt.Commit(content, &git.CommitOptions{Author: sig, Committer: sig})
		if err != nil {
			t.Fatal(err)
		}
		return h.String()
	}
	first = commit("one")
	if _, err := repo.CreateTag("v1.0.0", plumbingHash(first), nil); err != nil {
		t.Fatal(err)
	}
	second = commit("two")
	return dir, first, second
}

func TestCheckoutLocal(t *testing.T) {
	ctx := context.Background()
	repo, first, second := fixture(t)
	tests := []struct {
		ref, commit, tag, content string
	}{
		{"v1.0.0", first, "v1.0.0", "one"},
		{"master", second, "", "two"},
		{second, second, "", "two"},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "src")
			r, err := Checkout(ctx, nil, Options{Repo: repo, Ref: tt.ref, Dir: dst})
			if err != nil {
				t.Fatal(err)
			}
			if r.Commit != tt.commit || r.Tag != tt.tag || !r.CommitTime.Equal(when) || r.Tree == "" {
				t.Fatalf("result %+v", r)
			}
			if b, _ := os.ReadFile(filepath.Join(dst, "f.txt")); string(b) != tt.content {
				t.Fatalf("content %q", b)
			}
			// A second checkout of the same commit reuses the directory.
			os.WriteFile(filepath.Join(dst, ".marker"), nil, 0o644)
			if _, err := Checkout(ctx, nil, Options{Repo: repo, Ref: tt.ref, Dir: dst}); err != nil {
				t.Fatal(err)
			}
		})
	}
	_, err := Checkout(ctx, nil, Options{Repo: repo, Ref: "v9.9.9", Dir: filepath.Join(t.TempDir(), "x")})
	var nf *NotFoundError
	if !errors.As(err, &nf) || !strings.Contains(err.Error(), "v9.9.9") {
		t.Fatalf("missing ref: %v", err)
	}
}

func TestCheckoutSmartHTTPWithToken(t *testing.T) {
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed (make test installs it)")
	}
	repo, first, _ := fixture(t)
	root := t.TempDir()
	if out, err := exec.Command("git", "clone", "--bare", "-q", repo, filepath.Join(root, "app.git")).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	backend := &cgi.Handler{Path: gitPath, Args: []string{"http-backend"}, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pw, ok := r.BasicAuth(); !ok || pw != "tok-123" {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "auth", http.StatusUnauthorized)
			return
		}
		backend.ServeHTTP(w, r)
	}))
	defer srv.Close()
	ctx := context.Background()
	r, err := Checkout(ctx, nil, Options{Repo: srv.URL + "/app.git", Ref: "v1.0.0", Token: "tok-123", Dir: filepath.Join(t.TempDir(), "s")})
	if err != nil {
		t.Fatal(err)
	}
	if r.Commit != first || r.Tag != "v1.0.0" {
		t.Fatalf("result %+v", r)
	}
	_, err = Checkout(ctx, nil, Options{Repo: srv.URL + "/app.git", Ref: "v1.0.0", Token: "wrong", Dir: filepath.Join(t.TempDir(), "s")})
	if err == nil || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("bad token: %v", err)
	}

	// The credential in the URL (here URL-encoded) authenticates the clone and stays out
	// of the checkout: nothing under .git holds it, and the recorded repository has none.
	withPw := strings.Replace(srv.URL, "http://", "http://ci-bot:tok%2D123@", 1) + "/app.git"
	dir := filepath.Join(t.TempDir(), "s")
	r, err = Checkout(ctx, nil, Options{Repo: withPw, Ref: "v1.0.0", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.Repo, "tok") || r.Repo != srv.URL+"/app.git" {
		t.Fatalf("recorded repository %q", r.Repo)
	}
	testutil.AssertNoSecret(t, filepath.Join(dir, ".git"), "tok-123", "tok%2D123")
	// A checkout an older relay left with the credential in its remote URL is not reused
	// (a remote source is always cloned afresh), so the re-run's clone holds none either.
	repoCfg := filepath.Join(dir, ".git", "config")
	b, _ := os.ReadFile(repoCfg)
	os.WriteFile(repoCfg, []byte(strings.Replace(string(b), srv.URL, withPw[:len(withPw)-len("/app.git")], 1)), 0o644)
	if _, err := Checkout(ctx, nil, Options{Repo: withPw, Ref: "v1.0.0", Dir: dir}); err != nil {
		t.Fatal(err)
	}
	testutil.AssertNoSecret(t, filepath.Join(dir, ".git"), "tok-123", "tok%2D123")
}

func TestSnapshotIsReproducible(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.MkdirAll(filepath.Join(src, ".relay"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "a.go"), []byte("package a"), 0o644)
	os.WriteFile(filepath.Join(src, ".relay", "state.json"), []byte("{}"), 0o644)
	opts := SnapshotOptions{Src: src, Dst: filepath.Join(t.TempDir(), "snap"), Tag: "v0.1.0", When: when, Exclude: []string{".relay"}}
	a, err := Snapshot(ctx, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	os.Chtimes(filepath.Join(src, "sub", "a.go"), time.Now(), time.Now())
	b, err := Snapshot(ctx, nil, opts)
	if err != nil || a != b {
		t.Fatalf("snapshots differ: %s %s %v", a, b, err)
	}
	// The same files in a folder of another name, elsewhere, give the same commit.
	other := filepath.Join(t.TempDir(), "renamed-copy")
	os.MkdirAll(filepath.Join(other, "sub"), 0o755)
	os.WriteFile(filepath.Join(other, "sub", "a.go"), []byte("package a"), 0o644)
	c, err := Snapshot(ctx, nil, SnapshotOptions{Src: other, Dst: filepath.Join(t.TempDir(), "snap2"), Tag: "v0.1.0", When: when})
	if err != nil || c != a {
		t.Fatalf("snapshot of a renamed copy: %s, want %s (%v)", c, a, err)
	}
	r, err := Checkout(ctx, nil, Options{Repo: opts.Dst, Ref: "v0.1.0", Dir: filepath.Join(t.TempDir(), "c")})
	if err != nil || r.Commit != a {
		t.Fatalf("checkout of snapshot: %+v %v", r, err)
	}
	if _, err := os.Stat(filepath.Join(r.Dir, ".relay")); !os.IsNotExist(err) {
		t.Fatal("excluded directory was snapshotted")
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://x-access-token:abc@github.com/a/b.git": "https://github.com/a/b.git",
		"https://github.com/a/b.git":                    "https://github.com/a/b.git",
		"/srv/repo":                                     "/srv/repo",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q", in, got)
		}
	}
}
