package release

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/httpx"
	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/github"
)

func testAssets(n int, version string) []Asset {
	var out []Asset
	for i := range n {
		out = append(out, Asset{Name: fmt.Sprintf("asset-%d.json", i), Data: []byte(fmt.Sprintf(`{"n":%d,"v":%q}`, i, version))})
	}
	return out
}

func newPublisher(t *testing.T, f *testutil.GitHub, replace bool, logs *bytes.Buffer) *GitHub {
	t.Helper()
	var waits []time.Duration
	o := GitHubOptions{Repository: testutil.FakeGitHubRepo, BaseURL: f.BaseURL(), UploadURL: f.UploadURL(), Token: f.Token, Replace: replace,
		RetryOptions: httpx.RetryOptions{Sleep: func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil }}}
	if logs != nil {
		o.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	}
	g, err := NewGitHub(o)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestGitHubPublishIsIdempotent(t *testing.T) {
	f := testutil.NewGitHub(t)
	g := newPublisher(t, f, false, nil)
	rel := Release{Tag: "v1.2.3", Name: "v1.2.3", Notes: "notes", Assets: testAssets(5, "a")}
	res, err := g.Publish(context.Background(), rel)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Written) != 5 || res.URL != "https://github.example/acme/shop/releases/tag/v1.2.3" {
		t.Fatalf("%+v", res)
	}
	want := `v1.2.3 draft=false body="notes" [asset-0.json="{\"n\":0,\"v\":\"a\"}"(uploaded) asset-1.json="{\"n\":1,\"v\":\"a\"}"(uploaded) asset-2.json="{\"n\":2,\"v\":\"a\"}"(uploaded) asset-3.json="{\"n\":3,\"v\":\"a\"}"(uploaded) asset-4.json="{\"n\":4,\"v\":\"a\"}"(uploaded)]`
	if got := f.State(); got != want {
		t.Fatalf("state:\n%s\nwant:\n%s", got, want)
	}
	// Again: nothing is written, nothing duplicated.
	writes := 0
	f.Fail = func(_ int, r *http.Request) int {
		if r.Method != http.MethodGet {
			writes++
		}
		return 0
	}
	res, err = g.Publish(context.Background(), rel)
	if err != nil || len(res.Skipped) != 5 || writes != 0 || f.State() != want {
		t.Fatalf("re-run: %v %+v, %d writes\n%s", err, res, writes, f.State())
	}
}

func TestGitHubConflictAndReplace(t *testing.T) {
	f := testutil.NewGitHub(t)
	ctx := context.Background()
	if _, err := newPublisher(t, f, false, nil).Publish(ctx, Release{Tag: "v1", Name: "v1", Assets: testAssets(2, "old")}); err != nil {
		t.Fatal(err)
	}
	changed := testAssets(2, "new")
	_, err := newPublisher(t, f, false, nil).Publish(ctx, Release{Tag: "v1", Name: "v1", Assets: changed})
	old := testAssets(2, "old")
	if err == nil || !strings.Contains(err.Error(), old[0].SHA256()) || !strings.Contains(err.Error(), changed[0].SHA256()) || !strings.Contains(err.Error(), "--replace") {
		t.Fatalf("conflict: %v", err)
	}
	var logs bytes.Buffer
	if _, err := newPublisher(t, f, true, &logs).Publish(ctx, Release{Tag: "v1", Name: "v1", Assets: changed}); err != nil {
		t.Fatal(err)
	}
	if got := f.State(); strings.Contains(got, "old") || strings.Contains(got, ".relay-") || strings.Count(got, `\"new\"`) != 2 {
		t.Fatalf("after replace:\n%s", got)
	}
	if !strings.Contains(logs.String(), "release asset replaced") {
		t.Fatalf("the swap was not logged:\n%s", logs.String())
	}

	// A temporary asset left by some earlier swap, with other content, is not taken for
	// this run's: it is replaced, and nothing temporary remains.
	f2 := testutil.NewGitHub(t)
	stale := append(testAssets(2, "old"), Asset{Name: "asset-0.json" + newSuffix, Data: []byte("stale")})
	if _, err := newPublisher(t, f2, false, nil).Publish(ctx, Release{Tag: "v1", Name: "v1", Assets: stale}); err != nil {
		t.Fatal(err)
	}
	if _, err := newPublisher(t, f2, true, nil).Publish(ctx, Release{Tag: "v1", Name: "v1", Assets: changed}); err != nil {
		t.Fatal(err)
	}
	if got := f2.State(); strings.Contains(got, "stale") || strings.Contains(got, ".relay-") || strings.Count(got, `\"new\"`) != 2 {
		t.Fatalf("after replacing over a stale temporary asset:\n%s", got)
	}
}

// TestGitHubCrashAtEveryCall stops the publisher after each API call in turn (as a killed
// process would), then publishes again: the end state is always the one an uninterrupted run
// makes, no asset is duplicated or lost, and a release is never published while it lacks an
// asset.
func TestGitHubCrashAtEveryCall(t *testing.T) {
	for _, scenario := range []struct {
		name    string
		before  []Asset // published before the run, if any
		assets  []Asset
		rerun   []Asset // what the re-run publishes, when it differs (a new correlation id)
		replace bool
	}{
		{"fresh release", nil, testAssets(4, "a"), nil, false},
		{"replacing assets of a published release", testAssets(4, "a"), append(testAssets(3, "a"), testAssets(4, "b")[3]), nil, true},
		// release.json names the run: a re-run after a crash makes it anew. The draft is
		// not public, so it converges without --replace.
		{"re-run with another run's release.json", nil, testAssets(4, "a"), append(testAssets(3, "a"), testAssets(4, "rerun")[3]), false},
	} {
		t.Run(scenario.name, func(t *testing.T) {
			ctx := context.Background()
			rel := Release{Tag: "v2", Name: "v2", Notes: "n", Assets: scenario.assets}
			setup := func() *testutil.GitHub {
				f := testutil.NewGitHub(t)
				if scenario.before != nil {
					if _, err := newPublisher(t, f, false, nil).Publish(ctx, Release{Tag: "v2", Name: "v2", Notes: "n", Assets: scenario.before}); err != nil {
						t.Fatal(err)
					}
				}
				f.Calls = 0
				return f
			}
			rerun := rel
			if scenario.rerun != nil {
				rerun.Assets = scenario.rerun
			}
			ref := setup()
			if _, err := newPublisher(t, ref, scenario.replace, nil).Publish(ctx, rel); err != nil {
				t.Fatal(err)
			}
			total := ref.CallCount()
			ref = setup()
			if _, err := newPublisher(t, ref, scenario.replace, nil).Publish(ctx, rerun); err != nil {
				t.Fatal(err)
			}
			want := ref.State()
			for n := 1; n < total; n++ {
				f := setup()
				cctx, cancel := context.WithCancel(ctx)
				f.After = func(i int) {
					if i == n {
						cancel()
					}
				}
				_, err := newPublisher(t, f, scenario.replace, nil).Publish(cctx, rel)
				cancel()
				if err == nil {
					t.Fatalf("stopped after call %d of %d, yet it reported success", n, total)
				}
				// At rest after the crash: a published release holds every asset's content
				// (under its name, or mid-swap under its temporary name).
				for _, r := range f.Releases() {
					if r.Draft {
						continue
					}
					for _, a := range rel.Assets {
						found := false
						for _, x := range r.Assets {
							found = found || (x.State == "uploaded" && (x.Name == a.Name || x.Name == a.Name+newSuffix || x.Name == a.Name+oldSuffix))
						}
						if !found {
							t.Errorf("crash after call %d: published release lacks %s", n, a.Name)
						}
					}
				}
				f.After = nil
				if _, err := newPublisher(t, f, scenario.replace, nil).Publish(ctx, rerun); err != nil {
					t.Fatalf("re-run after a crash at call %d: %v", n, err)
				}
				if got := f.State(); got != want {
					t.Fatalf("crash at call %d of %d, then a re-run, ends as:\n%s\nwant:\n%s", n, total, got, want)
				}
			}
			t.Logf("%d crash points", total-1)
		})
	}
}

// TestGitHubRefusedPublishConverges: GitHub refuses to publish the draft (422, e.g. a tag
// protection rule); once that is fixed, a plain re-run of another invocation finishes the
// same draft: no --replace, no duplicate asset, and never a published release missing one.
func TestGitHubRefusedPublishConverges(t *testing.T) {
	ctx := context.Background()
	f := testutil.NewGitHub(t)
	f.Fail = func(_ int, r *http.Request) int {
		if r.Method == http.MethodPatch {
			b, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			if strings.Contains(string(b), `"draft":false`) {
				return http.StatusUnprocessableEntity
			}
		}
		return 0
	}
	_, err := newPublisher(t, f, false, nil).Publish(ctx, Release{Tag: "v7", Name: "v7", Notes: "n", Assets: testAssets(3, "run1")})
	if err == nil || !strings.Contains(err.Error(), "422") {
		t.Fatalf("refused publish: %v", err)
	}
	if got := f.State(); !strings.Contains(got, "draft=true") {
		t.Fatalf("after the refusal:\n%s", got)
	}
	f.Fail = nil
	second := testAssets(3, "run2")
	if _, err := newPublisher(t, f, false, nil).Publish(ctx, Release{Tag: "v7", Name: "v7", Notes: "n", Assets: second}); err != nil {
		t.Fatalf("re-run after the refusal: %v", err)
	}
	ref := testutil.NewGitHub(t)
	if _, err := newPublisher(t, ref, false, nil).Publish(ctx, Release{Tag: "v7", Name: "v7", Notes: "n", Assets: second}); err != nil {
		t.Fatal(err)
	}
	if got, want := f.State(), ref.State(); got != want {
		t.Fatalf("ends as:\n%s\nwant:\n%s", got, want)
	}
}

// TestGitHubPrepare: the checks the release step makes before it applies any tag.
func TestGitHubPrepare(t *testing.T) {
	ctx := context.Background()
	writes := func(f *testutil.GitHub) *int {
		n := 0
		f.Fail = func(_ int, r *http.Request) int {
			if r.Method != http.MethodGet {
				n++
			}
			return 0
		}
		return &n
	}
	// No release yet: Prepare creates the draft, which proves contents: write.
	f := testutil.NewGitHub(t)
	if err := newPublisher(t, f, false, nil).Prepare(ctx, Release{Tag: "v1", Name: "v1", Notes: "n", Assets: testAssets(2, "a")}); err != nil {
		t.Fatal(err)
	}
	if got := f.State(); got != `v1 draft=true body="n" []` {
		t.Fatalf("after Prepare: %s", got)
	}
	// Publish fills the draft Prepare made: it neither looks for the release nor rewrites
	// its notes again.
	lookups := 0
	f.Fail = func(_ int, r *http.Request) int {
		if strings.HasSuffix(r.URL.Path, "/releases") || r.Method == http.MethodPatch && !strings.Contains(r.URL.Path, "/assets/") {
			lookups++
		}
		return 0
	}
	g := newPublisher(t, f, false, nil)
	rel := Release{Tag: "v1", Name: "v1", Notes: "n", Assets: testAssets(2, "a")}
	if err := g.Prepare(ctx, rel); err != nil {
		t.Fatal(err)
	}
	before := lookups
	if _, err := g.Publish(ctx, rel); err != nil {
		t.Fatal(err)
	}
	if got := f.State(); !strings.Contains(got, "draft=false") || strings.Count(got, "(uploaded)") != 2 {
		t.Fatalf("after Prepare and Publish: %s", got)
	}
	if n := lookups - before; n != 1 { // the PATCH that publishes
		t.Fatalf("Publish after Prepare made %d release lookups or updates, want only the publish", n)
	}
	f.Fail = nil

	// A token that may read but not write fails at Prepare, naming the permission.
	ro := testutil.NewGitHub(t)
	ro.Scopes = "contents=write"
	if err := newPublisher(t, ro, false, nil).Prepare(ctx, Release{Tag: "v1", Name: "v1", Assets: testAssets(1, "a")}); err == nil || !strings.Contains(err.Error(), "contents: write") {
		t.Fatalf("read-only token: %v", err)
	}
	// A published release whose asset this run would change: refused before any write.
	pub := testutil.NewGitHub(t)
	if _, err := newPublisher(t, pub, false, nil).Publish(ctx, Release{Tag: "v2", Name: "v2", Assets: testAssets(2, "old")}); err != nil {
		t.Fatal(err)
	}
	n := writes(pub)
	err := newPublisher(t, pub, false, nil).Prepare(ctx, Release{Tag: "v2", Name: "v2", Assets: testAssets(2, "new")})
	if err == nil || !strings.Contains(err.Error(), "published release v2 already has an asset asset-0.json") || !strings.Contains(err.Error(), "--replace") || *n != 0 {
		t.Fatalf("conflict on a published release: %v, %d writes", err, *n)
	}
	// Unchanged: no write at all. With --replace and a change: write access is proven.
	if err := newPublisher(t, pub, false, nil).Prepare(ctx, Release{Tag: "v2", Name: "v2", Assets: testAssets(2, "old")}); err != nil || *n != 0 {
		t.Fatalf("unchanged published release: %v, %d writes", err, *n)
	}
	if err := newPublisher(t, pub, true, nil).Prepare(ctx, Release{Tag: "v2", Name: "v2", Assets: testAssets(2, "new")}); err != nil || *n != 1 {
		t.Fatalf("--replace: %v, %d writes", err, *n)
	}
	if got := pub.State(); strings.Contains(got, `\"new\"`) {
		t.Fatalf("Prepare changed an asset:\n%s", got)
	}
}

func TestDirPrepare(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	for _, out := range []string{file, filepath.Join(file, "dist")} {
		d, _ := NewDir(out, nil)
		err := d.Prepare(ctx, Release{Tag: "v1", Assets: testAssets(1, "a")})
		if err == nil || !strings.Contains(err.Error(), out) && !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "--out") {
			t.Errorf("--out %s: %v", out, err)
		}
	}
	d, _ := NewDir(filepath.Join(dir, "dist", "v1"), nil)
	// Check (--dry-run) writes nothing: the directory does not exist yet, its parent does.
	if note, err := d.Check(ctx); err != nil || !strings.Contains(note, "writable") || !strings.Contains(note, "MiB free") {
		t.Fatalf("check: %q %v", note, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dist")); !os.IsNotExist(err) {
		t.Fatal("Check created the directory")
	}
	for _, out := range []string{file, filepath.Join(file, "dist")} {
		bad, _ := NewDir(out, nil)
		if _, err := bad.Check(ctx); err == nil || !strings.Contains(err.Error(), "not a directory") && !strings.Contains(err.Error(), "--out") {
			t.Errorf("check --out %s: %v", out, err)
		}
	}
	if err := d.Prepare(ctx, Release{Tag: "v1", Assets: testAssets(2, "a")}); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "dist", "v1")); len(ents) != 0 {
		t.Fatalf("Prepare left files: %v", ents)
	}
	if err := d.Prepare(ctx, Release{Tag: "v1", Assets: []Asset{{Name: "../x", Data: []byte("1")}}}); err == nil || !strings.Contains(err.Error(), "path separator") {
		t.Fatalf("bad name: %v", err)
	}
}

func TestGitHubRetries(t *testing.T) {
	f := testutil.NewGitHub(t)
	var logs bytes.Buffer
	g := newPublisher(t, f, false, &logs)
	f.Fail = func(n int, r *http.Request) int {
		switch n {
		case 1:
			return 502
		case 2:
			return 403 // secondary rate limit, with Retry-After
		}
		return 0
	}
	f.Land504 = 1 // the first upload lands, and its answer is lost in a 504
	rel := Release{Tag: "v3", Name: "v3", Assets: testAssets(2, "x")}
	if _, err := g.Publish(context.Background(), rel); err != nil {
		t.Fatal(err)
	}
	if got := f.State(); strings.Count(got, "(uploaded)") != 2 || strings.Contains(got, "draft=true") {
		t.Fatalf("state:\n%s", got)
	}
	for _, want := range []string{"GitHub request failed, retrying", "release asset landed despite the error", "secondary rate limit"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

func TestGitHubRefusals(t *testing.T) {
	ctx := context.Background()
	f := testutil.NewGitHub(t)
	f.Scopes = "contents=write"
	_, err := newPublisher(t, f, false, nil).Publish(ctx, Release{Tag: "v4", Name: "v4", Assets: testAssets(1, "x")})
	if err == nil || !strings.Contains(err.Error(), "contents: write") || !strings.Contains(err.Error(), "403") {
		t.Fatalf("missing permission: %v", err)
	}
	_, err = newPublisher(t, f, false, nil).UploadAttestation(ctx, []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))
	if err == nil || !strings.Contains(err.Error(), "attestations: write") {
		t.Fatalf("attestation without permission: %v", err)
	}
	f.Scopes = ""

	bad := testutil.NewGitHub(t)
	for _, tc := range []struct {
		assets []Asset
		want   string
	}{
		{[]Asset{{Name: "../evil", Data: []byte("x")}}, "path separator"},
		{[]Asset{{Name: "bell\a", Data: []byte("x")}}, "control character"},
		{[]Asset{{Name: "a", Data: []byte("1")}, {Name: "a", Data: []byte("2")}}, "listed twice"},
	} {
		_, err := newPublisher(t, bad, false, nil).Publish(ctx, Release{Tag: "v5", Name: "v5", Assets: tc.assets})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v", tc.assets[0].Name, err)
		}
	}
	small, _ := NewGitHub(GitHubOptions{Repository: testutil.FakeGitHubRepo, BaseURL: bad.BaseURL(), UploadURL: bad.UploadURL(), Token: bad.Token, MaxAssetSize: 4})
	if _, err := small.Publish(ctx, Release{Tag: "v5", Name: "v5", Assets: []Asset{{Name: "ok", Data: []byte("1234")}, {Name: "big", Data: []byte("12345")}}}); err == nil || !strings.Contains(err.Error(), "asset big is 5 bytes, over the release's limit of 4") {
		t.Errorf("oversized asset: %v", err)
	}
	if bad.CallCount() != 0 {
		t.Fatalf("bad input cost %d API calls; it must be refused before any", bad.CallCount())
	}
	if _, err := NewGitHub(GitHubOptions{Repository: "acme", Token: "t"}); err == nil || !strings.Contains(err.Error(), "OWNER/NAME") {
		t.Fatalf("bad repository: %v", err)
	}
	if _, err := NewGitHub(GitHubOptions{Repository: "acme/shop"}); err == nil || !strings.Contains(err.Error(), "GITHUB_TOKEN") {
		t.Fatalf("no token: %v", err)
	}
	wrong := testutil.NewGitHub(t)
	g, _ := NewGitHub(GitHubOptions{Repository: testutil.FakeGitHubRepo, BaseURL: wrong.BaseURL(), UploadURL: wrong.UploadURL(), Token: "expired"})
	if _, err := g.Publish(ctx, Release{Tag: "v6", Name: "v6"}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("bad token: %v", err)
	}
}

func TestGitHubAttestation(t *testing.T) {
	f := testutil.NewGitHub(t)
	id, err := newPublisher(t, f, false, nil).UploadAttestation(context.Background(), []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))
	if err != nil || id == 0 {
		t.Fatalf("%d %v", id, err)
	}
}

// TestOctokitFixturesParse replays the recorded api.github.com exchanges of the conflict
// scenario to relay's GitHub client, the code the publisher runs: the release, the 422
// already_exists and the asset list parse as the publisher expects them to.
func TestOctokitFixturesParse(t *testing.T) {
	b := testutil.OctokitFixture("release-assets-conflict.json")
	var rec []struct {
		Method   string          `json:"method"`
		Path     string          `json:"path"`
		Status   int             `json:"status"`
		Response json.RawMessage `json:"response"`
	}
	json.Unmarshal(b, &rec)
	i := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := rec[i]
		i++
		if !strings.EqualFold(e.Method, r.Method) || !strings.HasSuffix(r.URL.RequestURI(), strings.SplitN(e.Path, "?", 2)[0]) && !strings.Contains(r.URL.RequestURI(), strings.SplitN(e.Path, "?", 2)[0]) {
			t.Errorf("request %d: %s %s, recorded %s %s", i, r.Method, r.URL, e.Method, e.Path)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(e.Status)
		if e.Status != 204 {
			w.Write(e.Response)
		}
	}))
	defer srv.Close()
	c, _ := github.New(github.Options{BaseURL: srv.URL, Token: github.Static("t"), HTTP: srv.Client()})
	ctx := context.Background()
	var rel ghRelease
	_, err := c.Do(ctx, http.MethodGet, "repos/octokit-fixture-org/release-assets-conflict/releases/tags/v1.0.0", nil, &rel)
	if err != nil || rel.ID != 1000 || !strings.HasSuffix(rel.UploadURL, "/assets{?name,label}") {
		t.Fatalf("release: %+v %v", rel, err)
	}
	rel.UploadURL = srv.URL + "/repos/octokit-fixture-org/release-assets-conflict/releases/1000/assets{?name,label}"
	_, err = c.Upload(ctx, rel.UploadURL, "", "test-upload.txt", "text/plain", []byte("Hello, world!\n"), &ghAsset{})
	var er *github.Error
	if !errors.As(err, &er) || len(er.Errors) != 1 || er.Errors[0].Code != "already_exists" || !er.Has("already_exists") {
		t.Fatalf("422: %v", err)
	}
	var assets []*ghAsset
	_, err = c.Do(ctx, http.MethodGet, "repos/octokit-fixture-org/release-assets-conflict/releases/1000/assets", nil, &assets)
	if err != nil || len(assets) != 1 || assets[0].Name != "test-upload.txt" || assets[0].State != "uploaded" || assets[0].Size != 14 {
		t.Fatalf("assets: %+v %v", assets, err)
	}
}

// TestGitHubOneRetryLayer: GitHub answering 503 to everything sees exactly the attempts
// relay's retry policy allows for the first call, and the error says the service failed;
// the publisher adds no retries of its own on top.
func TestGitHubOneRetryLayer(t *testing.T) {
	for _, attempts := range []int{1, 3} {
		f := testutil.NewGitHub(t)
		f.Fail = func(int, *http.Request) int { return http.StatusServiceUnavailable }
		policy := httpx.DefaultRetryPolicy
		policy.MaxAttempts = attempts
		g, err := NewGitHub(GitHubOptions{Repository: testutil.FakeGitHubRepo, BaseURL: f.BaseURL(), UploadURL: f.UploadURL(), Token: f.Token,
			RetryOptions: httpx.RetryOptions{Policy: policy, Sleep: func(context.Context, time.Duration) error { return nil }}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = g.Publish(context.Background(), Release{Tag: "v9", Name: "v9", Assets: testAssets(1, "x")})
		if err == nil || !strings.Contains(err.Error(), "503") {
			t.Fatalf("%d attempts: %v", attempts, err)
		}
		if n := f.CallCount(); n != attempts {
			t.Errorf("GitHub saw %d requests (%v), want exactly the policy's %d", n, f.Log(), attempts)
		}
	}
}
