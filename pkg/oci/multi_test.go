package oci

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
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
