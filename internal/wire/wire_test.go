package wire

import (
	"context"
	"encoding/base64"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"

	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/logging"
	"github.com/relaydev/relay/pkg/steps"
)

// TestKeySignaturesKeepPrivateRepositoriesOutOfThePublicLog: keyless signing's rule holds
// for key signatures bound for the public Rekor too, when the job's identity token says
// the repository is private; allow_public_log lifts it, and without a token nothing can
// be told.
func TestKeySignaturesKeepPrivateRepositoriesOutOfThePublicLog(t *testing.T) {
	tok := func(visibility string) string {
		return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"repo:acme/app","repository":"acme/app","repository_visibility":"`+visibility+`"}`)) + ".c2ln"
	}
	cfg, err := config.Parse("relay.yaml", t.TempDir(), []byte(`version: 1
source: {repo: ., ref: v0.1.0}
builder: {kind: local, registry: registry.example.com/build}
images:
  - name: hello
    local: {go: {main: .}}
    targets: [ghcr.io/acme/hello]
`+"signing: {mode: key, key: k.pem}\n"))
	if err != nil {
		t.Fatal(err)
	}
	opts := func(env map[string]string) Options {
		return Options{Config: "relay.yaml", Getenv: func(k string) string { return env[k] }, Redactor: logging.NewRedactor(), Logger: logging.Discard()}
	}
	ctx := context.Background()
	err = keyPrivateRepository(ctx, cfg, opts(map[string]string{"SIGSTORE_ID_TOKEN": tok("private")}), logging.Discard())
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "acme/app is private") || !strings.Contains(err.Error(), "signing.allow_public_log") {
		t.Fatalf("private repository: %v", err)
	}
	for _, env := range []map[string]string{{"SIGSTORE_ID_TOKEN": tok("public")}, {}} {
		if err := keyPrivateRepository(ctx, cfg, opts(env), logging.Discard()); err != nil {
			t.Errorf("%v: %v", env, err)
		}
	}
}

func TestActionsFallback(t *testing.T) {
	base := map[string]string{"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/app", "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567"}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		ref     string
		repoSet bool
	}{
		{"tag push", map[string]string{"GITHUB_REF": "refs/tags/v0.2.0"}, "v0.2.0", true},
		{"branch push releases the commit", map[string]string{"GITHUB_REF": "refs/heads/main"}, base["GITHUB_SHA"], true},
		{"pull request releases the commit", map[string]string{"GITHUB_REF": "refs/pull/7/merge"}, base["GITHUB_SHA"], true},
		{"outside Actions", map[string]string{"GITHUB_ACTIONS": "", "GITHUB_REF": "refs/tags/v0.2.0"}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			fb := ActionsFallback(func(k string) string { return env[k] })
			if fb.Ref != tc.ref {
				t.Fatalf("ref %q, want %q", fb.Ref, tc.ref)
			}
			if tc.repoSet != (fb.Repo == "https://github.com/acme/app.git" && fb.URL == "https://github.com/acme/app" && fb.TokenEnv == "GITHUB_TOKEN") {
				t.Fatalf("fallback %+v", fb)
			}
		})
	}
}

// TestSourceURL: a local repository names its origin's page; a release from a path with
// none is refused before any step, --local names none rather than a path.
func TestSourceURL(t *testing.T) {
	parse := func(dir string) *config.Config {
		c, err := config.Parse(filepath.Join(dir, "relay.yaml"), dir, []byte("version: 1\nsource: {repo: ., ref: v0.1.0}\nbuilder: {kind: local, registry: registry.example.com/build}\nimages:\n  - name: hello\n    local: {go: {main: .}}\n    targets: [ghcr.io/acme/hello]\n"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	plain := t.TempDir()
	if err := SourceURL(parse(plain), "relay.yaml", steps.ModeLocal); err != nil {
		t.Fatalf("--local of a plain folder: %v", err)
	}
	err := SourceURL(parse(plain), "relay.yaml", steps.ModeRelease)
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "source.url") || !strings.Contains(err.Error(), "origin remote") {
		t.Fatalf("release from a plain folder: %v", err)
	}
	withOrigin := t.TempDir()
	repo, err := git.PlainInit(withOrigin, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{"git@github.com:acme/app.git"}}); err != nil {
		t.Fatal(err)
	}
	c := parse(withOrigin)
	if err := SourceURL(c, "relay.yaml", steps.ModeRelease); err != nil || c.Source.URL != "https://github.com/acme/app" {
		t.Fatalf("origin remote: %q %v", c.Source.URL, err)
	}
}
