package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func newRegistry(t *testing.T, referrers bool) string { return testutil.Registry(t, referrers) }

func newClient(t *testing.T) *Client {
	t.Helper()
	c, err := New(WithJobs(2), WithClock(func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func twoPlatformIndex(t *testing.T) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for i, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(256, 2, random.WithSource(rand.New(rand.NewSource(int64(i+1)))))
		if err != nil {
			t.Fatal(err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
}

func TestCopyByDigestWithReferrers(t *testing.T) {
	for _, referrers := range []bool{true, false} {
		name := "referrers-api"
		if !referrers {
			name = "tag-schema"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			src, dst := newRegistry(t, referrers), newRegistry(t, referrers)
			c := newClient(t)
			srcRepo := mustRepo(t, src+"/build/app")
			idx := twoPlatformIndex(t)
			d, err := c.Write(ctx, srcRepo, idx)
			if err != nil {
				t.Fatal(err)
			}
			r, err := c.Resolve(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Manifests) != 2 || r.Manifests[0].Platform != "linux/amd64" {
				t.Fatalf("resolved %+v", r)
			}
			// A signature on a platform manifest must travel with the copy.
			child := srcRepo.Digest(r.Manifests[1].Digest)
			raw, mt, err := c.FetchManifest(ctx, child)
			if err != nil {
				t.Fatal(err)
			}
			ref, err := c.AttachBundle(ctx, child, mt, int64(len(raw)), []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`), "dsse-envelope", "https://example.com/p")
			if err != nil {
				t.Fatal(err)
			}

			dstRepo := mustRepo(t, dst+"/ghcr.io/acme/app")
			out, err := c.Copy(ctx, d, dstRepo)
			if err != nil {
				t.Fatal(err)
			}
			if out.DigestStr() != d.DigestStr() {
				t.Fatalf("digest changed: %s -> %s", d.DigestStr(), out.DigestStr())
			}
			got, err := c.Bundles(ctx, dstRepo.Digest(r.Manifests[1].Digest), "https://example.com/p")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Digest != ref {
				t.Fatalf("referrer not copied: %+v", got)
			}
			if other, _ := c.Bundles(ctx, dstRepo.Digest(r.Manifests[1].Digest), "https://example.com/other"); len(other) != 0 {
				t.Fatalf("predicate filter ignored: %+v", other)
			}
			// No tag exists until Tag; re-tagging is a no-op.
			if d, _ := c.TagDigest(ctx, dstRepo.Tag("v1")); d != "" {
				t.Fatalf("copy applied a tag: %s", d)
			}
			for i := 0; i < 2; i++ {
				if err := c.Tag(ctx, out, "v1"); err != nil {
					t.Fatal(err)
				}
			}
			if d, _ := c.TagDigest(ctx, dstRepo.Tag("v1")); d != out.DigestStr() {
				t.Fatalf("tag points at %q", d)
			}
			// A second copy changes nothing and still succeeds.
			if _, err := c.Copy(ctx, d, dstRepo); err != nil {
				t.Fatal(err)
			}
			if got, _ := c.Bundles(ctx, dstRepo.Digest(r.Manifests[1].Digest), ""); len(got) != 1 {
				t.Fatalf("re-copy duplicated referrers: %d", len(got))
			}
		})
	}
}

func TestTagRefusesMissingDigest(t *testing.T) {
	reg := newRegistry(t, true)
	c := newClient(t)
	d := mustRepo(t, reg+"/x").Digest("sha256:" + strings.Repeat("0", 64))
	if err := c.Tag(context.Background(), d, "v1"); err == nil || !strings.Contains(err.Error(), "not in the repository") {
		t.Fatalf("err = %v", err)
	}
}

func TestSandboxSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sb, err := StartSandbox(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := sb.Addr()
	c := newClient(t)
	repo := mustRepo(t, addr+"/example/app")
	d, err := c.Write(ctx, repo, twoPlatformIndex(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Tag(ctx, d, "v1"); err != nil {
		t.Fatal(err)
	}
	sb.Close()

	sb2, err := StartSandbox(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sb2.Close()
	if sb2.Addr() != addr {
		t.Fatalf("sandbox moved from %s to %s", addr, sb2.Addr())
	}
	if ok, err := c.Exists(ctx, d); err != nil || !ok {
		t.Fatalf("index lost across restart: %v %v", ok, err)
	}
	if got, _ := c.TagDigest(ctx, repo.Tag("v1")); got != d.DigestStr() {
		t.Fatalf("tag lost across restart: %q", got)
	}
	r, err := c.Resolve(ctx, d)
	if err != nil || len(r.Manifests) != 2 {
		t.Fatalf("resolve after restart: %+v %v", r, err)
	}
}

func TestSandboxRepairsTornJournal(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sb, err := StartSandbox(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t)
	img, _ := random.Image(64, 1)
	d, err := c.Write(ctx, mustRepo(t, sb.Addr()+"/a"), img)
	if err != nil {
		t.Fatal(err)
	}
	sb.journal.Write([]byte(`{"method":"PUT","pa`)) // a write cut off by a kill
	sb.Close()
	sb2, err := StartSandbox(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sb2.Close()
	if ok, _ := c.Exists(ctx, d); !ok {
		t.Fatal("manifest before the torn line was lost")
	}
	img2, _ := random.Image(64, 1)
	if _, err := c.Write(ctx, mustRepo(t, sb2.Addr()+"/a"), img2); err != nil {
		t.Fatal(err)
	}
}

func TestWriteGuard(t *testing.T) {
	var hits int
	rt := WriteGuard(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		hits++
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
	}))
	tests := []struct {
		method, url string
		allowed     bool
	}{
		{"GET", "https://ghcr.io/v2/", true},
		{"HEAD", "https://ghcr.io/v2/x/manifests/latest", true},
		{"PUT", "https://ghcr.io/v2/x/manifests/latest", false},
		{"POST", "https://user:pw@10.0.0.1/v2/x/blobs/uploads/", false},
		{"PATCH", "http://127.0.0.1:5000/v2/x/blobs/uploads/1", true},
		{"PUT", "http://localhost:5000/v2/x/manifests/v1", true},
		{"DELETE", "http://[::1]:5000/v2/x/manifests/v1", true},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, tt.url, nil)
		_, err := rt.RoundTrip(req)
		var ge *WriteGuardError
		if tt.allowed != (err == nil) || (!tt.allowed && !errors.As(err, &ge)) {
			t.Errorf("%s %s: err = %v, allowed = %v", tt.method, tt.url, err, tt.allowed)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("guard error leaks credentials: %v", err)
		}
	}
	if hits != 5 {
		t.Errorf("%d requests reached the network, want 5", hits)
	}
}

func TestUserAgent(t *testing.T) {
	var got string
	rt := UserAgent(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		got = r.Header.Get("User-Agent")
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	}), "relay/x (correlation_id=c1)")
	req, _ := http.NewRequest("GET", "http://127.0.0.1/", nil)
	rt.RoundTrip(req)
	if got != "relay/x (correlation_id=c1)" || req.Header.Get("User-Agent") != "" {
		t.Fatalf("ua %q; caller's request modified: %q", got, req.Header.Get("User-Agent"))
	}
}

func TestOptionsValidated(t *testing.T) {
	if _, err := New(WithJobs(0)); err == nil {
		t.Error("jobs 0 accepted")
	}
	if _, err := New(WithLogger(nil)); err == nil {
		t.Error("nil logger accepted")
	}
	if _, err := New(WithTransport(nil)); err == nil {
		t.Error("nil transport accepted")
	}
}

func mustRepo(t *testing.T, s string) name.Repository {
	t.Helper()
	r, err := name.NewRepository(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReferrersModeAndClassicTags(t *testing.T) {
	ctx := context.Background()
	for _, api := range []bool{true, false} {
		src, dst := newRegistry(t, api), newRegistry(t, api)
		c := newClient(t)
		srcRepo, dstRepo := mustRepo(t, src+"/a"), mustRepo(t, dst+"/b")
		img, _ := random.Image(64, 1, random.WithSource(rand.New(rand.NewSource(9))))
		d, err := c.Write(ctx, srcRepo, img)
		if err != nil {
			t.Fatal(err)
		}
		// A cosign classic signature: an image tagged sha256-<hex>.sig beside the subject.
		sig, _ := random.Image(32, 1, random.WithSource(rand.New(rand.NewSource(10))))
		sd, err := c.Write(ctx, srcRepo, sig)
		if err != nil {
			t.Fatal(err)
		}
		tag := ClassicTag(d.DigestStr(), ".sig")
		if err := c.Tag(ctx, sd, tag); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Copy(ctx, d, dstRepo); err != nil {
			t.Fatal(err)
		}
		if got, _ := c.TagDigest(ctx, dstRepo.Tag(tag)); got != sd.DigestStr() {
			t.Fatalf("api=%v: classic signature tag not copied: %q", api, got)
		}
		mode, err := c.ReferrersMode(ctx, dstRepo)
		want := ReferrersTagSchema
		if api {
			want = ReferrersAPI
		}
		if err != nil || mode != want {
			t.Fatalf("api=%v: mode %q %v", api, mode, err)
		}
	}
}

func TestInsecureOnlyForNamedHosts(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hi")) })
	plain := httptest.NewServer(ok)
	defer plain.Close()
	selfSigned := httptest.NewTLSServer(ok)
	defer selfSigned.Close()
	plainHost := strings.TrimPrefix(plain.URL, "http://")
	tlsHost := strings.TrimPrefix(selfSigned.URL, "https://")

	rt := Insecure(http.DefaultTransport, []string{plainHost, tlsHost})
	strict := Insecure(http.DefaultTransport, []string{"other.example:5000"})
	for _, u := range []string{"https://" + plainHost + "/v2/", selfSigned.URL + "/v2/"} {
		req, _ := http.NewRequest("GET", u, nil)
		resp, err := rt.RoundTrip(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s as an insecure host: %v", u, err)
		}
		resp.Body.Close()
		req, _ = http.NewRequest("GET", u, nil)
		if resp, err := strict.RoundTrip(req); err == nil {
			resp.Body.Close()
			t.Fatalf("%s reached without being named insecure", u)
		}
	}
}

func TestRetryBudgetPerHost(t *testing.T) {
	fail := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 503, Status: "503", Header: http.Header{}, Body: http.NoBody, Request: r}, nil
	})
	rt := Retry(fail, RetryOptions{
		Policy:  RetryPolicy{MaxAttempts: 50, Initial: time.Second, Max: time.Second, Budget: time.Hour},
		Budgets: map[string]time.Duration{"tight.example": 2 * time.Second},
		Rand:    rand.New(rand.NewSource(1)), Sleep: (&instant{}).sleep,
	})
	req, _ := http.NewRequest("GET", "http://tight.example/v2/", nil)
	if _, err := rt.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "budget of 2s") {
		t.Fatalf("tight host: %v", err)
	}
	req, _ = http.NewRequest("GET", "http://roomy.example/v2/", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("other host used the default budget: %v", err)
	}
}

func TestProgressEvents(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	c, err := New(WithLogger(logger), WithProgressInterval(time.Nanosecond))
	if err != nil {
		t.Fatal(err)
	}
	img, _ := random.Image(64<<10, 3, random.WithSource(rand.New(rand.NewSource(5))))
	if _, err := c.Write(context.Background(), mustRepo(t, newRegistry(t, true)+"/p"), img); err != nil {
		t.Fatal(err)
	}
	var last map[string]any
	n := 0
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var rec map[string]any
		json.Unmarshal(line, &rec)
		if rec["event"] == "copy.progress" {
			last, n = rec, n+1
		}
	}
	if n == 0 || last["bytes_done"] != last["bytes_total"] || last["bytes_total"].(float64) < 3*64<<10 {
		t.Fatalf("%d progress events, last %v", n, last)
	}
	if _, err := New(WithProgressInterval(-1)); err == nil {
		t.Fatal("negative interval accepted")
	}
}

// Without a referrers API every attach rewrites the subject's sha256-<hex> tag index:
// attaches running side by side (the sign and sbom steps do that) must not lose each other.
func TestConcurrentAttachesToOneSubjectKeepEveryReferrer(t *testing.T) {
	for _, referrers := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrers=%v", referrers), func(t *testing.T) {
			ctx := context.Background()
			c := newClient(t)
			repo := mustRepo(t, newRegistry(t, referrers)+"/acme/app")
			d, err := c.Write(ctx, repo, twoPlatformIndex(t))
			if err != nil {
				t.Fatal(err)
			}
			raw, mt, err := c.FetchManifest(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			const n = 8
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := c.AttachBundle(ctx, d, mt, int64(len(raw)), []byte(fmt.Sprintf(`{"n":%d}`, i)), "dsse-envelope", "https://example.com/p")
					errs <- err
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if got, err := c.Bundles(ctx, d, ""); err != nil || len(got) != n {
				t.Fatalf("%d referrers after %d concurrent attaches (err %v)", len(got), n, err)
			}
		})
	}
}
