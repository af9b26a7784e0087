package main

import (
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/attest"
)

// TestSourcePasswordStaysOutOfEverything plants a source.repo password (as a user:password
// URL, percent-encoded) and checks every place relay writes or prints: each log format,
// the plan, the final error, the state file and every file under the state directory (the
// checkout's .git/config included) — the files CI caches to resume.
func TestSourcePasswordStaysOutOfEverything(t *testing.T) {
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed (make test installs it)")
	}
	const pw = "s3cr/et+pw" // in the URL: s3cr%2Fet%2Bpw
	forms := []string{pw, "s3cr%2Fet%2Bpw", "s3cr%2fet%2bpw"}
	src := t.TempDir()
	repo, _ := git.PlainInit(src, false)
	wt, _ := repo.Worktree()
	os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644)
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module example.com/app\n\ngo 1.22\n"), 0o644)
	wt.Add(".")
	h, _ := wt.Commit("one", &git.CommitOptions{Author: &object.Signature{Name: "t", Email: "t@example.com"}})
	repo.CreateTag("v0.1.0", h, nil)
	root := t.TempDir()
	if out, err := exec.Command("git", "clone", "--bare", "-q", src, filepath.Join(root, "app.git")).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	backend := &cgi.Handler{Path: gitPath, Args: []string{"http-backend"}, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "ci-bot" || p != pw {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "auth", http.StatusUnauthorized)
			return
		}
		backend.ServeHTTP(w, r)
	}))
	defer srv.Close()
	repoURL := strings.Replace(srv.URL, "http://", "http://ci-bot:s3cr%2Fet%2Bpw@", 1) + "/app.git"

	for _, format := range []string{"json", "text", "github"} {
		t.Run(format, func(t *testing.T) {
			cfg := writeConfig(t, strings.Replace(goodConfig, "repo: .", "repo: "+repoURL, 1))
			dir := t.TempDir()
			state := filepath.Join(dir, ".relay", "state.json")
			args := []string{"--config", cfg, "--state", state, "--out", filepath.Join(dir, "dist"), "--log-format", format, "--local"}
			var printed strings.Builder
			code, stdout, stderr := runCLI(t, nil, append([]string{"run", "--only", "checkout"}, args...)...)
			printed.WriteString(stdout + stderr)
			if code != 0 {
				t.Fatalf("checkout with the URL's credential: exit %d\n%s", code, stderr)
			}
			_, stdout, stderr = runCLI(t, nil, append([]string{"plan"}, args...)...)
			printed.WriteString(stdout + stderr)
			// A failing run prints its error too: a ref the repository does not have.
			bad := writeConfig(t, strings.Replace(strings.Replace(goodConfig, "repo: .", "repo: "+repoURL, 1), "ref: v0.1.0", "ref: v9.9.9", 1))
			code, stdout, stderr = runCLI(t, nil, "run", "--only", "checkout", "--config", bad, "--state", filepath.Join(dir, "bad", "state.json"), "--log-format", format, "--local")
			printed.WriteString(stdout + stderr)
			if code != exitUsage || !strings.Contains(stderr, "v9.9.9") { // permanent: a retry fails the same way
				t.Fatalf("missing ref: exit %d\n%s", code, stderr)
			}
			// The user name only names an account: masking it would garble unrelated text.
			if strings.Contains(printed.String(), "::add-mask::ci-bot") {
				t.Errorf("the user name was registered as a secret:\n%s", printed.String())
			}
			for _, f := range forms {
				if strings.Contains(withoutMasks(printed.String()), f) {
					t.Errorf("%q was printed:\n%s", f, printed.String())
				}
			}
			if format == "github" && !strings.Contains(printed.String(), "::add-mask::"+pw) {
				t.Errorf("the password was not masked in the runner's log:\n%s", printed.String())
			}
			testutil.AssertNoSecret(t, dir, forms...)
			if b, _ := os.ReadFile(state); !strings.Contains(string(b), srv.URL+"/app.git") {
				t.Errorf("the state does not record the repository:\n%s", b)
			}
			if format != "json" {
				return
			}
			// The whole release: provenance, SBOMs, release.json and the pin file in dist/
			// record the repository, never its password.
			code, stdout, stderr = runCLI(t, nil, append([]string{"run"}, args...)...)
			if code != 0 {
				t.Fatalf("the release: exit %d\n%s", code, stderr)
			}
			if strings.Contains(withoutMasks(stdout+stderr), pw) || strings.Contains(stdout+stderr, "s3cr%2Fet%2Bpw") {
				t.Errorf("the release printed the password:\n%s", stderr)
			}
			if ents, _ := os.ReadDir(filepath.Join(dir, "dist")); len(ents) < 5 {
				t.Fatalf("dist/ holds %d files: the release did not run", len(ents))
			}
			testutil.AssertNoSecret(t, dir, forms...)
		})
	}
}

// TestReflectedAppJWTIsMasked: a GitHub that echoes the request's Authorization header
// (the App JWT relay made, never registered as a secret) in its error body: the error relay
// prints shows no part of it, in every log format.
func TestReflectedAppJWTIsMasked(t *testing.T) {
	app := testutil.StartGitHubRunners(t, "acme/shop")
	var sent, agents []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent = append(sent, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		agents = append(agents, r.UserAgent())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, `{"message":"not allowed for %s (you sent Authorization: %s)"}`, r.URL.Path, r.Header.Get("Authorization"))
	}))
	defer srv.Close()
	// A key that logs nowhere: the release step's wiring then needs no network but GitHub's.
	key := filepath.Join(t.TempDir(), "k.pem")
	if _, err := attest.LoadOrCreateKey(key); err != nil {
		t.Fatal(err)
	}
	body := strings.Replace(goodConfig, "version: 1", "version: 1\nrelease: {target: github, github: {repository: acme/shop, base_url: "+srv.URL+"/api/v3/}}\nsigning: {mode: key, key: "+key+", tlog: false}", 1)
	for _, format := range []string{"json", "text", "github"} {
		cfg := writeConfig(t, body)
		env := map[string]string{"RELAY_GITHUB_APP_ID": "12345", "RELAY_GITHUB_APP_KEY": string(app.AppKey), "RELAY_CORRELATION_ID": "e2e-ua"}
		// --only release: the run mints the release token (a build-only run needs none).
		code, stdout, stderr := runCLI(t, env, "run", "--only", "release", "--config", cfg, "--state", filepath.Join(t.TempDir(), "s.json"), "--log-format", format)
		if code == 0 || len(sent) == 0 || !strings.Contains(stderr, "not allowed for") {
			t.Fatalf("%s: exit %d, %d requests\n%s", format, code, len(sent), stderr)
		}
		printed := withoutMasks(stdout + stderr)
		jwt := sent[len(sent)-1]
		for _, part := range append([]string{jwt}, strings.Split(jwt, ".")...) {
			if strings.Contains(printed, part) {
				t.Errorf("%s: the App JWT (or its part %.20q...) was printed:\n%s", format, part, stderr)
			}
		}
		// The App-token request carries relay's User-Agent with the run's correlation id.
		if ua := agents[len(agents)-1]; !strings.HasPrefix(ua, "relay/") || !strings.Contains(ua, "(correlation_id=e2e-ua)") {
			t.Errorf("User-Agent %q", ua)
		}
		for _, line := range strings.Split(string(app.AppKey), "\n")[1:3] {
			if strings.Contains(printed, line) {
				t.Errorf("%s: a line of the App key was printed", format)
			}
		}
	}
}

// withoutMasks drops the ::add-mask:: lines: they are how a secret is masked, and the
// Actions runner never shows them.
func withoutMasks(out string) string {
	var shown []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "::add-mask::") {
			shown = append(shown, l)
		}
	}
	return strings.Join(shown, "\n")
}

// TestCloudSecretsRegisteredBeforeUse: the secrets the KMS and cloud builders' credential
// chains read from the environment and from the files it names are masked before relay
// prints anything (here: an error that would echo each of them).
func TestCloudSecretsRegisteredBeforeUse(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "sa.json")
	os.WriteFile(creds, []byte(`{"type":"service_account","private_key_id":"0123456789abcdef0123","private_key":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n","client_email":"relay@acme.iam.gserviceaccount.com"}`), 0o600)
	env := map[string]string{
		"VAULT_TOKEN":                    "hvs.CAESIvaultsecret0123",
		"AWS_SECRET_ACCESS_KEY":          "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
		"AZURE_CLIENT_SECRET":            "azure~client~secret~0123",
		"GOOGLE_APPLICATION_CREDENTIALS": creds,
	}
	secrets := []string{env["VAULT_TOKEN"], env["AWS_SECRET_ACCESS_KEY"], env["AZURE_CLIENT_SECRET"], "0123456789abcdef0123", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"}
	for _, format := range []string{"json", "text", "github"} {
		// The config path holds every secret: the error that it cannot be read prints it.
		path := filepath.Join(t.TempDir(), strings.Join(secrets, "-"), "relay.yaml")
		code, stdout, stderr := runCLI(t, env, "plan", "--log-format", format, "--config", path)
		if code != exitUsage || !strings.Contains(stderr, "cannot read config") {
			t.Fatalf("%s: exit %d\n%s", format, code, stderr)
		}
		for _, s := range secrets {
			if strings.Contains(withoutMasks(stdout+stderr), s) {
				t.Errorf("%s: %q was printed:\n%s", format, s, stderr)
			}
		}
	}
}
