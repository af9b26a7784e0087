//go:build integration

package oci

import (
	"context"
	"fmt"
	"io"
	stdlog "log"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/relaydev/relay/internal/testutil"
)

// TestIntegrationCopyBetweenRegistryKinds copies a signed two-platform index between the
// in-process registry (referrers API) and Debian's distribution 2.8 (TLS, htpasswd, no
// referrers API: the tag schema), in both directions, and checks every digest and referrer.
func TestIntegrationCopyBetweenRegistryKinds(t *testing.T) {
	ctx := context.Background()
	dist := testutil.StartDistribution(t)
	mem := testutil.Registry(t, true)
	// One transport for both: it trusts the distribution's certificate; the in-process
	// registry is plain HTTP on loopback.
	c, err := New(WithTransport(Retry(dist.Transport, RetryOptions{})), WithKeychain(dist.Keychain()))
	if err != nil {
		t.Fatal(err)
	}
	anon, _ := New(WithTransport(dist.Transport), WithKeychain(authn.NewMultiKeychain()))

	src := mustRepo(t, mem+"/build/app")
	d, err := c.Write(ctx, src, twoPlatformIndex(t))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := c.Resolve(ctx, d)
	all := []string{r.Digest, r.Manifests[0].Digest, r.Manifests[1].Digest}
	for _, dg := range all {
		subj := src.Digest(dg)
		raw, mt, _ := c.FetchManifest(ctx, subj)
		if _, err := c.AttachBundle(ctx, subj, mt, int64(len(raw)), []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","n":"`+dg+`"}`), "dsse-envelope", "https://sigstore.dev/cosign/sign/v1"); err != nil {
			t.Fatal(err)
		}
	}
	want := referrerSet(t, c, src, all)
	if n := len(strings.Split(want, "\n")); n != 3 {
		t.Fatalf("%d referrers at the source, want 3", n)
	}

	// In-process -> distribution: referrers land in the tag schema.
	toDist := mustRepo(t, dist.Host+"/acme/app")
	out, err := c.Copy(ctx, d, toDist)
	if err != nil {
		t.Fatal(err)
	}
	if out.DigestStr() != d.DigestStr() {
		t.Fatalf("digest changed: %s", out.DigestStr())
	}
	if mode, _ := c.ReferrersMode(ctx, toDist); mode != ReferrersTagSchema {
		t.Fatalf("distribution 2.8 mode %q, want %s", mode, ReferrersTagSchema)
	}
	if got := referrerSet(t, c, toDist, all); got != want {
		t.Fatalf("referrers in distribution:\n%s\nwant:\n%s", got, want)
	}
	// The registry really requires the password.
	if _, err := anon.Resolve(ctx, out); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Fatalf("anonymous read of the htpasswd registry: %v", err)
	}

	// Distribution -> in-process, into another repository: all back through the API.
	back := mustRepo(t, mem+"/mirror/app")
	if _, err := c.Copy(ctx, out, back); err != nil {
		t.Fatal(err)
	}
	if got := referrerSet(t, c, back, all); got != want {
		t.Fatalf("referrers after the round trip:\n%s\nwant:\n%s", got, want)
	}
	// Copying again transfers no new manifest.
	var puts int
	counting := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/manifests/") {
			puts++
		}
		return dist.Transport.RoundTrip(req)
	})
	c2, _ := New(WithTransport(counting), WithKeychain(dist.Keychain()))
	if _, err := c2.Copy(ctx, d, toDist); err != nil {
		t.Fatal(err)
	}
	if puts != 0 {
		t.Fatalf("a repeated copy wrote %d manifests", puts)
	}
}

func referrerSet(t *testing.T, c *Client, repo name.Repository, digests []string) string {
	t.Helper()
	var out []string
	for _, dg := range digests {
		atts, err := c.Bundles(context.Background(), repo.Digest(dg), "")
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range atts {
			out = append(out, dg+" "+a.Digest+" "+string(a.Bundle))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// TestIntegrationUploadResumesInDistribution breaks a blob's second chunk on its way to
// distribution 2.8. When the chunk never reached the registry (a proxy's 503), the upload
// asks the registry where it stands and continues from the last acknowledged chunk in the
// same session. When the link dies mid-chunk, distribution drops the session (it holds a
// torn chunk), and the upload starts that blob again: the registry decides, relay adapts
// (asked before it has dropped the session, it refuses the resumed chunk; relay asks again).
func TestIntegrationUploadResumesInDistribution(t *testing.T) {
	const chunk = 1 << 20
	second := func(r *http.Request) bool {
		return r.Method == http.MethodPatch && strings.HasPrefix(r.Header.Get("Content-Range"), fmt.Sprintf("%d-", chunk))
	}
	refuse := func(next http.Handler) http.Handler {
		var once sync.Once
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hit := false
			if second(r) {
				once.Do(func() { hit = true })
			}
			if hit {
				http.Error(w, "upstream unavailable", http.StatusServiceUnavailable)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	for _, tc := range []struct {
		name     string
		fault    func(http.Handler) http.Handler
		sessions int    // upload sessions (POSTs) for the two blobs
		status   string // what the registry said when asked where the upload stands
		reread   string // the Range of the source read that resumed
	}{
		{"503 before the chunk reaches the registry", refuse, 2, "-> 204", fmt.Sprintf("bytes=%d-", chunk)},
		{"link cut in the middle of the chunk", testutil.CutUploads(1, chunk/2, second), 3, "-> 404", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dist := testutil.StartDistribution(t)
			img, err := random.Image(4*chunk, 1, random.WithSource(rand.New(rand.NewSource(9))))
			if err != nil {
				t.Fatal(err)
			}
			ls, _ := img.Layers()
			layer, _ := ls[0].Digest()

			var mu sync.Mutex
			var log []string // method path content-range -> status, as the proxy saw them
			var proxyHost string
			rp := &httputil.ReverseProxy{
				Rewrite: func(pr *httputil.ProxyRequest) {
					pr.Out.URL.Scheme, pr.Out.URL.Host, pr.Out.Host = "https", dist.Host, dist.Host
				},
				Transport: dist.Transport,
				ModifyResponse: func(resp *http.Response) error {
					if l := resp.Header.Get("Location"); l != "" {
						resp.Header.Set("Location", strings.Replace(l, "https://"+dist.Host, "http://"+proxyHost, 1))
					}
					return nil
				},
				ErrorLog: stdlog.New(io.Discard, "", 0),
			}
			record := func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					sw := &statusWriter{ResponseWriter: w}
					defer func() {
						mu.Lock()
						log = append(log, fmt.Sprintf("%s %s %s -> %d", r.Method, r.URL.Path, r.Header.Get("Content-Range"), sw.code))
						mu.Unlock()
					}()
					h.ServeHTTP(sw, r)
				})
			}
			proxy := httptest.NewServer(record(tc.fault(rp)))
			defer proxy.Close()
			proxyHost = strings.TrimPrefix(proxy.URL, "http://")

			var reads []string // Range headers of the source's layer reads
			src := mustRepo(t, testutil.Registry(t, true, func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+layer.String()) {
						mu.Lock()
						reads = append(reads, r.Header.Get("Range"))
						mu.Unlock()
					}
					h.ServeHTTP(w, r)
				})
			})+"/build/app")
			c, err := New(WithKeychain(dist.Keychain(proxyHost)), WithChunkSize(chunk), WithJobs(1))
			if err != nil {
				t.Fatal(err)
			}
			c.sleep = (&instant{}).sleep
			d, err := c.Write(ctx, src, img)
			if err != nil {
				t.Fatal(err)
			}
			out, err := c.Copy(ctx, d, mustRepo(t, proxyHost+"/acme/app"))
			if err != nil {
				t.Fatalf("copy through a broken link: %v", err)
			}
			if out.DigestStr() != d.DigestStr() {
				t.Fatalf("digest changed: %s", out.DigestStr())
			}
			mu.Lock()
			defer mu.Unlock()
			var uploads []string
			posts, seconds, stale, asked := 0, 0, 0, ""
			for _, l := range log {
				if !strings.Contains(l, "/blobs/uploads/") {
					continue
				}
				uploads = append(uploads, l)
				switch {
				case strings.HasPrefix(l, "POST "):
					posts++
				case strings.HasPrefix(l, "PATCH ") && strings.Contains(l, fmt.Sprintf(" %d-%d ", chunk, 2*chunk-1)):
					seconds++
					// Asked while still taking in the torn chunk, distribution gives the old
					// offset, then refuses the chunk resumed there: relay asks again.
					if strings.HasSuffix(l, "-> 400") || strings.HasSuffix(l, "-> 416") {
						stale++
					}
				case strings.HasPrefix(l, "GET "):
					asked = l
				}
			}
			if posts != tc.sessions || seconds-stale != 2 || !strings.HasSuffix(asked, tc.status) {
				t.Fatalf("%d upload sessions (want %d), second chunk sent %d times, %d refused as stale (want 2 not refused), last status query %q (want %s):\n%s",
					posts, tc.sessions, seconds, stale, asked, tc.status, strings.Join(uploads, "\n"))
			}
			// The first read streams the whole blob; the last starts where the registry stands
			// (one more read for each resume the registry refused as stale).
			if len(reads) == 0 {
				t.Fatal("the source was never read")
			}
			last := reads[len(reads)-1]
			if len(reads) != 2+stale || reads[0] != "" || !strings.HasPrefix(last, tc.reread) || (tc.reread == "") != (last == "") {
				t.Fatalf("source reads with ranges %q, want [\"\" %q...] with %d stale resumes", reads, tc.reread, stale)
			}
			// The content arrived whole: read the layer back and hash it.
			direct, _ := New(WithTransport(dist.Transport), WithKeychain(dist.Keychain()))
			rc, err := direct.openBlob(ctx, mustRepo(t, dist.Host+"/acme/app"), v1.Descriptor{Digest: layer}, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			h, _, err := v1.SHA256(rc)
			if err != nil || h != layer {
				t.Fatalf("layer read back as %s (%v), want %s", h, err, layer)
			}
		})
	}
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(c int) { s.code = c; s.ResponseWriter.WriteHeader(c) }

// TestIntegrationCrossRepositoryMount copies within distribution 2.8 (which links blobs per
// repository): every blob is mounted from the source repository, none is uploaded.
func TestIntegrationCrossRepositoryMount(t *testing.T) {
	ctx := context.Background()
	dist := testutil.StartDistribution(t)
	var mu sync.Mutex
	var reqs []string
	counting := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		mu.Lock()
		reqs = append(reqs, req.Method+" "+req.URL.Path+"?"+req.URL.RawQuery)
		mu.Unlock()
		return dist.Transport.RoundTrip(req)
	})
	c, err := New(WithTransport(counting), WithKeychain(dist.Keychain()))
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.Write(ctx, mustRepo(t, dist.Host+"/build/app"), bigIndex(t))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	reqs = nil
	mu.Unlock()
	out, err := c.Copy(ctx, d, mustRepo(t, dist.Host+"/acme/app"))
	if err != nil || out.DigestStr() != d.DigestStr() {
		t.Fatalf("%v %v", out, err)
	}
	mu.Lock()
	defer mu.Unlock()
	mounts, patches := 0, 0
	for _, r := range reqs {
		switch {
		case strings.HasPrefix(r, "POST /v2/acme/app/blobs/uploads/?") && strings.Contains(r, "mount=") && strings.Contains(r, "from=build%2Fapp"):
			mounts++
		case strings.HasPrefix(r, "PATCH "):
			patches++
		}
	}
	// 4 platforms x (6 layers + config).
	if mounts != 28 || patches != 0 {
		t.Fatalf("%d mounts (want 28) and %d uploaded chunks (want 0)", mounts, patches)
	}
}
