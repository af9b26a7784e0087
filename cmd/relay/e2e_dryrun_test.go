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
	"sync"
	"testing"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/internal/wire"
	"github.com/relaydev/relay/pkg/oci"
)

// registryLog records the write requests a registry accepted, as "kind repo ref": a blob
// committed (PUT of an upload) or mounted (POST ?mount answered 201), a manifest put by
// digest or by tag. Upload sessions and chunks are not writes of their own.
type registryLog struct {
	mu     sync.Mutex
	writes []string
}

func (l *registryLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		if r.Method == http.MethodGet || r.Method == http.MethodHead || rec.status >= 300 || !strings.HasPrefix(r.URL.Path, "/v2/") {
			return
		}
		p := strings.TrimPrefix(r.URL.Path, "/v2/")
		var entry string
		switch i := strings.LastIndex(p, "/blobs/uploads/"); {
		case i > 0 && r.Method == http.MethodPut:
			entry = "blob " + p[:i] + " " + r.URL.Query().Get("digest")
		case i > 0 && r.Method == http.MethodPost && rec.status == http.StatusCreated && r.URL.Query().Get("mount") != "":
			entry = "mount " + p[:i] + " " + r.URL.Query().Get("mount")
		case i > 0:
			return
		default:
			j := strings.LastIndex(p, "/manifests/")
			if j < 0 || r.Method != http.MethodPut {
				entry = r.Method + " " + p // anything else is a write the prediction must name too
			} else {
				entry = "manifest " + p[:j] + " " + p[j+len("/manifests/"):]
			}
		}
		l.mu.Lock()
		l.writes = append(l.writes, entry)
		l.mu.Unlock()
	})
}

func (l *registryLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.writes)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(c int) {
	if s.status == 0 {
		s.status = c
	}
	s.ResponseWriter.WriteHeader(c)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// predictedWrites puts a dry run's report in registryLog's terms.
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
	var reg registryLog
	up, _ := url.Parse("https://" + d.Host)
	proxy := httputil.NewSingleHostReverseProxy(up)
	proxy.Transport = d.Transport
	srv := httptest.NewServer(reg.wrap(proxy))
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
	if w := reg.list(); len(w) != 0 {
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
	predicted, written := predictedWrites(&rep), reg.list()
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
}
