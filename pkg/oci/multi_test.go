package oci

import (
	"context"
	"math/rand"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/relaydev/relay/internal/testutil"
)

// TestCopyMultiReadsSourceOnce copies a four-platform index into two registries, one of
// which already holds a platform: each source blob is read once, and both destinations end
// with every digest and the referrer.
func TestCopyMultiReadsSourceOnce(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	gets := map[string]int{}
	count := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
				mu.Lock()
				gets[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]++
				mu.Unlock()
			}
			h.ServeHTTP(w, r)
		})
	}
	src := mustRepo(t, testutil.Registry(t, true, count)+"/build/app")
	a, b := mustRepo(t, testutil.Registry(t, true)+"/acme/app"), mustRepo(t, testutil.Registry(t, false)+"/acme/app")
	c := newClient(t)
	idx := bigIndex(t)
	d, err := c.Write(ctx, src, idx)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := c.Resolve(ctx, d)
	child := src.Digest(r.Manifests[2].Digest)
	raw, mt, _ := c.FetchManifest(ctx, child)
	if _, err := c.AttachBundle(ctx, child, mt, int64(len(raw)), []byte(`{"b":1}`), "dsse-envelope", "https://example.com/p"); err != nil {
		t.Fatal(err)
	}
	// b already has one platform (as after an interrupted copy).
	if _, err := c.Copy(ctx, child, b); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	clear(gets)
	mu.Unlock()

	outs, err := c.CopyMulti(ctx, d, []name.Repository{a, b})
	if err != nil {
		t.Fatal(err)
	}
	for i, out := range outs {
		if out.DigestStr() != d.DigestStr() {
			t.Fatalf("destination %d: digest %s", i, out.DigestStr())
		}
		dst := []name.Repository{a, b}[i]
		for _, m := range r.Manifests {
			if ok, _ := c.Exists(ctx, dst.Digest(m.Digest)); !ok {
				t.Fatalf("%s lacks %s", dst, m.Digest)
			}
		}
		if got, _ := c.Bundles(ctx, dst.Digest(r.Manifests[2].Digest), ""); len(got) != 1 {
			t.Fatalf("%s: %d referrers on the platform, want 1", dst, len(got))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for blob, n := range gets {
		if n != 1 {
			t.Errorf("source blob %s read %d times", blob, n)
		}
	}
	// 4 x (6 layers + config) = 28 blobs; the referrer's 2 blobs are read by the Copy that follows.
	if len(gets) < 28 {
		t.Fatalf("%d source blobs read, want at least 28", len(gets))
	}
}

// TestNoOpCopyAsksLittle copies an index with a referrer, then copies it again: the second
// copy writes nothing, authenticates once per transport rather than once per call, and on
// a registry without the referrers API reads the tag schema without asking the API first.
func TestNoOpCopyAsksLittle(t *testing.T) {
	ctx := context.Background()
	for _, api := range []bool{true, false} {
		var mu sync.Mutex
		var reqs []string
		logged := func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				reqs = append(reqs, r.Method+" "+r.URL.Path)
				mu.Unlock()
				h.ServeHTTP(w, r)
			})
		}
		src := mustRepo(t, testutil.Registry(t, api, logged)+"/build/app")
		dst := mustRepo(t, testutil.Registry(t, api, logged)+"/acme/app")
		c := newClient(t)
		d, err := c.Write(ctx, src, bigIndex(t))
		if err != nil {
			t.Fatal(err)
		}
		r, _ := c.Resolve(ctx, d)
		child := src.Digest(r.Manifests[1].Digest)
		raw, mt, _ := c.FetchManifest(ctx, child)
		if _, err := c.AttachBundle(ctx, child, mt, int64(len(raw)), []byte(`{"b":1}`), "dsse-envelope", "https://example.com/p"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Copy(ctx, d, dst); err != nil {
			t.Fatal(err)
		}

		c = newClient(t) // a new process: nothing cached
		mu.Lock()
		reqs = nil
		mu.Unlock()
		if _, err := c.Copy(ctx, d, dst); err != nil {
			t.Fatalf("api=%v: %v", api, err)
		}
		mu.Lock()
		pings, apiReads := 0, 0
		for _, q := range reqs {
			method, path, _ := strings.Cut(q, " ")
			switch {
			case method != http.MethodGet && method != http.MethodHead:
				t.Errorf("api=%v: a no-op copy wrote: %s", api, q)
			case strings.Contains(path, "/blobs/"):
				t.Errorf("api=%v: a no-op copy read a blob: %s", api, q)
			case path == "/v2/":
				pings++
			case strings.Contains(path, "/referrers/") && strings.HasPrefix(path, "/v2/build/app/") && !strings.HasSuffix(path, strings.Repeat("0", 64)):
				apiReads++
			}
		}
		mu.Unlock()
		// One handshake per registry (the copy only reads): not one per call, as when every
		// call authenticated afresh (29 for this copy).
		if pings > 2 {
			t.Errorf("api=%v: %d pings of /v2/ in a no-op copy of 5 manifests, want at most 2:\n%s", api, pings, strings.Join(reqs, "\n"))
		}
		if !api && apiReads > 0 {
			t.Errorf("api=%v: %d referrers API reads on a registry known to lack the API", api, apiReads)
		}
		if api && apiReads < 5 {
			t.Errorf("api=%v: %d referrers API reads, want one per manifest", api, apiReads)
		}
		if got, _ := c.Bundles(ctx, dst.Digest(r.Manifests[1].Digest), ""); len(got) != 1 {
			t.Fatalf("api=%v: %d referrers at the destination, want 1", api, len(got))
		}
	}
}

// TestReferrersTagThatIsNotAnIndex: on a registry without the referrers API, a sha256-<hex>
// tag holding something other than an index is named in the error, not taken for referrers.
func TestReferrersTagThatIsNotAnIndex(t *testing.T) {
	ctx := context.Background()
	repo := mustRepo(t, testutil.Registry(t, false)+"/acme/app")
	c := newClient(t)
	img, _ := random.Image(64, 1, random.WithSource(rand.New(rand.NewSource(3))))
	d, err := c.Write(ctx, repo, img)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := random.Image(64, 1, random.WithSource(rand.New(rand.NewSource(4))))
	od, err := c.Write(ctx, repo, other)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Tag(ctx, od, ClassicTag(d.DigestStr(), "")); err != nil {
		t.Fatal(err)
	}
	if mode, err := c.ReferrersMode(ctx, repo); err != nil || mode != ReferrersTagSchema {
		t.Fatalf("mode %q %v", mode, err)
	}
	_, err = c.Referrers(ctx, d)
	if err == nil || !strings.Contains(err.Error(), "not an OCI image index") || !strings.Contains(err.Error(), ClassicTag(d.DigestStr(), "")) {
		t.Fatalf("err = %v, want one naming the tag and that it is not an index", err)
	}
}

// TestFailedHandshakeIsNotKept: the client keeps authenticated transports for the run; a
// call whose handshake fails (here its context is cancelled) must not spoil the registry
// for the calls after it.
func TestFailedHandshakeIsNotKept(t *testing.T) {
	repo := mustRepo(t, testutil.Registry(t, true)+"/acme/app")
	c := newClient(t)
	img, _ := random.Image(64, 1, random.WithSource(rand.New(rand.NewSource(5))))
	d, err := c.Write(context.Background(), repo, img)
	if err != nil {
		t.Fatal(err)
	}
	c = newClient(t) // no transport made yet
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Exists(cancelled, d); err == nil {
		t.Fatal("Exists with a cancelled context succeeded")
	}
	if ok, err := c.Exists(context.Background(), d); err != nil || !ok {
		t.Fatalf("Exists after a failed handshake = %v, %v; want true", ok, err)
	}
	if _, err := c.Referrers(context.Background(), d); err != nil {
		t.Fatalf("Referrers after a failed handshake: %v", err)
	}
}
