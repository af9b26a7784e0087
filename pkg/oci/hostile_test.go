package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/relaydev/relay/internal/testutil"
)

// TestHostileSource serves a manifest over 4 MiB and a blob whose bytes do not match its
// digest; each read fails with an error naming the registry, the object and the cause, and
// the destination gets no tag.
func TestHostileSource(t *testing.T) {
	ctx := context.Background()
	upstream := testutil.Registry(t, true)
	c := newClient(t)
	img, _ := random.Image(1024, 1)
	d, err := c.Write(ctx, mustRepo(t, upstream+"/good/app"), img)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	layerDigest, _ := layers[0].Digest()

	huge := bytes.Repeat([]byte(" "), 5<<20)
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/v2/big/") && strings.Contains(r.URL.Path, "/manifests/"):
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", d.DigestStr())
			w.Write(append([]byte(`{"schemaVersion":2}`), huge...))
		case strings.HasPrefix(r.URL.Path, "/v2/bad/") && strings.Contains(r.URL.Path, "/blobs/"+layerDigest.String()):
			// The right length, the wrong bytes.
			w.Header().Set("Content-Length", fmt.Sprint(mustSize(t, layers[0])))
			w.Write(bytes.Repeat([]byte{0}, int(mustSize(t, layers[0]))))
		default:
			// Everything else from the real registry, as repository "good/app".
			r2 := r.Clone(r.Context())
			r2.URL.Path = strings.Replace(strings.Replace(r.URL.Path, "/v2/bad/", "/v2/good/", 1), "/v2/big/", "/v2/good/", 1)
			r2.URL.Scheme, r2.URL.Host, r2.RequestURI = "http", upstream, ""
			resp, err := http.DefaultTransport.RoundTrip(r2)
			if err != nil {
				http.Error(w, err.Error(), 502)
				return
			}
			defer resp.Body.Close()
			for k, v := range resp.Header {
				w.Header()[k] = v
			}
			w.WriteHeader(resp.StatusCode)
			io.Copy(w, resp.Body)
		}
	}))
	defer hostile.Close()
	host := strings.TrimPrefix(hostile.URL, "http://")
	dst := mustRepo(t, testutil.Registry(t, true)+"/dst/app")

	// By tag, so the size limit (not the digest check) is what stops it.
	_, err = c.Resolve(ctx, mustRepo(t, host+"/big/app").Tag("v1"))
	var tl *ManifestTooLargeError
	if !errors.As(err, &tl) || !strings.Contains(err.Error(), host+"/big/app") {
		t.Fatalf("oversized manifest: %v", err)
	}
	_, err = c.Copy(ctx, mustRepo(t, host+"/bad/app").Digest(d.DigestStr()), dst)
	if err == nil || !strings.Contains(err.Error(), host+"/bad/app") || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("corrupt blob: %v", err)
	}
	if ok, _ := c.Exists(ctx, dst.Digest(d.DigestStr())); ok {
		t.Fatal("a manifest whose blob failed verification was published")
	}
}

func mustSize(t *testing.T, l interface{ Size() (int64, error) }) int64 {
	n, err := l.Size()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestInterruptedCopyResumes cancels a copy after its third blob upload, then copies again:
// the second run uploads only the blobs the first did not finish, as the destination's
// request log shows.
func TestInterruptedCopyResumes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	uploads := map[string]int{} // blob digest -> completed uploads
	cancelAfter := 3
	record := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r)
			if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") {
				mu.Lock()
				uploads[r.URL.Query().Get("digest")]++
				n := 0
				for _, v := range uploads {
					n += v
				}
				mu.Unlock()
				if n == cancelAfter {
					cancel() // the process is killed here
				}
			}
		})
	}
	src := testutil.Registry(t, true)
	dst := mustRepo(t, testutil.Registry(t, true, record)+"/acme/app")
	c, err := New(WithJobs(1))
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.Write(context.Background(), mustRepo(t, src+"/build/app"), bigIndex(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Copy(ctx, d, dst); err == nil {
		t.Fatal("the cancelled copy reported success")
	}
	mu.Lock()
	first := len(uploads)
	mu.Unlock()
	if first < cancelAfter {
		t.Fatalf("only %d blobs uploaded before the cancel", first)
	}
	if _, err := c.Copy(context.Background(), d, dst); err != nil {
		t.Fatal(err)
	}
	for dg, n := range uploads {
		if n != 1 {
			t.Errorf("blob %s uploaded %d times", dg, n)
		}
	}
	// 4 platforms x (6 layers + 1 config).
	if len(uploads) != 28 {
		t.Fatalf("%d distinct blobs uploaded, want 28", len(uploads))
	}
}
