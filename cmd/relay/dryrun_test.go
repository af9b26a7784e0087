package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/internal/wire"
	"github.com/relaydev/relay/pkg/attest"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// TestDryRunChecksWithoutWriting runs --dry-run against a loopback registry and a local git
// repository: every check passes, the real steps run on the dry implementations and report
// their writes, and no state, release or registry write happens. (It signs with a key:
// keyless would need a real identity token and a Sigstore instance, see the e2e tier.)
func TestDryRunChecksWithoutWriting(t *testing.T) {
	var writes int
	host := testutil.Registry(t, false, func(h http.Handler) http.Handler { return countWrites(h, &writes) })

	dir := t.TempDir()
	repo, _ := git.PlainInit(filepath.Join(dir, "src"), false)
	wt, _ := repo.Worktree()
	os.WriteFile(filepath.Join(dir, "src", "main.go"), []byte("package main\nfunc main() {}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "src", "go.mod"), []byte("module example.com/hello\n\ngo 1.22\n"), 0o644)
	wt.Add("main.go")
	wt.Add("go.mod")
	sig := &object.Signature{Name: "t", Email: "t@e", When: time.Unix(0, 0)}
	h, _ := wt.Commit("c", &git.CommitOptions{Author: sig, Committer: sig})
	repo.CreateTag("v1.0.0", h, nil)

	key := filepath.Join(dir, "cosign.key")
	if _, err := attest.LoadOrCreateKey(key); err != nil {
		t.Fatal(err)
	}
	base := `version: 1
source: {repo: ` + filepath.Join(dir, "src") + `, ref: v1.0.0, url: https://github.com/acme/app}
builder: {kind: local, registry: ` + host + `/build}
images:
  - name: hello
    local: {go: {main: .}}
    targets: [` + host + `/acme/hello]
    tags: [v1.0.0]
`
	cfg := writeConfig(t, base+"signing: {mode: key, key: "+key+", tlog: false}\n")
	state := filepath.Join(dir, ".relay", "state.json")
	out := filepath.Join(dir, "dist")
	code, stdout, stderr := runCLI(t, nil, "run", "--dry-run", "--config", cfg, "--state", state, "--out", out)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, w := range []string{"ok   source", "found refs/tags/v1.0.0", "ok   build repository", "ok   target " + host + "/acme/hello", "does not exist yet",
		"ok   signing key " + key + ": decrypts", "ok   release directory: " + out + " writable", "nothing was written",
		// The steps ran: the report names what each destination would get.
		"steps run on the dry implementations: checkout, build, copy, sign, sbom, provenance, verify, release",
		host + "/build/hello: ", host + "/acme/hello: ", " v1.0.0]", "release (dir " + out + ", write): 1", "ok   attestations within GitHub's 16 MiB cap"} {
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
	// The JSON report: every write per repository, the release's assets, the checks.
	code, stdout, _ = runCLI(t, nil, "run", "--dry-run", "--output", "json", "--config", cfg, "--state", state, "--out", out)
	var rep wire.Report
	if err := json.Unmarshal([]byte(stdout), &rep); code != 0 || err != nil || !rep.OK {
		t.Fatalf("--output json: exit %d, %v\n%s", code, err, stdout)
	}
	kinds, tagged := map[string]int{}, false
	for _, r := range rep.Registries {
		for _, w := range r.Writes {
			kinds[w.Kind]++
			tagged = tagged || w.Kind == "tag" && w.Tag == "v1.0.0" && r.Repository == host+"/acme/hello"
		}
	}
	if kinds["blob"] == 0 || kinds["manifest"] == 0 || kinds["referrer"] == 0 || !tagged || rep.Release == nil || len(rep.Release.Assets) < 8 {
		t.Fatalf("report: writes %v, release %+v", kinds, rep.Release)
	}
	golden(t, "dryrun-report.golden.json", reportShape(&rep, host, dir))
	// A release directory that cannot be: found before a run, as the release step would
	// find it before its first tag.
	notDir := filepath.Join(dir, "a-file")
	os.WriteFile(notDir, nil, 0o644)
	if code, stdout, _ := runCLI(t, nil, "run", "--dry-run", "--config", cfg, "--state", state, "--out", filepath.Join(notDir, "dist")); code != exitStepFailed || !strings.Contains(stdout, "FAIL release directory: "+notDir+" is not a directory") {
		t.Errorf("--out under a file: exit %d\n%s", code, stdout)
	}

	// No identity token, and a GitHub release without credentials: both named before a run.
	keyless := writeConfig(t, base+"signing: {mode: keyless}\nrelease: {target: github, github: {repository: acme/hello}}\n")
	code, stdout, _ = runCLI(t, nil, "run", "--dry-run", "--config", keyless, "--state", state, "--out", out)
	if code != exitStepFailed || !strings.Contains(stdout, "FAIL signing identity (keyless): keyless signing needs an OIDC identity token") ||
		!strings.Contains(stdout, "FAIL GitHub release credentials for acme/hello: no GITHUB_TOKEN") {
		t.Fatalf("missing credentials: exit %d\n%s", code, stdout)
	}
	// With a token, the release is planned against GitHub with reads only.
	gh := testutil.NewGitHub(t)
	withGH := writeConfig(t, base+"signing: {mode: key, key: "+key+", tlog: false}\nrelease: {target: github, github: {repository: "+testutil.FakeGitHubRepo+", base_url: "+gh.BaseURL()+"}}\n")
	if code, stdout, _ = runCLI(t, map[string]string{"GITHUB_TOKEN": gh.Token}, "run", "--dry-run", "--config", withGH, "--state", state, "--out", out); code != 0 || strings.Contains(stdout, gh.Token) ||
		!strings.Contains(stdout, "release (github "+testutil.FakeGitHubRepo+", create)") {
		t.Fatalf("with credentials: exit %d\n%s", code, stdout)
	}
	for _, r := range gh.Log() {
		if !strings.HasPrefix(r, "GET ") {
			t.Errorf("dry run wrote to GitHub: %s", r)
		}
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

var shortDigest = regexp.MustCompile(`[0-9a-f]{12}`)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name (go test ./cmd/relay -run TestDryRun -update
// rewrites it).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (create it with: go test ./cmd/relay -run %s -update)", err, t.Name())
	}
	if string(got) != string(want) {
		t.Errorf("%s differs (if the change is meant, rerun with -update):\n%s", p, got)
	}
}

// reportShape is a dry-run report without what differs between runs by nature: digests
// and sizes (the stand-in key signs with a fresh nonce), the registry's port, the scratch
// and test directories. What stays is what a reviewer reads: which writes go where, in what
// kinds and to which tags, which assets, which checks and limits.
func reportShape(rep *wire.Report, host, dir string) []byte {
	clean := func(s string) string {
		return strings.NewReplacer(host, "REGISTRY", dir, "DIR").Replace(s)
	}
	type repo struct {
		Repository string
		Writes     []string // kind, then the media type, artifact type and tag where there are
	}
	out := struct {
		OK         bool
		Steps      []string
		Checks     []string
		Registries []repo
		Release    []string
		Limits     []string
		Totals     map[string]int64
	}{OK: rep.OK, Steps: rep.Steps, Totals: map[string]int64{}}
	for _, c := range rep.Checks {
		out.Checks = append(out.Checks, fmt.Sprintf("%v %s", c.OK, clean(c.Check)))
	}
	for _, r := range rep.Registries {
		rp := repo{Repository: clean(r.Repository)}
		for _, w := range r.Writes {
			tag := w.Tag
			if strings.HasPrefix(tag, "sha256-") {
				tag = "sha256-(subject)" + tag[len("sha256-")+64:]
			}
			rp.Writes = append(rp.Writes, strings.Join(strings.Fields(strings.Join([]string{w.Kind, w.MediaType, w.ArtifactType, tag}, " ")), " "))
		}
		sort.Strings(rp.Writes)
		out.Registries = append(out.Registries, rp)
	}
	if rep.Release != nil {
		for _, a := range rep.Release.Assets {
			out.Release = append(out.Release, a.Action+" "+shortDigest.ReplaceAllString(a.Name, "(digest)"))
		}
	}
	for _, l := range rep.Limits {
		out.Limits = append(out.Limits, fmt.Sprintf("%v %s", l.OK, l.Check))
	}
	for k, n := range rep.Totals {
		if k != "bytes" {
			out.Totals[k] = n
		}
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	return append(b, '\n')
}
