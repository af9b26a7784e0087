//go:build integration

package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/internal/wire"
	"github.com/relaydev/relay/pkg/oci"
)

// predictedWrites puts a dry run's report in testutil.RegistryWrites' terms.
func predictedWrites(rep *wire.Report) []string {
	var out []string
	for _, r := range rep.Registries {
		for _, w := range r.Writes {
			switch w.Kind {
			case oci.WriteTag:
				out = append(out, "manifest "+w.Repository+" "+w.Tag)
			case oci.WriteManifest, oci.WriteReferrer:
				out = append(out, "manifest "+w.Repository+" "+w.Digest)
			default:
				out = append(out, w.Kind+" "+w.Repository+" "+w.Digest)
			}
		}
	}
	return out
}

// sameWrites compares predicted and real writes: entries naming the same content (the
// build, the copies, every tag) must match exactly; what the stand-in signer made instead
// of the real one (signatures, attestations, the indexes listing them) has other digests,
// so those must match in number per kind and repository.
func sameWrites(t *testing.T, predicted, real []string) int {
	t.Helper()
	count := func(in []string) map[string]int {
		m := map[string]int{}
		for _, e := range in {
			// Attachments of one step run side by side: two may both find a shared blob (the
			// empty config) missing and both upload it, in the real run as in the dry one. The
			// same bytes twice are one write; manifests and tags are counted.
			if (strings.HasPrefix(e, "blob ") || strings.HasPrefix(e, "mount ")) && m[e] > 0 {
				continue
			}
			m[e]++
		}
		return m
	}
	p, r := count(predicted), count(real)
	rest := func(m map[string]int, other map[string]int) map[string]int {
		out := map[string]int{}
		for e, n := range m {
			if other[e] > 0 {
				continue
			}
			f := strings.Fields(e)
			if len(f) == 3 && !strings.HasPrefix(f[2], "sha256:") {
				out[e] += n // a tag: its name is content-independent, so it must match exactly
				continue
			}
			out[f[0]+" "+f[1]] += n
		}
		return out
	}
	for e, n := range p {
		if r[e] > 0 && r[e] != n {
			t.Errorf("%s: predicted %d times, written %d", e, n, r[e])
		}
	}
	pr, rr := rest(p, r), rest(r, p)
	if fmt.Sprint(pr) != fmt.Sprint(rr) {
		t.Errorf("writes differ beyond the stand-in signer's digests:\n predicted %v\n real      %v", pr, rr)
	}
	same := 0
	for e := range p {
		if r[e] > 0 {
			same++
		}
	}
	if same < 5 {
		t.Errorf("only %d writes matched exactly: the comparison proves little", same)
	}
	return same
}

// TestE2EDryRunPredictsTheRealRun runs `relay run --dry-run --output json` and then the
// real run against Debian's distribution 2.8 (behind a proxy that logs its writes) and
// the fake GitHub: the dry run writes nothing anywhere, and what it predicted is what the
// registry and GitHub then received, all of it and no more.
func TestE2EDryRunPredictsTheRealRun(t *testing.T) {
	d := testutil.StartDistribution(t)
	var reg testutil.RegistryWrites
	up, _ := url.Parse("https://" + d.Host)
	proxy := httputil.NewSingleHostReverseProxy(up)
	proxy.Transport = d.Transport
	srv := httptest.NewServer(reg.Wrap(proxy))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	gh := testutil.NewGitHub(t)
	dir := realExample(t, host, fmt.Sprintf(`signing: {mode: key, key: %s, tlog: false}
release:
  target: github
  github: {repository: %s, base_url: %s, attestations: true}
`, testKeyFile(t), testutil.FakeGitHubRepo, gh.BaseURL()))
	dockerCfg := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(d.User + ":" + d.Password))
	os.WriteFile(filepath.Join(dockerCfg, "config.json"), []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)), 0o600)
	env := []string{"GITHUB_TOKEN=" + gh.Token, "DOCKER_CONFIG=" + dockerCfg}

	dry := runRelayEnv(t, dir, env, "run", "--dry-run", "--output", "json")
	var rep wire.Report
	if err := json.Unmarshal([]byte(dry.stdout), &rep); dry.code != 0 || err != nil || !rep.OK {
		t.Fatalf("dry run: exit %d, %v\n%s\n%s", dry.code, err, dry.stdout, dry.stderr)
	}
	if w := reg.List(); len(w) != 0 {
		t.Fatalf("the dry run wrote to the registry: %v", w)
	}
	for _, r := range gh.Log() {
		if !strings.HasPrefix(r, "GET ") {
			t.Fatalf("the dry run wrote to GitHub: %s", r)
		}
	}
	for _, p := range []string{filepath.Join(dir, ".relay"), filepath.Join(dir, "dist")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("the dry run made %s", p)
		}
	}
	before := len(gh.Log())

	real := runRelayEnv(t, dir, env, "run")
	if real.code != 0 {
		t.Fatalf("real run: exit %d\n%s", real.code, real.stderr)
	}
	predicted, written := predictedWrites(&rep), reg.List()
	exact := sameWrites(t, predicted, written)
	kinds := map[string]int{}
	for _, e := range predicted {
		kinds[strings.Fields(e)[0]]++
	}
	if kinds["blob"] == 0 || kinds["mount"] == 0 || kinds["manifest"] == 0 {
		t.Errorf("predicted %v: a release uploads blobs, mounts the build's into the target and puts manifests", kinds)
	}

	// GitHub: the assets predicted are the assets uploaded, and the attestations likewise.
	var uploads, atts []string
	for _, r := range gh.Log()[before:] {
		switch {
		case strings.HasPrefix(r, "POST ") && strings.Contains(r, "/api/uploads/"):
			uploads = append(uploads, r)
		case strings.HasPrefix(r, "POST ") && strings.HasSuffix(r, "/attestations"):
			atts = append(atts, r)
		}
	}
	rels := gh.Releases()
	var got, want []string
	for _, a := range rels[0].Assets {
		got = append(got, a.Name)
	}
	for _, a := range rep.Release.Assets {
		if a.Action != "unchanged" {
			want = append(want, a.Name)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) || len(uploads) != len(want) || rep.Release.Release != "create" {
		t.Errorf("release assets: predicted %v (%s), uploaded %d: %v", want, rep.Release.Release, len(uploads), got)
	}
	if len(atts) != len(rep.GitHubAtts) || len(atts) == 0 {
		t.Errorf("attestations: predicted %d, uploaded %d", len(rep.GitHubAtts), len(atts))
	}
	t.Logf("predicted %d registry writes, made %d (%d distinct ones identical to the byte), %d assets, %d attestations", len(predicted), len(written), exact, len(want), len(atts))

	// Over the published release, a dry run reuses what the key signed, as a re-run does:
	// it predicts the re-run's writes, and the release as unchanged.
	reg.Reset()
	again := runRelayEnv(t, dir, env, "run", "--dry-run", "--output", "json")
	var rep2 wire.Report
	if err := json.Unmarshal([]byte(again.stdout), &rep2); again.code != 0 || err != nil || len(reg.List()) != 0 {
		t.Fatalf("dry run over the release: exit %d, %v, %d writes\n%s\n%s", again.code, err, len(reg.List()), again.stdout, again.stderr)
	}
	rerun := runRelayEnv(t, dir, env, "run", "--restart")
	if rerun.code != 0 {
		t.Fatalf("re-run: exit %d\n%s", rerun.code, rerun.stderr)
	}
	p2, w2 := predictedWrites(&rep2), reg.List()
	slices.Sort(p2)
	slices.Sort(w2)
	if !slices.Equal(slices.Compact(p2), slices.Compact(w2)) {
		t.Errorf("over the release, predicted:\n  %s\nwritten:\n  %s", strings.Join(p2, "\n  "), strings.Join(w2, "\n  "))
	}
	for _, a := range rep2.Release.Assets {
		if a.Action != "unchanged" {
			t.Errorf("over the release, asset %s would be %s", a.Name, a.Action)
		}
	}
	t.Logf("over the release: %d registry writes predicted and made", len(w2))
}

// tokenRegistry is an in-process registry behind a token service, as GHCR and Docker Hub
// are: /token grants pull everywhere and push only on the repositories in pushable, in the
// JWT's access claim, and the registry refuses a write the token does not grant.
func tokenRegistry(t *testing.T, pushable ...string) string {
	t.Helper()
	claims := func(tok string) map[string][]string {
		out := map[string][]string{}
		parts := strings.Split(strings.TrimPrefix(tok, "Bearer "), ".")
		if len(parts) != 3 {
			return out
		}
		raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var c struct {
			Access []struct {
				Name    string   `json:"name"`
				Actions []string `json:"actions"`
			} `json:"access"`
		}
		json.Unmarshal(raw, &c)
		for _, a := range c.Access {
			out[a.Name] = append(out[a.Name], a.Actions...)
		}
		return out
	}
	var host string
	inner := testutil.RegistryHandler(false)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			var access []map[string]any
			for _, scope := range r.URL.Query()["scope"] {
				f := strings.Split(scope, ":")
				if len(f) != 3 {
					continue
				}
				acts := []string{"pull"}
				if slices.Contains(pushable, f[1]) && strings.Contains(f[2], "push") {
					acts = append(acts, "push")
				}
				access = append(access, map[string]any{"type": "repository", "name": f[1], "actions": acts})
			}
			payload, _ := json.Marshal(map[string]any{"iss": "test", "access": access})
			tok := "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString(payload) + ".c2ln"
			json.NewEncoder(w).Encode(map[string]string{"token": tok})
			return
		}
		auth := r.Header.Get("Authorization")
		if !strings.HasPrefix(auth, "Bearer ") {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="test"`, host))
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			repo := strings.TrimPrefix(r.URL.Path, "/v2/")
			for _, sep := range []string{"/blobs/", "/manifests/"} {
				if i := strings.LastIndex(repo, sep); i > 0 {
					repo = repo[:i]
				}
			}
			if !slices.Contains(claims(auth)[repo], "push") {
				http.Error(w, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`, http.StatusForbidden)
				return
			}
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host = strings.TrimPrefix(srv.URL, "http://")
	return host
}

// TestE2EDryRunCatches: what fails a real release late, a dry run finds, with the exit
// code the real run would have and a message that names the fix.
func TestE2EDryRunCatches(t *testing.T) {
	key := testKeyFile(t)
	signing := "signing: {mode: key, key: " + key + ", tlog: false}\n"
	for _, tc := range []struct {
		name string
		// setup returns relay.yaml's signing (and more) section, the registry, and env.
		setup func(t *testing.T) (extra, reg string, env []string)
		code  int
		want  []string
	}{
		{"an SBOM over its budget", func(t *testing.T) (string, string, []string) {
			return signing + "sbom: {budget: 1KiB}\n", testutil.Registry(t, true), nil
		}, exitStepFailed, []string{"step sbom failed", "over the 1024-byte budget", "raise sbom.budget"}},
		{"a tag template typo", func(t *testing.T) (string, string, []string) {
			return signing, testutil.Registry(t, true), nil
		}, exitUsage, []string{"Versoin"}},
		{"a repository the credentials may pull but not push", func(t *testing.T) (string, string, []string) {
			return signing, tokenRegistry(t, "build/hello"), nil
		}, exitStepFailed, []string{"FAIL push access to", "/acme/hello: no credentials for", "may only pull on acme/hello"}},
		{"a GitHub token without contents: write", func(t *testing.T) (string, string, []string) {
			gh := testutil.NewGitHub(t)
			gh.Perms = map[string]bool{"pull": true}
			gh.Scopes = "contents=write"
			return signing + fmt.Sprintf("release: {target: github, github: {repository: %s, base_url: %s}}\n", testutil.FakeGitHubRepo, gh.BaseURL()),
				testutil.Registry(t, true), []string{"GITHUB_TOKEN=" + gh.Token}
		}, exitUsage, []string{"step release failed", "may pull on acme/shop but not push", "contents: write", "this run applied no tag"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			extra, reg, env := tc.setup(t)
			dir := realExample(t, reg, extra)
			if tc.name == "a tag template typo" {
				b, _ := os.ReadFile(filepath.Join(dir, "relay.yaml"))
				os.WriteFile(filepath.Join(dir, "relay.yaml"), []byte(strings.Replace(string(b), ".Version", ".Versoin", 1)), 0o644)
			}
			r := runRelayEnv(t, dir, env, "run", "--dry-run")
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\n%s\n%s", r.code, tc.code, r.stdout, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stdout+r.stderr, w) {
					t.Errorf("output lacks %q\n%s\n%s", w, r.stdout, r.stderr)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, ".relay")); !os.IsNotExist(err) {
				t.Error("the dry run made a state")
			}
			if i := strings.LastIndex(r.stderr, "relay: "); i >= 0 {
				t.Logf("exit %d: %s", r.code, strings.TrimSpace(r.stderr[i:]))
			}
		})
	}
}
